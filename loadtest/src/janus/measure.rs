//! Measurement helpers the Janus runner uses (payload tracking, loss and latency per receiver,
//! /proc CPU), kept from the first harness so the Janus numbers stay comparable with earlier runs.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

const MAGIC: &[u8; 4] = b"PLM1";
/// Bytes of harness header after the first (codec descriptor) byte.
const HEADER: usize = 1 + 4 + 4 + 4 + 8;

/// The harness's payload: `[descriptor][PLM1][sender][counter][send µs since epoch]` then filler.
pub struct Payload;

impl Payload {
    pub fn encode(sender: u32, counter: u32, epoch: Instant, now: Instant, size: usize) -> Vec<u8> {
        let mut p = vec![0u8; size.max(HEADER)];
        p[1..5].copy_from_slice(MAGIC);
        p[5..9].copy_from_slice(&sender.to_be_bytes());
        p[9..13].copy_from_slice(&counter.to_be_bytes());
        let us = now.saturating_duration_since(epoch).as_micros() as u64;
        p[13..21].copy_from_slice(&us.to_be_bytes());
        for (i, b) in p[HEADER..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ (counter as u8);
        }
        p
    }

    /// `(sender, counter, send time in µs since epoch)`, or `None` when it is not ours or the
    /// filler was altered (payload integrity check).
    pub fn decode(p: &[u8]) -> Option<(u32, u32, u64)> {
        if p.len() < HEADER || &p[1..5] != MAGIC {
            return None;
        }
        let sender = u32::from_be_bytes(p[5..9].try_into().ok()?);
        let counter = u32::from_be_bytes(p[9..13].try_into().ok()?);
        let us = u64::from_be_bytes(p[13..21].try_into().ok()?);
        let intact = p[HEADER..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31) ^ (counter as u8));
        intact.then_some((sender, counter, us))
    }
}

/// Per receiving endpoint: what arrived from whom.
#[derive(Default)]
pub struct Receiver {
    streams: HashMap<u32, StreamRx>,
    latencies_us: Vec<u32>,
    corrupt: u64,
}

#[derive(Default)]
struct StreamRx {
    first: Option<u32>,
    highest: u32,
    received: u64,
}

impl Receiver {
    pub fn on_packet(&mut self, payload: &[u8], ssrc: u32, epoch: Instant, now: Instant) {
        let Some((_sender, counter, sent_us)) = Payload::decode(payload) else {
            self.corrupt += 1;
            return;
        };
        let now_us = now.saturating_duration_since(epoch).as_micros() as u64;
        self.latencies_us
            .push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
        let s = self.streams.entry(ssrc).or_default();
        s.first.get_or_insert(counter);
        s.highest = s.highest.max(counter);
        s.received += 1;
    }

    pub fn finish(self) -> ReceiveReport {
        let expected: u64 = self
            .streams
            .values()
            .map(|s| u64::from(s.highest - s.first.unwrap_or(0)) + 1)
            .sum();
        let received: u64 = self.streams.values().map(|s| s.received).sum();
        ReceiveReport {
            streams: self.streams.len(),
            received,
            expected,
            corrupt: self.corrupt,
            latencies_us: self.latencies_us,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ReceiveReport {
    pub streams: usize,
    pub received: u64,
    /// From the first to the highest counter seen per stream.
    pub expected: u64,
    /// Packets whose payload was not what the sender wrote.
    pub corrupt: u64,
    #[serde(skip)]
    pub latencies_us: Vec<u32>,
}

#[derive(Debug, Default, Serialize)]
pub struct EndpointReport {
    pub index: u32,
    pub connected: bool,
    pub connect_ms: Option<f64>,
    pub disconnects: u32,
    pub sent_packets: u64,
    pub receive: ReceiveReport,
}

/// The bridge process's CPU time (utime + stime) and RSS, from /proc/<pid>/stat.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // sysconf(_SC_CLK_TCK) is 100 on Linux x86_64 and arm64
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks, rss_pages * 4096))
}

/// The p-th percentile (0–100) of unsorted samples, in the samples' unit.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload round-trips and a flipped filler byte is caught as corruption.
    #[test]
    fn payload_roundtrip_and_integrity() {
        let epoch = Instant::now();
        let mut p = Payload::encode(7, 42, epoch, epoch + std::time::Duration::from_millis(5), 300);
        assert_eq!(Payload::decode(&p), Some((7, 42, 5000)));
        p[200] ^= 1;
        assert_eq!(Payload::decode(&p), None);
    }

    /// Loss is counted from gaps in the per-stream counter.
    #[test]
    fn receiver_counts_loss() {
        let epoch = Instant::now();
        let mut r = Receiver::default();
        for c in [0u32, 1, 2, 4, 5] {
            r.on_packet(&Payload::encode(1, c, epoch, epoch, 100), 9, epoch, epoch);
        }
        let rep = r.finish();
        assert_eq!((rep.received, rep.expected), (5, 6));
    }
}

pub const VIDEO_PT: u8 = 100;

/// What a Janus endpoint sends.
#[derive(Debug, Clone, Copy)]
pub struct SendProfile {
    /// Audio packets every 20 ms, this many payload bytes (Opus at ~32 kbps is ~80).
    pub audio_bytes: usize,
    /// Video bitrate in bits per second (0: no video).
    pub video_bps: u32,
    pub video_fps: u32,
}

impl Default for SendProfile {
    fn default() -> Self {
        Self {
            audio_bytes: 80,
            video_bps: 500_000,
            video_fps: 30,
        }
    }
}
