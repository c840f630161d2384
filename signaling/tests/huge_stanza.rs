//! Robustness case 31 (robustness.md §4), the 5 MiB half: the focus sends a 5 MiB Colibri2
//! `conference-modify` to the `palim` binary through a real Prosody (tests/prosody/, laid out
//! like docker-jitsi-meet), twice:
//!
//! 1. Prosody as deployed: Prosody 0.12's `c2s_stanza_size_limit` (256 KiB by default) stops
//!    the stanza at the sender. Prosody closes the focus's stream (`policy-violation`, "XML
//!    stanza is too big", read from its debug log) and the stanza never reaches the bridge: the
//!    focus's IQ fails and its client reconnects, while Palim is unaffected (health 200, no
//!    XMPP disconnect, still in the brewery, its conference kept) and the next normal
//!    allocation from the reconnected focus is served.
//! 2. Prosody with the limit raised to 16 MiB, so the stanza is delivered: Palim's stream
//!    reader skips it past its 1 MiB stanza limit (`XmppConfig::max_stanza_size`) without
//!    buffering the rest and answers the IQ `policy-violation`; its XMPP session stays up (no
//!    disconnect), health 200, the conference kept, none of the request's endpoints created,
//!    and the focus's next request is served.
//!
//! Run: `cargo test -p signaling --test huge_stanza -- --nocapture` (skips without prosody
//! unless CI is set). One test: it sets the environment start-prosody.sh reads.

mod support;

use std::time::{Duration, Instant};

use minidom::Element;
use signaling::xmpp::{Condition, IqType, SendIqError};
use support::colibri::{conference_modify, endpoint_create};
use support::palim::{PalimConfig, PalimProcess};
use support::{wait_state, Prosody, TestFocus};

const COLIBRI2: &str = "jitsi:colibri2";
const SIZE: usize = 5 << 20;

/// A well-formed conference-modify of at least `SIZE` bytes of XML: endpoint elements.
fn huge_request(meeting: &str) -> (Element, usize) {
    let mut text = format!("<conference-modify xmlns='{COLIBRI2}' meeting-id='{meeting}'>");
    let mut i = 0u32;
    while text.len() < SIZE {
        text.push_str(&format!("<endpoint id='{i:08x}' create='true'/>"));
        i += 1;
    }
    text.push_str("</conference-modify>");
    let len = text.len();
    (text.parse().expect("well-formed"), len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_stanza_through_prosody_keeps_palim_and_its_conferences() {
    // Read by start-prosody.sh; the only test in this binary, so no other test sees them.
    std::env::set_var("PROSODY_LOG_LEVEL", "debug");
    std::env::remove_var("PROSODY_C2S_STANZA_SIZE_LIMIT");
    let Some(prosody) = Prosody::start_or_skip("huge_stanza_default").await else {
        return;
    };
    stopped_by_prosody(prosody).await;
    std::env::set_var("PROSODY_C2S_STANZA_SIZE_LIMIT", (16u32 << 20).to_string());
    let Some(prosody) = Prosody::start_or_skip("huge_stanza_raised").await else {
        return;
    };
    refused_by_palim(prosody).await;
}

/// Phase 1: Prosody's default limit.
/// A focus and a palim in the brewery, with one conference (`meeting`, in `room`) the bridge
/// must keep; the focus's session count before the huge stanza.
async fn setup(prosody: &Prosody, name: &str, meeting: &str, room: &str) -> (TestFocus, PalimProcess, u64) {
    let mut focus = TestFocus::join(prosody).await;
    let palim = PalimProcess::start(prosody, name, PalimConfig::default());
    focus
        .wait_presence(&palim.nick, Duration::from_secs(30), |ev| {
            ev.available && ev.stats.is_some()
        })
        .await;
    palim.wait_xmpp_connected(1.0, Duration::from_secs(5)).await;
    palim
        .modify(
            &focus,
            "create",
            conference_modify(meeting, Some(room), &endpoint_create("aaaa")),
        )
        .await;
    let sessions_before = focus.client.state().sessions;
    (focus, palim, sessions_before)
}

/// Sends the 5 MiB conference-modify for `meeting` to `palim`; it must not succeed. The result.
async fn send_huge(
    focus: &TestFocus,
    palim: &PalimProcess,
    meeting: &str,
    wait: Duration,
    label: &str,
) -> Result<Option<Element>, SendIqError> {
    let (big, len) = huge_request(meeting);
    let t = Instant::now();
    let r = focus.client.send_iq(&palim.occupant(), IqType::Get, big, wait).await;
    println!(
        "case 31 ({label}): {len}-byte conference-modify: {r:?} after {:?}",
        t.elapsed()
    );
    assert!(r.is_err(), "a 5 MiB stanza was answered with a result: {r:?}");
    r
}

async fn stopped_by_prosody(prosody: Prosody) {
    let meeting = "31313131-0000-0000-0000-000000000001";
    let (focus, mut palim, sessions_before) = setup(&prosody, "palim-huge", meeting, "huge@muc.example").await;
    let _ = send_huge(&focus, &palim, meeting, Duration::from_secs(20), "Prosody default").await;
    // Prosody closed the focus's stream; the focus logs in and joins again.
    wait_state(&focus.client, Duration::from_secs(30), "focus reconnected", |s| {
        s.sessions > sessions_before && s.all_joined()
    })
    .await;
    let state = focus.client.state();
    println!(
        "case 31 (Prosody default): focus sessions {sessions_before} -> {}, last error {:?}",
        state.sessions, state.last_error
    );
    let prosody_log = std::fs::read_to_string(prosody.dir().join("prosody.log")).unwrap_or_default();
    let closed = prosody_log
        .lines()
        .find(|l| l.contains("c2s stream for focus@") && l.contains("XML stanza is too big"));
    println!("case 31 (Prosody default): Prosody: {closed:?}");
    assert!(
        closed.is_some(),
        "Prosody did not close the focus's stream for the stanza size"
    );

    // Palim never saw it: still connected on its first session, healthy, conference kept.
    palim.assert_running();
    assert_eq!(palim.rest("GET", "/about/health", "").await.0, 200, "health");
    assert_eq!(palim.xmpp_connected().await, Some(1.0));
    assert_eq!(
        palim.metric("jitsi_jvb_xmpp_disconnects_total").await,
        Some(0.0),
        "palim's XMPP session dropped; log:\n{}",
        palim.logs()
    );
    let st = palim.stats().await;
    assert_eq!(st["conferences"], 1, "{st}");
    assert_eq!(st["endpoints"], 1, "none of the 5 MiB request's endpoints exist: {st}");
    assert_eq!(st["mucs_joined"], 1, "{st}");

    // The reconnected focus is served: a new endpoint in the kept conference, and a health check.
    palim
        .modify(
            &focus,
            "after",
            conference_modify(meeting, None, &endpoint_create("bbbb")),
        )
        .await;
    let st = palim.stats().await;
    assert_eq!((&st["conferences"], &st["endpoints"]), (&1.into(), &2.into()), "{st}");
    assert!(focus.health_check(&palim.nick).await.is_ok(), "health-check IQ");
}

/// Phase 2: Prosody passes the stanza on; Palim's reader refuses it.
async fn refused_by_palim(prosody: Prosody) {
    let meeting = "31313131-0000-0000-0000-000000000002";
    let (mut focus, mut palim, sessions_before) = setup(&prosody, "palim-huge2", meeting, "huge2@muc.example").await;
    let r = send_huge(&focus, &palim, meeting, Duration::from_secs(10), "Prosody limit 16 MiB").await;
    // Palim's reader skipped it (nothing kept past 1 MiB) and answered the IQ with an error;
    // its XMPP session stayed up.
    match &r {
        Err(SendIqError::Stanza(e)) => assert_eq!(e.condition, Condition::PolicyViolation, "{e:?}"),
        other => panic!(
            "expected a policy-violation error answer, got {other:?}; log:\n{}",
            palim.logs()
        ),
    }
    let log = palim.logs();
    let skipped = log.lines().find(|l| l.contains("stanza over the size limit skipped"));
    println!(
        "case 31 (Prosody limit 16 MiB): palim log: {skipped:?}; focus sessions {sessions_before} -> {}; \
         palim disconnects {:?}",
        focus.client.state().sessions,
        palim.metric("jitsi_jvb_xmpp_disconnects_total").await
    );
    assert!(skipped.is_some(), "palim did not log the skipped stanza; log:\n{log}");
    assert_eq!(
        palim.metric("jitsi_jvb_xmpp_disconnects_total").await,
        Some(0.0),
        "palim's XMPP session stayed up"
    );
    assert_eq!(palim.xmpp_connected().await, Some(1.0));
    palim.assert_running();
    assert_eq!(palim.rest("GET", "/about/health", "").await.0, 200, "health");
    let st = palim.stats().await;
    assert_eq!(st["conferences"], 1, "the conference is kept: {st}");
    assert_eq!(st["endpoints"], 1, "none of the 5 MiB request's endpoints exist: {st}");

    // The focus (on whatever session it has now) is served in the kept conference.
    wait_state(&focus.client, Duration::from_secs(30), "focus joined", |s| {
        s.all_joined()
    })
    .await;
    focus
        .wait_presence(&palim.nick, Duration::from_secs(30), |ev| ev.available)
        .await;
    palim
        .modify(
            &focus,
            "after",
            conference_modify(meeting, None, &endpoint_create("bbbb")),
        )
        .await;
    let st = palim.stats().await;
    assert_eq!((&st["conferences"], &st["endpoints"]), (&1.into(), &2.into()), "{st}");
}
