//! Memory-pressure shedding (robustness.md case 51): rather than be OOM-killed, the bridge stops
//! taking new work while its resident memory is close to its limit.
//!
//! A sampler task ([`run_sampler`], once per second, never per packet) reads the process's RSS
//! from `/proc/self/statm` and its memory limit: `[limits] memory_limit_mib`, or with 0 the
//! cgroup's (v2 `memory.max`, v1 `memory.limit_in_bytes`; the smallest along the path from the
//! process's cgroup up to the hierarchy's root, so a parent's limit counts too). At
//! `memory_shed_percent` of the limit it starts shedding and stops again below
//! `memory_resume_percent` (hysteresis, so a bridge at the threshold does not flap). While
//! shedding, `/about/health` answers 503 with the reason, the stress in `/colibri/stats` and in
//! the brewery presence is 1.0, and the Colibri2 handler refuses new conferences and endpoints
//! with `service-unavailable` "Limit reached: memory"; existing conferences go on.
//!
//! The pure parts (the decision, the file formats) take strings and numbers and are unit-tested;
//! only [`MemoryMonitor::sample`] touches the file system.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often [`run_sampler`] samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Limits at or above this are "no limit": cgroup v1 writes `PAGE_COUNTER_MAX × page size`
/// (9223372036854771712 on x86-64) when unlimited, and nothing real is this large.
const UNLIMITED: u64 = 1 << 62;

/// When to start and stop shedding, in percent of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Start shedding at this percentage of the limit.
    pub shed_percent: u8,
    /// Stop shedding below this percentage (less than `shed_percent`).
    pub resume_percent: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            shed_percent: 85,
            resume_percent: 75,
        }
    }
}

impl Thresholds {
    /// The decision, with hysteresis: not shedding → shed once `rss ≥ shed_percent` of `limit`;
    /// shedding → stop once `rss < resume_percent` of `limit`. No limit: never shed.
    pub fn should_shed(&self, shedding: bool, rss: u64, limit: Option<u64>) -> bool {
        let Some(limit) = limit else {
            return false;
        };
        let used = u128::from(rss) * 100;
        let at = |percent: u8| u128::from(limit) * u128::from(percent);
        if shedding {
            used >= at(self.resume_percent)
        } else {
            used >= at(self.shed_percent)
        }
    }
}

/// Where the limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// `[limits] memory_limit_mib`.
    Configured,
    /// A cgroup file, e.g. `/sys/fs/cgroup/memory/palim/memory.limit_in_bytes`.
    Cgroup(PathBuf),
}

/// One sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// Resident set size of this process, bytes (0 when `/proc` is unreadable).
    pub rss_bytes: u64,
    /// The limit in force, bytes; `None`: no limit known, never sheds.
    pub limit_bytes: Option<u64>,
    pub shedding: bool,
}

/// The shared state: the sampler writes it, health, stats, presence and the Colibri2 handler
/// read it (atomics; nothing waits).
#[derive(Debug)]
pub struct MemoryMonitor {
    thresholds: Thresholds,
    /// `memory_limit_mib` in bytes; `None` (0 in the file): detect from the cgroup.
    configured_limit: Option<u64>,
    rss: AtomicU64,
    /// 0: no limit.
    limit: AtomicU64,
    /// Shared with the Colibri2 handler's `HandlerConfig::memory_shedding`.
    shedding: Arc<AtomicBool>,
    source: Mutex<Option<LimitSource>>,
    page_size: u64,
}

impl MemoryMonitor {
    /// `configured_limit`: bytes, or `None` to use the cgroup's limit.
    pub fn new(thresholds: Thresholds, configured_limit: Option<u64>) -> Arc<Self> {
        let page_size = std::fs::read("/proc/self/auxv")
            .ok()
            .and_then(|a| page_size_from_auxv(&a))
            .unwrap_or(4096);
        Arc::new(MemoryMonitor {
            thresholds,
            configured_limit,
            rss: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            shedding: Arc::new(AtomicBool::new(false)),
            source: Mutex::new(None),
            page_size,
        })
    }

    /// From `[limits]`.
    pub fn from_config(limits: &crate::config::LimitsSection) -> Arc<Self> {
        let configured = (limits.memory_limit_mib > 0).then(|| limits.memory_limit_mib.saturating_mul(1 << 20));
        Self::new(
            Thresholds {
                shed_percent: limits.memory_shed_percent,
                resume_percent: limits.memory_resume_percent,
            },
            configured,
        )
    }

    /// The flag the Colibri2 handler checks before creating a conference or an endpoint.
    pub fn shedding_flag(&self) -> Arc<AtomicBool> {
        self.shedding.clone()
    }

    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The last sample.
    pub fn reading(&self) -> MemoryReading {
        let limit = self.limit.load(Ordering::Relaxed);
        MemoryReading {
            rss_bytes: self.rss.load(Ordering::Relaxed),
            limit_bytes: (limit > 0).then_some(limit),
            shedding: self.is_shedding(),
        }
    }

    /// Where the limit in force came from.
    pub fn source(&self) -> Option<LimitSource> {
        self.source.lock().ok().and_then(|s| s.clone())
    }

    /// While shedding, why (for `/about/health`'s 503 body); `None` otherwise.
    pub fn shedding_reason(&self) -> Option<String> {
        if !self.is_shedding() {
            return None;
        }
        let r = self.reading();
        let limit = r.limit_bytes.unwrap_or(0);
        let source = match self.source() {
            Some(LimitSource::Configured) => "limits.memory_limit_mib".to_owned(),
            Some(LimitSource::Cgroup(p)) => p.display().to_string(),
            None => "unknown".to_owned(),
        };
        Some(format!(
            "memory pressure: RSS {:.1} MiB is {}% of the {:.1} MiB limit ({source}); new conferences \
             and endpoints are refused until it is below {}%",
            mib(r.rss_bytes),
            percent(r.rss_bytes, limit),
            mib(limit),
            self.thresholds.resume_percent,
        ))
    }

    /// Read RSS and the limit now, apply the decision. Returns the new state and whether it
    /// changed. Reads a few small `/proc` and cgroup files; call it about once per second.
    pub fn sample(&self) -> (MemoryReading, bool) {
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| rss_from_statm(&s, self.page_size));
        let (limit, source) = match self.configured_limit {
            Some(l) => (Some(l), Some(LimitSource::Configured)),
            None => match cgroup_limit(&|p: &Path| std::fs::read_to_string(p).ok()) {
                Some((l, path)) => (Some(l), Some(LimitSource::Cgroup(path))),
                None => (None, None),
            },
        };
        self.apply(rss, limit, source)
    }

    /// The decision on given values (`rss` `None`: unreadable, keep the last value). Public for
    /// tests that do not want to depend on the machine's memory.
    pub fn apply(&self, rss: Option<u64>, limit: Option<u64>, source: Option<LimitSource>) -> (MemoryReading, bool) {
        if let Some(rss) = rss {
            self.rss.store(rss, Ordering::Relaxed);
        }
        self.limit.store(limit.unwrap_or(0), Ordering::Relaxed);
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
        let rss = self.rss.load(Ordering::Relaxed);
        let was = self.is_shedding();
        let now = self.thresholds.should_shed(was, rss, limit);
        self.shedding.store(now, Ordering::Relaxed);
        let reading = MemoryReading {
            rss_bytes: rss,
            limit_bytes: limit,
            shedding: now,
        };
        (reading, was != now)
    }
}

/// Sample every `every` until the process ends; `on_change(shedding)` runs on each transition
/// (the server refreshes the brewery presence from it so Jicofo sees the stress at once).
pub async fn run_sampler(monitor: Arc<MemoryMonitor>, every: Duration, on_change: impl Fn(bool) + Send + 'static) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples_shedding = 0u32;
    loop {
        tick.tick().await;
        let (mut r, mut changed) = monitor.sample();
        if r.shedding {
            // The allocator keeps freed memory (glibc arenas), so RSS may stay above the
            // resume threshold long after the load left. Hand free pages back to the system
            // at the start of shedding and every TRIM_EVERY samples while it lasts.
            if samples_shedding.is_multiple_of(TRIM_EVERY) {
                release_free_memory();
                let (r2, changed2) = monitor.sample();
                changed |= changed2;
                r = r2;
            }
            samples_shedding = samples_shedding.wrapping_add(1);
        } else {
            samples_shedding = 0;
        }
        if !changed {
            continue;
        }
        let limit = r.limit_bytes.unwrap_or(0);
        if r.shedding {
            tracing::warn!(
                rss_mib = mib(r.rss_bytes),
                limit_mib = mib(limit),
                percent = percent(r.rss_bytes, limit),
                "memory pressure: shedding load (health 503, stress 1.0, new endpoints refused)"
            );
        } else {
            tracing::info!(
                rss_mib = mib(r.rss_bytes),
                limit_mib = mib(limit),
                percent = percent(r.rss_bytes, limit),
                "memory pressure over: accepting new endpoints again"
            );
        }
        on_change(r.shedding);
    }
}

/// While shedding, [`release_free_memory`] runs every this many samples.
const TRIM_EVERY: u32 = 5;

/// Return the allocator's free pages to the system (glibc `malloc_trim(0)`, which also releases
/// free pages inside the heap, not only at its top). Takes the allocator's locks briefly; called
/// only while shedding, once every few seconds. A no-op with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena); Rust's
        // global allocator on linux-gnu is this same malloc, so it sees every free chunk.
        unsafe {
            malloc_trim(0);
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 100 / u128::from(whole)) as u64
    }
}

/// `/proc/self/statm` ("size resident shared text lib data dt", in pages): resident × page size.
pub fn rss_from_statm(statm: &str, page_size: u64) -> Option<u64> {
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    resident.checked_mul(page_size)
}

/// The page size from `/proc/self/auxv` (native-endian (type, value) word pairs; `AT_PAGESZ` = 6).
pub fn page_size_from_auxv(auxv: &[u8]) -> Option<u64> {
    const AT_PAGESZ: u64 = 6;
    let w = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> u64 {
        let mut a = [0u8; 8];
        a[..w].copy_from_slice(b);
        let v = u64::from_ne_bytes(a);
        // On a big-endian 32-bit target the word sits in the high half.
        if cfg!(target_endian = "big") && w == 4 {
            v >> 32
        } else {
            v
        }
    };
    auxv.chunks_exact(2 * w)
        .map(|pair| (word(&pair[..w]), word(&pair[w..])))
        .find(|(t, _)| *t == AT_PAGESZ)
        .map(|(_, v)| v)
        .filter(|v| v.is_power_of_two())
}

/// A limit file's content: bytes, or `None` for `max` (v2), an unlimited v1 value, 0 or garbage.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v > 0 && *v < UNLIMITED)
}

/// The cgroup version of a limit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn limit_file(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }
    }
}

/// A mounted hierarchy that can carry a memory limit: v1 with the memory controller, or v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: CgroupVersion,
    /// The cgroup path mounted here (`/` unless a container sees a subtree).
    pub root: String,
    pub mount_point: PathBuf,
}

/// The memory-capable cgroup mounts in `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional fields] - fstype source super-options
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype)) = (pre.get(3), pre.get(4), post.first()) else {
            continue;
        };
        let version = match *fstype {
            "cgroup2" => CgroupVersion::V2,
            "cgroup" if post.get(2).is_some_and(|o| o.split(',').any(|x| x == "memory")) => CgroupVersion::V1,
            _ => continue,
        };
        out.push(CgroupMount {
            version,
            root: unescape_mountinfo(root),
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
        });
    }
    out
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// This process's cgroup per version from `/proc/self/cgroup` (`id:controllers:path`): the
/// v1 hierarchy with `memory` among its controllers, and the v2 one (`0::path`).
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v1, mut v2) = (None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_owned());
        }
    }
    (v1, v2)
}

/// Every limit file that bounds this process, leaf first: for each memory-capable mount, the
/// directories from the process's cgroup up to the mount point.
pub fn limit_files(proc_cgroup: &str, mountinfo: &str) -> Vec<(CgroupVersion, PathBuf)> {
    let (v1, v2) = parse_proc_cgroup(proc_cgroup);
    let mut out = Vec::new();
    for m in parse_mountinfo(mountinfo) {
        let path = match m.version {
            CgroupVersion::V1 => v1.as_deref(),
            CgroupVersion::V2 => v2.as_deref(),
        };
        let Some(path) = path else {
            continue;
        };
        // The path relative to what is mounted; outside the mounted subtree (another
        // namespace's view) there is nothing we can read.
        let rel = if m.root == "/" {
            path
        } else {
            match path.strip_prefix(m.root.as_str()) {
                Some(r) if r.is_empty() || r.starts_with('/') => r,
                _ => continue,
            }
        };
        let mut dir = m.mount_point.clone();
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != "..").collect();
        let mut dirs = vec![dir.clone()];
        for c in comps {
            dir.push(c);
            dirs.push(dir.clone());
        }
        for d in dirs.into_iter().rev() {
            out.push((m.version, d.join(m.version.limit_file())));
        }
    }
    out
}

/// The smallest limit among [`limit_files`] of this process, and the file it came from.
/// `read` returns a file's content (`None`: missing or unreadable).
pub fn cgroup_limit(read: &dyn Fn(&Path) -> Option<String>) -> Option<(u64, PathBuf)> {
    let proc_cgroup = read(Path::new("/proc/self/cgroup"))?;
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    limit_files(&proc_cgroup, &mountinfo)
        .into_iter()
        .filter_map(|(_, f)| read(&f).and_then(|t| parse_limit(&t)).map(|l| (l, f)))
        .min_by_key(|(l, _)| *l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sheds_at_the_threshold_and_resumes_only_below_the_lower_one() {
        let t = Thresholds::default();
        let limit = Some(100 * MIB);
        assert!(!t.should_shed(false, 84 * MIB, limit));
        assert!(!t.should_shed(false, 85 * MIB - 1, limit));
        assert!(
            t.should_shed(false, 85 * MIB, limit),
            "85 % of the limit starts shedding"
        );
        // Hysteresis: between 75 and 85 % the current state is kept.
        assert!(t.should_shed(true, 80 * MIB, limit));
        assert!(!t.should_shed(false, 80 * MIB, limit));
        assert!(t.should_shed(true, 75 * MIB, limit), "75 % is not below 75 %");
        assert!(!t.should_shed(true, 75 * MIB - 1, limit));
        // Over the limit (RSS can exceed it briefly): shedding.
        assert!(t.should_shed(false, 120 * MIB, limit));
    }

    #[test]
    fn no_limit_never_sheds_and_huge_values_do_not_overflow() {
        let t = Thresholds::default();
        assert!(!t.should_shed(false, u64::MAX, None));
        assert!(
            !t.should_shed(true, u64::MAX, None),
            "a limit that disappears ends shedding"
        );
        assert!(t.should_shed(false, u64::MAX, Some(u64::MAX / 2)));
        assert!(!t.should_shed(false, u64::MAX / 2, Some(u64::MAX)));
    }

    #[test]
    fn monitor_applies_the_decision_and_reports_transitions() {
        let m = MemoryMonitor::new(Thresholds::default(), Some(200 * MIB));
        let flag = m.shedding_flag();
        let (r, changed) = m.apply(Some(100 * MIB), Some(200 * MIB), Some(LimitSource::Configured));
        assert!(!r.shedding && !changed);
        assert!(m.shedding_reason().is_none());
        let (r, changed) = m.apply(Some(180 * MIB), Some(200 * MIB), Some(LimitSource::Configured));
        assert!(r.shedding && changed);
        assert!(flag.load(Ordering::Relaxed), "the handler's flag follows");
        let reason = m.shedding_reason().expect("a reason while shedding");
        assert!(
            reason.contains("RSS 180.0 MiB is 90% of the 200.0 MiB limit"),
            "{reason}"
        );
        assert!(reason.contains("limits.memory_limit_mib"), "{reason}");
        // Unreadable RSS keeps the last value, so one failed read does not end shedding.
        let (r, changed) = m.apply(None, Some(200 * MIB), Some(LimitSource::Configured));
        assert!(r.shedding && !changed);
        assert_eq!(r.rss_bytes, 180 * MIB);
        let (r, changed) = m.apply(Some(160 * MIB), Some(200 * MIB), Some(LimitSource::Configured));
        assert!(r.shedding && !changed, "80 %: still shedding");
        let (r, changed) = m.apply(Some(140 * MIB), Some(200 * MIB), Some(LimitSource::Configured));
        assert!(!r.shedding && changed);
        assert!(!flag.load(Ordering::Relaxed));
        assert_eq!(m.reading().limit_bytes, Some(200 * MIB));
    }

    #[test]
    fn statm_and_auxv() {
        assert_eq!(rss_from_statm("12345 2560 300 100 0 4000 0\n", 4096), Some(2560 * 4096));
        assert_eq!(rss_from_statm("12345\n", 4096), None);
        assert_eq!(rss_from_statm("a b c", 4096), None);
        let w = std::mem::size_of::<usize>();
        let mut auxv = Vec::new();
        for (t, v) in [(33u64, 0x7fff_0000u64), (6, 16384), (0, 0)] {
            auxv.extend_from_slice(&(t as usize).to_ne_bytes()[..w]);
            auxv.extend_from_slice(&(v as usize).to_ne_bytes()[..w]);
        }
        assert_eq!(page_size_from_auxv(&auxv), Some(16384));
        assert_eq!(page_size_from_auxv(&auxv[..2 * w]), None);
        // This machine's own auxv has a page size.
        let own = std::fs::read("/proc/self/auxv").expect("/proc/self/auxv");
        assert!(page_size_from_auxv(&own).is_some_and(|p| p >= 4096));
    }

    #[test]
    fn limit_values_in_both_formats() {
        assert_eq!(parse_limit("max\n"), None, "v2 unlimited");
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        assert_eq!(parse_limit("268435456\n"), Some(256 * MIB), "v2 or v1 bytes");
        assert_eq!(parse_limit("0\n"), None);
        assert_eq!(parse_limit("-1"), None);
        assert_eq!(parse_limit(""), None);
    }

    const MOUNTINFO_V1: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 25 0:27 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:14 - cgroup2 cgroup2 rw
";
    const CGROUP_V1: &str = "\
9:name=systemd:/
4:memory:/palim/bridge
1:cpu:/
0::/
";

    #[test]
    fn v1_hierarchy_files_leaf_first() {
        let files = limit_files(CGROUP_V1, MOUNTINFO_V1);
        let v1: Vec<_> = files
            .iter()
            .filter(|(v, _)| *v == CgroupVersion::V1)
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(
            v1,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/palim/bridge/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/palim/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            ]
        );
        assert!(files.contains(&(CgroupVersion::V2, PathBuf::from("/sys/fs/cgroup/unified/memory.max"))));
    }

    #[test]
    fn v2_container_view_with_a_mounted_subtree() {
        let mountinfo = "\
1600 1590 0:30 /kubepods/pod1 /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        let cgroup = "0::/kubepods/pod1/ctr\n";
        let files: Vec<_> = limit_files(cgroup, mountinfo).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            files,
            vec![
                PathBuf::from("/sys/fs/cgroup/ctr/memory.max"),
                PathBuf::from("/sys/fs/cgroup/memory.max"),
            ]
        );
        // A cgroup outside the mounted subtree cannot be read.
        assert!(limit_files("0::/elsewhere\n", mountinfo).is_empty());
        // With a cgroup namespace the path is "/".
        let ns = "1600 1590 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            limit_files("0::/\n", ns),
            vec![(CgroupVersion::V2, PathBuf::from("/sys/fs/cgroup/memory.max"))]
        );
    }

    #[test]
    fn the_smallest_limit_on_the_path_wins() {
        let files: HashMap<PathBuf, String> = [
            ("/proc/self/cgroup", CGROUP_V1),
            ("/proc/self/mountinfo", MOUNTINFO_V1),
            (
                "/sys/fs/cgroup/memory/palim/bridge/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/memory/palim/memory.limit_in_bytes", "268435456\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            // The v2 root has no memory.max; the hybrid mount carries no memory controller.
        ]
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_owned()))
        .collect();
        let read = |p: &Path| files.get(p).cloned();
        assert_eq!(
            cgroup_limit(&read),
            Some((
                256 * MIB,
                PathBuf::from("/sys/fs/cgroup/memory/palim/memory.limit_in_bytes")
            ))
        );

        let v2: HashMap<PathBuf, String> = [
            ("/proc/self/cgroup", "0::/system.slice/palim.service\n"),
            (
                "/proc/self/mountinfo",
                "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            ),
            ("/sys/fs/cgroup/system.slice/palim.service/memory.max", "max\n"),
            ("/sys/fs/cgroup/system.slice/memory.max", "1073741824\n"),
        ]
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_owned()))
        .collect();
        let read = |p: &Path| v2.get(p).cloned();
        assert_eq!(
            cgroup_limit(&read),
            Some((1024 * MIB, PathBuf::from("/sys/fs/cgroup/system.slice/memory.max")))
        );
        let none = |_: &Path| None;
        assert_eq!(cgroup_limit(&none), None);
    }

    #[test]
    fn mountinfo_escapes_and_other_filesystems() {
        let m = parse_mountinfo(
            "40 25 0:28 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory,hugetlb\n\
             41 25 0:29 / /proc rw - proc proc rw\n\
             garbage line\n",
        );
        assert_eq!(
            m,
            vec![CgroupMount {
                version: CgroupVersion::V1,
                root: "/".into(),
                mount_point: PathBuf::from("/sys/fs/cgroup/mem ory"),
            }]
        );
    }
}
