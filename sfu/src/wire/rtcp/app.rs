//! Application-defined packets (RFC 3550 §6.7): framed and skipped.

use super::{malformed, RtcpError, RtcpHeader};
use crate::id::Ssrc;
use crate::wire::be32;

/// An APP packet (PT 204), content not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct App<'a> {
    /// The 5-bit subtype.
    pub subtype: u8,
    /// The sender.
    pub ssrc: Ssrc,
    /// Four ASCII characters naming the application.
    pub name: [u8; 4],
    /// Application-dependent data.
    pub data: &'a [u8],
}

impl<'a> App<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Result<Self, RtcpError> {
        if body.len() < 8 {
            return Err(malformed(h, "APP shorter than SSRC and name"));
        }
        Ok(Self {
            subtype: h.count,
            ssrc: Ssrc(be32(body, 0)),
            name: [body[4], body[5], body[6], body[7]],
            data: &body[8..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    /// An APP packet is framed and its fields exposed, data untouched.
    #[test]
    fn parse_app() {
        let p = [0x83, 204, 0, 3, 0, 0, 0, 9, b'T', b'E', b'S', b'T', 1, 2, 3, 4];
        let Some(Ok(RtcpPacket::App(app))) = RtcpCompound::new(&p).next() else {
            panic!("expected APP");
        };
        assert_eq!(
            app,
            App {
                subtype: 3,
                ssrc: Ssrc(9),
                name: *b"TEST",
                data: &[1, 2, 3, 4]
            }
        );
        assert!(RtcpCompound::new(&p[..8]).next().is_some_and(|r| r.is_err()));
    }
}
