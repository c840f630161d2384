//! The harness's Jicofo: allocates conferences and endpoints on a bridge with Colibri2, shaped
//! as Jicofo shapes its requests (colibri.md §4.1), in the JSON form of the bridge's private REST
//! API (colibri.md §3.13).

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::endpoint::parse_colon_hex;

/// The bridge side of one endpoint's transport, from the allocation answer.
#[derive(Debug, Clone)]
pub struct BridgeTransport {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprint: Vec<u8>,
    pub candidates: Vec<SocketAddr>,
    /// The answer carried `sctp` with port 5000.
    pub sctp_port: Option<u16>,
}

impl BridgeTransport {
    /// The candidate to use from `local`: same address family, loopback first when we are on
    /// loopback.
    pub fn pick_candidate(&self, local: SocketAddr) -> anyhow::Result<SocketAddr> {
        let same = |c: &&SocketAddr| c.is_ipv4() == local.is_ipv4();
        self.candidates
            .iter()
            .filter(same)
            .find(|c| c.ip().is_loopback() == local.ip().is_loopback())
            .or_else(|| self.candidates.iter().find(same))
            .copied()
            .ok_or_else(|| anyhow!("the bridge offered no usable candidate: {:?}", self.candidates))
    }
}

/// A Colibri2-over-REST client.
#[derive(Clone)]
pub struct Focus {
    base: String,
    agent: ureq::Agent,
}

impl Focus {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(15)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// Allocate one endpoint, creating the conference with the first one, as Jicofo does.
    pub async fn allocate(
        &self,
        meeting_id: &str,
        create_conference: bool,
        endpoint: &str,
    ) -> anyhow::Result<BridgeTransport> {
        let mut body = json!({
            "meeting-id": meeting_id,
            "endpoints": [ {
                "id": endpoint,
                "create": true,
                "stats-id": format!("{endpoint}-stats"),
                "medias": medias(),
                "transport": { "ice-controlling": true, "sctp": {} },
                "capabilities": ["source-names"],
            } ],
        });
        if create_conference {
            body["create"] = json!(true);
            body["name"] = json!(format!("{meeting_id}@conference.meet.jitsi"));
        }
        let answer = self.post("/colibri/v2/conferences", body).await?;
        parse_transport(&answer, endpoint)
    }

    /// Forward the client's transport and sources, as Jicofo does on session-accept.
    pub async fn accept(
        &self,
        meeting_id: &str,
        endpoint: &str,
        ufrag: &str,
        pwd: &str,
        fingerprint: &str,
        audio_ssrc: u32,
        video_ssrc: Option<u32>,
    ) -> anyhow::Result<()> {
        let mut sources = vec![json!({
            "type": "audio", "id": format!("{endpoint}-a0"),
            "sources": [ { "ssrc": audio_ssrc, "name": format!("{endpoint}-a0") } ],
        })];
        if let Some(v) = video_ssrc {
            sources.push(json!({
                "type": "video", "id": format!("{endpoint}-v0"),
                "sources": [ { "ssrc": v, "name": format!("{endpoint}-v0"), "videoType": "camera" } ],
            }));
        }
        let body = json!({
            "meeting-id": meeting_id,
            "endpoints": [ {
                "id": endpoint,
                "transport": { "transport": {
                    "xmlns": "urn:xmpp:jingle:transports:ice-udp:1",
                    "ufrag": ufrag, "pwd": pwd, "rtcp-mux": true,
                    "fingerprints": [ { "fingerprint": fingerprint, "hash": "sha-256", "setup": "active" } ],
                    "candidates": [],
                } },
                "sources": sources,
            } ],
        });
        self.patch(meeting_id, body).await.map(|_| ())
    }

    /// Expire the whole conference.
    pub async fn expire(&self, meeting_id: &str) -> anyhow::Result<()> {
        self.patch(meeting_id, json!({ "meeting-id": meeting_id, "expire": true }))
            .await
            .map(|_| ())
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        self.send("POST", url, body).await
    }

    async fn patch(&self, meeting_id: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/colibri/v2/conferences/{}", self.base, meeting_id);
        self.send("PATCH", url, body).await
    }

    async fn send(&self, method: &'static str, url: String, body: Value) -> anyhow::Result<Value> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let mut resp = match method {
                "POST" => agent.post(&url).send_json(&body),
                _ => agent.patch(&url).send_json(&body),
            }
            .with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            if !status.is_success() {
                bail!("{method} {url}: HTTP {status}: {text}");
            }
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(&text).with_context(|| format!("{method} {url}: answer is not JSON: {text}"))
        })
        .await?
    }
}

/// Jicofo's default offer for audio and video (colibri.md §3.4), trimmed to what the harness sends.
fn medias() -> Value {
    let video_fb = json!([ { "type": "ccm", "subtype": "fir" }, { "type": "nack" }, { "type": "nack", "subtype": "pli" },
                           { "type": "goog-remb" }, { "type": "transport-cc" } ]);
    json!([
        { "type": "audio",
          "payload-types": [
            { "name": "opus", "id": "111", "clockrate": "48000", "channels": "2",
              "parameters": { "minptime": "10", "useinbandfec": "1" }, "rtcp-fbs": [ { "type": "transport-cc" } ] },
            { "name": "telephone-event", "id": "126", "clockrate": "8000" } ],
          "rtp-hdrexts": [
            { "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1 },
            { "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 5 } ],
          "extmap-allow-mixed": true },
        { "type": "video",
          "payload-types": [
            { "name": "VP8", "id": "100", "clockrate": "90000", "rtcp-fbs": video_fb },
            { "name": "rtx", "id": "96", "clockrate": "90000", "parameters": { "apt": "100" } } ],
          "rtp-hdrexts": [
            { "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 3 },
            { "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 5 } ],
          "extmap-allow-mixed": true },
    ])
}

fn parse_transport(answer: &Value, endpoint: &str) -> anyhow::Result<BridgeTransport> {
    let ep = answer["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["id"] == endpoint))
        .ok_or_else(|| anyhow!("answer has no endpoint {endpoint}: {answer}"))?;
    let ice = &ep["transport"]["transport"];
    let s = |v: &Value, what: &str| {
        v.as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("answer lacks {what}: {answer}"))
    };
    let fp = ice["fingerprints"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["hash"] == "sha-256"))
        .ok_or_else(|| anyhow!("answer has no sha-256 fingerprint"))?;
    let candidates = ice["candidates"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["protocol"] == "udp")
                .filter_map(|c| {
                    let ip: IpAddr = c["ip"].as_str()?.parse().ok()?;
                    let port: u16 = match &c["port"] {
                        Value::String(p) => p.parse().ok()?,
                        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
                        _ => return None,
                    };
                    Some(SocketAddr::new(ip, port))
                })
                .collect()
        })
        .unwrap_or_default();
    let sctp_port = ep["transport"]["sctp"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| ep["transport"]["sctp"]["port"].as_str().and_then(|p| p.parse().ok()));
    Ok(BridgeTransport {
        ufrag: s(&ice["ufrag"], "ufrag")?,
        pwd: s(&ice["pwd"], "pwd")?,
        fingerprint: parse_colon_hex(&s(&fp["fingerprint"], "fingerprint")?)?,
        candidates,
        sctp_port,
    })
}
