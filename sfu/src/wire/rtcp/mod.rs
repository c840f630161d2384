//! RTCP (RFC 3550 §6, RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb, draft-holmer-rmcat-
//! transport-wide-cc-extensions-01): a compound-packet iterator yielding typed zero-copy views,
//! and writers for what the bridge sends. One file per packet type.
//!
//! Parsing has two layers. [`RtcpCompound`] frames the compound packet by the common header's
//! length field ([`RawRtcp`]); a framing error (bad version, length past the end, bad padding)
//! ends iteration because nothing after it can be trusted. [`RtcpPacket::parse`] then decodes one
//! framed packet; a malformed body is an error for that packet only, and iteration goes on.
//! Unknown packet types and feedback formats (XR, SLI, RPSI, TMMBR, …) come out as
//! [`RtcpPacket::Other`] with their raw bytes.
//!
//! Writers take a `&mut [u8]`, write one packet at its start and return its length; a compound
//! packet is just writers called one after another on the rest of the buffer.

mod app;
mod bye;
mod fir;
mod nack;
mod pli;
mod remb;
mod report;
mod sdes;
mod twcc;

#[cfg(test)]
mod interop_tests;

pub use app::App;
pub use bye::{write_bye, Bye};
pub use fir::{write_fir, Fir, FirEntries, FirEntry};
pub use nack::{write_nack, Nack, NackPacker, NackPair, NackPairs};
pub use pli::{write_pli, Pli};
pub use remb::{write_remb, Remb};
pub use report::{write_rr, write_sr, ReceiverReport, ReportBlock, ReportBlocks, SenderInfo, SenderReport};
pub use sdes::Sdes;
pub use twcc::{write_twcc, TransportCc, TwccFeedback, TwccPacket, TwccPackets};

use super::{be16, be32, out, WriteError};
use crate::id::Ssrc;

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585 §6.2): NACK (FMT 1), transport-cc (FMT 15).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.3): PLI (FMT 1), FIR (FMT 4), REMB (FMT 15).
pub const PT_PSFB: u8 = 206;
/// Extended reports (RFC 3611), not interpreted.
pub const PT_XR: u8 = 207;

/// RTPFB FMT of generic NACK (RFC 4585 §6.2.1).
pub const FMT_NACK: u8 = 1;
/// RTPFB FMT of transport-wide congestion control feedback.
pub const FMT_TWCC: u8 = 15;
/// PSFB FMT of picture loss indication (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB FMT of full intra request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB FMT of application layer feedback, used by REMB.
pub const FMT_AFB: u8 = 15;

/// An RTCP packet or compound packet that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Fewer than the 4 bytes of a common header remain.
    #[error("RTCP packet too short: {len} bytes left")]
    TooShort {
        /// Bytes left in the compound packet.
        len: usize,
    },
    /// Version is not 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// The length field runs past the end of the compound packet.
    #[error("RTCP packet type {pt} claims {len} bytes, only {remaining} left")]
    LengthOverflow {
        /// Packet type.
        pt: u8,
        /// Length from the header, in bytes.
        len: usize,
        /// Bytes left in the compound packet.
        remaining: usize,
    },
    /// The P bit is set but the padding count is zero or larger than the body.
    #[error("RTCP packet type {pt} has bad padding count {padding}")]
    BadPadding {
        /// Packet type.
        pt: u8,
        /// Padding count from the last byte.
        padding: u8,
    },
    /// The body does not fit its packet type.
    #[error("malformed RTCP packet type {pt} format {fmt}: {reason}")]
    Malformed {
        /// Packet type.
        pt: u8,
        /// The 5-bit count/format field.
        fmt: u8,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The 4-byte common header of every RTCP packet (RFC 3550 §6.4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RtcpHeader {
    /// P bit.
    pub padding: bool,
    /// The 5-bit field after P: report count, source count, FMT or APP subtype.
    pub count: u8,
    /// Packet type.
    pub pt: u8,
    /// Length field: packet length in 32-bit words minus one.
    pub length_words: u16,
}

impl RtcpHeader {
    /// Length of the whole packet in bytes, header and padding included.
    pub fn packet_len(&self) -> usize {
        4 * (usize::from(self.length_words) + 1)
    }
}

/// One framed RTCP packet, not yet decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawRtcp<'a> {
    /// The common header.
    pub header: RtcpHeader,
    /// The whole packet as it came, header and padding included (for forwarding).
    pub bytes: &'a [u8],
    /// The body after the 4-byte header, padding removed.
    pub body: &'a [u8],
}

/// One decoded RTCP packet, borrowing the buffer it came from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// Sender report (PT 200).
    SenderReport(SenderReport<'a>),
    /// Receiver report (PT 201).
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (PT 202), content not decoded.
    Sdes(Sdes<'a>),
    /// Goodbye (PT 203).
    Bye(Bye<'a>),
    /// Application-defined (PT 204), content not decoded.
    App(App<'a>),
    /// Generic NACK (PT 205, FMT 1).
    Nack(Nack<'a>),
    /// Transport-wide congestion control feedback (PT 205, FMT 15).
    TransportCc(TransportCc<'a>),
    /// Picture loss indication (PT 206, FMT 1).
    Pli(Pli),
    /// Full intra request (PT 206, FMT 4).
    Fir(Fir<'a>),
    /// Receiver estimated maximum bitrate (PT 206, FMT 15, "REMB").
    Remb(Remb<'a>),
    /// Anything else: XR, other feedback formats, unknown packet types.
    Other(RawRtcp<'a>),
}

impl<'a> RtcpPacket<'a> {
    /// Decodes one framed packet.
    pub fn parse(raw: RawRtcp<'a>) -> Result<Self, RtcpError> {
        let h = raw.header;
        Ok(match (h.pt, h.count) {
            (PT_SR, _) => Self::SenderReport(SenderReport::parse(h, raw.body)?),
            (PT_RR, _) => Self::ReceiverReport(ReceiverReport::parse(h, raw.body)?),
            (PT_SDES, _) => Self::Sdes(Sdes::parse(h, raw.body)),
            (PT_BYE, _) => Self::Bye(Bye::parse(h, raw.body)?),
            (PT_APP, _) => Self::App(App::parse(h, raw.body)?),
            (PT_RTPFB, FMT_NACK) => Self::Nack(Nack::parse(h, raw.body)?),
            (PT_RTPFB, FMT_TWCC) => Self::TransportCc(TransportCc::parse(h, raw.body)?),
            (PT_PSFB, FMT_PLI) => Self::Pli(Pli::parse(h, raw.body)?),
            (PT_PSFB, FMT_FIR) => Self::Fir(Fir::parse(h, raw.body)?),
            (PT_PSFB, FMT_AFB) if remb::is_remb(raw.body) => Self::Remb(Remb::parse(h, raw.body)?),
            _ => Self::Other(raw),
        })
    }
}

/// Iterator over the packets of a compound RTCP packet (after SRTCP unprotect).
///
/// Yields `Err` for a packet whose body is malformed and continues with the next one; yields
/// `Err` once and then stops for a framing error. Never panics.
#[derive(Clone, Debug)]
pub struct RtcpCompound<'a> {
    rest: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Iterates the compound packet `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The next framed packet, without decoding its body.
    pub fn next_raw(&mut self) -> Option<Result<RawRtcp<'a>, RtcpError>> {
        if self.rest.is_empty() {
            return None;
        }
        let r = frame(self.rest);
        match r {
            Ok(raw) => self.rest = &self.rest[raw.bytes.len()..],
            Err(_) => self.rest = &[],
        }
        Some(r)
    }
}

impl<'a> Iterator for RtcpCompound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_raw()?.and_then(RtcpPacket::parse))
    }
}

/// Frames the first packet of `buf`.
fn frame(buf: &[u8]) -> Result<RawRtcp<'_>, RtcpError> {
    if buf.len() < 4 {
        return Err(RtcpError::TooShort { len: buf.len() });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let header = RtcpHeader {
        padding: buf[0] & 0x20 != 0,
        count: buf[0] & 0x1F,
        pt: buf[1],
        length_words: be16(buf, 2),
    };
    let len = header.packet_len();
    let Some(bytes) = buf.get(..len) else {
        return Err(RtcpError::LengthOverflow {
            pt: header.pt,
            len,
            remaining: buf.len(),
        });
    };
    let mut body = &bytes[4..];
    if header.padding {
        // RFC 3550 §6.4.1: the last octet counts the padding, itself included.
        let padding = bytes[len - 1];
        if padding == 0 || usize::from(padding) > body.len() {
            return Err(RtcpError::BadPadding { pt: header.pt, padding });
        }
        body = &body[..body.len() - usize::from(padding)];
    }
    Ok(RawRtcp { header, bytes, body })
}

/// Iterator over a list of 32-bit SSRCs (BYE, REMB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsrcList<'a> {
    data: &'a [u8],
}

impl<'a> SsrcList<'a> {
    /// `data.len()` must be a multiple of 4 (trailing bytes are ignored).
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
}

impl Iterator for SsrcList<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        let (head, rest) = self.data.split_first_chunk::<4>()?;
        self.data = rest;
        Some(Ssrc(u32::from_be_bytes(*head)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SsrcList<'_> {}

/// The malformed-body error for a packet with header `h`.
fn malformed(h: RtcpHeader, reason: &'static str) -> RtcpError {
    RtcpError::Malformed {
        pt: h.pt,
        fmt: h.count,
        reason,
    }
}

/// Sender and media SSRC of a feedback message (RFC 4585 §6.1), and its FCI.
fn feedback(h: RtcpHeader, body: &[u8]) -> Result<(Ssrc, Ssrc, &[u8]), RtcpError> {
    if body.len() < 8 {
        return Err(malformed(h, "feedback shorter than its two SSRCs"));
    }
    Ok((Ssrc(be32(body, 0)), Ssrc(be32(body, 4)), &body[8..]))
}

/// Checks room for a packet of `len` bytes (a multiple of 4) and writes its common header.
fn write_header(buf: &mut [u8], padding: bool, count: u8, pt: u8, len: usize) -> Result<&mut [u8], WriteError> {
    debug_assert!(len.is_multiple_of(4) && len >= 4 && count < 32);
    if len > 4 * (usize::from(u16::MAX) + 1) {
        return Err(WriteError::TooMany {
            what: "RTCP bytes",
            count: len,
            max: 4 * (usize::from(u16::MAX) + 1),
        });
    }
    let b = out(buf, len)?;
    b[0] = 0x80 | if padding { 0x20 } else { 0 } | count;
    b[1] = pt;
    b[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    Ok(b)
}

/// Writes a feedback header with sender and media SSRCs; returns the packet slice.
fn write_feedback(
    buf: &mut [u8],
    pt: u8,
    fmt: u8,
    sender: Ssrc,
    media: Ssrc,
    len: usize,
) -> Result<&mut [u8], WriteError> {
    let b = write_header(buf, false, fmt, pt, len)?;
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    b[8..12].copy_from_slice(&media.0.to_be_bytes());
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Chrome-style compound: RR with one block, SDES CNAME, then a PLI; all three decode.
    #[test]
    fn compound_rr_sdes_pli() {
        let mut buf = [0u8; 200];
        let block = ReportBlock {
            ssrc: Ssrc(0x0A0B0C0D),
            fraction_lost: 25,
            cumulative_lost: -3,
            ext_highest_seq: 0x0001_0010,
            jitter: 77,
            lsr: 0x1234_5678,
            dlsr: 65536,
        };
        let mut n = write_rr(&mut buf, Ssrc(1), &[block]).expect("fits");
        // SDES: one chunk, SSRC 1, CNAME "ab", END, padded: 4 + 4 + 2 + 2 + 1 -> 16 bytes.
        let sdes = [0x81, 202, 0, 3, 0, 0, 0, 1, 1, 2, b'a', b'b', 0, 0, 0, 0];
        buf[n..n + 16].copy_from_slice(&sdes);
        n += 16;
        n += write_pli(&mut buf[n..], Ssrc(1), Ssrc(2)).expect("fits");
        let pkts: Vec<_> = RtcpCompound::new(&buf[..n]).collect();
        assert_eq!(pkts.len(), 3);
        match &pkts[0] {
            Ok(RtcpPacket::ReceiverReport(rr)) => {
                assert_eq!(rr.ssrc, Ssrc(1));
                assert_eq!(rr.blocks.clone().collect::<Vec<_>>(), vec![block]);
            }
            other => panic!("expected RR, got {other:?}"),
        }
        match &pkts[1] {
            Ok(RtcpPacket::Sdes(s)) => assert_eq!((s.chunk_count, s.body.len()), (1, 12)),
            other => panic!("expected SDES, got {other:?}"),
        }
        match &pkts[2] {
            Ok(RtcpPacket::Pli(p)) => assert_eq!((p.sender, p.media), (Ssrc(1), Ssrc(2))),
            other => panic!("expected PLI, got {other:?}"),
        }
    }

    /// A malformed body is reported and skipped; a framing error ends iteration.
    #[test]
    fn errors_and_recovery() {
        // A NACK (RTPFB FMT 1) of length 2: two SSRCs and no FCI entry.
        let bad_nack = [0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let mut buf = bad_nack.to_vec();
        let mut pli = [0u8; 12];
        write_pli(&mut pli, Ssrc(3), Ssrc(4)).expect("fits");
        buf.extend_from_slice(&pli);
        buf.extend_from_slice(&[0x81, 201, 0, 9, 0, 0]); // RR claiming 40 bytes
        let mut it = RtcpCompound::new(&buf);
        assert!(matches!(
            it.next(),
            Some(Err(RtcpError::Malformed { pt: 205, fmt: 1, .. }))
        ));
        assert!(matches!(it.next(), Some(Ok(RtcpPacket::Pli(_)))));
        assert!(matches!(
            it.next(),
            Some(Err(RtcpError::LengthOverflow { pt: 201, .. }))
        ));
        assert!(it.next().is_none());
        // Version 1 stops at once.
        let mut it = RtcpCompound::new(&[0x40, 200, 0, 0]);
        assert_eq!(it.next().map(|r| r.err()), Some(Some(RtcpError::BadVersion(1))));
        assert!(it.next().is_none());
        // Padding count larger than the body.
        let mut it = RtcpCompound::new(&[0xA0, 201, 0, 1, 0, 0, 0, 9]);
        assert!(matches!(it.next(), Some(Err(RtcpError::BadPadding { padding: 9, .. }))));
        // Padding is removed from the body: RR, 1 SSRC, 4 bytes of padding.
        let mut it = RtcpCompound::new(&[0xA0, 201, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4]);
        match it.next() {
            Some(Ok(RtcpPacket::ReceiverReport(rr))) => {
                assert_eq!((rr.ssrc, rr.blocks.len()), (Ssrc(9), 0))
            }
            other => panic!("expected RR, got {other:?}"),
        }
        // Unknown packet type and XR come out raw.
        let xr = [0x80, 207, 0, 1, 0, 0, 0, 5];
        match RtcpCompound::new(&xr).next() {
            Some(Ok(RtcpPacket::Other(raw))) => {
                assert_eq!((raw.header.pt, raw.bytes, raw.body), (207, &xr[..], &xr[4..]))
            }
            other => panic!("expected raw XR, got {other:?}"),
        }
    }

    proptest! {
        /// Arbitrary bytes never panic the compound iterator nor any view's iterators.
        #[test]
        fn arbitrary_bytes_never_panic(data in any::<Vec<u8>>()) {
            exhaust(&data);
        }

        /// Arbitrary bodies behind a valid header of every known type never panic.
        #[test]
        fn arbitrary_bodies_never_panic(
            pt in 200u8..=207, count in 0u8..32,
            body in proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v }),
        ) {
            let mut data = vec![0x80 | count, pt];
            data.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            data.extend_from_slice(&body);
            exhaust(&data);
            // The same with REMB's identifier where the FCI starts.
            if body.len() >= 12 {
                data[12..16].copy_from_slice(b"REMB");
                exhaust(&data);
            }
        }
    }

    /// Drives every iterator reachable from a compound packet to its end.
    fn exhaust(data: &[u8]) {
        for p in RtcpCompound::new(data).flatten() {
            match p {
                RtcpPacket::SenderReport(sr) => assert!(sr.blocks.count() <= 31),
                RtcpPacket::ReceiverReport(rr) => assert!(rr.blocks.count() <= 31),
                RtcpPacket::Bye(b) => assert!(b.ssrcs.count() <= 31),
                RtcpPacket::Nack(n) => {
                    let _ = n.lost_seqs().count();
                }
                RtcpPacket::TransportCc(t) => {
                    assert_eq!(t.packets().count(), usize::from(t.status_count));
                }
                RtcpPacket::Fir(f) => {
                    let _ = f.entries.count();
                }
                RtcpPacket::Remb(r) => {
                    let _ = r.ssrcs.count();
                }
                RtcpPacket::Sdes(_) | RtcpPacket::App(_) | RtcpPacket::Pli(_) | RtcpPacket::Other(_) => {}
            }
        }
    }
}
