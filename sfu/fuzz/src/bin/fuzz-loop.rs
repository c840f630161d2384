//! Stable-Rust fuzz driver: `fuzz-loop <target|all> [seconds] [seed]`, or
//! `fuzz-loop --write-corpus` to dump the seed inputs to `corpus/<target>/`.
//! Seeds come from `sfu_fuzz::seeds` plus any files in `corpus/<target>/`; crashing inputs go
//! to `artifacts/<target>/`. Exit status 1 if anything crashed.

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if args.first().map(String::as_str) == Some("--write-corpus") {
        for (name, _) in sfu_fuzz::TARGETS {
            let dir = root.join("corpus").join(name);
            std::fs::create_dir_all(&dir).expect("create corpus dir");
            for (i, s) in sfu_fuzz::seeds::seeds(name).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), s).expect("write seed");
            }
        }
        return;
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut failed = false;
    for (name, f) in sfu_fuzz::TARGETS {
        if which != "all" && which != *name {
            continue;
        }
        let mut seeds = sfu_fuzz::seeds::seeds(name);
        seeds.extend(sfu_fuzz::driver::read_corpus(&root.join("corpus").join(name)));
        let r = sfu_fuzz::driver::run(
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
