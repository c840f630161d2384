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
            drops: Vec::new(),
        }
    }

    /// Decrypted DTLS application data (one SCTP packet).
    pub fn handle_data(&mut self, now: Instant, data: BytesMut, out: &mut Vec<ChannelEvent>) {
        if !lengths_consistent(&data) {
            self.drops.push("sctp_malformed");
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
            rtc_sctp::Payload::RawEncode(v) => Some(v),
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
}
