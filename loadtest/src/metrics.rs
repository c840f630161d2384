//! Per-second measurements: endpoints accumulate a [`Bin`] locally and add it to the shared
//! [`Collector`] once per second (one lock per endpoint per second, none per packet); the run
//! loop adds the bridge's and the harness's own CPU. Latency lives in a log-linear
//! [`Histogram`] (about 3 % resolution) so bins merge exactly and memory stays bounded.

use std::collections::BTreeMap;

use serde::Serialize;

/// Sub-buckets per power of two: 32 gives ≤ 3.1 % relative error.
const SUB: u32 = 32;
const LINEAR: u32 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (32 - 6) * SUB) as usize;

/// A log-linear histogram of `u32` values (here: microseconds).
#[derive(Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={})", self.total)
    }
}

impl Histogram {
    fn index(v: u32) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 31 - v.leading_zeros(); // ≥ 6
        let mantissa = (v >> (exp - 5)) & (SUB - 1);
        (LINEAR + (exp - 6) * SUB + mantissa) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> f64 {
        let i = i as u32;
        if i < LINEAR {
            return f64::from(i);
        }
        let exp = (i - LINEAR) / SUB + 6;
        let mantissa = (i - LINEAR) % SUB;
        let low = f64::from((SUB + mantissa) << (exp - 5));
        low + f64::from(1u32 << (exp - 5)) / 2.0
    }

    pub fn record(&mut self, v: u32) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.total = 0;
        }
    }

    /// The p-th percentile (0–100), NaN when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(BUCKETS - 1)
    }
}

/// One second's worth of measurements, from one endpoint or (merged) from all.
#[derive(Debug, Clone, Default)]
pub struct Bin {
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets the receivers should have got, from the per-stream counters.
    pub expected: u64,
    pub latency_us: Histogram,
    /// How late endpoint tasks woke for their timers (the harness's scheduling lag).
    pub lag_us: Histogram,
    pub frames: u64,
    pub freezes: u64,
    pub violations: u64,
    /// Receiver-source pairs by the height of the layer received (0: unknown/none).
    pub layers: BTreeMap<u32, u32>,
    /// Video RTP packets expected from the sequence numbers (per SSRC, highest − first + 1,
    /// counted as the highest advances) and received (retransmissions included).
    pub rtp_expected: u64,
    pub rtp_received: u64,
    /// Lowest and highest height of the video frames completed (0: none).
    pub frame_height_min: u32,
    pub frame_height_max: u32,
}

/// The smaller non-zero of two heights (0: none).
fn min_height(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

impl Bin {
    pub fn merge(&mut self, o: &Bin) {
        self.sent_packets += o.sent_packets;
        self.sent_bytes += o.sent_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.expected += o.expected;
        self.latency_us.merge(&o.latency_us);
        self.lag_us.merge(&o.lag_us);
        self.frames += o.frames;
        self.freezes += o.freezes;
        self.violations += o.violations;
        self.rtp_expected += o.rtp_expected;
        self.rtp_received += o.rtp_received;
        self.frame_height_min = min_height(self.frame_height_min, o.frame_height_min);
        self.frame_height_max = self.frame_height_max.max(o.frame_height_max);
        for (h, n) in &o.layers {
            *self.layers.entry(*h).or_default() += n;
        }
    }

    pub fn clear(&mut self) {
        let mut latency_us = std::mem::take(&mut self.latency_us);
        let mut lag_us = std::mem::take(&mut self.lag_us);
        latency_us.clear();
        lag_us.clear();
        *self = Bin {
            latency_us,
            lag_us,
            ..Default::default()
        };
    }

    pub fn loss_percent(&self) -> f64 {
        loss_percent(self.expected, self.rx_packets)
    }
}

pub fn loss_percent(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(received) as f64 / expected as f64
    }
}

/// Process-level samples the run loop takes each second.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// CPU seconds used in this second (utime + stime delta).
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

/// All bins of a run, indexed by seconds since the run's epoch.
#[derive(Debug, Default)]
pub struct Collector {
    pub bins: Vec<Bin>,
    pub bridge: Vec<Option<ProcSample>>,
    pub harness: Vec<Option<ProcSample>>,
    /// RTP packets the bridge reported sending in that second.
    pub forwarded: Vec<Option<u64>>,
    pub endpoints: Vec<u32>,
    /// Per endpoint (global index), per second: what it received (only kept when
    /// [`Collector::keep_per_endpoint`] is set, i.e. for small runs).
    pub per_endpoint: BTreeMap<u32, Vec<EndpointSecond>>,
    pub keep_per_endpoint: bool,
    /// Per endpoint (global index), per second: the bridge's downlink estimate in bps, from its
    /// `/debug` (None: not sampled, or the bridge has none).
    pub bwe: BTreeMap<u32, Vec<Option<u64>>>,
}

/// One endpoint's second, as received.
#[derive(Debug, Clone, Default)]
pub struct EndpointSecond {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub expected: u64,
    pub rtp_expected: u64,
    pub rtp_received: u64,
    pub frame_height_min: u32,
    pub frame_height_max: u32,
    /// Video senders by the height received from them (0: none).
    pub layers: BTreeMap<u32, u32>,
}

impl Collector {
    pub fn add(&mut self, second: usize, bin: &Bin) {
        if self.bins.len() <= second {
            self.bins.resize_with(second + 1, Bin::default);
        }
        self.bins[second].merge(bin);
    }

    /// Add endpoint `index`'s bin for `second` (to the totals, and to its own series if kept).
    pub fn add_from(&mut self, index: u32, second: usize, bin: &Bin) {
        self.add(second, bin);
        if !self.keep_per_endpoint {
            return;
        }
        let v = self.per_endpoint.entry(index).or_default();
        grow(v, second);
        let e = &mut v[second];
        e.rx_packets += bin.rx_packets;
        e.rx_bytes += bin.rx_bytes;
        e.expected += bin.expected;
        e.rtp_expected += bin.rtp_expected;
        e.rtp_received += bin.rtp_received;
        e.frame_height_min = min_height(e.frame_height_min, bin.frame_height_min);
        e.frame_height_max = e.frame_height_max.max(bin.frame_height_max);
        for (h, n) in &bin.layers {
            *e.layers.entry(*h).or_default() += n;
        }
    }

    /// The bridge's estimate for endpoint `index` in `second`.
    pub fn set_bwe(&mut self, index: u32, second: usize, bps: Option<u64>) {
        let v = self.bwe.entry(index).or_default();
        grow(v, second);
        v[second] = bps;
    }

    /// Per-endpoint series (empty unless kept); `capacity_kbps(index, second)` gives the
    /// emulated downlink rate for the plots and checks.
    pub fn endpoint_series(&self, capacity_kbps: &dyn Fn(u32, u32) -> Option<f64>) -> Vec<EndpointSeries> {
        let mut out = Vec::new();
        for (&index, secs) in &self.per_endpoint {
            let bwe = self.bwe.get(&index);
            let n = secs.len().max(bwe.map_or(0, |b| b.len()));
            let points = (0..n)
                .map(|s| {
                    let e = secs.get(s).cloned().unwrap_or_default();
                    EndpointPoint {
                        t: s as u32,
                        rx_kbps: e.rx_bytes as f64 * 8.0 / 1000.0,
                        rx_packets: e.rx_packets,
                        expected: e.expected,
                        loss_percent: loss_percent(e.expected, e.rx_packets),
                        rtp_expected: e.rtp_expected,
                        rtp_received: e.rtp_received,
                        rtp_loss_percent: loss_percent(e.rtp_expected, e.rtp_received),
                        frame_height_min: e.frame_height_min,
                        frame_height_max: e.frame_height_max,
                        height: e
                            .layers
                            .iter()
                            .filter(|(_, n)| **n > 0)
                            .map(|(h, _)| *h)
                            .max()
                            .unwrap_or(0),
                        bwe_kbps: bwe.and_then(|b| b.get(s).copied().flatten()).map(|b| b as f64 / 1000.0),
                        capacity_kbps: capacity_kbps(index, s as u32),
                    }
                })
                .collect();
            out.push(EndpointSeries { index, points });
        }
        out
    }

    pub fn set_proc(&mut self, second: usize, bridge: Option<ProcSample>, harness: Option<ProcSample>) {
        grow(&mut self.bridge, second);
        grow(&mut self.harness, second);
        self.bridge[second] = bridge;
        self.harness[second] = harness;
    }

    pub fn set_forwarded(&mut self, second: usize, packets: Option<u64>) {
        grow(&mut self.forwarded, second);
        self.forwarded[second] = packets;
    }

    pub fn set_endpoints(&mut self, second: usize, n: u32) {
        if self.endpoints.len() <= second {
            let last = self.endpoints.last().copied().unwrap_or(0);
            self.endpoints.resize(second + 1, last);
        }
        self.endpoints[second] = n;
    }

    /// Everything from second `from` (inclusive) to `to` (exclusive), merged.
    pub fn window(&self, from: usize, to: usize) -> Bin {
        let mut b = Bin::default();
        for bin in self.bins.iter().take(to).skip(from) {
            b.merge(bin);
        }
        b
    }

    /// The per-second series of the run, for JSON and plots.
    pub fn series(&self) -> Vec<SecondPoint> {
        let n = self.bins.len().max(self.bridge.len()).max(self.endpoints.len());
        (0..n)
            .map(|s| {
                let empty = Bin::default();
                let b = self.bins.get(s).unwrap_or(&empty);
                let nan_none = |v: f64| if v.is_nan() { None } else { Some(v / 1000.0) };
                SecondPoint {
                    t: s as u32,
                    endpoints: self.endpoints.get(s).copied().unwrap_or(0),
                    sent_pps: b.sent_packets,
                    rx_pps: b.rx_packets,
                    rx_mbps: b.rx_bytes as f64 * 8.0 / 1e6,
                    loss_percent: b.loss_percent(),
                    latency_ms_p50: nan_none(b.latency_us.percentile(50.0)),
                    latency_ms_p95: nan_none(b.latency_us.percentile(95.0)),
                    latency_ms_p99: nan_none(b.latency_us.percentile(99.0)),
                    harness_lag_ms_p99: nan_none(b.lag_us.percentile(99.0)),
                    frames: b.frames,
                    freezes: b.freezes,
                    violations: b.violations,
                    layers: b.layers.clone(),
                    bridge_cpu_percent: self.bridge.get(s).copied().flatten().map(|p| p.cpu_s * 100.0),
                    bridge_rss_mib: self
                        .bridge
                        .get(s)
                        .copied()
                        .flatten()
                        .map(|p| p.rss_bytes as f64 / 1048576.0),
                    harness_cpu_percent: self.harness.get(s).copied().flatten().map(|p| p.cpu_s * 100.0),
                    bridge_forwarded_pps: self.forwarded.get(s).copied().flatten(),
                }
            })
            .collect()
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, second: usize) {
    if v.len() <= second {
        v.resize(second + 1, T::default());
    }
}

/// One second of the run, as written to JSON and plotted.
#[derive(Debug, Clone, Serialize)]
pub struct SecondPoint {
    pub t: u32,
    pub endpoints: u32,
    pub sent_pps: u64,
    pub rx_pps: u64,
    pub rx_mbps: f64,
    pub loss_percent: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// p99 of how late endpoint tasks woke: large values mean the harness was the bottleneck.
    pub harness_lag_ms_p99: Option<f64>,
    pub frames: u64,
    pub freezes: u64,
    pub violations: u64,
    /// Receiver-source pairs by received height (0: none yet).
    pub layers: BTreeMap<u32, u32>,
    pub bridge_cpu_percent: Option<f64>,
    pub bridge_rss_mib: Option<f64>,
    pub harness_cpu_percent: Option<f64>,
    pub bridge_forwarded_pps: Option<u64>,
}

/// One endpoint's per-second series, as written to JSON and plotted.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EndpointSeries {
    pub index: u32,
    pub points: Vec<EndpointPoint>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EndpointPoint {
    pub t: u32,
    /// Media payload received (RTP payload bytes, as the totals count them).
    pub rx_kbps: f64,
    pub rx_packets: u64,
    pub expected: u64,
    /// Loss in this 1 s window, end to end per sender stream (tracking counters: a layer the
    /// bridge stops forwarding for less than 1 s counts as lost).
    pub loss_percent: f64,
    /// Video RTP loss in this 1 s window from sequence numbers, as the receiver's RTP stack
    /// (and its RR) sees it: retransmitted packets count as received.
    pub rtp_expected: u64,
    pub rtp_received: u64,
    pub rtp_loss_percent: f64,
    /// The highest layer height received from any video sender (0: none): the height of the
    /// last frame completed per sender, if within the last second, at the end of the second.
    pub height: u32,
    /// Lowest and highest height of the frames completed in this second (0: none).
    #[serde(default)]
    pub frame_height_min: u32,
    #[serde(default)]
    pub frame_height_max: u32,
    /// The bridge's downlink estimate for this endpoint.
    pub bwe_kbps: Option<f64>,
    /// The emulated downlink's rate (None: unlimited).
    pub capacity_kbps: Option<f64>,
}

/// CPU time (utime + stime, seconds) and RSS (bytes) of a process, from /proc/<pid>/stat.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The same for this process.
pub fn self_usage() -> Option<(f64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_proc_stat(stat: &str) -> Option<(f64, u64)> {
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // sysconf(_SC_CLK_TCK) is 100 on Linux x86_64 and arm64
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks, rss_pages * 4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles from the histogram are within its 3.1 % resolution of the exact ones.
    #[test]
    fn histogram_percentiles_match_exact_ones() {
        let mut h = Histogram::default();
        let mut exact: Vec<u32> = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Spread over 1 µs .. ~1 s, log-uniform-ish.
            let v = ((x >> 33) as u32 % 1_000) * (1 << ((x >> 20) % 10)) + 1;
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for p in [1.0, 50.0, 90.0, 95.0, 99.0, 99.9] {
            let rank = ((p / 100.0) * exact.len() as f64).ceil() as usize - 1;
            let e = f64::from(exact[rank]);
            let got = h.percentile(p);
            assert!((got - e).abs() <= e * 0.032 + 1.0, "p{p}: {got} vs {e}");
        }
        assert!(Histogram::default().percentile(50.0).is_nan());
    }

    #[test]
    fn histogram_buckets_are_monotone_and_cover_u32() {
        let mut last = 0;
        for v in [0u32, 1, 63, 64, 65, 127, 128, 1000, 65_535, 1 << 20, u32::MAX] {
            let i = Histogram::index(v);
            assert!(i >= last && i < BUCKETS, "{v} -> {i}");
            last = i;
            let mid = Histogram::value(i);
            assert!((mid - f64::from(v)).abs() <= f64::from(v) * 0.032 + 0.5, "{v} -> {mid}");
        }
    }

    #[test]
    fn merged_bins_equal_one_bin_fed_everything() {
        let mut a = Bin::default();
        let mut b = Bin::default();
        let mut all = Bin::default();
        for i in 0..1000u32 {
            let target = if i % 3 == 0 { &mut a } else { &mut b };
            target.latency_us.record(i * 7);
            target.rx_packets += 1;
            all.latency_us.record(i * 7);
            all.rx_packets += 1;
        }
        a.merge(&b);
        assert_eq!(a.latency_us, all.latency_us);
        assert_eq!(a.rx_packets, 1000);
    }

    #[test]
    fn collector_series_and_windows() {
        let mut c = Collector::default();
        let mut bin = Bin {
            rx_packets: 100,
            expected: 101,
            rx_bytes: 125_000,
            ..Default::default()
        };
        bin.latency_us.record(2000);
        c.add(0, &bin);
        c.add(2, &bin);
        c.add(2, &bin);
        c.set_proc(
            1,
            Some(ProcSample {
                cpu_s: 0.25,
                rss_bytes: 1 << 20,
            }),
            None,
        );
        c.set_endpoints(2, 6);
        let s = c.series();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].rx_pps, 200);
        assert!((s[0].rx_mbps - 1.0).abs() < 1e-9);
        assert_eq!(s[1].rx_pps, 0);
        assert_eq!(s[1].bridge_cpu_percent, Some(25.0));
        assert_eq!(s[1].bridge_rss_mib, Some(1.0));
        assert!(s[1].latency_ms_p99.is_none());
        let p = s[2].latency_ms_p50.expect("has samples");
        assert!((p - 2.0).abs() < 0.07, "{p}");
        let w = c.window(1, 3);
        assert_eq!((w.rx_packets, w.expected), (200, 202));
        assert!((w.loss_percent() - 100.0 * 2.0 / 202.0).abs() < 1e-9);
    }

    #[test]
    fn per_endpoint_series_when_kept() {
        let mut c = Collector::default();
        let mut bin = Bin {
            rx_packets: 90,
            expected: 100,
            rx_bytes: 1000,
            ..Default::default()
        };
        bin.layers.insert(360, 1);
        c.add_from(3, 1, &bin);
        assert!(c.per_endpoint.is_empty(), "not kept by default");
        c.keep_per_endpoint = true;
        c.add_from(3, 1, &bin);
        c.set_bwe(3, 2, Some(1_500_000));
        let s = c.endpoint_series(&|i, t| (i == 3 && t >= 2).then_some(600.0));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].index, 3);
        let p = &s[0].points;
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].height, 360);
        assert!((p[1].loss_percent - 10.0).abs() < 1e-9);
        assert!((p[1].rx_kbps - 8.0).abs() < 1e-9);
        assert_eq!(p[2].bwe_kbps, Some(1500.0));
        assert_eq!(p[2].capacity_kbps, Some(600.0));
        assert_eq!(p[0].bwe_kbps, None);
        // The totals saw both adds.
        assert_eq!(c.bins[1].rx_packets, 180);
    }

    #[test]
    fn proc_stat_parsing() {
        let line = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 1000 300 18446744073709551615";
        let (cpu, rss) = parse_proc_stat(line).expect("parses");
        assert!((cpu - 3.0).abs() < 1e-9);
        assert_eq!(rss, 300 * 4096);
        assert!(self_usage().is_some());
    }
}
