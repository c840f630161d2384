//! A small in-process mutational fuzzer that runs on stable Rust, used when libFuzzer cannot be
//! built (see docs/security.md). No coverage feedback: inputs are mutations of the seed corpus
//! and of earlier mutants (a bounded, randomly replaced pool), with structure-aware edits
//! (interesting values at random offsets, big-endian length fields, splices, truncation).
//! Shared with signaling/fuzz through `#[path]`.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic from the seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Upper bound on generated input sizes.
pub const MAX_INPUT: usize = 4096;
const POOL: usize = 1024;
const INTERESTING8: [u8; 10] = [0, 1, 2, 0x0F, 0x10, 0x3F, 0x7F, 0x80, 0xC0, 0xFF];
const INTERESTING16: [u16; 9] = [0, 1, 4, 0x00FF, 0x0100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF];

/// Apply 1–8 random mutations to `data`, drawing splice material from `pool`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        let len = data.len();
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING8[rng.below(INTERESTING8.len())];
            }
            3 if len > 1 => {
                let i = rng.below(len - 1);
                let v = INTERESTING16[rng.below(INTERESTING16.len())].to_be_bytes();
                data[i..i + 2].copy_from_slice(&v);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                data.truncate(i);
            }
            5 if data.len() < MAX_INPUT => {
                let i = rng.below(len + 1);
                let k = 1 + rng.below(16);
                for _ in 0..k {
                    data.insert(i, rng.next_u64() as u8);
                }
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(32));
                data.drain(i..i + k);
            }
            7 if len > 0 && data.len() < MAX_INPUT => {
                // Duplicate a chunk (repeated elements, repeated records).
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(64));
                let chunk: Vec<u8> = data[i..i + k].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            8 if !pool.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(data.len() + 1);
                let ocut = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[ocut..]);
            }
            9 if len > 0 => {
                // Swap two bytes.
                let (i, j) = (rng.below(len), rng.below(len));
                data.swap(i, j);
            }
            10 if len > 0 => {
                // Arithmetic on a byte (lengths off by a few).
                let i = rng.below(len);
                let d = rng.below(9) as i8 - 4;
                data[i] = data[i].wrapping_add(d as u8);
            }
            _ => {
                if data.len() < MAX_INPUT {
                    data.push(rng.next_u64() as u8);
                }
            }
        }
    }
    data.truncate(MAX_INPUT);
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Report {
    pub execs: u64,
    pub crashes: u64,
    pub elapsed: Duration,
    pub crash_files: Vec<PathBuf>,
}

/// Run `target` on mutants of `seeds` for `duration` (or `max_execs`). Panics are caught;
/// each crashing input is written to `crash_dir` (up to 20) and counted.
pub fn run(
    name: &str,
    target: fn(&[u8]),
    seeds: &[Vec<u8>],
    duration: Duration,
    max_execs: u64,
    seed: u64,
    crash_dir: &Path,
) -> Report {
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = seeds.to_vec();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let n_seeds = pool.len();
    let start = Instant::now();
    let mut report = Report::default();
    // Panics are expected to be caught here; keep the default hook quiet after the first.
    let prev_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    // Every seed as is first.
    let mut queue: Vec<Vec<u8>> = pool.clone();
    // Plus pure noise of a few lengths.
    for len in [0usize, 1, 2, 3, 4, 12, 13, 20, 100, 1500] {
        queue.push((0..len).map(|_| rng.next_u64() as u8).collect());
    }
    loop {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                if start.elapsed() >= duration || report.execs >= max_execs {
                    break;
                }
                let mut d = pool[rng.below(pool.len())].clone();
                mutate(&mut rng, &mut d, &pool);
                d
            }
        };
        let r = panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
        report.execs += 1;
        if let Err(e) = r {
            report.crashes += 1;
            if report.crash_files.len() < 20 {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                });
                let _ = std::fs::create_dir_all(crash_dir);
                let path = crash_dir.join(format!("crash-{name}-{h:016x}"));
                let _ = std::fs::write(&path, &input);
                eprintln!("{name}: crash ({msg}) -> {}", path.display());
                report.crash_files.push(path);
            }
        } else if input.len() <= MAX_INPUT {
            // Keep some mutants to drift away from the seeds; never evict the seeds.
            if pool.len() < POOL {
                pool.push(input);
            } else if rng.below(8) == 0 {
                let i = n_seeds + rng.below(POOL - n_seeds.min(POOL - 1));
                if i < pool.len() {
                    pool[i] = input;
                }
            }
        }
    }
    panic::set_hook(prev_hook);
    report.elapsed = start.elapsed();
    report
}

/// Files of a corpus directory (missing directory: none).
pub fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
    out
}

/// The `fuzz-loop` command line over a project's targets and seeds (both fuzz crates' binaries
/// call this). `root` is the fuzz crate's directory (corpus/ and artifacts/ live there).
/// A named target, as in the crates' `TARGETS` tables.
pub type NamedTarget = (&'static str, fn(&[u8]));

pub fn main_loop(targets: &[NamedTarget], seeds_of: fn(&str) -> Vec<Vec<u8>>, root: &Path) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--write-corpus") {
        for (name, _) in targets {
            let dir = root.join("corpus").join(name);
            std::fs::create_dir_all(&dir).expect("create corpus dir");
            for (i, s) in seeds_of(name).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), s).expect("write seed");
            }
        }
        return;
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut failed = false;
    for (name, f) in targets {
        if which != "all" && which != *name {
            continue;
        }
        let mut seeds = seeds_of(name);
        seeds.extend(read_corpus(&root.join("corpus").join(name)));
        let r = run(
            name,
            *f,
            &seeds,
            Duration::from_secs_f64(secs),
            u64::MAX,
            seed,
            &root.join("artifacts").join(name),
        );
        println!(
            "{name}: {} execs in {:.1} s ({:.0}/s), {} crashes",
            r.execs,
            r.elapsed.as_secs_f64(),
            r.execs as f64 / r.elapsed.as_secs_f64().max(1e-9),
            r.crashes
        );
        failed |= r.crashes > 0;
    }
    if failed {
        std::process::exit(1);
    }
}
