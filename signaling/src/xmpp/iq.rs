//! IQ requests in, IQ results and errors out: the types the handler sees, the stanza-error
//! model (several extension elements, as Colibri2's `unknown_endpoint` needs), and the pure
//! functions that classify a request and build its reply.

use std::future::Future;
use std::sync::Arc;

use minidom::rxml::{Namespace, NcName};
use minidom::Element;

use super::ns;

/// `get` or `set` (Jicofo sends Colibri2 as `get`; both must be served, §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
}

impl IqType {
    pub fn as_str(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
        }
    }
}

/// An admitted IQ request (from an occupant of a configured brewery room).
#[derive(Debug, Clone)]
pub struct IncomingIq {
    pub id: String,
    /// The requester, e.g. `jvbbrewery@internal-muc.meet.jitsi/focus`.
    pub from: String,
    /// The requester's real JID, when the room disclosed it in the occupant's presence.
    pub from_real_jid: Option<String>,
    /// Our own full JID as the server addressed it.
    pub to: String,
    pub kind: IqType,
    /// The one child element, e.g. `<conference-modify xmlns="jitsi:colibri2">`.
    pub payload: Element,
}

/// The handler's answer to one IQ.
#[derive(Debug, Clone)]
pub enum IqResponse {
    /// `type="result"`, with or without a child.
    Result(Option<Element>),
    /// `type="error"`.
    Error(StanzaError),
}

/// Application side of the client: Colibri2 and anything else admitted by the brewery check.
///
/// Only payloads for which [`Self::accepts`] is true reach `handle_iq` (default: the
/// `jitsi:colibri2` namespace); the client answers every other unknown payload with
/// `service-unavailable` itself (§1.3).
///
/// `handle_iq` is called **on the connection task, in stanza order**. Whatever it does before
/// returning its future (e.g. push the request onto a per-conference queue) therefore happens
/// in the order Jicofo sent the requests; the returned future is then spawned and awaited with
/// `XmppConfig::iq_handler_timeout`. An `async fn handle_iq(self: Arc<Self>, ..)` is fine too
/// when ordering does not matter. Health checks and pings never reach `handle_iq`.
pub trait IqHandler: Send + Sync + 'static {
    fn handle_iq(self: Arc<Self>, iq: IncomingIq) -> impl Future<Output = IqResponse> + Send + 'static;

    /// Whether this request payload is for the handler. Default: any `jitsi:colibri2` element.
    fn accepts(&self, payload: &Element) -> bool {
        payload.ns() == ns::COLIBRI2
    }

    /// The cached health result, answered to Jicofo's `<healthcheck/>` IQ (§5): `Ok` gives an
    /// empty result, `Err(reason)` an `internal-server-error` carrying the reason as text.
    /// Must not block.
    fn health_check(&self) -> Result<(), String>;
}

/// The null handler: every request gets `service-unavailable`; healthy. For clients that only
/// watch or send (the test focus) and as the default strategy.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectAll;

impl IqHandler for RejectAll {
    fn handle_iq(self: Arc<Self>, _iq: IncomingIq) -> impl Future<Output = IqResponse> + Send + 'static {
        std::future::ready(IqResponse::Error(StanzaError::new(
            Condition::ServiceUnavailable,
            "Unsupported IQ request",
        )))
    }

    fn health_check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// RFC 6120 §8.3.3 defined conditions (`urn:ietf:params:xml:ns:xmpp-stanzas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

const CONDITIONS: &[(Condition, &str)] = &[
    (Condition::BadRequest, "bad-request"),
    (Condition::Conflict, "conflict"),
    (Condition::FeatureNotImplemented, "feature-not-implemented"),
    (Condition::Forbidden, "forbidden"),
    (Condition::Gone, "gone"),
    (Condition::InternalServerError, "internal-server-error"),
    (Condition::ItemNotFound, "item-not-found"),
    (Condition::JidMalformed, "jid-malformed"),
    (Condition::NotAcceptable, "not-acceptable"),
    (Condition::NotAllowed, "not-allowed"),
    (Condition::NotAuthorized, "not-authorized"),
    (Condition::PolicyViolation, "policy-violation"),
    (Condition::RecipientUnavailable, "recipient-unavailable"),
    (Condition::Redirect, "redirect"),
    (Condition::RegistrationRequired, "registration-required"),
    (Condition::RemoteServerNotFound, "remote-server-not-found"),
    (Condition::RemoteServerTimeout, "remote-server-timeout"),
    (Condition::ResourceConstraint, "resource-constraint"),
    (Condition::ServiceUnavailable, "service-unavailable"),
    (Condition::SubscriptionRequired, "subscription-required"),
    (Condition::UndefinedCondition, "undefined-condition"),
    (Condition::UnexpectedRequest, "unexpected-request"),
];

impl Condition {
    pub fn as_str(self) -> &'static str {
        CONDITIONS
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, s)| *s)
            .unwrap_or("undefined-condition")
    }

    pub fn parse(s: &str) -> Option<Self> {
        CONDITIONS.iter().find(|(_, n)| *n == s).map(|(c, _)| *c)
    }

    /// The error type Smack (and so JVB) puts with this condition (§3.12).
    pub fn default_type(self) -> ErrorType {
        match self {
            Condition::BadRequest
            | Condition::JidMalformed
            | Condition::NotAcceptable
            | Condition::PolicyViolation
            | Condition::Redirect
            | Condition::Gone => ErrorType::Modify,
            Condition::Forbidden
            | Condition::NotAuthorized
            | Condition::RegistrationRequired
            | Condition::SubscriptionRequired => ErrorType::Auth,
            Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint
            | Condition::UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza `<error>`: condition, type, optional English text, and any number of
/// application extension elements (Colibri2's `<error reason=…/>` and `<endpoint id=…/>`).
#[derive(Debug, Clone, PartialEq)]
pub struct StanzaError {
    pub error_type: ErrorType,
    pub condition: Condition,
    pub text: Option<String>,
    pub extensions: Vec<Element>,
}

impl StanzaError {
    /// With the condition's default type (Smack's, see [`Condition::default_type`]).
    pub fn new(condition: Condition, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            error_type: condition.default_type(),
            condition,
            text: (!text.is_empty()).then_some(text),
            extensions: Vec::new(),
        }
    }

    pub fn with_type(mut self, error_type: ErrorType) -> Self {
        self.error_type = error_type;
        self
    }

    pub fn with_extension(mut self, el: Element) -> Self {
        self.extensions.push(el);
        self
    }

    /// `<error xmlns="jitsi:colibri2" reason="…"/>`, the extension Jicofo reads (§3.12).
    pub fn colibri2_reason(reason: &str) -> Element {
        let mut el = Element::bare("error", ns::COLIBRI2);
        set_attr(&mut el, "reason", reason);
        el
    }

    /// `<endpoint xmlns="jitsi:colibri2" id="…"/>`, with reason `unknown_endpoint` (§3.12).
    pub fn colibri2_endpoint(id: &str) -> Element {
        let mut el = Element::bare("endpoint", ns::COLIBRI2);
        set_attr(&mut el, "id", id);
        el
    }

    /// The `<error>` element.
    pub fn to_element(&self) -> Element {
        let mut err = Element::bare("error", ns::CLIENT);
        set_attr(&mut err, "type", self.error_type.as_str());
        err.append_child(Element::bare(self.condition.as_str(), ns::STANZAS));
        if let Some(text) = &self.text {
            let mut t = Element::bare("text", ns::STANZAS);
            if let Ok(lang) = NcName::try_from("lang") {
                t.set_attr(Namespace::xml().clone(), lang, "en");
            }
            t.append_text(text.clone());
            err.append_child(t);
        }
        for ext in &self.extensions {
            err.append_child(ext.clone());
        }
        err
    }

    /// Reads the `<error>` child of an error stanza. Unknown conditions become
    /// `undefined-condition`; a missing type becomes the condition's default.
    pub fn from_stanza(stanza: &Element) -> Option<Self> {
        let err = stanza.children().find(|c| c.name() == "error")?;
        let mut condition = Condition::UndefinedCondition;
        let mut text = None;
        let mut extensions = Vec::new();
        for child in err.children() {
            if child.ns() == ns::STANZAS {
                if child.name() == "text" {
                    text = Some(child.text());
                } else if let Some(c) = Condition::parse(child.name()) {
                    condition = c;
                }
            } else {
                extensions.push(child.clone());
            }
        }
        let error_type = err
            .attr("type")
            .and_then(ErrorType::parse)
            .unwrap_or(condition.default_type());
        Some(Self {
            error_type,
            condition,
            text,
            extensions,
        })
    }
}

impl std::fmt::Display for StanzaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.condition.as_str(), self.error_type.as_str())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StanzaError {}

/// Sets a no-namespace attribute. Names are our own constants, always valid NCNames.
pub(crate) fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    match NcName::try_from(name) {
        Ok(n) => el.set_attr(Namespace::NONE, n, value.into()),
        Err(_) => debug_assert!(false, "invalid attribute name {name}"),
    }
}

/// What an incoming `<iq>` is, before admission.
#[derive(Debug)]
pub(crate) enum IqKind<'a> {
    /// A well-formed request: `get`/`set`, an `id`, exactly one child element.
    Request {
        kind: IqType,
        id: &'a str,
        payload: &'a Element,
    },
    /// A request we cannot serve as is: answer with this error (never a silent drop).
    Malformed { id: Option<&'a str>, error: StanzaError },
    /// `result` or `error`: a reply to something we sent.
    Response { id: &'a str, is_error: bool },
    /// A response without id, or an unknown type on a response: nothing sensible to do.
    Ignore(&'static str),
}

/// Classifies an `<iq>` stanza (RFC 6120 §8.2.3: get/set carry exactly one child and an id).
pub(crate) fn classify_iq(iq: &Element) -> IqKind<'_> {
    let id = iq.attr("id");
    let kind = match iq.attr("type") {
        Some("get") => IqType::Get,
        Some("set") => IqType::Set,
        Some("result") | Some("error") => {
            return match id {
                Some(id) => IqKind::Response {
                    id,
                    is_error: iq.attr("type") == Some("error"),
                },
                None => IqKind::Ignore("response without id"),
            };
        }
        other => {
            let text = match other {
                Some(t) => format!("invalid IQ type '{t}'"),
                None => "missing IQ type".to_owned(),
            };
            return IqKind::Malformed {
                id,
                error: StanzaError::new(Condition::BadRequest, text),
            };
        }
    };
    let Some(id) = id else {
        return IqKind::Malformed {
            id: None,
            error: StanzaError::new(Condition::BadRequest, "missing IQ id"),
        };
    };
    let mut children = iq.children();
    match (children.next(), children.next()) {
        (Some(payload), None) => IqKind::Request { kind, id, payload },
        (None, _) => IqKind::Malformed {
            id: Some(id),
            error: StanzaError::new(Condition::BadRequest, "IQ request without a child element"),
        },
        (Some(_), Some(_)) => IqKind::Malformed {
            id: Some(id),
            error: StanzaError::new(Condition::BadRequest, "IQ request with more than one child element"),
        },
    }
}

/// Bare JID (`local@domain`), lower-cased for comparison (JVB compares case-insensitively).
pub(crate) fn bare_lower(jid: &str) -> String {
    jid.split('/').next().unwrap_or("").to_lowercase()
}

/// Builds the reply to a request: `from` = the request's `to`, `to` = the request's `from`,
/// same `id` (§1.1).
pub(crate) fn build_reply(
    id: Option<&str>,
    req_from: Option<&str>,
    req_to: Option<&str>,
    response: &IqResponse,
) -> Element {
    let mut iq = Element::bare("iq", ns::CLIENT);
    if let Some(id) = id {
        set_attr(&mut iq, "id", id);
    }
    if let Some(to) = req_from {
        set_attr(&mut iq, "to", to);
    }
    if let Some(from) = req_to {
        set_attr(&mut iq, "from", from);
    }
    match response {
        IqResponse::Result(payload) => {
            set_attr(&mut iq, "type", "result");
            if let Some(p) = payload {
                iq.append_child(p.clone());
            }
        }
        IqResponse::Error(err) => {
            set_attr(&mut iq, "type", "error");
            iq.append_child(err.to_element());
        }
    }
    iq
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    /// RFC 6120 §8.2.3: get/set with zero or two children is answered bad-request, not dropped.
    #[test]
    fn zero_or_two_children_is_bad_request() {
        for xml in [
            "<iq xmlns='jabber:client' type='get' id='a1'/>",
            "<iq xmlns='jabber:client' type='set' id='a1'><a xmlns='x'/><b xmlns='x'/></iq>",
        ] {
            match classify_iq(&parse(xml)) {
                IqKind::Malformed { id: Some("a1"), error } => {
                    assert_eq!(error.condition, Condition::BadRequest);
                    assert_eq!(error.error_type, ErrorType::Modify);
                }
                other => panic!("{xml}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_type_and_missing_id() {
        assert!(matches!(
            classify_iq(&parse(
                "<iq xmlns='jabber:client' type='fetch' id='x'><a xmlns='y'/></iq>"
            )),
            IqKind::Malformed { id: Some("x"), .. }
        ));
        assert!(matches!(
            classify_iq(&parse("<iq xmlns='jabber:client' type='get'><a xmlns='y'/></iq>")),
            IqKind::Malformed { id: None, .. }
        ));
        assert!(matches!(
            classify_iq(&parse("<iq xmlns='jabber:client' type='result'/>")),
            IqKind::Ignore(_)
        ));
    }

    #[test]
    fn request_and_response() {
        let el = parse(
            "<iq xmlns='jabber:client' type='get' id='q'>\
             <conference-modify xmlns='jitsi:colibri2' meeting-id='m'/></iq>",
        );
        match classify_iq(&el) {
            IqKind::Request {
                kind: IqType::Get,
                id: "q",
                payload,
            } => assert!(payload.is("conference-modify", ns::COLIBRI2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_iq(&parse("<iq xmlns='jabber:client' type='error' id='r'/>")),
            IqKind::Response {
                id: "r",
                is_error: true
            }
        ));
    }

    /// The spec's §3.12 example: condition, text, and BOTH colibri2 extensions, with
    /// from/to swapped and the id kept; and it parses back to the same error.
    #[test]
    fn unknown_endpoint_error_has_two_extensions() {
        let err = StanzaError::new(Condition::ItemNotFound, "Endpoint not found for ID: c3d4e5f6")
            .with_extension(StanzaError::colibri2_reason("unknown_endpoint"))
            .with_extension(StanzaError::colibri2_endpoint("c3d4e5f6"));
        let reply = build_reply(
            Some("mUw4k-42"),
            Some("jvbbrewery@internal-muc.meet.jitsi/focus"),
            Some("jvb@auth.meet.jitsi/r1"),
            &IqResponse::Error(err.clone()),
        );
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(reply.attr("id"), Some("mUw4k-42"));
        assert_eq!(reply.attr("to"), Some("jvbbrewery@internal-muc.meet.jitsi/focus"));
        assert_eq!(reply.attr("from"), Some("jvb@auth.meet.jitsi/r1"));
        let e = reply.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(e.attr("type"), Some("cancel"));
        let kids: Vec<_> = e.children().map(|c| (c.name(), c.ns())).collect();
        assert_eq!(
            kids,
            vec![
                ("item-not-found", ns::STANZAS.to_owned()),
                ("text", ns::STANZAS.to_owned()),
                ("error", ns::COLIBRI2.to_owned()),
                ("endpoint", ns::COLIBRI2.to_owned()),
            ]
        );
        // Serialise and parse back: the wire form round-trips.
        let mut buf = Vec::new();
        reply.write_to(&mut buf).unwrap();
        let back: Element = std::str::from_utf8(&buf).unwrap().parse().unwrap();
        assert_eq!(StanzaError::from_stanza(&back), Some(err));
    }

    #[test]
    fn forbidden_is_type_auth() {
        let e = StanzaError::new(Condition::Forbidden, "");
        assert_eq!(e.error_type, ErrorType::Auth);
        assert_eq!(e.text, None);
        assert_eq!(
            StanzaError::new(Condition::ServiceUnavailable, "x").error_type,
            ErrorType::Cancel
        );
    }

    #[test]
    fn bare_jid_compare() {
        assert_eq!(
            bare_lower("JvbBrewery@Internal-MUC.meet.jitsi/Focus"),
            "jvbbrewery@internal-muc.meet.jitsi"
        );
        assert_eq!(bare_lower("auth.meet.jitsi"), "auth.meet.jitsi");
    }
}
