//! Robustness cases 26, 29 and 24 (robustness.md §4) through a live bridge
//! (`sfu::driver::start` on loopback). The attacker is a [`Keyed`] client: it does ICE (answers
//! the bridge's checks) and DTLS (`sfu::dtls::Dtls` in the client role) itself, so it holds the
//! DTLS-derived SRTP session and can send authenticated SRTCP NACKs, authenticated RTP on any
//! SSRC, or SRTP with forged tags from its validated 5-tuple. The other endpoints are str0m
//! clients (`common`).
//!
//! `PALIM_FLOOD_FORGED` sets case 24's forged-packet count (default 100,000; the documented
//! 10^6 run is the `#[ignore]`d `forged_tags_at_a_million_*`).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::heap::{bridge_heap_kib, vm_rss_kib, ClientThread};
use common::{payload, Client, PT_OPUS, PT_VP8};
use sfu::config::{HandshakeSlots, SrtpProfile};
use sfu::control::{
    Fingerprint, GroupSemantics, LocalTransport, MediaDescription, MediaKind, PayloadType, RemoteTransport,
    RtpExtension, Setup, SourceDescription, SsrcGroup,
};
use sfu::driver::{start, Sfu};
use sfu::dtls::{Dtls, DtlsContext, DtlsEvent, LocalCert, Role};
use sfu::srtp::Srtp;
use sfu::wire::rtcp::{write_nack, NackPair};
use sfu::{Command, ConferenceId, EndpointId, Reply, SfuConfig, Ssrc, Stats};

const CONF: ConferenceId = ConferenceId(7);
/// RTX for VP8 (apt 100), negotiated by the keyed client only.
const PT_RTX: u8 = 96;

fn audio_ssrc(tag: u8) -> u32 {
    0x1000_0000 + u32::from(tag)
}
fn video_ssrc(tag: u8) -> u32 {
    0x2000_0000 + u32::from(tag)
}
/// The RTX SSRC signalled (FID group) with `video_ssrc(tag)`; the bridge retransmits on it.
fn rtx_ssrc(tag: u8) -> u32 {
    0x3000_0000 + u32::from(tag)
}

/// The tests in this file run one at a time: the churn tests measure the process's RSS, and
/// each wants the CPU the flood's bridge needs (2 cores in CI).
/// (tokio's lock: held across awaits, not poisoned by a failed test.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bridge's heap, counted by thread (`common::heap`).
#[global_allocator]
static ALLOC: common::heap::CountingAlloc = common::heap::CountingAlloc;

fn drops(st: &Stats) -> HashMap<&'static str, u64> {
    st.drops.iter().copied().collect()
}

fn drop_count(st: &Stats, reason: &str) -> u64 {
    st.drops.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
}

/// xorshift64: the tests' deterministic randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Audio (Opus, audio level + MID) and video (VP8, MID); transport-cc only when `twcc`
/// (the keyed client does not answer transport-cc, so it is offered none: no probing padding
/// muddles its byte counts).
fn media_descriptions(twcc: bool, rtx: bool) -> Vec<MediaDescription> {
    let ext = |id, uri: &str| RtpExtension {
        id,
        uri: uri.to_owned(),
    };
    let pt = |pt, name: &str, clock_rate| PayloadType {
        pt,
        name: name.to_owned(),
        clock_rate,
        apt: None,
        feedback: vec![],
    };
    let mut common = vec![
        ext(2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        ext(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ];
    if twcc {
        common.push(ext(
            3,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ));
    }
    let mut audio_ext = common.clone();
    audio_ext.push(ext(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000)],
            extensions: audio_ext,
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: if rtx {
                vec![
                    pt(PT_VP8, "VP8", 90_000),
                    PayloadType {
                        apt: Some(PT_VP8),
                        ..pt(PT_RTX, "rtx", 90_000)
                    },
                ]
            } else {
                vec![pt(PT_VP8, "VP8", 90_000)]
            },
            extensions: common,
        },
    ]
}

fn sources(tag: u8) -> Vec<SourceDescription> {
    vec![
        SourceDescription {
            kind: MediaKind::Audio,
            name: format!("{tag}-a0"),
            ssrcs: vec![Ssrc(audio_ssrc(tag))],
            groups: vec![],
            video_type: None,
        },
        SourceDescription {
            kind: MediaKind::Video,
            name: format!("{tag}-v0"),
            ssrcs: vec![Ssrc(video_ssrc(tag)), Ssrc(rtx_ssrc(tag))],
            groups: vec![SsrcGroup {
                semantics: GroupSemantics::Fid,
                ssrcs: vec![Ssrc(video_ssrc(tag)), Ssrc(rtx_ssrc(tag))],
            }],
            video_type: None,
        },
    ]
}

/// Per-datagram counts of what a keyed client receives on the sender's SSRCs: the first
/// copy of a (SSRC, sequence number) is media, any later copy a retransmission.
#[derive(Default)]
struct RxCount {
    seen: HashSet<(u32, u16)>,
    media_bytes: u64,
    media_packets: u64,
    /// The video part of `media_bytes` (the retransmission budget is per stream).
    video_bytes: u64,
    resent_bytes: u64,
    resent_packets: u64,
    /// Newest video sequence number per SSRC (by arrival).
    newest_video: Option<(u32, u16)>,
}

/// A client that does ICE and DTLS itself and so holds its SRTP session (see the module doc).
struct Keyed {
    socket: UdpSocket,
    local: SocketAddr,
    bridge_addr: SocketAddr,
    ufrag: String,
    pwd: String,
    bridge_ufrag: String,
    bridge_pwd: String,
    provider: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
    cert: LocalCert,
    bridge_fps: Vec<Fingerprint>,
    slots: HandshakeSlots,
    dtls: Dtls,
    dtls_started: bool,
    checks_answered: usize,
    first_check: Option<Instant>,
    next_check: Instant,
    srtp: Option<Box<dyn Srtp>>,
    /// The SSRCs whose packets are counted in `rx`.
    watch: Vec<u32>,
    rx: RxCount,
    video_watch: u32,
    buf: Vec<u8>,
}

fn fp_bytes(hex: &str) -> Vec<u8> {
    hex.split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex fingerprint from our own code"))
        .collect()
}

impl Keyed {
    fn new(tag: u8) -> Self {
        common::init_crypto();
        let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
        let cert = LocalCert::generate(&provider).expect("certificate");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket.set_nonblocking(true).expect("nonblocking");
        let local = socket.local_addr().expect("local addr");
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        Self {
            socket,
            local,
            bridge_addr: local,
            ufrag: format!("keyed{tag}"),
            pwd: format!("keyedpassword{tag:02}abcdefghijk"),
            bridge_ufrag: String::new(),
            bridge_pwd: String::new(),
            provider,
            cert,
            bridge_fps: Vec::new(),
            slots: HandshakeSlots::new(4),
            dtls: Dtls::new(Role::Client, local),
            dtls_started: false,
            checks_answered: 0,
            first_check: None,
            next_check: Instant::now(),
            srtp: None,
            watch: Vec::new(),
            rx: RxCount::default(),
            video_watch: 0,
            buf: vec![0; 2048],
        }
    }

    /// Our transport as the focus would signal it (DTLS active: the bridge is the server).
    fn remote_transport(&self) -> RemoteTransport {
        RemoteTransport {
            ufrag: Some(self.ufrag.clone()),
            pwd: Some(self.pwd.clone()),
            fingerprints: vec![Fingerprint {
                hash: "sha-256".into(),
                value: fp_bytes(&self.cert.fingerprint_sha256),
                setup: Some(Setup::Active),
            }],
            candidates: vec![self.local],
        }
    }

    fn connect(&mut self, bridge: &LocalTransport) {
        if let Some(c) = bridge.candidates.iter().find(|c| c.addr.ip().is_loopback()) {
            self.bridge_addr = c.addr;
        }
        self.bridge_ufrag = bridge.ufrag.clone();
        self.bridge_pwd = bridge.pwd.clone();
        self.bridge_fps = vec![Fingerprint {
            hash: "sha-256".into(),
            value: fp_bytes(&bridge.fingerprint_sha256),
            setup: None,
        }];
    }

    fn connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Read the socket (answer checks, feed DTLS, count media), run DTLS timers, send.
    fn drive(&mut self, now: Instant) {
        let mut events = Vec::new();
        while let Ok((n, from)) = self.socket.recv_from(&mut self.buf) {
            let b0 = self.buf[0];
            match b0 {
                0..=3 if n >= 20 && self.buf[0..2] == [0, 1] => {
                    let mut txid = [0u8; 12];
                    txid.copy_from_slice(&self.buf[8..20]);
                    let resp = sfu::testing::binding_success(&txid, from, &self.pwd);
                    let _ = self.socket.send_to(&resp, from);
                    self.checks_answered += 1;
                    self.first_check.get_or_insert(now);
                }
                20..=63 => {
                    let ctx = DtlsContext {
                        provider: &self.provider,
                        cert: &self.cert,
                        fingerprints: &self.bridge_fps,
                        allowed: &[SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80],
                        slots: &self.slots,
                    };
                    let d = BytesMut::from(&self.buf[..n]);
                    let _ = self.dtls.handle_datagram(now, from, d, &ctx, &mut events);
                }
                128..=191 if n >= 12 && !(192..224).contains(&self.buf[1]) => {
                    let ssrc = u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
                    if self.watch.contains(&ssrc) && self.buf[1] & 0x7F == PT_RTX {
                        self.rx.resent_bytes += n as u64;
                        self.rx.resent_packets += 1;
                    } else if self.watch.contains(&ssrc) {
                        let seq = u16::from_be_bytes([self.buf[2], self.buf[3]]);
                        if self.rx.seen.insert((ssrc, seq)) {
                            self.rx.media_bytes += n as u64;
                            self.rx.media_packets += 1;
                            if ssrc == self.video_watch {
                                self.rx.video_bytes += n as u64;
                                self.rx.newest_video = Some((ssrc, seq));
                            }
                        } else {
                            self.rx.resent_bytes += n as u64;
                            self.rx.resent_packets += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        // Our own checks (the bridge is controlling and nominates; these only help it along).
        if self.srtp.is_none() && now >= self.next_check && !self.bridge_pwd.is_empty() {
            let mut txid = [0u8; 12];
            txid[..8].copy_from_slice(&(now.elapsed().as_nanos() as u64 ^ 0x5a5a).to_be_bytes());
            let user = format!("{}:{}", self.bridge_ufrag, self.ufrag);
            let check = sfu::testing::ice_check(&txid, &user, &self.bridge_pwd);
            let _ = self.socket.send_to(&check, self.bridge_addr);
            self.next_check = now + Duration::from_millis(50);
        }
        // DTLS once the bridge has checked us for a while (it validates the pair first).
        if !self.dtls_started && self.first_check.is_some_and(|t| now >= t + Duration::from_millis(100)) {
            self.dtls_started = true;
            let ctx = DtlsContext {
                provider: &self.provider,
                cert: &self.cert,
                fingerprints: &self.bridge_fps,
                allowed: &[SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80],
                slots: &self.slots,
            };
            self.dtls.connect(now, self.bridge_addr, &ctx, &mut events);
        }
        if self.dtls.poll_timeout().is_some_and(|t| t <= now) {
            self.dtls.handle_timeout(now, &mut events);
        }
        while let Some(d) = self.dtls.poll_transmit() {
            let _ = self.socket.send_to(&d, self.bridge_addr);
        }
        for e in events {
            match e {
                DtlsEvent::Connected { srtp, .. } => self.srtp = Some(srtp),
                DtlsEvent::Failed(why) => panic!("keyed client DTLS failed: {why}"),
                _ => {}
            }
        }
    }

    /// An RTP packet (PT, SSRC, sequence number, timestamp, `len` payload bytes), SRTP-protected
    /// with our session and sent. False if the session refused it (e.g. its own SSRC cap).
    fn send_rtp(&mut self, pt: u8, ssrc: u32, seq: u16, ts: u32, body: &[u8]) -> bool {
        let mut p = Vec::with_capacity(12 + body.len());
        p.extend_from_slice(&[0x80, pt]);
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(body);
        let Some(srtp) = self.srtp.as_mut() else { return false };
        match srtp.protect_rtp(&p) {
            Ok(out) => self.socket.send_to(&out, self.bridge_addr).is_ok(),
            Err(_) => false,
        }
    }

    /// One SRTCP NACK from `sender` for `media` naming `pairs`.
    fn send_nack(&mut self, sender: u32, media: u32, pairs: impl IntoIterator<Item = NackPair>) {
        let mut buf = [0u8; 512];
        let n = write_nack(&mut buf, Ssrc(sender), Ssrc(media), pairs).expect("NACK fits 512 bytes");
        let Some(srtp) = self.srtp.as_mut() else { return };
        if let Ok(out) = srtp.protect_rtcp(&buf[..n]) {
            let _ = self.socket.send_to(&out, self.bridge_addr);
        }
    }

    /// Raw bytes from our validated 5-tuple (no SRTP applied).
    fn send_raw(&self, data: &[u8]) -> bool {
        self.socket.send_to(data, self.bridge_addr).is_ok()
    }
}

async fn bridge(config: SfuConfig) -> Sfu {
    let config = SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        ..config
    };
    let sfu = start(config).await.expect("start");
    assert!(matches!(
        sfu.handle.command(Command::CreateConference { conf: CONF }).await,
        Ok(Reply::ConferenceCreated { .. })
    ));
    sfu
}

/// Create endpoint `tag` with `transport`; sources and media signalled; receiver constraints
/// sent. Returns the bridge's transport.
async fn endpoint(
    sfu: &Sfu,
    tag: u8,
    transport: RemoteTransport,
    srcs: Vec<SourceDescription>,
    twcc: bool,
    rtx: bool,
) -> LocalTransport {
    let h = &sfu.handle;
    let ep = EndpointId(u32::from(tag));
    let bridge = match h
        .command(Command::CreateEndpoint {
            conf: CONF,
            ep,
            ice_controlling: true,
            sctp: false,
            visitor: false,
            name: format!("ep{tag}"),
            ssrc_rewriting: false,
        })
        .await
    {
        Ok(Reply::EndpointCreated(t)) => t,
        other => panic!("create endpoint: {other:?}"),
    };
    h.command(Command::SetRemoteTransport {
        conf: CONF,
        ep,
        transport,
    })
    .await
    .expect("transport");
    if !srcs.is_empty() {
        h.command(Command::SetSources {
            conf: CONF,
            ep,
            sources: srcs,
        })
        .await
        .expect("sources");
    }
    for media in media_descriptions(twcc, rtx) {
        h.command(Command::SetMedia { conf: CONF, ep, media })
            .await
            .expect("media");
    }
    h.command(Command::BridgeChannelMessage {
        conf: CONF,
        ep,
        text: common::DEFAULT_CONSTRAINTS.to_owned(),
    })
    .await
    .expect("constraints");
    bridge
}

/// A str0m endpoint `tag` in the conference, connecting.
async fn str0m_endpoint(sfu: &Sfu, tag: u8) -> Client {
    let mut c = Client::new(Instant::now(), audio_ssrc(tag), video_ssrc(tag));
    let t = c.remote_transport();
    let bridge = endpoint(sfu, tag, t, sources(tag), true, false).await;
    c.connect(&bridge);
    c
}

/// A keyed endpoint `tag` with the given sources, connecting.
async fn keyed_endpoint(sfu: &Sfu, tag: u8, srcs: Vec<SourceDescription>) -> Keyed {
    let mut k = Keyed::new(tag);
    let bridge = endpoint(sfu, tag, k.remote_transport(), srcs, false, true).await;
    k.connect(&bridge);
    k
}

/// The str0m sender S (tag 1) and its media schedule: audio every 20 ms, video every 33 ms.
struct Sender {
    next_a: Instant,
    next_v: Instant,
    n: u32,
}
impl Sender {
    fn new(now: Instant) -> Self {
        Self {
            next_a: now,
            next_v: now,
            n: 0,
        }
    }
    fn tick(&mut self, now: Instant, c: &mut Client, tag: u8) {
        if now >= self.next_a {
            c.send_audio(now, &payload(tag, b'a', self.n, 80));
            self.next_a += Duration::from_millis(20);
        }
        if now >= self.next_v {
            c.send_video(now, &payload(tag, b'v', self.n, 900));
            self.n += 1;
            self.next_v += Duration::from_millis(33);
        }
    }
}

/// Received packets and lost sequence numbers (gaps inside each SSRC's range) among what
/// `c` received from `tag` at indices `from..`.
fn rx_and_loss(c: &Client, tag: u8, from: usize) -> (usize, usize) {
    let mut by: HashMap<u32, HashSet<u16>> = HashMap::new();
    for r in &c.received[from..] {
        if r.ssrc == audio_ssrc(tag) || r.ssrc == video_ssrc(tag) {
            by.entry(r.ssrc).or_default().insert(r.seq);
        }
    }
    let mut got = 0;
    let mut lost = 0;
    for seqs in by.values() {
        got += seqs.len();
        // No wrap in these short runs (str0m starts audio at 1001, video at 5001).
        let (lo, hi) = (seqs.iter().min().copied(), seqs.iter().max().copied());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            lost += usize::from(hi - lo) + 1 - seqs.len();
        }
    }
    (got, lost)
}

fn connect_all(clients: &mut [&mut Client], keyed: &mut Keyed) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !(clients.iter().all(|c| c.connected) && keyed.connected()) {
        let now = Instant::now();
        for c in clients.iter_mut() {
            c.drive(now);
        }
        keyed.drive(now);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(clients.iter().all(|c| c.connected), "str0m clients did not connect");
    assert!(
        keyed.connected(),
        "keyed client did not connect ({} checks answered)",
        keyed.checks_answered
    );
}

// ---------------------------------------------------------------------------------------------
// Case 26: NACK amplification.

/// What the NACK test runs every loop iteration (the attack).
type Each<'a> = Box<dyn FnMut(&mut Keyed, Instant) + 'a>;

/// S sends VP8 + audio, A (keyed) and B (str0m) receive. A sends 1,000 SRTCP NACKs per second
/// for 3 s, each naming 256 sequence numbers of the video it got (A negotiated RTX, and S
/// signalled an RTX SSRC, as browsers do: plain retransmissions would reuse an SRTP index). Retransmitted bytes reaching
/// A stay ≤ 2× the media bytes forwarded to A, and B's media during the flood is at ≥ 90 % of
/// its pre-flood rate with no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_flood_through_a_live_bridge_is_bounded_and_spares_other_receivers() {
    let _serial = SERIAL.lock().await;
    common::init_log();
    let sfu = bridge(SfuConfig {
        rng_seed: Some(26),
        ..SfuConfig::default()
    })
    .await;
    let mut s = str0m_endpoint(&sfu, 1).await;
    let mut b = str0m_endpoint(&sfu, 2).await;
    let mut a = keyed_endpoint(&sfu, 3, vec![]).await;
    b.expect_rx(audio_ssrc(1), video_ssrc(1));
    a.watch = vec![audio_ssrc(1), video_ssrc(1), rtx_ssrc(1)];
    a.video_watch = video_ssrc(1);

    let res = tokio::task::spawn_blocking(move || {
        let _client = ClientThread::mark();
        connect_all(&mut [&mut s, &mut b], &mut a);
        let mut sender = Sender::new(Instant::now());
        let mut run = |s: &mut Client, b: &mut Client, a: &mut Keyed, d: Duration, mut each: Each<'_>| {
            let end = Instant::now() + d;
            while Instant::now() < end {
                let now = Instant::now();
                sender.tick(now, s, 1);
                s.drive(now);
                b.drive(now);
                a.drive(now);
                each(a, now);
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Warm-up, then the 3 s baseline.
        run(&mut s, &mut b, &mut a, Duration::from_secs(1), Box::new(|_, _| {}));
        let b0 = b.received.len();
        run(&mut s, &mut b, &mut a, Duration::from_secs(3), Box::new(|_, _| {}));
        let base = rx_and_loss(&b, 1, b0);
        let a1 = (a.rx.video_bytes, a.rx.resent_bytes, a.rx.media_packets);
        // The flood: 1,000 NACKs/s, 16 pairs = 256 sequence numbers each, behind the newest
        // video packet A got.
        let b1 = b.received.len();
        let t0 = Instant::now();
        let mut nacks = 0u64;
        run(
            &mut s,
            &mut b,
            &mut a,
            Duration::from_secs(3),
            Box::new(|a: &mut Keyed, now: Instant| {
                let due = ((now - t0).as_micros() / 1000) as u64;
                let Some((ssrc, newest)) = a.rx.newest_video else {
                    return;
                };
                while nacks < due.min(3000) {
                    // 15 pairs of 17 numbers and one of 1: 256.
                    let pairs = (0..16u16).map(|j| NackPair {
                        pid: newest.wrapping_sub(17 * j + 16),
                        blp: if j < 15 { 0xFFFF } else { 0 },
                    });
                    a.send_nack(0x3333_0003, ssrc, pairs);
                    nacks += 1;
                }
            }),
        );
        let flood_secs = t0.elapsed().as_secs_f64();
        let during = rx_and_loss(&b, 1, b1);
        let a2 = (
            a.rx.video_bytes,
            a.rx.resent_bytes,
            a.rx.media_packets,
            a.rx.resent_packets,
        );
        (base, during, a1, a2, nacks, flood_secs)
    })
    .await
    .expect("client thread");
    let (base, during, a1, a2, nacks, flood_secs) = res;
    let st = sfu.handle.stats().await;
    // Everything A got on S's video stream since it connected (the budget is earned from the
    // first packet), and what it got during the flood.
    let (video_total, resent_total) = (a2.0, a2.1);
    let (video_flood, resent_flood) = (a2.0 - a1.0, a2.1 - a1.1);
    eprintln!(
        "NACK flood: {nacks} NACKs in {flood_secs:.2} s; to A since connecting: video {video_total} B \
         ({} media packets), retransmitted {resent_total} B ({} packets, {resent_before} B before the \
         flood); during the flood: video {video_flood} B, retransmitted {resent_flood} B; bridge \
         retransmissions {}; B from S (got, lost) before {base:?}, during {during:?}; drops {:?}",
        a2.2,
        a2.3,
        st.retransmissions,
        st.drops,
        resent_before = a1.1,
    );
    assert!(nacks >= 2500, "only {nacks} NACKs sent");
    assert!(a2.2 - a1.2 > 100, "A got media during the flood: {a1:?} -> {a2:?}");
    assert!(resent_flood > 0, "the NACKs were answered at all");
    // The budget counts the cached RTP bytes, A counts datagrams: each RTX datagram is 2 bytes
    // (the OSN) longer than the packet it carries, hence the 2 % slack.
    assert!(
        resent_total * 100 <= 2 * video_total * 102,
        "retransmitted {resent_total} B to A for {video_total} B of video"
    );
    // Within the flood alone: twice its media plus at most the budget saved before it.
    assert!(
        resent_flood <= 2 * video_flood + sfu::bwe::rtx_cache::BUDGET_CAP,
        "retransmitted {resent_flood} B to A during the flood for {video_flood} B of video"
    );
    let d = drops(&st);
    assert!(
        d.get("nack_too_many_seqs").copied().unwrap_or(0) == 0,
        "256 numbers per NACK are within the per-packet cap: {d:?}"
    );
    assert!(
        d.get("nack_over_budget").copied().unwrap_or(0) > 0,
        "the budget held some back: {d:?}"
    );
    // B unaffected: rate ≥ 90 % of the baseline (both windows 3 s), nothing lost.
    assert!(
        during.0 * 10 >= base.0 * 9,
        "B's media from S fell from {} to {} packets per 3 s",
        base.0,
        during.0
    );
    assert_eq!(
        during.1, 0,
        "B lost packets during the flood (baseline lost {})",
        base.1
    );
}

// ---------------------------------------------------------------------------------------------
// Case 29: SSRC churn.

struct Churn {
    sent: u64,
    refused_locally: u64,
    passed: u64,
    drops: HashMap<&'static str, u64>,
    rss: (u64, u64),
    /// The bridge's heap (KiB) before and after.
    heap: (i64, i64),
    base: (usize, usize),
    during: (usize, usize),
    secs: (f64, f64),
}

/// S (str0m) sends to B (str0m); A (keyed, no signalled sources, so the bridge may learn
/// SSRCs from it) sends 10^5 authenticated RTP packets, each on a distinct SSRC, over ~12 s
/// (robustness.md: over 60 s).
/// `learn_cap` overrides `max_ssrcs_per_endpoint` (default 64).
async fn ssrc_churn(learn_cap: Option<usize>) -> Churn {
    let _serial = SERIAL.lock().await;
    common::init_log();
    let mut config = SfuConfig {
        rng_seed: Some(29),
        ..SfuConfig::default()
    };
    if let Some(cap) = learn_cap {
        config.limits.max_ssrcs_per_endpoint = cap;
    }
    let sfu = bridge(config).await;
    let mut s = str0m_endpoint(&sfu, 1).await;
    let mut b = str0m_endpoint(&sfu, 2).await;
    let mut a = keyed_endpoint(&sfu, 3, vec![]).await;
    b.expect_rx(audio_ssrc(1), video_ssrc(1));
    let handle = sfu.handle.clone();
    let rt = tokio::runtime::Handle::current();
    let r = tokio::task::spawn_blocking(move || {
        let _client = ClientThread::mark();
        connect_all(&mut [&mut s, &mut b], &mut a);
        let mut sender = Sender::new(Instant::now());
        let mut stripped = 0;
        // Media (S sending unless `quiet`), and `each` every loop, for `d`.
        let mut run = |s: &mut Client,
                       b: &mut Client,
                       a: &mut Keyed,
                       d: Duration,
                       quiet: bool,
                       each: &mut dyn FnMut(&mut Keyed) -> bool| {
            let start = Instant::now();
            loop {
                let now = Instant::now();
                if now >= start + d {
                    break;
                }
                if quiet {
                    sender = Sender::new(now + Duration::from_millis(1));
                } else {
                    sender.tick(now, s, 1);
                }
                s.drive(now);
                b.drive(now);
                a.drive(now);
                // B's record of what it got keeps every payload: drop them (only SSRCs and
                // sequence numbers are checked) so the RSS measured is not the test's own log.
                for r in b.received[stripped..].iter_mut() {
                    r.payload = Vec::new();
                }
                stripped = b.received.len();
                if each(a) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            start.elapsed().as_secs_f64()
        };
        run(&mut s, &mut b, &mut a, Duration::from_secs(2), false, &mut |_| false);
        let b0 = b.received.len();
        let base_secs = run(&mut s, &mut b, &mut a, Duration::from_secs(3), false, &mut |_| false);
        let base = rx_and_loss(&b, 1, b0);
        // Quiet for 300 ms so the stats snapshot has every packet S sent so far.
        run(&mut s, &mut b, &mut a, Duration::from_millis(300), true, &mut |_| false);
        let st0 = rt.block_on(handle.stats());
        let s_sent0 = s.sent_audio + s.sent_video;
        let rss0 = vm_rss_kib();
        let heap0 = bridge_heap_kib();
        let b1 = b.received.len();
        let n: u64 = 100_000;
        let (mut sent, mut refused, mut i) = (0u64, 0u64, 0u64);
        let body = [0x5Au8; 100];
        let t0 = Instant::now();
        let churn_secs = run(&mut s, &mut b, &mut a, Duration::from_secs(30), false, &mut |a| {
            // 10 per loop (≈ 1 ms): about 8 k/s.
            for _ in 0..10 {
                // The client's own session refuses some SSRCs (its filter of retired ones has
                // false positives): keep going until n are sent.
                if sent == n || i == 2 * n {
                    return true;
                }
                // Multiplying by an odd constant is a bijection mod 2^30: distinct SSRCs, all in
                // 0x4000_0000..0x8000_0000, clear of the signalled 0x1…, 0x2…, 0x3… ones.
                let ssrc = 0x4000_0000 | ((i as u32 + 1).wrapping_mul(0x9E37_79B1) & 0x3FFF_FFFF);
                i += 1;
                if a.send_rtp(PT_VP8, ssrc, 1, 0, &body) {
                    sent += 1;
                } else {
                    refused += 1;
                }
            }
            false
        });
        let _ = t0;
        // Media after the churn until the window is as long as the baseline, then quiet.
        let rest = Duration::from_secs_f64((base_secs - churn_secs).max(0.0));
        let _ = run(&mut s, &mut b, &mut a, rest, false, &mut |_| false);
        let during = rx_and_loss(&b, 1, b1);
        let during_secs = churn_secs + rest.as_secs_f64();
        run(&mut s, &mut b, &mut a, Duration::from_millis(300), true, &mut |_| false);
        let rss1 = vm_rss_kib();
        let heap1 = bridge_heap_kib();
        let st1 = rt.block_on(handle.stats());
        let s_sent = (s.sent_audio + s.sent_video - s_sent0) as u64;
        // RTP that passed SRTP during the churn, less S's media: A's churn packets that got
        // SRTP state (each SSRC is sent once). An overestimate if loopback lost some of S's.
        let passed = (st1.rtp_packets_received - st0.rtp_packets_received).saturating_sub(s_sent);
        let d0 = drops(&st0);
        let drops: HashMap<&'static str, u64> = st1
            .drops
            .iter()
            .map(|(k, v)| (*k, v - d0.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        Churn {
            sent,
            refused_locally: refused,
            passed,
            drops,
            rss: (rss0, rss1),
            heap: (heap0, heap1),
            base,
            during,
            secs: (base_secs, during_secs),
        }
    })
    .await
    .expect("client thread");
    eprintln!(
        "SSRC churn (learn cap {learn_cap:?}): {} sent ({} refused by the client's own session), \
         {} passed SRTP; drops {:?}; RSS {} -> {} KiB (+{} KiB); bridge heap {} -> {} KiB; B from S (got, lost) {:?} in {:.1} s \
         before, {:?} in {:.1} s during",
        r.sent,
        r.refused_locally,
        r.passed,
        r.drops,
        r.rss.0,
        r.rss.1,
        r.rss.1.saturating_sub(r.rss.0),
        r.heap.0,
        r.heap.1,
        r.base,
        r.secs.0,
        r.during,
        r.secs.1
    );
    r
}

/// The checks both churn tests share: at most `state_cap` SSRCs got state, every other
/// packet is a counted drop (`reason`), RSS and bridge-heap growth below the bounds, B
/// unaffected.
fn check_churn(r: &Churn, state_cap: u64, reason: &str, rss_bound_kib: u64, heap_bound_kib: i64) {
    assert_eq!(r.sent, 100_000, "churn packets sent");
    assert!(
        r.passed <= state_cap,
        "{} SSRCs passed SRTP (cap {state_cap})",
        r.passed
    );
    let dropped = r.drops.get(reason).copied().unwrap_or(0);
    // Loopback may lose a few datagrams under CPU starvation: 1 %.
    assert!(
        (dropped + r.passed) * 100 >= r.sent * 99,
        "{dropped} `{reason}` drops + {} passed for {} sent: {:?}",
        r.passed,
        r.sent,
        r.drops
    );
    // Test-process RSS (bridge + three clients) over the churn, after 5 s of warm-up media.
    let grew = r.rss.1.saturating_sub(r.rss.0);
    assert!(grew < rss_bound_kib, "RSS grew {grew} KiB during the churn");
    // The bridge's own heap over the same window (its media state for S and B included).
    let heap = r.heap.1 - r.heap.0;
    assert!(
        heap < heap_bound_kib,
        "the bridge's heap grew {heap} KiB during the churn"
    );
    // B's media from S: rate ≥ 90 % of the baseline, no loss.
    let rate = |n: usize, secs: f64| n as f64 / secs;
    assert!(
        rate(r.during.0, r.secs.1) >= 0.9 * rate(r.base.0, r.secs.0),
        "B's media from S fell: {:?} in {:.1} s before, {:?} in {:.1} s during",
        r.base,
        r.secs.0,
        r.during,
        r.secs.1
    );
    assert_eq!(r.during.1, 0, "B lost media from S during the churn");
}

/// Case 29 with the default limits: the endpoint signalled no sources, so the bridge learns
/// its first `max_ssrcs_per_endpoint` (64) SSRCs; every later one is dropped as
/// `unknown_ssrc` before SRTP, so no SRTP state is created for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrc_churn_through_a_live_endpoint_is_capped_by_the_learning_limit() {
    let r = ssrc_churn(None).await;
    let cap = SfuConfig::default().limits.max_ssrcs_per_endpoint as u64;
    // robustness.md's bound: < 5 MiB.
    check_churn(&r, cap, "unknown_ssrc", 5 * 1024, 5 * 1024);
    assert_eq!(r.passed, cap, "the first {cap} SSRCs are learned");
}

/// Case 29 with the learning limit out of the way (10^6): the SRTP session's own cap
/// (`sfu::srtp::MAX_SSRCS`, 1,024) holds; the rest are `srtp_ssrc_limit` drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrc_churn_through_a_live_endpoint_is_capped_by_the_srtp_session() {
    let r = ssrc_churn(Some(1_000_000)).await;
    let cap = sfu::srtp::MAX_SSRCS as u64;
    // Not robustness.md's 5 MiB: with the learning limit raised, 1,024 SSRCs are learned as
    // sources, each with SRTP, receive-statistics, source-table state and a retransmission
    // cache toward B (measured: ≈ 13 KiB of bridge heap each, ≈ 10 MiB of RSS in all); the
    // bounds are what 1,024 of them may cost, and do not depend on the 10^5 packets.
    check_churn(&r, cap, "srtp_ssrc_limit", 16 * 1024, 20 * 1024);
    assert!(r.passed >= cap * 9 / 10, "SRTP state fills up to its cap: {}", r.passed);
}

// ---------------------------------------------------------------------------------------------
// Case 24: forged tags at volume.

/// A (keyed) sends audio on its signalled SSRC, sequence numbers from 65,400 so they wrap
/// mid-flood; B (str0m) receives it. From A's validated 5-tuple, `n` SRTP packets with A's
/// SSRCs, sequence numbers at or ahead of (or far from) A's next one, and random bytes where
/// the encrypted payload and tag go. None may authenticate, advance the replay window or the
/// ROC: every legitimate packet (before, during and after the flood, across the wrap) still
/// decrypts and reaches B.
async fn forged_tags(n: u64, burst: u64) {
    let _serial = SERIAL.lock().await;
    common::init_log();
    let sfu = bridge(SfuConfig {
        rng_seed: Some(24),
        ..SfuConfig::default()
    })
    .await;
    let mut b = str0m_endpoint(&sfu, 2).await;
    let mut a = keyed_endpoint(&sfu, 3, sources(3)).await;
    b.expect_rx(audio_ssrc(3), video_ssrc(3));
    let handle = sfu.handle.clone();
    let rt = tokio::runtime::Handle::current();
    let r = tokio::task::spawn_blocking(move || {
        let _client = ClientThread::mark();
        connect_all(&mut [&mut b], &mut a);
        let legit: std::cell::RefCell<Vec<u16>> = Default::default();
        let mut seq: u16 = 65_400;
        let mut next_legit = Instant::now();
        let mut rng = Rng(0x2424_2424_2424_2424);
        // Legitimate audio every 20 ms; `each` every loop until it returns true or `d` passes.
        let mut run = |a: &mut Keyed, b: &mut Client, d: Duration, each: &mut dyn FnMut(&mut Keyed, u16) -> bool| {
            let start = Instant::now();
            while start.elapsed() < d {
                let now = Instant::now();
                if now >= next_legit {
                    let ts = u32::from(seq).wrapping_mul(960);
                    assert!(
                        a.send_rtp(PT_OPUS, audio_ssrc(3), seq, ts, &[0xA5; 80]),
                        "legit packet protected"
                    );
                    legit.borrow_mut().push(seq);
                    seq = seq.wrapping_add(1);
                    next_legit += Duration::from_millis(20);
                }
                a.drive(now);
                b.drive(now);
                if each(a, seq) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            start.elapsed().as_secs_f64()
        };
        run(&mut a, &mut b, Duration::from_secs(1), &mut |_, _| false);
        let st0 = rt.block_on(handle.stats());
        let (mut forged, mut buf) = (0u64, [0u8; 108]);
        let flood_secs = run(&mut a, &mut b, Duration::from_secs(600), &mut |a, next| {
            for _ in 0..burst {
                if forged == n {
                    return true;
                }
                let r = rng.next();
                let fseq = match r % 8 {
                    // The very next legitimate sequence number, or just ahead of it.
                    0 | 1 => next,
                    2 | 3 => next.wrapping_add(1 + (r >> 8) as u16 % 64),
                    // Further ahead, across the wrap while the legitimate ones near it.
                    4 | 5 => next.wrapping_add(64 + (r >> 8) as u16 % 2000),
                    // Half the sequence space away (a ROC guess of ±1) or anywhere.
                    6 => next.wrapping_add(32_768 + (r >> 8) as u16 % 256),
                    _ => (r >> 8) as u16,
                };
                // Mostly the audio SSRC (which has state), some the video SSRC (none yet).
                let ssrc = if r >> 60 == 0 { video_ssrc(3) } else { audio_ssrc(3) };
                buf[0] = 0x80;
                buf[1] = if ssrc == video_ssrc(3) { PT_VP8 } else { PT_OPUS };
                buf[2..4].copy_from_slice(&fseq.to_be_bytes());
                buf[4..8].copy_from_slice(&(u32::from(fseq).wrapping_mul(960)).to_be_bytes());
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                for c in buf[12..].chunks_mut(8) {
                    let x = rng.next().to_le_bytes();
                    c.copy_from_slice(&x[..c.len()]);
                }
                if a.send_raw(&buf) {
                    forged += 1;
                }
            }
            false
        });
        let legit_at_flood_end = legit.borrow().len();
        // One more second of legitimate audio, then let it drain.
        run(&mut a, &mut b, Duration::from_secs(1), &mut |_, _| false);
        let end = Instant::now() + Duration::from_millis(300);
        while Instant::now() < end {
            a.drive(Instant::now());
            b.drive(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        }
        let st1 = rt.block_on(handle.stats());
        let got: HashSet<u16> = b
            .received
            .iter()
            .filter(|p| p.ssrc == audio_ssrc(3))
            .map(|p| p.seq)
            .collect();
        let legit = legit.take();
        let missing: Vec<u16> = legit.iter().copied().filter(|s| !got.contains(s)).collect();
        (forged, flood_secs, legit, legit_at_flood_end, missing, st0, st1)
    })
    .await
    .expect("client thread");
    let (forged, flood_secs, legit, legit_at_flood_end, missing, st0, st1) = r;
    let delta = |k: &str| drop_count(&st1, k) - drop_count(&st0, k);
    let auth = delta("srtp_auth_failed");
    let replay = delta("srtp_replay");
    let wrapped = legit.windows(2).any(|w| w[1] < w[0]);
    eprintln!(
        "forged tags: {forged} in {flood_secs:.1} s ({:.0}/s); srtp_auth_failed {auth}, srtp_replay {replay}; \
         legitimate packets {} ({} by the end of the flood, wrapped: {wrapped}), missing at B {}: {:?}; drops {:?}",
        forged as f64 / flood_secs,
        legit.len(),
        legit_at_flood_end,
        missing.len(),
        &missing[..missing.len().min(10)],
        st1.drops
    );
    assert_eq!(forged, n, "forged packets sent");
    assert!(wrapped, "the legitimate sequence numbers wrapped during the run");
    // A forged packet behind the replay window (or on an index already received) is refused
    // as `srtp_replay` before its tag is checked; any other as `srtp_auth_failed`.
    let refused = auth + replay;
    assert!(
        refused <= forged,
        "more SRTP refusals ({auth} + {replay}) than forged packets: a legitimate one was refused"
    );
    // Loopback may lose a few datagrams under CPU starvation: 1 %.
    assert!(
        refused * 100 >= forged * 99,
        "{refused} of {forged} forged packets counted"
    );
    assert!(
        missing.is_empty(),
        "{} legitimate packets did not reach B",
        missing.len()
    );
}

/// Case 24 in CI: 10^5 forged packets (`PALIM_FLOOD_FORGED` overrides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tags_do_not_advance_the_replay_window_or_roc() {
    let n = std::env::var("PALIM_FLOOD_FORGED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    forged_tags(n, 25).await;
}

/// Case 24 at robustness.md's 10^6 (docs/security.md §4 has the command and the result):
/// `cargo test --release -p sfu --test flood forged_tags_at_a_million -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10^6 packets: a release-build manual run"]
async fn forged_tags_at_a_million_do_not_advance_the_replay_window_or_roc() {
    forged_tags(1_000_000, 60).await;
}
