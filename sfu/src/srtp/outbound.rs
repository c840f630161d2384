//! Outbound per-SSRC SRTP state that can be pruned without ever reusing a nonce
//! (docs/security.md §6, docs/decisions.md "Outbound SRTP state is pruned, never reset").
//!
//! Under one session key the keystream (AES-CM) or nonce (AES-GCM) of an SRTP packet is a
//! function of (SSRC, packet index) only, and of (SSRC, SRTCP index) for SRTCP. Sending two
//! different packets under the same pair leaks their XOR, and for GCM the authentication key.
//! So an SSRC's outbound state may only be dropped if its next use is still guaranteed a
//! fresh index. Three tiers, each bounded:
//!
//! 1. **active** (≤ `max_active` SSRCs, 40 bytes each): the highest RTP index sent with a
//!    64-packet bitmap of which of the indices below it were used (any older one counts as
//!    used), and the next SRTCP index. A packet whose index is not fresh is refused
//!    ([`SrtpError::IndexReused`]). When full, the least recently used eighth is retired in
//!    one batch.
//! 2. **retired** (≤ `max_retired` SSRCs, FIFO, 24 bytes each): an SSRC's highest RTP index
//!    and next SRTCP index. Used again, it resumes from there with every index up to the old
//!    highest counted as used: only strictly higher indices are sent, and the ROC keeps being
//!    estimated from the old highest index, as a receiver that kept its own state does.
//! 3. **filter** (fixed 2^18 bits, 32 KiB, allocated at the first overflow of tier 2): the
//!    SSRCs pushed out of the record, as a four-hash Bloom filter keyed by a value derived
//!    from the session key. An SSRC in the filter is refused for good
//!    ([`SrtpError::SsrcRetired`]); a false positive refuses an SSRC never seen (probability
//!    ≈ 10^-7 after 1,000 evictions, 10^-4 after 7,000, 8 % after 50,000), never the reverse.
//!
//! A new SSRC starts at ROC 0 with its first sequence number, as receivers assume.

use std::collections::VecDeque;

use super::window::IndexWindow;
use super::SrtpError;

/// SSRCs with full outbound state (tier 1). Below `MAX_SSRCS` (the inbound cap) so that the
/// hash table, churned by evictions, stays at 2,048 buckets: hashbrown rehashes in place
/// rather than growing while at most half its capacity (1,792) is live.
pub const MAX_ACTIVE: usize = 768;
/// SSRCs whose highest index is kept after being pruned (tier 2); same table bound.
pub const MAX_RETIRED: usize = 768;
/// Bits of the filter of SSRCs pushed out of tier 2 (tier 3).
pub const FILTER_BITS: usize = 1 << 18;
/// Bits set per SSRC in the filter.
const FILTER_HASHES: usize = 4;
/// `Used::top` of an SSRC that has sent no RTP yet.
const NO_RTP: u64 = u64::MAX;
/// The last SRTCP index (31 bits); past it the SSRC's SRTCP is refused.
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff;

/// Sizes of one session's outbound per-SSRC state, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundState {
    /// SSRCs with full state.
    pub active: usize,
    /// Pruned SSRCs remembered exactly (highest index kept).
    pub retired: usize,
    /// SSRCs pushed into the filter so far (each refused for good).
    pub filtered: u64,
    /// Heap bytes held by the three tiers (capacities times entry sizes; hash tables'
    /// control bytes included approximately).
    pub heap_bytes: usize,
}

/// Which RTP indices an outbound SSRC has used: `top` and the 64 below it; anything older
/// counts as used.
type Used = IndexWindow<u64>;

#[derive(Debug, Clone, Copy)]
struct Active {
    /// `top == NO_RTP` until the first RTP packet.
    rtp: Used,
    /// LRU stamp.
    last: u64,
    rtcp_next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Retired {
    /// Highest RTP index sent, or `NO_RTP`.
    rtp_top: u64,
    rtcp_next: u32,
    /// Matches the FIFO entry that is this record's current one (wrapping: a stale match
    /// only changes which record goes to the filter first, never safety).
    stamp: u32,
}

/// The outbound per-SSRC state of one SRTP session (see the module docs).
pub(super) struct Outbound {
    max_active: usize,
    max_retired: usize,
    filter_bits: usize,
    active: crate::FastMap<u32, Active>,
    retired: crate::FastMap<u32, Retired>,
    /// Retirement order: (SSRC, stamp); stale when the SSRC resumed or was retired again.
    order: VecDeque<(u32, u32)>,
    filter: Option<Box<[u64]>>,
    filter_key: u64,
    filtered: u64,
    clock: u64,
    stamp: u32,
}

/// splitmix64's finaliser: a keyed hash good enough to spread attacker-chosen SSRCs when the
/// key is secret.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Outbound {
    /// `filter_key` should be secret per session (derived from the session salt).
    pub(super) fn new(filter_key: u64) -> Self {
        Self::with_limits(MAX_ACTIVE, MAX_RETIRED, FILTER_BITS, filter_key)
    }

    /// Limits for tests; `filter_bits` is rounded up to a multiple of 64.
    pub(super) fn with_limits(max_active: usize, max_retired: usize, filter_bits: usize, filter_key: u64) -> Self {
        Self {
            max_active: max_active.max(1),
            max_retired,
            filter_bits: filter_bits.div_ceil(64).max(1) * 64,
            active: Default::default(),
            retired: Default::default(),
            order: VecDeque::new(),
            filter: None,
            filter_key,
            filtered: 0,
            clock: 0,
            stamp: 0,
        }
    }

    /// The filter's `FILTER_HASHES` bits for `ssrc` (double hashing, Kirsch–Mitzenmacher).
    fn filter_slots(&self, ssrc: u32) -> [usize; FILTER_HASHES] {
        let h = mix(u64::from(ssrc) ^ self.filter_key);
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        let n = self.filter_bits as u64;
        std::array::from_fn(|j| (h1.wrapping_add(h2.wrapping_mul(j as u64)) % n) as usize)
    }

    fn in_filter(&self, ssrc: u32) -> bool {
        let Some(f) = self.filter.as_ref() else {
            return false;
        };
        self.filter_slots(ssrc)
            .iter()
            .all(|&b| f[b / 64] & (1u64 << (b % 64)) != 0)
    }

    fn add_to_filter(&mut self, ssrc: u32) {
        let slots = self.filter_slots(ssrc);
        let words = self.filter_bits / 64;
        let f = self.filter.get_or_insert_with(|| vec![0u64; words].into_boxed_slice());
        for b in slots {
            f[b / 64] |= 1u64 << (b % 64);
        }
        self.filtered += 1;
    }

    /// Runs `f` on the state of `ssrc` for sending: existing (one lookup, the per-packet case),
    /// resumed from the record, or new. Refused if the SSRC was pushed out of the record (or a
    /// filter false positive).
    fn with_slot<R>(&mut self, ssrc: u32, f: impl FnOnce(&mut Active) -> Result<R, SrtpError>) -> Result<R, SrtpError> {
        self.clock += 1;
        let now = self.clock;
        if let Some(a) = self.active.get_mut(&ssrc) {
            a.last = now;
            return f(a);
        }
        let entry = if let Some(r) = self.retired.remove(&ssrc) {
            Active {
                // Everything up to the old highest index counts as used.
                rtp: Used::all_seen(r.rtp_top),
                rtcp_next: r.rtcp_next,
                last: now,
            }
        } else if self.in_filter(ssrc) {
            return Err(SrtpError::SsrcRetired);
        } else {
            Active {
                rtp: Used { top: NO_RTP, bits: 0 },
                rtcp_next: 0,
                last: now,
            }
        };
        if self.active.len() >= self.max_active {
            self.evict_lru();
        }
        f(self.active.entry(ssrc).or_insert(entry))
    }

    /// Retire the least recently used eighth of the active SSRCs (at least one). Runs once
    /// per `max_active / 8` new SSRCs at the cap; allocates a scratch vector then.
    fn evict_lru(&mut self) {
        let n = (self.max_active / 8).max(1);
        let mut by_age: Vec<(u64, u32)> = self.active.iter().map(|(s, a)| (a.last, *s)).collect();
        if by_age.len() > n {
            by_age.select_nth_unstable(n - 1);
            by_age.truncate(n);
        }
        for (_, ssrc) in by_age {
            self.retire(ssrc);
        }
    }

    /// Prune `ssrc`'s full state, keeping what makes a later use of it nonce-safe. No effect
    /// on an SSRC without state.
    pub(super) fn retire(&mut self, ssrc: u32) {
        let Some(a) = self.active.remove(&ssrc) else {
            return;
        };
        // Room first, so that the table never grows past `max_retired` entries.
        while self.retired.len() >= self.max_retired {
            let Some((old, st)) = self.order.pop_front() else {
                break;
            };
            if self.retired.get(&old).is_some_and(|r| r.stamp == st) {
                self.retired.remove(&old);
                self.add_to_filter(old);
            }
        }
        if self.max_retired == 0 {
            self.add_to_filter(ssrc);
            return;
        }
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        self.retired.insert(
            ssrc,
            Retired {
                rtp_top: a.rtp.top,
                rtcp_next: a.rtcp_next,
                stamp,
            },
        );
        self.order.push_back((ssrc, stamp));
        // Stale entries (SSRCs that resumed) are dropped once they are an eighth of the queue.
        if self.order.len() > self.order_bound() {
            let retired = &self.retired;
            self.order
                .retain(|(s, st)| retired.get(s).is_some_and(|r| r.stamp == *st));
        }
    }

    /// Reserve the RTP packet index for `seq` on `ssrc`: fresh (never used on this SSRC under
    /// this key) or an error. The index is marked used before the caller encrypts.
    pub(super) fn reserve_rtp(&mut self, ssrc: u32, seq: u16) -> Result<u64, SrtpError> {
        self.with_slot(ssrc, |a| {
            let index = if a.rtp.top == NO_RTP {
                // A new SSRC: ROC 0, as the receiver assumes.
                a.rtp = Used {
                    top: u64::from(seq),
                    bits: 0,
                };
                u64::from(seq)
            } else {
                let index = a.rtp.estimate(seq).ok_or(SrtpError::IndexReused)?;
                if !a.rtp.fresh(index) {
                    return Err(SrtpError::IndexReused);
                }
                index
            };
            a.rtp.mark(index);
            Ok(index)
        })
    }

    /// Reserve the next SRTCP index of `ssrc`.
    pub(super) fn reserve_rtcp(&mut self, ssrc: u32) -> Result<u32, SrtpError> {
        self.with_slot(ssrc, |a| {
            let index = a.rtcp_next;
            if index > SRTCP_INDEX_MAX {
                return Err(SrtpError::IndexReused);
            }
            a.rtcp_next = index + 1;
            Ok(index)
        })
    }

    /// Most FIFO entries kept (live plus stale) before stale ones are dropped.
    fn order_bound(&self) -> usize {
        self.max_retired + self.max_retired / 8 + 1
    }

    pub(super) fn state(&self) -> OutboundState {
        // hashbrown: one control byte per bucket plus the entry; a power of two of buckets,
        // 7/8 of them usable (`capacity()` is less when deleted slots are pending).
        fn table<K, V>(m: &crate::FastMap<K, V>) -> usize {
            let buckets = match m.capacity() {
                0 => 0,
                c if c < 8 => c.next_power_of_two() * 2,
                c => (c * 8 / 7).next_power_of_two(),
            };
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        OutboundState {
            active: self.active.len(),
            retired: self.retired.len(),
            filtered: self.filtered,
            heap_bytes: table(&self.active)
                + table(&self.retired)
                + self.order.capacity() * std::mem::size_of::<(u32, u32)>()
                + self.filter.as_ref().map_or(0, |f| f.len() * 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn new_ssrc_starts_at_roc_0_and_indices_never_repeat() {
        let mut o = Outbound::new(1);
        assert_eq!(o.reserve_rtp(5, 0xfff0), Ok(0xfff0));
        assert_eq!(o.reserve_rtp(5, 0x0001), Ok(0x1_0001), "wrap: ROC 1");
        assert_eq!(o.reserve_rtp(5, 0xfff1), Ok(0xfff1), "late, unused: allowed");
        assert_eq!(o.reserve_rtp(5, 0xfff1), Err(SrtpError::IndexReused));
        assert_eq!(o.reserve_rtp(5, 0x0001), Err(SrtpError::IndexReused));
        assert_eq!(o.reserve_rtcp(5), Ok(0));
        assert_eq!(o.reserve_rtcp(5), Ok(1));
    }

    #[test]
    fn retired_ssrc_resumes_strictly_above() {
        let mut o = Outbound::new(1);
        for seq in 100..110u16 {
            assert!(o.reserve_rtp(7, seq).is_ok());
        }
        assert_eq!(o.reserve_rtcp(7), Ok(0));
        o.retire(7);
        assert_eq!(o.state().active, 0);
        assert_eq!(o.state().retired, 1);
        // Even a late packet just below the old top is refused after resuming.
        assert_eq!(o.reserve_rtp(7, 105), Err(SrtpError::IndexReused));
        assert_eq!(o.reserve_rtp(7, 109), Err(SrtpError::IndexReused));
        assert_eq!(o.reserve_rtp(7, 110), Ok(110));
        assert_eq!(o.reserve_rtcp(7), Ok(1), "SRTCP index continues");
        assert_eq!(o.state().retired, 0);
    }

    #[test]
    fn overflow_goes_to_the_filter_and_is_refused() {
        let mut o = Outbound::with_limits(4, 2, 1024, 99);
        for ssrc in 1..=4 {
            assert!(o.reserve_rtp(ssrc, 1).is_ok());
            o.retire(ssrc);
        }
        // 1 and 2 were pushed out of the record.
        assert_eq!(o.state().retired, 2);
        assert_eq!(o.state().filtered, 2);
        assert_eq!(o.reserve_rtp(1, 2), Err(SrtpError::SsrcRetired));
        assert_eq!(o.reserve_rtcp(2), Err(SrtpError::SsrcRetired));
        assert_eq!(o.reserve_rtp(3, 2), Ok(2));
    }

    #[test]
    fn lru_retires_at_the_cap_and_state_stays_bounded() {
        let mut o = Outbound::new(7);
        let mut peak = 0;
        let mut refused = 0u64;
        for ssrc in 0..100_000u32 {
            match o.reserve_rtp(ssrc, 1) {
                Ok(_) => {}
                Err(SrtpError::SsrcRetired) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
            if ssrc % 3 == 0 {
                o.retire(ssrc);
            }
            let s = o.state();
            assert!(s.active <= MAX_ACTIVE && s.retired <= MAX_RETIRED);
            assert!(o.order.len() <= o.order_bound());
            peak = peak.max(s.heap_bytes);
        }
        let s = o.state();
        // Every SSRC is in exactly one tier or was refused (a filter false positive).
        assert_eq!(s.active as u64 + s.retired as u64 + s.filtered + refused, 100_000);
        // Past ~90,000 evictions the filter refuses about a quarter of new SSRCs.
        assert!(refused < 15_000, "{refused} refused");
        // 2,048 buckets for each table, the queue and the 32 KiB filter: ≈ 175 KiB.
        assert!(peak <= 180 * 1024, "outbound state peaked at {peak} bytes: {s:?}");
        // The active SSRCs are the most recent ones: the last one sent is still active.
        assert!(o.active.contains_key(&99_998));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Send an RTP packet on SSRC `s` with its sequence number advanced by `d` (wrapping;
        /// large values model a rejoin with a random start).
        Rtp(u8, u16),
        Rtcp(u8),
        Retire(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..10, prop_oneof![3 => 0u16..4, 1 => any::<u16>()]).prop_map(|(s, d)| Op::Rtp(s, d)),
            1 => (0u8..10).prop_map(Op::Rtcp),
            2 => (0u8..10).prop_map(Op::Retire),
        ]
    }

    proptest! {
        /// Random lifecycles (sends, late packets, rejoins with other sequence numbers,
        /// prunes, LRU eviction, record overflow): the (SSRC, index) pairs reserved for RTP
        /// and for SRTCP never repeat, and the tiers stay within their bounds.
        #[test]
        fn prune_and_reuse_never_repeat_an_index(
            ops in proptest::collection::vec(op(), 1..400),
            max_active in 1usize..6,
            max_retired in 0usize..4,
        ) {
            let mut o = Outbound::with_limits(max_active, max_retired, 128, 5);
            let mut seq = [0u16; 10];
            let mut rtp_used: HashSet<(u32, u64)> = HashSet::new();
            let mut rtcp_used: HashSet<(u32, u32)> = HashSet::new();
            let mut sent = 0;
            for op in ops {
                match op {
                    Op::Rtp(s, d) => {
                        seq[s as usize] = seq[s as usize].wrapping_add(d);
                        if let Ok(i) = o.reserve_rtp(u32::from(s), seq[s as usize]) {
                            prop_assert_eq!(i & 0xffff, u64::from(seq[s as usize]));
                            prop_assert!(rtp_used.insert((u32::from(s), i)), "RTP index {} reused on {}", i, s);
                            sent += 1;
                        }
                    }
                    Op::Rtcp(s) => {
                        if let Ok(i) = o.reserve_rtcp(u32::from(s)) {
                            prop_assert!(rtcp_used.insert((u32::from(s), i)), "SRTCP index {} reused on {}", i, s);
                        }
                    }
                    Op::Retire(s) => o.retire(u32::from(s)),
                }
                let st = o.state();
                prop_assert!(st.active <= max_active);
                prop_assert!(st.retired <= max_retired);
                prop_assert!(o.order.len() <= o.order_bound());
            }
            let _ = sent;
        }
    }
}
