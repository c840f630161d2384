//! SSRC-rewriting mode through the real driver on loopback (media.md §3.5, conformance check
//! 35), `ReceiverAudioSubscription` (§2.4) and `EndpointConnectivityStatusChangeEvent` /
//! `ConnectionStats` (§1.4, §2.4).
//!
//! Senders are plain str0m clients; the receiver has the `ssrc-rewriting` capability and is
//! driven here rather than by `Client::drive`, so that it declares a slot SSRC to str0m the
//! moment the `VideoSourcesMap` / `AudioSourcesMap` naming it is read, in arrival order with
//! the media (as lib-jitsi-meet adds the mapped source to its remote description). Every
//! event is logged in arrival order, so "the map comes before the media" is checked exactly.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Client, PT_OPUS, PT_VP8};
use serde_json::Value;
use sfu::control::{MediaDescription, MediaKind, PayloadType, RtpExtension, SourceDescription, VideoType};
use sfu::driver::{start, Sfu};
use sfu::{Command, ConferenceId, EndpointId, Reply, SfuConfig, Ssrc};
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output};

const CONF: ConferenceId = ConferenceId(3);
/// The receiver's tag (endpoint id and name `ep9`).
const RX: u8 = 9;

fn audio_ssrc(tag: u8) -> u32 {
    0x1000_0000 + u32::from(tag)
}
fn video_ssrc(tag: u8) -> u32 {
    0x2000_0000 + u32::from(tag)
}

/// str0m's standard extension ids (audio level 1, transport-cc 3, MID 4).
fn media_descriptions() -> Vec<MediaDescription> {
    let ext = |id, uri: &str| RtpExtension {
        id,
        uri: uri.to_owned(),
    };
    let pt = |pt, name: &str, clock_rate| PayloadType {
        pt,
        name: name.to_owned(),
        clock_rate,
        apt: None,
        // transport-cc: the bridge has a downlink estimate to report (ConnectionStats).
        feedback: vec![("transport-cc".to_owned(), None)],
    };
    let common = [
        ext(
            3,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ),
        ext(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ];
    let mut audio_ext = common.to_vec();
    audio_ext.push(ext(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000)],
            extensions: audio_ext,
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![pt(PT_VP8, "VP8", 90_000)],
            extensions: common.to_vec(),
        },
    ]
}

/// One VP8 frame (one packet) of sender `tag`: payload descriptor with a 15-bit picture ID,
/// a keyframe header (640x360) or a delta frame tag, then the tag and frame number.
fn vp8(tag: u8, n: u32, keyframe: bool) -> Vec<u8> {
    let pid = (n & 0x7FFF) as u16;
    let mut p = vec![0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8];
    if keyframe {
        p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        p.extend_from_slice(&[0x11, 0, 0]);
    }
    p.push(tag);
    p.extend_from_slice(&n.to_be_bytes());
    p.resize(300, 0x5A);
    p
}

/// The sender tag and keyframe flag of a packet built by [`vp8`].
fn vp8_tag(p: &[u8]) -> Option<(u8, bool)> {
    let keyframe = p.get(4)? & 0x01 == 0;
    let at = if keyframe { 14 } else { 7 };
    Some((*p.get(at)?, keyframe))
}

/// What the rewriting receiver saw, in arrival order.
#[derive(Debug, Clone)]
enum Seen {
    /// A slot SSRC mapped to `source` (owner `owner`).
    Map {
        video: bool,
        ssrc: u32,
        source: String,
        owner: String,
    },
    Rtp {
        ssrc: u32,
        seq: u16,
        pt: u8,
        payload: Vec<u8>,
    },
    Text(String),
}

/// The rewriting receiver: a [`Client`] driven by hand.
struct Rx {
    c: Client,
    next: Instant,
    buf: Vec<u8>,
    log: Vec<Seen>,
    pending: Vec<String>,
}

impl Rx {
    fn drive(&mut self, now: Instant) {
        while let Ok((n, from)) = self.c.socket.recv_from(&mut self.buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, from, self.c.local, &self.buf[..n]) {
                let _ = self.c.rtc.handle_input(Input::Receive(now, r));
                // Drain after every input (str0m keeps one packet until the next poll).
                self.poll();
            }
        }
        if now >= self.next {
            let _ = self.c.rtc.handle_input(Input::Timeout(now));
        }
        self.poll();
    }

    fn poll(&mut self) {
        loop {
            match self.c.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.c.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => break,
            }
        }
        if !self.pending.is_empty() {
            for t in std::mem::take(&mut self.pending) {
                self.c.send_text(&t);
            }
            self.poll();
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.c.connected = true,
            Event::ChannelOpen(id, _) => {
                self.c.channel = Some(id);
                if let Some(t) = self.c.on_open.take() {
                    self.pending.push(t);
                }
            }
            Event::ChannelData(d) => {
                let text = String::from_utf8_lossy(&d.data).into_owned();
                self.on_text(&text);
                self.log.push(Seen::Text(text));
            }
            Event::RtpPacket(p) => self.log.push(Seen::Rtp {
                ssrc: *p.header.ssrc,
                seq: p.header.sequence_number,
                pt: *p.header.payload_type,
                payload: p.payload.to_vec(),
            }),
            _ => {}
        }
    }

    /// A source map: accept the slot SSRCs (as lib-jitsi-meet adds them to its SDP).
    fn on_text(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let video = match v["colibriClass"].as_str() {
            Some("VideoSourcesMap") => true,
            Some("AudioSourcesMap") => false,
            _ => return,
        };
        for m in v["mappedSources"].as_array().into_iter().flatten() {
            let Some(ssrc) = m["ssrc"].as_u64().map(|s| s as u32) else {
                continue;
            };
            let rtx = m["rtx"].as_u64().map(|s| str0m::rtp::Ssrc::from(s as u32));
            let mid = Mid::from(if video { "1" } else { "0" });
            self.c
                .rtc
                .direct_api()
                .expect_stream_rx(str0m::rtp::Ssrc::from(ssrc), rtx, mid, None);
            self.log.push(Seen::Map {
                video,
                ssrc,
                source: m["source"].as_str().unwrap_or_default().to_owned(),
                owner: m["owner"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }

    fn texts_of(&self, class: &str) -> Vec<Value> {
        self.log
            .iter()
            .filter_map(|s| match s {
                Seen::Text(t) => serde_json::from_str::<Value>(t).ok(),
                _ => None,
            })
            .filter(|v| v["colibriClass"] == class)
            .collect()
    }
}

/// A conference of `senders` (audio + one VP8 stream each) and the rewriting receiver, all
/// connected, the receiver's bridge channel open (its `on_open` sent).
async fn setup(senders: &[u8], on_open: String) -> (Sfu, Vec<Client>, Rx) {
    common::init_log();
    let sfu = start(SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        rng_seed: Some(35),
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
    let mut rx = None;
    for &tag in senders.iter().chain(std::iter::once(&RX)) {
        let ep = EndpointId(u32::from(tag));
        let receiver = tag == RX;
        let bridge = match h
            .command(Command::CreateEndpoint {
                conf: CONF,
                ep,
                ice_controlling: true,
                sctp: receiver,
                visitor: false,
                name: format!("ep{tag}"),
                ssrc_rewriting: receiver,
            })
            .await
        {
            Ok(Reply::EndpointCreated(t)) => t,
            other => panic!("create endpoint: {other:?}"),
        };
        let mut client = Client::new(now, audio_ssrc(tag), video_ssrc(tag));
        h.command(Command::SetRemoteTransport {
            conf: CONF,
            ep,
            transport: client.remote_transport(),
        })
        .await
        .expect("transport");
        if !receiver {
            let sources = vec![
                SourceDescription {
                    kind: MediaKind::Audio,
                    name: format!("ep{tag}-a0"),
                    ssrcs: vec![Ssrc(audio_ssrc(tag))],
                    groups: vec![],
                    video_type: None,
                },
                SourceDescription {
                    kind: MediaKind::Video,
                    name: format!("ep{tag}-v0"),
                    ssrcs: vec![Ssrc(video_ssrc(tag))],
                    groups: vec![],
                    video_type: Some(VideoType::Camera),
                },
            ];
            h.command(Command::SetSources {
                conf: CONF,
                ep,
                sources,
            })
            .await
            .expect("sources");
        }
        for m in media_descriptions() {
            h.command(Command::SetMedia {
                conf: CONF,
                ep,
                media: m,
            })
            .await
            .expect("media");
        }
        client.connect(&bridge);
        if receiver {
            client.on_open = Some(on_open.clone());
            client.open_data_channel();
            rx = Some(Rx {
                c: client,
                next: now,
                buf: vec![0; 2048],
                log: Vec::new(),
                pending: Vec::new(),
            });
        } else {
            client.on_open = None;
            clients.push(client);
        }
    }
    let mut rx = rx.expect("receiver created");
    let ok = run(&mut clients, &mut rx, Duration::from_secs(10), |_, _, cs, rx| {
        (rx.c.connected && rx.c.channel.is_some() && cs.iter().all(|c| c.connected)).then_some(())
    });
    assert!(ok.is_some(), "clients did not connect");
    (sfu, clients, rx)
}

/// Drive everyone for up to `limit`, calling `step(elapsed, frame, senders, rx)` every 20 ms;
/// stops early with its value when it returns `Some`.
fn run<T>(
    senders: &mut [Client],
    rx: &mut Rx,
    limit: Duration,
    mut step: impl FnMut(Duration, u32, &mut [Client], &mut Rx) -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < limit {
        if let Some(v) = step(start.elapsed(), tick, senders, rx) {
            return Some(v);
        }
        tick += 1;
        let until = start + Duration::from_millis(20 * u64::from(tick));
        loop {
            let now = Instant::now();
            for c in senders.iter_mut() {
                c.drive(now);
            }
            rx.drive(now);
            if now >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    None
}

/// Per sender: frames sent, keyframe requests answered so far.
struct Media {
    tags: Vec<u8>,
    frames: Vec<u32>,
    requests: Vec<usize>,
    audio: Vec<u32>,
}

impl Media {
    /// For senders with these tags, in the order they are passed to [`Media::send`].
    fn new(tags: &[u8]) -> Self {
        let n = tags.len();
        Self {
            tags: tags.to_vec(),
            frames: vec![0; n],
            requests: vec![0; n],
            audio: vec![0; n],
        }
    }

    /// Audio every tick (20 ms) from `active` senders, video every other tick; a keyframe
    /// every 60 frames or after a keyframe request.
    fn send(&mut self, now: Instant, tick: u32, senders: &mut [Client], active: &[bool]) {
        for (i, c) in senders.iter_mut().enumerate() {
            if !active[i] {
                continue;
            }
            let tag = self.tags[i];
            self.audio[i] += 1;
            c.send_audio(now, &common::payload(tag, b'a', self.audio[i], 60));
            if tick.is_multiple_of(2) {
                let n = self.frames[i];
                let requested = c.keyframe_requests > self.requests[i];
                self.requests[i] = c.keyframe_requests;
                let key = n.is_multiple_of(60) || requested;
                c.send_video_on(
                    now,
                    video_ssrc(tag),
                    7000u16.wrapping_add(n as u16),
                    n * 3000,
                    &vp8(tag, n, key),
                );
                self.frames[i] += 1;
            }
        }
    }
}

fn constraints(selected: &str) -> String {
    format!(
        r#"{{"colibriClass":"ReceiverVideoConstraints","lastN":1,"selectedSources":["{selected}"],"defaultConstraints":{{"maxHeight":720}}}}"#
    )
}

/// A receiver with the capability in a conference of four senders gets every source only on
/// slot SSRCs, each slot announced before its first packet, and with lastN 1 and a changing
/// selection sees one continuous stream per slot and only the selected source's video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_before_media_and_a_continuous_stream_per_slot() {
    let tags = [1u8, 2, 3, 4];
    let (sfu, senders, rx) = setup(&tags, constraints("ep1-v0")).await;
    let (senders, rx, marks) = tokio::task::spawn_blocking(move || {
        let (mut senders, mut rx) = (senders, rx);
        let mut media = Media::new(&tags);
        // 2 s per selection: ep1, ep2, ep3, then ep1 again.
        let phases = ["ep1-v0", "ep2-v0", "ep3-v0", "ep1-v0"];
        let mut phase = 0;
        let mut marks = vec![0usize];
        run(&mut senders, &mut rx, Duration::from_secs(8), |t, tick, cs, rx| {
            let p = (t.as_millis() / 2000) as usize;
            if p != phase && p < phases.len() {
                phase = p;
                marks.push(rx.log.len());
                assert!(rx.c.send_text(&constraints(phases[p])));
            }
            media.send(Instant::now(), tick, cs, &[true; 4]);
            None::<()>
        });
        marks.push(rx.log.len());
        (senders, rx, marks)
    })
    .await
    .expect("client thread");
    drop(senders);

    let own: HashSet<u32> = tags.iter().flat_map(|t| [audio_ssrc(*t), video_ssrc(*t)]).collect();
    // slot SSRC -> (video, source) as announced so far.
    let mut mapped: HashMap<u32, (bool, String)> = HashMap::new();
    let mut last_seq: HashMap<u32, u16> = HashMap::new();
    let mut video_slots: HashMap<String, HashSet<u32>> = HashMap::new();
    let mut audio_from: HashSet<u8> = HashSet::new();
    let mut packets = 0;
    for s in &rx.log {
        match s {
            Seen::Map {
                video,
                ssrc,
                source,
                owner,
            } => {
                assert!(!own.contains(ssrc), "a slot SSRC equals a sender's SSRC");
                assert!(source.starts_with(owner.as_str()), "{source} owned by {owner}");
                mapped.insert(*ssrc, (*video, source.clone()));
            }
            Seen::Rtp { ssrc, seq, pt, payload } => {
                packets += 1;
                assert!(!own.contains(ssrc), "media on a sender's own SSRC {ssrc:#x}");
                let (video, source) = mapped
                    .get(ssrc)
                    .unwrap_or_else(|| panic!("RTP on {ssrc:#x} before any map named it"));
                // What the packet carries is what the map says the slot carries.
                let tag = if *video {
                    assert_eq!(*pt, PT_VP8);
                    vp8_tag(payload).expect("VP8 payload as sent").0
                } else {
                    assert_eq!(*pt, PT_OPUS);
                    payload[0]
                };
                let expected = format!("ep{tag}-{}0", if *video { "v" } else { "a" });
                assert_eq!(&expected, source, "slot {ssrc:#x} carries another source than mapped");
                if *video {
                    video_slots.entry(source.clone()).or_default().insert(*ssrc);
                } else {
                    audio_from.insert(tag);
                }
                // Loopback loses nothing: each slot is one continuous stream.
                if let Some(prev) = last_seq.insert(*ssrc, *seq) {
                    assert_eq!(*seq, prev.wrapping_add(1), "slot {ssrc:#x}: sequence gap or repeat");
                }
            }
            Seen::Text(_) => {}
        }
    }
    eprintln!(
        "{packets} packets, {} slots used, video sources {video_slots:?}",
        last_seq.len()
    );
    assert_eq!(
        audio_from,
        tags.iter().copied().collect::<HashSet<u8>>(),
        "every sender's audio arrives"
    );
    // Each selected source's video came, on a slot of its own; ep4 was never selected.
    for s in ["ep1-v0", "ep2-v0", "ep3-v0"] {
        assert_eq!(video_slots.get(s).map(|v| v.len()), Some(1), "{s}: {video_slots:?}");
    }
    assert!(
        !video_slots.contains_key("ep4-v0"),
        "lastN 1 forwarded an unselected source"
    );
    // With lastN 1, once a phase settles only its selected source's video arrives.
    let phases = ["ep1-v0", "ep2-v0", "ep3-v0", "ep1-v0"];
    for (p, want) in phases.iter().enumerate() {
        let window = &rx.log[marks[p]..marks[p + 1]];
        let videos: Vec<&str> = window
            .iter()
            .filter_map(|s| match s {
                Seen::Rtp { ssrc, .. } => mapped.get(ssrc).filter(|m| m.0).map(|m| m.1.as_str()),
                _ => None,
            })
            .collect();
        let tail = &videos[videos.len().saturating_sub(20)..];
        assert!(
            tail.len() >= 10 && tail.iter().all(|s| s == want),
            "phase {p}: wanted {want}, the end of the phase had {tail:?}"
        );
    }
    // Video entries carry the slot's RTX SSRC and the source's video type (upper-case).
    for m in rx.texts_of("VideoSourcesMap") {
        for e in m["mappedSources"].as_array().into_iter().flatten() {
            assert_eq!(e["videoType"], "CAMERA", "{e}");
            assert!(e["rtx"].as_u64().is_some_and(|r| Some(r) != e["ssrc"].as_u64()), "{e}");
        }
    }
    let stats = sfu.handle.stats().await;
    eprintln!("{stats:?}");
}

/// `ReceiverAudioSubscription` None: no audio at all; Include one source: only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_subscription_none_then_include_one() {
    let tags = [1u8, 2, 3];
    let none = r#"{"colibriClass":"ReceiverAudioSubscription","mode":"None"}"#;
    let (_sfu, senders, rx) = setup(&tags, none.to_owned()).await;
    let rx = tokio::task::spawn_blocking(move || {
        let (mut senders, mut rx) = (senders, rx);
        let mut media = Media::new(&tags);
        let mut mark = None;
        run(&mut senders, &mut rx, Duration::from_secs(4), |t, tick, cs, rx| {
            if t >= Duration::from_secs(2) && mark.is_none() {
                let include =
                    r#"{"colibriClass":"ReceiverAudioSubscription","all":false,"include":["ep2-a0"],"exclude":[]}"#;
                assert!(rx.c.send_text(include));
                mark = Some(rx.log.len());
            }
            media.send(Instant::now(), tick, cs, &[true; 3]);
            None::<()>
        });
        (rx, mark.expect("switched"))
    })
    .await
    .expect("client thread");
    let (rx, mark) = rx;
    let audio_tags = |range: std::ops::Range<usize>| -> Vec<u8> {
        rx.log[range]
            .iter()
            .filter_map(|s| match s {
                Seen::Rtp { pt, payload, .. } if *pt == PT_OPUS => payload.first().copied(),
                _ => None,
            })
            .collect()
    };
    let before = audio_tags(0..mark);
    assert!(before.is_empty(), "audio arrived while subscribed to none: {before:?}");
    let after = audio_tags(mark..rx.log.len());
    assert!(
        after.len() > 40,
        "only {} audio packets after including ep2-a0",
        after.len()
    );
    assert!(after.iter().all(|t| *t == 2), "audio other than ep2-a0 arrived");
    // Its slot was announced: one audio map entry, for ep2-a0 only.
    let maps = rx.texts_of("AudioSourcesMap");
    let sources: Vec<&str> = maps
        .iter()
        .flat_map(|m| m["mappedSources"].as_array().into_iter().flatten())
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert_eq!(sources, ["ep2-a0"]);
}

/// A sender that goes quiet (nothing at all from it) is announced inactive after 8 s, and
/// active again when it resumes; the receiver also gets its downlink estimate
/// (`ConnectionStats`) every 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_event_when_a_sender_goes_quiet() {
    let tags = [1u8, 2];
    let (_sfu, senders, rx) = setup(&tags, constraints("ep1-v0")).await;
    let rx = tokio::task::spawn_blocking(move || {
        let (mut senders, mut rx) = (senders, rx);
        let mut media = Media::new(&[2]);
        let mut resumed = Media::new(&[1]);
        let mut media2 = Media::new(&[1, 2]);
        let event = |rx: &Rx, active: &str| {
            rx.texts_of("EndpointConnectivityStatusChangeEvent")
                .iter()
                .any(|v| v["endpoint"] == "ep1" && v["active"] == active)
        };
        // Sender 1 is not driven at all (as if its network went away); sender 2 goes on.
        let (quiet, rest) = senders.split_at_mut(1);
        let went = run(rest, &mut rx, Duration::from_secs(12), |t, tick, cs, rx| {
            media.send(Instant::now(), tick, cs, &[true]);
            event(rx, "false").then_some(t)
        });
        let went = went.expect("no inactive event for the quiet sender");
        assert!(went >= Duration::from_secs(7), "inactive after only {went:?}");
        assert!(!event(&rx, "true"), "active again before it resumed");
        let back = run(quiet, &mut rx, Duration::from_secs(4), |_, tick, cs, rx| {
            resumed.send(Instant::now(), tick, cs, &[true]);
            event(rx, "true").then_some(())
        });
        assert!(back.is_some(), "no active event after the sender resumed");
        // ConnectionStats come every 10 s from the endpoint's creation.
        run(&mut senders, &mut rx, Duration::from_secs(4), |_, tick, cs, rx| {
            media2.send(Instant::now(), tick, cs, &[true, true]);
            (!rx.texts_of("ConnectionStats").is_empty()).then_some(())
        });
        rx
    })
    .await
    .expect("client thread");
    let stats = rx.texts_of("ConnectionStats");
    assert!(!stats.is_empty(), "no ConnectionStats within 10 s");
    assert!(stats
        .iter()
        .all(|v| v["estimatedDownlinkBandwidth"].as_u64().is_some_and(|b| b > 0)));
}
