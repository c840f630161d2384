//! The only async code of the core: the shared UDP socket, the clock, and channels.
//!
//! PUBLIC API CONTRACT (signaling depends on exactly this):
//! - [`start`] binds the shared media socket and starts the shard on its own thread.
//! - [`SfuHandle`] is cheap to clone; `command` awaits the shard's reply.
//! - [`Sfu::events`] yields every [`Event`] the core emits.

mod batch;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::shard::{ClockAnchor, Shard, Transmit};
use crate::{Command, CommandError, Event, Reply, SfuConfig, Stats};

/// Kernel receive buffer asked for (JVB: 10 MB).
const RECV_BUFFER: usize = 10 * 1024 * 1024;
/// Largest datagram we read; anything longer is truncated by the kernel and then fails
/// authentication.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams handled per wakeup before timers and commands get a turn.
const RECV_BATCH: usize = 64;
/// Receive arena size. Each `recvmmsg` reads into [`batch::BATCH`] windows of `MAX_DATAGRAM`
/// at the arena's start; each datagram is `split_to` off it; once the pieces are dropped (the
/// shard consumes them right away), `reserve` reclaims the space without the allocator.
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

/// Bind the media socket and start the core on a thread of its own (with its own
/// current-thread tokio runtime); the handle and events work from any runtime.
pub async fn start(config: SfuConfig) -> io::Result<Sfu> {
    let bind = SocketAddr::new(config.bind_ip, config.udp_port);
    let socket = bind_socket(bind)?;
    let local_addr = socket.local_addr()?;
    let clock = ClockAnchor {
        instant: Instant::now(),
        system: SystemTime::now(),
    };
    let io_batch = config.io_batch.clamp(1, batch::BATCH);
    let shard = Shard::new(config, local_addr, clock).map_err(io::Error::other)?;
    let (tx, rx) = mpsc::channel(1024);
    let (etx, events) = mpsc::unbounded_channel();
    tracing::info!(%local_addr, fingerprint = shard.fingerprint(), "media socket bound");
    // The shard gets its own thread and current-thread runtime (STYLE §2): a shard busy with
    // a datagram backlog (CPU starvation, robustness.md case 50) must not hold up the
    // signaling runtime's I/O, so health, stats and Colibri2 stay answered.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("palim-shard-0".into())
        .spawn(move || {
            let _entered = span.enter();
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "media core: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => run(shard, socket, local_addr, io_batch, rx, etx).await,
                    Err(e) => tracing::error!(error = %e, "media core: cannot register the media socket"),
                }
            });
        })?;
    Ok(Sfu {
        handle: SfuHandle { tx },
        events,
        local_addr,
    })
}

fn bind_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "could not set the media socket receive buffer");
    }
    let _ = socket.set_send_buffer_size(RECV_BUFFER);
    socket.set_nonblocking(true)?;
    if let Err(e) = batch::enable_rx_timestamps(socket.as_raw_fd()) {
        tracing::warn!(error = %e, "no kernel receive timestamps: transport-cc records handling time");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn run(
    mut shard: Shard,
    socket: UdpSocket,
    local: SocketAddr,
    io_batch: usize,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut arena = BytesMut::with_capacity(ARENA);
    let mut out = Outbox::new(io_batch);
    let mut got = [batch::Received::EMPTY; batch::BATCH];
    loop {
        out.flush(&mut shard, &socket, &events).await;
        let wake = shard.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => shard.handle_timeout(Instant::now()),
            r = socket.readable() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "media socket not readable");
                    continue;
                }
                // Drain what is queued, a batch per system call, up to RECV_BATCH datagrams
                // before timers and commands get a turn.
                let mut handled = 0;
                while handled < RECV_BATCH {
                    let window = recv_window(&mut arena, io_batch);
                    let fd = socket.as_raw_fd();
                    match socket.try_io(Interest::READABLE, || batch::recv(fd, window, MAX_DATAGRAM, &mut got)) {
                        Ok(n) => {
                            let now = Instant::now();
                            let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                            for r in &got[..n] {
                                let mut d = arena.split_to(MAX_DATAGRAM);
                                d.truncate(r.len);
                                match r.stamp.and_then(|s| arrival(now, wall, s)) {
                                    Some(at) => shard.handle_datagram_at(now, at, local, r.from, d),
                                    None => shard.handle_datagram(now, local, r.from, d),
                                }
                            }
                            handled += n.max(1);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP port unreachable and the like surface here on some platforms.
                        Err(e) => {
                            tracing::trace!(error = %e, "recv error");
                            handled += 1;
                        }
                    }
                }
            }
            req = requests.recv() => match req {
                Some(Request::Command(cmd, reply)) => {
                    let _ = reply.send(shard.handle_command(Instant::now(), cmd));
                }
                Some(Request::Stats(reply)) => { let _ = reply.send(shard.stats()); }
                Some(Request::Shutdown) | None => {
                    shard.shutdown(Instant::now());
                    out.flush(&mut shard, &socket, &events).await;
                    tracing::info!("media core stopped");
                    return;
                }
            },
        }
    }
}

/// A kernel receive timestamp (wall clock) as an `Instant`: `now` minus how long ago, by the wall
/// clock `wall` read with `now`, the datagram arrived. `None` when the stamp is in the future or
/// more than a second old (the wall clock was stepped): the caller then uses `now`.
fn arrival(now: Instant, wall: Duration, stamp: Duration) -> Option<Instant> {
    let age = wall.checked_sub(stamp)?;
    if age > Duration::from_secs(1) {
        return None;
    }
    now.checked_sub(age)
}

/// `batch` `MAX_DATAGRAM` windows at the start of the arena.
fn recv_window(arena: &mut BytesMut, batch: usize) -> &mut [u8] {
    let want = batch * MAX_DATAGRAM;
    arena.clear();
    if arena.capacity() < want {
        arena.reserve(ARENA.max(want));
    }
    arena.resize(want, 0);
    &mut arena[..]
}

/// Datagrams the shard produced, sent a batch per `sendmmsg`. The vector keeps its capacity, so
/// a flush allocates nothing; sent buffers go back to the shard's pool.
struct Outbox {
    pending: Vec<Transmit>,
    batch: usize,
}

impl Outbox {
    fn new(batch: usize) -> Self {
        Self {
            pending: Vec::with_capacity(batch),
            batch,
        }
    }

    async fn flush(&mut self, shard: &mut Shard, socket: &UdpSocket, events: &mpsc::UnboundedSender<Event>) {
        loop {
            while self.pending.len() < self.batch {
                match shard.poll_transmit() {
                    Some(t) => self.pending.push(t),
                    None => break,
                }
            }
            if self.pending.is_empty() {
                break;
            }
            let mut sent = 0;
            while sent < self.pending.len() {
                let fd = socket.as_raw_fd();
                let rest = &self.pending[sent..];
                match socket.try_io(Interest::WRITABLE, || batch::send(fd, rest)) {
                    Ok(n) => sent += n.max(1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = socket.writable().await {
                            tracing::debug!(error = %e, "media socket not writable");
                            sent += 1;
                        }
                    }
                    // The first datagram of the batch failed (unreachable address and the like):
                    // drop it, send the rest.
                    Err(e) => {
                        tracing::debug!(error = %e, remote = %rest[0].remote, "send failed");
                        sent += 1;
                    }
                }
            }
            for t in self.pending.drain(..) {
                shard.recycle(t.data);
            }
        }
        while let Some(ev) = shard.poll_event() {
            let _ = events.send(ev);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_stamp_becomes_an_instant_in_the_past() {
        let now = Instant::now();
        let wall = Duration::from_secs(1_800_000_000);
        let at = arrival(now, wall, wall - Duration::from_millis(7)).expect("7 ms ago");
        assert_eq!(now - at, Duration::from_millis(7));
        assert_eq!(arrival(now, wall, wall), Some(now));
        // A stamp from the future or older than a second (wall clock stepped): not used.
        assert_eq!(arrival(now, wall, wall + Duration::from_millis(1)), None);
        assert_eq!(arrival(now, wall, wall - Duration::from_secs(2)), None);
    }
}
