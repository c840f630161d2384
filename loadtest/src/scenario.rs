//! Scenarios: what to run, as a TOML file (`scenarios/*.toml`) plus command-line overrides.
//! Unknown keys are errors, so a typo never silently runs the default.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::churn::ChurnConfig;
use crate::link::LinkConfig;
use crate::resources::ResourceConfig;

/// The video an endpoint sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    /// Three VP8 encodings (180p/360p/720p, L1T3) in a SIM group, each with an RTX partner.
    Vp8Simulcast,
    /// One AV1 stream, L3T3_KEY, with the dependency descriptor.
    Av1Svc,
    /// One VP8-shaped stream (the harness's first shape: no simulcast, minimal descriptor).
    Vp8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Join everyone, measure for `duration`.
    Steady,
    /// Add conferences step by step until loss or latency exceed the limits.
    Ramp,
}

/// A whole scenario, as in the TOML file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    pub mode: Mode,
    pub conferences: u32,
    /// Endpoints per conference.
    pub endpoints: u32,
    /// Endpoints joined per second (allocation and session-accept are sequential).
    pub join_rate: f64,
    /// Measured time once everyone has joined (steady mode).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Time after the last join before measuring starts (connect, first keyframes).
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// Seeds link emulation and the senders' frame sizes.
    pub seed: u64,
    pub codec: Codec,
    /// Endpoints per conference that send video (the first ones); `-1`: all.
    pub video_senders: i32,
    /// Endpoints per conference that send audio (the first ones); `-1`: all.
    pub audio_senders: i32,
    /// Scale the senders' video bitrates (1.0: what lib-jitsi-meet configures).
    pub video_bitrate_scale: f64,
    pub receiver: ReceiverConstraints,
    /// Layer switches per receiver: each receiver re-sends ReceiverVideoConstraints this many
    /// times at seeded random times during the run, with a different `maxHeight` from
    /// [`SWITCH_HEIGHTS`] each time, so the bridge switches layers up and down (0: never).
    pub switches: u32,
    /// The link every endpoint gets unless a class says otherwise.
    pub link: LinkPair,
    /// Endpoint classes with their own links.
    pub class: Vec<EndpointClass>,
    pub ramp: RampConfig,
    /// Bandwidth-estimation criteria to evaluate on the run (check.rs); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::check::CheckConfig>,
    /// Endpoints leaving and joining during the measured window (steady mode).
    pub churn: ChurnConfig,
    /// How the bridge's RSS, fds and threads are sampled (when its pid is known).
    pub resources: ResourceConfig,
}

/// What receivers ask the bridge for, sent as `ReceiverVideoConstraints` on the bridge channel
/// once it opens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConstraints {
    /// `defaultConstraints.maxHeight` (-1 unlimited, 0 no video).
    pub max_height: i32,
    /// `lastN` (-1 unlimited).
    pub last_n: i32,
    /// Do not open the bridge channel at all (the bridge then uses its defaults).
    pub no_bridge_channel: bool,
    /// Filled from the scenario's `switches` (not a key of `[receiver]`).
    #[serde(skip)]
    pub switch_plan: SwitchPlan,
}

/// The heights random switches choose among.
pub const SWITCH_HEIGHTS: [i32; 3] = [180, 360, 720];

/// When a receiver changes its constraints: `count` times, at seeded random times within
/// `window` after its bridge channel opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwitchPlan {
    pub count: u32,
    pub window: Duration,
}

/// Quiet time after the channel opens before the first switch, and before the end of the window
/// after the last one (so frames of the last layer arrive).
pub const SWITCH_MARGIN: Duration = Duration::from_millis(1500);

impl SwitchPlan {
    /// The schedule for one receiver: (offset from channel open, maxHeight), sorted by time,
    /// every height different from the one before it (the first from `initial`). Offsets lie in
    /// [`SWITCH_MARGIN`, `window - SWITCH_MARGIN`] and are at least 250 ms apart when the
    /// window allows it. Deterministic in `seed`.
    pub fn schedule(&self, seed: u64, initial: i32) -> Vec<(Duration, i32)> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut rng = crate::shape::ShapeRng::new(seed ^ 0x5717_C4E5);
        let span = self.window.saturating_sub(SWITCH_MARGIN * 2);
        let n = self.count as usize;
        let min_gap = Duration::from_millis(250).min(span / (self.count + 1));
        // n points uniform in the span left after the minimum gaps, then spread by the gaps.
        let free = span.saturating_sub(min_gap * self.count);
        let mut at: Vec<Duration> = (0..n).map(|_| free.mul_f64(rng.unit())).collect();
        at.sort();
        let mut prev = initial;
        at.iter()
            .enumerate()
            .map(|(i, t)| {
                let choices: Vec<i32> = SWITCH_HEIGHTS.iter().copied().filter(|h| *h != prev).collect();
                let h = choices[(rng.next_u64() % choices.len() as u64) as usize];
                prev = h;
                (SWITCH_MARGIN + *t + min_gap * i as u32, h)
            })
            .collect()
    }
}

impl Default for ReceiverConstraints {
    fn default() -> Self {
        Self {
            max_height: 720,
            last_n: -1,
            no_bridge_channel: false,
            switch_plan: SwitchPlan::default(),
        }
    }
}

impl ReceiverConstraints {
    /// The message asking for `max_height` instead of the configured height.
    pub fn message_with_height(&self, max_height: i32) -> String {
        ReceiverConstraints { max_height, ..*self }.message()
    }

    /// The bridge-channel message.
    pub fn message(&self) -> String {
        serde_json::json!({
            "colibriClass": "ReceiverVideoConstraints",
            "lastN": self.last_n,
            "defaultConstraints": { "maxHeight": self.max_height },
        })
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkPair {
    /// Endpoint to bridge.
    pub uplink: LinkConfig,
    /// Bridge to endpoint.
    pub downlink: LinkConfig,
}

/// Endpoints with their own link: either explicit global indexes or the last `per_conference`
/// endpoints of every conference. Later classes win over earlier ones.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointClass {
    pub name: String,
    /// Global endpoint indexes (conference × endpoints + position).
    pub endpoints: Vec<u32>,
    /// The last N endpoints of each conference.
    pub per_conference: u32,
    pub uplink: LinkConfig,
    pub downlink: LinkConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RampConfig {
    /// Conferences (of `endpoints` each) added per step.
    pub step_conferences: u32,
    /// Measured time per step, after `settle`.
    #[serde(with = "humantime_serde")]
    pub step_duration: Duration,
    /// Time after a step's joins before its measurement starts.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Stop adding after this many endpoints even if all is well.
    pub max_endpoints: u32,
    /// A step is bad above this loss …
    pub max_loss_percent: f64,
    /// … or above this p99 latency.
    pub max_p99_ms: f64,
}

impl Default for RampConfig {
    fn default() -> Self {
        Self {
            step_conferences: 2,
            step_duration: Duration::from_secs(10),
            settle: Duration::from_secs(3),
            max_endpoints: 400,
            max_loss_percent: 1.0,
            max_p99_ms: 50.0,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "default".into(),
            mode: Mode::Steady,
            conferences: 1,
            endpoints: 4,
            join_rate: 20.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(3),
            seed: 1,
            codec: Codec::Vp8Simulcast,
            video_senders: -1,
            audio_senders: -1,
            video_bitrate_scale: 1.0,
            receiver: ReceiverConstraints::default(),
            switches: 0,
            link: LinkPair::default(),
            class: Vec::new(),
            ramp: RampConfig::default(),
            check: None,
            churn: ChurnConfig::default(),
            resources: ResourceConfig::default(),
        }
    }
}

/// A scenario problem, worded for one clear error line.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parse and check scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.into(),
            // toml's message spans several lines (with a caret); keep it on one.
            message: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
        })?;
        s.validate().map_err(|message| ScenarioError::Invalid {
            path: origin.into(),
            message,
        })?;
        Ok(s)
    }

    /// Check values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.conferences == 0 || self.endpoints == 0 {
            return Err("conferences and endpoints must be at least 1".into());
        }
        if self.endpoints > 500 {
            return Err(format!(
                "endpoints per conference must be ≤ 500, not {}",
                self.endpoints
            ));
        }
        if !(self.join_rate > 0.0 && self.join_rate <= 1000.0) {
            return Err(format!(
                "join_rate must be within (0, 1000] per second, not {}",
                self.join_rate
            ));
        }
        if self.duration < Duration::from_secs(1) {
            return Err("duration must be at least 1s".into());
        }
        if self.switches > 1000 {
            return Err(format!("switches must be ≤ 1000, not {}", self.switches));
        }
        if self.switches > 0 && self.receiver.no_bridge_channel {
            return Err("switches need the bridge channel (receiver.no_bridge_channel = false)".into());
        }
        if self.video_senders < -1 || self.audio_senders < -1 {
            return Err("video_senders/audio_senders must be -1 (all) or a count".into());
        }
        if !(self.video_bitrate_scale > 0.0 && self.video_bitrate_scale <= 10.0) {
            return Err("video_bitrate_scale must be within (0, 10]".into());
        }
        self.link.uplink.validate("link.uplink")?;
        self.link.downlink.validate("link.downlink")?;
        for (i, c) in self.class.iter().enumerate() {
            c.uplink.validate(&format!("class[{i}].uplink"))?;
            c.downlink.validate(&format!("class[{i}].downlink"))?;
            if c.endpoints.is_empty() && c.per_conference == 0 {
                return Err(format!(
                    "class[{i}] ({}) selects no endpoints: give endpoints or per_conference",
                    c.name
                ));
            }
        }
        self.churn.validate()?;
        self.resources.validate()?;
        if self.mode == Mode::Ramp && self.churn.enabled() {
            return Err("churn runs in steady mode only".into());
        }
        if self.mode == Mode::Ramp {
            let r = &self.ramp;
            if r.step_conferences == 0 || r.max_endpoints == 0 {
                return Err("ramp.step_conferences and ramp.max_endpoints must be at least 1".into());
            }
            if r.step_duration < Duration::from_secs(1) {
                return Err("ramp.step_duration must be at least 1s".into());
            }
        }
        Ok(())
    }

    /// The receivers' constraints with the switch plan: `switches` changes within the time from
    /// joining to the end of the run (warmup + duration; steady mode).
    pub fn receiver_constraints(&self) -> ReceiverConstraints {
        let window = match self.mode {
            Mode::Steady => self.warmup + self.duration,
            Mode::Ramp => self.ramp.settle + self.ramp.step_duration,
        };
        ReceiverConstraints {
            switch_plan: SwitchPlan {
                count: self.switches,
                window,
            },
            ..self.receiver
        }
    }

    /// How many endpoints of a conference send video.
    pub fn video_senders(&self) -> u32 {
        clamp_count(self.video_senders, self.endpoints)
    }

    pub fn audio_senders(&self) -> u32 {
        clamp_count(self.audio_senders, self.endpoints)
    }

    /// The link of the endpoint at `position` in conference `conference` (global index
    /// `conference * endpoints + position`), and the name of its class.
    pub fn link_of(&self, conference: u32, position: u32) -> (LinkPair, &str) {
        let global = conference * self.endpoints + position;
        let mut pair = (self.link.clone(), "default");
        for c in &self.class {
            let by_index = c.endpoints.contains(&global);
            let by_tail = c.per_conference > 0 && position + c.per_conference >= self.endpoints;
            if by_index || by_tail {
                pair = (
                    LinkPair {
                        uplink: c.uplink.clone(),
                        downlink: c.downlink.clone(),
                    },
                    c.name.as_str(),
                );
            }
        }
        pair
    }
}

fn clamp_count(n: i32, of: u32) -> u32 {
    if n < 0 {
        of
    } else {
        (n as u32).min(of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scenario_parses() {
        let s = Scenario::parse(
            r#"
            name = "t"
            mode = "ramp"
            conferences = 2
            endpoints = 3
            join_rate = 5.0
            duration = "5s"
            warmup = "1s"
            seed = 9
            codec = "av1-svc"
            video_senders = 2
            audio_senders = -1
            [receiver]
            max_height = 360
            last_n = 5
            [link.uplink]
            delay_ms = 10
            [link.downlink]
            rate_kbps = 2000
            [[class]]
            name = "lossy"
            endpoints = [0]
            uplink = { loss_percent = 2.0 }
            [[class]]
            name = "mobile"
            per_conference = 1
            downlink = { rate_kbps = 800, jitter_ms = 5 }
            [ramp]
            step_conferences = 1
            max_p99_ms = 80
            "#,
            "inline",
        )
        .expect("parses");
        assert_eq!(s.mode, Mode::Ramp);
        assert_eq!(s.codec, Codec::Av1Svc);
        assert_eq!(s.duration, Duration::from_secs(5));
        assert_eq!((s.video_senders(), s.audio_senders()), (2, 3));
        assert_eq!(s.receiver.max_height, 360);
        assert_eq!(s.ramp.max_p99_ms, 80.0);
        assert_eq!(s.ramp.max_loss_percent, 1.0, "defaults fill the rest");
        // Endpoint 0: the lossy class; position 2 of each conference: mobile; others default.
        let (l0, n0) = s.link_of(0, 0);
        assert_eq!((n0, l0.uplink.loss_percent), ("lossy", 2.0));
        assert_eq!(s.link_of(0, 1).1, "default");
        assert_eq!(s.link_of(0, 1).0.uplink.delay_ms, 10.0);
        assert_eq!(s.link_of(1, 2).1, "mobile");
        assert_eq!(s.link_of(1, 2).0.downlink.rate_kbps, 800);
        assert_eq!(s.link_of(1, 0).1, "default");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_one_line_errors() {
        let e = Scenario::parse("conferences = 2\nendpoint = 3\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.toml") && msg.contains("endpoint"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");

        let e = Scenario::parse("[link.uplink]\nloss = 2\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("loss"), "{e}");

        let e = Scenario::parse("codec = \"h264\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("h264"), "{e}");

        let e = Scenario::parse("[link.uplink]\nloss_percent = 150\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("link.uplink.loss_percent"), "{e}");

        let e = Scenario::parse("conferences = 0\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");

        let e = Scenario::parse("duration = \"soon\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("duration"), "{e}");

        let e = Scenario::parse("[[class]]\nname = \"x\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("selects no endpoints"), "{e}");
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Scenario::parse("", "empty").expect("parses"), Scenario::default());
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4, "meeting, school, lossy, ramp");
    }

    #[test]
    fn switch_schedule_is_seeded_sorted_and_alternating() {
        let s = Scenario::parse("switches = 20\nduration = \"20s\"\nwarmup = \"3s\"\n", "x").expect("parses");
        let plan = s.receiver_constraints().switch_plan;
        assert_eq!(plan.count, 20);
        assert_eq!(plan.window, Duration::from_secs(23));
        let a = plan.schedule(7, 720);
        assert_eq!(a, plan.schedule(7, 720), "same seed, same plan");
        assert_ne!(a, plan.schedule(8, 720), "another seed, another plan");
        assert_eq!(a.len(), 20);
        assert_ne!(a[0].1, 720);
        for w in a.windows(2) {
            assert!(w[1].0 >= w[0].0 + Duration::from_millis(250), "{w:?}");
            assert_ne!(w[0].1, w[1].1, "every entry is a change");
        }
        assert!(a[0].0 >= SWITCH_MARGIN);
        assert!(a[19].0 <= plan.window - SWITCH_MARGIN);
        assert!(a.iter().all(|(_, h)| SWITCH_HEIGHTS.contains(h)));
        assert!(SwitchPlan::default().schedule(1, 720).is_empty());
        let e = Scenario::parse("switches = 2\n[receiver]\nno_bridge_channel = true\n", "x").unwrap_err();
        assert!(e.to_string().contains("bridge channel"), "{e}");
    }

    #[test]
    fn constraints_message_is_the_bridge_channel_json() {
        let m = ReceiverConstraints {
            max_height: 360,
            last_n: 3,
            no_bridge_channel: false,
            switch_plan: SwitchPlan::default(),
        }
        .message();
        let v: serde_json::Value = serde_json::from_str(&m).expect("json");
        assert_eq!(v["colibriClass"], "ReceiverVideoConstraints");
        assert_eq!(v["lastN"], 3);
        assert_eq!(v["defaultConstraints"]["maxHeight"], 360);
    }
}
