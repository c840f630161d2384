//! One emulated participant: a str0m peer (ICE controlled, DTLS client, SRTP) on its own UDP
//! socket, sending Opus-shaped audio and VP8-shaped video and measuring what it receives.
//!
//! str0m shares no code with Palim's media stack, so every packet that arrives here proves the
//! bridge's ICE, DTLS and SRTP interoperate with an independent implementation.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use str0m::config::{DtlsCert, Fingerprint};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::focus::BridgeTransport;
use crate::stats::{EndpointReport, Payload, Receiver};

pub const AUDIO_PT: u8 = 111;
pub const VIDEO_PT: u8 = 100;
const AUDIO_MID: &str = "0";
const VIDEO_MID: &str = "1";

/// What an endpoint sends.
#[derive(Debug, Clone, Copy)]
pub struct SendProfile {
    /// Audio packets every 20 ms, this many payload bytes (Opus at ~32 kbps is ~80).
    pub audio_bytes: usize,
    /// Video bitrate in bits per second (0: no video).
    pub video_bps: u32,
    pub video_fps: u32,
}

impl Default for SendProfile {
    fn default() -> Self {
        Self {
            audio_bytes: 80,
            video_bps: 500_000,
            video_fps: 30,
        }
    }
}

/// The SSRCs an endpoint sends on: derived from its global index so every peer knows them.
pub fn ssrcs_of(index: u32) -> (u32, u32) {
    (0x1000_0000 + index * 2, 0x1000_0001 + index * 2)
}

/// The static facts an endpoint needs to run.
pub struct EndpointSetup {
    pub index: u32,
    pub socket: UdpSocket,
    pub bridge: BridgeTransport,
    /// Global indexes of the other senders in the conference.
    pub peers: Vec<u32>,
    pub profile: SendProfile,
    pub epoch: Instant,
}

/// The str0m side of a new endpoint, built before its transport goes to the bridge.
pub struct Peer {
    rtc: Rtc,
    pub fingerprint: String,
    pub ufrag: String,
    pub pwd: String,
}

impl Peer {
    /// Build a str0m peer in RTP mode with Opus 111 and VP8 100 (Jicofo's payload types).
    pub fn new(cert: &DtlsCert, now: Instant) -> Self {
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
}

/// Run one endpoint until `stop` flips, returning what it measured.
pub async fn run(
    mut peer: Peer,
    setup: EndpointSetup,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<EndpointReport> {
    let EndpointSetup {
        index,
        socket,
        bridge,
        peers,
        profile,
        epoch,
    } = setup;
    let local = socket.local_addr()?;
    let rtc = &mut peer.rtc;
    let start = Instant::now();

    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("local candidate: {e}"))?);
    let remote = bridge.pick_candidate(local)?;
    rtc.add_remote_candidate(Candidate::host(remote, "udp").map_err(|e| anyhow!("remote candidate: {e}"))?);
    {
        let mut api = rtc.direct_api();
        api.set_ice_lite(false);
        api.set_ice_controlling(false);
        api.set_remote_ice_credentials(str0m::IceCreds {
            ufrag: bridge.ufrag.clone(),
            pass: bridge.pwd.clone(),
        });
        api.set_remote_fingerprint(Fingerprint {
            hash_func: "sha-256".into(),
            bytes: bridge.fingerprint.clone(),
        });
        api.start_dtls(true).map_err(|e| anyhow!("start dtls: {e}"))?;
        let (amid, vmid) = (Mid::from(AUDIO_MID), Mid::from(VIDEO_MID));
        api.declare_media(amid, MediaKind::Audio);
        api.declare_media(vmid, MediaKind::Video);
        let (a, v) = ssrcs_of(index);
        api.declare_stream_tx(Ssrc::from(a), None, amid, None);
        if profile.video_bps > 0 {
            api.declare_stream_tx(Ssrc::from(v), None, vmid, None);
        }
        for &p in &peers {
            let (pa, pv) = ssrcs_of(p);
            api.expect_stream_rx(Ssrc::from(pa), None, amid, None);
            api.expect_stream_rx(Ssrc::from(pv), None, vmid, None);
        }
    }

    let mut receiver = Receiver::default();
    let mut report = EndpointReport {
        index,
        ..Default::default()
    };
    let mut buf = vec![0u8; 2048];
    let mut audio = Stream::new(index, ssrcs_of(index).0, 48_000);
    let mut video = Stream::new(index, ssrcs_of(index).1, 90_000);
    let mut next_audio = Instant::now();
    let mut next_frame = Instant::now();
    let frame_interval = Duration::from_secs(1) / profile.video_fps.max(1);
    let frame_bytes = (profile.video_bps / 8 / profile.video_fps.max(1)) as usize;
    let mut connected = false;
    let mut frame_no: u64 = 0;

    loop {
        // Drain everything str0m wants done, per its run-loop contract.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        connected = true;
                        report.connect_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
                        next_audio = Instant::now();
                        next_frame = Instant::now();
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => report.disconnects += 1,
                    Event::RtpPacket(p) => receiver.on_packet(&p.payload, *p.header.ssrc, epoch, Instant::now()),
                    _ => {}
                },
                Err(e) => return Err(anyhow!("endpoint {index}: {e}")),
            }
        };
        if !rtc.is_alive() {
            return Err(anyhow!("endpoint {index}: peer connection closed"));
        }
        let mut wake = timeout;
        if connected {
            wake = wake
                .min(next_audio)
                .min(if profile.video_bps > 0 { next_frame } else { wake });
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r.context("recv")?;
                if let Ok(contents) = buf[..n].try_into() {
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                    if let Err(e) = rtc.handle_input(input) {
                        tracing::debug!(index, error = %e, "input rejected");
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_audio {
                    let payload = Payload::encode(index, audio.seq as u32, epoch, now, profile.audio_bytes);
                    audio.write(rtc, AUDIO_PT, now, payload, false)?;
                    report.sent_packets += 1;
                    next_audio += Duration::from_millis(20);
                }
                if connected && profile.video_bps > 0 && now >= next_frame {
                    // A keyframe every 3 s is three times the size of a delta frame.
                    let key = frame_no % (3 * profile.video_fps as u64) == 0;
                    let size = if key { frame_bytes * 3 } else { frame_bytes }.max(200);
                    let packets = size.div_ceil(1100);
                    for i in 0..packets {
                        let mut payload = Payload::encode(index, video.seq as u32, epoch, now, size / packets);
                        // VP8 payload descriptor: S bit on the first packet of the frame.
                        payload[0] = if i == 0 { 0x10 } else { 0x00 };
                        video.write(rtc, VIDEO_PT, now, payload, i + 1 == packets)?;
                        report.sent_packets += 1;
                    }
                    video.ts += 90_000 / profile.video_fps;
                    frame_no += 1;
                    next_frame += frame_interval;
                }
                if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                    return Err(anyhow!("endpoint {index}: timeout handling: {e}"));
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    report.connected = connected;
    report.receive = receiver.finish();
    Ok(report)
}

struct Stream {
    ssrc: Ssrc,
    seq: u64,
    ts: u32,
    clock: u32,
}

impl Stream {
    fn new(index: u32, ssrc: u32, clock: u32) -> Self {
        Self {
            ssrc: Ssrc::from(ssrc),
            seq: 1000 + u64::from(index),
            ts: index.wrapping_mul(7919),
            clock,
        }
    }

    fn write(&mut self, rtc: &mut Rtc, pt: u8, now: Instant, payload: Vec<u8>, marker: bool) -> anyhow::Result<()> {
        let mut api = rtc.direct_api();
        let tx = api
            .stream_tx(&self.ssrc)
            .ok_or_else(|| anyhow!("no tx stream {}", self.ssrc))?;
        if self.clock == 48_000 {
            self.ts = self.ts.wrapping_add(960);
        }
        tx.write_rtp(RtpWrite::new(Pt::from(pt), self.seq.into(), self.ts, now, payload).marker(marker));
        self.seq += 1;
        Ok(())
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
