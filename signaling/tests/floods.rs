//! Robustness cases 14, 37, 38 and 39 (robustness.md §4) against the `palim` binary as a child
//! process, so that its CPU time (`/proc/<pid>/stat` utime + stime) is the bridge's alone and its
//! REST listener is the one the binary really opens. Everything on loopback.
//!
//! * Case 39: with no configuration file the private REST server listens on 127.0.0.1 only: a
//!   connection to 127.0.0.2 (also local on Linux: all of 127/8 is) or to ::1 on the same port
//!   is refused while 127.0.0.1 answers, and the listening socket in `/proc/<pid>/net/tcp` is
//!   127.0.0.1, not the wildcard.
//! * Case 37: a 100-endpoint conference with a colibri-ws socket each; one endpoint floods
//!   broadcast `EndpointMessage`s as fast as the client can write for 3 s. Every receiver gets
//!   at most 50 msg/s + the burst of 50 from it, every flooded message is either forwarded or
//!   counted as `channel_rate_limited`, another endpoint's messages (10/s) all arrive, and the
//!   bridge's CPU during the flood is measured.
//! * Case 38: 1,000 websocket upgrade attempts per second for 3 s on the public port (wrong
//!   passwords, every tenth a valid one) while 5 endpoints keep their sockets and talk: every
//!   attempt answered, file descriptors and RSS back, no steady socket closed or message lost.
//! * Case 14: Binding requests with unknown ufrags (signed, with FINGERPRINT) from 256
//!   loopback source addresses: no response at all, every request counted as `unknown_ufrag`
//!   (or, if the kernel dropped it, by the socket's drop counter), CPU per request measured.
//!   `PALIM_STUN_REQUESTS` sets the number (default 10^6, the spec's; about 25–40 s in a debug
//!   build, paced at ≤ 50,000/s).
//!
//! Run: `cargo test -p signaling --test floods -- --nocapture --test-threads 1` (the numbers are
//! printed; one test at a time so that they do not share the two cores).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signaling::config::Config;
use support::colibri::free_tcp_port;
use support::http_request;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const PALIM: &str = env!("CARGO_BIN_EXE_palim");

/// The `palim` binary, killed on drop.
struct Palim {
    child: Child,
    dir: PathBuf,
    rest: u16,
}

impl Palim {
    /// Starts `palim` with `args` and only `env` (plus PATH) in its environment; waits until
    /// its REST port `rest` accepts connections.
    async fn start(name: &str, args: &[&str], env: &[(&str, String)], rest: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("palim-floods-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test dir");
        let log = std::fs::File::create(dir.join("palim.log")).expect("log file");
        let mut cmd = Command::new(PALIM);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn palim");
        let mut p = Palim { child, dir, rest };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", rest)).await.is_err() {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("palim exited ({status}); log:\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "REST not up in 30 s; log:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    /// Starts `palim --config <file>` with `toml` as the file.
    async fn with_config(name: &str, toml: &str, rest: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("palim-floods-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test dir");
        let path = dir.join("config.toml");
        std::fs::write(&path, toml).expect("write config");
        let path = path.display().to_string();
        Self::start(name, &["--config", &path], &[], rest).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("palim.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the process so far, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("/proc/<pid>/stat");
        // Fields after the command name (which may contain spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').expect("stat has a command name").1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        ticks as f64 / clock_ticks()
    }

    async fn stats(&self) -> Value {
        let (status, body) = http_request(self.rest, "GET", "/colibri/stats", "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// Allocates `endpoint` in `meeting` (creating it with the first one); the websocket URL.
    async fn allocate(&self, meeting: &str, create: bool, endpoint: &str) -> Option<String> {
        let ep = json!({
            "id": endpoint,
            "create": true,
            "transport": {"ice-controlling": true},
            "capabilities": ["source-names"],
        });
        let mut body = json!({"meeting-id": meeting, "endpoints": [ep]});
        let (method, path) = if create {
            body["create"] = json!(true);
            body["name"] = json!("room@muc.example");
            ("POST", "/colibri/v2/conferences".to_owned())
        } else {
            ("PATCH", format!("/colibri/v2/conferences/{meeting}"))
        };
        let (status, text) = http_request(self.rest, method, &path, &body.to_string()).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        v["endpoints"][0]["transport"]["transport"]["web-sockets"][0]
            .as_str()
            .map(String::from)
    }
}

impl Drop for Palim {
    fn drop(&mut self) {
        if std::env::var_os("PALIM_TEST_LOG").is_some() {
            eprintln!("--- palim log\n{}", self.log());
        }
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral UDP port")
        .port()
}

/// A configuration file: media and REST on loopback, websockets on `public`.
fn config(udp: u16, rest: u16, public: u16) -> String {
    format!(
        r#"
[ice]
bind_address = "127.0.0.1"
udp_port = {udp}
host_addresses = ["127.0.0.1"]

[rest]
bind = "127.0.0.1:{rest}"
stats_interval = "0s"

[sfu]
connect_timeout = "5m"

[websockets]
enabled = true
public_bind = "127.0.0.1:{public}"
domains = ["127.0.0.1:{public}"]
server_id = "palim-floods"
"#
    )
}

// ------------------------------------------------------------------------------------------
// Case 39

/// Whether `/proc/<pid>/net/tcp` shows a listener on `ip:port` (hex, as the kernel writes it).
fn listeners(pid: u32, port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT in hex), st is field 3 (0A = LISTEN).
            if f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}")) {
                out.push(format!("{file} {}", f[1]));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rest_is_reachable_only_on_127_0_0_1_by_default() {
    assert_eq!(
        Config::default().rest.bind.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "the built-in default"
    );
    // No configuration file: the built-in defaults, with only the port moved by docker's
    // variable (port 8080 may be taken on a test machine) and a free media port.
    let rest = free_tcp_port();
    let p = Palim::start(
        "rest-exposure",
        &[],
        &[("JVB_COLIBRI_PORT", rest.to_string()), ("JVB_PORT", "0".into())],
        rest,
    )
    .await;
    let (status, body) = http_request(rest, "GET", "/about/version", "").await;
    assert_eq!(status, 200, "127.0.0.1 answers: {body}");

    // Precondition: 127.0.0.2 is a local address here (a listener there is reachable), so only
    // the bridge's bind address keeps its REST server off it.
    let probe = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let probe_port = probe.local_addr().expect("addr").port();
    TcpStream::connect(("127.0.0.2", probe_port))
        .await
        .expect("127.0.0.2 is local");
    drop(probe);

    for ip in [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        match TcpStream::connect(SocketAddr::new(ip, rest)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) if ip.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            other => panic!("{ip}:{rest}: expected connection refused, got {other:?}"),
        }
    }
    // The one listener on that port is 127.0.0.1 (0100007F), not 0.0.0.0 or [::].
    assert_eq!(
        listeners(p.pid(), rest),
        vec![format!("tcp 0100007F:{rest:04X}")],
        "listening sockets on the REST port"
    );
    // The public port (websockets) is not served at all by default.
    let (status, _) = http_request(rest, "GET", "/about/health", "").await;
    assert!(status == 200 || status == 500, "health answers on 127.0.0.1: {status}");
}

// ------------------------------------------------------------------------------------------
// Case 37

const ENDPOINTS: usize = 100;
const FLOOD: Duration = Duration::from_secs(3);

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    Message,
>;

/// Per receiver: EndpointMessages from the flooder, and the `n`s from the other sender.
#[derive(Default)]
struct Received {
    flood: AtomicU64,
    other: std::sync::Mutex<Vec<u64>>,
}

/// Broadcast EndpointMessages on `sink` until `FLOOD` after `started`: `rate` per second
/// (in batches of 100), or as fast as the socket takes them. The number sent.
async fn flood(sink: &mut WsSink, rate: Option<f64>, started: Instant) -> u64 {
    let payload =
        json!({"colibriClass": "EndpointMessage", "to": "", "msgPayload": {"flood": "x".repeat(64)}}).to_string();
    let mut sent = 0u64;
    while started.elapsed() < FLOOD {
        for _ in 0..100 {
            // feed: no flush per message.
            sink.feed(Message::text(payload.clone())).await.expect("flood send");
            sent += 1;
        }
        sink.flush().await.expect("flood flush");
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    sent
}

/// The two floods measure CPU and rates: one at a time (cargo runs a binary's tests in
/// parallel), or each would measure the other.
static FLOODING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_flood_is_rate_limited_and_other_endpoints_keep_working() {
    let _one_at_a_time = FLOODING.lock().await;
    let (udp, rest, public) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let p = Palim::with_config("ws-flood", &config(udp, rest, public), rest).await;
    let ids: Vec<String> = (0..ENDPOINTS).map(|i| format!("ep{i:03}")).collect();
    let mut urls = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        urls.push(p.allocate("m-flood", i == 0, id).await.expect("a websocket URL"));
    }
    // Connect all; every socket is read to the end in its own task.
    let mut sinks: Vec<WsSink> = Vec::new();
    let mut received = Vec::new();
    let mut readers = Vec::new();
    for url in &urls {
        let (ws, resp) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("websocket upgrade");
        assert_eq!(resp.status(), 101);
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let r = Arc::new(Received::default());
        received.push(r.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["colibriClass"] != "EndpointMessage" {
                    continue;
                }
                if v["from"] == "ep000" {
                    r.flood.fetch_add(1, Ordering::Relaxed);
                } else if v["from"] == "ep001" {
                    if let Some(n) = v["msgPayload"]["n"].as_u64() {
                        r.other.lock().expect("not poisoned").push(n);
                    }
                }
            }
        }));
    }
    let first = p.stats().await;
    assert_eq!(first["colibri_web_socket_connections"], ENDPOINTS as u64, "{first}");

    // Idle CPU with the 100 sockets open, over the flood's duration, as the baseline.
    let idle_start = p.cpu_secs();
    tokio::time::sleep(FLOOD).await;
    let idle_cpu = p.cpu_secs() - idle_start;
    println!(
        "case 37: idle palim CPU with {ENDPOINTS} sockets open: {:.1} % of a core",
        100.0 * idle_cpu / FLOOD.as_secs_f64()
    );

    let mut flooder = sinks.remove(0);
    let mut other = Some(sinks.remove(0));
    // The spec's 10^4 msg/s (CPU asserted), then as fast as the client can write (recorded).
    for rate in [Some(10_000.0), None] {
        let base = p.stats().await;
        let flood_before: Vec<u64> = received.iter().map(|r| r.flood.load(Ordering::Relaxed)).collect();
        let other_before: Vec<usize> = received
            .iter()
            .map(|r| r.other.lock().expect("not poisoned").len())
            .collect();
        let cpu_start = p.cpu_secs();
        let started = Instant::now();
        // The other endpoint: one broadcast every 100 ms, under the 50 msg/s cap.
        let mut sink = other.take().expect("other endpoint's sink");
        let other_task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while started.elapsed() < FLOOD {
                tick.tick().await;
                let m = json!({"colibriClass": "EndpointMessage", "to": "", "msgPayload": {"n": n}});
                sink.send(Message::text(m.to_string()))
                    .await
                    .expect("other endpoint's send");
                n += 1;
            }
            (n, sink)
        });
        let sent = flood(&mut flooder, rate, started).await;
        let flood_time = started.elapsed();
        let (other_sent, sink) = other_task.await.expect("other sender");
        other = Some(sink);

        // The bridge reads every message; each flooded one is then forwarded, counted as
        // rate-limited at the socket (`colibri_web_socket_rate_limited`) or by the core
        // (`channel_rate_limited`), or dropped before the core because the socket's queue to it
        // (`ws::IN_QUEUE`) was full (`..._received_dropped`).
        let delta = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0) - base[k].as_u64().unwrap_or(0);
        let forwarded_now = || {
            received[1..]
                .iter()
                .zip(&flood_before[1..])
                .map(|(r, b)| r.flood.load(Ordering::Relaxed) - b)
                .max()
                .unwrap_or(0)
        };
        let settle = Instant::now();
        let (forwarded, limited, queue_dropped, read) = loop {
            let s = p.stats().await;
            let forwarded = forwarded_now();
            let limited = delta(&s, "drops_channel_rate_limited") + delta(&s, "colibri_web_socket_rate_limited");
            let queue_dropped = delta(&s, "colibri_web_socket_received_dropped");
            let read = delta(&s, "colibri_web_socket_messages_received");
            if read >= sent + other_sent && forwarded + limited + queue_dropped >= sent {
                break (forwarded, limited, queue_dropped, read);
            }
            assert!(
                settle.elapsed() < Duration::from_secs(30),
                "not all {sent} flooded messages accounted for: read {read}, forwarded {forwarded}, \
                 rate-limited {limited}, queue-dropped {queue_dropped}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let busy = started.elapsed();
        let cpu = p.cpu_secs() - cpu_start;
        let share = cpu / busy.as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = p.stats().await;
        let achieved = sent as f64 / flood_time.as_secs_f64();
        println!(
            "case 37 ({}): {sent} messages in {flood_time:?} ({achieved:.0}/s) from 1 of {ENDPOINTS} \
             endpoints, all read by {busy:?}; forwarded {forwarded} (to each of {} receivers), \
             rate-limited {limited}, dropped at the socket's queue {queue_dropped}; palim CPU {cpu:.2} s \
             ({:.1} % of a core)",
            rate.map_or("unpaced".to_owned(), |r| format!("paced {r:.0}/s")),
            ENDPOINTS - 1,
            100.0 * share,
        );
        assert_eq!(read, sent + other_sent, "messages read");
        assert_eq!(delta(&after, "colibri_web_socket_core_refused"), 0, "{after}");
        // The flood is a flood (far over the cap) and the cap holds: 50 msg/s plus the burst of
        // 50 over the time the bridge was reading them, + 5 for the token bucket's edges.
        assert!(achieved > 5_000.0, "the client only managed {achieved:.0} msg/s");
        let cap = (sfu::receiver::CHANNEL_RATE * busy.as_secs_f64()) as u64 + 50 + 5;
        assert!(forwarded <= cap, "forwarded {forwarded} > {cap}");
        assert!(
            forwarded >= (sfu::receiver::CHANNEL_RATE * FLOOD.as_secs_f64() / 2.0) as u64,
            "forwarded only {forwarded}: the cap should still let 50/s through"
        );
        assert_eq!(
            forwarded + limited + queue_dropped,
            sent,
            "every flooded message forwarded or counted"
        );
        // Every receiver got the same forwarded messages (nothing lost in the fan-out), and the
        // other endpoint's messages all reached everyone else, in order.
        let want: Vec<u64> = (0..other_sent).collect();
        for (i, r) in received.iter().enumerate() {
            if i != 0 {
                assert_eq!(r.flood.load(Ordering::Relaxed) - flood_before[i], forwarded, "ep{i:03}");
            }
            if i != 1 {
                let got = r.other.lock().expect("not poisoned")[other_before[i]..].to_vec();
                let first = got.first().copied().unwrap_or(0);
                let got: Vec<u64> = got.iter().map(|n| n - first).collect();
                assert_eq!(got, want, "ep{i:03}: the other endpoint's messages");
            }
        }
        assert_eq!(
            after["colibri_web_socket_connections"], ENDPOINTS as u64,
            "no socket was closed: {after}"
        );
        if rate.is_some() {
            // At the spec's 10^4 msg/s the bridge reads and parses each message, drops all but
            // 50/s in the core, and fans those out to 99 sockets (about 5,000 sends/s), in a
            // debug build on a shared 2-core machine. Bound: half a core (the release figure is
            // in docs/security.md §4).
            assert!(share < 0.5, "palim took {:.0} % of a core", 100.0 * share);
        }
    }
    for r in readers {
        r.abort();
    }
}

// ------------------------------------------------------------------------------------------
// Case 14

/// The `drops` column of the kernel's line for the UDP socket bound to 127.0.0.1:`port`.
fn udp_socket_drops(pid: u32, port: u16) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    text.lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 12 && f[1] == format!("0100007F:{port:04X}")).then(|| f[f.len() - 1].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no UDP socket on 127.0.0.1:{port} in /proc/{pid}/net/udp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ufrag_stun_flood_gets_no_response_and_is_counted() {
    let _one_at_a_time = FLOODING.lock().await;
    const SOURCES: usize = 256;
    let total: u64 = std::env::var("PALIM_STUN_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (udp, rest, public) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let p = Palim::with_config("stun-flood", &config(udp, rest, public), rest).await;
    // A real endpoint, so the bridge has a ufrag of its own (the flood's are all unknown).
    p.allocate("m-stun", true, "a1").await;
    let target = SocketAddr::from(([127, 0, 0, 1], udp));
    // "Spoofed" sources: 256 distinct loopback addresses 127.0.1.0 – 127.0.1.255.
    let sockets: Vec<UdpSocket> = (0..SOURCES)
        .map(|i| {
            let s = UdpSocket::bind(SocketAddr::from(([127, 0, 1, i as u8], 0))).expect("bind a loopback source");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let base = p.stats().await;
    let drops_base = udp_socket_drops(p.pid(), udp);
    let unknown = |s: &Value| s["drops_unknown_ufrag"].as_u64().unwrap_or(0);

    let cpu_start = p.cpu_secs();
    let started = Instant::now();
    // Paced at up to 50,000/s in bursts of 500 (a burst every 10 ms), so the measurement is the
    // bridge's cost per request rather than the kernel's queue overflowing; what the kernel
    // drops anyway is read from the socket's drop counter.
    let mut txid = [0u8; 12];
    let mut sent = 0u64;
    let mut responses = 0u64;
    let mut buf = [0u8; 1500];
    while sent < total {
        let burst_start = Instant::now();
        for _ in 0..500 {
            if sent == total {
                break;
            }
            txid[..8].copy_from_slice(&sent.to_be_bytes());
            let username = format!("nope{:08x}:peer{:04x}", sent, sent % 997);
            let req = sfu::testing::ice_check(&txid, &username, "an-unknown-password-1234");
            let s = &sockets[(sent as usize) % SOURCES];
            s.send_to(&req, target).expect("send");
            sent += 1;
        }
        for s in &sockets {
            while s.recv_from(&mut buf).is_ok() {
                responses += 1;
            }
        }
        if let Some(rest) = Duration::from_millis(10).checked_sub(burst_start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let send_time = started.elapsed();
    // Wait for the counters to account for every request.
    let mut counted;
    let mut kernel_drops;
    loop {
        counted = unknown(&p.stats().await) - unknown(&base);
        kernel_drops = udp_socket_drops(p.pid(), udp) - drops_base;
        if counted + kernel_drops >= sent || started.elapsed() > send_time + Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = started.elapsed();
    let cpu = p.cpu_secs() - cpu_start;
    // Anything answered would have arrived by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in &sockets {
        while s.recv_from(&mut buf).is_ok() {
            responses += 1;
        }
    }
    println!(
        "case 14: {sent} unknown-ufrag requests from {SOURCES} sources in {send_time:?} ({:.0}/s); \
         responses {responses}; unknown_ufrag {counted}, kernel drops {kernel_drops}; palim CPU {cpu:.2} s \
         over {busy:?} ({:.1} % of a core, {:.2} µs per request)",
        sent as f64 / send_time.as_secs_f64(),
        100.0 * cpu / busy.as_secs_f64(),
        1e6 * cpu / sent as f64,
    );
    assert_eq!(responses, 0, "the bridge answered unknown ufrags");
    assert_eq!(counted + kernel_drops, sent, "every request counted");
    assert!(
        counted * 100 >= sent * 99,
        "the bridge itself counted only {counted} of {sent}"
    );
    // Spec: < 1 core. Per request the bridge does a recvmmsg share, the demux, a ufrag lookup
    // and a counter; in a debug build that is a few µs.
    assert!(cpu / busy.as_secs_f64() < 1.0, "palim used more than a core");
    let after = p.stats().await;
    assert_eq!(after["endpoints"], 1, "the real endpoint is untouched: {after}");
}

// ------------------------------------------------------------------------------------------
// Case 38

/// Resident memory (VmRSS) of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One raw upgrade request for `path` on `port`: the status code of the answer (0: none, the
/// connection failed or closed first).
async fn upgrade_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[got..])).await {
            Ok(Ok(n)) if n > 0 => got += n,
            _ => return 0,
        }
    }
    std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Case 38: 1,000 websocket upgrade attempts per second for 3 s on the public port (wrong
/// passwords, and a valid one for an endpoint that keeps being replaced), while 5 endpoints
/// keep their sockets and exchange messages. Bounded: every attempt answered (403 or 101) or
/// counted, the bridge's file descriptors back to where they were and its RSS within 8 MiB of
/// it afterwards; existing sockets unaffected: none closed, every message between them
/// delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_flood_leaves_existing_sockets_alone() {
    let _one_at_a_time = FLOODING.lock().await;
    const STEADY: usize = 5;
    const RATE: u64 = 1_000;
    const SECS: u64 = 3;
    let (udp, rest, public) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let p = Palim::with_config("ws-upgrades", &config(udp, rest, public), rest).await;
    let mut urls = Vec::new();
    for i in 0..=STEADY {
        urls.push(
            p.allocate("m-upgrades", i == 0, &format!("up{i}"))
                .await
                .expect("a websocket URL"),
        );
    }
    // Paths as the public server sees them: the steady endpoints' own, and the last one's
    // (valid, replaced on every upgrade) and with a wrong password.
    let path_of = |url: &str| {
        let rest = url.split_once("://").expect("scheme").1;
        rest[rest.find('/').expect("path")..].to_owned()
    };
    let replaced_path = path_of(&urls[STEADY]);
    let wrong_path = format!("{}x", replaced_path);
    let mut sinks = Vec::new();
    let mut inboxes = Vec::new();
    for url in &urls[..STEADY] {
        let (ws, resp) = tokio_tungstenite::connect_async(url.as_str()).await.expect("upgrade");
        assert_eq!(resp.status(), 101);
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let inbox = Arc::new(std::sync::Mutex::new((Vec::<u64>::new(), false)));
        let mine = inbox.clone();
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                            continue;
                        };
                        if let Some(n) = v["msgPayload"]["n"].as_u64() {
                            mine.lock().expect("not poisoned").0.push(n);
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            mine.lock().expect("not poisoned").1 = true;
        });
        inboxes.push(inbox);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, fds0) = (rss_kib(p.pid()), fds(p.pid()));
    let base = p.stats().await;

    // Endpoint 0 broadcasts every 50 ms throughout.
    let mut talker = sinks.remove(0);
    let talk = tokio::spawn(async move {
        let started = Instant::now();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while started.elapsed() < Duration::from_secs(SECS + 1) {
            tick.tick().await;
            let m = json!({"colibriClass": "EndpointMessage", "to": "", "msgPayload": {"n": n}});
            talker.send(Message::text(m.to_string())).await.expect("talker's send");
            n += 1;
        }
        (n, talker)
    });
    // The flood: one attempt per ms, each in its own task; every 10th with the valid path.
    let started = Instant::now();
    let mut attempts = Vec::new();
    for k in 0..RATE * SECS {
        let path = if k % 10 == 0 {
            replaced_path.clone()
        } else {
            wrong_path.clone()
        };
        attempts.push(tokio::spawn(async move { upgrade_status(public, &path).await }));
        tokio::time::sleep_until((started + Duration::from_millis(k + 1)).into()).await;
    }
    let flood_time = started.elapsed();
    let mut codes = std::collections::BTreeMap::new();
    for a in attempts {
        *codes.entry(a.await.expect("attempt task")).or_insert(0u64) += 1;
    }
    let (talked, _talker) = talk.await.expect("talker");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = p.stats().await;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - base[k].as_u64().unwrap_or(0);
    // Sockets of the replaced endpoint (and the attempts' connections) closed by now.
    let mut fds1 = fds(p.pid());
    let settle = Instant::now();
    while fds1 > fds0 + 1 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds1 = fds(p.pid());
    }
    let rss1 = rss_kib(p.pid());
    println!(
        "case 38: {} upgrade attempts in {flood_time:?}: answers {codes:?}; refused_auth +{}, connections +{}, \
         replaced +{}; palim fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB; {talked} messages from a steady socket",
        RATE * SECS,
        delta("colibri_web_socket_refused_auth"),
        delta("colibri_web_socket_connections"),
        delta("colibri_web_socket_replaced"),
    );
    let wrong = RATE * SECS - RATE * SECS / 10;
    assert_eq!(
        codes.get(&403).copied().unwrap_or(0),
        wrong,
        "every wrong password answered 403: {codes:?}"
    );
    assert_eq!(
        codes.get(&101).copied().unwrap_or(0),
        RATE * SECS / 10,
        "every valid upgrade answered: {codes:?}"
    );
    assert_eq!(delta("colibri_web_socket_refused_auth"), wrong);
    assert!(fds1 <= fds0 + 1, "file descriptors {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + 8 * 1024, "RSS {rss0} -> {rss1} KiB");
    for (i, inbox) in inboxes.iter().enumerate().skip(1) {
        let (got, closed) = &*inbox.lock().expect("not poisoned");
        assert!(!closed, "steady socket {i} was closed");
        let want: Vec<u64> = (0..talked).collect();
        assert_eq!(got, &want, "steady socket {i} got every message, in order");
    }
    assert!(
        !inboxes[0].lock().expect("not poisoned").1,
        "the talker's socket stayed open"
    );
}
