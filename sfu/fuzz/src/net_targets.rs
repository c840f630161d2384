//! Fuzz targets for the bridge's network entry points below RTP: STUN through a [`Shard`]
//! (decode and MESSAGE-INTEGRITY as the bridge does them), the DTLS record layer and handshake
//! reassembly through [`sfu::dtls::Dtls`], SCTP + DCEP through [`sfu::sctp::Sctp`], and the
//! transport-cc feedback decoder (robustness.md §4 cases 1, 3, 7 and 11).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use sfu::config::{HandshakeSlots, SrtpProfile};
use sfu::control::{Fingerprint, RemoteTransport, Setup};
use sfu::dtls::{Dtls, DtlsContext, DtlsEvent, Role};
pub use sfu::sctp::testing::{crc32c, dcep_open, sctp_chunk, sctp_data, sctp_handshake, sctp_init, sctp_packet};
use sfu::sctp::{ChannelEvent, Sctp};
use sfu::wire::rtcp::{write_twcc, RtcpCompound, RtcpPacket, TwccFeedback};
use sfu::{ClockAnchor, Command, ConferenceId, EndpointId, Reply, SfuConfig, Shard, Ssrc};

use crate::targets::{cert, crc32, push_attr, Cursor, REMOTE_PWD, REMOTE_UFRAG};

/// Splits `data` into datagrams at `0xFF 0xFE` markers (the same convention as the
/// `client_hello` target, so seeds compose).
pub fn split_datagrams(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest.windows(2).position(|w| w == [0xFF, 0xFE]).unwrap_or(rest.len());
        let (d, r) = rest.split_at(cut);
        rest = r.get(2..).unwrap_or(&[]);
        Some(d)
    })
}

// ---------------------------------------------------------------------------------------------
// STUN.

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

/// How a STUN fuzz message is completed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Integrity {
    /// The fuzz bytes as they are.
    Raw,
    /// Header and USERNAME with the endpoint's ufrag, fuzz attributes, no MESSAGE-INTEGRITY.
    None,
    /// ... plus MESSAGE-INTEGRITY keyed with the bridge's password, and FINGERPRINT.
    Valid,
    /// ... plus MESSAGE-INTEGRITY with a wrong key, and FINGERPRINT.
    WrongKey,
}

/// A STUN message of type `typ`: USERNAME `ufrag:fzuf`, then `attrs` (raw fuzz bytes, as
/// attributes), then MESSAGE-INTEGRITY (keyed with `key`) and FINGERPRINT when `key` is set.
pub fn stun_message(typ: u16, txid: [u8; 12], ufrag: &str, attrs: &[u8], key: Option<&str>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + attrs.len());
    m.extend_from_slice(&typ.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&txid);
    push_attr(&mut m, 0x0006, format!("{ufrag}:{REMOTE_UFRAG}").as_bytes());
    m.extend_from_slice(attrs);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
    let set_len = |m: &mut Vec<u8>, extra: usize| {
        let l = (m.len() - 20 + extra).min(usize::from(u16::MAX)) as u16;
        m[2..4].copy_from_slice(&l.to_be_bytes());
    };
    match key {
        Some(key) => {
            set_len(&mut m, 24);
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
            let tag = aws_lc_rs::hmac::sign(&k, &m);
            push_attr(&mut m, 0x0008, tag.as_ref());
            set_len(&mut m, 8);
            let crc = crc32(&m) ^ 0x5354_554E;
            push_attr(&mut m, 0x8028, &crc.to_be_bytes());
        }
        None => set_len(&mut m, 0),
    }
    m
}

/// A shard with one endpoint whose remote transport is set; returns the shard, the endpoint's
/// ufrag and password, and the local address.
pub fn stun_shard(now: Instant) -> Option<(Shard, String, String, SocketAddr)> {
    let (provider, cert) = cert();
    let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
    let config = SfuConfig {
        bind_ip: local.ip(),
        rng_seed: Some(1),
        ..SfuConfig::default()
    };
    let clock = ClockAnchor {
        instant: now,
        system: SystemTime::now(),
    };
    let mut s = Shard::with_cert(config, local, clock, provider.clone(), cert.clone());
    let (c, e) = (ConferenceId(0), EndpointId(0));
    s.handle_command(now, Command::CreateConference { conf: c }).ok()?;
    let t = match s.handle_command(
        now,
        Command::CreateEndpoint {
            conf: c,
            ep: e,
            ice_controlling: true,
            sctp: false,
            visitor: false,
            name: "e".into(),
            ssrc_rewriting: false,
        },
    ) {
        Ok(Reply::EndpointCreated(t)) => t,
        _ => return None,
    };
    let transport = RemoteTransport {
        ufrag: Some(REMOTE_UFRAG.into()),
        pwd: Some(REMOTE_PWD.into()),
        fingerprints: vec![Fingerprint {
            hash: "sha-256".into(),
            value: vec![0; 32],
            setup: Some(Setup::Active),
        }],
        candidates: vec!["127.0.0.1:5001".parse().expect("literal")],
    };
    s.handle_command(
        now,
        Command::SetRemoteTransport {
            conf: c,
            ep: e,
            transport,
        },
    )
    .ok()?;
    while let Some(t) = s.poll_transmit() {
        s.recycle(t.data);
    }
    Some((s, t.ufrag, t.pwd, local))
}

/// STUN-classified datagrams to a shard that knows one ufrag: raw bytes, or messages carrying
/// the right USERNAME with fuzzed attributes and no, valid or wrong MESSAGE-INTEGRITY. The
/// oracle: a Binding success answers only a Binding request with valid MESSAGE-INTEGRITY, and
/// what the shard sends stays bounded by what it got (no amplification).
pub fn stun(data: &[u8]) {
    let t0 = Instant::now();
    let Some((mut shard, ufrag, pwd, local)) = stun_shard(t0) else {
        panic!("shard setup failed");
    };
    let remotes: [SocketAddr; 2] = [
        "127.0.0.1:5001".parse().expect("literal"),
        "127.0.0.2:6000".parse().expect("literal"),
    ];
    let mut cur = Cursor(data);
    let mut now = t0;
    let (mut got, mut sent, mut n) = (0usize, 0usize, 0usize);
    while let Some(mode) = cur.byte() {
        n += 1;
        let len = usize::from(cur.byte().unwrap_or(0));
        let body = cur.take(len);
        let integrity = match mode & 3 {
            0 => Integrity::Raw,
            1 => Integrity::None,
            2 => Integrity::Valid,
            _ => Integrity::WrongKey,
        };
        let typ = match (mode >> 2) & 3 {
            0 | 1 => BINDING_REQUEST,
            2 => BINDING_SUCCESS,
            _ => 0x0011, // Binding indication
        };
        let mut txid = [0u8; 12];
        txid[..4].copy_from_slice(&(n as u32).to_be_bytes());
        txid[4] = mode;
        let msg = match integrity {
            Integrity::Raw => {
                let mut m = body.to_vec();
                if let Some(b) = m.first_mut() {
                    *b &= 3;
                }
                m
            }
            Integrity::None => stun_message(typ, txid, &ufrag, body, None),
            Integrity::Valid => stun_message(typ, txid, &ufrag, body, Some(&pwd)),
            Integrity::WrongKey => stun_message(typ, txid, &ufrag, body, Some("not-the-password-at-all")),
        };
        got += msg.len();
        let remote = remotes[usize::from(mode >> 7)];
        shard.handle_datagram(now, local, remote, BytesMut::from(&msg[..]));
        if mode & 0x40 != 0 {
            now += Duration::from_millis(200);
            shard.handle_timeout(now);
        }
        while let Some(t) = shard.poll_transmit() {
            sent += t.data.len();
            let d = &t.data[..];
            if d.len() >= 20 && d[..2] == BINDING_SUCCESS.to_be_bytes() && d[8..20] == txid {
                assert!(
                    integrity == Integrity::Valid && typ == BINDING_REQUEST,
                    "answered a message without valid MESSAGE-INTEGRITY"
                );
            }
            shard.recycle(t.data);
        }
    }
    // Responses are at most request-sized plus XOR-MAPPED-ADDRESS; the agent's own checks and
    // consent requests are bounded per operation.
    assert!(
        sent <= got + 256 * (n + 1),
        "sent {sent} bytes for {got} bytes in {n} STUN messages"
    );
    shard.shutdown(now);
}

// ---------------------------------------------------------------------------------------------
// DTLS.

/// DTLS datagrams to one endpoint's [`Dtls`], server or client role (first byte), with a tight
/// handshake cap. The oracle: no handshake ever connects (the peer's certificate cannot match
/// the signalled fingerprint), every datagram out is bounded, and the cap's slot is given
/// back when the session goes away.
pub fn dtls_records(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let (provider, cert) = cert();
    let slots = HandshakeSlots::new(1);
    let fingerprints = [Fingerprint {
        hash: "sha-256".into(),
        value: vec![sel; 32],
        setup: None,
    }];
    let allowed = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
    let ctx = DtlsContext {
        provider,
        cert,
        fingerprints: &fingerprints,
        allowed: &allowed,
        slots: &slots,
    };
    let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("literal");
    let other: SocketAddr = "127.0.0.1:5002".parse().expect("literal");
    let role = if sel & 1 == 0 { Role::Server } else { Role::Client };
    let mut d = Dtls::new(role, local);
    let mut now = Instant::now();
    let mut events = Vec::new();
    if role == Role::Client {
        d.connect(now, peer, &ctx, &mut events);
    }
    let mut out_bytes = 0usize;
    let mut in_bytes = 0usize;
    for (i, dg) in split_datagrams(rest).enumerate() {
        in_bytes += dg.len();
        let from = if sel & 2 != 0 && i % 2 == 1 { other } else { peer };
        let _ = d.handle_datagram(now, from, BytesMut::from(dg), &ctx, &mut events);
        while let Some(t) = d.poll_transmit() {
            assert!(t.len() <= 1 << 16, "oversized DTLS datagram");
            out_bytes += t.len();
        }
        if sel & 4 != 0 {
            now += Duration::from_secs(1);
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now, &mut events);
            }
        }
        assert!(slots.in_flight() <= 1);
    }
    for ev in &events {
        assert!(
            !matches!(ev, DtlsEvent::Connected { .. }),
            "a handshake connected against a fingerprint it cannot match"
        );
    }
    // Flights are a few KiB each; retransmissions are timer-driven.
    assert!(
        out_bytes <= 16 * in_bytes + 64 * 1024,
        "{out_bytes} bytes out for {in_bytes} in"
    );
    now += sfu::dtls::HANDSHAKE_TIMEOUT;
    d.handle_timeout(now, &mut events);
    drop(d);
    assert_eq!(slots.in_flight(), 0, "a handshake slot leaked");
}

// ---------------------------------------------------------------------------------------------
// SCTP + DCEP.

/// SCTP packets to the bridge's association. First byte: bit 0 runs the handshake first (and
/// bit 1 opens the data channel with DCEP), bit 2 sends the packets' bytes as *chunks* in a
/// packet with the right verification tag and checksum (else as whole packets, checksum fixed
/// unless bit 3), bit 4 ticks timers, bit 5 sends text the other way. The oracle: messages
/// delivered stay within the reassembly cap, and output stays bounded by input.
pub fn sctp(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let addr: SocketAddr = "127.0.0.1:5001".parse().expect("literal");
    let mut s = Sctp::new(addr);
    let mut now = Instant::now();
    let mut events = Vec::new();
    let mut vtag = 0;
    let mut tsn = 1u32;
    if flags & 1 != 0 {
        vtag = sctp_handshake(&mut s, now, &mut events);
        if flags & 2 != 0 {
            let open = sctp_packet(vtag, &sctp_data(tsn, 0, 0, 50, &dcep_open(b"datachannel")));
            tsn += 1;
            s.handle_data(now, BytesMut::from(&open[..]), &mut events);
        }
    }
    let (mut in_bytes, mut out_bytes) = (0usize, 0usize);
    for dg in split_datagrams(rest) {
        let packet = if flags & 4 != 0 {
            // The bytes are chunks; a DATA chunk's TSN is made the next one half the time.
            let mut chunks = dg.to_vec();
            if chunks.len() >= 8 && chunks[0] == 0 && chunks[1] & 0x80 == 0 {
                chunks[4..8].copy_from_slice(&tsn.to_be_bytes());
                tsn = tsn.wrapping_add(1);
            }
            sctp_packet(vtag, &chunks)
        } else {
            let mut p = dg.to_vec();
            if p.len() >= 12 && flags & 8 == 0 {
                p[8..12].copy_from_slice(&[0; 4]);
                let crc = crc32c(&p);
                p[8..12].copy_from_slice(&crc.to_le_bytes());
            }
            p
        };
        in_bytes += packet.len();
        s.handle_data(now, BytesMut::from(&packet[..]), &mut events);
        if flags & 32 != 0 {
            let _ = s.send_text(now, "{\"colibriClass\":\"ServerHello\"}");
        }
        if flags & 16 != 0 {
            now += Duration::from_millis(300);
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now, &mut events);
            }
        }
        while let Some(ps) = s.poll_transmit(now) {
            out_bytes += ps.iter().map(|p| p.len()).sum::<usize>();
        }
    }
    for ev in &events {
        if let ChannelEvent::Text(t) = ev {
            assert!(t.len() <= 256 * 1024, "a {}-byte message was reassembled", t.len());
        }
    }
    assert!(
        out_bytes <= 8 * in_bytes + 64 * 1024,
        "{out_bytes} bytes out for {in_bytes} in"
    );
}

// ---------------------------------------------------------------------------------------------
// transport-cc.

/// Transport-cc feedback decoding: the input as an RTCP compound and as the FCI of one
/// feedback. The oracle: exactly `status_count` packets (< 2^16), consecutive sequence
/// numbers, and re-encoding the decoded packets decodes to the same packets.
pub fn twcc(data: &[u8]) {
    let mut wrapped = vec![0x8F, 205, 0, 0];
    wrapped.extend_from_slice(&1u32.to_be_bytes());
    wrapped.extend_from_slice(&2u32.to_be_bytes());
    wrapped.extend_from_slice(data);
    while !wrapped.len().is_multiple_of(4) {
        wrapped.push(0);
    }
    let words = ((wrapped.len() / 4 - 1).min(usize::from(u16::MAX))) as u16;
    wrapped[2..4].copy_from_slice(&words.to_be_bytes());
    for input in [data, &wrapped[..]] {
        for item in RtcpCompound::new(input) {
            let Ok(RtcpPacket::TransportCc(t)) = item else { continue };
            let mut n = 0usize;
            let mut seq = t.base_seq;
            let mut deltas = Vec::new();
            for p in t.packets() {
                assert_eq!(p.seq, seq, "sequence numbers not consecutive");
                seq = seq.wrapping_add(1);
                n += 1;
                assert!(n < 1 << 16, "more than 2^16 - 1 packets");
                deltas.push(p.recv_delta);
            }
            assert_eq!(n, usize::from(t.status_count), "packet count != status count");
            if deltas.is_empty() {
                continue;
            }
            let fb = TwccFeedback {
                base_seq: t.base_seq,
                reference_time: t.reference_time,
                fb_pkt_count: t.fb_pkt_count,
                packets: &deltas,
            };
            let mut buf = vec![0u8; 64 + 2 * deltas.len() + 2 * (deltas.len() / 7 + 1)];
            let len = write_twcc(&mut buf, Ssrc(1), Ssrc(2), &fb).expect("decoded feedback re-encodes");
            let again = match RtcpCompound::new(&buf[..len]).next() {
                Some(Ok(RtcpPacket::TransportCc(a))) => a,
                other => panic!("re-encoded feedback does not parse: {other:?}"),
            };
            assert!(again.packets().map(|p| p.recv_delta).eq(deltas.iter().copied()));
            assert_eq!(
                (again.base_seq, again.reference_time & 0xFF_FFFF),
                (t.base_seq, t.reference_time & 0xFF_FFFF)
            );
        }
    }
}
