//! REMB toward a sender that negotiated REMB (`goog-remb`) but not transport-cc (media.md
//! §4.1): a real str0m client sends video through the driver, and str0m reports the bridge's
//! REMB packets (they name its SSRC) as `EgressBitrateEstimate::Remb`. A sender that also
//! negotiated transport-cc gets transport-cc feedback and no REMB.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{drive_until, payload, Client, PT_OPUS, PT_VP8};
use sfu::control::{MediaDescription, MediaKind, PayloadType, RtpExtension, SourceDescription};
use sfu::driver::start;
use sfu::{Command, ConferenceId, EndpointId, Reply, SfuConfig, Ssrc};

const CONF: ConferenceId = ConferenceId(1);
const URI_AST: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const URI_TCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Media as Jicofo would signal it for a client that negotiated `goog-remb` (and, if `tcc`,
/// transport-cc too), with str0m's extension ids (abs-send-time 2, transport-cc 3).
fn media(tcc: bool) -> Vec<MediaDescription> {
    let mut fb = vec![("goog-remb".to_owned(), None)];
    let mut ext = vec![RtpExtension {
        id: 2,
        uri: URI_AST.to_owned(),
    }];
    if tcc {
        fb.push(("transport-cc".to_owned(), None));
        ext.push(RtpExtension {
            id: 3,
            uri: URI_TCC.to_owned(),
        });
    }
    let pt = |pt, name: &str, clock_rate, feedback: Vec<(String, Option<String>)>| PayloadType {
        pt,
        name: name.to_owned(),
        clock_rate,
        apt: None,
        feedback,
    };
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000, vec![])],
            extensions: ext.clone(),
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![pt(PT_VP8, "VP8", 90_000, fb)],
            extensions: ext,
        },
    ]
}

/// One sender (REMB only, or REMB and transport-cc) sending ~800 kbit/s of video for 3 s;
/// returns the REMB values it received.
async fn rembs_for(tcc: bool) -> Vec<u64> {
    common::init_log();
    let sfu = start(SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        rng_seed: Some(7),
        ..SfuConfig::default()
    })
    .await
    .expect("start");
    let h = &sfu.handle;
    assert!(matches!(
        h.command(Command::CreateConference { conf: CONF }).await,
        Ok(Reply::ConferenceCreated { .. })
    ));
    let ep = EndpointId(1);
    let bridge = match h
        .command(Command::CreateEndpoint {
            conf: CONF,
            ep,
            ice_controlling: true,
            sctp: false,
            visitor: false,
            name: "ep1".into(),
            ssrc_rewriting: false,
        })
        .await
    {
        Ok(Reply::EndpointCreated(t)) => t,
        other => panic!("create endpoint: {other:?}"),
    };
    let (audio, video) = (0x1000_0001, 0x2000_0001);
    let mut client = Client::new(Instant::now(), audio, video);
    h.command(Command::SetRemoteTransport {
        conf: CONF,
        ep,
        transport: client.remote_transport(),
    })
    .await
    .expect("transport");
    h.command(Command::SetSources {
        conf: CONF,
        ep,
        sources: vec![SourceDescription {
            kind: MediaKind::Video,
            name: "ep1-v0".into(),
            ssrcs: vec![Ssrc(video)],
            groups: vec![],
            video_type: None,
        }],
    })
    .await
    .expect("sources");
    for m in media(tcc) {
        h.command(Command::SetMedia {
            conf: CONF,
            ep,
            media: m,
        })
        .await
        .expect("media");
    }
    client.connect(&bridge);
    let handle = sfu.handle.clone();
    let rembs = tokio::task::spawn_blocking(move || {
        assert!(
            drive_until(&mut [&mut client], Duration::from_secs(10), |c| c[0].connected),
            "client never connected"
        );
        // 100 packets/s of 1000 bytes for 3 s.
        let start = Instant::now();
        let mut next = start;
        let mut n = 0;
        while start.elapsed() < Duration::from_secs(3) {
            let now = Instant::now();
            if now >= next {
                client.send_video(now, &payload(1, b'v', n, 1000));
                n += 1;
                next += Duration::from_millis(10);
            }
            client.drive(now);
            std::thread::sleep(Duration::from_millis(1));
        }
        client.rembs
    })
    .await
    .expect("client thread");
    let stats = handle.stats().await;
    eprintln!(
        "bridge: {} RTP received, {} RTCP sent; REMBs {rembs:?}",
        stats.rtp_packets_received, stats.rtcp_packets_sent
    );
    rembs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remb_only_sender_receives_remb() {
    let rembs = rembs_for(false).await;
    // The estimate starts after 1 s of media, then one REMB per second (or on a drop).
    assert!(!rembs.is_empty(), "no REMB received");
    let last = *rembs.last().expect("non-empty");
    // ~800 kbit/s of payload arriving undisturbed: the estimate follows it, capped at 1.5 ×
    // incoming + 10 kbit/s (str0m adds headers, so allow some room).
    assert!((600_000..=1_600_000).contains(&last), "REMB values {rembs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_cc_sender_gets_no_remb() {
    let rembs = rembs_for(true).await;
    assert!(rembs.is_empty(), "REMB sent to a transport-cc sender: {rembs:?}");
}
