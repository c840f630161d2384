//! Panic isolation (robustness.md case 57): the shard's entry points run their work under
//! `catch_unwind`. A panic while one conference is being processed (a datagram routed to it,
//! its timers, a command for it) tears that conference down whole — its endpoints, their
//! address and ufrag demux entries — and counts `task_panics`; the other conferences of the
//! shard keep running. Signaling learns of the loss through one
//! [`Event::EndpointExpired`] (reason [`ExpireReason::ConferencePanicked`]) per endpoint.
//!
//! A panic outside any conference (demux before routing) is counted and logged; the shard
//! state it could have touched is per-call scratch, so nothing is torn down.
//!
//! The release profile must unwind (no `panic = "abort"`) for this to work.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::BytesMut;

use super::Shard;
use crate::control::{Command, CommandError, Event, ExpireReason, FaultSite, Reply};
use crate::id::ConferenceId;

/// Conferences armed to panic at a site ([`Command::InjectPanic`], tests only). Empty in
/// normal operation, where [`Armed::check`] is one branch.
#[derive(Default)]
pub(super) struct Armed(Vec<(ConferenceId, FaultSite)>);

impl Armed {
    pub(super) fn arm(&mut self, conf: ConferenceId, site: FaultSite) {
        self.0.push((conf, site));
    }

    /// Panics (once) if `conf` is armed at `site`.
    #[inline]
    pub(super) fn check(&mut self, conf: ConferenceId, site: FaultSite) {
        if self.0.is_empty() {
            return;
        }
        if let Some(i) = self.0.iter().position(|&(c, s)| c == conf && s == site) {
            self.0.swap_remove(i);
            panic!("fault injection: panic in conference {conf} ({site:?})");
        }
    }

    fn forget(&mut self, conf: ConferenceId) {
        self.0.retain(|(c, _)| *c != conf);
    }
}

/// The panic message, when it is a string (as `panic!` with a message makes it).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "non-string panic payload"
    }
}

impl Shard {
    /// One datagram from the shared socket. Bad input is counted, never returned. A panic in
    /// its processing removes the conference it was routed to (see the module docs).
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: BytesMut) {
        self.in_conf = None;
        let r = catch_unwind(AssertUnwindSafe(|| self.datagram(now, local, remote, data)));
        if let Err(payload) = r {
            self.on_panic("datagram", payload.as_ref());
            self.recompute_timeout();
        }
    }

    /// [`Self::handle_datagram`] for a datagram the kernel timestamped on arrival: `arrival`
    /// (clamped to `now`) is what the sender's transport-cc feedback and receive-side estimate
    /// record, so datagrams read in one batch keep their real spacing; everything else runs at
    /// `now`.
    pub fn handle_datagram_at(
        &mut self,
        now: Instant,
        arrival: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: BytesMut,
    ) {
        self.io.arrival = Some(arrival.min(now));
        self.handle_datagram(now, local, remote, data);
        self.io.arrival = None;
    }

    /// Apply one command. A panic while executing it removes the command's conference and
    /// answers [`CommandError::Internal`].
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<Reply, CommandError> {
        let conf = cmd.conference();
        self.in_conf = Some(conf);
        let r = catch_unwind(AssertUnwindSafe(|| self.command(now, cmd)));
        let r = match r {
            Ok(r) => r,
            Err(payload) => {
                self.on_panic("command", payload.as_ref());
                Err(CommandError::Internal(format!(
                    "processing conference {conf} panicked; the conference was removed"
                )))
            }
        };
        self.in_conf = None;
        self.recompute_timeout();
        r
    }

    /// Run the timers that are due. A panic in one conference's timers removes that
    /// conference; the timers of the others still run (the pass is restarted without it).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each restart follows the removal of one conference, so this ends.
        loop {
            self.in_conf = None;
            let r = catch_unwind(AssertUnwindSafe(|| self.timeout(now)));
            match r {
                Ok(()) => return,
                Err(payload) => {
                    if !self.on_panic("timeout", payload.as_ref()) {
                        break;
                    }
                }
            }
        }
        self.recompute_timeout();
    }

    /// Count and log a caught panic and tear down the conference being processed, if any.
    /// Whether a conference was removed.
    fn on_panic(&mut self, during: &'static str, payload: &(dyn Any + Send)) -> bool {
        self.io.c.task_panics += 1;
        let msg = panic_message(payload);
        match self.in_conf.take() {
            Some(conf) => self.remove_panicked_conference(conf, during, msg),
            None => {
                tracing::error!(parent: &self.span, during, panic = msg, "panic outside any conference; nothing torn down");
                false
            }
        }
    }

    /// Remove a conference whose processing panicked: its state may be half-updated, so it is
    /// dropped whole without running per-endpoint teardown (no DTLS close_notify), and every
    /// demux entry pointing into it goes too. Whether it existed.
    fn remove_panicked_conference(&mut self, conf: ConferenceId, during: &'static str, msg: &str) -> bool {
        let Some(c) = self.conferences.remove(&conf) else {
            tracing::error!(parent: &self.span, %conf, during, panic = msg, "panic in a conference that no longer exists");
            return false;
        };
        tracing::error!(
            parent: &c.span,
            during,
            panic = msg,
            endpoints = c.endpoints.len(),
            "conference processing panicked; conference torn down"
        );
        self.armed.forget(conf);
        self.by_addr.retain(|_, k| k.0 != conf);
        self.by_ufrag.retain(|_, k| k.0 != conf);
        for &ep in c.endpoints.keys() {
            self.io.events.push_back(Event::EndpointExpired {
                conf,
                ep,
                reason: ExpireReason::ConferencePanicked,
            });
        }
        // Its destructors run on possibly inconsistent state: contain them as well.
        if catch_unwind(AssertUnwindSafe(move || drop(c))).is_err() {
            tracing::error!(parent: &self.span, %conf, "dropping a panicked conference panicked too");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant, SystemTime};

    use crate::config::SfuConfig;
    use bytes::BytesMut;

    use crate::control::{Command, CommandError, Event, ExpireReason, FaultSite, Reply};
    use crate::id::{ConferenceId, EndpointId};
    use crate::shard::{ClockAnchor, Shard};

    fn shard() -> (Shard, Instant) {
        let now = Instant::now();
        let cfg = SfuConfig {
            rng_seed: Some(7),
            ..SfuConfig::default()
        };
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 10000));
        let clock = ClockAnchor {
            instant: now,
            system: SystemTime::now(),
        };
        (Shard::new(cfg, local, clock).expect("shard"), now)
    }

    fn endpoint(s: &mut Shard, now: Instant, conf: u32, ep: u32) -> String {
        let r = s.handle_command(
            now,
            Command::CreateEndpoint {
                conf: ConferenceId(conf),
                ep: EndpointId(ep),
                ice_controlling: true,
                sctp: false,
                visitor: false,
                name: format!("e{ep}"),
                ssrc_rewriting: false,
            },
        );
        match r {
            Ok(Reply::EndpointCreated(t)) => t.ufrag,
            other => panic!("create endpoint: {other:?}"),
        }
    }

    /// Two conferences with endpoints; the ufrags of conference 1's endpoint.
    fn two_conferences(s: &mut Shard, now: Instant) -> String {
        for c in [1, 2] {
            assert!(s
                .handle_command(now, Command::CreateConference { conf: ConferenceId(c) })
                .is_ok());
        }
        endpoint(s, now, 2, 20);
        endpoint(s, now, 1, 10)
    }

    /// A STUN binding request whose USERNAME starts with `ufrag` (routed by it, before any
    /// integrity check).
    fn stun_request(ufrag: &str) -> BytesMut {
        crate::shard::test_support::stun_binding(&format!("{ufrag}:remote"), 7)
    }

    /// A panic in one conference's timers removes it; the other conference's timers still run
    /// in the same pass.
    #[test]
    fn panic_in_a_timer_removes_only_that_conference() {
        let (mut s, now) = shard();
        two_conferences(&mut s, now);
        let r = s.handle_command(
            now,
            Command::InjectPanic {
                conf: ConferenceId(1),
                site: FaultSite::Timer,
            },
        );
        assert_eq!(r, Ok(Reply::Done));
        assert_eq!(s.stats().conferences, 2, "armed, not yet fired");
        let later = now + Duration::from_millis(200);
        s.handle_timeout(later);
        let st = s.stats();
        assert_eq!((st.conferences, st.endpoints, st.task_panics), (1, 1, 1));
        let c2 = &s.conferences[&ConferenceId(2)];
        assert!(c2.next_tick > later, "the survivor's tick ran in the same pass");
        assert!(s.poll_timeout().is_some());
        s.handle_timeout(later + Duration::from_millis(200));
        assert_eq!(s.stats().task_panics, 1);
    }

    /// A panic while handling a datagram routed to a conference removes that conference; the
    /// next datagram for it is an unknown ufrag.
    #[test]
    fn panic_in_a_datagram_removes_only_that_conference() {
        let (mut s, now) = shard();
        let ufrag = two_conferences(&mut s, now);
        assert_eq!(
            s.handle_command(
                now,
                Command::InjectPanic {
                    conf: ConferenceId(1),
                    site: FaultSite::Datagram,
                },
            ),
            Ok(Reply::Done)
        );
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 10000));
        let remote = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        s.handle_datagram(now, local, remote, stun_request(&ufrag));
        let st = s.stats();
        assert_eq!((st.conferences, st.endpoints, st.task_panics), (1, 1, 1));
        s.handle_datagram(now, local, remote, stun_request(&ufrag));
        let st = s.stats();
        assert_eq!(st.task_panics, 1);
        assert!(st.drops.contains(&("unknown_ufrag", 1)), "{:?}", st.drops);
    }

    /// A panic in one conference removes it, its endpoints and their ufrags, reports the
    /// endpoints as expired, and leaves the other conference and the shard working.
    #[test]
    fn panic_in_one_conference_removes_only_it() {
        let (mut s, now) = shard();
        for c in [1, 2] {
            assert!(s
                .handle_command(now, Command::CreateConference { conf: ConferenceId(c) })
                .is_ok());
        }
        let u1 = endpoint(&mut s, now, 1, 10);
        endpoint(&mut s, now, 1, 11);
        let u2 = endpoint(&mut s, now, 2, 20);
        assert_eq!(s.stats().endpoints, 3);

        let r = s.handle_command(
            now,
            Command::InjectPanic {
                conf: ConferenceId(1),
                site: FaultSite::Command,
            },
        );
        assert!(matches!(r, Err(CommandError::Internal(_))), "{r:?}");
        let st = s.stats();
        assert_eq!(st.task_panics, 1);
        assert_eq!(st.conferences, 1);
        assert_eq!(st.endpoints, 1);
        assert!(!s.by_ufrag.contains_key(&u1));
        assert!(s.by_ufrag.contains_key(&u2));
        let mut gone: Vec<u32> = std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::EndpointExpired {
                    conf,
                    ep,
                    reason: ExpireReason::ConferencePanicked,
                } => {
                    assert_eq!(conf, ConferenceId(1));
                    Some(ep.0)
                }
                _ => None,
            })
            .collect();
        gone.sort_unstable();
        assert_eq!(gone, vec![10, 11]);

        // The survivor still takes commands and timers; the removed one is unknown.
        endpoint(&mut s, now, 2, 21);
        s.handle_timeout(now + Duration::from_millis(200));
        assert_eq!(s.stats().endpoints, 2);
        assert!(matches!(
            s.handle_command(
                now,
                Command::InjectPanic {
                    conf: ConferenceId(1),
                    site: FaultSite::Command,
                }
            ),
            Err(CommandError::ConferenceNotFound(_))
        ));
        assert_eq!(s.stats().task_panics, 1);
        // The same id can be created again.
        assert!(s
            .handle_command(now, Command::CreateConference { conf: ConferenceId(1) })
            .is_ok());
    }
}
