//! The video an endpoint sends, behind one small interface, and the harness's tracking header
//! that rides inside every payload.
//!
//! The browser-shaped generators and validators live in `shape/`; this module adapts them and
//! keeps the harness's first, minimal VP8 shape (`codec = "vp8"`) for comparison with older
//! runs.

use std::time::{Duration, Instant};

use crate::scenario::Codec;

use crate::shape::av1::{Av1Config, Av1Svc};
use crate::shape::check::{Av1Check, FrameDone, Violation, Vp8Check};
use crate::shape::vp8::{Vp8Config, Vp8Simulcast};
pub use crate::shape::OutPacket as VideoPacket;

/// How many SSRCs (simulcast encodings) a sender of `codec` uses.
pub fn encodings_of(codec: Codec) -> usize {
    match codec {
        Codec::Vp8Simulcast => Vp8Config::default().encodings.len(),
        Codec::Av1Svc | Codec::Vp8 => 1,
    }
}

/// A video source of one endpoint.
pub enum VideoSender {
    Simulcast(Vp8Simulcast),
    Av1(Av1Svc),
    Single(SingleVp8),
}

impl VideoSender {
    pub fn new(codec: Codec, seed: u64, bitrate_scale: f64, now: Instant) -> Self {
        match codec {
            Codec::Vp8Simulcast => {
                let mut cfg = Vp8Config::default();
                for e in &mut cfg.encodings {
                    e.bitrate = (f64::from(e.bitrate) * bitrate_scale) as u32;
                }
                Self::Simulcast(Vp8Simulcast::new(seed, cfg))
            }
            Codec::Av1Svc => {
                let mut cfg = Av1Config::default();
                for l in &mut cfg.layers {
                    l.bitrate = (f64::from(l.bitrate) * bitrate_scale) as u32;
                }
                Self::Av1(Av1Svc::new(seed, cfg))
            }
            Codec::Vp8 => Self::Single(SingleVp8::new((500_000.0 * bitrate_scale) as u32, now)),
        }
    }

    /// How many SSRCs (simulcast encodings) this sender uses.
    pub fn encodings(&self) -> usize {
        match self {
            Self::Simulcast(s) => s.encoding_count(),
            Self::Av1(_) | Self::Single(_) => 1,
        }
    }

    /// When the next frame is due (`None`: now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Simulcast(s) => s.poll_timeout(),
            Self::Av1(s) => s.poll_timeout(),
            Self::Single(s) => Some(s.next_frame),
        }
    }

    /// Packets due at `now`, appended to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<VideoPacket>) {
        match self {
            Self::Simulcast(s) => s.poll(now, out),
            Self::Av1(s) => s.poll(now, out),
            Self::Single(s) => s.poll(now, out),
        }
    }

    /// A keyframe request for `encoding` (`None`: all of them).
    pub fn request_keyframe(&mut self, encoding: Option<u8>) {
        match self {
            Self::Simulcast(s) => match encoding {
                Some(e) => s.request_keyframe(e),
                None => (0..s.encoding_count() as u8).for_each(|e| s.request_keyframe(e)),
            },
            Self::Av1(s) => s.request_keyframe(),
            Self::Single(s) => s.key_requested = true,
        }
    }
}

/// The receiver's judge of one received video SSRC (the shape validators; the single VP8 shape
/// has no full descriptor, so it is only counted by marker bits).
pub enum VideoCheck {
    Vp8(Box<Vp8Check>),
    Av1(Box<Av1Check>),
    Marker,
}

impl VideoCheck {
    pub fn new(codec: Codec) -> Self {
        match codec {
            Codec::Vp8Simulcast => Self::Vp8(Box::default()),
            Codec::Av1Svc => Self::Av1(Box::default()),
            Codec::Vp8 => Self::Marker,
        }
    }

    /// True while the receiver cannot decode: no keyframe seen yet (a browser asks for one).
    pub fn needs_keyframe(&self) -> bool {
        match self {
            Self::Vp8(c) => c.resolution().is_none(),
            Self::Av1(c) => c.resolution().is_none(),
            Self::Marker => false,
        }
    }

    /// One received packet: a completed frame (with its height when known), nothing yet, or a
    /// violation.
    pub fn on_packet(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        dd: Option<&[u8]>,
    ) -> Result<Option<FrameDone>, Violation> {
        match self {
            Self::Vp8(c) => c.on_packet(seq, ts, marker, payload),
            Self::Av1(c) => c.on_packet(seq, ts, marker, payload, dd.unwrap_or(&[])),
            Self::Marker => Ok(marker.then_some(FrameDone {
                keyframe: false,
                width: 0,
                height: 0,
                spatial: 0,
                temporal: 0,
            })),
        }
    }
}

/// The harness's first VP8 shape: one stream, a one-byte descriptor, a keyframe three times the
/// size of a delta frame every 3 s.
pub struct SingleVp8 {
    bps: u32,
    next_frame: Instant,
    frame_no: u64,
    ts: u32,
    key_requested: bool,
}

impl SingleVp8 {
    const FPS: u32 = 30;

    fn new(bps: u32, now: Instant) -> Self {
        Self {
            bps,
            next_frame: now,
            frame_no: 0,
            ts: 0,
            key_requested: false,
        }
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<VideoPacket>) {
        while now >= self.next_frame {
            let key = self.key_requested || self.frame_no.is_multiple_of(3 * u64::from(Self::FPS));
            self.key_requested = false;
            let frame_bytes = (self.bps / 8 / Self::FPS) as usize;
            let size = if key { frame_bytes * 3 } else { frame_bytes }.max(200);
            let packets = size.div_ceil(1100);
            for i in 0..packets {
                let mut payload = vec![0u8; 1 + size / packets];
                // VP8 payload descriptor without extensions: S bit on the first packet.
                payload[0] = if i == 0 { 0x10 } else { 0x00 };
                out.push(VideoPacket {
                    encoding: 0,
                    spatial: 0,
                    temporal: 0,
                    keyframe: key,
                    rtp_ts: self.ts,
                    marker: i + 1 == packets,
                    payload,
                    tracking_offset: 1,
                    dd: Vec::new(),
                });
            }
            self.ts = self.ts.wrapping_add(90_000 / Self::FPS);
            self.frame_no += 1;
            self.next_frame += Duration::from_secs(1) / Self::FPS;
        }
    }
}

/// The harness's 24 bytes inside every payload: `PLM2`, stream id, per-stream counter, send time
/// (µs since the run's epoch), and a checksum of the payload bytes after the header (the bytes
/// before it are the codec descriptor, which the bridge may rewrite).
pub struct Tracking;

/// What a tracking header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub stream: StreamId,
    pub counter: u32,
    pub sent_us: u64,
    /// The checksum matched: the payload after the header arrived as sent.
    pub intact: bool,
}

/// Who sent a packet, and on which layer: loss is counted per stream id, so that a bridge
/// switching layers or dropping temporal layers does not look like loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub u32);

impl StreamId {
    pub fn audio(sender: u32) -> Self {
        Self(sender << 8)
    }

    pub fn video(sender: u32, spatial: u8, temporal: u8) -> Self {
        Self(sender << 8 | 0x80 | u32::from(spatial & 7) << 4 | u32::from(temporal & 0xf))
    }

    pub fn sender(self) -> u32 {
        self.0 >> 8
    }

    pub fn is_video(self) -> bool {
        self.0 & 0x80 != 0
    }
}

const MAGIC: &[u8; 4] = b"PLM2";
pub const TRACKING_LEN: usize = 24;
/// How far into a payload the receiver looks for the header (descriptor + keyframe header).
const SEARCH: usize = 64;

impl Tracking {
    /// Write the header at `offset` (the payload must have room) and checksum the rest.
    pub fn write(payload: &mut [u8], offset: usize, stream: StreamId, counter: u32, sent_us: u64) -> bool {
        let Some(h) = payload.get_mut(offset..offset + TRACKING_LEN) else {
            return false;
        };
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&stream.0.to_be_bytes());
        h[8..12].copy_from_slice(&counter.to_be_bytes());
        h[12..20].copy_from_slice(&sent_us.to_be_bytes());
        let sum = fnv1a(&payload[offset + TRACKING_LEN..]) ^ counter;
        payload[offset + 20..offset + TRACKING_LEN].copy_from_slice(&sum.to_be_bytes());
        true
    }

    /// Find and read the header, `None` when there is none.
    pub fn read(payload: &[u8]) -> Option<Tracked> {
        let window = &payload[..payload.len().min(SEARCH + 4)];
        let at = window.windows(4).position(|w| w == MAGIC)?;
        let h = payload.get(at..at + TRACKING_LEN)?;
        let word = |r: std::ops::Range<usize>| -> Option<u32> { Some(u32::from_be_bytes(h.get(r)?.try_into().ok()?)) };
        let counter = word(8..12)?;
        let sum = word(20..24)?;
        Some(Tracked {
            stream: StreamId(word(4..8)?),
            counter,
            sent_us: u64::from_be_bytes(h.get(12..20)?.try_into().ok()?),
            intact: fnv1a(&payload[at + TRACKING_LEN..]) ^ counter == sum,
        })
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_roundtrip_and_integrity() {
        let mut p = vec![0x90u8; 300];
        p[40..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let id = StreamId::video(77, 2, 1);
        assert!(Tracking::write(&mut p, 12, id, 42, 123_456));
        let t = Tracking::read(&p).expect("found");
        assert_eq!((t.stream, t.counter, t.sent_us, t.intact), (id, 42, 123_456, true));
        assert_eq!((t.stream.sender(), t.stream.is_video()), (77, true));
        // The descriptor before the header may change (the bridge rewrites picture ids).
        p[3] ^= 0xff;
        assert!(Tracking::read(&p).expect("found").intact);
        // The media after it may not.
        p[200] ^= 1;
        assert!(!Tracking::read(&p).expect("found").intact);
        assert!(Tracking::read(&[0u8; 100]).is_none());
        // No room: refused rather than panicking.
        assert!(!Tracking::write(&mut [0u8; 20], 0, id, 1, 1));
        assert!(!StreamId::audio(5).is_video());
    }

    #[test]
    fn single_vp8_paces_frames() {
        let t0 = Instant::now();
        let mut s = VideoSender::new(Codec::Vp8, 1, 1.0, t0);
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_millis(999), &mut out);
        let frames = out.iter().filter(|p| p.marker).count();
        assert_eq!(frames, 30);
        assert!(out[0].keyframe && out[0].payload[0] == 0x10);
        let bytes: usize = out.iter().map(|p| p.payload.len()).sum();
        // 500 kbps with a 3× keyframe: ~(29 + 3) × 2083 bytes.
        assert!((60_000..72_000).contains(&bytes), "{bytes}");
    }
}
