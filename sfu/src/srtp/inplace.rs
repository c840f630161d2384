//! SRTP/SRTCP (RFC 3711, RFC 7714) written directly over aws-lc-rs, transforming packets in
//! the caller's buffer.
//!
//! Why by hand: rtc-srtp allocates a `BytesMut` and parses an `rtp::Header` (with `Vec`s) per
//! packet, and the bridge encrypts every forwarded packet once per receiver (docs/decisions.md).
//! Here the only allocations are per context (keys) and per new SSRC (one map entry); a
//! packet is (un)protected in place with the tag / SRTCP index written into spare room after it.
//!
//! Supported: AEAD_AES_128_GCM, AEAD_AES_256_GCM (RFC 7714) and AES_CM_128_HMAC_SHA1_80
//! (RFC 3711), key derivation rate 0 (as DTLS-SRTP mandates), no MKI.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{self, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use bytes::BytesMut;

use super::outbound::{Outbound, OutboundState};
use super::window::IndexWindow;
use super::{Profile, SessionKeys, Srtp, SrtpError};

/// Per-direction bound on SSRCs with state (for SRTP and for SRTCP separately). Inbound, a
/// peer that sends more gets [`SrtpError::SsrcLimit`] for new SSRCs rather than growing our
/// memory; outbound, the least recently used SSRCs are retired past it (see `outbound.rs`).
pub const MAX_SSRCS: usize = 1024;
/// PRF label for the key of the outbound state's filter of retired SSRCs (not an RFC 3711
/// label: the output never leaves this process).
const LABEL_FILTER_KEY: u8 = 0x7f;
const GCM_TAG: usize = 16;
const HMAC_TAG: usize = 10;
const SRTCP_INDEX: usize = 4;
/// The SRTCP E flag (payload encrypted), top bit of the index word.
const E_FLAG: u32 = 0x8000_0000;

// RFC 3711 §4.3.2 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// RFC 3711 §4.3.1/§4.3.3 AES-CM PRF with key derivation rate 0: the keystream of AES-CM
/// under the master key, with IV = (master_salt XOR label<<48) * 2^16, cut to `out.len()`.
/// (A 12-byte GCM master salt is used the same way, right-padded with zeros, RFC 7714 §11.)
pub fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
    if master_salt.len() > 14 {
        return Err(SrtpError::Other);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    ctr_key(master_key)?
        .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| SrtpError::Other)?;
    Ok(())
}

fn ctr_key(key: &[u8]) -> Result<EncryptingKey, SrtpError> {
    let alg = match key.len() {
        16 => &cipher::AES_128,
        32 => &cipher::AES_256,
        _ => return Err(SrtpError::Other),
    };
    let k = UnboundCipherKey::new(alg, key).map_err(|_| SrtpError::Other)?;
    EncryptingKey::ctr(k).map_err(|_| SrtpError::Other)
}

/// Session keys of one packet kind (RTP or RTCP) in one direction.
enum Keys {
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
    // Boxed: an AES key schedule and an HMAC context are large; one allocation per session.
    Cm {
        key: Box<EncryptingKey>,
        salt: [u8; 14],
        auth: Box<hmac::Key>,
    },
}

impl Keys {
    /// Derive the session keys for RTP (`rtcp == false`) or RTCP from one master key/salt.
    fn derive(profile: Profile, master_key: &[u8], master_salt: &[u8], rtcp: bool) -> Result<Self, SrtpError> {
        if master_key.len() != profile.key_len() || master_salt.len() != profile.salt_len() {
            return Err(SrtpError::Other);
        }
        let (lk, la, ls) = if rtcp {
            (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        let mut session_key = [0u8; 32];
        let session_key = &mut session_key[..master_key.len()];
        derive(master_key, master_salt, lk, session_key)?;
        Ok(match profile {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let alg = if master_key.len() == 16 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let mut salt = [0u8; 12];
                derive(master_key, master_salt, ls, &mut salt)?;
                let key = UnboundKey::new(alg, session_key).map_err(|_| SrtpError::Other)?;
                Keys::Gcm {
                    key: LessSafeKey::new(key),
                    salt,
                }
            }
            Profile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; 14];
                derive(master_key, master_salt, ls, &mut salt)?;
                let mut auth = [0u8; 20];
                derive(master_key, master_salt, la, &mut auth)?;
                Keys::Cm {
                    key: Box::new(ctr_key(session_key)?),
                    salt,
                    auth: Box::new(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth)),
                }
            }
        })
    }

    fn tag_len(&self) -> usize {
        match self {
            Keys::Gcm { .. } => GCM_TAG,
            Keys::Cm { .. } => HMAC_TAG,
        }
    }

    /// GCM IV: (0x0000 || SSRC || `tail`) XOR salt, where `tail` is ROC || SEQ for RTP
    /// (RFC 7714 §8.1) and 0x0000 || 0 || 31-bit SRTCP index for RTCP (§9.1).
    fn gcm_nonce(salt: &[u8; 12], ssrc: u32, tail: [u8; 6]) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&tail);
        for (v, s) in iv.iter_mut().zip(salt) {
            *v ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }

    /// AES-CM IV, RFC 3711 §4.1.1: (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16), where
    /// index is the 48-bit SRTP packet index or the 31-bit SRTCP index.
    fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> EncryptionContext {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        for (v, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *v ^= s;
        }
        for (v, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *v ^= s;
        }
        EncryptionContext::Iv128(FixedLength::from(iv))
    }

    /// HMAC-SHA1-80 over `parts` (RFC 3711 §4.2).
    fn hmac80(auth: &hmac::Key, parts: &[&[u8]]) -> [u8; HMAC_TAG] {
        let mut ctx = hmac::Context::with_key(auth);
        for p in parts {
            ctx.update(p);
        }
        let mut tag = [0u8; HMAC_TAG];
        tag.copy_from_slice(&ctx.sign().as_ref()[..HMAC_TAG]);
        tag
    }
}

/// Constant-time comparison, so a forger cannot learn the tag byte by byte from timing.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The inbound replay window: 128 packets (libsrtp's default).
type Window = IndexWindow<u128>;

/// A per-SSRC map that refuses new SSRCs past [`MAX_SSRCS`].
struct SsrcMap<T>(crate::FastMap<u32, T>);

impl<T: Copy> SsrcMap<T> {
    fn get(&self, ssrc: u32) -> Option<T> {
        self.0.get(&ssrc).copied()
    }
    fn set(&mut self, ssrc: u32, v: T) -> Result<(), SrtpError> {
        if self.0.len() >= MAX_SSRCS && !self.0.contains_key(&ssrc) {
            return Err(SrtpError::SsrcLimit);
        }
        self.0.insert(ssrc, v);
        Ok(())
    }
    /// Whether a new SSRC could be added (checked before doing crypto work for it).
    fn has_room_for(&self, ssrc: u32) -> bool {
        self.0.len() < MAX_SSRCS || self.0.contains_key(&ssrc)
    }
}

impl<T> Default for SsrcMap<T> {
    fn default() -> Self {
        Self(Default::default())
    }
}

/// Length of the RTP header including CSRCs and the extension: the part that stays in clear.
fn rtp_header_len(p: &[u8]) -> Result<usize, SrtpError> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(n + 2..n + 4).ok_or(SrtpError::Malformed)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if n > p.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(n)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One direction of an SRTP session: session keys plus per-SSRC state. Inbound, the maps
/// are replay windows; outbound, [`Outbound`] hands out never-used packet indices (and
/// the inbound maps stay empty).
struct Direction {
    rtp: Keys,
    rtcp: Keys,
    rtp_state: SsrcMap<Window>,
    rtcp_state: SsrcMap<Window>,
    out: Outbound,
}

impl Direction {
    fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        let mut fk = [0u8; 8];
        derive(key, salt, LABEL_FILTER_KEY, &mut fk)?;
        Ok(Self {
            rtp: Keys::derive(profile, key, salt, false)?,
            rtcp: Keys::derive(profile, key, salt, true)?,
            rtp_state: SsrcMap::default(),
            rtcp_state: SsrcMap::default(),
            out: Outbound::new(u64::from_be_bytes(fk)),
        })
    }

    fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.rtp.tag_len();
        if buf.len() < len + tag_len {
            return Err(SrtpError::Other);
        }
        let hdr = rtp_header_len(&buf[..len])?;
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        // Reserved (marked used) before encrypting: an index is never used twice.
        let index = self.out.reserve_rtp(ssrc, seq)?;
        let roc = (index >> 16) as u32;
        match &self.rtp {
            Keys::Gcm { key, salt } => {
                let mut tail = [0u8; 6];
                tail[..4].copy_from_slice(&roc.to_be_bytes());
                tail[4..].copy_from_slice(&seq.to_be_bytes());
                let nonce = Keys::gcm_nonce(salt, ssrc, tail);
                let (head, rest) = buf.split_at_mut(hdr);
                let (body, after) = rest.split_at_mut(len - hdr);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), body)
                    .map_err(|_| SrtpError::Other)?;
                after[..GCM_TAG].copy_from_slice(tag.as_ref());
            }
            Keys::Cm { key, salt, auth } => {
                key.less_safe_encrypt(&mut buf[hdr..len], Keys::cm_iv(salt, ssrc, index))
                    .map_err(|_| SrtpError::Other)?;
                let tag = Keys::hmac80(auth, &[&buf[..len], &roc.to_be_bytes()]);
                buf[len..len + HMAC_TAG].copy_from_slice(&tag);
            }
        }
        Ok(len + tag_len)
    }

    fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.rtp.tag_len();
        let hdr = rtp_header_len(buf)?;
        if buf.len() < hdr + tag_len {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let known = self.rtp_state.get(ssrc);
        if known.is_none() && !self.rtp_state.has_room_for(ssrc) {
            return Err(SrtpError::SsrcLimit);
        }
        // State for a new SSRC is only stored once a packet authenticates, so forged packets
        // cannot fill the map.
        let mut w = known.unwrap_or(Window::new(u64::from(seq)));
        let index = w.estimate(seq).ok_or(SrtpError::Replay)?;
        if known.is_some() && !w.fresh(index) {
            return Err(SrtpError::Replay);
        }
        let roc = (index >> 16) as u32;
        let end = buf.len() - tag_len;
        match &self.rtp {
            Keys::Gcm { key, salt } => {
                let mut tail = [0u8; 6];
                tail[..4].copy_from_slice(&roc.to_be_bytes());
                tail[4..].copy_from_slice(&seq.to_be_bytes());
                let nonce = Keys::gcm_nonce(salt, ssrc, tail);
                let (head, rest) = buf.split_at_mut(hdr);
                let (body, tag) = rest.split_at_mut(end - hdr);
                key.open_in_place_separate_tag(nonce, Aad::from(&*head), tag, body)
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
            Keys::Cm { key, salt, auth } => {
                let want = Keys::hmac80(auth, &[&buf[..end], &roc.to_be_bytes()]);
                if !tags_equal(&want, &buf[end..]) {
                    return Err(SrtpError::AuthFailed);
                }
                key.less_safe_encrypt(&mut buf[hdr..end], Keys::cm_iv(salt, ssrc, index))
                    .map_err(|_| SrtpError::Other)?;
            }
        }
        w.mark(index);
        self.rtp_state.set(ssrc, w)?;
        Ok(end)
    }

    fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.rtcp.tag_len();
        if buf.len() < len + tag_len + SRTCP_INDEX {
            return Err(SrtpError::Other);
        }
        if len < 8 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[4..8]);
        // Reserve the index before encrypting: an index must never be used twice.
        let index = self.out.reserve_rtcp(ssrc)?;
        let word = (index | E_FLAG).to_be_bytes();
        match &self.rtcp {
            Keys::Gcm { key, salt } => {
                // RFC 7714 §9: AAD = first 8 octets || E+index; output = ct || tag || E+index.
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&word);
                let mut tail = [0u8; 6];
                tail[2..].copy_from_slice(&index.to_be_bytes());
                let nonce = Keys::gcm_nonce(salt, ssrc, tail);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[8..len])
                    .map_err(|_| SrtpError::Other)?;
                buf[len..len + GCM_TAG].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG..len + GCM_TAG + SRTCP_INDEX].copy_from_slice(&word);
            }
            Keys::Cm { key, salt, auth } => {
                // RFC 3711 §3.4: ct || E+index || tag, the tag over all that precedes it.
                key.less_safe_encrypt(&mut buf[8..len], Keys::cm_iv(salt, ssrc, u64::from(index)))
                    .map_err(|_| SrtpError::Other)?;
                buf[len..len + SRTCP_INDEX].copy_from_slice(&word);
                let tag = Keys::hmac80(auth, &[&buf[..len + SRTCP_INDEX]]);
                buf[len + SRTCP_INDEX..len + SRTCP_INDEX + HMAC_TAG].copy_from_slice(&tag);
            }
        }
        Ok(len + tag_len + SRTCP_INDEX)
    }

    fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.rtcp.tag_len();
        let n = buf.len();
        if n < 8 + tag_len + SRTCP_INDEX || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[4..8]);
        let word_at = match self.rtcp {
            Keys::Gcm { .. } => n - SRTCP_INDEX,
            Keys::Cm { .. } => n - tag_len - SRTCP_INDEX,
        };
        let word = be32(&buf[word_at..word_at + SRTCP_INDEX]);
        let index = word & !E_FLAG;
        let known = self.rtcp_state.get(ssrc);
        if known.is_none() && !self.rtcp_state.has_room_for(ssrc) {
            return Err(SrtpError::SsrcLimit);
        }
        if known.is_some_and(|w| !w.fresh(u64::from(index))) {
            return Err(SrtpError::Replay);
        }
        let plain_len = n - tag_len - SRTCP_INDEX;
        match &self.rtcp {
            Keys::Gcm { key, salt } => {
                // Unencrypted SRTCP (E = 0) would need a different AAD; no WebRTC peer sends it.
                if word & E_FLAG == 0 {
                    return Err(SrtpError::AuthFailed);
                }
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&word.to_be_bytes());
                let mut tail = [0u8; 6];
                tail[2..].copy_from_slice(&index.to_be_bytes());
                let nonce = Keys::gcm_nonce(salt, ssrc, tail);
                let (body, tag) = buf[8..word_at].split_at_mut(plain_len - 8);
                key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
            Keys::Cm { key, salt, auth } => {
                let end = n - HMAC_TAG;
                let want = Keys::hmac80(auth, &[&buf[..end]]);
                if !tags_equal(&want, &buf[end..]) {
                    return Err(SrtpError::AuthFailed);
                }
                if word & E_FLAG != 0 {
                    key.less_safe_encrypt(&mut buf[8..plain_len], Keys::cm_iv(salt, ssrc, u64::from(index)))
                        .map_err(|_| SrtpError::Other)?;
                }
            }
        }
        let mut w = known.unwrap_or(Window::new(u64::from(index)));
        w.mark(u64::from(index));
        self.rtcp_state.set(ssrc, w)?;
        Ok(plain_len)
    }
}

/// Both directions of one endpoint's SRTP session, transforming packets in place.
pub struct InPlaceSrtp {
    tx: Direction,
    rx: Direction,
}

impl InPlaceSrtp {
    /// Derive session keys for both directions. Errors if a key or salt has the wrong length.
    pub fn new(profile: Profile, keys: &SessionKeys<'_>) -> Result<Self, SrtpError> {
        Ok(Self {
            tx: Direction::new(profile, keys.local_key, keys.local_salt)?,
            rx: Direction::new(profile, keys.remote_key, keys.remote_salt)?,
        })
    }

    /// Bytes [`Self::protect_rtp`] appends to a packet (the tag).
    pub fn rtp_overhead(&self) -> usize {
        self.tx.rtp.tag_len()
    }

    /// Bytes [`Self::protect_rtcp`] appends to a packet (the tag and SRTCP index).
    pub fn rtcp_overhead(&self) -> usize {
        self.tx.rtcp.tag_len() + SRTCP_INDEX
    }

    /// Encrypt the RTP packet in `buf[..len]`; `buf` must extend at least
    /// [`Self::rtp_overhead`] bytes further. Returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.tx.protect_rtp(buf, len)
    }

    /// Authenticate and decrypt the SRTP packet filling `buf`; returns the RTP length.
    /// On error `buf` may be partly overwritten.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        self.rx.unprotect_rtp(buf)
    }

    /// Encrypt the RTCP packet in `buf[..len]`; `buf` must extend at least
    /// [`Self::rtcp_overhead`] bytes further. Returns the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.tx.protect_rtcp(buf, len)
    }

    /// Authenticate and decrypt the SRTCP packet filling `buf`; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        self.rx.unprotect_rtcp(buf)
    }

    /// Prune the outbound state of `ssrc` (its source left), keeping only what makes a later
    /// packet on it nonce-safe (docs/security.md §6).
    pub fn retire_outbound_ssrc(&mut self, ssrc: u32) {
        self.tx.out.retire(ssrc);
    }

    /// Sizes of the outbound per-SSRC state.
    pub fn outbound_state(&self) -> OutboundState {
        self.tx.out.state()
    }
}

/// Grow `buf` by `extra` (no allocation when the capacity is already there), run `f` on the
/// whole slice, and cut it to the length `f` returns.
fn with_room(
    buf: &mut BytesMut,
    extra: usize,
    f: impl FnOnce(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> Result<(), SrtpError> {
    let len = buf.len();
    buf.resize(len + extra, 0);
    match f(buf, len) {
        Ok(n) => {
            buf.truncate(n);
            Ok(())
        }
        Err(e) => {
            buf.truncate(len);
            Err(e)
        }
    }
}

impl Srtp for InPlaceSrtp {
    fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut b = BytesMut::from(packet);
        self.unprotect_rtp_in_place(&mut b)?;
        Ok(b)
    }
    fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut b = BytesMut::with_capacity(packet.len() + self.rtp_overhead());
        b.extend_from_slice(packet);
        self.protect_rtp_in_place(&mut b)?;
        Ok(b)
    }
    fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut b = BytesMut::from(packet);
        self.unprotect_rtcp_in_place(&mut b)?;
        Ok(b)
    }
    fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut b = BytesMut::with_capacity(packet.len() + self.rtcp_overhead());
        b.extend_from_slice(packet);
        self.protect_rtcp_in_place(&mut b)?;
        Ok(b)
    }

    fn unprotect_rtp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let n = self.rx.unprotect_rtp(buf)?;
        buf.truncate(n);
        Ok(())
    }
    fn protect_rtp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let extra = self.rtp_overhead();
        with_room(buf, extra, |b, len| self.tx.protect_rtp(b, len))
    }
    fn unprotect_rtcp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let n = self.rx.unprotect_rtcp(buf)?;
        buf.truncate(n);
        Ok(())
    }
    fn protect_rtcp_in_place(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let extra = self.rtcp_overhead();
        with_room(buf, extra, |b, len| self.tx.protect_rtcp(b, len))
    }

    fn retire_outbound_ssrc(&mut self, ssrc: u32) {
        InPlaceSrtp::retire_outbound_ssrc(self, ssrc);
    }
    fn outbound_state(&self) -> OutboundState {
        InPlaceSrtp::outbound_state(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
            .collect()
    }

    /// RFC 3711 Appendix B.3: key derivation from master key and salt.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let mk = unhex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let ms = unhex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(&mk, &ms, LABEL_RTP_KEY, &mut key).expect("valid lengths");
        assert_eq!(key.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&mk, &ms, LABEL_RTP_SALT, &mut salt).expect("valid lengths");
        assert_eq!(salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&mk, &ms, LABEL_RTP_AUTH, &mut auth).expect("valid lengths");
        assert_eq!(auth.to_vec(), unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for SSRC 0, index 0.
    #[test]
    fn rfc3711_b2_keystream() {
        let key = ctr_key(&unhex("2B7E151628AED2A6ABF7158809CF4F3C")).expect("16-byte key");
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let mut ks = [0u8; 48];
        key.less_safe_encrypt(&mut ks, Keys::cm_iv(&salt, 0, 0))
            .expect("ctr never fails on a slice");
        assert_eq!(
            ks.to_vec(),
            unhex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB \
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    fn gcm_direction(key: &[u8], salt: &str) -> Direction {
        let alg = if key.len() == 16 {
            &aead::AES_128_GCM
        } else {
            &aead::AES_256_GCM
        };
        let mk = || Keys::Gcm {
            key: LessSafeKey::new(UnboundKey::new(alg, key).expect("valid key")),
            salt: unhex(salt).try_into().expect("12-byte salt"),
        };
        Direction {
            rtp: mk(),
            rtcp: mk(),
            rtp_state: SsrcMap::default(),
            rtcp_state: SsrcMap::default(),
            out: Outbound::new(0),
        }
    }

    /// RFC 7714 §16.1.1 / §16.2.1: RTP with AEAD_AES_128_GCM and AEAD_AES_256_GCM, given
    /// session keys; then the receive side opens the RFC's output.
    #[test]
    fn rfc7714_16_rtp() {
        let plain = unhex(
            "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e69732064697669736120 \
             696e207061727465732074726573",
        );
        let cases = [
            (
                (0u8..16).collect::<Vec<_>>(),
                "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f\
                 42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
            ),
            (
                (0u8..32).collect::<Vec<_>>(),
                "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3\
                 b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
            ),
        ];
        for (key, expected) in cases {
            let expected = unhex(expected);
            let mut tx = gcm_direction(&key, "517569642070726f2071756f");
            let mut buf = [0u8; 128];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
            assert_eq!(buf[..n].to_vec(), expected);

            let mut rx = gcm_direction(&key, "517569642070726f2071756f");
            let mut enc = expected.clone();
            let n = rx.unprotect_rtp(&mut enc).expect("unprotect");
            assert_eq!(enc[..n].to_vec(), plain);
        }
    }

    #[test]
    fn replay_window() {
        let mut w = Window::new(1000);
        assert!(!w.fresh(1000));
        assert!(w.fresh(1001) && w.fresh(999));
        w.mark(1200);
        assert!(!w.fresh(1200) && !w.fresh(1000), "older than the window");
        assert!(w.fresh(1100));
        w.mark(1100);
        assert!(!w.fresh(1100));
        w.mark(100_000);
        assert!(!w.fresh(1200) && w.fresh(99_999));
    }

    #[test]
    fn roc_estimation() {
        let w = Window::new(0xfff0);
        assert_eq!(w.estimate(0x0002), Some(0x1_0002), "wrap forward");
        let w = Window::new(0x1_0002);
        assert_eq!(w.estimate(0xfff0), Some(0xfff0), "late packet from the previous ROC");
        let w = Window::new(5);
        assert_eq!(w.estimate(0xfff0), None, "before the first ROC");
    }

    fn mirrored(profile: Profile) -> (InPlaceSrtp, InPlaceSrtp) {
        let km: Vec<u8> = (0..profile.keying_material_len() as u8)
            .map(|i| i.wrapping_mul(13))
            .collect();
        let c = super::super::split_keying_material(&km, profile, true).expect("length matches");
        let s = super::super::split_keying_material(&km, profile, false).expect("length matches");
        (
            InPlaceSrtp::new(profile, &c).expect("valid keys"),
            InPlaceSrtp::new(profile, &s).expect("valid keys"),
        )
    }

    fn packet(buf: &mut [u8; 64], ssrc: u32, seq: u16) -> usize {
        buf.fill(0xab);
        buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        20
    }

    /// Inbound, new SSRCs past the cap are refused; outbound, the least recently used are
    /// retired instead and every new SSRC can be sent.
    #[test]
    fn ssrc_limit_bounds_state() {
        for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
            let (mut tx, mut rx) = mirrored(profile);
            let mut buf = [0u8; 64];
            for ssrc in 0..=2 * MAX_SSRCS as u32 {
                let len = packet(&mut buf, ssrc, 1);
                let n = tx.protect_rtp(&mut buf, len).expect("outbound never runs out of SSRCs");
                let r = rx.unprotect_rtp(&mut buf[..n]);
                if (ssrc as usize) < MAX_SSRCS {
                    assert_eq!(r, Ok(len));
                } else {
                    assert_eq!(r, Err(SrtpError::SsrcLimit));
                }
                assert!(tx.outbound_state().active <= MAX_SSRCS);
            }
            let st = tx.outbound_state();
            assert_eq!(
                st.active as u64 + st.retired as u64 + st.filtered,
                2 * MAX_SSRCS as u64 + 1
            );
        }
    }

    /// A pruned SSRC sent again continues where it was (the receiver, which kept its state,
    /// decrypts across a ROC wrap); a rejoin with lower sequence numbers is refused rather
    /// than sent under used nonces.
    #[test]
    fn retired_ssrc_resumes_for_a_receiver_that_kept_its_state() {
        for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes256Gcm] {
            let (mut tx, mut rx) = mirrored(profile);
            let mut buf = [0u8; 64];
            let mut send = |tx: &mut InPlaceSrtp, rx: &mut InPlaceSrtp, seq: u16| {
                let len = packet(&mut buf, 42, seq);
                let n = tx.protect_rtp(&mut buf, len)?;
                rx.unprotect_rtp(&mut buf[..n])
            };
            for seq in 65_500..=65_535u16 {
                assert_eq!(send(&mut tx, &mut rx, seq), Ok(20));
            }
            tx.retire_outbound_ssrc(42);
            assert_eq!(tx.outbound_state().active, 0);
            for seq in 0..20u16 {
                assert_eq!(send(&mut tx, &mut rx, seq), Ok(20), "seq {seq} after the wrap");
            }
            tx.retire_outbound_ssrc(42);
            assert_eq!(send(&mut tx, &mut rx, 19), Err(SrtpError::IndexReused));
            assert_eq!(send(&mut tx, &mut rx, 65_520), Err(SrtpError::IndexReused));
            assert_eq!(send(&mut tx, &mut rx, 20), Ok(20));
        }
    }
}
