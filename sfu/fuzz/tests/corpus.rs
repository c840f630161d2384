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
    s.handle_command(now, Command::CreateConference { conf: c }).expect("conf");
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
    s.handle_command(now, Command::SetRemoteTransport { conf: c, ep: e, transport })
        .expect("transport");
    let m = sfu_fuzz::targets::stun_binding(&t.ufrag, &t.pwd, [3; 12], false);
    s.handle_datagram(now, local, remote, bytes::BytesMut::from(&m[..]));
    let reply = s.poll_transmit().unwrap_or_else(|| panic!("no binding response; drops {:?}", s.stats().drops));
    assert_eq!(reply.remote, remote);
    assert_eq!(&reply.data[..2], &[0x01, 0x01], "not a Binding success response");
    // A wrong password gets nothing.
    let bad = sfu_fuzz::targets::stun_binding(&t.ufrag, "wrongwrongwrongwrongwrong", [4; 12], true);
    s.handle_datagram(now, local, remote, bytes::BytesMut::from(&bad[..]));
    while let Some(x) = s.poll_transmit() {
        assert_ne!(&x.data[..2], &[0x01, 0x01], "answered a request with a wrong password");
    }
}
