//! Simulcast through the real driver on loopback (media.md §3, conformance checks 25, 26, 37):
//! one str0m sender with three VP8 encodings (180p/360p/720p, temporal layers L1T3), two str0m
//! receivers asking different heights over the bridge channel. Each receiver gets one
//! continuous stream on the source's primary SSRC — the encoding its constraints allow — and a
//! receiver that changes its constraints is switched at a keyframe, with sequence numbers and
//! picture IDs continuing without a gap.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{drive_until, Client, PT_OPUS, PT_VP8};
use sfu::control::{
    GroupSemantics, MediaDescription, MediaKind, PayloadType, RtpExtension, SourceDescription, SsrcGroup, VideoType,
};
use sfu::driver::start;
use sfu::{Command, ConferenceId, EndpointId, Reply, SfuConfig, Ssrc};

const CONF: ConferenceId = ConferenceId(1);
const SENDER: u8 = 1;
/// The sender's three encodings, lowest first (the SIM group's order).
const SIM: [u32; 3] = [0x3000_0001, 0x3000_0002, 0x3000_0003];
const HEIGHTS: [u16; 3] = [180, 360, 720];
/// L1T3: the temporal id of frame i is PATTERN[i % 4].
const PATTERN: [u8; 4] = [0, 2, 1, 2];

fn constraints(max_height: u32) -> String {
    format!(
        r#"{{"colibriClass":"ReceiverVideoConstraints","lastN":-1,"defaultConstraints":{{"maxHeight":{max_height}}}}}"#
    )
}

fn media() -> Vec<MediaDescription> {
    let pt = |pt, name: &str, clock_rate| PayloadType {
        pt,
        name: name.into(),
        clock_rate,
        apt: None,
        feedback: vec![],
    };
    let mid = RtpExtension {
        id: 4,
        uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
    };
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000)],
            extensions: vec![mid.clone()],
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![pt(PT_VP8, "VP8", 90_000)],
            extensions: vec![mid],
        },
    ]
}

/// One frame (one packet) of encoding `e`: a VP8 payload descriptor with 15-bit picture ID,
/// TL0PICIDX, TID and Y; a keyframe header with the encoding's size, or a delta frame tag;
/// then the encoding index and frame number, for the receiver to check.
fn frame(e: usize, n: u32, keyframe: bool, tl0: u8) -> Vec<u8> {
    let tid = PATTERN[(n % 4) as usize];
    let pid = (n & 0x7FFF) as u16;
    let mut p = vec![
        0x90, // X, S, PID 0
        0xE0, // I, L, T
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        (tid << 6) | if tid > 0 { 0x20 } else { 0 },
    ];
    if keyframe {
        let w = HEIGHTS[e] * 16 / 9;
        p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&w.to_le_bytes());
        p.extend_from_slice(&HEIGHTS[e].to_le_bytes());
    } else {
        p.extend_from_slice(&[0x11, 0, 0]);
    }
    p.push(e as u8);
    p.extend_from_slice(&n.to_be_bytes());
    p.resize(p.len() + 200 * (e + 1), 0x5A);
    p
}

/// What a receiver saw of one packet: (seq, picture ID, encoding, frame number, keyframe).
fn decode(payload: &[u8]) -> Option<(u16, u8, u32, bool)> {
    let pid = u16::from_be_bytes([payload.get(2)? & 0x7F, *payload.get(3)?]);
    let keyframe = payload.get(6)? & 0x01 == 0;
    let at = if keyframe { 6 + 10 } else { 6 + 3 };
    let e = *payload.get(at)?;
    let n = u32::from_be_bytes(payload.get(at + 1..at + 5)?.try_into().ok()?);
    Some((pid, e, n, keyframe))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_their_encoding_and_switch_at_keyframes() {
    common::init_log();
    let sfu = start(SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        rng_seed: Some(11),
        ..SfuConfig::default()
    })
    .await
    .expect("start");
    let h = &sfu.handle;
    assert!(matches!(
        h.command(Command::CreateConference { conf: CONF }).await,
        Ok(Reply::ConferenceCreated { .. })
    ));
    let now = Instant::now();
    let mut clients = Vec::new();
    // Endpoint 1 sends simulcast; 2 asks for 180p, 3 for 720p.
    for (tag, height) in [(SENDER, 720), (2u8, 180), (3u8, 720)] {
        let ep = EndpointId(u32::from(tag));
        let bridge = match h
            .command(Command::CreateEndpoint {
                conf: CONF,
                ep,
                ice_controlling: true,
                sctp: true,
                visitor: false,
                name: format!("ep{tag}"),
                ssrc_rewriting: false,
            })
            .await
        {
            Ok(Reply::EndpointCreated(t)) => t,
            other => panic!("create endpoint: {other:?}"),
        };
        let audio = 0x1000_0000 + u32::from(tag);
        let video = 0x2000_0000 + u32::from(tag);
        let mut client = Client::new(now, audio, video);
        if tag == SENDER {
            // Each encoding on its own rid'd stream (the rid-less one stays unused).
            client.add_video_ssrcs(&SIM);
        } else {
            client.expect_video_rx(SIM[0]);
        }
        client.on_open = Some(constraints(height));
        h.command(Command::SetRemoteTransport {
            conf: CONF,
            ep,
            transport: client.remote_transport(),
        })
        .await
        .expect("transport");
        let video_source = if tag == SENDER {
            SourceDescription {
                kind: MediaKind::Video,
                name: "ep1-v0".into(),
                ssrcs: SIM.iter().map(|s| Ssrc(*s)).collect(),
                groups: vec![SsrcGroup {
                    semantics: GroupSemantics::Sim,
                    ssrcs: SIM.iter().map(|s| Ssrc(*s)).collect(),
                }],
                video_type: Some(VideoType::Camera),
            }
        } else {
            SourceDescription {
                kind: MediaKind::Video,
                name: format!("ep{tag}-v0"),
                ssrcs: vec![Ssrc(video)],
                groups: vec![],
                video_type: Some(VideoType::Camera),
            }
        };
        let audio_source = SourceDescription {
            kind: MediaKind::Audio,
            name: format!("ep{tag}-a0"),
            ssrcs: vec![Ssrc(audio)],
            groups: vec![],
            video_type: None,
        };
        h.command(Command::SetSources {
            conf: CONF,
            ep,
            sources: vec![audio_source, video_source],
        })
        .await
        .expect("sources");
        for m in media() {
            h.command(Command::SetMedia {
                conf: CONF,
                ep,
                media: m,
            })
            .await
            .expect("media");
        }
        client.connect(&bridge);
        client.open_data_channel();
        clients.push(client);
    }

    let clients = tokio::task::spawn_blocking(move || {
        let mut clients = clients;
        {
            let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
            assert!(
                drive_until(&mut refs, Duration::from_secs(10), |cs| cs
                    .iter()
                    .all(|c| c.connected && c.channel.is_some())),
                "clients did not connect"
            );
        }
        // 30 frames/s per encoding; keyframes every 2 s (staggered) and on request.
        // Phases: receiver 3 asks 720 (4 s), then 180 (3 s), then 720 again (4 s).
        let start = Instant::now();
        let mut n: u32 = 0;
        let mut seq = [100u16, 20_000, 40_000];
        let mut tl0 = [0u8; 3];
        let mut requests_seen = 0;
        let mut phase = 0;
        let mut marks = Vec::new();
        while start.elapsed() < Duration::from_secs(11) {
            let t = start.elapsed();
            if phase == 0 && t >= Duration::from_secs(4) {
                phase = 1;
                assert!(clients[2].send_text(&constraints(180)));
                marks.push(clients[2].received.len());
            } else if phase == 1 && t >= Duration::from_secs(7) {
                phase = 2;
                assert!(clients[2].send_text(&constraints(720)));
                marks.push(clients[2].received.len());
            }
            let now = Instant::now();
            let requested = clients[0].keyframe_requests > requests_seen;
            requests_seen = clients[0].keyframe_requests;
            for e in 0..3 {
                let periodic = (n + 20 * e as u32).is_multiple_of(60);
                let keyframe = n.is_multiple_of(4) && (periodic || requested || n == 0);
                if PATTERN[(n % 4) as usize] == 0 {
                    tl0[e] = tl0[e].wrapping_add(1);
                }
                seq[e] = seq[e].wrapping_add(1);
                let payload = frame(e, n, keyframe, tl0[e]);
                clients[0].send_video_on(now, SIM[e], seq[e], n * 3000, &payload);
            }
            n += 1;
            let until = start + Duration::from_millis(33 * u64::from(n));
            while Instant::now() < until {
                let now = Instant::now();
                for c in clients.iter_mut() {
                    c.drive(now);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        drive_until(&mut refs, Duration::from_millis(300), |_| false);
        (clients, marks)
    })
    .await
    .expect("client thread");
    let (clients, marks) = clients;
    for (i, c) in clients.iter().enumerate() {
        eprintln!("client {i}: received {} packets, texts {:?}", c.received.len(), c.texts);
    }

    for (i, c) in clients.iter().enumerate().skip(1) {
        let video: Vec<_> = c.received.iter().filter(|r| r.pt == PT_VP8).collect();
        assert!(video.len() > 100, "receiver {i} got {} video packets", video.len());
        // One stream, on the source's primary SSRC, whatever encoding it carries.
        assert!(
            video.iter().all(|r| r.ssrc == SIM[0]),
            "receiver {i}: SSRCs other than the primary"
        );
        // Loopback loses nothing: sequence numbers and picture IDs continue by exactly one,
        // across dropped temporal layers and encoding switches alike.
        let mut prev: Option<(u16, u16)> = None;
        for r in &video {
            let (pid, _, _, _) = decode(&r.payload).expect("VP8 payload as sent");
            if let Some((s, p)) = prev {
                assert_eq!(r.seq, s.wrapping_add(1), "receiver {i}: sequence gap");
                assert_eq!(pid, (p + 1) & 0x7FFF, "receiver {i}: picture ID gap");
            }
            prev = Some((r.seq, pid));
        }
        // The first packet of the stream and of every encoding switch is a keyframe.
        let mut last_e = None;
        for r in &video {
            let (_, e, _, key) = decode(&r.payload).expect("decoded");
            if last_e != Some(e) {
                assert!(key, "receiver {i}: switched to encoding {e} on a delta frame");
            }
            last_e = Some(e);
        }
    }
    let encodings = |c: &Client, range: std::ops::Range<usize>| -> Vec<u8> {
        let mut v: Vec<u8> = c.received[range]
            .iter()
            .filter(|r| r.pt == PT_VP8)
            .filter_map(|r| decode(&r.payload).map(|d| d.1))
            .collect();
        v.dedup();
        v
    };
    // Receiver 2 (180p) only ever gets encoding 0, at every temporal layer.
    let r2 = &clients[1];
    assert_eq!(encodings(r2, 0..r2.received.len()), vec![0], "180p receiver");
    // Receiver 3 (720p) ends each phase on the encoding its constraints allow.
    let r3 = &clients[2];
    let (m1, m2) = (marks[0], marks[1]);
    let last = |v: Vec<u8>| v.last().copied();
    assert_eq!(last(encodings(r3, 0..m1)), Some(2), "720p receiver before the switch");
    assert_eq!(last(encodings(r3, m1..m2)), Some(0), "after asking 180p");
    assert_eq!(
        last(encodings(r3, m2..r3.received.len())),
        Some(2),
        "after asking 720p again"
    );
    let stats = sfu.handle.stats().await;
    assert!(
        stats.projection_drops > 0,
        "the unwanted encodings were dropped: {stats:?}"
    );
}
