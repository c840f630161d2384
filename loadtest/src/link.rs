//! In-process link emulation (the kernel here has no netem): one [`Link`] per endpoint and
//! direction, between the str0m peer and its UDP socket.
//!
//! A packet offered to a link goes through, in order:
//! 1. Bernoulli loss (`loss_percent`), from the link's own seeded RNG;
//! 2. a rate limiter: a token bucket of `burst_bytes` refilled at `rate_kbps`, in front of a
//!    bounded FIFO queue of `queue_ms` worth of bytes at that rate (tail drop when full). It is
//!    computed as GCRA (a "theoretical arrival time" per link), which is the same shaper in O(1);
//! 3. a fixed `delay_ms` plus a uniform jitter in `[-jitter_ms, +jitter_ms]` (clamped at zero);
//!    unless `reorder` is set, a packet never leaves before the one in front of it, as on a
//!    real path without multipath (the jitter then only stretches gaps).
//!
//! A link may carry a `schedule`: steps that change its rate, loss or delay at given times
//! (seconds since the link's origin, which the harness sets to the run's start, the x axis of
//! the report's plots). A step applies to packets offered at or after its time; packets already
//! queued keep the departure time they were given.
//!
//! Pure: time is an argument, randomness comes from the seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One direction of an emulated link. All zero: a perfect link (bypassed entirely).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Rate limit in kbit/s (0: unlimited).
    pub rate_kbps: u32,
    /// Bytes the token bucket lets through at line speed after an idle period.
    pub burst_bytes: u32,
    /// The queue behind the bucket, in milliseconds at `rate_kbps` (0: 200 ms).
    pub queue_ms: u32,
    /// One-way delay added to every packet.
    pub delay_ms: f64,
    /// Uniform jitter around `delay_ms`.
    pub jitter_ms: f64,
    /// Random loss, in percent (0–100).
    pub loss_percent: f64,
    /// Let jitter reorder packets (off: a packet never overtakes the one before it).
    pub reorder: bool,
    /// Changes over time, applied in order of `at`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<LinkStep>,
}

/// One change of a link at a given time; unset fields keep their value.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkStep {
    /// Since the link's origin (the run's start).
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub rate_kbps: Option<u32>,
    pub loss_percent: Option<f64>,
    pub delay_ms: Option<f64>,
}

impl LinkConfig {
    /// True when the link does nothing, so the endpoint can skip it.
    pub fn is_perfect(&self) -> bool {
        self.rate_kbps == 0
            && self.delay_ms <= 0.0
            && self.jitter_ms <= 0.0
            && self.loss_percent <= 0.0
            && self.schedule.is_empty()
    }

    /// Reject values that make no sense, with a message naming the key.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(format!(
                "{what}.loss_percent must be within 0..=100, not {}",
                self.loss_percent
            ));
        }
        for (k, v) in [("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)] {
            if !(0.0..=60_000.0).contains(&v) {
                return Err(format!("{what}.{k} must be within 0..=60000, not {v}"));
            }
        }
        for (i, step) in self.schedule.iter().enumerate() {
            if step.loss_percent.is_some_and(|l| !(0.0..=100.0).contains(&l)) {
                return Err(format!("{what}.schedule[{i}].loss_percent must be within 0..=100"));
            }
            if step.delay_ms.is_some_and(|d| !(0.0..=60_000.0).contains(&d)) {
                return Err(format!("{what}.schedule[{i}].delay_ms must be within 0..=60000"));
            }
            if i > 0 && step.at < self.schedule[i - 1].at {
                return Err(format!("{what}.schedule must be in order of `at` (step {i})"));
            }
        }
        Ok(())
    }
}

/// What happened to a packet offered to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Random loss.
    Lost,
    /// The rate limiter's queue was full.
    TailDropped,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LinkStats {
    pub offered: u64,
    pub lost: u64,
    pub tail_dropped: u64,
    pub delivered: u64,
}

/// One direction of an emulated link.
pub struct Link {
    cfg: LinkConfig,
    rng: SplitMix64,
    /// GCRA theoretical arrival time, as microseconds since `origin`.
    tat_us: f64,
    /// Microseconds per byte at the configured rate.
    us_per_byte: f64,
    /// How far ahead of real time `tat_us` may run before the packet must wait (the burst).
    burst_us: f64,
    /// Bytes the queue holds before tail drop.
    queue_bytes: f64,
    /// Release time of the last queued packet (for no-reordering).
    last_release: Option<Instant>,
    origin: Instant,
    seq: u64,
    heap: BinaryHeap<Reverse<Pending>>,
    stats: LinkStats,
    /// Index of the next schedule step to apply.
    next_step: usize,
}

struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Link {
    pub fn new(cfg: LinkConfig, seed: u64, origin: Instant) -> Self {
        let mut link = Self {
            cfg,
            rng: SplitMix64::new(seed),
            tat_us: 0.0,
            us_per_byte: 0.0,
            burst_us: 0.0,
            queue_bytes: 0.0,
            last_release: None,
            origin,
            seq: 0,
            heap: BinaryHeap::new(),
            stats: LinkStats::default(),
            next_step: 0,
        };
        link.set_rate();
        link
    }

    /// Derive the shaper's constants from `cfg.rate_kbps`.
    fn set_rate(&mut self) {
        let cfg = &self.cfg;
        self.us_per_byte = if cfg.rate_kbps > 0 {
            8_000.0 / f64::from(cfg.rate_kbps)
        } else {
            0.0
        };
        let queue_ms = if cfg.queue_ms == 0 { 200 } else { cfg.queue_ms };
        self.queue_bytes = (f64::from(cfg.rate_kbps) * f64::from(queue_ms) / 8.0).max(1500.0);
        self.burst_us = f64::from(cfg.burst_bytes) * self.us_per_byte;
    }

    /// Apply the schedule's steps that are due at `now`.
    fn apply_schedule(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.origin);
        while let Some(step) = self.cfg.schedule.get(self.next_step) {
            if step.at > since {
                break;
            }
            let step = step.clone();
            self.next_step += 1;
            if let Some(l) = step.loss_percent {
                self.cfg.loss_percent = l;
            }
            if let Some(d) = step.delay_ms {
                self.cfg.delay_ms = d;
            }
            if let Some(r) = step.rate_kbps {
                self.cfg.rate_kbps = r;
                self.set_rate();
            }
        }
    }

    /// The rate in effect at `at` since the origin (0: unlimited), from the schedule.
    pub fn rate_at(cfg: &LinkConfig, at: Duration) -> u32 {
        cfg.schedule
            .iter()
            .take_while(|s| s.at <= at)
            .filter_map(|s| s.rate_kbps)
            .last()
            .unwrap_or(cfg.rate_kbps)
    }

    /// Offer a packet at `now`.
    pub fn push(&mut self, now: Instant, data: Vec<u8>) -> Offer {
        if self.next_step < self.cfg.schedule.len() {
            self.apply_schedule(now);
        }
        self.stats.offered += 1;
        if self.cfg.loss_percent > 0.0 && self.rng.next_f64() * 100.0 < self.cfg.loss_percent {
            self.stats.lost += 1;
            return Offer::Lost;
        }
        let now_us = now.saturating_duration_since(self.origin).as_secs_f64() * 1e6;
        let mut depart_us = now_us;
        if self.cfg.rate_kbps > 0 {
            let tat = self.tat_us.max(now_us);
            // Bytes already waiting in the queue behind the bucket.
            let backlog = (tat - now_us - self.burst_us).max(0.0) / self.us_per_byte;
            if backlog + data.len() as f64 > self.queue_bytes + f64::from(self.cfg.burst_bytes) {
                self.stats.tail_dropped += 1;
                return Offer::TailDropped;
            }
            let cost = data.len() as f64 * self.us_per_byte;
            // The packet's last bit leaves when the bucket has paid for it.
            depart_us = (tat + cost - self.burst_us).max(now_us);
            self.tat_us = tat + cost;
        }
        let mut delay_us = self.cfg.delay_ms * 1000.0;
        if self.cfg.jitter_ms > 0.0 {
            delay_us += (self.rng.next_f64() * 2.0 - 1.0) * self.cfg.jitter_ms * 1000.0;
        }
        let mut at = self.origin + Duration::from_secs_f64((depart_us + delay_us.max(0.0)).max(0.0) / 1e6);
        if !self.cfg.reorder {
            if let Some(last) = self.last_release {
                at = at.max(last);
            }
            self.last_release = Some(at);
        }
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            at,
            seq: self.seq,
            data,
        }));
        Offer::Queued
    }

    /// The next packet due at or before `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.heap.pop().map(|p| p.0.data)
    }

    /// When the next packet is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.heap.peek().map(|p| p.0.at)
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable and good enough for loss and jitter.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drive a link with `pps` packets of `size` bytes for `secs`, delivering as we go; returns
    /// (delivered bytes, per-packet one-way delays in ms, the link).
    fn drive(cfg: LinkConfig, seed: u64, pps: u64, size: usize, secs: u64) -> (u64, Vec<f64>, Link) {
        let t0 = Instant::now();
        let mut link = Link::new(cfg, seed, t0);
        let mut sent_at = std::collections::HashMap::new();
        let mut delays = Vec::new();
        let mut bytes = 0;
        let step_us = 1_000_000 / pps;
        let mut n: u64 = 0;
        // Run the clock past the end so the queue drains when nothing is rate limited.
        while n * step_us < secs * 1_000_000 {
            let now = t0 + Duration::from_micros(n * step_us);
            let mut data = vec![0u8; size];
            data[..8].copy_from_slice(&n.to_be_bytes());
            sent_at.insert(n, now);
            link.push(now, data);
            while let Some(p) = link.poll(now) {
                let id = u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
                delays.push(now.duration_since(sent_at[&id]).as_secs_f64() * 1000.0);
                bytes += p.len() as u64;
            }
            n += 1;
        }
        (bytes, delays, link)
    }

    #[test]
    fn perfect_link_passes_everything_at_once() {
        let cfg = LinkConfig::default();
        assert!(cfg.is_perfect());
        let (bytes, delays, link) = drive(cfg, 1, 1000, 100, 1);
        assert_eq!(bytes, 1000 * 100);
        assert!(delays.iter().all(|&d| d == 0.0));
        assert_eq!(link.stats().delivered, 1000);
    }

    /// Offered 2 Mbit/s into a 1 Mbit/s link: what comes out is 1 Mbit/s within 5 %, and the
    /// excess is tail-dropped rather than queued without bound.
    #[test]
    fn rate_limit_is_honoured_within_5_percent() {
        let cfg = LinkConfig {
            rate_kbps: 1000,
            queue_ms: 100,
            ..Default::default()
        };
        let (bytes, delays, link) = drive(cfg, 1, 2000, 125, 10);
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((kbps - 1000.0).abs() < 50.0, "got {kbps} kbit/s");
        assert!(link.stats().tail_dropped > 0);
        // The queue is bounded: nobody waited much longer than queue_ms.
        let max = delays.iter().cloned().fold(0.0, f64::max);
        assert!(max <= 102.0, "max queueing delay {max} ms");
    }

    /// Under the rate, nothing is dropped and the queue stays empty.
    #[test]
    fn under_the_rate_nothing_waits() {
        let cfg = LinkConfig {
            rate_kbps: 1000,
            burst_bytes: 1500,
            ..Default::default()
        };
        let (bytes, delays, link) = drive(cfg, 1, 500, 200, 4);
        assert_eq!(link.stats().tail_dropped, 0);
        assert_eq!(bytes, 500 * 200 * 4);
        assert!(delays.iter().all(|&d| d < 2.0));
    }

    #[test]
    fn loss_rate_within_tolerance_and_seeded() {
        let cfg = LinkConfig {
            loss_percent: 5.0,
            ..Default::default()
        };
        let (_, _, a) = drive(cfg.clone(), 42, 1000, 50, 20);
        let s = a.stats();
        let rate = s.lost as f64 / s.offered as f64 * 100.0;
        // 20,000 Bernoulli trials: sd = sqrt(p(1-p)/n) ≈ 0.15 %; allow > 3 sd.
        assert!((rate - 5.0).abs() < 0.5, "loss {rate} %");
        let (_, _, b) = drive(cfg.clone(), 42, 1000, 50, 20);
        assert_eq!(b.stats().lost, s.lost, "same seed, same losses");
        let (_, _, c) = drive(cfg, 43, 1000, 50, 20);
        assert_ne!(c.stats().lost, s.lost, "another seed, other losses");
    }

    /// Delay + uniform jitter with reordering allowed: the delays span [d-j, d+j] with mean d.
    #[test]
    fn delay_and_jitter_distribution() {
        let cfg = LinkConfig {
            delay_ms: 40.0,
            jitter_ms: 10.0,
            reorder: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut link = Link::new(cfg, 7, t0);
        let mut delays = Vec::new();
        for i in 0..5000u64 {
            link.push(t0, i.to_be_bytes().to_vec());
        }
        let mut now = t0;
        while delays.len() < 5000 {
            while let Some(_p) = link.poll(now) {
                delays.push(now.duration_since(t0).as_secs_f64() * 1000.0);
            }
            now += ms(1);
            assert!(now < t0 + ms(1000), "packets stuck");
        }
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(0.0, f64::max);
        assert!((mean - 40.0).abs() < 1.0, "mean {mean}");
        assert!((29.0..=32.0).contains(&min), "min {min}");
        assert!((49.0..=51.0).contains(&max), "max {max}");
        // Roughly uniform: each quarter of the range holds about a quarter of the packets.
        let q = delays.iter().filter(|&&d| d < 35.0).count() as f64 / 5000.0;
        assert!((q - 0.25).abs() < 0.05, "share below d-j/2: {q}");
    }

    /// Without reordering, jitter never lets a packet overtake an earlier one.
    #[test]
    fn no_reordering_by_default() {
        let cfg = LinkConfig {
            delay_ms: 20.0,
            jitter_ms: 15.0,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut link = Link::new(cfg, 3, t0);
        let mut out = Vec::new();
        for i in 0..2000u64 {
            let now = t0 + Duration::from_micros(i * 500);
            link.push(now, i.to_be_bytes().to_vec());
            while let Some(p) = link.poll(now) {
                out.push(u64::from_be_bytes(p[..8].try_into().expect("8 bytes")));
            }
        }
        let end = t0 + ms(2000);
        while let Some(p) = link.poll(end) {
            out.push(u64::from_be_bytes(p[..8].try_into().expect("8 bytes")));
        }
        assert_eq!(out.len(), 2000);
        assert!(out.windows(2).all(|w| w[0] < w[1]), "reordered");
    }

    /// A schedule steps the rate down and up again: each phase delivers its own rate.
    #[test]
    fn schedule_changes_the_rate_over_time() {
        let cfg = LinkConfig {
            rate_kbps: 2000,
            queue_ms: 100,
            schedule: vec![
                LinkStep {
                    at: Duration::from_secs(4),
                    rate_kbps: Some(500),
                    ..Default::default()
                },
                LinkStep {
                    at: Duration::from_secs(8),
                    rate_kbps: Some(2000),
                    loss_percent: Some(10.0),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(!cfg.is_perfect());
        assert_eq!(Link::rate_at(&cfg, Duration::from_secs(3)), 2000);
        assert_eq!(Link::rate_at(&cfg, Duration::from_secs(5)), 500);
        assert_eq!(Link::rate_at(&cfg, Duration::from_secs(9)), 2000);
        // 4 Mbit/s offered; count what leaves in each phase.
        let t0 = Instant::now();
        let mut link = Link::new(cfg, 5, t0);
        let mut per_phase = [0u64; 3];
        let step_us = 250; // 4000 pps × 125 B = 4 Mbit/s
        for n in 0..(12_000_000 / step_us) {
            let now = t0 + Duration::from_micros(n * step_us);
            link.push(now, vec![0u8; 125]);
            while let Some(p) = link.poll(now) {
                let phase = match now.duration_since(t0).as_secs() {
                    0..4 => 0,
                    4..8 => 1,
                    _ => 2,
                };
                per_phase[phase] += p.len() as u64;
            }
        }
        let kbps: Vec<f64> = per_phase.iter().map(|b| *b as f64 * 8.0 / 4.0 / 1000.0).collect();
        assert!((kbps[0] - 2000.0).abs() < 100.0, "{kbps:?}");
        assert!((kbps[1] - 500.0).abs() < 50.0, "{kbps:?}");
        assert!((kbps[2] - 2000.0).abs() < 100.0, "{kbps:?}");
        assert!(link.stats().lost > 0, "the last step's loss applies");
        assert_eq!(link.cfg.rate_kbps, 2000);
    }

    #[test]
    fn schedule_parses_and_validates() {
        let cfg: LinkConfig = toml::from_str(
            "rate_kbps = 3000\nschedule = [{at = \"10s\", rate_kbps = 600}, {at = \"25s\", rate_kbps = 3000}]",
        )
        .expect("parses");
        assert_eq!(cfg.schedule.len(), 2);
        assert_eq!(cfg.schedule[0].at, Duration::from_secs(10));
        assert!(cfg.validate("d").is_ok());
        let bad: LinkConfig =
            toml::from_str("schedule = [{at = \"10s\", rate_kbps = 600}, {at = \"5s\", loss_percent = 1.0}]")
                .expect("parses");
        assert!(bad.validate("d").unwrap_err().contains("in order"));
        assert!(toml::from_str::<LinkConfig>("schedule = [{at = \"1s\", rate = 1}]").is_err());
    }

    #[test]
    fn validate_rejects_nonsense() {
        let bad = LinkConfig {
            loss_percent: 120.0,
            ..Default::default()
        };
        assert!(bad.validate("uplink").unwrap_err().contains("uplink.loss_percent"));
    }
}
