//! XML namespaces used by the client.

pub const CLIENT: &str = "jabber:client";
pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const DATA_FORMS: &str = "jabber:x:data";
pub const PING: &str = "urn:xmpp:ping";
pub const VERSION: &str = "jabber:iq:version";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Jitsi health check IQ (spec/colibri.md §5).
pub const HEALTHCHECK: &str = "http://jitsi.org/protocol/healthcheck";
/// Colibri (v1) namespace, still used for `<stats>` in brewery presence (§2.1).
pub const COLIBRI: &str = "http://jitsi.org/protocol/colibri";
/// Colibri2 (§3), for error extensions.
pub const COLIBRI2: &str = "jitsi:colibri2";
