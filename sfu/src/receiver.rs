//! What one endpoint receives (media.md §3.2, §3.3): its bridge-channel settings, the
//! allocator's last result, and one projection per forwarded video source.

use std::collections::HashMap;

use crate::allocation::{AllocConfig, Allocation, ReceiverSettings};
use crate::projection::Projection;
use crate::sources::SourceKey;

/// Bridge-channel messages queued per endpoint at most (JVB's per-endpoint queue).
pub const CHANNEL_QUEUE: usize = 50;

#[derive(Debug)]
pub struct Receiver {
    pub settings: ReceiverSettings<SourceKey>,
    pub alloc: Allocation<SourceKey>,
    pub projections: HashMap<SourceKey, Projection>,
    /// The forwarded sources last announced (`ForwardedSources`), `None` before the first.
    pub announced: Option<Vec<SourceKey>>,
    /// The estimate the last allocation used.
    pub alloc_bwe: Option<u64>,
    /// Σ ideal and Σ target layer bitrates of the last allocation (for padding, §4.3).
    pub ideal_bps: u64,
    pub target_bps: u64,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            settings: ReceiverSettings::new(&AllocConfig::default()),
            alloc: Allocation::default(),
            projections: HashMap::new(),
            announced: None,
            alloc_bwe: None,
            ideal_bps: 0,
            target_bps: 0,
        }
    }
}
