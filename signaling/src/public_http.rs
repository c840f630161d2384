//! The public HTTP server's accept loop (colibri-ws, media.md §2.1).
//!
//! `axum::serve` puts no bound on open connections and, having no timer, no deadline on a
//! request's headers: on a port the whole Internet reaches, a client that opens connections
//! and sends its headers one byte a minute ("slowloris", robustness.md case 38) would hold a
//! task and a file descriptor each, forever. This loop is the same hyper server (HTTP/1 with
//! upgrades for websockets, as axum's `http1` feature builds it) with both limits: at most `max_connections` connections are being
//! served (more wait in the kernel's accept queue; a websocket, once upgraded, no longer
//! counts), and hyper closes a connection whose request headers have not arrived within
//! `header_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The public server's limits (`websockets.max_connections`, `websockets.header_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct PublicLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serve `app` on `listener` until the listener fails for good (never, in practice).
pub async fn serve(listener: TcpListener, app: Router, limits: PublicLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Wait for a free slot before accepting: excess connections queue in the kernel.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::debug!(error = %e, "public HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "public HTTP connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: PublicLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/ok", get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    async fn get_ok(addr: std::net::SocketAddr) -> Option<String> {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
            .await
            .ok()?
            .ok()?;
        Some(out)
    }

    /// Slowloris: a connection that never finishes its headers is closed after the header
    /// timeout; meanwhile other clients are served.
    #[tokio::test]
    async fn slow_headers_are_cut_off_and_others_are_served() {
        let addr = start(PublicLimits {
            max_connections: 16,
            header_timeout: Duration::from_millis(300),
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial headers");
        let served = get_ok(addr).await.expect("another client is served");
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        let t = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the slow connection is still open after 5 s");
        assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
    }

    /// At most `max_connections` connections are served at once: with them all held by idle
    /// clients a new one waits; once one of them leaves, the new one is served.
    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_slot() {
        let addr = start(PublicLimits {
            max_connections: 4,
            header_timeout: Duration::from_secs(30),
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get_ok(addr).await, None, "a fifth connection was served");
        idle.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = get_ok(addr).await.expect("served once a slot is free");
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    }
}
