//! Cross-tests of the in-place SRTP ([`InPlaceSrtp`]) against rtc-srtp ([`RtcSrtp`]) as the
//! independent implementation: each side's protect must unprotect on the other, for both
//! profiles, random packets, extension headers and sequence-number wrap (ROC increments).

use bytes::BytesMut;
use proptest::prelude::*;
use sfu::srtp::{split_keying_material, InPlaceSrtp, Profile, RtcSrtp, Srtp, SrtpError};

const PROFILES: [Profile; 3] = [
    Profile::AeadAes128Gcm,
    Profile::AeadAes256Gcm,
    Profile::Aes128CmHmacSha1_80,
];

/// (ours as client, rtc-srtp as server) sharing one keying material.
fn pair(profile: Profile, seed: u8) -> (InPlaceSrtp, RtcSrtp) {
    let km: Vec<u8> = (0..profile.keying_material_len())
        .map(|i| (i as u8).wrapping_mul(seed | 1))
        .collect();
    let c = split_keying_material(&km, profile, true).expect("length matches");
    let s = split_keying_material(&km, profile, false).expect("length matches");
    (
        InPlaceSrtp::new(profile, &c).expect("valid keys"),
        RtcSrtp::new(profile, &s).expect("valid keys"),
    )
}

fn rtp(seq: u16, ts: u32, ssrc: u32, csrcs: u8, ext_words: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80 | (csrcs & 0x0f), 111];
    if ext_words.is_some() {
        p[0] |= 0x10;
    }
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..u32::from(csrcs & 0x0f) {
        p.extend_from_slice(&(0x1000 + i).to_be_bytes());
    }
    if let Some(w) = ext_words {
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&w.to_be_bytes());
        for i in 0..w {
            // one-byte extension elements with id 1, len 3 (4 bytes each)
            p.extend_from_slice(&[0x12, i as u8, 0xaa, 0xbb]);
        }
    }
    p.extend_from_slice(payload);
    p
}

/// A sender report: 8-byte header, 20 bytes of sender info, `extra` words of body.
fn rtcp(ssrc: u32, extra: &[u8]) -> Vec<u8> {
    let body = 20 + extra.len() / 4 * 4;
    let mut p = vec![0x80, 200];
    p.extend_from_slice(&(((8 + body) / 4 - 1) as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20u8).map(|i| i.wrapping_mul(7)));
    p.extend_from_slice(&extra[..extra.len() / 4 * 4]);
    p
}

/// Both directions for one sequence of RTP packets.
fn check_rtp(profile: Profile, packets: &[Vec<u8>]) {
    let (mut ours, mut theirs) = pair(profile, 3);
    for p in packets {
        // ours -> rtc-srtp, through the in-place API with no spare capacity to start with.
        let mut buf = BytesMut::from(&p[..]);
        ours.protect_rtp_in_place(&mut buf).expect("protect");
        let back = theirs.unprotect_rtp(&buf).expect("rtc-srtp unprotects ours");
        assert_eq!(&back[..], &p[..]);
        // rtc-srtp -> ours, through the slice API.
        let enc = theirs.protect_rtp(p).expect("rtc-srtp protect");
        let mut buf = enc.to_vec();
        let n = ours.unprotect_rtp(&mut buf).expect("we unprotect rtc-srtp's");
        assert_eq!(&buf[..n], &p[..]);
        // A replay is refused by both.
        assert_eq!(Srtp::unprotect_rtp(&mut ours, &enc), Err(SrtpError::Replay));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rtp_interop(
        start in any::<u16>(),
        ts in any::<u32>(),
        ssrc in any::<u32>(),
        csrcs in 0u8..4,
        ext in proptest::option::of(0u16..4),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6),
    ) {
        let packets: Vec<_> = payloads
            .iter()
            .enumerate()
            .map(|(i, pl)| rtp(start.wrapping_add(i as u16), ts, ssrc, csrcs, ext, pl))
            .collect();
        for profile in PROFILES {
            check_rtp(profile, &packets);
        }
    }

    #[test]
    fn rtcp_interop(ssrc in any::<u32>(), bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6)) {
        for profile in PROFILES {
            let (mut ours, mut theirs) = pair(profile, 5);
            for b in &bodies {
                let p = rtcp(ssrc, b);
                let mut buf = BytesMut::from(&p[..]);
                ours.protect_rtcp_in_place(&mut buf).expect("protect");
                let back = theirs.unprotect_rtcp(&buf).expect("rtc-srtp unprotects ours");
                prop_assert_eq!(&back[..], &p[..]);
                let enc = theirs.protect_rtcp(&p).expect("rtc-srtp protect");
                let mut buf = BytesMut::from(&enc[..]);
                ours.unprotect_rtcp_in_place(&mut buf).expect("we unprotect rtc-srtp's");
                prop_assert_eq!(&buf[..], &p[..]);
                prop_assert_eq!(Srtp::unprotect_rtcp(&mut ours, &enc), Err(SrtpError::Replay));
            }
        }
    }

    /// Arbitrary bytes never panic and never authenticate.
    #[test]
    fn garbage_is_refused(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        for profile in PROFILES {
            let (mut ours, _) = pair(profile, 9);
            let mut b = data.clone();
            prop_assert!(ours.unprotect_rtp(&mut b).is_err());
            let mut b = data.clone();
            prop_assert!(ours.unprotect_rtcp(&mut b).is_err());
        }
    }
}

/// 70,000 consecutive packets: the sequence number wraps and the ROC must follow on both
/// sides (every packet is checked both ways; the payload is small to keep it quick).
#[test]
fn sequence_wrap() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let packets: Vec<_> = (0..70_000u32)
            .map(|i| rtp(0xfff0u16.wrapping_add(i as u16), i, 42, 0, Some(1), &i.to_be_bytes()))
            .collect();
        check_rtp(profile, &packets);
    }
}

/// Robustness case 25: a stream whose sequence number crosses 65535 → 0 three times (in steps
/// of 997, so each wrap is seen by the ROC estimation, RFC 3711 §3.3.1) decrypts with no
/// authentication failure in either direction: a wrong ROC guess fails authentication.
#[test]
fn roc_wraps_three_times_without_auth_failure() {
    for profile in PROFILES {
        let packets: Vec<_> = (0..200u32)
            .map(|i| {
                let seq = (0xfff0 + i * 997) as u16;
                rtp(seq, i * 3000, 77, 0, None, &i.to_be_bytes())
            })
            .collect();
        let wraps = packets
            .windows(2)
            .filter(|w| u16::from_be_bytes([w[1][2], w[1][3]]) < u16::from_be_bytes([w[0][2], w[0][3]]))
            .count();
        assert!(wraps >= 3, "{wraps} wraps");
        check_rtp(profile, &packets);
    }
}

/// Out-of-order delivery across the wrap: a late packet from the previous ROC still
/// decrypts, and anything older than the 128-packet window is refused.
#[test]
fn reorder_across_wrap() {
    for profile in PROFILES {
        let (mut ours, mut theirs) = pair(profile, 11);
        let enc: Vec<_> = (0..200u32)
            .map(|i| {
                let p = rtp(0xffc0u16.wrapping_add(i as u16), i, 7, 0, None, b"x");
                (p.clone(), theirs.protect_rtp(&p).expect("protect"))
            })
            .collect();
        for i in [0usize, 1, 100, 65, 64, 199] {
            let (plain, e) = &enc[i];
            let got = Srtp::unprotect_rtp(&mut ours, e).expect("inside the window");
            assert_eq!(&got[..], &plain[..], "packet {i}");
        }
        let too_old = Srtp::unprotect_rtp(&mut ours, &enc[2].1);
        assert_eq!(too_old, Err(SrtpError::Replay), "older than 128 packets");
    }
}

/// A flipped byte anywhere in tag or payload fails authentication, and the state is not
/// advanced (the genuine packet still goes through).
#[test]
fn tampering_is_refused() {
    for profile in PROFILES {
        let (mut ours, mut theirs) = pair(profile, 13);
        let p = rtp(100, 1, 9, 0, Some(2), &[5u8; 40]);
        let enc = theirs.protect_rtp(&p).expect("protect");
        for at in [enc.len() - 1, 20, 2] {
            let mut bad = enc.to_vec();
            bad[at] ^= 0x01;
            let r = ours.unprotect_rtp(&mut bad);
            assert!(
                matches!(r, Err(SrtpError::AuthFailed) | Err(SrtpError::Replay)),
                "byte {at}: {r:?}"
            );
        }
        assert_eq!(&Srtp::unprotect_rtp(&mut ours, &enc).expect("genuine")[..], &p[..]);

        let c = rtcp(9, &[1, 2, 3, 4]);
        let enc = theirs.protect_rtcp(&c).expect("protect rtcp");
        let mut bad = enc.to_vec();
        let last = bad.len() - 6;
        bad[last] ^= 0x80;
        assert_eq!(ours.unprotect_rtcp(&mut bad), Err(SrtpError::AuthFailed));
        assert_eq!(&Srtp::unprotect_rtcp(&mut ours, &enc).expect("genuine")[..], &c[..]);
    }
}
