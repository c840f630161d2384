//! First-byte classification of datagrams on the shared port (RFC 7983, RFC 5761) and the
//! tiny STUN reader the shard needs to route an unknown address by its USERNAME.
//!
//! Everything here is zero-copy and bounds-checked: any input, however short or malformed,
//! yields a classification or `None`, never a panic.

/// What a datagram on the shared media port is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// STUN (first byte 0..=3, RFC 7983).
    Stun,
    /// DTLS record (first byte 20..=63).
    Dtls,
    /// SRTP (first byte 128..=191, payload type outside the RTCP range).
    Rtp,
    /// SRTCP (first byte 128..=191, packet type 192..=223, RFC 5761 §4).
    Rtcp,
    /// Anything else: TURN channel data (64..=79), ZRTP, garbage.
    Unknown,
}

/// Classify a datagram by RFC 7983 §7 and RFC 5761 §4.
pub fn classify(buf: &[u8]) -> Kind {
    let Some(&b0) = buf.first() else {
        return Kind::Unknown;
    };
    match b0 {
        0..=3 => {
            if buf.len() >= 20 {
                Kind::Stun
            } else {
                Kind::Unknown
            }
        }
        20..=63 => Kind::Dtls,
        128..=191 => {
            let Some(&b1) = buf.get(1) else {
                return Kind::Unknown;
            };
            // RFC 5761 §4: RTCP packet types 192..=223 fall, with the marker bit masked,
            // into the RTP payload type range 64..=95 which RTP must not use.
            if (192..=223).contains(&b1) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Unknown,
    }
}

/// STUN message type of a Binding request.
pub const STUN_BINDING_REQUEST: u16 = 0x0001;
/// STUN message type of a Binding success response.
pub const STUN_BINDING_SUCCESS: u16 = 0x0101;
const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
const ATTR_USERNAME: u16 = 0x0006;

/// The STUN message type, if `buf` has a well-formed STUN header (RFC 5389 §6).
pub fn stun_type(buf: &[u8]) -> Option<u16> {
    if buf.len() < 20 {
        return None;
    }
    let typ = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if typ & 0xC000 != 0 || cookie != STUN_MAGIC_COOKIE || !len.is_multiple_of(4) || 20 + len > buf.len() {
        return None;
    }
    Some(typ)
}

/// The local ufrag of a STUN Binding request: the USERNAME attribute up to its `:`
/// (RFC 8445 §7.2.2: `USERNAME = <receiver ufrag>:<sender ufrag>`).
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if stun_type(buf)? != STUN_BINDING_REQUEST {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let mut attrs = &buf[20..20 + len];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + alen)?;
        if typ == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            let (local, _) = user.split_once(':')?;
            return if local.is_empty() { None } else { Some(local) };
        }
        let padded = 4 + alen.div_ceil(4) * 4;
        attrs = attrs.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, so the scan has to skip one.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    /// RFC 7983 ranges route each protocol to the right handler.
    #[test]
    fn classify_by_first_byte() {
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&stun_request(b"a:b")), Kind::Stun);
        assert_eq!(classify(&[0, 1, 2]), Kind::Unknown, "too short for STUN");
        assert_eq!(classify(&[22, 254, 253]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 111, 0, 0]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 100, 0, 0]), Kind::Rtp, "marker bit set");
        assert_eq!(classify(&[0x81, 206, 0, 2]), Kind::Rtcp);
        assert_eq!(classify(&[0x80, 200]), Kind::Rtcp);
        assert_eq!(classify(&[0x80]), Kind::Unknown);
        assert_eq!(classify(&[64, 0, 0, 0]), Kind::Unknown, "TURN channel");
        assert_eq!(classify(&[255; 30]), Kind::Unknown);
    }

    /// The receiver's ufrag is the part of USERNAME before the colon.
    #[test]
    fn username_extraction() {
        let m = stun_request(b"bridgeufrag:clientufrag");
        assert_eq!(stun_type(&m), Some(STUN_BINDING_REQUEST));
        assert_eq!(stun_local_ufrag(&m), Some("bridgeufrag"));
        let odd = stun_request(b"abc:de"); // needs padding
        assert_eq!(stun_local_ufrag(&odd), Some("abc"));
        assert_eq!(stun_local_ufrag(&stun_request(b"nocolon")), None);
        assert_eq!(stun_local_ufrag(&stun_request(b":x")), None);
    }

    /// Truncated or lying STUN headers are rejected without panicking.
    #[test]
    fn malformed_stun() {
        let mut m = stun_request(b"u:v");
        m[3] = m[3].wrapping_add(4); // claims more attributes than present
        assert_eq!(stun_type(&m), None);
        assert_eq!(stun_local_ufrag(&m), None);
        let mut m = stun_request(b"u:v");
        m[4] = 0; // wrong magic cookie
        assert_eq!(stun_type(&m), None);
        let mut m = stun_request(b"u:v");
        // USERNAME length larger than the message.
        let n = m.len();
        m[n - 6] = 0x40;
        assert_eq!(stun_local_ufrag(&m), None);
        for len in 0..m.len() {
            let _ = stun_local_ufrag(&m[..len]);
        }
    }
}
