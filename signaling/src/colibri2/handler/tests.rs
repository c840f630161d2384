//! Handler tests against a small fake of the media core (the real core is tested in the lead's
//! integration tests). The fake keeps its own conference/endpoint sets so it refuses what the real
//! core would, and records every command.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use minidom::Element;
use sfu::control::{CandidateKind, GroupSemantics, LocalCandidate, LocalTransport, MediaKind, Setup, VideoType};
use sfu::{Command, CommandError, ConferenceId, EndpointId, Reply, Ssrc, Stats};

use super::super::testutil::{fixture, strip_ws, to_string};
use super::super::*;
use super::{BoxFuture, MediaCore};

const MEETING: &str = "4f1c9a52-8c4e-4d8e-9a3e-2b7d1c0e9f11";
/// The feedback SSRCs of the §4.1 example answer.
const FEEDBACK: (u32, u32) = (3735928559, 195936478);

#[derive(Default)]
struct FakeState {
    log: Vec<Command>,
    confs: HashMap<ConferenceId, HashSet<EndpointId>>,
    /// Refuse the next command with this error.
    fail_next: Option<CommandError>,
    /// ICE restarts answered so far (the next one's generation is this plus one).
    restarts: u32,
    /// Answer RestartIce as the core does before ICE connected: current credentials, no
    /// generation.
    restart_unconnected: bool,
}

#[derive(Default)]
struct FakeCore {
    st: StdMutex<FakeState>,
}

impl FakeCore {
    fn log(&self) -> Vec<Command> {
        self.st.lock().expect("not poisoned").log.clone()
    }

    fn clear_log(&self) {
        self.st.lock().expect("not poisoned").log.clear();
    }

    fn fail_next(&self, e: CommandError) {
        self.st.lock().expect("not poisoned").fail_next = Some(e);
    }

    /// Forget an endpoint as if the core had expired it on its own.
    fn drop_endpoint(&self, conf: ConferenceId, ep: EndpointId) {
        if let Some(eps) = self.st.lock().expect("not poisoned").confs.get_mut(&conf) {
            eps.remove(&ep);
        }
    }

    fn run(&self, cmd: Command) -> Result<Reply, CommandError> {
        let mut st = self.st.lock().expect("not poisoned");
        st.log.push(cmd.clone());
        if let Some(e) = st.fail_next.take() {
            return Err(e);
        }
        let known = |st: &FakeState, conf, ep| {
            if !st.confs.contains_key(&conf) {
                Err(CommandError::ConferenceNotFound(conf))
            } else if !st.confs[&conf].contains(&ep) {
                Err(CommandError::EndpointNotFound { conf, ep })
            } else {
                Ok(Reply::Done)
            }
        };
        match cmd {
            Command::CreateConference { conf } => {
                if st.confs.insert(conf, HashSet::new()).is_some() {
                    return Err(CommandError::ConferenceExists(conf));
                }
                Ok(Reply::ConferenceCreated {
                    audio_ssrc: Ssrc(FEEDBACK.0.wrapping_add(conf.0)),
                    video_ssrc: Ssrc(FEEDBACK.1.wrapping_add(conf.0)),
                })
            }
            Command::ExpireConference { conf } => {
                st.confs.remove(&conf);
                Ok(Reply::Done)
            }
            Command::CreateEndpoint { conf, ep, .. } => {
                let eps = st.confs.get_mut(&conf).ok_or(CommandError::ConferenceNotFound(conf))?;
                if !eps.insert(ep) {
                    return Err(CommandError::EndpointExists { conf, ep });
                }
                Ok(Reply::EndpointCreated(spec_local_transport()))
            }
            Command::ExpireEndpoint { conf, ep } => {
                if let Some(eps) = st.confs.get_mut(&conf) {
                    eps.remove(&ep);
                }
                Ok(Reply::Done)
            }
            Command::RestartIce { conf, ep } => {
                known(&st, conf, ep)?;
                if st.restart_unconnected {
                    return Ok(Reply::IceRestarted {
                        transport: spec_local_transport(),
                        generation: None,
                    });
                }
                st.restarts += 1;
                Ok(Reply::IceRestarted {
                    transport: LocalTransport {
                        ufrag: format!("r3start{}", st.restarts),
                        pwd: format!("n3wpassw0rdforrestart{:04}", st.restarts),
                        ..spec_local_transport()
                    },
                    generation: Some(st.restarts),
                })
            }
            Command::SetMedia { conf, ep, .. }
            | Command::SetRemoteTransport { conf, ep, .. }
            | Command::SetSources { conf, ep, .. }
            | Command::SendDataChannelText { conf, ep, .. }
            | Command::BridgeChannelMessage { conf, ep, .. }
            | Command::SetForceMute { conf, ep, .. }
            | Command::SetInitialLastN { conf, ep, .. } => known(&st, conf, ep),
            _ => Ok(Reply::Done),
        }
    }
}

impl MediaCore for FakeCore {
    fn command(&self, cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>> {
        let r = self.run(cmd);
        Box::pin(async move { r })
    }

    fn stats(&self) -> BoxFuture<'_, Stats> {
        Box::pin(async { Stats::default() })
    }
}

/// The bridge transport of the §4.1 example answer.
fn spec_local_transport() -> LocalTransport {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
    LocalTransport {
        ufrag: "3kq1v1j7e0oat5".into(),
        pwd: "5hd27ug9c2q3kdsu0hbpb1f1k3".into(),
        fingerprint_sha256: "5B:1A:C4".into(),
        candidates: vec![
            LocalCandidate {
                addr: addr("172.18.0.5:10000"),
                priority: 2130706431,
                foundation: "1".into(),
                kind: CandidateKind::Host,
                related: None,
            },
            LocalCandidate {
                addr: addr("203.0.113.7:10000"),
                priority: 1694498815,
                foundation: "2".into(),
                kind: CandidateKind::Srflx,
                related: Some(addr("172.18.0.5:10000")),
            },
        ],
    }
}

fn setup() -> (Arc<FakeCore>, Colibri2Handler) {
    setup_with(HandlerConfig::default())
}

fn setup_with(config: HandlerConfig) -> (Arc<FakeCore>, Colibri2Handler) {
    let core = Arc::new(FakeCore::default());
    let handler = Colibri2Handler::new(core.clone(), config);
    (core, handler)
}

async fn xml(h: &Colibri2Handler, name: &str) -> Result<Element, Colibri2Error> {
    h.handle_xml(&fixture(name)).await
}

async fn raw(h: &Colibri2Handler, s: &str) -> Result<Element, Colibri2Error> {
    let el: Element = s.parse().expect("test XML is well-formed");
    h.handle_xml(&el).await
}

/// Blank candidate ids (opaque, generated) so trees can be compared with the spec's.
fn blank_candidate_ids(el: &Element) -> Element {
    let mut out = Element::bare(el.name(), el.ns());
    for ((ns, name), value) in el.attrs().iter() {
        let v = if el.name() == "candidate" && name.as_str() == "id" {
            String::new()
        } else {
            value.clone()
        };
        out.set_attr(ns.clone(), name.clone(), v);
    }
    for child in el.children() {
        out.append_child(blank_candidate_ids(child));
    }
    let text = el.text();
    if !text.trim().is_empty() {
        out.append_text(text);
    }
    out
}

fn candidate_ids(el: &Element, out: &mut Vec<String>) {
    if el.name() == "candidate" {
        out.push(el.attr("id").unwrap_or_default().to_owned());
    }
    for c in el.children() {
        candidate_ids(c, out);
    }
}

async fn create_alice(h: &Colibri2Handler) -> Element {
    xml(h, "01_create_alice.xml").await.expect("create succeeds")
}

fn assert_err(r: Result<Element, Colibri2Error>, condition: ErrorCondition, reason: Option<Reason>) -> Colibri2Error {
    match r {
        Ok(el) => panic!("expected {condition:?}, got {}", to_string(&el)),
        Err(e) => {
            assert_eq!((e.condition, e.reason), (condition, reason), "{e}");
            e
        }
    }
}

// ----- §4.1 flow -----

#[tokio::test]
async fn create_answers_exactly_the_spec_response() {
    // §4.1 (1): conference + endpoint create → transport, sctp and feedback sources.
    let (core, h) = setup();
    let resp = create_alice(&h).await;
    let expected = strip_ws(&fixture("01_create_alice_response.xml"));
    assert_eq!(
        blank_candidate_ids(&resp),
        blank_candidate_ids(&expected),
        "\n{}\n!=\n{}",
        to_string(&resp),
        to_string(&expected)
    );
    let mut ids = vec![];
    candidate_ids(&resp, &mut ids);
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| !i.is_empty()) && ids[0] != ids[1], "{ids:?}");

    let log = core.log();
    assert!(matches!(log[0], Command::CreateConference { .. }));
    match &log[1] {
        Command::CreateEndpoint {
            ice_controlling,
            sctp,
            visitor,
            ssrc_rewriting,
            ..
        } => {
            assert!(*ice_controlling && *sctp && !*visitor);
            // Jicofo's request carries `<capability name="ssrc-rewriting"/>`.
            assert!(*ssrc_rewriting);
        }
        other => panic!("{other:?}"),
    }
    // Then audio + video media, then the (empty) full source set.
    let Command::SetMedia { media: audio, .. } = &log[2] else {
        panic!("{:?}", log[2])
    };
    assert_eq!(audio.kind, MediaKind::Audio);
    assert_eq!(audio.payload_types.len(), 2);
    assert_eq!(
        (audio.payload_types[0].pt, audio.payload_types[0].clock_rate),
        (111, 48000)
    );
    assert_eq!(audio.extensions[0].id, 1);
    let Command::SetMedia { media: video, .. } = &log[3] else {
        panic!("{:?}", log[3])
    };
    assert_eq!(video.payload_types[1].name, "rtx");
    assert_eq!(video.payload_types[1].apt, Some(100));
    assert_eq!(video.payload_types[0].apt, None);
    assert!(matches!(&log[4], Command::SetSources { sources, .. } if sources.is_empty()));
    assert_eq!(log.len(), 5);

    let confs = h.conferences().await;
    assert_eq!(confs.len(), 1);
    assert_eq!(confs[0].name.as_deref(), Some("weeklysync@muc.meet.jitsi"));
    let ep = &confs[0].endpoints[0];
    assert_eq!(
        (ep.name.as_str(), ep.stats_id.as_deref()),
        ("a1b2c3d4", Some("Alice-Xy1"))
    );
    assert!(ep.has_audio_pt && ep.has_video_pt && ep.extmap_allow_mixed && ep.sctp);
    assert_eq!(h.counts().endpoints, 1);
}

#[tokio::test]
async fn second_endpoint_create_gets_feedback_sources_and_stable_ssrcs() {
    // Checks 39/40: every create carries jvb-a0/jvb-v0, with the same SSRCs.
    let (_core, h) = setup();
    let first = ConferenceModified::from_element(&create_alice(&h).await).expect("parses");
    let second = ConferenceModified::from_element(&xml(&h, "02_create_bob.xml").await.expect("ok")).expect("parses");
    assert!(second.endpoints[0].transport.is_some());
    assert_eq!(first.sources, second.sources);
    let sources = second.sources.expect("feedback sources");
    assert_eq!(sources.len(), 2);
    assert_eq!((sources[0].id.as_str(), sources[0].kind), ("jvb-a0", MediaKind::Audio));
    assert_eq!((sources[1].id.as_str(), sources[1].kind), ("jvb-v0", MediaKind::Video));
    assert_eq!(sources[0].sources[0].ssrc, FEEDBACK.0);
    assert_eq!(sources[1].sources[0].ssrc, FEEDBACK.1);
    assert_eq!(sources[1].sources[0].name.as_deref(), Some("jvb-v0"));
}

#[tokio::test]
async fn session_accept_applies_transport_and_sources_and_answers_bare_endpoint() {
    // §4.1 (3), checks 41/42/48/49/54.
    let (core, h) = setup();
    create_alice(&h).await;
    core.clear_log();
    let resp = xml(&h, "03_session_accept.xml").await.expect("update succeeds");
    let expected: Element =
        r#"<conference-modified xmlns="jitsi:colibri2"><endpoint id="a1b2c3d4"/></conference-modified>"#
            .parse()
            .expect("xml");
    assert_eq!(resp, expected, "{}", to_string(&resp));

    let log = core.log();
    assert_eq!(log.len(), 3, "{log:?}");
    // §3.10 order: initial-last-n, then the transport, then the sources.
    assert!(
        matches!(log[0], Command::SetInitialLastN { last_n: -1, .. }),
        "{:?}",
        log[0]
    );
    let Command::SetRemoteTransport { transport, .. } = &log[1] else {
        panic!("{:?}", log[1])
    };
    assert_eq!(transport.ufrag.as_deref(), Some("Vd7e"));
    assert_eq!(transport.pwd.as_deref(), Some("m0x3c1Y0L7r0h9dq7f2Q1x1a"));
    assert_eq!(transport.fingerprints.len(), 1);
    assert_eq!(transport.fingerprints[0].hash, "sha-256");
    assert_eq!(transport.fingerprints[0].value, [0x0a, 0x9f, 0x11]);
    assert_eq!(transport.fingerprints[0].setup, Some(Setup::Active));
    assert_eq!(
        transport.candidates,
        ["198.51.100.20:53211".parse::<SocketAddr>().expect("addr")]
    );

    let Command::SetSources { sources, .. } = &log[2] else {
        panic!("{:?}", log[2])
    };
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].name, "a1b2c3d4-a0");
    assert_eq!(sources[0].ssrcs, [Ssrc(1111111111)]);
    let v = &sources[1];
    assert_eq!(v.kind, MediaKind::Video);
    assert_eq!(v.video_type, Some(VideoType::Camera));
    assert_eq!(v.ssrcs.len(), 6);
    assert_eq!(v.groups.len(), 4);
    assert_eq!(v.groups[0].semantics, GroupSemantics::Sim);
    assert_eq!(
        v.groups[0].ssrcs,
        [Ssrc(2222222221), Ssrc(2222222222), Ssrc(2222222223)]
    );
    assert_eq!(v.groups[1].semantics, GroupSemantics::Fid);
    assert_eq!(v.groups[1].ssrcs, [Ssrc(2222222221), Ssrc(3333333331)]);

    let ep = &h.conferences().await[0].endpoints[0];
    assert_eq!(ep.initial_last_n, Some(-1));
    assert_eq!(ep.source_names, ["a1b2c3d4-a0", "a1b2c3d4-v0"]);
}

#[tokio::test]
async fn transport_info_keeps_only_literal_udp_generation_0_candidates() {
    // §3.5: tcp, mDNS names and other generations are dropped; protocol is case-insensitive.
    let (core, h) = setup();
    create_alice(&h).await;
    core.clear_log();
    xml(&h, "04_transport_info.xml").await.expect("ok");
    let log = core.log();
    let Command::SetRemoteTransport { transport, .. } = &log[0] else {
        panic!("{log:?}")
    };
    let want: Vec<SocketAddr> = ["192.0.2.33:50000", "[2001:db8::8]:50003"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(transport.candidates, want);
    assert!(transport.fingerprints.is_empty());
}

#[tokio::test]
async fn malformed_fingerprint_is_dropped_not_refused() {
    // In the update path any error tears the whole session down (§3.12), so junk is skipped.
    let (core, h) = setup();
    create_alice(&h).await;
    core.clear_log();
    raw(
        &h,
        &format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="a1b2c3d4"><transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="u" pwd="p"><fingerprint xmlns="urn:xmpp:jingle:apps:dtls:0" hash="SHA-256" setup="passive">ZZ:01</fingerprint><fingerprint xmlns="urn:xmpp:jingle:apps:dtls:0" hash="SHA-256" setup="passive">ab:CD</fingerprint></transport></transport></endpoint></conference-modify>"#
        ),
    )
    .await
    .expect("ok");
    let log = core.log();
    let Command::SetRemoteTransport { transport, .. } = &log[0] else {
        panic!("{log:?}")
    };
    assert_eq!(transport.fingerprints.len(), 1);
    assert_eq!(transport.fingerprints[0].hash, "sha-256");
    assert_eq!(transport.fingerprints[0].value, [0xab, 0xcd]);
    assert_eq!(transport.fingerprints[0].setup, Some(Setup::Passive));
}

#[tokio::test]
async fn screenshare_update_replaces_the_full_set() {
    // §4.1 (6) and check 47: sources are replace-all; an empty set clears.
    let (core, h) = setup();
    create_alice(&h).await;
    core.clear_log();
    xml(&h, "06_source_update_screenshare.xml").await.expect("ok");
    let log = core.log();
    let Command::SetSources { sources, .. } = &log[0] else {
        panic!("{log:?}")
    };
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[2].video_type, Some(VideoType::Desktop));
    raw(
        &h,
        &format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="a1b2c3d4"><sources/></endpoint></conference-modify>"#
        ),
    )
    .await
    .expect("ok");
    assert!(matches!(core.log().last(), Some(Command::SetSources { sources, .. }) if sources.is_empty()));
    assert!(h.conferences().await[0].endpoints[0].source_names.is_empty());
}

#[tokio::test]
async fn force_mute_batch_is_recorded_and_unknown_ids_are_ignorable() {
    // §4.1 (7), checks 45/52: batch force-mute, unknown endpoints answered with a bare <endpoint>.
    let (_core, h) = setup();
    create_alice(&h).await;
    xml(&h, "02_create_bob.xml").await.expect("ok");
    // c3d4e5f6 does not exist.
    let resp = xml(&h, "07_force_mute_batch.xml").await.expect("ok");
    let parsed = ConferenceModified::from_element(&resp).expect("parses");
    let ids: Vec<_> = parsed
        .endpoints
        .iter()
        .map(|e| (e.id.as_str(), e.expire, e.transport.is_some()))
        .collect();
    assert_eq!(
        ids,
        [
            ("b2c3d4e5", false, false),
            ("c3d4e5f6", false, false),
            ("a1b2c3d4", false, false)
        ]
    );
    assert!(parsed.sources.is_none());
    let confs = h.conferences().await;
    let fm: HashMap<_, _> = confs[0]
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.force_mute))
        .collect();
    assert_eq!(
        fm["b2c3d4e5"],
        ForceMute {
            audio: true,
            video: false
        }
    );
    assert_eq!(
        fm["a1b2c3d4"],
        ForceMute {
            audio: false,
            video: false
        }
    );
}

#[tokio::test]
async fn force_mute_on_create_is_recorded() {
    let (_core, h) = setup();
    create_alice(&h).await;
    xml(&h, "05_create_carol.xml").await.expect("ok");
    let confs = h.conferences().await;
    let carol = confs[0].endpoints.iter().find(|e| e.name == "c3d4e5f6").expect("carol");
    assert_eq!(
        carol.force_mute,
        ForceMute {
            audio: true,
            video: true
        }
    );
    assert!(carol.has_audio_pt && !carol.has_video_pt);
}

#[tokio::test]
async fn expire_echoes_expire_even_for_unknown_and_last_leaver_expires_conference() {
    // §4.1 (8), checks 44 and 59.
    let (core, h) = setup();
    create_alice(&h).await;
    xml(&h, "02_create_bob.xml").await.expect("ok");
    core.clear_log();
    // Carol (c3d4e5f6) is unknown, Bob is known: both echoed with expire="true".
    let resp = xml(&h, "08_expire_endpoints.xml").await.expect("ok");
    let expected: Element = r#"<conference-modified xmlns="jitsi:colibri2"><endpoint id="c3d4e5f6" expire="true"/><endpoint id="b2c3d4e5" expire="true"/></conference-modified>"#
        .parse()
        .expect("xml");
    assert_eq!(resp, expected, "{}", to_string(&resp));
    assert_eq!(core.log().len(), 1, "only Bob is expired in the core: {:?}", core.log());
    assert!(h.has_conference(MEETING).await);

    // Alice leaves: a non-create request leaving 0 endpoints expires the conference.
    raw(
        &h,
        &format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="a1b2c3d4" expire="true"/></conference-modify>"#),
    )
    .await
    .expect("ok");
    assert!(matches!(core.log().last(), Some(Command::ExpireConference { .. })));
    assert!(!h.has_conference(MEETING).await);
    let c = h.counts();
    assert_eq!(
        (
            c.conferences,
            c.endpoints,
            c.total_conferences_completed,
            c.total_participants
        ),
        (0, 0, 1, 2)
    );
}

#[tokio::test]
async fn conference_expire_succeeds_then_conference_is_gone() {
    // §4.1 (9), check 58.
    let (core, h) = setup();
    create_alice(&h).await;
    let resp = xml(&h, "09_expire_conference.xml").await.expect("ok");
    assert_eq!(resp, Element::bare("conference-modified", ns::COLIBRI2));
    assert!(matches!(core.log().last(), Some(Command::ExpireConference { .. })));
    assert_err(
        xml(&h, "03_session_accept.xml").await,
        ErrorCondition::ItemNotFound,
        Some(Reason::ConferenceNotFound),
    );
}

/// The ICE transport of the single endpoint in a `conference-modified`.
fn restart_ice_transport(resp: &Element) -> IceUdpTransport {
    let resp = ConferenceModified::from_element(resp).expect("parses");
    assert_eq!(resp.endpoints.len(), 1, "{resp:?}");
    let t = resp.endpoints[0].transport.clone().expect("the endpoint's transport");
    t.ice.expect("an ICE transport")
}

#[tokio::test]
async fn ice_restart_answers_new_credentials_with_the_same_fingerprint() {
    // §4.3: new ufrag/pwd, same candidates and fingerprint, ice-generation N (1, 2, …); the
    // restart is applied last (§3.10) and the client's answer goes to the core as a normal
    // transport update.
    let (core, h) = setup();
    let created = restart_ice_transport(&create_alice(&h).await);
    core.clear_log();
    let resp = xml(&h, "10_ice_restart.xml").await.expect("ok");
    let ice = restart_ice_transport(&resp);
    assert_eq!(ice.ufrag.as_deref(), Some("r3start1"));
    assert_eq!(ice.pwd.as_deref(), Some("n3wpassw0rdforrestart0001"));
    assert_ne!(ice.ufrag, created.ufrag);
    assert_eq!(ice.ice_generation, Some(1));
    assert_eq!(ice.fingerprints, created.fingerprints, "same DTLS fingerprint");
    assert_eq!(ice.fingerprints[0].fingerprint, "5B:1A:C4");
    let addrs = |t: &IceUdpTransport| t.candidates.iter().map(|c| (c.ip.clone(), c.port)).collect::<Vec<_>>();
    assert_eq!(addrs(&ice), addrs(&created), "same candidates");
    assert!(ice.rtcp_mux);
    assert!(to_string(&resp).contains("ice-generation='1'"), "{}", to_string(&resp));
    let log = core.log();
    assert!(matches!(log.as_slice(), [Command::RestartIce { .. }]), "{log:?}");

    // A second restart in the same request as other changes: the restart comes last.
    core.clear_log();
    let resp = raw(
        &h,
        &format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="a1b2c3d4"><force-mute audio="true" video="false"/><transport ice-restart="true"/></endpoint></conference-modify>"#
        ),
    )
    .await
    .expect("ok");
    let ice = restart_ice_transport(&resp);
    assert_eq!((ice.ufrag.as_deref(), ice.ice_generation), (Some("r3start2"), Some(2)));
    let log = core.log();
    assert!(
        matches!(
            log.as_slice(),
            [Command::SetForceMute { .. }, Command::RestartIce { .. }]
        ),
        "{log:?}"
    );

    // The client's answer, tagged with the generation: its generation-2 candidates are kept.
    core.clear_log();
    raw(
        &h,
        &format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="a1b2c3d4"><transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="cl2" pwd="clientpasswordafterrestart" ice-generation="2"><candidate component="1" foundation="1" generation="2" id="c1" ip="192.0.2.9" port="50000" priority="1" protocol="udp" type="host" network="0"/><candidate component="1" foundation="1" generation="1" id="c2" ip="192.0.2.9" port="50001" priority="1" protocol="udp" type="host" network="0"/></transport></transport></endpoint></conference-modify>"#
        ),
    )
    .await
    .expect("ok");
    let log = core.log();
    let [Command::SetRemoteTransport { transport, .. }] = log.as_slice() else {
        panic!("{log:?}");
    };
    assert_eq!(transport.ufrag.as_deref(), Some("cl2"));
    assert_eq!(transport.pwd.as_deref(), Some("clientpasswordafterrestart"));
    assert_eq!(
        transport.candidates,
        ["192.0.2.9:50000".parse::<SocketAddr>().expect("literal")]
    );
}

#[tokio::test]
async fn ice_restart_before_connect_answers_current_transport_without_generation() {
    // §4.3: not yet connected → the existing credentials and no ice-generation.
    let (core, h) = setup();
    let created = restart_ice_transport(&create_alice(&h).await);
    core.st.lock().expect("not poisoned").restart_unconnected = true;
    let resp = xml(&h, "10_ice_restart.xml").await.expect("ok");
    let ice = restart_ice_transport(&resp);
    assert_eq!((ice.ufrag.clone(), ice.pwd.clone()), (created.ufrag, created.pwd));
    assert_eq!(ice.ice_generation, None);
    assert!(!to_string(&resp).contains("ice-generation"));
}

#[tokio::test]
async fn ice_restart_of_an_unknown_endpoint_is_item_not_found() {
    let (_core, h) = setup();
    create_alice(&h).await;
    let r = raw(
        &h,
        &format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="nobody"><transport ice-restart="true"/></endpoint></conference-modify>"#
        ),
    )
    .await;
    assert_err(r, ErrorCondition::ItemNotFound, Some(Reason::UnknownEndpoint));
}

#[tokio::test]
async fn connects_are_accepted_and_ignored() {
    // Check 65, also inside a create.
    let (_core, h) = setup();
    create_alice(&h).await;
    let resp = xml(&h, "11_connects.xml").await.expect("ok");
    assert_eq!(resp, Element::bare("conference-modified", ns::COLIBRI2));
    let (_core, h) = setup();
    let mut req = ConferenceModify::from_element(&fixture("01_create_alice.xml")).expect("parses");
    req.connects = true;
    h.handle(req).await.expect("create with connects succeeds");
}

#[tokio::test]
async fn visitor_is_created_receive_only_and_refuses_sources() {
    // Check 53.
    let (core, h) = setup();
    create_alice(&h).await;
    xml(&h, "13_visitor_create.xml").await.expect("visitor create succeeds");
    assert!(core.log().iter().any(|c| matches!(
        c,
        Command::CreateEndpoint {
            visitor: true,
            sctp: false,
            ..
        }
    )));
    let r = raw(
        &h,
        &format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="e5f6a7b8"><sources><media-source type="audio" id="e5f6a7b8-a0"><source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="1"/></media-source></sources></endpoint></conference-modify>"#),
    )
    .await;
    assert_err(r, ErrorCondition::BadRequest, None);
    assert_eq!(h.counts().visitors, 1);
}

// ----- §3.12 error table -----

#[tokio::test]
async fn create_for_existing_meeting_is_conflict_with_reason() {
    let (_core, h) = setup();
    create_alice(&h).await;
    let e = assert_err(
        xml(&h, "01_create_alice.xml").await,
        ErrorCondition::Conflict,
        Some(Reason::ConferenceAlreadyExists),
    );
    assert_eq!(e.condition.error_type(), ErrorType::Cancel);
}

#[tokio::test]
async fn update_for_unknown_meeting_is_item_not_found_with_reason() {
    let (_core, h) = setup();
    assert_err(
        xml(&h, "03_session_accept.xml").await,
        ErrorCondition::ItemNotFound,
        Some(Reason::ConferenceNotFound),
    );
    // Even an ignorable request needs the conference.
    assert_err(
        xml(&h, "08_expire_endpoints.xml").await,
        ErrorCondition::ItemNotFound,
        Some(Reason::ConferenceNotFound),
    );
}

#[tokio::test]
async fn graceful_shutdown_refuses_only_new_conferences() {
    // Checks 26/27.
    let (core, h) = setup();
    create_alice(&h).await;
    h.graceful_shutdown_flag().store(true, Ordering::Relaxed);
    let mut other = ConferenceModify::from_element(&fixture("01_create_alice.xml")).expect("parses");
    other.meeting_id = "another".into();
    let before = core.log().len();
    let e = h.handle(other).await.expect_err("refused");
    assert_eq!(
        (e.condition, e.reason),
        (ErrorCondition::ServiceUnavailable, Some(Reason::GracefulShutdown))
    );
    assert_eq!(core.log().len(), before, "nothing reached the core");
    xml(&h, "02_create_bob.xml")
        .await
        .expect("endpoint create in an existing conference still works");
    xml(&h, "03_session_accept.xml").await.expect("updates still work");
}

#[tokio::test]
async fn unknown_endpoint_update_is_item_not_found_with_endpoint() {
    // Check 43 for transport, sources and media.
    let (_core, h) = setup();
    create_alice(&h).await;
    let bodies = [
        r#"<transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="u" pwd="p"/></transport>"#,
        r#"<sources/>"#,
        r#"<media type="audio"/>"#,
    ];
    for body in bodies {
        let e = assert_err(
            raw(&h, &format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="c3d4e5f6">{body}</endpoint></conference-modify>"#)).await,
            ErrorCondition::ItemNotFound,
            Some(Reason::UnknownEndpoint),
        );
        assert_eq!(e.endpoint_id.as_deref(), Some("c3d4e5f6"));
        let children = e.error_children();
        assert_eq!(children.len(), 4);
        assert!(children[3].is("endpoint", ns::COLIBRI2));
        assert_eq!(children[3].attr("id"), Some("c3d4e5f6"));
        assert_eq!(children[2].attr("reason"), Some("unknown_endpoint"));
    }
}

#[tokio::test]
async fn core_losing_an_endpoint_maps_to_unknown_endpoint_and_forgets_it() {
    // The core expired it (inactivity) before we heard of it: Jicofo re-invites that participant.
    let (core, h) = setup();
    create_alice(&h).await;
    let (conf, ep) = h.endpoint_ids(MEETING, "a1b2c3d4").await.expect("interned");
    core.drop_endpoint(conf, ep);
    let e = assert_err(
        xml(&h, "03_session_accept.xml").await,
        ErrorCondition::ItemNotFound,
        Some(Reason::UnknownEndpoint),
    );
    assert_eq!(e.endpoint_id.as_deref(), Some("a1b2c3d4"));
    assert!(h.endpoint_ids(MEETING, "a1b2c3d4").await.is_none());
}

#[tokio::test]
async fn unsupported_request_shapes_are_feature_not_implemented_with_reason() {
    // §3.10 step 3, checks 56/57.
    let (_core, h) = setup();
    create_alice(&h).await;
    let shapes = [
        // two endpoints, one with a create
        r#"<endpoint id="x" create="true"/><endpoint id="y" expire="true"/>"#,
        // two endpoints, one with sources
        r#"<endpoint id="a1b2c3d4"><sources/></endpoint><endpoint id="y"><force-mute/></endpoint>"#,
        // two endpoints, one with media / transport
        r#"<endpoint id="a1b2c3d4"><media type="audio"/></endpoint><endpoint id="y" expire="true"/>"#,
        r#"<endpoint id="a1b2c3d4"><transport/></endpoint><endpoint id="y" expire="true"/>"#,
        // endpoint + relay
        r#"<endpoint id="y" expire="true"/><relay id="r" expire="true"/>"#,
        // two relays
        r#"<relay id="r1" expire="true"/><relay id="r2" expire="true"/>"#,
    ];
    for inner in shapes {
        assert_err(
            raw(
                &h,
                &format!(
                    r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}">{inner}</conference-modify>"#
                ),
            )
            .await,
            ErrorCondition::FeatureNotImplemented,
            Some(Reason::FeatureNotImplemented),
        );
    }
    // Batch expiry / force-mute stays allowed.
    raw(&h, &format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="y" expire="true"/><endpoint id="a1b2c3d4"><force-mute audio="true"/></endpoint></conference-modify>"#))
        .await
        .expect("batch ok");
}

#[tokio::test]
async fn relays_are_refused_without_reason() {
    // Check 62: relays disabled → feature-not-implemented, no colibri2 reason.
    let (_core, h) = setup();
    create_alice(&h).await;
    let e = assert_err(
        xml(&h, "12_relay_create.xml").await,
        ErrorCondition::FeatureNotImplemented,
        None,
    );
    assert_eq!(e.text, "Octo is disabled in configuration");
}

#[tokio::test]
async fn sctp_role_port_and_disabled_errors() {
    // Checks 37/38 and SCTP disabled.
    let create = |sctp: &str| {
        format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}" create="true"><endpoint id="a" create="true"><transport ice-controlling="true">{sctp}</transport><capability name="source-names"/></endpoint></conference-modify>"#
        )
    };
    let (_core, h) = setup();
    assert_err(
        raw(&h, &create(r#"<sctp role="client"/>"#)).await,
        ErrorCondition::FeatureNotImplemented,
        None,
    );
    let (_core, h) = setup();
    assert_err(
        raw(&h, &create(r#"<sctp port="5001"/>"#)).await,
        ErrorCondition::BadRequest,
        None,
    );
    let (_core, h) = setup();
    let resp = raw(&h, &create(r#"<sctp port="5000" role="server"/>"#))
        .await
        .expect("explicit defaults ok");
    let parsed = ConferenceModified::from_element(&resp).expect("parses");
    let sctp = parsed.endpoints[0].transport.as_ref().and_then(|t| t.sctp.clone());
    assert_eq!(
        sctp,
        Some(Sctp {
            port: Some(5000),
            role: Some("server".into())
        })
    );
    let (_core, h) = setup_with(HandlerConfig {
        sctp_enabled: false,
        ..Default::default()
    });
    assert_err(
        raw(&h, &create("<sctp/>")).await,
        ErrorCondition::FeatureNotImplemented,
        None,
    );
    // Without <sctp/>, no sctp in the answer.
    let (_core, h) = setup();
    let resp = raw(&h, &create("")).await.expect("ok");
    assert!(!to_string(&resp).contains("sctp"), "{}", to_string(&resp));
}

#[tokio::test]
async fn endpoint_id_conflict_has_no_reason() {
    // Check 31.
    let (_core, h) = setup();
    create_alice(&h).await;
    let mut again = ConferenceModify::from_element(&fixture("01_create_alice.xml")).expect("parses");
    again.create = false;
    again.name = None;
    let e = h.handle(again).await.expect_err("conflict");
    assert_eq!((e.condition, e.reason), (ErrorCondition::Conflict, None));
}

#[tokio::test]
async fn bad_requests_have_no_reason() {
    // Checks 29/30, bad name JID, parse errors.
    let (_core, h) = setup();
    create_alice(&h).await;
    let ep = |inner: &str| {
        format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="new" create="true">{inner}</endpoint></conference-modify>"#
        )
    };
    let e = assert_err(
        raw(&h, &ep(r#"<capability name="source-names"/>"#)).await,
        ErrorCondition::BadRequest,
        None,
    );
    assert!(e.text.contains("without a transport"), "{}", e.text);
    let e = assert_err(
        raw(&h, &ep(r#"<transport ice-controlling="true"/>"#)).await,
        ErrorCondition::BadRequest,
        None,
    );
    assert!(e.text.contains("Source name"), "{}", e.text);
    assert_eq!(e.condition.error_type(), ErrorType::Modify);

    for name in ["", "room@muc@x", "room@muc.example/res", "has space@muc", "@muc"] {
        let (_core, h) = setup();
        let r = raw(
            &h,
            &format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m" name="{name}" create="true"/>"#),
        )
        .await;
        assert_err(r, ErrorCondition::BadRequest, None);
        assert!(!h.has_conference("m").await);
    }
    let (_core, h) = setup();
    raw(
        &h,
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m" name="room@muc.example" create="true"/>"#,
    )
    .await
    .expect("valid bare JID");

    // Parse errors are bad-request too.
    assert_err(
        raw(&h, r#"<conference-modify xmlns="jitsi:colibri2"/>"#).await,
        ErrorCondition::BadRequest,
        None,
    );
    assert_err(
        raw(&h, r#"<conference-modify xmlns="jitsi:colibri2" meeting-id=""/>"#).await,
        ErrorCondition::BadRequest,
        None,
    );
    assert_err(
        raw(&h, r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="x"><initial-last-n value="x"/></endpoint></conference-modify>"#).await,
        ErrorCondition::BadRequest,
        None,
    );
}

#[tokio::test]
async fn core_failures_map_through_one_function() {
    // §3.12 "any other exception" → internal-server-error; Invalid → bad-request.
    let (core, h) = setup();
    core.fail_next(CommandError::Internal("boom".into()));
    let e = assert_err(
        xml(&h, "01_create_alice.xml").await,
        ErrorCondition::InternalServerError,
        None,
    );
    assert!(e.text.contains("boom"));
    assert!(
        !h.has_conference(MEETING).await,
        "a refused create leaves nothing behind"
    );

    let (core, h) = setup();
    create_alice(&h).await;
    core.fail_next(CommandError::LimitReached("endpoints per conference"));
    let e = assert_err(
        xml(&h, "02_create_bob.xml").await,
        ErrorCondition::ServiceUnavailable,
        None,
    );
    assert_eq!(
        e.text,
        "Limit reached: endpoints per conference (sfu.max_endpoints_per_conference)"
    );
    assert_eq!(h.limits().refused_endpoints, 1);
    assert!(h.endpoint_ids(MEETING, "b2c3d4e5").await.is_none());

    core.fail_next(CommandError::Invalid("duplicate ssrc".into()));
    let e = assert_err(xml(&h, "03_session_accept.xml").await, ErrorCondition::BadRequest, None);
    assert_eq!(e.text, "duplicate ssrc");

    let c = ConferenceId(0);
    let ep = EndpointId(0);
    let map = |e: CommandError| Colibri2Error::from_command(&e, "m", Some("ep"));
    assert_eq!(
        map(CommandError::ConferenceNotFound(c)).reason,
        Some(Reason::ConferenceNotFound)
    );
    assert_eq!(
        map(CommandError::ConferenceExists(c)).reason,
        Some(Reason::ConferenceAlreadyExists)
    );
    assert_eq!(
        map(CommandError::EndpointNotFound { conf: c, ep })
            .endpoint_id
            .as_deref(),
        Some("ep")
    );
    let exists = map(CommandError::EndpointExists { conf: c, ep });
    assert_eq!((exists.condition, exists.reason), (ErrorCondition::Conflict, None));
}

#[tokio::test]
async fn errors_do_not_roll_back_earlier_changes() {
    // §3.10 step 9: a failure after the conference was created leaves it (as JVB).
    let (_core, h) = setup();
    let r = raw(
        &h,
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m" create="true"><endpoint id="a" create="true"/></conference-modify>"#,
    )
    .await;
    assert_err(r, ErrorCondition::BadRequest, None);
    assert!(h.has_conference("m").await);
}

// ----- background expiry and core events -----

#[tokio::test]
async fn idle_conferences_expire_in_the_background() {
    // Check 60: 0 endpoints for longer than the age limit.
    let (core, h) = setup();
    raw(
        &h,
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="empty" create="true"/>"#,
    )
    .await
    .expect("ok");
    create_alice(&h).await;
    assert_eq!(
        h.expire_idle_conferences(Instant::now(), Duration::from_secs(20)).await,
        0,
        "too young"
    );
    let later = Instant::now() + Duration::from_secs(21);
    assert_eq!(h.expire_idle_conferences(later, Duration::from_secs(20)).await, 1);
    assert!(!h.has_conference("empty").await);
    assert!(h.has_conference(MEETING).await, "conferences with endpoints stay");
    assert!(matches!(core.log().last(), Some(Command::ExpireConference { .. })));
}

#[tokio::test]
async fn core_expired_endpoint_is_forgotten() {
    let (_core, h) = setup();
    create_alice(&h).await;
    let (conf, ep) = h.endpoint_ids(MEETING, "a1b2c3d4").await.expect("interned");
    assert_eq!(
        h.endpoint_names(conf, ep).await,
        Some((MEETING.to_owned(), "a1b2c3d4".to_owned()))
    );
    h.on_endpoint_expired(conf, ep).await;
    assert!(h.endpoint_names(conf, ep).await.is_none());
    assert_eq!(h.counts().endpoints, 0);
}

#[tokio::test]
async fn ids_are_interned_bridge_wide() {
    // Endpoint ids are unique across conferences; conference ids are distinct.
    let (_core, h) = setup();
    create_alice(&h).await;
    let mut other = ConferenceModify::from_element(&fixture("01_create_alice.xml")).expect("parses");
    other.meeting_id = "other".into();
    h.handle(other).await.expect("ok");
    let a = h.endpoint_ids(MEETING, "a1b2c3d4").await.expect("a");
    let b = h.endpoint_ids("other", "a1b2c3d4").await.expect("b");
    assert_ne!(a.0, b.0);
    assert_ne!(a.1, b.1);
    assert_eq!(h.counts().largest_conference, 1);
    assert_eq!(h.counts().conferences, 2);
}

// ----- JSON path -----

const JSON_REQUEST: &str = r#"{ "meeting-id": "5f1c0a52-9a57-4b0e-8d0e-3c2a7f1e0b11", "name": "standup@conference.meet.jitsi",
  "create": true,
  "endpoints": [ { "id": "a1b2c3d4", "create": true, "stats-id": "Ada-x7",
    "medias": [ { "type": "audio",
                  "payload-types": [ { "name": "opus", "id": "111", "clockrate": "48000", "channels": "2",
                                       "parameters": { "useinbandfec": "1" },
                                       "rtcp-fbs": [ { "type": "transport-cc" } ] } ],
                  "rtp-hdrexts": [ { "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1 } ] },
                { "type": "video",
                  "payload-types": [ { "name": "VP8", "id": "100", "clockrate": "90000",
                                       "rtcp-fbs": [ { "type": "nack" }, { "type": "nack", "subtype": "pli" },
                                                     { "type": "ccm", "subtype": "fir" }, { "type": "transport-cc" } ] },
                                     { "name": "rtx", "id": "96", "clockrate": "90000", "parameters": { "apt": "100" } } ],
                  "rtp-hdrexts": [ { "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 5 } ] } ],
    "transport": { "ice-controlling": true },
    "capabilities": [ "source-names" ] } ] }"#;

/// A fake whose answers are those of the §3.13 example response.
struct JsonExampleCore(FakeCore);

impl MediaCore for JsonExampleCore {
    fn command(&self, cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>> {
        let r = match self.0.run(cmd) {
            Ok(Reply::ConferenceCreated { .. }) => Ok(Reply::ConferenceCreated {
                audio_ssrc: Ssrc(1938271645),
                video_ssrc: Ssrc(2718281828),
            }),
            Ok(Reply::EndpointCreated(_)) => Ok(Reply::EndpointCreated(LocalTransport {
                ufrag: "3kq9e1".into(),
                pwd: "7c0f2d9b4a1e6c3f8d5b2a90".into(),
                fingerprint_sha256: "4F:…:A1".into(),
                candidates: vec![LocalCandidate {
                    addr: "127.0.0.1:10000".parse().expect("literal"),
                    priority: 2130706431,
                    foundation: "1".into(),
                    kind: CandidateKind::Host,
                    related: None,
                }],
            })),
            other => other,
        };
        Box::pin(async move { r })
    }

    fn stats(&self) -> BoxFuture<'_, Stats> {
        Box::pin(async { Stats::default() })
    }
}

#[tokio::test]
async fn json_example_produces_the_example_response() {
    // §3.13: the composed example request → the example answer (candidate ids are opaque).
    let core = Arc::new(JsonExampleCore(FakeCore::default()));
    let h = Colibri2Handler::new(core.clone(), HandlerConfig::default());
    let resp = h.handle_json(JSON_REQUEST.as_bytes(), None).await.expect("ok");
    let mut got = serde_json::to_value(&resp).expect("serializes");
    let expected_text = r#"{ "endpoints": [ { "id": "a1b2c3d4",
    "transport": { "transport": { "xmlns": "urn:xmpp:jingle:transports:ice-udp:1",
      "ufrag": "3kq9e1", "pwd": "7c0f2d9b4a1e6c3f8d5b2a90", "rtcp-mux": true,
      "fingerprints": [ { "fingerprint": "4F:…:A1", "hash": "sha-256", "setup": "actpass" } ],
      "candidates": [ { "component": "1", "foundation": "1", "generation": "0", "id": "c1", "network": "0",
                        "priority": "2130706431", "protocol": "udp", "type": "host",
                        "ip": "127.0.0.1", "port": "10000" } ] } } } ],
  "sources": [ { "type": "audio", "id": "jvb-a0", "sources": [ { "ssrc": 1938271645, "name": "jvb-a0" } ] },
               { "type": "video", "id": "jvb-v0", "sources": [ { "ssrc": 2718281828, "name": "jvb-v0" } ] } ] }"#;
    let mut expected: serde_json::Value = serde_json::from_str(expected_text).expect("example is JSON");
    let cand_id = |v: &mut serde_json::Value| -> serde_json::Value {
        v["endpoints"][0]["transport"]["transport"]["candidates"][0]
            .as_object_mut()
            .and_then(|o| o.remove("id"))
            .unwrap_or_default()
    };
    let id = cand_id(&mut got);
    assert!(
        id.as_str().is_some_and(|s| !s.is_empty()),
        "candidate id is a non-empty string: {id}"
    );
    cand_id(&mut expected);
    assert_eq!(got, expected, "\n{got:#}");

    // The commands are the same as for the XML form of the same request.
    let log = core.0.log();
    let Command::SetMedia { media, .. } = &log[3] else {
        panic!("{log:?}")
    };
    assert_eq!(media.payload_types[1].apt, Some(100));
    assert!(matches!(
        log[1],
        Command::CreateEndpoint {
            ice_controlling: true,
            sctp: false,
            // No `ssrc-rewriting` capability in this request.
            ssrc_rewriting: false,
            ..
        }
    ));
}

#[tokio::test]
async fn json_and_xml_forms_map_to_the_same_model() {
    let json: json::JsonConferenceModify = serde_json::from_str(JSON_REQUEST).expect("parses");
    let from_json = ConferenceModify::try_from(json).expect("converts");
    let xml_text = r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="5f1c0a52-9a57-4b0e-8d0e-3c2a7f1e0b11" name="standup@conference.meet.jitsi" create="true">
      <endpoint id="a1b2c3d4" create="true" stats-id="Ada-x7">
        <media type="audio">
          <payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" name="opus" id="111" clockrate="48000" channels="2">
            <parameter name="useinbandfec" value="1"/>
            <rtcp-fb xmlns="urn:xmpp:jingle:apps:rtp:rtcp-fb:0" type="transport-cc"/>
          </payload-type>
          <rtp-hdrext xmlns="urn:xmpp:jingle:apps:rtp:rtp-hdrext:0" uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level" id="1"/>
        </media>
        <media type="video">
          <payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" name="VP8" id="100" clockrate="90000">
            <rtcp-fb xmlns="urn:xmpp:jingle:apps:rtp:rtcp-fb:0" type="nack"/>
            <rtcp-fb xmlns="urn:xmpp:jingle:apps:rtp:rtcp-fb:0" type="nack" subtype="pli"/>
            <rtcp-fb xmlns="urn:xmpp:jingle:apps:rtp:rtcp-fb:0" type="ccm" subtype="fir"/>
            <rtcp-fb xmlns="urn:xmpp:jingle:apps:rtp:rtcp-fb:0" type="transport-cc"/>
          </payload-type>
          <payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" name="rtx" id="96" clockrate="90000">
            <parameter name="apt" value="100"/>
          </payload-type>
          <rtp-hdrext xmlns="urn:xmpp:jingle:apps:rtp:rtp-hdrext:0" uri="http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01" id="5"/>
        </media>
        <transport ice-controlling="true"/>
        <capability name="source-names"/>
      </endpoint>
    </conference-modify>"#;
    let el: Element = xml_text.parse().expect("xml");
    let from_xml = ConferenceModify::from_element(&el).expect("parses");
    assert_eq!(from_json, from_xml);

    // And the model → JSON → model trip is lossless for every XML fixture.
    for name in [
        "01_create_alice.xml",
        "03_session_accept.xml",
        "04_transport_info.xml",
        "06_source_update_screenshare.xml",
        "07_force_mute_batch.xml",
        "13_visitor_create.xml",
    ] {
        let model = ConferenceModify::from_element(&fixture(name)).expect("parses");
        let text = serde_json::to_string(&json::JsonConferenceModify::from(&model)).expect("serializes");
        let back = ConferenceModify::try_from(json::JsonConferenceModify::from_slice(text.as_bytes()).expect("parses"))
            .expect("converts");
        assert_eq!(back, model, "{name}: {text}");
    }
}

#[tokio::test]
async fn json_errors_are_bad_request() {
    let (_core, h) = setup();
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"create\": true}",
        b"{\"meeting-id\": 5}",
        b"{\"meeting-id\": \"m\", \"endpoints\": [{\"id\": \"e\", \"initial-last-n\": {\"value\": \"x\"}}]}",
    ] {
        let e = h.handle_json(body, None).await.expect_err("refused");
        assert_eq!(
            e.condition,
            ErrorCondition::BadRequest,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

// ----- robustness -----

/// A core that never answers.
struct StuckCore;

impl MediaCore for StuckCore {
    fn command(&self, _cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>> {
        Box::pin(std::future::pending())
    }

    fn stats(&self) -> BoxFuture<'_, Stats> {
        Box::pin(async { Stats::default() })
    }
}

#[tokio::test]
async fn stuck_core_becomes_internal_server_error_not_silence() {
    // Check 68: a missing answer makes Jicofo mark the bridge non-operational after 15 s.
    let config = HandlerConfig {
        command_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let h = Colibri2Handler::new(Arc::new(StuckCore), config);
    let started = Instant::now();
    let e = assert_err(
        xml(&h, "01_create_alice.xml").await,
        ErrorCondition::InternalServerError,
        None,
    );
    assert!(e.text.contains("did not answer"), "{}", e.text);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Every attribute of `el` (recursively), as a path of child indexes plus the name.
fn attr_paths(el: &Element, path: &mut Vec<usize>, out: &mut Vec<(Vec<usize>, String)>) {
    for ((_, name), _) in el.attrs().iter() {
        out.push((path.clone(), name.as_str().to_owned()));
    }
    for (i, c) in el.children().enumerate() {
        path.push(i);
        attr_paths(c, path, out);
        path.pop();
    }
}

/// A copy of `el` with one attribute replaced.
fn with_attr(el: &Element, path: &[usize], name: &str, value: &str) -> Element {
    let mut out = el.clone();
    let mut cur = &mut out;
    for &i in path {
        cur = cur.children_mut().nth(i).expect("path from attr_paths");
    }
    let key = cur
        .attrs()
        .iter()
        .find(|((_, n), _)| n.as_str() == name)
        .map(|((ns, n), _)| (ns.clone(), n.clone()))
        .expect("attribute from attr_paths");
    cur.set_attr(key.0, key.1, value.to_owned());
    out
}

#[tokio::test]
async fn hostile_attribute_values_never_panic() {
    // Network input never panics: every attribute of every fixture is replaced by hostile values
    // and the whole request runs through parse + handler; each answer is Ok or a clean error.
    let hostile = [
        "",
        " ",
        "-1",
        "0",
        "256",
        "4294967296",
        "99999999999999999999",
        "abc",
        "true",
        "ZZ:ZZ",
        "::",
        "é\u{1F600}",
        "1e3",
    ];
    let long = "x".repeat(limits::STRING + 1);
    let mut runs = 0;
    for name in [
        "01_create_alice.xml",
        "03_session_accept.xml",
        "04_transport_info.xml",
        "06_source_update_screenshare.xml",
        "07_force_mute_batch.xml",
        "12_relay_create.xml",
        "13_visitor_create.xml",
    ] {
        let base = fixture(name);
        let mut paths = vec![];
        attr_paths(&base, &mut vec![], &mut paths);
        for (path, attr) in &paths {
            for v in hostile.iter().copied().chain([long.as_str()]) {
                let (_core, h) = setup();
                // Give updates something to update.
                if !name.starts_with("01") {
                    create_alice(&h).await;
                }
                let el = with_attr(&base, path, attr, v);
                let r = h.handle_xml(&el).await;
                if let Err(e) = &r {
                    assert!(!e.text.is_empty());
                    assert!(e.text.len() < 512, "error text is bounded: {}", e.text.len());
                }
                runs += 1;
            }
        }
    }
    assert!(runs > 1000, "{runs}");
}

// ----- colibri-ws (media.md §2.1) -----

/// With websockets configured, a new endpoint's transport advertises one URL per domain with the
/// endpoint's 24-character password; the password admits the endpoint's socket, and every way
/// the endpoint goes (expire, conference expiry) reaches the hook and revokes it.
#[tokio::test]
async fn web_socket_urls_password_and_expiry_hook() {
    let gone: Arc<StdMutex<Vec<(ConferenceId, EndpointId)>>> = Arc::default();
    let seen = gone.clone();
    let (_core, h) = setup_with(HandlerConfig {
        web_sockets: Some(WebSocketAdvert {
            domains: vec!["meet.example.org".into(), "alt.example.org:8443".into()],
            tls: true,
            server_id: "jvb-1".into(),
        }),
        endpoint_gone: Some(EndpointGoneHook(Arc::new(move |c, e| {
            seen.lock().expect("not poisoned").push((c, e));
        }))),
        ..Default::default()
    });
    let create = |id: &str, conf: bool| {
        let mut v = serde_json::json!({"meeting-id": "m1", "endpoints": [{"id": id, "create": true,
            "transport": {"ice-controlling": true}, "capabilities": ["source-names"]}]});
        if conf {
            v["create"] = serde_json::json!(true);
        }
        v.to_string()
    };
    let resp = h
        .handle_json(create("ep1", true).as_bytes(), None)
        .await
        .expect("created");
    let v = serde_json::to_value(&resp).expect("serializes");
    let urls: Vec<String> = v["endpoints"][0]["transport"]["transport"]["web-sockets"]
        .as_array()
        .expect("web-sockets")
        .iter()
        .map(|u| u.as_str().expect("string").to_owned())
        .collect();
    let conf = h.conferences().await[0].id;
    assert_eq!(urls.len(), 2, "{urls:?}");
    let pwd = urls[0].split_once("?pwd=").expect("pwd").1.to_owned();
    assert_eq!(pwd.len(), super::WS_PASSWORD_LEN);
    assert!(pwd.chars().all(|c| c.is_ascii_alphanumeric()), "{pwd}");
    assert_eq!(
        urls[0],
        format!("wss://meet.example.org/colibri-ws/jvb-1/{conf}/ep1?pwd={pwd}")
    );
    assert_eq!(
        urls[1],
        format!("wss://alt.example.org:8443/colibri-ws/jvb-1/{conf}/ep1?pwd={pwd}")
    );
    let target = h.web_socket_target(conf, "ep1").await.expect("known endpoint");
    assert_eq!(target.password, pwd);
    assert!(h.web_socket_target(conf, "nobody").await.is_none());
    assert!(h.web_socket_target(ConferenceId(conf.0 + 1), "ep1").await.is_none());

    // A second endpoint gets its own password.
    let resp2 = h
        .handle_json(create("ep2", false).as_bytes(), None)
        .await
        .expect("created");
    let v2 = serde_json::to_value(&resp2).expect("serializes");
    let url2 = v2["endpoints"][0]["transport"]["transport"]["web-sockets"][0]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(!url2.ends_with(&pwd), "{url2}");

    // Expire ep1: hook called, socket admission revoked.
    h.handle_json(br#"{"meeting-id":"m1","endpoints":[{"id":"ep1","expire":true}]}"#, None)
        .await
        .expect("expired");
    assert_eq!(gone.lock().expect("not poisoned").as_slice(), &[(conf, target.ep)]);
    assert!(h.web_socket_target(conf, "ep1").await.is_none());
    // Expire the conference: ep2 goes too.
    let ep2 = h.web_socket_target(conf, "ep2").await.expect("ep2").ep;
    h.handle_json(br#"{"meeting-id":"m1","expire":true}"#, None)
        .await
        .expect("expired");
    assert_eq!(gone.lock().expect("not poisoned").last(), Some(&(conf, ep2)));
}

/// Without websockets configured (the default) no URL is advertised.
#[tokio::test]
async fn no_web_socket_urls_by_default() {
    let (_core, h) = setup();
    let body = br#"{"meeting-id":"m1","create":true,"endpoints":[{"id":"ep1","create":true,
        "transport":{"ice-controlling":true},"capabilities":["source-names"]}]}"#;
    let resp = h.handle_json(body, None).await.expect("created");
    let v = serde_json::to_value(&resp).expect("serializes");
    let ws = &v["endpoints"][0]["transport"]["transport"]["web-sockets"];
    assert!(ws.is_null() || ws.as_array().is_some_and(|a| a.is_empty()), "{v}");
}

// ----- Focus check (robustness.md case 30) and limit refusals (case 41) -----

#[test]
fn focus_patterns_match_bare_full_and_wildcard_jids() {
    let auth = FocusAuth::from_patterns(&[
        "focus@auth.meet.jitsi".into(),
        "jvbbrewery@internal-muc.meet.jitsi/focus".into(),
        "ops@auth.meet.jitsi/*".into(),
    ]);
    assert!(auth.allows(&["Focus@Auth.Meet.Jitsi/abc123"]));
    assert!(auth.allows(&["focus@auth.meet.jitsi"]));
    assert!(auth.allows(&["jvbbrewery@internal-muc.meet.jitsi/focus"]));
    assert!(auth.allows(&["ops@auth.meet.jitsi/x"]));
    // The occupant JID of someone else, with or without a disclosed real JID.
    assert!(!auth.allows(&["jvbbrewery@internal-muc.meet.jitsi/intruder", ""]));
    assert!(!auth.allows(&[
        "jvbbrewery@internal-muc.meet.jitsi/intruder",
        "intruder@auth.meet.jitsi/res"
    ]));
    // The resource is exact; a prefix of the bare JID is not the JID.
    assert!(!auth.allows(&["jvbbrewery@internal-muc.meet.jitsi/focus2"]));
    assert!(!auth.allows(&["focus@auth.meet.jitsi.evil.org/x"]));
    assert!(!auth.allows(&["", ""]));
    assert!(FocusAuth::from_patterns(&["*".into()]).allows(&["anyone@anywhere/x"]));
    assert!(!FocusAuth::from_patterns(&[]).allows(&["focus@auth.meet.jitsi"]));
}

#[tokio::test]
async fn non_focus_sender_is_not_authorized_and_nothing_happens() {
    let (core, h) = setup_with(HandlerConfig {
        focus: FocusAuth::from_patterns(&["focus@auth.meet.jitsi".into()]),
        ..Default::default()
    });
    let req = fixture("01_create_alice.xml");
    let e = match h
        .handle_xml_from(
            &req,
            &[
                "jvbbrewery@internal-muc.meet.jitsi/intruder",
                "intruder@auth.meet.jitsi/x",
            ],
        )
        .await
    {
        Ok(el) => panic!("accepted: {}", to_string(&el)),
        Err(e) => e,
    };
    assert_eq!(e.condition, ErrorCondition::NotAuthorized);
    assert_eq!(e.condition.error_type(), ErrorType::Auth);
    let stanza = to_string(&e.to_stanza_error("jabber:client"));
    assert!(
        stanza.contains("type=\"auth\"") || stanza.contains("type='auth'"),
        "{stanza}"
    );
    assert!(stanza.contains("not-authorized"), "{stanza}");
    assert!(core.log().is_empty(), "the core saw {:?}", core.log());
    assert!(!h.has_conference(MEETING).await);
    assert_eq!(h.limits().refused_not_authorized, 1);
    // The focus itself (real JID disclosed by the room) is served.
    h.handle_xml_from(
        &req,
        &[
            "jvbbrewery@internal-muc.meet.jitsi/focus",
            "focus@auth.meet.jitsi/focus-1",
        ],
    )
    .await
    .expect("the focus creates");
    assert!(h.has_conference(MEETING).await);
    assert_eq!(h.limits().refused_not_authorized, 1);
}

#[tokio::test]
async fn limit_refusals_are_clear_errors_and_counted() {
    let (core, h) = setup();
    core.fail_next(CommandError::LimitReached("conferences"));
    let e = assert_err(
        xml(&h, "01_create_alice.xml").await,
        ErrorCondition::ServiceUnavailable,
        None,
    );
    assert_eq!(e.text, "Limit reached: conferences (sfu.max_conferences)");
    assert!(
        !h.has_conference(MEETING).await,
        "a refused create leaves no conference"
    );
    create_alice(&h).await;
    core.fail_next(CommandError::LimitReached("ssrcs per endpoint"));
    let e = assert_err(xml(&h, "03_session_accept.xml").await, ErrorCondition::BadRequest, None);
    assert_eq!(e.text, "Limit reached: ssrcs per endpoint (sfu.max_ssrcs_per_endpoint)");
    let l = h.limits();
    assert_eq!((l.refused_conferences, l.refused_endpoints, l.refused_ssrcs), (1, 0, 1));
    assert_eq!(l.max_conferences, sfu::config::Limits::default().max_conferences);
}

#[tokio::test]
async fn json_ice_restart_answers_new_credentials_with_generation() {
    // §3.13 form of §4.3: `"ice-restart": true` → the transport with "ice-generation".
    let (_core, h) = setup();
    let created = restart_ice_transport(&create_alice(&h).await);
    let req = format!(
        r#"{{ "meeting-id": "{MEETING}", "endpoints": [ {{ "id": "a1b2c3d4", "transport": {{ "ice-restart": true }} }} ] }}"#
    );
    let resp = h.handle_json(req.as_bytes(), None).await.expect("ok");
    let got = serde_json::to_value(&resp).expect("serializes");
    let ice = &got["endpoints"][0]["transport"]["transport"];
    assert_eq!(ice["ufrag"], "r3start1", "{got:#}");
    assert_eq!(ice["pwd"], "n3wpassw0rdforrestart0001");
    assert_eq!(ice["ice-generation"], "1");
    assert_eq!(
        ice["fingerprints"][0]["fingerprint"].as_str(),
        created.fingerprints[0].fingerprint.as_str().into()
    );
}

/// Case 51: while shedding under memory pressure, new conferences and new endpoints get
/// service-unavailable "Limit reached: memory" (counted) and reach no core command; existing
/// endpoints are still served; once shedding ends, endpoints are accepted again.
#[tokio::test]
async fn memory_shedding_refuses_new_conferences_and_endpoints_only() {
    let shedding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (core, h) = setup_with(HandlerConfig {
        memory_shedding: shedding.clone(),
        ..HandlerConfig::default()
    });
    create_alice(&h).await;
    shedding.store(true, Ordering::Relaxed);
    core.clear_log();
    let e = assert_err(
        xml(&h, "02_create_bob.xml").await,
        ErrorCondition::ServiceUnavailable,
        None,
    );
    assert_eq!(e.text, "Limit reached: memory (limits.memory_shed_percent)");
    assert!(core.log().is_empty(), "nothing reached the core: {:?}", core.log());
    // Alice's own update (her transport) is served.
    xml(&h, "03_session_accept.xml")
        .await
        .expect("an existing endpoint is served");
    // A new conference is refused too and not created.
    let create_other =
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="other" name="other@muc.example" create="true"/>"#;
    let e = assert_err(raw(&h, create_other).await, ErrorCondition::ServiceUnavailable, None);
    assert!(e.text.contains("memory"), "{e}");
    assert!(!h.has_conference("other").await);
    assert_eq!(h.limits().refused_memory, 2);
    assert_eq!(h.counts().endpoints, 1);
    shedding.store(false, Ordering::Relaxed);
    xml(&h, "02_create_bob.xml")
        .await
        .expect("accepted again after shedding ends");
    assert_eq!(h.counts().endpoints, 2);
    assert_eq!(h.limits().refused_memory, 2);
}
