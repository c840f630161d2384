//! Dominant speaker identification (spec/media.md §6), after jitsi-utils'
//! `DominantSpeakerIdentification` (Volfin & Cohen, "Dominant Speaker Identification for
//! Multipoint Videoconferencing", on RFC 6464 audio levels instead of spectra).
//!
//! Per speaker the last 50 levels (1 s at 20 ms) are quantised into 13 sub-bands (immediate),
//! counted into 10 blocks of 5 with threshold 7 (medium) and 1 long interval with threshold 4.
//! Every 300 ms each non-dominant speaker's speech-activity scores are compared with the
//! dominant's; a speaker takes over when its log-ratios exceed C1 = 3, C2 = 2, C3 = 0 (the one
//! with the largest medium ratio wins). Speakers without a level for 40 ms get a silent level;
//! a speaker's noise floor (minimum level, tracked over 15 s) counts as silence.
//!
//! Sans-IO: feed [`SpeakerDetector::level`] per audio packet, call [`SpeakerDetector::tick`] no
//! later than [`SpeakerDetector::poll_timeout`]. `level` allocates nothing for known endpoints.
//! Not implemented: silence events (`enable-silence-detection`, off by default) and the
//! loudest-N ranking (`route-loudest-only`, off by default).

use crate::id::EndpointId;
use std::time::{Duration, Instant};

/// Decision interval.
pub const DECISION_INTERVAL: Duration = Duration::from_millis(300);
/// Without a level for this long a speaker is assumed silent for one more frame.
pub const LEVEL_IDLE_TIMEOUT: Duration = Duration::from_millis(40);
/// Decisions stop after this long without any level (JVB's decision thread exits).
pub const DECISION_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Non-dominant speakers without levels for this long are forgotten.
pub const SPEAKER_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `videobridge.speech-activity.recent-speakers-count`.
pub const DEFAULT_RECENT_SPEAKERS: usize = 10;

const C1: f64 = 3.0;
const C2: f64 = 2.0;
const C3: f64 = 0.0;
const N1: i32 = 13;
const N2: usize = 5;
const N3: usize = 10;
const MAX_LEVEL: i32 = 127;
const N1_SUBUNIT_LENGTH: i32 = (MAX_LEVEL + N1 - 1) / N1;
const MEDIUM_THRESHOLD: u8 = 7;
const LONG_THRESHOLD: u8 = 4;
const HISTORY: usize = N3 * N2;
const MIN_LEVEL_WINDOW_LENGTH: u32 = 15 * 1000 / 20;
const MIN_SCORE: f64 = 1e-10;

/// The dominant speaker changed at a decision boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DominantChange {
    pub dominant: EndpointId,
    pub previous: Option<EndpointId>,
}

/// Dominant speaker detection and the conference's speech-activity order for one conference.
#[derive(Debug)]
pub struct SpeakerDetector {
    speakers: Vec<Speaker>,
    dominant: Option<EndpointId>,
    /// Former dominant speakers, most recent first (dominant at index 0), at most
    /// `recent_count + 1`.
    recent: Vec<EndpointId>,
    /// All endpoints: `recent` first, then the others in join order.
    order: Vec<EndpointId>,
    joined: Vec<EndpointId>,
    recent_count: usize,
    last_decision: Option<Instant>,
    last_idle_check: Option<Instant>,
    last_level: Option<Instant>,
}

impl SpeakerDetector {
    /// `recent_count`: how many previous speakers are reported (JVB: 10).
    pub fn new(recent_count: usize) -> Self {
        Self {
            speakers: Vec::new(),
            dominant: None,
            recent: Vec::new(),
            order: Vec::new(),
            joined: Vec::new(),
            recent_count,
            last_decision: None,
            last_idle_check: None,
            last_level: None,
        }
    }

    /// An endpoint joined the conference (it goes to the end of the order).
    pub fn add_endpoint(&mut self, id: EndpointId) {
        if !self.joined.contains(&id) {
            self.joined.push(id);
            self.rebuild_order();
        }
    }

    /// An endpoint left. Returns whether the dominant speaker or the recent-speaker list changed
    /// (then re-send DominantSpeakerEndpointChangeEvent if there still is a dominant speaker).
    pub fn remove_endpoint(&mut self, id: EndpointId) -> bool {
        self.joined.retain(|&e| e != id);
        self.speakers.retain(|s| s.id != id);
        let was_recent = self.recent.contains(&id);
        self.recent.retain(|&e| e != id);
        if self.dominant == Some(id) {
            // The next decision nominates a new one; until then the most recent one stays.
            self.dominant = self.recent.first().copied();
        }
        self.rebuild_order();
        was_recent
    }

    /// An RFC 6464 audio level from `id`: 0 (loudest) … 127 dBov (silence).
    pub fn level(&mut self, now: Instant, id: EndpointId, dbov: u8) {
        let loudness = MAX_LEVEL - i32::from(dbov.min(127));
        if self.last_level.is_none_or(|t| t < now) {
            self.last_level = Some(now);
        }
        let idx = match self.speakers.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                self.speakers.push(Speaker::new(id, now));
                self.add_endpoint(id);
                self.speakers.len() - 1
            }
        };
        self.speakers[idx].level_changed(loudness, now);
    }

    /// When [`tick`](Self::tick) must run next; `None` when there is nothing to decide.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.speakers.is_empty() || self.decisions_idle() {
            return None;
        }
        let idle = self.last_idle_check.map(|t| t + LEVEL_IDLE_TIMEOUT);
        let decide = self.last_decision.map(|t| t + DECISION_INTERVAL);
        match (idle, decide) {
            (Some(a), Some(b)) => Some(a.min(b)),
            // Never ran: run now (the caller passes its `now`, so any past instant works).
            _ => self.last_level,
        }
    }

    /// Runs the idle-level fading and, at 300 ms boundaries, the decision.
    pub fn tick(&mut self, now: Instant) -> Option<DominantChange> {
        if self.speakers.is_empty() || self.decisions_idle() {
            return None;
        }
        if self
            .last_idle_check
            .is_none_or(|t| now.saturating_duration_since(t) >= LEVEL_IDLE_TIMEOUT)
        {
            if self.last_idle_check.is_some() {
                self.timeout_idle_levels(now);
            }
            self.last_idle_check = Some(now);
        }
        if self
            .last_decision
            .is_none_or(|t| now.saturating_duration_since(t) >= DECISION_INTERVAL)
        {
            self.last_decision = Some(now);
            return self.decide();
        }
        None
    }

    pub fn dominant(&self) -> Option<EndpointId> {
        self.dominant
    }

    /// Recent speakers after the dominant one, most recent first (for `previousSpeakers`).
    pub fn previous_speakers(&self) -> &[EndpointId] {
        let end = self.recent.len().min(self.recent_count + 1);
        self.recent.get(1..end).unwrap_or(&[])
    }

    /// Conference order: dominant speaker, previous speakers, then everybody else in join order.
    pub fn order(&self) -> &[EndpointId] {
        &self.order
    }

    fn decisions_idle(&self) -> bool {
        match (self.last_decision, self.last_level) {
            (Some(d), Some(l)) => d.saturating_duration_since(l) >= DECISION_IDLE_TIMEOUT,
            _ => false,
        }
    }

    fn timeout_idle_levels(&mut self, now: Instant) {
        let dominant = self.dominant;
        self.speakers.retain(|s| {
            let idle = now.saturating_duration_since(s.last_level_time);
            idle <= SPEAKER_IDLE_TIMEOUT || Some(s.id) == dominant
        });
        for s in &mut self.speakers {
            if now.saturating_duration_since(s.last_level_time) > LEVEL_IDLE_TIMEOUT {
                let t = s.last_level_time;
                s.level_changed(0, t);
            }
        }
    }

    fn decide(&mut self) -> Option<DominantChange> {
        let new_dominant = match self.speakers.len() {
            0 => None,
            1 => Some(self.speakers[0].id),
            _ => {
                let (dom_idx, mut new_id) = match self.speakers.iter().position(|s| Some(s.id) == self.dominant) {
                    Some(i) => (i, None),
                    // Nominate one (the longest-known speaker) and let the others compete.
                    None => (0, Some(self.speakers[0].id)),
                };
                self.speakers[dom_idx].evaluate();
                let dom = self.speakers[dom_idx].scores;
                let mut best_c2 = C2;
                for i in 0..self.speakers.len() {
                    if i == dom_idx {
                        continue;
                    }
                    let s = &mut self.speakers[i];
                    s.evaluate();
                    let c1 = (s.scores[0] / dom[0]).ln();
                    let c2 = (s.scores[1] / dom[1]).ln();
                    let c3 = (s.scores[2] / dom[2]).ln();
                    if c1 > C1 && c2 > C2 && c3 > C3 && c2 > best_c2 {
                        best_c2 = c2;
                        new_id = Some(s.id);
                    }
                }
                new_id
            }
        };
        let new_dominant = new_dominant?;
        if Some(new_dominant) == self.dominant {
            return None;
        }
        let previous = self.dominant.replace(new_dominant);
        self.recent.retain(|&e| e != new_dominant);
        self.recent.insert(0, new_dominant);
        self.recent.truncate(self.recent_count + 1);
        self.rebuild_order();
        Some(DominantChange {
            dominant: new_dominant,
            previous,
        })
    }

    fn rebuild_order(&mut self) {
        self.order.clear();
        self.order.extend(self.recent.iter().copied());
        for &e in &self.joined {
            if !self.recent.contains(&e) {
                self.order.push(e);
            }
        }
    }
}

#[derive(Debug)]
struct Speaker {
    id: EndpointId,
    /// Loudness history, newest first.
    levels: [u8; HISTORY],
    immediates: [u8; HISTORY],
    mediums: [u8; N3],
    long: u8,
    /// Immediate, medium and long speech-activity scores.
    scores: [f64; 3],
    min_level: u8,
    next_min_level: u8,
    next_min_window: u32,
    last_level_time: Instant,
}

impl Speaker {
    fn new(id: EndpointId, now: Instant) -> Self {
        Self {
            id,
            levels: [0; HISTORY],
            immediates: [0; HISTORY],
            mediums: [0; N3],
            long: 0,
            scores: [MIN_SCORE; 3],
            min_level: 0,
            next_min_level: 0,
            next_min_window: 0,
            last_level_time: now,
        }
    }

    /// Pushes a loudness (0 silence … 127 loudest); late levels are discarded.
    fn level_changed(&mut self, loudness: i32, time: Instant) {
        if time < self.last_level_time {
            return;
        }
        self.last_level_time = time;
        let b = loudness.clamp(0, MAX_LEVEL) as u8;
        self.levels.copy_within(0..HISTORY - 1, 1);
        self.levels[0] = b;
        self.update_min_level(b);
    }

    fn update_min_level(&mut self, level: u8) {
        if level == 0 {
            return;
        }
        if self.min_level == 0 || self.min_level > level {
            self.min_level = level;
            self.next_min_level = 0;
            self.next_min_window = 0;
        } else if self.next_min_level == 0 {
            self.next_min_level = level;
            self.next_min_window = 1;
        } else {
            self.next_min_level = self.next_min_level.min(level);
            self.next_min_window += 1;
            if self.next_min_window >= MIN_LEVEL_WINDOW_LENGTH {
                // Geometric mean: the floor rises slowly.
                let m = (f64::from(self.min_level) * f64::from(self.next_min_level)).sqrt();
                self.min_level = m.clamp(0.0, MAX_LEVEL as f64) as u8;
                self.next_min_level = 0;
                self.next_min_window = 0;
            }
        }
    }

    fn evaluate(&mut self) {
        if self.compute_immediates() {
            self.scores[0] = score(self.immediates[0], N1 as u32, 0.5, 0.78);
            if compute_bigs(&self.immediates, &mut self.mediums, MEDIUM_THRESHOLD) {
                self.scores[1] = score(self.mediums[0], N2 as u32, 0.5, 24.0);
                let mut long = [self.long];
                if compute_bigs(&self.mediums, &mut long, LONG_THRESHOLD) {
                    self.long = long[0];
                    self.scores[2] = score(self.long, N3 as u32, 0.5, 47.0);
                }
            }
        }
    }

    /// Quantises levels into sub-bands; the speaker's noise floor counts as silence.
    fn compute_immediates(&mut self) -> bool {
        let floor = i32::from(self.min_level) + N1_SUBUNIT_LENGTH;
        let mut changed = false;
        for (imm, &level) in self.immediates.iter_mut().zip(self.levels.iter()) {
            let l = if i32::from(level) < floor { 0 } else { i32::from(level) };
            let v = (l / N1_SUBUNIT_LENGTH) as u8;
            if *imm != v {
                *imm = v;
                changed = true;
            }
        }
        changed
    }
}

/// Counts, per big block, the littles above `threshold`.
fn compute_bigs(littles: &[u8], bigs: &mut [u8], threshold: u8) -> bool {
    let per = littles.len() / bigs.len();
    let mut changed = false;
    for (big, chunk) in bigs.iter_mut().zip(littles.chunks(per)) {
        let sum = chunk.iter().filter(|&&l| l > threshold).count() as u8;
        if *big != sum {
            *big = sum;
            changed = true;
        }
    }
    changed
}

fn binomial(n: u32, r: u32) -> f64 {
    let r = r.min(n);
    let k = r.max(n - r);
    let mut t: u64 = 1;
    for (j, i) in (1u64..).zip((k + 1..=n).rev()) {
        t = t * u64::from(i) / j;
    }
    t as f64
}

fn score(v: u8, n: u32, p: f64, lambda: f64) -> f64 {
    let v32 = u32::from(v).min(n);
    let vf = f64::from(v32);
    let s = binomial(n, v32).ln() + vf * p.ln() + (f64::from(n) - vf) * (1.0 - p).ln() - lambda.ln() + lambda * vf;
    s.max(MIN_SCORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: EndpointId = EndpointId(1);
    const B: EndpointId = EndpointId(2);
    const C: EndpointId = EndpointId(3);

    /// Speech-like dBov levels (loudness 90–110 against a noise floor), deterministic.
    fn speech(step: u64) -> u8 {
        [30, 25, 20, 35, 28, 17, 24, 33][(step % 8) as usize]
    }
    const NOISE: u8 = 107; // loudness 20: background noise floor
    const SILENCE: u8 = 127;

    /// Drives the detector in 20 ms steps from `t`, `f(step)` gives each endpoint's level (or
    /// None for no packet); returns the changes seen with their step.
    fn run(
        d: &mut SpeakerDetector,
        t: &mut Instant,
        steps: u64,
        f: impl Fn(u64) -> [(EndpointId, Option<u8>); 3],
    ) -> Vec<(u64, DominantChange)> {
        let mut changes = Vec::new();
        for step in 0..steps {
            for (id, lvl) in f(step) {
                if let Some(l) = lvl {
                    d.level(*t, id, l);
                }
            }
            // Run every timer that is due before the next packet.
            let next = *t + Duration::from_millis(20);
            while let Some(due) = d.poll_timeout() {
                if due > next {
                    break;
                }
                let at = due.max(*t);
                if let Some(c) = d.tick(at) {
                    changes.push((step, c));
                }
                if d.poll_timeout() == Some(due) {
                    break;
                }
            }
            *t = next;
        }
        changes
    }

    fn warmup(d: &mut SpeakerDetector, t: &mut Instant) {
        // Everybody present with background noise for 1 s (sets the noise floors).
        run(d, t, 50, |_| [(A, Some(NOISE)), (B, Some(NOISE)), (C, Some(NOISE))]);
    }

    /// A loud endpoint takes over from a silent dominant speaker within about one second.
    #[test]
    fn loud_endpoint_becomes_dominant() {
        let mut t = Instant::now();
        let mut d = SpeakerDetector::new(DEFAULT_RECENT_SPEAKERS);
        warmup(&mut d, &mut t);
        // A talks for 3 s and becomes dominant (it may already be, as the nominated one).
        run(&mut d, &mut t, 150, |s| {
            [(A, Some(speech(s))), (B, Some(NOISE)), (C, Some(SILENCE))]
        });
        assert_eq!(d.dominant(), Some(A));
        // A stops, B talks: B must win within 1 s (50 steps).
        let changes = run(&mut d, &mut t, 100, |s| {
            [(A, Some(NOISE)), (B, Some(speech(s))), (C, None)]
        });
        let first_b = changes.iter().find(|(_, c)| c.dominant == B).map(|(s, _)| *s);
        let step = first_b.expect("B never became dominant");
        assert!(step <= 50, "B took {step} steps");
        assert_eq!(d.dominant(), Some(B));
        assert_eq!(d.previous_speakers(), &[A]);
        assert_eq!(&d.order()[..2], &[B, A]);
        assert_eq!(d.order().len(), 3);
    }

    /// A 200 ms cough from another endpoint does not steal the floor from the active speaker,
    /// neither while they talk nor during a short pause between their sentences.
    #[test]
    fn short_cough_does_not_steal() {
        let mut t = Instant::now();
        let mut d = SpeakerDetector::new(DEFAULT_RECENT_SPEAKERS);
        warmup(&mut d, &mut t);
        run(&mut d, &mut t, 150, |s| {
            [(A, Some(speech(s))), (B, Some(NOISE)), (C, Some(NOISE))]
        });
        assert_eq!(d.dominant(), Some(A));
        let changes = run(&mut d, &mut t, 150, |s| {
            let b = if (40..50).contains(&s) { Some(10) } else { Some(NOISE) };
            [(A, Some(speech(s))), (B, b), (C, Some(NOISE))]
        });
        assert!(changes.is_empty(), "changes: {changes:?}");
        // The same cough during a 400 ms pause of A: the long interval still favours A.
        let changes = run(&mut d, &mut t, 150, |s| {
            let a = if (40..60).contains(&s) { NOISE } else { speech(s) };
            let b = if (45..55).contains(&s) { Some(10) } else { Some(NOISE) };
            [(A, Some(a)), (B, b), (C, Some(NOISE))]
        });
        assert!(changes.is_empty(), "changes: {changes:?}");
        assert_eq!(d.dominant(), Some(A));
    }

    /// Decisions happen only at 300 ms boundaries and stop after 15 s without levels.
    #[test]
    fn decisions_on_boundaries_and_idle_stop() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(DEFAULT_RECENT_SPEAKERS);
        d.level(t0, A, 30);
        assert_eq!(d.poll_timeout(), Some(t0));
        let c = d.tick(t0).expect("single speaker is dominant");
        assert_eq!(
            c,
            DominantChange {
                dominant: A,
                previous: None
            }
        );
        assert_eq!(d.poll_timeout(), Some(t0 + LEVEL_IDLE_TIMEOUT));
        d.tick(t0 + LEVEL_IDLE_TIMEOUT);
        let mut t = t0 + LEVEL_IDLE_TIMEOUT;
        while let Some(due) = d.poll_timeout() {
            assert!(due > t);
            t = due;
            assert!(d.tick(t).is_none());
            assert!(t < t0 + Duration::from_secs(20));
        }
        assert!(t >= t0 + DECISION_IDLE_TIMEOUT);
    }

    /// Removing the dominant speaker reports a recent-list change and hands over.
    #[test]
    fn leaving_speaker_updates_lists() {
        let mut t = Instant::now();
        let mut d = SpeakerDetector::new(DEFAULT_RECENT_SPEAKERS);
        warmup(&mut d, &mut t);
        run(&mut d, &mut t, 100, |s| {
            [(A, Some(speech(s))), (B, Some(NOISE)), (C, Some(NOISE))]
        });
        run(&mut d, &mut t, 100, |s| {
            [(A, Some(NOISE)), (B, Some(speech(s))), (C, Some(NOISE))]
        });
        assert_eq!(d.dominant(), Some(B));
        assert!(d.remove_endpoint(B));
        assert_eq!(d.dominant(), Some(A));
        assert!(!d.order().contains(&B));
        assert!(!d.remove_endpoint(C));
    }

    #[test]
    fn score_matches_formula() {
        // n=13, v=9, p=.5, lambda=.78: ln(715) + 13 ln .5 - ln .78 + .78*9
        let expect = 715f64.ln() + 13.0 * 0.5f64.ln() - 0.78f64.ln() + 0.78 * 9.0;
        assert!((score(9, 13, 0.5, 0.78) - expect).abs() < 1e-9);
        assert_eq!(score(0, 13, 0.5, 0.78), MIN_SCORE);
        assert_eq!(binomial(10, 3), 120.0);
    }
}
