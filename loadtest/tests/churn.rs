//! Churn end to end (robustness.md cases 46/59 in small): the test starts the debug `palim`
//! itself, runs the harness against it with an endpoint leaving and a new one joining every
//! second and a whole conference replaced every 7 s for 18 s, and then checks, on the bridge
//! it still has running, that everything came back: `/colibri/stats` shows no conference and
//! no endpoint, and the process has as many file descriptors as before the run (± 2).

mod common;
use common::{harness, palim};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    common::scratch("churn", name)
}

/// A palim on free loopback ports, killed when dropped.
struct Bridge {
    child: Child,
    rest: String,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bridge {
    fn start() -> Self {
        let rest_port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let udp_port = UdpSocket::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let rest_addr: SocketAddr = ([127, 0, 0, 1], rest_port).into();
        let child = Command::new(palim())
            .args([
                "--udp-port",
                &udp_port.to_string(),
                "--rest-bind",
                &rest_addr.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .env_remove("XMPP_SERVER")
            .stdin(Stdio::null())
            .spawn()
            .expect("start palim");
        let bridge = Bridge {
            child,
            rest: format!("http://{rest_addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bridge.get("/about/health").is_none() {
            assert!(Instant::now() < deadline, "palim did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        bridge
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut resp = ureq::get(&format!("{}{path}", self.rest)).call().ok()?;
        resp.body_mut().read_to_string().ok()
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/colibri/stats").expect("stats")).expect("stats JSON")
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("palim's /proc fd dir")
            .count()
    }
}

#[test]
fn churn_joins_and_leaves_and_the_bridge_returns_to_zero() {
    let bridge = Bridge::start();
    let fds_before = bridge.fds();
    let scenario = scratch("churn.toml");
    std::fs::write(
        &scenario,
        r#"
name = "churn"
conferences = 2
endpoints = 3
join_rate = 30.0
duration = "18s"
warmup = "2s"
video_senders = 1
[receiver]
max_height = 180
[churn]
interval = "1s"
conference_interval = "7s"
min_age = "2s"
[resources]
interval = "1s"
"#,
    )
    .expect("write scenario");
    let json = scratch("result.json");
    let html = scratch("report.html");
    let out = Command::new(harness())
        .args(["--rest", &bridge.rest, "--bridge-pid", &bridge.child.id().to_string()])
        .arg("--scenario")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .arg("--quiet")
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid JSON");

    // Churn happened, and every joiner connected and received media.
    let c = &v["churn"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("churn.{k}: {c}"));
    assert!(n("leaves") >= 10, "{c}");
    assert!(n("joins") >= 10, "{c}");
    assert!(n("conferences_expired") >= 1 && n("conferences_created") >= 1, "{c}");
    assert_eq!(n("join_failures"), 0, "{c}");
    assert_eq!(n("expire_failures"), 0, "{c}");
    assert_eq!(n("joiners_connected"), n("joins"), "{c}");
    assert!(n("joiners_expecting_media") > 0, "{c}");
    assert_eq!(n("joiners_with_media"), n("joiners_expecting_media"), "{c}");
    assert!(
        c["join_ms_p50"].as_f64().is_some_and(|ms| ms > 0.0 && ms < 5000.0),
        "{c}"
    );
    // Everyone who ever joined connected; the initial 6 plus the joiners.
    assert_eq!(v["connected"], v["endpoints"], "{stderr}");
    assert_eq!(v["endpoints"].as_u64(), Some(6 + n("joins")));

    // The harness saw the bridge full at the end and empty after expiring everything.
    let r = &v["resources"];
    assert_eq!(r["stats_at_end"]["conferences"], 2, "{r}");
    assert_eq!(r["stats_at_end"]["endpoints"], 6, "{r}");
    assert_eq!(r["stats_after_expire"]["conferences"], 0, "{r}");
    assert!(r["samples"].as_array().is_some_and(|s| s.len() >= 15), "{r}");
    assert!(r["rss_start_mib"].as_f64().is_some_and(|m| m > 1.0), "{r}");

    // And independently of the harness: the bridge is empty and has its fds back.
    let stats = bridge.stats();
    assert_eq!(stats["conferences"], 0, "{stats}");
    assert_eq!(stats["endpoints"], 0, "{stats}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut fds_after = bridge.fds();
    while fds_after.abs_diff(fds_before) > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        fds_after = bridge.fds();
    }
    assert!(
        fds_after.abs_diff(fds_before) <= 2,
        "fds before {fds_before}, after {fds_after}"
    );
    let page = std::fs::read_to_string(&html).expect("report written");
    assert!(page.contains("Bridge RSS") && page.contains("churn"));
}
