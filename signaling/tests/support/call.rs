//! A two-party call as Jicofo sets it up (two Colibri2 endpoints, session-accept with the
//! client's transport and sources) between two str0m clients, and a media thread that measures
//! what each receives. Used by `ops_prosody.rs` and `rolling_upgrade.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::control::LocalTransport;

use super::colibri::*;
use super::common::{self, payload, Client, PT_OPUS};
use super::TestFocus;

pub struct Peer {
    pub tag: u8,
    pub client: Client,
    /// The bridge's transport from the allocation answer.
    pub bridge: LocalTransport,
}

/// Allocates `meeting` (created in room `room`) with two endpoints `ep<tag>` on the bridge at
/// brewery occupant `occupant`, and connects two str0m clients (ICE, DTLS); returns them
/// connected. Panics (with `logs()`, the bridge's log) on any Colibri2 error or when the clients
/// do not connect within 20 s.
pub async fn two_party_call(
    focus: &TestFocus,
    occupant: &str,
    logs: impl Fn() -> String,
    meeting: &str,
    room: &str,
    tags: [u8; 2],
) -> Vec<Peer> {
    common::init_crypto();
    let now = Instant::now();
    let mut peers = Vec::new();
    for (i, tag) in tags.into_iter().enumerate() {
        let id = format!("ep{tag}");
        let create = (i == 0).then_some(room);
        let m = modify_at(
            focus,
            occupant,
            "allocate",
            conference_modify(meeting, create, &endpoint_create(&id)),
            &logs,
        )
        .await;
        let bridge = bridge_transport(&m);
        let mut client = Client::new(now, audio_ssrc(tag), video_ssrc(tag));
        let rt = client.remote_transport();
        let fp = rt.fingerprints.first().expect("str0m fingerprint").value.clone();
        let transport = client_transport(
            rt.ufrag.as_deref().unwrap_or_default(),
            rt.pwd.as_deref().unwrap_or_default(),
            &colon_hex(&fp),
            &rt.candidates,
        );
        let inner = format!(
            r#"<endpoint id="{id}" stats-id="{id}-s">{transport}<sources><media-source type="audio" id="{id}-a0"><source xmlns="{SSMA}" ssrc="{a}" name="{id}-a0"/></media-source><media-source type="video" id="{id}-v0"><source xmlns="{SSMA}" ssrc="{v}" name="{id}-v0" videoType="camera"/></media-source></sources></endpoint>"#,
            a = audio_ssrc(tag),
            v = video_ssrc(tag),
        );
        modify_at(
            focus,
            occupant,
            "session-accept",
            conference_modify(meeting, None, &inner),
            &logs,
        )
        .await;
        client.connect(&bridge);
        peers.push(Peer { tag, client, bridge });
    }
    let (a, b) = (tags[0], tags[1]);
    peers[0].client.expect_rx(audio_ssrc(b), video_ssrc(b));
    peers[1].client.expect_rx(audio_ssrc(a), video_ssrc(a));
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && !peers.iter().all(|p| p.client.connected) {
            for p in peers.iter_mut() {
                p.client.drive(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        peers
    })
    .await
    .expect("client thread");
    assert!(
        peers.iter().all(|p| p.client.connected),
        "{meeting} on {occupant}: clients did not connect within 20 s; log:\n{}",
        logs()
    );
    peers
}

/// Both clients send audio (20 ms) and video (100 ms) on a thread until stopped, and record
/// the longest time either went without receiving the other's media.
pub struct Media {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<MediaReport>,
}

#[derive(Debug)]
pub struct MediaReport {
    /// Longest stretch without a packet, per peer.
    pub max_gap: Vec<Duration>,
    /// RTP packets (audio and video) received, per peer.
    pub received: Vec<usize>,
    /// Opus packets received, per peer.
    pub audio_received: Vec<usize>,
    /// Audio packets each peer sent.
    pub sent_audio: u32,
}

impl Media {
    pub fn start(mut peers: Vec<Peer>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let (mut next_audio, mut next_video) = (start, start);
            let (mut n_audio, mut n_video) = (0u32, 0u32);
            let mut last_rx = vec![start; peers.len()];
            let mut max_gap = vec![Duration::ZERO; peers.len()];
            let mut received = vec![0usize; peers.len()];
            let mut audio_received = vec![0usize; peers.len()];
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next_audio {
                    for p in peers.iter_mut() {
                        p.client.send_audio(now, &payload(p.tag, b'a', n_audio, 80));
                    }
                    n_audio += 1;
                    next_audio += Duration::from_millis(20);
                }
                if now >= next_video {
                    for p in peers.iter_mut() {
                        p.client.send_video(now, &payload(p.tag, b'v', n_video, 600));
                    }
                    n_video += 1;
                    next_video += Duration::from_millis(100);
                }
                for (i, p) in peers.iter_mut().enumerate() {
                    p.client.drive(now);
                    let n = p.client.received.len();
                    if n > 0 {
                        received[i] += n;
                        audio_received[i] += p.client.received.iter().filter(|r| r.pt == PT_OPUS).count();
                        last_rx[i] = now;
                        p.client.received.clear();
                    } else {
                        max_gap[i] = max_gap[i].max(now - last_rx[i]);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            MediaReport {
                max_gap,
                received,
                audio_received,
                sent_audio: n_audio,
            }
        });
        Media { stop, thread }
    }

    pub fn finish(self) -> MediaReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("media thread")
    }
}

impl MediaReport {
    /// `Err` naming the peer when one went 1 s or more without media, or received less than
    /// 90 % of the audio packets the other sent.
    pub fn check(&self) -> Result<(), String> {
        for (i, gap) in self.max_gap.iter().enumerate() {
            if *gap >= Duration::from_secs(1) {
                return Err(format!("peer {i} went {gap:?} without media: {self:?}"));
            }
            if (self.audio_received[i] as u64) * 100 < u64::from(self.sent_audio) * 90 {
                return Err(format!("peer {i} received too little: {self:?}"));
            }
        }
        Ok(())
    }
}

/// Panics with `what` when [`MediaReport::check`] fails.
pub fn check_media(report: &MediaReport, what: &str) {
    if let Err(e) = report.check() {
        panic!("{what}: {e}");
    }
}
