//! Rolling upgrade of three bridges, robustness.md §4 case 56 (issue 8), against three `palim`
//! processes in one real Prosody's brewery, with str0m endpoints on loopback.
//!
//! The test focus plays Jicofo's part: it follows the three bridges' brewery presence and puts
//! each new conference on a selectable bridge as Jicofo's `BridgeSelector` does (colibri.md
//! §2.3: never `shutting_down`; `graceful_shutdown` only without an alternative; non-draining
//! preferred; then the least `stress_level + recent endpoints × average_participant_stress`;
//! a bridge counts as draining until its first `drain` stat). It keeps creating short
//! conferences (two str0m endpoints with audio and video for [`CONF_MEDIA`], then expired by
//! the focus as Jicofo does when a meeting ends), one every [`CONF_EVERY`].
//!
//! Meanwhile, per bridge in turn: `POST /colibri/drain/enable`; presence `drain=true` and the
//! focus stops choosing it; its conferences end (presence `participants=0`, none of the focus's
//! own left on it); shutdown, alternately `POST /colibri/shutdown {"graceful-shutdown":true}`
//! and SIGTERM; presence `shutting_down=true`, exit code 0, the occupant leaves; the same
//! binary starts again (the "upgrade") with `initial_drain_mode = true`, so it rejoins drained
//! and gets nothing; `POST /colibri/drain/disable`; presence `drain=false`; next bridge.
//!
//! Checks: every conference got media at both endpoints for its whole life (longest gap < 1 s,
//! ≥ 90 % of the audio), no Colibri2 error, no allocation refused and a bridge always
//! selectable, no conference put on a draining bridge, each bridge exited 0 and rejoined, and
//! at the end all three are selectable again and each got a conference after its last restart.
//!
//! Moving participants when SHUTTING_DOWN is reached by timeout is Jicofo's (it re-invites on
//! the `shutting_down` transition) and is not exercised: here a bridge only shuts down once
//! empty.
//!
//! Run: `cargo test -p signaling --test rolling_upgrade -- --nocapture`. The whole rolling
//! cycle runs `PALIM_ROLLING_CYCLES` times (default 2, about 35 s, so that each bridge is stopped
//! once by REST and once by SIGTERM; the spec's 10 took 124 s on a shared 2-core machine). Skips
//! without prosody unless CI is set. `PALIM_TEST_LOG=1` prints the bridges' logs at the end.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signaling::xmpp::PresenceEvent;
use support::call::{two_party_call, Media, MediaReport};
use support::colibri::{conference_expire, modify_at};
use support::palim::{PalimConfig, PalimProcess};
use support::{Prosody, TestFocus};
use tokio::sync::{broadcast, watch};

const NICKS: [&str; 3] = ["palim-roll-a", "palim-roll-b", "palim-roll-c"];
/// Media time of each conference (after its endpoints connected).
const CONF_MEDIA: Duration = Duration::from_secs(3);
/// A new conference this often.
const CONF_EVERY: Duration = Duration::from_millis(1000);
/// Jicofo's `participant-rampup-interval`.
const RAMPUP: Duration = Duration::from_secs(20);
/// Jicofo's default `average_participant_stress`.
const DEFAULT_PARTICIPANT_STRESS: f64 = 0.01;

fn cycles() -> usize {
    std::env::var("PALIM_ROLLING_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

// ------------------------------------------------------------------------------------------
// What the focus knows about the brewery.

/// One bridge as seen in the brewery, for the lifetime of its occupant.
#[derive(Clone, Debug, Default)]
struct BridgeView {
    available: bool,
    stats: HashMap<String, String>,
    /// Distinct (drain, graceful_shutdown, shutting_down) it published since it joined (kept
    /// after it left, until it joins again).
    states: Vec<(bool, bool, bool)>,
}

impl BridgeView {
    fn flag(&self, name: &str) -> Option<bool> {
        self.stats.get(name).map(|v| v == "true")
    }
    fn num(&self, name: &str) -> Option<f64> {
        self.stats.get(name).and_then(|v| v.parse().ok())
    }
    /// Jicofo assumes draining until the first `drain` stat.
    fn draining(&self) -> bool {
        self.flag("drain").unwrap_or(true)
    }
    fn selectable(&self) -> bool {
        self.available && !self.stats.is_empty() && self.flag("shutting_down") != Some(true)
    }
}

type Brewery = HashMap<String, BridgeView>;

/// Follows the bridges' presence (through the real Prosody) into a watch channel.
fn track_brewery(focus: &TestFocus) -> watch::Receiver<Brewery> {
    let mut rx = focus.client.subscribe_presence();
    let (tx, view) = watch::channel(Brewery::new());
    tokio::spawn(async move {
        loop {
            let ev: PresenceEvent = match rx.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("brewery tracker lagged {n} presence events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !NICKS.contains(&ev.nick.as_str()) {
                continue;
            }
            tx.send_modify(|b| {
                let v = b.entry(ev.nick.clone()).or_default();
                if !ev.available {
                    // A new occupant later is a new bridge for Jicofo: nothing sticky survives
                    // (the states it went through stay until it joins again, for the test).
                    v.available = false;
                    v.stats.clear();
                    return;
                }
                if !v.available {
                    *v = BridgeView::default();
                }
                v.available = true;
                if let Some(stats) = &ev.stats {
                    v.stats = stats.iter().cloned().collect();
                    let st = (
                        v.flag("drain") == Some(true),
                        v.flag("graceful_shutdown") == Some(true),
                        v.flag("shutting_down") == Some(true),
                    );
                    if v.states.last() != Some(&st) {
                        v.states.push(st);
                    }
                }
            });
        }
    });
    view
}

/// Waits until `f` holds for bridge `nick`'s view; the view, or panics after `within`.
async fn wait_view(
    brewery: &mut watch::Receiver<Brewery>,
    nick: &str,
    within: Duration,
    what: &str,
    f: impl Fn(&BridgeView) -> bool,
) -> BridgeView {
    let res = tokio::time::timeout(within, async {
        loop {
            if let Some(v) = brewery.borrow_and_update().get(nick).filter(|v| f(v)) {
                return v.clone();
            }
            brewery.changed().await.expect("brewery tracker running");
        }
    })
    .await;
    res.unwrap_or_else(|_| {
        panic!(
            "{nick}: {what}: not within {within:?}; view {:?}",
            brewery.borrow().get(nick)
        )
    })
}

/// Jicofo's bridge selection over the three bridges, with its own record of recent allocations.
#[derive(Default)]
struct Selector {
    /// (when, bridge index, endpoints) of this focus's allocations.
    recent: Mutex<Vec<(Instant, usize, u32)>>,
}

impl Selector {
    fn select(&self, brewery: &Brewery, now: Instant) -> Option<usize> {
        let mut recent = self.recent.lock().expect("selector lock");
        recent.retain(|(t, _, _)| now.duration_since(*t) < RAMPUP);
        let views: Vec<(usize, &BridgeView)> = NICKS
            .iter()
            .enumerate()
            .filter_map(|(i, n)| brewery.get(*n).filter(|v| v.selectable()).map(|v| (i, v)))
            .collect();
        // Graceful ones only when nothing else; non-draining ones when there are any.
        let not_graceful: Vec<_> = views
            .iter()
            .filter(|(_, v)| v.flag("graceful_shutdown") != Some(true))
            .cloned()
            .collect();
        let pool = if not_graceful.is_empty() { views } else { not_graceful };
        let not_draining: Vec<_> = pool.iter().filter(|(_, v)| !v.draining()).cloned().collect();
        let pool = if not_draining.is_empty() { pool } else { not_draining };
        let corrected = |i: usize, v: &BridgeView| {
            let eps: u32 = recent.iter().filter(|r| r.1 == i).map(|r| r.2).sum();
            v.num("stress_level").unwrap_or(0.0)
                + f64::from(eps)
                    * v.num("average_participant_stress")
                        .unwrap_or(DEFAULT_PARTICIPANT_STRESS)
        };
        let chosen = pool
            .iter()
            .min_by(|a, b| corrected(a.0, a.1).total_cmp(&corrected(b.0, b.1)))
            .map(|(i, _)| *i)?;
        recent.push((now, chosen, 2));
        Some(chosen)
    }
}

// ------------------------------------------------------------------------------------------
// Conferences.

#[derive(Debug)]
struct ConfRecord {
    k: usize,
    bridge: usize,
    /// Which run of that bridge's process (1 = the first).
    run: u32,
    /// The bridge was draining in the focus's view when chosen.
    chose_draining: bool,
    report: Option<MediaReport>,
    error: Option<String>,
}

/// Reads a bridge's current log (for failure messages from conference tasks).
type LogReader = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared between the rolling procedure and the conference generator.
struct Shared {
    focus: Arc<TestFocus>,
    selector: Selector,
    /// The focus's own conferences still allocated, per bridge.
    active: [AtomicUsize; 3],
    /// Current run per bridge and a reader of its log.
    runs: Mutex<[(u32, LogReader); 3]>,
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

/// One conference on bridge `bridge`: two endpoints, media for [`CONF_MEDIA`], expire.
async fn conference(shared: Arc<Shared>, k: usize, bridge: usize, logs: LogReader) -> MediaReport {
    let occupant = TestFocus::occupant(NICKS[bridge]);
    let meeting = format!("{:08x}-0000-4000-8000-{k:012x}", std::process::id());
    let room = format!("rolling{k}@muc.meet.jitsi");
    let a = 1 + (2 * k % 240) as u8;
    let peers = two_party_call(&shared.focus, &occupant, || logs(), &meeting, &room, [a, a + 1]).await;
    let media = Media::start(peers);
    tokio::time::sleep(CONF_MEDIA).await;
    let report = tokio::task::spawn_blocking(move || media.finish())
        .await
        .expect("media thread");
    modify_at(&shared.focus, &occupant, "expire", conference_expire(&meeting), || {
        logs()
    })
    .await;
    report
}

/// Starts a conference every [`CONF_EVERY`] until `stop`; returns every conference's record.
async fn generate(shared: Arc<Shared>, brewery: watch::Receiver<Brewery>, stop: Arc<AtomicBool>) -> Vec<ConfRecord> {
    let mut tasks = Vec::new();
    let mut refused = Vec::new();
    let mut k = 0usize;
    let mut tick = tokio::time::interval(CONF_EVERY);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        k += 1;
        let view = brewery.borrow().clone();
        let Some(bridge) = shared.selector.select(&view, Instant::now()) else {
            refused.push(ConfRecord {
                k,
                bridge: usize::MAX,
                run: 0,
                chose_draining: false,
                report: None,
                error: Some(format!("no bridge selectable: {view:?}")),
            });
            continue;
        };
        let chose_draining = view.get(NICKS[bridge]).is_none_or(|v| v.draining());
        let (run, logs) = shared.runs.lock().expect("runs lock")[bridge].clone();
        shared.active[bridge].fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let r = tokio::spawn(conference(s.clone(), k, bridge, logs)).await;
            s.active[bridge].fetch_sub(1, Ordering::SeqCst);
            r
        });
        tasks.push((k, bridge, run, chose_draining, task));
    }
    let mut out = refused;
    for (k, bridge, run, chose_draining, task) in tasks {
        let (report, error) = match task.await.expect("conference wrapper") {
            Ok(report) => (Some(report), None),
            Err(e) => (None, Some(panic_text(e))),
        };
        out.push(ConfRecord {
            k,
            bridge,
            run,
            chose_draining,
            report,
            error,
        });
    }
    out.sort_by_key(|r| r.k);
    out
}

// ------------------------------------------------------------------------------------------

fn bridge_config(initial_drain: bool) -> PalimConfig {
    PalimConfig {
        tail: format!("[shutdown]\nshutting_down_delay = \"1m\"\ninitial_drain_mode = {initial_drain}\n"),
        ..PalimConfig::default()
    }
}

/// Timings of one bridge's turn (printed).
#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
struct Turn {
    cycle: usize,
    bridge: usize,
    how: &'static str,
    drain_seen: Duration,
    emptied: Duration,
    exited: Duration,
    rejoined: Duration,
    states: Vec<(bool, bool, bool)>,
}

/// A drain / empty / stop / restart / undrain rolling cycle over three bridges, repeated, never
/// drops a conference, never makes the focus refuse or misplace one, and every bridge comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_of_three_bridges_drops_no_conference() {
    let Some(prosody) = Prosody::start_or_skip("rolling").await else {
        return;
    };
    let n_cycles = cycles();
    let t0 = Instant::now();
    let focus = Arc::new(TestFocus::join(&prosody).await);
    let mut brewery = track_brewery(&focus);
    let mut bridges: Vec<PalimProcess> = NICKS
        .iter()
        .map(|n| PalimProcess::start(&prosody, n, bridge_config(false)))
        .collect();
    for (i, n) in NICKS.iter().enumerate() {
        wait_view(&mut brewery, n, Duration::from_secs(20), "joined with stats", |v| {
            v.available && v.flag("drain") == Some(false)
        })
        .await;
        bridges[i].assert_running();
    }
    let shared = Arc::new(Shared {
        focus: focus.clone(),
        selector: Selector::default(),
        active: Default::default(),
        runs: Mutex::new(std::array::from_fn(|i| {
            let r: LogReader = Arc::new(bridges[i].log_reader());
            (1, r)
        })),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let generator = tokio::spawn(generate(shared.clone(), brewery.clone(), stop.clone()));
    // Let every bridge get conferences before the first one is drained.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut turns = Vec::new();
    for cycle in 0..n_cycles {
        for i in 0..NICKS.len() {
            let nick = NICKS[i];
            let t = Instant::now();
            let (code, body) = bridges[i].rest("POST", "/colibri/drain/enable", "").await;
            assert_eq!(code, 200, "{nick}: drain enable: {body}");
            wait_view(&mut brewery, nick, Duration::from_secs(5), "drain=true", |v| {
                v.flag("drain") == Some(true)
            })
            .await;
            let drain_seen = t.elapsed();
            // Its conferences end by themselves (Jicofo does not move anyone for a drain).
            let t = Instant::now();
            loop {
                let v = wait_view(&mut brewery, nick, Duration::from_secs(30), "participants=0", |v| {
                    v.num("participants") == Some(0.0) && v.num("conferences") == Some(0.0)
                })
                .await;
                if shared.active[i].load(Ordering::SeqCst) == 0 {
                    assert_eq!(v.flag("drain"), Some(true));
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{nick}: the focus's conferences did not end"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let emptied = t.elapsed();
            // Stop it.
            let t = Instant::now();
            let how = if (cycle + i) % 2 == 0 {
                let (code, body) = bridges[i]
                    .rest("POST", "/colibri/shutdown", r#"{"graceful-shutdown":true}"#)
                    .await;
                assert_eq!(code, 200, "{nick}: shutdown: {body}");
                "REST graceful shutdown"
            } else {
                bridges[i].sigterm();
                "SIGTERM"
            };
            let status = bridges[i].wait_exit(Duration::from_secs(20)).await;
            assert_eq!(
                status.code(),
                Some(0),
                "{nick}: exit status; log:\n{}",
                bridges[i].logs()
            );
            let exited = t.elapsed();
            let states = wait_view(&mut brewery, nick, Duration::from_secs(5), "left the brewery", |v| {
                !v.available
            })
            .await
            .states;
            assert!(
                states.iter().any(|s| s.2),
                "{nick}: no shutting_down=true presence before leaving: {states:?}"
            );
            // The "upgrade": the same binary again, starting drained.
            let t = Instant::now();
            bridges[i].restart_with(bridge_config(true));
            let v = wait_view(
                &mut brewery,
                nick,
                Duration::from_secs(20),
                "rejoined with stats",
                |v| v.available && !v.stats.is_empty(),
            )
            .await;
            let rejoined = t.elapsed();
            bridges[i].assert_running();
            assert_eq!(v.flag("drain"), Some(true), "{nick}: initial drain mode: {:?}", v.stats);
            assert_eq!(v.flag("graceful_shutdown"), Some(false), "{:?}", v.stats);
            assert_eq!(v.flag("shutting_down"), Some(false), "{:?}", v.stats);
            {
                let mut runs = shared.runs.lock().expect("runs lock");
                runs[i] = (runs[i].0 + 1, Arc::new(bridges[i].log_reader()));
            }
            // Undrain.
            let (code, body) = bridges[i].rest("POST", "/colibri/drain/disable", "").await;
            assert_eq!(code, 200, "{nick}: drain disable: {body}");
            wait_view(&mut brewery, nick, Duration::from_secs(5), "drain=false", |v| {
                v.flag("drain") == Some(false)
            })
            .await;
            let turn = Turn {
                cycle,
                bridge: i,
                how,
                drain_seen,
                emptied,
                exited,
                rejoined,
                states,
            };
            println!("{turn:?}");
            turns.push(turn);
        }
    }
    // Let the last undrained bridge get conferences again, then stop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let records = generator.await.expect("generator");
    let elapsed = t0.elapsed();

    // At the end all three are selectable again.
    let view = brewery.borrow().clone();
    for n in NICKS {
        let v = view.get(n).cloned().unwrap_or_default();
        assert!(
            v.selectable() && !v.draining() && v.flag("graceful_shutdown") == Some(false),
            "{n} not selectable at the end: {v:?}"
        );
    }
    for b in bridges.iter_mut() {
        b.assert_running();
    }

    // Every conference.
    let failed: Vec<&ConfRecord> = records.iter().filter(|r| r.error.is_some()).collect();
    let mut bad_media = Vec::new();
    let mut max_gap = Duration::ZERO;
    let mut min_ratio = f64::MAX;
    let mut per_bridge = [0usize; 3];
    for r in records.iter().filter(|r| r.error.is_none()) {
        per_bridge[r.bridge] += 1;
        let Some(rep) = &r.report else { continue };
        max_gap = max_gap.max(rep.max_gap.iter().copied().max().unwrap_or_default());
        for got in &rep.audio_received {
            min_ratio = min_ratio.min(*got as f64 / f64::from(rep.sent_audio.max(1)));
        }
        if let Err(e) = rep.check() {
            bad_media.push(format!("conference {} on {}: {e}", r.k, NICKS[r.bridge]));
        }
    }
    let on_draining: Vec<&ConfRecord> = records.iter().filter(|r| r.chose_draining).collect();
    let last_runs = shared.runs.lock().expect("runs lock").clone();
    let after_last_restart: Vec<usize> = (0..3)
        .map(|i| {
            records
                .iter()
                .filter(|r| r.bridge == i && r.run == last_runs[i].0 && r.error.is_none())
                .count()
        })
        .collect();
    println!(
        "case 56: {n_cycles} rolling cycles in {elapsed:?}: {} conferences ({per_bridge:?} per bridge), \
         {} failed, {} with bad media, {} put on a draining bridge; longest media gap {max_gap:?}, \
         least audio received / sent {min_ratio:.3}; conferences after the last restart {after_last_restart:?}",
        records.len(),
        failed.len(),
        bad_media.len(),
        on_draining.len(),
    );
    assert!(failed.is_empty(), "conferences failed: {failed:#?}");
    assert!(bad_media.is_empty(), "media: {bad_media:#?}");
    assert!(on_draining.is_empty(), "put on a draining bridge: {on_draining:#?}");
    assert!(
        after_last_restart.iter().all(|n| *n > 0),
        "a bridge got no conference after its last restart: {after_last_restart:?}"
    );
    assert_eq!(turns.len(), n_cycles * NICKS.len());
}
