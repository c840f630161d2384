//! The RTP fixed header (RFC 3550 §5.1), header extensions (RFC 8285 one-byte and two-byte
//! forms), in-place rewriting, and 16-bit sequence number arithmetic.
//!
//! [`RtpHeader::parse`] reads the header once into a `Copy` view of decoded fields and offsets.
//! The view does not borrow the packet, so the same buffer can then be rewritten in place
//! through the view's setters (the munger rewrites SSRC, seq and timestamp; the sender side
//! rewrites transport-wide seq) without re-parsing.

use std::ops::Range;

use super::{be16, be32, out, WriteError};
use crate::id::Ssrc;

/// An RTP packet that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("RTP packet too short: {len} bytes")]
    TooShort {
        /// Packet length.
        len: usize,
    },
    /// Version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("RTP CSRC count {count} does not fit in {len} bytes")]
    CsrcOverflow {
        /// CSRC count from the header.
        count: u8,
        /// Packet length.
        len: usize,
    },
    /// The header extension block runs past the end of the packet.
    #[error("RTP header extension of {words} words does not fit in {len} bytes")]
    ExtensionOverflow {
        /// Extension length field (32-bit words).
        words: u16,
        /// Packet length.
        len: usize,
    },
    /// The padding count is zero or larger than the payload.
    #[error("RTP padding of {padding} bytes with only {available} after the header")]
    BadPadding {
        /// Padding count from the last byte.
        padding: u8,
        /// Bytes between the end of the header and the end of the packet.
        available: usize,
    },
    /// In-place rewrite of an extension that the packet does not carry.
    #[error("RTP header extension id {id} not present")]
    ExtensionMissing {
        /// Extension id.
        id: u8,
    },
    /// In-place rewrite with a value of a different length than the one in the packet.
    #[error("RTP header extension id {id} has {have} bytes, cannot write {want}")]
    ExtensionLength {
        /// Extension id.
        id: u8,
        /// Length in the packet.
        have: usize,
        /// Length of the new value.
        want: usize,
    },
}

/// Header extension encoding (RFC 8285 §4.2 and §4.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExtensionForm {
    /// Profile 0xBEDE: ids 1–14, values of 1–16 bytes.
    OneByte,
    /// Profile 0x100X: ids 1–255, values of 0–255 bytes.
    TwoByte,
}

/// One-byte header extension profile ("defined by profile" field).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Two-byte header extension profile, with the 4 "appbits" zero. 0x1000–0x100F are accepted.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

impl ExtensionForm {
    /// The form for a "defined by profile" value, `None` for other profiles (RFC 3550 generic
    /// extensions, which we carry but do not interpret).
    pub fn from_profile(profile: u16) -> Option<Self> {
        match profile {
            ONE_BYTE_PROFILE => Some(Self::OneByte),
            p if p & 0xFFF0 == TWO_BYTE_PROFILE => Some(Self::TwoByte),
            _ => None,
        }
    }

    /// The smallest form that can carry every (id, value): one-byte unless an id is above 14 or
    /// a value is empty or longer than 16 bytes (RFC 8285 §4.1.2). Whether the receiver accepts
    /// two-byte (`extmap-allow-mixed`) is the caller's business.
    pub fn for_extensions<'a>(exts: impl IntoIterator<Item = (u8, &'a [u8])>) -> Self {
        let fits_one = |(id, v): (u8, &[u8])| (1..=14).contains(&id) && (1..=16).contains(&v.len());
        if exts.into_iter().all(fits_one) {
            Self::OneByte
        } else {
            Self::TwoByte
        }
    }
}

/// Audio level extension value (RFC 6464 §3): the voice activity flag and the level in -dBov.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detector thinks this packet holds speech.
    pub voice: bool,
    /// 0–127, meaning 0 dBov (loudest) down to -127 dBov (silence).
    pub level: u8,
}

/// A parsed RTP header: decoded fixed fields plus offsets into the packet it came from.
///
/// Invariants established by [`RtpHeader::parse`] (and relied on by every accessor): the version
/// is 2; `header_len <= payload_end <= packet_len`; the CSRC list and the extension block lie
/// inside the header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RtpHeader {
    padding: bool,
    csrc_count: u8,
    marker: bool,
    pt: u8,
    seq: u16,
    timestamp: u32,
    ssrc: Ssrc,
    /// Offset of the extension "defined by profile" field, if the X bit is set.
    ext_at: Option<usize>,
    header_len: usize,
    payload_end: usize,
    packet_len: usize,
}

impl RtpHeader {
    /// Parses the header of the RTP packet `buf` (the whole datagram after SRTP unprotect).
    pub fn parse(buf: &[u8]) -> Result<Self, RtpError> {
        let len = buf.len();
        if len < 12 {
            return Err(RtpError::TooShort { len });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = buf[0] & 0x0F;
        let mut header_len = 12 + 4 * usize::from(csrc_count);
        if header_len > len {
            return Err(RtpError::CsrcOverflow { count: csrc_count, len });
        }
        let ext_at = if extension {
            let at = header_len;
            if at + 4 > len {
                return Err(RtpError::ExtensionOverflow { words: 0, len });
            }
            let words = be16(buf, at + 2);
            header_len = at + 4 + 4 * usize::from(words);
            if header_len > len {
                return Err(RtpError::ExtensionOverflow { words, len });
            }
            Some(at)
        } else {
            None
        };
        let mut payload_end = len;
        if padding {
            // RFC 3550 §5.1: the last octet counts the padding, itself included, so it is >= 1.
            let count = buf[len - 1];
            let available = len - header_len;
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::BadPadding {
                    padding: count,
                    available,
                });
            }
            payload_end = len - usize::from(count);
        }
        Ok(Self {
            padding,
            csrc_count,
            marker: buf[1] & 0x80 != 0,
            pt: buf[1] & 0x7F,
            seq: be16(buf, 2),
            timestamp: be32(buf, 4),
            ssrc: Ssrc(be32(buf, 8)),
            ext_at,
            header_len,
            payload_end,
            packet_len: len,
        })
    }

    /// Always 2: other versions are rejected by [`RtpHeader::parse`].
    pub fn version(&self) -> u8 {
        2
    }

    /// The P bit.
    pub fn has_padding(&self) -> bool {
        self.padding
    }

    /// The X bit.
    pub fn has_extension(&self) -> bool {
        self.ext_at.is_some()
    }

    /// The CC field.
    pub fn csrc_count(&self) -> u8 {
        self.csrc_count
    }

    /// The M bit.
    pub fn marker(&self) -> bool {
        self.marker
    }

    /// Payload type (7 bits).
    pub fn pt(&self) -> u8 {
        self.pt
    }

    /// Sequence number.
    pub fn seq(&self) -> u16 {
        self.seq
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Synchronisation source.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Bytes of header: fixed part, CSRCs and the whole extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Length of the packet the header was parsed from.
    pub fn packet_len(&self) -> usize {
        self.packet_len
    }

    /// Padding bytes at the end of the packet (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.packet_len - self.payload_end
    }

    /// Where the payload lies in the packet (excluding padding). May be empty (padding-only).
    pub fn payload_range(&self) -> Range<usize> {
        self.header_len..self.payload_end
    }

    /// The payload of `buf`, which must be the packet this header was parsed from (an empty
    /// slice if `buf` is too short, so misuse cannot panic).
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.payload_range()).unwrap_or(&[])
    }

    /// The `i`-th CSRC, if `i < csrc_count`.
    pub fn csrc(&self, buf: &[u8], i: usize) -> Option<Ssrc> {
        if i >= usize::from(self.csrc_count) {
            return None;
        }
        let b = buf.get(12 + 4 * i..16 + 4 * i)?;
        Some(Ssrc(be32(b, 0)))
    }

    /// The extension "defined by profile" field, if the X bit is set.
    pub fn extension_profile(&self, buf: &[u8]) -> Option<u16> {
        let at = self.ext_at?;
        buf.get(at..at + 2).map(|b| be16(b, 0))
    }

    /// Iterates the header extensions as (id, value). Empty if there is no extension block or
    /// its profile is neither one-byte nor two-byte. See [`Extensions`] for malformed blocks.
    pub fn extensions<'a>(&self, buf: &'a [u8]) -> Extensions<'a> {
        let Some(at) = self.ext_at else {
            return Extensions::empty();
        };
        let (Some(form), Some(data)) = (
            self.extension_profile(buf).and_then(ExtensionForm::from_profile),
            buf.get(at + 4..self.header_len),
        ) else {
            return Extensions::empty();
        };
        Extensions::new(form, data)
    }

    /// The value of extension `id`, if present (the first one, should it repeat).
    pub fn extension<'a>(&self, buf: &'a [u8], id: u8) -> Option<&'a [u8]> {
        self.extension_range(buf, id).and_then(|r| buf.get(r))
    }

    /// Where the value of extension `id` lies in `buf`, for rewriting in place.
    pub fn extension_range(&self, buf: &[u8], id: u8) -> Option<Range<usize>> {
        let mut it = self.extensions(buf);
        let base = self.ext_at? + 4;
        loop {
            let (eid, value) = it.next()?;
            if eid == id {
                // Right after yielding, the iterator stands at the end of the element's value.
                let end = base + it.offset();
                return Some(end - value.len()..end);
            }
        }
    }

    /// Rewrites the value of extension `id` in place; the new value must have the same length.
    pub fn set_extension(&self, buf: &mut [u8], id: u8, value: &[u8]) -> Result<(), RtpError> {
        let range = self.extension_range(buf, id).ok_or(RtpError::ExtensionMissing { id })?;
        let have = range.len();
        match buf.get_mut(range) {
            Some(dst) if dst.len() == value.len() => {
                dst.copy_from_slice(value);
                Ok(())
            }
            _ => Err(RtpError::ExtensionLength {
                id,
                have,
                want: value.len(),
            }),
        }
    }

    /// Reads the RFC 6464 audio level extension with id `id` (one byte: V bit, 7-bit level;
    /// extra bytes, which some senders pad with, are ignored).
    pub fn audio_level(&self, buf: &[u8], id: u8) -> Option<AudioLevel> {
        let &b = self.extension(buf, id)?.first()?;
        Some(AudioLevel {
            voice: b & 0x80 != 0,
            level: b & 0x7F,
        })
    }

    /// Reads the transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-
    /// extensions-01 §2: a 16-bit big-endian value) from extension `id`.
    pub fn transport_cc_seq(&self, buf: &[u8], id: u8) -> Option<u16> {
        let v = self.extension(buf, id)?;
        (v.len() >= 2).then(|| be16(v, 0))
    }

    /// Rewrites the transport-wide sequence number of extension `id` in place.
    pub fn set_transport_cc_seq(&self, buf: &mut [u8], id: u8, seq: u16) -> Result<(), RtpError> {
        self.set_extension(buf, id, &seq.to_be_bytes())
    }

    /// Reads abs-send-time (24-bit, 6.18 fixed-point seconds) from extension `id`.
    pub fn abs_send_time(&self, buf: &[u8], id: u8) -> Option<u32> {
        let v = self.extension(buf, id)?;
        (v.len() >= 3).then(|| super::be24(v, 0))
    }

    /// Rewrites the sequence number in `buf` and in this view.
    pub fn set_seq(&mut self, buf: &mut [u8], seq: u16) {
        self.seq = seq;
        write_at(buf, 2, &seq.to_be_bytes());
    }

    /// Rewrites the timestamp in `buf` and in this view.
    pub fn set_timestamp(&mut self, buf: &mut [u8], timestamp: u32) {
        self.timestamp = timestamp;
        write_at(buf, 4, &timestamp.to_be_bytes());
    }

    /// Rewrites the SSRC in `buf` and in this view.
    pub fn set_ssrc(&mut self, buf: &mut [u8], ssrc: Ssrc) {
        self.ssrc = ssrc;
        write_at(buf, 8, &ssrc.0.to_be_bytes());
    }

    /// Rewrites the marker bit in `buf` and in this view.
    pub fn set_marker(&mut self, buf: &mut [u8], marker: bool) {
        self.marker = marker;
        if let Some(b) = buf.get_mut(1) {
            *b = (*b & 0x7F) | if marker { 0x80 } else { 0 };
        }
    }

    /// Rewrites the payload type in `buf` and in this view (only the low 7 bits of `pt` count).
    pub fn set_pt(&mut self, buf: &mut [u8], pt: u8) {
        self.pt = pt & 0x7F;
        if let Some(b) = buf.get_mut(1) {
            *b = (*b & 0x80) | self.pt;
        }
    }
}

/// Copies `bytes` to `buf[at..]`. The setters are only ever given the packet the header came
/// from, which is at least 12 bytes; a shorter buffer is a caller bug, caught in debug builds and
/// ignored (rather than panicking) in release.
fn write_at(buf: &mut [u8], at: usize, bytes: &[u8]) {
    debug_assert!(buf.len() >= at + bytes.len(), "RTP setter on a foreign buffer");
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Iterator over the elements of a one-byte or two-byte header extension block, yielding
/// `(id, value)` without allocating.
///
/// Padding bytes (id 0) are skipped. In the one-byte form, id 15 ends processing (RFC 8285
/// §4.2). An element whose length runs past the block also ends iteration: like libwebrtc we keep
/// the well-formed elements before it rather than dropping the packet.
#[derive(Clone, Debug)]
pub struct Extensions<'a> {
    form: ExtensionForm,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Extensions<'a> {
    /// Iterates the element area `data` (after the 4-byte profile/length word) of the given form.
    pub fn new(form: ExtensionForm, data: &'a [u8]) -> Self {
        Self { form, data, pos: 0 }
    }

    fn empty() -> Self {
        Self::new(ExtensionForm::OneByte, &[])
    }

    /// Bytes of the element area consumed so far.
    fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let &b = self.data.get(self.pos)?;
            if b == 0 {
                self.pos += 1;
                continue;
            }
            let (id, len, hdr) = match self.form {
                ExtensionForm::OneByte => {
                    let id = b >> 4;
                    if id == 15 {
                        self.pos = self.data.len();
                        return None;
                    }
                    (id, usize::from(b & 0x0F) + 1, 1)
                }
                ExtensionForm::TwoByte => {
                    let Some(&l) = self.data.get(self.pos + 1) else {
                        self.pos = self.data.len();
                        return None;
                    };
                    (b, usize::from(l), 2)
                }
            };
            let start = self.pos + hdr;
            let Some(value) = self.data.get(start..start + len) else {
                self.pos = self.data.len();
                return None;
            };
            self.pos = start + len;
            return Some((id, value));
        }
    }
}

/// Writes a header extension block (profile word, elements, zero padding to 32 bits) into a
/// buffer, element by element, so extensions copied from an incoming packet and new ones can be
/// mixed without a temporary list.
#[derive(Debug)]
pub struct ExtensionWriter<'a> {
    buf: &'a mut [u8],
    form: ExtensionForm,
    pos: usize,
}

impl<'a> ExtensionWriter<'a> {
    /// Starts a block at `buf[0]`; needs at least the 4-byte profile/length word.
    pub fn new(buf: &'a mut [u8], form: ExtensionForm) -> Result<Self, WriteError> {
        let profile = match form {
            ExtensionForm::OneByte => ONE_BYTE_PROFILE,
            ExtensionForm::TwoByte => TWO_BYTE_PROFILE,
        };
        out(buf, 4)?[..2].copy_from_slice(&profile.to_be_bytes());
        Ok(Self { buf, form, pos: 4 })
    }

    /// Appends one element. Fails if the id or length is not encodable in this form (id 0 and,
    /// in one-byte form, id 15 are reserved) or the buffer is full.
    pub fn push(&mut self, id: u8, value: &[u8]) -> Result<(), WriteError> {
        let (hdr, ok) = match self.form {
            ExtensionForm::OneByte => (1, (1..=14).contains(&id) && (1..=16).contains(&value.len())),
            ExtensionForm::TwoByte => (2, id != 0 && value.len() <= 255),
        };
        if !ok {
            return Err(WriteError::Unencodable {
                what: "RTP header extension id or length",
            });
        }
        let end = self.pos + hdr + value.len();
        if end > 4 + 4 * usize::from(u16::MAX) {
            return Err(WriteError::TooMany {
                what: "RTP header extension bytes",
                count: end - 4,
                max: 4 * usize::from(u16::MAX),
            });
        }
        // Keep room for the padding to a 32-bit boundary, so `finish` cannot fail.
        out(self.buf, (end + 3) & !3)?;
        match self.form {
            ExtensionForm::OneByte => self.buf[self.pos] = (id << 4) | (value.len() as u8 - 1),
            ExtensionForm::TwoByte => {
                self.buf[self.pos] = id;
                self.buf[self.pos + 1] = value.len() as u8;
            }
        }
        self.buf[self.pos + hdr..end].copy_from_slice(value);
        self.pos = end;
        Ok(())
    }

    /// Pads with zeros to 32 bits, fills in the length word and returns the block's size in
    /// bytes, the 4-byte profile word included.
    pub fn finish(self) -> usize {
        let total = (self.pos + 3) & !3;
        // `push` checked that `total` bytes fit.
        self.buf[self.pos..total].fill(0);
        let words = ((total - 4) / 4) as u16;
        self.buf[2..4].copy_from_slice(&words.to_be_bytes());
        total
    }
}

/// Fields for writing an RTP header from scratch (RTX, padding probes, tests).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RtpHeaderFields<'a> {
    /// M bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: Ssrc,
    /// Contributing sources (at most 15).
    pub csrcs: &'a [Ssrc],
    /// Header extensions as (id, value), written in the smallest form that fits (see
    /// [`ExtensionForm::for_extensions`]). Empty means no X bit.
    pub extensions: &'a [(u8, &'a [u8])],
}

impl RtpHeaderFields<'_> {
    /// Writes the header (without padding: the P bit is clear) to the start of `buf` and
    /// returns its length; the payload goes right after it.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        if self.csrcs.len() > 15 {
            return Err(WriteError::TooMany {
                what: "CSRCs",
                count: self.csrcs.len(),
                max: 15,
            });
        }
        let fixed = 12 + 4 * self.csrcs.len();
        let b = out(buf, fixed)?;
        let x = if self.extensions.is_empty() { 0 } else { 0x10 };
        b[0] = 0x80 | x | self.csrcs.len() as u8;
        b[1] = (self.pt & 0x7F) | if self.marker { 0x80 } else { 0 };
        b[2..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        for (i, c) in self.csrcs.iter().enumerate() {
            b[12 + 4 * i..16 + 4 * i].copy_from_slice(&c.0.to_be_bytes());
        }
        if self.extensions.is_empty() {
            return Ok(fixed);
        }
        let form = ExtensionForm::for_extensions(self.extensions.iter().copied());
        let mut w = ExtensionWriter::new(&mut buf[fixed..], form)?;
        for &(id, value) in self.extensions {
            w.push(id, value)?;
        }
        Ok(fixed + w.finish())
    }
}

/// How far `to` is ahead of `from` in 16-bit serial arithmetic (RFC 1982): positive if `to` is
/// newer, negative if older. Exactly 32768 apart reads as -32768.
pub fn seq_delta(from: u16, to: u16) -> i16 {
    to.wrapping_sub(from) as i16
}

/// Whether `a` is newer than `b` in 16-bit serial arithmetic. Values exactly 32768 apart are
/// newer than neither.
pub fn is_newer_seq(a: u16, b: u16) -> bool {
    seq_delta(b, a) > 0
}

/// Extends 16-bit sequence numbers (RTP seq, transport-wide seq) to 64 bits.
///
/// Each value is placed in the 65536-cycle closest to the highest value seen so far, so the
/// output grows with the true send order across any number of wraps, and reordered or repeated
/// packets (up to 32767 back) get their original extended value. The first value is placed in
/// cycle 1, not 0, so that packets sent just before it still extend to a smaller number without
/// underflow; [`SeqExtender::rtcp_ext_highest_seq`] removes that offset for RTCP.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SeqExtender {
    highest: Option<u64>,
}

/// The cycle the first sequence number is placed in.
const FIRST_CYCLE: u64 = 1 << 16;

impl SeqExtender {
    /// An extender that has seen nothing.
    pub const fn new() -> Self {
        Self { highest: None }
    }

    /// Extends `seq` and, if it is the newest so far, remembers it.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = self.peek(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// What [`SeqExtender::extend`] would return, without remembering anything.
    pub fn peek(&self, seq: u16) -> u64 {
        match self.highest {
            None => FIRST_CYCLE + u64::from(seq),
            // `highest >= FIRST_CYCLE` and the delta is >= -32768, so this cannot underflow.
            Some(h) => h.wrapping_add_signed(i64::from(seq_delta(h as u16, seq))),
        }
    }

    /// The highest extended value seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// The RTCP "extended highest sequence number received" (RFC 3550 §6.4.1): cycles since the
    /// first packet in the top 16 bits, the highest seq in the low 16; 0 before any packet.
    pub fn rtcp_ext_highest_seq(&self) -> u32 {
        self.highest.map_or(0, |h| (h - FIRST_CYCLE) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A one-byte-extension packet with audio level (id 1) and transport-cc (id 3), as Chrome
    /// sends Opus: V=2 X=1, PT 111, seq 0x1234, ts 0xDEADBEEF, SSRC 0x11223344, then 0xBEDE
    /// with 2 words: [0x10 0x9E] [0x31 0x01 0x02] and 3 bytes of padding; payload "opus".
    fn opus_packet() -> Vec<u8> {
        let mut p = vec![
            0x90, 0x6F, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x11, 0x22, 0x33, 0x44, // fixed
            0xBE, 0xDE, 0x00, 0x02, // one-byte profile, 2 words
            0x10, 0x9E, // id 1, len 1: V=1, level 30
            0x31, 0x01, 0x02, // id 3, len 2: transport seq 0x0102
            0x00, 0x00, 0x00, // padding
        ];
        p.extend_from_slice(b"opus");
        p
    }

    /// Fixed fields, extensions and payload of a hand-made Opus packet are read correctly.
    #[test]
    fn parse_opus_with_extensions() {
        let p = opus_packet();
        let h = RtpHeader::parse(&p).expect("valid packet");
        assert_eq!(h.version(), 2);
        assert!(h.has_extension() && !h.has_padding() && !h.marker());
        assert_eq!((h.pt(), h.seq(), h.timestamp()), (111, 0x1234, 0xDEADBEEF));
        assert_eq!(h.ssrc(), Ssrc(0x11223344));
        assert_eq!(h.header_len(), 24);
        assert_eq!(h.payload(&p), b"opus");
        assert_eq!(h.extension_profile(&p), Some(ONE_BYTE_PROFILE));
        let exts: Vec<_> = h.extensions(&p).collect();
        assert_eq!(exts, vec![(1, &[0x9E][..]), (3, &[1, 2][..])]);
        assert_eq!(h.audio_level(&p, 1), Some(AudioLevel { voice: true, level: 30 }));
        assert_eq!(h.transport_cc_seq(&p, 3), Some(0x0102));
        assert_eq!(h.extension(&p, 2), None);
    }

    /// In-place setters change exactly their field, and re-parsing agrees with the view.
    #[test]
    fn in_place_setters() {
        let mut p = opus_packet();
        let mut h = RtpHeader::parse(&p).expect("valid packet");
        h.set_seq(&mut p, 7);
        h.set_timestamp(&mut p, 0x01020304);
        h.set_ssrc(&mut p, Ssrc(0xCAFEBABE));
        h.set_marker(&mut p, true);
        h.set_pt(&mut p, 100);
        h.set_transport_cc_seq(&mut p, 3, 0xABCD).expect("present, 2 bytes");
        assert_eq!(
            h.set_extension(&mut p, 1, &[1, 2]),
            Err(RtpError::ExtensionLength {
                id: 1,
                have: 1,
                want: 2
            })
        );
        assert_eq!(
            h.set_extension(&mut p, 9, &[1]),
            Err(RtpError::ExtensionMissing { id: 9 })
        );
        let again = RtpHeader::parse(&p).expect("still valid");
        assert_eq!(again, h);
        assert_eq!(again.seq(), 7);
        assert_eq!(again.timestamp(), 0x01020304);
        assert_eq!(again.ssrc(), Ssrc(0xCAFEBABE));
        assert!(again.marker());
        assert_eq!(again.pt(), 100);
        assert_eq!(again.transport_cc_seq(&p, 3), Some(0xABCD));
        assert_eq!(again.audio_level(&p, 1).map(|a| a.level), Some(30));
        assert_eq!(again.payload(&p), b"opus");
    }

    /// Two-byte extensions (RFC 8285 §4.3), including a zero-length element and padding.
    #[test]
    fn two_byte_extensions() {
        let p = [
            0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, // fixed
            0x10, 0x01, 0x00, 0x03, // two-byte profile with appbits 1, 3 words
            0x20, 0x00, // id 32, len 0
            0x00, // padding
            0x05, 0x03, 0xAA, 0xBB, 0xCC, // id 5, len 3
            0xFF, 0x02, 0x01, 0x02, // id 255, len 2
            0xEE, // payload
        ];
        let h = RtpHeader::parse(&p).expect("valid");
        let exts: Vec<_> = h.extensions(&p).collect();
        assert_eq!(
            exts,
            vec![(32, &[][..]), (5, &[0xAA, 0xBB, 0xCC][..]), (255, &[1, 2][..])]
        );
        assert_eq!(h.payload(&p), &[0xEE]);
        assert_eq!(h.extension_range(&p, 255), Some(26..28));
    }

    /// Malformed headers are errors, and a truncated extension element ends iteration early.
    #[test]
    fn malformed() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::TooShort { len: 11 }));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        assert!(matches!(
            RtpHeader::parse(&[0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::CsrcOverflow { count: 1, .. })
        ));
        let mut p = opus_packet();
        p[15] = 9;
        assert!(matches!(
            RtpHeader::parse(&p),
            Err(RtpError::ExtensionOverflow { words: 9, .. })
        ));
        // Padding larger than the payload, and padding count 0.
        let mut p = vec![0xA0, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3];
        p.push(5);
        assert!(matches!(
            RtpHeader::parse(&p),
            Err(RtpError::BadPadding { padding: 5, .. })
        ));
        *p.last_mut().expect("non-empty") = 0;
        assert!(RtpHeader::parse(&p).is_err());
        *p.last_mut().expect("non-empty") = 2;
        let h = RtpHeader::parse(&p).expect("valid padding");
        assert_eq!((h.payload(&p), h.padding_len()), (&[1u8, 2][..], 2));
        // One-byte element claiming 16 bytes in a 1-word block: iteration stops, no panic.
        let p = [
            0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0x1F, 0,
        ];
        let h = RtpHeader::parse(&p).expect("framing is fine");
        let exts: Vec<_> = h.extensions(&p).collect();
        assert_eq!(exts, vec![(1, &[0xAA][..])]);
        // Id 15 stops processing.
        let p = [
            0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0xF0, 0x10, 0xAA, 0,
        ];
        let h = RtpHeader::parse(&p).expect("framing is fine");
        assert_eq!(h.extensions(&p).count(), 0);
    }

    /// Sequence numbers compare by serial arithmetic across the wrap.
    #[test]
    fn seq_compare() {
        assert!(is_newer_seq(1, 0));
        assert!(is_newer_seq(0, 65535));
        assert!(!is_newer_seq(65535, 0));
        assert!(!is_newer_seq(5, 5));
        assert!(!is_newer_seq(32768, 0) && !is_newer_seq(0, 32768));
        assert_eq!(seq_delta(65530, 4), 10);
        assert_eq!(seq_delta(4, 65530), -10);
    }

    /// The extender places the first packet in cycle 1 and counts wraps for RTCP from there.
    #[test]
    fn seq_extender_basics() {
        let mut e = SeqExtender::new();
        assert_eq!(e.rtcp_ext_highest_seq(), 0);
        assert_eq!(e.extend(65534), 65536 + 65534);
        assert_eq!(e.extend(3), 2 * 65536 + 3);
        assert_eq!(e.extend(65535), 65536 + 65535); // late, before the wrap
        assert_eq!(e.rtcp_ext_highest_seq(), 65536 + 3);
        let mut e = SeqExtender::new();
        assert_eq!(e.extend(2), 65538);
        assert_eq!(e.extend(65000), 65000); // sent before the first one: no underflow
        assert_eq!(e.highest(), Some(65538));
    }

    fn ext_strategy() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        prop_oneof![
            proptest::collection::vec((1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16)), 0..6),
            proptest::collection::vec((1u8..=255, proptest::collection::vec(any::<u8>(), 0..=40)), 0..6),
        ]
    }

    proptest! {
        /// Arbitrary bytes never panic the parser or any accessor.
        #[test]
        fn arbitrary_bytes_never_panic(mut data in any::<Vec<u8>>(), id in any::<u8>()) {
            if let Ok(mut h) = RtpHeader::parse(&data) {
                prop_assert!(h.header_len() <= h.payload_range().end);
                prop_assert!(h.payload_range().end <= data.len());
                let n = h.extensions(&data).count();
                prop_assert!(n <= data.len());
                let _ = h.audio_level(&data, id);
                let _ = h.transport_cc_seq(&data, id);
                let _ = h.abs_send_time(&data, id);
                let _ = h.csrc(&data, 3);
                let _ = h.set_transport_cc_seq(&mut data, id, 1);
                h.set_seq(&mut data, 1);
                h.set_marker(&mut data, true);
                prop_assert_eq!(RtpHeader::parse(&data), Ok(h));
            }
        }

        /// write then parse gives back every field, CSRC, extension and the payload.
        #[test]
        fn header_round_trip(
            marker in any::<bool>(), pt in 0u8..128, seq in any::<u16>(), ts in any::<u32>(),
            ssrc in any::<u32>(), csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
            exts in ext_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let csrcs: Vec<Ssrc> = csrcs.into_iter().map(Ssrc).collect();
            let ext_refs: Vec<(u8, &[u8])> = exts.iter().map(|(i, v)| (*i, &v[..])).collect();
            let fields = RtpHeaderFields {
                marker, pt, seq, timestamp: ts, ssrc: Ssrc(ssrc), csrcs: &csrcs, extensions: &ext_refs,
            };
            let mut buf = vec![0u8; 1500];
            let n = fields.write_to(&mut buf).expect("fits in 1500");
            buf[n..n + payload.len()].copy_from_slice(&payload);
            buf.truncate(n + payload.len());
            let h = RtpHeader::parse(&buf).expect("own output parses");
            prop_assert_eq!(h.header_len(), n);
            prop_assert_eq!((h.marker(), h.pt(), h.seq(), h.timestamp(), h.ssrc()), (marker, pt, seq, ts, Ssrc(ssrc)));
            prop_assert_eq!(usize::from(h.csrc_count()), csrcs.len());
            for (i, c) in csrcs.iter().enumerate() {
                prop_assert_eq!(h.csrc(&buf, i), Some(*c));
            }
            let got: Vec<(u8, &[u8])> = h.extensions(&buf).collect();
            prop_assert_eq!(&got, &ext_refs);
            prop_assert_eq!(h.payload(&buf), &payload[..]);
            // A too-short buffer is an error, never a panic.
            prop_assert!(fields.write_to(&mut buf[..n - 1]).is_err());
        }

        /// The extender recovers the true (unwrapped) sequence exactly, up to a constant offset,
        /// for any walk of forward steps and reorders within ±1000 of the highest seen, so it is
        /// monotone in send order across wraparound.
        #[test]
        fn seq_extender_is_monotone(
            start in any::<u16>(),
            steps in proptest::collection::vec(prop_oneof![-1000i64..=1000, 0i64..=30000], 1..2000),
        ) {
            let mut e = SeqExtender::new();
            let mut highest_true: i64 = i64::from(start);
            let offset = e.extend(start) as i64 - highest_true;
            let mut seen: Vec<(i64, u64)> = vec![(highest_true, (highest_true + offset) as u64)];
            for s in steps {
                let t = highest_true + s;
                let ext = e.extend(t.rem_euclid(65536) as u16);
                prop_assert_eq!(ext as i64 - t, offset, "true {} extended {}", t, ext);
                seen.push((t, ext));
                highest_true = highest_true.max(t);
            }
            prop_assert_eq!(e.highest(), Some((highest_true + offset) as u64));
            for w in seen.windows(2) {
                prop_assert_eq!(w[0].0 < w[1].0, w[0].1 < w[1].1);
            }
        }
    }
}
