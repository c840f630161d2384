//! End to end over real UDP on loopback: the driver with its shared socket, and independent
//! str0m clients (ICE controlled, DTLS client) exchanging audio and video through the bridge.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{drive_until, payload, Client, PT_OPUS, PT_VP8};
use rand::{Rng, SeedableRng};
use sfu::control::{LocalTransport, MediaDescription, MediaKind, PayloadType, RtpExtension, SourceDescription};
use sfu::driver::{start, Sfu};
use sfu::{Command, ConferenceId, EndpointId, Event, Reply, SfuConfig, Ssrc};

const CONF: ConferenceId = ConferenceId(1);

fn config() -> SfuConfig {
    SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        rng_seed: Some(7),
        ..SfuConfig::default()
    }
}

fn sources(audio: u32, video: u32) -> Vec<SourceDescription> {
    vec![
        SourceDescription {
            kind: MediaKind::Audio,
            name: format!("{audio:x}-a0"),
            ssrcs: vec![Ssrc(audio)],
            groups: vec![],
            video_type: None,
        },
        SourceDescription {
            kind: MediaKind::Video,
            name: format!("{video:x}-v0"),
            ssrcs: vec![Ssrc(video)],
            groups: vec![],
            video_type: None,
        },
    ]
}

/// One participant: its id, client, and the bridge's transport for it.
struct Peer {
    tag: u8,
    client: Client,
    bridge: LocalTransport,
}

/// Create the conference and one endpoint per `tags` entry; signal transports and sources.
/// `corrupt` names endpoints whose signalled fingerprint gets one byte flipped.
async fn setup(sfu: &Sfu, tags: &[u8], corrupt: &[u8]) -> Vec<Peer> {
    setup_with(sfu, tags, corrupt, true).await
}

async fn setup_with(sfu: &Sfu, tags: &[u8], corrupt: &[u8], sctp: bool) -> Vec<Peer> {
    setup_full(sfu, tags, corrupt, sctp, &[], &[], &[]).await
}

/// Every endpoint opens the bridge channel (its client sends receiver constraints on open:
/// no video is forwarded before them).
async fn setup_full(
    sfu: &Sfu,
    tags: &[u8],
    corrupt: &[u8],
    sctp: bool,
    visitors: &[u8],
    lying: &[u8],
    passive: &[u8],
) -> Vec<Peer> {
    let h = &sfu.handle;
    match h.command(Command::CreateConference { conf: CONF }).await {
        Ok(Reply::ConferenceCreated { .. }) => {}
        other => panic!("create conference: {other:?}"),
    }
    let now = Instant::now();
    let mut peers = Vec::new();
    for &tag in tags {
        let ep = EndpointId(u32::from(tag));
        let bridge = match h
            .command(Command::CreateEndpoint {
                conf: CONF,
                ep,
                ice_controlling: true,
                sctp,
                visitor: visitors.contains(&tag),
                name: format!("ep{tag}"),
                ssrc_rewriting: false,
            })
            .await
        {
            Ok(Reply::EndpointCreated(t)) => t,
            other => panic!("create endpoint: {other:?}"),
        };
        assert_eq!(bridge.fingerprint_sha256.len(), 32 * 3 - 1);
        assert!(bridge.candidates.iter().any(|c| c.addr == sfu.local_addr));
        let mut client = Client::new(now, audio_ssrc(tag), video_ssrc(tag));
        client.dtls_active = !passive.contains(&tag);
        let mut transport = client.remote_transport();
        if corrupt.contains(&tag) {
            transport.fingerprints[0].value[0] ^= 0xFF;
        }
        h.command(Command::SetRemoteTransport {
            conf: CONF,
            ep,
            transport,
        })
        .await
        .expect("transport");
        h.command(Command::SetSources {
            conf: CONF,
            ep,
            // A lying endpoint signals SSRCs other than the ones it sends on.
            sources: if lying.contains(&tag) {
                sources(audio_ssrc(tag) + 0x100, video_ssrc(tag) + 0x100)
            } else {
                sources(audio_ssrc(tag), video_ssrc(tag))
            },
        })
        .await
        .expect("sources");
        for media in media_descriptions() {
            h.command(Command::SetMedia { conf: CONF, ep, media })
                .await
                .expect("media");
        }
        client.connect(&bridge);
        if sctp {
            client.open_data_channel();
        }
        peers.push(Peer { tag, client, bridge });
    }
    let all: Vec<u8> = tags.to_vec();
    for p in peers.iter_mut() {
        for &t in all.iter().filter(|t| **t != p.tag) {
            p.client.expect_rx(audio_ssrc(t), video_ssrc(t));
        }
    }
    peers
}

/// What Jicofo would signal: str0m's standard extension ids (audio level 1, abs-send-time 2,
/// transport-cc 3, MID 4, video orientation 13).
fn media_descriptions() -> Vec<MediaDescription> {
    let ext = |id, uri: &str| RtpExtension {
        id,
        uri: uri.to_owned(),
    };
    let common = [
        ext(2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        ext(
            3,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ),
        ext(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ];
    let pt = |pt, name: &str, clock_rate| PayloadType {
        pt,
        name: name.to_owned(),
        clock_rate,
        apt: None,
        feedback: vec![],
    };
    let mut audio_ext = common.to_vec();
    audio_ext.push(ext(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    let mut video_ext = common.to_vec();
    video_ext.push(ext(13, "urn:3gpp:video-orientation"));
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000)],
            extensions: audio_ext,
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![pt(PT_VP8, "VP8", 90_000)],
            extensions: video_ext,
        },
    ]
}

fn audio_ssrc(tag: u8) -> u32 {
    0x1000_0000 + u32::from(tag)
}
fn video_ssrc(tag: u8) -> u32 {
    0x2000_0000 + u32::from(tag)
}

/// Send audio every 20 ms and video every 33 ms from every client in `senders` for
/// `duration`, driving all clients; then drain for a moment.
fn exchange(peers: &mut [Peer], senders: &[u8], duration: Duration) {
    let start = Instant::now();
    let mut next_audio = start;
    let mut next_video = start;
    let mut n_audio = 0u32;
    let mut n_video = 0u32;
    while start.elapsed() < duration {
        let now = Instant::now();
        if now >= next_audio {
            for p in peers.iter_mut().filter(|p| senders.contains(&p.tag)) {
                p.client.send_audio(now, &payload(p.tag, b'a', n_audio, 80));
            }
            n_audio += 1;
            next_audio += Duration::from_millis(20);
        }
        if now >= next_video {
            for p in peers.iter_mut().filter(|p| senders.contains(&p.tag)) {
                p.client.send_video(now, &payload(p.tag, b'v', n_video, 900));
            }
            n_video += 1;
            next_video += Duration::from_millis(33);
        }
        for p in peers.iter_mut() {
            p.client.drive(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut clients: Vec<&mut Client> = peers.iter_mut().map(|p| &mut p.client).collect();
    drive_until(&mut clients, Duration::from_millis(500), |_| false);
}

/// Every packet a client received carries exactly the bytes its sender wrote, and came from
/// an SSRC of the sender named in the payload.
fn assert_payloads_intact(p: &Peer) {
    // The bridge numbers everything it sends to one receiver in one transport-wide sequence
    // (media.md §4.2), independent of what the senders numbered.
    let mut seqs: Vec<u16> = p.client.received.iter().filter_map(|r| r.twcc).collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "transport-wide sequence numbers repeat at {}", p.tag);
    if let (Some(lo), Some(hi)) = (seqs.first(), seqs.last()) {
        assert!(
            usize::from(hi - lo) < n + 64,
            "transport-wide sequence numbers not dense at {}: {lo}..{hi} for {n}",
            p.tag
        );
    }
    for r in &p.client.received {
        let at = if r.pt == PT_VP8 { common::VP8_PREFIX } else { 0 };
        assert!(r.payload.len() >= at + 6, "short payload {r:?}");
        let b = &r.payload[at..];
        let (tag, kind) = (b[0], b[1]);
        let n = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let (len, ssrc, pt) = match kind {
            b'a' => (80, audio_ssrc(tag), PT_OPUS),
            b'v' => (900, video_ssrc(tag), PT_VP8),
            _ => panic!("unexpected payload kind {kind} at {}", p.tag),
        };
        assert_ne!(tag, p.tag, "a client got its own media back");
        assert_eq!(r.ssrc, ssrc);
        assert_eq!(r.pt, pt);
        assert_eq!(r.payload, payload(tag, kind, n, len), "payload bytes differ");
        // media.md §9: the sender's MID is stripped, the signalled audio level is kept.
        assert!(!r.has_mid, "sender's MID extension forwarded: {r:?}");
        assert!(
            r.twcc.is_some(),
            "no transport-wide sequence number from the bridge: {r:?}"
        );
        if kind == b'a' {
            assert_eq!(r.audio_level, Some(-30), "audio level not forwarded");
        }
    }
}

fn wait_connected(peers: &mut [Peer], which: &[u8]) {
    let mut clients: Vec<&mut Client> = peers
        .iter_mut()
        .filter(|p| which.contains(&p.tag))
        .map(|p| &mut p.client)
        .collect();
    let ok = drive_until(&mut clients, Duration::from_secs(10), |cs| {
        cs.iter().all(|c| c.connected)
    });
    assert!(ok, "clients did not connect");
}

fn drain_events(sfu: &mut Sfu) -> Vec<Event> {
    let mut v = Vec::new();
    while let Ok(e) = sfu.events.try_recv() {
        v.push(e);
    }
    v
}

/// Two str0m clients complete ICE and DTLS against the real socket and each receives the
/// other's audio and video, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_media() {
    common::init_log();
    let mut sfu = start(config()).await.expect("start");
    let peers = setup(&sfu, &[1, 2], &[]).await;
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        exchange(&mut peers, &[1, 2], Duration::from_secs(5));
        peers
    })
    .await
    .expect("client thread");

    for p in &peers {
        let counts = p.client.counts();
        let other = &peers[2 - usize::from(p.tag)].client;
        let audio = counts.get(&audio_ssrc(3 - p.tag)).copied().unwrap_or(0);
        let video = counts.get(&video_ssrc(3 - p.tag)).copied().unwrap_or(0);
        // 5 s at 50 and 30 packets/s; a starved test thread sends fewer, so compare with what
        // was actually sent (loopback loses nothing unless the machine is overloaded).
        assert!(other.sent_audio > 150 && other.sent_video > 90, "sender starved");
        assert!(
            audio * 10 >= other.sent_audio * 9,
            "endpoint {} got {audio} of {} audio packets",
            p.tag,
            other.sent_audio
        );
        assert!(
            video * 10 >= other.sent_video * 9,
            "endpoint {} got {video} of {} video packets",
            p.tag,
            other.sent_video
        );
        assert_payloads_intact(p);
        assert!(p.bridge.ufrag.len() >= 4);
    }
    let events = drain_events(&mut sfu);
    for ep in [EndpointId(1), EndpointId(2)] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::DtlsConnected { ep: x, .. } if *x == ep)),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::IceConnected { ep: x, .. } if *x == ep)),
            "{events:?}"
        );
    }
    let stats = sfu.handle.stats().await;
    assert_eq!(stats.endpoints_connected, 2);
    assert_eq!(stats.dtls_failures, 0);
    assert!(stats.rtp_packets_received > 700, "{stats:?}");
    assert!(stats.rtp_packets_sent > 700, "{stats:?}");
    assert!(stats.rtcp_packets_sent > 0, "bridge sent no RR/SR: {stats:?}");
    sfu.handle.shutdown().await;
}

/// A wrong signalled fingerprint fails that endpoint's DTLS (event and counter) and it gets
/// no media, while the others keep exchanging media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_fails_only_that_endpoint() {
    common::init_log();
    let mut sfu = start(config()).await.expect("start");
    let peers = setup(&sfu, &[1, 2, 3], &[3]).await;
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        exchange(&mut peers, &[1, 2, 3], Duration::from_secs(3));
        peers
    })
    .await
    .expect("client thread");

    let events = drain_events(&mut sfu);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::DtlsFailed { ep: EndpointId(3), .. })),
        "no DtlsFailed for endpoint 3: {events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::DtlsConnected { ep: EndpointId(3), .. })));
    assert!(!events.iter().any(|e| matches!(
        e,
        Event::DtlsFailed {
            ep: EndpointId(1) | EndpointId(2),
            ..
        }
    )));
    let stats = sfu.handle.stats().await;
    assert_eq!(stats.dtls_failures, 1, "{stats:?}");
    assert_eq!(
        stats.dtls_fingerprint_mismatches, 1,
        "counted as a fingerprint mismatch: {stats:?}"
    );
    assert_eq!(stats.endpoints_connected, 2);
    for p in &peers {
        if p.tag == 3 {
            assert!(!p.client.connected, "client 3 should not have connected");
            assert!(p.client.received.is_empty(), "client 3 got media");
            continue;
        }
        let other = 3 - p.tag;
        let counts = p.client.counts();
        assert!(
            counts.get(&audio_ssrc(other)).copied().unwrap_or(0) > 100,
            "{}: {counts:?}",
            p.tag
        );
        assert!(
            counts.get(&video_ssrc(other)).copied().unwrap_or(0) > 60,
            "{}: {counts:?}",
            p.tag
        );
        assert!(!counts.contains_key(&audio_ssrc(3)));
        assert_payloads_intact(p);
    }
    sfu.handle.shutdown().await;
}

/// Thousands of random datagrams at the media port while two clients talk: no crash, each
/// one counted as a drop, and the media keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_are_counted_and_harmless() {
    common::init_log();
    const N: u64 = 3000;
    let mut sfu = start(config()).await.expect("start");
    let bridge_addr = sfu.local_addr;
    let peers = setup(&sfu, &[1, 2], &[]).await;
    let mut peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        exchange(&mut peers, &[1, 2], Duration::from_millis(500));
        peers
    })
    .await
    .expect("client thread");
    for p in peers.iter_mut() {
        p.client.received.clear();
    }
    let before = sfu.handle.stats().await;

    let fuzzer = tokio::task::spawn_blocking(move || fuzz(bridge_addr, N, 0x5EED));
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        exchange(&mut peers, &[1, 2], Duration::from_secs(3));
        peers
    })
    .await
    .expect("client thread");
    fuzzer.await.expect("fuzzer");

    let after = sfu.handle.stats().await;
    let dropped = after.drops_total() - before.drops_total();
    assert!(
        (N * 95 / 100..=N + 100).contains(&dropped),
        "dropped {dropped} of {N}: {:?}",
        after.drops
    );
    for p in &peers {
        let counts = p.client.counts();
        let other = 3 - p.tag;
        assert!(
            counts.get(&audio_ssrc(other)).copied().unwrap_or(0) > 100,
            "{}: {counts:?}",
            p.tag
        );
        assert!(
            counts.get(&video_ssrc(other)).copied().unwrap_or(0) > 60,
            "{}: {counts:?}",
            p.tag
        );
        assert_payloads_intact(p);
    }
    assert_eq!(after.endpoints_connected, 2);
    let _ = drain_events(&mut sfu);
    sfu.handle.shutdown().await;
}

/// The bridge channel: the client opens the data channel (DCEP), the bridge reports it and
/// its text messages, and text sent by the bridge (small and 20 KB) reaches the client.
/// Also PLIs from one client reach the other, rate limited to one per 250 ms per SSRC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_and_keyframe_requests() {
    common::init_log();
    let mut sfu = start(config()).await.expect("start");
    let peers = setup_with(&sfu, &[1, 2], &[], true).await;
    let mut peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        let mut clients: Vec<&mut Client> = peers.iter_mut().map(|p| &mut p.client).collect();
        assert!(
            drive_until(&mut clients, Duration::from_secs(5), |cs| cs
                .iter()
                .all(|c| c.channel.is_some())),
            "data channels did not open"
        );
        assert!(clients[0].send_text(r#"{"colibriClass":"EndpointStats","rtt":12}"#));
        // The bridge relays it to the others with `from` set to the sender's endpoint id.
        assert!(
            drive_until(&mut clients, Duration::from_secs(3), |cs| cs[1]
                .texts
                .iter()
                .any(|t| t.contains("EndpointStats")
                    && t.contains(r#""from":"ep1""#)
                    && t.contains(r#""rtt":12"#))),
            "EndpointStats not relayed: {:?}",
            clients[1].texts
        );
        assert!(
            !clients[0].texts.iter().any(|t| t.contains("EndpointStats")),
            "EndpointStats echoed to its sender"
        );
        // Not JSON, and an unknown class: refused without closing the channel.
        assert!(clients[0].send_text("{not json"));
        assert!(clients[0].send_text(r#"{"colibriClass":"NoSuchThing"}"#));
        assert!(clients[0].send_text(r#"{"colibriClass":"ClientHello"}"#));
        assert!(
            drive_until(&mut clients, Duration::from_secs(3), |cs| cs[0]
                .texts
                .iter()
                .any(|t| t.contains("ServerHello"))),
            "no ServerHello in reply to ClientHello: {:?}",
            clients[0].texts
        );
        peers
    })
    .await
    .expect("client thread");

    let events = drain_events(&mut sfu);
    for ep in [EndpointId(1), EndpointId(2)] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::DataChannelOpen { ep: x, .. } if *x == ep)),
            "{events:?}"
        );
    }
    let stats = sfu.handle.stats().await;
    for reason in ["channel_invalid_json", "channel_unknown_class"] {
        assert_eq!(
            stats.drops.iter().find(|(r, _)| *r == reason).map(|(_, n)| *n),
            Some(1),
            "{reason}: {:?}",
            stats.drops
        );
    }
    let hello = r#"{"colibriClass":"ServerHello"}"#.to_owned();
    let big: String = std::iter::repeat_n('x', 20_000).collect();
    for text in [hello.clone(), big.clone()] {
        sfu.handle
            .command(Command::SendDataChannelText {
                conf: CONF,
                ep: EndpointId(1),
                text,
            })
            .await
            .expect("send text");
    }

    let (peers, forwarded_pli) = tokio::task::spawn_blocking(move || {
        let mut clients: Vec<&mut Client> = peers.iter_mut().map(|p| &mut p.client).collect();
        assert!(
            drive_until(&mut clients, Duration::from_secs(5), |cs| cs[0]
                .texts
                .iter()
                .any(|t| t.len() == 20_000)),
            "texts not received"
        );
        drop(clients);
        // Client 2 asks for client 1's video every ~25 ms for 2 s while media flows.
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_secs(2) {
            let now = Instant::now();
            peers[0].client.send_video(now, &payload(1, b'v', n, 900));
            peers[1].client.request_keyframe(video_ssrc(1));
            n += 1;
            for p in peers.iter_mut() {
                p.client.drive(now);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let mut clients: Vec<&mut Client> = peers.iter_mut().map(|p| &mut p.client).collect();
        drive_until(&mut clients, Duration::from_millis(300), |_| false);
        let got = peers[0].client.keyframe_requests;
        (peers, got)
    })
    .await
    .expect("client thread");

    // The bridge's own messages (ForwardedSources, …) come too; ours arrive whole and in order.
    let ours: Vec<&String> = peers[0]
        .client
        .texts
        .iter()
        .filter(|t| **t == hello || **t == big)
        .collect();
    assert_eq!(ours, vec![&hello, &big], "texts sent through SendDataChannelText");
    let stats = sfu.handle.stats().await;
    assert!(
        forwarded_pli >= 3,
        "client 1 got {forwarded_pli} keyframe requests: {stats:?}"
    );
    assert!(forwarded_pli as u64 <= stats.keyframe_requests_forwarded);
    assert!(stats.keyframe_requests_forwarded <= 2000 / 250 + 2, "{stats:?}");
    assert!(stats.keyframe_requests_suppressed > 0, "{stats:?}");
    sfu.handle.shutdown().await;
}

/// A visitor receives media but its own media is not forwarded; media on SSRCs a sender
/// never signalled is dropped as `unknown_ssrc` and not forwarded either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_and_unknown_ssrc_media_not_forwarded() {
    common::init_log();
    let sfu = start(config()).await.expect("start");
    // 1: normal, 2: visitor, 3: signals other SSRCs than it sends.
    let peers = setup_full(&sfu, &[1, 2, 3], &[], true, &[2], &[3], &[]).await;
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2, 3]);
        exchange(&mut peers, &[1, 2, 3], Duration::from_secs(2));
        peers
    })
    .await
    .expect("client thread");

    let stats = sfu.handle.stats().await;
    let drops = |r: &str| stats.drops.iter().find(|(k, _)| *k == r).map_or(0, |(_, n)| *n);
    for p in &peers[1..] {
        let counts = p.client.counts();
        assert!(
            counts.get(&audio_ssrc(1)).copied().unwrap_or(0) > 50,
            "{}: {counts:?} {stats:?}",
            p.tag
        );
        assert!(
            counts.get(&video_ssrc(1)).copied().unwrap_or(0) > 30,
            "{}: {counts:?} {stats:?}",
            p.tag
        );
        assert_payloads_intact(p);
    }
    for p in &peers {
        let counts = p.client.counts();
        assert!(
            !counts.contains_key(&audio_ssrc(2)) && !counts.contains_key(&video_ssrc(2)),
            "visitor media forwarded to {}: {counts:?}",
            p.tag
        );
        assert!(
            !counts.contains_key(&audio_ssrc(3)) && !counts.contains_key(&video_ssrc(3)),
            "unsignalled SSRC forwarded to {}: {counts:?}",
            p.tag
        );
    }
    assert!(drops("visitor_media") > 80, "{stats:?}");
    assert!(drops("unknown_ssrc") > 80, "{stats:?}");
    sfu.handle.shutdown().await;
}

/// A client that answers `setup:passive` makes the bridge the DTLS client; media flows both
/// ways with an active client in the same conference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_as_dtls_client() {
    common::init_log();
    let mut sfu = start(config()).await.expect("start");
    let peers = setup_full(&sfu, &[1, 2], &[], true, &[], &[], &[2]).await;
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        exchange(&mut peers, &[1, 2], Duration::from_secs(2));
        peers
    })
    .await
    .expect("client thread");
    for p in &peers {
        let counts = p.client.counts();
        let other = 3 - p.tag;
        assert!(
            counts.get(&audio_ssrc(other)).copied().unwrap_or(0) > 70,
            "{}: {counts:?}",
            p.tag
        );
        assert!(
            counts.get(&video_ssrc(other)).copied().unwrap_or(0) > 40,
            "{}: {counts:?}",
            p.tag
        );
        assert_payloads_intact(p);
    }
    let events = drain_events(&mut sfu);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::DtlsConnected { .. }))
            .count(),
        2,
        "{events:?}"
    );
    sfu.handle.shutdown().await;
}

/// Seeded garbage: every RFC 7983 range (STUN-, DTLS-, RTP-, RTCP-looking and other first
/// bytes), random lengths, from one socket the bridge has never seen.
fn fuzz(to: SocketAddr, n: u64, seed: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let len = rng.random_range(1..buf.len());
        rng.fill(&mut buf[..len]);
        buf[0] = match i % 5 {
            0 => rng.random_range(0..4),
            1 => rng.random_range(20..64),
            2 => rng.random_range(128..192),
            3 => {
                if len > 1 {
                    buf[1] = rng.random_range(192..224);
                }
                0x80
            }
            _ => buf[0],
        };
        let _ = socket.send_to(&buf[..len], to);
        if i % 50 == 0 {
            // Stay within the socket buffers: this measures counting, not the kernel.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Colibri2 force-mute (media.md §6): after `SetForceMute { video: true }` nothing of the
/// endpoint's video reaches the other one while its audio still does; with `audio: true` its
/// audio (which carries the audio-level extension) stops too. Every dropped packet is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_mute_stops_the_muted_media_only() {
    common::init_log();
    let sfu = start(config()).await.expect("start");
    let peers = setup(&sfu, &[1, 2], &[]).await;
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        wait_connected(&mut peers, &[1, 2]);
        exchange(&mut peers, &[1], Duration::from_secs(2));
        peers
    })
    .await
    .expect("client thread");
    let before = peers[1].client.counts();
    let (audio0, video0) = (before[&audio_ssrc(1)], before[&video_ssrc(1)]);
    assert!(audio0 > 50 && video0 > 20, "media flows before the mute: {before:?}");
    let mute = |audio, video| Command::SetForceMute {
        conf: CONF,
        ep: EndpointId(1),
        audio,
        video,
    };
    sfu.handle.command(mute(false, true)).await.expect("force mute video");
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        exchange(&mut peers, &[1], Duration::from_secs(2));
        peers
    })
    .await
    .expect("client thread");
    let mid = peers[1].client.counts();
    assert!(mid[&audio_ssrc(1)] > audio0 + 50, "audio continues: {mid:?}");
    assert_eq!(mid[&video_ssrc(1)], video0, "video stopped: {mid:?}");
    sfu.handle.command(mute(true, true)).await.expect("force mute both");
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        exchange(&mut peers, &[1], Duration::from_secs(1));
        peers
    })
    .await
    .expect("client thread");
    let after = peers[1].client.counts();
    assert_eq!(after[&audio_ssrc(1)], mid[&audio_ssrc(1)], "audio stopped: {after:?}");
    let stats = sfu.handle.stats().await;
    let muted = stats
        .drops
        .iter()
        .find(|(r, _)| *r == "force_muted")
        .map_or(0, |(_, n)| *n);
    assert!(muted > 80, "force-muted packets counted: {:?}", stats.drops);
}
