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
use crate::ops::{Ops, ShutdownState};

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

// ------------------------------------------------------------------------------------------
// Operations endpoints: metrics, drain, shutdown, debug, flags.

fn ops_app(flags: RestFlags) -> (Arc<Colibri2Handler>, Arc<Ops>, Router) {
    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core, HandlerConfig::default()));
    let ops = Ops::new(handler.graceful_shutdown_flag(), false, false);
    ops.set_addresses(vec!["192.0.2.1".parse().expect("literal")]);
    let health_ops = ops.clone();
    let router = router(
        RestState::new(handler.clone())
            .with_ops(ops.clone())
            .with_flags(flags)
            .with_health(Arc::new(move || health_ops.health())),
    );
    (handler, ops, router)
}

async fn get_with_accept(router: &Router, uri: &str, accept: &str) -> (StatusCode, String, String) {
    let req = Request::get(uri)
        .header("accept", accept)
        .body(Body::empty())
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every metric family is in both text formats with its TYPE, counters with `_total`
/// samples, and values follow the state.
/// Case 51 wiring: while the memory monitor sheds, health is 503 with the reason (500 stays
/// for a broken bridge), stress is 1.0 in stats and metrics, and the memory gauges are exported;
/// after shedding ends everything is back.
#[tokio::test]
async fn memory_shedding_is_503_and_stress_one() {
    use crate::memory::{LimitSource, MemoryMonitor, Thresholds};
    const MIB: u64 = 1 << 20;
    let core = Arc::new(Core::default());
    let monitor = MemoryMonitor::new(Thresholds::default(), Some(100 * MIB));
    let handler = Arc::new(Colibri2Handler::new(
        core,
        HandlerConfig {
            memory_shedding: monitor.shedding_flag(),
            ..HandlerConfig::default()
        },
    ));
    let router = router(RestState::new(handler).with_memory(monitor.clone()));
    monitor.apply(Some(90 * MIB), Some(100 * MIB), Some(LimitSource::Configured));
    let (status, body) = call(&router, Method::GET, "/about/health", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("memory pressure: RSS 90.0 MiB is 90% of the 100.0 MiB limit"),
        "{body}"
    );
    let (_, stats) = call(&router, Method::GET, "/colibri/stats", "").await;
    let v: Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(v["stress_level"], json!(1.0));
    assert_eq!(v["memory_shedding"], json!(true));
    assert_eq!(v["memory_rss_bytes"], json!(90 * MIB));
    assert_eq!(v["memory_limit_bytes"], json!(100 * MIB));
    let (status, body) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("Limit reached: memory"), "{body}");
    let (_, m) = call(&router, Method::GET, "/metrics", "").await;
    for line in [
        "jitsi_jvb_stress 1.0",
        "palim_memory_shedding 1.0",
        "palim_memory_limit_bytes 104857600.0",
        "palim_memory_rss_bytes 94371840.0",
        "palim_limit_refusals_total{limit=\"memory\"} 1.0",
        "palim_limit{limit=\"memory\"} 104857600.0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing in:\n{m}");
    }
    monitor.apply(Some(70 * MIB), Some(100 * MIB), Some(LimitSource::Configured));
    assert_eq!(call(&router, Method::GET, "/about/health", "").await.0, StatusCode::OK);
    let (_, stats) = call(&router, Method::GET, "/colibri/stats", "").await;
    let v: Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(v["stress_level"], json!(0.0));
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_in_prometheus_and_openmetrics() {
    let (_handler, ops, router) = ops_app(RestFlags::all());
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
    ops.set_drain(true);
    let (status, ct, text) = get_with_accept(&router, "/metrics", "text/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let names = metric_names();
    assert!(names.len() >= 30, "{names:?}");
    for jvb in [
        "jitsi_jvb_conferences",
        "jitsi_jvb_conferences_created",
        "jitsi_jvb_conferences_completed",
        "jitsi_jvb_endpoints",
        "jitsi_jvb_local_endpoints",
        "jitsi_jvb_current_endpoints",
        "jitsi_jvb_visitors",
        "jitsi_jvb_current_visitors",
        "jitsi_jvb_largest_conference",
        "jitsi_jvb_endpoints_ice_failed",
        "jitsi_jvb_endpoints_dtls_failed",
        "jitsi_jvb_packets_received",
        "jitsi_jvb_packets_sent",
        "jitsi_jvb_bytes_received",
        "jitsi_jvb_bytes_sent",
        "jitsi_jvb_stress",
        "jitsi_jvb_healthy",
        "jitsi_jvb_graceful_shutdown",
        "jitsi_jvb_shutting_down",
        "jitsi_jvb_drain_mode",
        "jitsi_jvb_startup_time",
        "jitsi_jvb_xmpp_disconnects",
        "palim_dropped_packets",
        "palim_ice_rebinds",
        "palim_dtls_fingerprint_mismatch",
    ] {
        assert!(names.iter().any(|n| n == jvb), "missing {jvb}");
    }
    for n in &names {
        assert!(
            text.contains(&format!("# TYPE {n} gauge")) || text.contains(&format!("# TYPE {n}_total counter")),
            "{n} has no TYPE line:\n{text}"
        );
    }
    assert!(text.contains("\njitsi_jvb_conferences 1.0\n"), "{text}");
    assert!(text.contains("\njitsi_jvb_conferences_created_total 1.0\n"), "{text}");
    assert!(text.contains("\njitsi_jvb_bytes_received_total 1000.0\n"), "{text}");
    assert!(text.contains("\njitsi_jvb_drain_mode 1.0\n"), "{text}");
    assert!(text.contains("\njitsi_jvb_healthy 1.0\n"), "{text}");
    assert!(
        text.contains("\npalim_dropped_packets_total{reason=\"malformed_rtp\"} 2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("\npalim_dropped_packets_total{reason=\"srtp_replay\"} 1.0\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));

    let (status, ct, om) = get_with_accept(
        &router,
        "/metrics",
        "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE jitsi_jvb_conferences_created counter\n"), "{om}");
    assert!(om.contains("\njitsi_jvb_conferences_created_total 1.0\n"), "{om}");
    for n in &names {
        assert!(om.contains(&format!("# TYPE {n} ")), "{n} missing in OpenMetrics");
    }

    let (_, ct, js) = get_with_accept(&router, "/metrics", "application/json").await;
    assert_eq!(ct, "application/json");
    let v: Value = serde_json::from_str(&js).expect("JSON metrics");
    assert_eq!(v["conferences"], 1.0);
    assert_eq!(v["palim_dropped_packets"]["malformed_rtp"], 2.0);
}

#[tokio::test]
async fn drain_get_enable_disable() {
    let (_handler, ops, router) = ops_app(RestFlags::all());
    let (status, body) = call(&router, Method::GET, "/colibri/drain", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"drain": false})
    );
    assert_eq!(
        call(&router, Method::POST, "/colibri/drain/enable", "").await.0,
        StatusCode::OK
    );
    assert!(ops.drain());
    let (_, body) = call(&router, Method::GET, "/colibri/drain", "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"drain": true})
    );
    let (_, body) = call(&router, Method::GET, "/colibri/stats", "").await;
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["drain"], true);
    assert_eq!(
        call(&router, Method::POST, "/colibri/drain/disable", "").await.0,
        StatusCode::OK
    );
    assert!(!ops.drain());
    // Drain refuses nothing by itself (colibri.md §7.1).
    ops.set_drain(true);
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn shutdown_graceful_then_immediate() {
    let (_handler, ops, router) = ops_app(RestFlags::all());
    let (status, body) = call(&router, Method::POST, "/colibri/shutdown", "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &router,
        Method::POST,
        "/colibri/shutdown",
        r#"{"graceful-shutdown": 5}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A body without the key shuts nothing down.
    let (status, _) = call(&router, Method::POST, "/colibri/shutdown", "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ops.state(), ShutdownState::Running);

    let (status, _) = call(
        &router,
        Method::POST,
        "/colibri/shutdown",
        r#"{"graceful-shutdown": "true"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ops.state(), ShutdownState::GracefulShutdown);
    let (_, body) = call(&router, Method::GET, "/colibri/stats", "").await;
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (v["graceful_shutdown"].clone(), v["shutting_down"].clone()),
        (json!(true), json!(false))
    );
    // New conferences are refused with the graceful_shutdown reason.
    let (status, body) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["reason"],
        "graceful_shutdown"
    );

    let (status, _) = call(
        &router,
        Method::POST,
        "/colibri/shutdown",
        r#"{"graceful-shutdown": false}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ops.state(), ShutdownState::ShuttingDown);
    let text = get_with_accept(&router, "/metrics", "").await.2;
    assert!(text.contains("\njitsi_jvb_shutting_down 1.0\n"), "{text}");
    assert!(text.contains("\njitsi_jvb_graceful_shutdown 0.0\n"), "{text}");
}

#[tokio::test]
async fn debug_bridge_conference_endpoint() {
    let (_handler, _ops, router) = ops_app(RestFlags::all());
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&router, Method::GET, "/debug", "").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["shutdown_state"], "RUNNING");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["conferences"]["m1"]["name"], "room@muc.example");
    assert_eq!(v["conferences"]["m1"]["endpoints"]["e1"]["sctp"], true);
    assert_eq!(v["stats"]["conferences"], 1);

    let (status, body) = call(&router, Method::GET, "/debug/m1", "").await;
    assert_eq!(status, StatusCode::OK);
    let c: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(c["meeting_id"], "m1");
    // Also by Palim's local id.
    let local = c["local_id"].as_str().expect("local id").to_owned();
    assert_eq!(
        call(&router, Method::GET, &format!("/debug/{local}"), "").await.0,
        StatusCode::OK
    );

    let (status, body) = call(&router, Method::GET, "/debug/m1/e1", "").await;
    assert_eq!(status, StatusCode::OK);
    let e: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(e["id"], "e1");
    assert_eq!(e["capabilities"], json!(["source-names"]));
    assert_eq!(
        call(&router, Method::GET, "/debug/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&router, Method::GET, "/debug/m1/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_follows_ops() {
    let (_handler, ops, router) = ops_app(RestFlags::all());
    assert_eq!(call(&router, Method::GET, "/about/health", "").await.0, StatusCode::OK);
    ops.set_addresses(Vec::new());
    let (status, body) = call(&router, Method::GET, "/about/health", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("no usable address"), "{body}");
    ops.set_addresses(vec!["192.0.2.1".parse().expect("literal")]);
    ops.set_media_alive(false);
    let (status, body) = call(&router, Method::GET, "/about/health", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("media port"), "{body}");
    let text = get_with_accept(&router, "/metrics", "").await.2;
    assert!(text.contains("\njitsi_jvb_healthy 0.0\n"), "{text}");
}

/// Each flag removes exactly its routes (404), as JVB's `enabled = false`.
#[tokio::test]
async fn flags_disable_their_routes() {
    let routes: [(&str, Method, &str); 11] = [
        ("colibri", Method::POST, "/colibri/v2/conferences"),
        ("health", Method::GET, "/about/health"),
        ("version", Method::GET, "/about/version"),
        ("stats", Method::GET, "/colibri/stats"),
        ("prometheus", Method::GET, "/metrics"),
        ("drain", Method::GET, "/colibri/drain"),
        ("drain", Method::POST, "/colibri/drain/enable"),
        ("shutdown", Method::POST, "/colibri/shutdown"),
        ("debug", Method::GET, "/debug"),
        ("debug", Method::GET, "/debug/m1"),
        ("debug", Method::GET, "/debug/m1/e1"),
    ];
    for flag in [
        "colibri",
        "health",
        "version",
        "stats",
        "prometheus",
        "drain",
        "shutdown",
        "debug",
    ] {
        let mut f = RestFlags::all();
        match flag {
            "colibri" => f.colibri = false,
            "health" => f.health = false,
            "version" => f.version = false,
            "stats" => f.stats = false,
            "prometheus" => f.prometheus = false,
            "drain" => f.drain = false,
            "shutdown" => f.shutdown = false,
            _ => f.debug = false,
        }
        let (_h, ops, router) = ops_app(f);
        for (owner, method, path) in &routes {
            let body = if *path == "/colibri/shutdown" {
                r#"{"graceful-shutdown":true}"#
            } else {
                ""
            };
            let (status, _) = call(&router, method.clone(), path, body).await;
            if *owner == flag || (flag == "colibri" && *owner == "shutdown") {
                assert_eq!(status, StatusCode::NOT_FOUND, "{path} with {flag} off");
            } else {
                // /debug/m1 and /debug/m1/e1 are 404s for a missing conference, not a
                // missing route: their body says so.
                if !path.starts_with("/debug/") {
                    assert_ne!(status, StatusCode::NOT_FOUND, "{path} with {flag} off should exist");
                }
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            }
        }
        // The shutdown flag was really off (or on): state moved only when the route exists.
        let moved = ops.state() != ShutdownState::Running;
        assert_eq!(moved, flag != "shutdown" && flag != "colibri", "{flag}");
    }
    // Shutdown is off by default, as in JVB.
    assert!(!RestFlags::default().shutdown);
}

/// `/colibri/stats` is cached for `stats_interval`.
#[tokio::test]
async fn stats_cached_for_the_interval() {
    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core, HandlerConfig::default()));
    let router = router(
        RestState::new(handler)
            .with_flags(RestFlags::all())
            .with_stats_interval(Duration::from_secs(3600)),
    );
    let (_, before) = call(&router, Method::GET, "/colibri/stats", "").await;
    assert_eq!(
        call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await.0,
        StatusCode::OK
    );
    let (_, after) = call(&router, Method::GET, "/colibri/stats", "").await;
    assert_eq!(before, after, "served from the cache");
    assert_eq!(serde_json::from_str::<Value>(&after).expect("JSON")["conferences"], 0);
}

/// Every metric the Grafana dashboard queries exists.
#[test]
fn dashboard_uses_only_existing_metrics() {
    let dash = include_str!("../../../docs/grafana-dashboard.json");
    let v: Value = serde_json::from_str(dash).expect("dashboard is JSON");
    assert!(v["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let names = metric_names();
    let mut used = 0;
    for prefix in ["jitsi_jvb_", "palim_"] {
        for (i, _) in dash.match_indices(prefix) {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = name.strip_suffix("_total").unwrap_or(&name);
            assert!(
                names.iter().any(|n| n == family),
                "dashboard uses unknown metric {name}"
            );
            used += 1;
        }
    }
    assert!(used > 20, "{used}");
}

/// The fault-injection route exists only with its flag, and maps its inputs.
#[tokio::test]
async fn fault_injection_route_needs_its_flag() {
    let (_core, _handler, off) = app();
    assert!(!RestFlags::default().fault_injection);
    assert!(!RestFlags::all().fault_injection);
    let (status, _) = call(&off, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&off, Method::POST, "/debug/fault/panic/m1", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "off by default");

    let core = Arc::new(Core::default());
    let handler = Arc::new(Colibri2Handler::new(core, HandlerConfig::default()));
    let flags = RestFlags {
        fault_injection: true,
        ..RestFlags::all()
    };
    let router = router(RestState::new(handler).with_flags(flags));
    let (status, _) = call(&router, Method::POST, "/colibri/v2/conferences", CREATE).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&router, Method::POST, "/debug/fault/panic/nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(&router, Method::POST, "/debug/fault/panic/m1?on=elsewhere", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(&router, Method::POST, "/debug/fault/panic/m1?on=timer", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"armed":true}"#));
    // The fake core does not panic: a command-site injection that did not panic is a 500.
    let (status, body) = call(&router, Method::POST, "/debug/fault/panic/m1", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
}

/// Robustness case 40: a known route with the wrong method is 405, and changes nothing.
#[tokio::test]
async fn wrong_method_is_405() {
    let (_core, handler, router) = app();
    for (method, path) in [
        (Method::DELETE, "/colibri/v2/conferences"),
        (Method::PUT, "/colibri/v2/conferences"),
        (Method::POST, "/about/health"),
        (Method::POST, "/about/version"),
        (Method::DELETE, "/colibri/stats"),
    ] {
        let (status, text) = call(&router, method.clone(), path, CREATE).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {text}");
    }
    assert!(!handler.has_conference("m1").await, "nothing was created");
}
