//! The rtc-srtp implementation of [`Srtp`]. It allocates a `BytesMut` per packet (rtc-srtp
//! has no in-place API); that is acknowledged and is why this sits behind the trait.

use bytes::BytesMut;
use rtc_shared::error::Error;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use super::{Profile, SessionKeys, Srtp, SrtpError};

/// Replay window (packets), as libsrtp's default.
const REPLAY_WINDOW: usize = 128;

pub struct RtcSrtp {
    tx: Context,
    rx: Context,
}

impl RtcSrtp {
    pub fn new(profile: Profile, keys: &SessionKeys<'_>) -> Result<Self, String> {
        let p = match profile {
            Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Profile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
            Profile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        };
        let provider = rtc_srtp::crypto::default_provider().map_err(|e| e.to_string())?;
        let crypto = provider.crypto();
        let tx = Context::new(keys.local_key, keys.local_salt, p, None, None, crypto).map_err(|e| e.to_string())?;
        let rx = Context::new(
            keys.remote_key,
            keys.remote_salt,
            p,
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
            crypto,
        )
        .map_err(|e| e.to_string())?;
        Ok(Self { tx, rx })
    }
}

fn map_err(e: Error) -> SrtpError {
    match e {
        Error::SrtpSsrcDuplicated(..) | Error::SrtcpSsrcDuplicated(..) | Error::ErrDuplicated => SrtpError::Replay,
        Error::RtpFailedToVerifyAuthTag | Error::RtcpFailedToVerifyAuthTag | Error::ErrFailedToVerifyAuthTag => {
            SrtpError::AuthFailed
        }
        Error::ErrTooShortRtp | Error::ErrTooShortRtcp | Error::RtcpInvalidLengthAuthTag(..) => SrtpError::Malformed,
        // Remaining decode errors are header-parsing failures or AEAD open failures, which
        // for an attacker's or broken packet amount to "does not authenticate".
        _ => SrtpError::AuthFailed,
    }
}

impl Srtp for RtcSrtp {
    fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.rx.decrypt_rtp(packet).map_err(map_err)
    }
    fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.tx.encrypt_rtp(packet).map_err(|_| SrtpError::Other)
    }
    fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.rx.decrypt_rtcp(packet).map_err(map_err)
    }
    fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.tx.encrypt_rtcp(packet).map_err(|_| SrtpError::Other)
    }
}
