//! Fuzz targets for the sfu parsers and the whole sans-IO [`sfu::Shard`].
//!
//! Every target is a plain `fn(&[u8])` that must not panic for any input (and checks a few
//! invariants with `assert!`, which count as crashes). They are driven three ways:
//! libFuzzer (`fuzz_targets/*.rs`, `cargo fuzz run <name>`), the stable in-process mutational
//! loop (`src/bin/fuzz-loop.rs`), and `cargo test` over the seed corpus (`tests/corpus.rs`).

pub mod driver;
pub mod net_targets;
pub mod seeds;
pub mod targets;

/// A named target.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name (the names of the libFuzzer binaries and corpus directories).
pub const TARGETS: &[Target] = &[
    ("demux", targets::demux),
    ("rtp", targets::rtp),
    ("rtcp", targets::rtcp),
    ("vp8", targets::vp8),
    ("vp9", targets::vp9),
    ("av1_dd", targets::av1_dd),
    ("h264", targets::h264),
    ("client_hello", targets::client_hello),
    ("srtp", targets::srtp),
    ("bridge_channel", targets::bridge_channel),
    ("shard", targets::shard),
    ("stun", net_targets::stun),
    ("dtls_records", net_targets::dtls_records),
    ("sctp", net_targets::sctp),
    ("twcc", net_targets::twcc),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
