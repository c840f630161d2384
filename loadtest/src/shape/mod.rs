//! Browser-shaped video for the load harness: what Chrome sends under lib-jitsi-meet, and
//! validators that judge what a receiver gets back from the bridge.
//!
//! * [`vp8::Vp8Simulcast`]: three VP8 encodings (scaleResolutionDownBy 4/2/1, 180p/360p/720p),
//!   each L1T3 (temporal pattern 0,2,1,2), LJM's maxBitrate 200 k / 500 k / 1.5 M.
//! * [`av1::Av1Svc`]: one AV1 stream in L3T3_KEY with the dependency descriptor (DD).
//! * [`check::Vp8Check`], [`check::Av1Check`], [`check::FreezeDetector`]: receiver-side checks.
//!
//! Use (per sender): `poll(now, &mut out)` at or after `poll_timeout()`, send each
//! [`OutPacket`] on the SSRC of its `encoding` with its `rtp_ts`/`marker` (and, for AV1, `dd` as
//! the dependency-descriptor extension body, see [`av1::DD_EXTENSION_URI`]), after writing the
//! harness's 24-byte tracking header at `tracking_offset`; call `request_keyframe` on PLI/FIR.
//! Per receiver and forwarded source: feed every packet to a `Vp8Check`/`Av1Check`, count the
//! `Err(Violation)`s, feed each `Ok(Some(FrameDone))` time to a `FreezeDetector`, and report
//! `resolution()` and `stats()`.
//!
//! Everything here is pure: no sockets, no str0m types, time comes in as `now: Instant`, and the
//! only randomness is a [`ShapeRng`] seeded by the caller, so one seed gives identical bytes.
//! This is deliberately an implementation independent of `sfu/src/codec/`: each checks the other.

pub mod av1;
pub mod check;
pub mod vp8;

use std::time::Duration;

/// Largest RTP payload we produce (descriptor + data); leaves room for RTP header, extensions and
/// SRTP tag under a 1280-byte path MTU, as libwebrtc does.
pub const MAX_PAYLOAD: usize = 1200;

/// Bytes the harness may overwrite at [`OutPacket::tracking_offset`] (sender id, counter, send
/// time). Every generated packet has at least this many opaque bytes there.
pub const TRACKING_LEN: usize = 24;

/// Frame interval at 30 fps.
pub const FRAME_INTERVAL: Duration = Duration::from_nanos(33_333_333);

/// RTP clock ticks per frame at 30 fps (90 kHz video clock).
pub const TS_PER_FRAME: u32 = 3000;

/// One RTP packet's worth of generated media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPacket {
    /// Simulcast encoding (VP8: 0 = 180p, 1 = 360p, 2 = 720p; send it on that encoding's SSRC).
    /// Always 0 for AV1 SVC (one SSRC).
    pub encoding: u8,
    /// Spatial layer of the frame this packet belongs to (AV1; equals `encoding` for VP8).
    pub spatial: u8,
    /// Temporal layer id of the frame.
    pub temporal: u8,
    /// Whether the packet belongs to a keyframe (for AV1: a frame of the key temporal unit).
    pub keyframe: bool,
    pub rtp_ts: u32,
    /// RTP marker: last packet of a frame (VP8) / of a temporal unit (AV1).
    pub marker: bool,
    pub payload: Vec<u8>,
    /// Where the harness may write [`TRACKING_LEN`] bytes of its own without breaking validity.
    pub tracking_offset: usize,
    /// AV1 dependency descriptor extension body (empty for VP8). The extension URI is
    /// `https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension`.
    pub dd: Vec<u8>,
}

/// Deterministic pseudo-random numbers (splitmix64): enough for sizes and start values, and no
/// dependency. Not for anything cryptographic.
#[derive(Debug, Clone)]
pub struct ShapeRng(u64);

impl ShapeRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fill with opaque "compressed" bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Share of a layer's bitrate per temporal layer in L1T3/LxT3, as libwebrtc's VP8 rate allocation
/// (40 % / 20 % / 40 %); with TL0 and TL1 at 7.5 fps and TL2 at 15 fps a TL0 frame is twice a TL1
/// or TL2 frame. Weights per frame of the 4-frame pattern 0,2,1,2.
const PATTERN_TIDS: [u8; 4] = [0, 2, 1, 2];
const PATTERN_WEIGHTS: [f64; 4] = [2.0, 1.0, 1.0, 1.0];

/// Temporal id of the `n`th frame after a keyframe (keyframe = 0).
pub fn pattern_tid(n: u64) -> u8 {
    PATTERN_TIDS[(n % 4) as usize]
}

/// Frame-size model for one layer: a rate controller that keeps the long-run bytes on target
/// while keyframes cost `keyframe_factor` times an average delta frame, as a real encoder's
/// rate control does (deltas shrink after a keyframe).
#[derive(Debug, Clone)]
pub struct RateModel {
    /// Target in bits per second.
    bitrate: u32,
    keyframe_factor: f64,
    /// Bytes produced minus bytes allowed so far (positive: over budget).
    debt: f64,
}

impl RateModel {
    pub fn new(bitrate: u32, keyframe_factor: f64) -> Self {
        Self {
            bitrate,
            keyframe_factor,
            debt: 0.0,
        }
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Average bytes of one frame at 30 fps.
    fn avg_frame(&self) -> f64 {
        self.bitrate as f64 / 8.0 / 30.0
    }

    /// Size in bytes of the next frame (of temporal id `tid`, position in pattern `n`).
    pub fn next_size(&mut self, rng: &mut ShapeRng, keyframe: bool, n: u64, min: usize) -> usize {
        let avg = self.avg_frame();
        let jitter = 0.85 + 0.3 * rng.unit();
        let nominal = if keyframe {
            avg * self.keyframe_factor
        } else {
            // Pattern weights sum to 5 over 4 frames.
            avg * PATTERN_WEIGHTS[(n % 4) as usize] * 4.0 / 5.0
        };
        let size = if keyframe {
            nominal * jitter
        } else {
            // Pay back debt over ~half a second, never below a quarter of nominal.
            (nominal * jitter - self.debt / 15.0).max(nominal * 0.25)
        };
        let size = (size.round() as usize).max(min);
        self.debt += size as f64 - avg;
        size
    }
}

/// Split `len` bytes into the fewest chunks that fit `room` bytes each, sizes as equal as
/// possible (libwebrtc packetizers balance the same way, so no tiny last packet).
pub fn split_even(len: usize, room: usize) -> impl Iterator<Item = usize> {
    let room = room.max(1);
    let n = len.div_ceil(room).max(1);
    let base = len / n;
    let extra = len % n;
    (0..n).map(move |i| base + usize::from(i < extra))
}

/// Keyframe policy shared by both senders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyframePolicy {
    /// Periodic keyframes (Chrome has none by default; LJM relies on PLI). `None` = only on request.
    pub interval: Option<Duration>,
    /// Keyframe size as a multiple of an average delta frame (5–10 in practice).
    pub factor: f64,
}

impl Default for KeyframePolicy {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(10)),
            factor: 8.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate model hits its target over many frames even with keyframes in the mix.
    #[test]
    fn rate_model_tracks_target() {
        let mut rng = ShapeRng::new(7);
        let mut m = RateModel::new(500_000, 8.0);
        let mut total = 0usize;
        for n in 0..300u64 {
            total += m.next_size(&mut rng, n % 150 == 0, n % 150, 40);
        }
        let bps = total as f64 * 8.0 / 10.0;
        assert!((bps / 500_000.0 - 1.0).abs() < 0.05, "{bps}");
    }

    #[test]
    fn split_even_covers_len() {
        for len in [1usize, 1199, 1200, 1201, 5000, 50_000] {
            let parts: Vec<_> = split_even(len, 1190).collect();
            assert_eq!(parts.iter().sum::<usize>(), len);
            assert!(parts.iter().all(|&p| p <= 1190 && p > 0));
            let (mn, mx) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            assert!(mx - mn <= 1);
        }
    }
}
