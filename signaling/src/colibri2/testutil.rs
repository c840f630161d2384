//! Shared helpers for the Colibri2 unit tests: fixtures and XML comparison.

use minidom::{Element, Node};

/// Read `tests/data/colibri2/<name>` (an `<iq>`) and return its payload element.
pub(crate) fn fixture(name: &str) -> Element {
    let iq = fixture_iq(name);
    iq.children().next().cloned().expect("fixture iq has a payload")
}

/// Read `tests/data/colibri2/<name>` as an element.
pub(crate) fn fixture_iq(name: &str) -> Element {
    let path = format!("{}/tests/data/colibri2/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    text.parse().expect("fixture is well-formed XML")
}

/// A copy without whitespace-only text nodes (pretty-printing), for structural comparison.
pub(crate) fn strip_ws(el: &Element) -> Element {
    let mut out = Element::bare(el.name(), el.ns());
    for ((ns, name), value) in el.attrs().iter() {
        out.set_attr(ns.clone(), name.clone(), value.clone());
    }
    for node in el.nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(strip_ws(child));
            }
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}

/// Serialize for assertion messages.
pub(crate) fn to_string(el: &Element) -> String {
    let mut buf = Vec::new();
    el.write_to(&mut buf).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("minidom writes UTF-8")
}
