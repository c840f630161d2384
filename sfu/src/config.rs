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

struct SlotTable {
    max: usize,
    per_ip: usize,
    in_flight: AtomicUsize,
    /// One entry per slot: the source key of the handshake holding it, or [`FREE`].
    sources: Box<[AtomicU64]>,
}

impl std::fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeSlots")
            .field("max", &self.max)
            .field("per_ip", &self.per_ip)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
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
    /// Under contention this may briefly include a racing `try_acquire` about to be refused.
    pub fn in_flight_from(&self, ip: IpAddr) -> usize {
        let key = source_key(ip);
        self.inner
            .sources
            .iter()
            .filter(|e| e.load(Ordering::SeqCst) == key)
            .count()
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
                    && e.compare_exchange(FREE, key, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i))
    }

    /// Four per IP, then `PerIp`; other IPs are unaffected; the bridge-wide cap comes first;
    /// dropping a slot frees both counts.
    #[test]
    fn per_ip_cap_then_bridge_cap_then_free() {
        let slots = HandshakeSlots::with_per_ip(6, 4);
        let a: Vec<_> = (0..4)
            .map(|_| slots.try_acquire(v4(1)).expect("under both caps"))
            .collect();
        assert_eq!(slots.try_acquire(v4(1)).err(), Some(SlotRefused::PerIp));
        assert_eq!(slots.in_flight(), 4, "a refused acquire holds nothing");
        assert_eq!(slots.in_flight_from(v4(1)), 4);
        let b: Vec<_> = (0..2).map(|_| slots.try_acquire(v4(2)).expect("other IP")).collect();
        assert_eq!(slots.try_acquire(v4(3)).err(), Some(SlotRefused::Bridge));
        drop(b);
        assert_eq!(slots.in_flight(), 4);
        assert_eq!(slots.in_flight_from(v4(2)), 0);
        drop(a);
        assert_eq!((slots.in_flight(), slots.in_flight_from(v4(1))), (0, 0));
        let again: Vec<_> = (0..4).map(|_| slots.try_acquire(v4(1)).expect("freed")).collect();
        assert_eq!(again.len(), 4);
    }

    /// IPv6 counts per /64, IPv4-mapped IPv6 as its IPv4 address, loopback not per IP.
    #[test]
    fn source_grouping() {
        let slots = HandshakeSlots::with_per_ip(16, 2);
        let p = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        let _x = slots.try_acquire(p(1)).expect("first");
        let _y = slots.try_acquire(p(2)).expect("second, same /64");
        assert_eq!(slots.try_acquire(p(3)).err(), Some(SlotRefused::PerIp));
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(slots.try_acquire(other).is_ok(), "another /64");
        let _m = slots.try_acquire(v4(7)).expect("v4");
        let _n = slots
            .try_acquire(IpAddr::V6(Ipv4Addr::from(0x0A00_0007).to_ipv6_mapped()))
            .expect("mapped");
        assert_eq!(
            slots.try_acquire(v4(7)).err(),
            Some(SlotRefused::PerIp),
            "mapped counts as v4"
        );
        let lo: Vec<_> = (0..5)
            .map(|_| {
                slots
                    .try_acquire(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    .expect("loopback is exempt")
            })
            .collect();
        assert_eq!(lo.len(), 5);
        assert!(slots.try_acquire(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_ok());
    }

    /// Threads racing for slots from a few IPs: the granted slots per IP and bridge-wide,
    /// counted by the holders (up after a grant, down before the release), never exceed the
    /// caps, and everything is freed at the end.
    #[test]
    fn caps_hold_under_contention() {
        let slots = HandshakeSlots::with_per_ip(8, 3);
        let granted: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let total = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (slots, granted, total) = (slots.clone(), granted.clone(), total.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut got = 0;
                    for i in 0..5_000u32 {
                        let k = ((i + t) % 3) as usize;
                        if let Ok(s) = slots.try_acquire(v4(k as u32)) {
                            got += 1;
                            assert!(granted[k].fetch_add(1, Ordering::SeqCst) < 3, "per-IP cap");
                            assert!(total.fetch_add(1, Ordering::SeqCst) < 8, "bridge-wide cap");
                            held.push((k, s));
                        }
                        if held.len() > 2 || i % 3 == 0 {
                            if let Some((k, s)) = held.pop() {
                                granted[k].fetch_sub(1, Ordering::SeqCst);
                                total.fetch_sub(1, Ordering::SeqCst);
                                drop(s);
                            }
                        }
                    }
                    for (k, _) in &held {
                        granted[*k].fetch_sub(1, Ordering::SeqCst);
                        total.fetch_sub(1, Ordering::SeqCst);
                    }
                    got
                })
            })
            .collect();
        // Not every thread need get a slot: on 2 cores one may run its whole loop while the
        // others, descheduled, hold up to 9 (≥ the cap of 8). Together they must.
        let got: usize = threads.into_iter().map(|t| t.join().expect("no panic")).sum();
        assert!(got > 0);
        assert_eq!(slots.in_flight(), 0);
        assert_eq!((0..3).map(|i| slots.in_flight_from(v4(i))).sum::<usize>(), 0);
    }

    proptest! {
        /// Against a model (a multiset of held sources): every acquire succeeds exactly when
        /// both caps allow it, and the counts always match the model.
        #[test]
        fn slots_match_a_model(ops in proptest::collection::vec((0u32..6, any::<bool>(), 0usize..16), 1..200)) {
            let (max, per_ip) = (10, 3);
            let slots = HandshakeSlots::with_per_ip(max, per_ip);
            let mut held: Vec<(u32, HandshakeSlot)> = Vec::new();
            for (ip, acquire, idx) in ops {
                if acquire {
                    let from_ip = held.iter().filter(|(i, _)| *i == ip).count();
                    let want = if held.len() >= max {
                        Err(SlotRefused::Bridge)
                    } else if from_ip >= per_ip {
                        Err(SlotRefused::PerIp)
                    } else {
                        Ok(())
                    };
                    let got = slots.try_acquire(v4(ip));
                    prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want);
                    if let Ok(s) = got {
                        held.push((ip, s));
                    }
                } else if !held.is_empty() {
                    let i = idx % held.len();
                    held.swap_remove(i);
                }
                prop_assert_eq!(slots.in_flight(), held.len());
                for i in 0..6 {
                    prop_assert_eq!(slots.in_flight_from(v4(i)), held.iter().filter(|(h, _)| *h == i).count());
                }
            }
        }
    }
}
