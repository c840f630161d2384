//! Wires the parts together: the media core, the Colibri2 handler, the private REST API and
//! (when configured) the XMPP client, and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sfu::Event;
use tracing::{info, warn};

use crate::colibri2::{Colibri2Handler, HandlerConfig};
use crate::config::Config;
use crate::rest::{self, RestState};

/// JVB's background expiry: conferences with no endpoints older than 20 s, checked every minute.
const IDLE_CONFERENCE_AGE: Duration = Duration::from_secs(20);
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Run the bridge until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sfu = sfu::driver::start(config.sfu_config()?).await.context("starting the media core")?;
    info!(media = %sfu.local_addr, "media core started");
    let handle = sfu.handle.clone();
    let colibri = Arc::new(Colibri2Handler::new(Arc::new(handle.clone()), HandlerConfig::default()));

    tokio::spawn(route_events(sfu.events, colibri.clone()));
    tokio::spawn(expire_idle(colibri.clone()));

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
        let n = colibri.expire_idle_conferences(Instant::now(), IDLE_CONFERENCE_AGE).await;
        if n > 0 {
            info!(expired = n, "expired idle conferences");
        }
    }
}
