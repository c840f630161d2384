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

use std::time::Duration;

use minidom::Element;
use signaling::xmpp::{Condition, IqType, SendIqError};
use support::palim::{PalimConfig, PalimProcess};
use support::{Prosody, TestFocus};

const COLIBRI2: &str = "jitsi:colibri2";
const SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
const LIMIT_MIB: u64 = 256;
const MIB: f64 = (1u64 << 20) as f64;

fn start_palim(prosody: &Prosody, nick: &str) -> PalimProcess {
    let config = PalimConfig {
        rest_extra: "fault_injection = true".into(),
        tail: format!("[limits]\nmemory_limit_mib = {LIMIT_MIB}\n"),
        ..PalimConfig::default()
    };
    PalimProcess::start(prosody, nick, config)
}

async fn metric(palim: &PalimProcess, sample: &str) -> f64 {
    palim
        .metric(sample)
        .await
        .unwrap_or_else(|| panic!("no sample {sample}"))
}

/// Polls `/colibri/stats` until `memory_shedding` is `want`; the time it took.
async fn wait_shedding(palim: &PalimProcess, want: bool, within: Duration) -> Duration {
    let what = format!("memory_shedding {want}");
    palim
        .wait_stats(within, &what, |st| st["memory_shedding"] == want)
        .await
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
    let palim = start_palim(&prosody, nick);
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
    assert_eq!(palim.rest("GET", "/about/health", "").await.0, 200);
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
        .rest("POST", &format!("/debug/fault/ballast?mib={LIMIT_MIB}"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    let took = wait_shedding(&palim, true, Duration::from_secs(5)).await;
    eprintln!("shedding {took:?} after the ballast (RSS before {rss_before:.1} MiB)");

    let (status, body) = palim.rest("GET", "/about/health", "").await;
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
    assert_eq!(metric(&palim, "palim_memory_shedding").await, 1.0);
    assert_eq!(
        metric(&palim, r#"palim_limit_refusals_total{limit="memory"}"#).await,
        2.0
    );
    assert_eq!(
        metric(&palim, "palim_memory_limit_bytes").await,
        (LIMIT_MIB << 20) as f64
    );
    assert_eq!(metric(&palim, "jitsi_jvb_stress").await, 1.0);

    // Recovery: free the ballast; below 75 % the bridge takes new work again.
    let (status, body) = palim.rest("DELETE", "/debug/fault/ballast", "").await;
    assert_eq!(status, 200, "{body}");
    let took = wait_shedding(&palim, false, Duration::from_secs(5)).await;
    eprintln!("recovered {took:?} after freeing the ballast");
    assert_eq!(palim.rest("GET", "/about/health", "").await.0, 200);
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
    assert_eq!(
        metric(&palim, r#"palim_limit_refusals_total{limit="memory"}"#).await,
        2.0
    );
    let log = palim.logs();
    assert!(!log.contains("panicked"), "{log}");
}
