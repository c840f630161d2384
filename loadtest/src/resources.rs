//! The bridge's resources over a run: RSS (`VmRSS`), threads (`/proc/<pid>/status`) and open
//! file descriptors (`/proc/<pid>/fd`) every few seconds, plus its `/colibri/stats` conference
//! and endpoint counts at the end and after the harness has expired everything. A soak run
//! (scripts/soak.sh) judges leaks from these: RSS after warm-up against RSS at the end, and the
//! fd count before the run against after it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The `[resources]` table of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConfig {
    /// Time between samples.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The RSS baseline is the first sample at least this long after the start of the run;
    /// absent: the start of the measured window.
    #[serde(with = "humantime_serde")]
    pub warmup: Option<Duration>,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            warmup: None,
        }
    }
}

impl ResourceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("resources.interval must be at least 100ms".into());
        }
        Ok(())
    }
}

/// One sample of the bridge process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResourceSample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    pub rss_mib: f64,
    pub fds: u32,
    pub threads: u32,
}

/// Sample process `pid` now; `None` when it is gone or /proc is unreadable.
pub fn sample(pid: u32, t_s: f64) -> Option<ResourceSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (rss_kib, threads) = parse_status(&status)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u32;
    Some(ResourceSample {
        t_s,
        rss_mib: rss_kib as f64 / 1024.0,
        fds,
        threads,
    })
}

/// `VmRSS` (KiB) and `Threads` from /proc/<pid>/status.
fn parse_status(status: &str) -> Option<(u64, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, u32::try_from(field("Threads:")?).ok()?))
}

/// Sample `pid` every `interval` until `stop` flips; returns the samples.
pub async fn sample_loop(
    pid: u32,
    epoch: Instant,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<ResourceSample> {
    let mut out = Vec::new();
    let mut next = Instant::now();
    loop {
        if let Some(s) = sample(pid, epoch.elapsed().as_secs_f64()) {
            out.push(s);
        }
        next += interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    if let Some(s) = sample(pid, epoch.elapsed().as_secs_f64()) {
        out.push(s);
    }
    out
}

/// Conferences and endpoints the bridge reports on `/colibri/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BridgeCounts {
    pub conferences: u64,
    pub endpoints: u64,
}

pub async fn bridge_counts(rest: &str) -> Option<BridgeCounts> {
    let url = format!("{}/colibri/stats", rest.trim_end_matches('/'));
    tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url).call().ok()?.body_mut().read_to_string().ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(BridgeCounts {
            conferences: v.get("conferences")?.as_u64()?,
            endpoints: v.get("endpoints")?.as_u64()?,
        })
    })
    .await
    .ok()
    .flatten()
}

/// After the harness expired its conferences: poll `/colibri/stats` until it shows none (at
/// most `within`; Palim caches that page for `rest.stats_interval`, 5 s by default), then
/// sample the process once more.
pub async fn after_expire(
    rest: &str,
    pid: Option<u32>,
    epoch: Instant,
    within: Duration,
) -> (Option<BridgeCounts>, Option<ResourceSample>) {
    let deadline = Instant::now() + within;
    let mut counts = bridge_counts(rest).await;
    while counts.is_some_and(|c| c.conferences > 0 || c.endpoints > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        counts = bridge_counts(rest).await;
    }
    // Let the bridge close what it closes after the counts drop (sockets, tasks).
    tokio::time::sleep(Duration::from_millis(500)).await;
    (counts, pid.and_then(|p| sample(p, epoch.elapsed().as_secs_f64())))
}

/// The resources part of the summary.
#[derive(Debug, Default, Serialize)]
pub struct ResourceReport {
    pub interval_s: f64,
    /// When the RSS baseline was taken (seconds since the start of the run).
    pub warmup_s: f64,
    /// Before the first endpoint joined.
    pub before: Option<ResourceSample>,
    pub samples: Vec<ResourceSample>,
    /// The first sample at or after the warm-up.
    pub rss_start_mib: Option<f64>,
    /// The last sample while the load ran.
    pub rss_end_mib: Option<f64>,
    /// The largest sample after the warm-up.
    pub rss_max_mib: Option<f64>,
    /// (end − start) / start, in percent.
    pub rss_drift_percent: Option<f64>,
    pub fds_start: Option<u32>,
    pub fds_end: Option<u32>,
    pub fds_max: Option<u32>,
    pub threads_start: Option<u32>,
    pub threads_end: Option<u32>,
    /// `/colibri/stats` just before the harness stopped its endpoints.
    pub stats_at_end: Option<BridgeCounts>,
    /// `/colibri/stats` after the harness expired everything.
    pub stats_after_expire: Option<BridgeCounts>,
    /// The process after the harness expired everything.
    pub after_expire: Option<ResourceSample>,
    /// `after_expire.fds − before.fds`.
    pub fd_drift: Option<i64>,
}

impl ResourceReport {
    pub fn new(
        interval: Duration,
        warmup_s: f64,
        before: Option<ResourceSample>,
        samples: Vec<ResourceSample>,
        stats_at_end: Option<BridgeCounts>,
        (stats_after_expire, after_expire): (Option<BridgeCounts>, Option<ResourceSample>),
    ) -> Self {
        let warm: Vec<&ResourceSample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
        let start = warm.first().copied();
        let end = samples.last();
        let rss_start_mib = start.map(|s| s.rss_mib);
        let rss_end_mib = end.map(|s| s.rss_mib);
        Self {
            interval_s: interval.as_secs_f64(),
            warmup_s,
            before,
            rss_start_mib,
            rss_end_mib,
            rss_max_mib: warm.iter().map(|s| s.rss_mib).reduce(f64::max),
            rss_drift_percent: match (rss_start_mib, rss_end_mib) {
                (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a * 100.0),
                _ => None,
            },
            fds_start: start.map(|s| s.fds),
            fds_end: end.map(|s| s.fds),
            fds_max: warm.iter().map(|s| s.fds).max(),
            threads_start: start.map(|s| s.threads),
            threads_end: end.map(|s| s.threads),
            stats_at_end,
            stats_after_expire,
            fd_drift: match (before, after_expire) {
                (Some(b), Some(a)) => Some(i64::from(a.fds) - i64::from(b.fds)),
                _ => None,
            },
            after_expire,
            samples,
        }
    }

    /// Label/value rows for the console and the HTML report.
    pub fn rows(&self) -> Vec<(String, String)> {
        let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
        let u = |v: Option<u32>| v.map_or("n/a".into(), |v| v.to_string());
        let counts = |c: Option<BridgeCounts>| {
            c.map_or("n/a".into(), |c| {
                format!("{} conferences, {} endpoints", c.conferences, c.endpoints)
            })
        };
        vec![
            (
                "bridge RSS".into(),
                format!(
                    "after warm-up (t = {:.0} s) {} MiB, end {} MiB, max {} MiB, drift {} %",
                    self.warmup_s,
                    f(self.rss_start_mib),
                    f(self.rss_end_mib),
                    f(self.rss_max_mib),
                    self.rss_drift_percent.map_or("n/a".into(), |d| format!("{d:+.2}")),
                ),
            ),
            (
                "bridge fds / threads".into(),
                format!(
                    "fds before {}, after warm-up {}, end {}, max {}, after expire {} (drift {}); threads {} → {}",
                    u(self.before.map(|s| s.fds)),
                    u(self.fds_start),
                    u(self.fds_end),
                    u(self.fds_max),
                    u(self.after_expire.map(|s| s.fds)),
                    self.fd_drift.map_or("n/a".into(), |d| format!("{d:+}")),
                    u(self.threads_start),
                    u(self.threads_end),
                ),
            ),
            (
                "bridge /colibri/stats".into(),
                format!(
                    "at end: {}; after expire: {}",
                    counts(self.stats_at_end),
                    counts(self.stats_after_expire)
                ),
            ),
        ]
    }

    /// Plots: RSS, and fds with threads, over the run.
    pub fn charts(&self) -> Vec<String> {
        use crate::report::{line_chart, Series};
        let pts = |f: &dyn Fn(&ResourceSample) -> f64| -> Vec<(f64, f64)> {
            self.samples.iter().map(|s| (s.t_s, f(s))).collect()
        };
        vec![
            line_chart(
                "Bridge RSS",
                "s",
                "MiB",
                &[Series {
                    name: "RSS MiB".into(),
                    points: pts(&|s| s.rss_mib),
                }],
            ),
            line_chart(
                "Bridge open file descriptors and threads",
                "s",
                "count",
                &[
                    Series {
                        name: "fds".into(),
                        points: pts(&|s| f64::from(s.fds)),
                    },
                    Series {
                        name: "threads".into(),
                        points: pts(&|s| f64::from(s.threads)),
                    },
                ],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing_and_self_sample() {
        let status = "Name:\tpalim\nVmPeak:\t 9999 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status), Some((20480, 7)));
        assert_eq!(parse_status("Name: x\n"), None);
        let me = sample(std::process::id(), 1.0).expect("own /proc");
        assert!(me.rss_mib > 1.0 && me.fds >= 3 && me.threads >= 1, "{me:?}");
        assert!(sample(u32::MAX, 0.0).is_none());
    }

    #[test]
    fn report_takes_the_baseline_after_warmup() {
        let s = |t_s: f64, rss_mib: f64, fds: u32| ResourceSample {
            t_s,
            rss_mib,
            fds,
            threads: 4,
        };
        let samples = vec![
            s(0.0, 10.0, 20),
            s(5.0, 50.0, 30),
            s(10.0, 100.0, 31),
            s(15.0, 104.0, 30),
        ];
        let r = ResourceReport::new(
            Duration::from_secs(5),
            10.0,
            Some(s(0.0, 9.0, 20)),
            samples,
            Some(BridgeCounts {
                conferences: 2,
                endpoints: 10,
            }),
            (Some(BridgeCounts::default()), Some(s(16.0, 90.0, 21))),
        );
        assert_eq!(
            (r.rss_start_mib, r.rss_end_mib, r.rss_max_mib),
            (Some(100.0), Some(104.0), Some(104.0))
        );
        let d = r.rss_drift_percent.expect("drift");
        assert!((d - 4.0).abs() < 1e-9, "{d}");
        assert_eq!(
            (r.fds_start, r.fds_end, r.fds_max, r.fd_drift),
            (Some(31), Some(30), Some(31), Some(1))
        );
        let rows = r.rows();
        assert!(rows[0].1.contains("drift +4.00 %"), "{rows:?}");
        assert!(
            rows[2].1.contains("after expire: 0 conferences, 0 endpoints"),
            "{rows:?}"
        );
        assert_eq!(r.charts().len(), 2);
    }
}
