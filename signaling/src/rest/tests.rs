//! REST tests through the real router (`tower::ServiceExt::oneshot`) and one over a real
//! listener on 127.0.0.1:0, with a fake media core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use sfu::control::{CandidateKind, LocalCandidate, LocalTransport};
use sfu::{Command, CommandError, Reply, Ssrc, Stats};

use super::*;
use crate::colibri2::handler::{BoxFuture, MediaCore};
use crate::colibri2::HandlerConfig;

/// A core that accepts everything, or fails every command when `fail` is set.
#[derive(Default)]
struct Core {
    fail: AtomicBool,
}

impl MediaCore for Core {
    fn command(&self, cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>> {
        let r = if self.fail.load(Ordering::Relaxed) {
            Err(CommandError::Internal("core down".into()))
        } else {
            Ok(match cmd {
                Command::CreateConference { .. } => Reply::ConferenceCreated {
                    audio_ssrc: Ssrc(11),
                    video_ssrc: Ssrc(22),
                },
                Command::CreateEndpoint { .. } => Reply::EndpointCreated(LocalTransport {
                    ufrag: "uf".into(),
                    pwd: "pw".into(),
                    fingerprint_sha256: "AA:BB".into(),
                    candidates: vec![LocalCandidate {
                        addr: "127.0.0.1:10000".parse().expect("literal"),
                        priority: 1,
                        foundation: "1".into(),
                        kind: CandidateKind::Host,
                        related: None,
                    }],
                }),
                _ => Reply::Done,
            })
        };
        Box::pin(async move { r })
    }

    fn stats(&self) -> BoxFuture<'_, Stats> {
        Box::pin(async {
            Stats {
                bytes_received: 1000,
                rtp_packets_received: 7,
                rtcp_packets_received: 3,
                drops: vec![("malformed_rtp", 2), ("srtp_replay", 1)],
                ..Default::default()
            }
        })
    }
}

fn app() -> (Arc<Core>, Arc<Colibri2Handler>, Router) {
    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core.clone(), HandlerConfig::default()));
    let router = router(RestState::new(handler.clone()).with_version("1.2.3"));
    (core, handler, router)
}

async fn call(router: &Router, method: Method, uri: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("valid request");
    let resp = router.clone().oneshot(req).await.expect("infallible service");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

const CREATE: &str = r#"{"meeting-id":"m1","name":"room@muc.example","create":true,
  "endpoints":[{"id":"e1","create":true,"transport":{"ice-controlling":true,"sctp":{}},"capabilities":["source-names"]}]}"#;

#[tokio::test]
async fn post_creates_and_answers_json() {
    let (_core, handler, router) = app();
    let (status, body) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let t = &v["endpoints"][0]["transport"];
    assert_eq!(t["transport"]["ufrag"], "uf");
    assert_eq!(t["transport"]["rtcp-mux"], true);
    assert_eq!(t["transport"]["fingerprints"][0]["setup"], "actpass");
    assert_eq!(t["transport"]["candidates"][0]["port"], "10000");
    assert_eq!(t["sctp"], json!({"port": 5000, "role": "server"}));
    assert_eq!(v["sources"][0]["sources"][0]["ssrc"], 11);
    assert!(handler.has_conference("m1").await);
}

#[tokio::test]
async fn errors_map_to_http_statuses() {
    let (core, _handler, router) = app();
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );

    // Conflict with the colibri2 reason in the body.
    let (status, body) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let v: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(v["error"], "conflict");
    assert_eq!(v["reason"], "conference_already_exists");

    // Unknown conference in a POST update → 404.
    let (status, body) = call(
        &router,
        Method::POST,
        "/colibri/v2/conferences",
        r#"{"meeting-id":"nope","endpoints":[{"id":"x","expire":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Unknown endpoint → 404 naming it.
    let (status, body) = call(
        &router,
        Method::POST,
        "/colibri/v2/conferences",
        r#"{"meeting-id":"m1","endpoints":[{"id":"ghost","sources":[]}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["endpoint"], "ghost");

    // Missing transport → 400.
    let (status, _) = call(
        &router,
        Method::POST,
        "/colibri/v2/conferences",
        r#"{"meeting-id":"m1","endpoints":[{"id":"e2","create":true,"capabilities":["source-names"]}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Core failure → 500.
    core.fail.store(true, Ordering::Relaxed);
    let (status, body) = call(
        &router,
        Method::POST,
        "/colibri/v2/conferences",
        r#"{"meeting-id":"m2","create":true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("core down"), "{body}");
}

#[tokio::test]
async fn graceful_shutdown_is_503() {
    let (_core, handler, router) = app();
    handler.graceful_shutdown_flag().store(true, Ordering::Relaxed);
    let (status, body) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["reason"],
        "graceful_shutdown"
    );
}

#[tokio::test]
async fn malformed_json_is_400_with_a_message() {
    let (_core, _handler, router) = app();
    for body in [
        "",
        "{",
        "not json",
        "[1,2]",
        r#"{"meeting-id": 5}"#,
        r#"{"create": true}"#,
        "\u{0}\u{1}",
    ] {
        let (status, text) = call(&router, Method::POST, "/colibri/v2/conferences", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {text}");
        let v: Value = serde_json::from_str(&text).expect("error body is JSON");
        assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{text}");
    }
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let (_core, _handler, router) = app();
    let big = format!(r#"{{"meeting-id":"m","name":"{}"}}"#, "a".repeat(BODY_LIMIT + 1));
    let (status, _) = call(&router, Method::POST, "/colibri/v2/conferences", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn patch_updates_existing_and_404s_unknown() {
    let (_core, handler, router) = app();
    let (status, _) = call(
        &router,
        Method::PATCH,
        "/colibri/v2/conferences/m1",
        r#"{"endpoints":[{"id":"e1","expire":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
    // The path's meeting-id wins over the body's.
    let (status, body) = call(
        &router,
        Method::PATCH,
        "/colibri/v2/conferences/m1",
        r#"{"meeting-id":"other","endpoints":[{"id":"e1","force-mute":{"audio":true}}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"endpoints":[{"id":"e1"}]})
    );
    let confs = handler.conferences().await;
    assert!(confs[0].endpoints[0].force_mute.audio);
    // Expiring the last endpoint expires the conference; then PATCH is 404 again.
    let (status, _) = call(
        &router,
        Method::PATCH,
        "/colibri/v2/conferences/m1",
        r#"{"endpoints":[{"id":"e1","expire":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&router, Method::PATCH, "/colibri/v2/conferences/m1", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_is_200_empty_or_500_with_reason() {
    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core, HandlerConfig::default()));
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let router = router(RestState::new(handler).with_health(Arc::new(move || {
        if flag.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("UDP port not bound".to_owned())
        }
    })));
    let req = Request::get("/about/health").body(Body::empty()).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert!(resp.into_body().collect().await.expect("body").to_bytes().is_empty());

    healthy.store(false, Ordering::Relaxed);
    let (status, body) = call(&router, Method::GET, "/about/health", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "UDP port not bound");
}

#[tokio::test]
async fn version_is_jvb_shaped() {
    let (_core, _handler, router) = app();
    let (status, body) = call(&router, Method::GET, "/about/version", "").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["name"], "palim");
    assert_eq!(v["version"], "1.2.3");
    assert!(v["os"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn stats_are_flat_with_jvb_names() {
    let (_core, _handler, router) = app();
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&router, Method::GET, "/colibri/stats", "").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let obj = v.as_object().expect("object");
    assert!(obj.values().all(|x| !x.is_object() && !x.is_array()), "flat: {body}");
    assert_eq!(v["conferences"], 1);
    assert_eq!(v["participants"], 1);
    assert_eq!(v["endpoints"], 1);
    assert_eq!(v["octo_endpoints"], 0);
    assert_eq!(v["total_conferences_created"], 1);
    assert_eq!(v["total_bytes_received"], 1000);
    assert_eq!(v["total_packets_received"], 10);
    assert_eq!(v["drops_malformed_rtp"], 2);
    assert_eq!(v["drops_total"], 3);
    assert_eq!(v["graceful_shutdown"], false);
    let ts = v["current_timestamp"].as_str().expect("timestamp");
    assert_eq!(ts.len(), "yyyy-MM-dd HH:mm:ss.SSS".len(), "{ts}");
}

#[tokio::test]
async fn extra_stats_are_merged() {
    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core, HandlerConfig::default()));
    let router = router(RestState::new(handler).with_extra_stats(Arc::new(|| {
        let mut m = serde_json::Map::new();
        m.insert("drain".into(), json!(true));
        m
    })));
    let (_, body) = call(&router, Method::GET, "/colibri/stats", "").await;
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["drain"], true);
}

#[test]
fn utc_timestamp_formats_known_instants() {
    assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000");
    // 2026-08-19 17:02:11.123 UTC
    let t = UNIX_EPOCH + Duration::from_millis(1_787_158_931_123);
    assert_eq!(utc_timestamp(t), "2026-08-19 17:02:11.123");
    // A leap day.
    let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(utc_timestamp(t), "2000-02-29 00:00:00.000");
}

#[tokio::test]
async fn serves_over_a_real_listener() {
    // End to end over TCP on loopback with a minimal HTTP/1.1 client.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_core, _handler, router) = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = "{";
    let req = format!(
        "POST /colibri/v2/conferences HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut resp))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("invalid JSON"), "{resp}");
    server.abort();
}
