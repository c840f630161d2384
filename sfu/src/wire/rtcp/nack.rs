//! Generic NACK (RFC 4585 §6.2.1).

use super::{feedback, malformed, write_feedback, RtcpError, RtcpHeader, FMT_NACK, PT_RTPFB};
use crate::id::Ssrc;
use crate::wire::rtp::seq_delta;
use crate::wire::{be16, WriteError};

/// One NACK FCI entry: a lost packet id and a bitmask of the 16 packets after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NackPair {
    /// PID: a lost sequence number.
    pub pid: u16,
    /// BLP: bit i set means `pid + i + 1` is lost too.
    pub blp: u16,
}

impl NackPair {
    /// The lost sequence numbers this entry names, in order (`pid` first).
    pub fn seqs(self) -> impl Iterator<Item = u16> {
        std::iter::once(self.pid).chain(
            (0..16u16)
                .filter(move |i| self.blp & (1 << i) != 0)
                .map(move |i| self.pid.wrapping_add(i + 1)),
        )
    }

    /// Packs sequence numbers, ascending in 16-bit serial order, into as few entries as that
    /// order allows. Repeats are skipped; a number not ahead of the current entry's PID
    /// starts a new entry. Does not allocate.
    pub fn pack<I: IntoIterator<Item = u16>>(seqs: I) -> NackPacker<I::IntoIter> {
        NackPacker {
            seqs: seqs.into_iter(),
            current: None,
        }
    }
}

/// Iterator returned by [`NackPair::pack`].
#[derive(Clone, Debug)]
pub struct NackPacker<I> {
    seqs: I,
    current: Option<NackPair>,
}

impl<I: Iterator<Item = u16>> Iterator for NackPacker<I> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        for seq in self.seqs.by_ref() {
            let Some(cur) = self.current.as_mut() else {
                self.current = Some(NackPair { pid: seq, blp: 0 });
                continue;
            };
            match seq_delta(cur.pid, seq) {
                0 => {}
                d @ 1..=16 => cur.blp |= 1 << (d - 1),
                _ => return self.current.replace(NackPair { pid: seq, blp: 0 }),
            }
        }
        self.current.take()
    }
}

/// Iterator over the FCI entries of a NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NackPairs<'a> {
    data: &'a [u8],
}

impl Iterator for NackPairs<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        let (e, rest) = self.data.split_first_chunk::<4>()?;
        self.data = rest;
        Some(NackPair {
            pid: be16(e, 0),
            blp: be16(e, 2),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for NackPairs<'_> {}

/// A generic NACK (PT 205, FMT 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    /// Who lost packets.
    pub sender: Ssrc,
    /// The media source whose packets were lost.
    pub media: Ssrc,
    /// At least one entry.
    pub pairs: NackPairs<'a>,
}

impl<'a> Nack<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender, media, fci) = feedback(h, body)?;
        if fci.is_empty() || !fci.len().is_multiple_of(4) {
            return Err(malformed(h, "NACK FCI is not a non-empty list of 4-byte entries"));
        }
        Ok(Self {
            sender,
            media,
            pairs: NackPairs { data: fci },
        })
    }

    /// Every lost sequence number, entry by entry.
    pub fn lost_seqs(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs.clone().flat_map(NackPair::seqs)
    }
}

/// Writes a NACK from `sender` about `media` with the given entries (at least one; see
/// [`NackPair::pack`] to build them from sequence numbers).
pub fn write_nack<I: IntoIterator<Item = NackPair>>(
    buf: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    pairs: I,
) -> Result<usize, WriteError> {
    // Entries are written first (after room for the header), so an iterator works without
    // knowing its length; the header goes in at the end.
    let mut len = 12;
    for pair in pairs {
        let have = buf.len();
        let Some(dst) = buf.get_mut(len..len + 4) else {
            return Err(WriteError::BufferTooShort { need: len + 4, have });
        };
        dst[..2].copy_from_slice(&pair.pid.to_be_bytes());
        dst[2..].copy_from_slice(&pair.blp.to_be_bytes());
        len += 4;
    }
    if len == 12 {
        return Err(WriteError::Unencodable {
            what: "NACK without entries",
        });
    }
    write_feedback(buf, PT_RTPFB, FMT_NACK, sender, media, len)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// RFC 4585 §6.2.1 semantics: PID 100 with BLP 0b101 means 100, 101 and 103 are lost.
    #[test]
    fn parse_nack() {
        let p = [0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 100, 0, 0b101];
        let Some(Ok(RtcpPacket::Nack(n))) = RtcpCompound::new(&p).next() else {
            panic!("expected NACK");
        };
        assert_eq!((n.sender, n.media), (Ssrc(1), Ssrc(2)));
        assert_eq!(n.lost_seqs().collect::<Vec<_>>(), vec![100, 101, 103]);
        // Empty FCI is malformed; so is an FCI of 6 bytes.
        let empty = [0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(RtcpCompound::new(&empty).next().is_some_and(|r| r.is_err()));
    }

    /// Packing follows the wrap and starts a new entry beyond 16 or on going backwards.
    #[test]
    fn pack() {
        let pairs: Vec<_> = NackPair::pack([65534, 65535, 0, 15, 16, 16, 40, 39]).collect();
        assert_eq!(
            pairs,
            vec![
                NackPair { pid: 65534, blp: 0b11 },
                NackPair { pid: 15, blp: 0b1 },
                NackPair { pid: 40, blp: 0 },
                NackPair { pid: 39, blp: 0 },
            ]
        );
        let mut buf = [0u8; 64];
        assert!(write_nack(&mut buf, Ssrc(1), Ssrc(2), []).is_err());
        assert!(matches!(
            write_nack(&mut buf[..15], Ssrc(1), Ssrc(2), pairs.iter().copied()),
            Err(WriteError::BufferTooShort { need: 16, have: 15 })
        ));
    }

    proptest! {
        /// parse(write(NACK)) gives back the entries.
        #[test]
        fn nack_round_trip(
            sender in any::<u32>(), media in any::<u32>(),
            pairs in proptest::collection::vec(any::<(u16, u16)>(), 1..100),
        ) {
            let pairs: Vec<NackPair> = pairs.into_iter().map(|(pid, blp)| NackPair { pid, blp }).collect();
            let mut buf = [0u8; 1500];
            let n = write_nack(&mut buf, Ssrc(sender), Ssrc(media), pairs.iter().copied()).expect("fits");
            let Some(Ok(RtcpPacket::Nack(nack))) = RtcpCompound::new(&buf[..n]).next() else {
                return Err(TestCaseError::fail("not a NACK"));
            };
            prop_assert_eq!((nack.sender, nack.media), (Ssrc(sender), Ssrc(media)));
            prop_assert_eq!(nack.pairs.collect::<Vec<_>>(), pairs);
        }

        /// Packing a sorted set of lost numbers and reading it back gives the same set.
        #[test]
        fn pack_round_trip(start in any::<u16>(), gaps in proptest::collection::vec(1u16..40, 1..200)) {
            let mut seqs = vec![start];
            for g in gaps {
                let last = *seqs.last().expect("non-empty");
                seqs.push(last.wrapping_add(g));
            }
            let pairs: Vec<_> = NackPair::pack(seqs.iter().copied()).collect();
            let back: Vec<u16> = pairs.iter().flat_map(|p| p.seqs()).collect();
            prop_assert_eq!(back, seqs);
        }
    }
}
