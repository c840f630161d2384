//! Brewery MUC: join and stats presence (spec/colibri.md §2), room state and occupant
//! tracking from incoming presence.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use minidom::Element;

use super::iq::set_attr;
use super::ns;

/// Where the brewery presence gets its content. Called every `presence_interval` (and on
/// [`super::XmppClient::refresh_presence`]); must be cheap and must not block.
pub trait PresenceSource: Send + Sync + 'static {
    /// `(name, value)` pairs for `<stats xmlns="http://jitsi.org/protocol/colibri">`. All values
    /// are strings; booleans exactly `true`/`false` (§2.1). [`BridgeStats::to_pairs`] builds
    /// the set Jicofo reads.
    fn stats(&self) -> Vec<(String, String)>;

    /// Further presence extensions, sent after `<stats>` in every presence. Default: none.
    fn extensions(&self) -> Vec<Element> {
        Vec::new()
    }
}

impl<F> PresenceSource for F
where
    F: Fn() -> Vec<(String, String)> + Send + Sync + 'static,
{
    fn stats(&self) -> Vec<(String, String)> {
        self()
    }
}

/// The stats Jicofo reads from brewery presence (§2.2), with the values a healthy idle bridge
/// publishes by default. `to_pairs` adds `colibri2=true` and `current_timestamp`.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeStats {
    pub stress_level: f64,
    pub average_participant_stress: f64,
    /// Must be published, and `false` in normal operation: Jicofo assumes draining until it
    /// sees this stat (§8.8).
    pub drain: bool,
    pub graceful_shutdown: bool,
    pub shutting_down: bool,
    pub healthy: bool,
    pub version: String,
    pub release: Option<String>,
    /// Published when relays are enabled (with `relay_id`).
    pub region: Option<String>,
    pub relay_id: Option<String>,
    pub conferences: u64,
    pub participants: u64,
    /// Anything else (informational stats such as `octo_endpoints`).
    pub extra: Vec<(String, String)>,
}

impl Default for BridgeStats {
    fn default() -> Self {
        Self {
            stress_level: 0.0,
            average_participant_stress: 0.01,
            drain: false,
            graceful_shutdown: false,
            shutting_down: false,
            healthy: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            release: None,
            region: None,
            relay_id: None,
            conferences: 0,
            participants: 0,
            extra: Vec::new(),
        }
    }
}

impl BridgeStats {
    pub fn to_pairs(&self, now: SystemTime) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("stress_level".into(), format_f64(self.stress_level)),
            (
                "average_participant_stress".into(),
                format_f64(self.average_participant_stress),
            ),
            ("drain".into(), self.drain.to_string()),
            ("graceful_shutdown".into(), self.graceful_shutdown.to_string()),
            ("shutting_down".into(), self.shutting_down.to_string()),
            ("healthy".into(), self.healthy.to_string()),
            ("version".into(), self.version.clone()),
        ];
        if let Some(r) = &self.release {
            v.push(("release".into(), r.clone()));
        }
        if let Some(r) = &self.region {
            v.push(("region".into(), r.clone()));
        }
        if let Some(r) = &self.relay_id {
            v.push(("relay_id".into(), r.clone()));
        }
        v.push(("conferences".into(), self.conferences.to_string()));
        v.push(("participants".into(), self.participants.to_string()));
        v.push(("current_timestamp".into(), format_timestamp(now)));
        v.push(("colibri2".into(), "true".into()));
        v.extend(self.extra.iter().cloned());
        v
    }
}

/// Decimal text parseable by Java's `Double.parseDouble`; never `NaN`/`inf`.
fn format_f64(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "0".to_owned()
    }
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC (§2.1 `current_timestamp`).
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, day) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{mo:02}-{day:02} {h:02}:{m:02}:{s:02}.{:03}", d.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `<stats xmlns="http://jitsi.org/protocol/colibri"><stat name=… value=…/>…</stats>`,
/// keeping only whitelisted names when a whitelist is given.
pub(crate) fn stats_element(pairs: &[(String, String)], whitelist: Option<&[String]>) -> Element {
    let mut stats = Element::bare("stats", ns::COLIBRI);
    for (name, value) in pairs {
        if let Some(wl) = whitelist {
            if !wl.iter().any(|w| w == name) {
                continue;
            }
        }
        let mut stat = Element::bare("stat", ns::COLIBRI);
        set_attr(&mut stat, "name", name.as_str());
        set_attr(&mut stat, "value", value.as_str());
        stats.append_child(stat);
    }
    stats
}

/// Reads `<stats>` back into pairs (the test focus, and anyone watching other bridges).
pub fn parse_stats(presence: &Element) -> Option<Vec<(String, String)>> {
    let stats = presence.get_child("stats", ns::COLIBRI)?;
    Some(
        stats
            .children()
            .filter(|c| c.is("stat", ns::COLIBRI))
            .filter_map(|c| Some((c.attr("name")?.to_owned(), c.attr("value")?.to_owned())))
            .collect(),
    )
}

/// A presence to `room/nick`. `join` adds the MUC `<x>` (with no history); `extensions` (stats
/// first) follow.
pub(crate) fn presence_to(room: &str, nick: &str, join: bool, extensions: Vec<Element>) -> Element {
    let mut p = Element::bare("presence", ns::CLIENT);
    set_attr(&mut p, "to", format!("{room}/{nick}"));
    if join {
        let mut x = Element::bare("x", ns::MUC);
        let mut history = Element::bare("history", ns::MUC);
        set_attr(&mut history, "maxstanzas", "0");
        x.append_child(history);
        p.append_child(x);
    }
    for e in extensions {
        p.append_child(e);
    }
    p
}

/// Leaving the room (§7: the graceful part of shutdown).
pub(crate) fn unavailable_to(room: &str, nick: &str) -> Element {
    let mut p = Element::bare("presence", ns::CLIENT);
    set_attr(&mut p, "to", format!("{room}/{nick}"));
    set_attr(&mut p, "type", "unavailable");
    p
}

/// The owner form that makes a room we created non-anonymous (§1.2, §8.3).
pub(crate) fn room_config_submit(room: &str, id: &str) -> Element {
    let mut iq = Element::bare("iq", ns::CLIENT);
    set_attr(&mut iq, "type", "set");
    set_attr(&mut iq, "to", room);
    set_attr(&mut iq, "id", id);
    let mut query = Element::bare("query", ns::MUC_OWNER);
    let mut x = Element::bare("x", ns::DATA_FORMS);
    set_attr(&mut x, "type", "submit");
    for (var, value) in [
        ("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
        ("muc#roomconfig_whois", "anyone"),
    ] {
        let mut field = Element::bare("field", ns::DATA_FORMS);
        set_attr(&mut field, "var", var);
        let mut v = Element::bare("value", ns::DATA_FORMS);
        v.append_text(value);
        field.append_child(v);
        x.append_child(field);
    }
    query.append_child(x);
    iq.append_child(query);
    iq
}

/// One occupant as last seen in presence.
#[derive(Debug, Clone, PartialEq)]
pub struct Occupant {
    pub nick: String,
    /// The occupant's real JID when the room discloses it (non-anonymous rooms).
    pub real_jid: Option<String>,
    /// Stats from its last presence carrying `<stats>`.
    pub stats: Option<Vec<(String, String)>>,
}

/// A presence seen in one of our rooms.
#[derive(Debug, Clone)]
pub struct PresenceEvent {
    /// Bare room JID as configured.
    pub room: String,
    pub nick: String,
    /// `false` when the occupant left (type `unavailable`).
    pub available: bool,
    /// Our own presence, reflected by the room.
    pub is_self: bool,
    pub stats: Option<Vec<(String, String)>>,
    pub stanza: Element,
}

/// What a presence meant for the room.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomUpdate {
    Nothing,
    /// Our own presence came back: we are in. `created` when the room was new (status 201).
    Joined {
        created: bool,
    },
    /// We are out (kicked, room destroyed, or a join error).
    Left {
        reason: String,
    },
}

/// Per-room state, reset on every new connection.
#[derive(Debug)]
pub(crate) struct Room {
    /// Bare room JID as configured.
    pub jid: String,
    /// Lower-cased, for matching.
    pub jid_lower: String,
    pub nick: String,
    pub joined: bool,
    pub occupants: BTreeMap<String, Occupant>,
}

impl Room {
    pub(crate) fn new(jid: &str, nick: &str) -> Self {
        Self {
            jid: jid.to_owned(),
            jid_lower: jid.to_lowercase(),
            nick: nick.to_owned(),
            joined: false,
            occupants: BTreeMap::new(),
        }
    }

    /// Applies a presence whose bare `from` is this room. Returns the room-level change and
    /// the event to publish.
    pub(crate) fn handle_presence(&mut self, p: &Element) -> (RoomUpdate, Option<PresenceEvent>) {
        let Some(from) = p.attr("from") else {
            return (RoomUpdate::Nothing, None);
        };
        let nick = match from.split_once('/') {
            Some((_, n)) if !n.is_empty() => n.to_owned(),
            _ => {
                // From the room itself: only errors matter (e.g. room creation refused).
                if p.attr("type") == Some("error") && !self.joined {
                    return (RoomUpdate::Left { reason: error_text(p) }, None);
                }
                return (RoomUpdate::Nothing, None);
            }
        };
        let codes: Vec<&str> = p
            .get_child("x", ns::MUC_USER)
            .map(|x| {
                x.children()
                    .filter(|c| c.is("status", ns::MUC_USER))
                    .filter_map(|c| c.attr("code"))
                    .collect()
            })
            .unwrap_or_default();
        let is_self = codes.contains(&"110") || nick == self.nick;
        let ptype = p.attr("type");
        if ptype == Some("error") {
            if is_self {
                self.joined = false;
                return (RoomUpdate::Left { reason: error_text(p) }, None);
            }
            return (RoomUpdate::Nothing, None);
        }
        let available = ptype != Some("unavailable");
        let stats = parse_stats(p);
        if available {
            let real_jid = p
                .get_child("x", ns::MUC_USER)
                .and_then(|x| x.get_child("item", ns::MUC_USER))
                .and_then(|i| i.attr("jid"))
                .map(str::to_owned);
            let occ = self.occupants.entry(nick.clone()).or_insert(Occupant {
                nick: nick.clone(),
                real_jid: None,
                stats: None,
            });
            if real_jid.is_some() {
                occ.real_jid = real_jid;
            }
            if stats.is_some() {
                occ.stats = stats.clone();
            }
        } else {
            self.occupants.remove(&nick);
        }
        let event = PresenceEvent {
            room: self.jid.clone(),
            nick,
            available,
            is_self,
            stats,
            stanza: p.clone(),
        };
        let update = if is_self && available && !self.joined {
            self.joined = true;
            RoomUpdate::Joined {
                created: codes.contains(&"201"),
            }
        } else if is_self && !available && self.joined {
            self.joined = false;
            self.occupants.clear();
            RoomUpdate::Left {
                reason: format!("unavailable presence, status codes {codes:?}"),
            }
        } else {
            RoomUpdate::Nothing
        };
        (update, Some(event))
    }
}

fn error_text(p: &Element) -> String {
    super::iq::StanzaError::from_stanza(p)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "error presence".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// §2.1 wire format: one `<stat name value>` per pair, all strings, in the colibri ns.
    #[test]
    fn stats_presence_wire_format() {
        let pairs = BridgeStats::default().to_pairs(UNIX_EPOCH + Duration::from_millis(1_000));
        let p = presence_to(
            "jvbbrewery@internal-muc.meet.jitsi",
            "jvb-1",
            true,
            vec![stats_element(&pairs, None)],
        );
        let mut buf = Vec::new();
        p.write_to(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(s.contains("to='jvbbrewery@internal-muc.meet.jitsi/jvb-1'"), "{s}");
        assert!(s.contains("xmlns='http://jitsi.org/protocol/colibri'"), "{s}");
        let back: Element = s.parse().unwrap();
        let got = parse_stats(&back).unwrap();
        assert_eq!(got, pairs);
        let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for k in [
            "stress_level",
            "drain",
            "graceful_shutdown",
            "shutting_down",
            "healthy",
            "version",
        ] {
            assert!(get(k).is_some(), "missing {k}");
        }
        assert_eq!(get("drain"), Some("false"));
        assert_eq!(get("current_timestamp"), Some("1970-01-01 00:00:01.000"));
        assert!(get("stress_level").unwrap().parse::<f64>().is_ok());
    }

    #[test]
    fn whitelist_filters() {
        let pairs = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let el = stats_element(&pairs, Some(&["b".to_owned()]));
        assert_eq!(parse_stats_from_stats(&el), vec![("b".to_owned(), "2".to_owned())]);
    }

    fn parse_stats_from_stats(stats: &Element) -> Vec<(String, String)> {
        let mut p = Element::bare("presence", ns::CLIENT);
        p.append_child(stats.clone());
        parse_stats(&p).unwrap()
    }

    #[test]
    fn timestamp_format() {
        // 2026-08-19 17:02:11.123 UTC
        let t = UNIX_EPOCH + Duration::from_millis(1_787_158_931_123);
        assert_eq!(format_timestamp(t), "2026-08-19 17:02:11.123");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_timestamp(t), "2000-02-29 00:00:00.000");
    }

    fn presence(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    /// Occupants come and go with presence; our own reflected presence (110) means joined.
    #[test]
    fn occupant_tracking_and_self_join() {
        let mut room = Room::new("jvbbrewery@internal-muc.meet.jitsi", "jvb-1");
        let (u, ev) = room.handle_presence(&presence(
            "<presence xmlns='jabber:client' from='jvbbrewery@internal-muc.meet.jitsi/focus'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item jid='focus@auth.meet.jitsi/x' \
             role='moderator'/></x></presence>",
        ));
        assert_eq!(u, RoomUpdate::Nothing);
        assert!(ev.unwrap().available);
        assert_eq!(
            room.occupants["focus"].real_jid.as_deref(),
            Some("focus@auth.meet.jitsi/x")
        );
        let (u, ev) = room.handle_presence(&presence(
            "<presence xmlns='jabber:client' from='jvbbrewery@internal-muc.meet.jitsi/jvb-1'>\
             <stats xmlns='http://jitsi.org/protocol/colibri'><stat name='drain' value='false'/></stats>\
             <x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/><status code='201'/></x>\
             </presence>",
        ));
        assert_eq!(u, RoomUpdate::Joined { created: true });
        assert!(ev.unwrap().is_self);
        assert!(room.joined);
        let (u, _) = room.handle_presence(&presence(
            "<presence xmlns='jabber:client' type='unavailable' \
             from='jvbbrewery@internal-muc.meet.jitsi/focus'/>",
        ));
        assert_eq!(u, RoomUpdate::Nothing);
        assert!(!room.occupants.contains_key("focus"));
        let (u, _) = room.handle_presence(&presence(
            "<presence xmlns='jabber:client' type='error' \
             from='jvbbrewery@internal-muc.meet.jitsi/jvb-1'><error type='cancel'>\
             <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        ));
        assert!(matches!(u, RoomUpdate::Left { .. }));
        assert!(!room.joined);
    }
}
