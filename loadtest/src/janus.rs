//! `loadtest janus`: the harness's endpoints and media against Janus's videoroom, so Palim can be
//! measured beside another SFU on the same scenario (issue 3, item 7).
//!
//! Each participant is two str0m peers, because the videoroom keeps publishing and subscribing
//! on separate PeerConnections: a publisher (Opus + one VP8 stream, the same packets, sizes and
//! rates as `endpoint.rs` sends to Palim) and one subscriber PeerConnection that receives every
//! other publisher of its room. Signalling is the Janus REST API with half-trickle; see
//! /work/shared/peers/janus/README.md for the recipe (netns + veth, why loopback cannot work).
//!
//! The output has the field names of the Palim summary; "forwarded" packets are the RTP packets
//! the subscribers received during the window (Janus has no cheap global counter).

mod api;
mod measure;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::endpoint::{shared_cert, AUDIO_PT};
use crate::shape::vp8::{Vp8Config, Vp8Simulcast};
use api::{body, Jsep, Reply};
use measure::{percentile, proc_usage, EndpointReport, Payload, ReceiveReport, Receiver, SendProfile, VIDEO_PT};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest janus",
    about = "The loadtest endpoints against Janus's videoroom (run inside /work/shared/peers/janus/run.sh)"
)]
pub struct JanusArgs {
    /// Janus API base URL.
    #[arg(long, env = "JANUS_URL")]
    url: String,
    /// PID of the Janus process, for its CPU.
    #[arg(long, env = "JANUS_PID")]
    janus_pid: Option<u32>,
    /// Address of the client end of the veth: ICE candidates must be on it.
    #[arg(long, env = "JANUS_CLIENT_IP", default_value = "198.18.0.2")]
    client_ip: IpAddr,
    #[arg(long, default_value_t = 1)]
    conferences: u32,
    /// Participants per room.
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
    /// Publish browser-shaped VP8 simulcast from the shape generator (180p/360p/720p, L1T3,
    /// 200 k / 500 k / 1.5 M, rids q/h/f listed highest first as Janus expects) instead of the
    /// single stream; --video-kbps is then ignored. Janus forwards one substream (the top one)
    /// to each subscriber. Loss is then counted from the RTP sequence numbers Janus writes.
    /// Not like for like with the Palim harness, which sends one stream.
    #[arg(long)]
    simulcast: bool,
}

/// Simulcast rids by shape-generator encoding index (0 = 180p … 2 = 720p).
const RIDS: [&str; 3] = ["q", "h", "f"];
/// Marks the tracking bytes in a shape-generator packet (as `stats::Payload` does).
const TRACK_MAGIC: &[u8; 4] = b"PLM1";

/// The Palim summary's fields, plus what only this runner knows.
#[derive(Debug, Serialize)]
pub struct Summary {
    sfu: &'static str,
    conferences: u32,
    endpoints: u32,
    connected: u32,
    duration_s: f64,
    sent_packets: u64,
    received_packets: u64,
    expected_packets: u64,
    loss_percent: f64,
    corrupt_packets: u64,
    /// Over the measured window (the Palim summary divides the whole run's count by
    /// duration + 2 s).
    received_pps: f64,
    latency_ms_p50: f64,
    latency_ms_p95: f64,
    latency_ms_p99: f64,
    join_ms_p50: f64,
    join_ms_max: f64,
    bridge_cpu_s: Option<f64>,
    bridge_rss_mib: Option<f64>,
    /// RTP packets the subscribers received in the window.
    forwarded_packets: u64,
    bridge_cpu_us_per_forwarded_packet: Option<f64>,
    endpoints_detail: Vec<EndpointReport>,
}

/// Entry point for `loadtest janus [ARGS]`; `argv` starts with the subcommand name.
pub fn main(argv: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = JanusArgs::parse_from(argv);
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
    let summary = runtime.block_on(run(&args))?;
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
        bail!("no media went through Janus");
    }
    Ok(())
}

/// Blocking JSON over HTTP to one Janus.
struct Client {
    base: String,
    agent: ureq::Agent,
    /// Long polls last up to 30 s.
    poll_agent: ureq::Agent,
    next_tx: AtomicU64,
}

impl Client {
    fn new(base: &str) -> Self {
        let agent = |secs| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(secs)))
                .build()
                .into()
        };
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(15),
            poll_agent: agent(45),
            next_tx: AtomicU64::new(1),
        }
    }

    fn transaction(&self) -> String {
        format!("lt{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    fn post_blocking(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .send_json(body)
            .with_context(|| format!("POST {url}"))?;
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("POST {url}"))?;
        serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))
    }

    fn poll_blocking(&self, session: u64) -> anyhow::Result<Value> {
        let url = format!("{}/{session}?maxev=10", self.base);
        let mut resp = self.poll_agent.get(&url).call().with_context(|| format!("GET {url}"))?;
        let text = resp.body_mut().read_to_string()?;
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON: {text}"))
    }

    async fn post(self: &Arc<Self>, path: String, body: Value) -> anyhow::Result<Reply> {
        let me = Arc::clone(self);
        let v = tokio::task::spawn_blocking(move || me.post_blocking(&path, &body)).await??;
        Ok(api::parse_reply(&v)?)
    }
}

/// One Janus session shared by every handle of the run, with its long-poll thread.
struct Signal {
    client: Arc<Client>,
    session: u64,
    events: mpsc::UnboundedReceiver<api::Event>,
    /// Plugin events that arrived while waiting for another.
    pending: Vec<api::Event>,
}

impl Signal {
    async fn connect(base: &str) -> anyhow::Result<Self> {
        let client = Arc::new(Client::new(base));
        let session = match client
            .post(String::new(), api::create_session(&client.transaction()))
            .await?
        {
            Reply::Success { id: Some(id), .. } => id,
            r => bail!("create session: unexpected {r:?}"),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let poller = Arc::clone(&client);
        // The poll loop is also the session's keepalive. It ends when the session is destroyed
        // (Janus answers with an error) or the receiver is gone.
        std::thread::spawn(move || loop {
            match poller.poll_blocking(session).map(|v| api::parse_events(&v)) {
                Ok(Ok(evs)) => {
                    for e in evs {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "long poll ended");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "long poll failed");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        Ok(Self {
            client,
            session,
            events,
            pending: Vec::new(),
        })
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let req = api::attach(&self.client.transaction(), api::VIDEOROOM);
        match self.client.post(format!("/{}", self.session), req).await? {
            Reply::Success { id: Some(id), .. } => Ok(id),
            r => bail!("attach: unexpected {r:?}"),
        }
    }

    async fn message(&self, handle: u64, body: Value, jsep: Option<&Jsep>) -> anyhow::Result<Reply> {
        let req = api::message(&self.client.transaction(), body, jsep);
        self.client.post(format!("/{}/{handle}", self.session), req).await
    }

    async fn trickle_done(&self, handle: u64) -> anyhow::Result<()> {
        let req = api::trickle_completed(&self.client.transaction());
        self.client
            .post(format!("/{}/{handle}", self.session), req)
            .await
            .map(|_| ())
    }

    /// The next plugin event of `handle` that matches `want`; a plugin error on it fails.
    async fn wait(
        &mut self,
        handle: u64,
        what: &str,
        want: impl Fn(&api::Event) -> bool,
    ) -> anyhow::Result<api::Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let check = |e: &api::Event| -> Option<anyhow::Result<()>> {
            if e.sender != handle {
                return None;
            }
            if let Some(err) = e.error() {
                return Some(Err(anyhow::Error::new(err).context(format!("waiting for {what}"))));
            }
            want(e).then_some(Ok(()))
        };
        if let Some(i) = self.pending.iter().position(|e| check(e).is_some()) {
            let e = self.pending.remove(i);
            return check(&e).unwrap_or(Ok(())).map(|()| e);
        }
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("no {what} from Janus within 15 s (handle {handle})"))?
                .ok_or_else(|| anyhow!("long poll stopped while waiting for {what}"))?;
            match check(&e) {
                Some(r) => return r.map(|()| e),
                None if e.kind == "event" || e.kind == "webrtcup" => self.pending.push(e),
                None => tracing::debug!(kind = e.kind, sender = e.sender, "janus notice"),
            }
        }
    }

    async fn destroy(&self) {
        let req = api::destroy_session(&self.client.transaction());
        if let Err(e) = self.client.post(format!("/{}", self.session), req).await {
            tracing::warn!(error = %format!("{e:#}"), "destroying the session");
        }
    }
}

/// A str0m peer in RTP mode with the harness's codecs: Opus 111, VP8 100 (RTX 96).
fn new_rtc(cert: &DtlsCert, now: Instant) -> Rtc {
    let mut cfg = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .set_dtls_cert(cert.clone());
    let codecs = cfg.codec_config();
    codecs.add_config(
        Pt::from(AUDIO_PT),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        Default::default(),
    );
    codecs.add_config(
        Pt::from(VIDEO_PT),
        Some(Pt::from(96)),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        Default::default(),
    );
    cfg.build(now)
}

async fn bound_peer(cert: &DtlsCert, ip: IpAddr) -> anyhow::Result<(Rtc, UdpSocket)> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .with_context(|| format!("binding {ip} (run inside run.sh's client namespace)"))?;
    let mut rtc = new_rtc(cert, Instant::now());
    let local = socket.local_addr()?;
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("local candidate: {e}"))?);
    Ok((rtc, socket))
}

/// What a publisher sends, on which mids.
struct SendPlan {
    index: u32,
    audio: Mid,
    video: Mid,
    /// Send shape-generator VP8 simulcast instead of the single stream.
    simulcast: bool,
    profile: SendProfile,
}

/// What one PeerConnection measured.
#[derive(Default)]
struct PeerOutcome {
    connected: bool,
    connect_ms: Option<f64>,
    disconnects: u32,
    sent: u64,
    receive: Option<ReceiveReport>,
}

async fn run(args: &JanusArgs) -> anyhow::Result<Summary> {
    let mut sig = Signal::connect(&args.url).await.context("Janus session")?;
    let cert = shared_cert()?;
    let epoch = Instant::now();
    let forwarded = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let profile = SendProfile {
        video_bps: args.video_kbps * 1000,
        ..Default::default()
    };
    let n = args.endpoints;
    let base_room = 100_000 + u64::from(std::process::id() % 100_000) * 100;
    eprintln!(
        "joining {} room(s) × {n} participants through {}",
        args.conferences, args.url
    );

    // Publishers first, room by room.
    let mut publishers = Vec::new();
    let mut feeds: Vec<Vec<u64>> = Vec::new();
    let mut publisher_handles = Vec::new();
    for c in 0..args.conferences {
        let room = base_room + u64::from(c);
        let admin = sig.attach().await?;
        sig.message(admin, body::create_room(room, n.max(2)), None)
            .await
            .with_context(|| format!("creating room {room}"))?;
        let mut room_feeds = Vec::new();
        for e in 0..n {
            let index = c * n + e;
            let started = Instant::now();
            let handle = sig.attach().await?;
            sig.message(handle, body::join_publisher(room, &format!("ep{index:05x}")), None)
                .await?;
            let joined = sig.wait(handle, "joined", |e| e.videoroom() == Some("joined")).await?;
            let feed = joined
                .data
                .as_ref()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("joined event without a feed id"))?;
            room_feeds.push(feed);
            publisher_handles.push(handle);

            let (mut rtc, socket) = bound_peer(&cert, args.client_ip).await?;
            let mut sdp = rtc.sdp_api();
            let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let simulcast = args.simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in RIDS.iter().rev() {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let video = sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            let (offer, pending) = sdp.apply().ok_or_else(|| anyhow!("str0m made no offer"))?;
            sig.message(
                handle,
                body::configure_publish(),
                Some(&Jsep::offer(offer.to_sdp_string())),
            )
            .await?;
            sig.trickle_done(handle).await?;
            let ev = sig.wait(handle, "publisher answer", |e| e.jsep.is_some()).await?;
            let jsep = ev.jsep.ok_or_else(|| anyhow!("answer event without jsep"))?;
            tracing::debug!(offer = %offer.to_sdp_string(), answer = %jsep.sdp, "publisher negotiation");
            let answer = SdpAnswer::from_sdp_string(&jsep.sdp).map_err(|e| anyhow!("Janus answer: {e}"))?;
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| anyhow!("accepting Janus's answer: {e}"))?;
            let plan = SendPlan {
                index,
                audio,
                video,
                simulcast: args.simulcast,
                profile,
            };
            publishers.push(tokio::spawn(peer_loop(
                rtc,
                socket,
                Some(plan),
                stop_rx.clone(),
                epoch,
                started,
                Arc::clone(&forwarded),
                args.simulcast,
            )));
            tokio::time::sleep(args.join_interval).await;
        }
        feeds.push(room_feeds);
    }
    // Janus refuses subscriptions to a feed whose PeerConnection is not up yet ("No such feed").
    for &h in &publisher_handles {
        sig.wait(h, "publisher webrtcup", |e| e.kind == "webrtcup").await?;
    }

    // Then one subscriber PeerConnection per participant, to every other feed of its room.
    let mut subscribers = Vec::new();
    for c in 0..args.conferences {
        let room = base_room + u64::from(c);
        for e in 0..n {
            let others: Vec<u64> = feeds[c as usize]
                .iter()
                .enumerate()
                .filter(|&(o, _)| o != e as usize)
                .map(|(_, &f)| f)
                .collect();
            if others.is_empty() {
                subscribers.push(None);
                continue;
            }
            let started = Instant::now();
            let handle = sig.attach().await?;
            // A feed can still be settling after webrtcup: retry "No such feed" (428) a few times.
            let mut attempt = 0;
            let ev = loop {
                sig.message(handle, body::join_subscriber(room, &others), None).await?;
                match sig
                    .wait(handle, "subscriber offer", |e| {
                        e.videoroom() == Some("attached") && e.jsep.is_some()
                    })
                    .await
                {
                    Ok(ev) => break ev,
                    Err(e)
                        if attempt < 5 && matches!(e.downcast_ref(), Some(api::ApiError::Plugin { code: 428, .. })) =>
                    {
                        attempt += 1;
                        tracing::info!(attempt, "feed not ready, retrying the subscription");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let jsep = ev.jsep.ok_or_else(|| anyhow!("attached event without jsep"))?;
            let offer = SdpOffer::from_sdp_string(&jsep.sdp).map_err(|e| anyhow!("Janus offer: {e}"))?;
            let (mut rtc, socket) = bound_peer(&cert, args.client_ip).await?;
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| anyhow!("accepting Janus's offer: {e}"))?;
            sig.message(handle, body::start(room), Some(&Jsep::answer(answer.to_sdp_string())))
                .await?;
            sig.trickle_done(handle).await?;
            subscribers.push(Some(tokio::spawn(peer_loop(
                rtc,
                socket,
                None,
                stop_rx.clone(),
                epoch,
                started,
                Arc::clone(&forwarded),
                args.simulcast,
            ))));
            sig.wait(handle, "started", |e| {
                e.data.as_ref().is_some_and(|d| d.get("started").is_some())
            })
            .await?;
            tokio::time::sleep(args.join_interval).await;
        }
    }

    // Let everyone connect, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = args.janus_pid.and_then(proc_usage);
    let fwd_before = forwarded.load(Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(args.duration).await;
    let cpu_after = args.janus_pid.and_then(proc_usage);
    let fwd = forwarded.load(Ordering::Relaxed) - fwd_before;
    let window = window.elapsed();
    let _ = stop_tx.send(true);

    let mut reports = Vec::new();
    for (index, (p, s)) in publishers.into_iter().zip(subscribers).enumerate() {
        let p = p.await?.unwrap_or_else(|e| {
            eprintln!("publisher {index} failed: {e:#}");
            PeerOutcome::default()
        });
        let s = match s {
            Some(s) => Some(s.await?.unwrap_or_else(|e| {
                eprintln!("subscriber {index} failed: {e:#}");
                PeerOutcome::default()
            })),
            None => None,
        };
        let sub_ok = s.as_ref().is_none_or(|s| s.connected);
        reports.push(EndpointReport {
            index: index as u32,
            connected: p.connected && sub_ok,
            connect_ms: match (p.connect_ms, s.as_ref().map(|s| s.connect_ms)) {
                (Some(a), Some(Some(b))) => Some(a.max(b)),
                (Some(a), None) => Some(a),
                _ => None,
            },
            disconnects: p.disconnects + s.as_ref().map_or(0, |s| s.disconnects),
            sent_packets: p.sent,
            receive: s.and_then(|s| s.receive).unwrap_or_default(),
        });
    }
    sig.destroy().await;

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
    Ok(Summary {
        sfu: "janus",
        conferences: args.conferences,
        endpoints: args.conferences * n,
        connected: reports.iter().filter(|r| r.connected).count() as u32,
        duration_s: window.as_secs_f64(),
        sent_packets: reports.iter().map(|r| r.sent_packets).sum(),
        received_packets: received,
        expected_packets: expected,
        loss_percent: if expected > 0 {
            100.0 * expected.saturating_sub(received) as f64 / expected as f64
        } else {
            0.0
        },
        corrupt_packets: reports.iter().map(|r| r.receive.corrupt).sum(),
        received_pps: fwd as f64 / window.as_secs_f64(),
        latency_ms_p50: percentile(&lat, 50.0) / 1000.0,
        latency_ms_p95: percentile(&lat, 95.0) / 1000.0,
        latency_ms_p99: percentile(&lat, 99.0) / 1000.0,
        join_ms_p50: percentile(&joins, 50.0),
        join_ms_max: joins.last().map(|&m| f64::from(m)).unwrap_or(f64::NAN),
        bridge_cpu_s: cpu.map(|c| c.0),
        bridge_rss_mib: cpu.map(|c| c.1 as f64 / 1_048_576.0),
        forwarded_packets: fwd,
        bridge_cpu_us_per_forwarded_packet: cpu.filter(|_| fwd > 0).map(|c| c.0 * 1e6 / fwd as f64),
        endpoints_detail: reports,
    })
}

/// Drive one str0m peer until `stop`: send the harness's audio and video when `plan` is set,
/// and count and check everything that arrives (loss from RTP sequence numbers when `seq_loss`).
#[allow(clippy::too_many_arguments)]
async fn peer_loop(
    mut rtc: Rtc,
    socket: UdpSocket,
    plan: Option<SendPlan>,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
    started: Instant,
    forwarded: Arc<AtomicU64>,
    seq_loss: bool,
) -> anyhow::Result<PeerOutcome> {
    let local = socket.local_addr()?;
    let mut out = PeerOutcome::default();
    let mut receiver = Receiver::default();
    let mut seq_receiver = SeqReceiver::default();
    let mut buf = vec![0u8; 2048];
    let (index, profile) = plan
        .as_ref()
        .map_or((0, SendProfile::default()), |p| (p.index, p.profile));
    let mut shape = plan
        .as_ref()
        .filter(|p| p.simulcast)
        .map(|p| Vp8Simulcast::new(u64::from(p.index) + 1, Vp8Config::default()));
    let mut shape_out = Vec::new();
    let mut shape_seq = [1000 + u64::from(index); 3];
    let mut shape_counter: u32 = 0;
    let video_on = plan.is_some() && shape.is_none() && profile.video_bps > 0;
    let fps = profile.video_fps.max(1);
    let frame_interval = Duration::from_secs(1) / fps;
    // Same sequence and timestamp starts as endpoint.rs; one sequence per encoding.
    let mut audio = (1000 + u64::from(index), index.wrapping_mul(7919));
    let mut video = (1000 + u64::from(index), index.wrapping_mul(7919));
    let frame_bytes = (profile.video_bps / 8 / fps) as usize;
    let mut next_audio = Instant::now();
    let mut next_frame = Instant::now();
    let mut frame_no: u64 = 0;

    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    RtcEvent::Connected => {
                        out.connected = true;
                        out.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                        next_audio = Instant::now();
                        next_frame = Instant::now();
                    }
                    RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => out.disconnects += 1,
                    RtcEvent::RtpPacket(p) => {
                        forwarded.fetch_add(1, Ordering::Relaxed);
                        if seq_loss {
                            seq_receiver.on_packet(*p.header.ssrc, *p.seq_no, &p.payload, epoch, Instant::now());
                        } else {
                            receiver.on_packet(&p.payload, *p.header.ssrc, epoch, Instant::now());
                        }
                    }
                    RtcEvent::KeyframeRequest(k) => {
                        let enc = k.rid.and_then(|rid| RIDS.iter().position(|r| **r == *rid));
                        if let (Some(s), Some(enc)) = (shape.as_mut(), enc) {
                            s.request_keyframe(enc as u8);
                        }
                    }
                    _ => {}
                },
                Err(e) => return Err(anyhow!("peer {index}: {e}")),
            }
        };
        if !rtc.is_alive() {
            return Err(anyhow!("peer {index}: peer connection closed"));
        }
        let mut wake = timeout;
        if out.connected && plan.is_some() {
            wake = wake.min(next_audio);
            if video_on {
                wake = wake.min(next_frame);
            }
            if let Some(s) = &shape {
                wake = wake.min(s.poll_timeout().unwrap_or(timeout.min(Instant::now())));
            }
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (len, source) = r.context("recv")?;
                if let Ok(contents) = buf[..len].try_into() {
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                    if let Err(e) = rtc.handle_input(input) {
                        tracing::debug!(index, error = %e, "input rejected");
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let (true, Some(plan)) = (out.connected, plan.as_ref()) {
                    if now >= next_audio {
                        let payload = Payload::encode(index, audio.0 as u32, epoch, now, profile.audio_bytes);
                        audio.1 = audio.1.wrapping_add(960);
                        write(&mut rtc, (plan.audio, None), AUDIO_PT, &mut audio.0, audio.1, now, payload, false)?;
                        out.sent += 1;
                        next_audio += Duration::from_millis(20);
                    }
                    if video_on && now >= next_frame {
                        // A keyframe every 3 s is three times the size of a delta frame (as endpoint.rs).
                        let key = frame_no.is_multiple_of(3 * u64::from(fps));
                        let size = if key { frame_bytes * 3 } else { frame_bytes }.max(200);
                        let packets = size.div_ceil(1100);
                        for i in 0..packets {
                            let mut payload = Payload::encode(index, video.0 as u32, epoch, now, size / packets);
                            payload[0] = if i == 0 { 0x10 } else { 0x00 };
                            let last = i + 1 == packets;
                            write(&mut rtc, (plan.video, None), VIDEO_PT, &mut video.0, video.1, now, payload, last)?;
                            out.sent += 1;
                        }
                        video.1 = video.1.wrapping_add(90_000 / fps);
                        frame_no += 1;
                        next_frame += frame_interval;
                    }
                    if let Some(s) = shape.as_mut() {
                        if s.poll_timeout().is_none_or(|t| now >= t) {
                            s.poll(now, &mut shape_out);
                        }
                        for mut pkt in shape_out.drain(..) {
                            let enc = usize::from(pkt.encoding).min(RIDS.len() - 1);
                            write_tracking(&mut pkt.payload, pkt.tracking_offset, index, shape_counter, epoch, now);
                            shape_counter = shape_counter.wrapping_add(1);
                            let mid_rid = (plan.video, Some(Rid::from(RIDS[enc])));
                            write(&mut rtc, mid_rid, VIDEO_PT, &mut shape_seq[enc], pkt.rtp_ts, now, pkt.payload, pkt.marker)?;
                            out.sent += 1;
                        }
                    }
                }
                if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                    return Err(anyhow!("peer {index}: timeout handling: {e}"));
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    if plan.is_none() {
        out.receive = Some(if seq_loss {
            seq_receiver.finish()
        } else {
            receiver.finish()
        });
    }
    Ok(out)
}

/// Write the harness's tracking bytes (magic, sender, counter, send µs) where the shape
/// generator left room for them.
fn write_tracking(payload: &mut [u8], offset: usize, sender: u32, counter: u32, epoch: Instant, now: Instant) {
    let us = now.saturating_duration_since(epoch).as_micros() as u64;
    if let Some(t) = payload.get_mut(offset..offset + 20) {
        t[0..4].copy_from_slice(TRACK_MAGIC);
        t[4..8].copy_from_slice(&sender.to_be_bytes());
        t[8..12].copy_from_slice(&counter.to_be_bytes());
        t[12..20].copy_from_slice(&us.to_be_bytes());
    }
}

/// Send time (µs since epoch) from the tracking bytes, wherever they are in the payload.
fn read_tracking(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(4).position(|w| w == TRACK_MAGIC)?;
    let us = payload.get(at + 12..at + 20)?;
    Some(u64::from_be_bytes(us.try_into().ok()?))
}

/// Receive counters for streams whose payload counters are not contiguous (a simulcast
/// subscription switches substreams): loss from the extended RTP sequence numbers the SFU
/// writes, latency from the tracking bytes.
#[derive(Default)]
struct SeqReceiver {
    /// ssrc → (lowest, highest extended sequence number, packets)
    streams: HashMap<u32, (u64, u64, u64)>,
    latencies_us: Vec<u32>,
    untracked: u64,
}

impl SeqReceiver {
    fn on_packet(&mut self, ssrc: u32, seq: u64, payload: &[u8], epoch: Instant, now: Instant) {
        let s = self.streams.entry(ssrc).or_insert((seq, seq, 0));
        s.0 = s.0.min(seq);
        s.1 = s.1.max(seq);
        s.2 += 1;
        match read_tracking(payload) {
            Some(sent) => {
                let now_us = now.saturating_duration_since(epoch).as_micros() as u64;
                self.latencies_us
                    .push(now_us.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
            None => self.untracked += 1,
        }
    }

    fn finish(self) -> ReceiveReport {
        ReceiveReport {
            streams: self.streams.len(),
            received: self.streams.values().map(|s| s.2).sum(),
            expected: self.streams.values().map(|s| s.1 - s.0 + 1).sum(),
            corrupt: self.untracked,
            latencies_us: self.latencies_us,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    rtc: &mut Rtc,
    (mid, rid): (Mid, Option<Rid>),
    pt: u8,
    seq: &mut u64,
    ts: u32,
    now: Instant,
    payload: Vec<u8>,
    marker: bool,
) -> anyhow::Result<()> {
    let mut api = rtc.direct_api();
    let tx = api
        .stream_tx_by_mid(mid, rid)
        .ok_or_else(|| anyhow!("no send stream on mid {mid} rid {rid:?}"))?;
    tx.write_rtp(RtpWrite::new(Pt::from(pt), (*seq).into(), ts, now, payload).marker(marker));
    *seq += 1;
    Ok(())
}

fn print_summary(s: &Summary) {
    println!("== loadtest janus result");
    println!(
        "endpoints connected   {}/{} in {} room(s)",
        s.connected, s.endpoints, s.conferences
    );
    println!(
        "join time             p50 {:.0} ms, max {:.0} ms",
        s.join_ms_p50, s.join_ms_max
    );
    println!(
        "packets               sent {}, received {}, forwarded in window {} ({:.0}/s), loss {:.2} %, corrupt {}",
        s.sent_packets, s.received_packets, s.forwarded_packets, s.received_pps, s.loss_percent, s.corrupt_packets
    );
    println!(
        "latency               p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99
    );
    if let (Some(cpu), Some(rss)) = (s.bridge_cpu_s, s.bridge_rss_mib) {
        println!(
            "janus                 {cpu:.2} CPU-s over {:.1} s, RSS {rss:.1} MiB",
            s.duration_s
        );
    }
    if let Some(us) = s.bridge_cpu_us_per_forwarded_packet {
        println!("janus CPU per forwarded packet  {us:.2} µs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracking bytes written at the generator's offset are found again; loss comes from gaps
    /// in the sequence numbers, and packets without tracking bytes are counted.
    #[test]
    fn seq_receiver_counts_loss_and_latency() {
        let epoch = Instant::now();
        let sent = epoch + Duration::from_millis(3);
        let mut r = SeqReceiver::default();
        for seq in [10u64, 11, 13, 12, 15] {
            let mut p = vec![0x90u8; 300];
            write_tracking(&mut p, 17, 1, seq as u32, epoch, sent);
            r.on_packet(7, seq, &p, epoch, sent + Duration::from_millis(2));
        }
        r.on_packet(8, 100, &[0u8; 50], epoch, sent);
        let rep = r.finish();
        assert_eq!((rep.streams, rep.received, rep.expected, rep.corrupt), (2, 6, 7, 1));
        assert_eq!(rep.latencies_us, vec![2000; 5]);
        assert_eq!(read_tracking(&[1, 2, 3]), None);
    }
}
