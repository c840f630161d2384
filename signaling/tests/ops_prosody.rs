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

use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

use minidom::Element;
use signaling::xmpp::{IqType, PresenceEvent, SendIqError};
use support::call::{self, check_media, Media, Peer};
use support::colibri::*;
use support::palim::{PalimConfig, PalimProcess};
use support::{ice_check, Prosody, TestFocus};

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
    let mut palim = PalimProcess::start(&prosody, nick, PalimConfig::default());
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
// Colibri2 as Jicofo sends it (a minimal offer: opus and VP8), and str0m clients
// (support::call).

async fn modify(focus: &TestFocus, palim: &PalimProcess, what: &str, req: Element) -> Element {
    palim.modify(focus, what, req).await
}

async fn two_party_call(focus: &TestFocus, palim: &PalimProcess, meeting: &str) -> Vec<Peer> {
    call::two_party_call(
        focus,
        &palim.occupant(),
        || palim.logs(),
        meeting,
        "opsroom@muc.meet.jitsi",
        [1, 2],
    )
    .await
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
    let mut palim = PalimProcess::start(
        &prosody1,
        nick,
        PalimConfig {
            xmpp_extra: format!("additional_servers = [\"127.0.0.1:{}\"]", prosody2.port()),
            ..PalimConfig::default()
        },
    );
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
    let palim = PalimProcess::start(
        &prosody,
        nick,
        PalimConfig {
            ice: "bind_address = \"::\"\nudp_port = 0\nhost_addresses = [\"127.0.0.1\", \"::1\"]".into(),
            ..PalimConfig::default()
        },
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
