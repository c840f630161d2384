//! The colibri-ws bridge channel (media.md §2.1): one websocket per endpoint on the public
//! HTTP server, `GET /colibri-ws/{server-id}/{conference}/{endpoint}?pwd=…`.
//!
//! ```text
//!  browser ──text frame──▶ socket task ──bounded queue──▶ forwarder ──Command::BridgeChannelMessage──▶ core
//!  browser ◀──text frame── socket task ◀──bounded queue── WsHub::send ◀── Event::BridgeChannelSend ── core
//! ```
//!
//! * Admission: a wrong server-id is 404 "server ID mismatch"; an unknown conference or
//!   endpoint and a wrong or missing `pwd` are the same 403 "authentication failed", so the
//!   answer does not tell which ids exist.
//! * Both directions are bounded per socket ([`IN_QUEUE`], [`OUT_QUEUE`]): a client flooding
//!   messages or a socket too slow to read loses messages (counted), and neither the core nor
//!   the event router ever waits for a socket. Messages over [`MAX_MESSAGE`] close the socket
//!   with 1009.
//! * A second socket for the same endpoint replaces the first (closed 1000 "replaced"); the
//!   endpoint's expiry closes it with 1001 "endpoint closed" ([`WsHub::endpoint_gone`]).
//! * Keepalive: a ping when nothing was sent for the keepalive interval, and close (1001
//!   "idle timeout") when nothing at all arrived for the idle timeout.
//! * The core learns that the socket opened or went away
//!   (`Command::BridgeChannelWebSocket`); those commands are serialised bridge-wide so a
//!   replaced socket's "closed" can never overtake its successor's "opened".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use sfu::{Command, ConferenceId, EndpointId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::colibri2::{Colibri2Handler, EndpointGoneHook, WebSocketTarget};
use crate::config::WebSocketsSection;

/// Largest accepted message (and frame). Larger ones close the socket with 1009, as Jetty's
/// default text-message limit does for JVB.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Bytes asked of the socket per read. tungstenite zero-fills this much of its buffer before
/// every read (including the one that finds the socket empty); its 128 KiB default made
/// `memset` 45 % of the bridge's CPU under a 10^4 msg/s flood (robustness.md case 37) and held
/// 128 KiB per socket. Bridge-channel messages are a few hundred bytes; a larger one takes
/// more reads.
const READ_BUFFER: usize = 4 * 1024;
/// Messages from one socket waiting for the core (JVB: a 50-entry queue per endpoint). More
/// are dropped and counted.
pub const IN_QUEUE: usize = 50;
/// Messages for one socket waiting to be written. More are dropped and counted.
pub const OUT_QUEUE: usize = 256;
/// A socket that does not take a frame within this long is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close reply after we close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Bound on each command to the core.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Close codes (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const NO_STATUS: u16 = 1005;
    pub const ABNORMAL: u16 = 1006;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// The socket-level settings, from `[websockets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    pub server_id: String,
    /// `None`: no keepalive pings.
    pub keepalive: Option<Duration>,
    pub idle_timeout: Duration,
}

impl WsSettings {
    pub fn from_config(c: &WebSocketsSection) -> Self {
        WsSettings {
            server_id: c.server_id.clone(),
            keepalive: c.send_keepalive_pings.then_some(c.keepalive_interval),
            idle_timeout: c.idle_timeout,
        }
    }
}

/// Why the server closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const REPLACED: CloseReason = CloseReason {
        code: close_code::NORMAL,
        reason: "replaced",
    };
    pub const ENDPOINT_CLOSED: CloseReason = CloseReason {
        code: close_code::GOING_AWAY,
        reason: "endpoint closed",
    };
    pub const IDLE: CloseReason = CloseReason {
        code: close_code::GOING_AWAY,
        reason: "idle timeout",
    };
    pub const TOO_BIG: CloseReason = CloseReason {
        code: close_code::TOO_BIG,
        reason: "message too big",
    };
}

/// Counters of the websocket layer (monotonic).
#[derive(Debug, Default)]
pub struct WsStats {
    /// Sockets accepted (after authentication).
    pub connections: AtomicU64,
    /// Upgrades answered 404 "server ID mismatch".
    pub refused_server_id: AtomicU64,
    /// Upgrades answered 403 "authentication failed".
    pub refused_auth: AtomicU64,
    /// Sockets closed because a newer one for the same endpoint arrived.
    pub replaced: AtomicU64,
    /// Text messages received / handed to the core.
    pub messages_received: AtomicU64,
    /// Text messages written to sockets.
    pub messages_sent: AtomicU64,
    /// Received messages dropped: the socket's queue to the core was full.
    pub received_dropped: AtomicU64,
    /// Received messages dropped at the socket, over the endpoint's bridge-channel rate
    /// (`sfu::receiver::CHANNEL_RATE`, burst as many): a flood costs frame decoding only, not a
    /// copy, a core command and a JSON parse per message (robustness.md case 37). The core
    /// applies the same limit to what passes (and to the SCTP data channel).
    pub rate_limited: AtomicU64,
    /// Received messages the core refused (its own counters say why).
    pub core_refused: AtomicU64,
    /// Binary messages (not part of the protocol; ignored).
    pub binary_ignored: AtomicU64,
    /// Messages over [`MAX_MESSAGE`] (socket closed 1009).
    pub too_large: AtomicU64,
    /// Messages for an endpoint without a socket.
    pub send_no_socket: AtomicU64,
    /// Messages dropped because the socket's send queue was full.
    pub send_dropped: AtomicU64,
    pub pings_sent: AtomicU64,
    pub idle_timeouts: AtomicU64,
    /// Closes with 1000, 1001 or 1005 (JVB `colibri_web_socket_close_normal`).
    pub close_normal: AtomicU64,
    /// Any other close, or a connection lost without a close frame (1006).
    pub close_abnormal: AtomicU64,
}

impl WsStats {
    /// Flat `colibri_web_socket_*` entries for `/colibri/stats`.
    pub fn to_map(&self) -> Map<String, Value> {
        let get = |c: &AtomicU64| json!(c.load(Ordering::Relaxed));
        let mut m = Map::new();
        for (k, c) in [
            ("connections", &self.connections),
            ("refused_server_id", &self.refused_server_id),
            ("refused_auth", &self.refused_auth),
            ("replaced", &self.replaced),
            ("messages_received", &self.messages_received),
            ("messages_sent", &self.messages_sent),
            ("received_dropped", &self.received_dropped),
            ("rate_limited", &self.rate_limited),
            ("core_refused", &self.core_refused),
            ("binary_ignored", &self.binary_ignored),
            ("too_large", &self.too_large),
            ("send_no_socket", &self.send_no_socket),
            ("send_dropped", &self.send_dropped),
            ("pings_sent", &self.pings_sent),
            ("idle_timeouts", &self.idle_timeouts),
            ("close_normal", &self.close_normal),
            ("close_abnormal", &self.close_abnormal),
        ] {
            m.insert(format!("colibri_web_socket_{k}"), get(c));
        }
        m
    }

    fn count_close(&self, code: u16) {
        let counter = if is_normal_close(code) {
            &self.close_normal
        } else {
            &self.close_abnormal
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// 1000, 1001 and 1005 are normal closes (media.md §2.1).
pub fn is_normal_close(code: u16) -> bool {
    matches!(
        code,
        close_code::NORMAL | close_code::GOING_AWAY | close_code::NO_STATUS
    )
}

/// The open sockets, by endpoint. Shared by the socket tasks, the event router
/// ([`WsHub::send`]) and the Colibri2 handler's expiry hook ([`WsHub::endpoint_gone`]).
pub struct WsHub {
    /// A plain mutex: held only for map operations, never across an await.
    sockets: Mutex<HashMap<(ConferenceId, EndpointId), Slot>>,
    /// Serialises "opened"/"closed" commands to the core with the registry changes.
    lifecycle: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    pub stats: WsStats,
}

struct Slot {
    id: u64,
    out: mpsc::Sender<String>,
    close: Option<oneshot::Sender<CloseReason>>,
}

impl WsHub {
    pub fn new() -> Arc<Self> {
        Arc::new(WsHub {
            sockets: Mutex::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            stats: WsStats::default(),
        })
    }

    /// Queue `text` for the endpoint's socket (`Event::BridgeChannelSend`). Never waits: with no
    /// socket, or a full queue, the message is dropped and counted.
    pub fn send(&self, conf: ConferenceId, ep: EndpointId, text: String) {
        let sockets = self.lock();
        match sockets.get(&(conf, ep)) {
            None => {
                self.stats.send_no_socket.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%conf, %ep, "no websocket for a bridge-channel message");
            }
            Some(slot) => {
                if slot.out.try_send(text).is_err() {
                    self.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%conf, %ep, "websocket send queue full; message dropped");
                }
            }
        }
    }

    /// The endpoint is gone: close its socket with 1001 "endpoint closed".
    pub fn endpoint_gone(&self, conf: ConferenceId, ep: EndpointId) {
        let slot = self.lock().remove(&(conf, ep));
        if let Some(mut slot) = slot {
            if let Some(close) = slot.close.take() {
                let _ = close.send(CloseReason::ENDPOINT_CLOSED);
            }
        }
    }

    /// The hook to put in [`crate::colibri2::HandlerConfig::endpoint_gone`].
    pub fn endpoint_gone_hook(self: &Arc<Self>) -> EndpointGoneHook {
        let hub = Arc::downgrade(self);
        EndpointGoneHook(Arc::new(move |conf, ep| {
            if let Some(hub) = hub.upgrade() {
                hub.endpoint_gone(conf, ep);
            }
        }))
    }

    /// Whether the endpoint has a socket now.
    pub fn is_connected(&self, conf: ConferenceId, ep: EndpointId) -> bool {
        self.lock().contains_key(&(conf, ep))
    }

    /// Make `out`/`close` the endpoint's socket; an older one is told to close ("replaced").
    fn register(
        &self,
        conf: ConferenceId,
        ep: EndpointId,
        out: mpsc::Sender<String>,
        close: oneshot::Sender<CloseReason>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self.lock().insert(
            (conf, ep),
            Slot {
                id,
                out,
                close: Some(close),
            },
        );
        if let Some(mut old) = old {
            self.stats.replaced.fetch_add(1, Ordering::Relaxed);
            if let Some(close) = old.close.take() {
                let _ = close.send(CloseReason::REPLACED);
            }
        }
        id
    }

    /// Remove socket `id` if it is still the endpoint's; whether it was.
    fn unregister(&self, conf: ConferenceId, ep: EndpointId, id: u64) -> bool {
        let mut sockets = self.lock();
        if sockets.get(&(conf, ep)).is_some_and(|s| s.id == id) {
            sockets.remove(&(conf, ep));
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ConferenceId, EndpointId), Slot>> {
        // Nothing panics while holding it (map operations only); recover rather than spread a panic.
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct App {
    hub: Arc<WsHub>,
    colibri: Arc<Colibri2Handler>,
    settings: Arc<WsSettings>,
}

/// The public HTTP server's routes: `/colibri-ws/…` and `/colibri-relay-ws/…` (relays are not
/// supported, so every relay socket fails authentication once the server-id matches).
pub fn router(hub: Arc<WsHub>, colibri: Arc<Colibri2Handler>, settings: WsSettings) -> Router {
    let app = App {
        hub,
        colibri,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/colibri-ws/{server_id}/{conference}/{endpoint}", get(endpoint_socket))
        .route("/colibri-relay-ws/{server_id}/{conference}/{relay}", get(relay_socket))
        .with_state(app)
}

async fn endpoint_socket(
    State(app): State<App>,
    Path((server_id, conference, endpoint)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if server_id != app.settings.server_id {
        app.hub.stats.refused_server_id.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_FOUND, "server ID mismatch").into_response();
    }
    let target = match conference.parse::<u32>() {
        Ok(conf) => app.colibri.web_socket_target(ConferenceId(conf), &endpoint).await,
        Err(_) => None,
    };
    let authorised = match (&target, password_of(query.as_deref())) {
        (Some(t), Some(pwd)) => constant_time_eq(t.password.as_bytes(), pwd.as_bytes()),
        _ => false,
    };
    let Some(target) = target.filter(|_| authorised) else {
        app.hub.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%conference, %endpoint, "colibri-ws authentication failed");
        return forbidden();
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "colibri-ws upgrade failed"))
        .on_upgrade(move |socket| run_socket(socket, target, app))
}

async fn relay_socket(
    State(app): State<App>,
    Path((server_id, _conference, _relay)): Path<(String, String, String)>,
) -> Response {
    if server_id != app.settings.server_id {
        app.hub.stats.refused_server_id.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_FOUND, "server ID mismatch").into_response();
    }
    app.hub.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
    forbidden()
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "authentication failed").into_response()
}

/// JVB parses only the simple form: the whole query is `pwd=<password>`.
fn password_of(query: Option<&str>) -> Option<&str> {
    query?.strip_prefix("pwd=")
}

/// Compare without an early exit, so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One accepted socket, from the upgrade to its close.
#[tracing::instrument(skip_all, fields(conf = %target.conf, ep = %target.ep))]
async fn run_socket(mut socket: WebSocket, target: WebSocketTarget, app: App) {
    let WebSocketTarget { conf, ep, .. } = target;
    let hub = app.hub.clone();
    let core = app.colibri.core().clone();
    hub.stats.connections.fetch_add(1, Ordering::Relaxed);

    // ServerHello goes first on a websocket, before the state the core re-sends (media.md §2.1).
    let mut hello = String::new();
    if sfu::bridge_channel::write_server_hello(&mut hello, Some(env!("CARGO_PKG_VERSION"))).is_ok() {
        if socket.send(Message::Text(hello.into())).await.is_err() {
            hub.stats.count_close(close_code::ABNORMAL);
            return;
        }
        hub.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUT_QUEUE);
    let (close_tx, mut close_rx) = oneshot::channel::<CloseReason>();
    let id = {
        let _order = hub.lifecycle.lock().await;
        let id = hub.register(conf, ep, out_tx, close_tx);
        let opened = tokio::time::timeout(
            COMMAND_TIMEOUT,
            core.command(Command::BridgeChannelWebSocket { conf, ep, open: true }),
        )
        .await;
        match opened {
            Ok(Ok(_)) => id,
            other => {
                // The endpoint vanished between admission and now, or the core is stuck.
                tracing::debug!(result = ?other.map(|r| r.map(|_| ())), "core refused the websocket");
                hub.unregister(conf, ep, id);
                drop(_order);
                close(&mut socket, &hub, CloseReason::ENDPOINT_CLOSED).await;
                return;
            }
        }
    };
    tracing::info!("colibri websocket connected");

    let (in_tx, in_rx) = mpsc::channel::<String>(IN_QUEUE);
    tokio::spawn(forward_to_core(in_rx, core.clone(), conf, ep, hub.clone()));

    let settings = app.settings.clone();
    let mut rate = sfu::receiver::MessageRate::default();
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let ended = loop {
        let idle_at = last_rx + settings.idle_timeout;
        let wake = match settings.keepalive {
            Some(k) => idle_at.min(last_tx + k),
            None => idle_at,
        };
        tokio::select! {
            biased;
            reason = &mut close_rx => {
                // Replaced or expired; a dropped sender (cannot happen while registered) also closes.
                let reason = reason.unwrap_or(CloseReason::ENDPOINT_CLOSED);
                break Ended::ByUs(reason);
            }
            msg = socket.recv() => {
                last_rx = Instant::now();
                match msg {
                    None => break Ended::Lost,
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            hub.stats.too_large.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!("websocket message over the size limit");
                            break Ended::ByUs(CloseReason::TOO_BIG);
                        }
                        tracing::debug!(error = %e, "websocket read failed");
                        break Ended::Lost;
                    }
                    Some(Ok(Message::Text(text))) => {
                        hub.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                        if !rate.allow(std::time::Instant::now()) {
                            hub.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        } else if in_tx.try_send(text.as_str().to_owned()).is_err() {
                            hub.stats.received_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        hub.stats.binary_ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Ended::ByPeer(frame.map_or(close_code::NO_STATUS, |f| f.code));
                    }
                    // Pings are answered by the protocol layer; both count as activity.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            Some(text) = out_rx.recv() => {
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
                    Ok(Ok(())) => {
                        last_tx = Instant::now();
                        hub.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break Ended::Lost,
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= idle_at {
                    hub.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    break Ended::ByUs(CloseReason::IDLE);
                }
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {
                        last_tx = now;
                        hub.stats.pings_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break Ended::Lost,
                }
            }
        }
    };
    drop(in_tx);

    match ended {
        Ended::ByUs(reason) => {
            tracing::info!(code = reason.code, reason = reason.reason, "closing colibri websocket");
            close(&mut socket, &hub, reason).await;
        }
        Ended::ByPeer(code) => {
            tracing::info!(code, "colibri websocket closed by the client");
            hub.stats.count_close(code);
            // Let the protocol layer flush its close reply.
            let _ = tokio::time::timeout(CLOSE_WAIT, socket.recv()).await;
        }
        Ended::Lost => {
            tracing::info!("colibri websocket lost");
            hub.stats.count_close(close_code::ABNORMAL);
        }
    }

    // Tell the core only if this socket was still the endpoint's (not replaced, not expired).
    let _order = hub.lifecycle.lock().await;
    if hub.unregister(conf, ep, id) {
        let closed = tokio::time::timeout(
            COMMAND_TIMEOUT,
            core.command(Command::BridgeChannelWebSocket { conf, ep, open: false }),
        )
        .await;
        if !matches!(closed, Ok(Ok(_))) {
            tracing::debug!("core did not take the websocket close (endpoint gone?)");
        }
    }
}

enum Ended {
    ByUs(CloseReason),
    ByPeer(u16),
    Lost,
}

/// Send our close frame and wait (bounded) for the client's reply.
async fn close(socket: &mut WebSocket, hub: &WsHub, reason: CloseReason) {
    hub.stats.count_close(reason.code);
    let frame = CloseFrame {
        code: reason.code,
        reason: reason.reason.into(),
    };
    if tokio::time::timeout(CLOSE_WAIT, socket.send(Message::Close(Some(frame))))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = socket.recv().await {} }).await;
}

/// The protocol layer's "message too long" (size limit), as opposed to a broken connection.
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        source = err.source();
    }
    false
}

/// Hands one socket's messages to the core, one at a time, in order. Ends when the socket does.
async fn forward_to_core(
    mut rx: mpsc::Receiver<String>,
    core: Arc<dyn crate::colibri2::MediaCore>,
    conf: ConferenceId,
    ep: EndpointId,
    hub: Arc<WsHub>,
) {
    while let Some(text) = rx.recv().await {
        let cmd = Command::BridgeChannelMessage { conf, ep, text };
        match tokio::time::timeout(COMMAND_TIMEOUT, core.command(cmd)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                hub.stats.core_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%conf, %ep, error = %e, "core refused a websocket message");
            }
            Err(_) => {
                hub.stats.core_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%conf, %ep, "core did not take a websocket message in time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ConferenceId = ConferenceId(7);
    const E: EndpointId = EndpointId(3);

    /// The password check accepts only the exact password and only the simple query form.
    #[test]
    fn password_check() {
        assert_eq!(password_of(Some("pwd=abc")), Some("abc"));
        assert_eq!(password_of(Some("x=1&pwd=abc")), None);
        assert_eq!(password_of(None), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    /// 1000/1001/1005 are normal closes, everything else abnormal.
    #[test]
    fn close_classification() {
        let s = WsStats::default();
        for code in [1000, 1001, 1005, 1006, 1009, 1011, 4000] {
            s.count_close(code);
        }
        assert_eq!(s.close_normal.load(Ordering::Relaxed), 3);
        assert_eq!(s.close_abnormal.load(Ordering::Relaxed), 4);
        let m = s.to_map();
        assert_eq!(m["colibri_web_socket_close_normal"], json!(3));
        assert_eq!(m["colibri_web_socket_close_abnormal"], json!(4));
    }

    /// Messages reach the registered socket's queue; with no socket, or a full queue, they are
    /// dropped and counted without waiting.
    #[test]
    fn send_is_bounded_and_never_waits() {
        let hub = WsHub::new();
        hub.send(C, E, "lost".into());
        assert_eq!(hub.stats.send_no_socket.load(Ordering::Relaxed), 1);
        let (tx, mut rx) = mpsc::channel(2);
        let (ctx, _crx) = oneshot::channel();
        hub.register(C, E, tx, ctx);
        for i in 0..5 {
            hub.send(C, E, format!("m{i}"));
        }
        assert_eq!(rx.try_recv().ok().as_deref(), Some("m0"));
        assert_eq!(rx.try_recv().ok().as_deref(), Some("m1"));
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.stats.send_dropped.load(Ordering::Relaxed), 3);
    }

    /// A second registration replaces the first, which is told "replaced" (1000); the old one's
    /// unregister then leaves the new one in place; expiry closes the new one with 1001.
    #[test]
    fn replace_then_expire() {
        let hub = WsHub::new();
        let (tx1, _rx1) = mpsc::channel(1);
        let (c1, mut r1) = oneshot::channel();
        let id1 = hub.register(C, E, tx1, c1);
        let (tx2, _rx2) = mpsc::channel(1);
        let (c2, mut r2) = oneshot::channel();
        let id2 = hub.register(C, E, tx2, c2);
        assert_eq!(r1.try_recv(), Ok(CloseReason::REPLACED));
        assert_eq!(hub.stats.replaced.load(Ordering::Relaxed), 1);
        assert!(
            !hub.unregister(C, E, id1),
            "the replaced socket must not remove its successor"
        );
        assert!(hub.is_connected(C, E));
        hub.endpoint_gone_hook().0(C, E);
        assert_eq!(r2.try_recv(), Ok(CloseReason::ENDPOINT_CLOSED));
        assert!(!hub.is_connected(C, E));
        assert!(!hub.unregister(C, E, id2));
    }
}
