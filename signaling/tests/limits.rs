//! Robustness case 41 against a running bridge: the whole `palim` (`signaling::server::run`,
//! in-process) with small limits, driven over REST Colibri2 JSON. A conference over
//! `sfu.max_conferences`, an endpoint over `sfu.max_endpoints_per_conference` and a source set
//! over `sfu.max_ssrcs_per_endpoint` each get a clear Colibri2 error, nothing else changes, and
//! `/metrics` shows every limit's configured value and its refusal counter.
//!
//! Cases 30 and 31 through a real Prosody (laid out like docker-jitsi-meet, see
//! tests/prosody/start-prosody.sh): a second account in the brewery sends a conference-modify
//! and gets `<error type='auth'><not-authorized/>` with no conference created; the focus then
//! gets errors for a 10^4-endpoint request and for a stanza over the XMPP size limit, and its
//! next request is served (the bridge's session stayed up).
//!
//! Run: `cargo test -p signaling --test limits` (the Prosody test skips without prosody
//! unless CI is set).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use serde_json::Value;
use signaling::config::Config;
use signaling::xmpp::{Condition, ErrorType, IqType, RejectAll, SendIqError, XmppClient};
use support::{wait_state, Prosody, TestFocus, BREWERY, INTRUDER, JVB};

const MAX_CONFERENCES: usize = 2;
const MAX_ENDPOINTS: usize = 2;
const MAX_SSRCS: usize = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

/// One HTTP/1.1 request to the REST port: (status, body).
async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect to the REST port: {e}"),
        }
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn create_conference(meeting: &str, endpoint: &str) -> String {
    format!(
        r#"{{"meeting-id":"{meeting}","name":"{meeting}@muc.example","create":true,
          "endpoints":[{{"id":"{endpoint}","create":true,"transport":{{"ice-controlling":true}},
          "capabilities":["source-names"]}}]}}"#
    )
}

fn create_endpoint(endpoint: &str) -> String {
    format!(
        r#"{{"endpoints":[{{"id":"{endpoint}","create":true,"transport":{{"ice-controlling":true}},
          "capabilities":["source-names"]}}]}}"#
    )
}

/// A source update for `endpoint`: one video source with `n` SSRCs starting at `first`.
fn sources(endpoint: &str, first: u32, n: u32) -> String {
    let ssrcs: Vec<String> = (first..first + n).map(|s| format!(r#"{{"ssrc":{s}}}"#)).collect();
    format!(
        r#"{{"endpoints":[{{"id":"{endpoint}","sources":[{{"type":"video","id":"{endpoint}-v0",
          "sources":[{}]}}]}}]}}"#,
        ssrcs.join(",")
    )
}

/// `/colibri/stats` conferences and endpoints.
async fn counts(rest: u16) -> (u64, u64) {
    let (status, body) = http(rest, "GET", "/colibri/stats", "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("stats JSON");
    (
        v["conferences"].as_u64().expect("conferences"),
        v["endpoints"].as_u64().expect("endpoints"),
    )
}

/// The value of the Prometheus sample `name{labels}`.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{metrics}"))
}

fn assert_refused(status: u16, body: &str, want_status: u16, want_condition: &str, want_text: &str) {
    assert_eq!(status, want_status, "{body}");
    let v: Value = serde_json::from_str(body).expect("error JSON");
    assert_eq!(v["error"], want_condition, "{body}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains(want_text), "message {msg:?} lacks {want_text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_clear_errors_change_nothing_and_are_counted() {
    let mut config = Config::default();
    config.ice.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.ice.udp_port = 0;
    config.ice.host_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    config.rest.colibri_enabled = true;
    config.rest.stats_interval = Duration::ZERO;
    config.sfu.max_conferences = MAX_CONFERENCES;
    config.sfu.max_endpoints_per_conference = MAX_ENDPOINTS;
    config.sfu.max_ssrcs_per_endpoint = MAX_SSRCS;
    config.sfu.max_dtls_handshakes = 7;
    config.sfu.max_dtls_handshakes_per_ip = 3;
    let rest = free_port();
    config.rest.bind = SocketAddr::from(([127, 0, 0, 1], rest));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(signaling::server::run(config, async move {
        let _ = stopped.await;
    }));
    const POST: &str = "/colibri/v2/conferences";

    // Up to the caps everything is accepted.
    for m in ["m1", "m2"] {
        let (status, body) = http(rest, "POST", POST, &create_conference(m, "a")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = http(rest, "PATCH", &format!("{POST}/m1"), &create_endpoint("b")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        rest,
        "PATCH",
        &format!("{POST}/m1"),
        &sources("a", 1000, MAX_SSRCS as u32),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(rest).await, (2, 3));

    // Conference 3 over a cap of 2: service-unavailable (Jicofo moves the session elsewhere).
    let (status, body) = http(rest, "POST", POST, &create_conference("m3", "a")).await;
    assert_refused(
        status,
        &body,
        503,
        "service-unavailable",
        "Limit reached: conferences (sfu.max_conferences)",
    );
    let (status, _) = http(rest, "PATCH", &format!("{POST}/m3"), &create_endpoint("z")).await;
    assert_eq!(status, 404, "the refused conference does not exist");

    // Endpoint 3 in a conference capped at 2.
    let (status, body) = http(rest, "PATCH", &format!("{POST}/m1"), &create_endpoint("c")).await;
    assert_refused(
        status,
        &body,
        503,
        "service-unavailable",
        "Limit reached: endpoints per conference",
    );

    // SSRC 5 for an endpoint capped at 4: bad-request (the client's fault; the bridge is kept).
    let (status, body) = http(
        rest,
        "PATCH",
        &format!("{POST}/m1"),
        &sources("b", 2000, MAX_SSRCS as u32 + 1),
    )
    .await;
    assert_refused(status, &body, 400, "bad-request", "Limit reached: ssrcs per endpoint");

    // Nothing else changed: the same conferences and endpoints, and the endpoints still take
    // updates within the caps (the refused endpoint id is free, not half-created).
    assert_eq!(counts(rest).await, (2, 3));
    let (status, body) = http(
        rest,
        "PATCH",
        &format!("{POST}/m1"),
        &sources("b", 3000, MAX_SSRCS as u32),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(rest, "PATCH", &format!("{POST}/m2"), &create_endpoint("c")).await;
    assert_eq!(status, 200, "the other conference still has room: {body}");
    assert_eq!(counts(rest).await, (2, 4));

    // Metrics: every limit's configured value and one refusal each for the three hit here.
    let (status, m) = http(rest, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        sample(&m, r#"palim_limit{limit="conferences"}"#),
        MAX_CONFERENCES as f64
    );
    assert_eq!(
        sample(&m, r#"palim_limit{limit="endpoints_per_conference"}"#),
        MAX_ENDPOINTS as f64
    );
    assert_eq!(
        sample(&m, r#"palim_limit{limit="ssrcs_per_endpoint"}"#),
        MAX_SSRCS as f64
    );
    assert_eq!(sample(&m, r#"palim_limit{limit="dtls_handshakes_in_flight"}"#), 7.0);
    assert_eq!(sample(&m, r#"palim_limit{limit="dtls_handshakes_per_ip"}"#), 3.0);
    assert_eq!(
        sample(&m, r#"palim_limit{limit="bridge_channel_message_bytes"}"#),
        sfu::bridge_channel::MAX_MESSAGE_LEN as f64
    );
    assert_eq!(
        sample(&m, r#"palim_limit{limit="bridge_channel_messages_per_second"}"#),
        sfu::receiver::CHANNEL_RATE
    );
    for (limit, n) in [
        ("conferences", 1.0),
        ("endpoints_per_conference", 1.0),
        ("ssrcs_per_endpoint", 1.0),
        ("dtls_handshakes_in_flight", 0.0),
        ("dtls_handshakes_per_ip", 0.0),
        ("bridge_channel_message_bytes", 0.0),
        ("bridge_channel_messages_per_second", 0.0),
    ] {
        assert_eq!(
            sample(&m, &format!(r#"palim_limit_refusals_total{{limit="{limit}"}}"#)),
            n,
            "{limit}"
        );
    }
    assert_eq!(sample(&m, "palim_dtls_handshakes_in_flight"), 0.0);

    let _ = stop.send(());
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops within 10 s")
        .expect("no panic");
    r.expect("run returns Ok");
}

// ------------------------------------------------------------------------------------------
// Cases 30 and 31 through Prosody.

const COLIBRI2: &str = "jitsi:colibri2";

fn fixture(name: &str) -> Element {
    let path = format!("{}/tests/data/colibri2/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let iq: Element = text.parse().unwrap_or_else(|e| panic!("{path}: {e}"));
    // The fixtures are whole IQs; the payload is the one child.
    iq.children().next().cloned().expect("fixture IQ has a payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colibri2_only_from_the_focus_and_oversized_requests_keep_the_session() {
    let Some(prosody) = Prosody::start_or_skip("limits_focus").await else {
        return;
    };
    let mut focus = TestFocus::join(&prosody).await;
    let nick = "palim-limits";
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
    // focus_jids unset: the default, focus@auth.meet.jitsi and the brewery occupant "focus".
    config.ice.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.ice.udp_port = 0;
    config.ice.host_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let rest = free_port();
    config.rest.bind = SocketAddr::from(([127, 0, 0, 1], rest));
    config.rest.stats_interval = Duration::ZERO;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(signaling::server::run(config, async move {
        let _ = stopped.await;
    }));
    focus
        .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && ev.stats.is_some())
        .await;
    let bridge = TestFocus::occupant(nick);
    let wait = Duration::from_secs(15);

    // Case 30: another account, in the brewery (so past the MUC admission check), is refused.
    let intruder = XmppClient::spawn(
        prosody.client_config(INTRUDER, "intruder", &[BREWERY]),
        Arc::new(RejectAll),
        None,
    )
    .expect("intruder client config");
    wait_state(&intruder, Duration::from_secs(10), "intruder joined", |s| {
        s.all_joined()
    })
    .await;
    let create = fixture("01_create_alice.xml");
    let meeting = create.attr("meeting-id").expect("fixture has a meeting-id").to_owned();
    match intruder.send_iq(&bridge, IqType::Get, create.clone(), wait).await {
        Err(SendIqError::Stanza(e)) => {
            assert_eq!(e.condition, Condition::NotAuthorized, "{e:?}");
            assert_eq!(e.error_type, ErrorType::Auth, "{e:?}");
        }
        other => panic!("intruder's conference-modify: expected not-authorized, got {other:?}"),
    }
    assert_eq!(counts(rest).await, (0, 0), "no conference from the intruder");

    // Case 31: 10^4 endpoints in one request: an error answer, nothing created.
    let mut text = format!("<conference-modify xmlns='{COLIBRI2}' meeting-id='big' create='true'>");
    for i in 0..10_000 {
        text.push_str(&format!("<endpoint id='{i:x}'/>"));
    }
    text.push_str("</conference-modify>");
    let big: Element = text.parse().expect("well-formed");
    match focus.client.send_iq(&bridge, IqType::Get, big, wait).await {
        Err(SendIqError::Stanza(e)) => assert_eq!(e.condition, Condition::BadRequest, "{e:?}"),
        other => panic!("10^4 endpoints: expected bad-request, got {other:?}"),
    }
    assert_eq!(counts(rest).await, (0, 0), "nothing from the oversized request");

    // The focus is served on the same session, and the session never dropped.
    let r = focus.client.send_iq(&bridge, IqType::Get, create, wait).await;
    match r {
        Ok(Some(el)) => assert!(el.is("conference-modified", COLIBRI2)),
        other => panic!("the focus's create: {other:?}"),
    }
    assert_eq!(counts(rest).await.0, 1, "the focus created {meeting}");
    let (status, m) = http(rest, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&m, "palim_colibri2_not_authorized_total"), 1.0);
    assert_eq!(sample(&m, "jitsi_jvb_xmpp_disconnects_total"), 0.0);
    assert!(!task.is_finished(), "the bridge stopped");

    let _ = stop.send(());
    let r = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops within 15 s")
        .expect("no panic");
    r.expect("run returns Ok");
}
