//! The media core's configuration: the `[sfu]` and `[ice]` sections of `config.toml`,
//! already parsed. The core never sees file paths or environment variables.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the shared media socket binds to.
    pub bind_ip: IpAddr,
    /// The one UDP port shared by all endpoints (JVB: `videobridge.ice.udp.port`). 0 picks a free
    /// port (tests).
    pub udp_port: u16,
    /// Host addresses to advertise as candidates. Empty: the bound address if it is not
    /// unspecified, else every non-loopback local address (loopback when there is no other).
    pub host_addresses: Vec<IpAddr>,
    /// Public addresses advertised in addition to the host candidates (docker's
    /// `JVB_ADVERTISE_IPS`; `ip` or `ip#port`).
    pub advertise: Vec<AdvertisedAddr>,
    /// Endpoint expiry after this long without incoming RTP, RTCP or ICE (JVB: 1 minute).
    pub endpoint_timeout: Duration,
    /// Endpoint expiry when ICE has not connected this long after creation (JVB: 2 minutes).
    pub connect_timeout: Duration,
    /// Consent freshness interval (JVB: 5 s, randomised 0.8–1.2×).
    pub consent_interval: Duration,
    pub limits: Limits,
    /// SRTP protection profiles the bridge offers, in its preference order.
    pub srtp_profiles: Vec<SrtpProfile>,
    /// Seed of the non-cryptographic RNG (probe jitter, SSRCs). `None`: from the OS.
    pub rng_seed: Option<u64>,
    /// Datagrams per `sendmmsg`/`recvmmsg` call on the media socket, 1 to 32 (1: one system call
    /// per datagram).
    pub io_batch: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertisedAddr {
    pub ip: IpAddr,
    /// Public port when it differs from `udp_port` (port forwarding).
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_conferences: usize,
    pub max_endpoints_per_conference: usize,
    pub max_ssrcs_per_endpoint: usize,
    /// DTLS handshakes in flight (first datagram seen or connect started, neither connected
    /// nor failed yet), bridge-wide: every shard made from clones of this config shares the
    /// count (robustness.md §2.5, 256 by default). A handshake over the cap is not started:
    /// its datagram is dropped as `dtls_handshake_limit` and the peer's retransmission may
    /// get a slot later.
    pub dtls_handshakes: HandshakeSlots,
}

/// A shared cap on DTLS handshakes in flight. Cloning shares the count.
#[derive(Debug, Clone)]
pub struct HandshakeSlots {
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

/// One handshake's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct HandshakeSlot(Arc<AtomicUsize>);

impl HandshakeSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configured cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Handshakes holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A slot, or `None` when `max` handshakes are already in flight.
    pub fn try_acquire(&self) -> Option<HandshakeSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| HandshakeSlot(self.in_flight.clone()))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Default cap on DTLS handshakes in flight per bridge (robustness.md §2.5).
pub const DEFAULT_MAX_DTLS_HANDSHAKES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    AeadAes128Gcm,
    Aes128CmHmacSha1_80,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_port: 10000,
            host_addresses: Vec::new(),
            advertise: Vec::new(),
            endpoint_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(120),
            consent_interval: Duration::from_secs(5),
            limits: Limits::default(),
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80],
            rng_seed: None,
            io_batch: 32,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conferences: 1000,
            max_endpoints_per_conference: 500,
            max_ssrcs_per_endpoint: 64,
            dtls_handshakes: HandshakeSlots::new(DEFAULT_MAX_DTLS_HANDSHAKES),
        }
    }
}
