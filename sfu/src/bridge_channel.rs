//! Bridge-channel messages (spec/media.md §2): the JSON objects, tagged by `colibriClass`, that
//! Jitsi clients and relays exchange with the bridge over the SCTP data channel or colibri-ws.
//!
//! [`parse`] turns one text message into an [`Incoming`] value. It is strict where JVB is strict
//! (invalid JSON, missing or unknown `colibriClass`, duplicate keys at any depth, wrong types,
//! out-of-range constraint values) and lenient about unknown fields (media.md §2.2 says a drop-in
//! SHOULD be lenient). Messages longer than [`MAX_MESSAGE_LEN`] are refused before parsing.
//!
//! The `write_*` functions serialize outgoing messages into a caller-owned `String`, which is
//! cleared first and reused, so a warm buffer does not allocate.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Largest accepted message, in bytes. JVB has no explicit limit; real messages are well below
/// 8 KiB (ReceiverVideoConstraints for a 100-source conference is about 6 KiB).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Why a bridge-channel message was dropped. Network input: the caller counts it and moves on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("duplicate key: {0}")]
    DuplicateKey(String),
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message has no colibriClass")]
    MissingClass,
    #[error("colibriClass is not a string")]
    ClassNotString,
    #[error("unknown colibriClass {0:?}")]
    UnknownClass(String),
    #[error("invalid {class} message: {source}")]
    InvalidMessage {
        class: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {class} message: {reason}")]
    InvalidValue { class: &'static str, reason: &'static str },
    #[error("cannot encode message: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A message received from a client (or a relay).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Incoming {
    /// Ping; reply with [`write_server_hello`] on the same channel.
    ClientHello,
    /// Relays answer a ClientHello with this; clients never send it.
    ServerHello {
        version: Option<String>,
    },
    EndpointMessage(EndpointMessage),
    EndpointStats(EndpointStats),
    /// `lastN`: −1 unlimited, 0 no video.
    LastNChanged {
        last_n: i32,
    },
    ReceiverVideoConstraints(ReceiverVideoConstraints),
    ReceiverAudioSubscription(AudioSubscription),
    /// `endpoint_id` is only present on relay links.
    SourceVideoType {
        source_name: String,
        video_type: VideoType,
        endpoint_id: Option<String>,
    },
    /// Deprecated per-endpoint form; maps to source `<endpointId>-v0`.
    VideoType {
        video_type: VideoType,
    },
    /// Relay only: another bridge reports an endpoint's media (in)activity.
    EndpointConnectivityStatusChange {
        endpoint: String,
        active: bool,
    },
    /// Relay only: the other bridge wants `source_name` with these constraints.
    AddReceiver {
        bridge_id: String,
        source_name: String,
        constraints: VideoConstraints,
    },
    /// Relay only (defined by JVB, never sent by it).
    RemoveReceiver {
        bridge_id: String,
        endpoint_id: String,
    },
}

/// An opaque endpoint-to-endpoint message. `to == ""` is broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointMessage {
    pub to: String,
    /// `from` as received (only meaningful from relays; the bridge overwrites it for endpoints).
    pub from: Option<String>,
    /// Every other field, unchanged (without `colibriClass`, `to` and `from`).
    pub fields: Map<String, Value>,
}

/// Free-form connection stats, forwarded with `from` set by the bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    pub from: Option<String>,
    /// Every field except `colibriClass` and `from`.
    pub fields: Map<String, Value>,
}

/// Per-source receiver constraints. −1 = unlimited, 0 = disabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoConstraints {
    pub max_height: i32,
    pub max_frame_rate: f64,
}

impl VideoConstraints {
    pub const UNLIMITED: Self = Self {
        max_height: -1,
        max_frame_rate: -1.0,
    };
    pub const NOTHING: Self = Self {
        max_height: 0,
        max_frame_rate: 0.0,
    };

    /// Same as JVB's `isDisabled`: a zero height or a zero frame rate.
    pub fn is_disabled(&self) -> bool {
        self.max_height == 0 || self.max_frame_rate == 0.0
    }

    pub fn height_is_limited(&self) -> bool {
        self.max_height != -1
    }
}

impl Default for VideoConstraints {
    fn default() -> Self {
        Self::UNLIMITED
    }
}

/// The fields of one `ReceiverVideoConstraints` message. `None` = absent (keep the previous value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReceiverVideoConstraints {
    pub last_n: Option<i32>,
    pub selected_sources: Option<Vec<String>>,
    pub on_stage_sources: Option<Vec<String>>,
    pub default_constraints: Option<VideoConstraints>,
    /// Per-source constraints (sorted by name); duplicate names are rejected at parse time.
    pub constraints: Option<Vec<(String, VideoConstraints)>>,
    /// Negative values (LJM sends −1) are reported as `None`.
    pub assumed_bandwidth_bps: Option<u64>,
}

/// Which audio sources a receiver wants: `exclude` wins, `include` always, else `all`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioSubscription {
    pub all: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// A video source's type (case-insensitive on the wire; `NONE` is the deprecated `DISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoType {
    Camera,
    Desktop,
    DesktopHighFps,
    Disabled,
}

impl VideoType {
    /// The upper-case wire form JVB writes.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoType::Camera => "CAMERA",
            VideoType::Desktop => "DESKTOP",
            VideoType::DesktopHighFps => "DESKTOP_HIGH_FPS",
            VideoType::Disabled => "DISABLED",
        }
    }

    pub fn is_enabled(self) -> bool {
        !matches!(self, VideoType::Disabled)
    }

    fn from_wire(s: &str) -> Option<Self> {
        const TABLE: [(&str, VideoType); 5] = [
            ("CAMERA", VideoType::Camera),
            ("DESKTOP", VideoType::Desktop),
            ("DESKTOP_HIGH_FPS", VideoType::DesktopHighFps),
            ("DISABLED", VideoType::Disabled),
            ("NONE", VideoType::Disabled),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, t)| t)
    }
}

impl<'de> Deserialize<'de> for VideoType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        VideoType::from_wire(&s).ok_or_else(|| de::Error::custom(format_args!("unknown videoType {s:?}")))
    }
}

/// Parses one bridge-channel text message.
pub fn parse(text: &str) -> Result<Incoming, ChannelError> {
    if text.len() > MAX_MESSAGE_LEN {
        return Err(ChannelError::TooLarge {
            len: text.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let value = parse_strict(text)?;
    let Value::Object(mut map) = value else {
        return Err(ChannelError::NotAnObject);
    };
    let class = match map.remove("colibriClass") {
        None => return Err(ChannelError::MissingClass),
        Some(Value::String(s)) => s,
        Some(_) => return Err(ChannelError::ClassNotString),
    };
    match class.as_str() {
        "ClientHello" => Ok(Incoming::ClientHello),
        "ServerHello" => {
            let m: ServerHelloIn = typed("ServerHello", map)?;
            Ok(Incoming::ServerHello { version: m.version })
        }
        "EndpointMessage" => {
            let to = match map.remove("to") {
                Some(Value::String(s)) => s,
                _ => {
                    return Err(ChannelError::InvalidValue {
                        class: "EndpointMessage",
                        reason: "`to` must be a string",
                    })
                }
            };
            let from = take_from(&mut map, "EndpointMessage")?;
            Ok(Incoming::EndpointMessage(EndpointMessage { to, from, fields: map }))
        }
        "EndpointStats" => {
            let from = take_from(&mut map, "EndpointStats")?;
            Ok(Incoming::EndpointStats(EndpointStats { from, fields: map }))
        }
        "LastNChangedEvent" => {
            let m: LastNIn = typed("LastNChangedEvent", map)?;
            check_last_n("LastNChangedEvent", m.last_n)?;
            Ok(Incoming::LastNChanged { last_n: m.last_n })
        }
        "ReceiverVideoConstraints" => receiver_video_constraints(map),
        "ReceiverAudioSubscription" => receiver_audio_subscription(map),
        "SourceVideoTypeMessage" => {
            let m: SourceVideoTypeIn = typed("SourceVideoTypeMessage", map)?;
            Ok(Incoming::SourceVideoType {
                source_name: m.source_name,
                video_type: m.video_type,
                endpoint_id: m.endpoint_id,
            })
        }
        "VideoTypeMessage" => {
            let m: VideoTypeIn = typed("VideoTypeMessage", map)?;
            Ok(Incoming::VideoType {
                video_type: m.video_type,
            })
        }
        "EndpointConnectivityStatusChangeEvent" => {
            let m: ConnectivityIn = typed("EndpointConnectivityStatusChangeEvent", map)?;
            let active = match m.active.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ChannelError::InvalidValue {
                        class: "EndpointConnectivityStatusChangeEvent",
                        reason: "`active` must be \"true\" or \"false\"",
                    })
                }
            };
            Ok(Incoming::EndpointConnectivityStatusChange {
                endpoint: m.endpoint,
                active,
            })
        }
        "AddReceiver" => {
            let m: AddReceiverIn = typed("AddReceiver", map)?;
            let constraints = match m.video_constraints {
                Some(c) => c.validate("AddReceiver")?,
                None => VideoConstraints::UNLIMITED,
            };
            Ok(Incoming::AddReceiver {
                bridge_id: m.bridge_id,
                source_name: m.source_name,
                constraints,
            })
        }
        "RemoveReceiver" => {
            let m: RemoveReceiverIn = typed("RemoveReceiver", map)?;
            Ok(Incoming::RemoveReceiver {
                bridge_id: m.bridge_id,
                endpoint_id: m.endpoint_id,
            })
        }
        _ => Err(ChannelError::UnknownClass(class)),
    }
}

// ---------------------------------------------------------------------------------------------
// Outgoing messages.

/// One entry of `VideoSourcesMap` (SSRC-rewriting mode).
#[derive(Debug, Clone, Copy)]
pub struct VideoSourceMapping<'a> {
    pub source: &'a str,
    pub owner: &'a str,
    pub ssrc: u32,
    pub rtx: Option<u32>,
    pub video_type: VideoType,
    pub mid: Option<&'a str>,
}

/// One entry of `AudioSourcesMap` (SSRC-rewriting mode).
#[derive(Debug, Clone, Copy)]
pub struct AudioSourceMapping<'a> {
    pub source: &'a str,
    pub owner: &'a str,
    pub ssrc: u32,
    pub mid: Option<&'a str>,
}

/// `{"colibriClass":"ServerHello"}`, with `version` when announcing it.
pub fn write_server_hello(out: &mut String, version: Option<&str>) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "ServerHello")?;
        if let Some(v) = version {
            m.serialize_entry("version", v)?;
        }
        Ok(())
    })
}

/// `ForwardedSources` with the video sources that currently have a target layer.
pub fn write_forwarded_sources<S: AsRef<str>>(out: &mut String, sources: &[S]) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "ForwardedSources")?;
        m.serialize_entry("forwardedSources", &StrList(sources))
    })
}

/// `SenderSourceConstraints` to the owner of `source_name` (−1 unlimited, 0 nobody wants it).
pub fn write_sender_source_constraints(
    out: &mut String,
    source_name: &str,
    max_height: i32,
) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "SenderSourceConstraints")?;
        m.serialize_entry("sourceName", source_name)?;
        m.serialize_entry("maxHeight", &max_height)
    })
}

/// `DominantSpeakerEndpointChangeEvent`; `previous` is most recent first (at most 10 by JVB's
/// default, the caller truncates).
pub fn write_dominant_speaker<S: AsRef<str>>(
    out: &mut String,
    dominant: &str,
    previous: &[S],
    silence: bool,
) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "DominantSpeakerEndpointChangeEvent")?;
        m.serialize_entry("dominantSpeakerEndpoint", dominant)?;
        m.serialize_entry("previousSpeakers", &StrList(previous))?;
        m.serialize_entry("silence", &silence)
    })
}

/// `EndpointConnectivityStatusChangeEvent`; `active` is written as the string JVB uses.
pub fn write_connectivity_status(out: &mut String, endpoint: &str, active: bool) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "EndpointConnectivityStatusChangeEvent")?;
        m.serialize_entry("endpoint", endpoint)?;
        m.serialize_entry("active", if active { "true" } else { "false" })
    })
}

/// `ConnectionStats` with the receiver's downlink estimate in bps.
pub fn write_connection_stats(out: &mut String, estimated_downlink_bps: u64) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "ConnectionStats")?;
        m.serialize_entry("estimatedDownlinkBandwidth", &estimated_downlink_bps)
    })
}

/// `VideoSourcesMap` (incremental: pass only new or changed mappings).
pub fn write_video_sources_map(out: &mut String, mapped: &[VideoSourceMapping<'_>]) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "VideoSourcesMap")?;
        m.serialize_entry("mappedSources", mapped)
    })
}

/// `AudioSourcesMap` (incremental: pass only new or changed mappings).
pub fn write_audio_sources_map(out: &mut String, mapped: &[AudioSourceMapping<'_>]) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "AudioSourcesMap")?;
        m.serialize_entry("mappedSources", mapped)
    })
}

/// `SyntheticSourceSendingChangeEvent`; `timestamp` is the RTP timestamp (48 kHz).
pub fn write_synthetic_source_sending(
    out: &mut String,
    source_name: &str,
    sending: bool,
    timestamp: u32,
) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "SyntheticSourceSendingChangeEvent")?;
        m.serialize_entry("sourceName", source_name)?;
        m.serialize_entry("sending", &sending)?;
        m.serialize_entry("timestamp", &timestamp)
    })
}

/// Relays an `EndpointMessage` with `from` set by the bridge (anti-spoofing) and every other
/// field unchanged.
pub fn write_endpoint_message(out: &mut String, from: &str, msg: &EndpointMessage) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "EndpointMessage")?;
        m.serialize_entry("to", &msg.to)?;
        m.serialize_entry("from", from)?;
        for (k, v) in &msg.fields {
            m.serialize_entry(k, v)?;
        }
        Ok(())
    })
}

/// Relays `EndpointStats` with `from` set by the bridge.
pub fn write_endpoint_stats(out: &mut String, from: &str, stats: &EndpointStats) -> Result<(), ChannelError> {
    write_object(out, |m| {
        m.serialize_entry("colibriClass", "EndpointStats")?;
        m.serialize_entry("from", from)?;
        for (k, v) in &stats.fields {
            m.serialize_entry(k, v)?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers: strict parsing.

/// Parses JSON into a `Value`, rejecting duplicate keys in every object (serde_json keeps the
/// last one silently; Jackson's STRICT_DUPLICATE_DETECTION rejects the message).
fn parse_strict(text: &str) -> Result<Value, ChannelError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // StrictValue accepts any JSON, so its only data error is a duplicate key.
            ChannelError::DuplicateKey(e.to_string())
        } else {
            ChannelError::InvalidJson(e)
        }
    })
}

#[derive(Clone, Copy)]
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot hold NaN or infinity, so `from` never maps to Null here in practice.
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element_seed(StrictValue)? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

fn typed<T: de::DeserializeOwned>(class: &'static str, map: Map<String, Value>) -> Result<T, ChannelError> {
    serde_json::from_value(Value::Object(map)).map_err(|source| ChannelError::InvalidMessage { class, source })
}

fn take_from(map: &mut Map<String, Value>, class: &'static str) -> Result<Option<String>, ChannelError> {
    match map.remove("from") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ChannelError::InvalidValue {
            class,
            reason: "`from` must be a string",
        }),
    }
}

fn check_last_n(class: &'static str, last_n: i32) -> Result<(), ChannelError> {
    if last_n < -1 {
        return Err(ChannelError::InvalidValue {
            class,
            reason: "lastN must be -1 or >= 0",
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct ServerHelloIn {
    version: Option<String>,
}

#[derive(Deserialize)]
struct LastNIn {
    #[serde(rename = "lastN")]
    last_n: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceVideoTypeIn {
    source_name: String,
    video_type: VideoType,
    endpoint_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VideoTypeIn {
    video_type: VideoType,
}

#[derive(Deserialize)]
struct ConnectivityIn {
    endpoint: String,
    active: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddReceiverIn {
    bridge_id: String,
    source_name: String,
    video_constraints: Option<ConstraintsIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveReceiverIn {
    bridge_id: String,
    endpoint_id: String,
}

/// Wire form of `VideoConstraints`; absent fields mean unlimited (JVB's defaults).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConstraintsIn {
    #[serde(default = "minus_one")]
    max_height: i32,
    #[serde(default = "minus_one_f")]
    max_frame_rate: f64,
}

fn minus_one() -> i32 {
    -1
}
fn minus_one_f() -> f64 {
    -1.0
}

impl ConstraintsIn {
    fn validate(self, class: &'static str) -> Result<VideoConstraints, ChannelError> {
        if self.max_height < -1 {
            return Err(ChannelError::InvalidValue {
                class,
                reason: "maxHeight must be -1 or >= 0",
            });
        }
        if !(self.max_frame_rate >= 0.0 || self.max_frame_rate == -1.0) {
            return Err(ChannelError::InvalidValue {
                class,
                reason: "maxFrameRate must be -1 or >= 0",
            });
        }
        Ok(VideoConstraints {
            max_height: self.max_height,
            max_frame_rate: self.max_frame_rate,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiverVideoConstraintsIn {
    #[serde(rename = "lastN")]
    last_n: Option<i32>,
    selected_sources: Option<Vec<String>>,
    on_stage_sources: Option<Vec<String>>,
    default_constraints: Option<ConstraintsIn>,
    // Duplicate source names were rejected by `parse_strict`; serde_json's `Map` keeps order
    // only with `preserve_order`, so the order here is the map's (sorted) order.
    constraints: Option<Map<String, Value>>,
    assumed_bandwidth_bps: Option<i64>,
}

fn receiver_video_constraints(map: Map<String, Value>) -> Result<Incoming, ChannelError> {
    const CLASS: &str = "ReceiverVideoConstraints";
    let m: ReceiverVideoConstraintsIn = typed(CLASS, map)?;
    if let Some(n) = m.last_n {
        check_last_n(CLASS, n)?;
    }
    let default_constraints = match m.default_constraints {
        Some(c) => Some(c.validate(CLASS)?),
        None => None,
    };
    let constraints = match m.constraints {
        None => None,
        Some(map) => {
            let mut v = Vec::with_capacity(map.len());
            for (name, value) in map {
                let c: ConstraintsIn = serde_json::from_value(value)
                    .map_err(|source| ChannelError::InvalidMessage { class: CLASS, source })?;
                v.push((name, c.validate(CLASS)?));
            }
            Some(v)
        }
    };
    Ok(Incoming::ReceiverVideoConstraints(ReceiverVideoConstraints {
        last_n: m.last_n,
        selected_sources: m.selected_sources,
        on_stage_sources: m.on_stage_sources,
        default_constraints,
        constraints,
        assumed_bandwidth_bps: m.assumed_bandwidth_bps.and_then(|b| u64::try_from(b).ok()),
    }))
}

#[derive(Deserialize)]
struct AudioSubscriptionIn {
    all: Option<bool>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    mode: Option<String>,
    list: Option<Vec<String>>,
}

fn receiver_audio_subscription(map: Map<String, Value>) -> Result<Incoming, ChannelError> {
    const CLASS: &str = "ReceiverAudioSubscription";
    let m: AudioSubscriptionIn = typed(CLASS, map)?;
    let sub = match m.mode {
        // Legacy form.
        Some(mode) => {
            let list = m.list.unwrap_or_default();
            let mode = mode.to_ascii_lowercase();
            match mode.as_str() {
                "all" => AudioSubscription {
                    all: true,
                    ..Default::default()
                },
                "none" => AudioSubscription::default(),
                "include" => AudioSubscription {
                    all: false,
                    include: list,
                    exclude: Vec::new(),
                },
                "exclude" => AudioSubscription {
                    all: true,
                    include: Vec::new(),
                    exclude: list,
                },
                _ => {
                    return Err(ChannelError::InvalidValue {
                        class: CLASS,
                        reason: "unknown mode",
                    })
                }
            }
        }
        None => AudioSubscription {
            all: m.all.unwrap_or(false),
            include: m.include.unwrap_or_default(),
            exclude: m.exclude.unwrap_or_default(),
        },
    };
    Ok(Incoming::ReceiverAudioSubscription(sub))
}

// ---------------------------------------------------------------------------------------------
// Helpers: writing.

/// Serializes one JSON object into `out` (cleared first) through a map serializer, reusing the
/// string's buffer.
fn write_object<F>(out: &mut String, body: F) -> Result<(), ChannelError>
where
    F: FnOnce(
        &mut serde_json::ser::Compound<'_, &mut Vec<u8>, serde_json::ser::CompactFormatter>,
    ) -> Result<(), serde_json::Error>,
{
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let result = (|| {
        let mut ser = serde_json::Serializer::new(&mut buf);
        let mut map = (&mut ser).serialize_map(None)?;
        body(&mut map)?;
        SerializeMap::end(map)
    })();
    // serde_json writes UTF-8 only; on the impossible error path we still hand back a valid,
    // empty string with the buffer's capacity.
    match String::from_utf8(buf) {
        Ok(s) => *out = s,
        Err(e) => {
            let mut b = e.into_bytes();
            b.clear();
            *out = String::from_utf8(b).unwrap_or_default();
        }
    }
    result.map_err(|e| {
        out.clear();
        ChannelError::Encode(e)
    })
}

/// A slice of string-likes serialized as a JSON array of strings.
struct StrList<'a, S>(&'a [S]);

impl<S: AsRef<str>> Serialize for StrList<'_, S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.collect_seq(self.0.iter().map(AsRef::as_ref))
    }
}

impl Serialize for VideoSourceMapping<'_> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("source", self.source)?;
        m.serialize_entry("owner", self.owner)?;
        m.serialize_entry("ssrc", &self.ssrc)?;
        if let Some(rtx) = self.rtx {
            m.serialize_entry("rtx", &rtx)?;
        }
        m.serialize_entry("videoType", self.video_type.as_str())?;
        if let Some(mid) = self.mid {
            m.serialize_entry("mid", mid)?;
        }
        m.end()
    }
}

impl Serialize for AudioSourceMapping<'_> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("source", self.source)?;
        m.serialize_entry("owner", self.owner)?;
        m.serialize_entry("ssrc", &self.ssrc)?;
        if let Some(mid) = self.mid {
            m.serialize_entry("mid", mid)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Incoming {
        match parse(text) {
            Ok(m) => m,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    /// Every client/relay message of media.md §2.4 parses into the right variant and values.
    #[test]
    fn parses_every_incoming_message() {
        assert_eq!(p(r#"{"colibriClass":"ClientHello"}"#), Incoming::ClientHello);
        assert_eq!(
            p(r#"{"colibriClass":"ServerHello","version":"2.3.250-gabcdef"}"#),
            Incoming::ServerHello {
                version: Some("2.3.250-gabcdef".into())
            }
        );
        assert_eq!(
            p(r#"{"colibriClass":"LastNChangedEvent","lastN":5}"#),
            Incoming::LastNChanged { last_n: 5 }
        );
        assert_eq!(
            p(r#"{"colibriClass":"SourceVideoTypeMessage","sourceName":"a1b2c3d4-v1","videoType":"desktop"}"#),
            Incoming::SourceVideoType {
                source_name: "a1b2c3d4-v1".into(),
                video_type: VideoType::Desktop,
                endpoint_id: None
            }
        );
        assert_eq!(
            p(
                r#"{"colibriClass":"SourceVideoTypeMessage","sourceName":"x-v0","videoType":"desktop_HIGH_fps","endpointId":"x"}"#
            ),
            Incoming::SourceVideoType {
                source_name: "x-v0".into(),
                video_type: VideoType::DesktopHighFps,
                endpoint_id: Some("x".into())
            }
        );
        assert_eq!(
            p(r#"{"colibriClass":"VideoTypeMessage","videoType":"none"}"#),
            Incoming::VideoType {
                video_type: VideoType::Disabled
            }
        );
        assert_eq!(
            p(r#"{"colibriClass":"EndpointConnectivityStatusChangeEvent","endpoint":"a1b2c3d4","active":"false"}"#),
            Incoming::EndpointConnectivityStatusChange {
                endpoint: "a1b2c3d4".into(),
                active: false
            }
        );
        assert_eq!(
            p(
                r#"{"colibriClass":"AddReceiver","bridgeId":"jvb-eu-1","sourceName":"a1b2c3d4-v0","videoConstraints":{"maxHeight":720,"maxFrameRate":-1.0}}"#
            ),
            Incoming::AddReceiver {
                bridge_id: "jvb-eu-1".into(),
                source_name: "a1b2c3d4-v0".into(),
                constraints: VideoConstraints {
                    max_height: 720,
                    max_frame_rate: -1.0
                }
            }
        );
        assert_eq!(
            p(r#"{"colibriClass":"RemoveReceiver","bridgeId":"jvb-eu-1","endpointId":"a1b2c3d4"}"#),
            Incoming::RemoveReceiver {
                bridge_id: "jvb-eu-1".into(),
                endpoint_id: "a1b2c3d4".into()
            }
        );
    }

    #[test]
    fn parses_receiver_video_constraints() {
        let m = p(r#"{"colibriClass":"ReceiverVideoConstraints",
             "lastN":20,
             "selectedSources":["a1b2c3d4-v0"],
             "onStageSources":["e5f6a7b8-v1"],
             "defaultConstraints":{"maxHeight":180},
             "constraints":{"e5f6a7b8-v1":{"maxHeight":2160,"maxFrameRate":30},
                            "0badcafe-v0":{"maxHeight":0}},
             "assumedBandwidthBps":-1,
             "someFutureField":{"x":1}}"#);
        let Incoming::ReceiverVideoConstraints(c) = m else {
            panic!("{m:?}")
        };
        assert_eq!(c.last_n, Some(20));
        assert_eq!(c.selected_sources.as_deref(), Some(&["a1b2c3d4-v0".to_string()][..]));
        assert_eq!(c.on_stage_sources.as_deref(), Some(&["e5f6a7b8-v1".to_string()][..]));
        assert_eq!(
            c.default_constraints,
            Some(VideoConstraints {
                max_height: 180,
                max_frame_rate: -1.0
            })
        );
        let cs = c.constraints.expect("constraints present");
        assert_eq!(cs.len(), 2);
        let get = |n: &str| cs.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(
            get("e5f6a7b8-v1"),
            Some(VideoConstraints {
                max_height: 2160,
                max_frame_rate: 30.0
            })
        );
        assert_eq!(
            get("0badcafe-v0"),
            Some(VideoConstraints {
                max_height: 0,
                max_frame_rate: -1.0
            })
        );
        assert_eq!(c.assumed_bandwidth_bps, None);

        let Incoming::ReceiverVideoConstraints(c) = p(r#"{"colibriClass":"ReceiverVideoConstraints"}"#) else {
            panic!()
        };
        assert_eq!(c, ReceiverVideoConstraints::default());
    }

    #[test]
    fn parses_audio_subscription_both_forms() {
        let sub = |t| match p(t) {
            Incoming::ReceiverAudioSubscription(s) => s,
            m => panic!("{m:?}"),
        };
        let s =
            sub(r#"{"colibriClass":"ReceiverAudioSubscription","all":true,"include":[],"exclude":["a1b2c3d4-a0"]}"#);
        assert_eq!(
            s,
            AudioSubscription {
                all: true,
                include: vec![],
                exclude: vec!["a1b2c3d4-a0".into()]
            }
        );
        let s = sub(r#"{"colibriClass":"ReceiverAudioSubscription","mode":"Include","list":["a1b2c3d4-a0"]}"#);
        assert_eq!(
            s,
            AudioSubscription {
                all: false,
                include: vec!["a1b2c3d4-a0".into()],
                exclude: vec![]
            }
        );
        let s = sub(r#"{"colibriClass":"ReceiverAudioSubscription","mode":"Exclude","list":["x"]}"#);
        assert_eq!(
            s,
            AudioSubscription {
                all: true,
                include: vec![],
                exclude: vec!["x".into()]
            }
        );
        assert!(sub(r#"{"colibriClass":"ReceiverAudioSubscription","mode":"All"}"#).all);
        assert!(!sub(r#"{"colibriClass":"ReceiverAudioSubscription","mode":"None"}"#).all);
        assert!(matches!(
            parse(r#"{"colibriClass":"ReceiverAudioSubscription","mode":"Some"}"#),
            Err(ChannelError::InvalidValue { .. })
        ));
    }

    /// EndpointMessage and EndpointStats keep unknown fields; relaying overwrites `from`.
    #[test]
    fn endpoint_message_and_stats_relay() {
        let m = p(
            r#"{"colibriClass":"EndpointMessage","to":"","from":"spoofed","msgPayload":{"type":"e2e-ping-request","id":7},"extra":[1,2]}"#,
        );
        let Incoming::EndpointMessage(m) = m else {
            panic!("{m:?}")
        };
        assert_eq!(m.to, "");
        assert_eq!(m.from.as_deref(), Some("spoofed"));
        let mut out = String::new();
        write_endpoint_message(&mut out, "1a2b3c4d", &m).expect("encodes");
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(
            v,
            json!({"colibriClass":"EndpointMessage","to":"","from":"1a2b3c4d",
                   "msgPayload":{"type":"e2e-ping-request","id":7},"extra":[1,2]})
        );
        assert!(matches!(
            parse(r#"{"colibriClass":"EndpointMessage","msgPayload":{}}"#),
            Err(ChannelError::InvalidValue {
                class: "EndpointMessage",
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"colibriClass":"EndpointMessage","to":5}"#),
            Err(ChannelError::InvalidValue { .. })
        ));

        let s = p(
            r#"{"colibriClass":"EndpointStats","bitrate":{"upload":812,"download":1400},"connectionQuality":100,
             "jvbRTT":38,"maxEnabledResolution":720,"packetLoss":{"total":0,"upload":0,"download":0},"serverRegion":"eu-west"}"#,
        );
        let Incoming::EndpointStats(s) = s else { panic!("{s:?}") };
        assert_eq!(s.from, None);
        write_endpoint_stats(&mut out, "ep1", &s).expect("encodes");
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["colibriClass"], "EndpointStats");
        assert_eq!(v["from"], "ep1");
        assert_eq!(v["bitrate"]["download"], 1400);
        assert_eq!(v["serverRegion"], "eu-west");
        assert_eq!(v.as_object().map(|o| o.len()), Some(8));
    }

    /// Each malformed input is rejected with its own error.
    #[test]
    fn rejections() {
        assert!(matches!(parse("{\"colibriClass\":"), Err(ChannelError::InvalidJson(_))));
        assert!(matches!(parse("not json"), Err(ChannelError::InvalidJson(_))));
        assert!(matches!(
            parse(r#"{"colibriClass":"ClientHello"} x"#),
            Err(ChannelError::InvalidJson(_))
        ));
        assert!(matches!(parse("[1,2]"), Err(ChannelError::NotAnObject)));
        assert!(matches!(parse(r#"{"lastN":3}"#), Err(ChannelError::MissingClass)));
        assert!(matches!(
            parse(r#"{"colibriClass":7}"#),
            Err(ChannelError::ClassNotString)
        ));
        assert!(matches!(
            parse(r#"{"colibriClass":"PinnedEndpointChangedEvent"}"#),
            Err(ChannelError::UnknownClass(c)) if c == "PinnedEndpointChangedEvent"
        ));
        // Duplicate keys: top level, and inside the constraints map.
        assert!(matches!(
            parse(r#"{"colibriClass":"LastNChangedEvent","lastN":1,"lastN":2}"#),
            Err(ChannelError::DuplicateKey(_))
        ));
        assert!(matches!(
            parse(r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"a-v0":{"maxHeight":1},"a-v0":{"maxHeight":2}}}"#),
            Err(ChannelError::DuplicateKey(k)) if k.contains("a-v0")
        ));
        assert!(matches!(
            parse(r#"{"colibriClass":"EndpointMessage","to":"","msgPayload":{"a":1,"a":2}}"#),
            Err(ChannelError::DuplicateKey(_))
        ));
        // Oversize: refused before parsing (the text is not even valid JSON).
        let big = "x".repeat(MAX_MESSAGE_LEN + 1);
        assert!(matches!(parse(&big), Err(ChannelError::TooLarge { .. })));
        // Wrong types and out-of-range values.
        for bad in [
            r#"{"colibriClass":"LastNChangedEvent","lastN":"5"}"#,
            r#"{"colibriClass":"LastNChangedEvent"}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","lastN":1.5}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","selectedSources":"a-v0"}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"a-v0":{"maxHeight":"720"}}}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":[]}"#,
            r#"{"colibriClass":"SourceVideoTypeMessage","sourceName":"a-v0","videoType":"hologram"}"#,
            r#"{"colibriClass":"SourceVideoTypeMessage","videoType":"camera"}"#,
        ] {
            assert!(matches!(parse(bad), Err(ChannelError::InvalidMessage { .. })), "{bad}");
        }
        for bad in [
            r#"{"colibriClass":"LastNChangedEvent","lastN":-2}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","defaultConstraints":{"maxHeight":-5}}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"a":{"maxFrameRate":-3}}}"#,
            r#"{"colibriClass":"EndpointConnectivityStatusChangeEvent","endpoint":"a","active":"maybe"}"#,
        ] {
            assert!(matches!(parse(bad), Err(ChannelError::InvalidValue { .. })), "{bad}");
        }
    }

    /// Serializers write what JVB writes; checked field by field after parsing back.
    #[test]
    fn serializers_round_trip() {
        let mut out = String::with_capacity(16);
        let obj = |s: &str| -> Map<String, Value> {
            match serde_json::from_str(s) {
                Ok(Value::Object(m)) => m,
                other => panic!("{s}: {other:?}"),
            }
        };

        write_server_hello(&mut out, None).expect("encodes");
        assert_eq!(out, r#"{"colibriClass":"ServerHello"}"#);
        write_server_hello(&mut out, Some("1.0")).expect("encodes");
        assert_eq!(obj(&out)["version"], "1.0");

        write_forwarded_sources(&mut out, &["a1b2c3d4-v0", "e5f6a7b8-v1"]).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "ForwardedSources");
        assert_eq!(m["forwardedSources"], json!(["a1b2c3d4-v0", "e5f6a7b8-v1"]));
        write_forwarded_sources::<&str>(&mut out, &[]).expect("encodes");
        assert_eq!(obj(&out)["forwardedSources"], json!([]));

        write_sender_source_constraints(&mut out, "a1b2c3d4-v0", 360).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "SenderSourceConstraints");
        assert_eq!(m["sourceName"], "a1b2c3d4-v0");
        assert_eq!(m["maxHeight"], 360);

        let prev = vec!["e5f6a7b8".to_string(), "0badcafe".to_string()];
        write_dominant_speaker(&mut out, "a1b2c3d4", &prev, false).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "DominantSpeakerEndpointChangeEvent");
        assert_eq!(m["dominantSpeakerEndpoint"], "a1b2c3d4");
        assert_eq!(m["previousSpeakers"], json!(["e5f6a7b8", "0badcafe"]));
        assert_eq!(m["silence"], false);

        write_connectivity_status(&mut out, "a1b2c3d4", false).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "EndpointConnectivityStatusChangeEvent");
        assert_eq!(m["endpoint"], "a1b2c3d4");
        assert_eq!(m["active"], "false");
        // The bridge's own output parses with our (relay-side) parser.
        assert_eq!(
            parse(&out).expect("parses"),
            Incoming::EndpointConnectivityStatusChange {
                endpoint: "a1b2c3d4".into(),
                active: false
            }
        );

        write_connection_stats(&mut out, 2_450_000).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "ConnectionStats");
        assert_eq!(m["estimatedDownlinkBandwidth"], 2_450_000);

        write_video_sources_map(
            &mut out,
            &[VideoSourceMapping {
                source: "a1b2c3d4-v0",
                owner: "a1b2c3d4",
                ssrc: 3482117731,
                rtx: Some(1790244380),
                video_type: VideoType::Camera,
                mid: Some("v0"),
            }],
        )
        .expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "VideoSourcesMap");
        assert_eq!(
            m["mappedSources"],
            json!([{"source":"a1b2c3d4-v0","owner":"a1b2c3d4","ssrc":3482117731u32,"rtx":1790244380u32,"videoType":"CAMERA","mid":"v0"}])
        );

        write_audio_sources_map(
            &mut out,
            &[AudioSourceMapping {
                source: "a1b2c3d4-a0",
                owner: "a1b2c3d4",
                ssrc: 2012883412,
                mid: None,
            }],
        )
        .expect("encodes");
        let m = obj(&out);
        assert_eq!(m["colibriClass"], "AudioSourcesMap");
        assert_eq!(
            m["mappedSources"],
            json!([{"source":"a1b2c3d4-a0","owner":"a1b2c3d4","ssrc":2012883412u32}])
        );

        write_synthetic_source_sending(&mut out, "55555555-a0.hi", true, 3_840_000).expect("encodes");
        let m = obj(&out);
        assert_eq!(m["sourceName"], "55555555-a0.hi");
        assert_eq!(m["sending"], true);
        assert_eq!(m["timestamp"], 3_840_000);
    }
}
