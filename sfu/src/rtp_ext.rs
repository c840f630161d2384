//! Header-extension stripping for forwarded RTP (media.md §9): everything is removed except
//! the extensions a receiver may use unchanged (audio level, video orientation, AV1 dependency
//! descriptor). Extension ids are not translated: Jicofo gives every participant the same
//! extmap ids, so the sender's ids are the receiver's.
//!
//! Works in place on the decrypted packet (elements compacted, payload moved down), so it adds
//! no allocation. The `wire` module's RTP view will replace the parsing here.

use bytes::BytesMut;

/// URIs of the header extensions kept on forwarded packets.
pub const KEPT_URIS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:3gpp:video-orientation",
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
];

/// The packet's header-extension block could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Remove every header extension whose id is not in `keep`. Packets without an extension block
/// are left alone; a block with an unknown profile is removed whole.
pub fn strip_extensions(pkt: &mut BytesMut, keep: &[u8]) -> Result<(), Malformed> {
    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
        return Err(Malformed);
    }
    if pkt[0] & 0x10 == 0 {
        return Ok(());
    }
    let ext_start = 12 + 4 * usize::from(pkt[0] & 0x0F);
    let body_start = ext_start + 4;
    if body_start > pkt.len() {
        return Err(Malformed);
    }
    let profile = u16::from_be_bytes([pkt[ext_start], pkt[ext_start + 1]]);
    let words = usize::from(u16::from_be_bytes([pkt[ext_start + 2], pkt[ext_start + 3]]));
    let body_end = body_start + 4 * words;
    if body_end > pkt.len() {
        return Err(Malformed);
    }
    let one_byte = profile == 0xBEDE;
    let two_byte = profile & 0xFFF0 == 0x1000;
    let mut w = body_start;
    if one_byte || two_byte {
        let mut r = body_start;
        while r < body_end {
            let b = pkt[r];
            if b == 0 {
                r += 1; // padding
                continue;
            }
            let (id, hdr, len) = if one_byte {
                if b >> 4 == 15 {
                    break; // reserved id: stop parsing (RFC 8285 §4.2)
                }
                (b >> 4, 1, usize::from(b & 0x0F) + 1)
            } else {
                let Some(&l) = pkt.get(r + 1) else {
                    return Err(Malformed);
                };
                (b, 2, usize::from(l))
            };
            let end = r + hdr + len;
            if end > body_end {
                return Err(Malformed);
            }
            if keep.contains(&id) {
                pkt.copy_within(r..end, w);
                w += end - r;
            }
            r = end;
        }
    }
    if w == body_start {
        // Nothing kept: drop the whole block and the X bit.
        pkt[0] &= !0x10;
        remove(pkt, ext_start, body_end);
    } else {
        while !(w - body_start).is_multiple_of(4) {
            pkt[w] = 0;
            w += 1;
        }
        let words = ((w - body_start) / 4) as u16;
        pkt[ext_start + 2..ext_start + 4].copy_from_slice(&words.to_be_bytes());
        remove(pkt, w, body_end);
    }
    Ok(())
}

fn remove(pkt: &mut BytesMut, a: usize, b: usize) {
    let len = pkt.len();
    pkt.copy_within(b..len, a);
    pkt.truncate(len - (b - a));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(profile: u16, elems: &[u8], payload: &[u8]) -> BytesMut {
        let mut p = vec![0x90, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        let mut body = elems.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p.extend_from_slice(payload);
        BytesMut::from(&p[..])
    }

    /// MID (id 4) and abs-send-time (id 3) go, audio level (id 1) stays; payload intact.
    #[test]
    fn one_byte_keeps_only_listed_ids() {
        // id 1 len 1 (audio level), id 3 len 3 (abs-send-time), padding, id 4 len 2 (mid "a0")
        let elems = [0x10, 0x85, 0x32, 1, 2, 3, 0, 0x41, b'a', b'0'];
        let mut p = packet(0xBEDE, &elems, b"payload");
        strip_extensions(&mut p, &[1]).expect("well formed");
        assert_eq!(&p[..], &packet(0xBEDE, &[0x10, 0x85], b"payload")[..]);
    }

    /// With nothing kept the block and the X bit disappear.
    #[test]
    fn nothing_kept_removes_block() {
        let mut p = packet(0xBEDE, &[0x41, b'a', b'0'], b"xyz");
        strip_extensions(&mut p, &[]).expect("well formed");
        let mut want = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        want.extend_from_slice(b"xyz");
        assert_eq!(&p[..], &want[..]);
        // No extensions at all: untouched.
        let before = p.clone();
        strip_extensions(&mut p, &[]).expect("well formed");
        assert_eq!(p, before);
    }

    /// Two-byte form (RFC 8285 §4.3) and unknown profiles.
    #[test]
    fn two_byte_and_unknown_profile() {
        let elems = [4, 2, b'a', b'0', 0, 1, 3, 7, 8, 9];
        let mut p = packet(0x1000, &elems, b"pl");
        strip_extensions(&mut p, &[1]).expect("well formed");
        assert_eq!(&p[..], &packet(0x1000, &[1, 3, 7, 8, 9], b"pl")[..]);
        let mut p = packet(0xABCD, &[1, 2, 3, 4], b"pl");
        strip_extensions(&mut p, &[1]).expect("well formed");
        assert_eq!(p[0] & 0x10, 0);
        assert_eq!(&p[12..], b"pl");
    }

    /// Lengths that run past the block or the packet are errors, never panics.
    #[test]
    fn malformed_blocks() {
        let mut p = packet(0xBEDE, &[0x1F, 1, 2], b"");
        assert_eq!(strip_extensions(&mut p, &[1]), Err(Malformed));
        let mut p = packet(0xBEDE, &[0x10, 1], b"");
        p[15] = 9; // 9 words claimed
        assert_eq!(strip_extensions(&mut p, &[1]), Err(Malformed));
        let full = packet(0x1000, &[1, 200, 0], b"abc");
        for n in 0..full.len() {
            let mut p = BytesMut::from(&full[..n]);
            let _ = strip_extensions(&mut p, &[1]);
        }
    }
}
