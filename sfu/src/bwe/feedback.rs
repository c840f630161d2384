//! Transport-cc feedback toward a sender (media.md §4.1, JVB's `TccGeneratorNode`).
//!
//! Arrivals are kept in a ring buffer indexed by the unwrapped transport-wide sequence number,
//! so recording allocates nothing. A feedback is due 100 ms after the previous one, or 20 ms
//! after it if a packet with the marker bit arrived since; the first is due one interval after
//! the first packet. Each feedback covers every packet from the end of the previous one up to
//! the newest received, split into several RTCP packets when it does not fit one.

use std::time::{Duration, Instant};

use crate::id::Ssrc;
use crate::wire::rtcp::{write_twcc, TwccFeedback};
use crate::wire::rtp::SeqExtender;

/// Packets remembered at most (a power of two). Older ones are dropped unreported.
pub const CAPACITY: usize = 8192;
/// Regular feedback interval.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Minimum interval when a marker-bit packet arrived.
pub const MARKER_INTERVAL: Duration = Duration::from_millis(20);
/// Most packets described in one RTCP feedback.
const MAX_PER_FEEDBACK: usize = 4096;
/// Slot marker for "not received".
const MISSING: i64 = i64::MIN;

/// Counters of a [`TwccGenerator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwccGeneratorStats {
    /// Packets recorded.
    pub recorded: u64,
    /// Packets that arrived after their seq was already reported, or duplicates.
    pub late_or_duplicate: u64,
    /// Packets dropped from the window unreported because the window overflowed.
    pub overflowed: u64,
    /// RTCP feedback packets written.
    pub feedbacks: u64,
}

/// Transport-cc feedback generator for one endpoint.
#[derive(Debug)]
pub struct TwccGenerator {
    ext: SeqExtender,
    /// First packet's arrival; arrivals are stored in µs since this.
    epoch: Option<Instant>,
    /// Arrival µs since `epoch` per `ext_seq % CAPACITY`, `MISSING` if not received.
    arrivals: Box<[i64]>,
    /// Which extended seq each slot holds.
    slot_seq: Box<[u64]>,
    /// First extended seq not yet reported.
    start: u64,
    /// Highest extended seq received.
    highest: u64,
    last_feedback: Option<Instant>,
    marker_pending: bool,
    /// A feedback was split and the rest is due now.
    continuation: bool,
    fb_count: u8,
    scratch: Vec<Option<i16>>,
    stats: TwccGeneratorStats,
}

impl Default for TwccGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl TwccGenerator {
    /// A generator that has seen no packet.
    pub fn new() -> Self {
        Self {
            ext: SeqExtender::new(),
            epoch: None,
            arrivals: vec![MISSING; CAPACITY].into_boxed_slice(),
            slot_seq: vec![u64::MAX; CAPACITY].into_boxed_slice(),
            start: 0,
            highest: 0,
            last_feedback: None,
            marker_pending: false,
            continuation: false,
            fb_count: 0,
            scratch: Vec::with_capacity(MAX_PER_FEEDBACK),
            stats: TwccGeneratorStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> TwccGeneratorStats {
        self.stats
    }

    /// Records the arrival of the packet with transport-wide seq `tw_seq`.
    pub fn record(&mut self, tw_seq: u16, arrival: Instant, marker: bool) {
        let epoch = *self.epoch.get_or_insert(arrival);
        let seq = self.ext.extend(tw_seq);
        let micros = arrival.saturating_duration_since(epoch).as_micros() as i64;
        if self.last_feedback.is_none() && self.stats.recorded == 0 {
            // The first feedback is delayed one interval from the first packet.
            self.last_feedback = Some(arrival);
            self.start = seq;
            self.highest = seq;
        }
        self.stats.recorded += 1;
        if seq < self.start {
            self.stats.late_or_duplicate += 1;
            return;
        }
        if seq > self.highest {
            // Forget slots between the old highest and `seq` (they may hold stale packets).
            let from = self.highest + 1;
            let clear_from = from.max(seq.saturating_sub(CAPACITY as u64 - 1));
            for s in clear_from..seq {
                let i = (s as usize) & (CAPACITY - 1);
                self.arrivals[i] = MISSING;
                self.slot_seq[i] = s;
            }
            self.highest = seq;
            let oldest = seq + 1 - CAPACITY as u64;
            if seq >= CAPACITY as u64 && self.start < oldest {
                self.stats.overflowed += oldest - self.start;
                self.start = oldest;
            }
        }
        let i = (seq as usize) & (CAPACITY - 1);
        if self.slot_seq[i] == seq && self.arrivals[i] != MISSING {
            self.stats.late_or_duplicate += 1;
            return;
        }
        self.slot_seq[i] = seq;
        self.arrivals[i] = micros;
        self.marker_pending |= marker;
    }

    fn pending(&self) -> bool {
        self.epoch.is_some() && self.start <= self.highest
    }

    /// When the next feedback is due, if anything is waiting to be reported.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.pending() {
            return None;
        }
        let last = self.last_feedback?;
        if self.continuation {
            return Some(last);
        }
        let interval = if self.marker_pending { MARKER_INTERVAL } else { INTERVAL };
        Some(last + interval)
    }

    fn arrival(&self, seq: u64) -> Option<i64> {
        let i = (seq as usize) & (CAPACITY - 1);
        (self.slot_seq[i] == seq && self.arrivals[i] != MISSING).then_some(self.arrivals[i])
    }

    /// Writes the next feedback packet into `out` if one is due at `now`; returns its length.
    /// Call again until it returns `None`: a long window is split into several packets.
    /// `out` should hold at least 1200 bytes; a shorter one just gets fewer packets per feedback.
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: Ssrc,
        media_ssrc: Ssrc,
        out: &mut [u8],
    ) -> Option<usize> {
        if self.next_deadline()? > now {
            return None;
        }
        // Leading missing packets are reported as lost; the reference time comes from the
        // first received packet of the window.
        let mut first_rx = self.start;
        while first_rx <= self.highest && self.arrival(first_rx).is_none() {
            first_rx += 1;
        }
        if first_rx > self.highest {
            // Nothing received in the window (cannot happen: highest is received); give up.
            self.start = self.highest + 1;
            return None;
        }
        // Bytes: 20 fixed, then per packet at most 2 (delta) + 2/7 (chunk); keep 8 spare.
        let fit = out.len().saturating_sub(28) * 7 / 16;
        let max_n = fit.clamp(1, MAX_PER_FEEDBACK);
        let first_arrival = self.arrival(first_rx).unwrap_or(0); // received, checked above
        let reference = first_arrival.div_euclid(64_000);
        let mut prev_tick = reference * 256;
        self.scratch.clear();
        let mut seq = self.start;
        let mut last_rx = self.start;
        while seq <= self.highest && self.scratch.len() < max_n {
            match self.arrival(seq) {
                None => self.scratch.push(None),
                Some(us) => {
                    let tick = us.div_euclid(250);
                    let Ok(delta) = i16::try_from(tick - prev_tick) else {
                        break; // does not fit: the next feedback starts here
                    };
                    prev_tick = tick;
                    self.scratch.push(Some(delta));
                    last_rx = seq;
                }
            }
            seq += 1;
        }
        // Do not end on packets not received: they may still arrive.
        let n = (last_rx - self.start + 1) as usize;
        self.scratch.truncate(n);
        let fb = TwccFeedback {
            base_seq: self.start as u16,
            reference_time: (reference as u32) & 0xFF_FFFF,
            fb_pkt_count: self.fb_count,
            packets: &self.scratch,
        };
        let len = match write_twcc(out, sender_ssrc, media_ssrc, &fb) {
            Ok(len) => len,
            Err(e) => {
                // Only with a tiny `out`: retry at the next interval rather than spin.
                tracing::debug!(error = %e, "transport-cc feedback does not fit");
                self.last_feedback = Some(now);
                self.continuation = false;
                return None;
            }
        };
        self.fb_count = self.fb_count.wrapping_add(1);
        self.stats.feedbacks += 1;
        self.start = last_rx + 1;
        self.last_feedback = Some(now);
        self.continuation = self.start <= self.highest;
        if !self.continuation {
            self.marker_pending = false;
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::TransportCc;
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    /// Reconstructed (seq, arrival µs since reference) per received packet.
    fn decode(tcc: &TransportCc<'_>) -> Vec<(u16, Option<i64>)> {
        let mut t = i64::from(tcc.reference_time) * 64_000;
        tcc.packets()
            .map(|p| {
                (
                    p.seq,
                    p.recv_delta.map(|d| {
                        t += i64::from(d) * 250;
                        t
                    }),
                )
            })
            .collect()
    }

    fn parse(buf: &[u8]) -> TransportCc<'_> {
        match RtcpCompound::new(buf).next() {
            Some(Ok(RtcpPacket::TransportCc(t))) => t,
            other => panic!("not a transport-cc: {other:?}"),
        }
    }

    #[test]
    fn first_feedback_after_one_interval_with_exact_arrivals() {
        let t0 = Instant::now();
        let mut g = TwccGenerator::new();
        let times = [0u64, 1_000, 3_250, 7_500, 40_000, 99_000];
        let seqs = [65530u16, 65531, 65533, 65534, 1, 2];
        for (s, us) in seqs.iter().zip(times) {
            g.record(*s, t0 + Duration::from_micros(us), false);
        }
        assert_eq!(g.next_deadline(), Some(t0 + INTERVAL));
        let mut buf = [0u8; 1500];
        assert!(g
            .poll_feedback(t0 + Duration::from_millis(99), Ssrc(1), Ssrc(2), &mut buf)
            .is_none());
        let n = g.poll_feedback(t0 + INTERVAL, Ssrc(1), Ssrc(2), &mut buf).unwrap();
        let tcc = parse(&buf[..n]);
        assert_eq!(tcc.sender, Ssrc(1));
        assert_eq!(tcc.base_seq, 65530);
        assert_eq!(tcc.status_count, 9);
        assert_eq!(tcc.fb_pkt_count, 0);
        let got = decode(&tcc);
        let mut expect = Vec::new();
        let mut k = 0;
        for i in 0..9u16 {
            let s = 65530u16.wrapping_add(i);
            if seqs.contains(&s) {
                expect.push((s, Some(times[k] as i64)));
                k += 1;
            } else {
                expect.push((s, None));
            }
        }
        assert_eq!(got, expect);
        assert!(g.poll_feedback(t0 + INTERVAL, Ssrc(1), Ssrc(2), &mut buf).is_none());
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn marker_shortens_interval_and_count_increments() {
        let t0 = Instant::now();
        let mut g = TwccGenerator::new();
        let mut buf = [0u8; 1500];
        g.record(10, t0, false);
        assert!(g.poll_feedback(t0 + INTERVAL, Ssrc(1), Ssrc(2), &mut buf).is_some());
        let t1 = t0 + INTERVAL;
        g.record(11, t1 + Duration::from_millis(5), true);
        assert_eq!(g.next_deadline(), Some(t1 + MARKER_INTERVAL));
        let n = g
            .poll_feedback(t1 + MARKER_INTERVAL, Ssrc(1), Ssrc(2), &mut buf)
            .unwrap();
        let tcc = parse(&buf[..n]);
        assert_eq!(tcc.fb_pkt_count, 1);
        assert_eq!(tcc.base_seq, 11);
        assert_eq!(tcc.status_count, 1);
        // Late packet 9 (before the first reported) is counted, not reported.
        g.record(9, t1 + Duration::from_millis(30), false);
        assert_eq!(g.stats().late_or_duplicate, 1);
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn splits_when_buffer_is_small_and_covers_everything() {
        let t0 = Instant::now();
        let mut g = TwccGenerator::new();
        for i in 0..1000u16 {
            if i % 3 != 1 {
                g.record(i, t0 + Duration::from_micros(u64::from(i) * 700), false);
            }
        }
        let now = t0 + Duration::from_secs(1);
        let mut buf = [0u8; 300];
        let mut all = Vec::new();
        let mut counts = Vec::new();
        while let Some(n) = g.poll_feedback(now, Ssrc(1), Ssrc(2), &mut buf) {
            let tcc = parse(&buf[..n]);
            counts.push(tcc.fb_pkt_count);
            all.extend(decode(&tcc));
        }
        assert!(counts.len() > 3, "expected a split, got {}", counts.len());
        assert_eq!(counts, (0..counts.len() as u8).collect::<Vec<_>>());
        assert_eq!(all.len(), 1000);
        for (i, (s, t)) in all.iter().enumerate() {
            assert_eq!(*s, i as u16);
            if i % 3 == 1 {
                assert_eq!(*t, None);
            } else {
                assert_eq!(*t, Some(i as i64 * 700 / 250 * 250));
            }
        }
    }

    #[test]
    fn window_overflow_is_bounded() {
        let t0 = Instant::now();
        let mut g = TwccGenerator::new();
        for i in 0..20_000u32 {
            g.record(i as u16, t0 + Duration::from_micros(u64::from(i) * 10), false);
        }
        assert_eq!(g.stats().overflowed, 20_000 - CAPACITY as u64);
        let mut buf = [0u8; 1500];
        let mut total = 0;
        while let Some(n) = g.poll_feedback(t0 + Duration::from_secs(1), Ssrc(1), Ssrc(2), &mut buf) {
            total += usize::from(parse(&buf[..n]).status_count);
        }
        assert_eq!(total, CAPACITY);
    }

    proptest::proptest! {
        /// Whatever the order, loss and spacing, the feedbacks written (split into small
        /// packets) describe exactly the recorded arrivals (to 250 µs), each seq once, in order.
        #[test]
        fn feedback_describes_exactly_the_arrivals(
            start in proptest::prelude::any::<u16>(),
            pkts in proptest::collection::vec((proptest::prelude::any::<bool>(), 0u64..3_000, 0u8..4), 1..600),
            buf_len in 64usize..1500,
        ) {
            let t0 = Instant::now();
            let mut g = TwccGenerator::new();
            // (seq offset, arrival µs); packets are recorded in order of arrival, with a
            // little reordering (swap with the previous when `k == 0`).
            let mut order: Vec<(u16, u64)> = Vec::new();
            let mut t = 0u64;
            for (i, (received, gap, k)) in pkts.iter().enumerate() {
                t += gap;
                if *received {
                    order.push((i as u16, t));
                    let n = order.len();
                    if *k == 0 && n >= 2 {
                        order.swap(n - 1, n - 2);
                        let (a, b) = (order[n - 2].1, order[n - 1].1);
                        order[n - 2].1 = b;
                        order[n - 1].1 = a;
                    }
                }
            }
            proptest::prop_assume!(!order.is_empty());
            let mut expected = std::collections::BTreeMap::new();
            for (off, us) in &order {
                g.record(start.wrapping_add(*off), t0 + Duration::from_micros(*us), false);
                expected.insert(*off, *us);
            }
            let mut buf = vec![0u8; buf_len];
            let now = t0 + Duration::from_secs(5);
            let mut got = Vec::new();
            while let Some(n) = g.poll_feedback(now, Ssrc(1), Ssrc(2), &mut buf) {
                got.extend(decode(&parse(&buf[..n])));
                proptest::prop_assert!(got.len() <= 600);
            }
            let last = *expected.keys().next_back().unwrap();
            // Everything from the first recorded packet (which starts the window; older seqs
            // arriving later are late) to the newest; arrivals relative to the first.
            let (first_arrived, epoch) = order[0];
            proptest::prop_assert_eq!(got.len(), usize::from(last - first_arrived) + 1);
            for (i, (seq, at)) in got.iter().enumerate() {
                let off = first_arrived + i as u16;
                proptest::prop_assert_eq!(*seq, start.wrapping_add(off));
                proptest::prop_assert_eq!(*at, expected.get(&off).map(|us| (*us - epoch) as i64 / 250 * 250));
            }
        }
    }
}
