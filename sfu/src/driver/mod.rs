//! The only async code of the core: the shared UDP socket, the clock, and channels.
//!
//! PUBLIC API CONTRACT (signaling depends on exactly this):
//! - [`start`] binds the shared media socket and spawns the shard task.
//! - [`SfuHandle`] is cheap to clone; `command` awaits the shard's reply.
//! - [`Sfu::events`] yields every [`Event`] the core emits.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::shard::{ClockAnchor, Shard};
use crate::{Command, CommandError, Event, Reply, SfuConfig, Stats};

/// Kernel receive buffer asked for (JVB: 10 MB).
const RECV_BUFFER: usize = 10 * 1024 * 1024;
/// Largest datagram we read; anything longer is truncated by the kernel and then fails
/// authentication.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams handled per wakeup before timers and commands get a turn.
const RECV_BATCH: usize = 64;
/// Receive arena size. Each datagram is `split_to` off the arena; once the pieces are dropped
/// (the shard consumes them right away), `reserve` reclaims the space without the allocator.
const ARENA: usize = 256 * 1024;

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
    let bind = SocketAddr::new(config.bind_ip, config.udp_port);
    let socket = bind_socket(bind)?;
    let local_addr = socket.local_addr()?;
    let clock = ClockAnchor {
        instant: Instant::now(),
        system: SystemTime::now(),
    };
    let shard = Shard::new(config, local_addr, clock).map_err(io::Error::other)?;
    let (tx, rx) = mpsc::channel(1024);
    let (etx, events) = mpsc::unbounded_channel();
    tracing::info!(%local_addr, fingerprint = shard.fingerprint(), "media socket bound");
    tokio::spawn(run(shard, socket, local_addr, rx, etx));
    Ok(Sfu {
        handle: SfuHandle { tx },
        events,
        local_addr,
    })
}

fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "could not set the media socket receive buffer");
    }
    let _ = socket.set_send_buffer_size(RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn run(
    mut shard: Shard,
    socket: UdpSocket,
    local: SocketAddr,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut arena = BytesMut::with_capacity(ARENA);
    loop {
        flush(&mut shard, &socket, &events).await;
        let wake = shard.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => shard.handle_timeout(Instant::now()),
            r = socket.recv_from(recv_buf(&mut arena)) => {
                match r {
                    Ok((n, from)) => {
                        let d = take(&mut arena, n);
                        shard.handle_datagram(Instant::now(), local, from, d);
                        // Drain what else is queued without waiting, up to a batch.
                        for _ in 1..RECV_BATCH {
                            match socket.try_recv_from(recv_buf(&mut arena)) {
                                Ok((n, from)) => {
                                    let d = take(&mut arena, n);
                                    shard.handle_datagram(Instant::now(), local, from, d);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP port unreachable and the like surface here on some platforms.
                    Err(e) => tracing::trace!(error = %e, "recv error"),
                }
            }
            req = requests.recv() => match req {
                Some(Request::Command(cmd, reply)) => {
                    let _ = reply.send(shard.handle_command(Instant::now(), cmd));
                }
                Some(Request::Stats(reply)) => { let _ = reply.send(shard.stats()); }
                Some(Request::Shutdown) | None => {
                    shard.shutdown(Instant::now());
                    flush(&mut shard, &socket, &events).await;
                    tracing::info!("media core stopped");
                    return;
                }
            },
        }
    }
}

/// A `MAX_DATAGRAM` window at the start of the arena's spare capacity.
fn recv_buf(arena: &mut BytesMut) -> &mut [u8] {
    arena.clear();
    if arena.capacity() < MAX_DATAGRAM {
        arena.reserve(ARENA);
    }
    arena.resize(MAX_DATAGRAM, 0);
    &mut arena[..]
}

/// Split the received datagram off the arena.
fn take(arena: &mut BytesMut, n: usize) -> BytesMut {
    let d = arena.split_to(n);
    arena.clear();
    d
}

async fn flush(shard: &mut Shard, socket: &UdpSocket, events: &mpsc::UnboundedSender<Event>) {
    while let Some(t) = shard.poll_transmit() {
        match socket.try_send_to(&t.data, t.remote) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.send_to(&t.data, t.remote).await {
                    tracing::debug!(error = %e, remote = %t.remote, "send failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, remote = %t.remote, "send failed"),
        }
        shard.recycle(t.data);
    }
    while let Some(ev) = shard.poll_event() {
        let _ = events.send(ev);
    }
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
