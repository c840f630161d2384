//! Receive-side bandwidth estimation and REMB toward senders that negotiated REMB (`goog-remb`)
//! but not transport-cc (media.md §4.1).
//!
//! The structure of libwebrtc's `RemoteBitrateEstimatorAbsSendTime`, simplified:
//! * packets are grouped by their abs-send-time (5 ms of send time per group); each completed
//!   group gives (arrival delta − send delta) to the same trendline overuse detector the
//!   send-side estimator uses (`gcc::Trendline`). Without abs-send-time, arrival alone cannot
//!   give a delay gradient and the estimate follows the incoming rate (AIMD without overuse);
//! * the incoming bitrate is measured over the last second (50 ms buckets);
//! * AIMD on it: the first estimate is the incoming rate once a second of data exists; while
//!   normal, +8 %/s, capped at 1.5 × incoming + 10 kbps; on overuse, 0.85 × incoming (at most
//!   once per 200 ms); underuse holds;
//! * a REMB is due 1 s after the previous one, or at once when the estimate drops below 97 % of
//!   the last value sent. It lists the (at most 8) media SSRCs seen in the last 2 s.
//!
//! Sans-IO: time is an argument; nothing allocates per packet.

use std::time::{Duration, Instant};

use super::gcc::{BandwidthUsage, Trendline};
use super::gcc::{MAX_BPS, MIN_BPS};
use crate::id::Ssrc;
use crate::wire::rtcp::write_remb;

/// At most this many SSRCs in a REMB (JVB: ≤ 8).
pub const MAX_REMB_SSRCS: usize = 8;
/// A REMB at least this often while media flows.
pub const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// A drop below this fraction of the last sent value sends a REMB at once.
const DROP_FRACTION: f64 = 0.97;
const BUCKET_US: u64 = 50_000;
const BUCKETS: usize = 20;
const GROUP_US: i64 = 5_000;
const BETA: f64 = 0.85;
const DECREASE_INTERVAL_US: u64 = 200_000;
/// An SSRC silent this long is left out of the REMB.
const SSRC_IDLE_US: u64 = 2_000_000;
/// abs-send-time: 6.18 fixed-point seconds in 24 bits (64 s wrap).
const AST_WRAP: i64 = 1 << 24;

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    last_arrival_us: i64,
}

/// The receive-side estimator and REMB scheduler for one sending endpoint.
#[derive(Debug)]
pub struct RembGenerator {
    origin: Option<Instant>,
    /// Bytes per 50 ms bucket, indexed by bucket number modulo [`BUCKETS`].
    buckets: [u64; BUCKETS],
    /// The newest bucket number written.
    bucket_at: u64,
    first_us: u64,
    trend: Trendline,
    /// Unwrapped abs-send-time of the last packet, in µs.
    last_ast: Option<(u32, i64)>,
    current: Option<Group>,
    previous: Option<Group>,
    estimate_bps: Option<f64>,
    last_update_us: u64,
    last_decrease_us: Option<u64>,
    ssrcs: [(u32, u64); MAX_REMB_SSRCS],
    n_ssrcs: usize,
    last_sent: Option<(u64, u64)>,
    sent: u64,
}

impl Default for RembGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl RembGenerator {
    pub fn new() -> Self {
        Self {
            origin: None,
            buckets: [0; BUCKETS],
            bucket_at: 0,
            first_us: 0,
            trend: Trendline::new(),
            last_ast: None,
            current: None,
            previous: None,
            estimate_bps: None,
            last_update_us: 0,
            last_decrease_us: None,
            ssrcs: [(0, 0); MAX_REMB_SSRCS],
            n_ssrcs: 0,
            last_sent: None,
            sent: 0,
        }
    }

    fn micros(&mut self, now: Instant) -> u64 {
        let o = *self.origin.get_or_insert(now);
        now.saturating_duration_since(o).as_micros() as u64
    }

    /// A media packet (RTP, any SSRC of the sender) of `size` bytes arrived; `abs_send_time` is
    /// the raw 24-bit extension value if present.
    pub fn on_packet(&mut self, now: Instant, ssrc: u32, size: usize, abs_send_time: Option<u32>) {
        let t = self.micros(now);
        self.add_bytes(t, size as u64);
        self.note_ssrc(ssrc, t);
        if let Some(ast) = abs_send_time {
            self.on_send_time(t, ast & 0x00FF_FFFF);
        }
        self.update(t);
    }

    fn add_bytes(&mut self, t: u64, bytes: u64) {
        let b = t / BUCKET_US;
        if b > self.bucket_at {
            for k in (self.bucket_at + 1)..=b.min(self.bucket_at + BUCKETS as u64) {
                self.buckets[(k % BUCKETS as u64) as usize] = 0;
            }
            self.bucket_at = b;
        }
        if b + (BUCKETS as u64) > self.bucket_at {
            self.buckets[(b % BUCKETS as u64) as usize] += bytes;
        }
    }

    /// Incoming bitrate over the last second, once a second of data exists.
    pub fn incoming_bps(&self, now: Instant) -> Option<f64> {
        let o = self.origin?;
        let t = now.saturating_duration_since(o).as_micros() as u64;
        if t < self.first_us + 1_000_000 {
            return None;
        }
        let b = t / BUCKET_US;
        if b >= self.bucket_at + BUCKETS as u64 {
            return Some(0.0);
        }
        // Buckets (b-19 ..= b) that are not older than the newest written.
        let bytes: u64 = (b.saturating_sub(BUCKETS as u64 - 1)..=b)
            .filter(|k| *k <= self.bucket_at && *k + BUCKETS as u64 > self.bucket_at)
            .map(|k| self.buckets[(k % BUCKETS as u64) as usize])
            .sum();
        Some(bytes as f64 * 8.0)
    }

    fn note_ssrc(&mut self, ssrc: u32, t: u64) {
        if let Some(s) = self.ssrcs[..self.n_ssrcs].iter_mut().find(|s| s.0 == ssrc) {
            s.1 = t;
            return;
        }
        if self.n_ssrcs < MAX_REMB_SSRCS {
            self.ssrcs[self.n_ssrcs] = (ssrc, t);
            self.n_ssrcs += 1;
        } else if let Some(oldest) = self.ssrcs.iter_mut().min_by_key(|s| s.1) {
            if t.saturating_sub(oldest.1) > SSRC_IDLE_US {
                *oldest = (ssrc, t);
            }
        }
    }

    fn on_send_time(&mut self, t: u64, ast: u32) {
        // Unwrap the 24-bit send time to µs.
        let send_us = match self.last_ast {
            None => 0,
            Some((last, last_us)) => {
                let mut d = i64::from(ast) - i64::from(last);
                if d > AST_WRAP / 2 {
                    d -= AST_WRAP;
                } else if d < -AST_WRAP / 2 {
                    d += AST_WRAP;
                }
                last_us + d * 1_000_000 / (1 << 18)
            }
        };
        self.last_ast = Some((ast, send_us));
        let arrival = t as i64;
        match &mut self.current {
            Some(g) if send_us - g.first_send_us <= GROUP_US && send_us >= g.first_send_us - GROUP_US => {
                g.last_send_us = g.last_send_us.max(send_us);
                g.last_arrival_us = g.last_arrival_us.max(arrival);
            }
            Some(g) if send_us < g.first_send_us => {} // reordered from an older group
            _ => {
                if let (Some(prev), Some(cur)) = (self.previous, self.current) {
                    let send_delta = (cur.last_send_us - prev.last_send_us) as f64 / 1000.0;
                    let recv_delta = (cur.last_arrival_us - prev.last_arrival_us) as f64 / 1000.0;
                    self.trend
                        .update(recv_delta, send_delta, cur.last_arrival_us as f64 / 1000.0);
                }
                self.previous = self.current;
                self.current = Some(Group {
                    first_send_us: send_us,
                    last_send_us: send_us,
                    last_arrival_us: arrival,
                });
            }
        }
    }

    fn update(&mut self, t: u64) {
        let now = self.origin.map(|o| o + Duration::from_micros(t));
        let Some(incoming) = now.and_then(|n| self.incoming_bps(n)) else {
            self.last_update_us = t;
            return;
        };
        let dt = t.saturating_sub(self.last_update_us) as f64 / 1e6;
        self.last_update_us = t;
        let est = match self.estimate_bps {
            None => incoming.max(MIN_BPS as f64),
            Some(e) => match self.trend.state() {
                BandwidthUsage::Overusing => {
                    if self.last_decrease_us.is_none_or(|d| t >= d + DECREASE_INTERVAL_US) {
                        self.last_decrease_us = Some(t);
                        (BETA * incoming).min(e)
                    } else {
                        e
                    }
                }
                BandwidthUsage::Underusing => e,
                BandwidthUsage::Normal => {
                    let grown = e * 1.08f64.powf(dt.min(1.0));
                    grown.min((1.5 * incoming + 10_000.0).max(e))
                }
            },
        };
        self.estimate_bps = Some(est.clamp(MIN_BPS as f64, MAX_BPS as f64));
    }

    /// The current estimate, once there is one.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.estimate_bps.map(|e| e as u64)
    }

    /// When the next REMB is due (None: no estimate yet).
    pub fn next_deadline(&self) -> Option<Instant> {
        let o = self.origin?;
        let est = self.estimate_bps()?;
        Some(match self.last_sent {
            None => o,
            Some((at, v)) if (est as f64) < DROP_FRACTION * v as f64 => o + Duration::from_micros(at),
            Some((at, _)) => o + Duration::from_micros(at) + REMB_INTERVAL,
        })
    }

    /// A REMB into `out` if one is due at `now`; its length.
    pub fn poll_remb(&mut self, now: Instant, sender: Ssrc, out: &mut [u8]) -> Option<usize> {
        if self.next_deadline().is_none_or(|d| d > now) {
            return None;
        }
        let est = self.estimate_bps()?;
        let t = self.micros(now);
        let mut list = [Ssrc(0); MAX_REMB_SSRCS];
        let mut n = 0;
        for s in &self.ssrcs[..self.n_ssrcs] {
            if t.saturating_sub(s.1) <= SSRC_IDLE_US {
                list[n] = Ssrc(s.0);
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let len = write_remb(out, sender, est, &list[..n]).ok()?;
        self.last_sent = Some((t, est));
        self.sent += 1;
        Some(len)
    }

    /// A REMB was due but is not wanted (the sender did not negotiate REMB): the next one is due
    /// an interval later, so the deadline keeps advancing.
    pub fn skip(&mut self, now: Instant) {
        let t = self.micros(now);
        self.last_sent = Some((t, self.estimate_bps().unwrap_or(0)));
    }

    /// REMB packets written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    /// abs-send-time of `us` microseconds.
    fn ast(us: u64) -> u32 {
        ((us * (1 << 18) / 1_000_000) & 0x00FF_FFFF) as u32
    }

    /// Feed `bps` in 1000-byte packets for `secs`, queueing delay growing by `queue_growth`
    /// (µs per µs) from `grow_from` s on.
    fn feed(r: &mut RembGenerator, t0: Instant, from_s: f64, secs: f64, bps: f64, grow: Option<f64>) {
        let gap_us = 8_000.0 * 1e6 / bps;
        let n = (secs * 1e6 / gap_us) as u64;
        for i in 0..n {
            let send = (from_s * 1e6 + i as f64 * gap_us) as u64;
            let delay = grow.map_or(20_000.0, |g| 20_000.0 + g * (i as f64 * gap_us));
            let arrive = t0 + Duration::from_micros(send + delay as u64);
            r.on_packet(arrive, 0xAB, 1000, Some(ast(send)));
        }
    }

    #[test]
    fn estimate_follows_incoming_and_grows_while_normal() {
        let t0 = Instant::now();
        let mut r = RembGenerator::new();
        feed(&mut r, t0, 0.0, 0.5, 1_000_000.0, None);
        assert_eq!(r.estimate_bps(), None, "no estimate before a second of data");
        feed(&mut r, t0, 0.5, 4.5, 1_000_000.0, None);
        let e = r.estimate_bps().expect("estimate") as f64;
        // Capped at 1.5 × incoming + 10 kbps, and above the incoming rate.
        assert!((1_000_000.0..=1_520_000.0).contains(&e), "{e}");
    }

    #[test]
    fn growing_queue_is_overuse_and_cuts_the_estimate() {
        let t0 = Instant::now();
        let mut r = RembGenerator::new();
        feed(&mut r, t0, 0.0, 5.0, 1_000_000.0, None);
        let before = r.estimate_bps().expect("estimate") as f64;
        // Queueing delay grows 10 % of elapsed time: a link slower than the send rate.
        feed(&mut r, t0, 5.0, 1.5, 1_000_000.0, Some(0.1));
        let after = r.estimate_bps().expect("estimate") as f64;
        assert!(after < 0.9 * before, "{before} -> {after}");
        assert!(after <= 0.9 * 1_000_000.0, "{after}");
    }

    #[test]
    fn remb_every_second_and_on_a_drop() {
        let t0 = Instant::now();
        let mut r = RembGenerator::new();
        let mut buf = [0u8; 64];
        assert!(r.poll_remb(t0, Ssrc(1), &mut buf).is_none());
        feed(&mut r, t0, 0.0, 1.2, 800_000.0, None);
        let now = t0 + Duration::from_millis(1220);
        let n = r.poll_remb(now, Ssrc(7), &mut buf).expect("first REMB at once");
        let mut seen = false;
        for p in RtcpCompound::new(&buf[..n]) {
            if let Ok(RtcpPacket::Remb(m)) = p {
                assert_eq!(m.sender, Ssrc(7));
                assert_eq!(m.ssrcs.collect::<Vec<_>>(), vec![Ssrc(0xAB)]);
                let e = r.estimate_bps().expect("estimate");
                // The wire format keeps 18 bits of mantissa.
                assert!(
                    m.bitrate <= e && m.bitrate as f64 >= e as f64 * 0.999,
                    "{} vs {e}",
                    m.bitrate
                );
                seen = true;
            }
        }
        assert!(seen);
        assert!(r
            .poll_remb(now + Duration::from_millis(500), Ssrc(7), &mut buf)
            .is_none());
        assert_eq!(r.next_deadline(), Some(now + REMB_INTERVAL));
        // A drop below 97 %: due at once.
        r.estimate_bps = r.estimate_bps.map(|e| e * 0.9);
        assert!(r
            .poll_remb(now + Duration::from_millis(10), Ssrc(7), &mut buf)
            .is_some());
        assert_eq!(r.sent(), 2);
        let later = now + Duration::from_millis(20);
        r.skip(later);
        assert_eq!(r.next_deadline(), Some(later + REMB_INTERVAL));
    }

    #[test]
    fn at_most_eight_ssrcs_and_wraps_are_harmless() {
        let t0 = Instant::now();
        let mut r = RembGenerator::new();
        for i in 0..3000u64 {
            let at = t0 + Duration::from_millis(i);
            // Send time near the 64 s wrap of abs-send-time.
            let send = ast(63_500_000 + i * 1000);
            r.on_packet(at, (i % 12) as u32, 300, Some(send));
        }
        assert_eq!(r.n_ssrcs, MAX_REMB_SSRCS);
        let e = r.estimate_bps().expect("estimate") as f64;
        assert!(e > 2_000_000.0 && e < 4_000_000.0, "{e}");
    }
}
