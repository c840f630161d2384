use minidom::Element;
use sfu::control::MediaKind;

use super::super::testutil::{fixture, strip_ws, to_string};
use super::super::*;

const MEETING: &str = "4f1c9a52-8c4e-4d8e-9a3e-2b7d1c0e9f11";

fn parse(name: &str) -> ConferenceModify {
    ConferenceModify::from_element(&fixture(name)).expect("fixture parses")
}

/// Every fixture survives write → parse unchanged (the writer and parser agree).
fn assert_round_trip(req: &ConferenceModify) {
    let el = req.to_element();
    let back = ConferenceModify::from_element(&el).expect("written request parses");
    assert_eq!(&back, req, "round trip of {}", to_string(&el));
}

#[test]
fn parses_create_with_media_transport_and_capabilities() {
    // §4.1 (1): the allocation request that creates the conference, exactly as Jicofo sends it.
    let req = parse("01_create_alice.xml");
    assert_eq!(req.meeting_id, MEETING);
    assert_eq!(req.name.as_deref(), Some("weeklysync@muc.meet.jitsi"));
    assert!(req.create && !req.expire && !req.connects);
    assert_eq!(req.endpoints.len(), 1);
    let ep = &req.endpoints[0];
    assert_eq!(ep.id, "a1b2c3d4");
    assert!(ep.create && !ep.expire);
    assert_eq!(ep.stats_id.as_deref(), Some("Alice-Xy1"));
    assert_eq!(ep.capabilities, ["source-names", "ssrc-rewriting"]);
    assert_eq!(ep.sources, Some(vec![]));

    assert_eq!(ep.media.len(), 2);
    let audio = &ep.media[0];
    assert_eq!(audio.kind, MediaKind::Audio);
    assert!(audio.extmap_allow_mixed);
    assert_eq!(audio.payload_types.len(), 2);
    let opus = &audio.payload_types[0];
    assert_eq!(
        (opus.id, opus.name.as_deref(), opus.clockrate, opus.channels),
        (111, Some("opus"), Some(48000), Some(2))
    );
    assert_eq!(opus.parameter("useinbandfec"), Some("1"));
    assert_eq!(opus.parameter("minptime"), Some("10"));
    assert_eq!(
        opus.rtcp_fbs,
        [RtcpFb {
            fb_type: "transport-cc".into(),
            subtype: None
        }]
    );
    assert_eq!(audio.rtp_hdrexts.len(), 2);
    assert_eq!(audio.rtp_hdrexts[1].id, 5);
    assert_eq!(
        audio.rtp_hdrexts[1].uri,
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    );

    let video = &ep.media[1];
    assert_eq!(video.kind, MediaKind::Video);
    assert!(!video.extmap_allow_mixed);
    let vp8 = &video.payload_types[0];
    assert_eq!(vp8.rtcp_fbs.len(), 4);
    assert_eq!(
        vp8.rtcp_fbs[0],
        RtcpFb {
            fb_type: "ccm".into(),
            subtype: Some("fir".into())
        }
    );
    let rtx = &video.payload_types[1];
    assert_eq!((rtx.id, rtx.parameter("apt")), (96, Some("100")));
    assert_eq!(video.rtp_hdrexts.iter().map(|x| x.id).collect::<Vec<_>>(), [3, 10]);

    let t = ep.transport.as_ref().expect("transport");
    assert!(t.ice_controlling && !t.use_unique_port && !t.ice_restart);
    assert!(t.ice.is_none());
    assert_eq!(t.sctp, Some(Sctp { port: None, role: None }));
    assert_round_trip(&req);
}

#[test]
fn parses_redundant_namespaces() {
    // §3.1: Smack writes xmlns="jitsi:colibri2" on nested entities; parse by (ns, name).
    let req = parse("02_create_bob.xml");
    assert!(!req.create);
    let ep = &req.endpoints[0];
    assert_eq!(ep.id, "b2c3d4e5");
    assert!(ep.create);
    assert!(ep
        .transport
        .as_ref()
        .is_some_and(|t| t.ice_controlling && t.sctp.is_some()));
    assert!(ep.has_capability("source-names"));
    assert_round_trip(&req);
}

#[test]
fn parses_session_accept_transport_and_sources() {
    // §4.1 (3): the update carrying the client's transport, full sources and initial-last-n.
    let req = parse("03_session_accept.xml");
    let ep = &req.endpoints[0];
    assert!(!ep.create);
    assert_eq!(ep.initial_last_n, Some(-1));
    let ice = ep
        .transport
        .as_ref()
        .and_then(|t| t.ice.as_ref())
        .expect("ice transport");
    assert_eq!(ice.ufrag.as_deref(), Some("Vd7e"));
    assert_eq!(ice.pwd.as_deref(), Some("m0x3c1Y0L7r0h9dq7f2Q1x1a"));
    assert!(ice.rtcp_mux);
    assert_eq!(
        ice.fingerprints,
        [DtlsFingerprint {
            fingerprint: "0A:9F:11".into(),
            hash: Some("sha-256".into()),
            setup: Some("active".into()),
            cryptex: false
        }]
    );
    assert_eq!(ice.candidates.len(), 1);
    let c = &ice.candidates[0];
    assert_eq!(
        (c.ip.as_str(), c.port, c.priority),
        ("198.51.100.20", 53211, 1677729535)
    );
    assert_eq!(
        (c.cand_type.as_str(), c.rel_addr.as_deref(), c.rel_port),
        ("srflx", Some("0.0.0.0"), Some(0))
    );
    assert_eq!((c.network, c.generation, c.id.as_deref()), (Some(1), 0, Some("1")));

    let sources = ep.sources.as_ref().expect("sources");
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].id, "a1b2c3d4-a0");
    assert_eq!(sources[0].sources[0].ssrc, 1111111111);
    let v = &sources[1];
    assert_eq!(v.kind, MediaKind::Video);
    assert_eq!(v.sources.len(), 6);
    assert_eq!(v.sources[0].video_type.as_deref(), Some("camera"));
    assert_eq!(v.ssrc_groups.len(), 4);
    assert_eq!(v.ssrc_groups[0].semantics, "SIM");
    assert_eq!(v.ssrc_groups[0].ssrcs, [2222222221, 2222222222, 2222222223]);
    assert_eq!(v.ssrc_groups[3].ssrcs, [2222222223, 3333333333]);
    assert_round_trip(&req);
}

#[test]
fn parses_every_other_request_shape() {
    // §4.1 (4)–(9) and §4.2: transport-info, source update, force-mute batch, expiries,
    // ICE restart, connects, relay, visitor.
    let ti = parse("04_transport_info.xml");
    let ice = ti.endpoints[0]
        .transport
        .as_ref()
        .and_then(|t| t.ice.as_ref())
        .expect("ice");
    assert_eq!(ice.candidates.len(), 5);
    assert_eq!(ice.candidates[1].tcptype.as_deref(), Some("active"));
    assert!(ti.endpoints[0].sources.is_none());

    let carol = parse("05_create_carol.xml");
    assert_eq!(
        carol.endpoints[0].force_mute,
        Some(ForceMute {
            audio: true,
            video: true
        })
    );

    let share = parse("06_source_update_screenshare.xml");
    let s = share.endpoints[0].sources.as_ref().expect("sources");
    assert_eq!(s[2].id, "a1b2c3d4-v1");
    assert_eq!(s[2].sources[0].video_type.as_deref(), Some("desktop"));

    let mute = parse("07_force_mute_batch.xml");
    let fm: Vec<_> = mute.endpoints.iter().map(|e| (e.id.as_str(), e.force_mute)).collect();
    assert_eq!(
        fm,
        [
            (
                "b2c3d4e5",
                Some(ForceMute {
                    audio: true,
                    video: false
                })
            ),
            (
                "c3d4e5f6",
                Some(ForceMute {
                    audio: true,
                    video: false
                })
            ),
            (
                "a1b2c3d4",
                Some(ForceMute {
                    audio: false,
                    video: false
                })
            ),
        ]
    );

    let exp = parse("08_expire_endpoints.xml");
    assert!(exp.endpoints.iter().all(|e| e.expire && !e.create));
    assert_eq!(exp.endpoints.len(), 2);

    let conf = parse("09_expire_conference.xml");
    assert!(conf.expire && conf.endpoints.is_empty());

    let restart = parse("10_ice_restart.xml");
    let t = restart.endpoints[0].transport.as_ref().expect("transport");
    assert!(t.ice_restart && t.ice.is_none());

    let connects = parse("11_connects.xml");
    assert!(connects.connects && connects.endpoints.is_empty());

    let relay = parse("12_relay_create.xml");
    assert_eq!(relay.relays.len(), 1);
    assert_eq!(relay.relays[0].id, "10.0.0.6");
    assert!(relay.relays[0].create && relay.relays[0].has_content);
    assert_eq!(relay.relays[0].mesh_id.as_deref(), Some("0"));

    let visitor = parse("13_visitor_create.xml");
    assert_eq!(visitor.rtcstats_enabled, Some(false));
    assert!(visitor.endpoints[0].is_visitor());
    assert!(visitor.endpoints[0]
        .transport
        .as_ref()
        .is_some_and(|t| t.sctp.is_none()));

    for req in [ti, carol, share, mute, exp, conf, restart, connects, visitor] {
        assert_round_trip(&req);
    }
}

fn parse_str(xml: &str) -> Result<ConferenceModify, ParseError> {
    let el: Element = xml.parse().expect("test XML is well-formed");
    ConferenceModify::from_element(&el)
}

#[test]
fn missing_or_blank_meeting_id_is_an_error() {
    // Check 22: no crash, an error.
    assert_eq!(
        parse_str(r#"<conference-modify xmlns="jitsi:colibri2"/>"#),
        Err(ParseError::MissingAttribute {
            element: "conference-modify",
            attr: "meeting-id"
        })
    );
    assert!(matches!(
        parse_str(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="  "/>"#),
        Err(ParseError::InvalidValue { attr: "meeting-id", .. })
    ));
}

#[test]
fn wrong_element_is_an_error() {
    assert!(matches!(
        parse_str(r#"<conference-modify xmlns="jitsi:colibri"/>"#),
        Err(ParseError::WrongElement(..))
    ));
}

#[test]
fn bad_numbers_and_missing_attributes_are_errors() {
    let cases = [
        (
            r#"<media type="audio"><payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" id="abc"/></media>"#,
            "id",
        ),
        (
            r#"<media type="audio"><payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" id="200"/></media>"#,
            "id",
        ),
        (
            r#"<media type="audio"><payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" id="1" clockrate="-1"/></media>"#,
            "clockrate",
        ),
        (r#"<media type="smell"/>"#, "type"),
        (r#"<initial-last-n value="many"/>"#, "value"),
        (
            r#"<sources><media-source type="video" id="x"><source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="4294967296"/></media-source></sources>"#,
            "ssrc",
        ),
        (
            r#"<transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1"><candidate ip="1.2.3.4" port="70000"/></transport></transport>"#,
            "port",
        ),
        (r#"<transport><sctp port="x"/></transport>"#, "port"),
    ];
    for (inner, attr) in cases {
        let xml = format!(
            r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="e">{inner}</endpoint></conference-modify>"#
        );
        match parse_str(&xml) {
            Err(ParseError::InvalidValue { attr: a, .. }) => assert_eq!(a, attr, "{inner}"),
            other => panic!("expected InvalidValue({attr}) for {inner}, got {other:?}"),
        }
    }
    let missing = [
        (r#"<endpoint/>"#, "id"),
        (r#"<endpoint id="e"><media/></endpoint>"#, "type"),
        (r#"<endpoint id="e"><capability/></endpoint>"#, "name"),
        (
            r#"<endpoint id="e"><transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1"><candidate port="1"/></transport></transport></endpoint>"#,
            "ip",
        ),
        (r#"<relay/>"#, "id"),
    ];
    for (inner, attr) in missing {
        let xml = format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m">{inner}</conference-modify>"#);
        match parse_str(&xml) {
            Err(ParseError::MissingAttribute { attr: a, .. }) => assert_eq!(a, attr, "{inner}"),
            other => panic!("expected MissingAttribute({attr}) for {inner}, got {other:?}"),
        }
    }
}

#[test]
fn unknown_elements_and_attributes_are_ignored() {
    // Checks 20 and 21.
    let req = parse_str(
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m" callstats-enabled="true" foo="1">
             <traceparent xmlns="jitsi:opentelemetry" trace_id="0" parent_id="0" trace_flags="01"/>
             <endpoint id="e" diarize="true" bar="x"><whatever xmlns="urn:example"/></endpoint>
           </conference-modify>"#,
    )
    .expect("parses");
    assert_eq!(req.endpoints.len(), 1);
    assert_eq!(
        req.endpoints[0],
        Endpoint {
            id: "e".into(),
            ..Default::default()
        }
    );
}

#[test]
fn counts_are_bounded() {
    // Hostile input: more endpoints than the limit is refused, not allocated.
    let mut xml = String::from(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m">"#);
    for i in 0..=limits::ENDPOINTS {
        xml.push_str(&format!(r#"<endpoint id="e{i}" expire="true"/>"#));
    }
    xml.push_str("</conference-modify>");
    assert_eq!(parse_str(&xml), Err(ParseError::TooMany("endpoint", limits::ENDPOINTS)));

    let mut cands = String::new();
    for i in 0..=limits::CANDIDATES {
        cands.push_str(&format!(r#"<candidate ip="10.0.0.1" port="{}"/>"#, 1000 + i));
    }
    let xml = format!(
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="e"><transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1">{cands}</transport></transport></endpoint></conference-modify>"#
    );
    assert_eq!(
        parse_str(&xml),
        Err(ParseError::TooMany("candidate", limits::CANDIDATES))
    );

    // Many unknown children are bounded too.
    let mut xml = String::from(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m">"#);
    for _ in 0..=limits::CHILDREN {
        xml.push_str("<x/>");
    }
    xml.push_str("</conference-modify>");
    assert!(matches!(parse_str(&xml), Err(ParseError::TooMany(..))));
}

#[test]
fn long_strings_are_refused() {
    let long = "a".repeat(limits::STRING + 1);
    let xml = format!(r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="{long}"/>"#);
    assert!(matches!(parse_str(&xml), Err(ParseError::TooLong(_))));
    let xml = format!(
        r#"<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="e"><transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1"><fingerprint xmlns="urn:xmpp:jingle:apps:dtls:0">{long}</fingerprint></transport></transport></endpoint></conference-modify>"#
    );
    assert!(matches!(parse_str(&xml), Err(ParseError::TooLong(_))));
}

#[test]
fn response_round_trips_and_matches_the_spec_shape() {
    // The §4.1 answer, parsed and written back, is the same tree.
    let expected = strip_ws(&fixture("01_create_alice_response.xml"));
    let parsed = ConferenceModified::from_element(&expected).expect("response parses");
    assert_eq!(parsed.endpoints.len(), 1);
    let t = parsed.endpoints[0].transport.as_ref().expect("transport");
    assert_eq!(
        t.sctp,
        Some(Sctp {
            port: Some(5000),
            role: Some("server".into())
        })
    );
    let written = parsed.to_element();
    assert_eq!(
        strip_ws(&written),
        expected,
        "\n{}\n!=\n{}",
        to_string(&written),
        to_string(&expected)
    );
}

#[test]
fn error_children_render_as_jicoco_does() {
    // §3.12: condition + text + colibri2 reason + endpoint.
    let e = Colibri2Error::unknown_endpoint("c3d4e5f6");
    let el = e.to_stanza_error("jabber:client");
    let expected: Element = r#"<error xmlns="jabber:client" type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas" xml:lang="en">Endpoint not found for ID: c3d4e5f6</text><error xmlns="jitsi:colibri2" reason="unknown_endpoint"/><endpoint xmlns="jitsi:colibri2" id="c3d4e5f6"/></error>"#
        .parse()
        .expect("well-formed");
    assert_eq!(
        strip_ws(&el),
        strip_ws(&expected),
        "{:?}\n{:?}",
        strip_ws(&el),
        strip_ws(&expected)
    );
    // Serialized form carries xml:lang.
    assert!(to_string(&el).contains("xml:lang='en'"), "{}", to_string(&el));

    let bad = Colibri2Error::bad_request("nope").to_stanza_error("jabber:client");
    assert_eq!(bad.attr("type"), Some("modify"));
    assert_eq!(bad.children().count(), 2, "no reason, no endpoint");
}
