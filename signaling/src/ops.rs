//! The bridge's operational state: shutdown (RUNNING → GRACEFUL_SHUTDOWN → SHUTTING_DOWN →
//! exit, colibri.md §7.1), drain, health inputs and XMPP connection counts. Shared by REST,
//! presence and the server loop; nothing here is on the per-packet path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

/// JVB's `ShutdownManager` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownState {
    Running,
    GracefulShutdown,
    ShuttingDown,
}

impl ShutdownState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownState::Running => "RUNNING",
            ShutdownState::GracefulShutdown => "GRACEFUL_SHUTDOWN",
            ShutdownState::ShuttingDown => "SHUTTING_DOWN",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => ShutdownState::Running,
            1 => ShutdownState::GracefulShutdown,
            _ => ShutdownState::ShuttingDown,
        }
    }
}

/// What the XMPP side reports for `/colibri/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmppCounts {
    pub clients_configured: usize,
    pub clients_connected: usize,
    pub mucs_configured: usize,
    pub mucs_joined: usize,
    /// Connections lost since start, all servers together (JVB `xmpp_disconnects`).
    pub disconnects: u64,
    /// Per configured server (`host:port`): logged in right now.
    pub servers: Vec<(String, bool)>,
}

/// Shared operational state. Cheap to read from any thread.
pub struct Ops {
    state: AtomicU8,
    state_tx: watch::Sender<ShutdownState>,
    /// The handler's refuse-new-conferences flag: set on entering GRACEFUL_SHUTDOWN (and
    /// SHUTTING_DOWN).
    refuse_new: Arc<AtomicBool>,
    drain: AtomicBool,
    /// Set by the media core's event loop when the core stops (its event channel closes).
    media_alive: AtomicBool,
    /// Every address the bridge advertises (host, static mappings, STUN); empty: none usable.
    addresses: Mutex<Vec<IpAddr>>,
    require_valid_address: bool,
    xmpp_clients: Mutex<Vec<crate::xmpp::XmppClient>>,
    xmpp_disconnects: AtomicU64,
    /// `force` stops the process now (a second SIGTERM).
    force_tx: watch::Sender<bool>,
    /// Bumped whenever something presence shows changed (drain, shutdown state).
    presence_tx: watch::Sender<u64>,
    graceful_since: Mutex<Option<Instant>>,
    pub started: SystemTime,
}

impl Ops {
    /// `refuse_new` is the Colibri2 handler's graceful-shutdown flag.
    pub fn new(refuse_new: Arc<AtomicBool>, initial_drain: bool, require_valid_address: bool) -> Arc<Self> {
        let (state_tx, _) = watch::channel(ShutdownState::Running);
        let (force_tx, _) = watch::channel(false);
        let (presence_tx, _) = watch::channel(0);
        Arc::new(Ops {
            state: AtomicU8::new(0),
            state_tx,
            refuse_new,
            drain: AtomicBool::new(initial_drain),
            media_alive: AtomicBool::new(true),
            addresses: Mutex::new(Vec::new()),
            require_valid_address,
            xmpp_clients: Mutex::new(Vec::new()),
            xmpp_disconnects: AtomicU64::new(0),
            force_tx,
            presence_tx,
            graceful_since: Mutex::new(None),
            started: SystemTime::now(),
        })
    }

    /// The Colibri2 handler's refuse-new-conferences flag (give it to `HandlerConfig`).
    pub fn refuse_flag(&self) -> Arc<AtomicBool> {
        self.refuse_new.clone()
    }

    pub fn state(&self) -> ShutdownState {
        ShutdownState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Changes of the shutdown state.
    pub fn watch_state(&self) -> watch::Receiver<ShutdownState> {
        self.state_tx.subscribe()
    }

    /// Changes that the stats presence should announce at once (drain, shutdown state).
    pub fn watch_presence(&self) -> watch::Receiver<u64> {
        self.presence_tx.subscribe()
    }

    /// Resolves when a forced stop is requested.
    pub fn watch_force(&self) -> watch::Receiver<bool> {
        self.force_tx.subscribe()
    }

    /// `POST /colibri/shutdown` and SIGTERM: graceful → GRACEFUL_SHUTDOWN (unless already
    /// further), else straight to SHUTTING_DOWN. States only move forward.
    pub fn request_shutdown(&self, graceful: bool) {
        let target = if graceful {
            ShutdownState::GracefulShutdown
        } else {
            ShutdownState::ShuttingDown
        };
        self.advance(target);
    }

    /// Move forward to `target` (no-op if already there or beyond).
    pub fn advance(&self, target: ShutdownState) {
        let prev = ShutdownState::from_u8(self.state.fetch_max(target as u8, Ordering::AcqRel));
        if prev >= target {
            return;
        }
        self.refuse_new.store(true, Ordering::Release);
        if target == ShutdownState::GracefulShutdown {
            if let Ok(mut g) = self.graceful_since.lock() {
                *g = Some(Instant::now());
            }
        }
        tracing::info!(from = prev.as_str(), to = target.as_str(), "shutdown state");
        self.state_tx.send_replace(target);
        self.presence_tx.send_modify(|n| *n += 1);
    }

    /// When GRACEFUL_SHUTDOWN began.
    pub fn graceful_since(&self) -> Option<Instant> {
        self.graceful_since.lock().ok().and_then(|g| *g)
    }

    /// Stop now (second SIGTERM): the server leaves XMPP and stops within a few seconds.
    pub fn force_stop(&self) {
        self.advance(ShutdownState::ShuttingDown);
        self.force_tx.send_replace(true);
    }

    pub fn is_forced(&self) -> bool {
        *self.force_tx.borrow()
    }

    pub fn drain(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }

    pub fn set_drain(&self, on: bool) {
        let prev = self.drain.swap(on, Ordering::Relaxed);
        if prev != on {
            tracing::info!(drain = on, "drain mode");
            self.presence_tx.send_modify(|n| *n += 1);
        }
    }

    pub fn set_media_alive(&self, alive: bool) {
        self.media_alive.store(alive, Ordering::Relaxed);
    }

    /// The addresses the bridge advertises, for the health check.
    pub fn set_addresses(&self, ips: Vec<IpAddr>) {
        if let Ok(mut a) = self.addresses.lock() {
            *a = ips;
        }
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// `Ok` when the media socket is served and an address is usable (JVB's health check,
    /// media.md §8.2): some address at all, and a public one when `require_valid_address`.
    pub fn health(&self) -> Result<(), String> {
        if !self.media_alive.load(Ordering::Relaxed) {
            return Err("the media port is not bound (media core stopped)".into());
        }
        let addrs = self.addresses();
        if addrs.is_empty() {
            return Err("no usable address to advertise".into());
        }
        if self.require_valid_address && !addrs.iter().any(|ip| is_public(*ip)) {
            return Err(format!(
                "no public address among {addrs:?} (require_valid_address is set)"
            ));
        }
        Ok(())
    }

    /// The XMPP connections, read live for stats.
    pub fn set_xmpp_clients(&self, clients: Vec<crate::xmpp::XmppClient>) {
        if let Ok(mut x) = self.xmpp_clients.lock() {
            *x = clients;
        }
    }

    pub fn count_xmpp_disconnect(&self) {
        self.xmpp_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections and rooms, as of now.
    pub fn xmpp(&self) -> XmppCounts {
        let mut c = XmppCounts {
            disconnects: self.xmpp_disconnects.load(Ordering::Relaxed),
            ..XmppCounts::default()
        };
        let clients = self.xmpp_clients.lock().map(|x| x.clone()).unwrap_or_default();
        c.clients_configured = clients.len();
        for client in &clients {
            let st = client.state();
            c.clients_connected += usize::from(st.connected);
            c.servers.push((client.server().to_owned(), st.connected));
            c.mucs_configured += st.rooms.len();
            c.mucs_joined += st.rooms.iter().filter(|r| r.joined).count();
        }
        c
    }
}

/// Not private, loopback, link-local, unspecified, carrier-grade NAT or multicast: an
/// address a client on the Internet can reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                // 100.64/10 carrier-grade NAT
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80) // link local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        let flag = Arc::new(AtomicBool::new(false));
        let ops = Ops::new(flag.clone(), false, false);
        assert_eq!(ops.state(), ShutdownState::Running);
        ops.request_shutdown(true);
        assert_eq!(ops.state(), ShutdownState::GracefulShutdown);
        assert!(flag.load(Ordering::Relaxed), "new conferences refused");
        assert!(ops.graceful_since().is_some());
        ops.request_shutdown(false);
        assert_eq!(ops.state(), ShutdownState::ShuttingDown);
        ops.request_shutdown(true);
        assert_eq!(ops.state(), ShutdownState::ShuttingDown, "no way back");
    }

    #[test]
    fn health_needs_media_and_an_address() {
        let ops = Ops::new(Arc::new(AtomicBool::new(false)), false, false);
        assert!(ops.health().unwrap_err().contains("no usable address"));
        ops.set_addresses(vec!["10.0.0.1".parse().unwrap()]);
        assert!(ops.health().is_ok());
        ops.set_media_alive(false);
        assert!(ops.health().unwrap_err().contains("media port"));

        let strict = Ops::new(Arc::new(AtomicBool::new(false)), false, true);
        strict.set_addresses(vec!["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        assert!(strict.health().unwrap_err().contains("no public address"));
        strict.set_addresses(vec!["10.0.0.1".parse().unwrap(), "198.51.100.7".parse().unwrap()]);
        assert!(strict.health().is_ok());
    }

    #[test]
    fn public_addresses() {
        for a in [
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["198.51.100.7", "8.8.8.8", "2001:db8::1", "2a00:1450::1"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }
}
