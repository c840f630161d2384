//! Incremental XML stream reader: bytes in, one `minidom::Element` per top-level stanza out.
//!
//! The stream is one XML document, `<stream:stream>` being the root; every child of the root is
//! a stanza (or nonza). We parse with rxml's namespace-aware `Parser` and build the element tree
//! ourselves, so a stanza cut out of the stream carries its resolved namespace (`jabber:client`,
//! inherited from the root's default namespace) even though it declares none itself.
//!
//! Safety limits (the server is trusted, but a stanza relayed from a client is not):
//! * rxml is a *restricted* XML parser: no DTD, no entity declarations or non-predefined
//!   entity references, no processing instructions; comments are rejected. The "billion laughs"
//!   class of attack cannot be expressed.
//! * One stanza may use at most `max_stanza_size` bytes of XML, counted as the parser consumes
//!   them (whitespace since the previous stanza included), so memory for a stanza is bounded
//!   before it is complete. A stanza over it is not kept: the reader drops what it built, parses
//!   on to the stanza's end without storing anything, and reports it as
//!   [`XmlEvent::Oversized`] with only its top element's attributes, so the client can answer an
//!   IQ with an error and keep its session (robustness.md case 31). Skipping ends with an error
//!   after [`SKIP_FACTOR`] times the limit.
//! * One stanza may nest at most `max_depth` elements (the element tree is dropped
//!   recursively, so depth is stack).
//!
//! Any other violation is a [`ReadError`], after which the caller drops the connection.

use minidom::rxml::{self, Event, Parse, WithOptions};
use minidom::Element;
use thiserror::Error;

use super::ns;

/// What the reader produced.
#[derive(Debug)]
pub(crate) enum XmlEvent {
    /// The server's `<stream:stream>` header; `id` and `from` attributes when present.
    StreamOpen { id: Option<String> },
    /// One complete child of the stream root.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
    /// A stanza over the size limit, skipped: its top element (name, namespace, attributes),
    /// without children.
    Oversized(Element),
}

/// A stanza being skipped may run to this many times the size limit before the connection is
/// given up.
pub(crate) const SKIP_FACTOR: usize = 64;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("XML not well-formed or not allowed: {0}")]
    Xml(String),
    #[error("stanza larger than {limit} bytes")]
    StanzaTooLarge { limit: usize },
    #[error("stanza nested deeper than {limit} elements")]
    TooDeep { limit: usize },
    #[error("stream root is <{ns} {name}>, not <stream:stream>")]
    NotAStream { ns: String, name: String },
    #[error("data after the end of the stream")]
    AfterStreamEnd,
}

pub(crate) struct XmlReader {
    parser: rxml::Parser,
    /// Bytes received but not yet handed to the parser.
    input: Vec<u8>,
    /// How much of `input` the parser has consumed.
    consumed: usize,
    /// Open elements of the stanza being read (index 0 is the stanza itself).
    stack: Vec<Element>,
    root_open: bool,
    root_closed: bool,
    stanza_bytes: usize,
    max_stanza_size: usize,
    max_depth: usize,
    /// Skipping an oversized stanza: its top element, and how many of its elements are open.
    skip: Option<(Element, usize)>,
}

impl XmlReader {
    pub(crate) fn new(max_stanza_size: usize, max_depth: usize) -> Self {
        let options = rxml::Options {
            // Bounds one attribute value / name; text longer than this is split into several
            // events, which we join. Attributes in Colibri2 are short; 64 KiB is generous.
            max_token_length: 64 * 1024,
            ..rxml::Options::default()
        };
        Self {
            parser: rxml::Parser::with_options(options),
            input: Vec::new(),
            consumed: 0,
            stack: Vec::new(),
            root_open: false,
            root_closed: false,
            stanza_bytes: 0,
            max_stanza_size,
            max_depth: max_depth.max(1),
            skip: None,
        }
    }

    /// Hand received bytes to the reader. Call [`Self::next_event`] until it returns `None`
    /// before feeding more, so the buffer never holds more than one read's worth.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        }
        self.input.extend_from_slice(data);
    }

    /// Whether bytes are buffered that the parser has not consumed yet (must be none when the
    /// transport is swapped for STARTTLS).
    pub(crate) fn has_buffered_input(&self) -> bool {
        self.consumed < self.input.len()
    }

    /// The next complete event from the bytes fed so far, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_event(&mut self) -> Result<Option<XmlEvent>, ReadError> {
        loop {
            // The parser is called even with no input left: it may hold queued events (the
            // end of a self-closing `<proceed/>` comes out one call after its start).
            let mut rest = &self.input[self.consumed..];
            if self.root_closed {
                if rest.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::AfterStreamEnd);
            }
            let before = rest.len();
            let res = self.parser.parse(&mut rest, false);
            let used = before - rest.len();
            self.consumed += used;
            // Count bytes as the parser takes them, not per event: rxml buffers a text token
            // internally until it ends, so per-event counting would see it too late.
            self.stanza_bytes = self.stanza_bytes.saturating_add(used);
            if self.stanza_bytes > self.max_stanza_size && self.skip.is_none() {
                if self.stack.is_empty() {
                    // Not inside a stanza (whitespace between stanzas): nothing to answer.
                    return Err(ReadError::StanzaTooLarge {
                        limit: self.max_stanza_size,
                    });
                }
                // Keep the top element's attributes only; the tree built so far is dropped.
                let depth = self.stack.len();
                let top = self.stack.swap_remove(0);
                self.stack.clear();
                let mut bare = Element::bare(top.name(), top.ns());
                *bare.attrs_mut() = top.attrs().clone();
                self.skip = Some((bare, depth));
            }
            if self.skip.is_some() && self.stanza_bytes > self.max_stanza_size.saturating_mul(SKIP_FACTOR) {
                return Err(ReadError::StanzaTooLarge {
                    limit: self.max_stanza_size,
                });
            }
            let ev = match res {
                Ok(Some(ev)) => ev,
                // `None` is end-of-document, which needs at_eof=true; treat like NeedMoreData.
                Ok(None) | Err(rxml::error::EndOrError::NeedMoreData) => {
                    if used > 0 && self.consumed < self.input.len() {
                        // Progress was made but bytes remain: keep parsing them.
                        continue;
                    }
                    return Ok(None);
                }
                Err(rxml::error::EndOrError::Error(e)) => return Err(ReadError::Xml(e.to_string())),
            };
            if let Some(out) = self.handle(ev)? {
                return Ok(Some(out));
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Result<Option<XmlEvent>, ReadError> {
        if let Some((_, depth)) = self.skip.as_mut() {
            match ev {
                Event::StartElement(..) => *depth += 1,
                Event::EndElement(_) => {
                    *depth -= 1;
                    if *depth == 0 {
                        let (top, _) = self.skip.take().expect("matched Some above");
                        self.stanza_bytes = 0;
                        return Ok(Some(XmlEvent::Oversized(top)));
                    }
                }
                Event::XmlDeclaration(..) | Event::Text(..) => {}
            }
            return Ok(None);
        }
        match ev {
            Event::XmlDeclaration(..) => Ok(None),
            Event::StartElement(_, (ns, name), attrs) => {
                if !self.root_open {
                    if ns.as_str() != ns::STREAM || name.as_str() != "stream" {
                        return Err(ReadError::NotAStream {
                            ns: ns.to_string(),
                            name: name.to_string(),
                        });
                    }
                    self.root_open = true;
                    self.stanza_bytes = 0;
                    let id = attrs.get(&rxml::Namespace::NONE, "id").cloned();
                    return Ok(Some(XmlEvent::StreamOpen { id }));
                }
                if self.stack.len() >= self.max_depth {
                    return Err(ReadError::TooDeep { limit: self.max_depth });
                }
                let mut el = Element::bare(name.as_str(), ns.as_str());
                *el.attrs_mut() = attrs;
                self.stack.push(el);
                Ok(None)
            }
            Event::Text(_, text) => {
                // Text directly under the root is whitespace keepalive: dropped.
                if let Some(top) = self.stack.last_mut() {
                    top.append_text(text);
                }
                Ok(None)
            }
            Event::EndElement(_) => match self.stack.pop() {
                None => {
                    self.root_closed = true;
                    Ok(Some(XmlEvent::StreamClose))
                }
                Some(el) => match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(el);
                        Ok(None)
                    }
                    None => {
                        self.stanza_bytes = 0;
                        Ok(Some(XmlEvent::Stanza(el)))
                    }
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='auth.meet.jitsi' \
        version='1.0'>";

    fn read_all(reader: &mut XmlReader, chunks: &[&[u8]]) -> Result<Vec<XmlEvent>, ReadError> {
        let mut out = Vec::new();
        for chunk in chunks {
            reader.feed(chunk);
            while let Some(ev) = reader.next_event()? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    fn stanzas(events: Vec<XmlEvent>) -> Vec<Element> {
        events
            .into_iter()
            .filter_map(|e| match e {
                XmlEvent::Stanza(el) => Some(el),
                _ => None,
            })
            .collect()
    }

    /// A stanza without its own xmlns inherits `jabber:client` from the stream root, and
    /// children keep their own namespaces.
    #[test]
    fn stanza_inherits_stream_default_namespace() {
        let doc = format!(
            "{HEADER}<iq type='get' id='1' from='a@b/c'><healthcheck \
             xmlns='http://jitsi.org/protocol/healthcheck'/></iq>"
        );
        let mut r = XmlReader::new(1 << 20, 64);
        let evs = read_all(&mut r, &[doc.as_bytes()]).unwrap();
        assert!(matches!(&evs[0], XmlEvent::StreamOpen { id: Some(id) } if id == "abc"));
        let st = stanzas(evs);
        assert_eq!(st.len(), 1);
        assert!(st[0].is("iq", "jabber:client"));
        assert_eq!(st[0].attr("id"), Some("1"));
        let child = st[0].children().next().unwrap();
        assert!(child.is("healthcheck", "http://jitsi.org/protocol/healthcheck"));
    }

    /// TCP delivers arbitrary fragments: feeding one byte at a time gives the same stanzas.
    #[test]
    fn byte_by_byte_feed() {
        let doc = format!(
            "{HEADER}<presence from='r@m/n'><stats xmlns='http://jitsi.org/protocol/colibri'>\
             <stat name='a' value='1'/></stats></presence> <message><body>h&amp;i &#x263A;</body>\
             </message></stream:stream>"
        );
        let chunks: Vec<&[u8]> = doc.as_bytes().chunks(1).collect();
        let mut r = XmlReader::new(1 << 20, 64);
        let evs = read_all(&mut r, &chunks).unwrap();
        assert!(matches!(evs.last(), Some(XmlEvent::StreamClose)));
        let st = stanzas(evs);
        assert_eq!(st.len(), 2);
        let stat = st[0]
            .get_child("stats", "http://jitsi.org/protocol/colibri")
            .and_then(|s| s.children().next())
            .unwrap();
        assert_eq!(stat.attr("value"), Some("1"));
        assert_eq!(st[1].children().next().unwrap().text(), "h&i \u{263A}");
    }

    /// Prefixed namespaces (stream:features, stream:error) resolve to the stream namespace.
    #[test]
    fn prefixed_children() {
        let doc = format!(
            "{HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>"
        );
        let mut r = XmlReader::new(1 << 20, 64);
        let st = stanzas(read_all(&mut r, &[doc.as_bytes()]).unwrap());
        assert!(st[0].is("features", ns::STREAM));
    }

    /// Prosody's exact first bytes (captured): the features arrive in the same read as the
    /// header and must come out without waiting for more input.
    #[test]
    fn prosody_header_and_features_in_one_read() {
        let doc = "<?xml version='1.0'?><stream:stream version='1.0' \
            xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' from='auth.meet.jitsi' \
            xmlns='jabber:client' id='10527b22'><stream:features><starttls \
            xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
        let mut r = XmlReader::new(1 << 20, 64);
        let evs = read_all(&mut r, &[doc.as_bytes()]).unwrap();
        assert_eq!(evs.len(), 2, "{evs:?}");
        let st = stanzas(evs);
        assert!(st[0].is("features", ns::STREAM));
        // Any split into two reads.
        let b = doc.as_bytes();
        for i in 1..b.len() {
            let mut r = XmlReader::new(1 << 20, 64);
            let evs = read_all(&mut r, &[&b[..i], &b[i..]]).unwrap();
            assert_eq!(evs.len(), 2, "split at {i}: {evs:?}");
        }
    }

    /// A self-closing stanza at the very end of a read (`<proceed/>` before the TLS handshake)
    /// comes out without more input.
    #[test]
    fn self_closing_stanza_at_end_of_read() {
        let mut r = XmlReader::new(1 << 20, 64);
        read_all(&mut r, &[HEADER.as_bytes()]).unwrap();
        let evs = read_all(&mut r, &[b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"]).unwrap();
        let st = stanzas(evs);
        assert_eq!(st.len(), 1);
        assert!(st[0].is("proceed", ns::TLS));
        assert!(!r.has_buffered_input());
    }

    /// A DTD (the vehicle of entity-expansion attacks) is refused outright.
    #[test]
    fn refuses_dtd() {
        let doc = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]>\
                   <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
        let mut r = XmlReader::new(1 << 20, 64);
        assert!(matches!(read_all(&mut r, &[doc.as_bytes()]), Err(ReadError::Xml(_))));
    }

    /// Undeclared entity references are refused.
    #[test]
    fn refuses_custom_entity() {
        let doc = format!("{HEADER}<message><body>&lol9;</body></message>");
        let mut r = XmlReader::new(1 << 20, 64);
        assert!(matches!(read_all(&mut r, &[doc.as_bytes()]), Err(ReadError::Xml(_))));
    }

    /// Processing instructions and comments inside the stream are refused.
    #[test]
    fn refuses_pi_and_comment() {
        for bad in ["<?evil x?>", "<!-- c -->"] {
            let doc = format!("{HEADER}<message>{bad}</message>");
            let mut r = XmlReader::new(1 << 20, 64);
            assert!(read_all(&mut r, &[doc.as_bytes()]).is_err(), "accepted {bad}");
        }
    }

    /// A stanza over the byte bound is not kept: what was built is dropped at once, the rest
    /// is parsed without storing anything, and the stanza comes out as `Oversized` with only
    /// its top element's attributes; the stream goes on with the next stanza.
    #[test]
    fn oversized_stanza_is_skipped_and_reported() {
        let mut r = XmlReader::new(1000, 64);
        let evs = read_all(
            &mut r,
            &[
                HEADER.as_bytes(),
                b"<iq id='big' type='set' from='a@b/c'><x xmlns='urn:x'><y>",
            ],
        )
        .unwrap();
        assert_eq!(evs.len(), 1);
        let filler = vec![b'x'; 400];
        for _ in 0..10 {
            assert!(read_all(&mut r, &[&filler]).unwrap().is_empty());
            assert!(r.stack.is_empty() || r.skip.is_none(), "nothing kept while skipping");
        }
        let evs = read_all(&mut r, &[b"</y><z/></x></iq><presence id='next'/>"]).unwrap();
        let [XmlEvent::Oversized(top), XmlEvent::Stanza(next)] = &evs[..] else {
            panic!("{evs:?}");
        };
        assert_eq!(
            (top.name(), top.attr("id"), top.attr("type"), top.attr("from")),
            ("iq", Some("big"), Some("set"), Some("a@b/c"))
        );
        assert_eq!(top.children().count(), 0);
        assert_eq!((next.name(), next.attr("id")), ("presence", Some("next")));
    }

    /// Skipping is bounded too: past `SKIP_FACTOR` times the limit the stream is given up.
    #[test]
    fn stanza_size_bound() {
        let mut r = XmlReader::new(1000, 64);
        let mut evs = read_all(&mut r, &[HEADER.as_bytes(), b"<message><body>"]).unwrap();
        assert_eq!(evs.len(), 1);
        evs.clear();
        let filler = vec![b'x'; 400];
        let mut result = Ok(Vec::new());
        for _ in 0..(SKIP_FACTOR * 1000 / 400 + 2) {
            result = read_all(&mut r, &[&filler]);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ReadError::StanzaTooLarge { limit: 1000 })));
    }

    /// Many small stanzas each under the bound are fine: the count resets per stanza.
    #[test]
    fn size_bound_is_per_stanza() {
        let mut r = XmlReader::new(200, 64);
        let mut doc = String::from(HEADER);
        for i in 0..100 {
            doc.push_str(&format!("<presence id='{i}'><status>hello</status></presence>"));
        }
        let st = stanzas(read_all(&mut r, &[doc.as_bytes()]).unwrap());
        assert_eq!(st.len(), 100);
    }

    #[test]
    fn depth_bound() {
        let mut r = XmlReader::new(1 << 20, 8);
        let doc = format!("{HEADER}{}", "<a>".repeat(9));
        assert!(matches!(
            read_all(&mut r, &[doc.as_bytes()]),
            Err(ReadError::TooDeep { limit: 8 })
        ));
    }

    #[test]
    fn wrong_root_is_refused() {
        let mut r = XmlReader::new(1 << 20, 8);
        assert!(matches!(
            read_all(&mut r, &[b"<html xmlns='x'>"]),
            Err(ReadError::NotAStream { .. })
        ));
    }

    /// Malformed XML (mismatched tags, undeclared prefix) is an error, never a panic.
    #[test]
    fn malformed_is_error() {
        for bad in ["<a></b>", "<x:a/>", "<a b='1' b='2'/>", "<a>\u{0}</a>"] {
            let doc = format!("{HEADER}{bad}");
            let mut r = XmlReader::new(1 << 20, 8);
            assert!(read_all(&mut r, &[doc.as_bytes()]).is_err(), "accepted {bad}");
        }
    }
}
