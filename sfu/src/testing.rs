//! Packet builders for tests (the crate's own, the signaling tests and the fuzz crate): an ICE
//! connectivity check as a client sends it, and the Binding success an agent answers with. Not used by the bridge itself, but for [`crc32`]
//! (the FINGERPRINT of the Binding responses the shard writes itself, `shard::rebind`).

/// CRC-32 (IEEE), as STUN's FINGERPRINT uses it (XORed with 0x5354554E).
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

/// An ICE connectivity check as a controlled client sends it (RFC 8445 §7.2.2): a Binding
/// Request with USERNAME, PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY keyed with `key` (the
/// bridge's password) and FINGERPRINT.
pub fn ice_check(txid: &[u8; 12], username: &str, key: &str) -> Vec<u8> {
    check(txid, username, key, false)
}

/// [`ice_check`] with USE-CANDIDATE (RFC 8445 §7.2.2: what a nominating, controlling peer
/// sends), for the NAT rebinding tests (robustness.md case 17).
pub fn ice_check_nominating(txid: &[u8; 12], username: &str, key: &str) -> Vec<u8> {
    check(txid, username, key, true)
}

fn check(txid: &[u8; 12], username: &str, key: &str, use_candidate: bool) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(txid);
    attr(&mut m, 0x0006, username.as_bytes());
    attr(&mut m, 0x0024, &0x6E7F_00FFu32.to_be_bytes());
    attr(&mut m, 0x8029, &0x0102_0304_0506_0708u64.to_be_bytes());
    if use_candidate {
        attr(&mut m, 0x0025, &[]);
    }
    sign(m, key)
}

/// A Binding success response (RFC 8489 §7.3.1) to `txid`, as an ICE agent answers a check
/// from `from`: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY keyed with `key` (the answering side's
/// password), FINGERPRINT.
pub fn binding_success(txid: &[u8; 12], from: std::net::SocketAddr, key: &str) -> Vec<u8> {
    let mut m = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(txid);
    let mut xor = vec![0u8, 0x01];
    xor.extend_from_slice(&(from.port() ^ 0x2112).to_be_bytes());
    match from.ip() {
        std::net::IpAddr::V4(ip) => xor.extend_from_slice(&(u32::from(ip) ^ 0x2112_A442).to_be_bytes()),
        std::net::IpAddr::V6(ip) => {
            xor[1] = 0x02;
            let mut pad = [0u8; 16];
            pad[..4].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            pad[4..].copy_from_slice(txid);
            xor.extend(ip.octets().iter().zip(pad).map(|(b, p)| b ^ p));
        }
    }
    attr(&mut m, 0x0020, &xor);
    sign(m, key)
}

/// One attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn set_len(m: &mut [u8], len: usize) {
    m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`; the length field counts it, the HMAC
/// covers everything before it) and FINGERPRINT.
fn sign(mut m: Vec<u8>, key: &str) -> Vec<u8> {
    let len = m.len() - 20 + 24;
    set_len(&mut m, len);
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&k, &m);
    attr(&mut m, 0x0008, tag.as_ref());
    let len = m.len() - 20 + 8;
    set_len(&mut m, len);
    let fp = crc32(&m) ^ 0x5354_554E;
    attr(&mut m, 0x8028, &fp.to_be_bytes());
    m
}
