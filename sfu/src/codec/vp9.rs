//! VP9 RTP payload descriptor (RFC 9628 §4.2), flexible and non-flexible modes, with the
//! scalability structure (§4.2.1).
//!
//! ```text
//!       +-+-+-+-+-+-+-+-+
//!       |I|P|L|F|B|E|V|Z| (REQUIRED)
//!  I:   |M| PICTURE ID  | (+ EXTENDED PID if M)
//!  L:   |  T  |U|  S  |D|
//!       |   TL0PICIDX   | (L and F=0 only)
//!  P,F: | P_DIFF      |N| (up to 3 times)
//!  V:   | SS            |
//! ```
//! The scalability structure is kept inline: at most 8 spatial layers (the 3-bit N_S field's
//! limit) and the first [`MAX_PG`] picture-group entries (N_G may be up to 255; entries beyond
//! `MAX_PG` are validated but not stored, see [`ScalabilityStructure::pg_count`]).

use super::{out_buf, CodecError, FixedList};

/// Picture-group entries stored from a scalability structure.
pub const MAX_PG: usize = 16;

/// Layer indices (L=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Layer {
    /// TID, temporal layer (3 bits).
    pub tid: u8,
    /// U: switching-up point (a higher temporal layer may be added from this frame on).
    pub switching_up: bool,
    /// SID, spatial layer (3 bits).
    pub sid: u8,
    /// D: inter-layer dependency on the spatial layer below.
    pub inter_layer_dependency: bool,
}

/// One picture-group entry of a scalability structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PgEntry {
    /// Temporal layer of this picture.
    pub tid: u8,
    /// Switching-up point.
    pub switching_up: bool,
    /// Reference picture-ID differences (R of them, ≤ 3).
    pub p_diffs: FixedList<u8, 3>,
}

/// The VP9 scalability structure (V=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScalabilityStructure {
    /// N_S + 1: number of spatial layers (1..=8).
    pub spatial_layers: u8,
    /// Y: per-layer resolutions present.
    pub has_resolutions: bool,
    /// Width and height per spatial layer (valid for `..spatial_layers` when `has_resolutions`).
    pub resolutions: [(u16, u16); 8],
    /// G: picture-group description present.
    pub has_pg: bool,
    /// N_G as sent (may exceed the stored entries, see [`MAX_PG`]).
    pub pg_count: u8,
    /// The first `min(pg_count, MAX_PG)` entries.
    pub pg: FixedList<PgEntry, MAX_PG>,
}

impl ScalabilityStructure {
    /// Resolutions of the spatial layers (empty without Y).
    pub fn resolutions(&self) -> &[(u16, u16)] {
        if self.has_resolutions {
            &self.resolutions[..usize::from(self.spatial_layers.min(8))]
        } else {
            &[]
        }
    }

    fn encoded_len(&self) -> usize {
        let mut n = 1;
        if self.has_resolutions {
            n += 4 * usize::from(self.spatial_layers);
        }
        if self.has_pg {
            n += 1 + self.pg.iter().map(|e| 1 + e.p_diffs.len()).sum::<usize>();
        }
        n
    }
}

/// A parsed VP9 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    /// P: inter-picture predicted.
    pub inter_picture_predicted: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: start of a layer frame.
    pub start_of_frame: bool,
    /// E: end of a layer frame.
    pub end_of_frame: bool,
    /// Z: not used as reference by the upper spatial layers.
    pub not_upper_reference: bool,
    /// Picture ID (I=1), 7 or 15 bits, see `long_picture_id`.
    pub picture_id: Option<u16>,
    /// M: 15-bit picture ID.
    pub long_picture_id: bool,
    /// Layer indices (L=1).
    pub layer: Option<Vp9Layer>,
    /// TL0PICIDX (L=1, non-flexible).
    pub tl0picidx: Option<u8>,
    /// Reference differences (P=1, flexible); ≤ 3.
    pub p_diffs: FixedList<u8, 3>,
    /// Scalability structure (V=1).
    pub ss: Option<ScalabilityStructure>,
    /// Length of the descriptor; the VP9 payload starts here.
    pub descriptor_len: usize,
}

impl Vp9Descriptor {
    /// Spatial layer id (0 without layer indices).
    pub fn sid(&self) -> u8 {
        self.layer.map_or(0, |l| l.sid)
    }

    /// Temporal layer id (0 without layer indices).
    pub fn tid(&self) -> u8 {
        self.layer.map_or(0, |l| l.tid)
    }

    /// Start of a keyframe: B=1, P=0 and spatial layer 0.
    pub fn is_keyframe(&self) -> bool {
        self.start_of_frame && !self.inter_picture_predicted && self.sid() == 0
    }

    /// Temporal switching-up point (U=1).
    pub fn is_switching_up_point(&self) -> bool {
        self.layer.is_some_and(|l| l.switching_up)
    }

    /// A spatial layer can be switched up to at this layer frame: it is not inter-picture
    /// predicted (it depends at most on the lower spatial layer of the same picture).
    pub fn is_spatial_switch_point(&self) -> bool {
        !self.inter_picture_predicted
    }

    /// Picture ID modulus: 128 or 32768.
    pub fn picture_id_modulus(&self) -> u16 {
        if self.long_picture_id {
            0x8000
        } else {
            0x80
        }
    }

    /// Encoded length of the descriptor these fields describe.
    pub fn encoded_len(&self) -> usize {
        let mut n = 1;
        if self.picture_id.is_some() {
            n += if self.long_picture_id { 2 } else { 1 };
        }
        if self.layer.is_some() {
            n += 1;
            if !self.flexible {
                n += 1;
            }
        }
        if self.flexible && self.inter_picture_predicted {
            n += self.p_diffs.len();
        }
        if let Some(ss) = &self.ss {
            n += ss.encoded_len();
        }
        n
    }

    /// Writes the descriptor into `out`, returning its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, CodecError> {
        let len = self.encoded_len();
        let range = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(CodecError::OutOfRange { what })
            }
        };
        if self.layer.is_some() && !self.flexible && self.tl0picidx.is_none() {
            return Err(CodecError::Reserved {
                what: "VP9 TL0PICIDX missing in non-flexible mode",
            });
        }
        if self.flexible && self.inter_picture_predicted && self.p_diffs.is_empty() {
            return Err(CodecError::Reserved {
                what: "VP9 flexible P=1 without P_DIFF",
            });
        }
        let buf = out_buf(out, len)?;
        buf[0] = (u8::from(self.picture_id.is_some()) << 7)
            | (u8::from(self.inter_picture_predicted) << 6)
            | (u8::from(self.layer.is_some()) << 5)
            | (u8::from(self.flexible) << 4)
            | (u8::from(self.start_of_frame) << 3)
            | (u8::from(self.end_of_frame) << 2)
            | (u8::from(self.ss.is_some()) << 1)
            | u8::from(self.not_upper_reference);
        let mut i = 1;
        if let Some(pid) = self.picture_id {
            if self.long_picture_id {
                range(pid <= 0x7fff, "VP9 picture ID")?;
                buf[i] = 0x80 | (pid >> 8) as u8;
                buf[i + 1] = pid as u8;
                i += 2;
            } else {
                range(pid <= 0x7f, "VP9 picture ID")?;
                buf[i] = pid as u8;
                i += 1;
            }
        }
        if let Some(l) = self.layer {
            range(l.tid < 8 && l.sid < 8, "VP9 layer ids")?;
            buf[i] = (l.tid << 5) | (u8::from(l.switching_up) << 4) | (l.sid << 1) | u8::from(l.inter_layer_dependency);
            i += 1;
            if !self.flexible {
                buf[i] = self.tl0picidx.unwrap_or(0);
                i += 1;
            }
        }
        if self.flexible && self.inter_picture_predicted {
            let n = self.p_diffs.len();
            for (k, &d) in self.p_diffs.iter().enumerate() {
                range(d <= 0x7f, "VP9 P_DIFF")?;
                buf[i] = (d << 1) | u8::from(k + 1 < n);
                i += 1;
            }
        }
        if let Some(ss) = &self.ss {
            range((1..=8).contains(&ss.spatial_layers), "VP9 N_S")?;
            if ss.has_pg && usize::from(ss.pg_count) != ss.pg.len() {
                return Err(CodecError::OutOfRange {
                    what: "VP9 N_G beyond stored entries",
                });
            }
            buf[i] = ((ss.spatial_layers - 1) << 5) | (u8::from(ss.has_resolutions) << 4) | (u8::from(ss.has_pg) << 3);
            i += 1;
            for &(w, h) in ss.resolutions() {
                buf[i..i + 2].copy_from_slice(&w.to_be_bytes());
                buf[i + 2..i + 4].copy_from_slice(&h.to_be_bytes());
                i += 4;
            }
            if ss.has_pg {
                buf[i] = ss.pg_count;
                i += 1;
                for e in ss.pg.iter() {
                    range(e.tid < 8, "VP9 PG TID")?;
                    buf[i] = (e.tid << 5) | (u8::from(e.switching_up) << 4) | ((e.p_diffs.len() as u8) << 2);
                    i += 1;
                    for &d in e.p_diffs.iter() {
                        buf[i] = d;
                        i += 1;
                    }
                }
            }
        }
        debug_assert_eq!(i, len);
        Ok(len)
    }
}

/// Parses the VP9 payload descriptor at the start of an RTP payload.
pub fn parse(payload: &[u8]) -> Result<Vp9Descriptor, CodecError> {
    let mut i = 0;
    let mut next = |what: &'static str| {
        let b = payload.get(i).copied().ok_or(CodecError::Truncated { what });
        i += 1;
        b
    };
    let b0 = next("VP9 descriptor")?;
    let mut d = Vp9Descriptor {
        inter_picture_predicted: b0 & 0x40 != 0,
        flexible: b0 & 0x10 != 0,
        start_of_frame: b0 & 0x08 != 0,
        end_of_frame: b0 & 0x04 != 0,
        not_upper_reference: b0 & 0x01 != 0,
        ..Default::default()
    };
    if b0 & 0x80 != 0 {
        let p0 = next("VP9 picture ID")?;
        if p0 & 0x80 != 0 {
            let p1 = next("VP9 picture ID")?;
            d.long_picture_id = true;
            d.picture_id = Some((u16::from(p0 & 0x7f) << 8) | u16::from(p1));
        } else {
            d.picture_id = Some(u16::from(p0));
        }
    }
    if b0 & 0x20 != 0 {
        let l = next("VP9 layer indices")?;
        d.layer = Some(Vp9Layer {
            tid: l >> 5,
            switching_up: l & 0x10 != 0,
            sid: (l >> 1) & 0x07,
            inter_layer_dependency: l & 0x01 != 0,
        });
        if !d.flexible {
            d.tl0picidx = Some(next("VP9 TL0PICIDX")?);
        }
    }
    if d.flexible && d.inter_picture_predicted {
        loop {
            let b = next("VP9 P_DIFF")?;
            if !d.p_diffs.push(b >> 1) {
                return Err(CodecError::OutOfRange {
                    what: "VP9 P_DIFF count",
                });
            }
            if b & 0x01 == 0 {
                break;
            }
        }
    }
    if b0 & 0x02 != 0 {
        let h = next("VP9 scalability structure")?;
        let mut ss = ScalabilityStructure {
            spatial_layers: (h >> 5) + 1,
            has_resolutions: h & 0x10 != 0,
            has_pg: h & 0x08 != 0,
            ..Default::default()
        };
        if ss.has_resolutions {
            for k in 0..usize::from(ss.spatial_layers) {
                let w = u16::from_be_bytes([next("VP9 SS width")?, next("VP9 SS width")?]);
                let hh = u16::from_be_bytes([next("VP9 SS height")?, next("VP9 SS height")?]);
                ss.resolutions[k] = (w, hh);
            }
        }
        if ss.has_pg {
            ss.pg_count = next("VP9 N_G")?;
            for _ in 0..ss.pg_count {
                let e = next("VP9 PG entry")?;
                let mut entry = PgEntry {
                    tid: e >> 5,
                    switching_up: e & 0x10 != 0,
                    ..Default::default()
                };
                for _ in 0..(e >> 2) & 0x03 {
                    // At most 3 (2-bit R), so the push cannot fail.
                    entry.p_diffs.push(next("VP9 PG P_DIFF")?);
                }
                // Entries beyond MAX_PG are validated for length only (documented bound).
                ss.pg.push(entry);
            }
        }
        d.ss = Some(ss);
    }
    d.descriptor_len = i;
    Ok(d)
}

/// Rewrites picture ID and TL0PICIDX in place with the widths of `d` (7-bit IDs get
/// `picture_id % 128`). Absent fields are left alone. `d` must come from [`parse`] on this payload.
pub fn rewrite(payload: &mut [u8], d: &Vp9Descriptor, picture_id: u16, tl0picidx: u8) -> Result<(), CodecError> {
    let b0 = *payload.first().ok_or(CodecError::Mismatch)?;
    if payload.len() < d.descriptor_len
        || (b0 & 0x80 != 0) != d.picture_id.is_some()
        || (b0 & 0x20 != 0) != d.layer.is_some()
        || (b0 & 0x10 != 0) != d.flexible
    {
        return Err(CodecError::Mismatch);
    }
    let mut i = 1;
    if d.picture_id.is_some() {
        let long = payload.get(1).ok_or(CodecError::Mismatch)? & 0x80 != 0;
        if long != d.long_picture_id {
            return Err(CodecError::Mismatch);
        }
        if long {
            let p = (picture_id & 0x7fff).to_be_bytes();
            let f = payload.get_mut(1..3).ok_or(CodecError::Mismatch)?;
            f[0] = 0x80 | p[0];
            f[1] = p[1];
            i = 3;
        } else {
            payload[1] = (picture_id & 0x7f) as u8;
            i = 2;
        }
    }
    if d.tl0picidx.is_some() {
        *payload.get_mut(i + 1).ok_or(CodecError::Mismatch)? = tl0picidx;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keyframe, spatial layer 0 of an L3T3 non-flexible stream (as libvpx/Chrome send with
    /// `scalabilityMode: 'L3T3_KEY'` under VP9): I,L,B,V; 15-bit picture ID 0x0102; TID 0, U=0,
    /// SID 0, D 0; TL0PICIDX 5; SS with 3 layers 320x180/640x360/1280x720 and a 4-entry PG.
    const L3T3_KEYFRAME: [u8; 26] = [
        0xaa, // I=1 P=0 L=1 F=0 B=1 E=0 V=1 Z=0
        0x81, 0x02, // picture ID 0x0102
        0x00, // TID 0, U 0, SID 0, D 0
        0x05, // TL0PICIDX
        0x58, // N_S=2, Y=1, G=1
        0x01, 0x40, 0x00, 0xb4, // 320x180
        0x02, 0x80, 0x01, 0x68, // 640x360
        0x05, 0x00, 0x02, 0xd0, // 1280x720
        0x04, // N_G = 4
        0x04, 0x04, // TID 0, U 0, R 1, P_DIFF 4
        0x54, 0x01, // TID 2, U 1, R 1, P_DIFF 1
        0x34, 0x02, // TID 1, U 1, R 1, P_DIFF 2
        0x54, // TID 2, U 1, R 1 ... (P_DIFF follows)
    ];

    #[test]
    fn l3t3_keyframe_with_ss() {
        let mut pkt = L3T3_KEYFRAME.to_vec();
        pkt.push(0x01); // last P_DIFF
        pkt.extend_from_slice(&[0x82, 0x49, 0x83]); // VP9 payload
        let d = parse(&pkt).unwrap();
        assert_eq!(d.descriptor_len, 27);
        assert_eq!(d.picture_id, Some(0x0102));
        assert!(d.long_picture_id && !d.flexible && d.start_of_frame && !d.end_of_frame);
        assert_eq!(
            d.layer,
            Some(Vp9Layer {
                tid: 0,
                switching_up: false,
                sid: 0,
                inter_layer_dependency: false
            })
        );
        assert_eq!(d.tl0picidx, Some(5));
        assert!(d.is_keyframe());
        let ss = d.ss.unwrap();
        assert_eq!(ss.spatial_layers, 3);
        assert_eq!(ss.resolutions(), &[(320, 180), (640, 360), (1280, 720)]);
        assert_eq!(ss.pg_count, 4);
        let tids: Vec<u8> = ss.pg.iter().map(|e| e.tid).collect();
        assert_eq!(tids, [0, 2, 1, 2]);
        let diffs: Vec<&[u8]> = ss.pg.iter().map(|e| e.p_diffs.as_slice()).collect();
        assert_eq!(diffs, [&[4u8][..], &[1], &[2], &[1]]);
        // Re-encoding gives the same bytes.
        let mut out = [0u8; 64];
        let n = d.write(&mut out).unwrap();
        assert_eq!(&out[..n], &pkt[..27]);
        // The structure cut short anywhere is an error, never a panic.
        for cut in 0..27 {
            assert!(
                matches!(parse(&pkt[..cut]), Err(CodecError::Truncated { .. })),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn flexible_mode_p_diffs() {
        // I=1 (7-bit 0x11), P=1, L=1, F=1, E=1; TID 1 U 1 SID 2 D 1; P_DIFFs 1 (N=1), 3 (N=0).
        let p = [0xf4, 0x11, 0x35, 0x03, 0x06, 0xaa];
        let d = parse(&p).unwrap();
        assert!(d.flexible && d.inter_picture_predicted && d.end_of_frame && !d.start_of_frame);
        assert_eq!(d.picture_id, Some(0x11));
        assert_eq!(
            d.layer,
            Some(Vp9Layer {
                tid: 1,
                switching_up: true,
                sid: 2,
                inter_layer_dependency: true
            })
        );
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.p_diffs.as_slice(), &[1, 3]);
        assert_eq!(d.descriptor_len, 5);
        assert!(!d.is_keyframe() && d.is_switching_up_point());
        // A fourth P_DIFF is out of range.
        assert!(matches!(
            parse(&[0xf4, 0x11, 0x35, 0x03, 0x03, 0x03, 0x06]),
            Err(CodecError::OutOfRange { .. })
        ));
    }

    #[test]
    fn rewrite_in_place() {
        let mut pkt = L3T3_KEYFRAME.to_vec();
        pkt.push(0x01);
        let d = parse(&pkt).unwrap();
        rewrite(&mut pkt, &d, 0xffff, 77).unwrap();
        let e = parse(&pkt).unwrap();
        assert_eq!(e.picture_id, Some(0x7fff));
        assert_eq!(e.tl0picidx, Some(77));
        assert_eq!(e.ss, d.ss);
        let mut short = [0x88, 0x05, 0x00];
        let d = parse(&short).unwrap();
        rewrite(&mut short, &d, 129, 1).unwrap();
        assert_eq!(short, [0x88, 0x01, 0x00]);
    }

    fn arb_pg() -> impl Strategy<Value = PgEntry> {
        (0u8..8, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..=3)).prop_map(|(tid, u, d)| PgEntry {
            tid,
            switching_up: u,
            // ≤ 3 items by construction.
            p_diffs: FixedList::from_slice(&d).expect("≤ 3"),
        })
    }

    fn arb_ss() -> impl Strategy<Value = ScalabilityStructure> {
        (
            1u8..=8,
            any::<bool>(),
            proptest::array::uniform8((any::<u16>(), any::<u16>())),
            proptest::option::of(proptest::collection::vec(arb_pg(), 0..=MAX_PG)),
        )
            .prop_map(|(n, y, res, pg)| {
                let mut resolutions = [(0, 0); 8];
                if y {
                    resolutions[..usize::from(n)].copy_from_slice(&res[..usize::from(n)]);
                }
                let list = pg.clone().unwrap_or_default();
                ScalabilityStructure {
                    spatial_layers: n,
                    has_resolutions: y,
                    resolutions,
                    has_pg: pg.is_some(),
                    pg_count: list.len() as u8,
                    pg: FixedList::from_slice(&list).expect("≤ MAX_PG"),
                }
            })
    }

    prop_compose! {
        fn arb_descriptor()(
            i in proptest::option::of(any::<bool>()), pid in any::<u16>(), p in any::<bool>(),
            layer in proptest::option::of((0u8..8, any::<bool>(), 0u8..8, any::<bool>())),
            f in any::<bool>(), b in any::<bool>(), e in any::<bool>(), z in any::<bool>(),
            tl0 in any::<u8>(), diffs in proptest::collection::vec(0u8..128, 1..=3),
            ss in proptest::option::of(arb_ss()),
        ) -> Vp9Descriptor {
            Vp9Descriptor {
                inter_picture_predicted: p,
                flexible: f,
                start_of_frame: b,
                end_of_frame: e,
                not_upper_reference: z,
                picture_id: i.map(|long| if long { pid & 0x7fff } else { pid & 0x7f }),
                long_picture_id: i.unwrap_or(false),
                layer: layer.map(|(tid, u, sid, d)| Vp9Layer { tid, switching_up: u, sid, inter_layer_dependency: d }),
                tl0picidx: if layer.is_some() && !f { Some(tl0) } else { None },
                p_diffs: if f && p { FixedList::from_slice(&diffs).expect("≤ 3") } else { FixedList::new() },
                ss,
                descriptor_len: 0,
            }
        }
    }

    proptest! {
        #[test]
        fn write_parse_roundtrip(mut d in arb_descriptor()) {
            let mut buf = [0u8; 256];
            let n = d.write(&mut buf).unwrap();
            d.descriptor_len = n;
            let p = parse(&buf[..n]).unwrap();
            prop_assert_eq!(p, d);
            for cut in 0..n {
                prop_assert!(parse(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn rewrite_then_parse(d in arb_descriptor(), pic in any::<u16>(), tl0 in any::<u8>()) {
            let mut buf = [0u8; 256];
            let n = d.write(&mut buf).unwrap();
            let p = parse(&buf[..n]).unwrap();
            rewrite(&mut buf[..n], &p, pic, tl0).unwrap();
            let q = parse(&buf[..n]).unwrap();
            prop_assert_eq!(q.picture_id, p.picture_id.map(|_| pic % p.picture_id_modulus()));
            prop_assert_eq!(q.tl0picidx, p.tl0picidx.map(|_| tl0));
            prop_assert_eq!(q.ss, p.ss);
            prop_assert_eq!(q.layer, p.layer);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }
    }
}
