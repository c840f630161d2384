//! The private HTTP API (media.md §8.2): Colibri2 over JSON, health, version, stats,
//! Prometheus metrics, drain, shutdown and debug dumps, as JVB serves them on port 8080.
//!
//! Every body is bounded ([`BODY_LIMIT`]); malformed JSON is a 400 with the parser's message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::colibri2::handler::EndpointInfo;
use crate::colibri2::{Colibri2Error, Colibri2Handler, ConferenceInfo};
use crate::config::RestSection;
use crate::memory::{MemoryMonitor, MemoryReading};
use crate::ops::{Ops, ShutdownState};

mod metrics;
pub use metrics::{metric_names, render_metrics, MetricsFormat};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1 << 20;

/// `Ok(())` when healthy, else the reason (answered as 500).
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// More flat stats merged into `/colibri/stats` (drain, shutdown, XMPP state, stress, …).
pub type ExtraStats = Arc<dyn Fn() -> Map<String, Value> + Send + Sync>;

/// Which routes exist (JVB's `videobridge.rest.*.enabled` flags). A disabled route is a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestFlags {
    pub colibri: bool,
    pub health: bool,
    pub version: bool,
    pub stats: bool,
    pub prometheus: bool,
    pub drain: bool,
    /// Needs `colibri` too, as in JVB.
    pub shutdown: bool,
    pub debug: bool,
    /// `POST /debug/fault/panic/{meeting_id}` (tests only; `[rest] fault_injection`).
    pub fault_injection: bool,
}

impl RestFlags {
    pub fn from_config(c: &RestSection) -> Self {
        RestFlags {
            colibri: c.colibri_enabled,
            health: c.health_enabled,
            version: c.version_enabled,
            stats: c.stats_enabled,
            prometheus: c.prometheus_enabled,
            drain: c.drain_enabled,
            shutdown: c.shutdown_enabled,
            debug: c.debug_enabled,
            fault_injection: c.fault_injection,
        }
    }

    /// Everything on, shutdown included (tests); fault injection stays off.
    pub fn all() -> Self {
        RestFlags {
            colibri: true,
            health: true,
            version: true,
            stats: true,
            prometheus: true,
            drain: true,
            shutdown: true,
            debug: true,
            fault_injection: false,
        }
    }
}

impl Default for RestFlags {
    fn default() -> Self {
        Self::from_config(&RestSection::default())
    }
}

/// `/colibri/stats` as last computed, and when.
type CachedStats = (Instant, Map<String, Value>);

/// What the routes need.
#[derive(Clone)]
pub struct RestState {
    pub colibri: Arc<Colibri2Handler>,
    pub ops: Arc<Ops>,
    pub health: HealthCheck,
    pub version: String,
    pub extra_stats: Option<ExtraStats>,
    pub flags: RestFlags,
    /// `/colibri/stats` is recomputed at most this often (0: every request).
    pub stats_interval: Duration,
    stats_cache: Arc<Mutex<Option<CachedStats>>>,
    /// Memory-pressure shedding (`memory.rs`): health 503 and stress 1.0 while it sheds.
    pub memory: Option<Arc<MemoryMonitor>>,
    /// Memory held by `POST /debug/fault/ballast` (fault injection only).
    ballast: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RestState {
    /// Healthy by default; version = this crate's; default flags; stats computed per request;
    /// its own [`Ops`] sharing the handler's graceful-shutdown flag.
    pub fn new(colibri: Arc<Colibri2Handler>) -> Self {
        let ops = Ops::new(colibri.graceful_shutdown_flag(), false, false);
        RestState {
            colibri,
            ops,
            health: Arc::new(|| Ok(())),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extra_stats: None,
            flags: RestFlags::default(),
            stats_interval: Duration::ZERO,
            stats_cache: Arc::new(Mutex::new(None)),
            memory: None,
            ballast: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn with_health(mut self, health: HealthCheck) -> Self {
        self.health = health;
        self
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    pub fn with_extra_stats(mut self, extra: ExtraStats) -> Self {
        self.extra_stats = Some(extra);
        self
    }

    pub fn with_ops(mut self, ops: Arc<Ops>) -> Self {
        self.ops = ops;
        self
    }

    pub fn with_flags(mut self, flags: RestFlags) -> Self {
        self.flags = flags;
        self
    }

    pub fn with_stats_interval(mut self, every: Duration) -> Self {
        self.stats_interval = every;
        self
    }

    pub fn with_memory(mut self, memory: Arc<MemoryMonitor>) -> Self {
        self.memory = Some(memory);
        self
    }
}

/// The router for the private HTTP server. Disabled routes are not registered (404).
pub fn router(state: RestState) -> Router {
    let f = state.flags;
    let mut r = Router::new();
    if f.colibri {
        r = r
            .route("/colibri/v2/conferences", post(post_conference))
            .route("/colibri/v2/conferences/{meeting_id}", patch(patch_conference));
    }
    if f.health {
        r = r.route("/about/health", get(health));
    }
    if f.version {
        r = r.route("/about/version", get(version));
    }
    if f.stats {
        r = r.route("/colibri/stats", get(stats));
    }
    if f.prometheus {
        r = r.route("/metrics", get(metrics_route));
    }
    if f.drain {
        r = r
            .route("/colibri/drain", get(drain_get))
            .route("/colibri/drain/enable", post(drain_enable))
            .route("/colibri/drain/disable", post(drain_disable));
    }
    if f.shutdown && f.colibri {
        r = r.route("/colibri/shutdown", post(shutdown));
    }
    if f.debug {
        r = r
            .route("/debug", get(debug_bridge))
            .route("/debug/{conference}", get(debug_conference))
            .route("/debug/{conference}/{endpoint}", get(debug_endpoint));
    }
    if f.fault_injection {
        r = r
            .route("/debug/fault/panic/{meeting_id}", post(fault_panic))
            .route("/debug/fault/ballast", post(ballast_add).delete(ballast_free));
    }
    r.layer(DefaultBodyLimit::max(BODY_LIMIT)).with_state(state)
}

/// Fault injection (robustness.md case 57): the media core panics while processing the
/// conference, `?on=command` (default: in this request; 200 with the caught panic's error),
/// `?on=timer` (its next timer pass) or `?on=datagram` (the next datagram routed to it; both
/// 200 `{"armed":true}`). 404 for an unknown meeting-id, 400 for another `on`.
async fn fault_panic(
    State(state): State<RestState>,
    Path(meeting_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    use sfu::control::FaultSite;
    let site = match query.as_deref().and_then(|q| q.strip_prefix("on=")) {
        None | Some("command") => FaultSite::Command,
        Some("timer") => FaultSite::Timer,
        Some("datagram") => FaultSite::Datagram,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("on={other:?}: expected command, timer or datagram") })),
            )
                .into_response()
        }
    };
    let Some(conf) = state
        .colibri
        .conferences()
        .await
        .into_iter()
        .find(|c| c.meeting_id == meeting_id)
        .map(|c| c.id)
    else {
        return error_response(&Colibri2Error::conference_not_found(&meeting_id));
    };
    tracing::warn!(%meeting_id, %conf, ?site, "fault injection: panic requested");
    match state
        .colibri
        .core()
        .command(sfu::Command::InjectPanic { conf, site })
        .await
    {
        Err(sfu::CommandError::Internal(msg)) if site == FaultSite::Command => {
            Json(json!({ "panicked": true, "error": msg })).into_response()
        }
        Ok(_) if site != FaultSite::Command => Json(json!({ "armed": true })).into_response(),
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "panicked": false, "error": format!("{other:?}") })),
        )
            .into_response(),
    }
}

/// Largest single ballast request, MiB.
const BALLAST_MAX_MIB: usize = 4096;

/// Fault injection for memory pressure (robustness.md case 51): `POST /debug/fault/ballast?mib=N`
/// allocates N MiB, writes every byte (so it is resident) and keeps it until
/// `DELETE /debug/fault/ballast` frees all of it. Answers `{"ballast_mib": total}`.
async fn ballast_add(State(state): State<RestState>, RawQuery(query): RawQuery) -> Response {
    let mib = query
        .as_deref()
        .and_then(|q| q.strip_prefix("mib="))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=BALLAST_MAX_MIB).contains(n));
    let Some(mib) = mib else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("expected ?mib=N with N from 1 to {BALLAST_MAX_MIB}") })),
        )
            .into_response();
    };
    let mut chunk = Vec::new();
    if chunk.try_reserve_exact(mib << 20).is_err() {
        return (
            StatusCode::INSUFFICIENT_STORAGE,
            Json(json!({ "error": format!("could not allocate {mib} MiB") })),
        )
            .into_response();
    }
    chunk.resize(mib << 20, 0x5a);
    let Ok(mut held) = state.ballast.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    held.push(chunk);
    let total: usize = held.iter().map(|c| c.len() >> 20).sum();
    tracing::warn!(mib, total, "fault injection: memory ballast added");
    Json(json!({ "ballast_mib": total })).into_response()
}

async fn ballast_free(State(state): State<RestState>) -> Response {
    let Ok(mut held) = state.ballast.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // Each chunk is a separate mapping (far above malloc's mmap threshold), so freeing it
    // returns the memory to the system at once.
    held.clear();
    held.shrink_to_fit();
    tracing::warn!("fault injection: memory ballast freed");
    Json(json!({ "ballast_mib": 0 })).into_response()
}

async fn post_conference(State(state): State<RestState>, body: Bytes) -> Response {
    match state.colibri.handle_json(&body, None).await {
        Ok(resp) => Json(resp).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn patch_conference(State(state): State<RestState>, Path(meeting_id): Path<String>, body: Bytes) -> Response {
    if !state.colibri.has_conference(&meeting_id).await {
        return error_response(&Colibri2Error::conference_not_found(&meeting_id));
    }
    match state.colibri.handle_json(&body, Some(&meeting_id)).await {
        Ok(resp) => Json(resp).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The HTTP form of a Colibri2 error: the status of the condition and a JSON body.
fn error_response(e: &Colibri2Error) -> Response {
    let status = StatusCode::from_u16(e.condition.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({ "error": e.condition.as_str(), "message": e.text });
    if let Some(reason) = e.reason {
        body["reason"] = json!(reason.as_str());
    }
    if let Some(id) = &e.endpoint_id {
        body["endpoint"] = json!(id);
    }
    (status, Json(body)).into_response()
}

/// 200 when healthy; 500 with the reason when the bridge is broken; 503 with the reason while
/// it sheds load under memory pressure (it works, but should get no new work: robustness.md
/// case 51). The XMPP health-check IQ stays successful while shedding: Jicofo treats a failed
/// check as a dead bridge and moves every conference away, while stress 1.0 in the presence
/// only stops it from choosing this bridge for new ones.
async fn health(State(state): State<RestState>) -> Response {
    if let Err(reason) = (state.health)() {
        return (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response();
    }
    if let Some(reason) = state.memory.as_ref().and_then(|m| m.shedding_reason()) {
        return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "").into_response()
}

async fn version(State(state): State<RestState>) -> Response {
    Json(json!({ "name": "palim", "version": state.version, "os": os_name() })).into_response()
}

/// JVB reports Java's `os.name` (`Linux`).
fn os_name() -> String {
    let os = std::env::consts::OS;
    match os {
        "linux" => "Linux".to_owned(),
        "macos" => "Mac OS X".to_owned(),
        "windows" => "Windows".to_owned(),
        other => other.to_owned(),
    }
}

/// Load as JVB's `stress_level`: local endpoints against a nominal 1,000 per bridge (until
/// the core reports a packet rate).
pub fn stress_level(endpoints: usize) -> f64 {
    endpoints as f64 / 1000.0
}

/// The stress reported in stats, metrics and presence: 1.0 while shedding under memory
/// pressure (so Jicofo picks other bridges), else [`stress_level`].
pub fn reported_stress(endpoints: usize, memory_shedding: bool) -> f64 {
    if memory_shedding {
        1.0
    } else {
        stress_level(endpoints)
    }
}

/// Everything `/colibri/stats` and `/metrics` report, read once.
pub struct Snapshot {
    pub counts: crate::colibri2::HandlerCounts,
    pub core: sfu::Stats,
    pub state: ShutdownState,
    pub drain: bool,
    pub healthy: bool,
    pub xmpp: crate::ops::XmppCounts,
    pub started: SystemTime,
    /// Configured limits and their refusal counts (robustness.md §2.5).
    pub limits: crate::colibri2::LimitReport,
    /// The last memory sample (all zero without a monitor).
    pub memory: MemoryReading,
}

impl Snapshot {
    pub async fn take(state: &RestState) -> Self {
        Snapshot {
            counts: state.colibri.counts(),
            core: state.colibri.core().stats().await,
            state: state.ops.state(),
            drain: state.ops.drain(),
            healthy: (state.health)().is_ok(),
            xmpp: state.ops.xmpp(),
            started: state.ops.started,
            limits: state.colibri.limits(),
            memory: state.memory.as_ref().map(|m| m.reading()).unwrap_or_default(),
        }
    }
}

/// `/colibri/stats`: JVB's flat key names (media.md §8.3) plus Palim's own counters.
pub fn stats_map(s: &Snapshot, version: &str) -> Map<String, Value> {
    let counts = &s.counts;
    let core = &s.core;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    // JVB's names (media.md §8.3).
    put("conferences", json!(counts.conferences));
    put("endpoints", json!(counts.endpoints));
    put("participants", json!(counts.endpoints));
    put("local_endpoints", json!(counts.endpoints));
    put("octo_endpoints", json!(0));
    put("octo_conferences", json!(0));
    put("visitors", json!(counts.visitors));
    put("largest_conference", json!(counts.largest_conference));
    put("total_conferences_created", json!(counts.total_conferences_created));
    put("total_conferences_completed", json!(counts.total_conferences_completed));
    put("total_participants", json!(counts.total_participants));
    put("total_visitors", json!(counts.total_visitors));
    put("total_relays", json!(0));
    put("total_bytes_received", json!(core.bytes_received));
    put("total_bytes_sent", json!(core.bytes_sent));
    put(
        "total_packets_received",
        json!(core.rtp_packets_received + core.rtcp_packets_received),
    );
    put(
        "total_packets_sent",
        json!(core.rtp_packets_sent + core.rtcp_packets_sent),
    );
    put("dtls_failed_endpoints", json!(core.dtls_failures));
    put("dtls_fingerprint_mismatch", json!(core.dtls_fingerprint_mismatches));
    put("total_ice_failed", json!(core.ice_failures));
    put("endpoints_ice_failed", json!(core.ice_failures));
    put("ice_rebinds", json!(core.ice_rebinds));
    put(
        "stress_level",
        json!(reported_stress(counts.endpoints, s.memory.shedding)),
    );
    put("average_participant_stress", json!(0.01));
    put("graceful_shutdown", json!(s.state == ShutdownState::GracefulShutdown));
    put("shutting_down", json!(s.state == ShutdownState::ShuttingDown));
    put("drain", json!(s.drain));
    put("healthy", json!(s.healthy));
    put("version", json!(version));
    put("current_timestamp", json!(utc_timestamp(SystemTime::now())));
    put("muc_clients_configured", json!(s.xmpp.clients_configured));
    put("muc_clients_connected", json!(s.xmpp.clients_connected));
    put("mucs_configured", json!(s.xmpp.mucs_configured));
    put("mucs_joined", json!(s.xmpp.mucs_joined));
    // Palim's own.
    put("shutdown_state", json!(s.state.as_str()));
    put("xmpp_disconnects", json!(s.xmpp.disconnects));
    put("endpoints_connected", json!(core.endpoints_connected));
    put("rtp_packets_received", json!(core.rtp_packets_received));
    put("rtp_packets_sent", json!(core.rtp_packets_sent));
    put("rtcp_packets_received", json!(core.rtcp_packets_received));
    put("rtcp_packets_sent", json!(core.rtcp_packets_sent));
    put("keyframe_requests_forwarded", json!(core.keyframe_requests_forwarded));
    put("keyframe_requests_suppressed", json!(core.keyframe_requests_suppressed));
    put("nacks_sent", json!(core.nacks_sent));
    put("retransmissions", json!(core.retransmissions));
    put("drops_total", json!(core.drops_total()));
    put("task_panics", json!(core.task_panics));
    put("memory_rss_bytes", json!(s.memory.rss_bytes));
    put("memory_limit_bytes", json!(s.memory.limit_bytes.unwrap_or(0)));
    put("memory_shedding", json!(s.memory.shedding));
    for (reason, n) in &core.drops {
        put(&format!("drops_{reason}"), json!(n));
    }
    m
}

async fn stats(State(state): State<RestState>) -> Response {
    let fresh = |at: &Instant| !state.stats_interval.is_zero() && at.elapsed() < state.stats_interval;
    let cached = state
        .stats_cache
        .lock()
        .ok()
        .and_then(|c| c.as_ref().filter(|(at, _)| fresh(at)).map(|(_, m)| m.clone()));
    let m = match cached {
        Some(m) => m,
        None => {
            let snap = Snapshot::take(&state).await;
            let mut m = stats_map(&snap, &state.version);
            if let Some(extra) = &state.extra_stats {
                m.extend(extra());
            }
            if let Ok(mut c) = state.stats_cache.lock() {
                *c = Some((Instant::now(), m.clone()));
            }
            m
        }
    };
    Json(Value::Object(m)).into_response()
}

async fn metrics_route(State(state): State<RestState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = MetricsFormat::negotiate(accept);
    let snap = Snapshot::take(&state).await;
    let body = render_metrics(&snap, format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn drain_get(State(state): State<RestState>) -> Response {
    Json(json!({ "drain": state.ops.drain() })).into_response()
}

async fn drain_enable(State(state): State<RestState>) -> Response {
    state.ops.set_drain(true);
    StatusCode::OK.into_response()
}

async fn drain_disable(State(state): State<RestState>) -> Response {
    state.ops.set_drain(false);
    StatusCode::OK.into_response()
}

/// `POST /colibri/shutdown` with `{"graceful-shutdown": true|false}` (the value may be a
/// string, as JVB accepts).
async fn shutdown(State(state): State<RestState>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")).into_response(),
    };
    let graceful = match v.get("graceful-shutdown") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        None => return (StatusCode::BAD_REQUEST, "expected {\"graceful-shutdown\": true|false}").into_response(),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("graceful-shutdown must be true or false, not {other}"),
            )
                .into_response()
        }
    };
    tracing::info!(graceful, "shutdown requested over REST");
    state.ops.request_shutdown(graceful);
    StatusCode::OK.into_response()
}

fn endpoint_json(e: &EndpointInfo) -> Value {
    json!({
        "id": e.name,
        "local_id": e.id.to_string(),
        "stats_id": e.stats_id,
        "visitor": e.visitor,
        "sctp": e.sctp,
        "capabilities": e.capabilities,
        "force_mute": { "audio": e.force_mute.audio, "video": e.force_mute.video },
        "initial_last_n": e.initial_last_n,
        "extmap_allow_mixed": e.extmap_allow_mixed,
        "has_audio_payload_types": e.has_audio_pt,
        "has_video_payload_types": e.has_video_pt,
        "source_names": e.source_names,
    })
}

fn conference_json(c: &ConferenceInfo) -> Value {
    let mut eps = Map::new();
    for e in &c.endpoints {
        eps.insert(e.name.clone(), endpoint_json(e));
    }
    json!({
        "meeting_id": c.meeting_id,
        "local_id": c.id.to_string(),
        "name": c.name,
        "feedback_ssrcs": { "audio": c.feedback_ssrcs.0 .0, "video": c.feedback_ssrcs.1 .0 },
        "endpoints": eps,
    })
}

/// A conference by meeting id, or by Palim's local id.
async fn find_conference(state: &RestState, key: &str) -> Option<ConferenceInfo> {
    state
        .colibri
        .conferences()
        .await
        .into_iter()
        .find(|c| c.meeting_id == key || c.id.to_string() == key)
}

async fn debug_bridge(State(state): State<RestState>) -> Response {
    let snap = Snapshot::take(&state).await;
    let mut confs = Map::new();
    for c in state.colibri.conferences().await {
        confs.insert(c.meeting_id.clone(), conference_json(&c));
    }
    let health = match (state.health)() {
        Ok(()) => Value::Null,
        Err(e) => json!(e),
    };
    Json(json!({
        "shutdown_state": snap.state.as_str(),
        "drain": snap.drain,
        "healthy": snap.healthy,
        "health_failure": health,
        "addresses": state.ops.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "time": utc_timestamp(SystemTime::now()),
        "stats": Value::Object(stats_map(&snap, &state.version)),
        "endpoint_bwe": snap.core.endpoint_bwe.iter().map(|(n, b)| (n.clone(), json!(b))).collect::<Map<_, _>>(),
        "conferences": confs,
    }))
    .into_response()
}

async fn debug_conference(State(state): State<RestState>, Path(conference): Path<String>) -> Response {
    match find_conference(&state, &conference).await {
        Some(c) => Json(conference_json(&c)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no conference {conference}")).into_response(),
    }
}

async fn debug_endpoint(
    State(state): State<RestState>,
    Path((conference, endpoint)): Path<(String, String)>,
) -> Response {
    let Some(c) = find_conference(&state, &conference).await else {
        return (StatusCode::NOT_FOUND, format!("no conference {conference}")).into_response();
    };
    match c
        .endpoints
        .iter()
        .find(|e| e.name == endpoint || e.id.to_string() == endpoint)
    {
        Some(e) => Json(endpoint_json(e)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no endpoint {endpoint} in {conference}")).into_response(),
    }
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC, as JVB's `current_timestamp`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, da) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{da:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
