//! The per-receiver allocator (media.md §3.2) over a 50-source conference: 50 simulcast
//! cameras of 3 encodings × 3 temporal layers in speech order, one receiver in tile view
//! (default 720p constraint), with an unlimited budget and with a 3 Mbps estimate that makes
//! the improve loop walk most layers. It runs on triggers (constraints, speakers, ±15 %
//! estimate changes) and at least once a second per receiver, never per packet.
//!
//! Run: `cargo bench -p benches --bench allocator -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sfu::allocation::{AllocConfig, AllocInput, Allocation, Allocator, Layer, ReceiverSettings, Source};
use sfu::bitrate::LayerId;
use sfu::bridge_channel::{parse, Incoming, VideoType};
use sfu::EndpointId;

fn sources(n: u32) -> Vec<Source<u32>> {
    (0..n)
        .map(|i| {
            let mut layers = Vec::new();
            for (e, (height, kbps)) in [(180, 150u64), (360, 500), (720, 1500)].into_iter().enumerate() {
                for t in 0..3u8 {
                    layers.push(Layer {
                        id: LayerId {
                            encoding: e as u8,
                            spatial: 0,
                            temporal: t,
                        },
                        height,
                        fps: 7.5 * f64::from(1u32 << t),
                        bitrate_bps: kbps * 1000 * (u64::from(t) + 2) / 4,
                        active: true,
                    });
                }
            }
            Source {
                name: i,
                owner: EndpointId(i + 1),
                video_type: VideoType::Camera,
                layers,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = AllocConfig::default();
    let mut settings = ReceiverSettings::new(&cfg);
    let Ok(Incoming::ReceiverVideoConstraints(m)) =
        parse(r#"{"colibriClass":"ReceiverVideoConstraints","lastN":-1,"defaultConstraints":{"maxHeight":720}}"#)
    else {
        panic!("the constraints message parses")
    };
    settings.apply(&m, &cfg, |_| None);
    let srcs = sources(50);
    let mut allocator = Allocator::new();
    let mut out = Allocation::default();
    let mut g = c.benchmark_group("allocator_50_sources");
    for (name, bwe) in [("unlimited", None), ("bwe_3mbps", Some(3_000_000u64))] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let input = AllocInput {
                    receiver: EndpointId(0),
                    settings: &settings,
                    sources: &srcs,
                    bandwidth_bps: bwe,
                };
                allocator.allocate(&input, &cfg, &mut out);
                black_box(out.forwarded.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
