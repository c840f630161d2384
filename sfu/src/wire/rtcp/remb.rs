//! Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03 §2.2): a PSFB
//! application-layer feedback (FMT 15) whose FCI starts with "REMB".

use super::{feedback, malformed, write_feedback, RtcpError, RtcpHeader, SsrcList, FMT_AFB, PT_PSFB};
use crate::id::Ssrc;
use crate::wire::{be32, WriteError};

const ID: &[u8; 4] = b"REMB";
/// The mantissa has 18 bits.
const MANTISSA_BITS: u32 = 18;

/// Whether a PSFB FMT 15 body (after the common header) carries REMB.
pub(super) fn is_remb(body: &[u8]) -> bool {
    body.get(8..12) == Some(&ID[..])
}

/// A REMB (PT 206, FMT 15, "REMB").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remb<'a> {
    /// Who estimates.
    pub sender: Ssrc,
    /// Estimated maximum bitrate in bits per second: mantissa × 2^exp, saturating at
    /// `u64::MAX` for encodings that overflow.
    pub bitrate: u64,
    /// The sources the estimate applies to.
    pub ssrcs: SsrcList<'a>,
}

impl<'a> Remb<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender, _media, fci) = feedback(h, body)?;
        if fci.len() < 8 || fci[..4] != ID[..] {
            return Err(malformed(h, "REMB FCI shorter than its fixed part"));
        }
        let num = usize::from(fci[4]);
        let word = be32(fci, 4);
        let exp = (word >> MANTISSA_BITS) & 0x3F;
        let mantissa = u128::from(word & ((1 << MANTISSA_BITS) - 1));
        let bitrate = u64::try_from(mantissa << exp).unwrap_or(u64::MAX);
        let Some(list) = fci.get(8..8 + 4 * num) else {
            return Err(malformed(h, "REMB shorter than its SSRC count"));
        };
        Ok(Self {
            sender,
            bitrate,
            ssrcs: SsrcList::new(list),
        })
    }
}

/// Writes a REMB from `sender` for up to 255 `ssrcs`. The bitrate is rounded down to what 18
/// bits of mantissa can hold (relative error below 2^-17).
pub fn write_remb(buf: &mut [u8], sender: Ssrc, bitrate: u64, ssrcs: &[Ssrc]) -> Result<usize, WriteError> {
    if ssrcs.len() > 255 {
        return Err(WriteError::TooMany {
            what: "REMB SSRCs",
            count: ssrcs.len(),
            max: 255,
        });
    }
    let bits = u64::BITS - bitrate.leading_zeros();
    let exp = bits.saturating_sub(MANTISSA_BITS);
    let mantissa = (bitrate >> exp) as u32; // < 2^18 by the choice of exp
    let len = 20 + 4 * ssrcs.len();
    let b = write_feedback(buf, PT_PSFB, FMT_AFB, sender, Ssrc(0), len)?;
    b[12..16].copy_from_slice(ID);
    b[16] = ssrcs.len() as u8;
    let tail = (exp << MANTISSA_BITS) | mantissa;
    b[17..20].copy_from_slice(&tail.to_be_bytes()[1..]);
    for (i, s) in ssrcs.iter().enumerate() {
        b[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.0.to_be_bytes());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// A hand-made REMB: exp 2, mantissa 250000 -> 1 Mbit/s, one SSRC.
    #[test]
    fn parse_remb() {
        // 2 << 18 | 250000 = 0x0B D090
        let p = [
            0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x0B, 0xD0, 0x90, 0, 0, 0, 7,
        ];
        let Some(Ok(RtcpPacket::Remb(r))) = RtcpCompound::new(&p).next() else {
            panic!("expected REMB");
        };
        assert_eq!((r.sender, r.bitrate), (Ssrc(1), 1_000_000));
        assert_eq!(r.ssrcs.collect::<Vec<_>>(), vec![Ssrc(7)]);
        // Claiming 2 SSRCs with room for 1 is malformed.
        let mut bad = p;
        bad[16] = 2;
        assert!(RtcpCompound::new(&bad).next().is_some_and(|r| r.is_err()));
        // Another application-layer feedback is passed through raw.
        let mut other = p;
        other[12] = b'X';
        assert!(matches!(
            RtcpCompound::new(&other).next(),
            Some(Ok(RtcpPacket::Other(_)))
        ));
        // The maximum exponent saturates instead of overflowing.
        let mut huge = p;
        huge[17] = 0xFF;
        let Some(Ok(RtcpPacket::Remb(r))) = RtcpCompound::new(&huge).next() else {
            panic!("expected REMB");
        };
        assert_eq!(r.bitrate, u64::MAX);
    }

    proptest! {
        /// parse(write(REMB)) gives back the SSRCs, and the bitrate exactly when it fits 18
        /// bits of mantissa, else rounded down by less than 2^-17.
        #[test]
        fn remb_round_trip(
            sender in any::<u32>(), bitrate in any::<u64>(), small in 0u64..(1 << 18), shift in 0u32..40,
            ssrcs in proptest::collection::vec(any::<u32>(), 0..=255),
        ) {
            let ssrcs: Vec<Ssrc> = ssrcs.into_iter().map(Ssrc).collect();
            let mut buf = [0u8; 1100];
            for (rate, exact) in [(bitrate, false), (small << shift, true)] {
                let n = write_remb(&mut buf, Ssrc(sender), rate, &ssrcs).expect("fits");
                let Some(Ok(RtcpPacket::Remb(r))) = RtcpCompound::new(&buf[..n]).next() else {
                    return Err(TestCaseError::fail("not a REMB"));
                };
                prop_assert_eq!(r.sender, Ssrc(sender));
                prop_assert_eq!(r.ssrcs.collect::<Vec<_>>(), ssrcs.clone());
                if exact {
                    prop_assert_eq!(r.bitrate, rate);
                } else {
                    prop_assert!(r.bitrate <= rate);
                    prop_assert!(rate - r.bitrate <= rate >> 17);
                }
            }
        }
    }
}
