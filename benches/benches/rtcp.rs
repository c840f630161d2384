//! `sfu::wire::rtcp`: parsing typical compound RTCP packets with `RtcpCompound` (every field
//! and every list entry is visited, since the views are lazy), and writing RR, PLI and
//! transport-cc feedback.
//!
//! Run: `cargo bench -p benches --bench rtcp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sfu::wire::rtcp::{
    write_nack, write_pli, write_remb, write_rr, write_sr, write_twcc, NackPair, ReportBlock, RtcpCompound, RtcpPacket,
    SenderInfo, TwccFeedback,
};
use sfu::Ssrc;

const SENDER: Ssrc = Ssrc(0x1111_1111);
const MEDIA: Ssrc = Ssrc(0x2000_0001);

fn block(i: u32) -> ReportBlock {
    ReportBlock {
        ssrc: Ssrc(0x2000_0000 + i),
        fraction_lost: 3,
        cumulative_lost: 17,
        ext_highest_seq: 0x0001_2345 + i,
        jitter: 42,
        lsr: 0x1234_5678,
        dlsr: 0x0001_0000,
    }
}

/// 100 transport-cc entries: mostly small deltas, a few losses and one large delta, as a
/// browser's feedback for ~100 ms of video looks.
fn twcc_entries() -> Vec<Option<i16>> {
    (0..100)
        .map(|i| match i {
            17 | 18 | 61 => None,
            40 => Some(400),
            _ => Some((i % 7) as i16 * 4),
        })
        .collect()
}

/// SDES with one CNAME chunk (RFC 3550 §6.5), written by hand: `sfu::wire` has no SDES writer.
fn write_sdes(buf: &mut [u8], ssrc: Ssrc, cname: &[u8]) -> usize {
    let items = 2 + cname.len() + 1; // CNAME item, END
    let chunk = (4 + items).div_ceil(4) * 4;
    let len = 4 + chunk;
    buf[..len].fill(0);
    buf[0] = 0x80 | 1;
    buf[1] = 202;
    buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    buf[8] = 1;
    buf[9] = cname.len() as u8;
    buf[10..10 + cname.len()].copy_from_slice(cname);
    len
}

/// The four compounds a bridge typically receives: SR+SDES, RR+REMB, TWCC(100), RR+NACK.
fn compounds() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    let mut b = vec![0u8; 1500];

    let info = SenderInfo {
        ntp_time: 0xE8F0_1234_5678_9ABC,
        rtp_time: 123_456,
        packet_count: 1000,
        octet_count: 1_000_000,
    };
    let mut n = write_sr(&mut b, SENDER, &info, &[block(1)]).expect("SR fits");
    n += write_sdes(&mut b[n..], SENDER, b"f3a6c9d2-8e71-4b0a-9c5d-2e1f0a7b6c3d");
    v.push(("sr_sdes", b[..n].to_vec()));

    let mut n = write_rr(&mut b, SENDER, &[block(1), block(2)]).expect("RR fits");
    n += write_remb(&mut b[n..], SENDER, 2_500_000, &[MEDIA, Ssrc(0x2000_0002)]).expect("REMB fits");
    v.push(("rr_remb", b[..n].to_vec()));

    let entries = twcc_entries();
    let fb = TwccFeedback {
        base_seq: 4000,
        reference_time: 1234,
        fb_pkt_count: 9,
        packets: &entries,
    };
    let n = write_twcc(&mut b, SENDER, MEDIA, &fb).expect("TWCC fits");
    v.push(("twcc_100", b[..n].to_vec()));

    let mut n = write_rr(&mut b, SENDER, &[]).expect("RR fits");
    let lost = [5000u16, 5001, 5003, 5020, 5100];
    let pairs: Vec<NackPair> = NackPair::pack(lost).collect();
    n += write_nack(&mut b[n..], SENDER, MEDIA, pairs).expect("NACK fits");
    v.push(("rr_nack", b[..n].to_vec()));

    let all: Vec<u8> = v.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    v.push(("all_four", all));
    v
}

/// Parses a compound, visiting every decoded value; returns a digest so nothing is elided.
fn parse(buf: &[u8]) -> u64 {
    let mut acc = 0u64;
    for p in RtcpCompound::new(buf) {
        let Ok(p) = p else {
            acc = acc.wrapping_add(1 << 40);
            continue;
        };
        match p {
            RtcpPacket::SenderReport(sr) => {
                acc = acc.wrapping_add(sr.info.ntp_time ^ u64::from(sr.ssrc.0));
                for b in sr.blocks {
                    acc = acc.wrapping_add(u64::from(b.ext_highest_seq ^ b.jitter));
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                for b in rr.blocks {
                    acc = acc.wrapping_add(u64::from(b.ext_highest_seq ^ b.lsr));
                }
            }
            RtcpPacket::Sdes(s) => acc = acc.wrapping_add(s.body.len() as u64),
            RtcpPacket::Remb(r) => {
                acc = acc.wrapping_add(r.bitrate);
                for s in r.ssrcs {
                    acc = acc.wrapping_add(u64::from(s.0));
                }
            }
            RtcpPacket::TransportCc(t) => {
                for p in t.packets() {
                    acc = acc.wrapping_add(u64::from(p.seq) + p.recv_delta.map_or(0, |d| d as u64));
                }
            }
            RtcpPacket::Nack(n) => {
                for s in n.lost_seqs() {
                    acc = acc.wrapping_add(u64::from(s));
                }
            }
            _ => acc = acc.wrapping_add(7),
        }
    }
    acc
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtcp_parse");
    for (name, buf) in compounds() {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse(black_box(&buf))));
    }
    g.finish();
}

fn writing(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtcp_write");
    let mut buf = vec![0u8; 1500];
    let blocks = [block(1), block(2), block(3), block(4)];
    g.bench_function("rr_4_blocks", |b| {
        b.iter(|| write_rr(black_box(&mut buf), SENDER, black_box(&blocks)))
    });
    g.bench_function("pli", |b| {
        b.iter(|| write_pli(black_box(&mut buf), SENDER, black_box(MEDIA)))
    });
    let entries = twcc_entries();
    g.bench_function("twcc_100", |b| {
        b.iter(|| {
            let fb = TwccFeedback {
                base_seq: 4000,
                reference_time: 1234,
                fb_pkt_count: 9,
                packets: black_box(&entries),
            };
            write_twcc(black_box(&mut buf), SENDER, MEDIA, &fb)
        })
    });
    g.finish();
}

criterion_group!(benches, parsing, writing);
criterion_main!(benches);
