//! The fuzz targets. Each must return normally for every input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use sfu::codec::{av1_dd, h264, vp8, vp9};
use sfu::control::{Fingerprint, MediaKind, RemoteTransport, Setup, SourceDescription};
use sfu::dtls::client_hello::{parse_client_hello_srtp, Feed, HelloAssembler};
use sfu::dtls::LocalCert;
use sfu::srtp::InPlaceSrtp;
use sfu::srtp::{Profile, SessionKeys};
use sfu::wire::rtcp::{RtcpCompound, RtcpPacket};
use sfu::wire::rtp::{ExtensionForm, Extensions, RtpHeader};
use sfu::{ClockAnchor, Command, ConferenceId, EndpointId, SfuConfig, Shard, Ssrc};

/// RFC 7983 classification, STUN header and USERNAME scanning (both demux modules).
pub fn demux(data: &[u8]) {
    let _ = sfu::demux::classify(data);
    if let Some(t) = sfu::demux::stun_type(data) {
        assert!(data.len() >= 20, "STUN type from a short buffer");
        let _ = t;
    }
    if let Some(u) = sfu::demux::stun_local_ufrag(data) {
        assert!(u.len() < data.len());
    }
    let _ = sfu::wire::demux::classify(data);
    if let Some(u) = sfu::wire::demux::stun_username(data) {
        let _ = sfu::wire::demux::split_ice_username(u);
    }
    let _ = sfu::wire::demux::split_ice_username(data);
}

/// RTP header, CSRCs, both extension forms, typed extension readers, in-place writers.
pub fn rtp(data: &[u8]) {
    if let Some((&sel, rest)) = data.split_first() {
        // The raw extension iterator on arbitrary bytes, either form.
        let form = if sel & 1 == 0 {
            ExtensionForm::OneByte
        } else {
            ExtensionForm::TwoByte
        };
        for (id, v) in Extensions::new(form, rest) {
            let _ = (id, v.len());
        }
    }
    let Ok(h) = RtpHeader::parse(data) else { return };
    assert!(h.header_len() <= h.packet_len() && h.packet_len() <= data.len());
    let r = h.payload_range();
    assert!(r.start <= r.end && r.end <= data.len());
    let _ = h.payload(data);
    for i in 0..16 {
        let _ = h.csrc(data, i);
    }
    let _ = h.extension_profile(data);
    for (id, v) in h.extensions(data) {
        let _ = (id, v.len());
    }
    for id in 0..=255u8 {
        if let Some(rg) = h.extension_range(data, id) {
            assert!(rg.end <= data.len());
        }
        let _ = h.extension(data, id);
        let _ = h.audio_level(data, id);
        let _ = h.transport_cc_seq(data, id);
        let _ = h.abs_send_time(data, id);
    }
    let mut copy = data.to_vec();
    let mut h2 = h;
    let _ = h2.set_transport_cc_seq(&mut copy, 3, 0xABCD);
    let _ = h2.set_extension(&mut copy, 1, &[0x80]);
    h2.set_seq(&mut copy, 1);
    h2.set_timestamp(&mut copy, 2);
    h2.set_ssrc(&mut copy, Ssrc(3));
    h2.set_marker(&mut copy, true);
    h2.set_pt(&mut copy, 96);
    // Rewriting fixed fields keeps the packet parseable with the same layout.
    let h3 = RtpHeader::parse(&copy).expect("rewritten header parses");
    assert_eq!(h3.header_len(), h.header_len());
    assert_eq!(h3.seq(), 1);
}

/// Compound RTCP, every packet type and its iterators.
pub fn rtcp(data: &[u8]) {
    for item in RtcpCompound::new(data) {
        let Ok(p) = item else { continue };
        match p {
            RtcpPacket::SenderReport(sr) => {
                let _ = (sr.ssrc, sr.info.ntp_time);
                for b in sr.blocks {
                    let _ = b.cumulative_lost;
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                for b in rr.blocks {
                    let _ = b.jitter;
                }
            }
            RtcpPacket::Sdes(s) => {
                let _ = (s.chunk_count, s.body.len());
            }
            RtcpPacket::Bye(b) => {
                let _ = b.ssrcs.count();
                let _ = b.reason.map(|r| r.len());
            }
            RtcpPacket::App(a) => {
                let _ = a.data.len();
            }
            RtcpPacket::Nack(n) => {
                // At most 17 sequence numbers per FCI entry.
                let _ = n.lost_seqs().take(1 << 20).count();
            }
            RtcpPacket::TransportCc(t) => {
                // A status chunk may claim up to 8191 packets; the iterator must stay bounded.
                assert!(t.packets().take(1 << 20).count() < 1 << 17);
            }
            RtcpPacket::Pli(_) => {}
            RtcpPacket::Fir(f) => {
                let _ = f.entries.count();
            }
            RtcpPacket::Remb(r) => {
                let _ = (r.bitrate, r.ssrcs.count());
            }
            _ => {}
        }
    }
}

/// VP8 payload descriptor: parse, write back, rewrite.
pub fn vp8(data: &[u8]) {
    let Ok(d) = vp8::parse(data) else { return };
    let _ = (d.picture_id_modulus(), d.is_projectable());
    let mut out = [0u8; 64];
    if let Ok(n) = d.write(&mut out) {
        assert_eq!(n, d.encoded_len());
    }
    let mut copy = data.to_vec();
    let _ = vp8::rewrite(&mut copy, &d, 0x7FFF, 255);
}

/// VP9 payload descriptor (with scalability structure): parse, write, rewrite.
pub fn vp9(data: &[u8]) {
    let Ok(d) = vp9::parse(data) else { return };
    let _ = (d.sid(), d.tid(), d.is_keyframe(), d.is_switching_up_point());
    let _ = (d.is_spatial_switch_point(), d.picture_id_modulus());
    let mut out = vec![0u8; 2048];
    if let Ok(n) = d.write(&mut out) {
        assert_eq!(n, d.encoded_len());
    }
    let mut copy = data.to_vec();
    let _ = vp9::rewrite(&mut copy, &d, 0x7FFF, 255);
}

/// AV1 dependency descriptor: mandatory fields, full parse, parse with the structure a
/// previous packet attached (first byte splits the input in two), and write-back.
pub fn av1_dd(data: &[u8]) {
    let _ = av1_dd::parse_mandatory(data);
    let (first, second) = match data.split_first() {
        Some((&k, rest)) => rest.split_at(usize::from(k).min(rest.len())),
        None => (data, &[][..]),
    };
    let structure = av1_dd::parse(first, None).ok().and_then(|d| d.attached_structure);
    for input in [first, second, data] {
        let Ok(d) = av1_dd::parse(input, structure.as_ref()) else {
            continue;
        };
        let _ = (d.present_decode_targets(), d.effective_active_decode_targets(u32::MAX));
        for dt in 0..40 {
            let _ = d.dti(dt);
        }
        if let Some(s) = d.structure(structure.as_ref()) {
            let _ = s.max_spatial_id();
            let _ = s.decode_target_layers().count();
            for sid in 0..8 {
                let _ = s.resolution(sid);
                for tid in 0..8 {
                    let _ = s.decode_target_for(sid, tid);
                }
            }
        }
        let mut out = [0u8; 1024];
        let _ = av1_dd::write(&d, structure.as_ref(), &mut out);
    }
}

/// H.264 keyframe detection (single NAL, STAP-A, FU-A).
pub fn h264(data: &[u8]) {
    let _ = h264::is_keyframe(data);
}

/// DTLS ClientHello reassembly across datagrams (first byte: number of split points).
pub fn client_hello(data: &[u8]) {
    let _ = parse_client_hello_srtp(data);
    let mut a = HelloAssembler::default();
    let mut rest = data;
    // Split into datagrams at 0xFF 0xFE markers, so fragments of one hello can be fed apart.
    while !rest.is_empty() {
        let cut = rest.windows(2).position(|w| w == [0xFF, 0xFE]).unwrap_or(rest.len());
        let (d, r) = rest.split_at(cut);
        rest = r.get(2..).unwrap_or(&[]);
        match a.feed(d) {
            Feed::Complete(p) => assert!(p.len() <= 1 << 15),
            Feed::Incomplete | Feed::Malformed => {}
        }
    }
}

fn profile_of(b: u8) -> Profile {
    match b % 3 {
        0 => Profile::AeadAes128Gcm,
        1 => Profile::AeadAes256Gcm,
        _ => Profile::Aes128CmHmacSha1_80,
    }
}

/// SRTP/SRTCP unprotect with keys taken from the input, on the rest of the input; and a
/// protect/unprotect round trip between mirrored sessions (the oracle: same plaintext back,
/// a replay of the same packet refused, a flipped bit refused).
pub fn srtp(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let profile = profile_of(sel);
    let kl = profile.key_len() + profile.salt_len();
    if rest.len() < kl {
        return;
    }
    let (km, body) = rest.split_at(kl);
    let (key, salt) = km.split_at(profile.key_len());
    let keys = SessionKeys {
        local_key: key,
        local_salt: salt,
        remote_key: key,
        remote_salt: salt,
    };
    let Ok(mut s) = InPlaceSrtp::new(profile, &keys) else {
        panic!("keys of the right length refused");
    };
    // Random ciphertext: must be refused or accepted without panicking.
    let mut buf = body.to_vec();
    let _ = s.unprotect_rtp(&mut buf);
    let mut buf = body.to_vec();
    let _ = s.unprotect_rtcp(&mut buf);

    // Round trip when the body parses as RTP / RTCP.
    let (mut tx, mut rx) = match (InPlaceSrtp::new(profile, &keys), InPlaceSrtp::new(profile, &keys)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => panic!("keys of the right length refused"),
    };
    if sfu::demux::classify(body) == sfu::demux::Kind::Rtp && RtpHeader::parse(body).is_ok() {
        let mut buf = body.to_vec();
        buf.resize(body.len() + tx.rtp_overhead(), 0);
        if let Ok(n) = tx.protect_rtp(&mut buf, body.len()) {
            buf.truncate(n);
            let sealed = buf.clone();
            let m = rx.unprotect_rtp(&mut buf).expect("round trip unprotects");
            assert_eq!(&buf[..m], body, "round trip changed the packet");
            let mut again = sealed.clone();
            assert!(rx.unprotect_rtp(&mut again).is_err(), "replay accepted");
            let mut forged = sealed;
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(rx.unprotect_rtp(&mut forged).is_err(), "forged tag accepted");
        }
    }
    // protect_rtcp does not check the version (it only sees the bridge's own RTCP); unprotect does.
    if body.len() >= 8 && body[0] >> 6 == 2 && (192..=223).contains(&body[1]) {
        let mut buf = body.to_vec();
        buf.resize(body.len() + tx.rtcp_overhead(), 0);
        if let Ok(n) = tx.protect_rtcp(&mut buf, body.len()) {
            buf.truncate(n);
            let sealed = buf.clone();
            let m = rx.unprotect_rtcp(&mut buf).expect("round trip unprotects");
            assert_eq!(&buf[..m], body, "round trip changed the packet");
            let mut again = sealed;
            assert!(rx.unprotect_rtcp(&mut again).is_err(), "SRTCP replay accepted");
        }
    }
}

/// Bridge-channel JSON (any UTF-8, lossily converted).
pub fn bridge_channel(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sfu::bridge_channel::parse(&text);
}

// ---------------------------------------------------------------------------------------------
// Whole shard.

pub(crate) fn cert() -> &'static (Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>, LocalCert) {
    static CERT: OnceLock<(Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>, LocalCert)> = OnceLock::new();
    CERT.get_or_init(|| {
        // Invariant: the aws-lc-rs provider exists and can make a P-256 certificate.
        let p = rtc_dtls::crypto_provider::default_provider().expect("crypto provider");
        let c = LocalCert::generate(&p).expect("certificate");
        (p, c)
    })
}

/// Limits of the fuzzed shard, small so that they are reached.
pub const SHARD_MAX_CONFERENCES: usize = 3;
pub const SHARD_MAX_ENDPOINTS: usize = 3;
pub const SHARD_MAX_SSRCS: usize = 6;
pub(crate) const REMOTE_UFRAG: &str = "fzuf";
pub(crate) const REMOTE_PWD: &str = "fuzzpasswordfuzzpassword";

pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);
impl Cursor<'_> {
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&b, r) = self.0.split_first()?;
        self.0 = r;
        Some(b)
    }
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

pub(crate) fn push_attr(m: &mut Vec<u8>, t: u16, v: &[u8]) {
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&(v.len() as u16).to_be_bytes());
    m.extend_from_slice(v);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// A STUN Binding request from the client with valid MESSAGE-INTEGRITY (keyed with the
/// bridge's password) and FINGERPRINT, so ICE validates the source address. With
/// `use_candidate` (which a controlled agent must not send) the bridge refuses it.
pub fn stun_binding(bridge_ufrag: &str, bridge_pwd: &str, txid: [u8; 12], use_candidate: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&txid);
    push_attr(&mut m, 0x0006, format!("{bridge_ufrag}:{REMOTE_UFRAG}").as_bytes());
    push_attr(&mut m, 0x0024, &0x6E00_1EFFu32.to_be_bytes());
    push_attr(&mut m, 0x8029, &7u64.to_be_bytes());
    if use_candidate {
        push_attr(&mut m, 0x0025, &[]);
    }
    let len_with_mi = (m.len() - 20 + 24) as u16;
    m[2..4].copy_from_slice(&len_with_mi.to_be_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, bridge_pwd.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, &m);
    push_attr(&mut m, 0x0008, tag.as_ref());
    let len_with_fp = (m.len() - 20 + 8) as u16;
    m[2..4].copy_from_slice(&len_with_fp.to_be_bytes());
    let crc = crc32(&m) ^ 0x5354_554E;
    push_attr(&mut m, 0x8028, &crc.to_be_bytes());
    m
}

/// Random commands and datagrams to a whole [`Shard`] with small limits: never panics, the
/// limits hold, and output stays bounded by the input.
pub fn shard(data: &[u8]) {
    let (provider, cert) = cert();
    let mut config = SfuConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 10000,
        rng_seed: Some(1),
        ..SfuConfig::default()
    };
    config.limits.max_conferences = SHARD_MAX_CONFERENCES;
    config.limits.max_endpoints_per_conference = SHARD_MAX_ENDPOINTS;
    config.limits.max_ssrcs_per_endpoint = SHARD_MAX_SSRCS;
    let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
    let t0 = Instant::now();
    let clock = ClockAnchor {
        instant: t0,
        system: SystemTime::now(),
    };
    let mut shard = Shard::with_cert(config, local, clock, provider.clone(), cert.clone());
    let remotes: [SocketAddr; 4] = [
        "127.0.0.1:5001".parse().expect("literal"),
        "127.0.0.1:5002".parse().expect("literal"),
        "127.0.0.2:5001".parse().expect("literal"),
        "[::1]:5001".parse().expect("literal"),
    ];
    // (conf, ep, ufrag, pwd) of endpoints the shard created.
    let mut eps: Vec<(u8, u8, String, String)> = Vec::new();
    let mut now = t0;
    let mut cur = Cursor(data);
    let mut ops = 0usize;
    let mut sent_bytes = 0usize;
    let mut input_bytes = 0usize;
    while let Some(op) = cur.byte() {
        ops += 1;
        let arg = cur.byte().unwrap_or(0);
        let conf = ConferenceId(u32::from(arg % 4));
        let ep = EndpointId(u32::from((arg >> 2) % 4));
        match op % 16 {
            0 => {
                let _ = shard.handle_command(now, Command::CreateConference { conf });
            }
            1 => {
                let r = shard.handle_command(
                    now,
                    Command::CreateEndpoint {
                        conf,
                        ep,
                        ice_controlling: true,
                        sctp: arg & 0x40 != 0,
                        visitor: arg & 0x80 != 0,
                        name: format!("ep{}", ep.0),
                        ssrc_rewriting: arg & 0x20 != 0,
                    },
                );
                if let Ok(sfu::Reply::EndpointCreated(t)) = r {
                    eps.push((arg % 4, (arg >> 2) % 4, t.ufrag, t.pwd));
                }
            }
            2 => {
                let n = usize::from(cur.byte().unwrap_or(0) % 12);
                let ssrcs: Vec<Ssrc> = (0..n)
                    .map(|_| {
                        let b = cur.take(4);
                        let mut a = [0u8; 4];
                        a[..b.len()].copy_from_slice(b);
                        Ssrc(u32::from_be_bytes(a))
                    })
                    .collect();
                let sources = vec![SourceDescription {
                    kind: if arg & 0x80 != 0 {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    },
                    name: format!("s{arg}"),
                    ssrcs,
                    groups: vec![],
                    video_type: None,
                }];
                let _ = shard.handle_command(now, Command::SetSources { conf, ep, sources });
            }
            3 => {
                let _ = shard.handle_command(now, Command::ExpireEndpoint { conf, ep });
            }
            4 => {
                let _ = shard.handle_command(now, Command::ExpireConference { conf });
            }
            5 => {
                let n = usize::from(cur.byte().unwrap_or(0));
                let text = String::from_utf8_lossy(cur.take(n)).into_owned();
                let _ = shard.handle_command(now, Command::BridgeChannelMessage { conf, ep, text });
            }
            6 => {
                now += Duration::from_millis(u64::from(arg) * 20);
                shard.handle_timeout(now);
            }
            7 => {
                let transport = RemoteTransport {
                    ufrag: Some(REMOTE_UFRAG.into()),
                    pwd: Some(REMOTE_PWD.into()),
                    fingerprints: vec![Fingerprint {
                        hash: "sha-256".into(),
                        value: vec![arg; 32],
                        setup: Some(Setup::Active),
                    }],
                    candidates: vec![remotes[usize::from(arg >> 6)]],
                };
                let _ = shard.handle_command(now, Command::SetRemoteTransport { conf, ep, transport });
            }
            8 if !eps.is_empty() => {
                // An authenticated binding request for a known endpoint: validates the address.
                let (_, _, ufrag, pwd) = &eps[usize::from(arg) % eps.len()];
                let mut txid = [0u8; 12];
                let t = cur.take(12);
                txid[..t.len()].copy_from_slice(t);
                let m = stun_binding(ufrag, pwd, txid, arg & 1 != 0);
                let remote = remotes[usize::from(arg >> 6)];
                shard.handle_datagram(now, local, remote, BytesMut::from(&m[..]));
            }
            _ => {
                // A raw datagram, its first byte forced into one RFC 7983 class half the time.
                let n = usize::from(cur.byte().unwrap_or(0)) * 4 + usize::from(arg & 3);
                let mut d = BytesMut::from(cur.take(n));
                if let Some(b) = d.first_mut() {
                    match op % 4 {
                        0 => *b = 0x80 | (*b & 0x3F),
                        1 => *b = 20 + (*b % 44),
                        2 => *b &= 3,
                        _ => {}
                    }
                }
                input_bytes += d.len();
                let remote = remotes[usize::from(arg >> 6)];
                shard.handle_datagram(now, local, remote, d);
            }
        }
        while let Some(t) = shard.poll_transmit() {
            assert!(t.data.len() <= 65_535, "oversized datagram");
            sent_bytes += t.data.len();
            shard.recycle(t.data);
        }
        while shard.poll_event().is_some() {}
        let st = shard.stats();
        assert!(st.conferences <= SHARD_MAX_CONFERENCES, "conference limit broken");
        assert!(
            st.endpoints <= SHARD_MAX_CONFERENCES * SHARD_MAX_ENDPOINTS,
            "endpoint limit broken"
        );
    }
    // No amplification: what the shard sends is bounded by what it got plus a fixed amount
    // per operation (STUN responses, DTLS flights, reports on timers).
    assert!(
        sent_bytes <= 8 * input_bytes + 4096 * (ops + 1),
        "shard sent {sent_bytes} bytes for {input_bytes} input bytes in {ops} ops"
    );
    shard.shutdown(now);
    while let Some(t) = shard.poll_transmit() {
        shard.recycle(t.data);
    }
}
