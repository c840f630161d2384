//! Running a scenario: join endpoints at the scenario's rate, sample the bridge and the harness
//! once a second, show progress, measure a steady window (or ramp step by step), summarise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::churn::{self, ChurnReport, Occupant, Roster};
use crate::endpoint::{self, ssrcs_of, EndpointReport, EndpointSetup, Peer};
use crate::focus::Focus;
use crate::link::Link;
use crate::metrics::{proc_usage, self_usage, Bin, Collector, EndpointSeries, ProcSample, SecondPoint};
use crate::resources::{self, ResourceReport};
use crate::scenario::{Mode, Scenario};

/// Where the bridge is and how to watch it.
pub struct Target {
    pub rest: String,
    pub pid: Option<u32>,
    /// Print progress on stderr.
    pub progress: bool,
}

/// The result of a run, as written to `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub conferences: u32,
    pub endpoints: u32,
    pub connected: u32,
    /// The measured window, in seconds since the start of the run.
    pub window: (u32, u32),
    pub totals: Totals,
    pub bridge: ProcTotals,
    pub harness: ProcTotals,
    /// Receiver × video-sender pairs by the height received at the end of the window.
    pub layers_at_end: std::collections::BTreeMap<u32, u32>,
    pub ramp: Option<RampResult>,
    pub series: Vec<SecondPoint>,
    /// Per endpoint, per second (runs of at most [`PER_ENDPOINT_MAX`] endpoints): received
    /// bitrate, layer, loss per 1 s window, the bridge's estimate and the emulated capacity.
    pub receivers: Vec<EndpointSeries>,
    /// The scenario's `[check]` criteria evaluated on this run (check.rs).
    pub checks: Vec<crate::check::Verdict>,
    /// Leaves and joins during the window (`[churn]`), when enabled.
    pub churn: Option<ChurnReport>,
    /// The bridge's RSS, fds and threads, when its pid is known.
    pub resources: Option<ResourceReport>,
    pub endpoints_detail: Vec<EndpointReport>,
}

/// Runs with at most this many endpoints keep per-endpoint series and sample the bridge's
/// per-endpoint estimates from its `/debug` once a second.
pub const PER_ENDPOINT_MAX: u32 = 16;

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub sent_packets: u64,
    pub received_packets: u64,
    pub expected_packets: u64,
    pub loss_percent: f64,
    pub received_pps: f64,
    pub received_mbps: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub frames: u64,
    pub freezes: u64,
    pub violations: u64,
    /// p99 of how late endpoint tasks woke for their timers (harness scheduling lag).
    pub harness_lag_ms_p99: f64,
    /// Over the whole run (all endpoints).
    pub corrupt_packets: u64,
    pub join_ms_p50: f64,
    pub join_ms_max: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ProcTotals {
    pub cpu_s: Option<f64>,
    /// 100 = one core busy over the window.
    pub cpu_percent: Option<f64>,
    pub rss_mib: Option<f64>,
    /// RTP packets the bridge reported sending in the window (its /colibri/stats; coarse when
    /// the bridge refreshes its stats less often than every second).
    pub forwarded_packets: Option<u64>,
    /// CPU over the window divided by the RTP packets the endpoints received from the bridge
    /// in it (every one of which the bridge forwarded).
    pub cpu_us_per_forwarded_packet: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RampResult {
    pub steps: Vec<RampStep>,
    /// Endpoints at the last good step (0: even the first step failed).
    pub capacity_endpoints: u32,
    pub stopped_because: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub endpoints: u32,
    pub conferences: u32,
    pub window: (u32, u32),
    pub loss_percent: f64,
    pub latency_ms_p99: f64,
    pub received_pps: f64,
    pub bridge_cpu_percent: Option<f64>,
    pub harness_cpu_percent: Option<f64>,
    /// p99 of the harness's timer lag in the step: large means the harness, not the bridge,
    /// may have been the limit.
    pub harness_lag_ms_p99: f64,
    pub good: bool,
}

/// Shared between the join loop, the endpoints and the sampler.
struct Shared {
    epoch: Instant,
    collector: Arc<Mutex<Collector>>,
    joined: AtomicU32,
    connected: Arc<AtomicU32>,
}

pub async fn run(scenario: &Scenario, target: &Target) -> anyhow::Result<Summary> {
    let focus = Focus::new(&target.rest);
    focus
        .health()
        .await
        .with_context(|| format!("the bridge at {} is not reachable", target.rest))?;
    let cert = endpoint::shared_cert()?;
    let per_endpoint = scenario.mode == Mode::Steady && scenario.conferences * scenario.endpoints <= PER_ENDPOINT_MAX;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        collector: Arc::new(Mutex::new(Collector {
            keep_per_endpoint: per_endpoint,
            ..Default::default()
        })),
        joined: AtomicU32::new(0),
        connected: Arc::new(AtomicU32::new(0)),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_loop(
        shared.clone(),
        target.rest.clone(),
        target.pid,
        target.progress,
        planned_seconds(scenario),
        per_endpoint,
        stop_rx.clone(),
    ));
    let before = target.pid.and_then(|p| resources::sample(p, 0.0));
    let resource_sampler = target.pid.map(|p| {
        tokio::spawn(resources::sample_loop(
            p,
            shared.epoch,
            scenario.resources.interval,
            stop_rx.clone(),
        ))
    });
    let mut joiner = Joiner {
        focus: focus.clone(),
        scenario,
        cert,
        shared: shared.clone(),
        stop: stop_rx,
        roster: Roster::default(),
        next_index: 0,
        conferences: 0,
        next_join: Instant::now(),
    };
    let mut churn_log = None;
    let meeting = |c: u32| format!("loadtest-{}-{c}", std::process::id());

    let outcome = async {
        let (window, ramp) = match scenario.mode {
            Mode::Steady => {
                for _ in 0..scenario.conferences {
                    joiner.add_conference(&meeting).await?;
                }
                tokio::time::sleep(scenario.warmup).await;
                let from = second_of(&shared, Instant::now()) + 1;
                sleep_until_second(&shared, from).await;
                let until = shared.epoch + Duration::from_secs(u64::from(from) + scenario.duration.as_secs());
                let log = churn::drive(&mut joiner, &meeting, &scenario.churn, scenario.seed, until).await;
                if scenario.churn.enabled() {
                    churn_log = Some(log);
                }
                // Let the endpoints flush, and the sampler record, the window's last second.
                tokio::time::sleep(Duration::from_millis(400)).await;
                ((from, from + scenario.duration.as_secs() as u32), None)
            }
            Mode::Ramp => {
                let r = ramp(&mut joiner, scenario, &shared, &meeting).await?;
                let last = r.steps.iter().rev().find(|s| s.good).or(r.steps.last());
                (last.map_or((0, 0), |s| s.window), Some(r))
            }
        };
        anyhow::Ok((window, ramp))
    }
    .await;

    let end = second_of(&shared, Instant::now());
    let stats_at_end = resources::bridge_counts(&target.rest).await;
    let _ = stop_tx.send(true);
    let mut reports = std::mem::take(&mut joiner.roster.left);
    for t in joiner.roster.take_tasks() {
        match t.await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => eprintln!("endpoint failed: {e:#}"),
            Err(e) => eprintln!("endpoint task: {e}"),
        }
    }
    let _ = sampler.await;
    if target.progress {
        eprintln!();
    }
    for c in joiner.roster.live() {
        let _ = focus.expire(&meeting(c)).await;
    }
    let resources = match resource_sampler {
        Some(sampler) => {
            let samples = sampler.await.unwrap_or_default();
            let after = resources::after_expire(&target.rest, target.pid, shared.epoch, Duration::from_secs(10)).await;
            Some((samples, after))
        }
        None => None,
    };
    let (window, ramp) = outcome?;
    reports.sort_by_key(|r| r.index);
    let collector = shared
        .collector
        .lock()
        .map_err(|_| anyhow::anyhow!("collector lock poisoned"))?;
    let mut summary = summarise(scenario, joiner.conferences, &collector, window, ramp, reports);
    // The second in which we stopped is partial: leave it out of the plots.
    summary.series.truncate(end as usize);
    for r in &mut summary.receivers {
        r.points.truncate(end as usize);
    }
    summary.checks = crate::check::evaluate(&summary.scenario, summary.window, &summary.receivers);
    if let Some(log) = churn_log {
        summary.churn = Some(ChurnReport::new(&scenario.churn, &log, &summary.endpoints_detail));
        // Every endpoint that ever joined must have connected.
        summary.endpoints = joiner.roster.seated_total;
    }
    summary.resources = resources.map(|(samples, after)| {
        let warmup = scenario
            .resources
            .warmup
            .map_or(f64::from(window.0), |w| w.as_secs_f64());
        ResourceReport::new(
            scenario.resources.interval,
            warmup,
            before,
            samples,
            stats_at_end,
            after,
        )
    });
    Ok(summary)
}

/// Adds conferences and endpoints at the scenario's join rate and keeps the endpoints (by
/// conference and seat, so churn can replace them).
pub(crate) struct Joiner<'a> {
    pub(crate) focus: Focus,
    pub(crate) scenario: &'a Scenario,
    cert: str0m::config::DtlsCert,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    pub(crate) roster: Roster,
    /// The next endpoint's global index (its SSRCs and name derive from it).
    pub(crate) next_index: u32,
    conferences: u32,
    next_join: Instant,
}

impl Joiner<'_> {
    pub(crate) async fn add_conference(&mut self, meeting: &dyn Fn(u32) -> String) -> anyhow::Result<()> {
        let c = self.conferences;
        self.conferences += 1;
        self.roster.add_conference(c, self.scenario.endpoints, self.next_index);
        for e in 0..self.scenario.endpoints {
            self.join(meeting, c, e, e == 0).await?;
        }
        Ok(())
    }

    /// An endpoint left: count it out of the live totals, keep its report (`None`: its task
    /// failed, already logged).
    pub(crate) fn on_left(&mut self, report: Option<EndpointReport>) {
        let dec = |n: &AtomicU32| {
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        };
        dec(&self.shared.joined);
        if let Some(report) = report {
            if report.connected {
                dec(&self.shared.connected);
            }
            self.roster.left.push(report);
        }
    }

    /// Join a new endpoint into seat `e` of conference `c` (creating the conference on the
    /// bridge when `create`), with the role the scenario gives that position. Returns its
    /// global index and whether any of its peers sends media.
    pub(crate) async fn join(
        &mut self,
        meeting: &dyn Fn(u32) -> String,
        c: u32,
        e: u32,
        create: bool,
    ) -> anyhow::Result<(u32, bool)> {
        let s = self.scenario;
        let (vs, aus) = (s.video_senders(), s.audio_senders());
        let interval = Duration::from_secs_f64(1.0 / s.join_rate);
        {
            tokio::time::sleep_until(self.next_join.into()).await;
            self.next_join = Instant::now().max(self.next_join) + interval;
            let index = self.next_index;
            self.next_index += 1;
            let name = format!("ep{index:05x}");
            let (sends_video, sends_audio) = (e < vs, e < aus);
            let join_started = Instant::now();
            let peer = Peer::new(&self.cert, s.codec, join_started);
            let bridge = self
                .focus
                .allocate(&meeting(c), create, &name, s.codec)
                .await
                .with_context(|| format!("allocating {name}"))?;
            if bridge.sctp_port != Some(5000) {
                anyhow::bail!("the answer for {name} has no sctp port 5000: Jicofo would fail this allocation");
            }
            let socket = endpoint_socket()?;
            let encodings = if sends_video {
                crate::video::encodings_of(s.codec)
            } else {
                0
            };
            self.focus
                .accept(
                    &meeting(c),
                    &name,
                    &peer.transport(),
                    &ssrcs_of(index),
                    sends_audio,
                    encodings,
                )
                .await
                .with_context(|| format!("session-accept for {name}"))?;
            let peers: Vec<(u32, bool, bool)> = self
                .roster
                .peers(c, e)
                .into_iter()
                .map(|(o, index)| (index, o < vs, o < aus))
                .collect();
            let expects_media = peers.iter().any(|p| p.1 || p.2);
            let (links, class) = s.link_of(c, e);
            let setup = EndpointSetup {
                index,
                socket,
                bridge,
                peers,
                sends_audio,
                sends_video,
                codec: s.codec,
                bitrate_scale: s.video_bitrate_scale,
                links,
                link_class: class.to_string(),
                seed: s.seed,
                constraints: s.receiver_constraints(),
                epoch: self.shared.epoch,
                join_started,
                collector: self.shared.collector.clone(),
                connected_count: self.shared.connected.clone(),
            };
            let (stop, leave) = churn::endpoint_stop(self.stop.clone());
            let task = tokio::spawn(endpoint::run(peer, setup, stop));
            self.roster
                .seat(c, e, Occupant::new(index, name, join_started, leave, task));
            self.shared.joined.fetch_add(1, Ordering::Relaxed);
            Ok((index, expects_media))
        }
    }
}

async fn ramp(
    joiner: &mut Joiner<'_>,
    s: &Scenario,
    shared: &Arc<Shared>,
    meeting: &dyn Fn(u32) -> String,
) -> anyhow::Result<RampResult> {
    let r = s.ramp;
    let mut steps: Vec<RampStep> = Vec::new();
    let mut stopped_because;
    loop {
        let endpoints_after = (joiner.conferences + r.step_conferences) * s.endpoints;
        if endpoints_after > r.max_endpoints {
            stopped_because = format!("reached ramp.max_endpoints ({})", r.max_endpoints);
            break;
        }
        for _ in 0..r.step_conferences {
            joiner.add_conference(meeting).await?;
        }
        tokio::time::sleep(r.settle).await;
        let from = second_of(shared, Instant::now()) + 1;
        let to = from + r.step_duration.as_secs() as u32;
        sleep_until_second(shared, to).await;
        // Let the endpoints flush, and the sampler record, the window's last second.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (bin, bridge, harness) = {
            let c = shared
                .collector
                .lock()
                .map_err(|_| anyhow::anyhow!("collector lock poisoned"))?;
            (
                c.window(from as usize, to as usize),
                mean_cpu(&c.bridge, from, to),
                mean_cpu(&c.harness, from, to),
            )
        };
        let p99 = bin.latency_us.percentile(99.0) / 1000.0;
        let loss = bin.loss_percent();
        let good = bin.rx_packets > 0 && loss <= r.max_loss_percent && p99 <= r.max_p99_ms;
        let step = RampStep {
            endpoints: joiner.conferences * s.endpoints,
            conferences: joiner.conferences,
            window: (from, to),
            loss_percent: loss,
            latency_ms_p99: p99,
            received_pps: bin.rx_packets as f64 / f64::from(to - from),
            bridge_cpu_percent: bridge,
            harness_cpu_percent: harness,
            harness_lag_ms_p99: bin.lag_us.percentile(99.0) / 1000.0,
            good,
        };
        eprintln!(
            "ramp: {} endpoints: loss {:.2} %, p99 {:.1} ms, {:.0} pkt/s received, bridge {}, harness {} (timer lag p99 {:.1} ms) → {}",
            step.endpoints,
            loss,
            p99,
            step.received_pps,
            pct(bridge),
            pct(harness),
            step.harness_lag_ms_p99,
            if good { "good" } else { "over the limits" }
        );
        let lag = step.harness_lag_ms_p99;
        steps.push(step);
        if !good {
            stopped_because = if bin.rx_packets == 0 {
                "no media received in the step".into()
            } else if loss > r.max_loss_percent {
                format!("loss {loss:.2} % > {} %", r.max_loss_percent)
            } else {
                format!("p99 latency {p99:.1} ms > {} ms", r.max_p99_ms)
            };
            if lag > 20.0 {
                stopped_because.push_str(&format!(
                    "; the harness lagged {lag:.0} ms (p99), so it may have been the limit, not the bridge"
                ));
            }
            break;
        }
    }
    let capacity = steps.iter().rev().find(|s| s.good).map_or(0, |s| s.endpoints);
    Ok(RampResult {
        steps,
        capacity_endpoints: capacity,
        stopped_because,
    })
}

/// A loopback UDP socket with a receive buffer deep enough (1 MiB, ~0.5 s of a 720p simulcast
/// receiver's traffic) that a briefly descheduled harness does not lose packets in the kernel.
fn endpoint_socket() -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(1 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    Ok(UdpSocket::from_std(s.into())?)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0} % CPU"))
}

fn mean_cpu(v: &[Option<ProcSample>], from: u32, to: u32) -> Option<f64> {
    let xs: Vec<f64> = v
        .iter()
        .take(to as usize)
        .skip(from as usize)
        .filter_map(|p| p.map(|p| p.cpu_s))
        .collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64 * 100.0)
}

fn second_of(shared: &Shared, t: Instant) -> u32 {
    t.saturating_duration_since(shared.epoch).as_secs() as u32
}

async fn sleep_until_second(shared: &Shared, s: u32) {
    tokio::time::sleep_until((shared.epoch + Duration::from_secs(u64::from(s))).into()).await;
}

/// Once a second (a little after each boundary): the bridge's and our CPU and RSS, the bridge's
/// forwarded packets, and the progress line.
async fn sample_loop(
    shared: Arc<Shared>,
    rest: String,
    pid: Option<u32>,
    progress: bool,
    planned: Option<u32>,
    per_endpoint: bool,
    mut stop: watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let mut last_bridge = pid.and_then(proc_usage);
    let mut last_self = self_usage();
    let mut last_fwd = bridge_sent_packets(&rest).await;
    // The last second in which the bridge's counter changed (seconds after it are still 0).
    let mut fwd_changed: Option<usize> = None;
    let mut s: u32 = 1;
    loop {
        let at = shared.epoch + Duration::from_secs(u64::from(s)) + Duration::from_millis(200);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stop.changed() => return,
        }
        let bridge = pid.and_then(proc_usage);
        let me = self_usage();
        let fwd = bridge_sent_packets(&rest).await;
        let bwe = if per_endpoint {
            bridge_estimates(&rest).await
        } else {
            Vec::new()
        };
        let sample = |now: Option<(f64, u64)>, before: Option<(f64, u64)>| match (now, before) {
            (Some(n), Some(b)) => Some(ProcSample {
                cpu_s: (n.0 - b.0).max(0.0),
                rss_bytes: n.1,
            }),
            _ => None,
        };
        let second = (s - 1) as usize;
        let line = {
            let Ok(mut c) = shared.collector.lock() else { return };
            c.set_proc(second, sample(bridge, last_bridge), sample(me, last_self));
            // The bridge may refresh its stats every few seconds: spread each change evenly
            // over the seconds since the previous change.
            match (fwd, last_fwd) {
                (Some(a), Some(b)) if a > b => {
                    let start = fwd_changed.map_or(0, |c| c + 1).min(second);
                    let per = (a - b) / (second + 1 - start) as u64;
                    for t in start..=second {
                        c.set_forwarded(t, Some(per));
                    }
                    fwd_changed = Some(second);
                    last_fwd = fwd;
                }
                (Some(_), Some(_)) => c.set_forwarded(second, Some(0)),
                _ => {
                    c.set_forwarded(second, None);
                    last_fwd = fwd;
                }
            }
            c.set_endpoints(second, shared.joined.load(Ordering::Relaxed));
            for (index, bps) in &bwe {
                c.set_bwe(*index, second, *bps);
            }
            let empty = Bin::default();
            let b = c.bins.get(second).unwrap_or(&empty);
            format!(
                "[{:>4} s] endpoints {}/{} connected | rx {:>6} pkt/s {:>6.1} Mbit/s | loss {:>5.2} % | p99 {:>6.1} ms | freezes {} | bridge {} | harness {}",
                s,
                shared.connected.load(Ordering::Relaxed),
                shared.joined.load(Ordering::Relaxed),
                b.rx_packets,
                b.rx_bytes as f64 * 8.0 / 1e6,
                b.loss_percent(),
                b.latency_us.percentile(99.0) / 1000.0,
                b.freezes,
                pct(c.bridge.get(second).copied().flatten().map(|p| p.cpu_s * 100.0)),
                pct(c.harness.get(second).copied().flatten().map(|p| p.cpu_s * 100.0)),
            )
        };
        if progress {
            if tty {
                let bar = planned.map_or(String::new(), |p| progress_bar(s, p, 20));
                eprint!("\r\x1b[2K{bar}{line}");
            } else if s.is_multiple_of(5) {
                eprintln!("{line}");
            }
        }
        (last_bridge, last_self) = (bridge, me);
        s += 1;
    }
}

/// How long a steady run should take (joins, warmup, duration), for the progress bar.
fn planned_seconds(s: &Scenario) -> Option<u32> {
    (s.mode == Mode::Steady).then(|| {
        let joins = f64::from(s.conferences * s.endpoints) / s.join_rate;
        (joins + s.warmup.as_secs_f64() + s.duration.as_secs_f64()).ceil() as u32 + 2
    })
}

/// `[#######.............] ` for `done` of `total`.
fn progress_bar(done: u32, total: u32, width: usize) -> String {
    let filled = (done.min(total) as usize * width) / total.max(1) as usize;
    format!("[{}{}] ", "#".repeat(filled), ".".repeat(width - filled))
}

/// RTP packets the bridge has sent so far, from its `/colibri/stats`.
async fn bridge_sent_packets(rest: &str) -> Option<u64> {
    let url = format!("{}/colibri/stats", rest.trim_end_matches('/'));
    tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url).call().ok()?.body_mut().read_to_string().ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("rtp_packets_sent")
            .or_else(|| v.get("packets_sent"))
            .and_then(|p| p.as_u64())
    })
    .await
    .ok()
    .flatten()
}

/// The bridge's downlink estimate per endpoint, from `/debug` (`endpoint_bwe`), by harness
/// endpoint index (names are `ep{index:05x}`).
async fn bridge_estimates(rest: &str) -> Vec<(u32, Option<u64>)> {
    let url = format!("{}/debug", rest.trim_end_matches('/'));
    tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url).call().ok()?.body_mut().read_to_string().ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let map = v.get("endpoint_bwe")?.as_object()?;
        Some(
            map.iter()
                .filter_map(|(name, bps)| {
                    let index = u32::from_str_radix(name.strip_prefix("ep")?, 16).ok()?;
                    Some((index, bps.as_u64()))
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn summarise(
    scenario: &Scenario,
    conferences: u32,
    c: &Collector,
    window: (u32, u32),
    ramp: Option<RampResult>,
    reports: Vec<EndpointReport>,
) -> Summary {
    let (from, to) = (window.0 as usize, window.1 as usize);
    let secs = (to.saturating_sub(from)).max(1) as f64;
    let bin = c.window(from, to);
    let mut joins: Vec<f64> = reports.iter().filter_map(|r| r.join_ms).collect();
    joins.sort_by(f64::total_cmp);
    let proc_totals = |v: &[Option<ProcSample>], forwarded: Option<u64>, received: u64| {
        let samples: Vec<ProcSample> = v.iter().take(to).skip(from).filter_map(|p| *p).collect();
        if samples.is_empty() {
            return ProcTotals::default();
        }
        let cpu: f64 = samples.iter().map(|p| p.cpu_s).sum();
        ProcTotals {
            cpu_s: Some(cpu),
            cpu_percent: Some(cpu / samples.len() as f64 * 100.0),
            rss_mib: samples.last().map(|p| p.rss_bytes as f64 / 1048576.0),
            forwarded_packets: forwarded,
            cpu_us_per_forwarded_packet: (received > 0).then(|| cpu * 1e6 / received as f64),
        }
    };
    let fwd: Vec<u64> = c.forwarded.iter().take(to).skip(from).filter_map(|f| *f).collect();
    let forwarded = (!fwd.is_empty()).then(|| fwd.iter().sum());
    let layers_at_end = to
        .checked_sub(1)
        .and_then(|s| c.bins.get(s))
        .map(|b| b.layers.clone())
        .unwrap_or_default();
    let totals = Totals {
        sent_packets: bin.sent_packets,
        received_packets: bin.rx_packets,
        expected_packets: bin.expected,
        loss_percent: bin.loss_percent(),
        received_pps: bin.rx_packets as f64 / secs,
        received_mbps: bin.rx_bytes as f64 * 8.0 / 1e6 / secs,
        latency_ms_p50: bin.latency_us.percentile(50.0) / 1000.0,
        latency_ms_p95: bin.latency_us.percentile(95.0) / 1000.0,
        latency_ms_p99: bin.latency_us.percentile(99.0) / 1000.0,
        frames: bin.frames,
        freezes: bin.freezes,
        violations: bin.violations,
        harness_lag_ms_p99: bin.lag_us.percentile(99.0) / 1000.0,
        corrupt_packets: reports.iter().map(|r| r.corrupt_packets).sum(),
        join_ms_p50: joins.get(joins.len() / 2).copied().unwrap_or(f64::NAN),
        join_ms_max: joins.last().copied().unwrap_or(f64::NAN),
    };
    Summary {
        scenario: scenario.clone(),
        conferences,
        endpoints: conferences * scenario.endpoints,
        connected: reports.iter().filter(|r| r.connected).count() as u32,
        window,
        totals,
        bridge: proc_totals(&c.bridge, forwarded, bin.rx_packets),
        harness: proc_totals(&c.harness, None, 0),
        layers_at_end,
        ramp,
        series: c.series(),
        receivers: c.endpoint_series(&|index, t| {
            let (conf, pos) = (index / scenario.endpoints, index % scenario.endpoints);
            let down = scenario.link_of(conf, pos).0.downlink;
            let rate = Link::rate_at(&down, Duration::from_secs(u64::from(t)));
            (rate > 0).then_some(f64::from(rate))
        }),
        checks: Vec::new(),
        churn: None,
        resources: None,
        endpoints_detail: reports,
    }
}

impl Summary {
    /// Label/value rows for the console and the HTML report.
    pub fn rows(&self) -> Vec<(String, String)> {
        let t = &self.totals;
        let mut rows = vec![
            (
                "scenario".into(),
                format!("{} ({:?})", self.scenario.name, self.scenario.mode),
            ),
            (
                "endpoints connected".into(),
                format!(
                    "{}/{} in {} conference(s)",
                    self.connected, self.endpoints, self.conferences
                ),
            ),
            ("codec".into(), format!("{:?}", self.scenario.codec)),
            (
                "measured window".into(),
                format!(
                    "{} s (t = {}..{} s)",
                    self.window.1.saturating_sub(self.window.0),
                    self.window.0,
                    self.window.1
                ),
            ),
            (
                "join time".into(),
                format!("p50 {:.0} ms, max {:.0} ms", t.join_ms_p50, t.join_ms_max),
            ),
            (
                "packets".into(),
                format!(
                    "sent {}, received {} ({:.0}/s, {:.1} Mbit/s)",
                    t.sent_packets, t.received_packets, t.received_pps, t.received_mbps
                ),
            ),
            ("loss".into(), format!("{:.2} %", t.loss_percent)),
            (
                "latency".into(),
                format!(
                    "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
                    t.latency_ms_p50, t.latency_ms_p95, t.latency_ms_p99
                ),
            ),
            (
                "video".into(),
                format!(
                    "{} frames, {} freezes (> 500 ms), {} stream violations, {} corrupt packets",
                    t.frames, t.freezes, t.violations, t.corrupt_packets
                ),
            ),
            (
                "layers at end".into(),
                self.layers_at_end
                    .iter()
                    .map(|(h, n)| {
                        if *h == 0 {
                            format!("none: {n}")
                        } else {
                            format!("{h}p: {n}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        rows.extend(crate::report::switch_rows(&self.endpoints_detail));
        let proc_row = |p: &ProcTotals| match (p.cpu_s, p.cpu_percent, p.rss_mib) {
            (Some(c), Some(pc), Some(r)) => format!("{c:.2} CPU-s ({pc:.0} % of a core), RSS {r:.1} MiB"),
            _ => "n/a".into(),
        };
        rows.push(("bridge".into(), proc_row(&self.bridge)));
        if let Some(us) = self.bridge.cpu_us_per_forwarded_packet {
            let stats = self
                .bridge
                .forwarded_packets
                .map_or(String::new(), |f| format!("; its stats: {f} RTP packets sent"));
            rows.push((
                "bridge per forwarded packet".into(),
                format!(
                    "{us:.2} µs CPU ({} packets received{stats})",
                    self.totals.received_packets
                ),
            ));
        }
        rows.push(("harness (this process)".into(), proc_row(&self.harness)));
        rows.push((
            "harness timer lag p99".into(),
            format!(
                "{:.1} ms{}",
                self.totals.harness_lag_ms_p99,
                if self.totals.harness_lag_ms_p99 > 20.0 {
                    " (the harness could not keep up: its latency and loss numbers include its own delay)"
                } else {
                    ""
                }
            ),
        ));
        if let Some(c) = &self.churn {
            rows.extend(c.rows());
        }
        if let Some(r) = &self.resources {
            rows.extend(r.rows());
        }
        if let Some(r) = &self.ramp {
            rows.push((
                "capacity".into(),
                format!("{} endpoints (stopped: {})", r.capacity_endpoints, r.stopped_because),
            ));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_fills_and_saturates() {
        assert_eq!(progress_bar(0, 10, 10), "[..........] ");
        assert_eq!(progress_bar(5, 10, 10), "[#####.....] ");
        assert_eq!(progress_bar(15, 10, 10), "[##########] ");
        let s = Scenario {
            conferences: 2,
            endpoints: 5,
            join_rate: 10.0,
            ..Default::default()
        };
        // 1 s of joins + 3 s warmup + 10 s measured + 2 s slack.
        assert_eq!(planned_seconds(&s), Some(16));
    }
}
