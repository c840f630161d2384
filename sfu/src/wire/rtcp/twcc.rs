//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1): RTPFB FMT 15, fully decoded into (transport seq, receive delta).
//!
//! The FCI is: base sequence number (16), packet status count (16), reference time (24, in
//! units of 64 ms), feedback packet count (8), then packet status chunks of 16 bits, then one
//! receive delta per received packet (1 byte unsigned for "small", 2 bytes signed for "large",
//! both in units of 250 µs), then padding.

use super::{feedback, malformed, write_header, RtcpError, RtcpHeader, FMT_TWCC, PT_RTPFB};
use crate::id::Ssrc;
use crate::wire::{be16, be24, WriteError};

/// Status symbols (draft §3.1.1).
const NOT_RECEIVED: u16 = 0;
const SMALL: u16 = 1;
const LARGE: u16 = 2;
/// Longest run a run-length chunk can carry (13 bits).
const MAX_RUN: usize = 0x1FFF;

/// One packet's fate in a feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwccPacket {
    /// Transport-wide sequence number.
    pub seq: u16,
    /// `None` if not received; else the arrival time relative to the previous received
    /// packet (or to the reference time for the first), in units of 250 µs.
    pub recv_delta: Option<i16>,
}

/// A transport-cc feedback (PT 205, FMT 15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportCc<'a> {
    /// Who received the packets.
    pub sender: Ssrc,
    /// The media source field (libwebrtc puts its first media SSRC here; meaningless).
    pub media: Ssrc,
    /// Transport seq of the first packet described.
    pub base_seq: u16,
    /// How many packets are described, from `base_seq` on.
    pub status_count: u16,
    /// 24-bit wrapping reference time in units of 64 ms (unsigned here; unwrap it like a seq).
    pub reference_time: u32,
    /// Feedback packet counter, incremented per feedback sent (detects lost feedback).
    pub fb_pkt_count: u8,
    /// The raw FCI, fixed part included.
    pub fci: &'a [u8],
    chunks: &'a [u8],
    deltas: &'a [u8],
}

impl<'a> TransportCc<'a> {
    /// Validates the whole FCI once (chunks cover `status_count`, no reserved symbol, deltas
    /// present), so that [`TransportCc::packets`] cannot fail.
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender, media, fci) = feedback(h, body)?;
        if fci.len() < 8 {
            return Err(malformed(h, "transport-cc FCI shorter than its fixed part"));
        }
        let status_count = be16(fci, 2);
        let mut pos = 8;
        let mut covered = 0usize;
        let mut delta_len = 0usize;
        while covered < usize::from(status_count) {
            let Some(c) = fci.get(pos..pos + 2) else {
                return Err(malformed(h, "transport-cc chunks end before status count"));
            };
            let chunk = be16(c, 0);
            pos += 2;
            let n = chunk_capacity(chunk).min(usize::from(status_count) - covered);
            if chunk & 0x8000 == 0 {
                let size = symbol_size((chunk >> 13) & 3)
                    .ok_or_else(|| malformed(h, "transport-cc reserved status symbol"))?;
                delta_len += n * size;
            } else {
                for i in 0..n {
                    delta_len += symbol_size(chunk_symbol(chunk, i))
                        .ok_or_else(|| malformed(h, "transport-cc reserved status symbol"))?;
                }
            }
            covered += n;
        }
        let Some(deltas) = fci.get(pos..pos + delta_len) else {
            return Err(malformed(h, "transport-cc receive deltas truncated"));
        };
        Ok(Self {
            sender,
            media,
            base_seq: be16(fci, 0),
            status_count,
            reference_time: be24(fci, 4),
            fb_pkt_count: fci[7],
            fci,
            chunks: &fci[8..pos],
            deltas,
        })
    }

    /// Every described packet in sequence order, `status_count` of them.
    pub fn packets(&self) -> TwccPackets<'a> {
        TwccPackets {
            chunks: self.chunks,
            deltas: self.deltas,
            symbol: 0,
            remaining: self.status_count,
            seq: self.base_seq,
        }
    }
}

/// Iterator over the packets of a transport-cc feedback.
#[derive(Clone, Debug)]
pub struct TwccPackets<'a> {
    /// Chunks not yet finished; the first is the current one.
    chunks: &'a [u8],
    /// Deltas not yet read.
    deltas: &'a [u8],
    /// Next symbol index within the current chunk.
    symbol: usize,
    remaining: u16,
    seq: u16,
}

impl Iterator for TwccPackets<'_> {
    type Item = TwccPacket;

    fn next(&mut self) -> Option<TwccPacket> {
        if self.remaining == 0 {
            return None;
        }
        // `parse` checked that the chunks and deltas cover `status_count` packets; the `?`s
        // below only guard against that invariant being broken.
        let chunk = loop {
            let chunk = be16(self.chunks.get(..2)?, 0);
            if self.symbol < chunk_capacity(chunk) {
                break chunk;
            }
            self.chunks = &self.chunks[2..];
            self.symbol = 0;
        };
        let symbol = if chunk & 0x8000 == 0 {
            (chunk >> 13) & 3
        } else {
            chunk_symbol(chunk, self.symbol)
        };
        self.symbol += 1;
        let recv_delta = match symbol {
            SMALL => {
                let (&d, rest) = self.deltas.split_first()?;
                self.deltas = rest;
                Some(i16::from(d))
            }
            LARGE => {
                let (d, rest) = self.deltas.split_first_chunk::<2>()?;
                self.deltas = rest;
                Some(i16::from_be_bytes(*d))
            }
            _ => None,
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        self.remaining -= 1;
        Some(TwccPacket { seq, recv_delta })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for TwccPackets<'_> {}

/// What [`write_twcc`] encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwccFeedback<'a> {
    /// Transport seq of `packets[0]`.
    pub base_seq: u16,
    /// Reference time in units of 64 ms; only the low 24 bits are sent.
    pub reference_time: u32,
    /// Feedback packet counter.
    pub fb_pkt_count: u8,
    /// One entry per transport seq from `base_seq` on: `None` if not received, else the
    /// receive delta in 250 µs units (see [`TwccPacket::recv_delta`]). 1 to 65535 entries.
    pub packets: &'a [Option<i16>],
}

/// Writes a transport-cc feedback; returns its length. Chunks are chosen greedily: a
/// run-length chunk for runs of 14 or more (or for the whole tail), else a 14 × 1-bit status
/// vector when only "not received" and "small" occur, else a 7 × 2-bit vector. Padding to 32
/// bits uses the P bit and a count, as libwebrtc does.
pub fn write_twcc(buf: &mut [u8], sender: Ssrc, media: Ssrc, fb: &TwccFeedback<'_>) -> Result<usize, WriteError> {
    let n = fb.packets.len();
    if n == 0 {
        return Err(WriteError::Unencodable {
            what: "transport-cc feedback without packets",
        });
    }
    if n > usize::from(u16::MAX) {
        return Err(WriteError::TooMany {
            what: "transport-cc packets",
            count: n,
            max: usize::from(u16::MAX),
        });
    }
    let have = buf.len();
    let short = |need| WriteError::BufferTooShort { need, have };
    // Chunks, then deltas, from byte 20; the header and fixed fields go in last.
    let mut pos = 20;
    let mut i = 0;
    while i < n {
        let first = symbol_of(fb.packets[i]);
        let run = fb.packets[i..]
            .iter()
            .take(MAX_RUN)
            .take_while(|p| symbol_of(**p) == first)
            .count();
        let chunk = if run >= 14 || run == n - i {
            i += run;
            (first << 13) | run as u16
        } else {
            let k = (n - i).min(14);
            if fb.packets[i..i + k].iter().all(|p| symbol_of(*p) <= SMALL) {
                let mut c = 0x8000;
                for (j, p) in fb.packets[i..i + k].iter().enumerate() {
                    c |= symbol_of(*p) << (13 - j);
                }
                i += k;
                c
            } else {
                let k = (n - i).min(7);
                let mut c = 0xC000;
                for (j, p) in fb.packets[i..i + k].iter().enumerate() {
                    c |= symbol_of(*p) << (12 - 2 * j);
                }
                i += k;
                c
            }
        };
        buf.get_mut(pos..pos + 2)
            .ok_or(short(pos + 2))?
            .copy_from_slice(&chunk.to_be_bytes());
        pos += 2;
    }
    for d in fb.packets.iter().flatten() {
        if let Ok(small) = u8::try_from(*d) {
            *buf.get_mut(pos).ok_or(short(pos + 1))? = small;
            pos += 1;
        } else {
            buf.get_mut(pos..pos + 2)
                .ok_or(short(pos + 2))?
                .copy_from_slice(&d.to_be_bytes());
            pos += 2;
        }
    }
    let padding = (4 - pos % 4) % 4;
    let len = pos + padding;
    let b = write_header(buf, padding > 0, FMT_TWCC, PT_RTPFB, len)?;
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    b[8..12].copy_from_slice(&media.0.to_be_bytes());
    b[12..14].copy_from_slice(&fb.base_seq.to_be_bytes());
    b[14..16].copy_from_slice(&(n as u16).to_be_bytes());
    b[16..19].copy_from_slice(&fb.reference_time.to_be_bytes()[1..]);
    b[19] = fb.fb_pkt_count;
    if padding > 0 {
        b[pos..len].fill(0);
        b[len - 1] = padding as u8;
    }
    Ok(len)
}

/// The status symbol the writer uses for a packet.
fn symbol_of(p: Option<i16>) -> u16 {
    match p {
        None => NOT_RECEIVED,
        Some(0..=255) => SMALL,
        Some(_) => LARGE,
    }
}

/// Delta bytes for a symbol; `None` for the reserved symbol 3.
fn symbol_size(symbol: u16) -> Option<usize> {
    match symbol {
        NOT_RECEIVED => Some(0),
        SMALL => Some(1),
        LARGE => Some(2),
        _ => None,
    }
}

/// Packets a chunk describes: the run length, 14 (1-bit vector) or 7 (2-bit vector).
fn chunk_capacity(chunk: u16) -> usize {
    match chunk >> 14 {
        0 | 1 => usize::from(chunk & 0x1FFF),
        2 => 14,
        _ => 7,
    }
}

/// Symbol `i` of a status vector chunk.
fn chunk_symbol(chunk: u16, i: usize) -> u16 {
    if chunk & 0x4000 == 0 {
        (chunk >> (13 - i)) & 1
    } else {
        (chunk >> (12 - 2 * i)) & 3
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;

    fn parse(p: &[u8]) -> TransportCc<'_> {
        match RtcpCompound::new(p).next() {
            Some(Ok(RtcpPacket::TransportCc(t))) => t,
            other => panic!("expected transport-cc, got {other:?}"),
        }
    }

    /// A hand-made feedback with a 2-bit status vector [small, large, lost, small] and
    /// padding decodes, and the writer produces exactly these bytes.
    #[test]
    fn two_bit_vector_bytes() {
        let p = [
            0xAF, 205, 0, 6, // V=2 P=1 FMT=15, 7 words
            0, 0, 0, 1, 0, 0, 0, 2, // sender, media
            0, 10, 0, 4, 0, 0, 1, 5, // base 10, count 4, ref time 1, fb count 5
            0xD8, 0x40, // 11 01 10 00 01 000000
            0x04, 0xFF, 0xF8, 0xFF, // deltas: 4, -8 (large), 255
            0, 2, // padding
        ];
        let t = parse(&p);
        assert_eq!(
            (t.base_seq, t.status_count, t.reference_time, t.fb_pkt_count),
            (10, 4, 1, 5)
        );
        let got: Vec<_> = t.packets().map(|p| (p.seq, p.recv_delta)).collect();
        assert_eq!(got, vec![(10, Some(4)), (11, Some(-8)), (12, None), (13, Some(255))]);
        let mut out = [0u8; 64];
        let fb = TwccFeedback {
            base_seq: 10,
            reference_time: 1,
            fb_pkt_count: 5,
            packets: &[Some(4), Some(-8), None, Some(255)],
        };
        let n = write_twcc(&mut out, Ssrc(1), Ssrc(2), &fb).expect("fits");
        assert_eq!(&out[..n], &p[..]);
    }

    /// Draft example: run-length chunk "0 00 0000011011101" describes 221 lost packets; and a
    /// 1-bit vector plus a run across the seq wrap decode to the right numbers.
    #[test]
    fn run_length_and_wrap() {
        let p = [
            0x8F, 205, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, //
            0xFF, 0xFE, 0, 223, 0, 0, 0, 0, // base 65534, 223 packets
            0x00, 0xDD, // 221 not received
            0x90, 0x00, // 1-bit vector: 0 1 0..., only 2 symbols used
            0x07, 0, 0, 0, // one small delta, zero filler
        ];
        let t = parse(&p);
        let pkts: Vec<_> = t.packets().collect();
        assert_eq!(pkts.len(), 223);
        assert_eq!(pkts[0].seq, 65534);
        assert_eq!(pkts[2].seq, 0);
        assert!(pkts[..221].iter().all(|p| p.recv_delta.is_none()));
        assert_eq!(pkts[221].recv_delta, None);
        assert_eq!((pkts[222].seq, pkts[222].recv_delta), (220, Some(7)));
    }

    /// Chunks that stop short of the status count, reserved symbols and missing deltas are
    /// malformed.
    #[test]
    fn malformed() {
        let base = |chunk: [u8; 2], count: u8| {
            [
                0x8F, 205, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, count, 0, 0, 0, 0, chunk[0], chunk[1], 0, 0,
            ]
        };
        // Run of 3 lost, but 5 packets announced and no second chunk (the filler reads as a
        // run of 0 followed by nothing).
        let p = base([0x00, 0x03], 5);
        assert!(matches!(
            RtcpCompound::new(&p).next(),
            Some(Err(RtcpError::Malformed { .. }))
        ));
        // Reserved symbol 3 in a run.
        let p = base([0x60, 0x01], 1);
        assert!(matches!(
            RtcpCompound::new(&p).next(),
            Some(Err(RtcpError::Malformed { .. }))
        ));
        // 3 large deltas need 6 bytes; only 2 present.
        let p = base([0x40, 0x03], 3);
        assert!(matches!(
            RtcpCompound::new(&p).next(),
            Some(Err(RtcpError::Malformed { .. }))
        ));
        let mut out = [0u8; 64];
        let fb = TwccFeedback {
            base_seq: 0,
            reference_time: 0,
            fb_pkt_count: 0,
            packets: &[],
        };
        assert!(write_twcc(&mut out, Ssrc(1), Ssrc(2), &fb).is_err());
        let fb = TwccFeedback {
            packets: &[Some(1000); 30],
            ..fb
        };
        assert!(matches!(
            write_twcc(&mut out[..30], Ssrc(1), Ssrc(2), &fb),
            Err(WriteError::BufferTooShort { .. })
        ));
    }

    fn status() -> impl Strategy<Value = Option<i16>> {
        prop_oneof![
            3 => Just(None),
            3 => (0i16..=255).prop_map(Some),
            1 => any::<i16>().prop_map(Some),
        ]
    }

    fn runs() -> impl Strategy<Value = Vec<Option<i16>>> {
        proptest::collection::vec((status(), 1usize..40), 1..40)
            .prop_map(|rs| rs.into_iter().flat_map(|(s, n)| std::iter::repeat_n(s, n)).collect())
    }

    proptest! {
        /// parse(write(feedback)) describes exactly the same packets and header fields.
        #[test]
        fn twcc_round_trip(
            sender in any::<u32>(), media in any::<u32>(), base in any::<u16>(),
            reference in 0u32..(1 << 24), count in any::<u8>(),
            packets in prop_oneof![proptest::collection::vec(status(), 1..300), runs()],
        ) {
            let fb = TwccFeedback { base_seq: base, reference_time: reference, fb_pkt_count: count, packets: &packets };
            let mut buf = vec![0u8; 4000];
            let n = write_twcc(&mut buf, Ssrc(sender), Ssrc(media), &fb).expect("fits");
            prop_assert_eq!(n % 4, 0);
            let mut it = RtcpCompound::new(&buf[..n]);
            let Some(Ok(RtcpPacket::TransportCc(t))) = it.next() else {
                return Err(TestCaseError::fail("not transport-cc"));
            };
            prop_assert!(it.next().is_none());
            prop_assert_eq!((t.sender, t.media, t.base_seq), (Ssrc(sender), Ssrc(media), base));
            prop_assert_eq!((t.reference_time, t.fb_pkt_count), (reference, count));
            prop_assert_eq!(usize::from(t.status_count), packets.len());
            let got: Vec<_> = t.packets().collect();
            let want: Vec<_> = packets.iter().enumerate()
                .map(|(i, d)| TwccPacket { seq: base.wrapping_add(i as u16), recv_delta: *d })
                .collect();
            prop_assert_eq!(got, want);
            // Any shorter buffer is an error, never a panic or a partial packet.
            prop_assert!(write_twcc(&mut buf[..n - 1], Ssrc(sender), Ssrc(media), &fb).is_err());
        }
    }
}
