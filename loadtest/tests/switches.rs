//! End to end: 20 random layer switches per receiver (scenario `switches`) through a spawned
//! debug `palim`, for VP8 simulcast and for AV1 L3T3_KEY SVC. Every receiver must see the
//! resolution change many times, zero stream violations (the validators in
//! `loadtest/src/shape/check.rs` check continuity, references and markers), and frames after its
//! last switch. `SWITCHES_SEED=<n>` replays another seed.

mod common;

const SWITCHES: u64 = 20;

fn run_switches(codec: &str) {
    let seed: u64 = std::env::var("SWITCHES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (v, stderr) = common::run_spawned(
        "switches",
        codec,
        &format!(
            r#"
name = "switches-{codec}"
conferences = 1
endpoints = 3
join_rate = 30.0
duration = "20s"
warmup = "2s"
codec = "{codec}"
seed = {seed}
switches = {SWITCHES}
"#
        ),
    );
    assert_eq!(v["connected"], 3, "seed {seed}: {stderr}");
    for e in v["endpoints_detail"].as_array().expect("detail") {
        let field = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
        let index = field("index");
        let ctx = format!("{codec}, seed {seed}, receiver {index}: {e}");
        assert_eq!(field("switches_requested"), SWITCHES, "{ctx}");
        // Two video senders per receiver: up to 40 changes; a switch undone before the
        // bridge's keyframe arrives is not seen, so ask for a quarter.
        let observed = field("switches_observed");
        assert!(observed >= SWITCHES / 2, "observed {observed} switches: {ctx}");
        assert_eq!(field("violations"), 0, "{ctx}");
        assert!(e["violation_kinds"].as_object().is_some_and(|k| k.is_empty()), "{ctx}");
        let after = field("frames_after_last_switch");
        assert!(after >= 20, "{after} frames after the last switch: {ctx}");
    }
}

#[test]
fn vp8_simulcast_twenty_random_switches() {
    run_switches("vp8-simulcast");
}

#[test]
fn av1_svc_twenty_random_switches() {
    run_switches("av1-svc");
}
