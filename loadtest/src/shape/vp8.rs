//! VP8 simulcast as Chrome sends it under lib-jitsi-meet: three encodings (scaleResolutionDownBy
//! 4/2/1 of a 720p camera), each with three temporal layers (L1T3, pattern 0,2,1,2), RFC 7741
//! payload descriptors with 15-bit picture ID, TL0PICIDX and TID/Y, and RFC 6386 keyframe headers.

use std::time::{Duration, Instant};

use super::{
    pattern_tid, split_even, KeyframePolicy, OutPacket, RateModel, ShapeRng, FRAME_INTERVAL, MAX_PAYLOAD, TRACKING_LEN,
    TS_PER_FRAME,
};

/// Length of the descriptor we write: X, I (M=1), L, T all present.
pub const DESCRIPTOR_LEN: usize = 6;

/// Magic at the start of our opaque frame data, followed by the encoding and the temporal id.
/// The receiver-side check uses it to tell encodings apart (a delta frame of another encoding
/// than the last keyframe's means the bridge switched without a keyframe).
pub const SHAPE_TAG: [u8; 2] = *b"PL";
pub const SHAPE_TAG_LEN: usize = 4;

/// One simulcast encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vp8EncodingConfig {
    pub width: u16,
    pub height: u16,
    /// Target bits per second (LJM sets these as `maxBitrate`; Chrome sends close to them).
    pub bitrate: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vp8Config {
    /// Lowest first, as in the SIM group.
    pub encodings: Vec<Vp8EncodingConfig>,
    pub keyframes: KeyframePolicy,
}

impl Default for Vp8Config {
    /// LJM for a 720p camera: `STANDARD_CODEC_SETTINGS.vp8.maxBitratesVideo` low/standard/high.
    fn default() -> Self {
        Self {
            encodings: vec![
                Vp8EncodingConfig {
                    width: 320,
                    height: 180,
                    bitrate: 200_000,
                },
                Vp8EncodingConfig {
                    width: 640,
                    height: 360,
                    bitrate: 500_000,
                },
                Vp8EncodingConfig {
                    width: 1280,
                    height: 720,
                    bitrate: 1_500_000,
                },
            ],
            keyframes: KeyframePolicy::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Encoding {
    cfg: Vp8EncodingConfig,
    rate: RateModel,
    active: bool,
    picture_id: u16,
    tl0picidx: u8,
    ts_base: u32,
    /// Frames since the last keyframe (None: no keyframe yet).
    since_key: Option<u64>,
    last_key_at: Option<Instant>,
    key_requested: bool,
}

/// Sans-IO VP8 simulcast sender. Call [`Vp8Simulcast::poll`] at or after
/// [`Vp8Simulcast::poll_timeout`]; it emits every frame due by `now`.
#[derive(Debug, Clone)]
pub struct Vp8Simulcast {
    rng: ShapeRng,
    keyframes: KeyframePolicy,
    encodings: Vec<Encoding>,
    start: Option<Instant>,
    next_frame: u64,
}

impl Vp8Simulcast {
    pub fn new(seed: u64, config: Vp8Config) -> Self {
        let mut rng = ShapeRng::new(seed);
        let encodings = config
            .encodings
            .iter()
            .map(|cfg| Encoding {
                cfg: *cfg,
                rate: RateModel::new(cfg.bitrate, config.keyframes.factor),
                active: true,
                picture_id: (rng.next_u64() & 0x7fff) as u16,
                tl0picidx: rng.next_u64() as u8,
                ts_base: rng.next_u64() as u32,
                since_key: None,
                last_key_at: None,
                key_requested: false,
            })
            .collect();
        Self {
            rng,
            keyframes: config.keyframes,
            encodings,
            start: None,
            next_frame: 0,
        }
    }

    pub fn encoding_count(&self) -> usize {
        self.encodings.len()
    }

    /// A PLI/FIR for this encoding's SSRC: its next frame is a keyframe.
    pub fn request_keyframe(&mut self, encoding: u8) {
        if let Some(e) = self.encodings.get_mut(usize::from(encoding)) {
            e.key_requested = true;
        }
    }

    /// Turn an encoding on or off (as LJM does on SenderSourceConstraints). A re-enabled
    /// encoding starts with a keyframe.
    pub fn set_active(&mut self, encoding: u8, active: bool) {
        if let Some(e) = self.encodings.get_mut(usize::from(encoding)) {
            if active && !e.active {
                e.key_requested = true;
            }
            e.active = active;
        }
    }

    /// When the next frame is due (`None` before the first poll: poll now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.start.map(|s| s + frame_offset(self.next_frame))
    }

    /// Append the packets of every frame due by `now` to `out`. If the caller fell more than
    /// 200 ms behind, the missed frames are skipped (as a camera would), not sent in a burst.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let due_index = (elapsed.as_nanos() / FRAME_INTERVAL.as_nanos()) as u64;
        if due_index > self.next_frame + 6 {
            self.next_frame = due_index;
        }
        while self.next_frame <= due_index {
            let index = self.next_frame;
            let at = start + frame_offset(index);
            for e in 0..self.encodings.len() {
                self.frame(e, index, at, out);
            }
            self.next_frame += 1;
        }
    }

    fn frame(&mut self, e: usize, index: u64, at: Instant, out: &mut Vec<OutPacket>) {
        let interval = self.keyframes.interval;
        let enc = &mut self.encodings[e];
        if !enc.active {
            return;
        }
        let periodic = match (interval, enc.last_key_at) {
            (Some(iv), Some(last)) => at.saturating_duration_since(last) >= iv,
            _ => false,
        };
        let keyframe = enc.since_key.is_none() || enc.key_requested || periodic;
        let n = if keyframe {
            0
        } else {
            enc.since_key.map_or(0, |n| n + 1)
        };
        enc.since_key = Some(n);
        if keyframe {
            enc.last_key_at = Some(at);
            enc.key_requested = false;
        }
        let tid = if keyframe { 0 } else { pattern_tid(n) };
        enc.picture_id = (enc.picture_id + 1) & 0x7fff;
        if tid == 0 {
            enc.tl0picidx = enc.tl0picidx.wrapping_add(1);
        }
        let header_len = if keyframe { 10 } else { 3 };
        let min = header_len + SHAPE_TAG_LEN + TRACKING_LEN + 16;
        let size = enc.rate.next_size(&mut self.rng, keyframe, n, min);
        let rtp_ts = enc.ts_base.wrapping_add((index as u32).wrapping_mul(TS_PER_FRAME));

        // The frame: tag (+ keyframe start code and size), our shape tag, opaque data.
        let mut frame = vec![0u8; size];
        let first_part = ((size - header_len) * 3 / 10).min(0x7_ffff) as u32;
        let tag = (first_part << 5) | (1 << 4) | u32::from(!keyframe);
        frame[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            frame[6..8].copy_from_slice(&(enc.cfg.width & 0x3fff).to_le_bytes());
            frame[8..10].copy_from_slice(&(enc.cfg.height & 0x3fff).to_le_bytes());
        }
        let t = header_len;
        frame[t..t + 2].copy_from_slice(&SHAPE_TAG);
        frame[t + 2] = e as u8;
        frame[t + 3] = tid;
        self.rng.fill(&mut frame[t + SHAPE_TAG_LEN..]);

        let enc = &self.encodings[e];
        let y = tid == 1 || (tid == 2 && n % 4 == 1);
        let mut offset = 0;
        let parts: Vec<usize> = split_even(size, MAX_PAYLOAD - DESCRIPTOR_LEN).collect();
        let last = parts.len() - 1;
        for (i, len) in parts.into_iter().enumerate() {
            let mut payload = Vec::with_capacity(DESCRIPTOR_LEN + len);
            payload.push(0x80 | if tid == 2 { 0x20 } else { 0 } | if i == 0 { 0x10 } else { 0 });
            payload.push(0x80 | 0x40 | 0x20);
            payload.push(0x80 | (enc.picture_id >> 8) as u8);
            payload.push(enc.picture_id as u8);
            payload.push(enc.tl0picidx);
            payload.push((tid << 6) | if y { 0x20 } else { 0 });
            payload.extend_from_slice(&frame[offset..offset + len]);
            offset += len;
            let tracking_offset = if i == 0 {
                DESCRIPTOR_LEN + header_len + SHAPE_TAG_LEN
            } else {
                DESCRIPTOR_LEN
            };
            debug_assert!(payload.len() >= tracking_offset + TRACKING_LEN);
            out.push(OutPacket {
                encoding: e as u8,
                spatial: e as u8,
                temporal: tid,
                keyframe,
                rtp_ts,
                marker: i == last,
                payload,
                tracking_offset,
                dd: Vec::new(),
            });
        }
    }
}

fn frame_offset(index: u64) -> Duration {
    Duration::from_nanos((FRAME_INTERVAL.as_nanos() as u64).saturating_mul(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, secs: u64) -> Vec<OutPacket> {
        let t0 = Instant::now();
        let mut s = Vp8Simulcast::new(seed, Vp8Config::default());
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(secs) {
            s.poll(t, &mut out);
            t += Duration::from_millis(10);
        }
        out
    }

    /// Over 10 s each encoding's payload rate is within 15 % of its configured target.
    #[test]
    fn bitrate_per_encoding_within_15_percent() {
        let pkts = run(1, 10);
        for (e, cfg) in Vp8Config::default().encodings.iter().enumerate() {
            let bytes: usize = pkts
                .iter()
                .filter(|p| p.encoding as usize == e)
                .map(|p| p.payload.len())
                .sum();
            let bps = bytes as f64 * 8.0 / 10.0;
            let ratio = bps / cfg.bitrate as f64;
            assert!(
                (0.85..=1.15).contains(&ratio),
                "encoding {e}: {bps} bps vs {}",
                cfg.bitrate
            );
        }
    }

    /// Every payload fits 1200 bytes and leaves room for the tracking header.
    #[test]
    fn packet_sizes_and_tracking_room() {
        for p in run(2, 11) {
            assert!(p.payload.len() <= MAX_PAYLOAD);
            assert!(p.payload.len() >= p.tracking_offset + TRACKING_LEN);
        }
    }

    /// The same seed and the same poll times give identical bytes; another seed does not.
    #[test]
    fn deterministic_from_seed() {
        let t0 = Instant::now();
        let gen = |seed| {
            let mut s = Vp8Simulcast::new(seed, Vp8Config::default());
            let mut out = Vec::new();
            for i in 0..100u64 {
                s.poll(t0 + Duration::from_millis(i * 17), &mut out);
            }
            out
        };
        assert_eq!(gen(5), gen(5));
        assert_ne!(gen(5), gen(6));
    }

    /// Keyframes: ~5-10x a delta frame, every 10 s, and on request; frames at 30 fps.
    #[test]
    fn keyframes_periodic_and_on_request() {
        let t0 = Instant::now();
        let mut s = Vp8Simulcast::new(3, Vp8Config::default());
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_millis(25_000) {
            if t == t0 + Duration::from_millis(5_000) {
                s.request_keyframe(1);
            }
            s.poll(t, &mut out);
            t += Duration::from_millis(10);
        }
        let keys: Vec<u32> = out
            .iter()
            .filter(|p| p.encoding == 1 && p.keyframe && p.marker)
            .map(|p| p.rtp_ts)
            .collect();
        // Start, request at 5 s, then 10 s after that (15 s) and 25 s is not reached.
        assert_eq!(keys.len(), 3, "{keys:?}");
        let frames = out.iter().filter(|p| p.encoding == 0 && p.marker).count();
        assert!((749..=752).contains(&frames), "{frames}");
        // Keyframe size vs average delta size for the 360p encoding.
        let (mut kb, mut kn, mut db, mut dn) = (0usize, 0usize, 0usize, 0usize);
        let mut cur = 0usize;
        for p in out.iter().filter(|p| p.encoding == 1) {
            cur += p.payload.len();
            if p.marker {
                if p.keyframe {
                    kb += cur;
                    kn += 1;
                } else {
                    db += cur;
                    dn += 1;
                }
                cur = 0;
            }
        }
        let ratio = (kb as f64 / kn as f64) / (db as f64 / dn as f64);
        assert!((5.0..=10.5).contains(&ratio), "{ratio}");
    }
}
