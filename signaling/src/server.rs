//! Wires the parts together: the media core, the Colibri2 handler, the private REST API and
//! (when configured) the XMPP client, and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sfu::Event;
use tracing::{info, warn};

use crate::colibri2::{Colibri2Handler, HandlerConfig};
use crate::config::{Config, XmppSection};
use crate::rest::{self, RestState};
use crate::xmpp::{self, BridgeStats, IncomingIq, IqHandler, IqResponse, StanzaError, XmppClient, XmppConfig};

/// JVB's background expiry: conferences with no endpoints older than 20 s, checked every minute.
const IDLE_CONFERENCE_AGE: Duration = Duration::from_secs(20);
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Run the bridge until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sfu = sfu::driver::start(config.sfu_config()?)
        .await
        .context("starting the media core")?;
    info!(media = %sfu.local_addr, "media core started");
    let handle = sfu.handle.clone();
    let colibri = Arc::new(Colibri2Handler::new(Arc::new(handle.clone()), HandlerConfig::default()));

    tokio::spawn(route_events(sfu.events, colibri.clone()));
    tokio::spawn(expire_idle(colibri.clone()));

    let xmpp_client = if config.xmpp.enabled {
        let xcfg = xmpp_config(&config.xmpp);
        let iq = Arc::new(ColibriIq::new(colibri.clone()));
        let stats_colibri = colibri.clone();
        let presence: Arc<dyn xmpp::PresenceSource> = Arc::new(move || presence_stats(&stats_colibri));
        let client = XmppClient::spawn(xcfg, iq, Some(presence)).context("starting the XMPP client")?;
        info!(host = %config.xmpp.host, rooms = ?config.xmpp.muc_jids, "XMPP client started");
        Some(client)
    } else {
        None
    };

    if config.rest.enabled {
        let state = RestState::new(colibri.clone());
        let app = rest::router(state);
        let listener = tokio::net::TcpListener::bind(config.rest.bind)
            .await
            .with_context(|| format!("binding the REST API to {}", config.rest.bind))?;
        info!(addr = %config.rest.bind, "REST API listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(error = %e, "REST server stopped");
            }
        });
    }

    shutdown.await;
    info!("shutting down");
    if let Some(client) = &xmpp_client {
        // Leave the brewery first so Jicofo stops choosing this bridge.
        client.shutdown().await;
    }
    handle.shutdown().await;
    Ok(())
}

/// What the core reports, applied to the signaling state.
async fn route_events(mut events: tokio::sync::mpsc::UnboundedReceiver<Event>, colibri: Arc<Colibri2Handler>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::EndpointExpired { conf, ep, reason } => {
                info!(%conf, %ep, ?reason, "endpoint expired by the media core");
                colibri.on_endpoint_expired(conf, ep).await;
            }
            Event::DtlsFailed { conf, ep, reason } => warn!(%conf, %ep, %reason, "DTLS failed"),
            other => tracing::debug!(event = ?other, "media core event"),
        }
    }
}

async fn expire_idle(colibri: Arc<Colibri2Handler>) {
    let mut tick = tokio::time::interval(IDLE_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let n = colibri
            .expire_idle_conferences(Instant::now(), IDLE_CONFERENCE_AGE)
            .await;
        if n > 0 {
            info!(expired = n, "expired idle conferences");
        }
    }
}

/// `[xmpp]` of the file onto the client's own configuration.
fn xmpp_config(x: &XmppSection) -> XmppConfig {
    let nickname = if x.muc_nickname.is_empty() {
        default_nickname()
    } else {
        x.muc_nickname.clone()
    };
    XmppConfig {
        host: x.host.clone(),
        port: x.port,
        domain: x.domain.clone(),
        username: x.username.clone(),
        password: xmpp::Password::new(x.password.clone()),
        muc_jids: x.muc_jids.clone(),
        muc_nickname: nickname,
        disable_certificate_verification: x.disable_certificate_verification,
        presence_interval: x.presence_interval,
        ..XmppConfig::default()
    }
}

/// JVB uses the host name as its occupant nickname.
fn default_nickname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| format!("palim-{}", std::process::id()))
}

/// The stats presence (colibri.md §2).
fn presence_stats(colibri: &Colibri2Handler) -> Vec<(String, String)> {
    let counts = colibri.counts();
    let draining = colibri
        .graceful_shutdown_flag()
        .load(std::sync::atomic::Ordering::Relaxed);
    let stats = BridgeStats {
        // A first, load-independent measure: endpoints against a nominal 1,000 per bridge.
        // Replaced by a packet-rate measure once the core reports one.
        stress_level: counts.endpoints as f64 / 1000.0,
        graceful_shutdown: draining,
        conferences: counts.conferences as u64,
        participants: counts.endpoints as u64,
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..BridgeStats::default()
    };
    stats.to_pairs(std::time::SystemTime::now())
}

/// Colibri2 IQs from the brewery, handed to the handler one at a time in the order Jicofo sent
/// them (JVB answers each conference's requests in order; one queue keeps that trivially).
struct ColibriIq {
    colibri: Arc<Colibri2Handler>,
    queue: tokio::sync::mpsc::UnboundedSender<(IncomingIq, tokio::sync::oneshot::Sender<IqResponse>)>,
}

impl ColibriIq {
    fn new(colibri: Arc<Colibri2Handler>) -> Self {
        let (queue, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(IncomingIq, tokio::sync::oneshot::Sender<IqResponse>)>();
        let worker = colibri.clone();
        tokio::spawn(async move {
            while let Some((iq, reply)) = rx.recv().await {
                let response = if iq.payload.is("conference-modify", xmpp::ns::COLIBRI2) {
                    match worker.handle_xml(&iq.payload).await {
                        Ok(el) => IqResponse::Result(Some(el)),
                        Err(e) => IqResponse::Error(colibri_error(&e)),
                    }
                } else {
                    IqResponse::Error(StanzaError::new(
                        xmpp::Condition::ServiceUnavailable,
                        "Unsupported IQ request",
                    ))
                };
                let _ = reply.send(response);
            }
        });
        Self { colibri, queue }
    }
}

fn colibri_error(e: &crate::colibri2::Colibri2Error) -> StanzaError {
    let mut err = StanzaError::new(condition_of(e.condition.as_str()), e.text.clone());
    if let Some(t) = xmpp::ErrorType::parse(e.condition.error_type().as_str()) {
        err = err.with_type(t);
    }
    // Skip the condition and text children, which StanzaError writes itself.
    for child in e.error_children().into_iter().skip(2) {
        err = err.with_extension(child);
    }
    err
}

fn condition_of(name: &str) -> xmpp::Condition {
    xmpp::Condition::parse(name).unwrap_or(xmpp::Condition::InternalServerError)
}

impl IqHandler for ColibriIq {
    fn handle_iq(self: Arc<Self>, iq: IncomingIq) -> impl Future<Output = IqResponse> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue.send((iq, tx)).is_ok();
        async move {
            if !queued {
                return IqResponse::Error(StanzaError::new(
                    xmpp::Condition::InternalServerError,
                    "bridge is stopping",
                ));
            }
            rx.await.unwrap_or_else(|_| {
                IqResponse::Error(StanzaError::new(
                    xmpp::Condition::InternalServerError,
                    "request was dropped",
                ))
            })
        }
    }

    fn health_check(&self) -> Result<(), String> {
        let _ = &self.colibri;
        Ok(())
    }
}
