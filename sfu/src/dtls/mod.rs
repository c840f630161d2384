//! DTLS-SRTP for one endpoint over rtc-dtls, plus the process-wide certificate.
//!
//! rtc-dtls keys connections by remote address. Each bridge endpoint gets its own
//! `rtc_dtls::endpoint::Endpoint` holding at most one connection, keyed by a *pinned*
//! address (the first ICE-validated address DTLS came from, or the one we connect to as a
//! client). Transmits are routed by the shard to the ICE-selected pair, so the session
//! survives a pair switch (notes/rtc-crates.md §1).
//!
//! As server we read the ClientHello's use_srtp list ourselves first ([`client_hello`]) and
//! build the rtc-dtls config with exactly one profile: AEAD_AES_128_GCM whenever the client
//! offers it (and the bridge config allows it), else AES_CM_128_HMAC_SHA1_80.

pub mod client_hello;
#[cfg(test)]
pub(crate) mod tests_no_cert_verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_dtls::endpoint::{Endpoint as DtlsEndpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;

use crate::config::{HandshakeSlot, HandshakeSlots, SlotRefused, SrtpProfile};
use crate::control::Fingerprint;
use crate::srtp::{new_session, split_keying_material, Profile, Srtp};
use client_hello::{Feed, HelloAssembler};

/// Handshake deadline (JVB `jmt.dtls.handshake-timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of DTLS buffered while waiting for a complete ClientHello.
const MAX_BUFFERED: usize = 16 * 1024;

/// The process certificate: ECDSA P-256, self-signed, shared by every endpoint.
#[derive(Clone)]
pub struct LocalCert {
    cert: Certificate,
    /// SHA-256 of the DER, colon-separated upper-case hex.
    pub fingerprint_sha256: String,
}

impl LocalCert {
    pub fn generate(provider: &Arc<dyn RTCCryptoProvider>) -> Result<Self, String> {
        // rcgen's default key algorithm is ECDSA P-256 with SHA-256.
        let cert = Certificate::generate_self_signed(vec!["palim".to_owned()], provider.crypto())
            .map_err(|e| e.to_string())?;
        let der = cert.certificate.first().ok_or("certificate without DER")?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        Ok(Self {
            fingerprint_sha256: fingerprint_hex(digest.as_ref()),
            cert,
        })
    }
}

/// Colon-separated upper-case hex, as in SDP `a=fingerprint`.
pub fn fingerprint_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Does `der` match one of the signalled fingerprints? Unknown hash names never match.
pub fn fingerprint_matches(der: &[u8], fps: &[Fingerprint]) -> bool {
    use aws_lc_rs::digest;
    fps.iter().any(|fp| {
        let alg = match fp.hash.to_ascii_lowercase().as_str() {
            "sha-256" => &digest::SHA256,
            "sha-384" => &digest::SHA384,
            "sha-512" => &digest::SHA512,
            "sha-1" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            _ => return false,
        };
        digest::digest(alg, der).as_ref() == fp.value.as_slice()
    })
}

/// Which side of the DTLS handshake the bridge plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What the DTLS layer reports to its endpoint.
pub enum DtlsEvent {
    /// Handshake done; SRTP keys are installed in the returned session.
    Connected {
        srtp: Box<dyn Srtp>,
        profile: Profile,
    },
    Failed(String),
    /// Decrypted application data (SCTP).
    Data(BytesMut),
    /// The peer sent close_notify.
    Closed,
}

enum State {
    /// Server: buffering the first flight until the ClientHello is complete.
    AwaitHello {
        asm: HelloAssembler,
        buffered: Vec<BytesMut>,
        bytes: usize,
    },
    Handshaking,
    Connected,
    Failed,
}

/// One endpoint's DTLS.
pub struct Dtls {
    role: Role,
    state: State,
    ep: DtlsEndpoint,
    key: Option<SocketAddr>,
    started: Option<Instant>,
    local: SocketAddr,
    /// Held from the handshake's first datagram (or `connect`) until it connects or fails.
    slot: Option<HandshakeSlot>,
    /// Set by the certificate check when the peer's certificate matched none of the signalled
    /// fingerprints (robustness.md case 18: `dtls_fingerprint_mismatch`).
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a datagram was not accepted (for drop counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsDrop {
    /// Malformed first flight, or too much of it.
    MalformedHello,
    /// The handshake failed earlier; nothing more is processed.
    Failed,
    /// rtc-dtls rejected a record after the handshake.
    Rejected,
    /// The bridge-wide cap on handshakes in flight is reached; the handshake is not started.
    HandshakeLimit,
    /// The per-source-IP cap on handshakes in flight is reached; the handshake is not started.
    HandshakeIpCap,
}

impl DtlsDrop {
    pub fn reason(self) -> &'static str {
        match self {
            DtlsDrop::MalformedHello => "dtls_malformed_hello",
            DtlsDrop::Failed => "dtls_failed",
            DtlsDrop::Rejected => "dtls_rejected",
            DtlsDrop::HandshakeLimit => "dtls_handshake_limit",
            DtlsDrop::HandshakeIpCap => "dtls_handshake_ip_cap",
        }
    }
}

/// Everything a handshake config needs besides the profile choice.
pub struct DtlsContext<'a> {
    pub provider: &'a Arc<dyn RTCCryptoProvider>,
    pub cert: &'a LocalCert,
    pub fingerprints: &'a [Fingerprint],
    pub allowed: &'a [SrtpProfile],
    /// The caps on handshakes in flight (bridge-wide and per source IP).
    pub slots: &'a HandshakeSlots,
}

impl Dtls {
    pub fn new(role: Role, local: SocketAddr) -> Self {
        let state = match role {
            Role::Server => State::AwaitHello {
                asm: HelloAssembler::default(),
                buffered: Vec::new(),
                bytes: 0,
            },
            Role::Client => State::Handshaking,
        };
        Self {
            role,
            state,
            ep: DtlsEndpoint::new(local, TransportProtocol::UDP, None),
            key: None,
            started: None,
            local,
            slot: None,
            mismatch: Arc::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The address the connection is keyed by (the first peer address).
    pub fn pinned(&self) -> Option<SocketAddr> {
        self.key
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected)
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Client role: start the handshake towards `remote`. No-op if already started.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr, ctx: &DtlsContext<'_>, out: &mut Vec<DtlsEvent>) {
        if self.role != Role::Client || self.key.is_some() || self.is_failed() {
            return;
        }
        let profiles: Vec<SrtpProtectionProfile> = ctx.allowed.iter().map(|p| to_dtls_profile(*p)).collect();
        let cfg = match build_config(ctx, profiles, true, &self.mismatch) {
            Ok(c) => c,
            Err(e) => return self.fail(e, out),
        };
        // Over a cap: not started; the shard calls `connect` again on its next drive.
        let slot = match ctx.slots.try_acquire(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%remote, ?why, "DTLS handshake cap reached; client handshake deferred");
                return;
            }
        };
        self.slot = Some(slot);
        self.key = Some(remote);
        self.started = Some(now);
        if let Err(e) = self.ep.connect(now, remote, Arc::new(cfg), None) {
            self.fail(e.to_string(), out);
        }
    }

    /// One DTLS datagram from `from` (already ICE-validated by the caller). The first one
    /// pins the session's key address.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: BytesMut,
        ctx: &DtlsContext<'_>,
        out: &mut Vec<DtlsEvent>,
    ) -> Result<(), DtlsDrop> {
        if matches!(self.state, State::AwaitHello { .. }) && self.slot.is_none() {
            // The first datagram of a handshake needs a slot under the bridge-wide and the
            // per-source-IP cap. Refused datagrams leave no state behind.
            match ctx.slots.try_acquire(from.ip()) {
                Ok(s) => self.slot = Some(s),
                Err(SlotRefused::Bridge) => return Err(DtlsDrop::HandshakeLimit),
                Err(SlotRefused::PerIp) => return Err(DtlsDrop::HandshakeIpCap),
            }
        }
        // The session is keyed by the first address; records from another ICE-validated
        // address (the peer switched pairs) belong to the same session.
        let key = *self.key.get_or_insert(from);
        match &mut self.state {
            State::Failed => return Err(DtlsDrop::Failed),
            State::AwaitHello { asm, buffered, bytes } => {
                *bytes += data.len();
                if *bytes > MAX_BUFFERED {
                    self.fail("first flight too large".into(), out);
                    return Err(DtlsDrop::MalformedHello);
                }
                let feed = asm.feed(&data);
                buffered.push(data);
                self.started.get_or_insert(now);
                match feed {
                    Feed::Incomplete => return Ok(()),
                    Feed::Malformed => {
                        self.fail("malformed ClientHello".into(), out);
                        return Err(DtlsDrop::MalformedHello);
                    }
                    Feed::Complete(offered) => {
                        let chosen = choose_profile(&offered, ctx.allowed);
                        let cfg = match build_config(ctx, vec![chosen], false, &self.mismatch) {
                            Ok(c) => c,
                            Err(e) => {
                                self.fail(e, out);
                                return Ok(());
                            }
                        };
                        self.ep.set_server_config(Some(Arc::new(cfg)));
                        let State::AwaitHello { buffered, .. } = std::mem::replace(&mut self.state, State::Handshaking)
                        else {
                            unreachable!("matched AwaitHello above")
                        };
                        for d in buffered {
                            self.read(now, key, d, out);
                            if self.is_failed() {
                                break;
                            }
                        }
                        return Ok(());
                    }
                }
            }
            State::Handshaking | State::Connected => {}
        }
        let was_connected = self.is_connected();
        self.read(now, key, data, out);
        if was_connected && self.is_failed() {
            // Never report failure of an established session for one bad record.
            return Err(DtlsDrop::Rejected);
        }
        Ok(())
    }

    fn read(&mut self, now: Instant, from: SocketAddr, data: BytesMut, out: &mut Vec<DtlsEvent>) {
        let connected_before = self.is_connected();
        match self.ep.read(now, from, None, data) {
            Ok(evs) => {
                for ev in evs {
                    match ev {
                        EndpointEvent::HandshakeComplete => self.on_complete(from, out),
                        EndpointEvent::ApplicationData(b) => out.push(DtlsEvent::Data(b)),
                        EndpointEvent::PeerClosed => {
                            self.state = State::Failed;
                            self.slot = None;
                            out.push(DtlsEvent::Closed);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                if !connected_before {
                    self.fail(e.to_string(), out);
                } else {
                    tracing::trace!(error = %e, "dtls record rejected");
                }
            }
        }
    }

    fn on_complete(&mut self, key: SocketAddr, out: &mut Vec<DtlsEvent>) {
        let Some(state) = self.ep.get_connection_state(key) else {
            return self.fail("no connection state after handshake".into(), out);
        };
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Profile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => Profile::AeadAes256Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Profile::Aes128CmHmacSha1_80,
            other => return self.fail(format!("unsupported SRTP profile {other:?}"), out),
        };
        let km = match state.export_keying_material("EXTRACTOR-dtls_srtp", &[], profile.keying_material_len()) {
            Ok(km) => km,
            Err(e) => return self.fail(format!("keying material export: {e}"), out),
        };
        let Some(keys) = split_keying_material(km.as_ref(), profile, state.is_client()) else {
            return self.fail("keying material length".into(), out);
        };
        match new_session(profile, &keys) {
            Ok(srtp) => {
                self.state = State::Connected;
                self.slot = None;
                out.push(DtlsEvent::Connected { srtp, profile });
            }
            Err(e) => self.fail(e, out),
        }
    }

    /// Whether the handshake failed because the peer's certificate matched none of the
    /// signalled fingerprints.
    pub fn fingerprint_mismatched(&self) -> bool {
        self.mismatch.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fail(&mut self, reason: String, out: &mut Vec<DtlsEvent>) {
        self.slot = None;
        if !self.is_failed() {
            self.state = State::Failed;
            out.push(DtlsEvent::Failed(reason));
        }
    }

    /// Queue application data (SCTP) for the peer.
    pub fn write(&mut self, now: Instant, data: &[u8]) -> bool {
        match (self.key, self.is_connected()) {
            (Some(k), true) => self.ep.write(now, k, data).is_ok(),
            _ => false,
        }
    }

    /// Next datagram to send. The caller routes it to the ICE-selected address.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.ep.poll_transmit().map(|t| t.message)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.key.and_then(|k| self.ep.poll_timeout(&k));
        let deadline = match self.state {
            State::AwaitHello { .. } | State::Handshaking => self.started.map(|s| s + HANDSHAKE_TIMEOUT),
            _ => None,
        };
        [retransmit, deadline].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<DtlsEvent>) {
        if matches!(self.state, State::AwaitHello { .. } | State::Handshaking)
            && self.started.is_some_and(|s| now >= s + HANDSHAKE_TIMEOUT)
        {
            return self.fail("handshake timeout".into(), out);
        }
        if let Some(k) = self.key {
            if let Err(e) = self.ep.handle_timeout(k, now) {
                if !self.is_connected() {
                    self.fail(e.to_string(), out);
                }
            }
        }
    }

    /// Send close_notify (best effort).
    pub fn close(&mut self, now: Instant) {
        let _ = self.ep.close(now);
        let _ = self.local;
    }
}

fn to_dtls_profile(p: SrtpProfile) -> SrtpProtectionProfile {
    match p {
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    }
}

/// The one profile a server config offers: the first of the bridge's allowed profiles that
/// the client offered (GCM first by default), else AES_CM_128_HMAC_SHA1_80 so that the
/// handshake fails cleanly in rtc-dtls if the client offers nothing we know.
pub fn choose_profile(offered: &[u16], allowed: &[SrtpProfile]) -> SrtpProtectionProfile {
    allowed
        .iter()
        .map(|p| to_dtls_profile(*p))
        .find(|p| offered.contains(&(*p as u16)))
        .unwrap_or(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80)
}

fn build_config(
    ctx: &DtlsContext<'_>,
    profiles: Vec<SrtpProtectionProfile>,
    is_client: bool,
    mismatch: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<HandshakeConfig, String> {
    let fps: Vec<Fingerprint> = ctx.fingerprints.to_vec();
    let mismatch = Arc::clone(mismatch);
    let verify: rtc_dtls::config::VerifyPeerCertificateFn = Arc::new(move |certs, _chains| {
        // Cheap, and idempotent: rtc-dtls may call this more than once per handshake.
        match certs.first() {
            Some(der) if fingerprint_matches(der, &fps) => Ok(()),
            _ => {
                mismatch.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(rtc_shared::error::Error::ErrNoMatchingCertificateFingerprint)
            }
        }
    });
    ConfigBuilder::default()
        .with_crypto_provider(ctx.provider.clone())
        .with_certificates(vec![ctx.cert.cert.clone()])
        .with_srtp_protection_profiles(profiles)
        .with_client_auth(ClientAuthType::RequireAnyClientCert)
        // No CA chain in WebRTC: the fingerprint callback is the check.
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(verify))
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .build(is_client, None)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge-wide handshake cap: a server handshake over it is refused (not failed, so a
    /// retransmission may start it later), and a finished handshake frees its slot.
    #[test]
    fn handshake_cap_refuses_then_frees() {
        let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
        let cert = LocalCert::generate(&provider).expect("certificate");
        let slots = HandshakeSlots::new(1);
        let ctx = DtlsContext {
            provider: &provider,
            cert: &cert,
            fingerprints: &[],
            allowed: &[SrtpProfile::AeadAes128Gcm],
            slots: &slots,
        };
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("literal");
        let now = Instant::now();
        let mut out = Vec::new();
        // A handshake record header (ClientHello fragment) that is incomplete: it waits.
        // (record header: handshake, epoch 0, length 12; fragment: ClientHello of 100 bytes,
        // offset 0, fragment length 0.)
        let partial = BytesMut::from(
            &[
                22u8, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0,
            ][..],
        );
        let mut a = Dtls::new(Role::Server, local);
        assert_eq!(a.handle_datagram(now, peer, partial.clone(), &ctx, &mut out), Ok(()));
        assert_eq!(slots.in_flight(), 1);
        let mut b = Dtls::new(Role::Server, local);
        assert_eq!(
            b.handle_datagram(now, peer, partial.clone(), &ctx, &mut out),
            Err(DtlsDrop::HandshakeLimit)
        );
        assert!(!b.is_failed(), "a refused handshake is not failed");
        assert!(out.is_empty());
        // The first one times out: its slot is free and the second one can start.
        a.handle_timeout(now + HANDSHAKE_TIMEOUT, &mut out);
        assert!(a.is_failed());
        assert_eq!(slots.in_flight(), 0);
        assert_eq!(b.handle_datagram(now, peer, partial, &ctx, &mut out), Ok(()));
        assert_eq!(slots.in_flight(), 1);
        drop(b);
        assert_eq!(slots.in_flight(), 0, "an expired endpoint frees its slot");
    }

    /// GCM is chosen whenever the client offers it, regardless of the client's order.
    #[test]
    fn profile_choice_prefers_gcm() {
        let both = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
        let chrome = [0x0001, 0x0008, 0x0007];
        assert_eq!(
            choose_profile(&chrome, &both),
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm
        );
        assert_eq!(
            choose_profile(&[1], &both),
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80
        );
        assert_eq!(
            choose_profile(&chrome, &[SrtpProfile::Aes128CmHmacSha1_80]),
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80
        );
        assert_eq!(
            choose_profile(&[], &both),
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80
        );
    }

    /// Fingerprints match by any supported hash, and a single flipped byte does not.
    #[test]
    fn fingerprint_check() {
        let der = b"not really a certificate";
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let good = Fingerprint {
            hash: "sha-256".into(),
            value: sha.as_ref().to_vec(),
            setup: None,
        };
        let mut bad = good.clone();
        bad.value[0] ^= 1;
        assert!(fingerprint_matches(der, std::slice::from_ref(&good)));
        assert!(!fingerprint_matches(der, std::slice::from_ref(&bad)));
        assert!(!fingerprint_matches(der, &[]));
        assert!(fingerprint_matches(der, &[bad, good]));
        assert_eq!(fingerprint_hex(&[0xAB, 0x01]), "AB:01");
    }
}
