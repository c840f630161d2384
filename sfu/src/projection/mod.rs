//! Per-receiver, per-source projection: turns the packets of all of a video source's layers
//! (simulcast encodings, SVC spatial/temporal layers, AV1 decode targets) into one continuous
//! RTP stream of the layer the allocator chose, switching layers only where the receiver's decoder
//! can follow (media spec §3.3, §3.4; JVB `AdaptiveSourceProjection`).
//!
//! The projection is pure: the lead fills a codec-agnostic [`PacketMeta`] from the codec parsers,
//! calls [`Projection::on_packet`] and writes the returned [`Rewrite`] into the outgoing copy.
//! Nothing here allocates after construction. See `docs/projection.md` for the invariants.
//!
//! Decisions are made per *frame* (one encoding, one RTP timestamp, one spatial layer) on the
//! first packet of the frame that arrives and remembered in a bounded history, so later and
//! reordered packets of the same frame get the same verdict and their proper output seq.

mod mapper;
pub mod ssrc_slots;

use std::time::{Duration, Instant};

use mapper::{wrap, DropMapper, Unwrap};

pub use ssrc_slots::{SlotAssignment, SlotState, SsrcSlots};

/// Most simulcast encodings a source may have.
pub const MAX_ENCODINGS: usize = 4;
/// Frames remembered for late/reordered packets (all layers of the current encoding).
const FRAME_HISTORY: usize = 64;
/// 90 kHz ticks of one frame at 30 fps: the least a timestamp advances across an encoding switch.
const MIN_SWITCH_TICKS: u32 = 3000;
/// Keyframes of several encodings arriving within this window form one "keyframe group".
const KEYFRAME_GROUP: Duration = Duration::from_millis(300);

/// Which rewriting and layer rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No usable layer info (H.264, VP8 without picture ID): whole-stream switching of encodings
    /// on keyframes, no temporal dropping, nothing but seq/ts rewritten.
    Generic,
    /// VP8 with picture ID and TL0PICIDX: simulcast encodings × temporal layers.
    Vp8,
    /// VP9: simulcast (usually one encoding) × spatial × temporal; marker bit rewritten.
    Vp9,
    /// AV1 with the dependency descriptor: decode targets; frame number rewritten.
    Av1,
}

/// Most AV1 frame references the projection checks; a frame with more is never a switch point.
pub const MAX_AV1_REFS: usize = 8;

/// AV1 dependency-descriptor facts about one frame, as bit masks over decode target indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Av1Dti {
    /// Bit `d` set iff the frame's DTI for decode target `d` is not "not present".
    pub present: u32,
    /// Bit `d` set iff the frame's DTI for decode target `d` is "switch".
    pub switch: u32,
    /// Frame-number differences of the frames this one references (`fdiffs`), the first
    /// `ref_count` entries. A "switch" frame starts a decode target only if the frames it
    /// references were forwarded: in K-SVC (L3T3_KEY) a delta frame that is "switch" for its
    /// spatial target still references that layer's previous frame, which a receiver on another
    /// spatial target never got.
    pub refs: [u16; MAX_AV1_REFS],
    /// Number of valid `refs`; more than [`MAX_AV1_REFS`] means "too many to check".
    pub ref_count: u8,
}

impl Av1Dti {
    /// Set the references from the descriptor's frame diffs.
    pub fn with_refs(mut self, fdiffs: &[u16]) -> Self {
        let n = fdiffs.len().min(MAX_AV1_REFS);
        self.refs[..n].copy_from_slice(&fdiffs[..n]);
        self.ref_count = u8::try_from(fdiffs.len()).unwrap_or(u8::MAX);
        self
    }
}

/// Input AV1 frame numbers remembered as forwarded or not (a window of this many).
const AV1_FWD_WINDOW: usize = 128;
/// Tag bit in [`Projection::av1_fwd`] slots: the frame was forwarded.
const AV1_FWD: u32 = 1 << 16;

/// What the projection needs to know about one received packet. Filled by the lead from the
/// RTP header and the codec parsers.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketMeta {
    /// Simulcast encoding index (0 = lowest); 0 for a single SVC stream.
    pub encoding: u8,
    /// Spatial layer id (0 without spatial layers).
    pub spatial: u8,
    /// Temporal layer id (0 without temporal layers).
    pub temporal: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// First packet of the frame (VP8 S=1 & PID=0, VP9 B, AV1 DD start).
    pub start_of_frame: bool,
    /// Last packet of the frame (VP9 E, AV1 DD end, else the marker).
    pub end_of_frame: bool,
    /// The frame is independent within its encoding and spatial layer 0 (VP8/H.264 keyframe, VP9
    /// non-inter-predicted S0, AV1 key frame with the template structure). Only needs to be set
    /// on the frame's first packet.
    pub keyframe: bool,
    /// Temporal switching point: the frame's temporal layer may start here, because the frame
    /// references only lower temporal layers (VP8 layer sync Y; VP9: a frame following a U point
    /// of a lower layer). For AV1 use [`PacketMeta::av1`] instead.
    pub switching_point: bool,
    /// Spatial switching point: the frame's spatial layer (> 0) may start here, because the
    /// frame references no earlier picture of its spatial layer (VP9 P=0, e.g. the upper layers
    /// of a keyframe picture).
    pub spatial_switching_point: bool,
    /// VP8/VP9 15-bit picture ID.
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    /// AV1 DD frame number.
    pub frame_number: Option<u16>,
    /// AV1 DD decode-target indications; `None` for AV1 means the frame could not be parsed.
    pub av1: Option<Av1Dti>,
}

/// The layer the allocator wants a receiver to get from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub encoding: u8,
    /// Highest spatial layer (for AV1: the spatial id of the decode target).
    pub spatial: u8,
    /// Highest temporal layer.
    pub temporal: u8,
    /// AV1 only: the decode target.
    pub decode_target: Option<DecodeTarget>,
}

/// An AV1 decode target and the `active_decode_targets_bitmask` to advertise while forwarding it
/// (the allocator knows which targets are subsets of the chosen one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTarget {
    pub index: u8,
    pub active_mask: u32,
}

/// Why a packet was not forwarded (a counter label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The target is `None`.
    Suspended,
    /// Not the encoding being forwarded, and not a usable keyframe of the target.
    OtherEncoding,
    /// Above the target's spatial or temporal layer, or not in the forwarded decode target.
    AboveTarget,
    /// A higher layer than is being forwarded, waiting for a switching point or keyframe.
    AwaitingSwitchPoint,
    /// A later packet of a frame the projection dropped.
    FrameDropped,
    /// Too old for the history, or its output slot is taken by a newer segment.
    TooOld,
    /// Encoding index out of range or AV1 frame without dependency descriptor info.
    NoLayerInfo,
    /// The encoding whose forwarding [`Projection::cut_to_target`] stopped (the estimate
    /// collapsed), until a keyframe of an encoding at most the target's arrives.
    Cut,
}

/// Values to write into the outgoing copy of a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// VP8/VP9: the 15-bit picture ID to write (if the input had one).
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    /// AV1: the frame number to write.
    pub frame_number: Option<u16>,
    /// AV1: the `active_decode_targets_bitmask` to write.
    pub active_decode_targets: Option<u32>,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(Rewrite),
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy)]
struct FrameRec {
    valid: bool,
    enc: u8,
    sid: u8,
    ts: u32,
    accepted: bool,
    out_ts: u32,
    picture_id: Option<u16>,
    tl0: Option<u8>,
    frame_number: Option<u16>,
    active_dts: Option<u32>,
    /// Spatial layer whose frame end carries the marker (SVC).
    marker_sid: u8,
    end_seen: bool,
}

const EMPTY_FRAME: FrameRec = FrameRec {
    valid: false,
    enc: 0,
    sid: 0,
    ts: 0,
    accepted: false,
    out_ts: 0,
    picture_id: None,
    tl0: None,
    frame_number: None,
    active_dts: None,
    marker_sid: 0,
    end_seen: false,
};

/// Per-encoding counters: unwrapping and the segment mappers.
#[derive(Debug, Clone)]
struct EncState {
    seq_u: Unwrap,
    /// Seq runs: one per dropped frame between forwarded ones, ~1-2 s of history.
    seq: DropMapper<32>,
    pid_u: Unwrap,
    pid: DropMapper<8>,
    tl0_u: Unwrap,
    tl0: DropMapper<8>,
    fnum_u: Unwrap,
    fnum: DropMapper<8>,
    /// `out_ts - in_ts` for the current segment of this encoding.
    ts_offset: u32,
    /// Picture of the newest frame seen (VP9: spatial frames of one picture share a picture ID).
    last_pic_ts: Option<u32>,
}

impl EncState {
    fn new() -> Self {
        Self {
            seq_u: Unwrap::new(16),
            seq: DropMapper::default(),
            pid_u: Unwrap::new(15),
            pid: DropMapper::default(),
            tl0_u: Unwrap::new(8),
            tl0: DropMapper::default(),
            fnum_u: Unwrap::new(16),
            fnum: DropMapper::default(),
            ts_offset: 0,
            last_pic_ts: None,
        }
    }
}

/// Highest output values issued so far (extended), for continuing across segments.
#[derive(Debug, Clone, Copy)]
struct OutState {
    seq_hi: i64,
    ts_hi: u32,
    ts_at: Option<Instant>,
    pid_hi: Option<i64>,
    tl0_hi: Option<i64>,
    fnum_hi: Option<i64>,
}

/// The per-(receiver, source) projection. See the module docs.
#[derive(Debug, Clone)]
pub struct Projection {
    ssrc: u32,
    codec: Codec,
    target: Option<Layer>,
    /// Encoding of the current segment, `None` while nothing is forwarded.
    cur_enc: Option<u8>,
    cur_spatial: u8,
    cur_temporal: u8,
    cur_dt: Option<DecodeTarget>,
    /// Spatial id of `cur_dt` (AV1: the frame of that layer ends a temporal unit, so carries
    /// the marker).
    cur_dt_spatial: u8,
    /// AV1: per input frame number modulo the window, `number | AV1_FWD` if forwarded, `number`
    /// if dropped (a slot for another number means "unknown": not forwarded).
    av1_fwd: [u32; AV1_FWD_WINDOW],
    /// A switch point of a higher layer of the target encoding was needed and not seen.
    want_keyframe: bool,
    /// The encoding [`Projection::cut_to_target`] stopped, until the next segment starts or the
    /// target changes (only labels its drops: the cut itself is the ended segment).
    cut: Option<u8>,
    /// VP9: (encoding, timestamp) of the newest keyframe picture; all its layers end with the
    /// marker on the target layer.
    key_pic: Option<(u8, u32)>,
    group_start: Option<Instant>,
    /// First output seq of the next segment (reserved when a segment ends).
    next_base: Option<i64>,
    out: OutState,
    first: bool,
    encs: [EncState; MAX_ENCODINGS],
    frames: [FrameRec; FRAME_HISTORY],
    frame_next: usize,
    /// Index in `frames` of the newest accepted frame.
    last_accepted: Option<usize>,
}

impl Projection {
    /// A projection onto `ssrc` whose first forwarded packet gets `initial_seq` / `initial_ts`
    /// (JVB starts at 1 / 1).
    pub fn new(ssrc: u32, codec: Codec, initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            ssrc,
            codec,
            target: None,
            cur_enc: None,
            cur_spatial: 0,
            cur_temporal: 0,
            cur_dt: None,
            cur_dt_spatial: 0,
            av1_fwd: [u32::MAX; AV1_FWD_WINDOW],
            want_keyframe: false,
            cut: None,
            key_pic: None,
            group_start: None,
            next_base: None,
            out: OutState {
                seq_hi: i64::from(initial_seq) - 1,
                ts_hi: initial_ts,
                ts_at: None,
                pid_hi: None,
                tl0_hi: None,
                fnum_hi: None,
            },
            first: true,
            encs: std::array::from_fn(|_| EncState::new()),
            frames: [EMPTY_FRAME; FRAME_HISTORY],
            frame_next: 0,
            last_accepted: None,
        }
    }

    /// The SSRC every forwarded packet is sent with.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// The encoding currently forwarded (`None` when suspended or waiting for the first keyframe).
    pub fn current_encoding(&self) -> Option<u8> {
        self.cur_enc
    }

    /// For RTCP SR translation (§3.4): the `out - in` RTP timestamp delta of `encoding` if it is
    /// the encoding being forwarded (SRs of other encodings are dropped).
    pub fn rtp_ts_offset(&self, encoding: u8) -> Option<u32> {
        (self.cur_enc == Some(encoding)).then(|| self.encs[usize::from(encoding)].ts_offset)
    }

    /// Changes the layer rules, e.g. from [`Codec::Generic`] (a projection made by an allocation
    /// before the source's first packet told its codec) to the codec the bitstream shows. Ends
    /// the current segment: forwarding resumes at the next keyframe, continuing the output
    /// seq / timestamp / picture ID / frame number spaces. A no-op for the same codec.
    pub fn set_codec(&mut self, codec: Codec) {
        if codec == self.codec {
            return;
        }
        tracing::debug!(ssrc = self.ssrc, from = ?self.codec, to = ?codec, "projection codec");
        self.end_segment();
        self.codec = codec;
        self.cur_dt = None;
        self.want_keyframe = false;
        // Frames decided under the old rules must not be matched by the new ones.
        for f in self.frames.iter_mut() {
            f.valid = false;
        }
        self.last_accepted = None;
    }

    /// Sets the layer to forward; `None` suspends at once (a keyframe is needed to resume).
    pub fn set_target(&mut self, target: Option<Layer>) {
        if target == self.target {
            return;
        }
        tracing::debug!(ssrc = self.ssrc, codec = ?self.codec, from = ?self.target, to = ?target, "projection target");
        self.target = target;
        self.want_keyframe = false;
        self.cut = None;
        if target.is_none() {
            self.end_segment();
        }
    }

    /// Sets `target` for a downscale forced by a collapsed bandwidth estimate (docs/bwe.md,
    /// "Downlink step"). Unlike [`Projection::set_target`], which keeps forwarding the base
    /// temporal layer of the current encoding until a keyframe of the lower one arrives (JVB's
    /// `VP8QualityFilter`), a current encoding above the target's stops at once: its packets are
    /// dropped ([`DropReason::Cut`]) and nothing is forwarded until a keyframe of an encoding at
    /// most the target's starts a new segment (output seq / timestamp / picture ID continue as
    /// after a suspension). Returns whether forwarding was cut; the caller then asks for that
    /// keyframe at once. A target at or above the current encoding is a plain `set_target`.
    pub fn cut_to_target(&mut self, target: Layer) -> bool {
        self.set_target(Some(target));
        match self.cur_enc {
            Some(c) if c > target.encoding => {
                tracing::debug!(ssrc = self.ssrc, from = c, to = target.encoding, "encoding cut");
                self.end_segment();
                self.cut = Some(c);
                true
            }
            _ => false,
        }
    }

    /// The encoding a keyframe should be requested for (PLI to its SSRC), if one is needed. The
    /// caller rate-limits the requests.
    pub fn needs_keyframe(&self) -> Option<u8> {
        let t = self.target?;
        if self.cur_enc != Some(t.encoding) || self.want_keyframe {
            Some(t.encoding)
        } else {
            None
        }
    }

    /// Decides one packet. `now` is its arrival time.
    pub fn on_packet(&mut self, now: Instant, m: &PacketMeta) -> Verdict {
        let e = usize::from(m.encoding);
        if e >= MAX_ENCODINGS {
            return Verdict::Drop(DropReason::NoLayerInfo);
        }
        let (ext, is_head) = self.encs[e].seq_u.update(u32::from(m.seq));
        if self.target.is_none() {
            return Verdict::Drop(DropReason::Suspended);
        }
        let idx = match self.find_frame(m.encoding, m.ts, m.spatial) {
            Some(i) => i,
            None => match self.decide(now, m, ext, is_head) {
                Ok(i) => i,
                Err(reason) => {
                    if self.cur_enc == Some(m.encoding) {
                        self.encs[e].seq.drop_value(ext);
                    }
                    return Verdict::Drop(reason);
                }
            },
        };
        let rec = self.frames[idx];
        if !rec.accepted {
            if self.cur_enc == Some(m.encoding) {
                self.encs[e].seq.drop_value(ext);
            }
            return Verdict::Drop(DropReason::FrameDropped);
        }
        let Some(out) = self.encs[e].seq.map(ext) else {
            return Verdict::Drop(DropReason::TooOld);
        };
        self.encs[e].seq.advance(ext);
        if out > self.out.seq_hi {
            self.out.seq_hi = out;
        }
        if m.end_of_frame || m.marker {
            self.frames[idx].end_seen = true;
        }
        let marker = match self.codec {
            Codec::Generic | Codec::Vp8 => m.marker,
            Codec::Vp9 | Codec::Av1 => m.marker || (m.end_of_frame && m.spatial == rec.marker_sid),
        };
        Verdict::Forward(Rewrite {
            seq: wrap(out, 16) as u16,
            ts: rec.out_ts,
            marker,
            picture_id: rec.picture_id,
            tl0picidx: rec.tl0,
            frame_number: rec.frame_number,
            active_decode_targets: rec.active_dts,
        })
    }

    fn find_frame(&self, enc: u8, ts: u32, sid: u8) -> Option<usize> {
        // Newest first: the common case is the frame just recorded.
        (0..FRAME_HISTORY)
            .map(|k| (self.frame_next + FRAME_HISTORY - 1 - k) % FRAME_HISTORY)
            .find(|&i| {
                let f = &self.frames[i];
                f.valid && f.enc == enc && f.ts == ts && f.sid == sid
            })
    }

    /// Ends the current segment: reserves the next segment's first seq (one extra slot if the last
    /// forwarded frame was incomplete, for its missing tail) and freezes the old mappers.
    fn end_segment(&mut self) {
        let Some(e) = self.cur_enc.take() else { return };
        let incomplete = self
            .last_accepted
            .is_some_and(|i| self.frames[i].valid && !self.frames[i].end_seen);
        let base = self.out.seq_hi + 1 + i64::from(incomplete);
        self.next_base = Some(base);
        self.encs[usize::from(e)].seq.freeze(base);
        // Frames of the ended segment must not be matched by a later segment of this encoding.
        for f in self.frames.iter_mut() {
            if f.enc == e && !f.accepted {
                f.valid = false;
            }
        }
    }

    /// Spatial / temporal layers wanted from encoding `e` given the target (JVB: below the
    /// target encoding forward everything while waiting to switch up, above it only the base).
    fn desired(&self, e: u8, t: &Layer) -> (u8, u8) {
        use std::cmp::Ordering::*;
        match e.cmp(&t.encoding) {
            Equal => (t.spatial, t.temporal),
            Less => (u8::MAX, u8::MAX),
            Greater => (0, 0),
        }
    }

    /// Whether a keyframe of encoding `e` (not the current one) starts a new segment.
    fn keyframe_acceptable(&mut self, now: Instant, e: u8, t: &Layer) -> bool {
        let cur = self.cur_enc.map_or(-1, i16::from);
        let (e16, t16) = (i16::from(e), i16::from(t.encoding));
        let out_of_phase = self
            .group_start
            .is_none_or(|g| now.saturating_duration_since(g) > KEYFRAME_GROUP);
        // JVB: a new group only starts when moving towards the target is possible at all.
        let possible = (e16 > cur && cur < t16) || (e16 < cur && cur > t16);
        if out_of_phase && possible {
            self.group_start = Some(now);
            e16 <= t16
        } else {
            // Up (or same) towards the target, or down to at most the target.
            e16 <= t16 && (cur <= e16 || t16 < cur)
        }
    }

    /// Decides a frame seen for the first time; records it and returns its history index, or the
    /// reason it is dropped without recording (frames of other encodings are not remembered)..
    fn decide(&mut self, now: Instant, m: &PacketMeta, ext: i64, is_head: bool) -> Result<usize, DropReason> {
        let t = self.target.ok_or(DropReason::Suspended)?;
        if self.codec == Codec::Av1 && m.av1.is_none() {
            self.want_keyframe = true;
            return Err(DropReason::NoLayerInfo);
        }
        let (sid, tid) = match self.codec {
            Codec::Generic => (0, 0),
            Codec::Vp8 => (0, m.temporal),
            Codec::Vp9 | Codec::Av1 => (m.spatial, m.temporal),
        };
        let independent = m.keyframe && m.start_of_frame && sid == 0 && is_head;
        let (ds, dt) = self.desired(m.encoding, &t);

        if self.cur_enc != Some(m.encoding) {
            let other = if self.cut == Some(m.encoding) {
                DropReason::Cut
            } else {
                DropReason::OtherEncoding
            };
            if !independent {
                return Err(other);
            }
            if !self.keyframe_acceptable(now, m.encoding, &t) {
                return Err(other);
            }
            tracing::debug!(ssrc = self.ssrc, from = ?self.cur_enc, to = m.encoding, "encoding switch");
            self.start_segment(now, m, ext);
            self.cur_spatial = 0;
            self.cur_temporal = dt;
            self.cur_dt = t.decode_target;
            self.cur_dt_spatial = t.spatial;
            if m.encoding == t.encoding {
                self.want_keyframe = false;
            }
            return Ok(self.accept(now, m, ext));
        }

        if independent {
            // A keyframe of the current encoding: every layer may start again.
            self.cur_spatial = 0;
            self.cur_temporal = dt;
            if m.encoding == t.encoding {
                self.cur_dt = t.decode_target;
                self.cur_dt_spatial = t.spatial;
                self.want_keyframe = false;
            }
            return Ok(self.accept(now, m, ext));
        }

        if self.codec == Codec::Av1 {
            return self.decide_av1(now, m, ext, is_head, &t);
        }

        // Down-switches take effect at once (at this frame boundary).
        self.cur_spatial = self.cur_spatial.min(ds);
        self.cur_temporal = self.cur_temporal.min(dt);
        if tid > dt {
            return self.record_drop(m, true, DropReason::AboveTarget);
        }
        if sid > ds {
            return self.record_drop(m, false, DropReason::AboveTarget);
        }
        let fresh = is_head && m.start_of_frame;
        let can_switch = fresh && m.switching_point;
        if sid > self.cur_spatial {
            let spatial_ok = fresh && m.spatial_switching_point;
            if spatial_ok && sid == self.cur_spatial + 1 && tid <= self.cur_temporal {
                tracing::debug!(ssrc = self.ssrc, sid, "spatial up-switch");
                self.cur_spatial = sid;
            } else {
                if m.encoding == t.encoding {
                    self.want_keyframe = true;
                }
                return self.record_drop(m, false, DropReason::AwaitingSwitchPoint);
            }
        } else if tid > self.cur_temporal {
            // In SVC a picture's temporal switch is taken at its lowest spatial layer, so the
            // upper layers (predicted from it) never go without it.
            if can_switch && sid == 0 {
                tracing::trace!(ssrc = self.ssrc, tid, "temporal up-switch");
                self.cur_temporal = tid;
            } else {
                return self.record_drop(m, true, DropReason::AwaitingSwitchPoint);
            }
        }
        if self.codec == Codec::Vp9 && sid == self.cur_spatial && self.cur_spatial >= ds {
            self.want_keyframe = false;
        }
        Ok(self.accept(now, m, ext))
    }

    fn decide_av1(
        &mut self,
        now: Instant,
        m: &PacketMeta,
        ext: i64,
        is_head: bool,
        t: &Layer,
    ) -> Result<usize, DropReason> {
        // Checked by the caller.
        let dti = m.av1.unwrap_or_default();
        let want = if m.encoding == t.encoding {
            t.decode_target.map(|d| (d, t.spatial))
        } else {
            self.cur_dt.map(|d| (d, self.cur_dt_spatial))
        };
        if let Some((w, w_spatial)) = want {
            if self.cur_dt.map(|c| c.index) != Some(w.index) {
                let bit = 1u32.checked_shl(u32::from(w.index)).unwrap_or(0);
                // Down to a target the current one contains (its frames were all forwarded): at
                // once. Otherwise at a frame that is "switch" for the wanted target and whose
                // references this receiver got.
                let contained = self.cur_dt.is_some_and(|c| c.active_mask & bit != 0);
                let switch_here =
                    is_head && m.start_of_frame && dti.switch & bit != 0 && self.av1_refs_forwarded(m, &dti);
                if contained || switch_here {
                    tracing::debug!(ssrc = self.ssrc, dt = w.index, "decode target switch");
                    self.cur_dt = Some(w);
                    self.cur_dt_spatial = w_spatial;
                    self.want_keyframe = false;
                } else if m.encoding == t.encoding {
                    self.want_keyframe = true;
                }
            }
        }
        let Some(cur) = self.cur_dt else {
            return self.record_drop(m, true, DropReason::AboveTarget);
        };
        let bit = 1u32.checked_shl(u32::from(cur.index)).unwrap_or(0);
        if dti.present & bit == 0 {
            return self.record_drop(m, true, DropReason::AboveTarget);
        }
        Ok(self.accept(now, m, ext))
    }

    /// Whether every frame `m` references was forwarded to this receiver.
    fn av1_refs_forwarded(&self, m: &PacketMeta, dti: &Av1Dti) -> bool {
        let Some(n) = m.frame_number else { return false };
        let count = usize::from(dti.ref_count);
        count <= MAX_AV1_REFS
            && dti.refs[..count].iter().all(|&d| {
                let r = n.wrapping_sub(d);
                d != 0 && self.av1_fwd[usize::from(r) % AV1_FWD_WINDOW] == (u32::from(r) | AV1_FWD)
            })
    }

    /// Remember whether input frame `m` (AV1) was forwarded.
    fn note_av1_frame(&mut self, m: &PacketMeta, forwarded: bool) {
        if let (Codec::Av1, Some(n)) = (self.codec, m.frame_number) {
            let flag = if forwarded { AV1_FWD } else { 0 };
            self.av1_fwd[usize::from(n) % AV1_FWD_WINDOW] = u32::from(n) | flag;
        }
    }

    /// Starts a new segment on `m.encoding` at its keyframe `m`.
    fn start_segment(&mut self, now: Instant, m: &PacketMeta, ext: i64) {
        self.end_segment();
        let e = usize::from(m.encoding);
        let base = self.next_base.take().unwrap_or(self.out.seq_hi + 1);
        self.encs[e].seq.reset(ext, base);
        // Timestamps: continue from the last one by the elapsed time, at least one frame.
        let out_ts = if self.first {
            self.out.ts_hi
        } else {
            let elapsed = self
                .out
                .ts_at
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            let ticks = u32::try_from(elapsed.as_micros() * 90 / 1000).unwrap_or(u32::MAX / 4);
            self.out.ts_hi.wrapping_add(ticks.clamp(MIN_SWITCH_TICKS, u32::MAX / 4))
        };
        self.encs[e].ts_offset = out_ts.wrapping_sub(m.ts);
        let st = &mut self.encs[e];
        if let Some(p) = m.picture_id {
            let (pe, _) = st.pid_u.update(u32::from(p));
            let first = self.out.pid_hi.map_or(pe, |h| h + 1);
            st.pid.reset(pe, first);
        }
        if let Some(x) = m.tl0picidx {
            let (xe, _) = st.tl0_u.update(u32::from(x));
            let first = self.out.tl0_hi.map_or(xe, |h| h + 1);
            st.tl0.reset(xe, first);
        }
        if let Some(f) = m.frame_number {
            let (fe, _) = st.fnum_u.update(u32::from(f));
            let first = self.out.fnum_hi.map_or(fe, |h| h + 1);
            st.fnum.reset(fe, first);
        }
        st.last_pic_ts = None;
        self.cut = None;
        // Frame numbers of another encoding say nothing about this one's.
        self.av1_fwd = [u32::MAX; AV1_FWD_WINDOW];
        self.cur_enc = Some(m.encoding);
        self.first = false;
    }

    /// Records a dropped frame of the current encoding (so its other packets are dropped too and
    /// its picture ID / TL0PICIDX / frame number leave no gap).
    /// `whole_picture`: the reason applies to every spatial layer of the picture (temporal), so
    /// its picture ID and TL0PICIDX go too.
    fn record_drop(&mut self, m: &PacketMeta, whole_picture: bool, reason: DropReason) -> Result<usize, DropReason> {
        let st = &mut self.encs[usize::from(m.encoding)];
        let new_picture = whole_picture && st.last_pic_ts != Some(m.ts);
        if let (Some(p), true) = (m.picture_id, new_picture) {
            let (pe, _) = st.pid_u.update(u32::from(p));
            st.pid.drop_value(pe);
        }
        if let (Some(x), true) = (m.tl0picidx, new_picture && m.temporal == 0 && m.spatial == 0) {
            let (xe, _) = st.tl0_u.update(u32::from(x));
            st.tl0.drop_value(xe);
        }
        if let Some(f) = m.frame_number {
            let (fe, _) = st.fnum_u.update(u32::from(f));
            st.fnum.drop_value(fe);
        }
        self.note_av1_frame(m, false);
        self.record(FrameRec {
            valid: true,
            enc: m.encoding,
            sid: m.spatial,
            ts: m.ts,
            accepted: false,
            ..EMPTY_FRAME
        });
        Err(reason)
    }

    /// Records an accepted frame and computes its rewritten fields.
    fn accept(&mut self, now: Instant, m: &PacketMeta, _ext: i64) -> usize {
        let st = &mut self.encs[usize::from(m.encoding)];
        let out_ts = m.ts.wrapping_add(st.ts_offset);
        if ts_newer(out_ts, self.out.ts_hi) || self.out.ts_at.is_none() {
            self.out.ts_hi = out_ts;
            self.out.ts_at = Some(now);
        }
        let mut picture_id = None;
        if let Some(p) = m.picture_id {
            let (pe, _) = st.pid_u.update(u32::from(p));
            if let Some(o) = st.pid.map(pe) {
                st.pid.advance(pe);
                self.out.pid_hi = Some(self.out.pid_hi.map_or(o, |h| h.max(o)));
                picture_id = Some(wrap(o, 15) as u16);
            }
        }
        let mut tl0 = None;
        if let Some(x) = m.tl0picidx {
            let (xe, _) = st.tl0_u.update(u32::from(x));
            if let Some(o) = st.tl0.map(xe) {
                st.tl0.advance(xe);
                self.out.tl0_hi = Some(self.out.tl0_hi.map_or(o, |h| h.max(o)));
                tl0 = Some(wrap(o, 8) as u8);
            }
        }
        let mut frame_number = None;
        if let Some(f) = m.frame_number {
            let (fe, _) = st.fnum_u.update(u32::from(f));
            if let Some(o) = st.fnum.map(fe) {
                st.fnum.advance(fe);
                self.out.fnum_hi = Some(self.out.fnum_hi.map_or(o, |h| h.max(o)));
                frame_number = Some(wrap(o, 16) as u16);
            }
        }
        st.last_pic_ts = Some(m.ts);
        let (marker_sid, active_dts) = match self.codec {
            // The marker ends the temporal unit at the spatial layer being forwarded now (not
            // the target's, which may still be waiting for its switch point).
            Codec::Av1 => (self.cur_dt_spatial, self.cur_dt.map(|d| d.active_mask)),
            Codec::Vp9 => {
                // A keyframe picture's upper layers are switching points and follow in the same
                // picture, so the marker belongs to the target layer; otherwise to the highest
                // layer forwarded now. Pending an encoding switch up (`ds == MAX`) the sender's
                // marker is kept.
                let ds = self.target.map_or(0, |t| self.desired(m.encoding, &t).0);
                if m.keyframe && m.start_of_frame && m.spatial == 0 {
                    self.key_pic = Some((m.encoding, m.ts));
                }
                // Every layer of the keyframe picture, not only S0: the upper layers switch up
                // one by one, and a marker on S1 would end the picture before S2 (the receiver
                // then drops S2's key frame and cannot decode S2 until the next keyframe).
                let in_key_pic = self.key_pic == Some((m.encoding, m.ts));
                let sid = if ds == u8::MAX {
                    u8::MAX
                } else if in_key_pic {
                    ds.max(self.cur_spatial)
                } else {
                    self.cur_spatial
                };
                (sid, None)
            }
            _ => (self.cur_spatial, None),
        };
        // A frame too old to map its picture ID etc. is dropped rather than sent with the
        // sender's values.
        let unmappable = (m.picture_id.is_some() && picture_id.is_none())
            || (m.tl0picidx.is_some() && tl0.is_none())
            || (m.frame_number.is_some() && frame_number.is_none());
        let idx = self.record(FrameRec {
            valid: true,
            enc: m.encoding,
            sid: m.spatial,
            ts: m.ts,
            accepted: !unmappable,
            out_ts,
            picture_id,
            tl0,
            frame_number,
            active_dts,
            marker_sid,
            end_seen: false,
        });
        if !unmappable {
            self.last_accepted = Some(idx);
        }
        self.note_av1_frame(m, !unmappable);
        idx
    }

    fn record(&mut self, rec: FrameRec) -> usize {
        let idx = self.frame_next;
        if self.last_accepted == Some(idx) {
            self.last_accepted = None;
        }
        self.frames[idx] = rec;
        self.frame_next = (idx + 1) % FRAME_HISTORY;
        idx
    }
}

/// RFC 3550 timestamp order: `a` is newer than `b`.
fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[cfg(test)]
mod tests;
