//! Robustness case 41 against a running bridge: the whole `palim` (`signaling::server::run`,
//! in-process) with small limits, driven over REST Colibri2 JSON. A conference over
//! `sfu.max_conferences`, an endpoint over `sfu.max_endpoints_per_conference` and a source set
//! over `sfu.max_ssrcs_per_endpoint` each get a clear Colibri2 error, nothing else changes, and
//! `/metrics` shows every limit's configured value and its refusal counter.
//!
//! Run: `cargo test -p signaling --test limits`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use signaling::config::Config;

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
