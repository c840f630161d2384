//! JSON form of Colibri2 (colibri.md §3.13), as JVB's REST API and jitsi-xmpp-extensions'
//! `Colibri2JSON*` write it: element attributes become keys, repeated children become plural
//! arrays, payload-type and candidate attributes are strings, SSRCs and header-extension ids
//! numbers.
//!
//! The `Json*` types mirror the wire exactly; `TryFrom`/`From` convert to and from the shared
//! model with the same bounds as the XML parser. Unknown keys are ignored. Numbers sent as
//! strings and strings sent as numbers are both accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    bounded, limits, media_kind_str, ns, parse_media_kind, truncated, Candidate, ConferenceModified, ConferenceModify,
    DtlsFingerprint, Endpoint, EndpointResponse, ForceMute, IceUdpTransport, Media, MediaSource, ParseError,
    PayloadType, Relay, RtcpFb, RtpHdrExt, Sctp, Source, SsrcGroupDesc, Transport, WebSocket,
};

/// The JSON `conference-modify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonConferenceModify {
    /// Required for POST; PATCH takes it from the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub create: bool,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub expire: bool,
    #[serde(default, deserialize_with = "de_opt_bool", skip_serializing_if = "Option::is_none")]
    pub rtcstats_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<JsonEndpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<JsonRelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connects: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonEndpoint {
    pub id: String,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub create: bool,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub expire: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muc_role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub medias: Vec<JsonMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<JsonTransport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<JsonMediaSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_mute: Option<JsonForceMute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_last_n: Option<JsonInitialLastN>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonRelay {
    pub id: String,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub create: bool,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub expire: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    /// Everything else a relay may carry; only its presence matters here.
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonForceMute {
    #[serde(default, deserialize_with = "de_bool")]
    pub audio: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub video: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonInitialLastN {
    pub value: StrNum,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonMedia {
    #[serde(rename = "type")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_types: Vec<JsonPayloadType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtp_hdrexts: Vec<JsonRtpHdrExt>,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub extmap_allow_mixed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonPayloadType {
    pub id: StrNum,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clockrate: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptime: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxptime: Option<StrNum>,
    /// `name → value`; a parameter without a name is keyed `"null"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, StrNum>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtcp_fbs: Vec<JsonRtcpFb>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonRtcpFb {
    #[serde(rename = "type")]
    pub fb_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonRtpHdrExt {
    pub id: StrNum,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senders: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<String>,
}

/// The colibri2 transport wrapper.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonTransport {
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub ice_controlling: bool,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub use_unique_port: bool,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub ice_restart: bool,
    /// The ICE-UDP transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<JsonIceUdpTransport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<JsonSctp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonIceUdpTransport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmlns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufrag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_generation: Option<StrNum>,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub rtcp_mux: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<JsonFingerprint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<JsonCandidate>,
    /// URL strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub web_sockets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonFingerprint {
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub cryptex: bool,
}

/// A candidate: every attribute a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonCandidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foundation: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub cand_type: Option<String>,
    pub ip: String,
    pub port: StrNum,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_port: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcptype: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonSctp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<StrNum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonMediaSource {
    #[serde(rename = "type")]
    pub media_type: String,
    pub id: String,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub synthetic: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<JsonSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssrc_groups: Vec<JsonSsrcGroup>,
}

/// A source: a bare SSRC number, or an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JsonSource {
    Ssrc(StrNum),
    Full {
        ssrc: StrNum,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(rename = "videoType", default, skip_serializing_if = "Option::is_none")]
        video_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameters: Option<BTreeMap<String, StrNum>>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSsrcGroup {
    pub semantics: String,
    #[serde(default)]
    pub sources: Vec<StrNum>,
}

/// The JSON `conference-modified`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonConferenceModified {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<JsonEndpointResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<JsonMediaSource>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonEndpointResponse {
    pub id: String,
    #[serde(default, deserialize_with = "de_bool", skip_serializing_if = "is_false")]
    pub expire: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<JsonTransport>,
}

/// A scalar that may arrive as a JSON string or number; kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrNum {
    Str(String),
    Num(serde_json::Number),
}

impl StrNum {
    pub fn text(&self) -> String {
        match self {
            StrNum::Str(s) => s.clone(),
            StrNum::Num(n) => n.to_string(),
        }
    }

    fn parse<T: std::str::FromStr>(&self, element: &'static str, attr: &'static str) -> Result<T, ParseError> {
        let text = self.text();
        text.trim().parse().map_err(|_| ParseError::InvalidValue {
            element,
            attr,
            value: truncated(&text),
        })
    }

    fn bounded_text(&self, attr: &'static str) -> Result<String, ParseError> {
        let text = self.text();
        bounded(attr, &text)?;
        Ok(text)
    }
}

impl From<&str> for StrNum {
    fn from(s: &str) -> Self {
        StrNum::Str(s.to_owned())
    }
}

impl From<u32> for StrNum {
    fn from(n: u32) -> Self {
        StrNum::Num(n.into())
    }
}

fn string(v: impl ToString) -> StrNum {
    StrNum::Str(v.to_string())
}

// ----- request: JSON → model -----

impl JsonConferenceModify {
    /// Parse a request body.
    pub fn from_slice(body: &[u8]) -> Result<Self, ParseError> {
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))
    }
}

impl TryFrom<JsonConferenceModify> for ConferenceModify {
    type Error = ParseError;

    fn try_from(j: JsonConferenceModify) -> Result<Self, ParseError> {
        const E: &str = "conference-modify";
        let meeting_id = j.meeting_id.ok_or(ParseError::MissingAttribute {
            element: E,
            attr: "meeting-id",
        })?;
        bounded("meeting-id", &meeting_id)?;
        if meeting_id.trim().is_empty() {
            return Err(ParseError::InvalidValue {
                element: E,
                attr: "meeting-id",
                value: String::new(),
            });
        }
        opt_bounded("name", &j.name)?;
        check_len(j.endpoints.len(), "endpoint", limits::ENDPOINTS)?;
        check_len(j.relays.len(), "relay", limits::RELAYS)?;
        Ok(ConferenceModify {
            meeting_id,
            name: j.name,
            create: j.create,
            expire: j.expire,
            rtcstats_enabled: j.rtcstats_enabled,
            endpoints: j
                .endpoints
                .into_iter()
                .map(Endpoint::try_from)
                .collect::<Result<_, _>>()?,
            relays: j
                .relays
                .into_iter()
                .map(|r| -> Result<Relay, ParseError> {
                    bounded("id", &r.id)?;
                    Ok(Relay {
                        id: r.id,
                        create: r.create,
                        expire: r.expire,
                        mesh_id: r.mesh_id,
                        has_content: !r.rest.is_empty(),
                    })
                })
                .collect::<Result<_, _>>()?,
            connects: j.connects.is_some(),
        })
    }
}

impl TryFrom<JsonEndpoint> for Endpoint {
    type Error = ParseError;

    fn try_from(j: JsonEndpoint) -> Result<Self, ParseError> {
        bounded("id", &j.id)?;
        opt_bounded("stats-id", &j.stats_id)?;
        opt_bounded("muc-role", &j.muc_role)?;
        check_len(j.medias.len(), "media", limits::MEDIA)?;
        check_len(j.capabilities.len(), "capability", limits::CAPABILITIES)?;
        for c in &j.capabilities {
            bounded("capability", c)?;
        }
        Ok(Endpoint {
            id: j.id,
            create: j.create,
            expire: j.expire,
            stats_id: j.stats_id,
            muc_role: j.muc_role,
            media: j.medias.into_iter().map(Media::try_from).collect::<Result<_, _>>()?,
            transport: j.transport.map(Transport::try_from).transpose()?,
            sources: j.sources.map(sources_from_json).transpose()?,
            force_mute: j.force_mute.map(|f| ForceMute {
                audio: f.audio,
                video: f.video,
            }),
            capabilities: j.capabilities,
            initial_last_n: j
                .initial_last_n
                .map(|n| n.value.parse("initial-last-n", "value"))
                .transpose()?,
        })
    }
}

impl TryFrom<JsonMedia> for Media {
    type Error = ParseError;

    fn try_from(j: JsonMedia) -> Result<Self, ParseError> {
        let kind = parse_media_kind("media", "type", &j.media_type)?;
        check_len(j.payload_types.len(), "payload-type", limits::PAYLOAD_TYPES)?;
        check_len(j.rtp_hdrexts.len(), "rtp-hdrext", limits::HDREXTS)?;
        let mut payload_types = Vec::with_capacity(j.payload_types.len());
        for pt in j.payload_types {
            const P: &str = "payload-type";
            let id: u8 = pt.id.parse(P, "id")?;
            if id > 127 {
                return Err(ParseError::InvalidValue {
                    element: P,
                    attr: "id",
                    value: id.to_string(),
                });
            }
            opt_bounded("name", &pt.name)?;
            let params = pt.parameters.unwrap_or_default();
            check_len(params.len(), "parameter", limits::PARAMETERS)?;
            check_len(pt.rtcp_fbs.len(), "rtcp-fb", limits::RTCP_FBS)?;
            let mut parameters = Vec::with_capacity(params.len());
            for (name, value) in params {
                bounded("parameter", &name)?;
                let name = if name == "null" { None } else { Some(name) };
                parameters.push((name, value.bounded_text("value")?));
            }
            let mut rtcp_fbs = Vec::with_capacity(pt.rtcp_fbs.len());
            for fb in pt.rtcp_fbs {
                bounded("type", &fb.fb_type)?;
                opt_bounded("subtype", &fb.subtype)?;
                rtcp_fbs.push(RtcpFb {
                    fb_type: fb.fb_type,
                    subtype: fb.subtype,
                });
            }
            payload_types.push(PayloadType {
                id,
                name: pt.name,
                clockrate: pt.clockrate.map(|v| v.parse(P, "clockrate")).transpose()?,
                channels: pt.channels.map(|v| v.parse(P, "channels")).transpose()?,
                ptime: pt.ptime.map(|v| v.parse(P, "ptime")).transpose()?,
                maxptime: pt.maxptime.map(|v| v.parse(P, "maxptime")).transpose()?,
                parameters,
                rtcp_fbs,
            });
        }
        let mut rtp_hdrexts = Vec::with_capacity(j.rtp_hdrexts.len());
        for ext in j.rtp_hdrexts {
            bounded("uri", &ext.uri)?;
            opt_bounded("senders", &ext.senders)?;
            opt_bounded("attributes", &ext.attributes)?;
            rtp_hdrexts.push(RtpHdrExt {
                id: ext.id.parse("rtp-hdrext", "id")?,
                uri: ext.uri,
                senders: ext.senders,
                attributes: ext.attributes,
            });
        }
        Ok(Media {
            kind,
            payload_types,
            rtp_hdrexts,
            extmap_allow_mixed: j.extmap_allow_mixed,
        })
    }
}

impl TryFrom<JsonTransport> for Transport {
    type Error = ParseError;

    fn try_from(j: JsonTransport) -> Result<Self, ParseError> {
        let ice = match j.transport {
            None => None,
            Some(t) => {
                opt_bounded("ufrag", &t.ufrag)?;
                opt_bounded("pwd", &t.pwd)?;
                check_len(t.candidates.len(), "candidate", limits::CANDIDATES)?;
                check_len(t.fingerprints.len(), "fingerprint", limits::FINGERPRINTS)?;
                check_len(t.web_sockets.len(), "web-socket", limits::WEB_SOCKETS)?;
                let mut candidates = Vec::with_capacity(t.candidates.len());
                for c in t.candidates {
                    const C: &str = "candidate";
                    bounded("ip", &c.ip)?;
                    opt_bounded("protocol", &c.protocol)?;
                    opt_bounded("type", &c.cand_type)?;
                    opt_bounded("rel-addr", &c.rel_addr)?;
                    opt_bounded("tcptype", &c.tcptype)?;
                    candidates.push(Candidate {
                        component: c.component.map(|v| v.parse(C, "component")).transpose()?.unwrap_or(1),
                        foundation: c
                            .foundation
                            .map(|v| v.bounded_text("foundation"))
                            .transpose()?
                            .unwrap_or_default(),
                        generation: c.generation.map(|v| v.parse(C, "generation")).transpose()?.unwrap_or(0),
                        id: c.id.map(|v| v.bounded_text("id")).transpose()?,
                        ip: c.ip,
                        port: c.port.parse(C, "port")?,
                        priority: c.priority.map(|v| v.parse(C, "priority")).transpose()?.unwrap_or(0),
                        protocol: c.protocol.unwrap_or_else(|| "udp".to_owned()),
                        cand_type: c.cand_type.unwrap_or_else(|| "host".to_owned()),
                        rel_addr: c.rel_addr,
                        rel_port: c.rel_port.map(|v| v.parse(C, "rel-port")).transpose()?,
                        network: c.network.map(|v| v.parse(C, "network")).transpose()?,
                        tcptype: c.tcptype,
                    });
                }
                let mut fingerprints = Vec::with_capacity(t.fingerprints.len());
                for f in t.fingerprints {
                    bounded("fingerprint", &f.fingerprint)?;
                    opt_bounded("hash", &f.hash)?;
                    opt_bounded("setup", &f.setup)?;
                    fingerprints.push(DtlsFingerprint {
                        fingerprint: f.fingerprint,
                        hash: f.hash,
                        setup: f.setup,
                        cryptex: f.cryptex,
                    });
                }
                let mut web_sockets = Vec::with_capacity(t.web_sockets.len());
                for url in t.web_sockets {
                    bounded("url", &url)?;
                    web_sockets.push(WebSocket {
                        url: Some(url),
                        active: false,
                    });
                }
                Some(IceUdpTransport {
                    ufrag: t.ufrag,
                    pwd: t.pwd,
                    ice_generation: t
                        .ice_generation
                        .map(|v| v.parse("transport", "ice-generation"))
                        .transpose()?,
                    rtcp_mux: t.rtcp_mux,
                    candidates,
                    fingerprints,
                    web_sockets,
                })
            }
        };
        let sctp = match j.sctp {
            None => None,
            Some(s) => {
                opt_bounded("role", &s.role)?;
                Some(Sctp {
                    port: s.port.map(|p| p.parse("sctp", "port")).transpose()?,
                    role: s.role,
                })
            }
        };
        Ok(Transport {
            ice_controlling: j.ice_controlling,
            use_unique_port: j.use_unique_port,
            ice_restart: j.ice_restart,
            ice,
            sctp,
        })
    }
}

fn sources_from_json(list: Vec<JsonMediaSource>) -> Result<Vec<MediaSource>, ParseError> {
    check_len(list.len(), "media-source", limits::MEDIA_SOURCES)?;
    list.into_iter().map(MediaSource::try_from).collect()
}

impl TryFrom<JsonMediaSource> for MediaSource {
    type Error = ParseError;

    fn try_from(j: JsonMediaSource) -> Result<Self, ParseError> {
        const E: &str = "media-source";
        let kind = parse_media_kind(E, "type", &j.media_type)?;
        bounded("id", &j.id)?;
        check_len(j.sources.len(), "source", limits::SOURCES)?;
        check_len(j.ssrc_groups.len(), "ssrc-group", limits::SSRC_GROUPS)?;
        let mut sources = Vec::with_capacity(j.sources.len());
        for s in j.sources {
            sources.push(match s {
                JsonSource::Ssrc(ssrc) => Source {
                    ssrc: ssrc.parse("source", "ssrc")?,
                    name: None,
                    video_type: None,
                    rid: None,
                    msid: None,
                },
                JsonSource::Full {
                    ssrc,
                    name,
                    video_type,
                    rid,
                    parameters,
                } => {
                    opt_bounded("name", &name)?;
                    opt_bounded("videoType", &video_type)?;
                    opt_bounded("rid", &rid)?;
                    let msid = parameters
                        .and_then(|p| p.get("msid").cloned())
                        .map(|m| m.bounded_text("msid"))
                        .transpose()?;
                    Source {
                        ssrc: ssrc.parse("source", "ssrc")?,
                        name,
                        video_type,
                        rid,
                        msid,
                    }
                }
            });
        }
        let mut ssrc_groups = Vec::with_capacity(j.ssrc_groups.len());
        for g in j.ssrc_groups {
            bounded("semantics", &g.semantics)?;
            check_len(g.sources.len(), "source", limits::GROUP_SSRCS)?;
            ssrc_groups.push(SsrcGroupDesc {
                semantics: g.semantics,
                ssrcs: g
                    .sources
                    .iter()
                    .map(|s| s.parse("ssrc-group", "ssrc"))
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(MediaSource {
            kind,
            id: j.id,
            synthetic: j.synthetic,
            sources,
            ssrc_groups,
        })
    }
}

// ----- response: model → JSON (and back, for test clients) -----

impl From<&ConferenceModified> for JsonConferenceModified {
    fn from(m: &ConferenceModified) -> Self {
        JsonConferenceModified {
            endpoints: m
                .endpoints
                .iter()
                .map(|e| JsonEndpointResponse {
                    id: e.id.clone(),
                    expire: e.expire,
                    transport: e.transport.as_ref().map(JsonTransport::from),
                })
                .collect(),
            sources: m
                .sources
                .as_ref()
                .map(|s| s.iter().map(JsonMediaSource::from).collect()),
        }
    }
}

impl TryFrom<JsonConferenceModified> for ConferenceModified {
    type Error = ParseError;

    fn try_from(j: JsonConferenceModified) -> Result<Self, ParseError> {
        check_len(j.endpoints.len(), "endpoint", limits::ENDPOINTS)?;
        Ok(ConferenceModified {
            endpoints: j
                .endpoints
                .into_iter()
                .map(|e| -> Result<EndpointResponse, ParseError> {
                    bounded("id", &e.id)?;
                    Ok(EndpointResponse {
                        id: e.id,
                        expire: e.expire,
                        transport: e.transport.map(Transport::try_from).transpose()?,
                    })
                })
                .collect::<Result<_, _>>()?,
            sources: j.sources.map(sources_from_json).transpose()?,
        })
    }
}

impl From<&Transport> for JsonTransport {
    fn from(t: &Transport) -> Self {
        JsonTransport {
            ice_controlling: t.ice_controlling,
            use_unique_port: t.use_unique_port,
            ice_restart: t.ice_restart,
            transport: t.ice.as_ref().map(|ice| JsonIceUdpTransport {
                xmlns: Some(ns::ICE_UDP.to_owned()),
                ufrag: ice.ufrag.clone(),
                pwd: ice.pwd.clone(),
                ice_generation: ice.ice_generation.map(string),
                rtcp_mux: ice.rtcp_mux,
                fingerprints: ice
                    .fingerprints
                    .iter()
                    .map(|f| JsonFingerprint {
                        fingerprint: f.fingerprint.clone(),
                        hash: f.hash.clone(),
                        setup: f.setup.clone(),
                        cryptex: f.cryptex,
                    })
                    .collect(),
                candidates: ice
                    .candidates
                    .iter()
                    .map(|c| JsonCandidate {
                        component: Some(string(c.component)),
                        foundation: Some(string(&c.foundation)),
                        generation: Some(string(c.generation)),
                        id: c.id.as_deref().map(StrNum::from),
                        network: c.network.map(string),
                        priority: Some(string(c.priority)),
                        protocol: Some(c.protocol.clone()),
                        cand_type: Some(c.cand_type.clone()),
                        ip: c.ip.clone(),
                        port: string(c.port),
                        rel_addr: c.rel_addr.clone(),
                        rel_port: c.rel_port.map(string),
                        tcptype: c.tcptype.clone(),
                    })
                    .collect(),
                web_sockets: ice.web_sockets.iter().filter_map(|w| w.url.clone()).collect(),
            }),
            sctp: t.sctp.as_ref().map(|s| JsonSctp {
                port: s.port.map(|p| StrNum::from(u32::from(p))),
                role: s.role.clone(),
            }),
        }
    }
}

impl From<&MediaSource> for JsonMediaSource {
    fn from(m: &MediaSource) -> Self {
        JsonMediaSource {
            media_type: media_kind_str(m.kind).to_owned(),
            id: m.id.clone(),
            synthetic: m.synthetic,
            sources: m
                .sources
                .iter()
                .map(|s| JsonSource::Full {
                    ssrc: StrNum::from(s.ssrc),
                    name: s.name.clone(),
                    video_type: s.video_type.clone(),
                    rid: s.rid.clone(),
                    parameters: s
                        .msid
                        .as_ref()
                        .map(|m| BTreeMap::from([("msid".to_owned(), StrNum::Str(m.clone()))])),
                })
                .collect(),
            ssrc_groups: m
                .ssrc_groups
                .iter()
                .map(|g| JsonSsrcGroup {
                    semantics: g.semantics.clone(),
                    sources: g.ssrcs.iter().map(|s| StrNum::from(*s)).collect(),
                })
                .collect(),
        }
    }
}

// ----- request: model → JSON (for test clients and the load tester) -----

impl From<&ConferenceModify> for JsonConferenceModify {
    fn from(m: &ConferenceModify) -> Self {
        JsonConferenceModify {
            meeting_id: Some(m.meeting_id.clone()),
            name: m.name.clone(),
            create: m.create,
            expire: m.expire,
            rtcstats_enabled: m.rtcstats_enabled,
            endpoints: m.endpoints.iter().map(JsonEndpoint::from).collect(),
            relays: m
                .relays
                .iter()
                .map(|r| JsonRelay {
                    id: r.id.clone(),
                    create: r.create,
                    expire: r.expire,
                    mesh_id: r.mesh_id.clone(),
                    rest: BTreeMap::new(),
                })
                .collect(),
            connects: m.connects.then(|| serde_json::Value::Array(vec![])),
        }
    }
}

impl From<&Endpoint> for JsonEndpoint {
    fn from(e: &Endpoint) -> Self {
        JsonEndpoint {
            id: e.id.clone(),
            create: e.create,
            expire: e.expire,
            stats_id: e.stats_id.clone(),
            muc_role: e.muc_role.clone(),
            medias: e
                .media
                .iter()
                .map(|m| JsonMedia {
                    media_type: media_kind_str(m.kind).to_owned(),
                    payload_types: m
                        .payload_types
                        .iter()
                        .map(|pt| JsonPayloadType {
                            id: string(pt.id),
                            name: pt.name.clone(),
                            clockrate: pt.clockrate.map(string),
                            channels: pt.channels.map(string),
                            ptime: pt.ptime.map(string),
                            maxptime: pt.maxptime.map(string),
                            parameters: (!pt.parameters.is_empty()).then(|| {
                                pt.parameters
                                    .iter()
                                    .map(|(n, v)| (n.clone().unwrap_or_else(|| "null".to_owned()), string(v)))
                                    .collect()
                            }),
                            rtcp_fbs: pt
                                .rtcp_fbs
                                .iter()
                                .map(|fb| JsonRtcpFb {
                                    fb_type: fb.fb_type.clone(),
                                    subtype: fb.subtype.clone(),
                                })
                                .collect(),
                        })
                        .collect(),
                    rtp_hdrexts: m
                        .rtp_hdrexts
                        .iter()
                        .map(|x| JsonRtpHdrExt {
                            id: StrNum::from(u32::from(x.id)),
                            uri: x.uri.clone(),
                            senders: x.senders.clone(),
                            attributes: x.attributes.clone(),
                        })
                        .collect(),
                    extmap_allow_mixed: m.extmap_allow_mixed,
                })
                .collect(),
            transport: e.transport.as_ref().map(JsonTransport::from),
            sources: e
                .sources
                .as_ref()
                .map(|s| s.iter().map(JsonMediaSource::from).collect()),
            force_mute: e.force_mute.map(|f| JsonForceMute {
                audio: f.audio,
                video: f.video,
            }),
            capabilities: e.capabilities.clone(),
            initial_last_n: e.initial_last_n.map(|n| JsonInitialLastN {
                value: StrNum::Num(n.into()),
            }),
        }
    }
}

// ----- helpers -----

fn check_len(len: usize, what: &'static str, limit: usize) -> Result<(), ParseError> {
    if len > limit {
        Err(ParseError::TooMany(what, limit))
    } else {
        Ok(())
    }
}

fn opt_bounded(what: &'static str, v: &Option<String>) -> Result<(), ParseError> {
    match v {
        Some(s) => bounded(what, s),
        None => Ok(()),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A boolean given as a JSON boolean or as the string `"true"`/`"false"`.
fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    Ok(match B::deserialize(d)? {
        B::B(b) => b,
        B::S(s) => s.trim().eq_ignore_ascii_case("true"),
    })
}

fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    de_bool(d).map(Some)
}
