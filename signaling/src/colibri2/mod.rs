//! The Colibri2 data model (colibri.md §3): `conference-modify` requests and
//! `conference-modified` responses, parsed from and written to XML ([`xml`]) and JSON ([`json`]).
//!
//! Both wire forms map to the same plain types below, so the [`handler`] never sees either.
//! Parsing is tolerant (unknown elements and attributes are ignored, as JVB does) but bounded:
//! every list and string has a limit ([`limits`]), so hostile input cannot make us allocate
//! without bound. A missing required attribute or a malformed number is a [`ParseError`], which
//! the handler answers with `bad-request`.

pub mod error;
pub mod handler;
pub mod json;
pub mod xml;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Colibri2Error, ErrorCondition, ErrorType, Reason};
pub use handler::{
    Colibri2Handler, ConferenceInfo, EndpointGoneHook, FocusAuth, HandlerConfig, HandlerCounts, LimitReport, MediaCore,
    WebSocketAdvert, WebSocketTarget,
};

use sfu::control::MediaKind;

/// Namespaces used inside Colibri2 messages (colibri.md §3.1).
pub mod ns {
    pub const COLIBRI2: &str = "jitsi:colibri2";
    pub const RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
    pub const RTCP_FB: &str = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0";
    pub const RTP_HDREXT: &str = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0";
    pub const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
    pub const DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
    /// Colibri v1, still used for `<web-socket>`.
    pub const COLIBRI: &str = "http://jitsi.org/protocol/colibri";
    pub const SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
}

/// Bounds on what one request may contain. Jicofo stays far below all of them.
pub mod limits {
    /// Endpoints in one request (batch expiry / force-mute of a whole conference).
    pub const ENDPOINTS: usize = 1000;
    pub const RELAYS: usize = 64;
    pub const MEDIA: usize = 8;
    pub const PAYLOAD_TYPES: usize = 64;
    pub const PARAMETERS: usize = 32;
    pub const RTCP_FBS: usize = 16;
    pub const HDREXTS: usize = 32;
    pub const CANDIDATES: usize = 64;
    pub const FINGERPRINTS: usize = 8;
    pub const WEB_SOCKETS: usize = 8;
    pub const CAPABILITIES: usize = 16;
    /// Media sources per endpoint (Jicofo allows 20 SSRCs per endpoint).
    pub const MEDIA_SOURCES: usize = 32;
    pub const SOURCES: usize = 64;
    pub const SSRC_GROUPS: usize = 64;
    pub const GROUP_SSRCS: usize = 16;
    /// Children of one element we look at, known or not (unknown ones are skipped, but counted).
    pub const CHILDREN: usize = 4096;
    /// Any id, name, uri, fingerprint or other attribute/text value.
    pub const STRING: usize = 2048;
}

/// `<conference-modify>` (colibri.md §3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceModify {
    pub meeting_id: String,
    /// The room JID; sent only with `create`.
    pub name: Option<String>,
    pub create: bool,
    pub expire: bool,
    pub rtcstats_enabled: Option<bool>,
    pub endpoints: Vec<Endpoint>,
    /// Relays are parsed only far enough to refuse them (feature-not-implemented).
    pub relays: Vec<Relay>,
    /// A `<connects>` element was present (media export; accepted and ignored).
    pub connects: bool,
}

/// `<endpoint>` in a request (colibri.md §3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub create: bool,
    pub expire: bool,
    pub stats_id: Option<String>,
    pub muc_role: Option<String>,
    pub media: Vec<Media>,
    pub transport: Option<Transport>,
    /// `None`: no `<sources>` element; `Some(vec![])`: an empty one (clears all sources).
    pub sources: Option<Vec<MediaSource>>,
    pub force_mute: Option<ForceMute>,
    pub capabilities: Vec<String>,
    pub initial_last_n: Option<i32>,
}

impl Endpoint {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }

    /// `muc-role="visitor"`: receive-only.
    pub fn is_visitor(&self) -> bool {
        self.muc_role.as_deref() == Some("visitor")
    }
}

/// `<media type>` (colibri.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    pub payload_types: Vec<PayloadType>,
    pub rtp_hdrexts: Vec<RtpHdrExt>,
    pub extmap_allow_mixed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadType {
    /// 0–127.
    pub id: u8,
    pub name: Option<String>,
    pub clockrate: Option<u32>,
    pub channels: Option<u32>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    /// `(name, value)`; RED carries a parameter without a name.
    pub parameters: Vec<(Option<String>, String)>,
    pub rtcp_fbs: Vec<RtcpFb>,
}

impl PayloadType {
    /// The value of the first parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpFb {
    pub fb_type: String,
    pub subtype: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHdrExt {
    /// 1–14 (one-byte) or up to 255.
    pub id: u8,
    pub uri: String,
    pub senders: Option<String>,
    pub attributes: Option<String>,
}

/// The colibri2 `<transport>` wrapper (colibri.md §3.5). Used in requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    pub ice_controlling: bool,
    pub use_unique_port: bool,
    pub ice_restart: bool,
    pub ice: Option<IceUdpTransport>,
    pub sctp: Option<Sctp>,
}

/// `<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1">`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceUdpTransport {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub ice_generation: Option<u32>,
    pub rtcp_mux: bool,
    pub candidates: Vec<Candidate>,
    pub fingerprints: Vec<DtlsFingerprint>,
    pub web_sockets: Vec<WebSocket>,
}

/// An ICE `<candidate>` as signalled (numbers parsed, everything else kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub component: u16,
    pub foundation: String,
    pub generation: u32,
    pub id: Option<String>,
    /// Not necessarily a literal address: browsers send mDNS names.
    pub ip: String,
    pub port: u16,
    pub priority: u32,
    pub protocol: String,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub cand_type: String,
    pub rel_addr: Option<String>,
    pub rel_port: Option<u16>,
    pub network: Option<u32>,
    pub tcptype: Option<String>,
}

/// A DTLS `<fingerprint>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsFingerprint {
    /// Colon-separated hex, as signalled.
    pub fingerprint: String,
    pub hash: Option<String>,
    pub setup: Option<String>,
    pub cryptex: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocket {
    pub url: Option<String>,
    pub active: bool,
}

/// `<sctp port role>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sctp {
    pub port: Option<u16>,
    pub role: Option<String>,
}

/// `<media-source type id>` (colibri.md §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSource {
    pub kind: MediaKind,
    /// The source name, e.g. `a1b2c3d4-v0`.
    pub id: String,
    pub synthetic: bool,
    pub sources: Vec<Source>,
    pub ssrc_groups: Vec<SsrcGroupDesc>,
}

/// An ssma `<source>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub ssrc: u32,
    pub name: Option<String>,
    pub video_type: Option<String>,
    pub rid: Option<String>,
    pub msid: Option<String>,
}

/// An ssma `<ssrc-group>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcGroupDesc {
    /// `SIM`, `FID` or `FEC-FR`.
    pub semantics: String,
    pub ssrcs: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForceMute {
    pub audio: bool,
    pub video: bool,
}

/// `<relay>`: parsed only to be refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relay {
    pub id: String,
    pub create: bool,
    pub expire: bool,
    pub mesh_id: Option<String>,
    /// It carries create, media, transport or endpoints (anything but a bare expire).
    pub has_content: bool,
}

/// `<conference-modified>` (colibri.md §3.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceModified {
    pub endpoints: Vec<EndpointResponse>,
    /// The feedback sources `jvb-a0`/`jvb-v0`, on any response that created something.
    pub sources: Option<Vec<MediaSource>>,
}

/// One `<endpoint>` in a response: only `id`, plus `expire="true"` or a transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointResponse {
    pub id: String,
    pub expire: bool,
    pub transport: Option<Transport>,
}

/// Why a Colibri2 message could not be parsed. Always answered with `bad-request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("expected <{0}> in namespace {1}")]
    WrongElement(&'static str, &'static str),
    #[error("missing required attribute '{attr}' on <{element}>")]
    MissingAttribute { element: &'static str, attr: &'static str },
    #[error("invalid value for '{attr}' on <{element}>: {value:?}")]
    InvalidValue {
        element: &'static str,
        attr: &'static str,
        value: String,
    },
    #[error("too many <{0}> elements (limit {1})")]
    TooMany(&'static str, usize),
    #[error("value of '{0}' is too long")]
    TooLong(&'static str),
    #[error("invalid JSON: {0}")]
    Json(String),
}

pub(crate) fn media_kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub(crate) fn parse_media_kind(
    element: &'static str,
    attr: &'static str,
    value: &str,
) -> Result<MediaKind, ParseError> {
    // JVB parses MediaType case-insensitively.
    if value.eq_ignore_ascii_case("audio") {
        Ok(MediaKind::Audio)
    } else if value.eq_ignore_ascii_case("video") {
        Ok(MediaKind::Video)
    } else {
        Err(ParseError::InvalidValue {
            element,
            attr,
            value: truncated(value),
        })
    }
}

/// A value for an error message: hostile input is not echoed at full length.
pub(crate) fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Checks a string against [`limits::STRING`].
pub(crate) fn bounded(what: &'static str, value: &str) -> Result<(), ParseError> {
    if value.len() > limits::STRING {
        Err(ParseError::TooLong(what))
    } else {
        Ok(())
    }
}
