//! Full intra request (RFC 5104 §4.3.1).

use super::{feedback, malformed, write_feedback, RtcpError, RtcpHeader, FMT_FIR, PT_PSFB};
use crate::id::Ssrc;
use crate::wire::{be32, WriteError};

/// One FIR FCI entry: the source asked for a keyframe and the request's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirEntry {
    /// The media source that should send a keyframe.
    pub ssrc: Ssrc,
    /// Command sequence number; a repeat with the same number is a retransmission.
    pub seq: u8,
}

/// Iterator over FIR entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirEntries<'a> {
    data: &'a [u8],
}

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        let (e, rest) = self.data.split_first_chunk::<8>()?;
        self.data = rest;
        Some(FirEntry {
            ssrc: Ssrc(be32(e, 0)),
            seq: e[4],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() / 8;
        (n, Some(n))
    }
}

impl ExactSizeIterator for FirEntries<'_> {}

/// A FIR (PT 206, FMT 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fir<'a> {
    /// Who asks.
    pub sender: Ssrc,
    /// The header's media SSRC; RFC 5104 says 0, the targets are in the entries.
    pub media: Ssrc,
    /// At least one entry.
    pub entries: FirEntries<'a>,
}

impl<'a> Fir<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender, media, fci) = feedback(h, body)?;
        if fci.is_empty() || !fci.len().is_multiple_of(8) {
            return Err(malformed(h, "FIR FCI is not a non-empty list of 8-byte entries"));
        }
        Ok(Self {
            sender,
            media,
            entries: FirEntries { data: fci },
        })
    }
}

/// Writes a FIR from `sender` asking `media` for a keyframe with command sequence number
/// `seq` (the header's media SSRC is 0, RFC 5104 §4.3.1.2); always 20 bytes.
pub fn write_fir(buf: &mut [u8], sender: Ssrc, media: Ssrc, seq: u8) -> Result<usize, WriteError> {
    let b = write_feedback(buf, PT_PSFB, FMT_FIR, sender, Ssrc(0), 20)?;
    b[12..16].copy_from_slice(&media.0.to_be_bytes());
    b[16] = seq;
    b[17..20].fill(0);
    Ok(20)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// A FIR with two entries decodes; an FCI of 4 bytes is malformed.
    #[test]
    fn parse_fir() {
        let p = [
            0x84, 206, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 7, 0, 0, 0, 0, 0, 0, 6, 8, 0, 0, 0,
        ];
        let Some(Ok(RtcpPacket::Fir(fir))) = RtcpCompound::new(&p).next() else {
            panic!("expected FIR");
        };
        assert_eq!((fir.sender, fir.media), (Ssrc(1), Ssrc(0)));
        assert_eq!(
            fir.entries.collect::<Vec<_>>(),
            vec![FirEntry { ssrc: Ssrc(5), seq: 7 }, FirEntry { ssrc: Ssrc(6), seq: 8 }]
        );
        let bad = [0x84, 206, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
        assert!(matches!(
            RtcpCompound::new(&bad).next(),
            Some(Err(RtcpError::Malformed { pt: 206, fmt: 4, .. }))
        ));
    }

    proptest! {
        /// parse(write(FIR)) gives back sender and the one entry.
        #[test]
        fn fir_round_trip(sender in any::<u32>(), media in any::<u32>(), seq in any::<u8>()) {
            let mut buf = [0u8; 20];
            let n = write_fir(&mut buf, Ssrc(sender), Ssrc(media), seq).expect("fits");
            let Some(Ok(RtcpPacket::Fir(fir))) = RtcpCompound::new(&buf[..n]).next() else {
                return Err(TestCaseError::fail("not a FIR"));
            };
            prop_assert_eq!((fir.sender, fir.media), (Ssrc(sender), Ssrc(0)));
            prop_assert_eq!(fir.entries.collect::<Vec<_>>(), vec![FirEntry { ssrc: Ssrc(media), seq }]);
        }
    }
}
