//! Bandwidth estimation and loss recovery, sans-IO and deterministic (spec media.md §4, §5.1,
//! §5.2).
//!
//! * [`feedback::TwccGenerator`]: transport-cc feedback toward a sender (one per endpoint).
//! * [`nack::NackGenerator`]: generic NACKs toward a sender (one per received video SSRC).
//! * [`rtx_cache::RtxCache`] and [`rtx_cache::RtxEncoder`]: what was sent to a receiver, for
//!   answering its NACKs, RTX-encapsulated if negotiated.
//! * [`gcc::SendSideBwe`]: GCC-style send-side estimate of the downlink of one receiver.
//! * [`remb::RembGenerator`]: receive-side estimate and REMB toward REMB-only senders.
//! * [`prober::ProbeController`] and [`prober::PaddingBudget`]: probe clusters and the §4.3
//!   padding budget.
//!
//! No module reads a clock: every time is a `now: Instant` argument. None allocates per packet
//! after warm-up.

pub mod feedback;
pub mod gcc;
pub mod nack;
pub mod prober;
pub mod remb;
pub mod rtx_cache;

#[cfg(test)]
mod sim;

pub use feedback::TwccGenerator;
pub use gcc::INITIAL_BPS;
pub use gcc::{BandwidthUsage, SendSideBwe};
pub use nack::NackGenerator;
pub use prober::{PaddingBudget, ProbeCluster, ProbeController, ProbePacer, PADDING_PERIOD};
pub use remb::RembGenerator;
pub use rtx_cache::{Resend, RtxCache, RtxEncoder, RtxStats};
