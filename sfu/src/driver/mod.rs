//! The only async code of the core: the shared UDP socket, the clock, and channels.
//!
//! PUBLIC API CONTRACT (signaling depends on exactly this):
//! - [`start`] binds the shared media socket and spawns the shard task.
//! - [`SfuHandle`] is cheap to clone; `command` awaits the shard's reply.
//! - [`Sfu::events`] yields every [`Event`] the core emits.

use std::io;
use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use crate::{Command, CommandError, Event, Reply, SfuConfig, Stats};

/// A running media core.
pub struct Sfu {
    pub handle: SfuHandle,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The address the shared media socket is bound to (the real port when `udp_port` = 0).
    pub local_addr: SocketAddr,
}

/// A typed client for the shard task.
#[derive(Clone)]
pub struct SfuHandle {
    tx: mpsc::Sender<Request>,
}

enum Request {
    Command(Command, oneshot::Sender<Result<Reply, CommandError>>),
    Stats(oneshot::Sender<Stats>),
    Shutdown,
}

/// Bind the media socket and start the core on the current tokio runtime.
pub async fn start(config: SfuConfig) -> io::Result<Sfu> {
    let _ = config;
    let (tx, _rx) = mpsc::channel(1024);
    let (_etx, events) = mpsc::unbounded_channel();
    // Placeholder until the shard lands: see the sfu brief.
    Ok(Sfu {
        handle: SfuHandle { tx },
        events,
        local_addr: "0.0.0.0:0".parse().expect("literal"),
    })
}

impl SfuHandle {
    /// Run one command on the shard that owns its conference.
    pub async fn command(&self, cmd: Command) -> Result<Reply, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Command(cmd, tx))
            .await
            .map_err(|_| CommandError::Internal("media core stopped".into()))?;
        rx.await
            .map_err(|_| CommandError::Internal("media core stopped".into()))?
    }

    /// A snapshot of the counters.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Stats(tx)).await.is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Stop the shard task (expires everything).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
    }
}
