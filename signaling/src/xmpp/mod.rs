//! Palim's own thin XMPP client: what JVB's jicoco `MucClient` does, and nothing more
//! (spec/colibri.md §1–§2, §5, §7; why not tokio-xmpp: notes/xmpp.md).
//!
//! * c2s over TCP with `TCP_NODELAY` and `TCP_QUICKACK` re-armed after each read; STARTTLS with
//!   tokio-rustls (optionally trusting any certificate); SASL SCRAM-SHA-256 / SCRAM-SHA-1 /
//!   PLAIN; resource bind. No stream management (XEP-0198): after any disconnect we simply
//!   log in again and rejoin, which is all Jicofo needs.
//! * An incremental, restricted XML reader yields one `minidom::Element` per stanza, each
//!   carrying its resolved namespace (`jabber:client` for stanzas). Stanza size and depth are
//!   bounded; DTDs and entity declarations are refused.
//! * Brewery MUC: join every `muc_jids` room with `muc_nickname`, presence with
//!   `<stats xmlns="http://jitsi.org/protocol/colibri">` from a [`PresenceSource`] at join and
//!   every `presence_interval`; occupants tracked from presence; a room we create is made
//!   non-anonymous.
//! * IQ requests: `urn:xmpp:ping` is answered for anyone. Everything else must come from an
//!   occupant of a configured room (bare `from` == room JID, case-insensitive, as JVB) or gets
//!   `forbidden` (type auth). Then `healthcheck` is answered from [`IqHandler::health_check`],
//!   `jabber:iq:version` and disco#info by the client, payloads the handler
//!   [accepts](IqHandler::accepts) (default: `jitsi:colibri2`) go to [`IqHandler::handle_iq`],
//!   and anything else gets `service-unavailable`.
//!   A structurally malformed request (wrong type, no id, zero or several children) gets
//!   `bad-request`; a known payload with the wrong type (e.g. `set` healthcheck) too.
//! * Reconnect forever with a capped exponential backoff (1 s doubling to 5 s), rejoining every time; XMPP ping to the
//!   server every 30 s, a missed answer drops the connection. [`XmppClient::shutdown`] leaves
//!   the rooms with unavailable presence and closes the stream.
//!
//! One [`XmppClient`] is one connection (one JVB `xmpp-client.configs` entry); run several for
//! several XMPP servers.

mod client;
mod config;
mod iq;
mod muc;
pub mod ns;
mod reader;
mod stream;
mod tls;

use thiserror::Error;

pub use client::{reconnect_backoff, ConnectionState, RoomState, SendIqError, XmppClient};
pub use config::{Password, SecurityMode, XmppConfig};
pub use iq::{Condition, ErrorType, IncomingIq, IqHandler, IqResponse, IqType, RejectAll, StanzaError};
pub use muc::{format_timestamp, parse_stats, BridgeStats, Occupant, PresenceEvent, PresenceSource};
pub use reader::ReadError;

/// Why a connection attempt or an established connection failed. The client logs it, records
/// it in [`ConnectionState::last_error`] and reconnects.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum XmppError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("incoming XML: {0}")]
    Read(#[from] ReadError),
    #[error("invalid XMPP configuration: {0}")]
    Config(String),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("the server does not offer STARTTLS and TLS is required")]
    StartTlsNotOffered,
    #[error("no usable SASL mechanism among {0:?}")]
    NoSaslMechanism(Vec<String>),
    #[error("SASL: {0}")]
    Sasl(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("resource bind failed: {0}")]
    Bind(String),
    #[error("stream error <{condition}/>: {text}")]
    StreamError { condition: String, text: String },
    #[error("the server closed the stream")]
    StreamClosed,
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("no answer to the keepalive ping")]
    PingTimeout,
    #[error("protocol: {0}")]
    Protocol(String),
}
