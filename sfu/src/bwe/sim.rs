//! Deterministic closed-loop simulation: a sender paced at the estimate (with probe clusters)
//! through an emulated bottleneck (rate schedule, one-way delay, seeded random loss, 300 ms
//! tail-drop queue) to a receiver whose [`TwccGenerator`] feedback travels back (same delay),
//! is parsed with `wire::rtcp` and fed to [`SendSideBwe`]. The receiver also sends a receiver
//! report (loss, RTT) every 500 ms. No sockets, no clock: 1 ms steps from a fixed `t0`.
//!
//! Run with `--nocapture` to print the trajectories used in docs/bwe.md.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ProbeCluster, ProbeController, SendSideBwe, TwccGenerator};
use crate::id::Ssrc;
use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

/// xorshift64*: deterministic, seeded, good enough for loss decisions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

const PACKET: usize = 1200;
const QUEUE_LIMIT: Duration = Duration::from_millis(300);
/// Padding / probe packet size of the shard (255 bytes of padding + RTP header).
const PADDING: usize = 275;

struct Scenario {
    /// (from second, link bps).
    rates: Vec<(f64, f64)>,
    one_way: Duration,
    loss: f64,
    seed: u64,
    /// What the sender would like to send (Σ ideal layers); it sends at the estimate, this only
    /// drives the prober's headroom probes.
    demand_bps: u64,
    seconds: u64,
    /// Send as the bridge forwards (not paced): the estimate's bytes in one burst per 33 ms
    /// frame, a keyframe (5 frames' worth) every 3 s; probe clusters stay paced.
    bursty: bool,
    /// Application-limited as in the harness's lossy scenario (`Some(media bps)`): media of
    /// this rate in one burst per 33 ms frame (1200-byte packets), padding up to the estimate
    /// in one burst per 15 ms tick (275-byte packets, as the shard's `PaddingBudget`), lost
    /// media resent (RTX) one RTT + 20 ms later; probe clusters paced. Overrides `bursty`.
    app_limited: Option<f64>,
    /// Extra one-way delay per packet, uniform in [0, jitter) (order kept), as the harness's
    /// emulated link and a busy host add (its timer lag is several ms at p99).
    jitter: Duration,
}

impl Scenario {
    fn rate(&self, t: f64) -> f64 {
        self.rates
            .iter()
            .rev()
            .find(|(from, _)| t >= *from)
            .map_or(self.rates[0].1, |r| r.1)
    }
}

/// (ms since start, estimate bps), sampled every 100 ms.
type Trajectory = Vec<(u64, u64)>;

fn run(s: &Scenario) -> Trajectory {
    let t0 = Instant::now();
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    let mut rng = Rng::new(s.seed);
    let mut bwe = SendSideBwe::default();
    let mut prober = ProbeController::new(bwe.estimate_bps());
    prober.set_demand(s.demand_bps);
    prober.on_estimate(bwe.estimate_bps(), t0);
    let mut twcc = TwccGenerator::new();
    let mut tw_seq = 0u16;
    let mut next_send = t0;
    let mut link_free = t0;
    let mut last_arrival = t0;
    let mut inflight: VecDeque<(Instant, u16, bool)> = VecDeque::new();
    let mut feedback: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut clusters: VecDeque<ProbeCluster> = VecDeque::new();
    let mut probe_sent = (0u64, 0u32);
    // Receiver-report state (over transport seqs, standing in for media seqs).
    let mut rr_highest: Option<u64> = None;
    let mut rr_prev_highest: Option<u64> = None;
    let mut rr_received = 0u64;
    let mut ext = crate::wire::rtp::SeqExtender::new();
    let mut next_rr = t0 + Duration::from_millis(500);
    let mut traj = Vec::new();
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    let mut burst_budget = 0.0f64;
    let mut padding_budget = 0.0f64;
    // RTX: (due, size) of lost media packets to resend.
    let mut rtx: VecDeque<(Instant, usize)> = VecDeque::new();
    for ms in 0..s.seconds * 1000 {
        let now = t0 + Duration::from_millis(ms);
        // Prober.
        if prober.next_deadline().is_some_and(|d| d <= now) {
            prober.handle_timeout(now);
        }
        while let Some(c) = prober.poll_cluster() {
            clusters.push_back(c);
        }
        // Sender.
        macro_rules! send_one {
            ($at:expr, $probe:expr) => {{
                send_one!($at, $probe, PACKET, false)
            }};
            ($at:expr, $probe:expr, $size:expr, $media:expr) => {{
                let at: Instant = $at;
                let probe: Option<ProbeCluster> = $probe;
                let size: usize = $size;
                let seq = tw_seq;
                tw_seq = tw_seq.wrapping_add(1);
                sent += 1;
                match probe {
                    Some(c) => {
                        bwe.on_probe_sent(seq, size, c.info(), at);
                        probe_sent.0 += size as u64;
                        probe_sent.1 += 1;
                        if probe_sent.0 >= c.min_bytes && probe_sent.1 >= c.min_packets {
                            clusters.pop_front();
                            probe_sent = (0, 0);
                        }
                    }
                    None => bwe.on_sent(seq, size, at),
                }
                let start = link_free.max(at);
                if start - at > QUEUE_LIMIT {
                    // Tail drop.
                } else if rng.f64() >= s.loss {
                    link_free = start + Duration::from_secs_f64(size as f64 * 8.0 / s.rate(secs(at)));
                    let mut arrival = link_free + s.one_way;
                    if !s.jitter.is_zero() {
                        arrival += s.jitter.mul_f64(rng.f64());
                    }
                    last_arrival = last_arrival.max(arrival);
                    inflight.push_back((last_arrival, seq, sent.is_multiple_of(8)));
                } else if $media {
                    // Lost after the queue (random loss): the receiver NACKs, the sender resends.
                    rtx.push_back((at + 2 * s.one_way + Duration::from_millis(20), size));
                }
            }};
        }
        if let Some(media) = s.app_limited {
            if ms % 33 == 0 {
                burst_budget += media * 0.033 / 8.0;
                while burst_budget >= PACKET as f64 {
                    burst_budget -= PACKET as f64;
                    send_one!(now, None, PACKET, true);
                }
            }
            while rtx.front().is_some_and(|r| r.0 <= now) {
                if let Some((_, size)) = rtx.pop_front() {
                    send_one!(now, None, size, true);
                }
            }
            if ms % 15 == 0 {
                let probing = !clusters.is_empty();
                let pad = (bwe.estimate_bps() as f64 - media).max(0.0) * 0.015 / 8.0;
                padding_budget += if probing { 0.0 } else { pad };
                while padding_budget >= PADDING as f64 {
                    padding_budget -= PADDING as f64;
                    send_one!(now, None, PADDING, false);
                }
            }
            // Probe clusters paced at their rate (padding-sized packets).
            while next_send <= now {
                let at = next_send;
                let Some(c) = clusters.front().copied() else {
                    next_send = now + Duration::from_millis(1);
                    break;
                };
                send_one!(at, Some(c), PADDING, false);
                next_send = at + Duration::from_secs_f64(PADDING as f64 * 8.0 / c.bitrate_bps as f64);
            }
        } else if s.bursty && clusters.is_empty() {
            if ms % 33 == 0 {
                let frame = bwe.estimate_bps() as f64 * 0.033 / 8.0;
                burst_budget += if ms % 3000 == 0 { 5.0 * frame } else { frame };
                while burst_budget >= PACKET as f64 {
                    burst_budget -= PACKET as f64;
                    send_one!(now, None);
                }
            }
            next_send = now;
        } else {
            while next_send <= now {
                let at = next_send;
                let probe = clusters.front().copied();
                let rate = match probe {
                    Some(c) => c.bitrate_bps as f64,
                    None => bwe.estimate_bps() as f64,
                };
                send_one!(at, probe);
                next_send = at + Duration::from_secs_f64(PACKET as f64 * 8.0 / rate);
            }
        }
        // Receiver.
        while inflight.front().is_some_and(|p| p.0 <= now) {
            let Some((arrival, seq, marker)) = inflight.pop_front() else {
                break;
            };
            twcc.record(seq, arrival, marker);
            let e = ext.extend(seq);
            rr_highest = Some(rr_highest.map_or(e, |h: u64| h.max(e)));
            rr_received += 1;
        }
        if twcc.next_deadline().is_some_and(|d| d <= now) {
            while let Some(n) = twcc.poll_feedback(now, Ssrc(1), Ssrc(2), &mut buf) {
                feedback.push_back((now + s.one_way, buf[..n].to_vec()));
            }
        }
        if now >= next_rr {
            next_rr += Duration::from_millis(500);
            if let (Some(h), Some(p)) = (rr_highest, rr_prev_highest) {
                let expected = h.saturating_sub(p);
                let lost = expected.saturating_sub(rr_received);
                let fraction = (lost * 256).checked_div(expected).map_or(0, |f| f.min(255) as u8);
                bwe.on_receiver_report(fraction, Some(2 * s.one_way), now);
                prober.on_estimate(bwe.estimate_bps(), now);
            }
            rr_prev_highest = rr_highest;
            rr_received = 0;
        }
        // Feedback at the sender.
        while feedback.front().is_some_and(|f| f.0 <= now) {
            let Some((_, bytes)) = feedback.pop_front() else { break };
            for p in RtcpCompound::new(&bytes) {
                if let Ok(RtcpPacket::TransportCc(tcc)) = p {
                    bwe.on_feedback(&tcc, now);
                    prober.on_estimate(bwe.estimate_bps(), now);
                }
            }
        }
        if ms % 100 == 0 {
            traj.push((ms, bwe.estimate_bps()));
        }
    }
    traj
}

fn at(t: &Trajectory, ms: u64) -> u64 {
    t.iter().find(|(m, _)| *m >= ms).map_or(0, |(_, e)| *e)
}

fn print(name: &str, t: &Trajectory) {
    let row: Vec<String> = t
        .iter()
        .filter(|(ms, _)| ms % 1000 == 0)
        .map(|(ms, e)| format!("{}s:{:.2}", ms / 1000, *e as f64 / 1e6))
        .collect();
    eprintln!("{name}: {}", row.join(" "));
}

fn step_scenario(seed: u64) -> Scenario {
    Scenario {
        rates: vec![(0.0, 3e6), (20.0, 0.6e6), (30.0, 3e6)],
        one_way: Duration::from_millis(25),
        loss: 0.0,
        seed,
        demand_bps: 5_000_000,
        seconds: 40,
        bursty: false,
        app_limited: None,
        jitter: Duration::ZERO,
    }
}

#[test]
fn step_down_and_up() {
    let t = run(&step_scenario(1));
    print("step 3 -> 0.6 -> 3 Mbps", &t);
    let before = at(&t, 19_900);
    assert!(before > 2_000_000, "estimate before the step {before}");
    let down = t
        .iter()
        .find(|(ms, e)| *ms >= 20_000 && *e < 750_000)
        .map(|(ms, _)| ms - 20_000);
    eprintln!("below 0.75 Mbps after {down:?} ms");
    assert!(
        down.is_some_and(|d| d <= 2_000),
        "not below 0.75 Mbps within 2 s: {down:?}"
    );
    let low = at(&t, 29_900);
    assert!(low < 750_000 && low > 300_000, "estimate on the 0.6 Mbps link {low}");
    let up = t
        .iter()
        .find(|(ms, e)| *ms >= 30_000 && *e > 2_400_000)
        .map(|(ms, _)| ms - 30_000);
    eprintln!("above 2.4 Mbps after {up:?} ms");
    assert!(up.is_some_and(|d| d <= 8_000), "not above 2.4 Mbps within 8 s: {up:?}");
}

#[test]
fn random_loss_and_rtt() {
    for seed in [7, 8, 9, 10, 11] {
        let s = Scenario {
            rates: vec![(0.0, 2e6)],
            one_way: Duration::from_millis(50),
            loss: 0.05,
            seed,
            demand_bps: 4_000_000,
            seconds: 12,
            bursty: false,
            app_limited: None,
            jitter: Duration::ZERO,
        };
        let t = run(&s);
        print(&format!("2 Mbps, 5 % loss, 100 ms RTT, seed {seed}"), &t);
        for ms in [10_000, 11_000, 11_900] {
            let e = at(&t, ms) as f64;
            assert!((e - 2e6).abs() <= 0.3 * 2e6, "seed {seed}: estimate at {ms} ms: {e}");
        }
    }
}

#[test]
fn step_down_and_up_other_seeds_with_loss() {
    // The step up at different phases of the 5 s headroom-probe period.
    for (seed, up_at) in [(2u64, 30.0), (3, 32.5), (4, 34.0)] {
        let mut s = step_scenario(seed);
        s.rates[2].0 = up_at;
        s.seconds = 44;
        s.loss = 0.01;
        let up_ms = (up_at * 1000.0) as u64;
        let t = run(&s);
        print(&format!("step with 1 % loss, seed {seed}"), &t);
        let down = t
            .iter()
            .find(|(ms, e)| *ms >= 20_000 && *e < 750_000)
            .map(|(ms, _)| ms - 20_000);
        let up = t
            .iter()
            .find(|(ms, e)| *ms >= up_ms && *e > 2_400_000)
            .map(|(ms, _)| ms - up_ms);
        eprintln!("seed {seed}, up at {up_at} s: below 0.75 Mbps after {down:?} ms, above 2.4 Mbps after {up:?} ms");
        assert!(down.is_some_and(|d| d <= 2_000), "seed {seed}: {down:?}");
        assert!(up.is_some_and(|d| d <= 8_000), "seed {seed}: {up:?}");
    }
}

#[test]
fn same_seed_same_trajectory() {
    let mut s = step_scenario(42);
    s.loss = 0.02;
    s.seconds = 25;
    let a = run(&s);
    let b = run(&s);
    assert_eq!(a, b);
    s.seed = 43;
    let c = run(&s);
    assert_ne!(a, c, "a different seed should change something with 2 % loss");
}

/// The harness's bwe-step scenario as the bridge sends (unpaced frame bursts, keyframes):
/// the estimate must be below the new capacity soon enough for the layer switch and its
/// keyframe to complete within 2 s, and must not undershoot far below it (an undershoot then
/// creeps back up through the layers and sees loss at each).
#[test]
fn bursty_step_down() {
    for seed in [1u64, 2, 3, 4, 5] {
        let mut s = step_scenario(seed);
        s.bursty = true;
        s.seconds = 30;
        s.loss = 0.005 * (seed - 1) as f64; // 0 to 2 % random loss besides the tail drops
        let t = run(&s);
        print(&format!("bursty step, seed {seed}"), &t);
        let down = t
            .iter()
            .find(|(ms, e)| *ms >= 20_000 && *e < 600_000)
            .map(|(ms, _)| ms - 20_000);
        let low = t
            .iter()
            .filter(|(ms, _)| *ms >= 20_000)
            .map(|(_, e)| *e)
            .min()
            .unwrap_or(0);
        eprintln!("seed {seed}: below 0.6 Mbps after {down:?} ms, lowest {low}");
        assert!(down.is_some_and(|d| d <= 800), "seed {seed}: {down:?}");
        assert!(low >= 400_000, "seed {seed}: undershoot to {low}");
    }
}

/// The harness's bwe-lossy-rtt scenario as the bridge sends: 5 % random loss must not let
/// keyframe bursts ratchet the estimate down (the loss-based controller holds at 2–10 %).
#[test]
fn bursty_random_loss_and_rtt() {
    for seed in [7u64, 8, 9, 10, 11] {
        let s = Scenario {
            rates: vec![(0.0, 2e6)],
            one_way: Duration::from_millis(50),
            loss: 0.05,
            seed,
            demand_bps: 4_000_000,
            seconds: 30,
            bursty: true,
            app_limited: None,
            jitter: Duration::ZERO,
        };
        let t = run(&s);
        print(&format!("bursty 2 Mbps, 5 % loss, 100 ms RTT, seed {seed}"), &t);
        let worst = t
            .iter()
            .filter(|(ms, _)| *ms >= 10_000)
            .map(|(_, e)| (*e as f64 - 2e6).abs() / 2e6)
            .fold(0.0, f64::max);
        eprintln!("seed {seed}: worst {:.1} % off from 10 s", worst * 100.0);
        assert!(worst <= 0.3, "seed {seed}: worst {:.1} % off", worst * 100.0);
    }
}

/// The harness's bwe-lossy-rtt scenario as the bridge really sends there: application-limited
/// (0.75 Mbit/s of 360p media in frame bursts, padding bursts up to the estimate every 15 ms,
/// RTX of lost media, periodic probes at 2 x the estimate) on a 2 Mbit/s link with 5 % random
/// loss and 100 ms RTT, without and with 5 ms of per-packet delay jitter. Required (issue 6):
/// within 30 % of the capacity from 10 s on; asserted: 20 %.
#[test]
fn app_limited_random_loss_and_rtt() {
    let mut worst_all: f64 = 0.0;
    for jitter_ms in [0u64, 5] {
        for seed in [7u64, 8, 9, 10, 11] {
            let s = Scenario {
                rates: vec![(0.0, 2e6)],
                one_way: Duration::from_millis(50),
                loss: 0.05,
                seed,
                demand_bps: 4_000_000,
                seconds: 30,
                bursty: false,
                app_limited: Some(750_000.0),
                jitter: Duration::from_millis(jitter_ms),
            };
            let t = run(&s);
            print(&format!("app-limited, jitter {jitter_ms} ms, seed {seed}"), &t);
            let (worst, worst_ms) = t
                .iter()
                .filter(|(ms, _)| *ms >= 10_000)
                .map(|(ms, e)| ((*e as f64 - 2e6).abs() / 2e6, *ms))
                .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
            let low = t
                .iter()
                .filter(|(ms, _)| *ms >= 10_000)
                .map(|(_, e)| *e)
                .min()
                .unwrap_or(0);
            eprintln!(
                "jitter {jitter_ms} ms, seed {seed}: worst {:.1} % off from 10 s (at {worst_ms} ms), lowest {:.2} Mbit/s",
                worst * 100.0,
                low as f64 / 1e6
            );
            worst_all = worst_all.max(worst);
        }
    }
    // Issue 6 asks for 30 %. 20 % here: before a follow-up decrease needed post-decrease
    // evidence (`FOLLOW_UP_EVIDENCE` in gcc.rs) the worst of these ten runs was 24.6 %, now 18.1 %.
    assert!(worst_all <= 0.2, "worst {:.1} % off", worst_all * 100.0);
}

/// A moderate capacity drop (2 → 1.4 Mbit/s at 15 s, 25 ms one way, paced and bursty): how
/// long until the estimate is below the new capacity (the decrease base ignores dips of
/// single 150 ms windows, so this checks that a real, moderate drop is still followed).
#[test]
fn moderate_step_down() {
    for bursty in [false, true] {
        for seed in [1u64, 2, 3] {
            let s = Scenario {
                rates: vec![(0.0, 2e6), (15.0, 1.4e6)],
                one_way: Duration::from_millis(25),
                loss: 0.0,
                seed,
                demand_bps: 4_000_000,
                seconds: 22,
                bursty,
                app_limited: None,
                jitter: Duration::ZERO,
            };
            let t = run(&s);
            print(&format!("2 -> 1.4 Mbps, bursty {bursty}, seed {seed}"), &t);
            let down = t
                .iter()
                .find(|(ms, e)| *ms >= 15_000 && *e < 1_400_000)
                .map(|(ms, _)| ms - 15_000);
            eprintln!("bursty {bursty}, seed {seed}: below 1.4 Mbps after {down:?} ms");
            assert!(
                down.is_some_and(|d| d <= 2_000),
                "bursty {bursty}, seed {seed}: {down:?}"
            );
        }
    }
}
