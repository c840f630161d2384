//! The Janus API as JSON: request bodies for the videoroom flow, and parsing of the synchronous
//! replies and of the long-poll events. Pure functions, no I/O, so they are unit-tested here.
//!
//! Reference: /work/shared/peers/janus/README.md ("Talking to Janus").

use std::fmt;

use serde_json::{json, Value};

/// The plugin every handle of the harness attaches to.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

/// A failure reported by Janus, or a reply that is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// `{"janus":"error","error":{"code":…,"reason":…}}` from the core.
    Janus { code: i64, reason: String },
    /// The videoroom plugin answered with `error_code` / `error` in its data.
    Plugin { code: i64, reason: String },
    /// Not shaped like a Janus reply.
    Malformed(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Janus { code, reason } => write!(f, "janus error {code}: {reason}"),
            Self::Plugin { code, reason } => write!(f, "videoroom error {code}: {reason}"),
            Self::Malformed(s) => write!(f, "malformed janus reply: {s}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A session description as Janus carries it (`"jsep": {"type", "sdp"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Jsep {
    /// `offer` or `answer`.
    pub kind: String,
    pub sdp: String,
}

impl Jsep {
    pub fn offer(sdp: String) -> Self {
        Self {
            kind: "offer".into(),
            sdp,
        }
    }

    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".into(),
            sdp,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "type": self.kind, "sdp": self.sdp })
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            kind: v.get("type")?.as_str()?.to_string(),
            sdp: v.get("sdp")?.as_str()?.to_string(),
        })
    }
}

/// `POST <base>`: a new session.
pub fn create_session(transaction: &str) -> Value {
    json!({ "janus": "create", "transaction": transaction })
}

/// `POST <base>/<session>`: ends the session and every handle in it.
pub fn destroy_session(transaction: &str) -> Value {
    json!({ "janus": "destroy", "transaction": transaction })
}

/// `POST <base>/<session>`: a new handle on `plugin`.
pub fn attach(transaction: &str, plugin: &str) -> Value {
    json!({ "janus": "attach", "plugin": plugin, "transaction": transaction })
}

/// `POST <base>/<session>/<handle>`: a plugin message, optionally carrying an SDP.
pub fn message(transaction: &str, body: Value, jsep: Option<&Jsep>) -> Value {
    let mut m = json!({ "janus": "message", "transaction": transaction, "body": body });
    if let Some(j) = jsep {
        m["jsep"] = j.to_json();
    }
    m
}

/// `POST <base>/<session>/<handle>`: end of candidates (half-trickle: the SDP had them all).
pub fn trickle_completed(transaction: &str) -> Value {
    json!({ "janus": "trickle", "transaction": transaction, "candidate": { "completed": true } })
}

/// Bodies of videoroom requests.
pub mod body {
    use serde_json::{json, Value};

    /// A VP8 + Opus room without a REMB cap, like room 1234 of the recipe's config.
    pub fn create_room(room: u64, publishers: u32) -> Value {
        json!({
            "request": "create", "room": room, "publishers": publishers,
            "videocodec": "vp8", "audiocodec": "opus", "bitrate": 0, "fir_freq": 10,
        })
    }

    pub fn join_publisher(room: u64, display: &str) -> Value {
        json!({ "request": "join", "ptype": "publisher", "room": room, "display": display })
    }

    /// Sent with the publisher's offer.
    pub fn configure_publish() -> Value {
        json!({ "request": "configure", "audio": true, "video": true })
    }

    /// One subscription (one PeerConnection) to every stream of `feeds`.
    pub fn join_subscriber(room: u64, feeds: &[u64]) -> Value {
        let streams: Vec<Value> = feeds.iter().map(|f| json!({ "feed": f })).collect();
        json!({ "request": "join", "ptype": "subscriber", "room": room, "streams": streams })
    }

    /// Sent with the subscriber's answer.
    pub fn start(room: u64) -> Value {
        json!({ "request": "start", "room": room })
    }
}

/// The synchronous answer to a `POST`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The request was taken; its result comes as an event on the long poll.
    Ack,
    /// Done at once. `id` is `data.id` (a new session or handle), `data` the plugin's data.
    Success { id: Option<u64>, data: Option<Value> },
}

/// Parse the answer to a `POST`, turning core and plugin errors into [`ApiError`].
pub fn parse_reply(v: &Value) -> Result<Reply, ApiError> {
    match v.get("janus").and_then(Value::as_str) {
        Some("ack") => Ok(Reply::Ack),
        Some("success") => {
            let data = v.get("plugindata").and_then(|p| p.get("data"));
            if let Some(e) = data.and_then(plugin_error) {
                return Err(e);
            }
            Ok(Reply::Success {
                id: v.get("data").and_then(|d| d.get("id")).and_then(Value::as_u64),
                data: data.cloned(),
            })
        }
        Some("error") => Err(core_error(v)),
        _ => Err(ApiError::Malformed(truncate(v))),
    }
}

/// One message from the long poll that concerns a handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The handle it is about.
    pub sender: u64,
    /// The `janus` field: `event`, `webrtcup`, `media`, `slowlink`, `hangup`, `detached`, `error`…
    pub kind: String,
    /// `plugindata.data` of plugin events.
    pub data: Option<Value>,
    pub jsep: Option<Jsep>,
}

impl Event {
    /// The `videoroom` field of a plugin event (`joined`, `attached`, `event`, …).
    pub fn videoroom(&self) -> Option<&str> {
        self.data.as_ref()?.get("videoroom")?.as_str()
    }

    /// The plugin's error, when the event is one.
    pub fn error(&self) -> Option<ApiError> {
        self.data.as_ref().and_then(plugin_error)
    }
}

/// Parse what `GET <base>/<session>?maxev=N` returned: one object, or an array of them.
/// Keepalives and anything without a `sender` handle are skipped; a core error is an error.
pub fn parse_events(v: &Value) -> Result<Vec<Event>, ApiError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return Err(ApiError::Malformed(truncate(v))),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(kind) = item.get("janus").and_then(Value::as_str) else {
            return Err(ApiError::Malformed(truncate(item)));
        };
        if kind == "error" && item.get("sender").is_none() {
            return Err(core_error(item));
        }
        let Some(sender) = item.get("sender").and_then(Value::as_u64) else {
            continue; // keepalive, or a session-level notice
        };
        out.push(Event {
            sender,
            kind: kind.to_string(),
            data: item.get("plugindata").and_then(|p| p.get("data")).cloned(),
            jsep: item.get("jsep").and_then(Jsep::from_json),
        });
    }
    Ok(out)
}

fn plugin_error(data: &Value) -> Option<ApiError> {
    let code = data.get("error_code")?.as_i64().unwrap_or(0);
    let reason = data.get("error").and_then(Value::as_str).unwrap_or("").to_string();
    Some(ApiError::Plugin { code, reason })
}

fn core_error(v: &Value) -> ApiError {
    let e = v.get("error");
    ApiError::Janus {
        code: e.and_then(|e| e.get("code")).and_then(Value::as_i64).unwrap_or(0),
        reason: e
            .and_then(|e| e.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_transaction_and_fields() {
        let a = attach("t1", VIDEOROOM);
        assert_eq!(a["janus"], "attach");
        assert_eq!(a["transaction"], "t1");
        assert_eq!(a["plugin"], "janus.plugin.videoroom");

        let m = message("t2", body::join_subscriber(7, &[11, 12]), None);
        assert_eq!(m["janus"], "message");
        assert!(m.get("jsep").is_none());
        assert_eq!(m["body"]["ptype"], "subscriber");
        assert_eq!(m["body"]["room"], 7);
        assert_eq!(m["body"]["streams"], json!([{ "feed": 11 }, { "feed": 12 }]));

        let m = message("t3", body::configure_publish(), Some(&Jsep::offer("v=0\r\n".into())));
        assert_eq!(m["jsep"], json!({ "type": "offer", "sdp": "v=0\r\n" }));
        assert_eq!(m["body"]["request"], "configure");

        let t = trickle_completed("t4");
        assert_eq!(t["candidate"]["completed"], true);
        assert_eq!(body::create_room(9, 5)["publishers"], 5);
    }

    #[test]
    fn replies_success_ack_and_errors() {
        let v = json!({ "janus": "success", "transaction": "x", "data": { "id": 4_503_599_627_370_495u64 } });
        assert_eq!(
            parse_reply(&v),
            Ok(Reply::Success {
                id: Some(4_503_599_627_370_495),
                data: None
            })
        );
        assert_eq!(
            parse_reply(&json!({ "janus": "ack", "transaction": "x" })),
            Ok(Reply::Ack)
        );

        let created = json!({ "janus": "success", "sender": 1,
            "plugindata": { "plugin": VIDEOROOM, "data": { "videoroom": "created", "room": 5 } } });
        match parse_reply(&created) {
            Ok(Reply::Success {
                id: None,
                data: Some(d),
            }) => assert_eq!(d["room"], 5),
            other => panic!("unexpected {other:?}"),
        }

        let core = json!({ "janus": "error", "error": { "code": 458, "reason": "No such session 5" } });
        assert_eq!(
            parse_reply(&core),
            Err(ApiError::Janus {
                code: 458,
                reason: "No such session 5".into()
            })
        );

        let plugin = json!({ "janus": "success", "sender": 1, "plugindata": { "plugin": VIDEOROOM,
            "data": { "videoroom": "event", "error_code": 427, "error": "Room 5 already exists" } } });
        assert_eq!(
            parse_reply(&plugin),
            Err(ApiError::Plugin {
                code: 427,
                reason: "Room 5 already exists".into()
            })
        );

        assert!(matches!(
            parse_reply(&json!({ "hello": 1 })),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(parse_reply(&json!("ack")), Err(ApiError::Malformed(_))));
    }

    #[test]
    fn events_from_long_poll() {
        let v = json!([
            { "janus": "keepalive" },
            { "janus": "event", "session_id": 1, "sender": 22, "transaction": "t",
              "plugindata": { "plugin": VIDEOROOM, "data": { "videoroom": "joined", "id": 333, "room": 5 } } },
            { "janus": "event", "session_id": 1, "sender": 23,
              "plugindata": { "plugin": VIDEOROOM, "data": { "videoroom": "attached", "room": 5 } },
              "jsep": { "type": "offer", "sdp": "v=0" } },
            { "janus": "webrtcup", "session_id": 1, "sender": 22 },
            { "janus": "event", "sender": 24,
              "plugindata": { "plugin": VIDEOROOM, "data": { "videoroom": "event", "error_code": 428, "error": "No such feed (9)" } } },
        ]);
        let ev = parse_events(&v).expect("well-formed");
        assert_eq!(ev.len(), 4);
        assert_eq!((ev[0].sender, ev[0].videoroom()), (22, Some("joined")));
        assert_eq!(ev[0].data.as_ref().and_then(|d| d["id"].as_u64()), Some(333));
        assert_eq!(ev[1].jsep, Some(Jsep::offer("v=0".into())));
        assert_eq!((ev[2].kind.as_str(), ev[2].data.is_none()), ("webrtcup", true));
        assert_eq!(
            ev[3].error(),
            Some(ApiError::Plugin {
                code: 428,
                reason: "No such feed (9)".into()
            })
        );
        assert_eq!(ev[0].error(), None);

        // A single object (maxev=1) works too; a session-level error is an error.
        assert_eq!(
            parse_events(&json!({ "janus": "hangup", "sender": 5 })).map(|e| e.len()),
            Ok(1)
        );
        assert!(matches!(
            parse_events(&json!({ "janus": "error", "error": { "code": 458, "reason": "gone" } })),
            Err(ApiError::Janus { code: 458, .. })
        ));
        assert!(matches!(
            parse_events(&json!([{ "sender": 1 }])),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(parse_events(&json!(3)), Err(ApiError::Malformed(_))));
    }
}
