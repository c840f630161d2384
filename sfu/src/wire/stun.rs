//! Writing the STUN messages (RFC 8489) the bridge builds itself rather than through rtc-ice:
//! the Binding success answering a nominating check after a NAT rebinding (`shard::rebind`),
//! and, in [`crate::testing`], the checks a client sends. MESSAGE-INTEGRITY is HMAC-SHA1 with
//! the short-term credential; FINGERPRINT is CRC-32 XOR 0x5354554E.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;

pub use super::demux::{STUN_ATTR_USERNAME as ATTR_USERNAME, STUN_MAGIC_COOKIE as MAGIC_COOKIE};
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const ATTR_PRIORITY: u16 = 0x0024;
pub const ATTR_USE_CANDIDATE: u16 = 0x0025;
pub const ATTR_FINGERPRINT: u16 = 0x8028;
pub const ATTR_ICE_CONTROLLED: u16 = 0x8029;
pub const ATTR_ICE_CONTROLLING: u16 = 0x802A;
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// CRC-32 (IEEE), as STUN's FINGERPRINT uses it (XORed with [`FINGERPRINT_XOR`]).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Clears `out` and writes a STUN header of `typ` with `txid` (length 0 until [`sign`]).
pub fn header(out: &mut BytesMut, typ: u16, txid: &[u8; 12]) {
    out.clear();
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
}

/// Appends one attribute, padded to 4 bytes.
pub fn attr(out: &mut BytesMut, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.extend_from_slice(&[0]);
    }
}

fn set_len(out: &mut BytesMut, len: usize) {
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Appends MESSAGE-INTEGRITY keyed with `key` (the length field counts it, the HMAC covers
/// everything before it) and FINGERPRINT.
pub fn sign(out: &mut BytesMut, key: &str) {
    let len = out.len() - 20 + 24;
    set_len(out, len);
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&k, out);
    attr(out, ATTR_MESSAGE_INTEGRITY, tag.as_ref());
    let len = out.len() - 20 + 8;
    set_len(out, len);
    let fp = crc32(out) ^ FINGERPRINT_XOR;
    attr(out, ATTR_FINGERPRINT, &fp.to_be_bytes());
}

/// A Binding success response (RFC 8489 §7.3.1, RFC 8445 §7.3.1) to the transaction `txid`
/// from `from`: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY keyed with `key` (the answering side's
/// password), FINGERPRINT; written into `out` (cleared first).
pub fn binding_success(txid: &[u8; 12], from: SocketAddr, key: &str, out: &mut BytesMut) {
    header(out, crate::demux::STUN_BINDING_SUCCESS, txid);
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(txid);
    let mut xor = [0u8; 20];
    let port = from.port() ^ (MAGIC_COOKIE >> 16) as u16;
    xor[2..4].copy_from_slice(&port.to_be_bytes());
    let n = match from.ip() {
        IpAddr::V4(ip) => {
            xor[1] = 1;
            for (i, (b, p)) in ip.octets().iter().zip(pad).enumerate() {
                xor[4 + i] = b ^ p;
            }
            8
        }
        IpAddr::V6(ip) => {
            xor[1] = 2;
            for (i, (b, p)) in ip.octets().iter().zip(pad).enumerate() {
                xor[4 + i] = b ^ p;
            }
            20
        }
    };
    attr(out, ATTR_XOR_MAPPED_ADDRESS, &xor[..n]);
    sign(out, key);
}
