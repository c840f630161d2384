//! What one endpoint receives (media.md §3.2, §3.3): its bridge-channel settings, the
//! allocator's last result, and one projection per forwarded video source.

use std::collections::HashMap;

use crate::allocation::{AllocConfig, Allocation, ReceiverSettings};
use crate::projection::Projection;
use crate::sources::SourceKey;

/// Bridge-channel messages queued per endpoint at most (JVB's per-endpoint queue).
pub const CHANNEL_QUEUE: usize = 50;
/// Bridge-channel messages an endpoint may send per second, sustained (robustness.md §2.2),
/// with a burst of as many.
pub const CHANNEL_RATE: f64 = 50.0;

/// A token bucket for an endpoint's bridge-channel messages.
#[derive(Debug, Clone, Copy)]
pub struct MessageRate {
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl Default for MessageRate {
    fn default() -> Self {
        Self {
            tokens: CHANNEL_RATE,
            last: None,
        }
    }
}

impl MessageRate {
    /// Whether one more message may be handled at `now`.
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * CHANNEL_RATE;
            self.tokens = (self.tokens + refill).min(CHANNEL_RATE);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

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
    /// Rate limit of the messages this endpoint sends on its bridge channel.
    pub rate: MessageRate,
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
            rate: MessageRate::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn message_rate_allows_a_burst_then_fifty_per_second() {
        let t0 = Instant::now();
        let mut r = MessageRate::default();
        let burst = (0..200).filter(|_| r.allow(t0)).count();
        assert_eq!(burst, 50);
        // One second later: 50 more, not 200.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..200).filter(|_| r.allow(t1)).count(), 50);
        // Spread evenly at 100/s for 2 s: about half go through.
        let mut ok = 0;
        for i in 0..200u64 {
            if r.allow(t1 + Duration::from_millis(10 * (i + 1))) {
                ok += 1;
            }
        }
        assert!((95..=105).contains(&ok), "{ok}");
    }
}
