//! Public addresses end to end (in-process bridge, no XMPP): a STUN mapping learnt at start
//! from a tiny STUN responder on 127.0.0.1 (fault-injection level), static mappings with
//! `ip#port`, and `/about/health` following `require_valid_address`.
//!
//! Run: `cargo test -p signaling --test ops_addresses`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use signaling::config::Config;
use tokio::net::UdpSocket;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral UDP port")
        .port()
}

async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect to the REST port: {e}"),
        }
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A STUN responder that answers every binding request with `public` and reports the source
/// address of the first request.
async fn stun_responder(public: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Receiver<SocketAddr>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind the STUN responder");
    let addr = sock.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if n < 20 {
                continue;
            }
            let txid: [u8; 12] = buf[8..20].try_into().expect("12 bytes");
            let _ = sock
                .send_to(&signaling::stun::binding_success(&txid, public), from)
                .await;
            if let Some(tx) = tx.take() {
                let _ = tx.send(from);
            }
        }
    });
    (addr, rx)
}

struct Bridge {
    rest: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    fn start(mut config: Config) -> Self {
        let rest = free_tcp_port();
        config.rest.bind = SocketAddr::from(([127, 0, 0, 1], rest));
        config.rest.stats_interval = Duration::ZERO;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(signaling::server::run(config, async move {
            let _ = stopped.await;
        }));
        Bridge {
            rest,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops within 10 s")
            .expect("no panic");
        r.expect("run returns Ok");
    }

    /// Candidates (ip, port, type) of a REST allocation.
    async fn candidates(&self) -> Vec<(IpAddr, u16, String)> {
        let body = r#"{"meeting-id":"addr-test","name":"r@muc.example","create":true,
          "endpoints":[{"id":"e1","create":true,"transport":{"ice-controlling":true},"capabilities":["source-names"]}]}"#;
        let (status, text) = http(self.rest, "POST", "/colibri/v2/conferences", body).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        v["endpoints"][0]["transport"]["transport"]["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .map(|c| {
                (
                    c["ip"].as_str().and_then(|s| s.parse().ok()).expect("ip"),
                    c["port"].as_str().and_then(|s| s.parse().ok()).expect("port"),
                    c["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn base_config(udp_port: u16) -> Config {
    let mut c = Config::default();
    c.ice.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    c.ice.udp_port = udp_port;
    c.ice.host_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_mapping_is_advertised_and_makes_health_pass() {
    let public: SocketAddr = "203.0.113.9:40000".parse().expect("literal");
    let (stun, asked_from) = stun_responder(public).await;
    let media_port = free_udp_port();
    let mut c = base_config(media_port);
    c.ice.stun_servers = vec![stun.to_string()];
    c.ice.require_valid_address = true;
    let bridge = Bridge::start(c);
    let (status, body) = http(bridge.rest, "GET", "/about/health", "").await;
    assert_eq!(status, 200, "healthy with a public STUN mapping: {body}");
    // The request came from the media port itself.
    let from = tokio::time::timeout(Duration::from_secs(5), asked_from)
        .await
        .expect("STUN asked")
        .expect("sender");
    assert_eq!(from.port(), media_port, "STUN asked from the media port");
    let cands = bridge.candidates().await;
    assert!(
        cands.contains(&(public.ip(), media_port, "srflx".into())),
        "mapped IP advertised with the media port: {cands:?}"
    );
    assert!(
        cands.contains(&(IpAddr::V4(Ipv4Addr::LOCALHOST), media_port, "host".into())),
        "{cands:?}"
    );
    let (_, dbg) = http(bridge.rest, "GET", "/debug", "").await;
    let v: Value = serde_json::from_str(&dbg).expect("JSON");
    assert!(
        v["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "203.0.113.9")),
        "{dbg}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mappings_and_require_valid_address() {
    // Only private/loopback addresses: health fails with the reason when a public one is required.
    let mut c = base_config(0);
    c.ice.require_valid_address = true;
    c.ice.advertise_ips = vec!["10.1.2.3".into()];
    let bridge = Bridge::start(c);
    let (status, body) = http(bridge.rest, "GET", "/about/health", "").await;
    assert_eq!(status, 500);
    assert!(body.contains("no public address"), "{body}");
    let (_, metrics) = http(bridge.rest, "GET", "/metrics", "").await;
    assert!(metrics.contains("\njitsi_jvb_healthy 0.0\n"), "{metrics}");
    bridge.stop().await;

    // ip and ip#port mappings are advertised as given.
    let mut c = base_config(0);
    c.ice.advertise_ips = vec!["198.51.100.7#30000".into(), "192.0.2.44".into()];
    c.ice.require_valid_address = true;
    let bridge = Bridge::start(c);
    assert_eq!(http(bridge.rest, "GET", "/about/health", "").await.0, 200);
    let cands = bridge.candidates().await;
    let host_port = cands
        .iter()
        .find(|c| c.2 == "host")
        .map(|c| c.1)
        .expect("a host candidate");
    assert!(
        cands.contains(&("198.51.100.7".parse().expect("ip"), 30000, "srflx".into())),
        "{cands:?}"
    );
    assert!(
        cands.contains(&("192.0.2.44".parse().expect("ip"), host_port, "srflx".into())),
        "{cands:?}"
    );
    bridge.stop().await;
}

/// A STUN server that never answers delays the start by the STUN timeout, then the bridge
/// runs with its other addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stun_server_does_not_stop_the_start() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut c = base_config(0);
    c.ice.stun_servers = vec![silent.local_addr().expect("addr").to_string()];
    let bridge = Bridge::start(c);
    let (status, body) = http(bridge.rest, "GET", "/about/health", "").await;
    assert_eq!(status, 200, "{body}");
    let cands = bridge.candidates().await;
    assert!(cands.iter().all(|c| c.2 == "host"), "{cands:?}");
    bridge.stop().await;
}
