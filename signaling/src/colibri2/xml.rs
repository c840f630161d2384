//! XML form of Colibri2 over minidom 0.19: parse `conference-modify` (and, for test focuses and
//! the load tester, `conference-modified`), and write both.
//!
//! Elements are matched by (local name, namespace), never by literal text, so redundant
//! `xmlns="jitsi:colibri2"` on nested elements is fine. Unknown children and attributes are
//! ignored, as JVB's `IqProviderUtils` does.

use std::str::FromStr;

use minidom::rxml::{Namespace, NcName};
use minidom::{Element, IntoAttributeValue};

use super::{
    bounded, limits, media_kind_str, ns, parse_media_kind, truncated, Candidate, ConferenceModified, ConferenceModify,
    DtlsFingerprint, Endpoint, EndpointResponse, ForceMute, IceUdpTransport, Media, MediaSource, ParseError,
    PayloadType, Relay, RtcpFb, RtpHdrExt, Sctp, Source, SsrcGroupDesc, Transport, WebSocket,
};

impl ConferenceModify {
    /// Parse a `<conference-modify xmlns="jitsi:colibri2">` element.
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "conference-modify";
        if !el.is(E, ns::COLIBRI2) {
            return Err(ParseError::WrongElement(E, ns::COLIBRI2));
        }
        let meeting_id = req_attr(el, E, "meeting-id")?;
        if meeting_id.trim().is_empty() {
            return Err(ParseError::InvalidValue {
                element: E,
                attr: "meeting-id",
                value: String::new(),
            });
        }
        let mut out = ConferenceModify {
            meeting_id: meeting_id.to_owned(),
            name: opt_attr(el, E, "name")?.map(str::to_owned),
            create: bool_attr(el, E, "create")?,
            expire: bool_attr(el, E, "expire")?,
            rtcstats_enabled: opt_attr(el, E, "rtcstats-enabled")?.map(parse_bool),
            ..Default::default()
        };
        for child in children(el, E)? {
            if child.is("endpoint", ns::COLIBRI2) {
                push(
                    &mut out.endpoints,
                    Endpoint::from_element(child)?,
                    "endpoint",
                    limits::ENDPOINTS,
                )?;
            } else if child.is("relay", ns::COLIBRI2) {
                push(&mut out.relays, parse_relay(child)?, "relay", limits::RELAYS)?;
            } else if child.is("connects", ns::COLIBRI2) {
                out.connects = true;
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    /// Write the request (for test focuses and the load tester).
    pub fn to_element(&self) -> Element {
        let mut b = El::new("conference-modify", ns::COLIBRI2)
            .attr("meeting-id", &self.meeting_id)
            .attr("name", self.name.as_ref())
            .flag("create", self.create)
            .flag("expire", self.expire);
        if let Some(v) = self.rtcstats_enabled {
            b = b.attr("rtcstats-enabled", bool_str(v));
        }
        for ep in &self.endpoints {
            b = b.child(ep.to_element());
        }
        for relay in &self.relays {
            b = b.child(
                El::new("relay", ns::COLIBRI2)
                    .attr("id", &relay.id)
                    .flag("create", relay.create)
                    .flag("expire", relay.expire)
                    .attr("mesh-id", relay.mesh_id.as_ref())
                    .build(),
            );
        }
        if self.connects {
            b = b.child(El::new("connects", ns::COLIBRI2).build());
        }
        b.build()
    }
}

impl Endpoint {
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "endpoint";
        let mut out = Endpoint {
            id: req_attr(el, E, "id")?.to_owned(),
            create: bool_attr(el, E, "create")?,
            expire: bool_attr(el, E, "expire")?,
            stats_id: opt_attr(el, E, "stats-id")?.map(str::to_owned),
            muc_role: opt_attr(el, E, "muc-role")?.map(str::to_owned),
            ..Default::default()
        };
        for child in children(el, E)? {
            if child.is("media", ns::COLIBRI2) {
                push(&mut out.media, Media::from_element(child)?, "media", limits::MEDIA)?;
            } else if child.is("transport", ns::COLIBRI2) {
                out.transport = Some(Transport::from_element(child)?);
            } else if child.is("sources", ns::COLIBRI2) {
                out.sources = Some(parse_sources(child)?);
            } else if child.is("force-mute", ns::COLIBRI2) {
                out.force_mute = Some(ForceMute {
                    audio: bool_attr(child, "force-mute", "audio")?,
                    video: bool_attr(child, "force-mute", "video")?,
                });
            } else if child.is("capability", ns::COLIBRI2) {
                let name = req_attr(child, "capability", "name")?.to_owned();
                push(&mut out.capabilities, name, "capability", limits::CAPABILITIES)?;
            } else if child.is("initial-last-n", ns::COLIBRI2) {
                out.initial_last_n = Some(req_num(child, "initial-last-n", "value")?);
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    pub fn to_element(&self) -> Element {
        let mut b = El::new("endpoint", ns::COLIBRI2)
            .attr("id", &self.id)
            .flag("create", self.create)
            .flag("expire", self.expire)
            .attr("stats-id", self.stats_id.as_ref())
            .attr("muc-role", self.muc_role.as_ref());
        for m in &self.media {
            b = b.child(m.to_element());
        }
        if let Some(t) = &self.transport {
            b = b.child(t.to_element());
        }
        if let Some(s) = &self.sources {
            b = b.child(sources_element(s));
        }
        if let Some(fm) = self.force_mute {
            b = b.child(
                El::new("force-mute", ns::COLIBRI2)
                    .flag("audio", fm.audio)
                    .flag("video", fm.video)
                    .build(),
            );
        }
        for c in &self.capabilities {
            b = b.child(El::new("capability", ns::COLIBRI2).attr("name", c).build());
        }
        if let Some(n) = self.initial_last_n {
            b = b.child(El::new("initial-last-n", ns::COLIBRI2).attr("value", n).build());
        }
        b.build()
    }
}

impl Media {
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "media";
        let kind = parse_media_kind(E, "type", req_attr(el, E, "type")?)?;
        let mut out = Media {
            kind,
            payload_types: vec![],
            rtp_hdrexts: vec![],
            extmap_allow_mixed: false,
        };
        for child in children(el, E)? {
            if child.is("payload-type", ns::RTP) {
                let pt = parse_payload_type(child)?;
                push(&mut out.payload_types, pt, "payload-type", limits::PAYLOAD_TYPES)?;
            } else if child.is("rtp-hdrext", ns::RTP_HDREXT) {
                const H: &str = "rtp-hdrext";
                let ext = RtpHdrExt {
                    id: req_num(child, H, "id")?,
                    uri: req_attr(child, H, "uri")?.to_owned(),
                    senders: opt_attr(child, H, "senders")?.map(str::to_owned),
                    attributes: opt_attr(child, H, "attributes")?.map(str::to_owned),
                };
                push(&mut out.rtp_hdrexts, ext, H, limits::HDREXTS)?;
            } else if child.is("extmap-allow-mixed", ns::RTP_HDREXT) {
                out.extmap_allow_mixed = true;
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    pub fn to_element(&self) -> Element {
        let mut b = El::new("media", ns::COLIBRI2).attr("type", media_kind_str(self.kind));
        for pt in &self.payload_types {
            let mut p = El::new("payload-type", ns::RTP)
                .attr("id", pt.id)
                .attr("name", pt.name.as_ref())
                .attr("clockrate", pt.clockrate)
                .attr("channels", pt.channels)
                .attr("ptime", pt.ptime)
                .attr("maxptime", pt.maxptime);
            for (name, value) in &pt.parameters {
                p = p.child(
                    El::new("parameter", ns::RTP)
                        .attr("name", name.as_ref())
                        .attr("value", value)
                        .build(),
                );
            }
            for fb in &pt.rtcp_fbs {
                p = p.child(
                    El::new("rtcp-fb", ns::RTCP_FB)
                        .attr("type", &fb.fb_type)
                        .attr("subtype", fb.subtype.as_ref())
                        .build(),
                );
            }
            b = b.child(p.build());
        }
        for ext in &self.rtp_hdrexts {
            b = b.child(
                El::new("rtp-hdrext", ns::RTP_HDREXT)
                    .attr("id", ext.id)
                    .attr("uri", &ext.uri)
                    .attr("senders", ext.senders.as_ref())
                    .attr("attributes", ext.attributes.as_ref())
                    .build(),
            );
        }
        if self.extmap_allow_mixed {
            b = b.child(El::new("extmap-allow-mixed", ns::RTP_HDREXT).build());
        }
        b.build()
    }
}

impl Transport {
    /// Parse the colibri2 `<transport>` wrapper.
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "transport";
        let mut out = Transport {
            ice_controlling: bool_attr(el, E, "ice-controlling")?,
            use_unique_port: bool_attr(el, E, "use-unique-port")?,
            ice_restart: bool_attr(el, E, "ice-restart")?,
            ice: None,
            sctp: None,
        };
        for child in children(el, E)? {
            if child.is("transport", ns::ICE_UDP) {
                out.ice = Some(IceUdpTransport::from_element(child)?);
            } else if child.is("sctp", ns::COLIBRI2) {
                out.sctp = Some(Sctp {
                    port: opt_num(child, "sctp", "port")?,
                    role: opt_attr(child, "sctp", "role")?.map(str::to_owned),
                });
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    pub fn to_element(&self) -> Element {
        let mut b = El::new("transport", ns::COLIBRI2)
            .flag("ice-controlling", self.ice_controlling)
            .flag("use-unique-port", self.use_unique_port)
            .flag("ice-restart", self.ice_restart);
        if let Some(ice) = &self.ice {
            b = b.child(ice.to_element());
        }
        if let Some(sctp) = &self.sctp {
            b = b.child(
                El::new("sctp", ns::COLIBRI2)
                    .attr("port", sctp.port)
                    .attr("role", sctp.role.as_ref())
                    .build(),
            );
        }
        b.build()
    }
}

impl IceUdpTransport {
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "transport";
        let mut out = IceUdpTransport {
            ufrag: opt_attr(el, E, "ufrag")?.map(str::to_owned),
            pwd: opt_attr(el, E, "pwd")?.map(str::to_owned),
            ice_generation: opt_num(el, E, "ice-generation")?,
            ..Default::default()
        };
        for child in children(el, E)? {
            if child.is("candidate", ns::ICE_UDP) {
                push(
                    &mut out.candidates,
                    parse_candidate(child)?,
                    "candidate",
                    limits::CANDIDATES,
                )?;
            } else if child.is("rtcp-mux", ns::ICE_UDP) {
                out.rtcp_mux = true;
            } else if child.is("fingerprint", ns::DTLS) {
                const F: &str = "fingerprint";
                let text = child.text();
                bounded(F, &text)?;
                let fp = DtlsFingerprint {
                    fingerprint: text.trim().to_owned(),
                    hash: opt_attr(child, F, "hash")?.map(str::to_owned),
                    setup: opt_attr(child, F, "setup")?.map(str::to_owned),
                    cryptex: bool_attr(child, F, "cryptex")?,
                };
                push(&mut out.fingerprints, fp, F, limits::FINGERPRINTS)?;
            } else if child.is("web-socket", ns::COLIBRI) {
                let ws = WebSocket {
                    url: opt_attr(child, "web-socket", "url")?.map(str::to_owned),
                    active: bool_attr(child, "web-socket", "active")?,
                };
                push(&mut out.web_sockets, ws, "web-socket", limits::WEB_SOCKETS)?;
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    pub fn to_element(&self) -> Element {
        let mut b = El::new("transport", ns::ICE_UDP)
            .attr("ufrag", self.ufrag.as_ref())
            .attr("pwd", self.pwd.as_ref())
            .attr("ice-generation", self.ice_generation);
        for c in &self.candidates {
            b = b.child(
                El::new("candidate", ns::ICE_UDP)
                    .attr("component", c.component)
                    .attr("foundation", &c.foundation)
                    .attr("generation", c.generation)
                    .attr("id", c.id.as_ref())
                    .attr("network", c.network)
                    .attr("priority", c.priority)
                    .attr("protocol", &c.protocol)
                    .attr("type", &c.cand_type)
                    .attr("ip", &c.ip)
                    .attr("port", c.port)
                    .attr("rel-addr", c.rel_addr.as_ref())
                    .attr("rel-port", c.rel_port)
                    .attr("tcptype", c.tcptype.as_ref())
                    .build(),
            );
        }
        if self.rtcp_mux {
            b = b.child(El::new("rtcp-mux", ns::ICE_UDP).build());
        }
        for fp in &self.fingerprints {
            b = b.child(
                El::new("fingerprint", ns::DTLS)
                    .attr("hash", fp.hash.as_ref())
                    .attr("setup", fp.setup.as_ref())
                    .flag("cryptex", fp.cryptex)
                    .text(fp.fingerprint.clone())
                    .build(),
            );
        }
        for ws in &self.web_sockets {
            b = b.child(
                El::new("web-socket", ns::COLIBRI)
                    .attr("url", ws.url.as_ref())
                    .flag("active", ws.active)
                    .build(),
            );
        }
        b.build()
    }
}

impl MediaSource {
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "media-source";
        let kind = parse_media_kind(E, "type", req_attr(el, E, "type")?)?;
        let mut out = MediaSource {
            kind,
            id: req_attr(el, E, "id")?.to_owned(),
            synthetic: bool_attr(el, E, "synthetic")?,
            sources: vec![],
            ssrc_groups: vec![],
        };
        for child in children(el, E)? {
            if child.is("source", ns::SSMA) {
                const S: &str = "source";
                let mut msid = None;
                for p in children(child, S)? {
                    if p.is("parameter", ns::SSMA) && p.attr("name") == Some("msid") {
                        msid = opt_attr(p, "parameter", "value")?.map(str::to_owned);
                    }
                }
                let src = Source {
                    ssrc: req_num(child, S, "ssrc")?,
                    name: opt_attr(child, S, "name")?.map(str::to_owned),
                    video_type: opt_attr(child, S, "videoType")?.map(str::to_owned),
                    rid: opt_attr(child, S, "rid")?.map(str::to_owned),
                    msid,
                };
                push(&mut out.sources, src, S, limits::SOURCES)?;
            } else if child.is("ssrc-group", ns::SSMA) {
                const G: &str = "ssrc-group";
                let mut group = SsrcGroupDesc {
                    semantics: req_attr(child, G, "semantics")?.to_owned(),
                    ssrcs: vec![],
                };
                for s in children(child, G)? {
                    if s.is("source", ns::SSMA) {
                        push(
                            &mut group.ssrcs,
                            req_num(s, "source", "ssrc")?,
                            "source",
                            limits::GROUP_SSRCS,
                        )?;
                    }
                }
                push(&mut out.ssrc_groups, group, G, limits::SSRC_GROUPS)?;
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }

    pub fn to_element(&self) -> Element {
        let mut b = El::new("media-source", ns::COLIBRI2)
            .attr("type", media_kind_str(self.kind))
            .attr("id", &self.id)
            .flag("synthetic", self.synthetic);
        for s in &self.sources {
            let mut src = El::new("source", ns::SSMA)
                .attr("ssrc", s.ssrc)
                .attr("name", s.name.as_ref())
                .attr("videoType", s.video_type.as_ref())
                .attr("rid", s.rid.as_ref());
            if let Some(msid) = &s.msid {
                src = src.child(
                    El::new("parameter", ns::SSMA)
                        .attr("name", "msid")
                        .attr("value", msid)
                        .build(),
                );
            }
            b = b.child(src.build());
        }
        for g in &self.ssrc_groups {
            let mut group = El::new("ssrc-group", ns::SSMA).attr("semantics", &g.semantics);
            for ssrc in &g.ssrcs {
                group = group.child(El::new("source", ns::SSMA).attr("ssrc", *ssrc).build());
            }
            b = b.child(group.build());
        }
        b.build()
    }
}

impl ConferenceModified {
    /// Write `<conference-modified xmlns="jitsi:colibri2">` (no attributes, colibri.md §3.11).
    pub fn to_element(&self) -> Element {
        let mut b = El::new("conference-modified", ns::COLIBRI2);
        for ep in &self.endpoints {
            let mut e = El::new("endpoint", ns::COLIBRI2)
                .attr("id", &ep.id)
                .flag("expire", ep.expire);
            if let Some(t) = &ep.transport {
                e = e.child(t.to_element());
            }
            b = b.child(e.build());
        }
        if let Some(sources) = &self.sources {
            b = b.child(sources_element(sources));
        }
        b.build()
    }

    /// Parse a response (for test focuses and the load tester).
    pub fn from_element(el: &Element) -> Result<Self, ParseError> {
        const E: &str = "conference-modified";
        if !el.is(E, ns::COLIBRI2) {
            return Err(ParseError::WrongElement(E, ns::COLIBRI2));
        }
        let mut out = ConferenceModified::default();
        for child in children(el, E)? {
            if child.is("endpoint", ns::COLIBRI2) {
                let mut ep = EndpointResponse {
                    id: req_attr(child, "endpoint", "id")?.to_owned(),
                    expire: bool_attr(child, "endpoint", "expire")?,
                    transport: None,
                };
                for t in children(child, "endpoint")? {
                    if t.is("transport", ns::COLIBRI2) {
                        ep.transport = Some(Transport::from_element(t)?);
                    }
                }
                push(&mut out.endpoints, ep, "endpoint", limits::ENDPOINTS)?;
            } else if child.is("sources", ns::COLIBRI2) {
                out.sources = Some(parse_sources(child)?);
            } else {
                skip_unknown(E, child);
            }
        }
        Ok(out)
    }
}

fn parse_sources(el: &Element) -> Result<Vec<MediaSource>, ParseError> {
    let mut out = vec![];
    for child in children(el, "sources")? {
        if child.is("media-source", ns::COLIBRI2) {
            push(
                &mut out,
                MediaSource::from_element(child)?,
                "media-source",
                limits::MEDIA_SOURCES,
            )?;
        } else {
            skip_unknown("sources", child);
        }
    }
    Ok(out)
}

fn sources_element(sources: &[MediaSource]) -> Element {
    El::new("sources", ns::COLIBRI2)
        .children(sources.iter().map(MediaSource::to_element))
        .build()
}

fn parse_payload_type(el: &Element) -> Result<PayloadType, ParseError> {
    const E: &str = "payload-type";
    let id: u8 = req_num(el, E, "id")?;
    if id > 127 {
        return Err(ParseError::InvalidValue {
            element: E,
            attr: "id",
            value: id.to_string(),
        });
    }
    let mut out = PayloadType {
        id,
        name: opt_attr(el, E, "name")?.map(str::to_owned),
        clockrate: opt_num(el, E, "clockrate")?,
        channels: opt_num(el, E, "channels")?,
        ptime: opt_num(el, E, "ptime")?,
        maxptime: opt_num(el, E, "maxptime")?,
        parameters: vec![],
        rtcp_fbs: vec![],
    };
    for child in children(el, E)? {
        if child.is("parameter", ns::RTP) {
            let name = opt_attr(child, "parameter", "name")?.map(str::to_owned);
            let value = opt_attr(child, "parameter", "value")?.unwrap_or_default().to_owned();
            push(&mut out.parameters, (name, value), "parameter", limits::PARAMETERS)?;
        } else if child.is("rtcp-fb", ns::RTCP_FB) {
            let fb = RtcpFb {
                fb_type: req_attr(child, "rtcp-fb", "type")?.to_owned(),
                subtype: opt_attr(child, "rtcp-fb", "subtype")?.map(str::to_owned),
            };
            push(&mut out.rtcp_fbs, fb, "rtcp-fb", limits::RTCP_FBS)?;
        } else {
            skip_unknown(E, child);
        }
    }
    Ok(out)
}

fn parse_candidate(el: &Element) -> Result<Candidate, ParseError> {
    const E: &str = "candidate";
    Ok(Candidate {
        component: opt_num(el, E, "component")?.unwrap_or(1),
        foundation: opt_attr(el, E, "foundation")?.unwrap_or_default().to_owned(),
        generation: opt_num(el, E, "generation")?.unwrap_or(0),
        id: opt_attr(el, E, "id")?.map(str::to_owned),
        ip: req_attr(el, E, "ip")?.to_owned(),
        port: req_num(el, E, "port")?,
        priority: opt_num(el, E, "priority")?.unwrap_or(0),
        protocol: opt_attr(el, E, "protocol")?.unwrap_or("udp").to_owned(),
        cand_type: opt_attr(el, E, "type")?.unwrap_or("host").to_owned(),
        rel_addr: opt_attr(el, E, "rel-addr")?.map(str::to_owned),
        rel_port: opt_num(el, E, "rel-port")?,
        network: opt_num(el, E, "network")?,
        tcptype: opt_attr(el, E, "tcptype")?.map(str::to_owned),
    })
}

fn parse_relay(el: &Element) -> Result<Relay, ParseError> {
    const E: &str = "relay";
    let has_content = children(el, E)?.next().is_some();
    Ok(Relay {
        id: req_attr(el, E, "id")?.to_owned(),
        create: bool_attr(el, E, "create")?,
        expire: bool_attr(el, E, "expire")?,
        mesh_id: opt_attr(el, E, "mesh-id")?.map(str::to_owned),
        has_content,
    })
}

// ----- parsing helpers -----

fn children<'a>(el: &'a Element, element: &'static str) -> Result<minidom::Children<'a>, ParseError> {
    if el.children().nth(limits::CHILDREN).is_some() {
        let _ = element;
        return Err(ParseError::TooMany("child", limits::CHILDREN));
    }
    Ok(el.children())
}

fn push<T>(v: &mut Vec<T>, item: T, what: &'static str, limit: usize) -> Result<(), ParseError> {
    if v.len() >= limit {
        return Err(ParseError::TooMany(what, limit));
    }
    v.push(item);
    Ok(())
}

fn skip_unknown(parent: &'static str, child: &Element) {
    tracing::debug!(parent, child = child.name(), ns = %child.ns(), "ignoring unknown colibri2 element");
}

fn opt_attr<'a>(el: &'a Element, element: &'static str, attr: &'static str) -> Result<Option<&'a str>, ParseError> {
    match el.attr(attr) {
        Some(v) => {
            bounded(attr, v).map_err(|_| ParseError::TooLong(element))?;
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn req_attr<'a>(el: &'a Element, element: &'static str, attr: &'static str) -> Result<&'a str, ParseError> {
    opt_attr(el, element, attr)?.ok_or(ParseError::MissingAttribute { element, attr })
}

/// Booleans as Java's `Boolean.parseBoolean`: `true` (any case) is true, anything else false.
fn bool_attr(el: &Element, element: &'static str, attr: &'static str) -> Result<bool, ParseError> {
    Ok(opt_attr(el, element, attr)?.map(parse_bool).unwrap_or(false))
}

fn parse_bool(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

fn opt_num<T: FromStr>(el: &Element, element: &'static str, attr: &'static str) -> Result<Option<T>, ParseError> {
    match opt_attr(el, element, attr)? {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ParseError::InvalidValue {
            element,
            attr,
            value: truncated(v),
        }),
    }
}

fn req_num<T: FromStr>(el: &Element, element: &'static str, attr: &'static str) -> Result<T, ParseError> {
    opt_num(el, element, attr)?.ok_or(ParseError::MissingAttribute { element, attr })
}

fn bool_str(v: bool) -> &'static str {
    if v {
        "true"
    } else {
        "false"
    }
}

// ----- writing helpers -----

/// An attribute name. Every caller passes a literal, checked by the serialization tests.
pub(crate) fn ncname(name: &'static str) -> NcName {
    // Invariant: only literal XML attribute names (`id`, `meeting-id`, …) reach here, and all of
    // them are NCNames; the round-trip tests exercise every one.
    NcName::try_from(name).expect("literal attribute names are valid NCNames")
}

/// A small builder over minidom's, whose `attr` wants an `NcName`.
pub(crate) struct El(Element);

impl El {
    pub(crate) fn new(name: &str, ns: &str) -> Self {
        El(Element::bare(name, ns))
    }

    /// Set an attribute; `None` values are left out.
    pub(crate) fn attr(mut self, name: &'static str, value: impl IntoAttributeValue) -> Self {
        if let Some(v) = value.into_attribute_value() {
            self.0.set_attr(Namespace::NONE, ncname(name), v);
        }
        self
    }

    /// A boolean attribute written only when true (the default is false everywhere).
    pub(crate) fn flag(self, name: &'static str, value: bool) -> Self {
        if value {
            self.attr(name, "true")
        } else {
            self
        }
    }

    pub(crate) fn child(mut self, child: Element) -> Self {
        self.0.append_child(child);
        self
    }

    pub(crate) fn children(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        for c in children {
            self.0.append_child(c);
        }
        self
    }

    pub(crate) fn text(mut self, text: impl Into<String>) -> Self {
        self.0.append_text(text);
        self
    }

    pub(crate) fn build(self) -> Element {
        self.0
    }
}

#[cfg(test)]
mod tests;
