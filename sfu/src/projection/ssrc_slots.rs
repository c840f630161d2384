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
    pub source: Option<K>,
}

#[derive(Debug, Clone, Copy)]
struct Slot<K> {
    ssrc: u32,
    source: Option<K>,
    last_used: u64,
    /// Last seq/ts the receiver saw on this SSRC.
    last_out: Option<(u16, u32)>,
    /// `(seq_delta, ts_delta)` for the current source, set by its first packet.
    deltas: Option<(u16, u32)>,
    /// Video: the current source has not yet sent the start of a keyframe on this slot.
    awaiting_keyframe: bool,
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
                    source: None,
                    last_used: 0,
                    last_out: None,
                    deltas: None,
                    awaiting_keyframe: video,
                })
                .collect(),
            clock: 0,
            video,
            ts_step: if video { 3000 } else { 960 },
        }
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
            self.slots[i].source = None;
            self.slots[i].deltas = None;
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
        let (dseq, dts) = *s.deltas.get_or_insert_with(|| match s.last_out {
            Some((lseq, lts)) => (
                lseq.wrapping_add(1).wrapping_sub(seq),
                lts.wrapping_add(step).wrapping_sub(ts),
            ),
            None => (0, 0),
        });
        let out = (seq.wrapping_add(dseq), ts.wrapping_add(dts));
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
}
