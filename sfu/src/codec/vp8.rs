//! VP8 RTP payload descriptor (RFC 7741 §4.2) and the keyframe header (RFC 6386 §9.1).
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |X|R|N|S|R| PID | (REQUIRED)
//! +-+-+-+-+-+-+-+-+
//! |I|L|T|K| RSV   | (OPTIONAL, X=1)
//! +-+-+-+-+-+-+-+-+
//! |M| PictureID   | (OPTIONAL, I=1; M=1 adds a second byte: 15-bit picture ID)
//! +-+-+-+-+-+-+-+-+
//! |   TL0PICIDX   | (OPTIONAL, L=1)
//! +-+-+-+-+-+-+-+-+
//! |TID|Y| KEYIDX  | (OPTIONAL, T=1 or K=1)
//! +-+-+-+-+-+-+-+-+
//! ```
//! Reserved bits are ignored on receipt, as RFC 7741 requires.

use super::{out_buf, CodecError};

/// Width, height and upscaling of a VP8 keyframe (RFC 6386 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8FrameSize {
    /// Width in pixels (14 bits).
    pub width: u16,
    /// Height in pixels (14 bits).
    pub height: u16,
    /// Horizontal scale code (2 bits).
    pub horizontal_scale: u8,
    /// Vertical scale code (2 bits).
    pub vertical_scale: u8,
}

/// A parsed VP8 payload descriptor plus what the bridge derives from the first payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// X: the extension byte is present.
    pub extended: bool,
    /// N: the frame is not used as a reference.
    pub non_reference: bool,
    /// S: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: partition index (3 bits).
    pub partition_index: u8,
    /// Picture ID (I=1); 7 or 15 bits, see `long_picture_id`.
    pub picture_id: Option<u16>,
    /// M: the picture ID is 15 bits wide (two bytes).
    pub long_picture_id: bool,
    /// TL0PICIDX (L=1).
    pub tl0picidx: Option<u8>,
    /// TID (T=1), 2 bits.
    pub tid: Option<u8>,
    /// Y: layer sync (meaningful only with T=1).
    pub layer_sync: bool,
    /// KEYIDX (K=1), 5 bits.
    pub key_idx: Option<u8>,
    /// Length of the payload descriptor in bytes; the VP8 payload starts here.
    pub descriptor_len: usize,
    /// The packet starts a frame (S=1 and PID=0).
    pub start_of_frame: bool,
    /// Start of a frame whose frame tag has P=0.
    pub keyframe: bool,
    /// On keyframes whose first packet holds the 10-byte keyframe header: the frame size.
    pub frame_size: Option<Vp8FrameSize>,
}

impl Vp8Descriptor {
    /// Picture ID modulus: 128 for 7-bit IDs, 32768 for 15-bit ones.
    pub fn picture_id_modulus(&self) -> u16 {
        if self.long_picture_id {
            0x8000
        } else {
            0x80
        }
    }

    /// Whether the stream can be projected (picture ID and TL0PICIDX rewriting, temporal
    /// filtering): it carries a picture ID and a temporal layer index.
    pub fn is_projectable(&self) -> bool {
        self.picture_id.is_some() && self.tid.is_some()
    }

    /// Encoded length of the descriptor these fields describe.
    pub fn encoded_len(&self) -> usize {
        let mut n = 1;
        if self.has_extension_byte() {
            n += 1;
            if self.picture_id.is_some() {
                n += if self.long_picture_id { 2 } else { 1 };
            }
            if self.tl0picidx.is_some() {
                n += 1;
            }
            if self.tid.is_some() || self.key_idx.is_some() {
                n += 1;
            }
        }
        n
    }

    fn has_extension_byte(&self) -> bool {
        self.extended
            || self.picture_id.is_some()
            || self.tl0picidx.is_some()
            || self.tid.is_some()
            || self.key_idx.is_some()
    }

    /// Writes the payload descriptor (not the VP8 payload) into `out`; returns its length.
    /// Reserved bits are written as zero.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, CodecError> {
        let len = self.encoded_len();
        if self.partition_index > 7 {
            return Err(CodecError::OutOfRange { what: "VP8 PID" });
        }
        let buf = out_buf(out, len)?;
        let x = self.has_extension_byte();
        buf[0] = (u8::from(x) << 7)
            | (u8::from(self.non_reference) << 5)
            | (u8::from(self.start_of_partition) << 4)
            | self.partition_index;
        if !x {
            return Ok(len);
        }
        buf[1] = (u8::from(self.picture_id.is_some()) << 7)
            | (u8::from(self.tl0picidx.is_some()) << 6)
            | (u8::from(self.tid.is_some()) << 5)
            | (u8::from(self.key_idx.is_some()) << 4);
        let mut i = 2;
        if let Some(pid) = self.picture_id {
            if self.long_picture_id {
                if pid > 0x7fff {
                    return Err(CodecError::OutOfRange { what: "VP8 picture ID" });
                }
                buf[i] = 0x80 | (pid >> 8) as u8;
                buf[i + 1] = pid as u8;
                i += 2;
            } else {
                if pid > 0x7f {
                    return Err(CodecError::OutOfRange { what: "VP8 picture ID" });
                }
                buf[i] = pid as u8;
                i += 1;
            }
        }
        if let Some(t) = self.tl0picidx {
            buf[i] = t;
            i += 1;
        }
        if self.tid.is_some() || self.key_idx.is_some() {
            let tid = self.tid.unwrap_or(0);
            let key = self.key_idx.unwrap_or(0);
            if tid > 3 {
                return Err(CodecError::OutOfRange { what: "VP8 TID" });
            }
            if key > 31 {
                return Err(CodecError::OutOfRange { what: "VP8 KEYIDX" });
            }
            buf[i] = (tid << 6) | (u8::from(self.tid.is_some() && self.layer_sync) << 5) | key;
        }
        Ok(len)
    }
}

/// Parses the VP8 payload descriptor at the start of an RTP payload, and on the first packet of
/// a frame the frame tag (keyframe bit) and, for keyframes, the frame size.
pub fn parse(payload: &[u8]) -> Result<Vp8Descriptor, CodecError> {
    let b0 = *payload
        .first()
        .ok_or(CodecError::Truncated { what: "VP8 descriptor" })?;
    let mut d = Vp8Descriptor {
        extended: b0 & 0x80 != 0,
        non_reference: b0 & 0x20 != 0,
        start_of_partition: b0 & 0x10 != 0,
        partition_index: b0 & 0x07,
        ..Default::default()
    };
    let mut i = 1;
    let byte = |i: usize, what: &'static str| payload.get(i).copied().ok_or(CodecError::Truncated { what });
    if d.extended {
        let x = byte(i, "VP8 extension byte")?;
        i += 1;
        if x & 0x80 != 0 {
            let p0 = byte(i, "VP8 picture ID")?;
            i += 1;
            if p0 & 0x80 != 0 {
                let p1 = byte(i, "VP8 picture ID")?;
                i += 1;
                d.long_picture_id = true;
                d.picture_id = Some((u16::from(p0 & 0x7f) << 8) | u16::from(p1));
            } else {
                d.picture_id = Some(u16::from(p0));
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(byte(i, "VP8 TL0PICIDX")?);
            i += 1;
        }
        let t = x & 0x20 != 0;
        let k = x & 0x10 != 0;
        if t || k {
            let b = byte(i, "VP8 TID/KEYIDX")?;
            i += 1;
            if t {
                d.tid = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            if k {
                d.key_idx = Some(b & 0x1f);
            }
        }
    }
    d.descriptor_len = i;
    d.start_of_frame = d.start_of_partition && d.partition_index == 0;
    if d.start_of_frame {
        let body = &payload[i..];
        let tag = *body.first().ok_or(CodecError::Truncated { what: "VP8 frame tag" })?;
        d.keyframe = tag & 0x01 == 0;
        if d.keyframe {
            d.frame_size = keyframe_size(body);
        }
    }
    Ok(d)
}

/// The size from a keyframe header (3-byte frame tag, start code 9d 01 2a, two little-endian
/// 16-bit words of 2-bit scale and 14-bit size), or `None` if absent or malformed.
fn keyframe_size(body: &[u8]) -> Option<Vp8FrameSize> {
    let h = body.get(..10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]);
    let v = u16::from_le_bytes([h[8], h[9]]);
    Some(Vp8FrameSize {
        width: w & 0x3fff,
        height: v & 0x3fff,
        horizontal_scale: (w >> 14) as u8,
        vertical_scale: (v >> 14) as u8,
    })
}

/// Rewrites picture ID and TL0PICIDX in place, keeping the field widths of `d` (a 7-bit
/// picture ID gets `picture_id % 128`, a 15-bit one `picture_id % 32768`). Fields `d` lacks
/// are left alone. `d` must be the result of [`parse`] on this payload.
pub fn rewrite(payload: &mut [u8], d: &Vp8Descriptor, picture_id: u16, tl0picidx: u8) -> Result<(), CodecError> {
    if payload.len() < d.descriptor_len {
        return Err(CodecError::Mismatch);
    }
    if d.picture_id.is_none() && d.tl0picidx.is_none() {
        return Ok(());
    }
    if d.descriptor_len < 2 || payload[0] & 0x80 == 0 {
        return Err(CodecError::Mismatch);
    }
    // Re-check the layout bits so a descriptor from another packet cannot corrupt this one.
    let x = payload[1];
    if (x & 0x80 != 0) != d.picture_id.is_some() || (x & 0x40 != 0) != d.tl0picidx.is_some() {
        return Err(CodecError::Mismatch);
    }
    let need = 2
        + usize::from(x & 0x80 != 0) * (1 + usize::from(payload.get(2).is_some_and(|b| b & 0x80 != 0)))
        + usize::from(x & 0x40 != 0);
    if payload.len() < need {
        return Err(CodecError::Mismatch);
    }
    let mut i = 2;
    if d.picture_id.is_some() {
        let long = payload[i] & 0x80 != 0;
        if long != d.long_picture_id {
            return Err(CodecError::Mismatch);
        }
        if long {
            let p = picture_id & 0x7fff;
            payload[i] = 0x80 | (p >> 8) as u8;
            payload[i + 1] = p as u8;
            i += 2;
        } else {
            payload[i] = (picture_id & 0x7f) as u8;
            i += 1;
        }
    }
    if d.tl0picidx.is_some() {
        payload[i] = tl0picidx;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// First packet of a 640x360 keyframe as Chrome sends it: X=1,S=1; I,L,T set; 15-bit
    /// picture ID 0x1234; TL0PICIDX 7; TID 0, Y=1; then frame tag (P=0), start code, size.
    const KEYFRAME_640X360: [u8; 16] = [
        0x90, 0xe0, 0x92, 0x34, 0x07, 0x20, // descriptor (6 bytes)
        0x50, 0x42, 0x00, // frame tag: P=0 (keyframe), version 0, show_frame 1
        0x9d, 0x01, 0x2a, // start code
        0x80, 0x02, // width 640 (0x0280), scale 0
        0x68, 0x01, // height 360 (0x0168), scale 0
    ];

    #[test]
    fn keyframe_640x360() {
        let d = parse(&KEYFRAME_640X360).unwrap();
        assert!(d.extended && d.start_of_partition && d.start_of_frame && d.keyframe);
        assert_eq!(d.partition_index, 0);
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.long_picture_id);
        assert_eq!(d.tl0picidx, Some(7));
        assert_eq!(d.tid, Some(0));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, None);
        assert_eq!(d.descriptor_len, 6);
        assert_eq!(
            d.frame_size,
            Some(Vp8FrameSize {
                width: 640,
                height: 360,
                horizontal_scale: 0,
                vertical_scale: 0
            })
        );
        assert!(d.is_projectable());
    }

    #[test]
    fn delta_frame_and_continuation() {
        let mut p = KEYFRAME_640X360;
        p[6] |= 1; // P=1: interframe
        let d = parse(&p).unwrap();
        assert!(d.start_of_frame && !d.keyframe && d.frame_size.is_none());
        p[0] &= !0x10; // S=0: not a frame start, whatever follows
        let d = parse(&p).unwrap();
        assert!(!d.start_of_frame && !d.keyframe);
    }

    #[test]
    fn minimal_and_short_picture_id() {
        // X=0, S=1, PID=0, payload tag with P=1.
        let d = parse(&[0x10, 0x01]).unwrap();
        assert_eq!(d.descriptor_len, 1);
        assert!(d.start_of_frame && !d.keyframe && d.picture_id.is_none());
        // 7-bit picture ID 0x55, KEYIDX 9 only (K without T).
        let d = parse(&[0x80, 0x90, 0x55, 0x09, 0xff]).unwrap();
        assert_eq!(d.picture_id, Some(0x55));
        assert!(!d.long_picture_id);
        assert_eq!(d.key_idx, Some(9));
        assert_eq!(d.tid, None);
        assert_eq!(d.descriptor_len, 4);
    }

    #[test]
    fn truncated_inputs_are_errors() {
        assert!(matches!(parse(&[]), Err(CodecError::Truncated { .. })));
        for n in 1..6 {
            assert!(
                matches!(parse(&KEYFRAME_640X360[..n]), Err(CodecError::Truncated { .. })),
                "len {n}"
            );
        }
        // Descriptor complete, frame start, but no frame tag byte.
        assert!(matches!(
            parse(&KEYFRAME_640X360[..6]),
            Err(CodecError::Truncated { .. })
        ));
        // Keyframe with a cut header: still a keyframe, size unknown.
        let d = parse(&KEYFRAME_640X360[..12]).unwrap();
        assert!(d.keyframe && d.frame_size.is_none());
    }

    #[test]
    fn rewrite_keeps_widths() {
        let mut p = KEYFRAME_640X360;
        let d = parse(&p).unwrap();
        rewrite(&mut p, &d, 0x8001, 200).unwrap();
        let e = parse(&p).unwrap();
        assert_eq!(e.picture_id, Some(0x0001));
        assert_eq!(e.tl0picidx, Some(200));
        assert_eq!(&p[6..], &KEYFRAME_640X360[6..]);

        let mut q = [0x80, 0xc0, 0x55, 0x03, 0x01];
        let d = parse(&q).unwrap();
        rewrite(&mut q, &d, 300, 9).unwrap();
        assert_eq!(q, [0x80, 0xc0, (300 % 128) as u8, 9, 0x01]);

        // A descriptor from a differently laid out packet is refused.
        let mut r = [0x80, 0x40, 0x03, 0x01];
        assert_eq!(rewrite(&mut r, &d, 1, 1), Err(CodecError::Mismatch));
    }

    fn arb_descriptor() -> impl Strategy<Value = Vp8Descriptor> {
        (
            any::<bool>(),
            any::<bool>(),
            0u8..8,
            proptest::option::of(any::<bool>()),
            any::<u16>(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(0u8..4),
            any::<bool>(),
            proptest::option::of(0u8..32),
        )
            .prop_map(|(n, s, pid, picid_long, picid, tl0, tid, y, key)| Vp8Descriptor {
                extended: picid_long.is_some() || tl0.is_some() || tid.is_some() || key.is_some(),
                non_reference: n,
                start_of_partition: s,
                partition_index: pid,
                picture_id: picid_long.map(|long| if long { picid & 0x7fff } else { picid & 0x7f }),
                long_picture_id: picid_long.unwrap_or(false),
                tl0picidx: tl0,
                tid,
                layer_sync: tid.is_some() && y,
                key_idx: key,
                ..Default::default()
            })
    }

    proptest! {
        #[test]
        fn write_parse_roundtrip(d in arb_descriptor(), tail in proptest::collection::vec(any::<u8>(), 1..20)) {
            let mut buf = [0u8; 64];
            let n = d.write(&mut buf).unwrap();
            prop_assert_eq!(n, d.encoded_len());
            buf[n..n + tail.len()].copy_from_slice(&tail);
            let p = parse(&buf[..n + tail.len()]).unwrap();
            prop_assert_eq!(p.descriptor_len, n);
            let mut expect = d;
            expect.descriptor_len = n;
            expect.start_of_frame = p.start_of_partition && p.partition_index == 0;
            expect.keyframe = expect.start_of_frame && tail[0] & 1 == 0;
            expect.frame_size = p.frame_size;
            prop_assert_eq!(p, expect);
        }

        #[test]
        fn rewrite_then_parse(d in arb_descriptor(), pic in any::<u16>(), tl0 in any::<u8>()) {
            let mut buf = [0u8; 16];
            let n = d.write(&mut buf).unwrap();
            buf[n] = 1;
            let p = parse(&buf[..n + 1]).unwrap();
            rewrite(&mut buf[..n + 1], &p, pic, tl0).unwrap();
            let q = parse(&buf[..n + 1]).unwrap();
            prop_assert_eq!(q.picture_id, p.picture_id.map(|_| pic % p.picture_id_modulus()));
            prop_assert_eq!(q.tl0picidx, p.tl0picidx.map(|_| tl0));
            prop_assert_eq!(q.descriptor_len, p.descriptor_len);
            prop_assert_eq!(q.tid, p.tid);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn truncations_never_panic(cut in 0usize..16) {
            let _ = parse(&KEYFRAME_640X360[..cut]);
        }
    }
}
