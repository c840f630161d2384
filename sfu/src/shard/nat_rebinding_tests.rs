//! NAT rebinding (robustness.md case 17, `rebind.rs`) against a real ICE peer: the rtc-ice
//! client of `ice_restart_tests` whose NAT mapping moves from [`PEER`] to a new address, on a
//! simulated clock. Endpoint 1 (the ICE client) and endpoint 2 (plain, at `peer_addr(2)`) send
//! each other Opus, so "media to X" is the RTP the shard sends to X.

use super::ice_restart_tests::{addr, connected, Sent, Setup, CLIENT_UFRAG, PEER};
use super::rebind::REBIND_SILENCE;
use super::test_support::stun_binding;
use super::tests::{audio_source, connect_plain, create, peer_addr, rtp, set_opus, PlainSrtp};
use super::*;

const BRIDGE: &str = "127.0.0.1:10000";
/// The client's new NAT mapping.
const REBOUND: &str = "127.0.0.1:40100";
/// Opus SSRCs of endpoint 1 (the ICE client) and endpoint 2.
const SSRC_1: u32 = 101;
const SSRC_2: u32 = 102;
/// Audio packet interval.
const PTIME: Duration = Duration::from_millis(20);

/// The ICE client connected as endpoint 1, given plain SRTP as if its DTLS handshake had
/// completed; endpoint 2 connected plain; both send Opus, each receives the other's.
fn call() -> (Setup, LocalTransport, u16) {
    let (mut t, bridge) = connected();
    let (c, now) = (t.conf, t.now);
    assert!(create(&mut t.s, now, 1, 2).is_ok());
    for (ep, ssrc) in [(1, SSRC_1), (2, SSRC_2)] {
        let set = Command::SetSources {
            conf: c,
            ep: EndpointId(ep),
            sources: vec![audio_source(&format!("ep{ep}"), ssrc)],
        };
        assert_eq!(t.s.handle_command(now, set), Ok(Reply::Done));
        set_opus(&mut t.s, now, ep, vec![]);
    }
    connect_plain(&mut t.s, c, 2);
    t.s.conferences
        .get_mut(&c)
        .and_then(|c| c.endpoints.get_mut(&EndpointId(1)))
        .expect("endpoint 1")
        .srtp = Some(Box::new(PlainSrtp));
    let mut seq = 0;
    talk(&mut t, &mut seq, Duration::from_secs(1), true);
    assert!(
        rtp_to(&t.sent, addr(PEER), t.now - Duration::from_secs(1)) > 0,
        "media reaches the client at its first address"
    );
    (t, bridge, seq)
}

/// Both endpoints send a packet every [`PTIME`] for `dur` (endpoint 1 from wherever its NAT
/// maps it now, only if `uplink`), pumping ICE both ways in between.
fn talk(t: &mut Setup, seq: &mut u16, dur: Duration, uplink: bool) {
    let end = t.now + dur;
    while t.now < end {
        *seq = seq.wrapping_add(1);
        let ts = u32::from(*seq) * 960;
        let (now, public) = (t.now, t.public);
        t.s.handle_datagram(now, addr(BRIDGE), peer_addr(2), rtp(SSRC_2, *seq, ts, 2));
        if uplink {
            t.s.handle_datagram(now, addr(BRIDGE), public, rtp(SSRC_1, *seq, ts, 1));
        }
        t.pump_until(PTIME, |_| false);
    }
}

/// RTP the shard sent to `to` at or after `since`.
fn rtp_to(sent: &[Sent], to: SocketAddr, since: Instant) -> usize {
    sent.iter()
        .filter(|s| s.to == to && s.kind == Kind::Rtp && s.at >= since)
        .count()
}

/// Anything the shard sent to `to` at or after `since`.
fn any_to(sent: &[Sent], to: SocketAddr, since: Instant) -> usize {
    sent.iter().filter(|s| s.to == to && s.at >= since).count()
}

fn events(t: &mut Setup) -> Vec<Event> {
    std::iter::from_fn(|| t.s.poll_event()).collect()
}

/// The endpoint is alive: its (possibly replaced) agent connected with `addr` as the remote of
/// its selected pair, media going there, no ICE failure, not expired.
fn assert_alive_at(t: &mut Setup, remote: SocketAddr) {
    assert!(
        t.s.conferences[&t.conf].endpoints.contains_key(&t.ep),
        "endpoint expired"
    );
    assert_eq!(t.ep().selected, Some(remote));
    assert_eq!(t.ep().ice.state(), ConnectionState::Connected);
    let pair = t.ep().ice.get_selected_candidate_pair().map(|(_, r)| r.addr());
    assert_eq!(pair, Some(remote), "the agent's selected pair");
    let evs = events(t);
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            Event::IceFailed { .. } | Event::EndpointExpired { .. } | Event::DtlsFailed { .. }
        )),
        "{evs:?}"
    );
    assert_eq!(t.s.stats().ice_failures, 0);
}

/// Case 17: an authenticated check with USE-CANDIDATE from a new 5-tuple moves the media
/// there at once (well within 100 ms), it is answered, and from then on nothing at all goes to
/// the old address; `IceConnected` is not announced again, no DTLS is sent (the association
/// and SRTP contexts stay), and the endpoint keeps working for 60 s on the new address
/// (consent of the replacement agent answered there).
#[test]
fn nominating_check_from_a_new_address_moves_media_at_once() {
    let (mut t, bridge, mut seq) = call();
    let connected_events = events(&mut t);
    assert_eq!(
        connected_events
            .iter()
            .filter(|e| matches!(e, Event::IceConnected { .. }))
            .count(),
        1
    );
    let (old, new) = (addr(PEER), addr(REBOUND));
    t.public = new;
    let t0 = t.now;
    let check =
        crate::testing::ice_check_nominating(&[0xC1; 12], &format!("{}:{CLIENT_UFRAG}", bridge.ufrag), &bridge.pwd);
    t.s.handle_datagram(t0, addr(BRIDGE), new, BytesMut::from(&check[..]));
    talk(&mut t, &mut seq, Duration::from_millis(100), true);
    assert_eq!(t.ep().selected, Some(new));
    assert_eq!(t.s.stats().ice_rebinds, 1);
    assert!(
        t.sent
            .iter()
            .any(|s| s.to == new && s.head[..2] == [0x01, 0x01] && s.head[8] == 0xC1),
        "the check is answered (Binding success) at the new address"
    );
    let first_new = t
        .sent
        .iter()
        .find(|s| s.to == new && s.kind == Kind::Rtp)
        .map(|s| s.at)
        .expect("media at the new address");
    assert!(
        first_new - t0 < Duration::from_millis(100),
        "switch took {:?}",
        first_new - t0
    );
    assert_eq!(rtp_to(&t.sent, old, t0), 0, "no media to the old address");

    talk(&mut t, &mut seq, Duration::from_secs(60), true);
    assert!(
        rtp_to(&t.sent, new, t.now - Duration::from_secs(1)) > 40,
        "media still flows"
    );
    assert_eq!(any_to(&t.sent, old, t0), 0, "nothing at all to the old address");
    assert!(
        !t.sent.iter().any(|s| s.kind == Kind::Dtls),
        "no DTLS: the association stays"
    );
    assert!(t.ep().srtp.is_some());
    let evs = events(&mut t);
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Event::IceConnected { .. } | Event::DtlsConnected { .. })),
        "nothing announced again: {evs:?}"
    );
    assert_alive_at(&mut t, new);
    assert_eq!(t.s.stats().ice_rebinds, 1);
    assert_eq!(t.s.by_addr.get(&new), Some(&(t.conf, t.ep)));
}

/// Case 17 as a browser produces it: the client (ICE-controlled, never nominating) simply
/// starts sending from a new address, its consent checks and media alike, and nothing the
/// bridge sends to the old mapping arrives. The media moves once the old address has been
/// silent for [`REBIND_SILENCE`] (at the client's next check from the new one) and the
/// endpoint is still alive 60 s later: no ICE failure, the replacement agent's consent on the
/// new address answered, nothing sent to the old one after the switch.
#[test]
fn browser_rebinding_moves_media_after_the_old_address_falls_silent() {
    let (mut t, _bridge, mut seq) = call();
    let (old, new) = (addr(PEER), addr(REBOUND));
    t.public = new;
    let rebound_at = t.now;
    let ok = {
        let mut switched = false;
        let end = t.now + Duration::from_secs(10);
        while t.now < end && !switched {
            talk(&mut t, &mut seq, PTIME, true);
            switched = t.ep().selected == Some(new);
        }
        switched
    };
    assert!(ok, "media moved within 10 s");
    let switched_at = t.now;
    let took = switched_at - rebound_at;
    assert!(
        took >= REBIND_SILENCE,
        "not before the old address was silent: {took:?}"
    );
    // The client's checks come every 2 s: the first one after 2 s of silence moves it.
    assert!(took <= REBIND_SILENCE + Duration::from_millis(2100), "took {took:?}");
    assert_eq!(t.s.stats().ice_rebinds, 1);

    talk(&mut t, &mut seq, Duration::from_secs(60), true);
    assert_eq!(rtp_to(&t.sent, old, switched_at), 0, "no media to the old address");
    assert_eq!(any_to(&t.sent, old, switched_at), 0, "no consent checks either");
    assert!(rtp_to(&t.sent, new, t.now - Duration::from_secs(1)) > 40, "media flows");
    assert_alive_at(&mut t, new);
    assert_eq!(t.s.stats().ice_rebinds, 1, "no flapping");
    assert_eq!(t.drops("stun_rejected"), 0);
}

/// What must not move the media: a nominating check from a new address with a wrong
/// MESSAGE-INTEGRITY; an authenticated check without USE-CANDIDATE from a second address while
/// the selected one is active; an unauthenticated Binding response from a new address even
/// when the selected one is silent. The control: with the selected address silent, an
/// authenticated check without USE-CANDIDATE does move it.
#[test]
fn unauthenticated_or_unneeded_checks_do_not_move_media() {
    let (mut t, bridge, mut seq) = call();
    let (old, other) = (addr(PEER), addr(REBOUND));
    let username = format!("{}:{CLIENT_UFRAG}", bridge.ufrag);
    let mut wrong = bridge.pwd.clone().into_bytes();
    wrong[0] ^= 1;
    let wrong = String::from_utf8(wrong).expect("ASCII password");

    // Wrong integrity, with USE-CANDIDATE: refused, not answered, nothing learned.
    let rejected = t.drops("stun_rejected");
    let m = crate::testing::ice_check_nominating(&[0xD1; 12], &username, &wrong);
    t.s.handle_datagram(t.now, addr(BRIDGE), other, BytesMut::from(&m[..]));
    talk(&mut t, &mut seq, PTIME, true);
    assert_eq!(t.drops("stun_rejected"), rejected + 1);
    assert_eq!(t.ep().selected, Some(old));
    assert!(!t.ep().is_validated(other));
    assert!(!t.s.by_addr.contains_key(&other));
    assert_eq!(any_to(&t.sent, other, t.now - PTIME), 0, "not answered");

    // Authenticated, no USE-CANDIDATE, while the selected address is active: answered and
    // validated (a second path), but the media stays.
    let m = crate::testing::ice_check(&[0xD2; 12], &username, &bridge.pwd);
    t.s.handle_datagram(t.now, addr(BRIDGE), other, BytesMut::from(&m[..]));
    talk(&mut t, &mut seq, Duration::from_secs(1), true);
    assert!(t.ep().is_validated(other));
    assert_eq!(t.ep().selected, Some(old));
    assert_eq!(rtp_to(&t.sent, other, t.now - Duration::from_secs(1)), 0);

    // The selected address falls silent (nothing at all from the client for 3 s).
    t.now += Duration::from_secs(3);
    // A Binding success from the new address that no agent's check asked for, signed with
    // nothing the bridge knows: refused.
    let mut resp = BytesMut::new();
    super::rebind::binding_success(&m, addr(BRIDGE), &wrong, &mut resp);
    t.s.handle_datagram(t.now, addr(BRIDGE), other, resp);
    assert_eq!(t.ep().selected, Some(old), "a response never moves the media");
    assert_eq!(t.drops("stun_rejected"), rejected + 2);
    // A USERNAME-only request (no integrity) from it: refused too.
    t.s.handle_datagram(t.now, addr(BRIDGE), other, stun_binding(&username, 0xD3));
    assert_eq!(t.ep().selected, Some(old));
    assert_eq!(t.drops("stun_rejected"), rejected + 3);
    assert_eq!(t.s.stats().ice_rebinds, 0);

    // The control: the same authenticated check as above now moves the media.
    let m = crate::testing::ice_check(&[0xD4; 12], &username, &bridge.pwd);
    t.s.handle_datagram(t.now, addr(BRIDGE), other, BytesMut::from(&m[..]));
    assert_eq!(t.ep().selected, Some(other));
    assert_eq!(t.s.stats().ice_rebinds, 1);
}

/// After an ICE restart, a check naming the retired ufrag (signed with the retired password)
/// from a new address moves nothing, with or without USE-CANDIDATE, even with the selected
/// address silent; the same check with the current credentials does.
#[test]
fn retired_ufrag_does_not_move_media() {
    let (mut t, bridge, mut seq) = call();
    let (new_creds, _) = t.restart();
    t.client_restarts(&new_creds, "clientufrag1");
    assert!(t.pump_until(Duration::from_secs(1), |t| t.ep().ice_next.is_none()));
    talk(&mut t, &mut seq, Duration::from_secs(2), true);
    let (old, other) = (addr(PEER), addr(REBOUND));
    assert_eq!(t.ep().selected, Some(old));

    t.now += Duration::from_secs(3);
    let stale = t.drops("stale_ufrag");
    let retired = format!("{}:{CLIENT_UFRAG}", bridge.ufrag);
    let a = crate::testing::ice_check_nominating(&[0xE1; 12], &retired, &bridge.pwd);
    let b = crate::testing::ice_check(&[0xE2; 12], &retired, &bridge.pwd);
    for m in [a, b] {
        t.s.handle_datagram(t.now, addr(BRIDGE), other, BytesMut::from(&m[..]));
    }
    assert_eq!(t.drops("stale_ufrag"), stale + 2);
    assert_eq!(t.ep().selected, Some(old));
    assert!(!t.ep().is_validated(other));
    assert_eq!(t.s.stats().ice_rebinds, 0);

    let current = format!("{}:clientufrag1", new_creds.ufrag);
    let m = crate::testing::ice_check_nominating(&[0xE3; 12], &current, &new_creds.pwd);
    t.s.handle_datagram(t.now, addr(BRIDGE), other, BytesMut::from(&m[..]));
    assert_eq!(t.ep().selected, Some(other));
    assert_eq!(t.s.stats().ice_rebinds, 1);
}

/// A phone roaming through 100 addresses, each announced by a nominating check: every one
/// takes the media at once, and the endpoint's demux entries and validated addresses stay
/// bounded (the oldest unused ones make room), so the last address is still reachable.
#[test]
fn repeated_rebinding_stays_bounded() {
    let (mut t, bridge, mut seq) = call();
    let username = format!("{}:{CLIENT_UFRAG}", bridge.ufrag);
    for i in 0..100u16 {
        let to = SocketAddr::from(([127, 0, 0, 1], 41000 + i));
        t.public = to;
        let m = crate::testing::ice_check_nominating(&[i as u8; 12], &username, &bridge.pwd);
        t.s.handle_datagram(t.now, addr(BRIDGE), to, BytesMut::from(&m[..]));
        talk(&mut t, &mut seq, Duration::from_millis(200), true);
        assert_eq!(t.ep().selected, Some(to), "step {i}");
        assert_eq!(t.s.by_addr.get(&to), Some(&(t.conf, t.ep)), "step {i}");
        assert!(rtp_to(&t.sent, to, t.now - Duration::from_millis(200)) > 0, "step {i}");
    }
    assert_eq!(t.s.stats().ice_rebinds, 100);
    assert!(t.ep().demux_addrs.len() <= super::MAX_DEMUX_ADDRS);
    assert!(t.ep().validated.len() <= 16);
    let mine = t.s.by_addr.values().filter(|k| **k == (t.conf, t.ep)).count();
    assert!(mine <= super::MAX_DEMUX_ADDRS, "{mine} demux entries");
    talk(&mut t, &mut seq, Duration::from_secs(60), true);
    let last = t.public;
    assert_alive_at(&mut t, last);
}
