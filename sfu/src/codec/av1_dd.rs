//! The AV1 dependency descriptor RTP header extension
//! (`https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension`,
//! AV1 RTP specification appendix A). Codec-agnostic: Chrome also sends it with VP8/VP9/H.264
//! when it is negotiated.
//!
//! A descriptor has three mandatory bytes (start/end of frame, template id, frame number) and,
//! when longer, the extended fields: an optional [`FrameDependencyStructure`] (sent on
//! keyframes; parsed into `Vec`s, once per keyframe), an optional active-decode-targets bitmask
//! and optional per-frame custom DTIs, frame diffs and chain diffs. Everything per frame lives
//! in fixed arrays ([`FrameInfo`]), so parsing a descriptor without an attached structure does
//! not allocate.
//!
//! Bounds: ≤ 32 decode targets and chains (the 5-bit `dt_cnt_minus_one`), ≤ 64 templates (the
//! 6-bit template id), ≤ [`MAX_FDIFFS`] frame diffs per frame (the syntax has no bound; more is
//! reported as [`CodecError::OutOfRange`]).

use super::{out_buf, CodecError, FixedList};

/// Decode targets a structure can have (`dt_cnt_minus_one` is 5 bits).
pub const MAX_DECODE_TARGETS: usize = 32;
/// Templates a structure can have (template ids are 6 bits).
pub const MAX_TEMPLATES: usize = 64;
/// Frame diffs kept per frame (an implementation bound, see the module docs).
pub const MAX_FDIFFS: usize = 16;

/// Decode target indication: how a frame relates to one decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(u8)]
pub enum Dti {
    /// Not present: not part of the decode target.
    #[default]
    NotPresent = 0,
    /// Discardable: part of it, but no later frame of the target depends on it.
    Discardable = 1,
    /// Switch: part of it, and the decode target can be joined at this frame.
    Switch = 2,
    /// Required: part of it and needed by later frames.
    Required = 3,
}

impl Dti {
    fn from_bits(v: u32) -> Self {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// One frame dependency template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrameTemplate {
    /// Spatial layer id.
    pub spatial_id: u8,
    /// Temporal layer id.
    pub temporal_id: u8,
    /// One DTI per decode target.
    pub dtis: Vec<Dti>,
    /// Frame-number differences of the frames this one references (each 1..=16).
    pub fdiffs: Vec<u16>,
    /// One frame-number difference per chain (each 0..=15).
    pub chain_diffs: Vec<u8>,
}

/// The template dependency structure, sent on keyframes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrameDependencyStructure {
    /// `template_id_offset` (0..64): template index i has id `(i + offset) % 64`.
    pub template_id_offset: u8,
    /// Number of decode targets (1..=32).
    pub decode_target_count: u8,
    /// Number of chains (0..=decode_target_count).
    pub chain_count: u8,
    /// Per decode target, the chain protecting it (empty when `chain_count == 0`).
    pub decode_target_protected_by_chain: Vec<u8>,
    /// The templates, ordered by (spatial id, temporal id) as the syntax requires.
    pub templates: Vec<FrameTemplate>,
    /// Render (width, height) per spatial layer, or empty when not sent.
    pub resolutions: Vec<(u16, u16)>,
}

/// Spatial and temporal layer of a decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DecodeTargetLayer {
    /// Highest spatial id of the frames in the decode target.
    pub spatial_id: u8,
    /// Highest temporal id of the frames in the decode target.
    pub temporal_id: u8,
}

impl FrameDependencyStructure {
    /// The template with id `template_id`, or `None`.
    pub fn template(&self, template_id: u8) -> Option<&FrameTemplate> {
        self.templates.get(self.template_index(template_id))
    }

    fn template_index(&self, template_id: u8) -> usize {
        usize::from(
            (template_id & 63)
                .wrapping_add(64)
                .wrapping_sub(self.template_id_offset & 63)
                & 63,
        )
    }

    /// Highest spatial id of any template.
    pub fn max_spatial_id(&self) -> u8 {
        self.templates.iter().map(|t| t.spatial_id).max().unwrap_or(0)
    }

    /// The (spatial, temporal) layer of decode target `dt`: the highest spatial and temporal
    /// ids among templates present (DTI ≠ not present) in it.
    pub fn decode_target_layer(&self, dt: usize) -> Option<DecodeTargetLayer> {
        if dt >= usize::from(self.decode_target_count) {
            return None;
        }
        let mut l = DecodeTargetLayer::default();
        for t in &self.templates {
            if t.dtis.get(dt).is_some_and(|&d| d != Dti::NotPresent) {
                l.spatial_id = l.spatial_id.max(t.spatial_id);
                l.temporal_id = l.temporal_id.max(t.temporal_id);
            }
        }
        Some(l)
    }

    /// Layers of all decode targets, in decode-target order.
    pub fn decode_target_layers(&self) -> impl Iterator<Item = DecodeTargetLayer> + '_ {
        (0..usize::from(self.decode_target_count)).filter_map(|dt| self.decode_target_layer(dt))
    }

    /// The decode target whose layer is exactly (`spatial_id`, `temporal_id`), or `None`. When
    /// several match (e.g. simulcast-like structures), the first.
    pub fn decode_target_for(&self, spatial_id: u8, temporal_id: u8) -> Option<usize> {
        self.decode_target_layers()
            .position(|l| l.spatial_id == spatial_id && l.temporal_id == temporal_id)
    }

    /// Render resolution of `spatial_id`, if resolutions were sent.
    pub fn resolution(&self, spatial_id: u8) -> Option<(u16, u16)> {
        self.resolutions.get(usize::from(spatial_id)).copied()
    }

    fn validate(&self) -> Result<(), CodecError> {
        let range = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(CodecError::OutOfRange { what })
            }
        };
        let dts = usize::from(self.decode_target_count);
        let chains = usize::from(self.chain_count);
        range(self.template_id_offset < 64, "DD template_id_offset")?;
        range((1..=MAX_DECODE_TARGETS).contains(&dts), "DD decode target count")?;
        range(chains <= dts, "DD chain count")?;
        range((1..=MAX_TEMPLATES).contains(&self.templates.len()), "DD template count")?;
        if chains > 0 {
            range(
                self.decode_target_protected_by_chain.len() == dts,
                "DD protected-by-chain list",
            )?;
            range(
                self.decode_target_protected_by_chain
                    .iter()
                    .all(|&c| usize::from(c) < chains),
                "DD protecting chain",
            )?;
        } else {
            range(
                self.decode_target_protected_by_chain.is_empty(),
                "DD protected-by-chain list",
            )?;
        }
        let first = &self.templates[0];
        range(
            first.spatial_id == 0 && first.temporal_id == 0,
            "DD first template layer",
        )?;
        for w in self.templates.windows(2) {
            layer_idc(&w[0], &w[1])?;
        }
        for t in &self.templates {
            range(t.dtis.len() == dts, "DD template DTI count")?;
            range(t.chain_diffs.len() == chains, "DD template chain count")?;
            range(t.chain_diffs.iter().all(|&c| c < 16), "DD template chain diff")?;
            range(t.fdiffs.iter().all(|&f| (1..=16).contains(&f)), "DD template fdiff")?;
        }
        if !self.resolutions.is_empty() {
            range(
                self.resolutions.len() == usize::from(self.max_spatial_id()) + 1,
                "DD resolution count",
            )?;
            range(self.resolutions.iter().all(|&(w, h)| w > 0 && h > 0), "DD resolution")?;
        }
        Ok(())
    }

    fn write_bits(&self, w: &mut BitWriter<'_>) -> Result<(), CodecError> {
        self.validate()?;
        let dts = u32::from(self.decode_target_count);
        w.put(u32::from(self.template_id_offset), 6)?;
        w.put(dts - 1, 5)?;
        for (i, t) in self.templates.iter().enumerate() {
            let idc = match self.templates.get(i + 1) {
                Some(next) => layer_idc(t, next)?,
                None => 3,
            };
            w.put(idc, 2)?;
        }
        for t in &self.templates {
            for &d in &t.dtis {
                w.put(d as u32, 2)?;
            }
        }
        for t in &self.templates {
            for &f in &t.fdiffs {
                w.put(1, 1)?;
                w.put(u32::from(f) - 1, 4)?;
            }
            w.put(0, 1)?;
        }
        w.put_ns(u32::from(self.chain_count), dts + 1)?;
        if self.chain_count > 0 {
            for &c in &self.decode_target_protected_by_chain {
                w.put_ns(u32::from(c), u32::from(self.chain_count))?;
            }
            for t in &self.templates {
                for &c in &t.chain_diffs {
                    w.put(u32::from(c), 4)?;
                }
            }
        }
        w.put(u32::from(!self.resolutions.is_empty()), 1)?;
        for &(width, height) in &self.resolutions {
            w.put(u32::from(width) - 1, 16)?;
            w.put(u32::from(height) - 1, 16)?;
        }
        Ok(())
    }

    fn read_bits(r: &mut BitReader<'_>) -> Result<Self, CodecError> {
        let template_id_offset = r.get(6)? as u8;
        let dts = r.get(5)? as usize + 1;
        let mut templates: Vec<FrameTemplate> = Vec::new();
        let (mut s, mut t) = (0u8, 0u8);
        loop {
            if templates.len() == MAX_TEMPLATES {
                return Err(CodecError::OutOfRange {
                    what: "DD template count",
                });
            }
            templates.push(FrameTemplate {
                spatial_id: s,
                temporal_id: t,
                ..Default::default()
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
            tpl.dtis.reserve_exact(dts);
            for _ in 0..dts {
                tpl.dtis.push(Dti::from_bits(r.get(2)?));
            }
        }
        for tpl in &mut templates {
            while r.get(1)? == 1 {
                tpl.fdiffs.push(r.get(4)? as u16 + 1);
            }
        }
        let chain_count = r.get_ns(dts as u32 + 1)? as u8;
        let mut protected_by = Vec::new();
        if chain_count > 0 {
            for _ in 0..dts {
                protected_by.push(r.get_ns(u32::from(chain_count))? as u8);
            }
            for tpl in &mut templates {
                for _ in 0..chain_count {
                    tpl.chain_diffs.push(r.get(4)? as u8);
                }
            }
        }
        let mut resolutions = Vec::new();
        if r.get(1)? == 1 {
            let layers = templates.iter().map(|t| t.spatial_id).max().unwrap_or(0);
            for _ in 0..=layers {
                let w = r.get(16)? + 1;
                let h = r.get(16)? + 1;
                // w, h ≤ 65536; 65536 does not fit u16, reject it rather than wrap.
                let (Ok(w), Ok(h)) = (u16::try_from(w), u16::try_from(h)) else {
                    return Err(CodecError::OutOfRange { what: "DD resolution" });
                };
                resolutions.push((w, h));
            }
        }
        Ok(Self {
            template_id_offset,
            decode_target_count: dts as u8,
            chain_count,
            decode_target_protected_by_chain: protected_by,
            templates,
            resolutions,
        })
    }
}

/// `next_layer_idc` between consecutive templates.
fn layer_idc(a: &FrameTemplate, b: &FrameTemplate) -> Result<u32, CodecError> {
    if b.spatial_id == a.spatial_id && b.temporal_id == a.temporal_id {
        Ok(0)
    } else if b.spatial_id == a.spatial_id && b.temporal_id == a.temporal_id + 1 {
        Ok(1)
    } else if b.spatial_id == a.spatial_id + 1 && b.temporal_id == 0 {
        Ok(2)
    } else {
        Err(CodecError::OutOfRange {
            what: "DD template order",
        })
    }
}

/// Per-frame dependency information: from the template, or custom values sent with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// Spatial layer id of the frame.
    pub spatial_id: u8,
    /// Temporal layer id of the frame.
    pub temporal_id: u8,
    /// DTI per decode target.
    pub dtis: FixedList<Dti, MAX_DECODE_TARGETS>,
    /// Frame-number differences of the referenced frames.
    pub fdiffs: FixedList<u16, MAX_FDIFFS>,
    /// Frame-number difference to the previous frame of each chain.
    pub chain_diffs: FixedList<u8, MAX_DECODE_TARGETS>,
}

/// The three mandatory bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MandatoryFields {
    /// First packet of the frame.
    pub start_of_frame: bool,
    /// Last packet of the frame.
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` (6 bits).
    pub template_id: u8,
    /// `frame_number` (16 bits).
    pub frame_number: u16,
}

/// A parsed dependency descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DependencyDescriptor {
    /// First packet of the frame.
    pub start_of_frame: bool,
    /// Last packet of the frame.
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` (0..64).
    pub template_id: u8,
    /// `frame_number`.
    pub frame_number: u16,
    /// The structure sent with this frame (keyframes), which then replaces the known one.
    pub attached_structure: Option<FrameDependencyStructure>,
    /// `active_decode_targets_bitmask` when sent (bit i = decode target i). When a structure is
    /// attached and this is `None`, all decode targets are active; otherwise `None` means
    /// "unchanged".
    pub active_decode_targets: Option<u32>,
    /// `custom_dtis_flag`: `frame.dtis` is sent with the frame.
    pub custom_dtis: bool,
    /// `custom_fdiffs_flag`: `frame.fdiffs` is sent with the frame.
    pub custom_fdiffs: bool,
    /// `custom_chains_flag`: `frame.chain_diffs` is sent with the frame.
    pub custom_chains: bool,
    /// The frame's layer ids, DTIs, frame diffs and chain diffs.
    pub frame: FrameInfo,
}

impl DependencyDescriptor {
    /// The mandatory fields.
    pub fn mandatory(&self) -> MandatoryFields {
        MandatoryFields {
            start_of_frame: self.start_of_frame,
            end_of_frame: self.end_of_frame,
            template_id: self.template_id,
            frame_number: self.frame_number,
        }
    }

    /// The active decode targets after this frame: the sent bitmask; else all targets of an
    /// attached structure; else `previous` (the mask in force before this frame).
    pub fn effective_active_decode_targets(&self, previous: u32) -> u32 {
        match (self.active_decode_targets, &self.attached_structure) {
            (Some(m), _) => m,
            (None, Some(s)) => all_targets(s.decode_target_count),
            (None, None) => previous,
        }
    }

    /// Bitmask of the decode targets this frame is part of (DTI ≠ not present).
    pub fn present_decode_targets(&self) -> u32 {
        self.frame
            .dtis
            .iter()
            .enumerate()
            .filter(|(_, &d)| d != Dti::NotPresent)
            .fold(0u32, |m, (i, _)| m | (1 << i))
    }

    /// The DTI of this frame for decode target `dt` (not present when out of range).
    pub fn dti(&self, dt: usize) -> Dti {
        self.frame.dtis.get(dt).copied().unwrap_or_default()
    }

    /// The structure in force for this frame: the attached one, else `known`.
    pub fn structure<'a>(
        &'a self,
        known: Option<&'a FrameDependencyStructure>,
    ) -> Option<&'a FrameDependencyStructure> {
        self.attached_structure.as_ref().or(known)
    }

    fn has_extended(&self) -> bool {
        self.attached_structure.is_some()
            || self.active_decode_targets.is_some()
            || self.custom_dtis
            || self.custom_fdiffs
            || self.custom_chains
    }
}

/// Bitmask with the low `count` bits set (all decode targets of a structure).
pub fn all_targets(count: u8) -> u32 {
    if count >= 32 {
        u32::MAX
    } else {
        (1u32 << count) - 1
    }
}

/// Parses only the three mandatory bytes (works without any structure).
pub fn parse_mandatory(ext: &[u8]) -> Result<MandatoryFields, CodecError> {
    let b = ext.get(..3).ok_or(CodecError::Truncated {
        what: "DD mandatory fields",
    })?;
    Ok(MandatoryFields {
        start_of_frame: b[0] & 0x80 != 0,
        end_of_frame: b[0] & 0x40 != 0,
        template_id: b[0] & 0x3f,
        frame_number: u16::from_be_bytes([b[1], b[2]]),
    })
}

/// Parses a dependency descriptor. `structure` is the latest structure received on this
/// stream; a structure attached to `ext` takes precedence. Without either the frame cannot be
/// interpreted and the result is [`CodecError::NoStructure`] (use [`parse_mandatory`]).
pub fn parse(ext: &[u8], structure: Option<&FrameDependencyStructure>) -> Result<DependencyDescriptor, CodecError> {
    let m = parse_mandatory(ext)?;
    let mut dd = DependencyDescriptor {
        start_of_frame: m.start_of_frame,
        end_of_frame: m.end_of_frame,
        template_id: m.template_id,
        frame_number: m.frame_number,
        ..Default::default()
    };
    let mut r = BitReader { buf: ext, pos: 24 };
    let mut active_present = false;
    if ext.len() > 3 {
        let structure_present = r.get(1)? == 1;
        active_present = r.get(1)? == 1;
        dd.custom_dtis = r.get(1)? == 1;
        dd.custom_fdiffs = r.get(1)? == 1;
        dd.custom_chains = r.get(1)? == 1;
        if structure_present {
            dd.attached_structure = Some(FrameDependencyStructure::read_bits(&mut r)?);
        }
    }
    let s = dd
        .attached_structure
        .as_ref()
        .or(structure)
        .ok_or(CodecError::NoStructure)?;
    let dts = u32::from(s.decode_target_count);
    if active_present {
        dd.active_decode_targets = Some(r.get(dts)?);
    }
    let tpl = s
        .templates
        .get(s.template_index(dd.template_id))
        .ok_or(CodecError::UnknownTemplate {
            template_id: dd.template_id,
        })?;
    let f = &mut dd.frame;
    f.spatial_id = tpl.spatial_id;
    f.temporal_id = tpl.temporal_id;
    if dd.custom_dtis {
        for _ in 0..dts {
            f.dtis.push(Dti::from_bits(r.get(2)?));
        }
    } else {
        f.dtis = FixedList::from_slice(&tpl.dtis).ok_or(CodecError::OutOfRange {
            what: "DD decode target count",
        })?;
    }
    if dd.custom_fdiffs {
        loop {
            let size = r.get(2)?;
            if size == 0 {
                break;
            }
            let fdiff = r.get(4 * size)? + 1;
            if !f.fdiffs.push(fdiff as u16) {
                return Err(CodecError::OutOfRange {
                    what: "DD frame fdiff count",
                });
            }
        }
    } else {
        f.fdiffs = FixedList::from_slice(&tpl.fdiffs).ok_or(CodecError::OutOfRange {
            what: "DD template fdiff count",
        })?;
    }
    if dd.custom_chains {
        for _ in 0..s.chain_count {
            f.chain_diffs.push(r.get(8)? as u8);
        }
    } else {
        f.chain_diffs =
            FixedList::from_slice(&tpl.chain_diffs).ok_or(CodecError::OutOfRange { what: "DD chain count" })?;
    }
    Ok(dd)
}

/// Encodes `dd` into `out`, returning the length. `structure` is used when `dd` has no
/// attached structure (it is needed only for the extended fields). With no extended fields the
/// result is the 3-byte minimal form. Custom fdiffs use the shortest size class. Padding bits
/// are zero.
pub fn write(
    dd: &DependencyDescriptor,
    structure: Option<&FrameDependencyStructure>,
    out: &mut [u8],
) -> Result<usize, CodecError> {
    if dd.template_id > 63 {
        return Err(CodecError::OutOfRange { what: "DD template id" });
    }
    let head = out_buf(out, 3)?;
    head[0] = (u8::from(dd.start_of_frame) << 7) | (u8::from(dd.end_of_frame) << 6) | dd.template_id;
    head[1..3].copy_from_slice(&dd.frame_number.to_be_bytes());
    if !dd.has_extended() {
        return Ok(3);
    }
    let s = dd.structure(structure).ok_or(CodecError::NoStructure)?;
    let mut w = BitWriter::new(out, 24);
    w.put(u32::from(dd.attached_structure.is_some()), 1)?;
    w.put(u32::from(dd.active_decode_targets.is_some()), 1)?;
    w.put(u32::from(dd.custom_dtis), 1)?;
    w.put(u32::from(dd.custom_fdiffs), 1)?;
    w.put(u32::from(dd.custom_chains), 1)?;
    if let Some(a) = &dd.attached_structure {
        a.write_bits(&mut w)?;
    }
    let dts = u32::from(s.decode_target_count);
    if let Some(mask) = dd.active_decode_targets {
        if dts < 32 && mask >> dts != 0 {
            return Err(CodecError::OutOfRange {
                what: "DD active decode targets bitmask",
            });
        }
        w.put(mask, dts)?;
    }
    if dd.custom_dtis {
        if dd.frame.dtis.len() != usize::from(s.decode_target_count) {
            return Err(CodecError::OutOfRange {
                what: "DD frame DTI count",
            });
        }
        for &d in dd.frame.dtis.iter() {
            w.put(d as u32, 2)?;
        }
    }
    if dd.custom_fdiffs {
        for &f in dd.frame.fdiffs.iter() {
            let v = u32::from(f)
                .checked_sub(1)
                .ok_or(CodecError::OutOfRange { what: "DD frame fdiff" })?;
            let size = match v {
                0..=0xf => 1,
                0x10..=0xff => 2,
                0x100..=0xfff => 3,
                _ => return Err(CodecError::OutOfRange { what: "DD frame fdiff" }),
            };
            w.put(size, 2)?;
            w.put(v, 4 * size)?;
        }
        w.put(0, 2)?;
    }
    if dd.custom_chains {
        if dd.frame.chain_diffs.len() != usize::from(s.chain_count) {
            return Err(CodecError::OutOfRange {
                what: "DD frame chain count",
            });
        }
        for &c in dd.frame.chain_diffs.iter() {
            w.put(u32::from(c), 8)?;
        }
    }
    Ok(w.finish())
}

/// MSB-first bit reader over a byte slice.
struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    /// Reads `n` (≤ 32) bits.
    fn get(&mut self, n: u32) -> Result<u32, CodecError> {
        if self.pos + n as usize > self.buf.len() * 8 {
            return Err(CodecError::Truncated {
                what: "dependency descriptor",
            });
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            let bit = (self.buf[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v as u32)
    }

    /// Reads `ns(n)`, a non-symmetric unsigned value in `0..n` (AV1 spec §4.10.7).
    fn get_ns(&mut self, n: u32) -> Result<u32, CodecError> {
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        let v = self.get(w - 1)?;
        if v < m {
            return Ok(v);
        }
        let extra = self.get(1)?;
        Ok((v << 1) - m + extra)
    }
}

/// MSB-first bit writer into a byte slice.
struct BitWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> BitWriter<'a> {
    fn new(buf: &'a mut [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    fn put(&mut self, v: u32, n: u32) -> Result<(), CodecError> {
        for k in (0..n).rev() {
            let byte = self.pos / 8;
            let have = self.buf.len();
            let b = self
                .buf
                .get_mut(byte)
                .ok_or(CodecError::BufferTooShort { need: byte + 1, have })?;
            let mask = 0x80u8 >> (self.pos % 8);
            if (v >> k) & 1 == 1 {
                *b |= mask;
            } else {
                *b &= !mask;
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn put_ns(&mut self, v: u32, n: u32) -> Result<(), CodecError> {
        if v >= n {
            return Err(CodecError::OutOfRange { what: "DD ns() value" });
        }
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        if v < m {
            self.put(v, w - 1)
        } else {
            self.put((v + m) >> 1, w - 1)?;
            self.put((v + m) & 1, 1)
        }
    }

    /// Zero-pads to a byte boundary and returns the length in bytes.
    fn finish(mut self) -> usize {
        while !self.pos.is_multiple_of(8) {
            // Cannot fail: the byte holding `pos` was reached by the last `put`.
            let _ = self.put(0, 1);
        }
        self.pos / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Dti::{Discardable as D, NotPresent as N, Required as R, Switch as S};

    /// Chrome L1T2 keyframe descriptors (public captures): structure with templates 0,1,2
    /// (offset 0) and 320x240; the same with offset 6 and 640x480; a 3-byte one using template 8.
    const L1T2_A: [u8; 15] = [
        0x80, 0x00, 0x01, 0x80, 0x01, 0x1e, 0xa8, 0x51, 0x41, 0x01, 0x0c, 0x04, 0xfc, 0x03, 0xbc,
    ];
    const L1T2_B: [u8; 15] = [
        0x86, 0x00, 0xb5, 0x80, 0xc1, 0x1e, 0xa8, 0x51, 0x41, 0x01, 0x0c, 0x09, 0xfc, 0x07, 0x7c,
    ];
    const L1T2_C: [u8; 3] = [0x08, 0x00, 0xd8];

    fn tpl(s: u8, t: u8, dtis: &[Dti], fdiffs: &[u16], chains: &[u8]) -> FrameTemplate {
        FrameTemplate {
            spatial_id: s,
            temporal_id: t,
            dtis: dtis.to_vec(),
            fdiffs: fdiffs.to_vec(),
            chain_diffs: chains.to_vec(),
        }
    }

    #[test]
    fn chrome_l1t2_structure() {
        let dd = parse(&L1T2_A, None).unwrap();
        assert!(dd.start_of_frame && !dd.end_of_frame);
        assert_eq!((dd.template_id, dd.frame_number), (0, 1));
        let s = dd.attached_structure.clone().unwrap();
        let expect = FrameDependencyStructure {
            template_id_offset: 0,
            decode_target_count: 2,
            chain_count: 1,
            decode_target_protected_by_chain: vec![0, 0],
            templates: vec![
                tpl(0, 0, &[S, S], &[], &[0]),
                tpl(0, 0, &[S, S], &[2], &[2]),
                tpl(0, 1, &[N, D], &[1], &[1]),
            ],
            resolutions: vec![(320, 240)],
        };
        assert_eq!(s, expect);
        assert_eq!(dd.active_decode_targets, None);
        assert_eq!((dd.frame.spatial_id, dd.frame.temporal_id), (0, 0));
        assert_eq!(dd.frame.dtis.as_slice(), &[S, S]);
        assert_eq!(dd.present_decode_targets(), 0b11);
        assert_eq!(
            s.decode_target_layers().collect::<Vec<_>>(),
            [
                DecodeTargetLayer {
                    spatial_id: 0,
                    temporal_id: 0
                },
                DecodeTargetLayer {
                    spatial_id: 0,
                    temporal_id: 1
                }
            ]
        );
        let mut out = [0u8; 64];
        let n = write(&dd, None, &mut out).unwrap();
        assert_eq!(&out[..n], &L1T2_A);

        let b = parse(&L1T2_B, None).unwrap();
        assert_eq!((b.template_id, b.frame_number), (6, 0xb5));
        let sb = b.attached_structure.clone().unwrap();
        assert_eq!(sb.template_id_offset, 6);
        assert_eq!(sb.resolutions, [(640, 480)]);
        assert_eq!(sb.templates, expect.templates);
        let n = write(&b, None, &mut out).unwrap();
        assert_eq!(&out[..n], &L1T2_B);

        // Template 8 is index 2 under offset 6 (TL1, discardable for DT1) ...
        let c = parse(&L1T2_C, Some(&sb)).unwrap();
        assert_eq!((c.template_id, c.frame_number), (8, 0xd8));
        assert_eq!((c.frame.spatial_id, c.frame.temporal_id), (0, 1));
        assert_eq!(c.frame.dtis.as_slice(), &[N, D]);
        assert_eq!(c.frame.fdiffs.as_slice(), &[1]);
        assert_eq!(c.present_decode_targets(), 0b10);
        let n = write(&c, Some(&sb), &mut out).unwrap();
        assert_eq!(&out[..n], &L1T2_C);
        // ... and unknown under offset 0; without a structure there is nothing to interpret.
        assert_eq!(
            parse(&L1T2_C, Some(&s)),
            Err(CodecError::UnknownTemplate { template_id: 8 })
        );
        assert_eq!(parse(&L1T2_C, None), Err(CodecError::NoStructure));
        assert_eq!(parse_mandatory(&L1T2_C).unwrap().frame_number, 0xd8);
    }

    /// L3T3_KEY as libwebrtc defines it (`ScalabilityStructureL3T3Key`), templates sorted by
    /// (spatial, temporal), 320x180 / 640x360 / 1280x720.
    fn l3t3_key() -> FrameDependencyStructure {
        let d = |s: &str| -> Vec<Dti> {
            s.chars()
                .map(|c| match c {
                    'S' => S,
                    'D' => D,
                    'R' => R,
                    _ => N,
                })
                .collect()
        };
        FrameDependencyStructure {
            template_id_offset: 0,
            decode_target_count: 9,
            chain_count: 3,
            decode_target_protected_by_chain: vec![0, 0, 0, 1, 1, 1, 2, 2, 2],
            templates: vec![
                tpl(0, 0, &d("SSSSSSSSS"), &[], &[0, 0, 0]),
                tpl(0, 0, &d("SSS------"), &[12], &[12, 11, 10]),
                tpl(0, 1, &d("-DS------"), &[6], &[6, 5, 4]),
                tpl(0, 2, &d("--D------"), &[3], &[3, 2, 1]),
                tpl(0, 2, &d("--D------"), &[3], &[9, 8, 7]),
                tpl(1, 0, &d("---SSSSSS"), &[1], &[1, 1, 1]),
                tpl(1, 0, &d("---SSS---"), &[12], &[1, 12, 11]),
                tpl(1, 1, &d("----DS---"), &[6], &[7, 6, 5]),
                tpl(1, 2, &d("-----D---"), &[3], &[4, 3, 2]),
                tpl(1, 2, &d("-----D---"), &[3], &[10, 9, 8]),
                tpl(2, 0, &d("------SSS"), &[1], &[2, 1, 1]),
                tpl(2, 0, &d("------SSS"), &[12], &[2, 1, 12]),
                tpl(2, 1, &d("-------DS"), &[6], &[8, 7, 6]),
                tpl(2, 2, &d("--------D"), &[3], &[5, 4, 3]),
                tpl(2, 2, &d("--------D"), &[3], &[11, 10, 9]),
            ],
            resolutions: vec![(320, 180), (640, 360), (1280, 720)],
        }
    }

    #[test]
    fn l3t3_key_decode_target_mapping() {
        let key = DependencyDescriptor {
            start_of_frame: true,
            end_of_frame: true,
            template_id: 0,
            frame_number: 1,
            attached_structure: Some(l3t3_key()),
            ..Default::default()
        };
        let mut out = [0u8; 128];
        let n = write(&key, None, &mut out).unwrap();
        // Hand-encoded prefix: mandatory C0 00 01; flags 10000, offset 000000, dt_cnt-1 01000;
        // next_layer_idc 00 01 01 00 10 00 01 01 00 10 00 01 01 00 11.
        assert_eq!(&out[..8], &[0xc0, 0x00, 0x01, 0x80, 0x08, 0x14, 0x85, 0x21]);
        let dd = parse(&out[..n], None).unwrap();
        assert_eq!(dd, key_with_frame(&key));
        let s = dd.attached_structure.as_ref().unwrap();
        for dt in 0..9 {
            let l = s.decode_target_layer(dt).unwrap();
            assert_eq!(
                (l.spatial_id, l.temporal_id),
                ((dt / 3) as u8, (dt % 3) as u8),
                "dt {dt}"
            );
        }
        assert_eq!(s.decode_target_layer(9), None);
        for sid in 0..3u8 {
            for tid in 0..3u8 {
                assert_eq!(s.decode_target_for(sid, tid), Some(usize::from(sid * 3 + tid)));
            }
        }
        assert_eq!(s.decode_target_for(3, 0), None);
        assert_eq!(s.resolution(2), Some((1280, 720)));
        assert_eq!(dd.effective_active_decode_targets(0b1), 0x1ff);

        // A delta frame of S1T0 (template 5), with an active mask limited to S0/S1 targets.
        let delta = DependencyDescriptor {
            start_of_frame: true,
            end_of_frame: false,
            template_id: 5,
            frame_number: 2,
            active_decode_targets: Some(0b000_111_111),
            ..Default::default()
        };
        let n = write(&delta, Some(s), &mut out).unwrap();
        let p = parse(&out[..n], Some(s)).unwrap();
        assert_eq!((p.frame.spatial_id, p.frame.temporal_id), (1, 0));
        assert_eq!(p.present_decode_targets(), 0b111_111_000);
        assert_eq!(p.dti(3), S);
        assert_eq!(p.dti(0), N);
        assert_eq!(p.active_decode_targets, Some(0b000_111_111));
        assert_eq!(p.effective_active_decode_targets(0x1ff), 0b000_111_111);
        // Template 3 (S0T2) is only in DT 2, discardable.
        let t3 = parse(&[0x03, 0x00, 0x03], Some(s)).unwrap();
        assert_eq!(t3.present_decode_targets(), 0b100);
        assert_eq!(t3.dti(2), D);
        assert_eq!(t3.effective_active_decode_targets(0b111), 0b111);
        assert_eq!(all_targets(32), u32::MAX);
        // The minimal form is 3 bytes.
        assert_eq!(
            write(
                &DependencyDescriptor {
                    template_id: 3,
                    frame_number: 3,
                    ..Default::default()
                },
                Some(s),
                &mut out
            ),
            Ok(3)
        );
    }

    /// `dd` with `frame` filled as `parse` derives it from its template.
    fn key_with_frame(dd: &DependencyDescriptor) -> DependencyDescriptor {
        let mut e = dd.clone();
        let s = dd.attached_structure.as_ref().unwrap();
        let t = s.template(dd.template_id).unwrap();
        e.frame = FrameInfo {
            spatial_id: t.spatial_id,
            temporal_id: t.temporal_id,
            dtis: FixedList::from_slice(&t.dtis).unwrap(),
            fdiffs: FixedList::from_slice(&t.fdiffs).unwrap(),
            chain_diffs: FixedList::from_slice(&t.chain_diffs).unwrap(),
        };
        e
    }

    #[test]
    fn custom_fields_and_errors() {
        let s = l3t3_key();
        let mut dd = DependencyDescriptor {
            template_id: 7,
            frame_number: 0xfffe,
            custom_dtis: true,
            custom_fdiffs: true,
            custom_chains: true,
            ..Default::default()
        };
        dd.frame.dtis = FixedList::from_slice(&[R, R, R, N, N, N, D, D, D]).unwrap();
        dd.frame.fdiffs = FixedList::from_slice(&[1, 17, 300, 4096]).unwrap();
        dd.frame.chain_diffs = FixedList::from_slice(&[0, 200, 255]).unwrap();
        let mut out = [0u8; 64];
        let n = write(&dd, Some(&s), &mut out).unwrap();
        let mut expect = dd.clone();
        expect.frame.spatial_id = 1;
        expect.frame.temporal_id = 1;
        assert_eq!(parse(&out[..n], Some(&s)).unwrap(), expect);
        // Every truncation of the extended form is an error (3 bytes is the valid short form).
        assert_eq!(
            parse(&out[..3], Some(&s)).unwrap().frame.dtis.as_slice(),
            s.templates[7].dtis.as_slice()
        );
        for cut in (0..3).chain(4..n) {
            assert!(parse(&out[..cut], Some(&s)).is_err(), "cut {cut}");
        }
        // fdiff 4097 cannot be encoded; a 0 fdiff neither.
        dd.frame.fdiffs = FixedList::from_slice(&[4097]).unwrap();
        assert!(matches!(
            write(&dd, Some(&s), &mut out),
            Err(CodecError::OutOfRange { .. })
        ));
        dd.frame.fdiffs = FixedList::from_slice(&[0]).unwrap();
        assert!(matches!(
            write(&dd, Some(&s), &mut out),
            Err(CodecError::OutOfRange { .. })
        ));
        // Extended fields need a structure.
        assert_eq!(write(&expect, None, &mut out), Err(CodecError::NoStructure));
        // Output too small.
        assert!(matches!(
            write(&expect, Some(&s), &mut out[..4]),
            Err(CodecError::BufferTooShort { .. })
        ));
        // A mask naming decode targets beyond the count.
        let bad = DependencyDescriptor {
            active_decode_targets: Some(1 << 9),
            ..Default::default()
        };
        assert!(matches!(
            write(&bad, Some(&s), &mut out),
            Err(CodecError::OutOfRange { .. })
        ));
        // A structure whose templates are out of (spatial, temporal) order is refused.
        let mut bad_s = l3t3_key();
        bad_s.templates.swap(0, 5);
        let key = DependencyDescriptor {
            attached_structure: Some(bad_s),
            ..Default::default()
        };
        assert!(matches!(
            write(&key, None, &mut out),
            Err(CodecError::OutOfRange { .. })
        ));
    }

    fn arb_structure() -> impl Strategy<Value = FrameDependencyStructure> {
        (
            0u8..64,
            1u8..=32,
            proptest::collection::vec(0u32..3, 0..20),
            any::<bool>(),
        )
            .prop_flat_map(|(offset, dts, idcs, res)| {
                let mut layers = vec![(0u8, 0u8)];
                for idc in idcs {
                    // (last) is never empty.
                    let &(s, t) = layers.last().expect("non-empty");
                    layers.push(match idc {
                        0 => (s, t),
                        1 => (s, t + 1),
                        _ => (s + 1, 0),
                    });
                }
                let n = layers.len();
                let max_s = layers.iter().map(|l| l.0).max().unwrap_or(0);
                (0..=dts).prop_flat_map(move |chains| {
                    let layers = layers.clone();
                    (
                        proptest::collection::vec(proptest::collection::vec(0u8..4, usize::from(dts)), n),
                        proptest::collection::vec(proptest::collection::vec(1u16..=16, 0..4), n),
                        proptest::collection::vec(proptest::collection::vec(0u8..16, usize::from(chains)), n),
                        proptest::collection::vec(0..chains.max(1), if chains > 0 { usize::from(dts) } else { 0 }),
                        proptest::collection::vec(
                            (1u16..=u16::MAX, 1u16..=u16::MAX),
                            if res { usize::from(max_s) + 1 } else { 0 },
                        ),
                    )
                        .prop_map(move |(dtis, fdiffs, cdiffs, prot, resolutions)| {
                            FrameDependencyStructure {
                                template_id_offset: offset,
                                decode_target_count: dts,
                                chain_count: chains,
                                decode_target_protected_by_chain: prot,
                                templates: layers
                                    .iter()
                                    .enumerate()
                                    .map(|(i, &(s, t))| FrameTemplate {
                                        spatial_id: s,
                                        temporal_id: t,
                                        dtis: dtis[i].iter().map(|&d| Dti::from_bits(u32::from(d))).collect(),
                                        fdiffs: fdiffs[i].clone(),
                                        chain_diffs: cdiffs[i].clone(),
                                    })
                                    .collect(),
                                resolutions,
                            }
                        })
                })
            })
    }

    /// A structure and a descriptor valid under it (attached or not), with `frame` as parse
    /// derives it.
    fn arb_case() -> impl Strategy<Value = (FrameDependencyStructure, DependencyDescriptor)> {
        arb_structure().prop_flat_map(|s| {
            let n = s.templates.len();
            let dts = usize::from(s.decode_target_count);
            let chains = usize::from(s.chain_count);
            (
                Just(s),
                0..n,
                (any::<bool>(), any::<bool>(), any::<u16>(), any::<bool>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(proptest::collection::vec(0u8..4, dts)),
                proptest::option::of(proptest::collection::vec(1u16..=4096, 0..MAX_FDIFFS)),
                proptest::option::of(proptest::collection::vec(any::<u8>(), chains)),
            )
                .prop_map(|(s, idx, (sof, eof, fnum, attach), active, cdtis, cfdiffs, cchains)| {
                    let t = &s.templates[idx];
                    let dts = u32::from(s.decode_target_count);
                    let frame = FrameInfo {
                        spatial_id: t.spatial_id,
                        temporal_id: t.temporal_id,
                        dtis: match &cdtis {
                            Some(v) => {
                                v.iter()
                                    .map(|&d| Dti::from_bits(u32::from(d)))
                                    .fold(FixedList::new(), |mut l, d| {
                                        l.push(d);
                                        l
                                    })
                            }
                            None => FixedList::from_slice(&t.dtis).expect("≤ 32"),
                        },
                        fdiffs: FixedList::from_slice(cfdiffs.as_deref().unwrap_or(&t.fdiffs)).expect("≤ 16"),
                        chain_diffs: FixedList::from_slice(cchains.as_deref().unwrap_or(&t.chain_diffs)).expect("≤ 32"),
                    };
                    let dd = DependencyDescriptor {
                        start_of_frame: sof,
                        end_of_frame: eof,
                        template_id: ((idx + usize::from(s.template_id_offset)) % 64) as u8,
                        frame_number: fnum,
                        attached_structure: attach.then(|| s.clone()),
                        active_decode_targets: active.map(|a| if dts < 32 { a & ((1 << dts) - 1) } else { a }),
                        custom_dtis: cdtis.is_some(),
                        custom_fdiffs: cfdiffs.is_some(),
                        custom_chains: cchains.is_some(),
                        frame,
                    };
                    (s, dd)
                })
        })
    }

    proptest! {
        #[test]
        fn write_parse_roundtrip((s, dd) in arb_case()) {
            let mut out = [0u8; 2048];
            let n = write(&dd, Some(&s), &mut out).unwrap();
            let bytes = &out[..n];
            let p = parse(bytes, Some(&s)).unwrap();
            prop_assert_eq!(&p, &dd);
            // write(parse(x)) == x
            let mut again = [0u8; 2048];
            let m = write(&p, Some(&s), &mut again).unwrap();
            prop_assert_eq!(&again[..m], bytes);
            // Minimal: 3 bytes exactly when nothing is extended.
            prop_assert_eq!(n == 3, !dd.has_extended());
            for cut in 0..n {
                let _ = parse(&bytes[..cut], Some(&s));
                let _ = parse(&bytes[..cut], None);
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, None);
            let _ = parse(&bytes, Some(&l3t3_key()));
            let _ = parse_mandatory(&bytes);
        }

        #[test]
        fn parse_structured_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 4..200)) {
            // Force "structure present" so the structure parser sees random input.
            bytes[3] |= 0x80;
            if let Ok(dd) = parse(&bytes, None) {
                let mut out = [0u8; 512];
                // Whatever parsed must re-encode (possibly shorter: padding is dropped).
                let n = write(&dd, None, &mut out).unwrap();
                prop_assert_eq!(parse(&out[..n], None).unwrap(), dd);
            }
        }
    }
}
