//! SCTP packet builders for tests and fuzz targets: a peer's side of the handshake, DATA and
//! DCEP, with correct checksums. Not used by the bridge itself.

use std::time::Instant;

use bytes::BytesMut;

use super::{ChannelEvent, Sctp};

/// CRC-32C (Castagnoli), as SCTP's checksum.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

/// An SCTP packet (ports 5000 → 5000) with `vtag` and a correct checksum around `chunks`.
pub fn sctp_packet(vtag: u32, chunks: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunks.len());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(chunks);
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A chunk: type, flags, length, value (padded to 4 bytes).
pub fn sctp_chunk(typ: u8, flags: u8, value: &[u8]) -> Vec<u8> {
    let mut c = vec![typ, flags];
    c.extend_from_slice(&((4 + value.len()).min(usize::from(u16::MAX)) as u16).to_be_bytes());
    c.extend_from_slice(value);
    while !c.len().is_multiple_of(4) {
        c.push(0);
    }
    c
}

/// INIT with initiate tag `tag`, initial TSN 1, 1024 streams each way, then `params`.
pub fn sctp_init(tag: u32, params: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&131_072u32.to_be_bytes()); // a_rwnd
    v.extend_from_slice(&1024u16.to_be_bytes());
    v.extend_from_slice(&1024u16.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes()); // initial TSN
    v.extend_from_slice(params);
    sctp_packet(0, &sctp_chunk(1, 0, &v))
}

/// A DATA chunk value: TSN, stream, stream sequence, PPID, payload.
pub fn sctp_data(tsn: u32, stream: u16, ssn: u16, ppid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tsn.to_be_bytes());
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(&ssn.to_be_bytes());
    v.extend_from_slice(&ppid.to_be_bytes());
    v.extend_from_slice(payload);
    sctp_chunk(0, 0x03, &v)
}

/// DCEP DATA_CHANNEL_OPEN for `label` (reliable, ordered).
pub fn dcep_open(label: &[u8]) -> Vec<u8> {
    let mut v = vec![0x03, 0x00, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&(label.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(label);
    v
}

/// The server's verification tag and state cookie from its INIT ACK.
pub fn parse_init_ack(p: &[u8]) -> Option<(u32, Vec<u8>)> {
    let chunk = p.get(12..)?;
    if *chunk.first()? != 2 {
        return None;
    }
    let clen = usize::from(u16::from_be_bytes([*chunk.get(2)?, *chunk.get(3)?]));
    let value = chunk.get(4..clen)?;
    let tag = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let mut params = value.get(16..)?;
    while params.len() >= 4 {
        let t = u16::from_be_bytes([params[0], params[1]]);
        let l = usize::from(u16::from_be_bytes([params[2], params[3]]));
        if l < 4 {
            return None;
        }
        let body = params.get(4..l)?;
        if t == 7 {
            return Some((tag, body.to_vec()));
        }
        params = params.get(l.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// Drives [`Sctp`] through a real handshake (INIT, COOKIE ECHO from the INIT ACK's cookie) so
/// that fuzzed chunks reach the established association. Returns the verification tag for the
/// client's packets (0 if the handshake did not complete).
pub fn sctp_handshake(s: &mut Sctp, now: Instant, out: &mut Vec<ChannelEvent>) -> u32 {
    s.handle_data(now, BytesMut::from(&sctp_init(0x1234_5678, &[])[..]), out);
    let mut vtag_and_cookie = None;
    while let Some(ps) = s.poll_transmit(now) {
        for p in ps {
            if vtag_and_cookie.is_none() {
                vtag_and_cookie = parse_init_ack(&p);
            }
        }
    }
    let Some((vtag, cookie)) = vtag_and_cookie else {
        return 0;
    };
    s.handle_data(
        now,
        BytesMut::from(&sctp_packet(vtag, &sctp_chunk(10, 0, &cookie))[..]),
        out,
    );
    while s.poll_transmit(now).is_some() {}
    vtag
}
