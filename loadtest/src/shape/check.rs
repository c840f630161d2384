//! Receiver-side validators: is what the bridge forwards on one SSRC a valid VP8 / AV1-DD stream?
//!
//! These parse the payload descriptor and the dependency descriptor themselves (not with
//! `sfu/src/codec/`), so the bridge and the harness check each other. Loss is not a violation:
//! sequence gaps are counted and make the checks around them lenient (a real receiver would NACK
//! or ask for a keyframe). A [`Violation`] is something a correct bridge never produces.

use std::fmt;
use std::time::{Duration, Instant};

/// A completed, decodable frame (VP8) or temporal unit (AV1: its highest decoded spatial layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDone {
    pub keyframe: bool,
    /// Resolution of the decoded layer (from the last VP8 keyframe / the AV1 structure; 0 when
    /// unknown).
    pub width: u16,
    pub height: u16,
    /// VP8: the sender's encoding index if the frame carries our shape tag, else 0. AV1: spatial id.
    pub spatial: u8,
    pub temporal: u8,
}

/// Something a correct bridge never forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    Malformed {
        seq: u16,
        what: &'static str,
    },
    Duplicate {
        seq: u16,
    },
    TimestampBackwards {
        seq: u16,
        prev: u32,
        ts: u32,
    },
    /// VP8 picture ID not +1 (and not explained by loss or temporal-layer thinning).
    PictureIdJump {
        seq: u16,
        expected: u16,
        got: u16,
    },
    Tl0PicIdx {
        seq: u16,
        expected: u8,
        got: u8,
    },
    /// The first frame (after start) is not a keyframe.
    StartOnDelta {
        seq: u16,
    },
    /// A VP8 delta frame of another encoding than the last keyframe's, with no loss since it.
    SwitchWithoutKeyframe {
        seq: u16,
        from: u8,
        to: u8,
    },
    /// Packets of one frame disagree, or a frame continues without its start.
    InconsistentFrame {
        seq: u16,
        what: &'static str,
    },
    /// An AV1 frame before any template structure.
    NoStructure {
        seq: u16,
    },
    BadTemplate {
        seq: u16,
        template_id: u8,
    },
    FrameNumberBackwards {
        seq: u16,
        prev: u16,
        got: u16,
    },
    /// An AV1 frame whose referenced frame (by fdiff) was not received, without loss to explain it.
    MissingReference {
        frame: u16,
        reference: u16,
    },
    /// An AV1 frame whose chain (for a decode target it belongs to) is broken, without loss.
    BrokenChain {
        frame: u16,
        chain: u8,
    },
    /// AV1: marker bit on a packet that does not end a frame.
    MarkerMidFrame {
        seq: u16,
    },
    /// AV1: a new temporal unit began while the previous one never got its marker.
    MissingMarker {
        seq: u16,
    },
}

impl Violation {
    /// The variant's name, for counting violations by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "Malformed",
            Self::Duplicate { .. } => "Duplicate",
            Self::TimestampBackwards { .. } => "TimestampBackwards",
            Self::PictureIdJump { .. } => "PictureIdJump",
            Self::Tl0PicIdx { .. } => "Tl0PicIdx",
            Self::StartOnDelta { .. } => "StartOnDelta",
            Self::SwitchWithoutKeyframe { .. } => "SwitchWithoutKeyframe",
            Self::InconsistentFrame { .. } => "InconsistentFrame",
            Self::NoStructure { .. } => "NoStructure",
            Self::BadTemplate { .. } => "BadTemplate",
            Self::FrameNumberBackwards { .. } => "FrameNumberBackwards",
            Self::MissingReference { .. } => "MissingReference",
            Self::BrokenChain { .. } => "BrokenChain",
            Self::MarkerMidFrame { .. } => "MarkerMidFrame",
            Self::MissingMarker { .. } => "MissingMarker",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Violation {}

/// Counters of one checked stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub packets: u64,
    /// Sequence numbers never seen (late arrivals are subtracted again).
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Completed decodable frames (VP8) / temporal units (AV1).
    pub frames: u64,
    pub keyframes: u64,
    /// Frames (VP8) / layer frames (AV1) with a missing packet.
    pub incomplete: u64,
    /// Complete frames that could not be decoded (a reference was lost).
    pub undecodable: u64,
    /// Frames the bridge left out on purpose (picture ID / frame number gaps without loss).
    pub thinned: u64,
    pub violations: u64,
}

/// Freeze detection: gaps between completed frames longer than a threshold (500 ms by default,
/// as in WebRTC's freeze statistics).
#[derive(Debug, Clone)]
pub struct FreezeDetector {
    threshold: Duration,
    last: Option<Instant>,
    pub freezes: u64,
    pub frozen: Duration,
    pub longest: Duration,
}

impl Default for FreezeDetector {
    fn default() -> Self {
        Self::new(Duration::from_millis(500))
    }
}

impl FreezeDetector {
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            last: None,
            freezes: 0,
            frozen: Duration::ZERO,
            longest: Duration::ZERO,
        }
    }

    /// A frame completed at `now`; returns the gap if it ended a freeze.
    pub fn on_frame(&mut self, now: Instant) -> Option<Duration> {
        let gap = self.last.map(|l| now.saturating_duration_since(l));
        self.last = Some(now);
        let gap = gap.filter(|g| *g > self.threshold)?;
        self.freezes += 1;
        self.frozen += gap;
        self.longest = self.longest.max(gap);
        Some(gap)
    }

    /// How long the stream has been frozen at `now`, if it is (for the end of a run).
    pub fn frozen_for(&self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last?);
        (gap > self.threshold).then_some(gap)
    }
}

/// What a sequence number tells about loss and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqEvent {
    Next,
    Gap(u64),
    Duplicate,
    Late,
}

#[derive(Debug, Clone, Default)]
struct SeqTracker {
    last: Option<u16>,
    /// Bit i: `last - i` was seen.
    seen: u64,
}

impl SeqTracker {
    fn on_seq(&mut self, seq: u16, stats: &mut CheckStats) -> SeqEvent {
        stats.packets += 1;
        let Some(last) = self.last else {
            self.last = Some(seq);
            self.seen = 1;
            return SeqEvent::Next;
        };
        let d = seq.wrapping_sub(last) as i16;
        if d > 0 {
            let d = d as u32;
            self.seen = if d < 64 { (self.seen << d) | 1 } else { 1 };
            self.last = Some(seq);
            if d == 1 {
                SeqEvent::Next
            } else {
                stats.lost += u64::from(d - 1);
                SeqEvent::Gap(u64::from(d - 1))
            }
        } else {
            let age = u32::from(last.wrapping_sub(seq));
            if age < 64 && self.seen & (1 << age) != 0 {
                stats.duplicates += 1;
                SeqEvent::Duplicate
            } else {
                if age < 64 {
                    self.seen |= 1 << age;
                }
                stats.lost = stats.lost.saturating_sub(1);
                stats.late += 1;
                SeqEvent::Late
            }
        }
    }
}

/// Record the first violation seen while processing a packet; the packet is still processed
/// so the checker's state stays in step with the stream.
fn flag(slot: &mut Option<Violation>, v: Violation) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

// ------------------------------------------------------------------------------------------
// VP8

#[derive(Debug, Clone, Copy)]
struct Vp8Frame {
    pid: u16,
    ts: u32,
    tid: u8,
    tl0: u8,
    keyframe: bool,
    encoding: Option<u8>,
    next_seq: u16,
    complete: bool,
    finished: bool,
}

/// Validator for one forwarded VP8 source (one SSRC).
#[derive(Debug, Clone, Default)]
pub struct Vp8Check {
    seq: SeqTracker,
    stats: CheckStats,
    frame: Option<Vp8Frame>,
    /// Loss seen since the last frame start.
    loss: bool,
    /// Loss seen since the last keyframe: the next keyframe (of a switch) may be what was lost.
    lost_since_key: bool,
    have_key: bool,
    /// Decoder buffers intact: [TL0 ("last"), TL1 ("golden")].
    refs_ok: [bool; 2],
    resolution: Option<(u16, u16)>,
    encoding: Option<u8>,
}

impl Vp8Check {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &CheckStats {
        &self.stats
    }

    /// Resolution of the last keyframe: the layer this receiver currently gets.
    pub fn resolution(&self) -> Option<(u16, u16)> {
        self.resolution
    }

    /// Feed one received RTP packet (after SRTP, RTX already unwrapped).
    pub fn on_packet(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<FrameDone>, Violation> {
        let mut v = None;
        let r = self.packet(seq, ts, marker, payload, &mut v);
        match (v, r) {
            (Some(v), _) | (None, Err(v)) => {
                self.stats.violations += 1;
                Err(v)
            }
            (None, Ok(done)) => Ok(done),
        }
    }

    fn packet(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        v: &mut Option<Violation>,
    ) -> Result<Option<FrameDone>, Violation> {
        let contiguous = match self.seq.on_seq(seq, &mut self.stats) {
            SeqEvent::Duplicate => return Err(Violation::Duplicate { seq }),
            SeqEvent::Late => return Ok(None),
            SeqEvent::Gap(_) => {
                self.loss = true;
                self.lost_since_key = true;
                false
            }
            SeqEvent::Next => true,
        };
        let d = parse_vp8_descriptor(payload).map_err(|what| Violation::Malformed { seq, what })?;
        let data = &payload[d.len..];

        if d.start {
            self.start_frame(seq, ts, &d, data, v)?;
        } else {
            let in_frame = self.frame.is_some();
            match &mut self.frame {
                Some(f) if f.pid == d.pid && f.ts == ts && !f.finished => {
                    if f.next_seq != seq {
                        f.complete = false;
                    }
                    f.next_seq = seq.wrapping_add(1);
                }
                _ => {
                    // The frame's start was lost (or, without loss, never sent): follow the
                    // frame as incomplete so the rest of its packets are not flagged again.
                    if contiguous && in_frame {
                        flag(
                            v,
                            Violation::InconsistentFrame {
                                seq,
                                what: "packet continues no frame",
                            },
                        );
                    }
                    self.abandon_frame();
                    self.frame = Some(Vp8Frame {
                        pid: d.pid,
                        ts,
                        tid: d.tid,
                        tl0: d.tl0,
                        keyframe: false,
                        encoding: None,
                        next_seq: seq.wrapping_add(1),
                        complete: false,
                        finished: false,
                    });
                }
            }
        }
        if !marker {
            return Ok(None);
        }
        let Some(f) = self.frame.as_mut() else {
            return Ok(None);
        };
        if f.finished {
            return Ok(None);
        }
        f.finished = true;
        let f = *f;
        if !f.complete {
            self.stats.incomplete += 1;
            self.lose_refs(f.tid);
            return Ok(None);
        }
        let decodable = f.keyframe
            || (self.have_key
                && match f.tid {
                    0 | 1 => self.refs_ok[0],
                    _ => self.refs_ok[0] && self.refs_ok[1],
                });
        if !decodable {
            self.stats.undecodable += 1;
            return Ok(None);
        }
        if f.tid == 1 {
            self.refs_ok[1] = true;
        }
        self.stats.frames += 1;
        let (width, height) = self.resolution.unwrap_or((0, 0));
        Ok(Some(FrameDone {
            keyframe: f.keyframe,
            width,
            height,
            spatial: f.encoding.unwrap_or(0),
            temporal: f.tid,
        }))
    }

    fn start_frame(
        &mut self,
        seq: u16,
        ts: u32,
        d: &Vp8Descriptor,
        data: &[u8],
        v: &mut Option<Violation>,
    ) -> Result<(), Violation> {
        self.abandon_frame();
        if data.len() < 3 {
            return Err(Violation::Malformed {
                seq,
                what: "VP8 frame shorter than its frame tag",
            });
        }
        let keyframe = data[0] & 0x01 == 0;
        let header_len = if keyframe { 10 } else { 3 };
        if keyframe {
            if data.len() < 10 || data[3..6] != [0x9d, 0x01, 0x2a] {
                return Err(Violation::Malformed {
                    seq,
                    what: "VP8 keyframe without start code",
                });
            }
            if d.tid != 0 {
                flag(
                    v,
                    Violation::InconsistentFrame {
                        seq,
                        what: "keyframe with TID > 0",
                    },
                );
            }
        }
        let tag = data
            .get(header_len..header_len + 4)
            .filter(|t| t[..2] == super::vp8::SHAPE_TAG);
        let encoding = tag.map(|t| t[2]);
        if let Some(t) = tag {
            if t[3] != d.tid {
                flag(
                    v,
                    Violation::InconsistentFrame {
                        seq,
                        what: "TID differs from the sender's",
                    },
                );
            }
        }

        let loss = std::mem::take(&mut self.loss);
        match self.frame_last() {
            Some((l_pid, l_ts, l_tid, l_tl0)) => {
                let dts = ts.wrapping_sub(l_ts) as i32;
                if dts <= 0 {
                    flag(v, Violation::TimestampBackwards { seq, prev: l_ts, ts });
                }
                let dpid = d.pid.wrapping_sub(l_pid) & 0x7fff;
                let expected = (l_pid + 1) & 0x7fff;
                let ok = match dpid {
                    1 => true,
                    0 => false,
                    n if n > 0x3fff => false,
                    n if loss => n < 0x100,
                    // A keyframe references nothing: frames left out before it (a bridge
                    // waiting for it after a switch) harm no one.
                    n if keyframe && n < 0x100 => {
                        self.stats.thinned += u64::from(n - 1);
                        true
                    }
                    // Temporal thinning: a bridge may leave out frames of a higher TID than the
                    // one it forwards next (they are not references for it).
                    n if thinning_ok(l_tid, d.tid, n) => {
                        self.stats.thinned += u64::from(n - 1);
                        true
                    }
                    _ => false,
                };
                if !ok {
                    flag(
                        v,
                        Violation::PictureIdJump {
                            seq,
                            expected,
                            got: d.pid,
                        },
                    );
                }
                let expected_tl0 = if d.tid == 0 { l_tl0.wrapping_add(1) } else { l_tl0 };
                if d.tl0 != expected_tl0 && !loss {
                    flag(
                        v,
                        Violation::Tl0PicIdx {
                            seq,
                            expected: expected_tl0,
                            got: d.tl0,
                        },
                    );
                }
            }
            None if !keyframe && !loss => flag(v, Violation::StartOnDelta { seq }),
            None => {}
        }
        if keyframe {
            let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
            let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
            self.resolution = Some((w, h));
            self.have_key = true;
            self.refs_ok = [true, true];
            self.encoding = encoding;
            self.lost_since_key = false;
            self.stats.keyframes += 1;
        } else if let (Some(from), Some(to)) = (self.encoding, encoding) {
            // After a gap since the last keyframe, the switch's keyframe may be what the link
            // lost (a receiver on a 30 % loss link saw 8–32 of these in 4 of 9 runs).
            if from != to && !self.lost_since_key {
                flag(v, Violation::SwitchWithoutKeyframe { seq, from, to });
            }
        }
        self.frame = Some(Vp8Frame {
            pid: d.pid,
            ts,
            tid: d.tid,
            tl0: d.tl0,
            keyframe,
            encoding,
            next_seq: seq.wrapping_add(1),
            complete: true,
            finished: false,
        });
        Ok(())
    }

    fn frame_last(&self) -> Option<(u16, u32, u8, u8)> {
        self.frame.map(|f| (f.pid, f.ts, f.tid, f.tl0))
    }

    /// The current frame ends without its marker: count it and its lost references.
    fn abandon_frame(&mut self) {
        if let Some(f) = self.frame.as_mut() {
            if !f.finished {
                f.finished = true;
                let tid = f.tid;
                self.stats.incomplete += 1;
                self.lose_refs(tid);
            }
        }
    }

    fn lose_refs(&mut self, tid: u8) {
        match tid {
            0 => self.refs_ok = [false, false],
            1 => self.refs_ok[1] = false,
            _ => {}
        }
    }
}

/// Whether a picture ID gap of `gap` (> 1) between a frame of TID `prev` and one of TID `cur`
/// can be a bridge's temporal-layer filtering in L1T3, whose pattern is TIDs 0,2,1,2 (positions
/// 0..3): the current frame's position is known for TL0 (0) and TL1 (2), the previous frame must
/// sit `gap` positions earlier with a matching TID, and every frame in between must have a
/// higher TID than the current one. A TL2 frame never follows a gap (its predecessor in the
/// pattern is TL0 or TL1, which it may reference).
fn thinning_ok(prev: u8, cur: u8, gap: u16) -> bool {
    const PATTERN: [u8; 4] = [0, 2, 1, 2];
    let pos: u16 = match cur {
        0 => 4,
        1 => 2,
        _ => return false,
    };
    if gap > pos {
        return false;
    }
    let prev_pos = usize::from(pos - gap);
    PATTERN[prev_pos % 4] == prev && (prev_pos + 1..usize::from(pos)).all(|p| PATTERN[p % 4] > cur)
}

#[derive(Debug, Clone, Copy)]
struct Vp8Descriptor {
    start: bool,
    pid: u16,
    tl0: u8,
    tid: u8,
    len: usize,
}

/// RFC 7741 §4.2. We require picture ID, TL0PICIDX and TID: the harness's senders always send
/// them and a bridge must keep them.
fn parse_vp8_descriptor(p: &[u8]) -> Result<Vp8Descriptor, &'static str> {
    let b0 = *p.first().ok_or("empty payload")?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    if b0 & 0x80 == 0 {
        return Err("VP8 descriptor without extension (no picture ID / TID)");
    }
    let b1 = *p.get(1).ok_or("VP8 descriptor truncated")?;
    let (i, l, t, k) = (b1 & 0x80 != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 0x10 != 0);
    if !(i && l && t) {
        return Err("VP8 descriptor lacks picture ID, TL0PICIDX or TID");
    }
    let mut at = 2;
    let m = *p.get(at).ok_or("VP8 descriptor truncated")?;
    let pid = if m & 0x80 != 0 {
        let lo = *p.get(at + 1).ok_or("VP8 descriptor truncated")?;
        at += 2;
        (u16::from(m & 0x7f) << 8) | u16::from(lo)
    } else {
        at += 1;
        u16::from(m)
    };
    let tl0 = *p.get(at).ok_or("VP8 descriptor truncated")?;
    at += 1;
    let tk = *p.get(at).ok_or("VP8 descriptor truncated")?;
    at += 1;
    let tid = if t { tk >> 6 } else { 0 };
    let _ = k;
    if tid == 3 {
        return Err("VP8 TID 3 in an L1T3 stream");
    }
    Ok(Vp8Descriptor {
        start,
        pid,
        tl0,
        tid,
        len: at,
    })
}

// ------------------------------------------------------------------------------------------
// AV1 dependency descriptor

const MAX_DT: usize = 32;
const MAX_FDIFFS: usize = 16;

/// A parsed template dependency structure (AV1 RTP spec A.8.3.x).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdStructure {
    pub template_id_offset: u8,
    pub decode_targets: usize,
    pub templates: Vec<DdTemplate>,
    pub chains: usize,
    /// Decode target → chain protecting it.
    pub protected_by: Vec<u8>,
    /// Render resolution per spatial id, if sent.
    pub resolutions: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdTemplate {
    pub spatial: u8,
    pub temporal: u8,
    /// 0 not present, 1 discardable, 2 switch, 3 required.
    pub dtis: Vec<u8>,
    pub fdiffs: Vec<u16>,
    pub chain_diffs: Vec<u8>,
}

/// One packet's descriptor, resolved against the structure (fixed-size: no allocation).
#[derive(Debug, Clone, Copy)]
struct FrameInfo {
    start: bool,
    end: bool,
    frame_number: u16,
    spatial: u8,
    temporal: u8,
    dtis: [u8; MAX_DT],
    fdiffs: [u16; MAX_FDIFFS],
    fdiff_cnt: usize,
    chain_diffs: [u8; MAX_DT],
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn get(&mut self, n: u32) -> Result<u32, &'static str> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or("DD truncated")?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn ns(&mut self, n: u32) -> Result<u32, &'static str> {
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        let v = self.get(w - 1)?;
        if v < m {
            return Ok(v);
        }
        Ok((v << 1) - m + self.get(1)?)
    }
}

fn parse_structure(r: &mut BitReader<'_>) -> Result<DdStructure, &'static str> {
    let template_id_offset = r.get(6)? as u8;
    let dt_cnt = r.get(5)? as usize + 1;
    let mut templates = Vec::new();
    let (mut s, mut t) = (0u8, 0u8);
    loop {
        if templates.len() >= 64 {
            return Err("DD: more than 64 templates");
        }
        templates.push(DdTemplate {
            spatial: s,
            temporal: t,
            dtis: Vec::new(),
            fdiffs: Vec::new(),
            chain_diffs: Vec::new(),
        });
        match r.get(2)? {
            0 => {}
            1 => t += 1,
            2 => {
                t = 0;
                s += 1;
            }
            _ => break,
        }
    }
    for tpl in &mut templates {
        for _ in 0..dt_cnt {
            tpl.dtis.push(r.get(2)? as u8);
        }
    }
    for tpl in &mut templates {
        while r.get(1)? == 1 {
            if tpl.fdiffs.len() >= MAX_FDIFFS {
                return Err("DD: too many fdiffs");
            }
            tpl.fdiffs.push(r.get(4)? as u16 + 1);
        }
    }
    let chains = r.ns(dt_cnt as u32 + 1)? as usize;
    let mut protected_by = Vec::new();
    if chains > 0 {
        for _ in 0..dt_cnt {
            protected_by.push(r.ns(chains as u32)? as u8);
        }
        for tpl in &mut templates {
            for _ in 0..chains {
                tpl.chain_diffs.push(r.get(4)? as u8);
            }
        }
    }
    let mut resolutions = Vec::new();
    if r.get(1)? == 1 {
        for _ in 0..=s {
            let w = r.get(16)? + 1;
            let h = r.get(16)? + 1;
            resolutions.push((w.min(65535) as u16, h.min(65535) as u16));
        }
    }
    Ok(DdStructure {
        template_id_offset,
        decode_targets: dt_cnt,
        templates,
        chains,
        protected_by,
        resolutions,
    })
}

/// What one descriptor carries: a new structure, a new active decode targets mask, and the
/// frame info (or the template id that no structure resolves).
type ParsedDd = (Option<DdStructure>, Option<u32>, Result<FrameInfo, u8>);

/// Parse a whole descriptor: the new structure (if attached), the active decode targets mask (if
/// sent), and the frame info resolved against `current` (or the new structure).
fn parse_dd(dd: &[u8], current: Option<&DdStructure>) -> Result<ParsedDd, &'static str> {
    if dd.len() < 3 {
        return Err("DD shorter than its mandatory fields");
    }
    let mut r = BitReader { data: dd, pos: 0 };
    let start = r.get(1)? == 1;
    let end = r.get(1)? == 1;
    let template_id = r.get(6)? as u8;
    let frame_number = r.get(16)? as u16;
    let (mut new_structure, mut mask) = (None, None);
    let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
    if dd.len() > 3 {
        let has_structure = r.get(1)? == 1;
        let has_mask = r.get(1)? == 1;
        custom_dtis = r.get(1)? == 1;
        custom_fdiffs = r.get(1)? == 1;
        custom_chains = r.get(1)? == 1;
        if has_structure {
            let s = parse_structure(&mut r)?;
            mask = Some(((1u64 << s.decode_targets) - 1) as u32);
            new_structure = Some(s);
        }
        if has_mask {
            let n = new_structure
                .as_ref()
                .or(current)
                .ok_or("DD active decode targets before any structure")?
                .decode_targets;
            mask = Some(r.get(n as u32)?);
        }
    }
    let Some(s) = new_structure.as_ref().or(current) else {
        return Ok((None, mask, Err(template_id)));
    };
    let index = (usize::from(template_id) + 64 - usize::from(s.template_id_offset)) % 64;
    let Some(tpl) = s.templates.get(index) else {
        return Ok((new_structure, mask, Err(template_id)));
    };
    let mut info = FrameInfo {
        start,
        end,
        frame_number,
        spatial: tpl.spatial,
        temporal: tpl.temporal,
        dtis: [0; MAX_DT],
        fdiffs: [0; MAX_FDIFFS],
        fdiff_cnt: tpl.fdiffs.len(),
        chain_diffs: [0; MAX_DT],
    };
    info.dtis[..tpl.dtis.len()].copy_from_slice(&tpl.dtis);
    info.fdiffs[..tpl.fdiffs.len()].copy_from_slice(&tpl.fdiffs);
    info.chain_diffs[..tpl.chain_diffs.len()].copy_from_slice(&tpl.chain_diffs);
    if custom_dtis {
        for dt in 0..s.decode_targets {
            info.dtis[dt] = r.get(2)? as u8;
        }
    }
    if custom_fdiffs {
        info.fdiff_cnt = 0;
        loop {
            let size = r.get(2)?;
            if size == 0 {
                break;
            }
            if info.fdiff_cnt >= MAX_FDIFFS {
                return Err("DD: too many custom fdiffs");
            }
            info.fdiffs[info.fdiff_cnt] = (r.get(4 * size)? + 1) as u16;
            info.fdiff_cnt += 1;
        }
    }
    if custom_chains {
        for c in 0..s.chains {
            info.chain_diffs[c] = r.get(8)? as u8;
        }
    }
    Ok((new_structure, mask, Ok(info)))
}

#[derive(Debug, Clone, Copy)]
struct Av1Frame {
    number: u16,
    ts: u32,
    info: FrameInfo,
    next_seq: u16,
    complete: bool,
    finished: bool,
}

/// Best decoded layer of the current temporal unit.
#[derive(Debug, Clone, Copy, Default)]
struct TuState {
    best: Option<(u8, u8)>,
    keyframe: bool,
    marked: bool,
}

/// Validator for one forwarded AV1 source with the dependency descriptor.
#[derive(Debug, Clone)]
pub struct Av1Check {
    seq: SeqTracker,
    stats: CheckStats,
    structure: Option<DdStructure>,
    active: u32,
    frame: Option<Av1Frame>,
    /// Frame number being assembled when loss was last seen.
    loss_at: Option<u16>,
    /// Decoded frames by frame number (bit set = decodable frame received).
    decoded: Box<[u64; 1024]>,
    /// Frames of which at least one packet arrived: a reference that arrived but could not be
    /// decoded is the consequence of an earlier loss or violation, not a new one.
    seen: Box<[u64; 1024]>,
    have_key: bool,
    tu: TuState,
    tu_ts: Option<u32>,
    resolution: Option<(u16, u16)>,
}

impl Default for Av1Check {
    fn default() -> Self {
        Self::new()
    }
}

impl Av1Check {
    pub fn new() -> Self {
        Self {
            seq: SeqTracker::default(),
            stats: CheckStats::default(),
            structure: None,
            active: 0,
            frame: None,
            loss_at: None,
            decoded: Box::new([0; 1024]),
            seen: Box::new([0; 1024]),
            have_key: false,
            tu: TuState::default(),
            tu_ts: None,
            resolution: None,
        }
    }

    pub fn stats(&self) -> &CheckStats {
        &self.stats
    }

    /// The last structure received.
    pub fn structure(&self) -> Option<&DdStructure> {
        self.structure.as_ref()
    }

    /// Resolution of the highest spatial layer decoded in the last complete temporal unit.
    pub fn resolution(&self) -> Option<(u16, u16)> {
        self.resolution
    }

    /// Feed one received RTP packet with its dependency descriptor extension body.
    pub fn on_packet(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        dd: &[u8],
    ) -> Result<Option<FrameDone>, Violation> {
        let mut v = None;
        let r = self.packet(seq, ts, marker, payload, dd, &mut v);
        match (v, r) {
            (Some(v), _) | (None, Err(v)) => {
                self.stats.violations += 1;
                Err(v)
            }
            (None, Ok(done)) => Ok(done),
        }
    }

    fn is_decoded(&self, n: u16) -> bool {
        self.decoded[usize::from(n >> 6)] & (1 << (n & 63)) != 0
    }

    fn set_decoded(&mut self, n: u16, on: bool) {
        set_bit(&mut self.decoded, n, on);
    }

    /// Whether the absence of frame `reference` is explained: some of it arrived (so it was
    /// lost or broken earlier, already counted), or loss was seen at or after it.
    fn loss_explains(&self, reference: u16) -> bool {
        self.seen[usize::from(reference >> 6)] & (1 << (reference & 63)) != 0
            || self.loss_at.is_some_and(|l| l.wrapping_sub(reference) as i16 >= 0)
    }

    fn packet(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        dd: &[u8],
        v: &mut Option<Violation>,
    ) -> Result<Option<FrameDone>, Violation> {
        let event = self.seq.on_seq(seq, &mut self.stats);
        match event {
            SeqEvent::Duplicate => return Err(Violation::Duplicate { seq }),
            SeqEvent::Late => return Ok(None),
            SeqEvent::Gap(_) | SeqEvent::Next => {}
        }
        let (new_structure, mask, info) =
            parse_dd(dd, self.structure.as_ref()).map_err(|what| Violation::Malformed { seq, what })?;
        if let Some(s) = new_structure {
            self.structure = Some(s);
        }
        if let Some(m) = mask {
            self.active = m;
        }
        let info = match info {
            Ok(i) => i,
            Err(_) if self.structure.is_none() => return Err(Violation::NoStructure { seq }),
            Err(template_id) => return Err(Violation::BadTemplate { seq, template_id }),
        };
        if matches!(event, SeqEvent::Gap(_)) {
            // Loss at or before this frame (the lost packets may belong to it or to any frame
            // since the last packet we saw).
            self.loss_at = Some(info.frame_number);
        }
        check_av1_payload(seq, payload, &info, v);

        // A new temporal unit: the previous one must have ended with a marker.
        let new_tu = self.tu_ts.is_none_or(|t| t != ts);
        if new_tu && info.start {
            if let Some(prev) = self.tu_ts {
                if ts.wrapping_sub(prev) as i32 <= 0 {
                    flag(v, Violation::TimestampBackwards { seq, prev, ts });
                }
                if self.tu.best.is_some() && !self.tu.marked {
                    flag(v, Violation::MissingMarker { seq });
                }
            }
            self.tu = TuState::default();
            self.tu_ts = Some(ts);
        }

        if info.start {
            self.start_frame(seq, ts, &info, new_tu, v);
        } else {
            let in_frame = self.frame.is_some();
            match &mut self.frame {
                Some(f) if f.number == info.frame_number && f.ts == ts && !f.finished => {
                    if f.next_seq != seq {
                        f.complete = false;
                    }
                    f.next_seq = seq.wrapping_add(1);
                }
                _ => {
                    if matches!(event, SeqEvent::Next) && in_frame {
                        flag(
                            v,
                            Violation::InconsistentFrame {
                                seq,
                                what: "packet continues no frame",
                            },
                        );
                    }
                    self.abandon_frame();
                    set_bit(&mut self.seen, info.frame_number, true);
                    self.frame = Some(Av1Frame {
                        number: info.frame_number,
                        ts,
                        info,
                        next_seq: seq.wrapping_add(1),
                        complete: false,
                        finished: false,
                    });
                }
            }
        }
        if marker && !info.end {
            flag(v, Violation::MarkerMidFrame { seq });
        }
        if info.end {
            self.end_frame(v);
        }
        if !marker {
            return Ok(None);
        }
        self.tu.marked = true;
        let Some((spatial, temporal)) = self.tu.best else {
            return Ok(None);
        };
        let (width, height) = self
            .structure
            .as_ref()
            .and_then(|s| s.resolutions.get(usize::from(spatial)).copied())
            .unwrap_or((0, 0));
        self.resolution = Some((width, height));
        self.stats.frames += 1;
        Ok(Some(FrameDone {
            keyframe: self.tu.keyframe,
            width,
            height,
            spatial,
            temporal,
        }))
    }

    fn start_frame(&mut self, seq: u16, ts: u32, info: &FrameInfo, new_tu: bool, v: &mut Option<Violation>) {
        self.abandon_frame();
        let number = info.frame_number;
        if let Some(prev) = self.frame {
            let d = number.wrapping_sub(prev.number) as i16;
            if d <= 0 {
                flag(
                    v,
                    Violation::FrameNumberBackwards {
                        seq,
                        prev: prev.number,
                        got: number,
                    },
                );
            } else {
                if d > 1 && !matches!(self.loss_at, Some(l) if l == number) {
                    self.stats.thinned += (d - 1) as u64;
                }
                for k in 1..d as u16 {
                    self.set_decoded(prev.number.wrapping_add(k), false);
                    set_bit(&mut self.seen, prev.number.wrapping_add(k), false);
                }
            }
            if !new_tu && info.spatial <= prev.info.spatial && prev.ts == ts {
                flag(
                    v,
                    Violation::InconsistentFrame {
                        seq,
                        what: "spatial layers out of order within a temporal unit",
                    },
                );
            }
        }
        self.set_decoded(number, false);
        set_bit(&mut self.seen, number, true);
        self.frame = Some(Av1Frame {
            number,
            ts,
            info: *info,
            next_seq: seq.wrapping_add(1),
            complete: true,
            finished: false,
        });
    }

    fn abandon_frame(&mut self) {
        if let Some(f) = self.frame.as_mut() {
            if !f.finished {
                f.finished = true;
                self.stats.incomplete += 1;
            }
        }
    }

    fn end_frame(&mut self, v: &mut Option<Violation>) {
        let Some(f) = self.frame.as_mut() else {
            return;
        };
        if f.finished {
            return;
        }
        f.finished = true;
        let f = *f;
        if !f.complete {
            self.stats.incomplete += 1;
            return;
        }
        let info = f.info;
        let keyframe = info.fdiff_cnt == 0;
        let mut decodable = true;
        if !keyframe && !self.have_key {
            flag(
                v,
                Violation::StartOnDelta {
                    seq: f.next_seq.wrapping_sub(1),
                },
            );
            decodable = false;
        }
        for &fd in &info.fdiffs[..info.fdiff_cnt] {
            let reference = f.number.wrapping_sub(fd);
            if !self.is_decoded(reference) {
                decodable = false;
                if self.have_key && !self.loss_explains(reference) {
                    flag(
                        v,
                        Violation::MissingReference {
                            frame: f.number,
                            reference,
                        },
                    );
                }
            }
        }
        // Chains of the active decode targets this frame is part of.
        let mut checked = 0u32;
        if let Some(s) = self.structure.as_ref() {
            for dt in 0..s.decode_targets.min(MAX_DT) {
                if info.dtis[dt] == 0 || self.active & (1 << dt) == 0 {
                    continue;
                }
                let Some(&c) = s.protected_by.get(dt) else {
                    continue;
                };
                if checked & (1 << c) != 0 {
                    continue;
                }
                checked |= 1 << c;
                let d = info.chain_diffs[usize::from(c)];
                if d == 0 {
                    continue;
                }
                let reference = f.number.wrapping_sub(u16::from(d));
                if !self.is_decoded(reference) {
                    decodable = false;
                    if self.have_key && !self.loss_explains(reference) {
                        flag(
                            v,
                            Violation::BrokenChain {
                                frame: f.number,
                                chain: c,
                            },
                        );
                    }
                }
            }
        }
        if keyframe {
            decodable = true;
            self.have_key = true;
            self.stats.keyframes += 1;
        }
        if !decodable {
            self.stats.undecodable += 1;
            return;
        }
        self.set_decoded(f.number, true);
        self.tu.keyframe |= keyframe;
        let better = self.tu.best.is_none_or(|(s, _)| info.spatial >= s);
        if better {
            self.tu.best = Some((info.spatial, info.temporal));
        }
    }
}

fn set_bit(bits: &mut [u64; 1024], n: u16, on: bool) {
    let w = &mut bits[usize::from(n >> 6)];
    if on {
        *w |= 1 << (n & 63);
    } else {
        *w &= !(1 << (n & 63));
    }
}

/// The AV1 aggregation header must agree with the descriptor (Z iff not first, Y iff not
/// last), and a frame's first OBU header (when it is the only element) with its layer ids.
fn check_av1_payload(seq: u16, payload: &[u8], info: &FrameInfo, v: &mut Option<Violation>) {
    let Some(&agg) = payload.first() else {
        flag(
            v,
            Violation::Malformed {
                seq,
                what: "empty AV1 payload",
            },
        );
        return;
    };
    let z = agg & 0x80 != 0;
    let y = agg & 0x40 != 0;
    if z == info.start || y == info.end {
        flag(
            v,
            Violation::InconsistentFrame {
                seq,
                what: "AV1 aggregation header Z/Y disagree with DD start/end",
            },
        );
    }
    let w = (agg >> 4) & 0x03;
    if info.start && w == 1 {
        if let Some(&[h, ext]) = payload.get(1..3).and_then(|s| <&[u8; 2]>::try_from(s).ok()) {
            if h & 0x04 != 0 && (ext >> 5 != info.temporal || (ext >> 3) & 0x03 != info.spatial) {
                flag(
                    v,
                    Violation::InconsistentFrame {
                        seq,
                        what: "OBU extension layer ids disagree with the DD template",
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::av1::{Av1Config, Av1Svc, L3T3_KEY};
    use super::super::vp8::{Vp8Config, Vp8Simulcast};
    use super::super::{OutPacket, TRACKING_LEN};
    use super::*;

    /// A packet as a receiver sees it.
    #[derive(Debug, Clone)]
    struct Rx {
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
        dd: Vec<u8>,
        // What the sender knew (for building mutations).
        spatial: u8,
        temporal: u8,
        keyframe: bool,
    }

    fn generate<F: FnMut(Instant, &mut Vec<OutPacket>)>(ms: u64, mut poll: F) -> Vec<OutPacket> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..ms / 10 {
            poll(t0 + Duration::from_millis(i * 10), &mut out);
        }
        out
    }

    /// Number packets from near the wrap and write a tracking header where the sender allows it.
    fn receive(pkts: impl IntoIterator<Item = OutPacket>) -> Vec<Rx> {
        pkts.into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                let at = p.tracking_offset;
                p.payload[at..at + TRACKING_LEN].fill(0xEE);
                Rx {
                    seq: 65_500u16.wrapping_add(i as u16),
                    ts: p.rtp_ts,
                    marker: p.marker,
                    payload: p.payload,
                    dd: p.dd,
                    spatial: p.spatial,
                    temporal: p.temporal,
                    keyframe: p.keyframe,
                }
            })
            .collect()
    }

    fn renumber(rx: &mut [Rx]) {
        for (i, p) in rx.iter_mut().enumerate() {
            p.seq = 65_500u16.wrapping_add(i as u16);
        }
    }

    fn vp8(encoding: u8, ms: u64) -> Vec<Rx> {
        let mut s = Vp8Simulcast::new(11, Vp8Config::default());
        let pkts = generate(ms, |t, o| s.poll(t, o));
        receive(pkts.into_iter().filter(|p| p.encoding == encoding))
    }

    fn av1(ms: u64) -> Vec<Rx> {
        let mut s = Av1Svc::new(12, Av1Config::default());
        receive(generate(ms, |t, o| s.poll(t, o)))
    }

    fn run_vp8(rx: &[Rx]) -> (Vp8Check, Vec<FrameDone>, Vec<Violation>) {
        let mut c = Vp8Check::new();
        let (mut done, mut bad) = (Vec::new(), Vec::new());
        for p in rx {
            match c.on_packet(p.seq, p.ts, p.marker, &p.payload) {
                Ok(Some(f)) => done.push(f),
                Ok(None) => {}
                Err(v) => bad.push(v),
            }
        }
        (c, done, bad)
    }

    fn run_av1(rx: &[Rx]) -> (Av1Check, Vec<FrameDone>, Vec<Violation>) {
        let mut c = Av1Check::new();
        let (mut done, mut bad) = (Vec::new(), Vec::new());
        for p in rx {
            match c.on_packet(p.seq, p.ts, p.marker, &p.payload, &p.dd) {
                Ok(Some(f)) => done.push(f),
                Ok(None) => {}
                Err(v) => bad.push(v),
            }
        }
        (c, done, bad)
    }

    /// Frames (first-packet indexes) of a stream.
    fn frame_starts(rx: &[Rx]) -> Vec<usize> {
        let mut starts = vec![0];
        for i in 1..rx.len() {
            if rx[i - 1].marker {
                starts.push(i);
            }
        }
        starts
    }

    /// Every generated encoding, as the bridge would forward it alone, is a valid stream: all
    /// frames complete and decodable, keyframes at 0 s and 10 s, the encoding's resolution.
    #[test]
    fn vp8_generated_streams_pass() {
        for (e, (w, h)) in [(320, 180), (640, 360), (1280, 720)].into_iter().enumerate() {
            let rx = vp8(e as u8, 12_000);
            let (c, done, bad) = run_vp8(&rx);
            assert!(bad.is_empty(), "encoding {e}: {bad:?}");
            let frames = rx.iter().filter(|p| p.marker).count() as u64;
            assert_eq!(c.stats().frames, frames);
            assert_eq!(c.stats().keyframes, 2);
            assert_eq!(c.stats().lost + c.stats().incomplete + c.stats().undecodable, 0);
            assert_eq!(c.resolution(), Some((w, h)));
            assert!(done
                .iter()
                .all(|f| f.width == w && f.height == h && f.spatial == e as u8));
            for tid in 0..3 {
                assert!(done.iter().any(|f| f.temporal == tid));
            }
        }
    }

    /// A bridge forwarding only TL0+TL1 (or TL0) leaves picture ID gaps; that is valid.
    #[test]
    fn vp8_temporal_thinning_passes() {
        for max_tid in [0u8, 1] {
            let mut rx: Vec<Rx> = vp8(1, 5_000).into_iter().filter(|p| p.temporal <= max_tid).collect();
            renumber(&mut rx);
            let (c, done, bad) = run_vp8(&rx);
            assert!(bad.is_empty(), "{bad:?}");
            assert!(c.stats().thinned > 0);
            assert_eq!(done.len(), rx.iter().filter(|p| p.marker).count());
            assert!(done.iter().all(|f| f.temporal <= max_tid));
        }
    }

    /// Emulates a bridge switching 180p -> 720p with continuous picture ID / TL0PICIDX / ts;
    /// at the 720p keyframe it is valid and the resolution follows, at a delta frame it is not,
    /// unless a packet was lost since the last keyframe (it may have been the switch's keyframe).
    #[test]
    fn vp8_switch_needs_keyframe() {
        for (at_keyframe, lossy) in [(true, false), (false, false), (false, true)] {
            let mut s = Vp8Simulcast::new(3, Vp8Config::default());
            let t0 = Instant::now();
            let mut pkts = Vec::new();
            for i in 0..400u64 {
                if i == 300 {
                    s.request_keyframe(2);
                }
                s.poll(t0 + Duration::from_millis(i * 10), &mut pkts);
            }
            let rx_all = receive(pkts);
            // Switch point: the 720p keyframe requested at 3 s, or the 720p frame just after it.
            let key = rx_all
                .iter()
                .rposition(|p| p.spatial == 2 && p.keyframe && p.payload[0] & 0x10 != 0)
                .expect("a requested keyframe exists");
            let switch = if at_keyframe {
                key
            } else {
                (key + 1..rx_all.len())
                    .find(|&i| rx_all[i].spatial == 2 && rx_all[i].payload[0] & 0x10 != 0)
                    .expect("a later frame exists")
            };
            let mut out: Vec<Rx> = Vec::new();
            let mut switch_out = 0;
            let (mut dpid, mut dtl0, mut dts) = (0u16, 0u8, 0u32);
            let mut last: Option<(u16, u8, u32)> = None;
            for (i, p) in rx_all.into_iter().enumerate() {
                let want = if i < switch { 0 } else { 2 };
                if p.spatial != want {
                    continue;
                }
                let mut p = p;
                let pid = (u16::from(p.payload[2] & 0x7f) << 8) | u16::from(p.payload[3]);
                if i == switch {
                    switch_out = out.len();
                    let (lp, lt, lts) = last.expect("frames before the switch");
                    dpid = lp.wrapping_add(1).wrapping_sub(pid);
                    let tl0 = p.payload[4];
                    let next_tl0 = if p.temporal == 0 { lt.wrapping_add(1) } else { lt };
                    dtl0 = next_tl0.wrapping_sub(tl0);
                    dts = lts.wrapping_add(3000).wrapping_sub(p.ts);
                }
                let npid = pid.wrapping_add(dpid) & 0x7fff;
                p.payload[2] = 0x80 | (npid >> 8) as u8;
                p.payload[3] = npid as u8;
                p.payload[4] = p.payload[4].wrapping_add(dtl0);
                p.ts = p.ts.wrapping_add(dts);
                last = Some((npid, p.payload[4], p.ts));
                out.push(p);
            }
            renumber(&mut out);
            if lossy {
                // A 180p packet just before the switch never arrives.
                out.remove(switch_out - 2);
            }
            let (c, done, bad) = run_vp8(&out);
            if lossy {
                assert!(
                    !bad.iter().any(|v| matches!(v, Violation::SwitchWithoutKeyframe { .. })),
                    "{bad:?}"
                );
            } else if at_keyframe {
                assert!(bad.is_empty(), "{bad:?}");
                assert_eq!(c.resolution(), Some((1280, 720)));
                assert!(done.iter().any(|f| f.height == 180));
                assert_eq!(done.last().map(|f| f.height), Some(720));
            } else {
                assert!(
                    bad.iter()
                        .any(|v| matches!(v, Violation::SwitchWithoutKeyframe { from: 0, to: 2, .. })),
                    "{bad:?}"
                );
            }
        }
    }

    /// Loss (a sequence gap) is counted, not a violation; the lost TL0 frame makes later frames
    /// undecodable until the next keyframe.
    #[test]
    fn vp8_lost_packet_is_counted() {
        let mut rx = vp8(2, 12_000);
        let starts = frame_starts(&rx);
        // A multi-packet TL0 delta frame.
        let f = starts
            .windows(2)
            .find(|w| w[1] - w[0] >= 2 && rx[w[0]].temporal == 0 && !rx[w[0]].keyframe)
            .expect("720p has multi-packet TL0 frames")[0];
        rx.remove(f + 1);
        let (c, done, bad) = run_vp8(&rx);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(c.stats().lost, 1);
        assert_eq!(c.stats().incomplete, 1);
        assert!(c.stats().undecodable > 0);
        let total = rx.iter().filter(|p| p.marker).count();
        assert_eq!(done.len() as u64 + 1 + c.stats().undecodable, total as u64);
        // Recovered at the 10 s keyframe.
        assert!(done.last().is_some_and(|f| f.width == 1280));
    }

    /// A bridge that drops a frame (or a frame's first packet) and hides it by renumbering.
    #[test]
    fn vp8_hidden_drops_are_caught() {
        let rx = vp8(2, 2_000);
        let starts = frame_starts(&rx);
        // A whole TL1 frame between two TL2 frames: no thinning explains it (the TL2 frame
        // after it references it).
        let (a, b) = (starts[6], starts[7]);
        assert_eq!(rx[a].temporal, 1);
        let mut dropped: Vec<Rx> = rx[..a].iter().chain(&rx[b..]).cloned().collect();
        renumber(&mut dropped);
        let (_, _, bad) = run_vp8(&dropped);
        assert!(matches!(bad[..], [Violation::PictureIdJump { .. }]), "{bad:?}");
        // Dropping one TL2 frame (non-reference) is a legitimate temporal down/up switch.
        let (a, b) = (starts[5], starts[6]);
        assert_eq!(rx[a].temporal, 2);
        let mut tl2: Vec<Rx> = rx[..a].iter().chain(&rx[b..]).cloned().collect();
        renumber(&mut tl2);
        let (c, _, bad) = run_vp8(&tl2);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(c.stats().thinned, 1);
        // First packet of a multi-packet frame.
        let f = starts
            .windows(2)
            .skip(1)
            .find(|w| w[1] - w[0] >= 2)
            .expect("multi-packet frames")[0];
        let mut headless = rx.clone();
        headless.remove(f);
        renumber(&mut headless);
        let (_, _, bad) = run_vp8(&headless);
        assert!(
            bad.iter().any(|v| matches!(v, Violation::InconsistentFrame { .. })),
            "{bad:?}"
        );
    }

    /// Mutations of the descriptor and of the stream's start are caught.
    #[test]
    fn vp8_mutations_are_caught() {
        let rx = vp8(0, 2_000);
        let starts = frame_starts(&rx);
        // Skip a picture ID: every frame from the 10th on gets pid + 1.
        let mut skipped = rx.clone();
        for p in &mut skipped[starts[10]..] {
            let pid = ((u16::from(p.payload[2] & 0x7f) << 8) | u16::from(p.payload[3])) + 1;
            p.payload[2] = 0x80 | ((pid >> 8) as u8 & 0x7f);
            p.payload[3] = pid as u8;
        }
        let (_, _, bad) = run_vp8(&skipped);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(matches!(bad[0], Violation::PictureIdJump { .. }));
        // Start on a delta frame.
        let mut late = rx[starts[1]..].to_vec();
        renumber(&mut late);
        let (c, _, bad) = run_vp8(&late);
        assert!(matches!(bad[..], [Violation::StartOnDelta { .. }]), "{bad:?}");
        assert!(c.stats().undecodable > 0);
        // Wrong TL0PICIDX on a TL0 frame.
        let mut tl0 = rx.clone();
        let f = starts[8];
        assert_eq!(tl0[f].temporal, 0);
        tl0[f].payload[4] = tl0[f].payload[4].wrapping_add(5);
        let (_, _, bad) = run_vp8(&tl0);
        assert!(bad.iter().any(|v| matches!(v, Violation::Tl0PicIdx { .. })), "{bad:?}");
        // Duplicate packet and timestamp going backwards.
        let mut dup = rx.clone();
        dup.insert(3, dup[2].clone());
        let (_, _, bad) = run_vp8(&dup);
        assert!(matches!(bad[..], [Violation::Duplicate { .. }]), "{bad:?}");
        let mut back = rx.clone();
        for p in &mut back[starts[4]..] {
            p.ts = p.ts.wrapping_sub(20_000);
        }
        let (_, _, bad) = run_vp8(&back);
        assert!(matches!(bad[..], [Violation::TimestampBackwards { .. }]), "{bad:?}");
    }

    /// The full L3T3_KEY stream is valid: one FrameDone per temporal unit at 720p, and the
    /// structure parsed by this (independent) reader is libwebrtc's table.
    #[test]
    fn av1_generated_stream_passes() {
        let rx = av1(12_000);
        let (c, done, bad) = run_av1(&rx);
        assert!(bad.is_empty(), "{bad:?}");
        let tus = rx.iter().filter(|p| p.marker).count();
        assert_eq!(done.len(), tus);
        assert_eq!(c.stats().keyframes, 2);
        assert_eq!(c.stats().thinned + c.stats().undecodable + c.stats().incomplete, 0);
        assert!(done.iter().all(|f| (f.width, f.height, f.spatial) == (1280, 720, 2)));
        assert!(done[0].keyframe);
        let s = c.structure().expect("structure received");
        assert_eq!(s.decode_targets, 9);
        assert_eq!(s.chains, 3);
        assert_eq!(s.protected_by, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(s.resolutions, vec![(320, 180), (640, 360), (1280, 720)]);
        assert_eq!(s.templates.len(), L3T3_KEY.len());
        for (got, want) in s.templates.iter().zip(L3T3_KEY.iter()) {
            assert_eq!((got.spatial, got.temporal), (want.spatial, want.temporal));
            let dtis: String = got.dtis.iter().map(|d| ['-', 'D', 'S', 'R'][usize::from(*d)]).collect();
            assert_eq!(dtis, want.dtis);
            assert_eq!(got.chain_diffs, want.chain_diffs.to_vec());
            let f: Vec<u16> = want.fdiffs.iter().map(|&d| u16::from(d)).collect();
            assert_eq!(got.fdiffs, f);
        }
    }

    /// A bridge forwarding a lower decode target: drop the layers above, set the marker on the
    /// last forwarded packet of each temporal unit, renumber. Valid, at that resolution.
    fn forward(rx: &[Rx], max_s: u8, max_t: u8) -> Vec<Rx> {
        let mut out: Vec<Rx> = rx
            .iter()
            .filter(|p| p.spatial <= max_s && p.temporal <= max_t)
            .cloned()
            .collect();
        for i in 0..out.len() {
            let last_of_tu = out.get(i + 1).is_none_or(|n| n.ts != out[i].ts);
            out[i].marker = last_of_tu;
        }
        renumber(&mut out);
        out
    }

    #[test]
    fn av1_lower_decode_targets_pass() {
        let rx = av1(4_000);
        for (s, t, res) in [(1u8, 2u8, (640, 360)), (0, 0, (320, 180)), (2, 1, (1280, 720))] {
            let fw = forward(&rx, s, t);
            let (c, done, bad) = run_av1(&fw);
            assert!(bad.is_empty(), "S{s}T{t}: {bad:?}");
            assert_eq!(c.resolution(), Some(res));
            assert_eq!(done.len(), fw.iter().filter(|p| p.marker).count());
            assert!(done.iter().all(|f| f.spatial == s && f.temporal <= t));
            assert!(c.stats().thinned > 0);
        }
    }

    /// As JVB's AV1 filter does: forward a frame iff its DTI for the target decode target is
    /// not "not present". In L3T3_KEY that drops the lower spatial layers after the key unit.
    #[test]
    fn av1_dti_filtered_forwarding_passes() {
        let rx = av1(4_000);
        for (dt, res) in [(5usize, (640, 360)), (2, (320, 180)), (7, (1280, 720))] {
            // Recover each packet's template from the sender's layer ids and key flag.
            let mut out: Vec<Rx> = Vec::new();
            let mut n_in_tu = 0u64;
            let mut last_ts = None;
            for p in &rx {
                if last_ts != Some(p.ts) && p.spatial == 0 && p.dd[0] & 0x80 != 0 {
                    if last_ts.is_some() {
                        n_in_tu += 1;
                    }
                    if p.keyframe {
                        n_in_tu = 0;
                    }
                    last_ts = Some(p.ts);
                }
                let within = if p.keyframe {
                    0
                } else {
                    [1, 3, 2, 4][(n_in_tu % 4) as usize]
                };
                let t = &L3T3_KEY[usize::from(p.spatial) * 5 + within];
                if t.dtis.as_bytes()[dt] != b'-' {
                    out.push(p.clone());
                }
            }
            for i in 0..out.len() {
                out[i].marker = out.get(i + 1).is_none_or(|n| n.ts != out[i].ts);
            }
            renumber(&mut out);
            let (c, done, bad) = run_av1(&out);
            assert!(bad.is_empty(), "DT {dt}: {bad:?}");
            assert_eq!(c.resolution(), Some(res));
            assert_eq!(done.len(), out.iter().filter(|p| p.marker).count());
            assert!(done.iter().all(|f| usize::from(f.temporal) <= dt % 3));
        }
    }

    /// Each packet's L3T3_KEY template index, recovered from the sender's layer ids and key flag
    /// (the sender's pattern after a key unit is T0, T2, T1, T2).
    fn templates(rx: &[Rx]) -> Vec<usize> {
        let mut n_in_tu = 0u64;
        let mut last_ts = None;
        rx.iter()
            .map(|p| {
                if last_ts != Some(p.ts) && p.spatial == 0 && p.dd[0] & 0x80 != 0 {
                    if last_ts.is_some() {
                        n_in_tu += 1;
                    }
                    if p.keyframe {
                        n_in_tu = 0;
                    }
                    last_ts = Some(p.ts);
                }
                let within = if p.keyframe {
                    0
                } else {
                    [1, 3, 2, 4][(n_in_tu % 4) as usize]
                };
                usize::from(p.spatial) * 5 + within
            })
            .collect()
    }

    /// A bridge forwarding decode target `from` before packet `switch` and `to` from it on (a
    /// frame goes iff its DTI for the target is not "not present"), renumbered. Markers: on the
    /// last forwarded packet of each temporal unit, or (`marker_on_to`) only at the end of
    /// frames of the spatial layer of `to`, as a bridge that marks the target's layer would.
    fn switch_dt(rx: &[Rx], tpl: &[usize], switch: usize, from: usize, to: usize, marker_on_to: bool) -> Vec<Rx> {
        let mut out: Vec<Rx> = rx
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let dt = if *i < switch { from } else { to };
                L3T3_KEY[tpl[*i]].dtis.as_bytes()[dt] != b'-'
            })
            .map(|(_, p)| p.clone())
            .collect();
        for i in 0..out.len() {
            out[i].marker = if marker_on_to {
                out[i].spatial == (to / 3) as u8 && out[i].dd[0] & 0x40 != 0
            } else {
                out.get(i + 1).is_none_or(|n| n.ts != out[i].ts)
            };
        }
        renumber(&mut out);
        out
    }

    /// Decode-target switches in K-SVC (L3T3_KEY): at a key unit they are valid and the
    /// resolution follows; at a delta unit whose frames are "switch" for the new target but
    /// reference that layer's earlier frames (never forwarded), the validator reports it, up or
    /// down; a temporal unit left without its marker (the marker kept on a layer not being
    /// forwarded yet) is reported too.
    #[test]
    fn av1_ksvc_switches_are_checked() {
        let mut s = Av1Svc::new(5, Av1Config::default());
        let t0 = Instant::now();
        let mut pkts = Vec::new();
        for i in 0..400u64 {
            if i == 200 {
                s.request_keyframe();
            }
            s.poll(t0 + Duration::from_millis(i * 10), &mut pkts);
        }
        let rx = receive(pkts);
        let tpl = templates(&rx);
        let key = rx
            .iter()
            .rposition(|p| p.keyframe && p.spatial == 0 && p.dd[0] & 0x80 != 0)
            .expect("the requested key unit");
        assert!(key > 0, "a second key unit");
        // The second S0 T0 delta frame after it: "switch" for DT 0..2, referencing the S0 T0
        // frame 12 frame numbers earlier; the S2 T0 frame of that unit likewise for DT 6..8.
        // (At the first one the reference is the key unit's frame, which every target has: a
        // valid switch down.)
        let first = (key..rx.len()).find(|&i| tpl[i] == 1).expect("a T0 delta unit");
        let delta = (first + 1..rx.len())
            .find(|&i| tpl[i] == 1 && rx[i].ts != rx[first].ts)
            .expect("a second T0 delta unit");
        let (_, _, bad) = run_av1(&switch_dt(&rx, &tpl, first, 8, 2, false));
        assert!(bad.is_empty(), "{bad:?}");
        // (from, to): S0T2 -> S2T2 and back, S1T2 -> S0T2.
        for (from, to, res) in [(2, 8, (1280, 720)), (8, 2, (320, 180)), (5, 2, (320, 180))] {
            let ok = switch_dt(&rx, &tpl, key, from, to, false);
            let (c, done, bad) = run_av1(&ok);
            assert!(bad.is_empty(), "DT {from}->{to} at the key unit: {bad:?}");
            assert_eq!(c.resolution(), Some(res));
            assert_eq!(done.len(), ok.iter().filter(|p| p.marker).count());

            let broken = switch_dt(&rx, &tpl, delta, from, to, false);
            let (_, _, bad) = run_av1(&broken);
            assert!(
                bad.iter()
                    .any(|v| matches!(v, Violation::MissingReference { .. } | Violation::BrokenChain { .. })),
                "DT {from}->{to} at a delta unit must be caught: {bad:?}"
            );
        }
        // Up-switch pending until the key unit, with the marker already on S2: S0's units before
        // the key unit end without one.
        let unmarked = switch_dt(&rx, &tpl, key, 2, 8, true);
        let (_, _, bad) = run_av1(&unmarked);
        assert!(
            bad.iter().any(|v| matches!(v, Violation::MissingMarker { .. })),
            "{bad:?}"
        );
    }

    /// Dropping a needed frame is a violation when hidden (renumbered), loss when not.
    #[test]
    fn av1_dropped_reference_frame() {
        let rx = av1(2_000);
        // The S1 T0 frame of the 5th temporal unit (a T0 unit): S2 frames depend on it.
        let tus: Vec<u32> = {
            let mut v: Vec<u32> = rx.iter().map(|p| p.ts).collect();
            v.dedup();
            v
        };
        let victim = |p: &Rx| p.ts == tus[4] && p.spatial == 1;
        assert!(rx.iter().any(|p| victim(p) && p.temporal == 0));
        let mut hidden: Vec<Rx> = rx.iter().filter(|p| !victim(p)).cloned().collect();
        renumber(&mut hidden);
        let (_, _, bad) = run_av1(&hidden);
        assert!(
            bad.iter()
                .any(|v| matches!(v, Violation::MissingReference { .. } | Violation::BrokenChain { .. })),
            "{bad:?}"
        );
        let lost: Vec<Rx> = rx.iter().filter(|p| !victim(p)).cloned().collect();
        let (c, done, bad) = run_av1(&lost);
        assert!(bad.is_empty(), "{bad:?}");
        assert!(c.stats().lost > 0);
        assert!(c.stats().undecodable > 0, "{:?}", c.stats());
        // In L3T3_KEY spatial layers depend on each other only in the key unit: S2 (chain 2)
        // keeps decoding while S1 waits for a keyframe.
        assert_eq!(done.len(), rx.iter().filter(|p| p.marker).count());
        assert!(done.iter().all(|f| f.spatial == 2));
    }

    /// Corrupted descriptors are caught.
    #[test]
    fn av1_corrupt_dd_is_caught() {
        let rx = av1(1_000);
        // No structure: the key unit's extended descriptor cut to the mandatory part.
        let mut nostruct = rx.clone();
        nostruct[0].dd.truncate(3);
        let (_, _, bad) = run_av1(&nostruct);
        assert!(matches!(bad[0], Violation::NoStructure { .. }), "{bad:?}");
        // Truncated descriptor.
        let mut short = rx.clone();
        short[5].dd.truncate(2);
        let (_, _, bad) = run_av1(&short);
        assert!(matches!(bad[..], [Violation::Malformed { .. }]), "{bad:?}");
        // A template id past the 15 templates (offset + 20 mod 64).
        let mut tpl = rx.clone();
        let offset = run_av1(&rx[..1]).0.structure().map(|s| s.template_id_offset);
        let bad_id = (offset.expect("structure") + 20) % 64;
        let i = rx.iter().position(|p| p.dd.len() == 3).expect("mandatory DDs");
        tpl[i].dd[0] = (tpl[i].dd[0] & 0xc0) | bad_id;
        let (_, _, bad) = run_av1(&tpl);
        assert!(
            bad.iter().any(|v| matches!(v, Violation::BadTemplate { .. })),
            "{bad:?}"
        );
        // A frame number moved back by 3 on one frame's packets.
        let mut back = rx.clone();
        let n = u16::from_be_bytes([back[40].dd[1], back[40].dd[2]]);
        let start_of_40 = (0..=40).rev().find(|&k| back[k].dd[0] & 0x80 != 0).expect("start");
        for p in back[start_of_40..].iter_mut() {
            if u16::from_be_bytes([p.dd[1], p.dd[2]]) != n {
                break;
            }
            p.dd[1..3].copy_from_slice(&n.wrapping_sub(3).to_be_bytes());
        }
        let (_, _, bad) = run_av1(&back);
        assert!(!bad.is_empty());
        // Marker missing at the end of a temporal unit.
        let mut nomark = rx.clone();
        let m = nomark.iter().position(|p| p.marker).expect("markers");
        nomark[m].marker = false;
        let (_, _, bad) = run_av1(&nomark);
        assert!(matches!(bad[..], [Violation::MissingMarker { .. }]), "{bad:?}");
    }

    /// Freezes: gaps above 500 ms between completed frames.
    /// Network input never panics: bit flips, truncations and garbage in payloads and
    /// descriptors (deterministic from a seed) only ever produce values.
    #[test]
    fn garbage_never_panics() {
        let vp8_rx = vp8(1, 1_000);
        let av1_rx = av1(1_000);
        for seed in 0..40u64 {
            let mut rng = crate::shape::ShapeRng::new(seed);
            let mut pick = |n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
            let mut v = vp8_rx.clone();
            let mut a = av1_rx.clone();
            for _ in 0..200 {
                let i = pick(v.len());
                let len = v[i].payload.len();
                match pick(3) {
                    0 if len > 0 => v[i].payload[pick(len.min(16))] ^= 1 << pick(8),
                    0 | 1 => v[i].payload.truncate(pick(12)),
                    _ => v[i].seq = v[i].seq.wrapping_add(pick(5) as u16),
                }
                let j = pick(a.len());
                let dl = a[j].dd.len();
                match pick(4) {
                    0 if dl > 0 => a[j].dd[pick(dl)] ^= 1 << pick(8),
                    0 | 1 => a[j].dd.truncate(pick(dl + 1)),
                    2 => a[j].payload.truncate(pick(4)),
                    _ => a[j].dd = (0..pick(40)).map(|_| pick(256) as u8).collect(),
                }
            }
            let _ = run_vp8(&v);
            let _ = run_av1(&a);
        }
    }

    /// Chrome's own descriptors (hex from a public traffic capture in LiveKit's DD tests): the
    /// extended one parses into a 9-decode-target structure and the mandatory ones that follow
    /// resolve against it.
    #[test]
    fn parses_chrome_captured_descriptors() {
        let hex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("test hex"))
                .collect()
        };
        let key = hex(concat!(
            "c1017280081485214eafffaaaa863cf0430c10c302afc0aaa0063c00430010c002a000a80006000040",
            "001d954926e082b04a0941b820ac1282503157f974000ca864330e222222eca8655304224230eca877",
            "530077004200ef008601df010d"
        ));
        let (s, mask, info) = parse_dd(&key, None).expect("Chrome's structure parses");
        let s = s.expect("structure attached");
        let info = info.expect("template resolves");
        assert_eq!(info.frame_number, 0x0172);
        // Chrome's full-SVC L3T3 (not _KEY): every field lines up, down to the render
        // resolutions of a 480x270 capture, which a misread bit anywhere would scramble.
        assert_eq!((s.decode_targets, s.templates.len(), s.chains), (9, 15, 3));
        assert_eq!(s.protected_by, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(s.resolutions, vec![(120, 67), (240, 135), (480, 270)]);
        assert_eq!(mask, Some(0x1ff));
        assert_eq!(s.templates[1].dtis, vec![2; 9]);
        assert!(s.templates[1].fdiffs.is_empty());
        // Later packets announce only the S0/S1 decode targets as active.
        let (_, mask, _) = parse_dd(&hex("86017340fc"), Some(&s)).expect("parses");
        assert_eq!(mask, Some(0x3f));
        for h in ["86017340fc", "46017340fc", "c3017540fc", "860173", "8b0174", "c30175"] {
            let (_, _, info) = parse_dd(&hex(h), Some(&s)).expect("parses");
            assert!(info.is_ok(), "{h}");
        }
    }

    /// The L1T3 thinning rule: which gaps a temporal-layer filter can produce.
    #[test]
    fn thinning_rule() {
        // Forwarding TL0+TL1: 0 _ 1 _ 0.
        assert!(thinning_ok(0, 1, 2) && thinning_ok(1, 0, 2));
        // Forwarding TL0 only, and a downswitch after a TL2 frame (pos 1 -> next TL0).
        assert!(thinning_ok(0, 0, 4) && thinning_ok(2, 0, 3));
        // A TL2 frame after a gap, a TL1 frame whose predecessor would be a TL2 at pos 0,
        // a dropped TL1 before a TL0 while TL2 frames come through.
        assert!(!thinning_ok(0, 2, 2) && !thinning_ok(2, 1, 2) && !thinning_ok(1, 0, 3));
        assert!(!thinning_ok(0, 0, 5));
    }

    #[test]
    fn freeze_detector_counts_long_gaps() {
        let t0 = Instant::now();
        let mut f = FreezeDetector::default();
        let ms = |m| t0 + Duration::from_millis(m);
        assert_eq!(f.on_frame(ms(0)), None);
        assert_eq!(f.on_frame(ms(400)), None);
        assert_eq!(f.on_frame(ms(1100)), Some(Duration::from_millis(700)));
        assert_eq!(f.on_frame(ms(1133)), None);
        assert_eq!(f.freezes, 1);
        assert_eq!(f.longest, Duration::from_millis(700));
        assert_eq!(f.frozen_for(ms(1500)), None);
        assert_eq!(f.frozen_for(ms(2000)), Some(Duration::from_millis(867)));
    }
}
