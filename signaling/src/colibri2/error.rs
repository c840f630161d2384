//! Colibri2 errors as Jicofo sees them (colibri.md §3.12): a stanza-error condition, an English
//! text, and optionally the `jitsi:colibri2` reason and the `<endpoint id>` extension.
//!
//! [`Colibri2Error::from_command`] and `From<ParseError>` are the one place where failures of the
//! media core and of parsing become wire errors.

use minidom::rxml::Namespace;
use minidom::Element;

use sfu::CommandError;

use super::xml::{ncname, El};
use super::{ns, ParseError};

/// A stanza-error condition (RFC 6120 §8.3.3) used by the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCondition {
    BadRequest,
    Conflict,
    ItemNotFound,
    FeatureNotImplemented,
    ServiceUnavailable,
    InternalServerError,
    Forbidden,
    /// The sender is not an allowed focus (robustness.md §2.3, case 30).
    NotAuthorized,
}

impl ErrorCondition {
    /// The element name in `urn:ietf:params:xml:ns:xmpp-stanzas`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCondition::BadRequest => "bad-request",
            ErrorCondition::Conflict => "conflict",
            ErrorCondition::ItemNotFound => "item-not-found",
            ErrorCondition::FeatureNotImplemented => "feature-not-implemented",
            ErrorCondition::ServiceUnavailable => "service-unavailable",
            ErrorCondition::InternalServerError => "internal-server-error",
            ErrorCondition::Forbidden => "forbidden",
            ErrorCondition::NotAuthorized => "not-authorized",
        }
    }

    /// Smack's default error type for the condition (what jicoco `createError` sends).
    pub fn error_type(self) -> ErrorType {
        match self {
            ErrorCondition::BadRequest => ErrorType::Modify,
            ErrorCondition::Forbidden | ErrorCondition::NotAuthorized => ErrorType::Auth,
            _ => ErrorType::Cancel,
        }
    }

    /// The HTTP status of the REST form.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCondition::BadRequest | ErrorCondition::FeatureNotImplemented => 400,
            ErrorCondition::Forbidden | ErrorCondition::NotAuthorized => 403,
            ErrorCondition::ItemNotFound => 404,
            ErrorCondition::Conflict => 409,
            ErrorCondition::InternalServerError => 500,
            ErrorCondition::ServiceUnavailable => 503,
        }
    }
}

/// The `type` attribute of a stanza `<error>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Cancel,
    Modify,
    Auth,
    Wait,
    Continue,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Auth => "auth",
            ErrorType::Wait => "wait",
            ErrorType::Continue => "continue",
        }
    }
}

/// The colibri2 reason extension (lower-case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ConferenceNotFound,
    ConferenceAlreadyExists,
    FeatureNotImplemented,
    GracefulShutdown,
    UnknownEndpoint,
    Unspecified,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConferenceNotFound => "conference_not_found",
            Reason::ConferenceAlreadyExists => "conference_already_exists",
            Reason::FeatureNotImplemented => "feature_not_implemented",
            Reason::GracefulShutdown => "graceful_shutdown",
            Reason::UnknownEndpoint => "unknown_endpoint",
            Reason::Unspecified => "unspecified",
        }
    }
}

/// An error answer to a `conference-modify`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {text}", condition.as_str())]
pub struct Colibri2Error {
    pub condition: ErrorCondition,
    /// English text for `<text xml:lang="en">`.
    pub text: String,
    pub reason: Option<Reason>,
    /// For `unknown_endpoint`: the endpoint Jicofo should re-invite.
    pub endpoint_id: Option<String>,
}

impl Colibri2Error {
    pub fn new(condition: ErrorCondition, text: impl Into<String>) -> Self {
        Colibri2Error {
            condition,
            text: text.into(),
            reason: None,
            endpoint_id: None,
        }
    }

    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorCondition::BadRequest, text)
    }

    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(ErrorCondition::InternalServerError, text)
    }

    pub fn conference_not_found(meeting_id: &str) -> Self {
        Self::new(
            ErrorCondition::ItemNotFound,
            format!("Conference not found for ID: {meeting_id}"),
        )
        .with_reason(Reason::ConferenceNotFound)
    }

    pub fn conference_already_exists(meeting_id: &str) -> Self {
        Self::new(
            ErrorCondition::Conflict,
            format!("Conference already exists for ID: {meeting_id}"),
        )
        .with_reason(Reason::ConferenceAlreadyExists)
    }

    pub fn graceful_shutdown() -> Self {
        Self::new(ErrorCondition::ServiceUnavailable, "In graceful shutdown").with_reason(Reason::GracefulShutdown)
    }

    pub fn unknown_endpoint(endpoint_id: &str) -> Self {
        Colibri2Error {
            condition: ErrorCondition::ItemNotFound,
            text: format!("Endpoint not found for ID: {endpoint_id}"),
            reason: Some(Reason::UnknownEndpoint),
            endpoint_id: Some(endpoint_id.to_owned()),
        }
    }

    /// A `conference-modify` from a JID that is not an allowed focus (`xmpp.focus_jids`).
    pub fn not_authorized() -> Self {
        Self::new(
            ErrorCondition::NotAuthorized,
            "Colibri2 requests are accepted only from the focus (xmpp.focus_jids)",
        )
    }

    /// A configured limit refused the request. The bridge being full (conferences, endpoints)
    /// is `service-unavailable`, so Jicofo moves the session to another bridge; too many SSRCs
    /// is the client's request's fault, `bad-request`, so Jicofo only cancels that invite and
    /// keeps the bridge (colibri.md §3.12).
    pub fn limit_reached(what: &str) -> Self {
        let (condition, key) = match what {
            "conferences" => (ErrorCondition::ServiceUnavailable, "sfu.max_conferences"),
            "endpoints per conference" => (ErrorCondition::ServiceUnavailable, "sfu.max_endpoints_per_conference"),
            "ssrcs per endpoint" => (ErrorCondition::BadRequest, "sfu.max_ssrcs_per_endpoint"),
            "memory" => (ErrorCondition::ServiceUnavailable, "limits.memory_shed_percent"),
            _ => (ErrorCondition::ServiceUnavailable, "sfu"),
        };
        Self::new(condition, format!("Limit reached: {what} ({key})"))
    }

    /// An unsupported request shape (colibri.md §3.10 step 3).
    pub fn feature_not_implemented(text: impl Into<String>) -> Self {
        Self::new(ErrorCondition::FeatureNotImplemented, text).with_reason(Reason::FeatureNotImplemented)
    }

    /// The single mapping from the media core's refusals to Colibri2 errors. `meeting_id` and
    /// `endpoint_id` are the string ids of the request the command was made for.
    pub fn from_command(err: &CommandError, meeting_id: &str, endpoint_id: Option<&str>) -> Self {
        match err {
            CommandError::ConferenceNotFound(_) => Self::conference_not_found(meeting_id),
            CommandError::ConferenceExists(_) => Self::conference_already_exists(meeting_id),
            CommandError::EndpointNotFound { .. } => match endpoint_id {
                Some(id) => Self::unknown_endpoint(id),
                None => Self::internal(err.to_string()),
            },
            CommandError::EndpointExists { .. } => Self::new(
                ErrorCondition::Conflict,
                format!("Endpoint with ID {} already exists", endpoint_id.unwrap_or("?")),
            ),
            CommandError::Invalid(msg) => Self::bad_request(msg.clone()),
            CommandError::LimitReached(what) => Self::limit_reached(what),
            CommandError::Internal(_) => Self::internal(err.to_string()),
            // `CommandError` is non_exhaustive.
            #[allow(unreachable_patterns)]
            _ => Self::internal(err.to_string()),
        }
    }

    /// The children of the stanza `<error>`: the condition, `<text xml:lang="en">`, and the
    /// colibri2 `<error reason>` and `<endpoint id>` extensions when set.
    pub fn error_children(&self) -> Vec<Element> {
        let mut out = vec![El::new(self.condition.as_str(), ns::STANZAS).build()];
        let mut text = El::new("text", ns::STANZAS).text(self.text.clone()).build();
        text.set_attr(Namespace::xml().clone(), ncname("lang"), "en");
        out.push(text);
        if let Some(reason) = self.reason {
            out.push(El::new("error", ns::COLIBRI2).attr("reason", reason.as_str()).build());
        }
        if let Some(id) = &self.endpoint_id {
            out.push(El::new("endpoint", ns::COLIBRI2).attr("id", id).build());
        }
        out
    }

    /// The whole stanza `<error type=…>` in the given stanza namespace (`jabber:client`).
    pub fn to_stanza_error(&self, stanza_ns: &str) -> Element {
        El::new("error", stanza_ns)
            .attr("type", self.condition.error_type().as_str())
            .children(self.error_children())
            .build()
    }
}

impl From<ParseError> for Colibri2Error {
    fn from(err: ParseError) -> Self {
        Colibri2Error::bad_request(err.to_string())
    }
}
