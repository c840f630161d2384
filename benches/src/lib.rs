//! Criterion benches of the media core live in `benches/`.
