//! Bitrate measurement for the allocator (spec/media.md §3.1): a sliding-window rate meter and a
//! per-source table of layers (encoding × spatial × temporal) that reports each layer's bitrate
//! including its dependencies.
//!
//! Both are plain values fed with `now`; [`RateMeter::add`] is called per packet and neither
//! allocates nor loops over more than the window's buckets.

use std::time::{Duration, Instant};

/// Bucket width (JVB's GoogleCc2 setting: 20 ms buckets).
pub const BUCKET: Duration = Duration::from_millis(20);
/// Number of buckets in the window (1 s / 20 ms).
pub const BUCKETS: usize = 50;
const BUCKET_US: u64 = 20_000;
const WINDOW_US: u64 = BUCKET_US * BUCKETS as u64;

/// Bytes per 20 ms bucket over the last second.
#[derive(Debug, Clone)]
pub struct RateMeter {
    buckets: [u64; BUCKETS],
    /// Sum of `buckets`.
    total: u64,
    /// The instant all bucket numbers count from (the first sample).
    epoch: Option<Instant>,
    /// Absolute number of the newest bucket (since `epoch`).
    head: u64,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateMeter {
    pub fn new() -> Self {
        Self {
            buckets: [0; BUCKETS],
            total: 0,
            epoch: None,
            head: 0,
        }
    }

    /// Accounts `bytes` received at `now`. Samples older than the newest bucket are added to it
    /// (the caller's clock is monotonic; a late sample only shifts by < 20 ms).
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let epoch = *self.epoch.get_or_insert(now);
        let n = bucket_of(epoch, now);
        self.advance(n);
        let i = (self.head % BUCKETS as u64) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(bytes as u64);
        self.total = self.total.saturating_add(bytes as u64);
    }

    /// The rate over the window ending at `now`, in bits per second. Until one window has
    /// passed since the first sample, the rate is over the time elapsed so far (as JVB's
    /// `RateStatistics`), so a stream is not under-estimated in its first second.
    pub fn rate_bps(&mut self, now: Instant) -> u64 {
        let Some(epoch) = self.epoch else {
            return 0;
        };
        let n = bucket_of(epoch, now);
        self.advance(n);
        if self.total == 0 {
            return 0;
        }
        let span_us = ((self.head + 1) * BUCKET_US).min(WINDOW_US);
        (u128::from(self.total) * 8 * 1_000_000 / u128::from(span_us)) as u64
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Moves the head to bucket `n`, clearing the buckets that fell out of the window.
    fn advance(&mut self, n: u64) {
        if n <= self.head {
            return;
        }
        let steps = (n - self.head).min(BUCKETS as u64);
        for k in 1..=steps {
            let i = ((self.head + k) % BUCKETS as u64) as usize;
            self.total -= self.buckets[i];
            self.buckets[i] = 0;
        }
        self.head = n;
    }
}

fn bucket_of(epoch: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(epoch).as_micros() / u128::from(BUCKET_US)) as u64
}

/// A layer's position in a source: simulcast encoding, spatial and temporal layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId {
    pub encoding: u8,
    pub spatial: u8,
    pub temporal: u8,
}

impl LayerId {
    pub const fn new(encoding: u8, spatial: u8, temporal: u8) -> Self {
        Self {
            encoding,
            spatial,
            temporal,
        }
    }

    /// JVB's layer index `(eid << 6) | (sid << 3) | tid`.
    pub fn index(self) -> u32 {
        (u32::from(self.encoding) << 6) | (u32::from(self.spatial) << 3) | u32::from(self.temporal)
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "E{}S{}T{}", self.encoding, self.spatial, self.temporal)
    }
}

/// Rate meters for every layer of one source.
///
/// Dependencies: a layer depends on the lower temporal layers of its spatial layer and on the
/// lower spatial layers (up to the same temporal layer) of the same encoding; encodings
/// (simulcast) are independent.
#[derive(Debug, Clone)]
pub struct LayerTable {
    encodings: u8,
    spatial: u8,
    temporal: u8,
    meters: Vec<RateMeter>,
}

impl LayerTable {
    /// A table for `encodings × spatial × temporal` layers (JVB assumes 1 spatial × 3 temporal
    /// per encoding). Each dimension is at least 1.
    pub fn new(encodings: u8, spatial: u8, temporal: u8) -> Self {
        let (e, s, t) = (encodings.max(1), spatial.max(1), temporal.max(1));
        let n = usize::from(e) * usize::from(s) * usize::from(t);
        Self {
            encodings: e,
            spatial: s,
            temporal: t,
            meters: vec![RateMeter::new(); n],
        }
    }

    pub fn dimensions(&self) -> (u8, u8, u8) {
        (self.encodings, self.spatial, self.temporal)
    }

    /// Accounts a packet of `bytes` of `layer` at `now`. Packets of layers outside the table
    /// are ignored and reported as `false` (the caller counts them).
    pub fn add(&mut self, now: Instant, layer: LayerId, bytes: usize) -> bool {
        match self.slot(layer) {
            Some(i) => {
                self.meters[i].add(now, bytes);
                true
            }
            None => false,
        }
    }

    /// The layer's own bitrate (without dependencies), bps.
    pub fn own_bps(&mut self, now: Instant, layer: LayerId) -> u64 {
        match self.slot(layer) {
            Some(i) => self.meters[i].rate_bps(now),
            None => 0,
        }
    }

    /// The bitrate needed to forward `layer`: its own plus all its dependencies, bps.
    pub fn bitrate_bps(&mut self, now: Instant, layer: LayerId) -> u64 {
        if self.slot(layer).is_none() {
            return 0;
        }
        let mut sum = 0u64;
        for s in 0..=layer.spatial {
            for t in 0..=layer.temporal {
                sum = sum.saturating_add(self.own_bps(now, LayerId::new(layer.encoding, s, t)));
            }
        }
        sum
    }

    /// A layer is active iff its bitrate including dependencies is non-zero (JVB's rule).
    pub fn is_active(&mut self, now: Instant, layer: LayerId) -> bool {
        self.bitrate_bps(now, layer) > 0
    }

    /// Every layer of the table in JVB's order (encoding, then spatial, then temporal).
    pub fn layers(&self) -> impl Iterator<Item = LayerId> + '_ {
        (0..self.encodings).flat_map(move |e| {
            (0..self.spatial).flat_map(move |s| (0..self.temporal).map(move |t| LayerId::new(e, s, t)))
        })
    }

    fn slot(&self, l: LayerId) -> Option<usize> {
        if l.encoding >= self.encodings || l.spatial >= self.spatial || l.temporal >= self.temporal {
            return None;
        }
        let (s, t) = (usize::from(self.spatial), usize::from(self.temporal));
        Some((usize::from(l.encoding) * s + usize::from(l.spatial)) * t + usize::from(l.temporal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// A constant 1 Mbps feed (1250-byte packets every 10 ms) measures 1 Mbps within 1 %.
    #[test]
    fn constant_feed_measures_its_rate() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        for i in 0..300u64 {
            m.add(ms(t0, i * 10), 1250);
        }
        let r = m.rate_bps(ms(t0, 2995));
        assert!((990_000..=1_010_000).contains(&r), "rate {r}");
    }

    /// After a second of silence the meter reads zero, and it recovers when packets resume.
    #[test]
    fn silence_reads_zero() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        for i in 0..100u64 {
            m.add(ms(t0, i * 10), 1250);
        }
        assert!(m.rate_bps(ms(t0, 1000)) > 0);
        assert_eq!(m.rate_bps(ms(t0, 2100)), 0);
        assert_eq!(m.rate_bps(ms(t0, 60_000)), 0);
        m.add(ms(t0, 60_010), 1250);
        assert!(m.rate_bps(ms(t0, 60_015)) > 0);
    }

    /// Half the window of data after a long silence reads as half the rate.
    #[test]
    fn partial_window_is_averaged_over_the_full_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        for i in 0..200u64 {
            m.add(ms(t0, i * 10), 1250);
        }
        // Stop at 2 s; at 2.5 s half of the window still holds 1 Mbps data.
        let r = m.rate_bps(ms(t0, 2490));
        assert!((480_000..=540_000).contains(&r), "rate {r}");
    }

    /// Layer bitrates include the lower temporal and spatial layers of the same encoding only.
    #[test]
    fn layer_bitrate_includes_dependencies() {
        let t0 = Instant::now();
        let mut tab = LayerTable::new(2, 2, 3);
        for i in 0..100u64 {
            let now = ms(t0, i * 10);
            assert!(tab.add(now, LayerId::new(0, 0, 0), 125)); // 100 kbps
            assert!(tab.add(now, LayerId::new(0, 0, 1), 250)); // 200 kbps
            assert!(tab.add(now, LayerId::new(0, 1, 0), 500)); // 400 kbps
            assert!(tab.add(now, LayerId::new(1, 0, 0), 1000)); // 800 kbps
        }
        assert!(!tab.add(t0, LayerId::new(2, 0, 0), 1));
        let now = ms(t0, 995);
        let near = |a: u64, b: u64| a.abs_diff(b) <= b / 50;
        assert!(near(tab.bitrate_bps(now, LayerId::new(0, 0, 0)), 100_000));
        assert!(near(tab.bitrate_bps(now, LayerId::new(0, 0, 1)), 300_000));
        assert!(near(tab.bitrate_bps(now, LayerId::new(0, 0, 2)), 300_000));
        assert!(near(tab.bitrate_bps(now, LayerId::new(0, 1, 0)), 500_000));
        assert!(near(tab.bitrate_bps(now, LayerId::new(0, 1, 1)), 700_000));
        assert!(near(tab.bitrate_bps(now, LayerId::new(1, 0, 0)), 800_000));
        assert!(near(tab.own_bps(now, LayerId::new(0, 0, 1)), 200_000));
        // E1S1 sends nothing itself but is active through its dependency E1S0 (JVB's rule).
        assert_eq!(tab.own_bps(now, LayerId::new(1, 1, 0)), 0);
        assert!(tab.is_active(now, LayerId::new(1, 1, 0)));
        assert!(tab.is_active(now, LayerId::new(0, 1, 2)));
        assert!(!tab.is_active(ms(t0, 3000), LayerId::new(0, 1, 2)));
        assert_eq!(tab.layers().count(), 12);
        assert_eq!(LayerId::new(2, 1, 2).index(), (2 << 6) | (1 << 3) | 2);
        assert_eq!(LayerId::new(2, 1, 2).to_string(), "E2S1T2");
    }
}
