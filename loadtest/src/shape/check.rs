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
    Malformed { seq: u16, what: &'static str },
    Duplicate { seq: u16 },
    TimestampBackwards { seq: u16, prev: u32, ts: u32 },
    /// VP8 picture ID not +1 (and not explained by loss or temporal-layer thinning).
    PictureIdJump { seq: u16, expected: u16, got: u16 },
    Tl0PicIdx { seq: u16, expected: u8, got: u8 },
    /// The first frame (after start) is not a keyframe.
    StartOnDelta { seq: u16 },
    /// A VP8 delta frame of another encoding than the last keyframe's.
    SwitchWithoutKeyframe { seq: u16, from: u8, to: u8 },
    /// Packets of one frame disagree, or a frame continues without its start.
    InconsistentFrame { seq: u16, what: &'static str },
    /// An AV1 frame before any template structure.
    NoStructure { seq: u16 },
    BadTemplate { seq: u16, template_id: u8 },
    FrameNumberBackwards { seq: u16, prev: u16, got: u16 },
    /// An AV1 frame whose referenced frame (by fdiff) was not received, without loss to explain it.
    MissingReference { frame: u16, reference: u16 },
    /// An AV1 frame whose chain (for a decode target it belongs to) is broken, without loss.
    BrokenChain { frame: u16, chain: u8 },
    /// AV1: marker bit on a packet that does not end a frame.
    MarkerMidFrame { seq: u16 },
    /// AV1: a new temporal unit began while the previous one never got its marker.
    MissingMarker { seq: u16 },
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
                _ if contiguous && in_frame => {
                    flag(
                        v,
                        Violation::InconsistentFrame {
                            seq,
                            what: "packet continues no frame",
                        },
                    );
                }
                _ => {
                    // The frame's start was lost: follow it as incomplete.
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
                    flag(
                        v,
                        Violation::TimestampBackwards {
                            seq,
                            prev: l_ts,
                            ts,
                        },
                    );
                }
                let dpid = d.pid.wrapping_sub(l_pid) & 0x7fff;
                let expected = (l_pid + 1) & 0x7fff;
                let ok = match dpid {
                    1 => true,
                    0 => false,
                    n if n > 0x3fff => false,
                    n if loss => n < 0x100,
                    // Temporal thinning: the bridge drops TL2 (and TL1) frames; a stream that
                    // still carries TL2 has no legitimate gaps, and the pattern is 4 frames.
                    n if l_tid < 2 && d.tid < 2 && n <= 4 => {
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
                let expected_tl0 = if d.tid == 0 {
                    l_tl0.wrapping_add(1)
                } else {
                    l_tl0
                };
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
            self.stats.keyframes += 1;
        } else if let (Some(from), Some(to)) = (self.encoding, encoding) {
            if from != to {
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

/// Parse a whole descriptor: the new structure (if attached), the active decode targets mask (if
/// sent), and the frame info resolved against `current` (or the new structure).
fn parse_dd(
    dd: &[u8],
    current: Option<&DdStructure>,
) -> Result<(Option<DdStructure>, Option<u32>, Result<FrameInfo, u8>), &'static str> {
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
        let w = &mut self.decoded[usize::from(n >> 6)];
        if on {
            *w |= 1 << (n & 63);
        } else {
            *w &= !(1 << (n & 63));
        }
    }

    /// Whether loss seen since frame `reference` can explain its absence.
    fn loss_explains(&self, reference: u16) -> bool {
        self.loss_at
            .is_some_and(|l| l.wrapping_sub(reference) as i16 >= 0)
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
                _ if matches!(event, SeqEvent::Next) && in_frame => flag(
                    v,
                    Violation::InconsistentFrame {
                        seq,
                        what: "packet continues no frame",
                    },
                ),
                _ => {
                    self.abandon_frame();
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

    fn start_frame(
        &mut self,
        seq: u16,
        ts: u32,
        info: &FrameInfo,
        new_tu: bool,
        v: &mut Option<Violation>,
    ) {
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
            flag(v, Violation::StartOnDelta { seq: f.next_seq.wrapping_sub(1) });
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

/// The AV1 aggregation header must agree with the descriptor (Z iff not first, Y iff not
/// last), and a frame's first OBU header (when it is the only element) with its layer ids.
fn check_av1_payload(seq: u16, payload: &[u8], info: &FrameInfo, v: &mut Option<Violation>) {
    let Some(&agg) = payload.first() else {
        flag(v, Violation::Malformed { seq, what: "empty AV1 payload" });
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
        if let Some(&[h, ext]) = payload.get(1..3).map(|s| <&[u8; 2]>::try_from(s).ok()).flatten() {
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
