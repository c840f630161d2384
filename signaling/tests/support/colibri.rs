//! Colibri2 as Jicofo sends it, for the tests that drive the palim binary through Prosody
//! (`faults.rs`, `ops_prosody.rs`): request builders and reading the bridge's answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use minidom::Element;
use sfu::control::{CandidateKind, LocalCandidate, LocalTransport};
use signaling::xmpp::IqType;

use super::TestFocus;

pub const COLIBRI2: &str = "jitsi:colibri2";
pub const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
pub const DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
pub const SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
pub const RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
pub const IQ_WAIT: Duration = Duration::from_secs(15);

/// A free TCP port on loopback (closed again before the caller binds it).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

pub fn parse(xml: &str) -> Element {
    xml.parse().unwrap_or_else(|e| panic!("test XML ({e}): {xml}"))
}

pub fn conference_modify(meeting_id: &str, create_name: Option<&str>, inner: &str) -> Element {
    let create = match create_name {
        Some(name) => format!(r#" name="{name}" create="true""#),
        None => String::new(),
    };
    parse(&format!(
        r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting_id}"{create}>{inner}</conference-modify>"#
    ))
}

pub fn conference_expire(meeting_id: &str) -> Element {
    parse(&format!(
        r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting_id}" expire="true"/>"#
    ))
}

pub fn endpoint_create(id: &str) -> String {
    format!(
        r#"<endpoint xmlns="{COLIBRI2}" id="{id}" create="true" stats-id="{id}-s"><media type="audio"><payload-type xmlns="{RTP}" id="111" name="opus" clockrate="48000" channels="2"/></media><media type="video"><payload-type xmlns="{RTP}" id="100" name="VP8" clockrate="90000"/></media><transport xmlns="{COLIBRI2}" ice-controlling="true"><sctp xmlns="{COLIBRI2}"/></transport><sources/><capability name="source-names"/></endpoint>"#
    )
}

pub fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The bridge's transport from an allocation answer.
pub fn bridge_transport(modified: &Element) -> LocalTransport {
    let ice = modified
        .children()
        .find(|c| c.is("endpoint", COLIBRI2))
        .and_then(|e| e.get_child("transport", COLIBRI2))
        .and_then(|t| t.get_child("transport", ICE_UDP))
        .expect("allocation answer has an ICE transport");
    let fp = ice
        .children()
        .find(|c| c.is("fingerprint", DTLS))
        .expect("fingerprint")
        .text();
    let candidates = ice
        .children()
        .filter(|c| c.is("candidate", ICE_UDP))
        .map(|c| LocalCandidate {
            addr: SocketAddr::new(
                c.attr("ip")
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .expect("candidate ip"),
                c.attr("port").and_then(|s| s.parse().ok()).expect("candidate port"),
            ),
            priority: c.attr("priority").and_then(|s| s.parse().ok()).unwrap_or(1),
            foundation: c.attr("foundation").unwrap_or("1").to_owned(),
            kind: CandidateKind::Host,
            related: None,
        })
        .collect();
    LocalTransport {
        ufrag: ice.attr("ufrag").unwrap_or_default().to_owned(),
        pwd: ice.attr("pwd").unwrap_or_default().to_owned(),
        fingerprint_sha256: fp,
        candidates,
    }
}

/// Send `req` to the bridge's brewery occupant and expect `conference-modified`; on anything
/// else panic with `what` and the bridge's log.
pub async fn modify_at(
    focus: &TestFocus,
    occupant: &str,
    what: &str,
    req: Element,
    logs: impl Fn() -> String,
) -> Element {
    match focus.client.send_iq(occupant, IqType::Get, req, IQ_WAIT).await {
        Ok(Some(el)) if el.is("conference-modified", COLIBRI2) => el,
        other => panic!("{what}: expected conference-modified, got {other:?}; log:\n{}", logs()),
    }
}

pub fn audio_ssrc(tag: u8) -> u32 {
    0x1000_0000 + u32::from(tag)
}
pub fn video_ssrc(tag: u8) -> u32 {
    0x2000_0000 + u32::from(tag)
}

/// The client's ICE transport as Jicofo forwards it from `session-accept`/`transport-info`.
pub fn client_transport(ufrag: &str, pwd: &str, fingerprint: &str, candidates: &[SocketAddr]) -> String {
    let cands: String = candidates
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                r#"<candidate component="1" foundation="{f}" generation="0" id="c{i}" network="1" priority="2130706431" protocol="udp" type="host" ip="{ip}" port="{port}"/>"#,
                f = 842163049 + i,
                ip = a.ip(),
                port = a.port()
            )
        })
        .collect();
    format!(
        r#"<transport><transport xmlns="{ICE_UDP}" ufrag="{ufrag}" pwd="{pwd}"><rtcp-mux/><fingerprint xmlns="{DTLS}" hash="sha-256" setup="active">{fingerprint}</fingerprint>{cands}</transport></transport>"#
    )
}
