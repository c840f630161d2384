//! The seed corpus (built-in seeds and `corpus/<target>/` files, including any crash
//! reproducers added there) runs through every target as a plain test, plus a short
//! deterministic mutation run, so `cargo test` checks the targets without libFuzzer.

use std::path::PathBuf;
use std::time::Duration;

#[test]
fn corpus_and_short_mutation_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (name, f) in sfu_fuzz::TARGETS {
        let mut seeds = sfu_fuzz::seeds::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        seeds.extend(sfu_fuzz::driver::read_corpus(&root.join("corpus").join(name)));
        for s in &seeds {
            f(s);
        }
        let r = sfu_fuzz::driver::run(
            name,
            *f,
            &seeds,
            Duration::from_secs(2),
            20_000,
            7,
            &std::env::temp_dir().join("sfu-fuzz-artifacts"),
        );
        assert_eq!(r.crashes, 0, "{name}: crashing inputs in {:?}", r.crash_files);
    }
}

/// The shard target's STUN builder really authenticates: a shard answers it (so the fuzzer's
/// datagrams after it reach the validated-address paths).
#[test]
fn shard_target_binding_requests_validate() {
    use sfu::control::{Fingerprint, RemoteTransport, Setup};
    use sfu::{ClockAnchor, Command, ConferenceId, EndpointId, Reply, SfuConfig, Shard};
    use std::time::{Instant, SystemTime};
    let now = Instant::now();
    let local: std::net::SocketAddr = "127.0.0.1:10000".parse().expect("literal");
    let remote: std::net::SocketAddr = "127.0.0.1:5001".parse().expect("literal");
    let config = SfuConfig {
        bind_ip: local.ip(),
        rng_seed: Some(1),
        ..SfuConfig::default()
    };
    let clock = ClockAnchor {
        instant: now,
        system: SystemTime::now(),
    };
    let mut s = Shard::new(config, local, clock).expect("shard");
    let (c, e) = (ConferenceId(0), EndpointId(0));
    s.handle_command(now, Command::CreateConference { conf: c })
        .expect("conf");
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
        other => panic!("{other:?}"),
    };
    let transport = RemoteTransport {
        ufrag: Some("fzuf".into()),
        pwd: Some("fuzzpasswordfuzzpassword".into()),
        fingerprints: vec![Fingerprint {
            hash: "sha-256".into(),
            value: vec![0; 32],
            setup: Some(Setup::Active),
        }],
        candidates: vec![remote],
    };
    s.handle_command(
        now,
        Command::SetRemoteTransport {
            conf: c,
            ep: e,
            transport,
        },
    )
    .expect("transport");
    let m = sfu_fuzz::targets::stun_binding(&t.ufrag, &t.pwd, [3; 12], false);
    s.handle_datagram(now, local, remote, bytes::BytesMut::from(&m[..]));
    let reply = s
        .poll_transmit()
        .unwrap_or_else(|| panic!("no binding response; drops {:?}", s.stats().drops));
    assert_eq!(reply.remote, remote);
    assert_eq!(&reply.data[..2], &[0x01, 0x01], "not a Binding success response");
    // A wrong password gets nothing.
    let bad = sfu_fuzz::targets::stun_binding(&t.ufrag, "wrongwrongwrongwrongwrong", [4; 12], true);
    s.handle_datagram(now, local, remote, bytes::BytesMut::from(&bad[..]));
    while let Some(x) = s.poll_transmit() {
        assert_ne!(&x.data[..2], &[0x01, 0x01], "answered a request with a wrong password");
    }
}

/// The sctp target's handshake really establishes the association, so its fuzzed chunks reach
/// DATA and DCEP handling: the channel opens and a text message is delivered.
#[test]
fn sctp_target_handshake_reaches_dcep() {
    use sfu::sctp::{ChannelEvent, Sctp};
    use sfu_fuzz::net_targets::{dcep_open, sctp_data, sctp_handshake, sctp_packet};
    let now = std::time::Instant::now();
    let mut s = Sctp::new("127.0.0.1:5001".parse().expect("literal"));
    let mut ev = Vec::new();
    let vtag = sctp_handshake(&mut s, now, &mut ev);
    assert_ne!(vtag, 0, "no INIT ACK with a cookie");
    let open = sctp_packet(vtag, &sctp_data(1, 0, 0, 50, &dcep_open(b"datachannel")));
    s.handle_data(now, bytes::BytesMut::from(&open[..]), &mut ev);
    let text = sctp_packet(vtag, &sctp_data(2, 0, 1, 51, b"{\"colibriClass\":\"EndpointStats\"}"));
    s.handle_data(now, bytes::BytesMut::from(&text[..]), &mut ev);
    assert!(ev.contains(&ChannelEvent::Open), "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| matches!(e, ChannelEvent::Text(t) if t.contains("EndpointStats"))),
        "{ev:?}"
    );
}

/// Robustness case 11: an INIT with a parameter shorter than its own header (CVE-2019-20503
/// style) is refused: no INIT ACK, no association.
#[test]
fn sctp_short_parameter_init_is_rejected() {
    use sfu::sctp::Sctp;
    let now = std::time::Instant::now();
    let mut s = Sctp::new("127.0.0.1:5001".parse().expect("literal"));
    let mut ev = Vec::new();
    s.handle_data(
        now,
        bytes::BytesMut::from(&sfu_fuzz::seeds::sctp_init_cve()[..]),
        &mut ev,
    );
    let mut sent = Vec::new();
    while let Some(ps) = s.poll_transmit(now) {
        sent.extend(ps);
    }
    assert!(
        sent.iter().all(|p| p.get(12) != Some(&2)),
        "answered the short-parameter INIT with an INIT ACK"
    );
    assert!(ev.is_empty(), "{ev:?}");
    // The same INIT without the bad parameters is answered (the refusal is about them).
    let mut s = Sctp::new("127.0.0.1:5001".parse().expect("literal"));
    s.handle_data(
        now,
        bytes::BytesMut::from(&sfu_fuzz::net_targets::sctp_init(5, &[])[..]),
        &mut ev,
    );
    let mut answered = false;
    while let Some(ps) = s.poll_transmit(now) {
        answered |= ps.iter().any(|p| p.get(12) == Some(&2));
    }
    assert!(answered, "a plain INIT got no INIT ACK");
}

/// The stun target's messages reach the integrity check: valid MESSAGE-INTEGRITY is answered
/// with a Binding success, a wrong key and a missing one are not.
#[test]
fn stun_target_messages_reach_the_integrity_check() {
    use sfu_fuzz::net_targets::{stun_message, stun_shard};
    let now = std::time::Instant::now();
    let (mut s, ufrag, pwd, local) = stun_shard(now).expect("shard");
    let remote: std::net::SocketAddr = "127.0.0.1:5001".parse().expect("literal");
    let prio = [
        0x00, 0x24, 0x00, 0x04, 0x6E, 0x00, 0x1E, 0xFF, 0x80, 0x29, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7,
    ];
    let answered = |s: &mut sfu::Shard, txid: [u8; 12]| {
        let mut yes = false;
        while let Some(t) = s.poll_transmit() {
            yes |= t.data[..2] == [0x01, 0x01] && t.data[8..20] == txid;
        }
        yes
    };
    for (txid, key, want) in [
        ([1; 12], Some("wrong-password-wrong-password"), false),
        ([2; 12], None, false),
        ([3; 12], Some(pwd.as_str()), true),
    ] {
        let m = stun_message(0x0001, txid, &ufrag, &prio, key);
        s.handle_datagram(now, local, remote, bytes::BytesMut::from(&m[..]));
        assert_eq!(answered(&mut s, txid), want, "key {key:?}");
    }
    let drops: u64 = s
        .stats()
        .drops
        .iter()
        .filter(|(r, _)| *r == "stun_rejected")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(drops, 2, "{:?}", s.stats().drops);
}

/// Robustness case 7: a transport-cc feedback whose status count (65535) is more than its
/// chunks describe is rejected; with enough chunks it yields exactly 65535 packets, never
/// more than 2^16 - 1, and decoding allocates nothing (the packets are an iterator).
#[test]
fn twcc_status_count_beyond_chunks_is_rejected() {
    use sfu::wire::rtcp::{RtcpCompound, RtcpPacket};
    let wrap = |fci: &[u8]| {
        let mut p = vec![0x8F, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(fci);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    };
    let seeds = sfu_fuzz::seeds::twcc_fci();
    let (short, enough) = (&seeds[2], &seeds[3]);
    let p = wrap(short);
    match RtcpCompound::new(&p).next() {
        Some(Err(_)) => {}
        other => panic!("65535 packets claimed, 65528 described: {other:?}"),
    }
    let p = wrap(enough);
    let Some(Ok(RtcpPacket::TransportCc(t))) = RtcpCompound::new(&p).next() else {
        panic!("a complete 65535-packet feedback does not parse");
    };
    assert_eq!(t.packets().count(), 65535);
    assert!(t.packets().all(|x| x.recv_delta.is_none()));
    // 22 bytes of FCI describe 65535 packets: the decoder must not materialise them.
    assert!(p.len() < 64);
}

/// The dtls_records target reaches rtc-dtls: a complete ClientHello gets an answer flight.
#[test]
fn dtls_target_client_hello_gets_a_flight() {
    use sfu::config::{HandshakeSlots, SrtpProfile};
    use sfu::dtls::{Dtls, DtlsContext, LocalCert, Role};
    let provider = rtc_dtls::crypto_provider::default_provider().expect("provider");
    let cert = LocalCert::generate(&provider).expect("certificate");
    let slots = HandshakeSlots::new(1);
    let ctx = DtlsContext {
        provider: &provider,
        cert: &cert,
        fingerprints: &[],
        allowed: &[SrtpProfile::AeadAes128Gcm],
        slots: &slots,
    };
    let mut d = Dtls::new(Role::Server, "127.0.0.1:10000".parse().expect("literal"));
    let mut ev = Vec::new();
    let hello = sfu_fuzz::seeds::client_hello_record(&[0x0007, 0x0001], 1);
    let r = d.handle_datagram(
        std::time::Instant::now(),
        "127.0.0.1:5001".parse().expect("literal"),
        bytes::BytesMut::from(&hello[..]),
        &ctx,
        &mut ev,
    );
    assert_eq!(r, Ok(()));
    let answered = d.poll_transmit().is_some();
    let reasons: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            sfu::dtls::DtlsEvent::Failed(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert!(reasons.is_empty(), "{reasons:?}");
    assert!(answered, "no answer to a complete ClientHello");
    assert_eq!(slots.in_flight(), 1);
}
