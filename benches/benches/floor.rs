//! The machine's floor for forwarding: what one core can do at best per forwarded packet —
//! copy a 1,200-byte RTP packet into a send buffer, SRTP-protect it in place (AES-128-GCM), and
//! hand it to the kernel in batches of 32 with `sendmmsg(2)` toward a loopback socket. Palim's
//! forwarding cost per packet is compared with this (docs/benchmarks.md).
//!
//! Run: `cargo bench -p benches --bench floor -- --warm-up-time 1 --measurement-time 3`
// FFI to sendmmsg(2): no safe wrapper in the dependency set; bench code only.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sfu::srtp::{split_keying_material, InPlaceSrtp, Profile};

const LEN: usize = 1200;
const BATCH: usize = 32;

fn packet() -> Vec<u8> {
    let mut p = vec![0u8; LEN];
    p[..12].copy_from_slice(&[0x80, 100, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42]);
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn bench(c: &mut Criterion) {
    let profile = Profile::AeadAes128Gcm;
    let km: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
    let keys = split_keying_material(&km, profile, false).expect("length matches");
    let mut srtp = InPlaceSrtp::new(profile, &keys).expect("keys");
    // The receiving socket is never read: the kernel drops what overflows its buffer, which
    // costs the sender nothing more.
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    tx.set_nonblocking(true).expect("nonblocking");
    let plain = packet();
    let mut bufs = vec![vec![0u8; LEN + 16]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut seq = 0u16;

    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("copy_protect_sendmmsg_x32", |b| {
        b.iter(|| {
            for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                seq = seq.wrapping_add(1);
                buf[..LEN].copy_from_slice(&plain);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                *len = srtp.protect_rtp(buf, LEN).expect("protect");
            }
            let mut iov: Vec<libc::iovec> = bufs
                .iter_mut()
                .zip(lens.iter())
                .map(|(b, l)| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: *l,
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: an all-zero msghdr is valid (no name, no control data); the one
                    // iovec it points to outlives the sendmmsg call below.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_iov = v;
                    h.msg_iovlen = 1;
                    libc::mmsghdr { msg_hdr: h, msg_len: 0 }
                })
                .collect();
            // SAFETY: `msgs` holds BATCH valid headers whose buffers live until the call returns.
            let n = unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
