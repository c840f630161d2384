//! Robustness cases (robustness.md §4) checked sans-IO against the [`Shard`]; the rest of
//! the cases and where each is tested: docs/security.md §4, "Cases 13–41".

use super::tests::{connect_plain, create, drops, peer_addr, shard, vp8_call, vp8_rtp};
use super::*;

const LOCAL: &str = "127.0.0.1:10000";

fn local() -> SocketAddr {
    LOCAL.parse().expect("literal address")
}

/// RTCP packets `s` sends to `to` whose first packet has type `pt` and format `fmt`.
fn rtcp_to(s: &mut Shard, to: SocketAddr, pt: u8, fmt: u8) -> usize {
    let mut n = 0;
    while let Some(tx) = s.poll_transmit() {
        if tx.remote == to
            && demux::classify(&tx.data) == Kind::Rtcp
            && tx.data.len() >= 2
            && tx.data[1] == pt
            && tx.data[0] & 0x1f == fmt
        {
            n += 1;
        }
    }
    n
}

/// Case 28: PLI, FIR and NACK from an endpoint about a stream it does not receive are
/// ignored and counted; the same requests from the endpoint that does receive it are served.
/// (REMB is the endpoint's own downlink estimate whatever SSRCs it names: it only caps what
/// the bridge sends to that endpoint, so it is not checked here.)
#[test]
fn feedback_for_streams_not_received_is_ignored_and_counted() {
    let (mut s, now) = shard(SfuConfig {
        rng_seed: Some(28),
        ..SfuConfig::default()
    });
    // Endpoint 1 sends VP8 SSRC 200; endpoint 4 receives it; endpoint 5 is in the
    // conference, connected, with VP8 negotiated, but has asked for nothing.
    vp8_call(&mut s, now, false);
    assert!(create(&mut s, now, 1, 5).is_ok());
    let vp8 = crate::control::MediaDescription {
        kind: crate::control::MediaKind::Video,
        payload_types: vec![crate::control::PayloadType {
            pt: 100,
            name: "VP8".into(),
            clock_rate: 90_000,
            apt: None,
            feedback: vec![],
        }],
        extensions: vec![],
    };
    let cmd = Command::SetMedia {
        conf: ConferenceId(1),
        ep: EndpointId(5),
        media: vp8,
    };
    assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
    connect_plain(&mut s, ConferenceId(1), 5);

    let mut t = now;
    let mut to_receiver = 0;
    for n in 0..30u16 {
        t += Duration::from_millis(33);
        s.handle_datagram(
            t,
            local(),
            peer_addr(1),
            vp8_rtp(200, 1000 + n, u32::from(n) * 3000, n, n % 15 == 0),
        );
        s.handle_timeout(t);
        while let Some(tx) = s.poll_transmit() {
            if tx.remote == peer_addr(4) && demux::classify(&tx.data) == Kind::Rtp {
                to_receiver += 1;
            }
            assert!(
                !(tx.remote == peer_addr(5) && demux::classify(&tx.data) == Kind::Rtp),
                "endpoint 5 asked for nothing and gets no media"
            );
        }
    }
    assert!(to_receiver > 0, "endpoint 4 receives the video");
    // No SSRC rewriting: the receiver sees the primary SSRC.
    const SEEN: u32 = 200;

    let mut buf = [0u8; 64];
    let pli: fn(&mut [u8]) -> usize = |buf| rtcp::write_pli(buf, Ssrc(5), Ssrc(SEEN)).expect("pli");
    let fir: fn(&mut [u8]) -> usize = |buf| rtcp::write_fir(buf, Ssrc(5), Ssrc(SEEN), 1).expect("fir");
    let nack = |buf: &mut [u8]| {
        let pairs = [crate::wire::rtcp::NackPair { pid: 1010, blp: 0x00FF }];
        rtcp::write_nack(buf, Ssrc(5), Ssrc(SEEN), pairs).expect("nack")
    };

    // Endpoint 5 asks for a keyframe (PLI, then FIR well after the rate limit's interval) and
    // a retransmission of a stream it never got.
    let before = s.stats().keyframe_requests_forwarded;
    for (i, write) in [pli, fir].into_iter().enumerate() {
        t += KEYFRAME_MIN_INTERVAL * 2;
        let n = write(&mut buf);
        s.handle_datagram(t, local(), peer_addr(5), BytesMut::from(&buf[..n]));
        assert_eq!(
            rtcp_to(&mut s, peer_addr(1), 206, [1, 4][i]),
            0,
            "nothing reaches the sender"
        );
    }
    let n = nack(&mut buf);
    s.handle_datagram(t, local(), peer_addr(5), BytesMut::from(&buf[..n]));
    let mut resent = 0;
    while let Some(tx) = s.poll_transmit() {
        if tx.remote == peer_addr(5) {
            resent += 1;
        }
    }
    assert_eq!(resent, 0, "no retransmission of a stream the endpoint does not receive");
    assert_eq!(s.stats().keyframe_requests_forwarded, before);
    assert_eq!(drops(&s, "keyframe_not_received"), 2);
    assert_eq!(drops(&s, "nack_unknown_ssrc"), 9, "the NACK names 9 packets");

    // The control: the same PLI from endpoint 4, which receives SSRC 200, reaches the sender.
    t += KEYFRAME_MIN_INTERVAL * 2;
    let n = pli(&mut buf);
    s.handle_datagram(t, local(), peer_addr(4), BytesMut::from(&buf[..n]));
    assert_eq!(
        rtcp_to(&mut s, peer_addr(1), 206, 1),
        1,
        "the receiver's PLI is forwarded"
    );
    assert_eq!(s.stats().keyframe_requests_forwarded, before + 1);
    assert_eq!(drops(&s, "keyframe_not_received"), 2);
}

/// Case 35: a bridge-channel message with `colibriClass` twice (same or different values) is
/// refused and counted, and changes nothing: here a `ReceiverVideoConstraints` asking for
/// nothing (last-N 0) would stop the receiver's video if it were applied.
#[test]
fn duplicate_colibri_class_is_refused_and_changes_nothing() {
    let (mut s, now) = shard(SfuConfig {
        rng_seed: Some(35),
        ..SfuConfig::default()
    });
    vp8_call(&mut s, now, false);
    let send = |s: &mut Shard, text: &str| {
        let cmd = Command::BridgeChannelMessage {
            conf: ConferenceId(1),
            ep: EndpointId(4),
            text: text.into(),
        };
        assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
    };
    let forwarded = |s: &mut Shard, t: &mut Instant, next_seq: &mut u16| {
        let mut n = 0;
        for i in 0..30u16 {
            *t += Duration::from_millis(33);
            let seq = *next_seq;
            *next_seq += 1;
            s.handle_datagram(
                *t,
                local(),
                peer_addr(1),
                vp8_rtp(200, seq, u32::from(seq) * 3000, seq, i % 15 == 0),
            );
            s.handle_timeout(*t);
            while let Some(tx) = s.poll_transmit() {
                if tx.remote == peer_addr(4) && demux::classify(&tx.data) == Kind::Rtp {
                    n += 1;
                }
            }
        }
        n
    };
    let (mut t, mut seq) = (now, 2000);
    assert!(forwarded(&mut s, &mut t, &mut seq) > 0, "video flows to endpoint 4");
    for text in [
        r#"{"colibriClass":"ReceiverVideoConstraints","lastN":0,"colibriClass":"ReceiverVideoConstraints"}"#,
        r#"{"colibriClass":"ReceiverVideoConstraints","lastN":0,"colibriClass":"EndpointStats"}"#,
        r#"{"colibriClass":"EndpointStats","colibriClass":"ReceiverVideoConstraints","lastN":0}"#,
    ] {
        send(&mut s, text);
    }
    assert_eq!(drops(&s, "channel_duplicate_key"), 3);
    assert!(
        forwarded(&mut s, &mut t, &mut seq) >= 25,
        "the refused constraints were not applied: video still flows"
    );
    // The control: the same constraints without the duplicate key are applied.
    send(&mut s, r#"{"colibriClass":"ReceiverVideoConstraints","lastN":0}"#);
    forwarded(&mut s, &mut t, &mut seq);
    assert_eq!(
        forwarded(&mut s, &mut t, &mut seq),
        0,
        "last-N 0 applied: no more video"
    );
    assert_eq!(drops(&s, "channel_duplicate_key"), 3);
}
