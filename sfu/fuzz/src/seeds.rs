//! Seed inputs per target, built with the crate's own writers where there is one (the same
//! vectors its unit tests use). `fuzz-loop --write-corpus` dumps them to `corpus/<target>/`
//! for libFuzzer.

use sfu::wire::rtcp::{write_bye, write_fir, write_nack, write_pli, write_remb, write_rr, write_sr, NackPair};
use sfu::wire::rtcp::{ReportBlock, SenderInfo};
use sfu::wire::rtp::RtpHeaderFields;
use sfu::Ssrc;

fn rtp_packet(exts: &[(u8, &[u8])], csrcs: &[Ssrc], payload: &[u8], pad: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let f = RtpHeaderFields {
        marker: true,
        pt: 96,
        seq: 0xFFFE,
        timestamp: 0x1234_5678,
        ssrc: Ssrc(0xDEAD_BEEF),
        csrcs,
        extensions: exts,
    };
    let Ok(n) = f.write_to(&mut buf) else { return Vec::new() };
    buf.truncate(n);
    buf.extend_from_slice(payload);
    if pad > 0 {
        buf[0] |= 0x20;
        buf.extend(std::iter::repeat_n(0, usize::from(pad) - 1));
        buf.push(pad);
    }
    buf
}

pub fn rtp() -> Vec<Vec<u8>> {
    vec![
        rtp_packet(&[], &[], b"hello", 0),
        rtp_packet(
            &[(1, &[0x80 | 30]), (3, &[0x12, 0x34])],
            &[],
            &[0x90, 0x80, 0x81, 0x23],
            0,
        ),
        rtp_packet(&[(2, &[1, 2, 3]), (13, &[0])], &[Ssrc(1), Ssrc(2)], &[0; 20], 4),
        // Two-byte form (a value longer than 16 bytes).
        rtp_packet(&[(5, &[7; 20]), (200, &[])], &[], &[1, 2, 3], 0),
        rtp_packet(&[(4, b"0")], &[], &[], 1),
    ]
}

fn rtcp_with(f: impl Fn(&mut [u8]) -> Option<usize>) -> Vec<u8> {
    let mut b = vec![0u8; 1500];
    match f(&mut b) {
        Some(n) => {
            b.truncate(n);
            b
        }
        None => Vec::new(),
    }
}

/// Transport-cc feedback: base 100, 3 packets (run-length chunk, small deltas).
fn twcc() -> Vec<u8> {
    let mut b = vec![0x8F, 205, 0, 0];
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&100u16.to_be_bytes()); // base seq
    b.extend_from_slice(&3u16.to_be_bytes()); // status count
    b.extend_from_slice(&[0, 0, 1, 7]); // ref time (24 bit) + fb count
    b.extend_from_slice(&[0x20, 0x03]); // run-length: small delta × 3
    b.extend_from_slice(&[4, 8, 12]); // deltas
                                      // Pad to a 32-bit boundary, then fix the length.
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    let words = (b.len() / 4 - 1) as u16;
    b[2..4].copy_from_slice(&words.to_be_bytes());
    b
}

pub fn rtcp() -> Vec<Vec<u8>> {
    let info = SenderInfo {
        ntp_time: 0xE000_0000_8000_0000,
        rtp_time: 1,
        packet_count: 2,
        octet_count: 3,
    };
    let block = ReportBlock {
        ssrc: Ssrc(9),
        fraction_lost: 3,
        cumulative_lost: -2,
        ext_highest_seq: 70000,
        jitter: 5,
        lsr: 6,
        dlsr: 7,
    };
    let sr = rtcp_with(|b| write_sr(b, Ssrc(1), &info, &[block]).ok());
    let rr = rtcp_with(|b| write_rr(b, Ssrc(1), &[block, block]).ok());
    let nack = rtcp_with(|b| {
        write_nack(
            b,
            Ssrc(1),
            Ssrc(2),
            [NackPair { pid: 10, blp: 0xFFFF }, NackPair { pid: 65535, blp: 1 }],
        )
        .ok()
    });
    let pli = rtcp_with(|b| write_pli(b, Ssrc(1), Ssrc(2)).ok());
    let fir = rtcp_with(|b| write_fir(b, Ssrc(1), Ssrc(2), 7).ok());
    let remb = rtcp_with(|b| write_remb(b, Ssrc(1), 1_500_000, &[Ssrc(2), Ssrc(3)]).ok());
    let bye = rtcp_with(|b| write_bye(b, &[Ssrc(1)], Some(b"gone")).ok());
    let tw = twcc();
    let mut compound = sr.clone();
    for p in [&nack, &pli, &fir, &remb, &tw, &bye] {
        compound.extend_from_slice(p);
    }
    vec![sr, rr, nack, pli, fir, remb, bye, tw, compound]
}

pub fn vp8() -> Vec<Vec<u8>> {
    vec![
        vec![0x10],
        vec![
            0x90, 0x80, 0x81, 0x23, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ],
        vec![0x90, 0xE0, 0x12, 0x34, 0x56, 0x60, 0x00],
        vec![0x80, 0x40, 0x05, 0x00],
        vec![0x90, 0xF0, 0x7F, 0x01, 0xA0, 0x01],
    ]
}

pub fn vp9() -> Vec<Vec<u8>> {
    vec![
        vec![0x88, 0x05, 0x00],
        vec![0xf4, 0x11, 0x35, 0x03, 0x06, 0xaa],
        vec![0xf4, 0x11, 0x35, 0x03, 0x03, 0x03, 0x06],
        vec![0x82, 0x49, 0x83],
        // Keyframe with a scalability structure: I,P=0,L,B,E,V; 2 spatial layers with sizes, G.
        vec![
            0xAE, 0x80, 0x01, 0x00, 0x00, 0x3C, 0x01, 0x40, 0x00, 0xB4, 0x02, 0x80, 0x01, 0x68, 0x01, 0x04, 0x01, 0x01,
        ],
    ]
}

pub fn av1_dd() -> Vec<Vec<u8>> {
    vec![
        vec![0x80, 0x00, 0x01],
        vec![0xC1, 0x00, 0x02],
        // Keyframe with an attached structure (L1T2-like): extended fields present.
        vec![0x80, 0x00, 0x01, 0x80, 0x00, 0x0A, 0x0A, 0x04, 0x90, 0x00, 0x00, 0x00],
        vec![
            0xC0, 0x01, 0x02, 0x88, 0x02, 0x10, 0x5F, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
    ]
}

pub fn h264() -> Vec<Vec<u8>> {
    vec![
        vec![0x65, 0x88, 0x84],
        vec![0x41, 0x9A],
        vec![0x67, 0x42, 0x00, 0x1F],
        // STAP-A: SPS + PPS + IDR.
        vec![
            0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x65, 0x88,
        ],
        // FU-A start of an IDR.
        vec![0x7C, 0x85, 0x88, 0x84],
        vec![0x7C, 0x45, 0x00],
    ]
}

/// A DTLS 1.2 ClientHello record offering `profiles` in use_srtp, split into `frags` fragments.
pub fn client_hello_record(profiles: &[u16], frags: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0xFE, 0xFD]);
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0, 2, 0xC0, 0x2B]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression
    let mut ext = Vec::new();
    let mut srtp = Vec::new();
    srtp.extend_from_slice(&((profiles.len() * 2) as u16).to_be_bytes());
    for p in profiles {
        srtp.extend_from_slice(&p.to_be_bytes());
    }
    srtp.push(0); // MKI
    ext.extend_from_slice(&14u16.to_be_bytes());
    ext.extend_from_slice(&(srtp.len() as u16).to_be_bytes());
    ext.extend_from_slice(&srtp);
    // What a real client sends besides use_srtp, so the handshake gets past the server's
    // checks: extended_master_secret, supported_groups (P-256), ec_point_formats,
    // signature_algorithms (ECDSA P-256 SHA-256).
    ext.extend_from_slice(&[0x00, 0x17, 0, 0]);
    ext.extend_from_slice(&[0x00, 0x0A, 0, 4, 0, 2, 0x00, 0x17]);
    ext.extend_from_slice(&[0x00, 0x0B, 0, 2, 1, 0]);
    ext.extend_from_slice(&[0x00, 0x0D, 0, 4, 0, 2, 0x04, 0x03]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let total = body.len();
    let frags = frags.clamp(1, total);
    let step = total.div_ceil(frags);
    let mut out = Vec::new();
    for (i, chunk) in body.chunks(step).enumerate() {
        let off = i * step;
        let mut hs = vec![1];
        hs.extend_from_slice(&(total as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&0u16.to_be_bytes()); // message seq
        hs.extend_from_slice(&(off as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(chunk);
        let mut rec = vec![22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, i as u8];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        if i > 0 {
            out.extend_from_slice(&[0xFF, 0xFE]);
        }
        out.extend_from_slice(&rec);
    }
    out
}

pub fn client_hello() -> Vec<Vec<u8>> {
    vec![
        client_hello_record(&[0x0007, 0x0001], 1),
        client_hello_record(&[0x0008], 3),
        client_hello_record(&[], 1),
    ]
}

pub fn srtp() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (sel, kl) in [(0u8, 28usize), (1, 44), (2, 30)] {
        for body in rtp().into_iter().chain(rtcp().into_iter().take(3)) {
            let mut v = vec![sel];
            v.extend((0..kl).map(|i| i as u8));
            v.extend_from_slice(&body);
            out.push(v);
        }
    }
    out
}

pub fn demux() -> Vec<Vec<u8>> {
    let mut stun = vec![0, 1, 0, 12, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0, 6, 0, 9]);
    stun.extend_from_slice(b"abcd:efgh\0\0\0");
    let mut v = vec![stun];
    v.extend(rtp().into_iter().take(2));
    v.extend(rtcp().into_iter().take(2));
    v.push(client_hello_record(&[1], 1));
    v
}

pub fn bridge_channel() -> Vec<Vec<u8>> {
    [
        r#"{"colibriClass":"ReceiverVideoConstraints","lastN":-1,"defaultConstraints":{"maxHeight":720}}"#,
        r#"{"colibriClass":"ReceiverVideoConstraints","lastN":2,"selectedSources":["a-v0"],"onStageSources":["b-v0"],"constraints":{"a-v0":{"maxHeight":180,"maxFrameRate":15}}}"#,
        r#"{"colibriClass":"EndpointMessage","to":"","msgPayload":{"type":"e2e","x":[1,2,{"y":null}]}}"#,
        r#"{"colibriClass":"EndpointStats","bitrate":{"download":1}}"#,
        r#"{"colibriClass":"ReceiverAudioSubscription","mode":"Include","list":["a-a0"]}"#,
        r#"{"colibriClass":"SourceVideoTypeMessage","sourceName":"a-v0","videoType":"DESKTOP"}"#,
        r#"{"colibriClass":"LastNChangedEvent","lastN":3}"#,
        r#"{"colibriClass":"Unknown"}"#,
        r#"{"colibriClass":"EndpointMessage","colibriClass":"EndpointMessage"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Shard scripts: create a conference and endpoints, signal transports and sources, send a
/// validated binding request, then datagrams of every class and timer ticks.
pub fn shard() -> Vec<Vec<u8>> {
    let mut a = vec![
        0, 0, // create conference 0
        1, 0x40, // endpoint 0 of conference 0, sctp
        1, 0x04, // endpoint 1
        7, 0x00, // transport of endpoint 0, remote 0
        7, 0x44, // transport of endpoint 1, remote 1
        2, 0x00, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, // 3 audio SSRCs for ep 0
        8, 0x01, // binding request (use-candidate) for eps[1] = ep 1 from remote 0
    ];
    a.extend_from_slice(&[7; 12]);
    a.extend_from_slice(&[8, 0x00]);
    a.extend_from_slice(&[9; 12]);
    // Datagrams: RTP-ish, DTLS-ish, STUN-ish, raw.
    for op in [16u8, 17, 18, 19] {
        a.extend_from_slice(&[op, 0x00, 5]);
        a.extend((0..20).map(|i| i as u8 * 13));
    }
    a.extend_from_slice(&[6, 50, 5, 0x00, 40]);
    a.extend_from_slice(br#"{"colibriClass":"ReceiverVideoConstraints","lastN":1}"#);
    a.extend_from_slice(&[6, 255, 3, 0x04, 4, 0x00]);
    vec![a, vec![0, 0, 0, 1, 0, 2, 0, 3, 0, 0]]
}

/// STUN scripts for the `stun` target: (mode, length, attribute bytes) triples.
pub fn stun() -> Vec<Vec<u8>> {
    let mut attrs = Vec::new();
    for (t, v) in [
        (0x0024u16, &0x6E00_1EFFu32.to_be_bytes()[..]), // PRIORITY
        (0x8029, &7u64.to_be_bytes()[..]),              // ICE-CONTROLLED
    ] {
        attrs.extend_from_slice(&t.to_be_bytes());
        attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
        attrs.extend_from_slice(v);
    }
    let mut with_use_candidate = attrs.clone();
    with_use_candidate.extend_from_slice(&[0x00, 0x25, 0, 0]);
    let script = |steps: &[(u8, &[u8])]| {
        let mut v = Vec::new();
        for (mode, a) in steps {
            v.push(*mode);
            v.push(a.len() as u8);
            v.extend_from_slice(a);
        }
        v
    };
    // An attribute whose length runs past the end, a zero-length and an odd-length one, a
    // duplicate USERNAME, an unknown comprehension-required attribute.
    let past_end = [0x00u8, 0x24, 0x00, 0x40, 1, 2, 3, 4];
    let odd = [0x80u8, 0x22, 0x00, 0x03, b'a', b'b', b'c', 0, 0x00, 0x20, 0, 0];
    let dup_user = [0x00u8, 0x06, 0x00, 0x04, b'x', b'y', b'z', b'w'];
    let unknown = [0x00u8, 0x7F, 0x00, 0x04, 9, 9, 9, 9];
    let raw = crate::seeds::demux().swap_remove(0);
    vec![
        script(&[(2, &attrs), (2 | 0x40, &with_use_candidate), (1, &attrs)]),
        script(&[(3, &attrs), (2, &past_end), (2, &odd)]),
        script(&[(2, &dup_user), (2, &unknown), (2 | 8, &attrs), (2 | 12, &attrs)]),
        script(&[(0, &raw), (0x80 | 2, &attrs), (0x80, &raw)]),
    ]
}

/// Datagrams for the `dtls_records` target: a selector byte, then records split at 0xFF 0xFE.
pub fn dtls_records() -> Vec<Vec<u8>> {
    let with = |sel: u8, body: Vec<u8>| {
        let mut v = vec![sel];
        v.extend_from_slice(&body);
        v
    };
    // Handshake fragments with hostile geometry: zero-length, overlapping, offset past the
    // total, total 2^24 - 1.
    let frag = |total: u32, off: u32, data: &[u8], seq: u8| {
        let mut hs = vec![1];
        hs.extend_from_slice(&total.to_be_bytes()[1..]);
        hs.extend_from_slice(&0u16.to_be_bytes());
        hs.extend_from_slice(&off.to_be_bytes()[1..]);
        hs.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(data);
        let mut rec = vec![22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, seq];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    };
    let mut hostile = Vec::new();
    for (i, r) in [
        frag(100, 0, &[], 0),
        frag(100, 0, &[1; 60], 1),
        frag(100, 30, &[2; 60], 2),
        frag(100, 90, &[3; 20], 3),
        frag(0xFF_FFFF, 0, &[4; 16], 4),
        frag(100, 0xFF_FFF0, &[5; 16], 5),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            hostile.extend_from_slice(&[0xFF, 0xFE]);
        }
        hostile.extend_from_slice(&r);
    }
    // A record claiming more than the datagram holds; an alert; application data in epoch 1.
    let mut short = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x00, 1, 2, 3];
    short.extend_from_slice(&[0xFF, 0xFE, 21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40]);
    short.extend_from_slice(&[0xFF, 0xFE, 23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    vec![
        with(0, client_hello_record(&[0x0007, 0x0001], 1)),
        with(4, client_hello_record(&[0x0008], 3)),
        with(2, client_hello_record(&[], 2)),
        with(0, hostile.clone()),
        with(6, short.clone()),
        // Client role: the bytes are the "server's" flights.
        with(1, client_hello_record(&[0x0007], 1)),
        with(5, short),
    ]
}

/// Scripts for the `sctp` target (see `net_targets::sctp` for the flag bits).
pub fn sctp() -> Vec<Vec<u8>> {
    use sfu::sctp::testing::{dcep_open, sctp_chunk, sctp_data, sctp_init, sctp_packet};
    let with = |flags: u8, parts: &[Vec<u8>]| {
        let mut v = vec![flags];
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                v.extend_from_slice(&[0xFF, 0xFE]);
            }
            v.extend_from_slice(p);
        }
        v
    };
    let mut bad_label = dcep_open(b"x");
    bad_label[8..10].copy_from_slice(&0x7FFFu16.to_be_bytes());
    vec![
        // CVE-2019-20503 style: INIT parameters shorter than their own header, and one whose
        // length runs past the chunk.
        with(0, &[sctp_init_cve()]),
        with(0, &[sctp_init(7, &[0x80, 0x08, 0x00, 0x40, 1, 2, 3, 4])]),
        // Handshake, DCEP open, then text (PPID 51), binary (53), empty-string (56) messages.
        with(
            1 | 2 | 4,
            &[
                sctp_data(0, 0, 1, 51, br#"{"colibriClass":"EndpointStats"}"#),
                sctp_data(0, 0, 2, 53, &[1, 2, 3]),
                sctp_data(0, 0, 3, 56, &[0]),
            ],
        ),
        // DCEP open with a label length past the end; DATA for an unopened stream; fragments
        // (B without E) that never finish; SACK, HEARTBEAT, ABORT.
        with(
            1 | 4 | 16,
            &[
                sctp_data(0, 0, 0, 50, &bad_label),
                sctp_data(0, 77, 0, 51, b"hi"),
                sctp_chunk(0, 0x02, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 51, 7, 7, 7]),
                sctp_chunk(3, 0, &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
                sctp_chunk(4, 0, &[0, 1, 0, 8, 1, 2, 3, 4]),
                sctp_chunk(6, 0, &[]),
            ],
        ),
        // Whole packets, checksum fixed by the target.
        with(1 | 2 | 32, &[sctp_packet(0, &sctp_chunk(1, 0, &[0; 16]))]),
    ]
}

/// An INIT whose first parameter's length (2) is shorter than a parameter header, followed by
/// a parameter claiming 0x0400 bytes (CVE-2019-20503: usrsctp trusted INIT parameter lengths).
pub fn sctp_init_cve() -> Vec<u8> {
    sfu::sctp::testing::sctp_init(
        0x0BAD_F00D,
        &[0x00, 0x05, 0x00, 0x02, 0x00, 0x0C, 0x04, 0x00, 127, 0, 0, 1],
    )
}

/// Transport-cc FCIs for the `twcc` target (the target wraps them in an RTCP header).
pub fn twcc_fci() -> Vec<Vec<u8>> {
    let fixed = |base: u16, count: u16| {
        let mut v = Vec::new();
        v.extend_from_slice(&base.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(&[0x12, 0x34, 0x56, 9]);
        v
    };
    let mut rle = fixed(65530, 10);
    rle.extend_from_slice(&[0x20, 0x0A]); // run of 10 small
    rle.extend_from_slice(&[1; 10]);
    let mut vec2 = fixed(7, 7);
    vec2.extend_from_slice(&[0xC6, 0x58]); // 2-bit: small, large, none, ... (7 symbols)
    vec2.extend_from_slice(&[4, 0x80, 0x00, 9, 9, 9]);
    let mut huge = fixed(0, 0xFFFF);
    for _ in 0..8 {
        huge.extend_from_slice(&[0x1F, 0xFF]); // 8191 not received each: 65528 < 65535
    }
    let mut huge_ok = huge.clone();
    huge_ok.extend_from_slice(&[0x00, 0x07]);
    let mut reserved = fixed(0, 3);
    reserved.extend_from_slice(&[0x60, 0x03]); // reserved symbol
    vec![rle, vec2, huge, huge_ok, reserved]
}

/// Seeds of the target called `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "demux" => demux(),
        "rtp" => rtp(),
        "rtcp" => rtcp(),
        "vp8" => vp8(),
        "vp9" => vp9(),
        "av1_dd" => av1_dd(),
        "h264" => h264(),
        "client_hello" => client_hello(),
        "srtp" => srtp(),
        "bridge_channel" => bridge_channel(),
        "shard" => shard(),
        "stun" => stun(),
        "dtls_records" => dtls_records(),
        "sctp" => sctp(),
        "twcc" => {
            let mut v = twcc_fci();
            v.extend(rtcp().into_iter().filter(|p| p.get(1) == Some(&205)));
            v
        }
        _ => Vec::new(),
    }
}
