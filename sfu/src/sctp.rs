//! The endpoint's SCTP association (server, port 5000) and its one bridge-channel data
//! channel, over the endpoint's DTLS (media.md §1.3, chromium note §3.9–§3.11, §4).
//!
//! The browser opens the channel (DCEP OPEN, PPID 50); the bridge accepts the first one and
//! ignores any other (JVB `max-channels = 1`). A stream reset of that channel is reported by
//! rtc-sctp as `AssociationLost { id }` and means "channel closed", not association lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc_datachannel::data_channel::{DataChannel, DataChannelConfig, DataChannelMessage};
use rtc_sctp::{
    Association, AssociationHandle, DatagramEvent, Endpoint as SctpEndpoint, EndpointConfig, Event as SctpEvent,
    PayloadProtocolIdentifier as Ppi, ServerConfig, StreamEvent, TransportConfig,
};
use rtc_shared::TransportProtocol;
use sansio::Protocol;

/// SCTP port (JVB accepts only 5000).
pub const SCTP_PORT: u16 = 5000;
/// Largest bridge-channel message we reassemble.
const MAX_MESSAGE: usize = 256 * 1024;
/// DATA at least this far ahead of the association's cumulative TSN is refused (see [`TsnWindow`]).
pub const MAX_TSN_AHEAD: u32 = 60_000;

#[doc(hidden)]
pub mod testing;

/// What the data channel reports.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    Open,
    Text(String),
    Closed,
}

/// The endpoint's SCTP association and its one bridge-channel data channel.
pub struct Sctp {
    ep: SctpEndpoint,
    assoc: Option<(AssociationHandle, Association)>,
    channel: Option<DataChannel>,
    addr: SocketAddr,
    tsn: TsnWindow,
    /// Counted drops (reason), for the shard to collect.
    pub drops: Vec<&'static str>,
}

impl Sctp {
    /// `addr` is only a key for rtc-sctp; the shard routes the bytes through DTLS.
    pub fn new(addr: SocketAddr) -> Self {
        let server = ServerConfig::new(TransportConfig::default().with_sctp_port(SCTP_PORT));
        Self {
            ep: SctpEndpoint::new(
                addr,
                TransportProtocol::UDP,
                Arc::new(EndpointConfig::default()),
                Some(Arc::new(server)),
            ),
            assoc: None,
            channel: None,
            addr,
            tsn: TsnWindow::default(),
            drops: Vec::new(),
        }
    }

    /// Decrypted DTLS application data (one SCTP packet).
    pub fn handle_data(&mut self, now: Instant, data: BytesMut, out: &mut Vec<ChannelEvent>) {
        if !lengths_consistent(&data) {
            self.drops.push("sctp_malformed");
            return;
        }
        if !self.tsn.admit(&data) {
            self.drops.push("sctp_tsn_out_of_window");
            return;
        }
        match self.ep.handle(now, self.addr, None, data.freeze()) {
            Some((h, DatagramEvent::NewAssociation(a))) => {
                if self.assoc.is_none() {
                    self.assoc = Some((h, a));
                } else {
                    self.drops.push("sctp_second_association");
                }
            }
            Some((h, DatagramEvent::AssociationEvent(e))) => match &mut self.assoc {
                Some((ah, a)) if *ah == h => a.handle_event(e),
                _ => self.drops.push("sctp_unknown_association"),
            },
            Some(_) => {}
            None => self.drops.push("sctp_malformed"),
        }
        self.process(now, out);
    }

    fn process(&mut self, now: Instant, out: &mut Vec<ChannelEvent>) {
        let Some((h, a)) = self.assoc.as_mut() else {
            return;
        };
        let h = *h;
        while let Some(ev) = a.poll() {
            match ev {
                SctpEvent::Connected => tracing::debug!("SCTP association established"),
                SctpEvent::Stream(StreamEvent::Readable { id }) => {
                    Self::read_stream(now, a, &mut self.channel, id, out, &mut self.drops);
                }
                // A reset of our channel's stream: the channel closed, the association lives.
                SctpEvent::AssociationLost { id, reason }
                    if self.channel.as_ref().is_some_and(|c| c.stream_identifier() == id) =>
                {
                    tracing::debug!(%reason, id, "data channel closed");
                    self.channel = None;
                    out.push(ChannelEvent::Closed);
                }
                SctpEvent::HandshakeFailed { reason } => {
                    tracing::debug!(%reason, "SCTP handshake failed");
                }
                _ => {}
            }
        }
        // Streams are read by id on Readable; the accept queue only needs emptying.
        while a.accept_stream().is_some() {}
        while let Some(e) = a.poll_endpoint_event() {
            self.ep.handle_event(h, e);
        }
        self.pump(now);
    }

    fn read_stream(
        now: Instant,
        a: &mut Association,
        channel: &mut Option<DataChannel>,
        id: u16,
        out: &mut Vec<ChannelEvent>,
        drops: &mut Vec<&'static str>,
    ) {
        loop {
            let chunks = match a.stream(id).and_then(|mut s| s.read_sctp()) {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => return,
            };
            let ppi = chunks.ppi;
            let payload = match chunks.to_payload(MAX_MESSAGE) {
                Ok(p) => p,
                Err(_) => {
                    drops.push("datachannel_too_large");
                    continue;
                }
            };
            // RFC 8832 puts only DATA_CHANNEL_ACK (0x02) and DATA_CHANNEL_OPEN (0x03) on the wire;
            // rtc-datachannel 0.21.1 also decodes its internal 0x00/0x01 types from the wire and
            // panics on a short 0x00 ("threshold") message (found by the `sctp` fuzz target).
            if ppi == Ppi::Dcep && !matches!(payload.first(), Some(0x02 | 0x03)) {
                drops.push("dcep_malformed");
                continue;
            }
            let is_ours = channel.as_ref().is_some_and(|c| c.stream_identifier() == id);
            if ppi == Ppi::Dcep && !is_ours {
                if channel.is_some() {
                    drops.push("datachannel_rejected");
                    continue;
                }
                match DataChannel::accept(DataChannelConfig::default(), 0, id, ppi, &payload) {
                    Ok(dc) => {
                        let (unordered, rel) = DataChannel::get_reliability_params(dc.config().channel_type);
                        let rel_val = dc.config().reliability_parameter;
                        if let Ok(mut s) = a.stream(id) {
                            let _ = s.set_reliability_params(unordered, rel, rel_val);
                        }
                        tracing::info!(label = %dc.config().label, id, "data channel open");
                        *channel = Some(dc);
                        out.push(ChannelEvent::Open);
                    }
                    Err(_) => drops.push("dcep_malformed"),
                }
                continue;
            }
            let Some(dc) = channel.as_mut().filter(|c| c.stream_identifier() == id) else {
                drops.push("datachannel_unknown_stream");
                continue;
            };
            let msg = DataChannelMessage {
                association_handle: 0,
                stream_id: id,
                ppi,
                payload,
                negotiated: false,
            };
            if dc.handle_read(msg).is_err() {
                drops.push("dcep_malformed");
                continue;
            }
            while let Some(m) = dc.poll_read() {
                match m.ppi {
                    Ppi::String => match String::from_utf8(m.payload.to_vec()) {
                        Ok(s) => out.push(ChannelEvent::Text(s)),
                        Err(_) => drops.push("datachannel_bad_utf8"),
                    },
                    Ppi::StringEmpty => out.push(ChannelEvent::Text(String::new())),
                    _ => drops.push("datachannel_binary"),
                }
            }
            let _ = now;
        }
    }

    /// Move the channel's queued messages (DCEP ACK, our texts) into SCTP.
    fn pump(&mut self, now: Instant) {
        let (Some((_, a)), Some(dc)) = (self.assoc.as_mut(), self.channel.as_mut()) else {
            return;
        };
        while let Some(m) = dc.poll_write() {
            let id = m.stream_id;
            let bytes: Bytes = m.payload.freeze();
            match a.stream(id) {
                Ok(mut s) => {
                    if s.write_sctp(now, &bytes, m.ppi).is_err() {
                        self.drops.push("datachannel_write_failed");
                    }
                }
                Err(_) => self.drops.push("datachannel_write_failed"),
            }
        }
    }

    /// Queue a UTF-8 message on the open channel.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<(), &'static str> {
        let Some(dc) = self.channel.as_mut() else {
            return Err("data channel not open");
        };
        let (ppi, payload) = if text.is_empty() {
            (Ppi::StringEmpty, BytesMut::from(&[0u8][..]))
        } else {
            (Ppi::String, BytesMut::from(text.as_bytes()))
        };
        let id = dc.stream_identifier();
        dc.handle_write(DataChannelMessage {
            association_handle: 0,
            stream_id: id,
            ppi,
            payload,
            negotiated: false,
        })
        .map_err(|_| "data channel write failed")?;
        self.pump(now);
        Ok(())
    }

    /// SCTP packets to encrypt with DTLS and send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<Bytes>> {
        let (_, a) = self.assoc.as_mut()?;
        match a.poll_transmit(now)?.message {
            rtc_sctp::Payload::RawEncode(v) => {
                for p in &v {
                    self.tsn.on_sent(p);
                }
                Some(v)
            }
            _ => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.assoc.as_ref().and_then(|(_, a)| a.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<ChannelEvent>) {
        if let Some((_, a)) = self.assoc.as_mut() {
            a.handle_timeout(now);
        }
        self.process(now, out);
    }
}

/// Keeps the peer's DATA within 60,000 TSNs of the association's cumulative TSN.
///
/// rtc-sctp 0.21.1 builds SACK gap blocks as `u16` offsets from its cumulative TSN without a
/// bound: DATA 2^16 or more ahead overflows (`payload_queue.rs`, a panic with overflow checks, a
/// garbled SACK without; found by the `sctp` fuzz target). No legitimate peer has that many
/// chunks outstanding (the receive window is 1 MiB), so such packets are refused before the
/// crate sees them.
///
/// rtc-sctp does not expose its cumulative TSN, so this follows it from the outside:
/// authoritatively from every SACK the association sends (its Cumulative TSN Ack), and before
/// the first SACK from the peer's INIT (initial TSN − 1). An INIT is only taken if rtc-sctp
/// accepts it, which is not visible until its INIT ACK goes out, so until then both the old
/// and the new value are candidates and DATA must be within the window of every candidate. The
/// tracked value can only lag the real one (the cumulative TSN never goes back), which makes
/// the check stricter, never looser.
#[derive(Debug, Default)]
struct TsnWindow {
    /// Possible cumulative TSNs (the true one is among them); empty before any INIT.
    candidates: [Option<u32>; 4],
    /// The newest INIT's value: the one its INIT ACK confirms.
    last_init: Option<u32>,
    /// More INITs than candidates before a resolution: refuse DATA until a SACK says.
    unknown: bool,
}

impl TsnWindow {
    const DATA: u8 = 0;
    const INIT: u8 = 1;
    const INIT_ACK: u8 = 2;
    const SACK: u8 = 3;

    /// An incoming packet (lengths already checked): false if a DATA chunk is out of window.
    fn admit(&mut self, p: &[u8]) -> bool {
        let mut inits = [None; 2];
        for (typ, value) in chunks(p) {
            match typ {
                Self::DATA => {
                    let Some(tsn) = be32(value) else { continue };
                    if self.unknown || self.candidates.iter().flatten().any(|&c| !within(c, tsn)) {
                        return false;
                    }
                }
                Self::INIT => {
                    if let Some(t) = value.get(12..).and_then(be32) {
                        let slot = if inits[0].is_none() { 0 } else { 1 };
                        inits[slot] = Some(t.wrapping_sub(1));
                    }
                }
                _ => {}
            }
        }
        for cum in inits.into_iter().flatten() {
            self.last_init = Some(cum);
            if self.candidates.contains(&Some(cum)) {
                continue;
            }
            match self.candidates.iter_mut().find(|c| c.is_none()) {
                Some(free) => *free = Some(cum),
                None => self.unknown = true,
            }
        }
        true
    }

    /// An outgoing packet: a SACK states the cumulative TSN, an INIT ACK confirms the last INIT.
    fn on_sent(&mut self, p: &[u8]) {
        for (typ, value) in chunks(p) {
            let known = match typ {
                Self::SACK => be32(value),
                Self::INIT_ACK => self.last_init,
                _ => None,
            };
            if let Some(cum) = known {
                self.candidates = [Some(cum), None, None, None];
                self.unknown = false;
            }
        }
    }
}

/// `tsn` is behind `cum` (a duplicate) or less than [`MAX_TSN_AHEAD`] ahead of it.
fn within(cum: u32, tsn: u32) -> bool {
    let ahead = tsn.wrapping_sub(cum);
    !(MAX_TSN_AHEAD..1 << 31).contains(&ahead)
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The chunks (type, value) of an SCTP packet, stopping at the first inconsistent length.
fn chunks(p: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = p.get(12..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let h = rest.get(..4)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let value = rest.get(4..len)?;
        let typ = h[0];
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((typ, value))
    })
}

/// Whether every chunk of an SCTP packet, and every error cause of its ABORT and ERROR chunks,
/// lies within its container. rtc-sctp 0.21.1 slices error causes by their claimed length
/// without checking it against the chunk, and panics on a longer one (found by the `sctp` fuzz
/// target, robustness.md case 11); such packets never reach it.
pub fn lengths_consistent(p: &[u8]) -> bool {
    const ABORT: u8 = 6;
    const ERROR: u8 = 9;
    let Some(mut rest) = p.get(12..) else {
        return false;
    };
    while !rest.is_empty() {
        let Some(h) = rest.get(..4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 || len > rest.len() {
            return false;
        }
        if h[0] == ABORT || h[0] == ERROR {
            // rtc-sctp walks causes while 4 more bytes fit in the (padded) chunk, each
            // advancing by its unpadded length.
            let padded = len.next_multiple_of(4).min(rest.len());
            let mut off = 4;
            while off + 4 <= padded {
                if off + 4 > len {
                    return false;
                }
                let cause = usize::from(u16::from_be_bytes([rest[off + 2], rest[off + 3]]));
                if cause < 4 || off + cause > len {
                    return false;
                }
                off += cause;
            }
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(chunks: &[u8]) -> Vec<u8> {
        let mut p = vec![0x13, 0x88, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(chunks);
        p
    }

    /// Regression for the fuzz-found rtc-sctp panic: an ABORT or ERROR whose error cause
    /// claims more bytes than the chunk holds is refused before rtc-sctp parses it.
    #[test]
    fn error_cause_longer_than_its_chunk_is_refused() {
        // ABORT, 12 bytes: one cause (code 1, length 8) that fits.
        let ok = packet(&[6, 0, 0, 12, 0, 1, 0, 8, 1, 2, 3, 4]);
        assert!(lengths_consistent(&ok));
        // The same cause claiming 0x1200 bytes (the crashing input's shape), in ABORT and ERROR.
        for typ in [6u8, 9] {
            let bad = packet(&[typ, 0, 0, 12, 0, 1, 0x12, 0x00, 1, 2, 3, 4]);
            assert!(!lengths_consistent(&bad), "chunk type {typ}");
        }
        // A cause shorter than its header, a chunk longer than the packet, a truncated header.
        assert!(!lengths_consistent(&packet(&[9, 0, 0, 8, 0, 1, 0, 2])));
        assert!(!lengths_consistent(&packet(&[0, 3, 0, 40, 0, 0, 0, 1])));
        assert!(!lengths_consistent(&packet(&[1, 0])));
        assert!(!lengths_consistent(&[0; 11]));
        // DATA then a cause-less ABORT, with padding: fine.
        assert!(lengths_consistent(&packet(&[
            0, 3, 0, 17, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 51, 7, 0, 0, 0, 6, 0, 0, 4
        ])));
        // The refused packet is counted, not handed to rtc-sctp (which would panic).
        let mut s = Sctp::new("127.0.0.1:5001".parse().expect("literal"));
        let mut out = Vec::new();
        s.handle_data(
            Instant::now(),
            BytesMut::from(&packet(&[6, 0, 0, 12, 0, 1, 0x12, 0x00, 1, 2, 3, 4])[..]),
            &mut out,
        );
        assert_eq!(s.drops, vec!["sctp_malformed"]);
    }

    /// The fuzz-found rtc-sctp overflow: DATA 65,535 and 65,536 TSNs ahead of the cumulative TSN
    /// made the SACK's gap blocks overflow a u16 (a panic in this test profile, which now builds
    /// rtc-sctp with overflow checks). Such DATA is refused; in-window DATA still flows.
    #[test]
    fn data_far_ahead_of_the_cumulative_tsn_is_refused() {
        use testing::{dcep_open, sctp_data, sctp_handshake, sctp_packet};
        let mut s = Sctp::new("127.0.0.1:5001".parse().expect("literal"));
        let now = Instant::now();
        let mut out = Vec::new();
        let vtag = sctp_handshake(&mut s, now, &mut out);
        assert_ne!(vtag, 0, "handshake");
        // Initial TSN 1: DCEP OPEN opens the channel.
        let open = sctp_packet(vtag, &sctp_data(1, 0, 0, 50, &dcep_open(b"datachannel")));
        s.handle_data(now, BytesMut::from(&open[..]), &mut out);
        assert_eq!(out, vec![ChannelEvent::Open]);
        for tsn in [65_536u32, 65_537, 1 + MAX_TSN_AHEAD] {
            let far = sctp_packet(vtag, &sctp_data(tsn, 0, 1, 51, b"{}"));
            s.handle_data(now, BytesMut::from(&far[..]), &mut out);
        }
        // The association answers (SACKs) without panicking and keeps delivering in order.
        let soon = now + std::time::Duration::from_millis(300);
        s.handle_timeout(soon, &mut out);
        while s.poll_transmit(soon).is_some() {}
        assert_eq!(s.drops, vec!["sctp_tsn_out_of_window"; 3]);
        let next = sctp_packet(vtag, &sctp_data(2, 0, 1, 51, b"{\"a\":1}"));
        s.handle_data(now, BytesMut::from(&next[..]), &mut out);
        assert_eq!(out.last(), Some(&ChannelEvent::Text("{\"a\":1}".into())));
        // The delayed SACK for TSN 2 goes out (cumulative TSN 2); DATA just inside the window of
        // that is handed to rtc-sctp (a gap it SACKs), not refused.
        let later = now + std::time::Duration::from_secs(1);
        s.handle_timeout(later, &mut out);
        while s.poll_transmit(later).is_some() {}
        let ahead = sctp_packet(vtag, &sctp_data(2 + MAX_TSN_AHEAD - 1, 0, 3, 51, b"{}"));
        s.handle_data(later, BytesMut::from(&ahead[..]), &mut out);
        while s.poll_transmit(later).is_some() {}
        assert_eq!(s.drops.len(), 3, "{:?}", s.drops);
    }

    /// Before the association confirms an INIT (its INIT ACK), the old and the new initial TSN
    /// are both possible: DATA must be inside the window of each; the INIT ACK or a SACK settles it.
    #[test]
    fn tsn_window_follows_inits_and_sacks() {
        use testing::{sctp_chunk, sctp_data, sctp_init, sctp_packet};
        let mut w = TsnWindow::default();
        let data = |tsn| sctp_packet(7, &sctp_data(tsn, 0, 0, 51, b"x"));
        assert!(w.admit(&data(1_000_000)), "no association yet: rtc-sctp drops it");
        assert!(w.admit(&sctp_init(7, &[])));
        assert!(w.admit(&data(59_000)));
        assert!(!w.admit(&data(70_000)));
        let mut init2 = sctp_init(7, &[]);
        init2[28..32].copy_from_slice(&100_000u32.to_be_bytes()); // initial TSN
        assert!(w.admit(&init2));
        assert!(w.admit(&data(50)), "behind the second, inside the first");
        assert!(!w.admit(&data(100_000)), "outside the first candidate");
        // Its INIT ACK goes out: the second INIT is the association's.
        w.on_sent(&sctp_packet(7, &sctp_chunk(2, 0, &[0; 16])));
        assert!(w.admit(&data(100_000)));
        assert!(!w.admit(&data(99_999 + MAX_TSN_AHEAD)));
        // A SACK with cumulative TSN 150,000 moves the window.
        let mut sack = 150_000u32.to_be_bytes().to_vec();
        sack.extend_from_slice(&[0; 8]);
        w.on_sent(&sctp_packet(7, &sctp_chunk(3, 0, &sack)));
        assert!(w.admit(&data(150_000 + MAX_TSN_AHEAD - 1)));
        assert!(!w.admit(&data(150_000 + MAX_TSN_AHEAD)));
        // More INITs than candidates: DATA waits for a SACK.
        for t in 1..=4u32 {
            let mut i = sctp_init(7, &[]);
            i[28..32].copy_from_slice(&(t * 10).to_be_bytes());
            assert!(w.admit(&i));
        }
        assert!(!w.admit(&data(150_001)));
        w.on_sent(&sctp_packet(7, &sctp_chunk(3, 0, &sack)));
        assert!(w.admit(&data(150_001)));
    }
}
