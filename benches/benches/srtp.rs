//! SRTP protect/unprotect of one 1,200-byte RTP packet: rtc-srtp vs the in-place
//! implementation, for both profiles, and a raw aws-lc-rs AES-128-GCM seal of the same bytes
//! as the floor. Run: `cargo bench -p benches --bench srtp -- --warm-up-time 1 --measurement-time 3`.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sfu::srtp::{split_keying_material, InPlaceSrtp, Profile, RtcSrtp, Srtp};
use std::hint::black_box;

const LEN: usize = 1200;

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; LEN];
    p[..12].copy_from_slice(&[0x80, 111, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn keys(profile: Profile) -> Vec<u8> {
    (0..profile.keying_material_len() as u8).collect()
}

fn bench(c: &mut Criterion) {
    for (name, profile) in [
        ("gcm128", Profile::AeadAes128Gcm),
        ("cm_sha1_80", Profile::Aes128CmHmacSha1_80),
    ] {
        let km = keys(profile);
        let client = split_keying_material(&km, profile, true).expect("length matches");
        let server = split_keying_material(&km, profile, false).expect("length matches");
        let mut g = c.benchmark_group(format!("srtp_{name}"));

        let mut rtc = RtcSrtp::new(profile, &client).expect("keys");
        let mut seq = 0u16;
        g.bench_function("protect/rtc-srtp", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let mut p = packet(0);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(rtc.protect_rtp(&p).expect("protect"))
            })
        });

        let mut ours = InPlaceSrtp::new(profile, &client).expect("keys");
        let plain = packet(0);
        let mut buf = vec![0u8; LEN + 16];
        let mut seq = 0u16;
        g.bench_function("protect/in-place", |b| {
            b.iter(|| {
                // Refill the buffer as the shard would copy the plain packet per receiver.
                seq = seq.wrapping_add(1);
                buf[..LEN].copy_from_slice(&plain);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(ours.protect_rtp(&mut buf, LEN).expect("protect"))
            })
        });

        // Unprotect needs a fresh packet each time (replay protection): the setup, which
        // is not measured, protects the next sequence number with a separate sender.
        let mut sender = InPlaceSrtp::new(profile, &server).expect("keys");
        let mut rtc_rx = RtcSrtp::new(profile, &client).expect("keys");
        let mut seq = 0u16;
        g.bench_function("unprotect/rtc-srtp", |b| {
            b.iter_batched(
                || {
                    seq = seq.wrapping_add(1);
                    Srtp::protect_rtp(&mut sender, &packet(seq)).expect("protect")
                },
                |enc| black_box(rtc_rx.unprotect_rtp(&enc).expect("unprotect")),
                BatchSize::SmallInput,
            )
        });

        let mut sender = InPlaceSrtp::new(profile, &server).expect("keys");
        let mut ours_rx = InPlaceSrtp::new(profile, &client).expect("keys");
        let mut seq = 0u16;
        g.bench_function("unprotect/in-place", |b| {
            b.iter_batched(
                || {
                    seq = seq.wrapping_add(1);
                    Srtp::protect_rtp(&mut sender, &packet(seq)).expect("protect")
                },
                |mut enc: BytesMut| black_box(ours_rx.unprotect_rtp(&mut enc).expect("unprotect")),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    // The floor: AES-128-GCM over the same bytes, header as AAD, nothing else.
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("16-byte key"));
    let mut buf = packet(1);
    let mut n = 0u64;
    c.bench_function("srtp_gcm128/seal/raw-aws-lc-rs", |b| {
        b.iter(|| {
            n += 1;
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&n.to_be_bytes());
            let (head, body) = buf.split_at_mut(12);
            black_box(
                key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*head), body)
                    .expect("seal"),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
