//! Hostile Colibri2 requests (robustness.md §2.3) at the parsing layers the public API exposes:
//! XML text through rxml (minidom's restricted parser, the same one the XMPP stream reader
//! uses) into `ConferenceModify::from_element`, and REST JSON through
//! `JsonConferenceModify::from_slice`. The stream-level stanza size and depth limits of the
//! XMPP reader are covered by its unit tests (src/xmpp/reader.rs).

use minidom::Element;
use signaling::colibri2::json::JsonConferenceModify;
use signaling::colibri2::{ConferenceModify, ParseError};

const NS: &str = "jitsi:colibri2";

fn parse_xml(text: &str) -> Result<ConferenceModify, String> {
    let el: Element = text.parse().map_err(|e| format!("xml: {e}"))?;
    ConferenceModify::from_element(&el).map_err(|e| format!("colibri2: {e}"))
}

#[test]
fn a_plain_request_parses() {
    let ok =
        format!("<conference-modify xmlns='{NS}' meeting-id='m1'><endpoint id='a' create='true'/></conference-modify>");
    let m = parse_xml(&ok).expect("baseline request parses");
    assert_eq!(m.endpoints.len(), 1);
}

/// Billion laughs: entity declarations and a DOCTYPE are refused before any expansion.
#[test]
fn entity_expansion_is_refused() {
    let mut doc = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!("<!ENTITY lol{i} '{}'>", format!("&{prev};").repeat(10)));
    }
    doc.push_str(&format!("]><conference-modify xmlns='{NS}' meeting-id='&lol9;'/>"));
    let r = parse_xml(&doc);
    assert!(
        r.is_err(),
        "entity expansion accepted: {:?}",
        r.map(|m| m.meeting_id.len())
    );
    // An undeclared entity reference and an external entity are refused too.
    assert!(parse_xml(&format!("<conference-modify xmlns='{NS}' meeting-id='&xxe;'/>")).is_err());
    let xxe = format!(
        "<!DOCTYPE x [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]><conference-modify xmlns='{NS}' meeting-id='&xxe;'/>"
    );
    assert!(parse_xml(&xxe).is_err());
}

/// A 1 MiB attribute value is refused by the model's string limit, not stored.
#[test]
fn huge_attributes_are_refused() {
    let big = "a".repeat(1 << 20);
    let r = parse_xml(&format!("<conference-modify xmlns='{NS}' meeting-id='{big}'/>"));
    // rxml itself refuses tokens this long.
    assert!(r.is_err(), "1 MiB attribute accepted");
    // Below rxml's token limit, the model's 2,048-byte string limit refuses it.
    let mid = "a".repeat(8 * 1024);
    let r = parse_xml(&format!("<conference-modify xmlns='{NS}' meeting-id='{mid}'/>"));
    assert!(matches!(r, Err(ref e) if e.contains("too long")), "{:?}", r.map(|_| ()));
    let r = parse_xml(&format!(
        "<conference-modify xmlns='{NS}' meeting-id='m'><endpoint id='{big}' create='true'/></conference-modify>"
    ));
    assert!(r.is_err());
    // Attribute containing a NUL character reference: not XML 1.0, refused by the parser.
    assert!(parse_xml(&format!("<conference-modify xmlns='{NS}' meeting-id='a&#0;b'/>")).is_err());
}

/// 10^4 endpoints, sources, candidates or unknown children in one request are refused.
#[test]
fn huge_element_counts_are_refused() {
    let eps: String = (0..10_000)
        .map(|i| format!("<endpoint id='e{i}' create='true'/>"))
        .collect();
    let r = parse_xml(&format!(
        "<conference-modify xmlns='{NS}' meeting-id='m'>{eps}</conference-modify>"
    ));
    assert!(
        matches!(r, Err(ref e) if e.contains("too many")),
        "{:?}",
        r.map(|m| m.endpoints.len())
    );

    let sources: String = (0..10_000)
        .map(|i| format!("<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='{}'/>", i + 1))
        .collect();
    let r = parse_xml(&format!(
        "<conference-modify xmlns='{NS}' meeting-id='m'><endpoint id='a' create='true'>\
         <sources><media-source type='video' id='a-v0'>{sources}</media-source></sources>\
         </endpoint></conference-modify>"
    ));
    assert!(r.is_err(), "10^4 SSRCs in one source accepted");

    let junk: String = (0..10_000).map(|i| format!("<junk{i}/>")).collect();
    let r = parse_xml(&format!(
        "<conference-modify xmlns='{NS}' meeting-id='m'>{junk}</conference-modify>"
    ));
    assert!(r.is_err(), "10^4 unknown children accepted");
}

/// Deep nesting of unknown elements inside a request does not crash the parser layers.
#[test]
fn deep_nesting_is_survived() {
    let depth = 2_000;
    let open: String = (0..depth).map(|_| "<x>").collect();
    let close: String = (0..depth).map(|_| "</x>").collect();
    let doc = format!(
        "<conference-modify xmlns='{NS}' meeting-id='m'><endpoint id='a' create='true'>{open}{close}</endpoint></conference-modify>"
    );
    // Unknown children are skipped (counted against the child limit); no recursion into them.
    let _ = parse_xml(&doc);
}

/// REST JSON: deep nesting (serde_json's recursion limit), huge arrays and long strings.
#[test]
fn hostile_json_is_refused() {
    // Nesting inside a typed field hits serde_json's recursion limit (128).
    let deep = format!(
        "{{\"meeting-id\":\"m\",\"endpoints\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(JsonConferenceModify::from_slice(deep.as_bytes()).is_err());
    // Inside an unknown (ignored) field serde_json skips it without recursion: no crash, and
    // the REST body limit (1 MiB) bounds the work.
    let deep = format!(
        "{{\"meeting-id\":\"m\",\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let _ = JsonConferenceModify::from_slice(deep.as_bytes());

    let eps: Vec<String> = (0..10_000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"create\":true}}"))
        .collect();
    let body = format!("{{\"meeting-id\":\"m\",\"endpoints\":[{}]}}", eps.join(","));
    let r = JsonConferenceModify::from_slice(body.as_bytes()).and_then(ConferenceModify::try_from);
    assert!(matches!(r, Err(ParseError::TooMany(..))), "{r:?}");

    let body = format!("{{\"meeting-id\":\"{}\"}}", "a".repeat(1 << 20));
    let r = JsonConferenceModify::from_slice(body.as_bytes()).and_then(ConferenceModify::try_from);
    assert!(r.is_err(), "1 MiB meeting-id accepted");

    // Non-UTF-8 bytes.
    assert!(JsonConferenceModify::from_slice(b"{\"meeting-id\":\"\xff\xfe\"}").is_err());
}
