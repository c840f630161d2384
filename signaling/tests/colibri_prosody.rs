//! Palim end to end through a real Prosody (laid out like docker-jitsi-meet): the whole bridge
//! (`signaling::server::run`, in-process) logs in as `jvb`, joins the brewery and publishes its
//! stats; a test focus (`focus@auth.meet.jitsi`) shapes its Colibri2 IQs as Jicofo does
//! (colibri.md §4.1) and checks every answer against the spec (§3.10–§3.12, §8). Then two str0m
//! clients take the bridge transports from those XMPP answers and exchange real audio and video
//! through Palim.
//!
//! Run: `cargo test -p signaling --test colibri_prosody -- --nocapture` (skips without prosody
//! unless CI is set). `RUST_LOG=signaling=debug,sfu=debug` shows Palim's logs,
//! `PALIM_KEEP_PROSODY_DIR=1` keeps Prosody's directory (config, log) for inspection.

mod support;

use support::colibri::client_transport;
use support::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{payload, Client, PT_OPUS, PT_VP8};
use minidom::Element;
use sfu::control::{CandidateKind, LocalCandidate, LocalTransport};
use signaling::config::Config;
use signaling::xmpp::{Condition, ErrorType, IqType, SendIqError, StanzaError};
use support::{Prosody, TestFocus, BREWERY, JVB};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const COLIBRI2: &str = "jitsi:colibri2";
const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
const DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
const SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
const RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
const RTCP_FB: &str = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0";
const HDREXT: &str = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0";
const CLIENT_NS: &str = "jabber:client";
/// Jicofo's reply timeout; everything here must be answered well within it.
const IQ_WAIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// Palim in-process, against the test Prosody.

struct Palim {
    nick: String,
    rest_port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Palim {
    fn start(prosody: &Prosody, nick: &str) -> Self {
        let mut config = Config::default();
        config.xmpp.enabled = true;
        config.xmpp.host = "127.0.0.1".into();
        config.xmpp.port = prosody.port();
        config.xmpp.domain = support::AUTH_DOMAIN.into();
        config.xmpp.username = JVB.0.into();
        config.xmpp.password = JVB.1.into();
        config.xmpp.muc_jids = vec![BREWERY.into()];
        config.xmpp.muc_nickname = nick.into();
        config.xmpp.disable_certificate_verification = true;
        config.xmpp.presence_interval = Duration::from_secs(1);
        config.ice.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        config.ice.udp_port = 0;
        config.ice.host_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        // The private REST API on a free loopback port, for the operator's view (health,
        // /colibri/stats with the core's counters and drop reasons).
        let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral loopback port")
            .port();
        config.rest.enabled = true;
        config.rest.bind = SocketAddr::from(([127, 0, 0, 1], rest_port));
        // The test reads counters right after the traffic: no 5 s stats cache.
        config.rest.stats_interval = Duration::ZERO;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(signaling::server::run(config, async move {
            let _ = stopped.await;
        }));
        Self {
            nick: nick.into(),
            rest_port,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful stop: `run` must leave the brewery and return `Ok` in bounded time.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("Palim is running");
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Err(_) => panic!("signaling::server::run did not return within 15 s of shutdown"),
            Ok(Err(e)) => panic!("Palim's task panicked: {e}"),
            Ok(Ok(Err(e))) => panic!("signaling::server::run failed: {e:#}"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    /// `GET path` on the private REST API: (status, body).
    async fn rest_get(&self, path: &str) -> (u16, String) {
        support::http_request(self.rest_port, "GET", path, "").await
    }

    /// `/colibri/stats` as JSON.
    async fn stats(&self) -> serde_json::Value {
        let (status, body) = self.rest_get("/colibri/stats").await;
        assert_eq!(status, 200, "/colibri/stats: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/colibri/stats is not JSON ({e}): {body}"))
    }

    fn occupant(&self) -> String {
        TestFocus::occupant(&self.nick)
    }

    /// Fails the test early (with the reason) if `run` has already returned.
    fn assert_running(&self) {
        if let Some(t) = &self.task {
            assert!(!t.is_finished(), "signaling::server::run ended on its own");
        }
    }
}

impl Drop for Palim {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Prosody, the focus in the brewery, and Palim joined with stats. `None`: skipped.
async fn setup(test: &str, nick: &str) -> Option<(Prosody, TestFocus, Palim)> {
    let prosody = Prosody::start_or_skip(test).await?;
    let mut focus = TestFocus::join(&prosody).await;
    let palim = Palim::start(&prosody, nick);
    let ev = focus
        .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && ev.stats.is_some())
        .await;
    palim.assert_running();
    check_stats(ev.stats.as_deref().unwrap_or_default(), 0, 0);
    Some((prosody, focus, palim))
}

fn stat<'a>(stats: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stats.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// colibri.md §1.6 item 3 and §2: the stats Jicofo needs, in the formats it parses.
fn check_stats(st: &[(String, String)], conferences: u64, participants: u64) {
    let stress = stat(st, "stress_level").unwrap_or_else(|| panic!("no stress_level in {st:?}"));
    let stress: f64 = stress
        .parse()
        .unwrap_or_else(|_| panic!("stress_level {stress:?} is not a number"));
    assert!((0.0..1.0).contains(&stress), "stress_level {stress}");
    for (key, want) in [
        ("drain", "false"),
        ("graceful_shutdown", "false"),
        ("shutting_down", "false"),
        ("healthy", "true"),
        ("colibri2", "true"),
    ] {
        assert_eq!(stat(st, key), Some(want), "stat {key} in {st:?}");
    }
    assert!(stat(st, "version").is_some_and(|v| !v.is_empty()), "version in {st:?}");
    assert_eq!(
        stat(st, "conferences"),
        Some(conferences.to_string().as_str()),
        "{st:?}"
    );
    assert_eq!(
        stat(st, "participants"),
        Some(participants.to_string().as_str()),
        "{st:?}"
    );
    let ts = stat(st, "current_timestamp").unwrap_or_else(|| panic!("no current_timestamp in {st:?}"));
    // yyyy-MM-dd HH:mm:ss.SSS
    assert_eq!(ts.len(), 23, "current_timestamp {ts:?}");
    assert_eq!((&ts[4..5], &ts[10..11], &ts[19..20]), ("-", " ", "."), "{ts:?}");
}

/// Waits for a stats presence with these counts (Palim re-publishes every second here).
async fn wait_counts(focus: &mut TestFocus, nick: &str, conferences: u64, participants: u64) {
    let (c, p) = (conferences.to_string(), participants.to_string());
    let ev = focus
        .wait_presence(nick, Duration::from_secs(10), |ev| {
            ev.stats.as_ref().is_some_and(|s| {
                stat(s, "conferences") == Some(c.as_str()) && stat(s, "participants") == Some(p.as_str())
            })
        })
        .await;
    check_stats(ev.stats.as_deref().unwrap_or_default(), conferences, participants);
}

// ------------------------------------------------------------------------------------------
// Requests, shaped as Jicofo shapes them (colibri.md §4.1, §4.2).

fn parse(xml: &str) -> Element {
    xml.parse()
        .unwrap_or_else(|e| panic!("test XML is not well-formed ({e}): {xml}"))
}

/// `<conference-modify meeting-id=… [name=… create="true"]>inner</conference-modify>`.
fn conference_modify(meeting_id: &str, create_name: Option<&str>, inner: &str) -> Element {
    let create = match create_name {
        Some(name) => format!(r#" name="{name}" create="true""#),
        None => String::new(),
    };
    parse(&format!(
        r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting_id}"{create}>{inner}</conference-modify>"#
    ))
}

/// Jicofo's default offer (colibri.md §3.4): opus + telephone-event; AV1, VP8, VP9, H264 each
/// with RTX; the default header extensions; extmap-allow-mixed.
fn default_offer() -> String {
    let video_fb = format!(
        r#"<rtcp-fb xmlns="{RTCP_FB}" type="ccm" subtype="fir"/><rtcp-fb xmlns="{RTCP_FB}" type="nack"/><rtcp-fb xmlns="{RTCP_FB}" type="nack" subtype="pli"/><rtcp-fb xmlns="{RTCP_FB}" type="goog-remb"/><rtcp-fb xmlns="{RTCP_FB}" type="transport-cc"/>"#
    );
    let mut video = String::new();
    for (pt, name, rtx, params) in [
        (41, "AV1", 42, ""),
        (100, "VP8", 96, ""),
        (101, "VP9", 97, ""),
        (
            107,
            "H264",
            99,
            r#"<parameter name="profile-level-id" value="42e01f"/><parameter name="packetization-mode" value="1"/>"#,
        ),
    ] {
        video.push_str(&format!(
            r#"<payload-type xmlns="{RTP}" id="{pt}" name="{name}" clockrate="90000">{params}{video_fb}</payload-type><payload-type xmlns="{RTP}" id="{rtx}" name="rtx" clockrate="90000"><parameter name="apt" value="{pt}"/></payload-type>"#
        ));
    }
    let ext = |id: u8, uri: &str| format!(r#"<rtp-hdrext xmlns="{HDREXT}" id="{id}" uri="{uri}"/>"#);
    let audio_exts = [
        ext(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        ext(3, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        ext(
            5,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ),
        ext(10, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ]
    .concat();
    let video_exts = [
        ext(3, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        ext(
            5,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ),
        ext(10, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        ext(
            11,
            "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
        ),
    ]
    .concat();
    format!(
        r#"<media type="audio"><payload-type xmlns="{RTP}" id="111" name="opus" clockrate="48000" channels="2"><parameter name="minptime" value="10"/><parameter name="useinbandfec" value="1"/><rtcp-fb xmlns="{RTCP_FB}" type="transport-cc"/></payload-type><payload-type xmlns="{RTP}" id="126" name="telephone-event" clockrate="8000"/>{audio_exts}<extmap-allow-mixed xmlns="{HDREXT}"/></media><media type="video">{video}{video_exts}<extmap-allow-mixed xmlns="{HDREXT}"/></media>"#
    )
}

/// An allocation: `<endpoint create="true">` with stats-id, the default offer, the bridge as
/// ICE controller with SCTP, empty sources and the capabilities. Smack writes the redundant
/// `xmlns="jitsi:colibri2"` on nested entities; so do we.
fn endpoint_create(id: &str, stats_id: &str, capabilities: &[&str]) -> String {
    let caps: String = capabilities
        .iter()
        .map(|c| format!(r#"<capability name="{c}"/>"#))
        .collect();
    format!(
        r#"<endpoint xmlns="{COLIBRI2}" id="{id}" create="true" stats-id="{stats_id}">{}<transport xmlns="{COLIBRI2}" ice-controlling="true"><sctp xmlns="{COLIBRI2}"/></transport><sources/>{caps}</endpoint>"#,
        default_offer()
    )
}

/// A camera source: one SSRC, or simulcast with RTX (SIM + FID groups) as jitsi-meet sends.
fn video_source(name: &str, ssrcs: &[u32], rtx: &[u32], video_type: &str) -> String {
    let mut s = format!(r#"<media-source type="video" id="{name}">"#);
    for ssrc in ssrcs.iter().chain(rtx) {
        s.push_str(&format!(
            r#"<source xmlns="{SSMA}" ssrc="{ssrc}" name="{name}" videoType="{video_type}"/>"#
        ));
    }
    if ssrcs.len() > 1 {
        s.push_str(&format!(r#"<ssrc-group xmlns="{SSMA}" semantics="SIM">"#));
        for ssrc in ssrcs {
            s.push_str(&format!(r#"<source ssrc="{ssrc}"/>"#));
        }
        s.push_str("</ssrc-group>");
    }
    for (p, r) in ssrcs.iter().zip(rtx) {
        s.push_str(&format!(
            r#"<ssrc-group xmlns="{SSMA}" semantics="FID"><source ssrc="{p}"/><source ssrc="{r}"/></ssrc-group>"#
        ));
    }
    s.push_str("</media-source>");
    s
}

fn audio_source(name: &str, ssrc: u32) -> String {
    format!(
        r#"<media-source type="audio" id="{name}"><source xmlns="{SSMA}" ssrc="{ssrc}" name="{name}"/></media-source>"#
    )
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

// ------------------------------------------------------------------------------------------
// Sending and checking answers.

fn to_string(el: &Element) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    el.write_to(&mut buf).expect("serialize to a Vec");
    String::from_utf8_lossy(&buf).into_owned()
}

fn attr_names(el: &Element) -> Vec<String> {
    let mut v: Vec<String> = el.attrs().iter().map(|((_, name), _)| name.to_string()).collect();
    v.sort();
    v
}

/// Sends a Colibri2 request as Jicofo does (`type="get"`), expecting a `<conference-modified>`.
async fn modify(focus: &TestFocus, palim: &Palim, what: &str, req: Element) -> Element {
    let t = Instant::now();
    let r = focus.client.send_iq(&palim.occupant(), IqType::Get, req, IQ_WAIT).await;
    palim.assert_running();
    let el = match r {
        Ok(Some(el)) => el,
        Ok(None) => panic!("{what}: empty result, expected conference-modified"),
        Err(e) => panic!("{what}: expected conference-modified, got {e:?}"),
    };
    assert!(
        el.is("conference-modified", COLIBRI2),
        "{what}: not a conference-modified: {}",
        to_string(&el)
    );
    assert!(
        attr_names(&el).is_empty(),
        "{what}: conference-modified has attributes: {}",
        to_string(&el)
    );
    tracing::info!(what, elapsed = ?t.elapsed(), "answered");
    el
}

/// Sends a request that must be refused; returns the stanza error (not a timeout).
async fn refused(focus: &TestFocus, palim: &Palim, what: &str, req: Element) -> StanzaError {
    let r = focus.client.send_iq(&palim.occupant(), IqType::Get, req, IQ_WAIT).await;
    palim.assert_running();
    match r {
        Err(SendIqError::Stanza(e)) => e,
        Ok(el) => panic!(
            "{what}: expected an error, got a result {}",
            el.map(|e| to_string(&e)).unwrap_or_default()
        ),
        Err(e) => panic!("{what}: expected an XMPP error reply, got {e:?}"),
    }
}

/// The `jitsi:colibri2` extensions of an error: (element name, reason or id).
fn extensions(e: &StanzaError) -> Vec<(String, String)> {
    e.extensions
        .iter()
        .filter(|x| x.ns() == COLIBRI2)
        .map(|x| {
            let v = x.attr("reason").or(x.attr("id")).unwrap_or_default();
            (x.name().to_owned(), v.to_owned())
        })
        .collect()
}

fn check_error(what: &str, e: &StanzaError, condition: Condition, error_type: ErrorType, ext: &[(&str, &str)]) {
    assert_eq!(e.condition, condition, "{what}: {e:?}");
    assert_eq!(e.error_type, error_type, "{what}: {e:?}");
    assert!(
        e.text.as_deref().is_some_and(|t| !t.is_empty()),
        "{what}: no text: {e:?}"
    );
    let want: Vec<(String, String)> = ext.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(extensions(e), want, "{what}: colibri2 extensions of {e:?}");
}

/// The feedback sources (§3.6): `jvb-a0` audio and `jvb-v0` video, one SSRC each.
fn feedback_sources(what: &str, modified: &Element) -> (u32, u32) {
    let sources: Vec<&Element> = modified.children().filter(|c| c.is("sources", COLIBRI2)).collect();
    assert_eq!(
        sources.len(),
        1,
        "{what}: one conference-level sources: {}",
        to_string(modified)
    );
    let mut out = Vec::new();
    for (kind, id) in [("audio", "jvb-a0"), ("video", "jvb-v0")] {
        let ms = sources[0]
            .children()
            .find(|m| m.is("media-source", COLIBRI2) && m.attr("id") == Some(id))
            .unwrap_or_else(|| panic!("{what}: no media-source {id}: {}", to_string(modified)));
        assert_eq!(ms.attr("type"), Some(kind), "{what}: {id} type");
        let srcs: Vec<&Element> = ms.children().filter(|s| s.is("source", SSMA)).collect();
        assert_eq!(srcs.len(), 1, "{what}: {id} has one source");
        assert_eq!(srcs[0].attr("name"), Some(id), "{what}: {id} source name");
        let ssrc: u32 = srcs[0]
            .attr("ssrc")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {id} ssrc not a u32: {}", to_string(modified)));
        out.push(ssrc);
    }
    assert_eq!(sources[0].children().count(), 2, "{what}: only jvb-a0 and jvb-v0");
    (out[0], out[1])
}

/// The answer to an endpoint create (§3.11, §8 checks 32–36, 39): the endpoint's transport
/// with ICE credentials, candidates, rtcp-mux, an actpass sha-256 fingerprint and SCTP 5000
/// as server; the conference-level feedback sources. Returns the bridge transport and the
/// feedback SSRCs.
fn check_allocation(what: &str, modified: &Element, ep_id: &str) -> (LocalTransport, (u32, u32)) {
    let xml = to_string(modified);
    let eps: Vec<&Element> = modified.children().filter(|c| c.is("endpoint", COLIBRI2)).collect();
    assert_eq!(eps.len(), 1, "{what}: one endpoint: {xml}");
    let ep = eps[0];
    assert_eq!(ep.attr("id"), Some(ep_id), "{what}: endpoint id: {xml}");
    assert_eq!(attr_names(ep), ["id"], "{what}: endpoint attributes: {xml}");
    let wrapper = ep
        .get_child("transport", COLIBRI2)
        .unwrap_or_else(|| panic!("{what}: no colibri2 transport: {xml}"));
    let ice = wrapper
        .get_child("transport", ICE_UDP)
        .unwrap_or_else(|| panic!("{what}: no ICE transport: {xml}"));
    let ufrag = ice.attr("ufrag").unwrap_or_default();
    let pwd = ice.attr("pwd").unwrap_or_default();
    assert!(ufrag.len() >= 4, "{what}: ufrag {ufrag:?} (RFC 8445: ≥ 4 chars)");
    assert!(pwd.len() >= 22, "{what}: pwd {pwd:?} (RFC 8445: ≥ 22 chars)");
    assert!(
        ice.get_child("rtcp-mux", ICE_UDP).is_some(),
        "{what}: no rtcp-mux: {xml}"
    );

    let fps: Vec<&Element> = ice.children().filter(|c| c.is("fingerprint", DTLS)).collect();
    assert_eq!(fps.len(), 1, "{what}: one fingerprint: {xml}");
    assert_eq!(fps[0].attr("hash"), Some("sha-256"), "{what}: {xml}");
    assert_eq!(fps[0].attr("setup"), Some("actpass"), "{what}: {xml}");
    let fp = fps[0].text();
    let bytes: Vec<u8> = fp
        .split(':')
        .map(|h| {
            assert!(
                h.len() == 2 && h.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                "{what}: fingerprint {fp:?} is not colon-separated upper-case hex"
            );
            u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("{what}: fingerprint {fp:?}"))
        })
        .collect();
    assert_eq!(bytes.len(), 32, "{what}: sha-256 fingerprint has 32 bytes: {fp:?}");

    let mut candidates = Vec::new();
    for c in ice.children().filter(|c| c.is("candidate", ICE_UDP)) {
        for a in [
            "component",
            "foundation",
            "generation",
            "id",
            "ip",
            "port",
            "priority",
            "protocol",
            "type",
        ] {
            assert!(
                c.attr(a).is_some_and(|v| !v.is_empty()),
                "{what}: candidate without {a}: {xml}"
            );
        }
        assert_eq!(c.attr("component"), Some("1"), "{what}");
        assert_eq!(c.attr("protocol"), Some("udp"), "{what}");
        let ip: IpAddr = c
            .attr("ip")
            .and_then(|s| s.parse().ok())
            .expect("candidate ip is an address");
        let port: u16 = c.attr("port").and_then(|s| s.parse().ok()).expect("candidate port");
        let priority: u32 = c
            .attr("priority")
            .and_then(|s| s.parse().ok())
            .expect("candidate priority");
        let kind = match c.attr("type") {
            Some("host") => CandidateKind::Host,
            Some("srflx") => CandidateKind::Srflx,
            other => panic!("{what}: unexpected candidate type {other:?}"),
        };
        candidates.push(LocalCandidate {
            addr: SocketAddr::new(ip, port),
            priority,
            foundation: c.attr("foundation").unwrap_or_default().to_owned(),
            kind,
            related: None,
        });
    }
    assert!(
        candidates
            .iter()
            .any(|c| c.addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) && c.addr.port() != 0),
        "{what}: no 127.0.0.1 host candidate: {xml}"
    );

    let sctp = wrapper
        .get_child("sctp", COLIBRI2)
        .unwrap_or_else(|| panic!("{what}: SCTP was requested but the answer has no sctp: {xml}"));
    assert_eq!(sctp.attr("port"), Some("5000"), "{what}: {xml}");
    assert_eq!(sctp.attr("role"), Some("server"), "{what}: {xml}");

    let feedback = feedback_sources(what, modified);
    let transport = LocalTransport {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
        fingerprint_sha256: fp,
        candidates,
    };
    (transport, feedback)
}

/// A plain update's answer: exactly `<endpoint id=…/>` per endpoint (§8 check 41), with
/// `expire="true"` echoed where asked (check 44); no transport, no conference sources.
fn check_plain(what: &str, modified: &Element, endpoints: &[(&str, bool)]) {
    let xml = to_string(modified);
    let children: Vec<&Element> = modified.children().collect();
    assert_eq!(children.len(), endpoints.len(), "{what}: {xml}");
    for (el, (id, expire)) in children.iter().zip(endpoints) {
        assert!(el.is("endpoint", COLIBRI2), "{what}: {xml}");
        assert_eq!(el.attr("id"), Some(*id), "{what}: {xml}");
        assert_eq!(el.children().count(), 0, "{what}: endpoint has children: {xml}");
        if *expire {
            assert_eq!(attr_names(el), ["expire", "id"], "{what}: {xml}");
            assert_eq!(el.attr("expire"), Some("true"), "{what}: {xml}");
        } else {
            assert_eq!(attr_names(el), ["id"], "{what}: {xml}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// (a) The signaling of a 3-person meeting and the error paths, through Prosody.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jicofo_meeting_through_prosody() {
    let nick = "palim-e2e-sig";
    let Some((prosody, mut focus, mut palim)) = setup("colibri_meeting", nick).await else {
        return;
    };
    let meeting = "4f1c9a52-8c4e-4d8e-9a3e-2b7d1c0e9f11";
    let room = "weeklysync@muc.meet.jitsi";
    let caps = ["source-names", "ssrc-rewriting"];

    // Health check (§5) before anything else, over XMPP and on the private REST port.
    assert_eq!(focus.health_check(nick).await, Ok(None), "health check");
    assert_eq!(
        palim.rest_get("/about/health").await,
        (200, String::new()),
        "GET /about/health"
    );

    // (1) Alice creates the conference. Sent as a whole stanza once, to check the envelope
    // (§8 check 14): same id, from = the bridge's occupant JID, type result.
    let mut iq = Element::bare("iq", CLIENT_NS);
    for (k, v) in [
        ("to", palim.occupant()),
        ("type", "get".into()),
        ("id", "k9Lm2-101".into()),
    ] {
        iq.set_attr(
            minidom::rxml::Namespace::NONE,
            minidom::rxml::NcName::try_from(k).expect("static attribute name"),
            v,
        );
    }
    iq.append_child(conference_modify(
        meeting,
        Some(room),
        &endpoint_create("a1b2c3d4", "Alice-Xy1", &caps),
    ));
    let reply = focus
        .client
        .send_iq_stanza(iq, IQ_WAIT)
        .await
        .unwrap_or_else(|e| panic!("allocate Alice: {e:?}"));
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "allocate Alice: {}",
        to_string(&reply)
    );
    assert_eq!(reply.attr("id"), Some("k9Lm2-101"));
    assert_eq!(reply.attr("from"), Some(palim.occupant().as_str()));
    // Prosody delivers the reply to the focus's real JID.
    let focus_jid = focus.client.state().jid.expect("the focus is connected");
    assert_eq!(reply.attr("to"), Some(focus_jid.as_str()));
    let modified = reply
        .get_child("conference-modified", COLIBRI2)
        .unwrap_or_else(|| panic!("no conference-modified in {}", to_string(&reply)))
        .clone();
    assert!(attr_names(&modified).is_empty());
    let (t_alice, fb) = check_allocation("allocate Alice", &modified, "a1b2c3d4");

    // (2) Bob and (5) Carol: endpoint creates without conference create.
    let m = modify(
        &focus,
        &palim,
        "allocate Bob",
        conference_modify(meeting, None, &endpoint_create("b2c3d4e5", "Bob-Qz7", &caps)),
    )
    .await;
    let (t_bob, fb_bob) = check_allocation("allocate Bob", &m, "b2c3d4e5");
    let m = modify(
        &focus,
        &palim,
        "allocate Carol",
        conference_modify(meeting, None, &endpoint_create("c3d4e5f6", "Carol-Lp2", &caps)),
    )
    .await;
    let (t_carol, fb_carol) = check_allocation("allocate Carol", &m, "c3d4e5f6");
    assert_eq!(fb, fb_bob, "feedback SSRCs are stable for the conference (check 40)");
    assert_eq!(fb, fb_carol, "feedback SSRCs are stable for the conference (check 40)");
    assert_ne!(t_alice.ufrag, t_bob.ufrag, "each endpoint has its own ICE credentials");
    assert_ne!(t_bob.ufrag, t_carol.ufrag, "each endpoint has its own ICE credentials");
    wait_counts(&mut focus, nick, 1, 3).await;

    // (3) session-accept for each: client transport + full sources + initial-last-n.
    // The clients' candidates: sockets of ours, so the bridge's connectivity checks go
    // nowhere else (no client answers them; this test is about signaling).
    let sinks: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket"))
        .collect();
    let sink = |i: usize| sinks[i].local_addr().expect("bound socket has an address");
    let people = [
        ("a1b2c3d4", "Alice-Xy1", 1_111_111_111u32, 2_222_222_221u32),
        ("b2c3d4e5", "Bob-Qz7", 1_111_111_112, 2_322_222_221),
        ("c3d4e5f6", "Carol-Lp2", 1_111_111_113, 2_422_222_221),
    ];
    for (i, (id, stats_id, audio, video)) in people.iter().enumerate() {
        let sim = [*video, video + 1, video + 2];
        let rtx = [video + 100, video + 101, video + 102];
        let fp = colon_hex(&[0x0A + i as u8; 32]);
        let inner = format!(
            r#"<endpoint id="{id}" stats-id="{stats_id}">{}<sources>{}{}</sources><initial-last-n value="-1"/></endpoint>"#,
            client_transport(&format!("Vd7{i}"), "m0x3c1Y0L7r0h9dq7f2Q1x1a", &fp, &[sink(i)]),
            audio_source(&format!("{id}-a0"), *audio),
            video_source(&format!("{id}-v0"), &sim, &rtx, "camera"),
        );
        let what = format!("session-accept {id}");
        let m = modify(&focus, &palim, &what, conference_modify(meeting, None, &inner)).await;
        check_plain(&what, &m, &[(id, false)]);
    }

    // (4) transport-info: only the ICE transport.
    let inner = format!(
        r#"<endpoint id="b2c3d4e5" stats-id="Bob-Qz7">{}</endpoint>"#,
        client_transport("Vd71", "m0x3c1Y0L7r0h9dq7f2Q1x1a", &colon_hex(&[0x0B; 32]), &[sink(3)])
    );
    let m = modify(
        &focus,
        &palim,
        "transport-info Bob",
        conference_modify(meeting, None, &inner),
    )
    .await;
    check_plain("transport-info Bob", &m, &[("b2c3d4e5", false)]);

    // (6) Source changes are full-set replacements: Alice adds a screen share, then stops it.
    let alice_sources = |with_share: bool| {
        let mut s = audio_source("a1b2c3d4-a0", 1_111_111_111);
        s.push_str(&video_source(
            "a1b2c3d4-v0",
            &[2_222_222_221, 2_222_222_222, 2_222_222_223],
            &[2_222_222_321, 2_222_222_322, 2_222_222_323],
            "camera",
        ));
        if with_share {
            s.push_str(&video_source(
                "a1b2c3d4-v1",
                &[3_000_000_001],
                &[3_000_000_002],
                "desktop",
            ));
        }
        format!(r#"<endpoint id="a1b2c3d4" stats-id="Alice-Xy1"><sources>{s}</sources></endpoint>"#)
    };
    for share in [true, false] {
        let what = format!("source update Alice (screen share {share})");
        let m = modify(
            &focus,
            &palim,
            &what,
            conference_modify(meeting, None, &alice_sources(share)),
        )
        .await;
        check_plain(&what, &m, &[("a1b2c3d4", false)]);
    }
    // Carol's sources cleared entirely (an empty set is valid).
    let m = modify(
        &focus,
        &palim,
        "clear Carol's sources",
        conference_modify(
            meeting,
            None,
            r#"<endpoint id="c3d4e5f6" stats-id="Carol-Lp2"><sources/></endpoint>"#,
        ),
    )
    .await;
    check_plain("clear Carol's sources", &m, &[("c3d4e5f6", false)]);

    // (7) Moderator mutes: a batch of force-mute, one of them for an id the bridge does not
    // know (ignorable: answered, not refused).
    let m = modify(
        &focus,
        &palim,
        "force-mute batch",
        conference_modify(
            meeting,
            None,
            r#"<endpoint id="b2c3d4e5"><force-mute audio="true" video="true"/></endpoint><endpoint id="deadbeef"><force-mute audio="true"/></endpoint>"#,
        ),
    )
    .await;
    check_plain("force-mute batch", &m, &[("b2c3d4e5", false), ("deadbeef", false)]);

    // (8) Carol leaves.
    let m = modify(
        &focus,
        &palim,
        "expire Carol",
        conference_modify(meeting, None, r#"<endpoint id="c3d4e5f6" expire="true"/>"#),
    )
    .await;
    check_plain("expire Carol", &m, &[("c3d4e5f6", true)]);
    wait_counts(&mut focus, nick, 1, 2).await;

    // Error paths, each an XMPP error reply through Prosody (§3.12).
    // Create for an existing meeting-id.
    let e = refused(
        &focus,
        &palim,
        "create existing conference",
        conference_modify(meeting, Some(room), &endpoint_create("e5f6a7b8", "Eve-1", &caps)),
    )
    .await;
    check_error(
        "create existing conference",
        &e,
        Condition::Conflict,
        ErrorType::Cancel,
        &[("error", "conference_already_exists")],
    );
    // Update of an unknown meeting-id.
    let e = refused(
        &focus,
        &palim,
        "update unknown conference",
        conference_modify("00000000-0000-0000-0000-000000000000", None, &alice_sources(false)),
    )
    .await;
    check_error(
        "update unknown conference",
        &e,
        Condition::ItemNotFound,
        ErrorType::Cancel,
        &[("error", "conference_not_found")],
    );
    // Update of an unknown endpoint (Carol, just expired) carrying sources.
    let e = refused(
        &focus,
        &palim,
        "update unknown endpoint",
        conference_modify(
            meeting,
            None,
            &format!(
                r#"<endpoint id="c3d4e5f6" stats-id="Carol-Lp2"><sources>{}</sources></endpoint>"#,
                audio_source("c3d4e5f6-a0", 1_111_111_113)
            ),
        ),
    )
    .await;
    check_error(
        "update unknown endpoint",
        &e,
        Condition::ItemNotFound,
        ErrorType::Cancel,
        &[("error", "unknown_endpoint"), ("endpoint", "c3d4e5f6")],
    );
    // Endpoint create without the source-names capability.
    let e = refused(
        &focus,
        &palim,
        "create without source-names",
        conference_modify(
            meeting,
            None,
            &endpoint_create("f6a7b8c9", "Frank-2", &["ssrc-rewriting"]),
        ),
    )
    .await;
    check_error(
        "create without source-names",
        &e,
        Condition::BadRequest,
        ErrorType::Modify,
        &[],
    );
    // Malformed: no meeting-id at all, and a blank one.
    for (what, req) in [
        (
            "conference-modify without meeting-id",
            parse(&format!(
                r#"<conference-modify xmlns="{COLIBRI2}">{}</conference-modify>"#,
                alice_sources(false)
            )),
        ),
        (
            "conference-modify with a blank meeting-id",
            conference_modify("  ", None, &alice_sources(false)),
        ),
    ] {
        let e = refused(&focus, &palim, what, req).await;
        assert_eq!(e.condition, Condition::BadRequest, "{what}: {e:?}");
        assert_eq!(e.error_type, ErrorType::Modify, "{what}: {e:?}");
    }
    // A creating request with two endpoints is not a shape Jicofo sends (§3.10 step 3).
    let e = refused(
        &focus,
        &palim,
        "two endpoint creates in one request",
        conference_modify(
            meeting,
            None,
            &format!(
                "{}{}",
                endpoint_create("a0000001", "X-1", &caps),
                endpoint_create("a0000002", "X-2", &caps)
            ),
        ),
    )
    .await;
    check_error(
        "two endpoint creates in one request",
        &e,
        Condition::FeatureNotImplemented,
        ErrorType::Cancel,
        &[("error", "feature_not_implemented")],
    );
    // An IQ the bridge does not serve (§1.3): service-unavailable.
    let r = focus
        .client
        .send_iq(
            &palim.occupant(),
            IqType::Get,
            Element::bare("frobnicate", "urn:example:palim-test"),
            IQ_WAIT,
        )
        .await;
    match r {
        Err(SendIqError::Stanza(e)) => assert_eq!(e.condition, Condition::ServiceUnavailable, "{e:?}"),
        other => panic!("unsupported IQ: expected service-unavailable, got {other:?}"),
    }

    // After all that, the bridge is healthy and a valid request still works.
    assert_eq!(
        focus.health_check(nick).await,
        Ok(None),
        "health check after the errors"
    );
    let m = modify(
        &focus,
        &palim,
        "allocate Dave after the errors",
        conference_modify(meeting, None, &endpoint_create("d4e5f6a7", "Dave-9", &caps)),
    )
    .await;
    let (_, fb_dave) = check_allocation("allocate Dave after the errors", &m, "d4e5f6a7");
    assert_eq!(fb, fb_dave, "feedback SSRCs are stable for the conference (check 40)");
    wait_counts(&mut focus, nick, 1, 3).await;

    // (9) The conference ends: one conference-level expire, answered with an empty
    // conference-modified; afterwards the meeting-id is unknown (check 58).
    let m = modify(
        &focus,
        &palim,
        "expire conference",
        parse(&format!(
            r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting}" expire="true"/>"#
        )),
    )
    .await;
    assert_eq!(m.children().count(), 0, "expire conference: {}", to_string(&m));
    let e = refused(
        &focus,
        &palim,
        "update after conference expire",
        conference_modify(meeting, None, &alice_sources(false)),
    )
    .await;
    check_error(
        "update after conference expire",
        &e,
        Condition::ItemNotFound,
        ErrorType::Cancel,
        &[("error", "conference_not_found")],
    );
    wait_counts(&mut focus, nick, 0, 0).await;
    // The same meeting-id can be created again.
    let m = modify(
        &focus,
        &palim,
        "re-create the conference",
        conference_modify(meeting, Some(room), &endpoint_create("a1b2c3d4", "Alice-Xy1", &caps)),
    )
    .await;
    check_allocation("re-create the conference", &m, "a1b2c3d4");

    // Graceful stop: Palim leaves the brewery (Jicofo sees the bridge removed) and returns Ok.
    let leave = {
        let mut f = focus;
        let nick = nick.to_string();
        tokio::spawn(async move {
            f.wait_presence(&nick, Duration::from_secs(15), |ev| !ev.available)
                .await;
        })
    };
    palim.shutdown().await;
    leave.await.expect("Palim's unavailable presence reached the focus");
    drop(prosody);
}

// ------------------------------------------------------------------------------------------
// (b) Real media through an allocation made over XMPP.

fn audio_ssrc(tag: u8) -> u32 {
    0x1000_0000 + u32::from(tag)
}
fn video_ssrc(tag: u8) -> u32 {
    0x2000_0000 + u32::from(tag)
}

struct Peer {
    tag: u8,
    id: String,
    client: Client,
}

/// Sends audio every 20 ms and video every 33 ms from `senders` for `duration`, driving all
/// clients, then drains for half a second. Blocking: run it on a blocking thread.
fn exchange(peers: &mut [Peer], senders: &[u8], duration: Duration) -> (u32, u32) {
    let start = Instant::now();
    let (mut next_audio, mut next_video) = (start, start);
    let (mut n_audio, mut n_video) = (0u32, 0u32);
    while start.elapsed() < duration {
        let now = Instant::now();
        if now >= next_audio {
            for p in peers.iter_mut().filter(|p| senders.contains(&p.tag)) {
                p.client.send_audio(now, &payload(p.tag, b'a', n_audio, 80));
            }
            n_audio += 1;
            next_audio += Duration::from_millis(20);
        }
        if now >= next_video {
            for p in peers.iter_mut().filter(|p| senders.contains(&p.tag)) {
                p.client.send_video(now, &payload(p.tag, b'v', n_video, 900));
            }
            n_video += 1;
            next_video += Duration::from_millis(33);
        }
        for p in peers.iter_mut() {
            p.client.drive(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.client.drive(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (n_audio, n_video)
}

/// Drives the clients on a blocking thread until `done` holds or `within` passes.
async fn drive_until(
    peers: Vec<Peer>,
    within: Duration,
    done: impl Fn(&[Peer]) -> bool + Send + 'static,
) -> (Vec<Peer>, bool) {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let end = Instant::now() + within;
        while Instant::now() < end {
            for p in peers.iter_mut() {
                p.client.drive(Instant::now());
            }
            if done(&peers) {
                return (peers, true);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (peers, false)
    })
    .await
    .expect("client thread panicked")
}

async fn run_exchange(peers: Vec<Peer>, senders: &'static [u8], duration: Duration) -> (Vec<Peer>, (u32, u32)) {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let sent = exchange(&mut peers, senders, duration);
        (peers, sent)
    })
    .await
    .expect("client thread panicked")
}

/// Every packet `p` received carries exactly the bytes its sender wrote, on the sender's SSRC
/// and payload type.
fn assert_payloads_intact(p: &Peer) {
    for r in &p.client.received {
        let at = if r.pt == PT_VP8 { common::VP8_PREFIX } else { 0 };
        assert!(r.payload.len() >= at + 6, "{}: short payload {r:?}", p.id);
        let b = &r.payload[at..];
        let (tag, kind) = (b[0], b[1]);
        let n = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let (len, ssrc, pt) = match kind {
            b'a' => (80, audio_ssrc(tag), PT_OPUS),
            b'v' => (900, video_ssrc(tag), PT_VP8),
            _ => panic!("{}: unexpected payload kind {kind}", p.id),
        };
        assert_ne!(tag, p.tag, "{}: got its own media back", p.id);
        assert_eq!(r.ssrc, ssrc, "{}: SSRC of {r:?}", p.id);
        assert_eq!(r.pt, pt, "{}: payload type of {r:?}", p.id);
        assert_eq!(r.payload, payload(tag, kind, n, len), "{}: payload bytes differ", p.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_through_xmpp_allocation() {
    let nick = "palim-e2e-media";
    let Some((prosody, mut focus, mut palim)) = setup("colibri_media", nick).await else {
        return;
    };
    common::init_crypto();
    let meeting = "9a3e2b7d-1c0e-4f11-8c4e-4d8e4f1c9a52";
    let caps = ["source-names"];
    let now = Instant::now();
    let mut peers = Vec::new();
    for (i, (tag, id, stats_id)) in [(1u8, "a1b2c3d4", "Alice-Xy1"), (2, "b2c3d4e5", "Bob-Qz7")]
        .into_iter()
        .enumerate()
    {
        let create = if i == 0 { Some("mediatest@muc.meet.jitsi") } else { None };
        let what = format!("allocate {id}");
        let m = modify(
            &focus,
            &palim,
            &what,
            conference_modify(meeting, create, &endpoint_create(id, stats_id, &caps)),
        )
        .await;
        let (bridge, _) = check_allocation(&what, &m, id);

        // The client: bridge transport from the XMPP answer; its own transport forwarded to
        // Palim as Jicofo forwards a session-accept (setup active, full sources).
        let mut client = Client::new(now, audio_ssrc(tag), video_ssrc(tag));
        let rt = client.remote_transport();
        let fp = rt
            .fingerprints
            .first()
            .expect("str0m has a DTLS fingerprint")
            .value
            .clone();
        let inner = format!(
            r#"<endpoint id="{id}" stats-id="{stats_id}">{}<sources>{}{}</sources><initial-last-n value="-1"/></endpoint>"#,
            client_transport(
                rt.ufrag.as_deref().unwrap_or_default(),
                rt.pwd.as_deref().unwrap_or_default(),
                &colon_hex(&fp),
                &rt.candidates,
            ),
            audio_source(&format!("{id}-a0"), audio_ssrc(tag)),
            video_source(&format!("{id}-v0"), &[video_ssrc(tag)], &[], "camera"),
        );
        let what = format!("session-accept {id}");
        let m = modify(&focus, &palim, &what, conference_modify(meeting, None, &inner)).await;
        check_plain(&what, &m, &[(id, false)]);
        client.connect(&bridge);
        client.open_data_channel();
        peers.push(Peer {
            tag,
            id: id.into(),
            client,
        });
    }
    for p in peers.iter_mut() {
        let other = if p.tag == 1 { 2 } else { 1 };
        p.client.expect_rx(audio_ssrc(other), video_ssrc(other));
    }

    // ICE + DTLS with Palim, and the bridge channel (SCTP) open.
    let (peers, ok) = drive_until(peers, Duration::from_secs(20), |ps| {
        ps.iter().all(|p| p.client.connected && p.client.channel.is_some())
    })
    .await;
    palim.assert_running();
    if !ok {
        let state: Vec<_> = peers
            .iter()
            .map(|p| (p.id.clone(), p.client.ice_state, p.client.connected, p.client.channel))
            .collect();
        panic!("clients did not connect (ICE, DTLS, data channel) within 20 s: {state:?}");
    }

    // Both send for 5 s; each receives the other's audio and video, byte-identical.
    let (mut peers, (n_audio, n_video)) = run_exchange(peers, &[1, 2], Duration::from_secs(5)).await;
    palim.assert_running();
    // The operator's view agrees: every packet received was forwarded to the one other
    // participant, none dropped.
    let st = palim.stats().await;
    let counter = |k: &str| {
        st[k]
            .as_u64()
            .unwrap_or_else(|| panic!("/colibri/stats has no {k}: {st}"))
    };
    let sent_by_clients = 2 * u64::from(n_audio + n_video);
    assert!(
        counter("rtp_packets_received") * 100 >= sent_by_clients * 95,
        "Palim received {} of {sent_by_clients} RTP packets: {st}",
        counter("rtp_packets_received")
    );
    // Everything received was forwarded to the one other participant, except the first video
    // packets that arrive before the receiver's constraints (no video before them, media.md
    // §10 check 25).
    let (sent, received) = (counter("rtp_packets_sent"), counter("rtp_packets_received"));
    assert!(
        sent <= received && sent * 100 >= received * 98,
        "sent {sent} of {received}: {st}"
    );
    assert_eq!(counter("drops_total"), 0, "{st}");
    assert_eq!(counter("endpoints_connected"), 2, "{st}");
    for p in &peers {
        let other = if p.tag == 1 { 2 } else { 1 };
        let counts = p.client.counts();
        let a = counts.get(&audio_ssrc(other)).copied().unwrap_or(0);
        let v = counts.get(&video_ssrc(other)).copied().unwrap_or(0);
        println!(
            "{} received audio {a}/{n_audio}, video {v}/{n_video} from its peer",
            p.id
        );
        // Loopback: no loss expected; a small margin for a loaded test machine.
        assert!(a * 100 >= n_audio as usize * 95, "{}: audio {a}/{n_audio}", p.id);
        assert!(v * 100 >= n_video as usize * 95, "{}: video {v}/{n_video}", p.id);
        assert_eq!(counts.len(), 2, "{}: packets on unexpected SSRCs: {counts:?}", p.id);
        assert_payloads_intact(p);
    }

    // Sources are replace-all (check 47): Bob signals an empty set; Alice stops receiving
    // Bob's media while Bob still receives Alice's.
    let m = modify(
        &focus,
        &palim,
        "clear Bob's sources",
        conference_modify(
            meeting,
            None,
            r#"<endpoint id="b2c3d4e5" stats-id="Bob-Qz7"><sources/></endpoint>"#,
        ),
    )
    .await;
    check_plain("clear Bob's sources", &m, &[("b2c3d4e5", false)]);
    for p in peers.iter_mut() {
        p.client.received.clear();
    }
    let (peers, (n_audio, _)) = run_exchange(peers, &[1, 2], Duration::from_secs(2)).await;
    let alice = &peers[0];
    let bob = &peers[1];
    assert!(
        alice.client.received.is_empty(),
        "Alice still receives Bob's media after his sources were removed: {:?}",
        alice.client.counts()
    );
    let from_alice = bob.client.counts().get(&audio_ssrc(1)).copied().unwrap_or(0);
    assert!(
        from_alice * 100 >= n_audio as usize * 95,
        "Bob: audio {from_alice}/{n_audio} from Alice after the source update"
    );
    assert_payloads_intact(bob);
    // ...because the bridge now refuses them, counted by reason.
    let st = palim.stats().await;
    let unknown = st["drops_unknown_ssrc"].as_u64().unwrap_or(0);
    assert!(
        unknown * 100 >= u64::from(n_audio) * 95,
        "Bob's unsignalled packets should be dropped as unknown_ssrc: {st}"
    );

    // Jicofo ends the meeting; the presence counts drop back to zero.
    wait_counts(&mut focus, nick, 1, 2).await;
    let m = modify(
        &focus,
        &palim,
        "expire conference",
        parse(&format!(
            r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting}" expire="true"/>"#
        )),
    )
    .await;
    assert_eq!(m.children().count(), 0, "expire conference: {}", to_string(&m));
    wait_counts(&mut focus, nick, 0, 0).await;
    palim.shutdown().await;
    drop(peers);
    drop(prosody);
}
