//! Building one receiver's copy of a forwarded RTP packet (media.md §0 egress, §9).
//!
//! The copy gets a fresh header: the projection's SSRC, sequence number, timestamp and
//! marker, and only the extensions the receiver may use — audio level and video orientation
//! copied from the sender, the AV1 dependency descriptor as the projection rewrote it, and
//! the receiver's own transport-wide sequence number. Extension ids are the receiver's
//! (translated by meaning from the sender's). Padding is not copied.
//!
//! The header is assembled on the stack and the packet appended to a pooled buffer, so a
//! forwarded packet costs two `memcpy`s and no allocation.

use bytes::BytesMut;

use crate::id::Ssrc;
use crate::negotiated::ExtIds;
use crate::wire::rtp::{RtpHeader, RtpHeaderFields};

/// Room reserved after the packet for the SRTP tag (GCM 16, HMAC-SHA1-80 10).
pub const SRTP_TRAILER: usize = 16;

/// What the projection decided for this receiver's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutHeader {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub pt: u8,
}

/// Extension values for the copy; `None` leaves an extension out.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutExtensions<'a> {
    /// Rewritten AV1 dependency descriptor (else the sender's is copied, if any).
    pub av1_dd: Option<&'a [u8]>,
    /// The receiver's transport-wide sequence number.
    pub transport_cc: Option<u16>,
}

/// Write the receiver's copy of `src` (a decrypted packet whose header is `h`, sent with the
/// sender's extension ids `from`) into `out`, using the receiver's ids `to`. Returns the offset
/// of the payload in `out`, where the caller rewrites codec fields in place.
pub fn write_packet(
    out: &mut BytesMut,
    src: &[u8],
    h: &RtpHeader,
    from: &ExtIds,
    to: &ExtIds,
    hdr: OutHeader,
    exts: OutExtensions<'_>,
) -> Option<usize> {
    let mut list: [(u8, &[u8]); 4] = [(0, &[]); 4];
    let mut n = 0;
    fn copy<'a>(src: &'a [u8], h: &RtpHeader, ids: (u8, u8), list: &mut [(u8, &'a [u8]); 4], n: &mut usize) {
        let (from_id, to_id) = ids;
        if from_id != 0 && to_id != 0 {
            if let Some(v) = h.extension(src, from_id) {
                list[*n] = (to_id, v);
                *n += 1;
            }
        }
    }
    copy(src, h, (from.audio_level, to.audio_level), &mut list, &mut n);
    copy(
        src,
        h,
        (from.video_orientation, to.video_orientation),
        &mut list,
        &mut n,
    );
    match exts.av1_dd {
        Some(dd) if to.av1_dd != 0 => {
            list[n] = (to.av1_dd, dd);
            n += 1;
        }
        Some(_) => {}
        None => copy(src, h, (from.av1_dd, to.av1_dd), &mut list, &mut n),
    }
    let tcc;
    if let (Some(seq), true) = (exts.transport_cc, to.transport_cc != 0) {
        tcc = seq.to_be_bytes();
        list[n] = (to.transport_cc, &tcc);
        n += 1;
    }
    let fields = RtpHeaderFields {
        marker: hdr.marker,
        pt: hdr.pt,
        seq: hdr.seq,
        timestamp: hdr.ts,
        ssrc: Ssrc(hdr.ssrc),
        csrcs: &[],
        extensions: &list[..n],
    };
    let mut head = [0u8; 12 + 4 + 2 * 4 + 255 + 3 * 18];
    let hlen = fields.write_to(&mut head).ok()?;
    let body = h.payload(src);
    out.clear();
    out.reserve(hlen + body.len() + SRTP_TRAILER);
    out.extend_from_slice(&head[..hlen]);
    out.extend_from_slice(body);
    Some(hlen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(audio_level: u8, tcc: u8, dd: u8) -> ExtIds {
        ExtIds {
            audio_level,
            transport_cc: tcc,
            av1_dd: dd,
            ..ExtIds::default()
        }
    }

    #[test]
    fn rewrites_header_translates_ids_and_drops_padding() {
        let mut src = vec![0u8; 256];
        let exts: [(u8, &[u8]); 3] = [(1, &[0x85]), (3, &[0, 7]), (9, &[1, 2, 3])];
        let n = RtpHeaderFields {
            marker: false,
            pt: 111,
            seq: 10,
            timestamp: 1000,
            ssrc: Ssrc(42),
            csrcs: &[],
            extensions: &exts,
        }
        .write_to(&mut src)
        .expect("fits");
        src.truncate(n);
        src.extend_from_slice(b"payload");
        // Four bytes of padding, the last one giving the count.
        src.extend_from_slice(&[0, 0, 0, 4]);
        src[0] |= 0x20;
        let h = RtpHeader::parse(&src).expect("valid packet");
        let mut out = BytesMut::new();
        let at = write_packet(
            &mut out,
            &src,
            &h,
            &ids(1, 3, 0),
            &ids(4, 5, 6),
            OutHeader {
                ssrc: 77,
                seq: 500,
                ts: 9000,
                marker: true,
                pt: 111,
            },
            OutExtensions {
                av1_dd: None,
                transport_cc: Some(0xBEEF),
            },
        )
        .expect("fits");
        let o = RtpHeader::parse(&out).expect("output parses");
        assert_eq!(
            (o.ssrc(), o.seq(), o.timestamp(), o.marker()),
            (Ssrc(77), 500, 9000, true)
        );
        assert!(!o.has_padding());
        assert_eq!(o.payload(&out), b"payload");
        assert_eq!(&out[at..], b"payload");
        assert_eq!(o.audio_level(&out, 4).map(|l| l.level), Some(5));
        assert_eq!(o.transport_cc_seq(&out, 5), Some(0xBEEF));
        assert!(o.extension(&out, 1).is_none(), "sender ids are not kept");
        assert!(o.extension(&out, 9).is_none(), "unknown extensions are stripped");
        assert!(o.extension(&out, 6).is_none(), "no DD on the source, none on the copy");
    }
}
