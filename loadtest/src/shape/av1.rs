//! AV1 in L3T3_KEY as Chrome sends it under lib-jitsi-meet: one SSRC, three spatial layers
//! (320x180, 640x360, 1280x720) × three temporal layers, each layer frame described by the
//! dependency descriptor (AV1 RTP spec, appendix A). The key temporal unit carries the template
//! structure (15 templates, 9 decode targets, 3 chains, render resolutions) on its first packet;
//! every other packet carries the 3-byte mandatory descriptor.

use std::time::{Duration, Instant};

use super::{
    split_even, KeyframePolicy, OutPacket, RateModel, ShapeRng, FRAME_INTERVAL, MAX_PAYLOAD, TRACKING_LEN, TS_PER_FRAME,
};

/// URI of the dependency descriptor header extension (negotiate it with an id, send
/// [`OutPacket::dd`] as its body; it needs the two-byte header form when longer than 16 bytes).
pub const DD_EXTENSION_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// One L3T3_KEY template: spatial id, temporal id, DTI per decode target (`-` not present,
/// `D` discardable, `S` switch, `R` required), chain diffs, frame diffs. Decode target
/// `3 * s + t`; chain `s` protects decode targets of spatial layer `s`.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub spatial: u8,
    pub temporal: u8,
    pub dtis: &'static str,
    pub chain_diffs: [u8; 3],
    pub fdiffs: &'static [u8],
}

const fn tpl(spatial: u8, temporal: u8, dtis: &'static str, chain_diffs: [u8; 3], fdiffs: &'static [u8]) -> Template {
    Template {
        spatial,
        temporal,
        dtis,
        chain_diffs,
        fdiffs,
    }
}

/// The L3T3_KEY structure libwebrtc uses (`ScalabilityStructureL3T3Key`), sorted by
/// (spatial, temporal) as the descriptor requires. Per spatial layer the five templates are:
/// key/T0-after-key, T0, T1, T2 after T0, T2 after T1.
pub const L3T3_KEY: [Template; 15] = [
    tpl(0, 0, "SSSSSSSSS", [0, 0, 0], &[]),
    tpl(0, 0, "SSS------", [12, 11, 10], &[12]),
    tpl(0, 1, "-DS------", [6, 5, 4], &[6]),
    tpl(0, 2, "--D------", [3, 2, 1], &[3]),
    tpl(0, 2, "--D------", [9, 8, 7], &[3]),
    tpl(1, 0, "---SSSSSS", [1, 1, 1], &[1]),
    tpl(1, 0, "---SSS---", [1, 12, 11], &[12]),
    tpl(1, 1, "----DS---", [7, 6, 5], &[6]),
    tpl(1, 2, "-----D---", [4, 3, 2], &[3]),
    tpl(1, 2, "-----D---", [10, 9, 8], &[3]),
    tpl(2, 0, "------SSS", [2, 1, 1], &[1]),
    tpl(2, 0, "------SSS", [2, 1, 12], &[12]),
    tpl(2, 1, "-------DS", [8, 7, 6], &[6]),
    tpl(2, 2, "--------D", [5, 4, 3], &[3]),
    tpl(2, 2, "--------D", [11, 10, 9], &[3]),
];

/// Decode target → protecting chain.
const PROTECTED_BY: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];

/// Template index (within a spatial layer's five) per temporal unit after a key unit:
/// T0, T2 (after T0), T1, T2 (after T1).
const PATTERN_TEMPLATE: [usize; 4] = [1, 3, 2, 4];

/// OBU type of a frame OBU (header + tile group).
const OBU_FRAME: u8 = 6;

/// Bytes before [`OutPacket::tracking_offset`] on a frame's first packet: aggregation header,
/// OBU header with extension, shape tag (`PL`, spatial id, temporal id).
pub const FIRST_HEADER_LEN: usize = 1 + 2 + 4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Av1LayerConfig {
    pub width: u16,
    pub height: u16,
    /// Target bits per second of this spatial layer's own frames.
    pub bitrate: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Av1Config {
    /// Exactly three spatial layers, lowest first.
    pub layers: [Av1LayerConfig; 3],
    pub keyframes: KeyframePolicy,
}

impl Default for Av1Config {
    /// LJM caps the single L3T3_KEY encoding at `STANDARD_CODEC_SETTINGS.av1.maxBitratesVideo.high`
    /// = 1 Mbps for 720p (low 100 k, standard 300 k); split per spatial layer 100 k / 300 k / 600 k.
    fn default() -> Self {
        Self {
            layers: [
                Av1LayerConfig {
                    width: 320,
                    height: 180,
                    bitrate: 100_000,
                },
                Av1LayerConfig {
                    width: 640,
                    height: 360,
                    bitrate: 300_000,
                },
                Av1LayerConfig {
                    width: 1280,
                    height: 720,
                    bitrate: 600_000,
                },
            ],
            keyframes: KeyframePolicy::default(),
        }
    }
}

/// Sans-IO AV1 L3T3_KEY sender; same contract as [`super::vp8::Vp8Simulcast`].
#[derive(Debug, Clone)]
pub struct Av1Svc {
    rng: ShapeRng,
    cfg: Av1Config,
    rates: [RateModel; 3],
    template_id_offset: u8,
    frame_number: u16,
    ts_base: u32,
    since_key: Option<u64>,
    last_key_at: Option<Instant>,
    key_requested: bool,
    start: Option<Instant>,
    next_tu: u64,
}

impl Av1Svc {
    pub fn new(seed: u64, config: Av1Config) -> Self {
        let mut rng = ShapeRng::new(seed);
        let f = config.keyframes.factor;
        let rates = config.layers.map(|l| RateModel::new(l.bitrate, f));
        Self {
            template_id_offset: (rng.next_u64() % 64) as u8,
            frame_number: rng.next_u64() as u16,
            ts_base: rng.next_u64() as u32,
            rng,
            cfg: config,
            rates,
            since_key: None,
            last_key_at: None,
            key_requested: false,
            start: None,
            next_tu: 0,
        }
    }

    /// A PLI/FIR: the next temporal unit is a key unit (all spatial layers restart).
    pub fn request_keyframe(&mut self) {
        self.key_requested = true;
    }

    /// When the next temporal unit is due (`None` before the first poll: poll now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.start.map(|s| s + tu_offset(self.next_tu))
    }

    /// Append the packets of every temporal unit due by `now` (skipping if >200 ms behind).
    pub fn poll(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let due = (elapsed.as_nanos() / FRAME_INTERVAL.as_nanos()) as u64;
        if due > self.next_tu + 6 {
            self.next_tu = due;
        }
        while self.next_tu <= due {
            let index = self.next_tu;
            self.temporal_unit(index, start + tu_offset(index), out);
            self.next_tu += 1;
        }
    }

    fn temporal_unit(&mut self, index: u64, at: Instant, out: &mut Vec<OutPacket>) {
        let periodic = match (self.cfg.keyframes.interval, self.last_key_at) {
            (Some(iv), Some(last)) => at.saturating_duration_since(last) >= iv,
            _ => false,
        };
        let keyframe = self.since_key.is_none() || self.key_requested || periodic;
        let n = if keyframe {
            0
        } else {
            self.since_key.map_or(0, |n| n + 1)
        };
        self.since_key = Some(n);
        if keyframe {
            self.last_key_at = Some(at);
            self.key_requested = false;
        }
        let rtp_ts = self.ts_base.wrapping_add((index as u32).wrapping_mul(TS_PER_FRAME));
        for s in 0..3u8 {
            let within = if keyframe {
                0
            } else {
                PATTERN_TEMPLATE[(n % 4) as usize]
            };
            let t_index = usize::from(s) * 5 + within;
            let template = &L3T3_KEY[t_index];
            let tid = template.temporal;
            let min = FIRST_HEADER_LEN + TRACKING_LEN + 16;
            let size = self.rates[usize::from(s)].next_size(&mut self.rng, keyframe, n, min);
            let fnum = self.frame_number;
            self.frame_number = self.frame_number.wrapping_add(1);
            let template_id = ((t_index as u8) + self.template_id_offset) % 64;

            // One frame OBU (header with extension: temporal/spatial id), no size field: the
            // aggregation header's W=1 says it is the only element.
            let mut obu = vec![0u8; size - 1];
            obu[0] = (OBU_FRAME << 3) | 0x04;
            obu[1] = (tid << 5) | (s << 3);
            obu[2..4].copy_from_slice(b"PL");
            obu[4] = s;
            obu[5] = tid;
            self.rng.fill(&mut obu[6..]);

            let parts: Vec<usize> = split_even(obu.len(), MAX_PAYLOAD - 1).collect();
            let last = parts.len() - 1;
            let mut offset = 0;
            for (i, len) in parts.into_iter().enumerate() {
                let mut agg = 0x10; // W = 1
                if i > 0 {
                    agg |= 0x80; // Z: continues the previous packet's OBU
                }
                if i < last {
                    agg |= 0x40; // Y: continues in the next packet
                }
                if keyframe && s == 0 && i == 0 {
                    agg |= 0x08; // N: first packet of a coded video sequence
                }
                let mut payload = Vec::with_capacity(1 + len);
                payload.push(agg);
                payload.extend_from_slice(&obu[offset..offset + len]);
                offset += len;
                let structure = keyframe && s == 0 && i == 0;
                let dd = write_dd(
                    i == 0,
                    i == last,
                    template_id,
                    fnum,
                    structure.then_some((self.template_id_offset, &self.cfg.layers)),
                );
                let tracking_offset = if i == 0 { FIRST_HEADER_LEN } else { 1 };
                debug_assert!(payload.len() >= tracking_offset + TRACKING_LEN);
                out.push(OutPacket {
                    encoding: 0,
                    spatial: s,
                    temporal: tid,
                    keyframe,
                    rtp_ts,
                    marker: s == 2 && i == last,
                    payload,
                    tracking_offset,
                    dd,
                });
            }
        }
    }
}

fn tu_offset(index: u64) -> Duration {
    Duration::from_nanos((FRAME_INTERVAL.as_nanos() as u64).saturating_mul(index))
}

/// MSB-first bit writer for the descriptor.
struct Bits {
    out: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        for i in (0..bits).rev() {
            if self.used.is_multiple_of(8) {
                self.out.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            if let Some(b) = self.out.last_mut() {
                *b |= bit << (7 - self.used % 8);
            }
            self.used += 1;
        }
    }

    /// Non-symmetric unsigned encoding `ns(n)` of the AV1 spec (4.10.10).
    fn put_ns(&mut self, n: u32, v: u32) {
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        if v < m {
            self.put(v, w - 1);
        } else {
            let t = v + m;
            self.put(t >> 1, w - 1);
            self.put(t & 1, 1);
        }
    }
}

/// Write one dependency descriptor. With `structure`, the extended form carrying the L3T3_KEY
/// template structure (offset, render resolutions); otherwise the 3-byte mandatory form.
pub fn write_dd(
    start: bool,
    end: bool,
    template_id: u8,
    frame_number: u16,
    structure: Option<(u8, &[Av1LayerConfig; 3])>,
) -> Vec<u8> {
    let mut b = Bits {
        out: Vec::with_capacity(if structure.is_some() { 64 } else { 3 }),
        used: 0,
    };
    b.put(u32::from(start), 1);
    b.put(u32::from(end), 1);
    b.put(u32::from(template_id), 6);
    b.put(u32::from(frame_number), 16);
    let Some((offset, layers)) = structure else {
        return b.out;
    };
    // template_dependency_structure_present, active_decode_targets_present, custom dtis,
    // custom fdiffs, custom chains.
    b.put(0b10000, 5);
    b.put(u32::from(offset), 6);
    b.put(9 - 1, 5); // DtCnt - 1
    for (i, t) in L3T3_KEY.iter().enumerate() {
        let idc = match L3T3_KEY.get(i + 1) {
            None => 3,
            Some(n) if n.spatial == t.spatial && n.temporal == t.temporal => 0,
            Some(n) if n.spatial == t.spatial => 1,
            Some(_) => 2,
        };
        b.put(idc, 2);
    }
    for t in &L3T3_KEY {
        for c in t.dtis.bytes() {
            let dti = match c {
                b'D' => 1,
                b'S' => 2,
                b'R' => 3,
                _ => 0,
            };
            b.put(dti, 2);
        }
    }
    for t in &L3T3_KEY {
        for &f in t.fdiffs {
            b.put(1, 1);
            b.put(u32::from(f) - 1, 4);
        }
        b.put(0, 1);
    }
    b.put_ns(9 + 1, 3); // chain count
    for &c in &PROTECTED_BY {
        b.put_ns(3, u32::from(c));
    }
    for t in &L3T3_KEY {
        for &d in &t.chain_diffs {
            b.put(u32::from(d), 4);
        }
    }
    b.put(1, 1); // resolutions present
    for l in layers {
        b.put(u32::from(l.width) - 1, 16);
        b.put(u32::from(l.height) - 1, 16);
    }
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, secs: u64) -> Vec<OutPacket> {
        let t0 = Instant::now();
        let mut s = Av1Svc::new(seed, Av1Config::default());
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(secs) {
            s.poll(t, &mut out);
            t += Duration::from_millis(10);
        }
        out
    }

    /// Each spatial layer's payload rate over 10 s is within 15 % of its target.
    #[test]
    fn bitrate_per_spatial_layer_within_15_percent() {
        let pkts = run(1, 10);
        for (s, l) in Av1Config::default().layers.iter().enumerate() {
            let bytes: usize = pkts
                .iter()
                .filter(|p| usize::from(p.spatial) == s)
                .map(|p| p.payload.len())
                .sum();
            let ratio = bytes as f64 * 8.0 / 10.0 / l.bitrate as f64;
            assert!((0.85..=1.15).contains(&ratio), "layer {s}: ratio {ratio}");
        }
    }

    /// Sizes fit, one timestamp per temporal unit, marker only at the end of spatial layer 2,
    /// the structure only on the key unit's first packet.
    #[test]
    fn packet_shape() {
        let pkts = run(2, 11);
        let mut last_ts = None;
        for (i, p) in pkts.iter().enumerate() {
            assert!(p.payload.len() <= MAX_PAYLOAD);
            assert!(p.payload.len() >= p.tracking_offset + TRACKING_LEN);
            if p.marker {
                assert_eq!(p.spatial, 2);
                assert!(pkts.get(i + 1).is_none_or(|n| n.rtp_ts != p.rtp_ts));
            }
            if let Some(prev) = last_ts {
                if prev != p.rtp_ts {
                    assert_eq!(p.rtp_ts.wrapping_sub(prev), TS_PER_FRAME);
                    assert_eq!(p.spatial, 0);
                }
            }
            last_ts = Some(p.rtp_ts);
            let first_of_key = p.keyframe && p.spatial == 0 && p.payload[0] & 0x80 == 0;
            assert_eq!(p.dd.len() > 3, first_of_key);
        }
    }

    #[test]
    fn deterministic_from_seed() {
        assert_eq!(run(9, 2), run(9, 2));
        assert_ne!(run(9, 2), run(10, 2));
    }

    /// ns(n) round-trips for the values the structure uses.
    #[test]
    fn ns_encoding_matches_spec_examples() {
        let mut b = Bits {
            out: Vec::new(),
            used: 0,
        };
        b.put_ns(10, 3); // w = 4, m = 6: 3 bits "011"
        b.put_ns(3, 0); // w = 2, m = 1: "0"
        b.put_ns(3, 1); // "1" "0"
        b.put_ns(3, 2); // "1" "1"
        assert_eq!(b.used, 3 + 1 + 2 + 2);
        assert_eq!(b.out, vec![0b0110_1011]);
    }
}
