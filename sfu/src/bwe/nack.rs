//! Generic NACKs toward a sender, for one received video SSRC (media.md §5.1, JVB's
//! `RetransmissionRequester`).
//!
//! A gap of fewer than 100 packets makes each missing seq due immediately, then every 150 ms,
//! at most 10 times; a jump of 100 or more resets without NACKing; an arrival cancels.

use std::time::{Duration, Instant};

use crate::id::Ssrc;
use crate::wire::rtcp::{write_nack, NackPair};
use crate::wire::rtp::SeqExtender;

/// Gaps at least this large reset the state instead of being NACKed.
pub const MAX_GAP: u64 = 100;
/// Interval between NACKs of the same packet.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(150);
/// NACKs per missing packet at most.
pub const MAX_REQUESTS: u8 = 10;
/// Missing packets tracked at most; the oldest are forgotten beyond this.
pub const CAPACITY: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u64,
    due: Instant,
    sent: u8,
}

/// Counters of a [`NackGenerator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Sequence numbers requested (each request counts).
    pub requested: u64,
    /// Missing packets that arrived later.
    pub recovered: u64,
    /// Missing packets given up after [`MAX_REQUESTS`] or evicted.
    pub given_up: u64,
    /// Resets on a jump of [`MAX_GAP`] or more.
    pub resets: u64,
}

/// NACK generator for one received SSRC.
#[derive(Debug)]
pub struct NackGenerator {
    ext: SeqExtender,
    highest: Option<u64>,
    /// Ascending by seq; never grows past [`CAPACITY`].
    missing: Vec<Missing>,
    stats: NackStats,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl NackGenerator {
    /// A generator that has seen no packet.
    pub fn new() -> Self {
        Self {
            ext: SeqExtender::new(),
            highest: None,
            missing: Vec::with_capacity(CAPACITY),
            stats: NackStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// Sequence numbers currently missing (for tests and stats).
    pub fn missing(&self) -> impl Iterator<Item = u16> + '_ {
        self.missing.iter().map(|m| m.seq as u16)
    }

    /// Records the arrival of `seq` (after RTX decapsulation).
    pub fn on_packet(&mut self, seq: u16, now: Instant) {
        let ext = self.ext.extend(seq);
        let Some(highest) = self.highest else {
            self.highest = Some(ext);
            return;
        };
        if ext > highest {
            if ext - highest >= MAX_GAP {
                self.stats.resets += 1;
                self.stats.given_up += self.missing.len() as u64;
                self.missing.clear();
            } else {
                for s in highest + 1..ext {
                    if self.missing.len() == CAPACITY {
                        self.missing.remove(0);
                        self.stats.given_up += 1;
                    }
                    self.missing.push(Missing {
                        seq: s,
                        due: now,
                        sent: 0,
                    });
                }
            }
            self.highest = Some(ext);
        } else if let Ok(i) = self.missing.binary_search_by_key(&ext, |m| m.seq) {
            self.missing.remove(i);
            self.stats.recovered += 1;
        }
    }

    /// When [`NackGenerator::poll_nack`] next has something to send.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.due).min()
    }

    /// Writes a NACK for every missing packet due at `now` (as many as fit in `out`) and
    /// returns its length, or `None` if nothing is due.
    pub fn poll_nack(&mut self, now: Instant, sender_ssrc: Ssrc, media_ssrc: Ssrc, out: &mut [u8]) -> Option<usize> {
        // Each seq takes at most one 4-byte entry, so this many always fit.
        let max = out.len().saturating_sub(12) / 4;
        let due = |m: &&Missing| m.due <= now;
        let seqs = self.missing.iter().filter(due).take(max).map(|m| m.seq as u16);
        let len = match write_nack(out, sender_ssrc, media_ssrc, NackPair::pack(seqs)) {
            Ok(len) => len,
            Err(_) => return None, // nothing due (or `out` shorter than one entry)
        };
        let mut taken = 0;
        for m in self.missing.iter_mut() {
            if taken == max {
                break;
            }
            if m.due <= now {
                taken += 1;
                m.sent += 1;
                m.due = now + RESEND_INTERVAL;
            }
        }
        self.stats.requested += taken as u64;
        let before = self.missing.len();
        self.missing.retain(|m| m.sent < MAX_REQUESTS);
        self.stats.given_up += (before - self.missing.len()) as u64;
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    fn nacked(buf: &[u8]) -> Vec<u16> {
        match RtcpCompound::new(buf).next() {
            Some(Ok(RtcpPacket::Nack(n))) => n.lost_seqs().collect(),
            other => panic!("not a NACK: {other:?}"),
        }
    }

    #[test]
    fn gap_is_nacked_immediately_then_every_150ms_at_most_10_times() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        let mut buf = [0u8; 1500];
        g.on_packet(65534, t0);
        g.on_packet(2, t0); // 65535, 0, 1 missing across the wrap
        assert_eq!(g.next_deadline(), Some(t0));
        let n = g.poll_nack(t0, Ssrc(1), Ssrc(7), &mut buf).unwrap();
        assert_eq!(nacked(&buf[..n]), vec![65535, 0, 1]);
        assert!(g
            .poll_nack(t0 + Duration::from_millis(149), Ssrc(1), Ssrc(7), &mut buf)
            .is_none());
        // 0 arrives: cancelled.
        g.on_packet(0, t0 + Duration::from_millis(100));
        let mut t = t0;
        let mut rounds = 1;
        loop {
            t += RESEND_INTERVAL;
            match g.poll_nack(t, Ssrc(1), Ssrc(7), &mut buf) {
                Some(n) => {
                    assert_eq!(nacked(&buf[..n]), vec![65535, 1]);
                    rounds += 1;
                }
                None => break,
            }
        }
        assert_eq!(rounds, MAX_REQUESTS);
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.stats().recovered, 1);
        assert_eq!(g.stats().given_up, 2);
    }

    #[test]
    fn large_jump_resets_without_nack() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        let mut buf = [0u8; 1500];
        g.on_packet(10, t0);
        g.on_packet(12, t0);
        g.on_packet(112, t0); // jump of 100
        assert!(g.poll_nack(t0, Ssrc(1), Ssrc(7), &mut buf).is_none());
        g.on_packet(113, t0);
        g.on_packet(211, t0); // gap of 97 < 100: NACKed
        let n = g.poll_nack(t0, Ssrc(1), Ssrc(7), &mut buf).unwrap();
        assert_eq!(nacked(&buf[..n]), (114..211).collect::<Vec<u16>>());
    }

    #[test]
    fn reordering_and_bounded() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(0, t0);
        for k in 0..100u16 {
            g.on_packet(k * 50 + 50, t0); // 49 missing each time
        }
        assert!(g.missing().count() <= CAPACITY);
        let mut buf = [0u8; 64];
        let n = g.poll_nack(t0, Ssrc(1), Ssrc(7), &mut buf).unwrap();
        assert!(n <= 64);
    }

    proptest::proptest! {
        /// Whatever arrives (reordered, duplicated, jumping, wrapping), a NACK only names seqs
        /// that have not arrived, state stays bounded, and nothing is NACKed more than 10 times.
        #[test]
        fn nacks_only_missing_and_bounded(
            start in proptest::prelude::any::<u16>(),
            steps in proptest::collection::vec((-20i32..150, 0u64..200), 1..400),
        ) {
            let t0 = Instant::now();
            let mut g = NackGenerator::new();
            let mut received = std::collections::HashSet::new();
            let mut counts = std::collections::HashMap::new();
            let mut seq = start;
            let mut now = t0;
            let mut buf = [0u8; 1500];
            for (delta, dt) in steps {
                seq = seq.wrapping_add(delta as u16);
                now += Duration::from_millis(dt);
                g.on_packet(seq, now);
                received.insert(seq);
                proptest::prop_assert!(g.missing().count() <= CAPACITY);
                while let Some(n) = g.poll_nack(now, Ssrc(1), Ssrc(2), &mut buf) {
                    for s in nacked(&buf[..n]) {
                        proptest::prop_assert!(!received.contains(&s), "NACKed {} which arrived", s);
                        let c = counts.entry(s).or_insert(0u8);
                        *c += 1;
                        proptest::prop_assert!(*c <= MAX_REQUESTS);
                    }
                }
                if let Some(d) = g.next_deadline() {
                    proptest::prop_assert!(d > now);
                }
            }
        }
    }
}
