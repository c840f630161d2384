//! Source description (RFC 3550 §6.5). The bridge consumes SDES without reading it (Jitsi
//! signals sources out of band), so only the chunk count and the raw body are exposed.

use super::RtcpHeader;

/// A source description packet (PT 202), content not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sdes<'a> {
    /// The SC field: number of chunks.
    pub chunk_count: u8,
    /// The chunks, undecoded (padding removed).
    pub body: &'a [u8],
}

impl<'a> Sdes<'a> {
    pub(super) fn parse(h: RtcpHeader, body: &'a [u8]) -> Self {
        Self {
            chunk_count: h.count,
            body,
        }
    }
}
