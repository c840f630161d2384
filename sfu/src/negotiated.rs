//! What one endpoint negotiated (Colibri2 `<media>`): payload types with their codec and
//! RTCP feedback, and header-extension ids by meaning. Looked up per packet, so the tables
//! are flat arrays indexed by payload type / extension id rather than maps.

use crate::control::{MediaDescription, MediaKind};

/// The codecs the bridge treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Opus,
    /// RFC 2198 redundancy (audio).
    Red,
    Vp8,
    Vp9,
    Av1,
    H264,
    /// RFC 4588 retransmission; `apt` names the payload type it carries.
    Rtx,
    /// Forward-error correction (ulpfec / flexfec): associated, never processed.
    Fec,
    Other,
}

impl Codec {
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "opus" => Codec::Opus,
            "red" => Codec::Red,
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "av1" | "av1x" => Codec::Av1,
            "h264" => Codec::H264,
            "rtx" => Codec::Rtx,
            "ulpfec" | "flexfec-03" | "flexfec" => Codec::Fec,
            _ => Codec::Other,
        }
    }
}

/// RTCP feedback a payload type negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    pub transport_cc: bool,
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
}

impl Feedback {
    /// From `rtcp-fb` type and subtype as signalled (`nack`/`pli`, `ccm`/`fir`, …).
    pub fn add(&mut self, fb_type: &str, subtype: Option<&str>) {
        match (fb_type, subtype.unwrap_or("")) {
            ("transport-cc", _) => self.transport_cc = true,
            ("nack", "") => self.nack = true,
            ("nack", "pli") => self.pli = true,
            ("ccm", "fir") => self.fir = true,
            ("goog-remb", _) => self.remb = true,
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtInfo {
    pub kind: MediaKind,
    pub codec: Codec,
    pub clock_rate: u32,
    /// For RTX: the payload type retransmitted.
    pub apt: Option<u8>,
    pub fb: Feedback,
}

/// Header-extension ids by meaning (media.md §9). 0 means not negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub audio_level: u8,
    pub transport_cc: u8,
    pub abs_send_time: u8,
    pub av1_dd: u8,
    pub video_orientation: u8,
    pub mid: u8,
}

pub const URI_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const URI_TRANSPORT_CC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const URI_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const URI_AV1_DD: &str = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
pub const URI_VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
pub const URI_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

impl ExtIds {
    fn set(&mut self, uri: &str, id: u8) {
        if id == 0 || id > 14 {
            // Only the one-byte form's ids are used by browsers; anything else is ignored.
            return;
        }
        let slot = match uri {
            URI_AUDIO_LEVEL => &mut self.audio_level,
            URI_TRANSPORT_CC => &mut self.transport_cc,
            URI_ABS_SEND_TIME => &mut self.abs_send_time,
            URI_AV1_DD => &mut self.av1_dd,
            URI_VIDEO_ORIENTATION => &mut self.video_orientation,
            URI_MID => &mut self.mid,
            _ => return,
        };
        *slot = id;
    }
}

/// Everything an endpoint negotiated, additive as in JVB (ids once signalled stay).
#[derive(Debug, Clone)]
pub struct Negotiated {
    pts: [Option<PtInfo>; 128],
    /// Original payload type → the RTX payload type carrying it (`u8::MAX` = none).
    rtx_for: [u8; 128],
    pub ext: ExtIds,
}

impl Default for Negotiated {
    fn default() -> Self {
        Self {
            pts: [None; 128],
            rtx_for: [u8::MAX; 128],
            ext: ExtIds::default(),
        }
    }
}

impl Negotiated {
    pub fn apply(&mut self, m: &MediaDescription) {
        for pt in &m.payload_types {
            let Some(slot) = self.pts.get_mut(usize::from(pt.pt)) else {
                continue;
            };
            let codec = Codec::from_name(&pt.name);
            let mut fb = Feedback::default();
            for (t, s) in &pt.feedback {
                fb.add(t, s.as_deref());
            }
            *slot = Some(PtInfo {
                kind: m.kind,
                codec,
                clock_rate: pt.clock_rate,
                apt: pt.apt,
                fb,
            });
            if let (Codec::Rtx, Some(apt)) = (codec, pt.apt) {
                if let Some(r) = self.rtx_for.get_mut(usize::from(apt)) {
                    *r = pt.pt;
                }
            }
        }
        for x in &m.extensions {
            self.ext.set(&x.uri, x.id);
        }
    }

    pub fn pt(&self, pt: u8) -> Option<&PtInfo> {
        self.pts.get(usize::from(pt)).and_then(Option::as_ref)
    }

    /// The RTX payload type that carries `pt`, if negotiated.
    pub fn rtx_pt(&self, pt: u8) -> Option<u8> {
        self.rtx_for.get(usize::from(pt)).copied().filter(|p| *p != u8::MAX)
    }

    /// Whether any video payload type negotiated transport-cc (and the extension has an id).
    pub fn transport_cc(&self) -> bool {
        self.ext.transport_cc != 0 && self.pts.iter().flatten().any(|p| p.fb.transport_cc)
    }

    /// A video payload type for padding-only packets (any negotiated video codec).
    pub fn padding_pt(&self) -> Option<u8> {
        (0u8..128).find(|pt| {
            self.pt(*pt).is_some_and(|p| {
                p.kind == MediaKind::Video && matches!(p.codec, Codec::Vp8 | Codec::Vp9 | Codec::Av1 | Codec::H264)
            })
        })
    }

    /// Clock rate of a payload type, or the usual rate of the media kind.
    pub fn clock_rate(&self, pt: u8, fallback_kind: Option<MediaKind>) -> u32 {
        match self.pt(pt) {
            Some(p) if p.clock_rate > 0 => p.clock_rate,
            Some(p) => default_rate(p.kind),
            None => fallback_kind.map_or(90_000, default_rate),
        }
    }
}

fn default_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{PayloadType, RtpExtension};

    fn pt(pt: u8, name: &str, rate: u32, apt: Option<u8>, fb: &[(&str, Option<&str>)]) -> PayloadType {
        PayloadType {
            pt,
            name: name.into(),
            clock_rate: rate,
            apt,
            feedback: fb.iter().map(|(t, s)| (t.to_string(), s.map(str::to_string))).collect(),
        }
    }

    #[test]
    fn tables_from_jicofo_media() {
        let mut n = Negotiated::default();
        n.apply(&MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![
                pt(
                    100,
                    "VP8",
                    90_000,
                    None,
                    &[
                        ("ccm", Some("fir")),
                        ("nack", None),
                        ("nack", Some("pli")),
                        ("transport-cc", None),
                    ],
                ),
                pt(96, "rtx", 90_000, Some(100), &[]),
                pt(41, "AV1", 90_000, None, &[]),
            ],
            extensions: vec![
                RtpExtension {
                    id: 5,
                    uri: URI_TRANSPORT_CC.into(),
                },
                RtpExtension {
                    id: 11,
                    uri: URI_AV1_DD.into(),
                },
                RtpExtension {
                    id: 99,
                    uri: URI_MID.into(),
                },
            ],
        });
        let vp8 = n.pt(100).expect("VP8 was signalled");
        assert_eq!(vp8.codec, Codec::Vp8);
        assert!(vp8.fb.nack && vp8.fb.pli && vp8.fb.fir && vp8.fb.transport_cc && !vp8.fb.remb);
        assert_eq!(n.rtx_pt(100), Some(96));
        assert_eq!(n.rtx_pt(41), None);
        assert_eq!(n.pt(96).map(|p| p.apt), Some(Some(100)));
        assert_eq!(n.ext.transport_cc, 5);
        assert_eq!(n.ext.av1_dd, 11);
        assert_eq!(n.ext.mid, 0, "two-byte ids are ignored");
        assert!(n.transport_cc());
        assert!(n.pt(127).is_none());
        assert!(
            n.pt(200).is_none(),
            "out-of-range payload types are absent, not a panic"
        );
    }
}
