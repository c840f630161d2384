//! Palim's media core.
//!
//! The core is a plain value that you own and drive: a [`Shard`] never reads a clock, touches a
//! socket or spawns a thread. Inputs are `handle_*(now, …)` calls, outputs are `poll_*` calls.
//!
//! The run-loop contract (the same as str0m's and quinn-proto's): after any `handle_*`, drain
//! [`Shard::poll_transmit`] until it returns `None`, then drain [`Shard::poll_event`], then read
//! [`Shard::poll_timeout`] and call [`Shard::handle_timeout`] no later than that instant.
//!
//! [`driver`] is the only async module: it owns the shared UDP socket (one port for every
//! endpoint of every conference, as JVB) and feeds a shard from tokio.

pub mod bwe;

/// A hash map for the keys looked up per packet (SSRCs, addresses): foldhash with a
/// per-process random seed instead of SipHash (docs/decisions.md). Every such map is bounded
/// by a configured limit, so a crafted key set can only lengthen probes, not grow memory.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub mod control;
pub mod id;
pub mod wire;

pub mod allocation;
pub mod bitrate;
pub mod bridge_channel;
pub mod speaker;

pub use control::{Command, CommandError, Event, Reply};
pub use id::{ConferenceId, EndpointId, Ssrc};
pub mod codec;
pub mod config;
pub mod stats;

pub use config::SfuConfig;
pub use stats::Stats;
pub mod driver;

pub mod demux;
pub mod dtls;
pub mod egress;
mod endpoint;
pub mod negotiated;
pub mod projection;
pub mod receiver;
pub mod sctp;
pub mod shard;
pub mod sources;
pub mod srtp;
#[doc(hidden)]
pub mod testing;
pub mod video;

pub use shard::{ClockAnchor, Shard, Transmit};
