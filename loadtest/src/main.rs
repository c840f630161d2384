//! `loadtest`: plays Jicofo plus many real WebRTC endpoints (str0m) against a Colibri2 bridge,
//! behind emulated links, and reports throughput, latency, loss, freezes, layers and CPU.
//!
//! `loadtest --spawn --scenario scenarios/meeting.toml --report report.html` starts Palim itself
//! on embedded defaults (free ports on 127.0.0.1), so one command shows a meeting's worth of
//! traffic on a fresh machine. See docs/loadtest.md.

mod check;
mod churn;
mod endpoint;
mod focus;
mod janus;
mod jitter;
mod link;
mod metrics;
mod report;
mod resources;
mod run;
mod scenario;
#[allow(dead_code)] // shape generators and checks: not every accessor is used by the harness
mod shape;
mod video;

use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdp};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::run::{Summary, Target};
use crate::scenario::{Codec, Mode, Scenario};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load harness for Colibri2 videobridges (Palim, JVB)",
    args_override_self = true
)]
struct Args {
    /// Scenario file (TOML); flags below override its values.
    #[arg(long, short)]
    scenario: Option<PathBuf>,
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
    #[arg(long)]
    conferences: Option<u32>,
    /// Endpoints per conference.
    #[arg(long)]
    endpoints: Option<u32>,
    /// Endpoints joined per second.
    #[arg(long)]
    join_rate: Option<f64>,
    /// Measured time once everyone has joined (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Time between the last join and the start of measuring.
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    #[arg(long, value_enum)]
    codec: Option<Codec>,
    /// Endpoints per conference sending video (-1: all).
    #[arg(long, allow_negative_numbers = true)]
    video_senders: Option<i32>,
    /// Endpoints per conference sending audio (-1: all).
    #[arg(long, allow_negative_numbers = true)]
    audio_senders: Option<i32>,
    /// Scale the senders' video bitrates.
    #[arg(long)]
    bitrate_scale: Option<f64>,
    /// Receivers' ReceiverVideoConstraints defaultConstraints.maxHeight.
    #[arg(long, allow_negative_numbers = true)]
    max_height: Option<i32>,
    /// Layer switches per receiver (random maxHeight changes during the run).
    #[arg(long)]
    switches: Option<u32>,
    /// Receivers' ReceiverVideoConstraints lastN.
    #[arg(long, allow_negative_numbers = true)]
    last_n: Option<i32>,
    /// Random loss in percent on every endpoint's default uplink and downlink.
    #[arg(long)]
    loss: Option<f64>,
    /// One-way delay in ms on every endpoint's default uplink and downlink.
    #[arg(long)]
    delay_ms: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Churn: every interval one endpoint leaves and a new one joins (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    churn_interval: Option<Duration>,
    /// Churn: every interval a whole conference is expired and a new one created.
    #[arg(long, value_parser = humantime::parse_duration)]
    conference_churn_interval: Option<Duration>,
    /// Time between samples of the bridge's RSS, fds and threads.
    #[arg(long, value_parser = humantime::parse_duration)]
    resource_interval: Option<Duration>,
    /// Take the bridge's RSS baseline this long after the start (default: the window start).
    #[arg(long, value_parser = humantime::parse_duration)]
    rss_warmup: Option<Duration>,
    /// Ramp mode: add conferences until loss or p99 latency exceed the scenario's limits.
    #[arg(long)]
    ramp: bool,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (SVG plots) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Worker threads of the harness's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    // `loadtest janus ...`: the same kind of endpoints against Janus's videoroom (janus.rs).
    if std::env::args().nth(1).as_deref() == Some("janus") {
        return match janus::main(std::env::args().skip(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest janus: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `loadtest check result.json`: evaluate a run's `[check]` criteria again (check.rs).
    if std::env::args().nth(1).as_deref() == Some("check") {
        return check::main(std::env::args().skip(2));
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,str0m=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let (scenario, scenario_text) = scenario_of(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let mut bridge = if args.spawn {
        Some(SpawnedBridge::start(args.palim.clone())?)
    } else {
        None
    };
    let target = Target {
        rest: bridge
            .as_ref()
            .map(|b| b.rest.clone())
            .unwrap_or_else(|| args.rest.clone()),
        pid: bridge.as_ref().map(|b| b.child.id()).or(args.bridge_pid),
        progress: !args.quiet,
    };
    eprintln!(
        "scenario {}: {} × {} endpoints ({:?}, {:?}) through {}",
        scenario.name, scenario.conferences, scenario.endpoints, scenario.codec, scenario.mode, target.rest
    );
    let result = runtime.block_on(run::run(&scenario, &target));
    if let Some(b) = bridge.as_mut() {
        b.stop();
    }
    let summary = result?;
    for (k, v) in summary.rows() {
        println!("{k:<28} {v}");
    }
    for v in &summary.checks {
        println!(
            "check {:<22} {} {}",
            v.name,
            if v.passed { "PASS" } else { "FAIL" },
            v.detail
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, render_report(&summary, &scenario_text))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if summary.connected < summary.endpoints {
        bail!(
            "{} of {} endpoints never connected",
            summary.endpoints - summary.connected,
            summary.endpoints
        );
    }
    if summary.endpoints > 1 && summary.totals.received_packets == 0 && summary.ramp.is_none() {
        bail!("no media went through the bridge");
    }
    Ok(())
}

/// The scenario file (or the defaults) with the flags applied, and its text for the report.
fn scenario_of(args: &Args) -> anyhow::Result<(Scenario, String)> {
    let (mut s, text) = match &args.scenario {
        Some(p) => {
            let s = Scenario::load(p)?;
            let text = std::fs::read_to_string(p).unwrap_or_default();
            (s, text)
        }
        None => (Scenario::default(), String::new()),
    };
    let mut overrides = Vec::new();
    macro_rules! set {
        ($flag:ident => $($field:ident).+) => {
            if let Some(v) = args.$flag {
                s.$($field).+ = v;
                overrides.push(format!("{} = {:?}", stringify!($flag), v));
            }
        };
    }
    set!(conferences => conferences);
    set!(endpoints => endpoints);
    set!(join_rate => join_rate);
    set!(duration => duration);
    set!(warmup => warmup);
    set!(codec => codec);
    set!(video_senders => video_senders);
    set!(audio_senders => audio_senders);
    set!(bitrate_scale => video_bitrate_scale);
    set!(max_height => receiver.max_height);
    set!(last_n => receiver.last_n);
    set!(switches => switches);
    set!(seed => seed);
    set!(loss => link.uplink.loss_percent);
    set!(loss => link.downlink.loss_percent);
    set!(delay_ms => link.uplink.delay_ms);
    set!(delay_ms => link.downlink.delay_ms);
    set!(resource_interval => resources.interval);
    macro_rules! set_some {
        ($flag:ident => $($field:ident).+) => {
            if let Some(v) = args.$flag {
                s.$($field).+ = Some(v);
                overrides.push(format!("{} = {:?}", stringify!($flag), v));
            }
        };
    }
    set_some!(churn_interval => churn.interval);
    set_some!(conference_churn_interval => churn.conference_interval);
    set_some!(rss_warmup => resources.warmup);
    if args.ramp {
        s.mode = Mode::Ramp;
        overrides.push("mode = ramp".into());
    }
    s.validate()
        .map_err(|m| anyhow::anyhow!("scenario (after command-line overrides): {m}"))?;
    let mut text = text;
    if !overrides.is_empty() {
        text.push_str("\n# command-line overrides:\n");
        for o in overrides {
            text.push_str(&format!("# {o}\n"));
        }
    }
    Ok((s, text))
}

fn render_report(summary: &Summary, scenario_text: &str) -> String {
    let mut extra = String::new();
    let mut charts = report::charts(&summary.series);
    for r in summary
        .receivers
        .iter()
        .filter(|r| r.points.iter().any(|p| p.rx_packets > 0))
    {
        charts.extend(report::receiver_charts(r).into_iter().map(|c| c.1));
    }
    if !summary.checks.is_empty() {
        extra.push_str("<h2>Checks</h2><table>");
        for v in &summary.checks {
            extra.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                report::esc(&v.name),
                if v.passed { "pass" } else { "FAIL" },
                report::esc(&v.detail)
            ));
        }
        extra.push_str("</table>");
    }
    if let Some(r) = &summary.resources {
        charts.extend(r.charts());
    }
    if let Some(r) = &summary.ramp {
        extra.push_str("<h2>Ramp</h2><table><tr><th>endpoints</th><th>loss %</th><th>p99 ms</th><th>received pkt/s</th><th>bridge CPU %</th><th>harness CPU %</th><th>harness lag p99 ms</th><th></th></tr>");
        for s in &r.steps {
            extra.push_str(&format!(
                "<tr><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td>{}</td></tr>",
                s.endpoints,
                s.loss_percent,
                s.latency_ms_p99,
                s.received_pps,
                s.bridge_cpu_percent.map_or("n/a".into(), |v| format!("{v:.0}")),
                s.harness_cpu_percent.map_or("n/a".into(), |v| format!("{v:.0}")),
                s.harness_lag_ms_p99,
                if s.good { "good" } else { "over the limits" },
            ));
        }
        extra.push_str(&format!(
            "</table><p>Capacity: <b>{} endpoints</b> (stopped: {}).</p>",
            r.capacity_endpoints,
            report::esc(&r.stopped_because)
        ));
        let xs = |f: &dyn Fn(&run::RampStep) -> f64| -> Vec<(f64, f64)> {
            r.steps.iter().map(|s| (f64::from(s.endpoints), f(s))).collect()
        };
        charts.insert(
            0,
            report::line_chart(
                "Ramp: loss and p99 latency per step",
                "endpoints",
                "% / ms",
                &[
                    report::Series {
                        name: "loss %".into(),
                        points: xs(&|s| s.loss_percent),
                    },
                    report::Series {
                        name: "p99 ms".into(),
                        points: xs(&|s| s.latency_ms_p99),
                    },
                    report::Series {
                        name: "bridge CPU %".into(),
                        points: xs(&|s| s.bridge_cpu_percent.unwrap_or(f64::NAN)),
                    },
                ],
            ),
        );
    }
    report::html(
        &format!("Palim load test: {}", summary.scenario.name),
        &summary.rows(),
        &charts,
        &extra,
        scenario_text,
    )
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
