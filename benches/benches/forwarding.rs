//! The forwarding path through a real `Shard`, in memory: one 1,200-byte SRTP video datagram
//! from the sender (made by its str0m client, outside the timing), `handle_datagram`, and
//! draining `poll_transmit` (N SRTP-protected datagrams out). DTLS-SRTP is really negotiated
//! with every client by `benches::Conference::new`.
//!
//! Reported time is per input packet; the throughput line (elements/s) counts forwarded
//! packets, so time per forwarded packet = time / N.
//!
//! Run: `cargo bench -p benches --bench forwarding -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use benches::Conference;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu::config::SrtpProfile;

/// Packets generated per untimed batch (str0m's sender is not what is measured).
const BATCH: u64 = 256;

fn run(conf: &mut Conference, iters: u64) -> Duration {
    let n = conf.receivers();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        // expect: setup proved the sender works; a failure here is a harness bug.
        let pkts = conf.make_video_packets(k as usize).expect("sender packets");
        let mut out = 0;
        let t = Instant::now();
        for p in pkts {
            out += conf.forward(p);
        }
        total += t.elapsed();
        assert_eq!(out, k as usize * n, "not every packet was forwarded to every receiver");
        left -= k;
    }
    total
}

fn forwarding(c: &mut Criterion) {
    let cases: &[(&str, SrtpProfile, &[usize])] = &[
        ("aead_aes128_gcm", SrtpProfile::AeadAes128Gcm, &[1, 4, 10, 100]),
        ("aes128_cm_sha1_80", SrtpProfile::Aes128CmHmacSha1_80, &[10]),
    ];
    for (name, profile, ns) in cases {
        let mut g = c.benchmark_group(format!("forward_1200B_{name}"));
        for &n in ns.iter() {
            // expect: a setup failure means the bench would measure nothing.
            let mut conf = Conference::new(n, *profile).expect("conference setup");
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| run(&mut conf, iters))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
