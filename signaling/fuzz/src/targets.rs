//! The signaling fuzz targets. Each must return normally for every input.

use minidom::Element;
use signaling::colibri2::json::JsonConferenceModify;
use signaling::colibri2::ConferenceModify;

/// Colibri2 `<conference-modify>` from XML text: minidom's (rxml's restricted) parser, then
/// the element-to-model parser with its limits. A parsed request written back as XML parses
/// to the same request.
pub fn colibri2_xml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(el) = text.parse::<Element>() else { return };
    // The test vectors are whole IQs; the handler gets the `<conference-modify>` child.
    let el = if el.name() == "iq" {
        match el.children().next() {
            Some(c) => c.clone(),
            None => return,
        }
    } else {
        el
    };
    let Ok(m) = ConferenceModify::from_element(&el) else {
        return;
    };
    let back = m.to_element();
    let mut again = ConferenceModify::from_element(&back).expect("own output parses");
    // Relay content (Octo endpoints, media) is not modelled, only whether there was any; the
    // writer does not reproduce it.
    let mut m = m;
    for r in m.relays.iter_mut().chain(again.relays.iter_mut()) {
        r.has_content = false;
    }
    assert_eq!(again, m, "XML round trip changed the request");
}

/// Colibri2 over REST: JSON body, then conversion to the model.
pub fn colibri2_json(data: &[u8]) {
    let Ok(j) = JsonConferenceModify::from_slice(data) else {
        return;
    };
    let _ = ConferenceModify::try_from(j);
}

/// The TOML configuration: parse, validate, derive the core's config.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(c) = signaling::config::Config::from_toml(&text) else {
        return;
    };
    if c.validate().is_ok() {
        let _ = c.sfu_config();
    }
}

/// The jvb.conf HOCON reader (and sip-communicator.properties after a NUL byte).
pub fn jvbconf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = signaling::jvbconf::hocon::parse(&text);
    let (hocon, props) = match text.split_once('\0') {
        Some((h, p)) => (h, Some(("sip-communicator.properties", p))),
        None => (&*text, None),
    };
    let _ = signaling::jvbconf::read("jvb.conf", hocon, props);
}
