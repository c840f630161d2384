//! The harness's Jicofo: allocates conferences and endpoints on a bridge with Colibri2, shaped
//! as Jicofo shapes its requests (colibri.md §4.1), in the JSON form of the bridge's private REST
//! API (colibri.md §3.13).

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::endpoint::{
    parse_colon_hex, Ssrcs, AUDIO_PT, AV1_PT, AV1_RTX_PT, DD_URI, EXT_ABS_SEND_TIME, EXT_AUDIO_LEVEL, EXT_DD, EXT_TWCC,
    VP8_PT, VP8_RTX_PT,
};
use crate::scenario::Codec;

/// The bridge side of one endpoint's transport, from the allocation answer.
#[derive(Debug, Clone)]
pub struct BridgeTransport {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprint: Vec<u8>,
    pub candidates: Vec<SocketAddr>,
    /// The answer carried `sctp` with port 5000.
    pub sctp_port: Option<u16>,
    /// The bridge's video feedback source (`jvb-v0`), on which it sends padding-only probe
    /// packets. Jicofo puts it in every client's offer; a client that does not know it drops
    /// those packets before transport-cc feedback (str0m does), and the bridge reads them as lost.
    pub feedback_video_ssrc: Option<u32>,
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

/// The client side of a transport, as Jicofo forwards it from the session-accept.
#[derive(Debug, Clone)]
pub struct ClientTransport {
    pub ufrag: String,
    pub pwd: String,
    /// SHA-256, colon-separated upper-case hex.
    pub fingerprint: String,
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

    /// Check the bridge answers on its REST API at all.
    pub async fn health(&self) -> anyhow::Result<()> {
        let agent = self.agent.clone();
        let url = format!("{}/about/health", self.base);
        tokio::task::spawn_blocking(move || {
            let resp = agent.get(&url).call().with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!("GET {url}: HTTP {}", resp.status());
            }
            Ok(())
        })
        .await?
    }

    /// Allocate one endpoint, creating the conference with the first one, as Jicofo does.
    pub async fn allocate(
        &self,
        meeting_id: &str,
        create_conference: bool,
        endpoint: &str,
        codec: Codec,
    ) -> anyhow::Result<BridgeTransport> {
        let mut body = json!({
            "meeting-id": meeting_id,
            "endpoints": [ {
                "id": endpoint,
                "create": true,
                "stats-id": format!("{endpoint}-stats"),
                "medias": medias(codec),
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

    /// Forward the client's transport and sources, as Jicofo does on session-accept: audio, and
    /// video as one source whose SSRCs form a SIM group (simulcast) with an FID (RTX) partner each.
    pub async fn accept(
        &self,
        meeting_id: &str,
        endpoint: &str,
        client: &ClientTransport,
        ssrcs: &Ssrcs,
        audio: bool,
        video_encodings: usize,
    ) -> anyhow::Result<()> {
        let body = json!({
            "meeting-id": meeting_id,
            "endpoints": [ {
                "id": endpoint,
                "transport": { "transport": {
                    "xmlns": "urn:xmpp:jingle:transports:ice-udp:1",
                    "ufrag": client.ufrag, "pwd": client.pwd, "rtcp-mux": true,
                    "fingerprints": [ { "fingerprint": client.fingerprint, "hash": "sha-256", "setup": "active" } ],
                    "candidates": [],
                } },
                "sources": sources_json(endpoint, ssrcs, audio, video_encodings),
            } ],
        });
        self.patch(meeting_id, body).await.map(|_| ())
    }

    /// Expire one endpoint, as Jicofo does when a participant leaves.
    pub async fn expire_endpoint(&self, meeting_id: &str, endpoint: &str) -> anyhow::Result<()> {
        let body = json!({
            "meeting-id": meeting_id,
            "endpoints": [ { "id": endpoint, "expire": true } ],
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

/// The `sources` of one endpoint in Colibri2 JSON: audio, and video as one source (named
/// `<endpoint>-v0`, as jitsi-meet names sources) with SIM and FID groups.
pub fn sources_json(endpoint: &str, ssrcs: &Ssrcs, audio: bool, video_encodings: usize) -> Value {
    let mut sources = Vec::new();
    if audio {
        sources.push(json!({
            "type": "audio", "id": format!("{endpoint}-a0"),
            "sources": [ { "ssrc": ssrcs.audio, "name": format!("{endpoint}-a0") } ],
        }));
    }
    if video_encodings > 0 {
        let name = format!("{endpoint}-v0");
        let mut list = Vec::new();
        let mut groups = Vec::new();
        for e in 0..video_encodings.min(3) {
            list.push(json!({ "ssrc": ssrcs.video[e], "name": name, "videoType": "camera" }));
            list.push(json!({ "ssrc": ssrcs.rtx[e], "name": name, "videoType": "camera" }));
            groups.push(json!({ "semantics": "FID", "sources": [ssrcs.video[e], ssrcs.rtx[e]] }));
        }
        if video_encodings > 1 {
            let sim: Vec<u32> = ssrcs.video[..video_encodings.min(3)].to_vec();
            groups.insert(0, json!({ "semantics": "SIM", "sources": sim }));
        }
        sources.push(json!({ "type": "video", "id": name, "sources": list, "ssrc-groups": groups }));
    }
    Value::Array(sources)
}

/// Jicofo's default offer for audio and video (colibri.md §3.4), trimmed to what the harness
/// sends: Opus, and AV1 41 (rtx 42) or VP8 100 (rtx 96), with Jicofo's extension ids.
fn medias(codec: Codec) -> Value {
    let video_fb = json!([ { "type": "ccm", "subtype": "fir" }, { "type": "nack" }, { "type": "nack", "subtype": "pli" },
                           { "type": "goog-remb" }, { "type": "transport-cc" } ]);
    let (name, pt, rtx) = match codec {
        Codec::Av1Svc => ("AV1", AV1_PT, AV1_RTX_PT),
        Codec::Vp8Simulcast | Codec::Vp8 => ("VP8", VP8_PT, VP8_RTX_PT),
    };
    json!([
        { "type": "audio",
          "payload-types": [
            { "name": "opus", "id": AUDIO_PT.to_string(), "clockrate": "48000", "channels": "2",
              "parameters": { "minptime": "10", "useinbandfec": "1" }, "rtcp-fbs": [ { "type": "transport-cc" } ] },
            { "name": "telephone-event", "id": "126", "clockrate": "8000" } ],
          "rtp-hdrexts": [
            { "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": EXT_AUDIO_LEVEL },
            { "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": EXT_ABS_SEND_TIME },
            { "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": EXT_TWCC } ],
          "extmap-allow-mixed": true },
        { "type": "video",
          "payload-types": [
            { "name": name, "id": pt.to_string(), "clockrate": "90000", "rtcp-fbs": video_fb },
            { "name": "rtx", "id": rtx.to_string(), "clockrate": "90000", "parameters": { "apt": pt.to_string() } } ],
          "rtp-hdrexts": [
            { "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": EXT_ABS_SEND_TIME },
            { "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": EXT_TWCC },
            { "uri": DD_URI, "id": EXT_DD } ],
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
    let feedback_video_ssrc = answer["sources"].as_array().and_then(|media| {
        media
            .iter()
            .filter(|m| m["type"] == "video")
            .flat_map(|m| m["sources"].as_array().into_iter().flatten())
            .find_map(|src| src["ssrc"].as_u64().and_then(|v| u32::try_from(v).ok()))
    });
    Ok(BridgeTransport {
        feedback_video_ssrc,
        ufrag: s(&ice["ufrag"], "ufrag")?,
        pwd: s(&ice["pwd"], "pwd")?,
        fingerprint: parse_colon_hex(&s(&fp["fingerprint"], "fingerprint")?)?,
        candidates,
        sctp_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ssrcs_of;

    /// The sources parse with the bridge's own Colibri2 JSON model, with the SIM and FID groups.
    #[test]
    fn simulcast_sources_are_valid_colibri2_json() {
        let s = ssrcs_of(3);
        let v = sources_json("ep3", &s, true, 3);
        let parsed: Vec<signaling::colibri2::json::JsonMediaSource> =
            serde_json::from_value(v.clone()).expect("bridge's JSON model accepts it");
        assert_eq!(parsed.len(), 2);
        let video = &v[1];
        assert_eq!(video["ssrc-groups"][0]["semantics"], "SIM");
        assert_eq!(
            video["ssrc-groups"][0]["sources"],
            json!([s.video[0], s.video[1], s.video[2]])
        );
        assert_eq!(video["ssrc-groups"][1]["semantics"], "FID");
        assert_eq!(video["sources"].as_array().map(Vec::len), Some(6));
        // Audio only: no video source at all.
        assert_eq!(sources_json("x", &s, true, 0).as_array().map(Vec::len), Some(1));
        // One encoding (AV1): no SIM group, one FID.
        let one = sources_json("x", &s, false, 1);
        assert_eq!(one[0]["ssrc-groups"].as_array().map(Vec::len), Some(1));
    }
}
