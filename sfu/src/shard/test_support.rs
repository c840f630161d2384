//! Helpers shared by the shard's unit tests (`shard::tests`, `guard`, `ice_restart_tests`).

use super::*;

/// A STUN binding request with only a USERNAME (routed by its ufrag, before any integrity
/// check), transaction id `tx` repeated.
pub(super) fn stun_binding(username: &str, tx: u8) -> BytesMut {
    let mut attrs = vec![0x00, 0x06];
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[tx; 12]);
    m.extend_from_slice(&attrs);
    BytesMut::from(&m[..])
}

/// A shard at `local` with conference 1 and its ICE-controlling endpoint 1 ("ep1", no SCTP):
/// the shard, the time it was made at, and the endpoint's transport.
pub(super) fn shard_with_endpoint(config: SfuConfig, local: SocketAddr) -> (Shard, Instant, LocalTransport) {
    let now = Instant::now();
    let clock = ClockAnchor {
        instant: now,
        system: SystemTime::now(),
    };
    let mut s = Shard::new(config, local, clock).expect("shard");
    let (conf, ep) = (ConferenceId(1), EndpointId(1));
    assert!(s.handle_command(now, Command::CreateConference { conf }).is_ok());
    let created = s.handle_command(
        now,
        Command::CreateEndpoint {
            conf,
            ep,
            ice_controlling: true,
            sctp: false,
            visitor: false,
            name: "ep1".into(),
            ssrc_rewriting: false,
        },
    );
    let Ok(Reply::EndpointCreated(transport)) = created else {
        panic!("CreateEndpoint: {created:?}");
    };
    (s, now, transport)
}
