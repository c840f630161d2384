//! Robustness case 19 (CVE-2022-29222 class): a DTLS client that sends a certificate but no
//! CertificateVerify must not complete a handshake with the bridge.
//!
//! The peer here is a hand-built DTLS 1.2 client (test code only, crypto from aws-lc-rs): it
//! speaks TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 with extended master secret and use_srtp,
//! answers the bridge's CertificateRequest with a self-signed ECDSA certificate whose
//! fingerprint is the signalled one, and sends ClientKeyExchange, ChangeCipherSpec and a
//! correctly computed, encrypted Finished. Only the CertificateVerify varies: correct (the
//! control, which must connect and key SRTP the same way the client does), missing, or
//! signed with another key. The client does not reassemble fragmented handshake messages or
//! verify the server's signature; it asserts the former and does not need the latter.

use super::*;
use crate::config::{HandshakeSlots, SrtpProfile};
use crate::srtp::{new_session, split_keying_material, Profile};
use aws_lc_rs::{aead, agreement, digest, hmac, rand::SystemRandom, signature};

/// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
const SUITE: u16 = 0xC02B;
const DTLS12: [u8; 2] = [0xFE, 0xFD];
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;
const CERTIFICATE: u8 = 11;
const SERVER_KEY_EXCHANGE: u8 = 12;
const CERTIFICATE_REQUEST: u8 = 13;
const SERVER_HELLO_DONE: u8 = 14;
const CERTIFICATE_VERIFY: u8 = 15;
const CLIENT_KEY_EXCHANGE: u8 = 16;
const FINISHED: u8 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    Correct,
    Missing,
    /// A well-formed CertificateVerify signed with a key that is not the certificate's.
    WrongKey,
}

/// TLS 1.2 PRF with SHA-256 (RFC 5246 §5).
fn prf(secret: &[u8], label: &str, seed: &[u8], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let label_seed = [label.as_bytes(), seed].concat();
    let mut a = hmac::sign(&key, &label_seed).as_ref().to_vec();
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&a);
        ctx.update(&label_seed);
        out.extend_from_slice(ctx.sign().as_ref());
        a = hmac::sign(&key, &a).as_ref().to_vec();
    }
    out.truncate(len);
    out
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

fn read_u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A DTLS record: type, version, epoch, 48-bit sequence number, length, fragment.
fn record(typ: u8, epoch: u16, seq: u64, fragment: &[u8]) -> Vec<u8> {
    let mut r = vec![typ, DTLS12[0], DTLS12[1]];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
    r.extend_from_slice(fragment);
    r
}

/// Additional data of an AEAD record (RFC 5246 §6.2.3.3 with the DTLS epoch and sequence).
fn aad(epoch: u16, seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..2].copy_from_slice(&epoch.to_be_bytes());
    a[2..8].copy_from_slice(&seq.to_be_bytes()[2..]);
    a[8] = typ;
    a[9..11].copy_from_slice(&DTLS12);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

fn gcm(key: &[u8]) -> aead::LessSafeKey {
    aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, key).expect("16-byte key"))
}

fn nonce(iv: &[u8], explicit: &[u8]) -> aead::Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(iv);
    n[4..].copy_from_slice(explicit);
    aead::Nonce::assume_unique_for_key(n)
}

/// What came back from the bridge in some datagrams.
#[derive(Default)]
pub(crate) struct Received {
    /// Plaintext handshake messages (header and body), in order.
    handshakes: Vec<Vec<u8>>,
    pub(crate) change_cipher_spec: bool,
    /// Plaintext alert records (level, description).
    alerts: Vec<(u8, u8)>,
    /// Decrypted epoch-1 handshake messages.
    encrypted_handshakes: Vec<Vec<u8>>,
}

struct Keys {
    client_key: aead::LessSafeKey,
    server_key: aead::LessSafeKey,
    client_iv: Vec<u8>,
    server_iv: Vec<u8>,
}

/// The hand-built client's state.
pub(crate) struct TestClient {
    rng: SystemRandom,
    random: [u8; 32],
    server_random: [u8; 32],
    cert_der: Vec<u8>,
    key: signature::EcdsaKeyPair,
    /// Handshake messages since the ClientHello with the cookie (RFC 6347 §4.2.6).
    transcript: Vec<u8>,
    msg_seq: u16,
    record_seq: u64,
    master: Vec<u8>,
    keys: Option<Keys>,
}

impl TestClient {
    fn new(cert_der: Vec<u8>, pkcs8: &[u8]) -> Self {
        let key = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .expect("the certificate's P-256 key");
        let mut random = [0u8; 32];
        for (i, b) in random.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5A;
        }
        Self {
            rng: SystemRandom::new(),
            random,
            server_random: [0; 32],
            cert_der,
            key,
            transcript: Vec::new(),
            msg_seq: 0,
            record_seq: 0,
            master: Vec::new(),
            keys: None,
        }
    }

    /// One unfragmented handshake message, added to the transcript.
    fn message(&mut self, typ: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![typ];
        m.extend_from_slice(&u24(body.len()));
        m.extend_from_slice(&self.msg_seq.to_be_bytes());
        m.extend_from_slice(&u24(0));
        m.extend_from_slice(&u24(body.len()));
        m.extend_from_slice(body);
        self.msg_seq += 1;
        self.transcript.extend_from_slice(&m);
        m
    }

    fn plain_record(&mut self, typ: u8, fragment: &[u8]) -> Vec<u8> {
        let r = record(typ, 0, self.record_seq, fragment);
        self.record_seq += 1;
        r
    }

    /// Flight 1 (empty cookie) or 3: a ClientHello offering only what the bridge accepts.
    fn client_hello(&mut self, cookie: &[u8]) -> Vec<u8> {
        let mut b = DTLS12.to_vec();
        b.extend_from_slice(&self.random);
        b.push(0); // session id
        b.push(cookie.len() as u8);
        b.extend_from_slice(cookie);
        b.extend_from_slice(&[0, 2]);
        b.extend_from_slice(&SUITE.to_be_bytes());
        b.extend_from_slice(&[1, 0]); // compression: null
        let ext: &[u8] = &[
            0x00, 0x0a, 0, 4, 0, 2, 0x00, 0x17, // supported_groups: secp256r1
            0x00, 0x0b, 0, 2, 1, 0, // ec_point_formats: uncompressed
            0x00, 0x0d, 0, 4, 0, 2, 0x04, 0x03, // signature_algorithms: ecdsa_secp256r1_sha256
            0x00, 0x0e, 0, 5, 0, 2, 0x00, 0x07, 0, // use_srtp: SRTP_AEAD_AES_128_GCM, no MKI
            0x00, 0x17, 0, 0, // extended_master_secret
        ];
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend_from_slice(ext);
        // The first ClientHello and the HelloVerifyRequest are not part of the transcript.
        self.transcript.clear();
        let m = self.message(CLIENT_HELLO, &b);
        self.plain_record(HANDSHAKE, &m)
    }

    /// Records in `datagrams`; epoch-1 records are decrypted once the keys exist.
    pub(crate) fn receive(&self, datagrams: &[BytesMut]) -> Received {
        let mut got = Received::default();
        for d in datagrams {
            let mut rest: &[u8] = d;
            while rest.len() >= 13 {
                let (typ, epoch) = (rest[0], u16::from_be_bytes([rest[3], rest[4]]));
                let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
                assert!(rest.len() >= 13 + len, "record past the datagram");
                let (header, fragment) = (&rest[..13], &rest[13..13 + len]);
                rest = &rest[13 + len..];
                match (typ, epoch) {
                    (CHANGE_CIPHER_SPEC, 0) => got.change_cipher_spec = true,
                    (ALERT, 0) if fragment.len() == 2 => got.alerts.push((fragment[0], fragment[1])),
                    (HANDSHAKE, 0) => {
                        let mut msgs = fragment;
                        while msgs.len() >= 12 {
                            let (total, off, flen) =
                                (read_u24(&msgs[1..4]), read_u24(&msgs[6..9]), read_u24(&msgs[9..12]));
                            assert!(
                                off == 0 && flen == total,
                                "the test client does not reassemble fragments"
                            );
                            got.handshakes.push(msgs[..12 + flen].to_vec());
                            msgs = &msgs[12 + flen..];
                        }
                    }
                    (HANDSHAKE, 1) => {
                        let keys = self.keys.as_ref().expect("epoch 1 after the keys");
                        let seq = u64::from_be_bytes([
                            0, 0, header[5], header[6], header[7], header[8], header[9], header[10],
                        ]);
                        let mut body = fragment[8..].to_vec();
                        let plain_len = body.len() - 16;
                        let plain = keys
                            .server_key
                            .open_in_place(
                                nonce(&keys.server_iv, &fragment[..8]),
                                aead::Aad::from(aad(1, seq, HANDSHAKE, plain_len)),
                                &mut body,
                            )
                            .expect("the bridge's epoch-1 record decrypts with the derived key");
                        got.encrypted_handshakes.push(plain.to_vec());
                    }
                    _ => {}
                }
            }
        }
        got
    }

    /// Reads flight 4 (ServerHello .. ServerHelloDone); returns the server's ECDH public key.
    fn on_server_flight(&mut self, got: &Received) -> Vec<u8> {
        let types: Vec<u8> = got.handshakes.iter().map(|m| m[0]).collect();
        assert_eq!(
            types,
            [
                SERVER_HELLO,
                CERTIFICATE,
                SERVER_KEY_EXCHANGE,
                CERTIFICATE_REQUEST,
                SERVER_HELLO_DONE
            ],
            "flight 4 with a CertificateRequest"
        );
        let mut server_pub = Vec::new();
        for m in &got.handshakes {
            self.transcript.extend_from_slice(m);
            let body = &m[12..];
            match m[0] {
                SERVER_HELLO => {
                    self.server_random.copy_from_slice(&body[2..34]);
                    let sid = usize::from(body[34]);
                    let suite = u16::from_be_bytes([body[35 + sid], body[36 + sid]]);
                    assert_eq!(suite, SUITE);
                }
                SERVER_KEY_EXCHANGE => {
                    assert_eq!(&body[..3], &[3, 0x00, 0x17], "named curve secp256r1");
                    server_pub = body[4..4 + usize::from(body[3])].to_vec();
                }
                _ => {}
            }
        }
        server_pub
    }

    /// Flight 5: Certificate, ClientKeyExchange, the CertificateVerify per `verify`,
    /// ChangeCipherSpec and the encrypted Finished, in one datagram.
    fn flight5(&mut self, server_pub: &[u8], verify: Verify) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cert = u24(self.cert_der.len() + 3).to_vec();
        cert.extend_from_slice(&u24(self.cert_der.len()));
        cert.extend_from_slice(&self.cert_der);
        let m = self.message(CERTIFICATE, &cert);
        out.extend(self.plain_record(HANDSHAKE, &m));

        let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &self.rng).expect("ECDH key");
        let my_pub = eph.compute_public_key().expect("public key").as_ref().to_vec();
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, server_pub);
        let pms = agreement::agree_ephemeral(eph, peer, "bad server key", |k| Ok(k.to_vec())).expect("ECDH");
        let mut cke = vec![my_pub.len() as u8];
        cke.extend_from_slice(&my_pub);
        let m = self.message(CLIENT_KEY_EXCHANGE, &cke);
        out.extend(self.plain_record(HANDSHAKE, &m));

        // Extended master secret (RFC 7627): the session hash runs through ClientKeyExchange.
        let session_hash = digest::digest(&digest::SHA256, &self.transcript);
        self.master = prf(&pms, "extended master secret", session_hash.as_ref(), 48);

        if verify != Verify::Missing {
            let other;
            let signer = if verify == Verify::WrongKey {
                let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
                let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &self.rng).expect("key");
                other = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("key");
                &other
            } else {
                &self.key
            };
            let sig = signer.sign(&self.rng, &self.transcript).expect("ECDSA signature");
            let mut cv = vec![0x04, 0x03];
            cv.extend_from_slice(&(sig.as_ref().len() as u16).to_be_bytes());
            cv.extend_from_slice(sig.as_ref());
            let m = self.message(CERTIFICATE_VERIFY, &cv);
            out.extend(self.plain_record(HANDSHAKE, &m));
        }
        out.extend(self.plain_record(CHANGE_CIPHER_SPEC, &[1]));

        let mut seed = self.server_random.to_vec();
        seed.extend_from_slice(&self.random);
        let kb = prf(&self.master, "key expansion", &seed, 40);
        let keys = Keys {
            client_key: gcm(&kb[..16]),
            server_key: gcm(&kb[16..32]),
            client_iv: kb[32..36].to_vec(),
            server_iv: kb[36..40].to_vec(),
        };
        let hash = digest::digest(&digest::SHA256, &self.transcript);
        let verify_data = prf(&self.master, "client finished", hash.as_ref(), 12);
        let mut fin = self.message(FINISHED, &verify_data);
        // Epoch 1, record sequence 0; the explicit nonce is the epoch and sequence.
        let explicit = [0u8, 1, 0, 0, 0, 0, 0, 0];
        let ad = aad(1, 0, HANDSHAKE, fin.len());
        keys.client_key
            .seal_in_place_append_tag(nonce(&keys.client_iv, &explicit), aead::Aad::from(ad), &mut fin)
            .expect("seal");
        out.extend(record(HANDSHAKE, 1, 0, &[&explicit[..], &fin].concat()));
        self.keys = Some(keys);
        out
    }

    /// The server's Finished, checked against the transcript (which has the client's).
    pub(crate) fn server_finished_ok(&self, got: &Received) -> bool {
        let hash = digest::digest(&digest::SHA256, &self.transcript);
        let want = prf(&self.master, "server finished", hash.as_ref(), 12);
        got.encrypted_handshakes
            .iter()
            .any(|m| m[0] == FINISHED && m[12..] == want[..])
    }

    /// SRTP keys as the client derives them (RFC 5764 §4.2), as a session.
    fn srtp(&self) -> Box<dyn crate::srtp::Srtp> {
        let profile = Profile::AeadAes128Gcm;
        let mut seed = self.random.to_vec();
        seed.extend_from_slice(&self.server_random);
        let km = prf(
            &self.master,
            "EXTRACTOR-dtls_srtp",
            &seed,
            profile.keying_material_len(),
        );
        let keys = split_keying_material(&km, profile, true).expect("keying material length");
        new_session(profile, &keys).expect("client SRTP session")
    }
}

struct Outcome {
    events: Vec<DtlsEvent>,
    connected: bool,
    failed: bool,
    /// The bridge sent its ChangeCipherSpec (it accepted flight 5).
    bridge_ccs: bool,
    server_finished_ok: bool,
    alerts: Vec<(u8, u8)>,
    slots_in_flight: usize,
    client: TestClient,
}

fn drain(d: &mut Dtls) -> Vec<BytesMut> {
    std::iter::from_fn(|| d.poll_transmit()).collect()
}

/// A client certificate (self-signed ECDSA P-256), its PKCS#8 key and its fingerprint.
pub(crate) struct ClientCert {
    der: Vec<u8>,
    pkcs8: Vec<u8>,
    pub(crate) fingerprint: Fingerprint,
}

pub(crate) fn client_cert() -> ClientCert {
    let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
    let cert = LocalCert::generate(&provider).expect("client certificate");
    let der = cert.cert.certificate.first().expect("one DER").as_ref().to_vec();
    let pkcs8 = cert.cert.private_key.signing_key.to_pkcs8_der().expect("export");
    let pkcs8 = pkcs8.expect("aws-lc-rs keys are exportable").as_ref().to_vec();
    let fingerprint = Fingerprint {
        hash: "sha-256".into(),
        value: digest::digest(&digest::SHA256, &der).as_ref().to_vec(),
        setup: None,
    };
    ClientCert {
        der,
        pkcs8,
        fingerprint,
    }
}

/// Flights 1, 3 and 5 of the hand-built client through `exchange` (one datagram to the
/// bridge, what the bridge sent back). Returns the client, its flight 5 (to retransmit) and
/// what came back after it.
pub(crate) fn run_client(
    verify: Verify,
    cert: &ClientCert,
    mut exchange: impl FnMut(Vec<u8>) -> Vec<BytesMut>,
) -> (TestClient, Vec<u8>, Received) {
    let mut client = TestClient::new(cert.der.clone(), &cert.pkcs8);
    let hello = client.client_hello(&[]);
    let mut got = client.receive(&exchange(hello));
    if got.handshakes.first().map(|m| m[0]) == Some(HELLO_VERIFY_REQUEST) {
        let body = &got.handshakes[0][12..];
        let cookie = body[3..3 + usize::from(body[2])].to_vec();
        let hello = client.client_hello(&cookie);
        got = client.receive(&exchange(hello));
    }
    let server_pub = client.on_server_flight(&got);
    let flight5 = client.flight5(&server_pub, verify);
    let got = client.receive(&exchange(flight5.clone()));
    (client, flight5, got)
}

/// One handshake of the hand-built client against a bridge `Dtls` (server role) expecting
/// the client certificate's fingerprint; without a Finished from the bridge, time runs on
/// past [`HANDSHAKE_TIMEOUT`] with the client retransmitting flight 5 every second.
fn handshake(verify: Verify) -> Outcome {
    let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
    let bridge_cert = LocalCert::generate(&provider).expect("bridge certificate");
    let cert = client_cert();
    let fingerprints = [cert.fingerprint.clone()];
    let slots = HandshakeSlots::new(4);
    let ctx = DtlsContext {
        provider: &provider,
        cert: &bridge_cert,
        fingerprints: &fingerprints,
        allowed: &[SrtpProfile::AeadAes128Gcm],
        slots: &slots,
    };
    let local: SocketAddr = "10.0.0.1:10000".parse().expect("literal");
    let peer: SocketAddr = "10.0.0.2:5000".parse().expect("literal");
    let mut bridge = Dtls::new(Role::Server, local);
    let mut events = Vec::new();
    let t0 = Instant::now();
    let (client, flight5, mut got) = run_client(verify, &cert, |d| {
        let r = bridge.handle_datagram(t0, peer, BytesMut::from(&d[..]), &ctx, &mut events);
        assert!(r.is_ok() || bridge.is_failed(), "{r:?}");
        drain(&mut bridge)
    });
    let mut t = t0;
    while !bridge.is_connected() && !bridge.is_failed() && t < t0 + HANDSHAKE_TIMEOUT + Duration::from_secs(2) {
        t += Duration::from_secs(1);
        bridge.handle_timeout(t, &mut events);
        let _ = bridge.handle_datagram(t, peer, BytesMut::from(&flight5[..]), &ctx, &mut events);
        let more = client.receive(&drain(&mut bridge));
        got.change_cipher_spec |= more.change_cipher_spec;
        got.alerts.extend(more.alerts);
        got.encrypted_handshakes.extend(more.encrypted_handshakes);
    }
    Outcome {
        connected: bridge.is_connected(),
        failed: bridge.is_failed(),
        bridge_ccs: got.change_cipher_spec,
        server_finished_ok: client.server_finished_ok(&got),
        alerts: got.alerts,
        slots_in_flight: slots.in_flight(),
        events,
        client,
    }
}

fn failures(events: &[DtlsEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            DtlsEvent::Failed(r) => Some(r.as_str()),
            _ => None,
        })
        .collect()
}

fn srtp_of(events: &mut Vec<DtlsEvent>) -> Option<Box<dyn crate::srtp::Srtp>> {
    events.drain(..).find_map(|e| match e {
        DtlsEvent::Connected { srtp, profile } => {
            assert_eq!(profile, Profile::AeadAes128Gcm);
            Some(srtp)
        }
        _ => None,
    })
}

/// The control: with a correct CertificateVerify the hand-built client completes the
/// handshake, the bridge's Finished verifies against the client's transcript, and an RTP
/// packet the client protects with the SRTP keys it derives itself is accepted by the
/// bridge's session (so both derived the same keys).
#[test]
fn dtls_client_with_certificate_verify_connects() {
    let mut o = handshake(Verify::Correct);
    assert!(o.connected && !o.failed, "control connects: {:?}", failures(&o.events));
    assert!(o.bridge_ccs && o.server_finished_ok, "the bridge's Finished verifies");
    assert_eq!(o.slots_in_flight, 0, "a connected handshake frees its slot");
    let mut bridge_srtp = srtp_of(&mut o.events).expect("SRTP keys");
    let rtp = [
        0x80u8, 96, 0, 1, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78, 0xDE, 0xAD, 0xBE, 0xEF,
    ];
    let protected = o.client.srtp().protect_rtp(&rtp).expect("protect");
    assert_ne!(&protected[12..16], &rtp[12..]);
    let plain = bridge_srtp
        .unprotect_rtp(&protected)
        .expect("the bridge's keys match the client's");
    assert_eq!(&plain[..], &rtp[..]);
}

/// Case 19: the same client without CertificateVerify never gets the bridge's
/// ChangeCipherSpec/Finished and no SRTP keys; rtc-dtls keeps waiting for the missing
/// message (it ignores the Finished), so the handshake fails at [`HANDSHAKE_TIMEOUT`], which
/// the shard counts in `dtls_failures` (every `DtlsEvent::Failed`), and the slot is freed.
#[test]
fn dtls_client_certificate_without_certificate_verify_fails() {
    let o = handshake(Verify::Missing);
    assert!(!o.connected, "no CertificateVerify, no connection");
    assert!(
        !o.events.iter().any(|e| matches!(e, DtlsEvent::Connected { .. })),
        "no SRTP keys"
    );
    assert!(
        !o.bridge_ccs && !o.server_finished_ok,
        "the bridge never finished its side"
    );
    assert!(o.failed);
    assert_eq!(failures(&o.events), ["handshake timeout"]);
    assert_eq!(o.slots_in_flight, 0);
}

/// A CertificateVerify signed with a key other than the certificate's fails the handshake at
/// once with a fatal bad_certificate alert, and no SRTP keys.
#[test]
fn dtls_client_certificate_verify_with_wrong_key_fails() {
    let o = handshake(Verify::WrongKey);
    assert!(!o.connected && o.failed, "wrong signature, no connection");
    assert!(
        !o.events.iter().any(|e| matches!(e, DtlsEvent::Connected { .. })),
        "no SRTP keys"
    );
    assert!(!o.bridge_ccs && !o.server_finished_ok);
    assert_eq!(failures(&o.events).len(), 1);
    assert!(
        !failures(&o.events).contains(&"handshake timeout"),
        "{:?}",
        failures(&o.events)
    );
    assert!(o.alerts.contains(&(2, 42)), "fatal bad_certificate: {:?}", o.alerts);
    assert_eq!(o.slots_in_flight, 0);
}
