//! A small per-SSRC reorder buffer for the harness receiver, in front of the frame checker.
//!
//! A browser does not decode packets in arrival order: its jitter buffer holds a frame until its
//! missing packets arrive (or the NACK module gives up). Without one, a packet lost on the link
//! and repaired by an RTX retransmission arrives after the frame's later packets, the checker
//! (`shape::check`) counts it as late and the frame as incomplete, and the harness receiver sends
//! a PLI a second later although nothing was lost for good.
//!
//! [`JitterBuffer`] releases packets in sequence order. A packet after a gap is held until the
//! gap is filled or until the oldest held packet has waited `max_wait`; then the missing
//! sequence numbers are skipped (counted) and the held packets are released in order. So no
//! packet is ever held longer than `max_wait` (plus the caller's timer lag). Memory is bounded:
//! at most `capacity` sequence numbers ahead of the next one to release are held; a packet
//! further ahead forces the oldest ones out (missing ones counted as `overflow`). Packets whose
//! sequence number was already released or skipped are dropped (counted as `late`), as are
//! duplicates of a held packet.
//!
//! Pure: time comes in as `now: Instant`, nothing allocates after construction (the caller's
//! `out` vector is reused), sequence numbers are 16-bit RTP ones extended internally.

use std::time::{Duration, Instant};

/// How long a gap is waited for (from the oldest held packet's arrival): str0m NACKs within
/// 33 ms and retries after RTT + 5 ms, so at 100 ms RTT (plus queueing on a 2 Mbit/s link) two
/// repair rounds fit; with 300 ms, 1–2 repairs per 22 s run arrived just too late and cost a
/// PLI each. A browser's jitter buffer waits about as long on a lossy link.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(500);
/// Sequence numbers held ahead of the next one to release (about 2.5 s of 2 Mbit/s video).
pub const DEFAULT_CAPACITY: usize = 512;

/// What the buffer did, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Packets handed to the caller.
    pub released: u64,
    /// Packets released after waiting for an earlier sequence number (reordered or repaired).
    pub held_released: u64,
    /// Sequence numbers given up after `max_wait`.
    pub skipped: u64,
    /// Sequence numbers given up because the buffer was full (a jump or a long gap).
    pub overflow: u64,
    /// Packets dropped because their sequence number was already released or skipped.
    pub late: u64,
    /// Packets dropped because the same sequence number is already held.
    pub duplicates: u64,
}

impl JitterStats {
    /// Add `o`'s counters to these.
    pub fn add(&mut self, o: &JitterStats) {
        self.released += o.released;
        self.held_released += o.held_released;
        self.skipped += o.skipped;
        self.overflow += o.overflow;
        self.late += o.late;
        self.duplicates += o.duplicates;
    }
}

struct Slot<T> {
    seq: u64,
    arrival: Instant,
    item: T,
}

/// Reorder buffer for one RTP stream (see the module docs).
pub struct JitterBuffer<T> {
    slots: Vec<Option<Slot<T>>>,
    max_wait: Duration,
    /// Extended sequence number of the next packet to release (`None` before the first packet).
    next: Option<u64>,
    /// Highest extended sequence number seen.
    newest: u64,
    held: usize,
    /// When the current gap is given up: the oldest held packet's arrival + `max_wait`.
    deadline: Option<Instant>,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// A buffer holding at most `capacity` (≥ 1) sequence numbers, waiting `max_wait` for a gap.
    pub fn new(max_wait: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: (0..capacity).map(|_| None).collect(),
            max_wait,
            next: None,
            newest: 0,
            held: 0,
            deadline: None,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets currently held.
    #[cfg_attr(not(test), allow(dead_code))] // the tests check the bound with it
    pub fn held(&self) -> usize {
        self.held
    }

    /// When [`poll`](Self::poll) has something to release (`None`: nothing held).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn cap(&self) -> u64 {
        self.slots.len() as u64
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.cap()) as usize
    }

    /// The extended sequence number of `seq`, nearest to the newest one seen; `None` if it
    /// would fall before the start of the extended space.
    fn extend(&self, seq: u16) -> Option<u64> {
        let delta = i64::from(seq.wrapping_sub(self.newest as u16) as i16);
        u64::try_from(self.newest as i64 + delta).ok()
    }

    /// A packet arrived at `now`; whatever is now in order is appended to `out`.
    pub fn push(&mut self, seq: u16, now: Instant, item: T, out: &mut Vec<T>) {
        let Some(next) = self.next else {
            // First packet: everything starts here.
            // Offset by one cycle so packets from just before the first one extend to a
            // sequence number ≥ 0 (and are then late).
            self.newest = u64::from(seq) + (1 << 16);
            self.stats.released += 1;
            self.next = Some(self.newest + 1);
            out.push(item);
            return;
        };
        let Some(ext) = self.extend(seq) else {
            self.stats.late += 1;
            return;
        };
        if ext < next {
            self.stats.late += 1;
            return;
        }
        if ext >= next + self.cap() {
            // Make room: the oldest sequence numbers go, held ones in order, missing ones counted.
            self.advance_to(ext + 1 - self.cap(), out, true);
        }
        let i = self.index(ext);
        if self.slots[i].is_some() {
            self.stats.duplicates += 1;
            return;
        }
        self.newest = self.newest.max(ext);
        self.slots[i] = Some(Slot {
            seq: ext,
            arrival: now,
            item,
        });
        self.held += 1;
        self.release_run(Some(ext), out);
        if self.held == 0 {
            self.deadline = None;
        } else if self.deadline.is_none() || self.next != Some(next) {
            self.deadline = self.oldest_arrival().map(|a| a + self.max_wait);
        }
    }

    /// Give up the gaps whose wait is over at `now`; released packets are appended to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<T>) {
        while let Some(d) = self.deadline {
            if d > now {
                return;
            }
            let Some(first) = self.first_held() else {
                self.deadline = None;
                return;
            };
            self.advance_to(first, out, false);
            self.release_run(None, out);
            self.deadline = self.oldest_arrival().map(|a| a + self.max_wait);
        }
    }

    /// Release held packets in order and skip missing ones up to (not including) `target`.
    fn advance_to(&mut self, target: u64, out: &mut Vec<T>, overflow: bool) {
        let Some(next) = self.next else { return };
        if target <= next {
            return;
        }
        let mut released = 0;
        // Only sequence numbers within the ring can be held.
        let scan_end = target.min(next + self.cap());
        for s in next..scan_end {
            if self.held == 0 {
                break;
            }
            let i = self.index(s);
            if let Some(slot) = self.slots[i].take() {
                debug_assert_eq!(slot.seq, s);
                self.held -= 1;
                released += 1;
                self.stats.released += 1;
                self.stats.held_released += 1;
                out.push(slot.item);
            }
        }
        let missing = target - next - released;
        if overflow {
            self.stats.overflow += missing;
        } else {
            self.stats.skipped += missing;
        }
        self.next = Some(target);
    }

    /// Release the contiguous run starting at `next` (`pushed`: the sequence number that just
    /// arrived, which did not wait).
    fn release_run(&mut self, pushed: Option<u64>, out: &mut Vec<T>) {
        let Some(mut next) = self.next else { return };
        while self.held > 0 {
            let i = self.index(next);
            let Some(slot) = self.slots[i].take() else { break };
            debug_assert_eq!(slot.seq, next);
            self.held -= 1;
            self.stats.released += 1;
            if pushed != Some(slot.seq) {
                self.stats.held_released += 1;
            }
            out.push(slot.item);
            next += 1;
        }
        self.next = Some(next);
    }

    /// The first held sequence number.
    fn first_held(&self) -> Option<u64> {
        let next = self.next?;
        (next..=self.newest).find(|s| self.slots[self.index(*s)].is_some())
    }

    /// The earliest arrival among held packets.
    fn oldest_arrival(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        let next = self.next?;
        (next..=self.newest)
            .filter_map(|s| self.slots[self.index(s)].as_ref().map(|slot| slot.arrival))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(300);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Push `seq` (item = seq) at `at`, returning what was released.
    fn push(jb: &mut JitterBuffer<u16>, seq: u16, at: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        jb.push(seq, at, seq, &mut out);
        out
    }

    fn poll(jb: &mut JitterBuffer<u16>, at: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        jb.poll(at, &mut out);
        out
    }

    #[test]
    fn in_order_passes_straight_through() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 16);
        for s in 100..120u16 {
            assert_eq!(push(&mut jb, s, ms(t0, u64::from(s))), vec![s]);
            assert_eq!(jb.next_deadline(), None);
        }
        assert_eq!(jb.held(), 0);
        let st = jb.stats();
        assert_eq!((st.released, st.held_released, st.skipped, st.late), (20, 0, 0, 0));
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 16);
        assert_eq!(push(&mut jb, 10, t0), vec![10]);
        assert!(push(&mut jb, 12, ms(t0, 1)).is_empty());
        assert!(push(&mut jb, 13, ms(t0, 2)).is_empty());
        assert_eq!(jb.next_deadline(), Some(ms(t0, 1) + WAIT));
        assert_eq!(push(&mut jb, 11, ms(t0, 3)), vec![11, 12, 13]);
        assert_eq!(jb.next_deadline(), None);
        assert_eq!(push(&mut jb, 14, ms(t0, 4)), vec![14]);
        let st = jb.stats();
        assert_eq!((st.released, st.held_released, st.skipped), (5, 2, 0));
    }

    /// An RTX repair arriving after the frame's last packet (but within the bound) completes it.
    #[test]
    fn late_repair_within_the_bound_is_waited_for() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 64);
        assert_eq!(push(&mut jb, 1, t0), vec![1]);
        // 2 lost; 3..=9 arrive over 200 ms (the frame's last packet and more).
        for s in 3..=9u16 {
            assert!(push(&mut jb, s, ms(t0, u64::from(s) * 25)).is_empty());
        }
        assert!(poll(&mut jb, ms(t0, 290)).is_empty(), "the gap's wait is not over");
        assert_eq!(jb.next_deadline(), Some(ms(t0, 75) + WAIT));
        assert_eq!(push(&mut jb, 2, ms(t0, 300)), (2..=9).collect::<Vec<_>>());
        assert_eq!(jb.stats().skipped, 0);
        assert_eq!(jb.held(), 0);
    }

    #[test]
    fn gap_is_given_up_after_the_bound() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 64);
        push(&mut jb, 1, t0);
        push(&mut jb, 4, ms(t0, 10));
        push(&mut jb, 5, ms(t0, 20));
        assert!(poll(&mut jb, ms(t0, 309)).is_empty());
        assert_eq!(poll(&mut jb, ms(t0, 310)), vec![4, 5]);
        assert_eq!(jb.stats().skipped, 2);
        assert_eq!(jb.next_deadline(), None);
        // The repair arrives too late: dropped, counted, not released.
        assert!(push(&mut jb, 2, ms(t0, 320)).is_empty());
        assert_eq!(jb.stats().late, 1);
        assert_eq!(push(&mut jb, 6, ms(t0, 330)), vec![6]);
    }

    /// A second gap behind the first: its wait counts from its own held packets' arrival, so no
    /// packet waits longer than the bound.
    #[test]
    fn second_gap_waits_from_its_oldest_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 64);
        push(&mut jb, 1, t0);
        push(&mut jb, 3, ms(t0, 10)); // gap at 2
        push(&mut jb, 5, ms(t0, 200)); // gap at 4
        assert_eq!(poll(&mut jb, ms(t0, 310)), vec![3]);
        assert_eq!(jb.next_deadline(), Some(ms(t0, 200) + WAIT));
        assert!(poll(&mut jb, ms(t0, 499)).is_empty());
        assert_eq!(poll(&mut jb, ms(t0, 500)), vec![5]);
        assert_eq!(jb.stats().skipped, 2);
        // Both gaps given up at once when polled late.
        let mut jb = JitterBuffer::new(WAIT, 64);
        push(&mut jb, 1, t0);
        push(&mut jb, 3, ms(t0, 10));
        push(&mut jb, 5, ms(t0, 20));
        assert_eq!(poll(&mut jb, ms(t0, 1000)), vec![3, 5]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 16);
        assert_eq!(push(&mut jb, 65534, t0), vec![65534]);
        assert!(push(&mut jb, 0, ms(t0, 1)).is_empty());
        assert!(push(&mut jb, 1, ms(t0, 2)).is_empty());
        assert_eq!(push(&mut jb, 65535, ms(t0, 3)), vec![65535, 0, 1]);
        assert_eq!(push(&mut jb, 2, ms(t0, 4)), vec![2]);
        // A gap across the wrap is given up like any other.
        push(&mut jb, 4, ms(t0, 5));
        assert_eq!(poll(&mut jb, ms(t0, 305)), vec![4]);
        assert_eq!(jb.stats().skipped, 1);
        // Old packets from before the wrap are late, not "far ahead".
        assert!(push(&mut jb, 65530, ms(t0, 306)).is_empty());
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.held(), 0);
    }

    #[test]
    fn capacity_bounds_what_is_held() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 8);
        push(&mut jb, 0, t0);
        // 1 lost; 2..=8 held (7 of 8 slots).
        for s in 2..=8u16 {
            assert!(push(&mut jb, s, ms(t0, 1)).is_empty());
        }
        assert_eq!(jb.held(), 7);
        // 9 does not fit with 1 still awaited: 1 is given up, 2..=9 come out.
        assert_eq!(push(&mut jb, 9, ms(t0, 2)), (2..=9).collect::<Vec<_>>());
        assert_eq!(jb.stats().overflow, 1);
        // A jump far ahead releases what is held and skips the rest, never holding > capacity.
        push(&mut jb, 11, ms(t0, 3));
        assert_eq!(push(&mut jb, 1000, ms(t0, 4)), vec![11]);
        assert_eq!(jb.held(), 1);
        // 10 and 12..=992 given up; 993..=999 (within capacity of 1000) are still waited for.
        assert_eq!(jb.stats().overflow, 1 + 1 + (992 - 11));
        assert_eq!(poll(&mut jb, ms(t0, 304)), vec![1000]);
        assert_eq!(jb.stats().skipped, 7);
        for s in 1002..1100u16 {
            push(&mut jb, s, ms(t0, 5));
            assert!(jb.held() <= 8);
        }
        assert!(push(&mut jb, 1098, ms(t0, 6)).is_empty());
        assert_eq!(jb.stats().late, 1, "1098 was released already");
    }

    #[test]
    fn duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(WAIT, 16);
        push(&mut jb, 5, t0);
        push(&mut jb, 7, t0);
        assert!(push(&mut jb, 7, t0).is_empty());
        assert!(push(&mut jb, 5, t0).is_empty());
        let st = jb.stats();
        assert_eq!((st.duplicates, st.late), (1, 1));
        assert_eq!(push(&mut jb, 6, t0), vec![6, 7]);
    }
}
