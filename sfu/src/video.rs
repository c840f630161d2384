//! Per-source video state and per-packet classification (media.md §3.1): which encoding,
//! spatial and temporal layer a packet belongs to, whether it starts a keyframe or a
//! switching point, its picture ID / TL0PICIDX / AV1 frame number, the layer heights learnt
//! from the bitstream, and the measured bitrate of every layer.
//!
//! Classification happens once per received packet; the result ([`Classified`]) is shared by
//! every receiver's projection.

use std::time::Instant;

use crate::bitrate::{LayerId, LayerTable};
use crate::codec::av1_dd::{self, DependencyDescriptor, FrameDependencyStructure};
use crate::codec::{h264, vp8, vp9};
use crate::negotiated::Codec;
use crate::projection::{self, Av1Dti, PacketMeta};

/// Temporal layers assumed per encoding (JVB always assumes three, §3.1).
pub const TEMPORAL_LAYERS: u8 = 3;

/// What one video source's bitstream told us so far.
#[derive(Debug)]
pub struct VideoState {
    pub codec: Option<projection::Codec>,
    pub encodings: u8,
    /// Spatial layers (1 for simulcast / non-SVC).
    pub spatial: u8,
    pub layers: LayerTable,
    /// Frame height per encoding (simulcast) or per spatial layer (SVC); 0 = unknown.
    pub heights: [u16; 4],
    /// Latest AV1 template structure, replaced by every keyframe that carries one.
    pub av1_structure: Option<FrameDependencyStructure>,
    /// Set when heights or layering changed (triggers a reallocation).
    pub layering_changed: bool,
    /// Bit `i`: the height at index `i` of [`VideoState::heights`] grew since the last
    /// allocation took note ([`VideoState::take_grown`]): the sender raised its resolution, and
    /// a receiver allocated that encoding under a height limit may now be over it.
    pub grown: u8,
    /// K-SVC (L2T*_KEY, L3T*_KEY as Chrome sends AV1 and VP9 SVC): the upper spatial layers
    /// depend on the lower ones only in keyframe pictures, so a receiver of spatial layer `s`
    /// gets only that layer's frames. Learnt from the AV1 template structure.
    pub ksvc: bool,
}

impl VideoState {
    pub fn new(encodings: u8) -> Self {
        let encodings = encodings.clamp(1, 4);
        let mut heights = [0u16; 4];
        for (i, h) in heights.iter_mut().enumerate().take(usize::from(encodings)) {
            // JVB's initial guess: 180, 360, 720, … until the bitstream tells (§3.1).
            *h = 180u16 << i;
        }
        Self {
            codec: None,
            encodings,
            spatial: 1,
            layers: LayerTable::new(encodings, 1, TEMPORAL_LAYERS),
            heights,
            av1_structure: None,
            layering_changed: false,
            grown: 0,
            ksvc: false,
        }
    }

    /// The bitrate of `id` for the allocator: what a receiver of that layer is sent. With
    /// full SVC and simulcast that is the layer with every lower layer
    /// ([`LayerTable::bitrate_bps`]); in K-SVC a spatial layer's delta frames need no lower
    /// spatial layer and the projection forwards only the target layer's frames, so the lower
    /// spatial layers are not counted (counting them asked the estimate for ~30 % more before
    /// 720p could be chosen).
    pub fn layer_bitrate_bps(&mut self, now: Instant, id: LayerId) -> u64 {
        let with_lower = self.layers.bitrate_bps(now, id);
        if !self.ksvc || id.spatial == 0 {
            return with_lower;
        }
        let below = LayerId {
            spatial: id.spatial - 1,
            ..id
        };
        with_lower.saturating_sub(self.layers.bitrate_bps(now, below))
    }

    /// Whether `id` is being sent (JVB: its bitrate, with what it depends on, is non-zero).
    pub fn layer_active(&mut self, now: Instant, id: LayerId) -> bool {
        self.layer_bitrate_bps(now, id) > 0
    }

    /// Whether simulcast encoding `e`'s height grew since the last [`VideoState::take_grown`]
    /// (always false for SVC, whose heights are per spatial layer).
    pub fn encoding_grew(&self, e: u8) -> bool {
        self.spatial <= 1 && e < 8 && self.grown & (1 << e) != 0
    }

    /// Clears the grown bits (after an allocation used them).
    pub fn take_grown(&mut self) -> u8 {
        std::mem::take(&mut self.grown)
    }

    fn set_spatial(&mut self, spatial: u8) {
        let spatial = spatial.clamp(1, 4);
        if spatial != self.spatial {
            self.spatial = spatial;
            self.layers = LayerTable::new(self.encodings, spatial, TEMPORAL_LAYERS);
            self.layering_changed = true;
        }
    }

    fn set_height(&mut self, index: usize, height: u16) {
        if let Some(h) = self.heights.get_mut(index) {
            if *h != height && height > 0 {
                if height > *h {
                    self.grown |= 1 << index;
                }
                *h = height;
                self.layering_changed = true;
            }
        }
    }

    /// The height of a layer: per encoding for simulcast, per spatial layer for SVC.
    pub fn height_of(&self, id: LayerId) -> u16 {
        let i = if self.spatial > 1 { id.spatial } else { id.encoding };
        self.heights.get(usize::from(i)).copied().unwrap_or(0)
    }
}

/// Where a height learnt from a keyframe's structure (AV1 dependency descriptor, VP9 scalability
/// structure) goes in [`VideoState::heights`]: per spatial layer for SVC, per encoding for
/// simulcast. Chrome attaches a dependency descriptor to each VP8/AV1 simulcast stream, each
/// describing one spatial layer (its own size): indexing those by spatial id wrote every
/// encoding's height into slot 0, so the allocator saw encoding 0 as 180p, 360p or 720p
/// depending on whose keyframe came last.
fn height_index(encoding: u8, sid: u8, spatial_layers: u8) -> usize {
    if spatial_layers > 1 {
        usize::from(sid)
    } else {
        usize::from(encoding)
    }
}

/// Codec facts about one packet, computed once and used by every receiver.
#[derive(Debug, Clone)]
pub struct Classified {
    pub meta: PacketMeta,
    pub layer: LayerId,
    pub vp8: Option<vp8::Vp8Descriptor>,
    pub vp9: Option<vp9::Vp9Descriptor>,
    /// The parsed dependency descriptor (AV1), without any attached structure.
    pub dd: Option<DependencyDescriptor>,
}

/// Why a packet could not be classified (a counted drop).
pub type ClassifyError = &'static str;

/// Classify one packet of `state`'s source. `encoding` is the simulcast index from the SSRC;
/// `payload` the RTP payload; `dd_ext` the AV1 dependency-descriptor extension, if any.
#[allow(clippy::too_many_arguments)] // plain packet facts
pub fn classify(
    now: Instant,
    state: &mut VideoState,
    codec: Codec,
    encoding: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: &[u8],
    dd_ext: Option<&[u8]>,
) -> Result<Classified, ClassifyError> {
    let mut meta = PacketMeta {
        encoding,
        seq,
        ts,
        marker,
        end_of_frame: marker,
        ..PacketMeta::default()
    };
    let mut out = Classified {
        meta,
        layer: LayerId {
            encoding,
            spatial: 0,
            temporal: 0,
        },
        vp8: None,
        vp9: None,
        dd: None,
    };
    // The dependency descriptor wins whatever the payload type (§3.1).
    if let Some(ext) = dd_ext {
        let dd = match av1_dd::parse(ext, state.av1_structure.as_ref()) {
            Ok(dd) => dd,
            Err(_) => return Err("av1_dd_unusable"),
        };
        // Kept on the descriptor too: receivers need it re-sent with the keyframe.
        if let Some(s) = dd.attached_structure.clone() {
            let spatial = s.max_spatial_id() + 1;
            for sid in 0..spatial {
                if let Some((_, h)) = s.resolution(sid) {
                    state.set_height(height_index(encoding, sid, spatial), h);
                }
            }
            state.set_spatial(spatial);
            let ksvc = is_ksvc(&s);
            if ksvc != state.ksvc {
                state.ksvc = ksvc;
                state.layering_changed = true;
            }
            state.av1_structure = Some(s);
            meta.keyframe = dd.start_of_frame;
        }
        let switch = dd
            .frame
            .dtis
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == av1_dd::Dti::Switch)
            .fold(0u32, |m, (i, _)| m | (1 << i));
        meta.spatial = dd.frame.spatial_id;
        meta.temporal = dd.frame.temporal_id;
        meta.start_of_frame = dd.start_of_frame;
        meta.end_of_frame = dd.end_of_frame;
        meta.frame_number = Some(dd.frame_number);
        meta.av1 = Some(
            Av1Dti {
                present: dd.present_decode_targets(),
                switch,
                ..Av1Dti::default()
            }
            .with_refs(&dd.frame.fdiffs),
        );
        state.codec.get_or_insert(projection::Codec::Av1);
        out.dd = Some(dd);
    } else {
        match codec {
            Codec::Vp8 => {
                let d = vp8::parse(payload).map_err(|_| "malformed_vp8")?;
                meta.start_of_frame = d.start_of_frame;
                meta.keyframe = d.keyframe;
                meta.temporal = d.tid.unwrap_or(0);
                meta.switching_point = d.layer_sync || d.tid.unwrap_or(0) == 0;
                meta.picture_id = d.picture_id;
                meta.tl0picidx = d.tl0picidx;
                if let Some(size) = d.frame_size.filter(|_| d.keyframe) {
                    state.set_height(usize::from(encoding), size.height);
                }
                let projectable = d.is_projectable();
                state.codec.get_or_insert(if projectable {
                    projection::Codec::Vp8
                } else {
                    projection::Codec::Generic
                });
                out.vp8 = Some(d);
            }
            Codec::Vp9 => {
                let d = vp9::parse(payload).map_err(|_| "malformed_vp9")?;
                meta.start_of_frame = d.start_of_frame;
                meta.end_of_frame = d.end_of_frame;
                meta.keyframe = d.is_keyframe();
                meta.spatial = d.sid();
                meta.temporal = d.tid();
                meta.switching_point = d.is_switching_up_point() || d.tid() == 0;
                meta.spatial_switching_point = d.is_spatial_switch_point();
                meta.picture_id = d.picture_id;
                meta.tl0picidx = d.tl0picidx;
                if let Some(ss) = d.ss.as_ref() {
                    for (sid, &(_, h)) in ss.resolutions().iter().enumerate() {
                        let sid = u8::try_from(sid).unwrap_or(u8::MAX);
                        state.set_height(height_index(encoding, sid, ss.spatial_layers), h);
                    }
                    state.set_spatial(ss.spatial_layers);
                }
                state.codec.get_or_insert(projection::Codec::Vp9);
                out.vp9 = Some(d);
            }
            Codec::H264 => {
                meta.keyframe = h264::is_keyframe(payload).unwrap_or(false);
                meta.start_of_frame = meta.keyframe;
                state.codec.get_or_insert(projection::Codec::Generic);
            }
            _ => {
                state.codec.get_or_insert(projection::Codec::Generic);
            }
        }
    }
    out.layer = LayerId {
        encoding,
        spatial: meta.spatial.min(state.spatial.saturating_sub(1)),
        temporal: meta.temporal.min(TEMPORAL_LAYERS - 1),
    };
    out.meta = meta;
    state.layers.add(now, out.layer, payload.len());
    Ok(out)
}

/// K-SVC: the top decode target (highest spatial and temporal layer) leaves out some frame of
/// a lower spatial layer, i.e. lower layers are only referenced in keyframe pictures. In full
/// SVC (L3T3) every lower-layer frame is needed by the top target.
fn is_ksvc(s: &FrameDependencyStructure) -> bool {
    let top_s = s.max_spatial_id();
    let top_t = s.templates.iter().map(|t| t.temporal_id).max().unwrap_or(0);
    let Some(top) = s.decode_target_for(top_s, top_t) else {
        return false;
    };
    top_s > 0
        && s.templates
            .iter()
            .any(|t| t.spatial_id < top_s && t.dtis.get(top) == Some(&av1_dd::Dti::NotPresent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::av1_dd::{Dti, FrameTemplate};

    /// An L3T1 structure: one template per spatial layer with a key template for S0. `ksvc`:
    /// the delta frames of S0/S1 are not in the upper decode targets (L3T1_KEY); otherwise every
    /// target contains the lower layers (full SVC, L3T1).
    fn l3t1(ksvc: bool) -> FrameDependencyStructure {
        let d = |s: &str| -> Vec<Dti> {
            s.chars()
                .map(|c| match c {
                    'S' => Dti::Switch,
                    'R' => Dti::Required,
                    _ => Dti::NotPresent,
                })
                .collect()
        };
        let tpl = |s: u8, dtis: &str| FrameTemplate {
            spatial_id: s,
            temporal_id: 0,
            dtis: d(dtis),
            fdiffs: vec![],
            chain_diffs: vec![],
        };
        let templates = if ksvc {
            vec![tpl(0, "SSS"), tpl(0, "S--"), tpl(1, "-S-"), tpl(2, "--S")]
        } else {
            vec![tpl(0, "SRR"), tpl(0, "SRR"), tpl(1, "-SR"), tpl(2, "--S")]
        };
        FrameDependencyStructure {
            decode_target_count: 3,
            templates,
            resolutions: vec![(320, 180), (640, 360), (1280, 720)],
            ..Default::default()
        }
    }

    /// Chrome's simulcast with dependency descriptors (VP8 or AV1): each encoding's keyframe
    /// carries a one-layer structure with that encoding's size; the heights are per encoding.
    /// An L3T1 structure (SVC in one encoding) still gives per-spatial-layer heights.
    #[test]
    fn dd_heights_are_per_encoding_for_simulcast() {
        let t0 = Instant::now();
        let mut v = VideoState::new(3);
        let one_layer = |w: u16, h: u16| {
            let mut s = l3t1(false);
            s.templates.retain(|t| t.spatial_id == 0);
            s.decode_target_count = 1;
            for t in s.templates.iter_mut() {
                t.dtis.truncate(1);
            }
            s.resolutions = vec![(w, h)];
            s
        };
        let keyframe = |s: FrameDependencyStructure| {
            let dd = DependencyDescriptor {
                start_of_frame: true,
                end_of_frame: true,
                attached_structure: Some(s),
                ..Default::default()
            };
            let mut buf = [0u8; 64];
            let n = av1_dd::write(&dd, None, &mut buf).expect("dd");
            buf[..n].to_vec()
        };
        // Keyframes in the order 2, 0, 1 (the last one used to win slot 0).
        for (e, (w, h)) in [(2u8, (1280, 720)), (0, (320, 180)), (1, (640, 360))] {
            let ext = keyframe(one_layer(w, h));
            classify(t0, &mut v, Codec::Vp8, e, 1, 0, true, &[0x10, 0, 0], Some(&ext)).expect("classified");
        }
        assert_eq!(v.heights[..3], [180, 360, 720]);
        assert_eq!(v.spatial, 1);
        let mut svc = VideoState::new(1);
        let ext = keyframe(l3t1(false));
        classify(t0, &mut svc, Codec::Av1, 0, 1, 0, true, &[0x10, 0, 0], Some(&ext)).expect("classified");
        assert_eq!((svc.spatial, svc.heights[..3].to_vec()), (3, vec![180, 360, 720]));
    }

    #[test]
    fn ksvc_is_told_from_the_templates() {
        assert!(is_ksvc(&l3t1(true)));
        assert!(!is_ksvc(&l3t1(false)));
        let mut one_layer = l3t1(false);
        one_layer.templates.retain(|t| t.spatial_id == 0);
        one_layer.decode_target_count = 1;
        assert!(!is_ksvc(&one_layer));
    }

    /// The allocator's bitrate of a K-SVC spatial layer is that layer's own (what the
    /// projection forwards), with full SVC it includes the lower layers.
    #[test]
    fn ksvc_layer_bitrate_excludes_lower_spatial_layers() {
        for ksvc in [true, false] {
            let t0 = Instant::now();
            let mut v = VideoState::new(3);
            v.set_spatial(3);
            v.ksvc = is_ksvc(&l3t1(ksvc));
            // 1 s of S0 100 kbps, S1 300 kbps, S2 600 kbps, temporal layer 0 only.
            for ms in 0..1000u64 {
                let now = t0 + std::time::Duration::from_millis(ms);
                for (s, bytes) in [(0u8, 12_usize), (1, 37), (2, 75)] {
                    v.layers.add(
                        now,
                        LayerId {
                            encoding: 0,
                            spatial: s,
                            temporal: 0,
                        },
                        bytes,
                    );
                }
            }
            let now = t0 + std::time::Duration::from_millis(1000);
            let bps = |v: &mut VideoState, s: u8| {
                v.layer_bitrate_bps(
                    now,
                    LayerId {
                        encoding: 0,
                        spatial: s,
                        temporal: 0,
                    },
                )
            };
            let (s0, s1, s2) = (bps(&mut v, 0), bps(&mut v, 1), bps(&mut v, 2));
            assert!(s0 > 80_000 && s0 < 120_000, "{s0}");
            if ksvc {
                assert!(s1 > 250_000 && s1 < 350_000, "{s1}");
                assert!(s2 > 500_000 && s2 < 700_000, "{s2}");
            } else {
                assert!(s1 > 350_000 && s1 < 450_000, "{s1}");
                assert!(s2 > 900_000 && s2 < 1_100_000, "{s2}");
            }
            assert!(v.layer_active(now, LayerId::new(0, 2, 0)));
        }
    }
}
