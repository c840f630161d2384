//! First-byte demultiplexing of a datagram on the shared media port (RFC 7983, RFC 5761) and the
//! little STUN parsing the shard needs before an endpoint is known: the USERNAME of a Binding
//! request, which names the local ICE ufrag (RFC 8445 §7.2.2).

/// What a datagram on the media port carries, decided from its first two bytes only.
///
/// RFC 7983 §7 splits on the first byte: 0–3 STUN, 16–19 ZRTP, 20–63 DTLS, 64–79 TURN channel,
/// 128–191 RTP or RTCP. RFC 5761 §4 then tells RTCP from RTP by the second byte: RTCP packet
/// types 192–223 (which is what an RTP packet with marker bit set and PT 64–95 would look like;
/// RFC 5761 forbids those PTs when RTP and RTCP share a port).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketKind {
    /// STUN (first byte 0–3, at least a 20-byte header).
    Stun,
    /// DTLS record (first byte 20–63, at least a 13-byte record header).
    Dtls,
    /// RTP: version 2, second byte outside 192–223, at least the 12-byte fixed header.
    Rtp,
    /// RTCP: version 2, second byte (packet type) 192–223, at least the 4-byte common header.
    Rtcp,
    /// Anything else, including ZRTP, TURN channel data and truncated packets.
    Unknown,
}

/// Classifies a datagram. Never panics; short datagrams are [`PacketKind::Unknown`].
pub fn classify(data: &[u8]) -> PacketKind {
    let Some(&first) = data.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 if data.len() >= STUN_HEADER_LEN => PacketKind::Stun,
        20..=63 if data.len() >= DTLS_RECORD_HEADER_LEN => PacketKind::Dtls,
        // 128..=191 is exactly "top two bits are 0b10", i.e. RTP/RTCP version 2.
        128..=191 => match data.get(1) {
            Some(192..=223) if data.len() >= 4 => PacketKind::Rtcp,
            Some(_) if data.len() >= 12 => PacketKind::Rtp,
            _ => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

/// Length of the fixed STUN header (RFC 8489 §5).
pub const STUN_HEADER_LEN: usize = 20;
/// The STUN magic cookie (RFC 8489 §5).
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN message type of a Binding request (method 0x001, class request).
pub const STUN_BINDING_REQUEST: u16 = 0x0001;
/// STUN USERNAME attribute type.
pub const STUN_ATTR_USERNAME: u16 = 0x0006;
const STUN_ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const STUN_ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const DTLS_RECORD_HEADER_LEN: usize = 13;
/// RFC 8489 §14.3: USERNAME is at most 513 bytes.
const STUN_USERNAME_MAX: usize = 513;

/// Returns the USERNAME attribute value of a STUN Binding request, or `None` if `data` is not a
/// well-formed Binding request or has no USERNAME.
///
/// Validated: the two top bits are zero, the message type is Binding request, the magic cookie,
/// the header length field is a multiple of 4 and equals the rest of the datagram exactly (STUN
/// over UDP fills the datagram), and every attribute (with its padding to 4 bytes) lies inside
/// the message. Attributes after MESSAGE-INTEGRITY are ignored, as RFC 8489 §14.5 requires, so a
/// USERNAME appended after the integrity check is never returned. A USERNAME longer than 513
/// bytes is rejected.
pub fn stun_username(data: &[u8]) -> Option<&[u8]> {
    let header = data.get(..STUN_HEADER_LEN)?;
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    let msg_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if msg_type != STUN_BINDING_REQUEST
        || cookie != STUN_MAGIC_COOKIE
        || !msg_len.is_multiple_of(4)
        || data.len() != STUN_HEADER_LEN + msg_len
    {
        return None;
    }
    let mut attrs = &data[STUN_HEADER_LEN..];
    while !attrs.is_empty() {
        // The length field is a multiple of 4, so at least 4 bytes remain here.
        let attr_type = u16::from_be_bytes([*attrs.first()?, *attrs.get(1)?]);
        let attr_len = usize::from(u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]));
        let value = attrs.get(4..4 + attr_len)?;
        let padded = (attr_len + 3) & !3;
        match attr_type {
            STUN_ATTR_USERNAME => {
                return (attr_len <= STUN_USERNAME_MAX && attrs.len() >= 4 + padded).then_some(value);
            }
            STUN_ATTR_MESSAGE_INTEGRITY | STUN_ATTR_MESSAGE_INTEGRITY_SHA256 => return None,
            _ => {}
        }
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

/// Splits an ICE USERNAME `"<receiver ufrag>:<sender ufrag>"` (RFC 8445 §7.2.2) at its first
/// colon. For a request arriving at the bridge the first part is the bridge's own ufrag, which
/// identifies the endpoint. Both parts must be non-empty.
pub fn split_ice_username(username: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = username.iter().position(|&b| b == b':')?;
    let (local, rest) = username.split_at(colon);
    let remote = &rest[1..];
    (!local.is_empty() && !remote.is_empty()).then_some((local, remote))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5769 §2.1 sample Binding request (short-term credentials), username "evtj:h6vY",
    /// password "VOkJxbRl1RmTxUk/WvJxBt".
    pub(crate) const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
        0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
        0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f,
        0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
        0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    /// Builds a Binding request with the given attributes (type, value), padding each to 4.
    fn binding(msg_type: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&msg_type.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[7; 12]);
        for (t, val) in attrs {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&(val.len() as u16).to_be_bytes());
            v.extend_from_slice(val);
            while !v.len().is_multiple_of(4) {
                v.push(0);
            }
        }
        let len = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    }

    /// The RFC 5769 vector is classified as STUN and its USERNAME found.
    #[test]
    fn rfc5769_username() {
        assert_eq!(classify(&RFC5769_REQUEST), PacketKind::Stun);
        assert_eq!(stun_username(&RFC5769_REQUEST), Some(&b"evtj:h6vY"[..]));
        assert_eq!(split_ice_username(b"evtj:h6vY"), Some((&b"evtj"[..], &b"h6vY"[..])));
    }

    /// Demux follows the RFC 7983 first-byte ranges and RFC 5761 RTCP packet types.
    #[test]
    fn classify_ranges() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        rtp[1] = 96 | 0x80; // marker set, PT 96: second byte 224, still RTP
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        for pt in 192..=223u8 {
            assert_eq!(classify(&[0x81, pt, 0, 1, 0, 0, 0, 0]), PacketKind::Rtcp);
        }
        assert_eq!(classify(&[0x80, 200, 0]), PacketKind::Unknown);
        assert_eq!(classify(&rtp[..11]), PacketKind::Unknown);
        let mut dtls = [0u8; 13];
        dtls[0] = 22;
        assert_eq!(classify(&dtls), PacketKind::Dtls);
        dtls[0] = 64; // TURN channel
        assert_eq!(classify(&dtls), PacketKind::Unknown);
        dtls[0] = 17; // ZRTP
        assert_eq!(classify(&dtls), PacketKind::Unknown);
        assert_eq!(classify(&[0x40; 40]), PacketKind::Unknown); // version 1
        assert_eq!(classify(&[0xC0; 40]), PacketKind::Unknown); // version 3
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(classify(&[0; 19]), PacketKind::Unknown);
    }

    /// Malformed STUN requests are rejected rather than misread.
    #[test]
    fn stun_rejects_malformed() {
        let ok = binding(1, &[(0x8022, b"x"), (STUN_ATTR_USERNAME, b"ab:cd")]);
        assert_eq!(stun_username(&ok), Some(&b"ab:cd"[..]));
        // A Binding success response is not a request.
        assert_eq!(stun_username(&binding(0x0101, &[(STUN_ATTR_USERNAME, b"a:b")])), None);
        // Wrong cookie.
        let mut bad = ok.clone();
        bad[4] ^= 1;
        assert_eq!(stun_username(&bad), None);
        // Datagram longer than the header says.
        let mut bad = ok.clone();
        bad.extend_from_slice(&[0; 4]);
        assert_eq!(stun_username(&bad), None);
        // Length not a multiple of 4.
        let mut bad = ok.clone();
        bad.push(0);
        bad[3] += 1;
        assert_eq!(stun_username(&bad), None);
        // USERNAME length (bytes 30..32: after the 20-byte header and the 8-byte attribute
        // before it, plus type) running past the end.
        let mut bad = ok.clone();
        bad[31] = 0x20;
        assert_eq!(stun_username(&bad), None);
        // USERNAME after MESSAGE-INTEGRITY is ignored.
        let after = binding(
            1,
            &[(STUN_ATTR_MESSAGE_INTEGRITY, &[0; 20]), (STUN_ATTR_USERNAME, b"a:b")],
        );
        assert_eq!(stun_username(&after), None);
        // No USERNAME at all.
        assert_eq!(stun_username(&binding(1, &[(0x8022, b"x")])), None);
        assert_eq!(split_ice_username(b"abc"), None);
        assert_eq!(split_ice_username(b":abc"), None);
        assert_eq!(split_ice_username(b"abc:"), None);
    }

    proptest! {
        /// Arbitrary bytes never panic the demux or the STUN parser, and any USERNAME found lies
        /// inside the input.
        #[test]
        fn arbitrary_bytes_never_panic(data in any::<Vec<u8>>()) {
            let _ = classify(&data);
            if let Some(u) = stun_username(&data) {
                prop_assert!(u.len() <= data.len());
                prop_assert_eq!(classify(&data), PacketKind::Stun);
            }
        }

        /// Any USERNAME written into a well-formed request, among other attributes, is found.
        #[test]
        fn username_found(
            user in proptest::collection::vec(any::<u8>(), 0..=513),
            before in proptest::collection::vec((0x8000u16..0xFFFF, proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
        ) {
            let mut attrs: Vec<(u16, &[u8])> = before.iter().map(|(t, v)| (*t, &v[..])).collect();
            attrs.push((STUN_ATTR_USERNAME, &user));
            let msg = binding(1, &attrs);
            prop_assert_eq!(stun_username(&msg), Some(&user[..]));
        }
    }
}
