//! Wires the parts together: the media core, the private REST API and the XMPP client.

use std::future::Future;

use anyhow::Context;
use tracing::info;

use crate::config::Config;

/// Run the bridge until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sfu = sfu::driver::start(config.sfu_config()?)
        .await
        .context("starting the media core")?;
    info!(media = %sfu.local_addr, "media core started");
    shutdown.await;
    info!("shutting down");
    sfu.handle.shutdown().await;
    Ok(())
}
