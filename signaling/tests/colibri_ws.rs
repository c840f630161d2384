//! The colibri-ws bridge channel end to end: the real `palim` stack in-process
//! (`signaling::server::run`: media core, Colibri2 over REST, the public HTTP server) on
//! loopback, endpoints allocated with `POST /colibri/v2/conferences`, and a real websocket client
//! (tokio-tungstenite) dialling the URL the answer advertises. No XMPP, no media.
//!
//! Run: `cargo test -p signaling --test colibri_ws`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signaling::config::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("connect to port {port}: {e}"),
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

struct Bridge {
    rest: u16,
    public: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let rest = free_tcp_port();
        let public = free_tcp_port();
        let mut c = Config::default();
        c.ice.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        c.ice.udp_port = 0;
        c.ice.host_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        c.rest.bind = SocketAddr::from(([127, 0, 0, 1], rest));
        c.rest.stats_interval = Duration::ZERO;
        c.websockets.enabled = true;
        c.websockets.public_bind = Some(SocketAddr::from(([127, 0, 0, 1], public)));
        c.websockets.domains = vec![format!("127.0.0.1:{public}")];
        c.websockets.server_id = "palim-test".into();
        tune(&mut c);
        c.validate().expect("a valid configuration");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(signaling::server::run(c, async move {
            let _ = stopped.await;
        }));
        Bridge {
            rest,
            public,
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

    /// Allocate `endpoint` (creating the conference with the first one) and return the answer's
    /// websocket URLs. `sources` is the endpoint's video source name, if any.
    async fn allocate(
        &self,
        meeting: &str,
        create: bool,
        endpoint: &str,
        video_source: Option<(&str, u32)>,
    ) -> Vec<String> {
        let mut ep = json!({
            "id": endpoint,
            "create": true,
            "transport": {"ice-controlling": true},
            "capabilities": ["source-names"],
            "medias": [{"type": "video", "payload-types": [{"id": "100", "name": "VP8", "clockrate": "90000"}]}],
        });
        if let Some((name, ssrc)) = video_source {
            ep["sources"] = json!([{"type": "video", "id": name, "sources": [{"ssrc": ssrc, "name": name}]}]);
        }
        let mut body = json!({"meeting-id": meeting, "endpoints": [ep]});
        if create {
            body["create"] = json!(true);
            body["name"] = json!("room@muc.example");
        }
        let (path, method) = if create {
            ("/colibri/v2/conferences".to_owned(), "POST")
        } else {
            (format!("/colibri/v2/conferences/{meeting}"), "PATCH")
        };
        let (status, text) = http(self.rest, method, &path, &body.to_string()).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        v["endpoints"][0]["transport"]["transport"]["web-sockets"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    async fn expire(&self, meeting: &str, endpoint: &str) {
        let body = json!({"endpoints": [{"id": endpoint, "expire": true}]}).to_string();
        let (status, text) = http(self.rest, "PATCH", &format!("/colibri/v2/conferences/{meeting}"), &body).await;
        assert_eq!(status, 200, "{text}");
    }

    async fn stats(&self) -> Value {
        let (status, text) = http(self.rest, "GET", "/colibri/stats", "").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("JSON")
    }
}

async fn connect(url: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(url).await.expect("websocket upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// The HTTP status and body of a refused upgrade.
async fn refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url}: upgrade accepted"),
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The next text message, parsed (pings are skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("no error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON message"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Messages until one of `class` arrives.
async fn until_class(ws: &mut Ws, class: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["colibriClass"] == class {
            return v;
        }
    }
}

/// The close frame the server sends next (text messages before it are skipped).
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a close within 5 s");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.as_str().to_owned()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("error before the close frame: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The right password opens the channel: ServerHello first, then the current state
/// (ForwardedSources), and the bridge answers ClientHello with ServerHello. The advertised URL
/// has the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_password_gets_server_hello_and_state() {
    let bridge = Bridge::start(|_| {});
    let urls = bridge.allocate("m-hello", true, "a1", None).await;
    assert_eq!(urls.len(), 1, "{urls:?}");
    let url = &urls[0];
    let prefix = format!("ws://127.0.0.1:{}/colibri-ws/palim-test/", bridge.public);
    assert!(url.starts_with(&prefix), "{url}");
    let pwd = url.split_once("?pwd=").expect("pwd query").1;
    assert_eq!(pwd.len(), 24, "{url}");
    assert!(pwd.chars().all(|c| c.is_ascii_alphanumeric()), "{url}");
    assert!(url.contains("/a1?pwd="), "{url}");

    let mut ws = connect(url).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["colibriClass"], "ServerHello", "{first}");
    let fwd = until_class(&mut ws, "ForwardedSources").await;
    assert!(fwd["forwardedSources"].is_array(), "{fwd}");
    send(&mut ws, json!({"colibriClass": "ClientHello"})).await;
    let hello = until_class(&mut ws, "ServerHello").await;
    assert_eq!(hello["colibriClass"], "ServerHello");
    let stats = bridge.stats().await;
    assert_eq!(stats["colibri_web_socket_connections"], 1, "{stats}");
    assert!(
        stats["colibri_web_socket_messages_received"].as_u64() >= Some(1),
        "{stats}"
    );
    ws.close(None).await.expect("close");
    bridge.stop().await;
}

/// Admission: wrong or missing password, unknown endpoint or conference → 403 "authentication
/// failed" (identical); wrong server-id → 404 "server ID mismatch".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_errors() {
    let bridge = Bridge::start(|_| {});
    let urls = bridge.allocate("m-auth", true, "a1", None).await;
    let url = &urls[0];
    let (base, pwd) = url.split_once("?pwd=").expect("pwd");
    let mut wrong = pwd.to_owned();
    wrong.replace_range(0..1, if pwd.starts_with('x') { "y" } else { "x" });

    let forbidden = (403, "authentication failed".to_owned());
    assert_eq!(
        refused(&format!("{base}?pwd={wrong}")).await,
        forbidden,
        "wrong password"
    );
    assert_eq!(refused(base).await, forbidden, "no password");
    assert_eq!(refused(&format!("{base}?pwd=")).await, forbidden, "empty password");
    let other_ep = base.replace("/a1", "/zz");
    assert_eq!(
        refused(&format!("{other_ep}?pwd={pwd}")).await,
        forbidden,
        "unknown endpoint"
    );
    // The conference segment is the one before the endpoint.
    let mut parts: Vec<&str> = base.rsplitn(3, '/').collect();
    parts[1] = "999999";
    let other_conf = format!("{}/{}/{}", parts[2], parts[1], parts[0]);
    assert_eq!(
        refused(&format!("{other_conf}?pwd={pwd}")).await,
        forbidden,
        "unknown conference"
    );
    let bad_server = url.replace("/palim-test/", "/other-id/");
    assert_eq!(
        refused(&bad_server).await,
        (404, "server ID mismatch".to_owned()),
        "wrong server id"
    );
    // Robustness case 39: the private API (`/colibri/*`) is not served on the public port.
    for (method, path) in [
        ("POST", "/colibri/v2/conferences"),
        ("PATCH", "/colibri/v2/conferences/m-auth"),
        ("GET", "/colibri/stats"),
        ("POST", "/colibri/shutdown"),
        ("POST", "/colibri/drain/enable"),
    ] {
        let (status, text) = http(bridge.public, method, path, r#"{"graceful-shutdown":true}"#).await;
        assert_eq!(status, 404, "{method} {path} on the public port: {text}");
    }
    // The right URL still works after all that.
    let mut ws = connect(url).await;
    assert_eq!(next_json(&mut ws).await["colibriClass"], "ServerHello");
    let stats = bridge.stats().await;
    assert_eq!(stats["colibri_web_socket_refused_auth"], 5, "{stats}");
    assert_eq!(stats["colibri_web_socket_refused_server_id"], 1, "{stats}");
    bridge.stop().await;
}

/// A second socket for the endpoint replaces the first (close 1000 "replaced") and is the one
/// the bridge talks to; expiring the endpoint closes it with 1001 "endpoint closed", after which
/// the URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_and_expiry() {
    let bridge = Bridge::start(|_| {});
    let url = bridge.allocate("m-replace", true, "a1", None).await.remove(0);
    bridge.allocate("m-replace", false, "b1", None).await;
    let mut first = connect(&url).await;
    until_class(&mut first, "ForwardedSources").await;
    let mut second = connect(&url).await;
    assert_eq!(close_frame(&mut first).await, (1000, "replaced".to_owned()));
    until_class(&mut second, "ForwardedSources").await;
    send(&mut second, json!({"colibriClass": "ClientHello"})).await;
    until_class(&mut second, "ServerHello").await;

    bridge.expire("m-replace", "a1").await;
    assert_eq!(close_frame(&mut second).await, (1001, "endpoint closed".to_owned()));
    assert_eq!(refused(&url).await.0, 403, "an expired endpoint's URL is refused");
    let stats = bridge.stats().await;
    assert_eq!(stats["colibri_web_socket_replaced"], 1, "{stats}");
    assert!(stats["colibri_web_socket_close_normal"].as_u64() >= Some(2), "{stats}");
    bridge.stop().await;
}

/// Malformed JSON is dropped and the socket keeps serving; a 1 MiB message closes it with 1009
/// (counted) and a new socket works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages() {
    let bridge = Bridge::start(|_| {});
    let url = bridge.allocate("m-bad", true, "a1", None).await.remove(0);
    let mut ws = connect(&url).await;
    until_class(&mut ws, "ForwardedSources").await;
    ws.send(Message::text("{not json")).await.expect("send");
    ws.send(Message::text(r#"{"colibriClass":"NoSuchClass"}"#))
        .await
        .expect("send");
    send(&mut ws, json!({"colibriClass": "ClientHello"})).await;
    until_class(&mut ws, "ServerHello").await;

    let big = format!(
        "{{\"colibriClass\":\"EndpointMessage\",\"to\":\"\",\"x\":\"{}\"}}",
        "a".repeat(1 << 20)
    );
    // The server may close before the whole frame is written: a send error is fine.
    let _ = ws.send(Message::text(big)).await;
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));

    let mut again = connect(&url).await;
    until_class(&mut again, "ForwardedSources").await;
    send(&mut again, json!({"colibriClass": "ClientHello"})).await;
    until_class(&mut again, "ServerHello").await;
    let stats = bridge.stats().await;
    assert_eq!(stats["colibri_web_socket_too_large"], 1, "{stats}");
    assert!(
        stats["colibri_web_socket_close_abnormal"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(
        stats["drops_channel_invalid_json"].as_u64() >= Some(1),
        "the core counted the malformed message: {stats}"
    );
    bridge.stop().await;
}

/// Two endpoints exchange EndpointMessages over their websockets; the bridge sets `from`
/// (a forged one is overwritten), directed and broadcast messages both arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_messages_between_websockets() {
    let bridge = Bridge::start(|_| {});
    let url_a = bridge.allocate("m-msg", true, "aaaa", None).await.remove(0);
    let url_b = bridge.allocate("m-msg", false, "bbbb", None).await.remove(0);
    let mut a = connect(&url_a).await;
    let mut b = connect(&url_b).await;
    until_class(&mut a, "ForwardedSources").await;
    until_class(&mut b, "ForwardedSources").await;

    send(
        &mut a,
        json!({"colibriClass": "EndpointMessage", "to": "bbbb", "from": "forged", "msgPayload": {"n": 1}}),
    )
    .await;
    let got = until_class(&mut b, "EndpointMessage").await;
    assert_eq!(got["from"], "aaaa", "{got}");
    assert_eq!(got["msgPayload"]["n"], 1, "{got}");

    send(
        &mut b,
        json!({"colibriClass": "EndpointMessage", "to": "", "msgPayload": {"n": 2}}),
    )
    .await;
    let got = until_class(&mut a, "EndpointMessage").await;
    assert_eq!(got["from"], "bbbb", "{got}");
    assert_eq!(got["msgPayload"]["n"], 2, "{got}");
    bridge.stop().await;
}

/// ReceiverVideoConstraints over the websocket reach the allocator: the receiver is told what
/// it gets (ForwardedSources) and the sender what it must send (SenderSourceConstraints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_constraints_over_websocket() {
    let bridge = Bridge::start(|_| {});
    let url_a = bridge.allocate("m-rvc", true, "aaaa", None).await.remove(0);
    let url_b = bridge
        .allocate("m-rvc", false, "bbbb", Some(("bbbb-v0", 1111)))
        .await
        .remove(0);
    let mut a = connect(&url_a).await;
    let mut b = connect(&url_b).await;
    until_class(&mut a, "ForwardedSources").await;
    until_class(&mut b, "ForwardedSources").await;
    send(
        &mut a,
        json!({"colibriClass": "ReceiverVideoConstraints", "lastN": -1,
               "constraints": {"bbbb-v0": {"maxHeight": 180}}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ForwardedSources with bbbb-v0: {seen:?}"
        );
        let v = next_json(&mut a).await;
        if v["colibriClass"] == "ForwardedSources"
            && v["forwardedSources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|n| n == "bbbb-v0"))
        {
            break;
        }
        seen.push(v);
    }
    let ssc = until_class(&mut b, "SenderSourceConstraints").await;
    assert_eq!(ssc["sourceName"], "bbbb-v0", "{ssc}");
    bridge.stop().await;
}

/// Keepalive pings arrive when the server has nothing to send, and a socket on which nothing
/// arrives is closed after the idle timeout (1001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_and_idle_timeout() {
    let bridge = Bridge::start(|c| {
        c.websockets.keepalive_interval = Duration::from_millis(200);
        c.websockets.idle_timeout = Duration::from_secs(30);
    });
    let url = bridge.allocate("m-ping", true, "a1", None).await.remove(0);
    let mut ws = connect(&url).await;
    let got_ping = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Ping(_)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got_ping, Ok(true), "a ping within 3 s");
    bridge.stop().await;

    let bridge = Bridge::start(|c| {
        c.websockets.send_keepalive_pings = false;
        c.websockets.idle_timeout = Duration::from_millis(700);
    });
    let url = bridge.allocate("m-idle", true, "a1", None).await.remove(0);
    let mut ws = connect(&url).await;
    let started = std::time::Instant::now();
    assert_eq!(close_frame(&mut ws).await, (1001, "idle timeout".to_owned()));
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    bridge.stop().await;
}

/// With websockets off (the default) no URL is advertised and no public server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_by_default() {
    let bridge = Bridge::start(|c| {
        let public = c.websockets.public_bind;
        c.websockets = Default::default();
        c.websockets.public_bind = public;
    });
    let urls = bridge.allocate("m-off", true, "a1", None).await;
    assert!(urls.is_empty(), "{urls:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", bridge.public)).await.is_err(),
        "no public server when websockets are off"
    );
    bridge.stop().await;
}

/// The media core expiring the endpoint on its own (ICE never connected within
/// `sfu.connect_timeout`) closes its websocket with 1001 "endpoint closed" too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_expiry_closes_the_socket() {
    let bridge = Bridge::start(|c| c.sfu.connect_timeout = Duration::from_secs(1));
    let url = bridge.allocate("m-core", true, "a1", None).await.remove(0);
    let mut ws = connect(&url).await;
    until_class(&mut ws, "ForwardedSources").await;
    assert_eq!(close_frame(&mut ws).await, (1001, "endpoint closed".to_owned()));
    assert_eq!(refused(&url).await.0, 403);
    bridge.stop().await;
}
