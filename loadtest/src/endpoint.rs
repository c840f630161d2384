//! One emulated participant: a str0m peer (ICE controlled, DTLS client, SRTP, SCTP bridge
//! channel) on its own UDP socket behind an emulated link, sending Opus-shaped audio and
//! browser-shaped video and judging what it receives.
//!
//! str0m shares no code with Palim's media stack, so every packet that arrives here proves the
//! bridge's ICE, DTLS and SRTP interoperate with an independent implementation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Serialize;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::config::{DtlsCert, Fingerprint};
use str0m::format::Codec as Str0mCodec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::focus::{BridgeTransport, ClientTransport};
use crate::jitter::{JitterBuffer, JitterStats, DEFAULT_CAPACITY, DEFAULT_MAX_WAIT};
use crate::link::{Link, LinkStats};
use crate::metrics::{Bin, Collector};
use crate::scenario::{Codec, LinkPair, ReceiverConstraints};
use crate::shape::check::FrameDone;
use crate::video::{StreamId, Tracking, VideoCheck, VideoPacket, VideoSender, TRACKING_LEN};

pub const AUDIO_PT: u8 = 111;
pub const VP8_PT: u8 = 100;
pub const VP8_RTX_PT: u8 = 96;
pub const AV1_PT: u8 = 41;
pub const AV1_RTX_PT: u8 = 42;
/// Jicofo's header extension ids (colibri.md §3.4).
pub const EXT_AUDIO_LEVEL: u8 = 1;
pub const EXT_ABS_SEND_TIME: u8 = 3;
pub const EXT_TWCC: u8 = 5;
pub const EXT_DD: u8 = 11;
pub const DD_URI: &str = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
const AUDIO_MID: &str = "0";
const VIDEO_MID: &str = "1";
const RIDS: [&str; 3] = ["q", "h", "f"];
/// A video stream silent this long counts as a freeze.
const FREEZE: Duration = Duration::from_millis(500);
/// A stream gap longer than this is a layer switch (or a pause), not loss.
const STREAM_RESTART: Duration = Duration::from_secs(1);

/// The SSRCs of endpoint `index`: derived from it so every peer knows them in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ssrcs {
    pub audio: u32,
    /// One per simulcast encoding (AV1 and single VP8 use the first).
    pub video: [u32; 3],
    pub rtx: [u32; 3],
}

pub fn ssrcs_of(index: u32) -> Ssrcs {
    let base = 0x1000_0000 + index * 8;
    Ssrcs {
        audio: base,
        video: [base + 1, base + 2, base + 3],
        rtx: [base + 4, base + 5, base + 6],
    }
}

/// The static facts an endpoint needs to run.
pub struct EndpointSetup {
    pub index: u32,
    pub socket: UdpSocket,
    pub bridge: BridgeTransport,
    /// Global indexes of the other endpoints of the conference, with whether they send video
    /// and audio.
    pub peers: Vec<(u32, bool, bool)>,
    pub sends_audio: bool,
    pub sends_video: bool,
    pub codec: Codec,
    pub bitrate_scale: f64,
    pub links: LinkPair,
    pub link_class: String,
    pub seed: u64,
    pub constraints: ReceiverConstraints,
    /// The run's time origin (payload timestamps and bins count from it).
    pub epoch: Instant,
    /// When the focus started allocating this endpoint (join time runs from here).
    pub join_started: Instant,
    pub collector: Arc<Mutex<Collector>>,
    /// Incremented when this endpoint connects.
    pub connected_count: Arc<AtomicU32>,
}

/// The str0m side of a new endpoint, built before its transport goes to the bridge.
pub struct Peer {
    rtc: Rtc,
    pub fingerprint: String,
    pub ufrag: String,
    pub pwd: String,
}

impl Peer {
    /// Build a str0m peer in RTP mode with Jicofo's payload types and header extension ids.
    pub fn new(cert: &DtlsCert, codec: Codec, now: Instant) -> Self {
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .clear_extension_map()
            .set_extension(EXT_AUDIO_LEVEL, Extension::AudioLevel)
            .set_extension(EXT_ABS_SEND_TIME, Extension::AbsoluteSendTime)
            .set_extension(EXT_TWCC, Extension::TransportSequenceNumber)
            .set_extension(EXT_DD, Extension::with_serializer(DD_URI, DdExt))
            .set_dtls_cert(cert.clone());
        let codecs = cfg.codec_config();
        codecs.add_config(
            Pt::from(AUDIO_PT),
            None,
            Str0mCodec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            Default::default(),
        );
        let (pt, rtx, c) = match codec {
            Codec::Av1Svc => (AV1_PT, AV1_RTX_PT, Str0mCodec::Av1),
            Codec::Vp8Simulcast | Codec::Vp8 => (VP8_PT, VP8_RTX_PT, Str0mCodec::Vp8),
        };
        codecs.add_config(
            Pt::from(pt),
            Some(Pt::from(rtx)),
            c,
            Frequency::NINETY_KHZ,
            None,
            Default::default(),
        );
        let mut rtc = cfg.build(now);
        let fp = rtc.direct_api().local_dtls_fingerprint().clone();
        let creds = rtc.direct_api().local_ice_credentials();
        Self {
            fingerprint: colon_hex(&fp.bytes),
            ufrag: creds.ufrag,
            pwd: creds.pass,
            rtc,
        }
    }

    /// What the focus forwards to the bridge for this peer.
    pub fn transport(&self) -> ClientTransport {
        ClientTransport {
            ufrag: self.ufrag.clone(),
            pwd: self.pwd.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// What one endpoint measured over the whole run.
#[derive(Debug, Default, Serialize)]
pub struct EndpointReport {
    pub index: u32,
    pub link_class: String,
    pub connected: bool,
    /// From the start of allocation to ICE + DTLS connected.
    pub join_ms: Option<f64>,
    pub disconnects: u32,
    pub bridge_channel_open: bool,
    pub bridge_messages: u64,
    pub sent_packets: u64,
    pub received_packets: u64,
    pub expected_packets: u64,
    pub loss_percent: f64,
    /// Packets whose media bytes were not what the sender wrote, or carried no tracking header.
    pub corrupt_packets: u64,
    pub frames: u64,
    pub freezes: u64,
    /// Longest time without a frame from any one video sender, once it had started.
    pub longest_freeze_ms: f64,
    pub violations: u64,
    /// Violations by kind (`PictureIdJump`, `MissingReference`, …).
    pub violation_kinds: BTreeMap<String, u64>,
    /// ReceiverVideoConstraints changes sent after the first message (scenario `switches`).
    pub switches_requested: u32,
    /// Resolution changes seen in the received streams (summed over the video senders).
    pub switches_observed: u64,
    /// Frames completed after the last requested switch (0 without switches).
    pub frames_after_last_switch: u64,
    pub keyframe_requests_received: u64,
    /// PLIs this endpoint sent because it had no keyframe to start decoding from.
    pub keyframe_requests_sent: u64,
    /// Per video sender (global index): the height of the layer received last (0: none).
    pub layers: Vec<(u32, u32)>,
    /// The receive jitter buffers' counters, summed over the video SSRCs.
    pub jitter: JitterStats,
    pub uplink: LinkStats,
    pub downlink: LinkStats,
}

/// Run one endpoint until `stop` flips, returning what it measured.
pub async fn run(peer: Peer, setup: EndpointSetup, stop: watch::Receiver<bool>) -> anyhow::Result<EndpointReport> {
    let mut ep = Endpoint::new(peer, setup)?;
    let result = ep.run(stop).await;
    ep.flush(true);
    result?;
    Ok(ep.finish())
}

struct Endpoint {
    rtc: Rtc,
    socket: UdpSocket,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    index: u32,
    epoch: Instant,
    join_started: Instant,
    sends_audio: bool,
    constraints: ReceiverConstraints,
    /// (offset from the bridge channel's opening, maxHeight) of the switches still to send.
    switch_schedule: Vec<(Duration, i32)>,
    switch_next: usize,
    channel_opened: Option<Instant>,
    /// When the last switch was sent.
    last_switch: Option<Instant>,
    uplink: Option<Link>,
    downlink: Option<Link>,
    video: Option<VideoSender>,
    video_pt: u8,
    codec: Codec,
    ssrcs: Ssrcs,
    audio: TxStream,
    video_tx: [TxStream; 3],
    /// Per-stream counters of what this endpoint sent (tracking header).
    counters: HashMap<StreamId, u32>,
    next_audio: Instant,
    connected: bool,
    channel: Option<ChannelId>,
    collector: Arc<Mutex<Collector>>,
    connected_count: Arc<AtomicU32>,
    bin: Bin,
    bin_second: u64,
    rx: RxState,
    video_senders: Vec<u32>,
    report: EndpointReport,
    scratch: Vec<VideoPacket>,
    /// The bridge's padding SSRC: its packets only feed transport-cc, they are not media.
    bridge_padding_ssrc: Option<u32>,
}

#[derive(Default)]
struct TxStream {
    seq: u64,
    ts: u32,
}

#[derive(Default)]
struct RxState {
    streams: HashMap<StreamId, StreamRx>,
    /// A validator per received video SSRC.
    checks: HashMap<u32, VideoCheck>,
    /// When we last sent a PLI per SSRC.
    pli_at: HashMap<u32, Instant>,
    /// When each video SSRC last completed a frame.
    last_done: HashMap<u32, Instant>,
    /// Per video SSRC: the height of its last completed frame (switch observation).
    last_height: HashMap<u32, u16>,
    /// Per video sender: frames and freezes.
    senders: HashMap<u32, SenderRx>,
    /// Per received video SSRC: the highest extended RTP sequence number, for RTP-level loss
    /// as the receiver's RTP stack sees it (what an RR's fraction lost counts: the bridge's
    /// forwarded stream, after retransmissions, independent of layer switches).
    rtp_max_seq: HashMap<u32, u64>,
    /// Per received video SSRC: the reorder buffer in front of its `VideoCheck` (a browser's
    /// jitter buffer waits for NACKed retransmissions; see `jitter`).
    jitter: HashMap<u32, JitterBuffer<RxVideo>>,
    /// Packets released by a jitter buffer, reused.
    released: Vec<RxVideo>,
}

/// A received video packet on its way through the jitter buffer to the frame checker.
struct RxVideo {
    seq: u16,
    ts: u32,
    marker: bool,
    /// str0m's buffer, shared (no copy).
    payload: Arc<[u8]>,
    dd: Option<Vec<u8>>,
    /// The sending endpoint, from the tracking header (`None`: no valid header).
    sender: Option<u32>,
}

struct StreamRx {
    last_counter: u32,
    last_at: Instant,
}

struct SenderRx {
    last_frame: Option<Instant>,
    /// Per received SSRC of this sender: the height of its last completed frame, and when.
    heights: Vec<(u32, u32, Instant)>,
    last_packet: Instant,
    frozen: bool,
}

impl SenderRx {
    /// The layer received: the highest one that completed a frame in the last second.
    fn height(&self, now: Instant) -> u32 {
        self.heights
            .iter()
            .filter(|h| now.saturating_duration_since(h.2) < Duration::from_secs(1))
            .map(|h| h.1)
            .max()
            .unwrap_or(0)
    }
}

impl Endpoint {
    fn new(peer: Peer, s: EndpointSetup) -> anyhow::Result<Self> {
        let mut rtc = peer.rtc;
        let local = s.socket.local_addr()?;
        let now = Instant::now();
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("local candidate: {e}"))?);
        let remote = s.bridge.pick_candidate(local)?;
        rtc.add_remote_candidate(Candidate::host(remote, "udp").map_err(|e| anyhow!("remote candidate: {e}"))?);
        let ssrcs = ssrcs_of(s.index);
        let video = s
            .sends_video
            .then(|| VideoSender::new(s.codec, s.seed ^ u64::from(s.index), s.bitrate_scale, now));
        let encodings = video.as_ref().map_or(0, |v| v.encodings());
        let video_pt = if s.codec == Codec::Av1Svc { AV1_PT } else { VP8_PT };
        {
            let mut api = rtc.direct_api();
            api.set_ice_lite(false);
            // A browser sends transport-cc feedback when it is negotiated (Jicofo always
            // offers it); str0m's direct API only does when told. Without it the bridge's
            // send-side estimate never sees its downlink.
            api.enable_twcc_feedback();
            api.set_ice_controlling(false);
            api.set_remote_ice_credentials(str0m::IceCreds {
                ufrag: s.bridge.ufrag.clone(),
                pass: s.bridge.pwd.clone(),
            });
            api.set_remote_fingerprint(Fingerprint {
                hash_func: "sha-256".into(),
                bytes: s.bridge.fingerprint.clone(),
            });
            api.start_dtls(true).map_err(|e| anyhow!("start dtls: {e}"))?;
            let (amid, vmid) = (Mid::from(AUDIO_MID), Mid::from(VIDEO_MID));
            api.declare_media(amid, MediaKind::Audio);
            api.declare_media(vmid, MediaKind::Video);
            if s.sends_audio {
                api.declare_stream_tx(Ssrc::from(ssrcs.audio), None, amid, None);
            }
            for (e, name) in RIDS.iter().enumerate().take(encodings) {
                let rid = (encodings > 1).then(|| Rid::from(*name));
                let tx = api.declare_stream_tx(Ssrc::from(ssrcs.video[e]), Some(Ssrc::from(ssrcs.rtx[e])), vmid, rid);
                tx.set_rtx_cache(1024, Duration::from_secs(2), None);
            }
            // The bridge's padding/probe packets (media.md §4.3), as Jicofo signals its source.
            if let Some(fb) = s.bridge.feedback_video_ssrc {
                api.expect_stream_rx(Ssrc::from(fb), None, vmid, None);
            }
            for &(p, video, audio) in &s.peers {
                let ps = ssrcs_of(p);
                if audio {
                    api.expect_stream_rx(Ssrc::from(ps.audio), None, amid, None);
                }
                if video {
                    // Every encoding: a bridge without SSRC rewriting forwards the one it picked
                    // on its own SSRC.
                    for e in 0..3 {
                        api.expect_stream_rx(Ssrc::from(ps.video[e]), Some(Ssrc::from(ps.rtx[e])), vmid, None);
                    }
                }
            }
        }
        let (up, down) = (s.links.uplink, s.links.downlink);
        let link_seed = s.seed.wrapping_mul(0x9E37_79B9).wrapping_add(u64::from(s.index) * 2);
        let report = EndpointReport {
            index: s.index,
            link_class: s.link_class.clone(),
            ..Default::default()
        };
        Ok(Self {
            rtc,
            socket: s.socket,
            local,
            remote,
            index: s.index,
            epoch: s.epoch,
            join_started: s.join_started,
            sends_audio: s.sends_audio,
            constraints: s.constraints,
            switch_schedule: s.constraints.switch_plan.schedule(
                s.seed ^ u64::from(s.index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                s.constraints.max_height,
            ),
            switch_next: 0,
            channel_opened: None,
            last_switch: None,
            uplink: (!up.is_perfect()).then(|| Link::new(up, link_seed, s.epoch)),
            downlink: (!down.is_perfect()).then(|| Link::new(down, link_seed + 1, s.epoch)),
            video,
            video_pt,
            codec: s.codec,
            ssrcs,
            audio: TxStream {
                seq: 1000 + u64::from(s.index),
                ts: s.index.wrapping_mul(7919),
            },
            video_tx: Default::default(),
            counters: HashMap::new(),
            next_audio: now,
            connected: false,
            channel: None,
            collector: s.collector,
            connected_count: s.connected_count,
            bin: Bin::default(),
            bin_second: now.saturating_duration_since(s.epoch).as_secs(),
            rx: RxState::default(),
            video_senders: s.peers.iter().filter(|p| p.1).map(|p| p.0).collect(),
            report,
            scratch: Vec::new(),
            bridge_padding_ssrc: s.bridge.feedback_video_ssrc,
        })
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 2048];
        loop {
            let timeout = self.drain()?;
            let now = Instant::now();
            self.maybe_flush(now);
            let mut wake = timeout.min(self.epoch + Duration::from_secs(self.bin_second + 1));
            if let Some(t) = self.next_switch_at() {
                wake = wake.min(t);
            }
            if self.connected {
                if self.sends_audio {
                    wake = wake.min(self.next_audio);
                }
                if let Some(v) = &self.video {
                    wake = wake.min(v.poll_timeout().unwrap_or(now));
                }
            }
            for l in [&self.uplink, &self.downlink].into_iter().flatten() {
                if let Some(t) = l.next_release() {
                    wake = wake.min(t);
                }
            }
            for t in self.rx.jitter.values().filter_map(|j| j.next_deadline()) {
                wake = wake.min(t);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let (n, source) = r.context("recv")?;
                    self.on_datagram(Instant::now(), &buf[..n], source)?;
                    // Take whatever else is already waiting, without another trip through select.
                    for _ in 0..32 {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => {
                                self.drain()?;
                                self.on_datagram(Instant::now(), &buf[..n], source)?;
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    // How late this task ran: the harness's own scheduling lag.
                    self.bin.lag_us.record(now.saturating_duration_since(wake).as_micros().min(u128::from(u32::MAX)) as u32);
                    self.on_timeout(now)?
                }
                _ = stop.changed() => return Ok(()),
            }
            if *stop.borrow() {
                return Ok(());
            }
        }
    }

    /// A datagram from the socket: into the downlink emulation, or straight to str0m.
    fn on_datagram(&mut self, now: Instant, data: &[u8], source: std::net::SocketAddr) -> anyhow::Result<()> {
        if source != self.remote {
            return Ok(());
        }
        match &mut self.downlink {
            Some(link) => {
                link.push(now, data.to_vec());
                Ok(())
            }
            None => self.input(now, data),
        }
    }

    fn input(&mut self, now: Instant, data: &[u8]) -> anyhow::Result<()> {
        if let Ok(contents) = data.try_into() {
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: self.remote,
                    destination: self.local,
                    contents,
                },
            );
            if let Err(e) = self.rtc.handle_input(input) {
                tracing::debug!(index = self.index, error = %e, "input rejected");
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self, now: Instant) -> anyhow::Result<()> {
        // Packets the links release now.
        while let Some(p) = self.downlink.as_mut().and_then(|l| l.poll(now)) {
            self.input(now, &p)?;
            self.drain()?;
        }
        while let Some(p) = self.uplink.as_mut().and_then(|l| l.poll(now)) {
            let _ = self.socket.try_send_to(&p, self.remote);
        }
        self.poll_jitter(now);
        if self.next_switch_at().is_some_and(|t| now >= t) {
            self.send_switch(now);
        }
        if self.connected {
            if self.sends_audio && now >= self.next_audio {
                self.send_audio(now)?;
                self.next_audio += Duration::from_millis(20);
                if self.next_audio < now {
                    // We fell behind (an overloaded harness): skip rather than burst.
                    self.next_audio = now + Duration::from_millis(20);
                }
            }
            if let Some(mut video) = self.video.take() {
                let mut out = std::mem::take(&mut self.scratch);
                video.poll(now, &mut out);
                for p in out.drain(..) {
                    self.send_video(now, p)?;
                }
                self.scratch = out;
                self.video = Some(video);
            }
        }
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| anyhow!("endpoint {}: timeout handling: {e}", self.index))
    }

    /// When the next scheduled constraints change is due.
    fn next_switch_at(&self) -> Option<Instant> {
        let opened = self.channel_opened?;
        self.switch_schedule.get(self.switch_next).map(|(at, _)| opened + *at)
    }

    /// Send the next scheduled ReceiverVideoConstraints (a different maxHeight).
    fn send_switch(&mut self, now: Instant) {
        let Some(&(_, height)) = self.switch_schedule.get(self.switch_next) else {
            return;
        };
        self.switch_next += 1;
        let msg = self.constraints.message_with_height(height);
        let Some(mut ch) = self.channel.and_then(|id| self.rtc.channel(id)) else {
            return;
        };
        match ch.write(false, msg.as_bytes()) {
            Ok(_) => {
                tracing::debug!(index = self.index, height, "constraints switch");
                self.report.switches_requested += 1;
                self.report.frames_after_last_switch = 0;
                self.last_switch = Some(now);
            }
            Err(e) => tracing::debug!(index = self.index, error = %e, "constraints switch not sent"),
        }
    }

    fn next_counter(&mut self, id: StreamId) -> u32 {
        let c = self.counters.entry(id).or_insert(0);
        *c = c.wrapping_add(1);
        *c
    }

    fn send_audio(&mut self, now: Instant) -> anyhow::Result<()> {
        let id = StreamId::audio(self.index);
        let counter = self.next_counter(id);
        let mut payload = vec![0u8; 80];
        for (i, b) in payload[TRACKING_LEN..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ counter as u8;
        }
        Tracking::write(&mut payload, 0, id, counter, self.micros(now));
        self.audio.ts = self.audio.ts.wrapping_add(960);
        let ext = ExtensionValues {
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        let (seq, ts) = (self.audio.seq, self.audio.ts);
        self.audio.seq += 1;
        self.write(self.ssrcs.audio, AUDIO_PT, seq, ts, now, payload, false, ext)
    }

    fn send_video(&mut self, now: Instant, mut p: VideoPacket) -> anyhow::Result<()> {
        let e = usize::from(p.encoding).min(2);
        let id = StreamId::video(self.index, p.spatial, p.temporal);
        let counter = self.next_counter(id);
        if !Tracking::write(&mut p.payload, p.tracking_offset, id, counter, self.micros(now)) {
            tracing::warn!(index = self.index, "video payload has no room for the tracking header");
        }
        let mut ext = ExtensionValues::default();
        if !p.dd.is_empty() {
            ext.user_values.set(DdBytes(p.dd));
        }
        let tx = &mut self.video_tx[e];
        let seq = tx.seq;
        tx.seq += 1;
        self.write(
            self.ssrcs.video[e],
            self.video_pt,
            seq,
            p.rtp_ts,
            now,
            p.payload,
            p.marker,
            ext,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        ssrc: u32,
        pt: u8,
        seq: u64,
        ts: u32,
        now: Instant,
        payload: Vec<u8>,
        marker: bool,
        ext: ExtensionValues,
    ) -> anyhow::Result<()> {
        let len = payload.len();
        let mut api = self.rtc.direct_api();
        let tx = api
            .stream_tx(&Ssrc::from(ssrc))
            .ok_or_else(|| anyhow!("no tx stream {ssrc}"))?;
        tx.write_rtp(
            RtpWrite::new(Pt::from(pt), seq.into(), ts, now, payload)
                .marker(marker)
                .ext_vals(ext)
                .nackable(pt != AUDIO_PT),
        );
        self.bin.sent_packets += 1;
        self.bin.sent_bytes += len as u64;
        self.report.sent_packets += 1;
        Ok(())
    }

    fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Drain str0m's outputs (its run-loop contract); returns its next timeout.
    fn drain(&mut self) -> anyhow::Result<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => match &mut self.uplink {
                    Some(link) => {
                        link.push(Instant::now(), t.contents.into());
                    }
                    None => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                },
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => return Err(anyhow!("endpoint {}: {e}", self.index)),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        let now = Instant::now();
        match e {
            Event::Connected => {
                self.connected = true;
                self.report.connected = true;
                self.connected_count.fetch_add(1, Ordering::Relaxed);
                self.report.join_ms = Some(now.saturating_duration_since(self.join_started).as_secs_f64() * 1000.0);
                self.next_audio = now;
                if !self.constraints.no_bridge_channel {
                    let mut api = self.rtc.direct_api();
                    api.start_sctp(true);
                    api.create_data_channel(ChannelConfig {
                        label: "JVB data channel".into(),
                        protocol: "http://jitsi.org/protocols/colibri".into(),
                        ..Default::default()
                    });
                }
            }
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                self.channel_opened = Some(now);
                self.report.bridge_channel_open = true;
                let msg = self.constraints.message();
                if let Some(mut ch) = self.rtc.channel(id) {
                    if let Err(e) = ch.write(false, msg.as_bytes()) {
                        tracing::debug!(index = self.index, error = %e, "constraints not sent");
                    }
                }
            }
            Event::ChannelData(_) => self.report.bridge_messages += 1,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.report.disconnects += 1,
            Event::KeyframeRequest(r) => {
                self.report.keyframe_requests_received += 1;
                let encoding = r
                    .rid
                    .and_then(|rid| RIDS.iter().position(|x| *x == &*rid))
                    .map(|e| e as u8);
                if let Some(v) = &mut self.video {
                    v.request_keyframe(encoding);
                }
            }
            Event::RtpPacket(p) if Some(*p.header.ssrc) == self.bridge_padding_ssrc => {}
            Event::RtpPacket(p) => {
                let h = &p.header;
                let video = *h.payload_type == self.video_pt;
                if video {
                    let seq = *p.seq_no;
                    match self.rx.rtp_max_seq.get_mut(&*h.ssrc) {
                        None => {
                            self.rx.rtp_max_seq.insert(*h.ssrc, seq);
                            self.bin.rtp_expected += 1;
                        }
                        Some(max) if seq > *max => {
                            self.bin.rtp_expected += seq - *max;
                            *max = seq;
                        }
                        Some(_) => {}
                    }
                    self.bin.rtp_received += 1;
                }
                // Packet-level accounting (counters, tracking loss, latency) at arrival.
                let sender = self.on_media(now, &p.payload, video);
                if video {
                    let ssrc = *h.ssrc;
                    let pkt = RxVideo {
                        seq: h.sequence_number,
                        ts: h.timestamp,
                        marker: h.marker,
                        dd: h.ext_vals.user_values.get::<DdBytes>().map(|d| d.0.clone()),
                        sender,
                        payload: p.payload,
                    };
                    let mut out = std::mem::take(&mut self.rx.released);
                    self.rx
                        .jitter
                        .entry(ssrc)
                        .or_insert_with(|| JitterBuffer::new(DEFAULT_MAX_WAIT, DEFAULT_CAPACITY))
                        .push(pkt.seq, now, pkt, &mut out);
                    for pkt in out.drain(..) {
                        self.on_video_released(now, ssrc, pkt);
                    }
                    self.rx.released = out;
                }
            }
            _ => {}
        }
    }

    /// Release what the jitter buffers stopped waiting for.
    fn poll_jitter(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.rx.released);
        let due: Vec<u32> = self
            .rx
            .jitter
            .iter()
            .filter(|(_, j)| j.next_deadline().is_some_and(|d| d <= now))
            .map(|(s, _)| *s)
            .collect();
        for ssrc in due {
            if let Some(j) = self.rx.jitter.get_mut(&ssrc) {
                j.poll(now, &mut out);
            }
            for pkt in out.drain(..) {
                self.on_video_released(now, ssrc, pkt);
            }
        }
        self.rx.released = out;
    }

    /// A video packet out of the jitter buffer, in sequence order: the frame checker, keyframe
    /// requests, and frame/freeze/layer accounting.
    fn on_video_released(&mut self, now: Instant, ssrc: u32, pkt: RxVideo) {
        let codec = self.codec;
        let check = self.rx.checks.entry(ssrc).or_insert_with(|| VideoCheck::new(codec));
        let result = check.on_packet(pkt.seq, pkt.ts, pkt.marker, &pkt.payload, pkt.dd.as_deref());
        let undecodable = check.needs_keyframe();
        // A browser asks for a keyframe when it cannot decode: nothing to start from
        // yet, or media arriving but no frame completed for a second (unrecovered loss).
        let last_done = self.rx.last_done.entry(ssrc).or_insert(now);
        if let Ok(Some(f)) = &result {
            *last_done = now;
            if self.last_switch.is_some() {
                self.report.frames_after_last_switch += 1;
            }
            if f.height > 0 {
                let prev = self.rx.last_height.insert(ssrc, f.height);
                if prev.is_some_and(|p| p != f.height) {
                    self.report.switches_observed += 1;
                }
            }
        }
        let stalled = now.saturating_duration_since(*last_done) > Duration::from_secs(1);
        if undecodable || stalled {
            self.ask_keyframe(now, ssrc);
        }
        let frame = match result {
            Ok(done) => done,
            Err(v) => {
                self.bin.violations += 1;
                self.report.violations += 1;
                *self.report.violation_kinds.entry(v.kind().to_string()).or_default() += 1;
                if self.report.violations <= 3 {
                    tracing::info!(index = self.index, ssrc, violation = ?v, "stream violation");
                }
                None
            }
        };
        if let (Some(sender), Some(frame)) = (pkt.sender, frame) {
            self.on_frame(now, ssrc, sender, frame);
        }
    }

    /// Ask for a keyframe on `ssrc` with a PLI, as a browser's decoder does, at most every 500 ms.
    fn ask_keyframe(&mut self, now: Instant, ssrc: u32) {
        let last = self.rx.pli_at.entry(ssrc).or_insert(now - Duration::from_secs(10));
        if now.saturating_duration_since(*last) < Duration::from_millis(500) {
            return;
        }
        *last = now;
        if let Some(rx) = self.rtc.direct_api().stream_rx(&Ssrc::from(ssrc)) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.report.keyframe_requests_sent += 1;
        }
    }

    /// One RTP packet through the bridge, at arrival: packet counts, loss per stream id and
    /// latency (network latency: measured at arrival, before the jitter buffer). For video,
    /// returns the sending endpoint (from the tracking header).
    fn on_media(&mut self, now: Instant, payload: &[u8], video: bool) -> Option<u32> {
        self.bin.rx_packets += 1;
        self.bin.rx_bytes += payload.len() as u64;
        self.report.received_packets += 1;
        let Some(t) = Tracking::read(payload) else {
            self.report.corrupt_packets += 1;
            return None;
        };
        if !t.intact {
            self.report.corrupt_packets += 1;
        }
        let now_us = self.micros(now);
        self.bin
            .latency_us
            .record(now_us.saturating_sub(t.sent_us).min(u64::from(u32::MAX)) as u32);
        // Loss per stream id; a long silence followed by a jump is a layer switch.
        let expected = match self.rx.streams.get_mut(&t.stream) {
            None => {
                self.rx.streams.insert(
                    t.stream,
                    StreamRx {
                        last_counter: t.counter,
                        last_at: now,
                    },
                );
                1
            }
            Some(s) => {
                let gap = t.counter.wrapping_sub(s.last_counter);
                let e = if gap == 0 || gap > u32::MAX / 2 {
                    0 // duplicate or late
                } else if gap > 1 && now.saturating_duration_since(s.last_at) > STREAM_RESTART {
                    1
                } else {
                    u64::from(gap)
                };
                if gap != 0 && gap <= u32::MAX / 2 {
                    s.last_counter = t.counter;
                }
                s.last_at = now;
                e
            }
        };
        self.bin.expected += expected;
        self.report.expected_packets += expected;
        if !(video && t.stream.is_video()) {
            return None;
        }
        let sender = self.rx.senders.entry(t.stream.sender()).or_insert(SenderRx {
            last_frame: None,
            heights: Vec::new(),
            last_packet: now,
            frozen: false,
        });
        sender.last_packet = now;
        Some(t.stream.sender())
    }

    /// A frame of `sender` completed on `ssrc` (at jitter-buffer release): heights, freezes.
    fn on_frame(&mut self, now: Instant, ssrc: u32, sender: u32, frame: FrameDone) {
        let Some(sender) = self.rx.senders.get_mut(&sender) else {
            return;
        };
        if frame.height > 0 {
            let h = u32::from(frame.height);
            self.bin.frame_height_max = self.bin.frame_height_max.max(h);
            if self.bin.frame_height_min == 0 || h < self.bin.frame_height_min {
                self.bin.frame_height_min = h;
            }
            match sender.heights.iter_mut().find(|h| h.0 == ssrc) {
                Some(h) => (h.1, h.2) = (u32::from(frame.height), now),
                None => sender.heights.push((ssrc, u32::from(frame.height), now)),
            }
        }
        if let Some(last) = sender.last_frame {
            let gap = now.saturating_duration_since(last);
            if gap > FREEZE && !sender.frozen {
                self.bin.freezes += 1;
                self.report.freezes += 1;
            }
            self.report.longest_freeze_ms = self.report.longest_freeze_ms.max(gap.as_secs_f64() * 1000.0);
        }
        sender.frozen = false;
        sender.last_frame = Some(now);
        self.bin.frames += 1;
        self.report.frames += 1;
    }

    /// Freezes that are still going on count once, when they pass the threshold.
    fn check_stalls(&mut self, now: Instant) {
        for s in self.rx.senders.values_mut() {
            if let Some(last) = s.last_frame {
                if !s.frozen && now.saturating_duration_since(last) > FREEZE {
                    s.frozen = true;
                    self.bin.freezes += 1;
                    self.report.freezes += 1;
                }
            }
        }
    }

    fn maybe_flush(&mut self, now: Instant) {
        if now.saturating_duration_since(self.epoch).as_secs() != self.bin_second {
            self.check_stalls(now);
            self.flush(false);
            self.bin_second = now.saturating_duration_since(self.epoch).as_secs();
        }
    }

    /// Add this second's bin to the collector.
    fn flush(&mut self, last: bool) {
        if self.connected {
            let now = Instant::now();
            for v in &self.video_senders {
                let h = match self.rx.senders.get(v) {
                    Some(s) if now.saturating_duration_since(s.last_packet) < Duration::from_secs(1) => s.height(now),
                    _ => 0,
                };
                *self.bin.layers.entry(h).or_default() += 1;
            }
        }
        if last && self.bin.rx_packets == 0 && self.bin.sent_packets == 0 {
            return;
        }
        match self.collector.lock() {
            Ok(mut c) => c.add_from(self.index, self.bin_second as usize, &self.bin),
            Err(poisoned) => poisoned
                .into_inner()
                .add_from(self.index, self.bin_second as usize, &self.bin),
        }
        self.bin.clear();
    }

    fn finish(mut self) -> EndpointReport {
        let r = &mut self.report;
        r.loss_percent = crate::metrics::loss_percent(r.expected_packets, r.received_packets);
        r.layers = self
            .video_senders
            .iter()
            .map(|v| (*v, self.rx.senders.get(v).map_or(0, |s| s.height(Instant::now()))))
            .collect();
        for j in self.rx.jitter.values() {
            r.jitter.add(&j.stats());
        }
        r.uplink = self.uplink.as_ref().map(|l| l.stats()).unwrap_or_default();
        r.downlink = self.downlink.as_ref().map(|l| l.stats()).unwrap_or_default();
        self.report
    }
}

/// The AV1 dependency descriptor's bytes, carried through str0m as a user extension value.
#[derive(Debug, Clone)]
pub struct DdBytes(pub Vec<u8>);

/// Writes and reads the DD extension verbatim.
#[derive(Debug)]
struct DdExt;

impl ExtensionSerializer for DdExt {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DdBytes>() {
            Some(d) if d.0.len() <= buf.len() => {
                buf[..d.0.len()].copy_from_slice(&d.0);
                d.0.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        ev.user_values.set(DdBytes(buf.to_vec()));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        ev.user_values.get::<DdBytes>().is_some_and(|d| d.0.len() > 16)
    }
}

/// A DTLS certificate shared by all endpoints of the harness (generating one per endpoint costs
/// more CPU than the bridge's whole join path).
pub fn shared_cert() -> anyhow::Result<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| anyhow!("str0m could not generate a DTLS certificate"))
}

/// Colon-separated upper-case hex, as SDP and Colibri2 write fingerprints.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Parse colon-separated hex.
pub fn parse_colon_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    s.split(':')
        .map(|h| u8::from_str_radix(h.trim(), 16).with_context(|| format!("bad fingerprint {s:?}")))
        .collect()
}
