//! The private HTTP API (media.md §8.2): Colibri2 over JSON, health, version and stats, as JVB
//! serves them on port 8080.
//!
//! Every body is bounded ([`BODY_LIMIT`]); malformed JSON is a 400 with the parser's message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::colibri2::{Colibri2Error, Colibri2Handler};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1 << 20;

/// `Ok(())` when healthy, else the reason (answered as 500).
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// More flat stats merged into `/colibri/stats` (drain, shutdown, XMPP state, stress, …).
pub type ExtraStats = Arc<dyn Fn() -> Map<String, Value> + Send + Sync>;

/// What the routes need.
#[derive(Clone)]
pub struct RestState {
    pub colibri: Arc<Colibri2Handler>,
    pub health: HealthCheck,
    pub version: String,
    pub extra_stats: Option<ExtraStats>,
}

impl RestState {
    /// Healthy by default; version = this crate's.
    pub fn new(colibri: Arc<Colibri2Handler>) -> Self {
        RestState {
            colibri,
            health: Arc::new(|| Ok(())),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extra_stats: None,
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
}

/// The router for the private HTTP server.
pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/colibri/v2/conferences", post(post_conference))
        .route("/colibri/v2/conferences/{meeting_id}", patch(patch_conference))
        .route("/about/health", get(health))
        .route("/about/version", get(version))
        .route("/colibri/stats", get(stats))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
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

async fn health(State(state): State<RestState>) -> Response {
    match (state.health)() {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "").into_response(),
        Err(reason) => (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response(),
    }
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

async fn stats(State(state): State<RestState>) -> Response {
    let counts = state.colibri.counts();
    let core = state.colibri.core().stats().await;
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
    put("total_ice_failed", json!(core.ice_failures));
    put(
        "graceful_shutdown",
        json!(state.colibri.graceful_shutdown_flag().load(Ordering::Relaxed)),
    );
    put("healthy", json!((state.health)().is_ok()));
    put("version", json!(state.version));
    put("current_timestamp", json!(utc_timestamp(SystemTime::now())));
    // Palim's own.
    put("endpoints_connected", json!(core.endpoints_connected));
    put("rtp_packets_received", json!(core.rtp_packets_received));
    put("rtp_packets_sent", json!(core.rtp_packets_sent));
    put("rtcp_packets_received", json!(core.rtcp_packets_received));
    put("rtcp_packets_sent", json!(core.rtcp_packets_sent));
    put("drops_total", json!(core.drops_total()));
    for (reason, n) in &core.drops {
        put(&format!("drops_{reason}"), json!(n));
    }
    if let Some(extra) = &state.extra_stats {
        m.extend(extra());
    }
    Json(Value::Object(m)).into_response()
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
