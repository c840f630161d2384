//! Churn: while a steady run is measured, endpoints leave and new ones join, as in a real
//! deployment, so a soak run exercises every per-endpoint allocation and release of the bridge.
//!
//! Every conference has `endpoints` seats; seat `s` has the role the scenario gives position `s`
//! (sends video if `s < video_senders`, its link class). Every `interval` one connected endpoint
//! at least `min_age` old, in a random conference (seeded), leaves: its str0m client is dropped
//! and the focus expires it with Colibri2. A new endpoint, with a fresh index and SSRCs, then
//! takes the free seat (allocate, session-accept, ICE/DTLS, media), so conference sizes stay
//! constant within one. Every `conference_interval` a random conference is expired as a whole
//! and a new one is created and filled.
//!
//! A joiner knows the endpoints already in its conference and receives their media. Endpoints
//! that were there before it do not expect its SSRCs (str0m endpoints declare their receive
//! streams up front), so they drop its media after SRTP; the bridge still forwards it to them.
//! A departing video sender counts once as a freeze at each of its receivers.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::endpoint::EndpointReport;
use crate::link::SplitMix64;
use crate::run::Joiner;

/// The `[churn]` table of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnConfig {
    /// Every interval one endpoint leaves and a new one joins; absent: no endpoint churn.
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Every interval one whole conference is expired and a new one created; absent: none.
    #[serde(with = "humantime_serde")]
    pub conference_interval: Option<Duration>,
    /// Only endpoints at least this old leave (a leaver has had time to connect).
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        Self {
            interval: None,
            conference_interval: None,
            min_age: Duration::from_secs(3),
        }
    }
}

impl ChurnConfig {
    pub fn enabled(&self) -> bool {
        self.interval.is_some() || self.conference_interval.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_some_and(|i| i < Duration::from_millis(100)) {
            return Err("churn.interval must be at least 100ms".into());
        }
        if self.conference_interval.is_some_and(|i| i < Duration::from_secs(1)) {
            return Err("churn.conference_interval must be at least 1s".into());
        }
        Ok(())
    }
}

/// One endpoint in a seat.
pub struct Occupant {
    pub index: u32,
    pub name: String,
    pub joined: Instant,
    /// Dropping or sending stops the endpoint (see [`endpoint_stop`]).
    leave: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<EndpointReport>>,
}

impl Occupant {
    pub fn new(
        index: u32,
        name: String,
        joined: Instant,
        leave: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<EndpointReport>>,
    ) -> Self {
        Self {
            index,
            name,
            joined,
            leave,
            task,
        }
    }

    /// Stop the endpoint and wait (at most 5 s) for its report.
    pub async fn stop(self) -> Option<EndpointReport> {
        let _ = self.leave.send(());
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(r))) => Some(r),
            Ok(Ok(Err(e))) => {
                tracing::warn!(endpoint = %self.name, error = %format!("{e:#}"), "endpoint failed");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %self.name, error = %e, "endpoint task");
                None
            }
            Err(_) => {
                tracing::warn!(endpoint = %self.name, "endpoint did not stop within 5 s");
                None
            }
        }
    }
}

/// A conference's seats.
struct Conference {
    seats: Vec<Option<Occupant>>,
    /// The index the first endpoint of each seat gets (the initial fill takes them in order,
    /// and its endpoints know each other's SSRCs in advance).
    first_index: u32,
}

/// Who sits where, and the reports of those who left.
#[derive(Default)]
pub struct Roster {
    /// By conference number; `None` once expired.
    conferences: Vec<Option<Conference>>,
    /// Reports of endpoints that left during the run.
    pub left: Vec<EndpointReport>,
    /// Endpoints ever seated.
    pub seated_total: u32,
}

impl Roster {
    /// Make room for conference `c` (the next number) of `seats` seats.
    pub fn add_conference(&mut self, c: u32, seats: u32, first_index: u32) {
        let c = c as usize;
        if self.conferences.len() <= c {
            self.conferences.resize_with(c + 1, || None);
        }
        self.conferences[c] = Some(Conference {
            seats: (0..seats).map(|_| None).collect(),
            first_index,
        });
    }

    /// The other seats' endpoints of conference `c` as (seat, global index): whoever sits
    /// there, or for an empty seat the index its first endpoint gets.
    pub fn peers(&self, c: u32, seat: u32) -> Vec<(u32, u32)> {
        let Some(Some(conf)) = self.conferences.get(c as usize) else {
            return Vec::new();
        };
        conf.seats
            .iter()
            .enumerate()
            .filter(|(s, _)| *s as u32 != seat)
            .map(|(s, o)| (s as u32, o.as_ref().map_or(conf.first_index + s as u32, |o| o.index)))
            .collect()
    }

    pub fn seat(&mut self, c: u32, seat: u32, occupant: Occupant) {
        if let Some(Some(conf)) = self.conferences.get_mut(c as usize) {
            if let Some(s) = conf.seats.get_mut(seat as usize) {
                *s = Some(occupant);
                self.seated_total += 1;
                return;
            }
        }
        // A seat that does not exist: stop the endpoint rather than lose track of it.
        tracing::warn!(conference = c, seat, "no such seat; endpoint dropped");
    }

    /// A random occupied seat whose endpoint joined at least `min_age` before `now`, in a
    /// random live conference with more than one endpoint.
    pub fn pick_leaver(&self, rng: &mut SplitMix64, now: Instant, min_age: Duration) -> Option<(u32, u32)> {
        let candidates: Vec<(u32, u32)> = self
            .conferences
            .iter()
            .enumerate()
            .filter_map(|(c, conf)| conf.as_ref().map(|conf| (c as u32, conf)))
            .filter(|(_, conf)| conf.seats.iter().flatten().count() > 1)
            .flat_map(|(c, conf)| {
                conf.seats
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| {
                        o.as_ref()
                            .is_some_and(|o| now.saturating_duration_since(o.joined) >= min_age)
                    })
                    .map(move |(s, _)| (c, s as u32))
            })
            .collect();
        pick(rng, &candidates)
    }

    /// A random empty seat of a live conference.
    pub fn pick_free_seat(&self, rng: &mut SplitMix64) -> Option<(u32, u32)> {
        let free: Vec<(u32, u32)> = self
            .conferences
            .iter()
            .enumerate()
            .filter_map(|(c, conf)| conf.as_ref().map(|conf| (c as u32, conf)))
            .flat_map(|(c, conf)| {
                conf.seats
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.is_none())
                    .map(move |(s, _)| (c, s as u32))
            })
            .collect();
        pick(rng, &free)
    }

    /// A random live conference.
    pub fn pick_conference(&self, rng: &mut SplitMix64) -> Option<u32> {
        let live: Vec<u32> = self
            .conferences
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(c, _)| c as u32)
            .collect();
        pick(rng, &live)
    }

    pub fn unseat(&mut self, c: u32, seat: u32) -> Option<Occupant> {
        self.conferences
            .get_mut(c as usize)?
            .as_mut()?
            .seats
            .get_mut(seat as usize)?
            .take()
    }

    /// Remove conference `c`, returning its endpoints.
    pub fn remove_conference(&mut self, c: u32) -> Vec<Occupant> {
        self.conferences
            .get_mut(c as usize)
            .and_then(Option::take)
            .map(|conf| conf.seats.into_iter().flatten().collect())
            .unwrap_or_default()
    }

    /// Live conference numbers.
    pub fn live(&self) -> Vec<u32> {
        (0..self.conferences.len() as u32)
            .filter(|&c| self.conferences[c as usize].is_some())
            .collect()
    }

    /// Endpoints seated now.
    #[cfg(test)]
    pub fn seated(&self) -> usize {
        self.conferences
            .iter()
            .flatten()
            .map(|c| c.seats.iter().flatten().count())
            .sum()
    }

    /// Every seated endpoint's task (the run is over; they stop with the run's stop signal).
    pub fn take_tasks(&mut self) -> Vec<JoinHandle<anyhow::Result<EndpointReport>>> {
        let mut tasks = Vec::new();
        for conf in self.conferences.iter_mut().flatten() {
            for o in conf.seats.iter_mut().filter_map(Option::take) {
                // The leave sender is dropped here, which also stops the endpoint.
                tasks.push(o.task);
            }
        }
        tasks
    }
}

fn pick<T: Copy>(rng: &mut SplitMix64, from: &[T]) -> Option<T> {
    if from.is_empty() {
        return None;
    }
    from.get((rng.next_u64() % from.len() as u64) as usize).copied()
}

/// A stop signal for one endpoint: it flips when the run stops or when the returned sender is
/// used or dropped (the endpoint leaves).
pub fn endpoint_stop(mut run_stop: watch::Receiver<bool>) -> (watch::Receiver<bool>, oneshot::Sender<()>) {
    let (tx, rx) = watch::channel(false);
    let (leave_tx, leave_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        if !*run_stop.borrow() {
            tokio::select! {
                _ = run_stop.changed() => {}
                _ = leave_rx => {}
            }
        }
        let _ = tx.send(true);
    });
    (rx, leave_tx)
}

/// What churn did, as counted while it ran.
#[derive(Debug, Default, Clone)]
pub struct ChurnLog {
    pub leaves: u32,
    pub joins: u32,
    pub join_failures: u32,
    pub expire_failures: u32,
    pub conferences_expired: u32,
    pub conferences_created: u32,
    /// Global indexes of endpoints that joined by churn, with whether they have a peer that
    /// sends (so they should receive media).
    pub joiners: Vec<(u32, bool)>,
    /// The last error seen, for the report.
    pub last_error: Option<String>,
}

/// The churn part of the summary.
#[derive(Debug, Default, Serialize)]
pub struct ChurnReport {
    pub interval_s: Option<f64>,
    pub conference_interval_s: Option<f64>,
    pub leaves: u32,
    pub joins: u32,
    pub join_failures: u32,
    pub expire_failures: u32,
    pub conferences_expired: u32,
    pub conferences_created: u32,
    /// Churn joiners that connected (ICE + DTLS).
    pub joiners_connected: u32,
    /// Churn joiners with a sending peer that received media (should equal the next one).
    pub joiners_with_media: u32,
    pub joiners_expecting_media: u32,
    /// Join time (allocation start to ICE + DTLS connected) of the churn joiners.
    pub join_ms_p50: Option<f64>,
    pub join_ms_p95: Option<f64>,
    pub join_ms_p99: Option<f64>,
    pub join_ms_max: Option<f64>,
    pub last_error: Option<String>,
}

impl ChurnReport {
    /// Combine the log with the endpoints' reports.
    pub fn new(cfg: &ChurnConfig, log: &ChurnLog, reports: &[EndpointReport]) -> Self {
        let mut r = ChurnReport {
            interval_s: cfg.interval.map(|d| d.as_secs_f64()),
            conference_interval_s: cfg.conference_interval.map(|d| d.as_secs_f64()),
            leaves: log.leaves,
            joins: log.joins,
            join_failures: log.join_failures,
            expire_failures: log.expire_failures,
            conferences_expired: log.conferences_expired,
            conferences_created: log.conferences_created,
            last_error: log.last_error.clone(),
            ..Default::default()
        };
        let mut joins = Vec::new();
        for &(index, expects_media) in &log.joiners {
            let Some(rep) = reports.iter().find(|r| r.index == index) else {
                continue;
            };
            if rep.connected {
                r.joiners_connected += 1;
            }
            if let Some(ms) = rep.join_ms {
                joins.push(ms);
            }
            if expects_media {
                r.joiners_expecting_media += 1;
                if rep.received_packets > 0 {
                    r.joiners_with_media += 1;
                }
            }
        }
        joins.sort_by(f64::total_cmp);
        let q = |p: f64| -> Option<f64> {
            (!joins.is_empty()).then(|| {
                let rank = ((p / 100.0) * joins.len() as f64).ceil().max(1.0) as usize - 1;
                joins[rank.min(joins.len() - 1)]
            })
        };
        (r.join_ms_p50, r.join_ms_p95, r.join_ms_p99, r.join_ms_max) = (q(50.0), q(95.0), q(99.0), q(100.0));
        r
    }

    /// Label/value rows for the console and the HTML report.
    pub fn rows(&self) -> Vec<(String, String)> {
        let ms = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
        let mut rows = vec![
            (
                "churn".into(),
                format!(
                    "{} leaves, {} joins ({} failed), {} conferences expired, {} created",
                    self.leaves, self.joins, self.join_failures, self.conferences_expired, self.conferences_created
                ),
            ),
            (
                "churn joiners".into(),
                format!(
                    "{} connected, {}/{} received media; join ms p50 {}, p95 {}, p99 {}, max {}",
                    self.joiners_connected,
                    self.joiners_with_media,
                    self.joiners_expecting_media,
                    ms(self.join_ms_p50),
                    ms(self.join_ms_p95),
                    ms(self.join_ms_p99),
                    ms(self.join_ms_max)
                ),
            ),
        ];
        if let Some(e) = &self.last_error {
            rows.push(("churn last error".into(), e.clone()));
        }
        rows
    }
}

/// Run churn until `until` (or just wait for it when churn is off). Actions stop two seconds
/// before `until`, so the last joiner has time to connect and receive media.
pub async fn drive(
    joiner: &mut Joiner<'_>,
    meeting: &dyn Fn(u32) -> String,
    cfg: &ChurnConfig,
    seed: u64,
    until: Instant,
) -> ChurnLog {
    let mut log = ChurnLog::default();
    let mut rng = SplitMix64::new(seed ^ 0xC4_0123_u64);
    let last_action = until.checked_sub(Duration::from_secs(2)).unwrap_or(until);
    let start = Instant::now();
    let mut next_leave = cfg.interval.map(|i| start + i);
    let mut next_conf = cfg.conference_interval.map(|i| start + i);
    loop {
        let next = [next_leave, next_conf].into_iter().flatten().min();
        let Some(at) = next.filter(|&t| t <= last_action) else {
            break;
        };
        tokio::time::sleep_until(at.into()).await;
        if next_conf == Some(at) {
            replace_conference(joiner, meeting, &mut rng, &mut log).await;
            next_conf = cfg.conference_interval.map(|i| (at + i).max(Instant::now()));
        } else {
            replace_endpoint(joiner, meeting, cfg, &mut rng, &mut log).await;
            next_leave = cfg.interval.map(|i| (at + i).max(Instant::now()));
        }
    }
    tokio::time::sleep_until(until.into()).await;
    log
}

/// One leave and one join.
async fn replace_endpoint(
    joiner: &mut Joiner<'_>,
    meeting: &dyn Fn(u32) -> String,
    cfg: &ChurnConfig,
    rng: &mut SplitMix64,
    log: &mut ChurnLog,
) {
    let Some((c, seat)) = joiner.roster.pick_leaver(rng, Instant::now(), cfg.min_age) else {
        tracing::debug!("churn: nobody old enough to leave");
        return;
    };
    if let Some(o) = joiner.roster.unseat(c, seat) {
        let name = o.name.clone();
        leave(joiner, o).await;
        if let Err(e) = joiner.focus.expire_endpoint(&meeting(c), &name).await {
            log.expire_failures += 1;
            log.last_error = Some(format!("expiring {name}: {e:#}"));
        }
        log.leaves += 1;
    }
    let Some((c, seat)) = joiner.roster.pick_free_seat(rng) else {
        return;
    };
    match joiner.join(meeting, c, seat, false).await {
        Ok((index, expects_media)) => {
            log.joins += 1;
            log.joiners.push((index, expects_media));
        }
        Err(e) => {
            log.join_failures += 1;
            log.last_error = Some(format!("{e:#}"));
            tracing::warn!(error = %format!("{e:#}"), "churn: join failed");
        }
    }
}

/// Expire a random conference and create a new, full one.
async fn replace_conference(
    joiner: &mut Joiner<'_>,
    meeting: &dyn Fn(u32) -> String,
    rng: &mut SplitMix64,
    log: &mut ChurnLog,
) {
    let Some(c) = joiner.roster.pick_conference(rng) else {
        return;
    };
    for o in joiner.roster.remove_conference(c) {
        leave(joiner, o).await;
        log.leaves += 1;
    }
    if let Err(e) = joiner.focus.expire(&meeting(c)).await {
        log.expire_failures += 1;
        log.last_error = Some(format!("expiring conference {c}: {e:#}"));
    }
    log.conferences_expired += 1;
    let first = joiner.next_index;
    match joiner.add_conference(meeting).await {
        Ok(()) => {
            log.conferences_created += 1;
            let n = joiner.next_index - first;
            log.joins += n;
            // Everyone in a new conference knows everyone; each has a sending peer if the
            // conference has any sender other than itself.
            let s = joiner.scenario;
            let (vs, aus) = (s.video_senders(), s.audio_senders());
            for seat in 0..n {
                let others_send = (0..n).any(|o| o != seat && (o < vs || o < aus));
                log.joiners.push((first + seat, others_send));
            }
        }
        Err(e) => {
            log.join_failures += 1;
            log.last_error = Some(format!("{e:#}"));
            tracing::warn!(error = %format!("{e:#}"), "churn: new conference failed");
        }
    }
}

/// Stop an endpoint, keep its report, and count it out of the live totals.
async fn leave(joiner: &mut Joiner<'_>, o: Occupant) {
    let report = o.stop().await;
    joiner.on_left(report);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupant(index: u32, joined: Instant) -> Occupant {
        let (leave, _rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            Ok(EndpointReport {
                index,
                ..Default::default()
            })
        });
        Occupant::new(index, format!("ep{index}"), joined, leave, task)
    }

    #[tokio::test]
    async fn leavers_are_old_enough_and_joins_fill_the_free_seat() {
        let now = Instant::now();
        let old = now - Duration::from_secs(10);
        let mut r = Roster::default();
        r.add_conference(0, 3, 0);
        r.add_conference(1, 3, 3);
        for s in 0..3 {
            r.seat(0, s, occupant(s, old));
            // Conference 1: seat 0 is new, the others old.
            r.seat(1, s, occupant(3 + s, if s == 0 { now } else { old }));
        }
        assert_eq!(r.seated(), 6);
        let mut rng = SplitMix64::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (c, s) = r.pick_leaver(&mut rng, now, Duration::from_secs(3)).expect("someone");
            assert!(!(c == 1 && s == 0), "too young to leave");
            seen.insert((c, s));
        }
        assert_eq!(seen.len(), 5, "every old endpoint can be picked: {seen:?}");
        assert_eq!(r.pick_free_seat(&mut rng), None);
        let o = r.unseat(1, 2).expect("seated");
        assert_eq!(o.index, 5);
        assert_eq!(r.pick_free_seat(&mut rng), Some((1, 2)));
        // The joiner's peers are the others in its conference.
        assert_eq!(r.peers(1, 2), vec![(0, 3), (1, 4)]);
        // The same seed picks the same sequence.
        let (mut a, mut b) = (SplitMix64::new(3), SplitMix64::new(3));
        for _ in 0..20 {
            assert_eq!(
                r.pick_leaver(&mut a, now, Duration::ZERO),
                r.pick_leaver(&mut b, now, Duration::ZERO)
            );
        }
    }

    #[tokio::test]
    async fn a_conference_never_loses_its_last_endpoint_and_expired_ones_are_gone() {
        let old = Instant::now() - Duration::from_secs(10);
        let mut r = Roster::default();
        r.add_conference(0, 2, 0);
        r.seat(0, 0, occupant(0, old));
        // Seat 1 not yet filled: its peers list names the index it will get.
        assert_eq!(r.peers(0, 0), vec![(1, 1)]);
        let mut rng = SplitMix64::new(1);
        assert_eq!(
            r.pick_leaver(&mut rng, Instant::now(), Duration::ZERO),
            None,
            "only one left"
        );
        r.seat(0, 1, occupant(1, old));
        r.add_conference(1, 2, 2);
        assert_eq!(r.live(), vec![0, 1]);
        assert_eq!(r.remove_conference(0).len(), 2);
        assert_eq!(r.live(), vec![1]);
        assert_eq!(r.pick_conference(&mut rng), Some(1));
        assert!(r.remove_conference(0).is_empty());
        assert_eq!(r.seated_total, 2);
    }

    #[tokio::test]
    async fn endpoint_stop_flips_on_leave_on_drop_and_on_run_stop() {
        let (run_tx, run_rx) = watch::channel(false);
        let (mut a, leave_a) = endpoint_stop(run_rx.clone());
        let (mut b, leave_b) = endpoint_stop(run_rx.clone());
        let (mut c, _leave_c) = endpoint_stop(run_rx.clone());
        leave_a.send(()).expect("listening");
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .expect("a stops")
            .ok();
        assert!(*a.borrow());
        drop(leave_b);
        tokio::time::timeout(Duration::from_secs(1), b.changed())
            .await
            .expect("b stops")
            .ok();
        assert!(*b.borrow());
        assert!(!*c.borrow());
        run_tx.send(true).expect("receivers alive");
        tokio::time::timeout(Duration::from_secs(1), c.changed())
            .await
            .expect("c stops")
            .ok();
        assert!(*c.borrow());
        // A stop taken after the run stopped is stopped at once.
        let (mut d, _leave_d) = endpoint_stop(run_rx);
        tokio::time::timeout(Duration::from_secs(1), d.changed())
            .await
            .expect("d stops")
            .ok();
        assert!(*d.borrow());
    }

    #[test]
    fn report_counts_joiners_and_percentiles() {
        let rep = |index, connected, join_ms, rx| EndpointReport {
            index,
            connected,
            join_ms,
            received_packets: rx,
            ..Default::default()
        };
        let reports = vec![
            rep(10, true, Some(100.0), 50),
            rep(11, true, Some(300.0), 0),
            rep(12, false, None, 0),
            rep(13, true, Some(200.0), 9),
        ];
        let log = ChurnLog {
            leaves: 4,
            joins: 4,
            joiners: vec![(10, true), (11, true), (12, false), (13, true)],
            ..Default::default()
        };
        let cfg = ChurnConfig {
            interval: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let r = ChurnReport::new(&cfg, &log, &reports);
        assert_eq!(
            (r.joiners_connected, r.joiners_with_media, r.joiners_expecting_media),
            (3, 2, 3)
        );
        assert_eq!((r.join_ms_p50, r.join_ms_max), (Some(200.0), Some(300.0)));
        assert_eq!(r.interval_s, Some(2.0));
        assert!(r.rows()[1].1.contains("2/3 received media"), "{:?}", r.rows());
    }

    #[test]
    fn config_parses_and_validates() {
        #[derive(Deserialize)]
        struct T {
            churn: ChurnConfig,
        }
        let t: T = toml::from_str("[churn]\ninterval = \"2s\"\nconference_interval = \"1m\"\n").expect("parses");
        assert_eq!(t.churn.interval, Some(Duration::from_secs(2)));
        assert_eq!(t.churn.conference_interval, Some(Duration::from_secs(60)));
        assert_eq!(t.churn.min_age, Duration::from_secs(3));
        assert!(t.churn.enabled() && t.churn.validate().is_ok());
        assert!(!ChurnConfig::default().enabled());
        let bad = ChurnConfig {
            interval: Some(Duration::from_millis(10)),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("churn.interval"));
        assert!(toml::from_str::<T>("[churn]\nintervall = \"2s\"\n").is_err());
    }
}
