//! Operations with a real Prosody and the `palim` binary (issue 7):
//!
//! * graceful shutdown: SIGTERM while a conference has media → presence `graceful_shutdown`,
//!   a new conference refused with `graceful_shutdown`, media keeps flowing; when the
//!   conference ends → presence `shutting_down`, then the process exits 0;
//! * a second SIGTERM stops the process within 5 s;
//! * Prosody stopped for 30 s and started again: Palim rejoins the brewery within 10 s of its
//!   return, and the media of the running conference never stops (~50 s).
//!
//! Run: `cargo test -p signaling --test ops_prosody -- --nocapture` (skips without prosody
//! unless CI is set). `PALIM_TEST_LOG=1` prints Palim's log at the end of each test.

mod support;

#[path = "../../sfu/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

use common::{payload, Client};
use minidom::Element;
use signaling::xmpp::{IqType, PresenceEvent, SendIqError};
use support::colibri::*;
use support::{ice_check, Prosody, TestFocus, BREWERY, JVB};

const PALIM: &str = env!("CARGO_BIN_EXE_palim");

// ------------------------------------------------------------------------------------------
// The palim binary against the test Prosody.

struct PalimProcess {
    child: Option<Child>,
    nick: String,
    rest_port: u16,
    log: PathBuf,
}

impl PalimProcess {
    fn start(prosody: &Prosody, nick: &str) -> Self {
        Self::start_with(prosody, nick, &[])
    }

    /// With another `[ice]` section.
    fn start_ice(prosody: &Prosody, nick: &str, ice: &str) -> Self {
        Self::start_full(prosody, nick, &[], ice)
    }

    /// `more_servers`: c2s ports of further Prosodys on 127.0.0.1 (same accounts).
    fn start_with(prosody: &Prosody, nick: &str, more_servers: &[u16]) -> Self {
        Self::start_full(
            prosody,
            nick,
            more_servers,
            "bind_address = \"127.0.0.1\"\nudp_port = 0\nhost_addresses = [\"127.0.0.1\"]",
        )
    }

    fn start_full(prosody: &Prosody, nick: &str, more_servers: &[u16], ice: &str) -> Self {
        let rest_port = free_tcp_port();
        let additional: Vec<String> = more_servers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let dir = prosody.dir().join(format!("palim-{nick}"));
        std::fs::create_dir_all(&dir).expect("palim test dir");
        let config = format!(
            r#"
[ice]
{ice}

[xmpp]
enabled = true
host = "127.0.0.1"
port = {port}
domain = "{domain}"
username = "{user}"
password = "{pass}"
muc_jids = ["{BREWERY}"]
muc_nickname = "{nick}"
disable_certificate_verification = true
presence_interval = "1s"
additional_servers = [{additional}]

[rest]
bind = "127.0.0.1:{rest_port}"
shutdown_enabled = true
stats_interval = "0s"

[shutdown]
shutting_down_delay = "1m"
"#,
            port = prosody.port(),
            domain = support::AUTH_DOMAIN,
            user = JVB.0,
            pass = JVB.1,
            additional = additional.join(", "),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.join("palim.log");
        let log_file = std::fs::File::create(&log).expect("palim log");
        let child = Command::new(PALIM)
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,signaling=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn palim");
        PalimProcess {
            child: Some(child),
            nick: nick.into(),
            rest_port,
            log,
        }
    }

    fn occupant(&self) -> String {
        TestFocus::occupant(&self.nick)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("palim is running").id()
    }

    /// SIGTERM to our own child, by pid.
    fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("palim exited early ({status}); log:\n{}", self.logs());
            }
        }
    }

    /// Waits for the exit; its status, or panics after `within`.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("palim is running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!("palim did not exit within {within:?}; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn rest(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        support::http_request(self.rest_port, method, path, body).await
    }

    async fn stats(&self) -> serde_json::Value {
        let (status, body) = self.rest("GET", "/colibri/stats", "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats not JSON ({e}): {body}"))
    }
}

impl Drop for PalimProcess {
    fn drop(&mut self) {
        if std::env::var_os("PALIM_TEST_LOG").is_some() {
            eprintln!("--- palim log ({})\n{}", self.nick, self.logs());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stat<'a>(ev: &'a PresenceEvent, name: &str) -> Option<&'a str> {
    ev.stats
        .as_deref()?
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn setup(test: &str, nick: &str) -> Option<(Prosody, TestFocus, PalimProcess)> {
    let prosody = Prosody::start_or_skip(test).await?;
    let mut focus = TestFocus::join(&prosody).await;
    let mut palim = PalimProcess::start(&prosody, nick);
    let ev = focus
        .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && ev.stats.is_some())
        .await;
    palim.assert_running();
    assert_eq!(stat(&ev, "graceful_shutdown"), Some("false"));
    assert_eq!(stat(&ev, "shutting_down"), Some("false"));
    assert_eq!(stat(&ev, "drain"), Some("false"));
    assert_eq!(stat(&ev, "healthy"), Some("true"));
    Some((prosody, focus, palim))
}

// ------------------------------------------------------------------------------------------
// Colibri2 as Jicofo sends it (a minimal offer: opus and VP8), and str0m clients.

async fn modify(focus: &TestFocus, palim: &PalimProcess, what: &str, req: Element) -> Element {
    modify_at(focus, &palim.occupant(), what, req, || palim.logs()).await
}

struct Peer {
    tag: u8,
    client: Client,
}

/// Allocates `meeting` with two endpoints through the focus and connects two str0m clients
/// (ICE, DTLS); returns them connected.
async fn two_party_call(focus: &TestFocus, palim: &PalimProcess, meeting: &str) -> Vec<Peer> {
    common::init_crypto();
    let now = Instant::now();
    let mut peers = Vec::new();
    for (i, tag) in [1u8, 2].into_iter().enumerate() {
        let id = format!("ep{tag}");
        let create = (i == 0).then_some("opsroom@muc.meet.jitsi");
        let m = modify(
            focus,
            palim,
            "allocate",
            conference_modify(meeting, create, &endpoint_create(&id)),
        )
        .await;
        let bridge = bridge_transport(&m);
        let mut client = Client::new(now, audio_ssrc(tag), video_ssrc(tag));
        let rt = client.remote_transport();
        let fp = rt.fingerprints.first().expect("str0m fingerprint").value.clone();
        let cands: String = rt
            .candidates
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    r#"<candidate component="1" foundation="{f}" generation="0" id="c{i}" network="1" priority="2130706431" protocol="udp" type="host" ip="{ip}" port="{port}"/>"#,
                    f = 842163049 + i,
                    ip = a.ip(),
                    port = a.port()
                )
            })
            .collect();
        let inner = format!(
            r#"<endpoint id="{id}" stats-id="{id}-s"><transport><transport xmlns="{ICE_UDP}" ufrag="{u}" pwd="{p}"><rtcp-mux/><fingerprint xmlns="{DTLS}" hash="sha-256" setup="active">{fp}</fingerprint>{cands}</transport></transport><sources><media-source type="audio" id="{id}-a0"><source xmlns="{SSMA}" ssrc="{a}" name="{id}-a0"/></media-source><media-source type="video" id="{id}-v0"><source xmlns="{SSMA}" ssrc="{v}" name="{id}-v0" videoType="camera"/></media-source></sources></endpoint>"#,
            u = rt.ufrag.as_deref().unwrap_or_default(),
            p = rt.pwd.as_deref().unwrap_or_default(),
            fp = colon_hex(&fp),
            a = audio_ssrc(tag),
            v = video_ssrc(tag),
        );
        modify(focus, palim, "session-accept", conference_modify(meeting, None, &inner)).await;
        client.connect(&bridge);
        peers.push(Peer { tag, client });
    }
    for p in peers.iter_mut() {
        let other = 3 - p.tag;
        p.client.expect_rx(audio_ssrc(other), video_ssrc(other));
    }
    let peers = tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && !peers.iter().all(|p| p.client.connected) {
            for p in peers.iter_mut() {
                p.client.drive(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        peers
    })
    .await
    .expect("client thread");
    assert!(
        peers.iter().all(|p| p.client.connected),
        "clients did not connect within 20 s; log:\n{}",
        palim.logs()
    );
    peers
}

/// Both clients send audio (20 ms) and video (100 ms) on a thread until stopped, and record
/// the longest time either went without receiving the other's media.
struct Media {
    stop: Arc<AtomicBool>,
    /// Reset the gap statistics (e.g. after a phase of interest starts).
    thread: std::thread::JoinHandle<MediaReport>,
}

#[derive(Debug)]
struct MediaReport {
    /// Longest stretch without a packet, per peer.
    max_gap: Vec<Duration>,
    received: Vec<usize>,
    sent_audio: u32,
}

impl Media {
    fn start(mut peers: Vec<Peer>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let (mut next_audio, mut next_video) = (start, start);
            let (mut n_audio, mut n_video) = (0u32, 0u32);
            let mut last_rx = vec![start; peers.len()];
            let mut seen = vec![0usize; peers.len()];
            let mut max_gap = vec![Duration::ZERO; peers.len()];
            let mut received = vec![0usize; peers.len()];
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next_audio {
                    for p in peers.iter_mut() {
                        p.client.send_audio(now, &payload(p.tag, b'a', n_audio, 80));
                    }
                    n_audio += 1;
                    next_audio += Duration::from_millis(20);
                }
                if now >= next_video {
                    for p in peers.iter_mut() {
                        p.client.send_video(now, &payload(p.tag, b'v', n_video, 600));
                    }
                    n_video += 1;
                    next_video += Duration::from_millis(100);
                }
                for (i, p) in peers.iter_mut().enumerate() {
                    p.client.drive(now);
                    let n = p.client.received.len();
                    if n > seen[i] {
                        received[i] += n - seen[i];
                        last_rx[i] = now;
                        p.client.received.clear();
                        seen[i] = 0;
                    } else {
                        max_gap[i] = max_gap[i].max(now - last_rx[i]);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            MediaReport {
                max_gap,
                received,
                sent_audio: n_audio,
            }
        });
        Media { stop, thread }
    }

    fn finish(self) -> MediaReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("media thread")
    }
}

fn check_media(report: &MediaReport, what: &str) {
    for (i, gap) in report.max_gap.iter().enumerate() {
        assert!(
            *gap < Duration::from_secs(1),
            "{what}: peer {i} went {gap:?} without media: {report:?}"
        );
        // Audio alone is 50 packets a second from the other side.
        assert!(
            report.received[i] as u64 * 100 >= u64::from(report.sent_audio) * 90,
            "{what}: peer {i} received too little: {report:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_media_then_exits_zero() {
    let nick = "palim-ops-graceful";
    let Some((_prosody, mut focus, mut palim)) = setup("ops_graceful", nick).await else {
        return;
    };
    let meeting = "0c7a1e52-3f4b-4d7a-9e1f-6b2d8c9a4e10";
    let peers = two_party_call(&focus, &palim, meeting).await;
    let media = Media::start(peers);

    // Drain is announced at once and refuses nothing by itself.
    assert_eq!(palim.rest("POST", "/colibri/drain/enable", "").await.0, 200);
    let t = Instant::now();
    focus
        .wait_presence(nick, Duration::from_secs(3), |ev| stat(ev, "drain") == Some("true"))
        .await;
    println!("drain=true in presence {:?} after the REST call", t.elapsed());
    assert_eq!(palim.rest("GET", "/colibri/drain", "").await.1, r#"{"drain":true}"#);
    assert_eq!(palim.rest("POST", "/colibri/drain/disable", "").await.0, 200);
    focus
        .wait_presence(nick, Duration::from_secs(3), |ev| stat(ev, "drain") == Some("false"))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // SIGTERM: GRACEFUL_SHUTDOWN, advertised.
    palim.sigterm();
    let ev = focus
        .wait_presence(nick, Duration::from_secs(5), |ev| {
            stat(ev, "graceful_shutdown") == Some("true")
        })
        .await;
    assert_eq!(
        stat(&ev, "shutting_down"),
        Some("false"),
        "graceful first: {:?}",
        ev.stats
    );
    palim.assert_running();
    let st = palim.stats().await;
    assert_eq!(st["graceful_shutdown"], true, "{st}");
    assert_eq!(st["shutdown_state"], "GRACEFUL_SHUTDOWN", "{st}");
    let (_, metrics) = palim.rest("GET", "/metrics", "").await;
    assert!(metrics.contains("\njitsi_jvb_graceful_shutdown 1.0\n"), "{metrics}");

    // A new conference is refused with the graceful_shutdown reason (colibri.md §3.12, §7.1).
    let r = focus
        .client
        .send_iq(
            &palim.occupant(),
            IqType::Get,
            conference_modify(
                "11111111-2222-3333-4444-555555555555",
                Some("new@muc.meet.jitsi"),
                &endpoint_create("x1"),
            ),
            IQ_WAIT,
        )
        .await;
    match r {
        Err(SendIqError::Stanza(e)) => {
            assert_eq!(e.condition, signaling::xmpp::Condition::ServiceUnavailable, "{e:?}");
            assert!(
                e.extensions
                    .iter()
                    .any(|x| x.ns() == COLIBRI2 && x.attr("reason") == Some("graceful_shutdown")),
                "{e:?}"
            );
        }
        other => panic!("new conference during graceful shutdown: expected an error, got {other:?}"),
    }

    // The running conference keeps its media for a while longer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    palim.assert_running();
    let report = media.finish();
    check_media(&report, "during graceful shutdown");
    println!("media during graceful shutdown: {report:?}");

    // Jicofo ends the conference: SHUTTING_DOWN is advertised, then the process exits 0.
    modify(
        &focus,
        &palim,
        "expire conference",
        parse(&format!(
            r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting}" expire="true"/>"#
        )),
    )
    .await;
    let ev = focus
        .wait_presence(nick, Duration::from_secs(5), |ev| {
            stat(ev, "shutting_down") == Some("true")
        })
        .await;
    assert!(ev.available);
    let status = palim.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", palim.logs());
    // It left the brewery.
    focus
        .wait_presence(nick, Duration::from_secs(5), |ev| !ev.available)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_within_5s() {
    let nick = "palim-ops-second";
    let Some((_prosody, focus, mut palim)) = setup("ops_second", nick).await else {
        return;
    };
    // A conference with an endpoint keeps the graceful phase from ending by itself.
    modify(
        &focus,
        &palim,
        "allocate",
        conference_modify(
            "22222222-3333-4444-5555-666666666666",
            Some("r@muc.meet.jitsi"),
            &endpoint_create("e1"),
        ),
    )
    .await;
    palim.sigterm();
    tokio::time::sleep(Duration::from_secs(2)).await;
    palim.assert_running();
    assert_eq!(palim.stats().await["shutdown_state"], "GRACEFUL_SHUTDOWN");
    let t = Instant::now();
    palim.sigterm();
    let status = palim.wait_exit(Duration::from_secs(5)).await;
    println!("exited {:?} after the second SIGTERM with {status}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_after_prosody_restart_and_media_never_stops() {
    let nick = "palim-ops-restart";
    let Some((mut prosody, focus, mut palim)) = setup("ops_restart", nick).await else {
        return;
    };
    let peers = two_party_call(&focus, &palim, "33333333-4444-5555-6666-777777777777").await;
    let media = Media::start(peers);
    drop(focus);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(palim.stats().await["mucs_joined"], 1);

    prosody.stop();
    let down = Instant::now();
    // Palim notices.
    loop {
        if palim.stats().await["muc_clients_connected"] == 0 {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "Palim did not notice Prosody stopping"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Health does not depend on XMPP.
    assert_eq!(palim.rest("GET", "/about/health", "").await.0, 200);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    palim.assert_running();

    prosody.start_again().await;
    let back = Instant::now();
    loop {
        let st = palim.stats().await;
        if st["mucs_joined"] == 1 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "Palim did not rejoin within 10 s of Prosody's return: {st}; log:\n{}",
            palim.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("rejoined {:?} after Prosody came back", back.elapsed());
    let st = palim.stats().await;
    assert!(st["xmpp_disconnects"].as_u64().unwrap_or(0) >= 1, "{st}");

    // Jicofo (a new focus) sees the bridge again, with stats.
    let mut focus = TestFocus::join(&prosody).await;
    focus
        .wait_presence(nick, Duration::from_secs(10), |ev| ev.available && ev.stats.is_some())
        .await;

    let report = media.finish();
    println!("media across the XMPP outage: {report:?}");
    check_media(&report, "across the XMPP outage");
}

/// Two XMPP servers (JVB's several `xmpp-client.configs`): one connection and one brewery
/// presence each; Colibri2 from either brewery is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_xmpp_servers_each_get_presence() {
    let nick = "palim-ops-shards";
    let Some(prosody1) = Prosody::start_or_skip("ops_shard1").await else {
        return;
    };
    let Some(prosody2) = Prosody::start_or_skip("ops_shard2").await else {
        return;
    };
    let mut focus1 = TestFocus::join(&prosody1).await;
    let mut focus2 = TestFocus::join(&prosody2).await;
    let mut palim = PalimProcess::start_with(&prosody1, nick, &[prosody2.port()]);
    for focus in [&mut focus1, &mut focus2] {
        focus
            .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && ev.stats.is_some())
            .await;
    }
    palim.assert_running();
    // Palim marks a room joined when its own presence comes back, which may be a moment
    // after the focus saw it.
    let t = Instant::now();
    loop {
        let st = palim.stats().await;
        assert_eq!(st["muc_clients_configured"], 2, "{st}");
        if st["muc_clients_connected"] == 2 && st["mucs_joined"] == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each server's Jicofo can allocate.
    modify(
        &focus1,
        &palim,
        "allocate via server 1",
        conference_modify(
            "44444444-0000-0000-0000-000000000001",
            Some("a@muc.meet.jitsi"),
            &endpoint_create("s1"),
        ),
    )
    .await;
    modify(
        &focus2,
        &palim,
        "allocate via server 2",
        conference_modify(
            "44444444-0000-0000-0000-000000000002",
            Some("b@muc.meet.jitsi"),
            &endpoint_create("s2"),
        ),
    )
    .await;
    // Both presences count both conferences.
    for focus in [&mut focus1, &mut focus2] {
        focus
            .wait_presence(nick, Duration::from_secs(5), |ev| stat(ev, "conferences") == Some("2"))
            .await;
    }
}

/// The media socket bound to `::` (dual stack, Linux's default) serves IPv4 clients (two
/// str0m clients exchange media) and IPv6 clients (a hand-made ICE check from ::1 is
/// answered) on the same port, with a host candidate of each family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_media_port() {
    let nick = "palim-ops-v6";
    let Some(prosody) = Prosody::start_or_skip("ops_v6").await else {
        return;
    };
    let mut focus = TestFocus::join(&prosody).await;
    let palim = PalimProcess::start_ice(
        &prosody,
        nick,
        "bind_address = \"::\"\nudp_port = 0\nhost_addresses = [\"127.0.0.1\", \"::1\"]",
    );
    focus
        .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && ev.stats.is_some())
        .await;
    let peers = two_party_call(&focus, &palim, "55555555-0000-0000-0000-000000000001").await;
    let media = Media::start(peers);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = media.finish();
    println!("IPv4 clients through a dual-stack socket: {report:?}");
    check_media(&report, "dual stack");

    // An IPv6 client: the same port answers its ICE connectivity check on ::1.
    let meeting = "55555555-0000-0000-0000-000000000002";
    let m = modify(
        &focus,
        &palim,
        "allocate v6",
        conference_modify(meeting, Some("v6@muc.meet.jitsi"), &endpoint_create("v6")),
    )
    .await;
    let bridge = bridge_transport(&m);
    let v4 = bridge
        .candidates
        .iter()
        .find(|c| c.addr.is_ipv4())
        .expect("an IPv4 host candidate")
        .addr;
    let v6 = bridge
        .candidates
        .iter()
        .find(|c| c.addr.is_ipv6())
        .unwrap_or_else(|| panic!("no IPv6 candidate: {:?}", bridge.candidates))
        .addr;
    assert_eq!(v4.port(), v6.port(), "one port for both families");
    let client = UdpSocket::bind("[::1]:0").await.expect("bind ::1");
    let (ufrag, pwd) = ("v6cl", "v6clientpassword0123456789");
    let inner = format!(
        r#"<endpoint id="v6" stats-id="v6-s"><transport><transport xmlns="{ICE_UDP}" ufrag="{ufrag}" pwd="{pwd}"><rtcp-mux/><fingerprint xmlns="{DTLS}" hash="sha-256" setup="active">{fp}</fingerprint><candidate component="1" foundation="1" generation="0" id="c0" network="1" priority="2130706431" protocol="udp" type="host" ip="::1" port="{port}"/></transport></transport></endpoint>"#,
        fp = colon_hex(&[0xAB; 32]),
        port = client.local_addr().expect("addr").port(),
    );
    modify(&focus, &palim, "v6 transport", conference_modify(meeting, None, &inner)).await;
    let txid = [0x5a; 12];
    let req = ice_check(&txid, &format!("{}:{ufrag}", bridge.ufrag), &bridge.pwd);
    let mut buf = [0u8; 1500];
    let mut answer = None;
    for _ in 0..10 {
        client.send_to(&req, v6).await.expect("send the check");
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await {
            if from == v6 {
                answer = signaling::stun::parse_binding_response(&buf[..n], &txid);
                if answer.is_some() {
                    break;
                }
            }
        }
    }
    let mapped = answer.unwrap_or_else(|| panic!("no ICE answer on {v6}; log:\n{}", palim.logs()));
    assert_eq!(
        mapped,
        client.local_addr().expect("addr"),
        "XOR-MAPPED-ADDRESS is the v6 client"
    );
}
