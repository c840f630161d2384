//! Minimal RTCP reading and writing for RTCP termination (media.md §5.4): just the packet
//! types this stage of the bridge acts on. The `wire` module will replace this.
//!
//! Readers are zero-copy iterators over a decrypted compound packet; writers fill a caller's
//! buffer and return the length written (0 if it does not fit).

/// RTCP packet types (RFC 3550, RFC 4585).
pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_PSFB: u8 = 206;
/// PSFB feedback message types.
pub const FMT_PLI: u8 = 1;
pub const FMT_FIR: u8 = 4;

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rtcp<'a> {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
    },
    ReceiverReport {
        ssrc: u32,
    },
    Pli {
        sender: u32,
        media: u32,
    },
    /// FIR: one entry per requested SSRC (RFC 5104 §4.3.1).
    Fir {
        sender: u32,
        entries: FirEntries<'a>,
    },
    /// Anything else (SDES, BYE, XR, NACK, TWCC, REMB, APP…): consumed.
    Other {
        pt: u8,
        fmt: u8,
    },
}

/// The FCI entries of a FIR, as `(ssrc, seq_nr)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntries<'a>(&'a [u8]);

impl<'a> Iterator for FirEntries<'a> {
    type Item = (u32, u8);
    fn next(&mut self) -> Option<(u32, u8)> {
        if self.0.len() < 8 {
            return None;
        }
        let e = (
            u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]),
            self.0[4],
        );
        self.0 = &self.0[8..];
        Some(e)
    }
}

/// Iterates the packets of a compound RTCP packet. Stops (yielding `Err(())` once) at the
/// first malformed header, as RFC 3550 §6.4 validity checks would reject the compound.
pub struct Compound<'a> {
    buf: &'a [u8],
    failed: bool,
}

pub fn parse_compound(buf: &[u8]) -> Compound<'_> {
    Compound { buf, failed: false }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Rtcp<'a>, ()>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let b = self.buf;
        if b.len() < 4 || b[0] >> 6 != 2 {
            self.failed = true;
            return Some(Err(()));
        }
        let len = (u16::from_be_bytes([b[2], b[3]]) as usize + 1) * 4;
        if len > b.len() {
            self.failed = true;
            return Some(Err(()));
        }
        let pkt = &b[..len];
        self.buf = &b[len..];
        let fmt = pkt[0] & 0x1F;
        let pt = pkt[1];
        let padding = pkt[0] & 0x20 != 0;
        let u32_at =
            |o: usize| -> Option<u32> { pkt.get(o..o + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])) };
        let body_end = if padding {
            let pad = pkt[len - 1] as usize;
            if pad == 0 || pad > len - 4 {
                self.failed = true;
                return Some(Err(()));
            }
            len - pad
        } else {
            len
        };
        let item = match (pt, fmt) {
            (PT_SR, _) => match (u32_at(4), u32_at(8), u32_at(12), u32_at(16)) {
                (Some(ssrc), Some(hi), Some(lo), Some(rtp_ts)) => Rtcp::SenderReport {
                    ssrc,
                    ntp: (u64::from(hi) << 32) | u64::from(lo),
                    rtp_ts,
                },
                _ => return self.fail(),
            },
            (PT_RR, _) => match u32_at(4) {
                Some(ssrc) => Rtcp::ReceiverReport { ssrc },
                None => return self.fail(),
            },
            (PT_PSFB, FMT_PLI) => match (u32_at(4), u32_at(8)) {
                (Some(sender), Some(media)) => Rtcp::Pli { sender, media },
                _ => return self.fail(),
            },
            (PT_PSFB, FMT_FIR) => match u32_at(4) {
                Some(sender) if body_end >= 12 => Rtcp::Fir {
                    sender,
                    entries: FirEntries(&pkt[12..body_end]),
                },
                _ => return self.fail(),
            },
            _ => Rtcp::Other { pt, fmt },
        };
        Some(Ok(item))
    }
}

impl Compound<'_> {
    fn fail<T>(&mut self) -> Option<Result<T, ()>> {
        self.failed = true;
        Some(Err(()))
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn header(buf: &mut [u8], count: u8, pt: u8, len_bytes: usize) {
    buf[0] = 0x80 | (count & 0x1F);
    buf[1] = pt;
    let words = (len_bytes / 4 - 1) as u16;
    buf[2..4].copy_from_slice(&words.to_be_bytes());
}

/// Writes a PLI (RFC 4585 §6.3.1). Returns 12, or 0 if `buf` is too small.
pub fn write_pli(buf: &mut [u8], sender: u32, media: u32) -> usize {
    if buf.len() < 12 {
        return 0;
    }
    header(buf, FMT_PLI, PT_PSFB, 12);
    put_u32(buf, 4, sender);
    put_u32(buf, 8, media);
    12
}

/// Writes a FIR for one SSRC (RFC 5104 §4.3.1). Returns 20, or 0 if `buf` is too small.
pub fn write_fir(buf: &mut [u8], sender: u32, media: u32, seq: u8) -> usize {
    if buf.len() < 20 {
        return 0;
    }
    header(buf, FMT_FIR, PT_PSFB, 20);
    put_u32(buf, 4, sender);
    put_u32(buf, 8, 0);
    put_u32(buf, 12, media);
    buf[16] = seq;
    buf[17..20].fill(0);
    20
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to 24-bit signed.
    pub cumulative_lost: i32,
    pub ext_highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

fn write_block(buf: &mut [u8], at: usize, b: &ReportBlock) {
    put_u32(buf, at, b.ssrc);
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF;
    put_u32(buf, at + 4, (u32::from(b.fraction_lost) << 24) | lost);
    put_u32(buf, at + 8, b.ext_highest_seq);
    put_u32(buf, at + 12, b.jitter);
    put_u32(buf, at + 16, b.lsr);
    put_u32(buf, at + 20, b.dlsr);
}

/// Writes an RR with up to 31 report blocks. Returns the length, or 0 if it does not fit.
pub fn write_rr(buf: &mut [u8], sender: u32, blocks: &[ReportBlock]) -> usize {
    let blocks = &blocks[..blocks.len().min(31)];
    let len = 8 + 24 * blocks.len();
    if buf.len() < len {
        return 0;
    }
    header(buf, blocks.len() as u8, PT_RR, len);
    put_u32(buf, 4, sender);
    for (i, b) in blocks.iter().enumerate() {
        write_block(buf, 8 + 24 * i, b);
    }
    len
}

/// Writes an SR without report blocks. Returns 28, or 0 if it does not fit.
pub fn write_sr(buf: &mut [u8], ssrc: u32, ntp: u64, rtp_ts: u32, packets: u32, octets: u32) -> usize {
    if buf.len() < 28 {
        return 0;
    }
    header(buf, 0, PT_SR, 28);
    put_u32(buf, 4, ssrc);
    put_u32(buf, 8, (ntp >> 32) as u32);
    put_u32(buf, 12, ntp as u32);
    put_u32(buf, 16, rtp_ts);
    put_u32(buf, 20, packets);
    put_u32(buf, 24, octets);
    28
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What we write, we read back: PLI, FIR, SR, RR in one compound.
    #[test]
    fn roundtrip_compound() {
        let mut buf = [0u8; 200];
        let mut n = write_sr(&mut buf, 11, 0x1122_3344_5566_7788, 99, 5, 500);
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 3,
            cumulative_lost: -2,
            ..Default::default()
        };
        n += write_rr(&mut buf[n..], 12, &[block]);
        n += write_pli(&mut buf[n..], 13, 14);
        n += write_fir(&mut buf[n..], 15, 16, 9);
        let got: Vec<_> = parse_compound(&buf[..n]).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Ok(Rtcp::SenderReport {
                ssrc: 11,
                ntp: 0x1122_3344_5566_7788,
                rtp_ts: 99
            })
        );
        assert_eq!(got[1], Ok(Rtcp::ReceiverReport { ssrc: 12 }));
        assert_eq!(got[2], Ok(Rtcp::Pli { sender: 13, media: 14 }));
        match got[3] {
            Ok(Rtcp::Fir { sender: 15, entries }) => {
                assert_eq!(entries.collect::<Vec<_>>(), vec![(16, 9)]);
            }
            ref other => panic!("expected FIR, got {other:?}"),
        }
        // Cumulative lost -2 is encoded as 24-bit two's complement.
        assert_eq!(&buf[28 + 8 + 5..28 + 8 + 8], &[0xFF, 0xFF, 0xFE]);
    }

    /// Truncated and lying compounds end in one error, never a panic.
    #[test]
    fn malformed_compound() {
        let mut buf = [0u8; 64];
        let n = write_pli(&mut buf, 1, 2);
        let mut bad = buf;
        bad[3] = 40; // length beyond the buffer
        let got: Vec<_> = parse_compound(&bad[..n]).collect();
        assert_eq!(got, vec![Err(())]);
        for cut in 0..n {
            let _ = parse_compound(&buf[..cut]).count();
        }
        assert_eq!(write_pli(&mut buf[..5], 1, 2), 0);
    }
}
