//! Bandwidth estimation through the spawned debug `palim` (issue 6): shortened, seeded versions
//! of scenarios/bwe-*.toml, judged by the harness's own `[check]` evaluation (check.rs) from
//! the run's JSON. Each run takes 20–30 s of wall time; the runs are serialised so they do not
//! disturb each other's timing on a small CI machine.
//!
//! `cargo test -p loadtest --test bwe -- --nocapture` (add `--include-ignored` for the criteria
//! the bridge does not meet yet; the reasons give the measured numbers).

mod common;
use common::{harness, palim};
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Run `scenario` (TOML text) and return the verdicts by name, printing every one.
fn run(name: &str, scenario: &str) -> Vec<(String, bool, f64, String)> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("loadtest-bwe-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (toml, json) = (dir.join("scenario.toml"), dir.join("result.json"));
    std::fs::write(&toml, scenario).expect("write scenario");
    let out = Command::new(harness())
        .arg("--spawn")
        .arg("--palim")
        .arg(palim())
        .arg("--scenario")
        .arg(&toml)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid JSON");
    assert_eq!(v["connected"], v["endpoints"], "{stderr}");
    let checks: Vec<(String, bool, f64, String)> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["passed"].as_bool().unwrap_or(false),
                c["value"].as_f64().unwrap_or(f64::NAN),
                c["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for c in &checks {
        eprintln!("{name}: {} {} {}", if c.1 { "PASS" } else { "FAIL" }, c.0, c.3);
    }
    // `loadtest check` reaches the same verdicts from the JSON alone.
    let again = Command::new(harness())
        .arg("check")
        .arg(&json)
        .output()
        .expect("run check");
    let all_passed = checks.iter().all(|c| c.1);
    assert_eq!(
        again.status.success(),
        all_passed,
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    checks
}

fn verdict<'a>(checks: &'a [(String, bool, f64, String)], name: &str) -> &'a (String, bool, f64, String) {
    checks
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no {name} verdict in {checks:?}"))
}

/// scenarios/bwe-step.toml shortened: 3 Mbit/s, 0.6 Mbit/s from 10 s, 3 Mbit/s from 18 s.
const STEP: &str = r#"
name = "bwe-step-short"
conferences = 1
endpoints = 2
join_rate = 10.0
duration = "25s"
warmup = "2s"
seed = 1
codec = "vp8-simulcast"
video_senders = 1
[link.uplink]
delay_ms = 25
[link.downlink]
delay_ms = 25
[[class]]
name = "stepped-downlink"
per_conference = 1
uplink = { delay_ms = 25 }
downlink = { delay_ms = 25, rate_kbps = 3000, schedule = [
    { at = "10s", rate_kbps = 600 },
    { at = "18s", rate_kbps = 3000 },
] }
[check]
step_down_within = "2s"
max_window_loss_percent = 5.0
step_up_within = "8s"
"#;

/// After the step down, every 1 s window's loss stays < 5 %; after the step up, the top
/// layer is back within 8 s. Only 8 s at 0.6 Mbit/s. Passes since the allocation's up-switch
/// hysteresis (docs/bwe.md, "Downlink step"): worst windows 0.0 % in 6 of 6 runs, step-up 9, 4,
/// 4, 4, 5, 4 s (5 of 6; the 9 s run: no probe result after the step up, the estimate climbed at
/// 8 %/s) (2026-11-30, flap; before: 9 of 14 windows < 5 %, the allocation flapping 180p ↔ 360p).
#[test]
fn bwe_step_loss_and_recovery() {
    let checks = run("step", STEP);
    let loss = verdict(&checks, "window_loss_after_step");
    assert!(loss.1, "{}", loss.3);
    let up = verdict(&checks, "step_up");
    assert!(up.1, "{}", up.3);
}

/// A lower layer within 2 s of the step down: when the estimate collapses, the projection cuts
/// the current encoding at once and asks for the lowest encoding's keyframe past the PLI limit
/// (docs/bwe.md, "Downlink step"). The step down was ≤ 2 s in 14 of 14 short runs (2026-11-30,
/// bwedown; before: 1 in 5).
#[test]
fn bwe_step_down_within_2s() {
    let checks = run("step-down", STEP);
    let down = verdict(&checks, "step_down");
    assert!(down.1, "{}", down.3);
}

/// 2 % random loss on the video sender's uplink: NACK toward the sender and its RTX repair it;
/// receivers' residual video RTP loss < 0.1 %.
#[test]
fn bwe_uplink_loss_is_repaired() {
    let checks = run(
        "uplink-loss",
        r#"
name = "bwe-uplink-loss-short"
conferences = 1
endpoints = 3
join_rate = 10.0
duration = "15s"
warmup = "3s"
seed = 2
codec = "vp8-simulcast"
video_senders = 1
audio_senders = 0
[link.uplink]
delay_ms = 25
[link.downlink]
delay_ms = 25
[[class]]
name = "lossy-uplink"
endpoints = [0]
uplink = { delay_ms = 25, loss_percent = 2.0 }
downlink = { delay_ms = 25 }
[check]
max_residual_loss_percent = 0.1
"#,
    );
    let residual: Vec<_> = checks.iter().filter(|c| c.0 == "residual_loss").collect();
    assert_eq!(residual.len(), 2, "both receivers judged: {checks:?}");
    for c in residual {
        assert!(c.1, "{}", c.3);
    }
}

/// 2 Mbit/s downlink, 5 % random loss, 100 ms RTT: the bridge's estimate stays within 30 % of
/// the capacity from 10 s into the measured window. Was `#[ignore]`d at 16 of 18 passing runs
/// (the failures 30.9 and 31.4 %: single 1 s dips). Since a follow-up decrease needs overuse in
/// packets sent after the first, and an isolated one takes the learnt link capacity as its
/// base (sfu/src/bwe/gcc.rs, docs/bwe.md): 14.6–17.2 % off in 7 of 7 runs (2026-11-30, helpers
/// building beside them).
#[test]
fn bwe_lossy_rtt_estimate_near_capacity() {
    let checks = run(
        "lossy-rtt",
        r#"
name = "bwe-lossy-rtt-short"
conferences = 1
endpoints = 2
join_rate = 10.0
duration = "22s"
warmup = "2s"
seed = 3
codec = "vp8-simulcast"
video_senders = 1
video_bitrate_scale = 1.5
[link.uplink]
delay_ms = 50
[link.downlink]
delay_ms = 50
[[class]]
name = "lossy-downlink"
per_conference = 1
uplink = { delay_ms = 50 }
downlink = { delay_ms = 50, rate_kbps = 2000, loss_percent = 5.0 }
[check]
estimate_within_percent = 30.0
settle = "10s"
"#,
    );
    let est = verdict(&checks, "estimate_vs_capacity");
    assert!(est.1, "{}", est.3);
}
