//! Packet builders for tests (the crate's own, the signaling tests and the fuzz crate): an ICE
//! connectivity check as a client sends it, and the Binding success an agent answers with,
//! written with [`crate::wire::stun`] (which the bridge uses for its own Binding responses).

use bytes::BytesMut;

use crate::wire::stun;
pub use crate::wire::stun::crc32;

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
    let mut m = BytesMut::new();
    stun::header(&mut m, crate::wire::demux::STUN_BINDING_REQUEST, txid);
    stun::attr(&mut m, stun::ATTR_USERNAME, username.as_bytes());
    stun::attr(&mut m, stun::ATTR_PRIORITY, &0x6E7F_00FFu32.to_be_bytes());
    stun::attr(
        &mut m,
        stun::ATTR_ICE_CONTROLLED,
        &0x0102_0304_0506_0708u64.to_be_bytes(),
    );
    if use_candidate {
        stun::attr(&mut m, stun::ATTR_USE_CANDIDATE, &[]);
    }
    stun::sign(&mut m, key);
    m.to_vec()
}

/// A Binding success response to `txid`, as an ICE agent answers a check from `from`
/// ([`stun::binding_success`]), keyed with `key` (the answering side's password).
pub fn binding_success(txid: &[u8; 12], from: std::net::SocketAddr, key: &str) -> Vec<u8> {
    let mut m = BytesMut::new();
    stun::binding_success(txid, from, key, &mut m);
    m.to_vec()
}
