//! Bandwidth-estimation criteria (issue 6), evaluated on a run's per-receiver series.
//!
//! A scenario opts in with a `[check]` section; each criterion set there is evaluated for every
//! endpoint that received video and has the matching kind of link:
//! * `step_down_within` / `max_window_loss_percent` / `step_up_within`: a downlink whose
//!   schedule steps the rate down and then up. The top layer is the highest height received in
//!   the 3 s before the step down. After the step down, the receiver must be on a lower layer
//!   within `step_down_within`; from then until the step up, every 1 s window's loss must stay
//!   below `max_window_loss_percent`; after the step up, the top layer must be back within
//!   `step_up_within`.
//! * `max_residual_loss_percent`: loss over the measured window, per receiver.
//!
//! Loss here is video RTP loss from sequence numbers, as the receiver's RTP stack sees it
//! (retransmissions repair it; a layer switch is not loss).
//! * `estimate_within_percent`: the bridge's estimate within that many percent of the emulated
//!   downlink rate, every second of the measured window from `settle` on.
//!
//! Times are at 1 s resolution and conservative: layers are judged by the heights of the frames
//! the receiver completed in each second (endpoint.rs), and a frame completed "in second t"
//! counts as completed at the end of t.
//!
//! `loadtest check result.json [--svg PREFIX]` evaluates a JSON result again and can write the
//! plots of every endpoint that received video as `PREFIX-<index>-{rate,layer,loss}.svg`.

use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::link::Link;
use crate::metrics::EndpointSeries;
use crate::scenario::Scenario;

/// The `[check]` section of a scenario.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub step_down_within: Option<Duration>,
    pub max_window_loss_percent: Option<f64>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub step_up_within: Option<Duration>,
    pub max_residual_loss_percent: Option<f64>,
    pub estimate_within_percent: Option<f64>,
    /// Seconds of the measured window the estimate criterion ignores at its start.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
}

/// One criterion for one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub endpoint: u32,
    pub passed: bool,
    /// The measured value, in the criterion's unit (s, % …).
    pub value: f64,
    pub detail: String,
}

fn verdict(name: &str, endpoint: u32, passed: bool, value: f64, detail: String) -> Verdict {
    Verdict {
        name: name.into(),
        endpoint,
        passed,
        value,
        detail,
    }
}

/// Evaluate the scenario's `[check]` (nothing if it has none) on the receivers' series.
pub fn evaluate(s: &Scenario, window: (u32, u32), receivers: &[EndpointSeries]) -> Vec<Verdict> {
    let Some(c) = &s.check else { return Vec::new() };
    let mut out = Vec::new();
    for r in receivers {
        if r.points.iter().all(|p| p.height == 0) {
            continue; // received no video: nothing to judge
        }
        let (conf, pos) = (r.index / s.endpoints, r.index % s.endpoints);
        let down = s.link_of(conf, pos).0.downlink;
        if c.step_down_within.is_some() || c.step_up_within.is_some() || c.max_window_loss_percent.is_some() {
            step(c, r, &down, &mut out);
        }
        let in_window = || r.points.iter().filter(move |p| p.t >= window.0 && p.t < window.1);
        if let Some(max) = c.max_residual_loss_percent {
            let (exp, rx) = in_window().fold((0, 0), |a, p| (a.0 + p.rtp_expected, a.1 + p.rtp_received));
            let loss = crate::metrics::loss_percent(exp, rx);
            out.push(verdict(
                "residual_loss",
                r.index,
                exp > 0 && loss < max,
                loss,
                format!(
                    "endpoint {}: {loss:.3} % of {exp} video RTP packets lost over t = {}..{} s (limit {max} %)",
                    r.index, window.0, window.1
                ),
            ));
        }
        if let Some(pct) = c.estimate_within_percent {
            let from = window.0 + c.settle.as_secs() as u32;
            let mut worst: Option<(u32, f64, f64, f64)> = None;
            let mut n = 0;
            let mut missing = 0;
            for p in in_window().filter(|p| p.t >= from) {
                let Some(cap) = p.capacity_kbps else { continue };
                let Some(est) = p.bwe_kbps else {
                    missing += 1;
                    continue;
                };
                n += 1;
                let err = (est - cap).abs() / cap * 100.0;
                if worst.is_none_or(|w| err > w.1) {
                    worst = Some((p.t, err, est, cap));
                }
            }
            let (passed, value, detail) = match worst {
                Some((t, err, est, cap)) => (
                    err <= pct && missing == 0,
                    err,
                    format!(
                        "endpoint {}: worst {err:.1} % off at t = {t} s ({est:.0} vs {cap:.0} kbit/s) over {n} s from t = {from} s (limit {pct} %){}",
                        r.index,
                        if missing > 0 { format!("; {missing} s without an estimate") } else { String::new() }
                    ),
                ),
                None => (false, f64::NAN, format!("endpoint {}: no estimate or no capacity in the window", r.index)),
            };
            out.push(verdict("estimate_vs_capacity", r.index, passed, value, detail));
        }
    }
    out
}

/// The step-down / step-up criteria for one receiver.
fn step(c: &CheckConfig, r: &EndpointSeries, down: &crate::link::LinkConfig, out: &mut Vec<Verdict>) {
    let rate = |at: Duration| Link::rate_at(down, at);
    let mut t_down = None;
    let mut t_up = None;
    for st in &down.schedule {
        let Some(new) = st.rate_kbps else { continue };
        let before = rate(st.at.saturating_sub(Duration::from_millis(1)));
        let before = if before == 0 { u32::MAX } else { before };
        let new = if new == 0 { u32::MAX } else { new };
        if t_down.is_none() && new < before {
            t_down = Some(st.at.as_secs() as u32);
        } else if t_down.is_some() && t_up.is_none() && new > before {
            t_up = Some(st.at.as_secs() as u32);
        }
    }
    let Some(td) = t_down else { return };
    let at = |t: u32| r.points.get(t as usize);
    let top = (td.saturating_sub(3)..td)
        .filter_map(at)
        .map(|p| p.frame_height_max)
        .max()
        .unwrap_or(0);
    if top == 0 {
        out.push(verdict(
            "step_down",
            r.index,
            false,
            f64::NAN,
            format!("endpoint {}: no video received before the step down at {td} s", r.index),
        ));
        return;
    }
    let end = t_up.unwrap_or(r.points.len() as u32);
    let lower = (td..end).find(|&t| at(t).is_some_and(|p| p.frame_height_min > 0 && p.frame_height_min < top));
    if let Some(limit) = c.step_down_within {
        let (passed, value, detail) = match lower {
            Some(t) => {
                let d = f64::from(t + 1 - td);
                (
                    d <= limit.as_secs_f64(),
                    d,
                    format!(
                        "endpoint {}: {top}p → {}p within {d:.0} s of the step down at {td} s (limit {:?})",
                        r.index,
                        at(t).map_or(0, |p| p.frame_height_min),
                        limit
                    ),
                )
            }
            None => (
                false,
                f64::INFINITY,
                format!("endpoint {}: stayed on {top}p after the step down at {td} s", r.index),
            ),
        };
        out.push(verdict("step_down", r.index, passed, value, detail));
    }
    if let Some(max) = c.max_window_loss_percent {
        let from = lower.map_or(td, |t| t + 1);
        let worst = (from..end)
            .filter_map(at)
            .map(|p| (p.t, p.rtp_loss_percent))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let (t, loss) = worst.unwrap_or((from, 0.0));
        out.push(verdict(
            "window_loss_after_step",
            r.index,
            loss < max,
            loss,
            format!("endpoint {}: worst 1 s video RTP loss {loss:.2} % (t = {t} s) over t = {from}..{end} s (limit {max} %)", r.index),
        ));
    }
    if let (Some(limit), Some(tu)) = (c.step_up_within, t_up) {
        let back = (tu..r.points.len() as u32).find(|&t| at(t).is_some_and(|p| p.frame_height_max >= top));
        let (passed, value, detail) = match back {
            Some(t) => {
                let d = f64::from(t + 1 - tu);
                (
                    d <= limit.as_secs_f64(),
                    d,
                    format!(
                        "endpoint {}: back on {top}p within {d:.0} s of the step up at {tu} s (limit {limit:?})",
                        r.index
                    ),
                )
            }
            None => (
                false,
                f64::INFINITY,
                format!("endpoint {}: not back on {top}p after the step up at {tu} s", r.index),
            ),
        };
        out.push(verdict("step_up", r.index, passed, value, detail));
    }
}

/// `loadtest check result.json [--svg PREFIX]`.
pub fn main(mut args: impl Iterator<Item = String>) -> ExitCode {
    let usage = "usage: loadtest check RESULT.json [--svg PREFIX]";
    let Some(path) = args.next() else {
        eprintln!("{usage}");
        return ExitCode::FAILURE;
    };
    let mut svg = None;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--svg", Some(p)) => svg = Some(p),
            _ => {
                eprintln!("{usage}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(&path, svg.as_deref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest check: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Deserialize)]
struct Saved {
    scenario: Scenario,
    window: (u32, u32),
    receivers: Vec<EndpointSeries>,
}

fn run(path: &str, svg: Option<&str>) -> anyhow::Result<bool> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let saved: Saved = serde_json::from_str(&text).with_context(|| format!("{path} is not a loadtest result"))?;
    if let Some(prefix) = svg {
        for r in saved
            .receivers
            .iter()
            .filter(|r| r.points.iter().any(|p| p.frame_height_max > 0))
        {
            for (kind, chart) in crate::report::receiver_charts(r) {
                let file = format!("{prefix}-{}-{kind}.svg", r.index);
                std::fs::write(&file, chart).with_context(|| format!("writing {file}"))?;
                eprintln!("wrote {file}");
            }
        }
    }
    let verdicts = evaluate(&saved.scenario, saved.window, &saved.receivers);
    if verdicts.is_empty() {
        println!("no [check] criteria in the scenario (or no receiver got video)");
    }
    for v in &verdicts {
        println!("{} {:<24} {}", if v.passed { "PASS" } else { "FAIL" }, v.name, v.detail);
    }
    Ok(verdicts.iter().all(|v| v.passed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkStep;
    use crate::metrics::EndpointPoint;

    fn point(t: u32, height: u32, loss: f64, bwe: Option<f64>, cap: Option<f64>) -> EndpointPoint {
        EndpointPoint {
            t,
            rx_kbps: 0.0,
            rx_packets: (1000.0 - loss * 10.0) as u64,
            expected: 1000,
            loss_percent: loss,
            rtp_expected: 1000,
            rtp_received: (1000.0 - loss * 10.0) as u64,
            rtp_loss_percent: loss,
            height,
            frame_height_min: height,
            frame_height_max: height,
            bwe_kbps: bwe,
            capacity_kbps: cap,
        }
    }

    fn scenario(check: CheckConfig) -> Scenario {
        let mut s = Scenario {
            endpoints: 2,
            check: Some(check),
            ..Default::default()
        };
        s.link.downlink.rate_kbps = 3000;
        s.link.downlink.schedule = vec![
            LinkStep {
                at: Duration::from_secs(10),
                rate_kbps: Some(600),
                ..Default::default()
            },
            LinkStep {
                at: Duration::from_secs(20),
                rate_kbps: Some(3000),
                ..Default::default()
            },
        ];
        s
    }

    fn heights(h: &[(u32, u32)]) -> EndpointSeries {
        // (until second, height) runs
        let mut points = Vec::new();
        let mut t = 0;
        for &(until, height) in h {
            while t < until {
                points.push(point(t, height, if t == 14 { 3.0 } else { 0.0 }, None, None));
                t += 1;
            }
        }
        EndpointSeries { index: 1, points }
    }

    #[test]
    fn step_criteria_pass_and_fail_on_timing() {
        let c = CheckConfig {
            step_down_within: Some(Duration::from_secs(2)),
            max_window_loss_percent: Some(5.0),
            step_up_within: Some(Duration::from_secs(8)),
            ..Default::default()
        };
        let s = scenario(c);
        // Down in second 11 (reached by t = 12: 2 s), up in second 24 (5 s).
        let good = heights(&[(11, 720), (24, 360), (30, 720)]);
        let v = evaluate(&s, (5, 30), &[good]);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|v| v.passed), "{v:?}");
        assert_eq!(v[0].value, 2.0);
        assert_eq!(v[1].value, 3.0, "worst window");
        assert_eq!(v[2].value, 5.0);
        // Too slow down (3 s), never back up.
        let bad = heights(&[(12, 720), (30, 360)]);
        let v = evaluate(&s, (5, 30), &[bad]);
        assert!(!v[0].passed && v[0].value == 3.0, "{v:?}");
        assert!(!v[2].passed, "{v:?}");
    }

    #[test]
    fn estimate_and_residual_loss() {
        let c = CheckConfig {
            max_residual_loss_percent: Some(0.1),
            estimate_within_percent: Some(30.0),
            settle: Duration::from_secs(2),
            ..Default::default()
        };
        let mut s = scenario(c);
        s.link.downlink.schedule.clear();
        s.link.downlink.rate_kbps = 2000;
        let mut points: Vec<_> = (0..10)
            .map(|t| point(t, 360, 0.0, Some(1800.0), Some(2000.0)))
            .collect();
        points[3].bwe_kbps = Some(500.0); // before settle: ignored
        let r = EndpointSeries { index: 1, points };
        let v = evaluate(&s, (2, 10), std::slice::from_ref(&r));
        assert!(v.iter().all(|v| v.passed), "{v:?}");
        let mut r2 = r.clone();
        r2.points[6].bwe_kbps = Some(1300.0);
        r2.points[7].rtp_received = 990;
        let v = evaluate(&s, (2, 10), &[r2]);
        assert!(v.iter().all(|v| !v.passed), "{v:?}");
    }
}
