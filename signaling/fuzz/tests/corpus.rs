//! The seed corpus (built-in seeds and `corpus/<target>/` files, including any crash
//! reproducers added there) runs through every target as a plain test, plus a short
//! deterministic mutation run, so `cargo test` checks the targets without libFuzzer.

use std::path::PathBuf;
use std::time::Duration;

#[test]
fn corpus_and_short_mutation_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (name, f) in signaling_fuzz::TARGETS {
        let mut seeds = signaling_fuzz::seeds::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        seeds.extend(signaling_fuzz::driver::read_corpus(&root.join("corpus").join(name)));
        for s in &seeds {
            f(s);
        }
        let r = signaling_fuzz::driver::run(
            name,
            *f,
            &seeds,
            Duration::from_secs(2),
            20_000,
            7,
            &std::env::temp_dir().join("signaling-fuzz-artifacts"),
        );
        assert_eq!(r.crashes, 0, "{name}: crashing inputs in {:?}", r.crash_files);
    }
}
