//! Robustness cases (robustness.md §4) checked sans-IO against the [`Shard`]; the rest of
//! the cases and where each is tested: docs/security.md §4, "Cases 13–41".

use super::tests::{connect_plain, create, drops, peer_addr, set_vp8, shard, vp8_call, vp8_rtp};
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
    set_vp8(&mut s, now, 5);
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

/// A signed Binding Request as an ICE-controlled peer sends it (`sfu::testing::ice_check`).
fn signed_binding_request(username: &str, pwd: &str, tx: u8) -> BytesMut {
    BytesMut::from(&crate::testing::ice_check(&[tx; 12], username, pwd)[..])
}

/// STUN messages `s` sends to `to`, as (message type, transaction id's first byte).
fn stun_to(s: &mut Shard, to: SocketAddr) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    while let Some(tx) = s.poll_transmit() {
        if tx.remote == to && demux::classify(&tx.data) == Kind::Stun && tx.data.len() >= 20 {
            out.push((u16::from_be_bytes([tx.data[0], tx.data[1]]), tx.data[8]));
        }
    }
    out
}

/// Case 15: a Binding Request with a valid ufrag and a wrong MESSAGE-INTEGRITY, from the
/// selected address or from a new one, gets no response, leaves the selected pair as it is,
/// teaches the bridge no address, and is counted (`stun_rejected`). The control: the same
/// request signed with the right password is answered, from the new address too.
#[test]
fn stun_with_a_wrong_integrity_is_refused_silently() {
    use super::ice_restart_tests::{addr, connected, CLIENT_UFRAG, PEER};
    let (mut t, bridge) = connected();
    let peer = addr(PEER);
    let other = addr("127.0.0.1:40001");
    assert_eq!(t.ep().selected, Some(peer));
    let username = format!("{}:{CLIENT_UFRAG}", bridge.ufrag);
    let mut wrong_pwd = bridge.pwd.clone().into_bytes();
    wrong_pwd[0] ^= 1;
    let wrong_pwd = String::from_utf8(wrong_pwd).expect("ASCII password");
    let rejected = t.drops("stun_rejected");
    let now = t.now;
    for (i, from) in [peer, other].into_iter().enumerate() {
        let m = signed_binding_request(&username, &wrong_pwd, 0xA0 + i as u8);
        t.s.handle_datagram(now, local(), from, m);
        assert!(
            stun_to(&mut t.s, from).iter().all(|&(_, tx)| tx != 0xA0 + i as u8),
            "no response to {from}"
        );
    }
    assert_eq!(t.drops("stun_rejected"), rejected + 2);
    assert_eq!(t.ep().selected, Some(peer), "selected pair unchanged");
    assert!(!t.ep().is_validated(other), "no address learned");
    assert!(!t.s.by_addr.contains_key(&other));

    // The control: signed with the right password, it is answered (Binding Success).
    let m = signed_binding_request(&username, &bridge.pwd, 0xB0);
    t.s.handle_datagram(now, local(), other, m);
    assert!(
        stun_to(&mut t.s, other).contains(&(0x0101, 0xB0)),
        "the correctly signed request is answered"
    );
    assert_eq!(t.drops("stun_rejected"), rejected + 2);
    assert!(t.ep().is_validated(other));
}

/// One DTLS record (epoch 0) carrying one ClientHello fragment: handshake message_seq 0,
/// declared body `length`, `flen` bytes at `offset` (24-bit fields, as on the wire).
fn hello_fragment(length: u32, offset: u32, flen: u32) -> BytesMut {
    let mut m = vec![22u8, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&((12 + flen) as u16).to_be_bytes());
    m.push(1); // ClientHello
    m.extend_from_slice(&length.to_be_bytes()[1..]);
    m.extend_from_slice(&[0, 0]); // message_seq
    m.extend_from_slice(&offset.to_be_bytes()[1..]);
    m.extend_from_slice(&flen.to_be_bytes()[1..]);
    m.resize(m.len() + flen as usize, 0x42);
    BytesMut::from(&m[..])
}

/// Case 22: a flood of 10^5 ClientHello fragments for one handshake, from the endpoint's
/// ICE-validated address. Fragments inside the declared length that never complete the
/// message abort the handshake once 16 KiB are buffered; offsets up to 2^24 (beyond the
/// declared length) abort it at the first one. Either way everything after it is dropped and
/// counted, and the bridge sends nothing back.
#[test]
fn dtls_fragment_flood_is_bounded_and_aborts_the_handshake() {
    use super::ice_restart_tests::{addr, connected, PEER};
    const FLOOD: usize = 100_000;
    let mut rng = 0x2222_2222u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) as u32
    };
    for out_of_range in [false, true] {
        let (mut t, _bridge) = connected();
        let peer = addr(PEER);
        let failed = |t: &super::ice_restart_tests::Setup| t.ep().dtls.as_ref().is_some_and(|d| d.is_failed());
        assert!(!failed(&t));
        let now = t.now;
        let (mut sent_bytes, mut aborted_after) = (0usize, None);
        let mut dtls_out = 0;
        for i in 0..FLOOD {
            // A 4,000-byte ClientHello; byte 0 never arrives, so it never completes.
            let offset = if out_of_range {
                next() & 0xFF_FFFF
            } else {
                1 + next() % 3_900
            };
            let f = hello_fragment(4_000, offset, 64);
            sent_bytes += f.len();
            t.s.handle_datagram(now, local(), peer, f);
            while let Some(tx) = t.s.poll_transmit() {
                if demux::classify(&tx.data) == Kind::Dtls {
                    dtls_out += 1;
                }
            }
            if aborted_after.is_none() && failed(&t) {
                aborted_after = Some((i + 1, sent_bytes));
            }
        }
        let (n, bytes) = aborted_after.expect("the handshake is aborted");
        if out_of_range {
            // 2^24 - 4,000 of 2^24 offsets are out of range: the first or nearly so.
            assert!(n <= 3, "aborted after {n} fragments");
        } else {
            assert!(
                bytes > 16 * 1024 && bytes <= 16 * 1024 + 89,
                "aborted once more than 16 KiB arrived: {bytes} bytes in {n} fragments"
            );
        }
        assert_eq!(t.drops("dtls_malformed_hello"), 1);
        assert_eq!(
            t.drops("dtls_failed") as usize,
            FLOOD - n,
            "every later fragment is counted"
        );
        assert_eq!(dtls_out, 0, "nothing answered");
    }
}

/// Case 14: 10^5 signed STUN Binding Requests with unknown ufrags from 10^3 spoofed sources
/// (the bridge has one endpoint, connected) get no response at all (no amplification) and are
/// all counted as `unknown_ufrag`; the endpoint's own checks still work afterwards.
#[test]
fn stun_with_unknown_ufrags_gets_no_response() {
    use super::ice_restart_tests::{addr, connected, CLIENT_UFRAG, PEER};
    const N: u32 = 100_000;
    let (mut t, bridge) = connected();
    let now = t.now;
    let before = t.drops("unknown_ufrag");
    for i in 0..N {
        let username = format!("x{:07}:{CLIENT_UFRAG}", i.wrapping_mul(2_654_435_761));
        let m = signed_binding_request(&username, &bridge.pwd, i as u8);
        let from = SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                198,
                51,
                (i % 1000 / 250) as u8,
                (i % 250) as u8,
            )),
            40_000 + (i % 7) as u16,
        );
        t.s.handle_datagram(now, local(), from, m);
        if let Some(tx) = t.s.poll_transmit() {
            panic!("response to a spoofed source: {} bytes to {}", tx.data.len(), tx.remote);
        }
    }
    assert_eq!(t.drops("unknown_ufrag") - before, u64::from(N));
    // The real endpoint is unaffected: its signed check is answered.
    let username = format!("{}:{CLIENT_UFRAG}", bridge.ufrag);
    t.s.handle_datagram(
        now,
        local(),
        addr(PEER),
        signed_binding_request(&username, &bridge.pwd, 0xC0),
    );
    assert!(stun_to(&mut t.s, addr(PEER)).contains(&(0x0101, 0xC0)));
}

/// Events of one in-memory DTLS handshake between a bridge `Dtls` in `bridge_role` and a
/// peer `Dtls` in the other role (both with the same certificate). The bridge expects the
/// peer's fingerprint (one byte off unless `bridge_fp_ok`) and allows GCM and AES-CM; the peer
/// expects the right one and allows `peer_profiles`. Returns (bridge events, bridge failed,
/// peer events).
fn dtls_pair(
    bridge_role: Role,
    bridge_fp_ok: bool,
    peer_profiles: &[crate::config::SrtpProfile],
) -> (Vec<crate::dtls::DtlsEvent>, bool, Vec<crate::dtls::DtlsEvent>) {
    let (events, failed, peer, _) = dtls_pair_with(bridge_role, bridge_fp_ok, peer_profiles);
    (events, failed, peer)
}

/// [`dtls_pair`], also returning the bridge's [`Dtls`](crate::dtls::Dtls) and whether it
/// sent a fatal alert record (content type 21, level 2 when readable) to the peer.
fn dtls_pair_with(
    bridge_role: Role,
    bridge_fp_ok: bool,
    peer_profiles: &[crate::config::SrtpProfile],
) -> (
    Vec<crate::dtls::DtlsEvent>,
    bool,
    Vec<crate::dtls::DtlsEvent>,
    (crate::dtls::Dtls, bool),
) {
    use crate::config::{HandshakeSlots, SrtpProfile};
    use crate::dtls::{Dtls, DtlsContext, LocalCert};
    let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
    let cert = LocalCert::generate(&provider).expect("certificate");
    let value: Vec<u8> = cert
        .fingerprint_sha256
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    let fingerprint = |value| crate::control::Fingerprint {
        hash: "sha-256".into(),
        value,
        setup: None,
    };
    let mut wrong = value.clone();
    wrong[0] ^= 1;
    let good_fps = [fingerprint(value)];
    let bridge_fps = if bridge_fp_ok {
        good_fps.clone()
    } else {
        [fingerprint(wrong)]
    };
    let slots = HandshakeSlots::new(4);
    let bridge_profiles = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
    let bridge_ctx = DtlsContext {
        provider: &provider,
        cert: &cert,
        fingerprints: &bridge_fps,
        allowed: &bridge_profiles,
        slots: &slots,
    };
    let peer_ctx = DtlsContext {
        provider: &provider,
        cert: &cert,
        fingerprints: &good_fps,
        allowed: peer_profiles,
        slots: &slots,
    };
    let (bridge_addr, peer_addr) = (local(), SocketAddr::from(([127, 0, 0, 1], 5000)));
    let peer_role = if bridge_role == Role::Client {
        Role::Server
    } else {
        Role::Client
    };
    let mut bridge = Dtls::new(bridge_role, bridge_addr);
    let mut peer = Dtls::new(peer_role, peer_addr);
    let (mut b_events, mut p_events) = (Vec::new(), Vec::new());
    let now = Instant::now();
    if bridge_role == Role::Client {
        bridge.connect(now, peer_addr, &bridge_ctx, &mut b_events);
    } else {
        peer.connect(now, bridge_addr, &peer_ctx, &mut p_events);
    }
    let mut t = now;
    let mut alert = false;
    for _ in 0..200 {
        while let Some(d) = peer.poll_transmit() {
            let _ = bridge.handle_datagram(t, peer_addr, d, &bridge_ctx, &mut b_events);
        }
        while let Some(d) = bridge.poll_transmit() {
            alert |= has_alert_record(&d);
            let _ = peer.handle_datagram(t, bridge_addr, d, &peer_ctx, &mut p_events);
        }
        if (bridge.is_connected() && peer.is_connected()) || bridge.is_failed() {
            break;
        }
        t += Duration::from_millis(50);
        bridge.handle_timeout(t, &mut b_events);
        peer.handle_timeout(t, &mut p_events);
    }
    while let Some(d) = bridge.poll_transmit() {
        alert |= has_alert_record(&d);
    }
    let failed = bridge.is_failed();
    (b_events, failed, p_events, (bridge, alert))
}

/// Whether a DTLS datagram holds an alert record (content type 21): plaintext at epoch 0
/// (then its level must be fatal, 2), or encrypted after ChangeCipherSpec (the type is still
/// in the record header).
fn has_alert_record(d: &[u8]) -> bool {
    let mut at = 0;
    while let Some(h) = d.get(at..at + 13) {
        let len = usize::from(u16::from_be_bytes([h[11], h[12]]));
        let epoch = u16::from_be_bytes([h[3], h[4]]);
        if h[0] == 21 && (epoch > 0 || d.get(at + 13) == Some(&2)) {
            return true;
        }
        at += 13 + len;
    }
    false
}

fn dtls_connected(events: &[crate::dtls::DtlsEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, crate::dtls::DtlsEvent::Connected { .. }))
}

fn dtls_failures(events: &[crate::dtls::DtlsEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            crate::dtls::DtlsEvent::Failed(r) => Some(r.as_str()),
            _ => None,
        })
        .collect()
}

/// Case 20: a DTLS client whose ClientHello has no `use_srtp` (it offers no SRTP profile)
/// never gets an SRTP context from the bridge (server role): the handshake fails on the
/// bridge's side. The control: the same pair with a profile offered connects both ways, so
/// certificates and fingerprints are right and only `use_srtp` differs.
#[test]
fn client_hello_without_use_srtp_gets_no_srtp_context() {
    let (events, failed, _) = dtls_pair(Role::Server, true, &[]);
    assert!(!dtls_connected(&events), "no SRTP context without use_srtp");
    assert!(failed, "the bridge's handshake fails");
    // rtc-dtls completes the handshake without the extension; the bridge refuses it at
    // completion (no SRTP profile was negotiated).
    let why = dtls_failures(&events);
    assert!(why.iter().any(|r| r.contains("SRTP profile")), "{why:?}");
    // The control.
    let (events, failed, peer) = dtls_pair(Role::Server, true, &[crate::config::SrtpProfile::AeadAes128Gcm]);
    assert!(dtls_connected(&events) && !failed, "control: the bridge connects");
    assert!(dtls_connected(&peer), "control: the peer connects");
}

/// Case 18 at the DTLS layer, both roles: a peer certificate whose fingerprint is not the
/// signalled one fails the bridge's handshake and gives no SRTP context (the control with the
/// right fingerprint, in `client_hello_without_use_srtp_gets_no_srtp_context` and here,
/// connects). The end-to-end form (server role, no media, `dtls_failures`) is
/// `sfu/tests/str0m_e2e.rs::wrong_fingerprint_fails_only_that_endpoint`.
#[test]
fn wrong_fingerprint_fails_the_handshake_in_both_roles() {
    let gcm = [crate::config::SrtpProfile::AeadAes128Gcm];
    for role in [Role::Server, Role::Client] {
        let (events, failed, _, (bridge, alert)) = dtls_pair_with(role, false, &gcm);
        assert!(!dtls_connected(&events), "{role:?}: no SRTP context");
        assert!(failed, "{role:?}: the handshake fails");
        assert!(bridge.fingerprint_mismatched(), "{role:?}: failed on the fingerprint");
        assert!(alert, "{role:?}: the peer is sent a fatal alert");
        let (events, failed, _, (bridge, alert)) = dtls_pair_with(role, true, &gcm);
        assert!(dtls_connected(&events) && !failed, "{role:?}: control connects");
        assert!(
            !bridge.fingerprint_mismatched() && !alert,
            "{role:?}: control: no mismatch, no alert"
        );
    }
}

/// Case 19 through the shard: on an ICE-connected endpoint expecting the hand-built
/// client's certificate (`dtls::tests_no_cert_verify`), a flight 5 without CertificateVerify
/// gets no ChangeCipherSpec/Finished back, no SRTP context and no `DtlsConnected`; the
/// handshake fails at `dtls::HANDSHAKE_TIMEOUT` and is counted in `dtls_failures`. The
/// control: the same client with its CertificateVerify connects (SRTP context installed,
/// nothing counted).
#[test]
fn dtls_certificate_without_certificate_verify_fails_and_is_counted() {
    use super::ice_restart_tests::{addr, connected, PEER};
    use crate::dtls::tests_no_cert_verify::{client_cert, run_client, Verify};
    for verify in [Verify::Missing, Verify::Correct] {
        let (mut t, _bridge) = connected();
        let cert = client_cert();
        let (conf, ep) = (t.conf, t.ep);
        let e =
            t.s.conferences
                .get_mut(&conf)
                .and_then(|c| c.endpoints.get_mut(&ep))
                .expect("the endpoint");
        e.remote.fingerprints = vec![cert.fingerprint.clone()];
        let peer = addr(PEER);
        let now = t.now;
        let s = &mut t.s;
        let (client, _, got) = run_client(verify, &cert, |d| {
            s.handle_datagram(now, local(), peer, BytesMut::from(&d[..]));
            std::iter::from_fn(|| s.poll_transmit())
                .filter(|tx| tx.remote == peer && demux::classify(&tx.data) == Kind::Dtls)
                .map(|tx| tx.data)
                .collect()
        });
        let finished = got.change_cipher_spec && client.server_finished_ok(&got);
        let dtls_done = |t: &super::ice_restart_tests::Setup| {
            t.ep().srtp.is_some() || t.ep().dtls.as_ref().is_some_and(|d| d.is_failed())
        };
        let done = t.pump_until(crate::dtls::HANDSHAKE_TIMEOUT + Duration::from_secs(2), dtls_done);
        assert!(done, "{verify:?}: the handshake ends one way or the other");
        let (mut connected_events, mut failed_reasons) = (0, Vec::new());
        while let Some(ev) = t.s.poll_event() {
            match ev {
                Event::DtlsConnected { .. } => connected_events += 1,
                Event::DtlsFailed { reason, .. } => failed_reasons.push(reason),
                _ => {}
            }
        }
        let failures = t.s.stats().dtls_failures;
        if verify == Verify::Missing {
            assert!(!finished, "the bridge does not finish its side");
            assert!(t.ep().srtp.is_none(), "no SRTP context");
            assert_eq!(connected_events, 0);
            assert_eq!(failures, 1, "the failure is counted");
            assert_eq!(failed_reasons, ["handshake timeout"]);
            assert!(t.now >= now + crate::dtls::HANDSHAKE_TIMEOUT);
        } else {
            assert!(finished, "control: the bridge's Finished verifies");
            assert!(t.ep().srtp.is_some(), "control: SRTP context installed");
            assert_eq!(connected_events, 1);
            assert_eq!(failures, 0);
            assert!(failed_reasons.is_empty());
        }
    }
}

/// Case 21 through the shard, per source IP: five endpoints ICE-validated at one
/// (non-loopback) IP each start a DTLS handshake; the fifth is refused and counted as
/// `dtls_handshake_ip_cap` while an endpoint at another IP still starts. Expiring one of the
/// four endpoints frees its slot, and the fifth endpoint's retransmission then starts.
#[test]
fn dtls_handshakes_per_source_ip_are_capped_and_counted() {
    use super::tests::shard;
    let (mut s, now) = shard(SfuConfig {
        rng_seed: Some(21),
        ..SfuConfig::default()
    });
    let slots = s.config.limits.dtls_handshakes.clone();
    assert_eq!(slots.per_ip(), 4);
    let at = |ep: u32| {
        let ip = if ep == 6 { [198, 51, 100, 6] } else { [203, 0, 113, 9] };
        SocketAddr::from((ip, 30_000 + ep as u16))
    };
    let r = s.handle_command(now, Command::CreateConference { conf: ConferenceId(1) });
    assert!(r.is_ok(), "{r:?}");
    for ep in 1..=6 {
        assert!(create(&mut s, now, 1, ep).is_ok());
        let e = s
            .conferences
            .get_mut(&ConferenceId(1))
            .and_then(|c| c.endpoints.get_mut(&EndpointId(ep)))
            .expect("endpoint exists");
        e.selected = Some(at(ep));
        e.ice_connected = true;
        e.add_validated(at(ep), now);
        e.dtls = Some(Dtls::new(Role::Server, local()));
        s.by_addr.insert(at(ep), (ConferenceId(1), EndpointId(ep)));
    }
    let hello = || hello_fragment(100, 0, 0); // waits for the rest: a handshake in flight
    for ep in 1..=5 {
        s.handle_datagram(now, local(), at(ep), hello());
    }
    assert_eq!(drops(&s, "dtls_handshake_ip_cap"), 1);
    assert_eq!(slots.in_flight_from(at(1).ip()), 4);
    s.handle_datagram(now, local(), at(6), hello());
    assert_eq!(slots.in_flight(), 5, "another IP is not affected");
    assert_eq!(drops(&s, "dtls_handshake_ip_cap"), 1);
    let started = |s: &Shard, ep: u32| {
        s.conferences[&ConferenceId(1)].endpoints[&EndpointId(ep)]
            .dtls
            .as_ref()
            .is_some_and(|d| d.pinned().is_some())
    };
    assert!(!started(&s, 5), "the refused handshake left no state");

    let expire = Command::ExpireEndpoint {
        conf: ConferenceId(1),
        ep: EndpointId(1),
    };
    assert_eq!(s.handle_command(now, expire), Ok(Reply::Done));
    assert_eq!(
        slots.in_flight_from(at(1).ip()),
        3,
        "an expired endpoint frees its slot"
    );
    s.handle_datagram(now, local(), at(5), hello());
    assert!(started(&s, 5), "the retransmission starts now");
    assert_eq!(slots.in_flight_from(at(1).ip()), 4);
    assert_eq!(drops(&s, "dtls_handshake_ip_cap"), 1);
}
