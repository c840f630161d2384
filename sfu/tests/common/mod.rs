//! A str0m 0.25 WebRTC client for tests and the load harness: one `Rtc` in RTP mode on its own
//! UDP socket (127.0.0.1:0), configured through the Direct API as lib-jitsi-meet's browser
//! would end up: ICE controlled, DTLS active (client), no SDP.
#![allow(dead_code)] // not every test uses every helper

pub mod heap;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Once;
use std::time::{Duration, Instant};

use sfu::control::{Fingerprint, LocalTransport, RemoteTransport, Setup};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::config::DtlsVersion;
use str0m::format::Codec;
use str0m::ice::IceCreds;
use str0m::media::KeyframeRequestKind;
use str0m::media::Rid;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

pub const PT_OPUS: u8 = 111;
pub const PT_VP8: u8 = 100;
const MID_AUDIO: &str = "0";
const MID_VIDEO: &str = "1";

static CRYPTO: Once = Once::new();

/// Install str0m's process-wide crypto provider (aws-lc-rs) once.
pub fn init_crypto() {
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// Log to the test output when `RUST_LOG` is set.
pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls::handshake=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// One received RTP packet (decrypted by str0m).
#[derive(Debug, Clone)]
pub struct Received {
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub payload: Vec<u8>,
    /// The packet carried a MID header extension (the bridge must strip it, media.md §9).
    pub has_mid: bool,
    /// The packet carried a transport-cc sequence number extension.
    /// The transport-wide sequence number on the packet, if any.
    pub twcc: Option<u16>,
    pub audio_level: Option<i8>,
}

pub struct Client {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub ice: IceCreds,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    /// DTLS role: true = active (client, as browsers answer), false = passive (server).
    pub dtls_active: bool,
    pub connected: bool,
    pub ice_state: Option<IceConnectionState>,
    pub received: Vec<Received>,
    /// The bridge-channel data channel, once open.
    pub channel: Option<ChannelId>,
    /// Text messages received on the data channel.
    pub texts: Vec<String>,
    /// Sent on the data channel as soon as it opens, as lib-jitsi-meet sends its receiver
    /// constraints (the bridge forwards no video before them, media.md §10 check 25).
    pub on_open: Option<String>,
    /// Keyframe requests (PLI/FIR) received for our send streams.
    pub keyframe_requests: usize,
    /// REMB values (bps) received from the bridge for this client's media.
    pub rembs: Vec<u64>,
    /// Packets handed to str0m for sending.
    pub sent_audio: usize,
    pub sent_video: usize,
    /// SRTP (not SRTCP) datagrams read from the socket.
    pub srtp_datagrams: usize,
    next_timeout: Instant,
    pending: Vec<String>,
    audio_seq: u16,
    video_seq: u16,
    started: Instant,
    buf: Vec<u8>,
}

impl Client {
    /// A client that will send audio on `audio_ssrc` (PT 111) and video on `video_ssrc` (PT 100).
    pub fn new(now: Instant, audio_ssrc: u32, video_ssrc: u32) -> Self {
        init_crypto();
        let ice = IceCreds::new();
        let mut cfg = RtcConfig::new()
            .set_local_ice_credentials(ice.clone())
            .set_rtp_mode(true)
            .set_dtls_version(DtlsVersion::Dtls12)
            .clear_codecs();
        let codecs = cfg.codec_config();
        codecs.add_config(
            Pt::new_with_value(PT_OPUS),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            Default::default(),
        );
        codecs.add_config(
            Pt::new_with_value(PT_VP8),
            None,
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            Default::default(),
        );
        let mut rtc = cfg.build(now);
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket.set_nonblocking(true).expect("nonblocking");
        let local = socket.local_addr().expect("local addr");
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
        {
            let mut api = rtc.direct_api();
            api.declare_media(Mid::from(MID_AUDIO), MediaKind::Audio);
            api.declare_media(Mid::from(MID_VIDEO), MediaKind::Video);
            api.declare_stream_tx(Ssrc::from(audio_ssrc), None, Mid::from(MID_AUDIO), None);
            api.declare_stream_tx(Ssrc::from(video_ssrc), None, Mid::from(MID_VIDEO), None);
        }
        Self {
            rtc,
            socket,
            local,
            ice,
            audio_ssrc,
            video_ssrc,
            dtls_active: true,
            connected: false,
            ice_state: None,
            received: Vec::new(),
            channel: None,
            on_open: Some(DEFAULT_CONSTRAINTS.to_owned()),
            texts: Vec::new(),
            keyframe_requests: 0,
            rembs: Vec::new(),
            sent_audio: 0,
            sent_video: 0,
            srtp_datagrams: 0,
            next_timeout: now,
            pending: Vec::new(),
            audio_seq: 1000,
            video_seq: 5000,
            started: now,
            buf: vec![0; 2048],
        }
    }

    /// Our transport, as Jicofo would forward it to the bridge (setup active).
    pub fn remote_transport(&mut self) -> RemoteTransport {
        let fp = self.rtc.direct_api().local_dtls_fingerprint().clone();
        RemoteTransport {
            ufrag: Some(self.ice.ufrag.clone()),
            pwd: Some(self.ice.pass.clone()),
            fingerprints: vec![Fingerprint {
                hash: fp.hash_func.clone(),
                value: fp.bytes.clone(),
                setup: Some(if self.dtls_active {
                    Setup::Active
                } else {
                    Setup::Passive
                }),
            }],
            candidates: vec![self.local],
        }
    }

    /// Point the client at the bridge and start ICE (controlled) and DTLS (active).
    pub fn connect(&mut self, bridge: &LocalTransport) {
        for c in &bridge.candidates {
            if c.addr.ip().is_loopback() {
                self.rtc
                    .add_remote_candidate(Candidate::host(c.addr, "udp").expect("bridge candidate"));
            }
        }
        let fp_bytes: Vec<u8> = bridge
            .fingerprint_sha256
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex fingerprint"))
            .collect();
        let mut api = self.rtc.direct_api();
        api.set_ice_lite(false);
        api.set_ice_controlling(false);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: bridge.ufrag.clone(),
            pass: bridge.pwd.clone(),
        });
        api.set_remote_fingerprint(str0m::config::Fingerprint {
            hash_func: "sha-256".into(),
            bytes: fp_bytes,
        });
        api.start_dtls(self.dtls_active).expect("start dtls");
    }

    /// Open the bridge channel as lib-jitsi-meet does (SCTP client, DCEP OPEN). Call after
    /// [`Client::connect`].
    pub fn open_data_channel(&mut self) {
        let mut api = self.rtc.direct_api();
        api.start_sctp(true);
        api.create_data_channel(ChannelConfig {
            label: "JVB data channel".into(),
            protocol: "http://jitsi.org/protocols/colibri".into(),
            ..Default::default()
        });
    }

    /// Send a text message on the open data channel; false if it is not open.
    pub fn send_text(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else { return false };
        match self.rtc.channel(id) {
            Some(mut ch) => ch.write(false, text.as_bytes()).unwrap_or(false),
            None => false,
        }
    }

    /// Declare more video SSRCs to send on (simulcast encodings beyond the first). str0m's
    /// pacer finds a send stream by (mid, rid), so each gets its own rid (not sent: no RID
    /// extension is negotiated).
    pub fn add_video_ssrcs(&mut self, ssrcs: &[u32]) {
        let mut api = self.rtc.direct_api();
        for (i, s) in ssrcs.iter().enumerate() {
            let rid = Rid::from(format!("r{}", i + 1).as_str());
            api.declare_stream_tx(Ssrc::from(*s), None, Mid::from(MID_VIDEO), Some(rid));
        }
    }

    /// Send one VP8 packet on `ssrc` with the caller's sequence number and timestamp.
    pub fn send_video_on(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) {
        self.sent_video += 1;
        if let Some(s) = self.rtc.direct_api().stream_tx(&Ssrc::from(ssrc)) {
            let exts = ExtensionValues {
                mid: Some(Mid::from(MID_VIDEO)),
                ..Default::default()
            };
            s.write_rtp(
                RtpWrite::new(
                    Pt::new_with_value(PT_VP8),
                    u64::from(seq).into(),
                    ts,
                    now,
                    payload.to_vec(),
                )
                .marker(true)
                .ext_vals(exts),
            );
        }
    }

    /// Accept video on `ssrc` (sent by another endpoint through the bridge).
    pub fn expect_video_rx(&mut self, ssrc: u32) {
        self.rtc
            .direct_api()
            .expect_stream_rx(Ssrc::from(ssrc), None, Mid::from(MID_VIDEO), None);
    }

    /// Ask the sender of `ssrc` (through the bridge) for a keyframe, with a PLI.
    pub fn request_keyframe(&mut self, ssrc: u32) {
        if let Some(rx) = self.rtc.direct_api().stream_rx(&Ssrc::from(ssrc)) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
    }

    /// Accept the given SSRCs (sent by other endpoints through the bridge).
    pub fn expect_rx(&mut self, audio_ssrc: u32, video_ssrc: u32) {
        let mut api = self.rtc.direct_api();
        api.expect_stream_rx(Ssrc::from(audio_ssrc), None, Mid::from(MID_AUDIO), None);
        api.expect_stream_rx(Ssrc::from(video_ssrc), None, Mid::from(MID_VIDEO), None);
    }

    /// Send one Opus-shaped audio packet with `payload`, with audio level and MID extensions
    /// (str0m's standard ids: audio level 1, MID 4).
    pub fn send_audio(&mut self, now: Instant, payload: &[u8]) {
        self.audio_seq = self.audio_seq.wrapping_add(1);
        self.sent_audio += 1;
        let seq = self.audio_seq;
        let ts = (now - self.started).as_millis() as u32 * 48;
        let ssrc = Ssrc::from(self.audio_ssrc);
        let exts = ExtensionValues {
            audio_level: Some(-30),
            voice_activity: Some(true),
            mid: Some(Mid::from(MID_AUDIO)),
            ..Default::default()
        };
        if let Some(s) = self.rtc.direct_api().stream_tx(&ssrc) {
            s.write_rtp(
                RtpWrite::new(
                    Pt::new_with_value(PT_OPUS),
                    u64::from(seq).into(),
                    ts,
                    now,
                    payload.to_vec(),
                )
                .ext_vals(exts),
            );
        }
    }

    /// Send one VP8-shaped video packet with `payload`.
    pub fn send_video(&mut self, now: Instant, payload: &[u8]) {
        self.video_seq = self.video_seq.wrapping_add(1);
        self.sent_video += 1;
        let seq = self.video_seq;
        let ts = (now - self.started).as_millis() as u32 * 90;
        let ssrc = Ssrc::from(self.video_ssrc);
        if let Some(s) = self.rtc.direct_api().stream_tx(&ssrc) {
            let exts = ExtensionValues {
                mid: Some(Mid::from(MID_VIDEO)),
                ..Default::default()
            };
            s.write_rtp(
                RtpWrite::new(
                    Pt::new_with_value(PT_VP8),
                    u64::from(seq).into(),
                    ts,
                    now,
                    payload.to_vec(),
                )
                .marker(true)
                .ext_vals(exts),
            );
        }
    }

    /// Read the socket, advance str0m, send what it wants sent. Call often.
    pub fn drive(&mut self, now: Instant) {
        // str0m's contract: drain poll_output after *every* handle_input, or events are lost.
        while let Ok((n, from)) = self.socket.recv_from(&mut self.buf) {
            if n > 1 && (128..192).contains(&self.buf[0]) && !(192..224).contains(&self.buf[1]) {
                self.srtp_datagrams += 1;
            }
            if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, &self.buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(now, r));
                // str0m keeps one received packet (RTP mode) until the next poll_output:
                // poll after every input, or packets read in the same pass are lost.
                self.poll();
            }
        }
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        self.poll();
    }

    /// Drain str0m's output until it asks for a timeout.
    fn poll(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::debug!(error = %e, "str0m poll_output error");
                    break;
                }
            }
        }
        if !self.pending.is_empty() {
            for text in std::mem::take(&mut self.pending) {
                self.send_text(&text);
            }
            self.poll();
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(s) => self.ice_state = Some(s),
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                if let Some(text) = self.on_open.take() {
                    // Sent after this poll: the channel is usable once the event is out.
                    self.pending.push(text);
                }
            }
            Event::ChannelData(d) => self.texts.push(String::from_utf8_lossy(&d.data).into_owned()),
            Event::KeyframeRequest(_) => self.keyframe_requests += 1,
            Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb { estimate, .. }) => {
                self.rembs.push(estimate.as_u64())
            }
            Event::RtpPacket(p) => self.received.push(Received {
                ssrc: *p.header.ssrc,
                pt: *p.header.payload_type,
                seq: p.header.sequence_number,
                payload: p.payload.to_vec(),
                has_mid: p.header.ext_vals.mid.is_some(),
                twcc: p.header.ext_vals.transport_cc,
                audio_level: p.header.ext_vals.audio_level,
            }),
            _ => {}
        }
    }

    /// Received packets per SSRC.
    pub fn counts(&self) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for r in &self.received {
            *m.entry(r.ssrc).or_insert(0) += 1;
        }
        m
    }
}

/// Drive `clients` until `done` holds or `timeout` passes; returns whether `done` held.
pub fn drive_until(
    clients: &mut [&mut Client],
    timeout: Duration,
    mut done: impl FnMut(&[&mut Client]) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let now = Instant::now();
        for c in clients.iter_mut() {
            c.drive(now);
        }
        if done(clients) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The receiver constraints every test client sends when its channel opens.
pub const DEFAULT_CONSTRAINTS: &str =
    r#"{"colibriClass":"ReceiverVideoConstraints","lastN":-1,"defaultConstraints":{"maxHeight":720}}"#;

/// Length of the VP8 prefix of video payloads: a 4-byte payload descriptor (15-bit picture
/// ID, no temporal layers: the bridge projects it as a generic stream) and a 10-byte keyframe
/// header of 640x360.
pub const VP8_PREFIX: usize = 14;

fn vp8_keyframe_prefix(n: u32) -> [u8; VP8_PREFIX] {
    let pid = (n & 0x7FFF) as u16;
    [
        0x90, // X=1, S=1, PID=0
        0x80, // I=1
        0x80 | (pid >> 8) as u8,
        pid as u8,
        0x10,
        0x00,
        0x00, // frame tag: keyframe (P=0), show_frame
        0x9d,
        0x01,
        0x2a, // start code
        0x80,
        0x02, // width 640
        0x68,
        0x01, // height 360
    ]
}

/// A payload that names its sender, kind and sequence, so receivers can check bytes. Video
/// payloads start with a valid VP8 keyframe prefix ([`VP8_PREFIX`] bytes) so the bridge can
/// classify them; the tag, kind and sequence follow it.
pub fn payload(tag: u8, kind: u8, n: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    if kind == b'v' {
        p.extend_from_slice(&vp8_keyframe_prefix(n));
    }
    p.extend_from_slice(&[tag, kind]);
    p.extend_from_slice(&n.to_be_bytes());
    while p.len() < len {
        p.push((p.len() as u8).wrapping_mul(31).wrapping_add(tag));
    }
    p
}
