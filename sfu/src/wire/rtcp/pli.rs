//! Picture loss indication (RFC 4585 §6.3.1).

use super::{feedback, write_feedback, RtcpError, RtcpHeader, FMT_PLI, PT_PSFB};
use crate::id::Ssrc;
use crate::wire::WriteError;

/// A PLI (PT 206, FMT 1). It has no FCI; any bytes after the SSRCs are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pli {
    /// Who asks.
    pub sender: Ssrc,
    /// The media source that should send a keyframe.
    pub media: Ssrc,
}

impl Pli {
    pub(super) fn parse(h: RtcpHeader, body: &[u8]) -> Result<Self, RtcpError> {
        let (sender, media, _) = feedback(h, body)?;
        Ok(Self { sender, media })
    }
}

/// Writes a PLI from `sender` about `media`; always 12 bytes.
pub fn write_pli(buf: &mut [u8], sender: Ssrc, media: Ssrc) -> Result<usize, WriteError> {
    write_feedback(buf, PT_PSFB, FMT_PLI, sender, media, 12)?;
    Ok(12)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    /// The exact PLI bytes Chrome sends (RFC 4585 §6.1 header, length 2).
    #[test]
    fn pli_bytes() {
        let mut buf = [0u8; 12];
        assert_eq!(write_pli(&mut buf, Ssrc(0x01020304), Ssrc(0x0A0B0C0D)), Ok(12));
        assert_eq!(buf, [0x81, 206, 0, 2, 1, 2, 3, 4, 10, 11, 12, 13]);
        assert!(write_pli(&mut buf[..11], Ssrc(1), Ssrc(2)).is_err());
        assert!(matches!(
            RtcpCompound::new(&[0x81, 206, 0, 1, 1, 2, 3, 4]).next(),
            Some(Err(RtcpError::Malformed { pt: 206, fmt: 1, .. }))
        ));
    }

    proptest! {
        /// parse(write(PLI)) == PLI.
        #[test]
        fn pli_round_trip(sender in any::<u32>(), media in any::<u32>()) {
            let mut buf = [0u8; 12];
            let n = write_pli(&mut buf, Ssrc(sender), Ssrc(media)).expect("fits");
            let got = RtcpCompound::new(&buf[..n]).next();
            let want = Pli { sender: Ssrc(sender), media: Ssrc(media) };
            prop_assert!(matches!(got, Some(Ok(RtcpPacket::Pli(p))) if p == want));
        }
    }
}
