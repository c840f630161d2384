//! SRTP behind a narrow trait. Two implementations: [`InPlaceSrtp`] (our own, over aws-lc-rs,
//! no per-packet allocation; the one in use) and [`RtcSrtp`] (rtc-srtp, kept as the
//! independent implementation for cross-tests and selectable with the `rtc-srtp` feature).
//!
//! One [`Srtp`] value per endpoint holds both directions: the outbound context (local keys)
//! and the inbound one (remote keys, with SRTP and SRTCP replay protection).

mod inplace;
mod outbound;
mod rtc;
mod window;

pub use inplace::{derive as derive_session_key, InPlaceSrtp, MAX_SSRCS};
pub use outbound::{
    OutboundState, FILTER_BITS as OUTBOUND_FILTER_BITS, MAX_ACTIVE as OUTBOUND_MAX_ACTIVE,
    MAX_RETIRED as OUTBOUND_MAX_RETIRED,
};
pub use rtc::RtcSrtp;

use bytes::BytesMut;

/// The SRTP protection profiles the bridge can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    AeadAes128Gcm,
    AeadAes256Gcm,
    Aes128CmHmacSha1_80,
}

impl Profile {
    /// Master key plus salt lengths of one direction.
    pub fn key_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm => 16,
            Profile::AeadAes256Gcm => 32,
            Profile::Aes128CmHmacSha1_80 => 16,
        }
    }
    pub fn salt_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
            Profile::Aes128CmHmacSha1_80 => 14,
        }
    }
    /// Bytes of DTLS exporter output needed (RFC 5764 §4.2).
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}

/// Why a packet could not be (un)protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed packet")]
    Replay,
    #[error("malformed packet")]
    Malformed,
    #[error("too many SSRCs in one SRTP session")]
    SsrcLimit,
    /// Outbound: the SSRC's state was pruned and forgotten beyond its highest index (or a
    /// false positive of the filter of such SSRCs); sending on it could reuse a nonce.
    #[error("SSRC retired from this SRTP session")]
    SsrcRetired,
    /// Outbound: the packet's index was already used on its SSRC (a repeated or too old
    /// sequence number, or an SSRC reused with lower sequence numbers); sending it would
    /// reuse a nonce.
    #[error("SRTP packet index already used")]
    IndexReused,
    #[error("srtp error")]
    Other,
}

impl SrtpError {
    /// The drop-counter name for a failed protect: the outbound refusals by name, anything
    /// else `srtp_protect_failed` / `srtcp_protect_failed`.
    pub fn protect_drop_reason(self, rtcp: bool) -> &'static str {
        match (self, rtcp) {
            (SrtpError::SsrcRetired | SrtpError::IndexReused | SrtpError::SsrcLimit, _) => self.drop_reason(rtcp),
            (_, false) => "srtp_protect_failed",
            (_, true) => "srtcp_protect_failed",
        }
    }

    /// The drop-counter name for this error.
    pub fn drop_reason(self, rtcp: bool) -> &'static str {
        match (self, rtcp) {
            (SrtpError::AuthFailed, false) => "srtp_auth_failed",
            (SrtpError::AuthFailed, true) => "srtcp_auth_failed",
            (SrtpError::Replay, false) => "srtp_replay",
            (SrtpError::Replay, true) => "srtcp_replay",
            (SrtpError::Malformed, false) => "malformed_rtp",
            (SrtpError::Malformed, true) => "malformed_rtcp",
            (SrtpError::SsrcLimit, false) => "srtp_ssrc_limit",
            (SrtpError::SsrcLimit, true) => "srtcp_ssrc_limit",
            (SrtpError::SsrcRetired, false) => "srtp_ssrc_retired",
            (SrtpError::SsrcRetired, true) => "srtcp_ssrc_retired",
            (SrtpError::IndexReused, false) => "srtp_index_reused",
            (SrtpError::IndexReused, true) => "srtcp_index_exhausted",
            (SrtpError::Other, false) => "srtp_error",
            (SrtpError::Other, true) => "srtcp_error",
        }
    }
}

/// Both directions of one endpoint's SRTP session.
pub trait Srtp: Send {
    /// Decrypt and authenticate an inbound SRTP packet; returns the plain RTP packet.
    fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError>;
    /// Encrypt an outbound RTP packet.
    fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError>;
    /// Decrypt and authenticate an inbound SRTCP packet.
    fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError>;
    /// Encrypt an outbound RTCP packet.
    fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError>;

    // In-place variants: `buf` holds the input and receives the output. [`InPlaceSrtp`]
    // does this without allocating when `buf` has spare capacity for the tag (and SRTCP
    // index); the defaults go through the copying methods above. On error `buf` holds
    // unspecified bytes of the input's length or less.

    /// [`Self::unprotect_rtp`] in place.
    fn unprotect_rtp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        *buf = self.unprotect_rtp(buf)?;
        Ok(())
    }
    /// [`Self::protect_rtp`] in place.
    fn protect_rtp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        *buf = self.protect_rtp(buf)?;
        Ok(())
    }
    /// [`Self::unprotect_rtcp`] in place.
    fn unprotect_rtcp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        *buf = self.unprotect_rtcp(buf)?;
        Ok(())
    }
    /// [`Self::protect_rtcp`] in place.
    fn protect_rtcp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        *buf = self.protect_rtcp(buf)?;
        Ok(())
    }

    /// The bridge stopped sending `ssrc` to this endpoint (its source left): prune its
    /// outbound state without making a later packet on it reuse a nonce (docs/security.md
    /// §6). The default keeps everything (rtc-srtp cannot prune).
    fn retire_outbound_ssrc(&mut self, _ssrc: u32) {}

    /// Sizes of the outbound per-SSRC state (zeros where not tracked).
    fn outbound_state(&self) -> OutboundState {
        OutboundState::default()
    }
}

/// Build the endpoint's SRTP session with the implementation selected at build time:
/// [`InPlaceSrtp`], or [`RtcSrtp`] with the `rtc-srtp` feature (for cross-checking in a
/// running bridge).
pub fn new_session(profile: Profile, keys: &SessionKeys<'_>) -> Result<Box<dyn Srtp>, String> {
    #[cfg(feature = "rtc-srtp")]
    {
        Ok(Box::new(RtcSrtp::new(profile, keys)?))
    }
    #[cfg(not(feature = "rtc-srtp"))]
    {
        Ok(Box::new(InPlaceSrtp::new(profile, keys).map_err(|e| e.to_string())?))
    }
}

/// Keys for one endpoint, split from the DTLS exporter output.
pub struct SessionKeys<'a> {
    pub local_key: &'a [u8],
    pub local_salt: &'a [u8],
    pub remote_key: &'a [u8],
    pub remote_salt: &'a [u8],
}

/// Split DTLS-SRTP keying material (RFC 5764 §4.2: client key, server key, client salt,
/// server salt). `None` if the length does not match the profile.
pub fn split_keying_material(km: &[u8], profile: Profile, is_client: bool) -> Option<SessionKeys<'_>> {
    let (k, s) = (profile.key_len(), profile.salt_len());
    if km.len() != profile.keying_material_len() {
        return None;
    }
    let client_key = &km[..k];
    let server_key = &km[k..2 * k];
    let client_salt = &km[2 * k..2 * k + s];
    let server_salt = &km[2 * k + s..];
    Some(if is_client {
        SessionKeys {
            local_key: client_key,
            local_salt: client_salt,
            remote_key: server_key,
            remote_salt: server_salt,
        }
    } else {
        SessionKeys {
            local_key: server_key,
            local_salt: server_salt,
            remote_key: client_key,
            remote_salt: client_salt,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender's protect and the peer's unprotect agree (both profiles), and the receive side
    /// rejects replays and tampering.
    #[test]
    fn roundtrip_and_replay() {
        for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
            let km: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
            let client = split_keying_material(&km, profile, true).expect("length matches");
            let server = split_keying_material(&km, profile, false).expect("length matches");
            let mut a = RtcSrtp::new(profile, &client).expect("keys valid");
            let mut b = RtcSrtp::new(profile, &server).expect("keys valid");
            let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 10, 0, 0, 0, 42];
            rtp.extend_from_slice(b"hello payload");
            let enc = a.protect_rtp(&rtp).expect("protect");
            assert_ne!(&enc[12..], &rtp[12..]);
            let dec = b.unprotect_rtp(&enc).expect("unprotect");
            assert_eq!(&dec[..], &rtp[..]);
            assert_eq!(b.unprotect_rtp(&enc), Err(SrtpError::Replay));
            let mut rtp2 = rtp.clone();
            rtp2[3] = 2;
            let mut enc2 = a.protect_rtp(&rtp2).expect("protect");
            let last = enc2.len() - 1;
            enc2[last] ^= 1;
            assert_eq!(b.unprotect_rtp(&enc2), Err(SrtpError::AuthFailed));

            let mut pli = [0u8; 12];
            crate::wire::rtcp::write_pli(&mut pli, crate::id::Ssrc(1), crate::id::Ssrc(42)).expect("a PLI is 12 bytes");
            let enc = b.protect_rtcp(&pli).expect("protect rtcp");
            assert_eq!(&a.unprotect_rtcp(&enc).expect("unprotect rtcp")[..], &pli[..]);
            assert_eq!(a.unprotect_rtcp(&enc), Err(SrtpError::Replay));
        }
    }
}
