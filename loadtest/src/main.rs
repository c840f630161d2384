//! `loadtest`: plays Jicofo plus many real WebRTC endpoints (str0m) against a Colibri2 bridge,
//! and reports throughput, latency, loss and the bridge's CPU.
//!
//! `loadtest --spawn` starts Palim itself on embedded defaults (free ports on 127.0.0.1), so one
//! command shows a meeting's worth of traffic on a fresh machine.

mod endpoint;
mod focus;
mod janus;
#[allow(dead_code)] // shape generators and checks: wired into the harness by another change
mod shape;
mod stats;

use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdp};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::endpoint::{ssrcs_of, EndpointSetup, Peer, SendProfile};
use crate::focus::Focus;
use crate::stats::{percentile, proc_usage, EndpointReport};

#[derive(Parser, Debug)]
#[command(version, about = "Load harness for Colibri2 videobridges (Palim, JVB)")]
struct Args {
    /// Start Palim (the `palim` binary next to this one, or --palim) on free loopback ports.
    #[arg(long)]
    spawn: bool,
    /// Path of the palim binary for --spawn.
    #[arg(long)]
    palim: Option<PathBuf>,
    /// The bridge's private REST API, when not spawning.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    rest: String,
    /// PID of the bridge, to measure its CPU when not spawning.
    #[arg(long)]
    bridge_pid: Option<u32>,
    #[arg(long, default_value_t = 1)]
    conferences: u32,
    /// Endpoints per conference.
    #[arg(long, default_value_t = 4)]
    endpoints: u32,
    /// How long to measure once everyone has joined.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Pause between joins.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    join_interval: Duration,
    /// Video bitrate per sender in kbps (0: audio only).
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Summary {
    conferences: u32,
    endpoints: u32,
    connected: u32,
    duration_s: f64,
    sent_packets: u64,
    received_packets: u64,
    expected_packets: u64,
    loss_percent: f64,
    corrupt_packets: u64,
    received_pps: f64,
    latency_ms_p50: f64,
    latency_ms_p95: f64,
    latency_ms_p99: f64,
    join_ms_p50: f64,
    join_ms_max: f64,
    bridge_cpu_s: Option<f64>,
    bridge_rss_mib: Option<f64>,
    bridge_cpu_us_per_forwarded_packet: Option<f64>,
    endpoints_detail: Vec<EndpointReport>,
}

fn main() -> anyhow::Result<()> {
    // `loadtest janus ...`: the same endpoints against Janus's videoroom (janus.rs).
    if std::env::args().nth(1).as_deref() == Some("janus") {
        return janus::main(std::env::args().skip(1));
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,str0m=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut bridge = if args.spawn {
        Some(SpawnedBridge::start(args.palim.clone())?)
    } else {
        None
    };
    let rest = bridge
        .as_ref()
        .map(|b| b.rest.clone())
        .unwrap_or_else(|| args.rest.clone());
    let pid = bridge.as_ref().map(|b| b.child.id()).or(args.bridge_pid);
    let result = runtime.block_on(run(&args, &rest, pid));
    if let Some(b) = bridge.as_mut() {
        b.stop();
    }
    let summary = result?;
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if summary.connected < summary.endpoints {
        bail!(
            "{} of {} endpoints never connected",
            summary.endpoints - summary.connected,
            summary.endpoints
        );
    }
    if summary.endpoints > 1 && summary.received_packets == 0 {
        bail!("no media went through the bridge");
    }
    Ok(())
}

async fn run(args: &Args, rest: &str, pid: Option<u32>) -> anyhow::Result<Summary> {
    let focus = Focus::new(rest);
    let epoch = Instant::now();
    let cert = endpoint::shared_cert()?;
    let profile = SendProfile {
        video_bps: args.video_kbps * 1000,
        ..Default::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let n = args.endpoints;
    eprintln!(
        "joining {} conference(s) × {} endpoints through {rest}",
        args.conferences, n
    );

    for c in 0..args.conferences {
        let meeting = format!("loadtest-{}-{c}", std::process::id());
        for e in 0..n {
            let index = c * n + e;
            let name = format!("ep{index:05x}");
            let peer = Peer::new(&cert, Instant::now());
            let bridge = focus
                .allocate(&meeting, e == 0, &name)
                .await
                .with_context(|| format!("allocating {name}"))?;
            if bridge.sctp_port != Some(5000) {
                bail!("the answer for {name} has no sctp port 5000: Jicofo would fail this allocation");
            }
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            let (a, v) = ssrcs_of(index);
            focus
                .accept(
                    &meeting,
                    &name,
                    &peer.transport(),
                    a,
                    (profile.video_bps > 0).then_some(v),
                )
                .await
                .with_context(|| format!("session-accept for {name}"))?;
            let peers = (0..n).filter(|&o| o != e).map(|o| c * n + o).collect();
            let setup = EndpointSetup {
                index,
                socket,
                bridge,
                peers,
                profile,
                epoch,
            };
            tasks.push(tokio::spawn(endpoint::run(peer, setup, stop_rx.clone())));
            tokio::time::sleep(args.join_interval).await;
        }
    }

    // Let everyone connect, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = pid.and_then(proc_usage);
    let sent_before = bridge_sent_packets(rest).await;
    let window = Instant::now();
    tokio::time::sleep(args.duration).await;
    let cpu_after = pid.and_then(proc_usage);
    let sent_after = bridge_sent_packets(rest).await;
    let window = window.elapsed();
    let _ = stop_tx.send(true);

    let mut reports = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(r) => reports.push(r),
            Err(e) => eprintln!("endpoint failed: {e:#}"),
        }
    }
    for c in 0..args.conferences {
        let _ = focus.expire(&format!("loadtest-{}-{c}", std::process::id())).await;
    }

    let mut lat: Vec<u32> = reports
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.receive.latencies_us))
        .collect();
    lat.sort_unstable();
    let mut joins: Vec<u32> = reports.iter().filter_map(|r| r.connect_ms.map(|m| m as u32)).collect();
    joins.sort_unstable();
    let received: u64 = reports.iter().map(|r| r.receive.received).sum();
    let expected: u64 = reports.iter().map(|r| r.receive.expected).sum();
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some((a.0 - b.0, a.1)),
        _ => None,
    };
    let forwarded = match (sent_before, sent_after) {
        (Some(b), Some(a)) if a > b => Some(a - b),
        _ => None,
    };
    Ok(Summary {
        conferences: args.conferences,
        endpoints: args.conferences * n,
        connected: reports.iter().filter(|r| r.connected).count() as u32,
        duration_s: window.as_secs_f64(),
        sent_packets: reports.iter().map(|r| r.sent_packets).sum(),
        received_packets: received,
        expected_packets: expected,
        loss_percent: if expected > 0 {
            100.0 * (expected.saturating_sub(received)) as f64 / expected as f64
        } else {
            0.0
        },
        corrupt_packets: reports.iter().map(|r| r.receive.corrupt).sum(),
        received_pps: received as f64 / (args.duration.as_secs_f64() + 2.0),
        latency_ms_p50: percentile(&lat, 50.0) / 1000.0,
        latency_ms_p95: percentile(&lat, 95.0) / 1000.0,
        latency_ms_p99: percentile(&lat, 99.0) / 1000.0,
        join_ms_p50: percentile(&joins, 50.0),
        join_ms_max: joins.last().map(|&m| f64::from(m)).unwrap_or(f64::NAN),
        bridge_cpu_s: cpu.map(|c| c.0),
        bridge_rss_mib: cpu.map(|c| c.1 as f64 / 1048576.0),
        bridge_cpu_us_per_forwarded_packet: match (cpu, forwarded) {
            (Some(c), Some(f)) => Some(c.0 * 1e6 / f as f64),
            _ => None,
        },
        endpoints_detail: reports,
    })
}

/// RTP packets the bridge has sent so far, from its `/colibri/stats`.
async fn bridge_sent_packets(rest: &str) -> Option<u64> {
    let url = format!("{}/colibri/stats", rest.trim_end_matches('/'));
    tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url).call().ok()?.body_mut().read_to_string().ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("packets_sent")
            .or_else(|| v.get("rtp_packets_sent"))
            .and_then(|p| p.as_u64())
    })
    .await
    .ok()
    .flatten()
}

fn print_summary(s: &Summary) {
    println!("== loadtest result");
    println!(
        "endpoints connected   {}/{} in {} conference(s)",
        s.connected, s.endpoints, s.conferences
    );
    println!(
        "join time             p50 {:.0} ms, max {:.0} ms",
        s.join_ms_p50, s.join_ms_max
    );
    println!(
        "packets               sent {}, received {} ({:.0}/s), loss {:.2} %, corrupt {}",
        s.sent_packets, s.received_packets, s.received_pps, s.loss_percent, s.corrupt_packets
    );
    println!(
        "latency               p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99
    );
    if let (Some(cpu), Some(rss)) = (s.bridge_cpu_s, s.bridge_rss_mib) {
        println!(
            "bridge                {:.2} CPU-s over {:.1} s, RSS {:.1} MiB",
            cpu, s.duration_s, rss
        );
    }
    if let Some(us) = s.bridge_cpu_us_per_forwarded_packet {
        println!("bridge CPU per forwarded packet  {us:.2} µs");
    }
}

/// A Palim process started by the harness on free loopback ports.
struct SpawnedBridge {
    child: Child,
    rest: String,
}

impl SpawnedBridge {
    fn start(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let path = match path {
            Some(p) => p,
            None => std::env::current_exe()?.with_file_name("palim"),
        };
        let rest_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let udp_port = StdUdp::bind("127.0.0.1:0")?.local_addr()?.port();
        let rest_addr: SocketAddr = ([127, 0, 0, 1], rest_port).into();
        let child = Command::new(&path)
            .args([
                "--udp-port",
                &udp_port.to_string(),
                "--rest-bind",
                &rest_addr.to_string(),
            ])
            .env("RUST_LOG", std::env::var("PALIM_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("XMPP_SERVER")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build -p signaling --bin palim`)",
                    path.display()
                )
            })?;
        let rest = format!("http://{rest_addr}");
        let mut bridge = Self { child, rest };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = ureq::get(&format!("{}/about/health", bridge.rest)).call() {
                if resp.status().is_success() {
                    eprintln!(
                        "spawned palim (pid {}) REST {} media udp/{udp_port}",
                        bridge.child.id(),
                        bridge.rest
                    );
                    return Ok(bridge);
                }
            }
            if let Some(status) = bridge.child.try_wait()? {
                bail!("palim exited during start: {status}");
            }
            if Instant::now() > deadline {
                bridge.stop();
                bail!("palim did not become healthy within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        // SIGTERM first for a graceful exit; then make sure.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..30 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
