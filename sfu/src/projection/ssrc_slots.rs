//! SSRC-rewriting mode (media spec §3.5): a receiver has a fixed pool of send SSRCs ("slots",
//! 50 for video); sources take slots in LRU order. When a slot is (re)assigned, the caller must
//! send the source map (`VideoSourcesMap`/`AudioSourcesMap`) *before* any media on it, and the
//! slot's RTP seq/ts continue from what the receiver last saw on that SSRC.
//!
//! Applied on top of the [`Projection`](super::Projection) output. Allocation happens only in
//! [`SsrcSlots::new`].

/// Result of [`SsrcSlots::activate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAssignment<K> {
    /// The source already had this slot: nothing to announce.
    Existing { slot: usize, ssrc: u32 },
    /// The source was given this slot: announce the mapping before media. `evicted` is the
    /// source that lost the slot (LRU), if any.
    Assigned { slot: usize, ssrc: u32, evicted: Option<K> },
}

/// Observable state of one slot (for source maps and stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState<K> {
    pub ssrc: u32,
    /// The slot's RTX SSRC (video), for retransmissions to the receiver.
    pub rtx: Option<u32>,
    pub source: Option<K>,
}

#[derive(Debug, Clone, Copy)]
struct Slot<K> {
    ssrc: u32,
    rtx: Option<u32>,
    source: Option<K>,
    last_used: u64,
    /// Last seq/ts the receiver saw on this SSRC.
    last_out: Option<(u16, u32)>,
    /// `(seq_delta, ts_delta)` for the current source, set by its first packet.
    deltas: Option<(u16, u32)>,
    /// Output seq of the current source's first packet on this slot: its packets that would
    /// land before it (reordered from before the remap) are dropped, or they would repeat
    /// sequence numbers the previous source already used on this SSRC.
    base: u16,
    /// Video: the current source has not yet sent the start of a keyframe on this slot.
    awaiting_keyframe: bool,
    /// Newest VP8/VP9 TL0PICIDX and AV1 frame number the receiver saw on this SSRC, and the
    /// current source's deltas onto them (media.md §3.5: both continue across a remap).
    last_tl0: Option<u8>,
    tl0_delta: Option<u8>,
    last_frame: Option<u16>,
    frame_delta: Option<u16>,
}

/// A receiver's pool of send SSRCs for one media kind, assigned to sources in LRU order.
#[derive(Debug, Clone)]
pub struct SsrcSlots<K> {
    slots: Vec<Slot<K>>,
    clock: u64,
    video: bool,
    /// ts continuation step for a source remapped onto a used slot (960 audio, 3000 video).
    ts_step: u32,
}

impl<K: Copy + Eq> SsrcSlots<K> {
    /// One slot per SSRC in `ssrcs` (the caller draws them, unique per endpoint). `video` slots
    /// hold media back until a keyframe start after every (re)assignment.
    pub fn new(ssrcs: &[u32], video: bool) -> Self {
        Self {
            slots: ssrcs
                .iter()
                .map(|&ssrc| Slot {
                    ssrc,
                    rtx: None,
                    base: 0,
                    source: None,
                    last_used: 0,
                    last_out: None,
                    deltas: None,
                    awaiting_keyframe: video,
                    last_tl0: None,
                    tl0_delta: None,
                    last_frame: None,
                    frame_delta: None,
                })
                .collect(),
            clock: 0,
            video,
            ts_step: if video { 3000 } else { 960 },
        }
    }

    /// Gives slot `i` the RTX SSRC `rtx[i]` (video slots: a primary and an RTX SSRC each).
    pub fn with_rtx(mut self, rtx: &[u32]) -> Self {
        for (s, r) in self.slots.iter_mut().zip(rtx) {
            s.rtx = Some(*r);
        }
        self
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot SSRC `source` is mapped to, if any.
    pub fn ssrc_of(&self, source: K) -> Option<u32> {
        self.slot_of(source).map(|i| self.slots[i].ssrc)
    }

    /// The RTX SSRC of the slot whose primary SSRC is `ssrc`.
    pub fn rtx_of(&self, ssrc: u32) -> Option<u32> {
        self.slots.iter().find(|s| s.ssrc == ssrc).and_then(|s| s.rtx)
    }

    /// Whether `ssrc` is one of the pool's SSRCs (primary or RTX).
    pub fn owns(&self, ssrc: u32) -> bool {
        self.slots.iter().any(|s| s.ssrc == ssrc || s.rtx == Some(ssrc))
    }

    /// Gives `source` a slot (reusing its own, else a free one, else the least recently used).
    /// `None` only if the pool is empty.
    pub fn activate(&mut self, source: K) -> Option<SlotAssignment<K>> {
        self.clock += 1;
        let now = self.clock;
        if let Some(i) = self.slot_of(source) {
            self.slots[i].last_used = now;
            return Some(SlotAssignment::Existing {
                slot: i,
                ssrc: self.slots[i].ssrc,
            });
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.source.is_none())
            .or_else(|| (0..self.slots.len()).min_by_key(|&i| self.slots[i].last_used))?;
        let video = self.video;
        let s = &mut self.slots[i];
        let evicted = s.source.replace(source);
        s.last_used = now;
        s.deltas = None;
        s.tl0_delta = None;
        s.frame_delta = None;
        s.awaiting_keyframe = video;
        tracing::debug!(slot = i, ssrc = s.ssrc, "ssrc slot assigned");
        Some(SlotAssignment::Assigned {
            slot: i,
            ssrc: s.ssrc,
            evicted,
        })
    }

    /// Frees the slot of `source` silently (owner expired). Its seq/ts state stays with the slot.
    pub fn release(&mut self, source: K) {
        if let Some(i) = self.slot_of(source) {
            let s = &mut self.slots[i];
            s.source = None;
            s.deltas = None;
            s.tl0_delta = None;
            s.frame_delta = None;
        }
    }

    /// The slot SSRC and rewritten seq/ts for a packet of `source` (already projected), or `None`
    /// if the source has no slot or (video) its slot still waits for a keyframe start.
    pub fn rewrite(&mut self, source: K, seq: u16, ts: u32, keyframe_start: bool) -> Option<(u32, u16, u32)> {
        let i = self.slot_of(source)?;
        self.clock += 1;
        let now = self.clock;
        let step = self.ts_step;
        let s = &mut self.slots[i];
        if s.awaiting_keyframe {
            if !keyframe_start {
                return None;
            }
            s.awaiting_keyframe = false;
        }
        let (dseq, dts) = match s.deltas {
            Some(d) => d,
            None => {
                let d = match s.last_out {
                    Some((lseq, lts)) => (
                        lseq.wrapping_add(1).wrapping_sub(seq),
                        lts.wrapping_add(step).wrapping_sub(ts),
                    ),
                    None => (0, 0),
                };
                s.deltas = Some(d);
                s.base = seq.wrapping_add(d.0);
                d
            }
        };
        let out = (seq.wrapping_add(dseq), ts.wrapping_add(dts));
        if out.0.wrapping_sub(s.base) >= 0x8000 {
            // Older than this source's first packet on the slot.
            return None;
        }
        let newer = match s.last_out {
            None => true,
            Some((l, _)) => out.0 != l && out.0.wrapping_sub(l) < 0x8000,
        };
        if newer {
            s.last_out = Some(out);
        }
        s.last_used = now;
        Some((s.ssrc, out.0, out.1))
    }

    /// The TL0PICIDX to write for a (forwarded) packet of `source`: the projection's value,
    /// continued from the last one the receiver saw on the slot when the slot carried another
    /// source before. Call after [`SsrcSlots::rewrite`] accepted the packet.
    pub fn continue_tl0(&mut self, source: K, tl0: u8) -> u8 {
        let Some(i) = self.slot_of(source) else { return tl0 };
        let s = &mut self.slots[i];
        let d = *s
            .tl0_delta
            .get_or_insert_with(|| s.last_tl0.map_or(0, |l| l.wrapping_add(1).wrapping_sub(tl0)));
        let out = tl0.wrapping_add(d);
        if s.last_tl0.is_none_or(|l| out.wrapping_sub(l) < 0x80) {
            s.last_tl0 = Some(out);
        }
        out
    }

    /// The AV1 dependency-descriptor frame number to write for a packet of `source`, continued
    /// across remaps like [`SsrcSlots::continue_tl0`]. A constant shift per mapping keeps the
    /// frame diffs (references) valid.
    pub fn continue_frame(&mut self, source: K, frame: u16) -> u16 {
        let Some(i) = self.slot_of(source) else { return frame };
        let s = &mut self.slots[i];
        let d = *s
            .frame_delta
            .get_or_insert_with(|| s.last_frame.map_or(0, |l| l.wrapping_add(1).wrapping_sub(frame)));
        let out = frame.wrapping_add(d);
        if s.last_frame.is_none_or(|l| out.wrapping_sub(l) < 0x8000) {
            s.last_frame = Some(out);
        }
        out
    }

    /// The source currently mapped to slot SSRC `ssrc` (to route PLI/FIR/NACK back).
    pub fn source_of(&self, ssrc: u32) -> Option<K> {
        self.slots.iter().find(|s| s.ssrc == ssrc).and_then(|s| s.source)
    }

    /// The timestamp delta of `source`'s slot (to shift RTCP SR timestamps), once media flowed.
    pub fn ts_delta(&self, source: K) -> Option<(u32, u32)> {
        let i = self.slot_of(source)?;
        self.slots[i].deltas.map(|(_, d)| (self.slots[i].ssrc, d))
    }

    /// Every slot, for re-sending the whole map on a bridge-channel reconnect.
    pub fn slots(&self) -> impl Iterator<Item = SlotState<K>> + '_ {
        self.slots.iter().map(|s| SlotState {
            ssrc: s.ssrc,
            rtx: s.rtx,
            source: s.source,
        })
    }

    fn slot_of(&self, source: K) -> Option<usize> {
        self.slots.iter().position(|s| s.source == Some(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot handed from one source to another continues TL0PICIDX and AV1 frame numbers
    /// where the first source left them (media.md §3.5), and a source keeps its own shift.
    #[test]
    fn tl0_and_frame_number_continue_across_a_remap() {
        let mut p: SsrcSlots<u32> = SsrcSlots::new(&[100], true);
        p.activate(1);
        assert!(p.rewrite(1, 10, 1000, true).is_some());
        assert_eq!(
            p.continue_tl0(1, 200),
            200,
            "the first source on a fresh slot is not shifted"
        );
        assert_eq!(p.continue_frame(1, 5000), 5000);
        assert_eq!(p.continue_tl0(1, 201), 201);
        assert_eq!(p.continue_frame(1, 5003), 5003);
        // Source 2 takes the slot (LRU of one); its own counters are unrelated.
        assert!(matches!(
            p.activate(2),
            Some(SlotAssignment::Assigned { evicted: Some(1), .. })
        ));
        assert!(p.rewrite(2, 7, 50, true).is_some());
        assert_eq!(p.continue_tl0(2, 17), 202);
        assert_eq!(p.continue_frame(2, 65535), 5004);
        assert_eq!(p.continue_tl0(2, 18), 203);
        assert_eq!(
            p.continue_frame(2, 1),
            5006,
            "wraps with the source's counter; diffs kept"
        );
        // A late packet of an older picture keeps its shift and does not move `last` back.
        assert_eq!(p.continue_tl0(2, 17), 202);
        p.activate(1);
        assert!(p.rewrite(1, 11, 1100, true).is_some());
        assert_eq!(p.continue_tl0(1, 202), 204);
        assert_eq!(p.continue_frame(1, 5004), 5007);
        // Unmapped source: passed through.
        assert_eq!(p.continue_tl0(9, 3), 3);
    }

    /// The least recently used slot is remapped, and the caller is told to announce it.
    #[test]
    fn lru_remap_announces() {
        let mut p: SsrcSlots<u32> = SsrcSlots::new(&[100, 200], true);
        assert!(matches!(
            p.activate(1),
            Some(SlotAssignment::Assigned {
                ssrc: 100,
                evicted: None,
                ..
            })
        ));
        assert!(matches!(
            p.activate(2),
            Some(SlotAssignment::Assigned {
                ssrc: 200,
                evicted: None,
                ..
            })
        ));
        assert!(matches!(
            p.activate(1),
            Some(SlotAssignment::Existing { ssrc: 100, .. })
        ));
        // 2 is now least recently used.
        assert!(matches!(
            p.activate(3),
            Some(SlotAssignment::Assigned {
                ssrc: 200,
                evicted: Some(2),
                ..
            })
        ));
        assert_eq!(p.source_of(200), Some(3));
        assert_eq!(p.source_of(100), Some(1));
    }

    /// A remapped slot holds video until a keyframe start, then continues seq/ts.
    #[test]
    fn remap_continues_seq_and_waits_for_keyframe() {
        let mut p: SsrcSlots<u32> = SsrcSlots::new(&[100], true);
        p.activate(1);
        assert_eq!(p.rewrite(1, 10, 1000, false), None);
        assert_eq!(p.rewrite(1, 11, 1000, true), Some((100, 11, 1000)));
        assert_eq!(p.rewrite(1, 12, 4000, false), Some((100, 12, 4000)));
        p.activate(2);
        assert_eq!(p.rewrite(1, 13, 4000, true), None);
        assert_eq!(p.rewrite(2, 500, 77, false), None);
        assert_eq!(p.rewrite(2, 501, 77, true), Some((100, 13, 7000)));
        assert_eq!(p.rewrite(2, 502, 3077, false), Some((100, 14, 10000)));
    }

    /// A packet of the new source reordered from before its first one on the slot would
    /// repeat a sequence number the previous source used: dropped.
    #[test]
    fn late_packet_from_before_the_remap_is_dropped() {
        let mut p: SsrcSlots<u32> = SsrcSlots::new(&[100], false);
        p.activate(1);
        assert_eq!(p.rewrite(1, 10, 0, false), Some((100, 10, 0)));
        assert_eq!(p.rewrite(1, 11, 960, false), Some((100, 11, 960)));
        p.activate(2);
        assert_eq!(p.rewrite(2, 500, 0, false), Some((100, 12, 1920)));
        // 499 would become 11: already used by source 1.
        assert_eq!(p.rewrite(2, 499, 0, false), None);
        assert_eq!(p.rewrite(2, 502, 1920, false), Some((100, 14, 3840)));
        assert_eq!(p.rewrite(2, 501, 960, false), Some((100, 13, 2880)));
    }

    #[test]
    fn rtx_and_lookup() {
        let mut p: SsrcSlots<u32> = SsrcSlots::new(&[100, 200], true).with_rtx(&[101, 201]);
        p.activate(7);
        assert_eq!(p.ssrc_of(7), Some(100));
        assert_eq!(p.rtx_of(100), Some(101));
        assert_eq!(p.rtx_of(200), Some(201));
        assert!(p.owns(201) && !p.owns(7));
        p.release(7);
        assert_eq!(p.source_of(100), None);
        assert_eq!(p.slots().filter(|s| s.source.is_some()).count(), 0);
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Activate(u8),
        /// Next packet of a source: sequence advance (1 = no loss), keyframe start.
        Packet(u8, u16, bool),
        /// A packet of a source that was skipped earlier arrives late.
        Late(u8, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u8..8).prop_map(Op::Activate),
            6 => (0u8..8, 1u16..4, proptest::bool::weighted(0.2)).prop_map(|(s, a, k)| Op::Packet(s, a, k)),
            1 => (0u8..8, 0usize..8).prop_map(|(s, i)| Op::Late(s, i)),
        ]
    }

    proptest! {
        /// For any activations (more sources than slots), losses and reordering: per slot SSRC
        /// no output sequence number repeats, a source taking a slot continues at the slot's
        /// highest seq + 1, and within one tenure the output has exactly the input's gaps.
        #[test]
        fn slots_never_repeat_or_invent_gaps(
            video in any::<bool>(),
            starts in proptest::collection::vec(any::<u16>(), 8),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let ssrcs = [1000u32, 2000, 3000];
            let mut p: SsrcSlots<u8> = SsrcSlots::new(&ssrcs, video);
            let mut next: Vec<u16> = starts.clone();
            let mut skipped: Vec<Vec<u16>> = vec![Vec::new(); 8];
            let mut seen: std::collections::HashSet<(u32, u16)> = Default::default();
            // Per slot SSRC: highest output so far, and the tenure (source, first in, first out).
            let mut max_out: std::collections::HashMap<u32, u16> = Default::default();
            let mut tenure: std::collections::HashMap<u32, Option<(u8, u16, u16)>> = Default::default();
            for op in ops {
                let (src, seq, kf) = match op {
                    Op::Activate(s) => {
                        if let Some(SlotAssignment::Assigned { ssrc, .. }) = p.activate(s) {
                            tenure.insert(ssrc, None);
                        }
                        continue;
                    }
                    Op::Packet(s, adv, kf) => {
                        let i = usize::from(s);
                        for k in 1..adv {
                            skipped[i].push(next[i].wrapping_add(k));
                        }
                        next[i] = next[i].wrapping_add(adv);
                        (s, next[i], kf)
                    }
                    Op::Late(s, j) => {
                        let i = usize::from(s);
                        if skipped[i].is_empty() {
                            continue;
                        }
                        let j = j % skipped[i].len();
                        (s, skipped[i].swap_remove(j), false)
                    }
                };
                let Some((ssrc, out, _)) = p.rewrite(src, seq, u32::from(seq) * 3000, kf) else {
                    continue;
                };
                prop_assert!(seen.insert((ssrc, out)), "seq {} repeated on {}", out, ssrc);
                match tenure.get(&ssrc).copied().flatten() {
                    Some((s, first_in, first_out)) if s == src => {
                        prop_assert_eq!(out.wrapping_sub(first_out), seq.wrapping_sub(first_in));
                    }
                    _ => {
                        if let Some(m) = max_out.get(&ssrc) {
                            prop_assert_eq!(out, m.wrapping_add(1), "new tenure must continue the slot");
                        }
                        tenure.insert(ssrc, Some((src, seq, out)));
                    }
                }
                let m = max_out.entry(ssrc).or_insert(out);
                if out.wrapping_sub(*m) < 0x8000 {
                    *m = out;
                }
            }
        }
    }
}
