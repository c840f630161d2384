//! Sender and receiver reports (RFC 3550 §6.4) and their report blocks.

use super::{malformed, write_header, RtcpError, RtcpHeader, PT_RR, PT_SR};
use crate::id::Ssrc;
use crate::wire::{be32, WriteError};

/// Report blocks per SR/RR: the count field has 5 bits.
const MAX_BLOCKS: usize = 31;
const BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;

/// The sender info of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed-point seconds since 1900.
    pub ntp_time: u64,
    /// The RTP timestamp corresponding to `ntp_time`.
    pub rtp_time: u32,
    /// Packets sent since starting transmission.
    pub packet_count: u32,
    /// Payload octets sent since starting transmission.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a 24-bit signed value (duplicates can make it negative). The
    /// writer clamps to -8388608..=8388607 as RFC 3550 §6.4.1 asks.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | seq).
    pub ext_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from this source (0 if none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    /// Decodes a 24-byte block.
    fn parse(b: &[u8; BLOCK_LEN]) -> Self {
        // Sign-extend the 24-bit cumulative lost: shift it to the top, then arithmetic-shift down.
        let lost = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
        Self {
            ssrc: Ssrc(be32(b, 0)),
            fraction_lost: b[4],
            cumulative_lost: lost,
            ext_highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        }
    }

    /// Encodes into a 24-byte block.
    fn write(&self, b: &mut [u8]) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        b[0..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        b[4] = self.fraction_lost;
        b[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        b[8..12].copy_from_slice(&self.ext_highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        b[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// Iterator over the report blocks of an SR or RR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    data: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (head, rest) = self.data.split_first_chunk::<BLOCK_LEN>()?;
        self.data = rest;
        Some(ReportBlock::parse(head))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() / BLOCK_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// A sender report (PT 200). Profile-specific extensions after the blocks are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// The sender.
    pub ssrc: Ssrc,
    /// NTP/RTP time and counts.
    pub info: SenderInfo,
    /// Reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

impl<'a> SenderReport<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let blocks_len = usize::from(h.count) * BLOCK_LEN;
        if body.len() < 4 + SENDER_INFO_LEN + blocks_len {
            return Err(malformed(h, "SR shorter than its sender info and report count"));
        }
        let ntp = u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8));
        Ok(Self {
            ssrc: Ssrc(be32(body, 0)),
            info: SenderInfo {
                ntp_time: ntp,
                rtp_time: be32(body, 12),
                packet_count: be32(body, 16),
                octet_count: be32(body, 20),
            },
            blocks: ReportBlocks {
                data: &body[24..24 + blocks_len],
            },
        })
    }
}

/// A receiver report (PT 201). Profile-specific extensions after the blocks are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// The reporter.
    pub ssrc: Ssrc,
    /// Reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

impl<'a> ReceiverReport<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let blocks_len = usize::from(h.count) * BLOCK_LEN;
        if body.len() < 4 + blocks_len {
            return Err(malformed(h, "RR shorter than its report count"));
        }
        Ok(Self {
            ssrc: Ssrc(be32(body, 0)),
            blocks: ReportBlocks {
                data: &body[4..4 + blocks_len],
            },
        })
    }
}

/// Writes an SR from `sender` with up to 31 report blocks; returns its length.
pub fn write_sr(buf: &mut [u8], sender: Ssrc, info: &SenderInfo, blocks: &[ReportBlock]) -> Result<usize, WriteError> {
    check_blocks(blocks)?;
    let len = 4 + 4 + SENDER_INFO_LEN + BLOCK_LEN * blocks.len();
    let b = write_header(buf, false, blocks.len() as u8, PT_SR, len)?;
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    b[8..16].copy_from_slice(&info.ntp_time.to_be_bytes());
    b[16..20].copy_from_slice(&info.rtp_time.to_be_bytes());
    b[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    b[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    for (i, block) in blocks.iter().enumerate() {
        block.write(&mut b[28 + BLOCK_LEN * i..28 + BLOCK_LEN * (i + 1)]);
    }
    Ok(len)
}

/// Writes an RR from `sender` with up to 31 report blocks; returns its length.
pub fn write_rr(buf: &mut [u8], sender: Ssrc, blocks: &[ReportBlock]) -> Result<usize, WriteError> {
    check_blocks(blocks)?;
    let len = 4 + 4 + BLOCK_LEN * blocks.len();
    let b = write_header(buf, false, blocks.len() as u8, PT_RR, len)?;
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    for (i, block) in blocks.iter().enumerate() {
        block.write(&mut b[8 + BLOCK_LEN * i..8 + BLOCK_LEN * (i + 1)]);
    }
    Ok(len)
}

fn check_blocks(blocks: &[ReportBlock]) -> Result<(), WriteError> {
    if blocks.len() > MAX_BLOCKS {
        return Err(WriteError::TooMany {
            what: "report blocks",
            count: blocks.len(),
            max: MAX_BLOCKS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// A hand-made SR (RFC 3550 §6.4.1 layout) with one block decodes field by field,
    /// including a negative 24-bit cumulative loss.
    #[test]
    fn parse_sr_bytes() {
        let sr = [
            0x81, 200, 0x00, 0x0C, // V=2 RC=1 PT=SR length 12
            0x00, 0x00, 0x00, 0x2A, // SSRC 42
            0xE8, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00, 0x00, // NTP 0xE8000001.80000000
            0x00, 0x01, 0x00, 0x00, // RTP ts 65536
            0x00, 0x00, 0x00, 0x0A, // packets 10
            0x00, 0x00, 0x03, 0xE8, // octets 1000
            0x00, 0x00, 0x00, 0x07, // block SSRC 7
            0x40, 0xFF, 0xFF, 0xFE, // fraction 64, cumulative -2
            0x00, 0x02, 0x00, 0x05, // ext highest seq: 2 cycles, seq 5
            0x00, 0x00, 0x00, 0x10, // jitter 16
            0x00, 0x01, 0x80, 0x00, // LSR
            0x00, 0x00, 0x80, 0x00, // DLSR 0.5 s
        ];
        let Some(Ok(RtcpPacket::SenderReport(p))) = RtcpCompound::new(&sr).next() else {
            panic!("expected an SR");
        };
        assert_eq!(p.ssrc, Ssrc(42));
        assert_eq!(
            p.info,
            SenderInfo {
                ntp_time: 0xE800_0001_8000_0000,
                rtp_time: 65536,
                packet_count: 10,
                octet_count: 1000
            }
        );
        let blocks: Vec<_> = p.blocks.collect();
        assert_eq!(
            blocks,
            vec![ReportBlock {
                ssrc: Ssrc(7),
                fraction_lost: 64,
                cumulative_lost: -2,
                ext_highest_seq: 0x0002_0005,
                jitter: 16,
                lsr: 0x0001_8000,
                dlsr: 0x8000
            }]
        );
        let mut out = [0u8; 52];
        let n = write_sr(&mut out, Ssrc(42), &p.info, &blocks).expect("fits");
        assert_eq!(&out[..n], &sr[..]);
    }

    /// Short bodies, too many blocks and short buffers are errors.
    #[test]
    fn sr_rr_errors() {
        // RR with RC=1 but no block.
        let rr = [0x81, 201, 0, 1, 0, 0, 0, 1];
        assert!(matches!(
            RtcpCompound::new(&rr).next(),
            Some(Err(RtcpError::Malformed { pt: 201, .. }))
        ));
        let block = ReportBlock {
            ssrc: Ssrc(1),
            fraction_lost: 0,
            cumulative_lost: 1 << 30,
            ext_highest_seq: 0,
            jitter: 0,
            lsr: 0,
            dlsr: 0,
        };
        let mut buf = [0u8; 1500];
        assert!(matches!(
            write_rr(&mut buf, Ssrc(1), &[block; 32]),
            Err(WriteError::TooMany { max: 31, .. })
        ));
        assert_eq!(
            write_rr(&mut buf[..31], Ssrc(1), &[block]),
            Err(WriteError::BufferTooShort { need: 32, have: 31 })
        );
        // Cumulative loss beyond 24 bits is clamped.
        let n = write_rr(&mut buf, Ssrc(1), &[block]).expect("fits");
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = RtcpCompound::new(&buf[..n]).next() else {
            panic!("expected an RR");
        };
        assert_eq!(rr.blocks.map(|b| b.cumulative_lost).next(), Some(0x7F_FFFF));
    }

    fn block() -> impl Strategy<Value = ReportBlock> {
        (any::<u32>(), any::<u8>(), -0x80_0000i32..=0x7F_FFFF, any::<[u32; 4]>()).prop_map(
            |(ssrc, fraction_lost, cumulative_lost, [e, j, l, d])| ReportBlock {
                ssrc: Ssrc(ssrc),
                fraction_lost,
                cumulative_lost,
                ext_highest_seq: e,
                jitter: j,
                lsr: l,
                dlsr: d,
            },
        )
    }

    proptest! {
        /// parse(write(SR)) gives back the sender, sender info and blocks.
        #[test]
        fn sr_round_trip(
            sender in any::<u32>(), ntp in any::<u64>(), rtp in any::<u32>(), pc in any::<u32>(),
            oc in any::<u32>(), blocks in proptest::collection::vec(block(), 0..=31),
        ) {
            let info = SenderInfo { ntp_time: ntp, rtp_time: rtp, packet_count: pc, octet_count: oc };
            let mut buf = [0u8; 1500];
            let n = write_sr(&mut buf, Ssrc(sender), &info, &blocks).expect("fits");
            let mut it = RtcpCompound::new(&buf[..n]);
            let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else {
                return Err(TestCaseError::fail("not an SR"));
            };
            prop_assert!(it.next().is_none());
            prop_assert_eq!(sr.ssrc, Ssrc(sender));
            prop_assert_eq!(sr.info, info);
            prop_assert_eq!(sr.blocks.collect::<Vec<_>>(), blocks);
        }

        /// parse(write(RR)) gives back the sender and blocks.
        #[test]
        fn rr_round_trip(sender in any::<u32>(), blocks in proptest::collection::vec(block(), 0..=31)) {
            let mut buf = [0u8; 1500];
            let n = write_rr(&mut buf, Ssrc(sender), &blocks).expect("fits");
            let Some(Ok(RtcpPacket::ReceiverReport(rr))) = RtcpCompound::new(&buf[..n]).next() else {
                return Err(TestCaseError::fail("not an RR"));
            };
            prop_assert_eq!(rr.ssrc, Ssrc(sender));
            prop_assert_eq!(rr.blocks.collect::<Vec<_>>(), blocks);
        }
    }
}
