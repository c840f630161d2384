//! Robustness case 51 against the `palim` binary: with `[limits] memory_limit_mib = 256` and
//! 256 MiB of ballast (the `[rest] fault_injection` hook `POST /debug/fault/ballast`, which
//! allocates and touches memory inside the bridge), the bridge sheds load: `/about/health` 503
//! with the reason, stress 1.0 in `/colibri/stats`, `/metrics` and the brewery presence, a new
//! endpoint and a new conference refused over XMPP with `service-unavailable` "Limit reached:
//! memory" (counted in `palim_limit_refusals_total{limit="memory"}`), while the existing
//! endpoint's update is answered and the XMPP health check passes (Jicofo would move every
//! conference away from a bridge failing it). Freeing the ballast ends the shedding (below 75 %)
//! and the refused endpoint is then accepted.
//!
//! Uses a real Prosody like `faults.rs` (skipped without `prosody` unless `CI` is set).
//! Run: `cargo test -p signaling --test memory_pressure -- --nocapture`.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minidom::Element;
use signaling::xmpp::{Condition, IqType, SendIqError};
use support::{Prosody, TestFocus, BREWERY, JVB};

const PALIM: &str = env!("CARGO_BIN_EXE_palim");
const COLIBRI2: &str = "jitsi:colibri2";
const SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
const LIMIT_MIB: u64 = 256;
const MIB: f64 = (1u64 << 20) as f64;

struct Palim {
    child: Child,
    rest_port: u16,
    log: PathBuf,
}

impl Palim {
    fn start(prosody: &Prosody, nick: &str) -> Self {
        let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral loopback port")
            .port();
        let dir = prosody.dir().join(format!("palim-{nick}"));
        std::fs::create_dir_all(&dir).expect("palim test dir");
        let config = format!(
            r#"
[ice]
bind_address = "127.0.0.1"
udp_port = 0
host_addresses = ["127.0.0.1"]

[xmpp]
enabled = true
host = "127.0.0.1"
port = {xmpp_port}
domain = "{domain}"
username = "{user}"
password = "{pass}"
muc_jids = ["{BREWERY}"]
muc_nickname = "{nick}"
disable_certificate_verification = true
presence_interval = "1s"

[rest]
bind = "127.0.0.1:{rest_port}"
stats_interval = "0s"
fault_injection = true

[limits]
memory_limit_mib = {LIMIT_MIB}
"#,
            xmpp_port = prosody.port(),
            domain = support::AUTH_DOMAIN,
            user = JVB.0,
            pass = JVB.1,
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
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn palim");
        Palim { child, rest_port, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn rest(&self, method: &str, path: &str) -> (u16, String) {
        support::http_request(self.rest_port, method, path, "").await
    }

    async fn stats(&self) -> serde_json::Value {
        let (status, body) = self.rest("GET", "/colibri/stats").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats not JSON ({e}): {body}"))
    }

    async fn metric(&self, sample: &str) -> f64 {
        let (status, body) = self.rest("GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample}"))
    }

    /// Polls `/colibri/stats` until `memory_shedding` is `want`; the time it took.
    async fn wait_shedding(&self, want: bool, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let st = self.stats().await;
            if st["memory_shedding"] == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "memory_shedding not {want} within {within:?}: {st}\nlog:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Palim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(xml: &str) -> Element {
    xml.parse().unwrap_or_else(|e| panic!("test XML ({e}): {xml}"))
}

fn modify(meeting: &str, create: bool, inner: &str) -> Element {
    let create = if create {
        format!(r#" name="{meeting}@conference.meet.jitsi" create="true""#)
    } else {
        String::new()
    };
    parse(&format!(
        r#"<conference-modify xmlns="{COLIBRI2}" meeting-id="{meeting}"{create}>{inner}</conference-modify>"#
    ))
}

fn endpoint_create(id: &str) -> String {
    format!(
        r#"<endpoint xmlns="{COLIBRI2}" id="{id}" create="true" stats-id="{id}-s"><transport xmlns="{COLIBRI2}" ice-controlling="true"/><capability name="source-names"/></endpoint>"#
    )
}

/// An update of an existing endpoint: one audio source.
fn endpoint_sources(id: &str, ssrc: u32) -> String {
    format!(
        r#"<endpoint xmlns="{COLIBRI2}" id="{id}"><sources><media-source type="audio" id="{id}-a0"><source xmlns="{SSMA}" ssrc="{ssrc}" name="{id}-a0"/></media-source></sources></endpoint>"#
    )
}

fn stress(ev: &signaling::xmpp::PresenceEvent) -> Option<f64> {
    ev.stats
        .as_ref()?
        .iter()
        .find(|(k, _)| k == "stress_level")
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_sheds_load_and_recovers() {
    let Some(prosody) = Prosody::start_or_skip("memory_pressure").await else {
        return;
    };
    let mut focus = TestFocus::join(&prosody).await;
    let nick = "palim-memory";
    let palim = Palim::start(&prosody, nick);
    focus
        .wait_presence(nick, Duration::from_secs(20), |ev| ev.available && stress(ev).is_some())
        .await;
    let bridge = TestFocus::occupant(nick);
    let wait = Duration::from_secs(10);
    let client = focus.client.clone();
    let iq = |req: Element| {
        let client = client.clone();
        let bridge = bridge.clone();
        async move { client.send_iq(&bridge, IqType::Get, req, wait).await }
    };

    // Before: healthy, one conference with one endpoint.
    assert_eq!(palim.rest("GET", "/about/health").await.0, 200);
    iq(modify("m1", true, &endpoint_create("a")))
        .await
        .expect("conference m1 with endpoint a");
    let st = palim.stats().await;
    assert_eq!(st["memory_shedding"], false, "{st}");
    assert_eq!(st["memory_limit_bytes"], LIMIT_MIB << 20, "{st}");
    let rss_before = st["memory_rss_bytes"].as_u64().expect("rss") as f64 / MIB;
    assert!(
        rss_before > 1.0 && rss_before < 0.7 * LIMIT_MIB as f64,
        "RSS {rss_before} MiB"
    );

    // Ballast: 256 MiB on top of the bridge's own memory is over 85 % of 256 MiB.
    let (status, body) = palim
        .rest("POST", &format!("/debug/fault/ballast?mib={LIMIT_MIB}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let took = palim.wait_shedding(true, Duration::from_secs(5)).await;
    eprintln!("shedding {took:?} after the ballast (RSS before {rss_before:.1} MiB)");

    let (status, body) = palim.rest("GET", "/about/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("memory pressure") && body.contains("limits.memory_limit_mib"),
        "{body}"
    );
    let st = palim.stats().await;
    assert_eq!(st["stress_level"].as_f64(), Some(1.0), "{st}");
    assert_eq!(st["healthy"], true, "the bridge itself works: {st}");
    let rss = st["memory_rss_bytes"].as_u64().expect("rss") as f64 / MIB;
    assert!(rss >= 0.85 * LIMIT_MIB as f64, "RSS {rss} MiB");
    focus
        .wait_presence(nick, Duration::from_secs(5), |ev| stress(ev) == Some(1.0))
        .await;

    // A new endpoint in the existing conference, and a new conference: refused, counted.
    for (what, req) in [
        ("new endpoint", modify("m1", false, &endpoint_create("b"))),
        ("new conference", modify("m2", true, &endpoint_create("c"))),
    ] {
        match iq(req).await {
            Err(SendIqError::Stanza(e)) => {
                assert_eq!(e.condition, Condition::ServiceUnavailable, "{what}: {e:?}");
                assert!(
                    e.text.as_deref().unwrap_or_default().contains("Limit reached: memory"),
                    "{what}: {e:?}"
                );
            }
            other => panic!("{what} while shedding: expected service-unavailable, got {other:?}"),
        }
    }
    // The existing endpoint is still served, and Jicofo's health check passes.
    iq(modify("m1", false, &endpoint_sources("a", 1111)))
        .await
        .expect("the existing endpoint's update is answered");
    focus
        .health_check(nick)
        .await
        .expect("health-check IQ answered while shedding");
    let st = palim.stats().await;
    assert_eq!(
        (st["conferences"].as_u64(), st["endpoints"].as_u64()),
        (Some(1), Some(1)),
        "{st}"
    );
    assert_eq!(palim.metric("palim_memory_shedding").await, 1.0);
    assert_eq!(palim.metric(r#"palim_limit_refusals_total{limit="memory"}"#).await, 2.0);
    assert_eq!(palim.metric("palim_memory_limit_bytes").await, (LIMIT_MIB << 20) as f64);
    assert_eq!(palim.metric("jitsi_jvb_stress").await, 1.0);

    // Recovery: free the ballast; below 75 % the bridge takes new work again.
    let (status, body) = palim.rest("DELETE", "/debug/fault/ballast").await;
    assert_eq!(status, 200, "{body}");
    let took = palim.wait_shedding(false, Duration::from_secs(5)).await;
    eprintln!("recovered {took:?} after freeing the ballast");
    assert_eq!(palim.rest("GET", "/about/health").await.0, 200);
    let st = palim.stats().await;
    assert!(st["stress_level"].as_f64().is_some_and(|s| s < 1.0), "{st}");
    focus
        .wait_presence(nick, Duration::from_secs(5), |ev| stress(ev).is_some_and(|s| s < 1.0))
        .await;
    iq(modify("m1", false, &endpoint_create("b")))
        .await
        .expect("a new endpoint is accepted again");
    let st = palim.stats().await;
    assert_eq!(st["endpoints"].as_u64(), Some(2), "{st}");
    assert_eq!(palim.metric(r#"palim_limit_refusals_total{limit="memory"}"#).await, 2.0);
    let log = palim.logs();
    assert!(!log.contains("panicked"), "{log}");
}
