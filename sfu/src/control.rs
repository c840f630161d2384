//! Commands into the core and events out of it: plain data, no serde, no XML.
//!
//! `signaling` translates Colibri2 (XMPP or REST) into [`Command`]s and the core's
//! [`Event`]s back into bridge-channel messages and stats. Nothing here knows about
//! Jitsi's string ids: those are interned into [`EndpointId`]s by `signaling`.

use std::net::SocketAddr;

use crate::id::{ConferenceId, EndpointId, Ssrc};

/// A request to the media core. Every command names the conference it acts on, so the
/// driver can route it to the shard that owns that conference.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Create an empty conference. Replies [`Reply::ConferenceCreated`].
    CreateConference { conf: ConferenceId },
    /// Tear down a conference and all its endpoints. Unknown conferences are not an error.
    ExpireConference { conf: ConferenceId },
    /// Create an endpoint with fresh ICE credentials. Replies [`Reply::EndpointCreated`].
    CreateEndpoint {
        conf: ConferenceId,
        ep: EndpointId,
        /// The bridge's ICE role. Jicofo always sends `true` (media.md §1.1).
        ice_controlling: bool,
        /// Accept an SCTP association (data channel) over this endpoint's DTLS.
        sctp: bool,
        /// A visitor never sends media: nothing from it is forwarded except PLI/FIR.
        visitor: bool,
        /// The endpoint's Colibri2 id (as the bridge channel names endpoints).
        name: String,
        /// Colibri2 capability `ssrc-rewriting` (media.md §3.5): the endpoint receives every
        /// source on a bounded pool of bridge-chosen SSRCs announced by `VideoSourcesMap` /
        /// `AudioSourcesMap` on the bridge channel, not on the sources' own SSRCs.
        ssrc_rewriting: bool,
    },
    /// Add payload types and RTP header extensions (additive, as JVB).
    SetMedia {
        conf: ConferenceId,
        ep: EndpointId,
        media: MediaDescription,
    },
    /// The client's transport: ICE credentials, candidates, DTLS fingerprints.
    SetRemoteTransport {
        conf: ConferenceId,
        ep: EndpointId,
        transport: RemoteTransport,
    },
    /// Colibri2 `ice-restart` (colibri.md §4.3): new local ICE credentials for the endpoint,
    /// same candidates and DTLS certificate; the DTLS association and SRTP keys are kept.
    /// Replies [`Reply::IceRestarted`]. The old credentials keep working until the first
    /// authenticated STUN exchange with the new ones (the remote's new credentials arrive by
    /// a later [`Command::SetRemoteTransport`]); after that, STUN naming the old ufrag is
    /// dropped (counted as `stale_ufrag`). While ICE has not connected yet, or while a restart
    /// is already in progress, the reply carries the credentials in use (or in progress).
    RestartIce { conf: ConferenceId, ep: EndpointId },
    /// Replace the endpoint's whole source set (Colibri2 sends full sets, never deltas).
    SetSources {
        conf: ConferenceId,
        ep: EndpointId,
        sources: Vec<SourceDescription>,
    },
    /// Colibri2 `force-mute`: drop the endpoint's audio (packets carrying the audio-level
    /// extension) and/or all its video, hidden from receivers by sequence masking (media.md §6).
    SetForceMute {
        conf: ConferenceId,
        ep: EndpointId,
        audio: bool,
        video: bool,
    },
    /// Colibri2 `initial-last-n` (−1 unlimited) for what the endpoint receives.
    SetInitialLastN {
        conf: ConferenceId,
        ep: EndpointId,
        last_n: i32,
    },
    /// Remove an endpoint. Unknown endpoints are not an error.
    ExpireEndpoint { conf: ConferenceId, ep: EndpointId },
    /// A bridge-channel message from the endpoint that arrived outside SCTP (the colibri-ws
    /// websocket); handled exactly as one from its data channel.
    BridgeChannelMessage {
        conf: ConferenceId,
        ep: EndpointId,
        text: String,
    },
    /// The endpoint's colibri-ws websocket connected (`open`) or went away. While it is the
    /// active channel, messages for the endpoint come out as [`Event::BridgeChannelSend`].
    BridgeChannelWebSocket {
        conf: ConferenceId,
        ep: EndpointId,
        open: bool,
    },
    /// Send a UTF-8 bridge-channel message to the endpoint over its SCTP data channel.
    SendDataChannelText {
        conf: ConferenceId,
        ep: EndpointId,
        text: String,
    },
    /// Fault injection (robustness.md case 57): panic while processing this conference, so
    /// tests can check that only it is torn down. Reachable only through the REST route that
    /// `[rest] fault_injection = true` enables; never sent by Colibri2.
    #[doc(hidden)]
    InjectPanic { conf: ConferenceId, site: FaultSite },
}

/// Where [`Command::InjectPanic`] makes the core panic.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSite {
    /// While executing the command itself (its reply is the caught panic's error).
    Command,
    /// In the conference's next timer pass.
    Timer,
    /// While handling the next datagram routed to the conference.
    Datagram,
}

impl Command {
    /// The conference this command acts on (for routing to a shard).
    pub fn conference(&self) -> ConferenceId {
        match self {
            Command::CreateConference { conf }
            | Command::ExpireConference { conf }
            | Command::CreateEndpoint { conf, .. }
            | Command::SetMedia { conf, .. }
            | Command::SetRemoteTransport { conf, .. }
            | Command::RestartIce { conf, .. }
            | Command::SetSources { conf, .. }
            | Command::ExpireEndpoint { conf, .. }
            | Command::SendDataChannelText { conf, .. }
            | Command::BridgeChannelMessage { conf, .. }
            | Command::BridgeChannelWebSocket { conf, .. }
            | Command::SetForceMute { conf, .. }
            | Command::SetInitialLastN { conf, .. }
            | Command::InjectPanic { conf, .. } => *conf,
        }
    }
}

/// The successful answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    Done,
    /// The bridge's own SSRCs for RTCP it originates: Colibri2's feedback sources
    /// `jvb-a0` / `jvb-v0` (colibri.md §3.6).
    ConferenceCreated {
        audio_ssrc: Ssrc,
        video_ssrc: Ssrc,
    },
    /// The bridge side of a new endpoint's transport.
    EndpointCreated(LocalTransport),
    /// The bridge side of the endpoint's transport after [`Command::RestartIce`].
    IceRestarted {
        transport: LocalTransport,
        /// The restart's `ice-generation` (1, 2, …); `None` when no restart was started
        /// because ICE had not connected yet (the transport then carries the current
        /// credentials, as JVB answers).
        generation: Option<u32>,
    },
}

/// Why a [`Command`] was refused. `signaling` maps these to Colibri2 errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("conference {0} not found")]
    ConferenceNotFound(ConferenceId),
    #[error("conference {0} already exists")]
    ConferenceExists(ConferenceId),
    #[error("endpoint {ep} not found in conference {conf}")]
    EndpointNotFound { conf: ConferenceId, ep: EndpointId },
    #[error("endpoint {ep} already exists in conference {conf}")]
    EndpointExists { conf: ConferenceId, ep: EndpointId },
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The bridge's side of an endpoint's transport, as sent back to Jicofo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTransport {
    pub ufrag: String,
    pub pwd: String,
    /// SHA-256 of the process certificate, colon-separated upper-case hex.
    pub fingerprint_sha256: String,
    /// Host candidates (and advertised public addresses) on the shared UDP port, best first.
    pub candidates: Vec<LocalCandidate>,
}

/// One candidate the bridge advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCandidate {
    pub addr: SocketAddr,
    /// ICE priority (RFC 8445 §5.1.2).
    pub priority: u32,
    pub foundation: String,
    pub kind: CandidateKind,
    /// For srflx candidates: the host address it maps.
    pub related: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    Host,
    Srflx,
}

/// The client's transport as forwarded by Jicofo from Jingle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTransport {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub fingerprints: Vec<Fingerprint>,
    /// Literal UDP candidates only; signaling drops TCP and hostname candidates.
    pub candidates: Vec<SocketAddr>,
}

/// A signalled DTLS certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Lower-case hash name: `sha-256`, `sha-384`, `sha-512` or `sha-1`.
    pub hash: String,
    /// The digest bytes (decoded from colon-separated hex).
    pub value: Vec<u8>,
    pub setup: Option<Setup>,
}

/// The DTLS role the remote side announced (RFC 4145 `a=setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// Payload types and header extensions signalled for one media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: MediaKind,
    pub payload_types: Vec<PayloadType>,
    pub extensions: Vec<RtpExtension>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    pub pt: u8,
    /// Codec name as signalled (`opus`, `VP8`, `rtx`, …).
    pub name: String,
    pub clock_rate: u32,
    /// For `rtx`: the payload type it retransmits (`apt`).
    pub apt: Option<u8>,
    /// RTCP feedback as signalled: (`type`, `subtype`), e.g. (`nack`, `pli`), (`transport-cc`, None).
    pub feedback: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpExtension {
    pub id: u8,
    pub uri: String,
}

/// One media source (a microphone, camera or screen share) with all its SSRCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDescription {
    pub kind: MediaKind,
    /// The source name, e.g. `a1b2c3d4-v0`.
    pub name: String,
    pub ssrcs: Vec<Ssrc>,
    pub groups: Vec<SsrcGroup>,
    pub video_type: Option<VideoType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoType {
    Camera,
    Desktop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcGroup {
    pub semantics: GroupSemantics,
    pub ssrcs: Vec<Ssrc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSemantics {
    /// Simulcast encodings, lowest first.
    Sim,
    /// Primary and its RTX.
    Fid,
    FecFr,
}

/// Something the core tells the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// ICE selected a pair for the endpoint.
    IceConnected {
        conf: ConferenceId,
        ep: EndpointId,
        remote: SocketAddr,
    },
    /// DTLS completed and SRTP keys are installed.
    DtlsConnected { conf: ConferenceId, ep: EndpointId },
    /// DTLS failed (wrong fingerprint, bad alert, timeout); the endpoint gets no media.
    DtlsFailed {
        conf: ConferenceId,
        ep: EndpointId,
        reason: String,
    },
    /// ICE failed or consent was lost.
    IceFailed { conf: ConferenceId, ep: EndpointId },
    /// The endpoint was expired by the core itself (no activity, never connected).
    EndpointExpired {
        conf: ConferenceId,
        ep: EndpointId,
        reason: ExpireReason,
    },
    /// The client opened its bridge-channel data channel.
    DataChannelOpen { conf: ConferenceId, ep: EndpointId },
    /// A bridge-channel message for the endpoint's websocket (its active channel, media.md §2.1).
    BridgeChannelSend {
        conf: ConferenceId,
        ep: EndpointId,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireReason {
    /// No incoming RTP, RTCP or ICE for `endpoint_timeout` (60 s).
    Inactive,
    /// ICE neither connected nor failed within 2 minutes of creation.
    NeverConnected,
    IceFailed,
    /// Processing of its conference panicked: the whole conference was torn down (the other
    /// conferences of the shard are unaffected).
    ConferencePanicked,
}
