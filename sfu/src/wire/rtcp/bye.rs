//! Goodbye (RFC 3550 §6.6).

use super::{malformed, write_header, RtcpError, RtcpHeader, SsrcList, PT_BYE};
use crate::id::Ssrc;
use crate::wire::WriteError;

/// A BYE packet (PT 203).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bye<'a> {
    /// The sources leaving.
    pub ssrcs: SsrcList<'a>,
    /// The optional reason text (bytes as sent; RFC 3550 says UTF-8).
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let n = 4 * usize::from(h.count);
        let (Some(list), Some(rest)) = (body.get(..n), body.get(n..)) else {
            return Err(malformed(h, "BYE shorter than its source count"));
        };
        let reason = match rest.split_first() {
            // Only zero padding may follow the list when there is no reason; a zero length
            // byte reads as an empty reason, which is what it means.
            None => None,
            Some((&len, text)) => Some(
                text.get(..usize::from(len))
                    .ok_or_else(|| malformed(h, "BYE reason runs past the packet"))?,
            ),
        };
        Ok(Self {
            ssrcs: SsrcList::new(list),
            reason,
        })
    }
}

/// Writes a BYE for up to 31 sources with an optional reason of up to 255 bytes.
pub fn write_bye(buf: &mut [u8], ssrcs: &[Ssrc], reason: Option<&[u8]>) -> Result<usize, WriteError> {
    if ssrcs.len() > 31 {
        return Err(WriteError::TooMany {
            what: "BYE sources",
            count: ssrcs.len(),
            max: 31,
        });
    }
    let reason_len = match reason {
        Some(r) if r.len() > 255 => {
            return Err(WriteError::TooMany {
                what: "BYE reason bytes",
                count: r.len(),
                max: 255,
            })
        }
        Some(r) => 1 + r.len(),
        None => 0,
    };
    let len = (4 + 4 * ssrcs.len() + reason_len + 3) & !3;
    let b = write_header(buf, false, ssrcs.len() as u8, PT_BYE, len)?;
    for (i, s) in ssrcs.iter().enumerate() {
        b[4 + 4 * i..8 + 4 * i].copy_from_slice(&s.0.to_be_bytes());
    }
    let at = 4 + 4 * ssrcs.len();
    if let Some(r) = reason {
        b[at] = r.len() as u8;
        b[at + 1..at + 1 + r.len()].copy_from_slice(r);
    }
    b[at + reason_len..].fill(0);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// A hand-made BYE with two sources and a reason decodes; a reason past the end is an error.
    #[test]
    fn parse_bye() {
        let p = [0x82, 203, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 3, b'b', b'y', b'e'];
        let Some(Ok(RtcpPacket::Bye(bye))) = RtcpCompound::new(&p).next() else {
            panic!("expected BYE");
        };
        assert_eq!(bye.ssrcs.collect::<Vec<_>>(), vec![Ssrc(1), Ssrc(2)]);
        assert_eq!(bye.reason, Some(&b"bye"[..]));
        let bad = [0x81, 203, 0, 2, 0, 0, 0, 1, 9, b'b', b'y', b'e'];
        assert!(matches!(
            RtcpCompound::new(&bad).next(),
            Some(Err(RtcpError::Malformed { pt: 203, .. }))
        ));
    }

    proptest! {
        /// parse(write(BYE)) gives back sources and reason.
        #[test]
        fn bye_round_trip(
            ssrcs in proptest::collection::vec(any::<u32>(), 0..=31),
            reason in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
        ) {
            let ssrcs: Vec<Ssrc> = ssrcs.into_iter().map(Ssrc).collect();
            let mut buf = [0u8; 1500];
            let n = write_bye(&mut buf, &ssrcs, reason.as_deref()).expect("fits");
            let Some(Ok(RtcpPacket::Bye(bye))) = RtcpCompound::new(&buf[..n]).next() else {
                return Err(TestCaseError::fail("not a BYE"));
            };
            prop_assert_eq!(bye.ssrcs.collect::<Vec<_>>(), ssrcs);
            prop_assert_eq!(bye.reason, reason.as_deref());
        }
    }
}
