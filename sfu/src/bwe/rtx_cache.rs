//! Outgoing packet cache for answering a receiver's NACKs (media.md §5.2, JVB's
//! `RtxHandler`/`PacketCache`), and RTX encapsulation (RFC 4588 §4).
//!
//! One [`RtxCache`] per outgoing video SSRC holds the last [`CAPACITY`] packets exactly as sent
//! (before SRTP), in slots whose buffers are allocated once and reused.

use std::time::{Duration, Instant};

use crate::id::Ssrc;
use crate::wire::rtp::{seq_delta, RtpError, RtpHeader};

/// Packets kept per SSRC.
pub const CAPACITY: usize = 500;
/// A cache that saw no packet for this long should be flushed ([`RtxCache::is_idle`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Slot buffers are sized to the largest packet they held, rounded up to this many bytes, not
/// to a fixed MTU: with 500 slots per outgoing video SSRC per receiver, the caches are most of
/// a bridge's memory (docs/benchmarks.md).
const SLOT_STEP: usize = 128;
/// Retransmission budget (robustness.md case 26): every byte sent on the stream earns
/// `BUDGET_FACTOR` bytes of retransmission, saved up to [`BUDGET_CAP`] bytes, so what is resent
/// stays within twice the stream's own media bytes however many NACKs a receiver sends.
const BUDGET_FACTOR: u64 = 2;
/// Most retransmission bytes saved up (a burst after a quiet spell; ~1 s of a 2 Mbit/s layer).
pub const BUDGET_CAP: u64 = 256 * 1024;

#[derive(Debug)]
struct Slot {
    seq: u16,
    valid: bool,
    last_sent: Instant,
    data: Vec<u8>,
}

/// Counters of an [`RtxCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtxStats {
    /// Packets inserted.
    pub inserted: u64,
    /// NACKed packets found and due for resending.
    pub hits: u64,
    /// NACKed packets not in the cache.
    pub misses: u64,
    /// NACKed packets found but sent too recently ("not resent due to delay").
    pub not_resent_delay: u64,
    /// NACKed packets found but beyond the retransmission budget.
    pub over_budget: u64,
}

/// What to do with one NACKed sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend<'a> {
    /// Resend these bytes (the packet as originally sent).
    Send(&'a [u8]),
    /// Found, but sent less than min(0.9·RTT, RTT − 5 ms) ago.
    TooSoon,
    /// Not cached.
    Miss,
    /// Found, but resending it would exceed twice the stream's media bytes.
    OverBudget,
}

/// The packet cache of one outgoing SSRC.
#[derive(Debug)]
pub struct RtxCache {
    slots: Vec<Slot>,
    /// Index of the next slot to write.
    head: usize,
    /// Seq of the newest packet.
    newest: Option<u16>,
    last_insert: Option<Instant>,
    /// Retransmission bytes still allowed.
    budget: u64,
    stats: RtxStats,
}

impl RtxCache {
    /// An empty cache; `now` only initialises slot timestamps.
    pub fn new(now: Instant) -> Self {
        let slots = (0..CAPACITY)
            .map(|_| Slot {
                seq: 0,
                valid: false,
                last_sent: now,
                data: Vec::new(),
            })
            .collect();
        Self {
            slots,
            head: 0,
            newest: None,
            last_insert: None,
            budget: 0,
            stats: RtxStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RtxStats {
        self.stats
    }

    /// Stores a sent packet (`seq` is its RTP seq, `packet` the bytes before SRTP). A slot's
    /// buffer grows only for a packet larger than any it held before, so once the stream's
    /// packet sizes have come round every slot this does not allocate.
    pub fn insert(&mut self, seq: u16, packet: &[u8], now: Instant) {
        let slot = &mut self.slots[self.head];
        slot.data.clear();
        if slot.data.capacity() < packet.len() {
            slot.data.reserve_exact(packet.len().next_multiple_of(SLOT_STEP));
        }
        slot.data.extend_from_slice(packet);
        slot.seq = seq;
        slot.valid = true;
        slot.last_sent = now;
        self.head = (self.head + 1) % CAPACITY;
        self.newest = Some(seq);
        self.last_insert = Some(now);
        self.stats.inserted += 1;
        self.budget = (self.budget + BUDGET_FACTOR * packet.len() as u64).min(BUDGET_CAP);
    }

    fn find(&self, seq: u16) -> Option<usize> {
        let newest = self.newest?;
        // Sequence numbers are normally consecutive: try the slot that position predicts.
        let back = seq_delta(seq, newest);
        if !(0..CAPACITY as i16).contains(&back) {
            // Newer than the newest or older than the cache's span: not here, and no scan
            // (a NACK flood of such numbers must not cost 500 comparisons each).
            return None;
        }
        let i = (self.head + CAPACITY - 1 - back as usize) % CAPACITY;
        let s = &self.slots[i];
        if s.valid && s.seq == seq {
            return Some(i);
        }
        self.slots.iter().position(|s| s.valid && s.seq == seq)
    }

    /// The cached bytes of `seq`, if any.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        self.find(seq).map(|i| self.slots[i].data.as_slice())
    }

    /// Decides about a NACKed `seq` at `now` given the receiver's RTT (`None` if unknown:
    /// always resend). A resent packet's "last sent" time becomes `now`.
    pub fn on_nack(&mut self, seq: u16, now: Instant, rtt: Option<Duration>) -> Resend<'_> {
        let Some(i) = self.find(seq) else {
            self.stats.misses += 1;
            return Resend::Miss;
        };
        let slot = &mut self.slots[i];
        if let Some(rtt) = rtt {
            let min_wait = rtt.mul_f64(0.9).min(rtt.saturating_sub(Duration::from_millis(5)));
            if now.saturating_duration_since(slot.last_sent) < min_wait {
                self.stats.not_resent_delay += 1;
                return Resend::TooSoon;
            }
        }
        // Charged as sent: an RTX packet carries the 2-byte OSN on top of the original.
        let len = slot.data.len() as u64 + 2;
        if len > self.budget {
            self.stats.over_budget += 1;
            return Resend::OverBudget;
        }
        self.budget -= len;
        slot.last_sent = now;
        self.stats.hits += 1;
        Resend::Send(&slot.data)
    }

    /// The newest `n` cached packets, newest first (for RTX padding, §4.3).
    pub fn most_recent(&self, n: usize) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        (1..=CAPACITY)
            .map(move |k| &self.slots[(self.head + CAPACITY - k) % CAPACITY])
            .take_while(|s| s.valid)
            .take(n)
            .map(|s| (s.seq, s.data.as_slice()))
    }

    /// Whether nothing was inserted for [`IDLE_TIMEOUT`].
    pub fn is_idle(&self, now: Instant) -> bool {
        self.last_insert
            .is_some_and(|t| now.saturating_duration_since(t) >= IDLE_TIMEOUT)
    }

    /// Forgets every packet (slot buffers are kept).
    pub fn flush(&mut self) {
        for s in &mut self.slots {
            s.valid = false;
        }
        self.newest = None;
        self.last_insert = None;
    }
}

/// RTX encapsulation for one RTX SSRC (RFC 4588): SSRC and PT replaced, the original seq
/// prepended to the payload as the 2-byte OSN, seq from a per-RTX-SSRC counter starting at 1.
#[derive(Clone, Debug)]
pub struct RtxEncoder {
    /// The RTX SSRC.
    pub ssrc: Ssrc,
    /// The RTX payload type (associated with the original PT).
    pub pt: u8,
    next_seq: u16,
}

/// Errors of [`RtxEncoder::encapsulate`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtxError {
    /// The cached packet does not parse as RTP.
    #[error("cached packet is not RTP: {0}")]
    Rtp(#[from] RtpError),
    /// The output buffer is too short.
    #[error("RTX output buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

impl RtxEncoder {
    /// An encoder whose first packet gets seq 1.
    pub fn new(ssrc: Ssrc, pt: u8) -> Self {
        Self { ssrc, pt, next_seq: 1 }
    }

    /// Writes the RTX form of `original` into `out`; returns its length. The original's padding
    /// is dropped (the P bit cleared); header extensions and CSRCs are kept.
    pub fn encapsulate(&mut self, original: &[u8], out: &mut [u8]) -> Result<usize, RtxError> {
        let h = RtpHeader::parse(original)?;
        let hl = h.header_len();
        let payload = h.payload(original);
        let need = hl + 2 + payload.len();
        let have = out.len();
        let Some(dst) = out.get_mut(..need) else {
            return Err(RtxError::BufferTooShort { need, have });
        };
        dst[..hl].copy_from_slice(&original[..hl]);
        dst[hl..hl + 2].copy_from_slice(&h.seq().to_be_bytes());
        dst[hl + 2..].copy_from_slice(payload);
        dst[0] &= !0x20; // no padding
        let mut v = h;
        v.set_ssrc(dst, self.ssrc);
        v.set_pt(dst, self.pt);
        v.set_seq(dst, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::RtpHeaderFields;

    fn packet(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let ext: [(u8, &[u8]); 1] = [(3, &[0x01, 0x02])];
        let f = RtpHeaderFields {
            marker: true,
            pt: 100,
            seq,
            timestamp: 9000,
            ssrc: Ssrc(0xAABB),
            csrcs: &[],
            extensions: &ext,
        };
        let hl = f.write_to(&mut buf).unwrap();
        buf[hl..hl + payload.len()].copy_from_slice(payload);
        buf.truncate(hl + payload.len());
        buf
    }

    #[test]
    fn wraps_and_keeps_last_500() {
        let t0 = Instant::now();
        let mut c = RtxCache::new(t0);
        for i in 0..1200u32 {
            let seq = (65000 + i) as u16;
            c.insert(seq, &packet(seq, &i.to_be_bytes()), t0);
        }
        let newest = (65000u32 + 1199) as u16;
        for back in 0..500u16 {
            let seq = newest.wrapping_sub(back);
            let p = c.get(seq).expect("cached");
            assert_eq!(RtpHeader::parse(p).unwrap().seq(), seq);
        }
        assert!(c.get(newest.wrapping_sub(500)).is_none());
        let recent: Vec<u16> = c.most_recent(3).map(|(s, _)| s).collect();
        assert_eq!(recent, vec![newest, newest.wrapping_sub(1), newest.wrapping_sub(2)]);
    }

    /// Robustness case 26: with unknown RTT every NACK would be answered; the budget keeps the
    /// resent bytes within twice the stream's media bytes (plus nothing saved up beyond the cap).
    #[test]
    fn retransmissions_stay_within_twice_the_media_bytes() {
        let t0 = Instant::now();
        let mut c = RtxCache::new(t0);
        let mut media = 0u64;
        let mut resent = 0u64;
        for i in 0..400u16 {
            let p = packet(i, &[7; 1000]);
            media += p.len() as u64;
            c.insert(i, &p, t0);
            // After every packet the receiver NACKs the last 20 again (RTT unknown).
            for back in 0..20u16 {
                if let Resend::Send(b) = c.on_nack(i.saturating_sub(back), t0, None) {
                    resent += b.len() as u64 + 2; // as RTX
                }
            }
            assert!(resent <= 2 * media, "{resent} resent for {media} sent");
        }
        assert!(
            resent >= 2 * media - 2 * 1100,
            "the budget is used, not starved: {resent}/{media}"
        );
        assert!(c.stats().over_budget > 0);
        // A quiet stream saves up at most BUDGET_CAP.
        let mut c = RtxCache::new(t0);
        for i in 0..400u16 {
            c.insert(i, &packet(i, &[7; 1000]), t0);
        }
        let mut burst = 0u64;
        for i in 0..400u16 {
            if let Resend::Send(b) = c.on_nack(i, t0, None) {
                burst += b.len() as u64 + 2;
            }
        }
        assert!(burst <= BUDGET_CAP && burst > BUDGET_CAP - 1100, "{burst}");
        // Numbers outside the cached span are misses without a scan; inside, a hit.
        assert_eq!(c.on_nack(400, t0, None), Resend::Miss);
        assert_eq!(c.on_nack(399u16.wrapping_sub(600), t0, None), Resend::Miss);
    }

    #[test]
    fn resend_rule_uses_rtt() {
        let t0 = Instant::now();
        let mut c = RtxCache::new(t0);
        c.insert(6, &packet(6, b"budget"), t0); // earns retransmission budget for both resends
        c.insert(7, &packet(7, b"x"), t0);
        let rtt = Some(Duration::from_millis(100)); // min(90, 95) = 90 ms
        assert_eq!(c.on_nack(7, t0 + Duration::from_millis(89), rtt), Resend::TooSoon);
        assert!(matches!(
            c.on_nack(7, t0 + Duration::from_millis(90), rtt),
            Resend::Send(_)
        ));
        // Just resent: too soon again; unknown RTT always resends.
        assert_eq!(c.on_nack(7, t0 + Duration::from_millis(100), rtt), Resend::TooSoon);
        assert!(matches!(
            c.on_nack(7, t0 + Duration::from_millis(100), None),
            Resend::Send(_)
        ));
        assert_eq!(c.on_nack(8, t0, None), Resend::Miss);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.not_resent_delay), (2, 1, 2));
        // Small RTT: RTT - 5 ms is the smaller bound.
        c.insert(9, &packet(9, b"y"), t0);
        let rtt = Some(Duration::from_millis(20)); // min(18, 15) = 15 ms
        assert_eq!(c.on_nack(9, t0 + Duration::from_millis(14), rtt), Resend::TooSoon);
        assert!(matches!(
            c.on_nack(9, t0 + Duration::from_millis(15), rtt),
            Resend::Send(_)
        ));
        assert!(!c.is_idle(t0 + Duration::from_secs(14)));
        assert!(c.is_idle(t0 + IDLE_TIMEOUT));
    }

    #[test]
    fn rtx_format() {
        let orig = packet(0x1234, b"payload");
        let mut enc = RtxEncoder::new(Ssrc(0x5555), 101);
        let mut out = [0u8; 1500];
        let n = enc.encapsulate(&orig, &mut out).unwrap();
        let h = RtpHeader::parse(&out[..n]).unwrap();
        assert_eq!(h.ssrc(), Ssrc(0x5555));
        assert_eq!(h.pt(), 101);
        assert_eq!(h.seq(), 1);
        assert!(h.marker());
        assert_eq!(h.timestamp(), 9000);
        assert_eq!(h.transport_cc_seq(&out[..n], 3), Some(0x0102));
        assert_eq!(h.payload(&out[..n]), b"\x12\x34payload");
        let n2 = enc.encapsulate(&orig, &mut out).unwrap();
        assert_eq!(RtpHeader::parse(&out[..n2]).unwrap().seq(), 2);
        assert!(enc.encapsulate(&orig, &mut out[..10]).is_err());
        assert!(enc.encapsulate(b"junk", &mut out).is_err());
    }
}
