//! What one endpoint receives (media.md §3.2, §3.3): its bridge-channel settings, the
//! allocator's last result, and one projection per forwarded video source.

use crate::allocation::{AllocConfig, Allocation, ReceiverSettings};
use crate::bridge_channel::AudioSubscription;
use crate::projection::ssrc_slots::SsrcSlots;
use crate::projection::Projection;
use crate::sources::SourceKey;

/// Video and audio slots per receiver in SSRC-rewriting mode (JVB's `videobridge.ssrc-limit`).
pub const SSRC_SLOTS: usize = 50;

/// A receiver's SSRC pools in SSRC-rewriting mode (media.md §3.5).
#[derive(Debug, Clone)]
pub struct SlotPools {
    /// Video slots, each a primary and an RTX SSRC.
    pub video: SsrcSlots<SourceKey>,
    pub audio: SsrcSlots<SourceKey>,
}

impl SlotPools {
    /// Pools over `video` (primary, RTX) pairs and `audio` SSRCs, all distinct.
    pub fn new(video: &[(u32, u32)], audio: &[u32]) -> Self {
        let primaries: Vec<u32> = video.iter().map(|v| v.0).collect();
        let rtx: Vec<u32> = video.iter().map(|v| v.1).collect();
        Self {
            video: SsrcSlots::new(&primaries, true).with_rtx(&rtx),
            audio: SsrcSlots::new(audio, false),
        }
    }

    /// The source mapped to slot SSRC `ssrc` (video or audio).
    pub fn source_of(&self, ssrc: u32) -> Option<SourceKey> {
        self.video.source_of(ssrc).or_else(|| self.audio.source_of(ssrc))
    }

    /// Free `source`'s slots silently (its owner left or it was removed).
    pub fn release(&mut self, source: SourceKey) {
        self.video.release(source);
        self.audio.release(source);
    }
}

/// A receiver's `ReceiverAudioSubscription` (media.md §2.4): names as sent, and the sources
/// they resolve to (resolved again whenever the conference's sources change).
#[derive(Debug, Clone)]
pub struct AudioFilter {
    pub all: bool,
    include_names: Vec<String>,
    exclude_names: Vec<String>,
    include: Vec<SourceKey>,
    exclude: Vec<SourceKey>,
}

impl Default for AudioFilter {
    /// Before any message, all audio is received.
    fn default() -> Self {
        Self {
            all: true,
            include_names: Vec::new(),
            exclude_names: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

impl AudioFilter {
    /// Replace the subscription; `lookup` resolves a source name.
    pub fn set(&mut self, sub: AudioSubscription, lookup: impl Fn(&str) -> Option<SourceKey>) {
        self.all = sub.all;
        self.include_names = sub.include;
        self.exclude_names = sub.exclude;
        self.resolve(lookup);
    }

    /// Resolve the names again (sources were added or removed).
    pub fn resolve(&mut self, lookup: impl Fn(&str) -> Option<SourceKey>) {
        self.include = self.include_names.iter().filter_map(|n| lookup(n)).collect();
        self.exclude = self.exclude_names.iter().filter_map(|n| lookup(n)).collect();
    }

    /// Whether any name is kept (only then must sources changes re-resolve).
    pub fn has_names(&self) -> bool {
        !self.include_names.is_empty() || !self.exclude_names.is_empty()
    }

    /// `exclude` wins, `include` always, else `all`. Per packet: no allocation.
    pub fn wants(&self, source: SourceKey) -> bool {
        if self.exclude.contains(&source) {
            false
        } else if self.include.contains(&source) {
            true
        } else {
            self.all
        }
    }
}

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
    pub projections: crate::FastMap<SourceKey, Projection>,
    /// The forwarded sources last announced (`ForwardedSources`), `None` before the first.
    pub announced: Option<Vec<SourceKey>>,
    /// The estimate the last allocation used.
    pub alloc_bwe: Option<u64>,
    /// Up-switch hold after an allocation lowered a layer because the estimate fell (docs/bwe.md,
    /// "Downlink step"): until when, and the estimate of that allocation.
    pub up_hold: Option<(std::time::Instant, u64)>,
    /// Σ ideal and Σ target layer bitrates of the last allocation (for padding, §4.3).
    pub ideal_bps: u64,
    pub target_bps: u64,
    /// Rate limit of the messages this endpoint sends on its bridge channel.
    pub rate: MessageRate,
    /// The audio sources this endpoint wants (`ReceiverAudioSubscription`).
    pub audio: AudioFilter,
    /// SSRC-rewriting mode: the slot pools (`None`: sources keep their own SSRCs).
    pub slots: Option<Box<SlotPools>>,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            settings: ReceiverSettings::new(&AllocConfig::default()),
            alloc: Allocation::default(),
            projections: Default::default(),
            announced: None,
            alloc_bwe: None,
            up_hold: None,
            ideal_bps: 0,
            target_bps: 0,
            rate: MessageRate::default(),
            audio: AudioFilter::default(),
            slots: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn lookup(name: &str) -> Option<SourceKey> {
        match name {
            "a-a0" => Some(1),
            "b-a0" => Some(2),
            "c-a0" => Some(3),
            _ => None,
        }
    }

    #[test]
    fn audio_filter_modes() {
        let mut f = AudioFilter::default();
        assert!(f.wants(1) && f.wants(2), "all audio before any message");
        // Legacy None.
        f.set(AudioSubscription::default(), lookup);
        assert!(!f.wants(1) && !f.wants(2));
        // Include one.
        f.set(
            AudioSubscription {
                all: false,
                include: vec!["b-a0".into()],
                exclude: vec![],
            },
            lookup,
        );
        assert!(!f.wants(1) && f.wants(2) && !f.wants(3));
        // Exclude wins over include and all.
        f.set(
            AudioSubscription {
                all: true,
                include: vec!["b-a0".into()],
                exclude: vec!["b-a0".into(), "c-a0".into()],
            },
            lookup,
        );
        assert!(f.wants(1) && !f.wants(2) && !f.wants(3));
        // A source signalled later is resolved on the next resolve.
        f.set(
            AudioSubscription {
                all: false,
                include: vec!["d-a0".into()],
                exclude: vec![],
            },
            lookup,
        );
        assert!(!f.wants(4));
        f.resolve(|n| if n == "d-a0" { Some(4) } else { lookup(n) });
        assert!(f.wants(4));
    }

    #[test]
    fn slot_pools_map_back_video_and_audio() {
        let mut p = SlotPools::new(&[(10, 11), (20, 21)], &[30, 40]);
        p.video.activate(7);
        p.audio.activate(8);
        assert_eq!(p.source_of(10), Some(7));
        assert_eq!(p.source_of(30), Some(8));
        assert_eq!(p.source_of(11), None);
        p.release(7);
        assert_eq!(p.source_of(10), None);
    }

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
