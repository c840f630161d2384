//! The media core's configuration: the `[sfu]` and `[ice]` sections of `config.toml`,
//! already parsed. The core never sees file paths or environment variables.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// nor failed yet), bridge-wide and per source IP: every shard made from clones of this
    /// config shares the counts (robustness.md §2.5: 256 per bridge, 4 per source IP by
    /// default). A handshake over either cap is not started: its datagram is dropped as
    /// `dtls_handshake_limit` (bridge-wide) or `dtls_handshake_ip_cap` (per IP) and the peer's
    /// retransmission may get a slot later.
    pub dtls_handshakes: HandshakeSlots,
}

/// Shared caps on DTLS handshakes in flight: `max` bridge-wide and `per_ip` per source
/// address. Cloning shares the counts.
///
/// The per-source bookkeeping is a fixed table of `max` atomic entries, one per slot held,
/// each naming the source of the handshake holding it: it never grows, allocates nothing
/// after construction, takes no lock, and an entry is freed when its [`HandshakeSlot`] is
/// dropped (handshake connected or failed, or the endpoint gone). A source is an IPv4
/// address or an IPv6 /64 (one host usually owns a whole /64). Loopback sources are not
/// limited per IP (they are local processes, such as the load-test harness); the
/// bridge-wide cap still applies to them.
#[derive(Debug, Clone)]
pub struct HandshakeSlots {
    inner: Arc<SlotTable>,
}

#[derive(Debug)]
struct SlotTable {
    max: usize,
    per_ip: usize,
    in_flight: AtomicUsize,
    /// One entry per slot: the source key of the handshake holding it, or [`FREE`].
    sources: Box<[AtomicU64]>,
}

/// A free entry of [`SlotTable::sources`]. `ffff:ffff:ffff:ffff::/64` is multicast, never
/// a source, so no real source maps to it.
const FREE: u64 = u64::MAX;

/// Why a handshake did not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// `max` handshakes are in flight bridge-wide.
    Bridge,
    /// `per_ip` handshakes are in flight from this source.
    PerIp,
}

/// One handshake's slot; dropping it frees the slot and its source entry.
#[derive(Debug)]
pub struct HandshakeSlot {
    table: Arc<SlotTable>,
    entry: usize,
}

/// The per-IP bookkeeping key of `ip`: IPv4 addresses (also IPv4-mapped IPv6) exactly,
/// IPv6 by their /64 prefix. The two ranges overlap only for IPv6 prefixes below
/// `0:0:2::/48`, which are reserved and not routed.
fn source_key(ip: IpAddr) -> u64 {
    let key = match ip {
        IpAddr::V4(v4) => (1 << 32) | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (1 << 32) | u64::from(u32::from(v4)),
            None => {
                let o = v6.octets();
                u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        },
    };
    key.min(FREE - 1)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

impl HandshakeSlots {
    /// `max` bridge-wide, [`DEFAULT_MAX_DTLS_HANDSHAKES_PER_IP`] per source IP.
    pub fn new(max: usize) -> Self {
        Self::with_per_ip(max, DEFAULT_MAX_DTLS_HANDSHAKES_PER_IP)
    }

    /// `max` bridge-wide and `per_ip` per source IP.
    pub fn with_per_ip(max: usize, per_ip: usize) -> Self {
        Self {
            inner: Arc::new(SlotTable {
                max,
                per_ip,
                in_flight: AtomicUsize::new(0),
                sources: (0..max).map(|_| AtomicU64::new(FREE)).collect(),
            }),
        }
    }

    /// The configured bridge-wide cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// The configured per-source-IP cap.
    pub fn per_ip(&self) -> usize {
        self.inner.per_ip
    }

    /// Handshakes holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Handshakes holding a slot now whose source is `ip`'s (its IPv4 address or IPv6 /64).
    pub fn in_flight_from(&self, ip: IpAddr) -> usize {
        let key = source_key(ip);
        self.inner.sources.iter().filter(|e| e.load(Ordering::SeqCst) == key).count()
    }

    /// A slot for a handshake with a peer at `ip`, or why not. Not per packet: called for
    /// the first datagram of a handshake (and for each datagram refused), O(`max`).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<HandshakeSlot, SlotRefused> {
        let t = &self.inner;
        t.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < t.max).then_some(n + 1))
            .map_err(|_| SlotRefused::Bridge)?;
        let key = source_key(ip);
        // Entries are claimed only after the count went up and freed before it goes down,
        // so while we hold a count at most `max - 1` entries are taken by others: a free one
        // exists, and a scan misses it only if others claim and free entries meanwhile.
        let entry = loop {
            let free = t.sources.iter().position(|e| {
                e.load(Ordering::SeqCst) == FREE
                    && e.compare_exchange(FREE, key, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            });
            if let Some(i) = free {
                break i;
            }
            std::hint::spin_loop();
        };
        let slot = HandshakeSlot {
            table: t.clone(),
            entry,
        };
        // Counted after our own entry is in: of two racing handshakes from one source, the
        // later one sees both (sequentially consistent), so the cap is never exceeded (both
        // may be refused, which is safe).
        if !is_loopback(ip) && t.sources.iter().filter(|e| e.load(Ordering::SeqCst) == key).count() > t.per_ip {
            return Err(SlotRefused::PerIp); // dropping `slot` frees the entry and the count
        }
        Ok(slot)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some(e) = self.table.sources.get(self.entry) {
            e.store(FREE, Ordering::SeqCst);
        }
        self.table.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Default cap on DTLS handshakes in flight per bridge (robustness.md §2.5).
pub const DEFAULT_MAX_DTLS_HANDSHAKES: usize = 256;
/// Default cap on DTLS handshakes in flight per source IP (robustness.md §2.5).
pub const DEFAULT_MAX_DTLS_HANDSHAKES_PER_IP: usize = 4;

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
