//! In-place ICE restart (colibri.md §4.3, robustness.md case 48) against a real ICE peer: an
//! rtc-ice agent playing the client (ICE controlled), datagrams passed in memory on a
//! simulated clock.

use super::test_support::{shard_with_endpoint, stun_binding};
use super::*;

pub(super) const BRIDGE: &str = "127.0.0.1:10000";
pub(super) const PEER: &str = "127.0.0.1:40000";
/// The client agent's ufrag in [`connected`].
pub(super) const CLIENT_UFRAG: &str = "clientufrag0";
/// Simulated time per pump step.
const STEP: Duration = Duration::from_millis(5);

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

pub(super) struct Setup {
    pub(super) s: Shard,
    pub(super) now: Instant,
    pub(super) client: rtc_ice::agent::Agent,
    pub(super) conf: ConferenceId,
    pub(super) ep: EndpointId,
}

impl Setup {
    pub(super) fn ep(&self) -> &Endpoint {
        &self.s.conferences[&self.conf].endpoints[&self.ep]
    }

    pub(super) fn drops(&self, reason: &str) -> u64 {
        self.s
            .stats()
            .drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Pass datagrams both ways and run both sides' timers, `STEP` at a time, until `done`
    /// holds (true) or `limit` of simulated time passed (false).
    pub(super) fn pump_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let now = self.now;
            if self.s.poll_timeout().is_some_and(|t| t <= now) {
                self.s.handle_timeout(now);
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.client.handle_timeout(now);
            }
            while let Some(t) = self.s.poll_transmit() {
                if t.remote == addr(PEER) {
                    let _ = self.client.handle_read(TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: addr(PEER),
                            peer_addr: addr(BRIDGE),
                            transport_protocol: TransportProtocol::UDP,
                            ecn: None,
                        },
                        message: t.data,
                    });
                }
            }
            while let Some(t) = self.client.poll_write() {
                self.s.handle_datagram(now, addr(BRIDGE), addr(PEER), t.message);
            }
            while self.client.poll_event().is_some() {}
            self.now += STEP;
        }
        done(self)
    }

    fn restart(&mut self) -> (LocalTransport, Option<u32>) {
        match self.s.handle_command(
            self.now,
            Command::RestartIce {
                conf: self.conf,
                ep: self.ep,
            },
        ) {
            Ok(Reply::IceRestarted { transport, generation }) => (transport, generation),
            other => panic!("RestartIce: {other:?}"),
        }
    }

    /// The client restarts its agent with new credentials toward the bridge's `bridge`
    /// credentials and Jicofo forwards its new transport.
    fn client_restarts(&mut self, bridge: &LocalTransport, ufrag: &str) {
        let pwd = rtc_ice::rand::generate_pwd();
        self.client
            .restart(self.now, ufrag.to_owned(), pwd.clone(), true)
            .expect("client restart");
        let cand = remote_host_candidate(addr(BRIDGE)).expect("bridge candidate");
        self.client
            .add_remote_candidate(cand)
            .expect("bridge candidate accepted");
        self.client
            .start_connectivity_checks(self.now, false, bridge.ufrag.clone(), bridge.pwd.clone())
            .expect("client checks");
        let r = self.s.handle_command(
            self.now,
            Command::SetRemoteTransport {
                conf: self.conf,
                ep: self.ep,
                transport: RemoteTransport {
                    ufrag: Some(ufrag.to_owned()),
                    pwd: Some(pwd),
                    fingerprints: vec![],
                    candidates: vec![addr(PEER)],
                },
            },
        );
        assert_eq!(r, Ok(Reply::Done));
    }
}

/// A shard with one endpoint (bridge ICE-controlling) and a client agent connected to it.
pub(super) fn connected() -> (Setup, LocalTransport) {
    let config = SfuConfig {
        rng_seed: Some(48),
        ..SfuConfig::default()
    };
    let (mut s, now, bridge) = shard_with_endpoint(config, addr(BRIDGE));
    let (conf, ep) = (ConferenceId(1), EndpointId(1));
    let provider = rtc_dtls::crypto_provider::default_provider().expect("crypto provider");
    let (cu, cp) = (CLIENT_UFRAG.to_owned(), rtc_ice::rand::generate_pwd());
    let mut client = crate::endpoint::new_agent(
        now,
        cu.clone(),
        cp.clone(),
        false,
        &[addr(PEER)],
        Duration::from_secs(2),
        provider,
    )
    .expect("client agent");
    client
        .add_remote_candidate(remote_host_candidate(addr(BRIDGE)).expect("candidate"))
        .expect("bridge candidate accepted");
    client
        .start_connectivity_checks(now, false, bridge.ufrag.clone(), bridge.pwd.clone())
        .expect("client checks");
    let r = s.handle_command(
        now,
        Command::SetRemoteTransport {
            conf,
            ep,
            transport: RemoteTransport {
                ufrag: Some(cu),
                pwd: Some(cp),
                fingerprints: vec![],
                candidates: vec![addr(PEER)],
            },
        },
    );
    assert_eq!(r, Ok(Reply::Done));
    let mut t = Setup {
        s,
        now,
        client,
        conf,
        ep,
    };
    assert!(
        t.pump_until(Duration::from_secs(5), |t| t.ep().ice_connected),
        "ICE connects before the restart"
    );
    (t, bridge)
}

/// Before ICE connected there is nothing to restart: the current credentials, no generation.
#[test]
fn restart_before_connect_answers_current_credentials() {
    let (mut s, now, bridge) = shard_with_endpoint(SfuConfig::default(), addr(BRIDGE));
    let (conf, ep) = (ConferenceId(1), EndpointId(1));
    let r = s.handle_command(now, Command::RestartIce { conf, ep });
    assert_eq!(
        r,
        Ok(Reply::IceRestarted {
            transport: bridge,
            generation: None
        })
    );
    assert_eq!(s.by_ufrag.len(), 1, "no second agent");
    let r = s.handle_command(
        now,
        Command::RestartIce {
            conf,
            ep: EndpointId(9),
        },
    );
    assert!(matches!(r, Err(CommandError::EndpointNotFound { .. })), "{r:?}");
}

/// Case 48: new credentials (same candidates and certificate); the old ufrag keeps working
/// until the first authenticated check with the new one, then it is refused (counted), and
/// the switch takes well under a second. A second restart retires the first one's ufrag for
/// good (only the last retired ufrag is remembered).
#[test]
fn ice_restart_switches_credentials_and_refuses_the_old_ufrag() {
    let (mut t, bridge) = connected();
    let old_selected = t.ep().selected;
    assert!(old_selected.is_some());

    let (new, generation) = t.restart();
    assert_eq!(generation, Some(1));
    assert_ne!(new.ufrag, bridge.ufrag);
    assert_ne!(new.pwd, bridge.pwd);
    assert_eq!(
        new.fingerprint_sha256, bridge.fingerprint_sha256,
        "same DTLS certificate"
    );
    assert_eq!(new.candidates, bridge.candidates, "same candidates");
    // Asked again before the client switched: the same new credentials.
    assert_eq!(t.restart(), (new.clone(), Some(1)));

    // Both ufrags reach an agent for now: a check without MESSAGE-INTEGRITY is rejected by
    // the agent (stun_rejected), not refused by the demux.
    let rejected = t.drops("stun_rejected");
    for u in [&bridge.ufrag, &new.ufrag] {
        t.s.handle_datagram(t.now, addr(BRIDGE), addr(PEER), stun_binding(&format!("{u}:x"), 9));
    }
    assert_eq!(t.drops("stun_rejected"), rejected + 2);
    assert_eq!(t.drops("stale_ufrag"), 0);
    assert_eq!(t.drops("unknown_ufrag"), 0);

    // The old session keeps running (consent with the old credentials) while nothing else
    // happens.
    assert!(!t.pump_until(Duration::from_secs(3), |t| t.ep().ice_next.is_none()));
    assert_eq!(t.ep().local_ufrag, bridge.ufrag);
    assert!(t.ep().ice_connected && t.ep().selected == old_selected);

    // The client restarts too and Jicofo forwards its new transport: the switch follows at
    // its first authenticated check.
    t.client_restarts(&new, "clientufrag1");
    let started = t.now;
    assert!(
        t.pump_until(Duration::from_secs(1), |t| t.ep().ice_next.is_none()),
        "switched to the new credentials within 1 s"
    );
    assert!(t.now - started < Duration::from_secs(1));
    assert_eq!(t.ep().local_ufrag, new.ufrag);
    assert_eq!(t.ep().retired_ufrag.as_deref(), Some(bridge.ufrag.as_str()));
    assert!(
        t.pump_until(Duration::from_secs(1), |t| t
            .ep()
            .ice
            .get_selected_candidate_pair()
            .is_some()),
        "the new agent selects a pair"
    );
    assert_eq!(t.ep().selected, old_selected, "same path, no interruption");

    // The old ufrag is refused (counted) before any agent sees it; the new one is live.
    t.s.handle_datagram(
        t.now,
        addr(BRIDGE),
        addr(PEER),
        stun_binding(&format!("{}:x", bridge.ufrag), 9),
    );
    assert_eq!(t.drops("stale_ufrag"), 1);
    let rejected = t.drops("stun_rejected");
    t.s.handle_datagram(
        t.now,
        addr(BRIDGE),
        addr(PEER),
        stun_binding(&format!("{}:x", new.ufrag), 9),
    );
    assert_eq!(t.drops("stun_rejected"), rejected + 1);
    // Consent keeps working on the new credentials, and the old one stays refused.
    let stale = t.drops("stale_ufrag");
    assert!(!t.pump_until(Duration::from_secs(10), |t| !t.ep().ice_connected
        || t.ep().ice.state() == ConnectionState::Failed));
    assert_eq!(t.drops("stale_ufrag"), stale, "the client no longer uses the old ufrag");

    // A second restart: generation 2; the first ufrag is then forgotten entirely.
    let (newer, generation) = t.restart();
    assert_eq!(generation, Some(2));
    t.client_restarts(&newer, "clientufrag2");
    assert!(t.pump_until(Duration::from_secs(1), |t| t.ep().ice_next.is_none()));
    assert_eq!(t.ep().local_ufrag, newer.ufrag);
    assert_eq!(t.s.by_ufrag.len(), 2, "current and last retired ufrag only");
    t.s.handle_datagram(
        t.now,
        addr(BRIDGE),
        addr(PEER),
        stun_binding(&format!("{}:x", bridge.ufrag), 9),
    );
    assert_eq!(t.drops("unknown_ufrag"), 1);
    t.s.handle_datagram(
        t.now,
        addr(BRIDGE),
        addr(PEER),
        stun_binding(&format!("{}:x", new.ufrag), 9),
    );
    assert_eq!(t.drops("stale_ufrag"), stale + 1);

    // Expiry forgets every ufrag of the endpoint.
    let r =
        t.s.handle_command(t.now, Command::ExpireEndpoint { conf: t.conf, ep: t.ep });
    assert_eq!(r, Ok(Reply::Done));
    assert!(t.s.by_ufrag.is_empty());
}

/// A restart the client never answers is abandoned when its agent fails; the old
/// credentials keep working and the abandoned ufrag is forgotten.
#[test]
fn unanswered_restart_keeps_the_old_credentials() {
    let (mut t, bridge) = connected();
    let (new, _) = t.restart();
    // Jicofo forwards credentials, but the client never uses the new bridge ufrag.
    let r = t.s.handle_command(
        t.now,
        Command::SetRemoteTransport {
            conf: t.conf,
            ep: t.ep,
            transport: RemoteTransport {
                ufrag: Some("clientufrag9".into()),
                pwd: Some(rtc_ice::rand::generate_pwd()),
                fingerprints: vec![],
                candidates: vec![],
            },
        },
    );
    assert_eq!(r, Ok(Reply::Done));
    assert!(t.ep().ice_next.as_ref().is_some_and(|n| n.started));
    assert!(
        t.pump_until(Duration::from_secs(60), |t| t.ep().ice_next.is_none()),
        "the unanswered restart is abandoned"
    );
    assert_eq!(t.ep().local_ufrag, bridge.ufrag);
    assert!(!t.s.by_ufrag.contains_key(&new.ufrag));
    assert!(t.ep().ice_connected && t.ep().ice.state() != ConnectionState::Failed);
}
