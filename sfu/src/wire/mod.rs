//! Zero-copy wire formats for the media port: first-byte demux and STUN USERNAME ([`demux`]),
//! the RTP fixed header and header extensions ([`rtp`]), and RTCP compound packets ([`rtcp`]).
//!
//! Everything here parses from `&[u8]` and writes into `&mut [u8]`, returning the number of
//! bytes written; nothing allocates, nothing panics on network input. Parsers return small
//! `Copy` views (offsets plus decoded fields) that either borrow the packet or, for RTP, hold
//! only offsets so the same buffer can then be rewritten in place. See `docs/wire.md` for the
//! RFCs followed and what is validated.

pub mod demux;
pub mod rtcp;
pub mod rtp;
pub mod stun;

pub use demux::{classify, split_ice_username, stun_username, PacketKind};
pub use rtcp::{
    write_bye, write_fir, write_nack, write_pli, write_remb, write_rr, write_sr, write_twcc, App, Bye, Fir, FirEntry,
    Nack, NackPair, Pli, RawRtcp, ReceiverReport, Remb, ReportBlock, RtcpCompound, RtcpError, RtcpHeader, RtcpPacket,
    Sdes, SenderInfo, SenderReport, TransportCc, TwccPacket,
};
pub use rtp::{
    is_newer_seq, seq_delta, AudioLevel, ExtensionForm, ExtensionWriter, Extensions, RtpError, RtpHeader,
    RtpHeaderFields, SeqExtender,
};

/// A writer was given a buffer too small for what it must write, or input it cannot encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer is shorter than the packet.
    #[error("output buffer too short: need {need} bytes, have {have}")]
    BufferTooShort {
        /// Bytes the packet needs (at least).
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// More items than the format's count or length field can carry.
    #[error("too many {what} for one packet: {count} (max {max})")]
    TooMany {
        /// What was counted ("report blocks", "CSRCs", …).
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The format's limit.
        max: usize,
    },
    /// A value the format cannot represent (an extension id out of range, an empty NACK, …).
    #[error("cannot encode {what}")]
    Unencodable {
        /// What could not be encoded.
        what: &'static str,
    },
}

/// Returns `buf[..need]` mutably, or the `BufferTooShort` error.
pub(crate) fn out(buf: &mut [u8], need: usize) -> Result<&mut [u8], WriteError> {
    let have = buf.len();
    buf.get_mut(..need).ok_or(WriteError::BufferTooShort { need, have })
}

/// Big-endian reads over a slice already checked to be long enough by the caller. Kept as
/// functions so parsing code reads like the RFC diagrams.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
