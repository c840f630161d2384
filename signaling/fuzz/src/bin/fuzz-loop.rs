//! Stable-Rust fuzz driver: `fuzz-loop <target|all> [seconds] [seed]`, or
//! `fuzz-loop --write-corpus` to dump the seed inputs to `corpus/<target>/`.
//! Seeds come from `signaling_fuzz::seeds` plus any files in `corpus/<target>/`; crashing inputs go
//! to `artifacts/<target>/`. Exit status 1 if anything crashed.

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    signaling_fuzz::driver::main_loop(signaling_fuzz::TARGETS, signaling_fuzz::seeds::seeds, &root);
}
