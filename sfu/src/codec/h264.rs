//! H.264 keyframe detection (RFC 6184): a packet starts an IDR picture or carries an SPS.
//!
//! Only single NAL unit packets, STAP-A (24) and FU-A (28, start fragments) are inspected.

use super::CodecError;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

fn is_key_nal(t: u8) -> bool {
    t == NAL_IDR || t == NAL_SPS
}

/// Whether the RTP payload contains (the start of) an IDR slice or an SPS.
pub fn is_keyframe(payload: &[u8]) -> Result<bool, CodecError> {
    let h = *payload.first().ok_or(CodecError::Truncated {
        what: "H.264 NAL header",
    })?;
    match h & 0x1f {
        STAP_A => {
            let mut rest = &payload[1..];
            while !rest.is_empty() {
                let len_bytes = rest.get(..2).ok_or(CodecError::Truncated {
                    what: "H.264 STAP-A size",
                })?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                let nal = rest.get(2..2 + len).ok_or(CodecError::Truncated {
                    what: "H.264 STAP-A NAL",
                })?;
                if nal.first().is_some_and(|&b| is_key_nal(b & 0x1f)) {
                    return Ok(true);
                }
                rest = &rest[2 + len..];
            }
            Ok(false)
        }
        FU_A => {
            let fu = *payload.get(1).ok_or(CodecError::Truncated {
                what: "H.264 FU header",
            })?;
            Ok(fu & 0x80 != 0 && is_key_nal(fu & 0x1f))
        }
        t => Ok(is_key_nal(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn detects_keyframes() {
        assert_eq!(is_keyframe(&[0x65, 0x88]), Ok(true)); // IDR
        assert_eq!(is_keyframe(&[0x41, 0x9a]), Ok(false)); // non-IDR slice
                                                           // STAP-A with SPS (2 bytes) and PPS (1 byte).
        assert_eq!(is_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]), Ok(true));
        assert_eq!(is_keyframe(&[0x78, 0x00, 0x01, 0x68]), Ok(false));
        assert!(is_keyframe(&[0x78, 0x00, 0x05, 0x67]).is_err());
        // FU-A start of IDR, FU-A middle of IDR.
        assert_eq!(is_keyframe(&[0x7c, 0x85, 0x00]), Ok(true));
        assert_eq!(is_keyframe(&[0x7c, 0x05, 0x00]), Ok(false));
        assert!(is_keyframe(&[]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = is_keyframe(&bytes);
        }
    }
}
