//! Settings of an existing JVB install: `jvb.conf` (HOCON) and the legacy
//! `sip-communicator.properties` next to it, mapped onto Palim's [`Config`] so a Debian
//! jitsi-videobridge2 install switches without new configuration (`palim --jvb-conf`).
//!
//! Read: the XMPP client configs (`videobridge.apis.xmpp-client.configs.<id>.*`, keys in any
//! case, and `org.jitsi.videobridge.xmpp.user.<id>.*`), `presence-interval`, the media port
//! (`videobridge.ice.udp.port`), the private HTTP server (`videobridge.http-servers.private`),
//! the REST switches (`videobridge.apis.rest.enabled`, `videobridge.rest.*.enabled`),
//! `videobridge.shutdown.*`, `initial-drain-mode`, `health.require-valid-address`,
//! `stats.interval`, and the ice4j STUN / static mappings (HOCON and the legacy
//! `org.ice4j.ice.harvest.*` properties). Other JVB keys (websockets, cc, relays…) have no
//! Palim equivalent and are returned as `ignored` for the caller to log. Where JVB's default
//! differs from Palim's (the COLIBRI REST API is off in JVB), JVB's applies.

pub mod hocon;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use hocon::Value;

/// Why a JVB configuration could not be used. Names the file's key and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JvbConfError {
    #[error("{file}: {source}")]
    Syntax {
        file: String,
        #[source]
        source: hocon::HoconError,
    },
    #[error("{file}: {key}: {reason}")]
    Key { file: String, key: String, reason: String },
}

/// A JVB configuration read into Palim's.
#[derive(Debug)]
pub struct JvbSettings {
    pub config: Config,
    /// Keys present in the files that Palim has no use for (logged at start).
    pub ignored: Vec<String>,
}

/// One `xmpp-client.configs.<id>` entry, keys upper-cased as JVB does.
#[derive(Debug, Default, Clone)]
struct XmppEntry {
    fields: BTreeMap<String, (String, String)>, // KEY -> (value, where it came from)
}

/// Read `jvb.conf` text (`hocon_text`, named `hocon_name` in errors) and optionally the
/// `sip-communicator.properties` text; legacy properties win for the same XMPP config id,
/// as in JVB.
pub fn read(hocon_name: &str, hocon_text: &str, properties: Option<(&str, &str)>) -> Result<JvbSettings, JvbConfError> {
    let root = hocon::parse(hocon_text).map_err(|source| JvbConfError::Syntax {
        file: hocon_name.to_owned(),
        source,
    })?;
    let mut c = Config::default();
    // JVB's own defaults where they differ from Palim's.
    c.rest.colibri_enabled = false;
    c.rest.stats_enabled = false;
    let mut ignored = Vec::new();
    let mut xmpp: BTreeMap<String, XmppEntry> = BTreeMap::new();
    let file = hocon_name;

    let key_err = |key: &str, reason: String| JvbConfError::Key {
        file: file.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let mut flat = Vec::new();
    flatten("", &root, &mut flat);
    for (key, v) in &flat {
        let scalar = || match v {
            Value::Scalar(s) => Ok(s.as_str()),
            _ => Err(key_err(key, "expected a single value".into())),
        };
        let boolean = || -> Result<bool, JvbConfError> {
            match scalar()? {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                other => Err(key_err(key, format!("expected true or false, not {other:?}"))),
            }
        };
        let duration = || -> Result<Duration, JvbConfError> {
            let s = scalar()?;
            hocon::parse_duration(s).ok_or_else(|| key_err(key, format!("not a duration: {s:?}")))
        };
        let number = |what: &str| -> Result<u64, JvbConfError> {
            let s = scalar()?;
            s.parse::<u64>()
                .map_err(|e| key_err(key, format!("not {what}: {s:?} ({e})")))
        };
        let port = || -> Result<u16, JvbConfError> {
            let n = number("a port")?;
            u16::try_from(n).map_err(|_| key_err(key, format!("port {n} out of range")))
        };
        if let Some(rest) = key.strip_prefix("videobridge.apis.xmpp-client.configs.") {
            let Some((id, field)) = rest.split_once('.') else {
                return Err(key_err(key, "expected configs.<id>.<KEY>".into()));
            };
            let value = match v {
                Value::Scalar(s) => s.clone(),
                // MUC_JIDS may be written as an array.
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_scalar()
                            .map(str::to_owned)
                            .ok_or_else(|| key_err(key, "expected strings".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                Value::Object(_) => return Err(key_err(key, "expected a value".into())),
            };
            xmpp.entry(id.to_owned())
                .or_default()
                .fields
                .insert(field.to_ascii_uppercase(), (value, format!("{file}: {key}")));
            continue;
        }
        match key.as_str() {
            "videobridge.apis.xmpp-client.presence-interval" => c.xmpp.presence_interval = duration()?,
            "videobridge.stats.interval" => {
                let d = duration()?;
                c.rest.stats_interval = d;
                c.xmpp.presence_interval = d;
            }
            "videobridge.ice.udp.port" => c.ice.udp_port = port()?,
            "videobridge.http-servers.private.host" => {
                let ip = scalar()?
                    .parse()
                    .map_err(|e| key_err(key, format!("not an IP address: {e}")))?;
                c.rest.bind.set_ip(ip);
            }
            "videobridge.http-servers.private.port" => c.rest.bind.set_port(port()?),
            "videobridge.apis.rest.enabled" => {
                let on = boolean()?;
                c.rest.colibri_enabled = on;
                c.rest.stats_enabled = on;
            }
            "videobridge.rest.health.enabled" => c.rest.health_enabled = boolean()?,
            "videobridge.rest.version.enabled" => c.rest.version_enabled = boolean()?,
            "videobridge.rest.prometheus.enabled" => c.rest.prometheus_enabled = boolean()?,
            "videobridge.rest.drain.enabled" => c.rest.drain_enabled = boolean()?,
            "videobridge.rest.shutdown.enabled" => c.rest.shutdown_enabled = boolean()?,
            "videobridge.rest.debug.enabled" => c.rest.debug_enabled = boolean()?,
            "videobridge.shutdown.graceful-shutdown-max-duration" => {
                c.shutdown.graceful_shutdown_max_duration = duration()?
            }
            "videobridge.shutdown.graceful-shutdown-min-participants" => {
                c.shutdown.graceful_shutdown_min_participants = number("a count")? as usize
            }
            "videobridge.shutdown.shutting-down-delay" => c.shutdown.shutting_down_delay = duration()?,
            "videobridge.initial-drain-mode" => c.shutdown.initial_drain_mode = boolean()?,
            "videobridge.health.require-valid-address" => c.ice.require_valid_address = boolean()?,
            "videobridge.entity-expiration.timeout" => c.sfu.endpoint_timeout = duration()?,
            "ice4j.harvest.mapping.stun.addresses" => {
                c.ice.stun_servers = strings(v).ok_or_else(|| key_err(key, "expected a list of host:port".into()))?
            }
            _ if key.starts_with("ice4j.harvest.mapping.static-mappings") => {
                let Value::Array(items) = v else {
                    return Err(key_err(key, "expected a list of mappings".into()));
                };
                for m in items {
                    let public = m
                        .get("public-address")
                        .and_then(Value::as_scalar)
                        .ok_or_else(|| key_err(key, "a mapping without public-address".into()))?;
                    let entry = match m.get("public-port").and_then(Value::as_scalar) {
                        Some(p) => format!("{public}#{p}"),
                        None => public.to_owned(),
                    };
                    c.ice.advertise_ips.push(entry);
                }
            }
            _ => ignored.push(format!("{file}: {key}")),
        }
    }

    if let Some((pname, ptext)) = properties {
        for (lineno, line) in ptext.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                return Err(JvbConfError::Key {
                    file: pname.to_owned(),
                    key: format!("line {}", lineno + 1),
                    reason: "expected key=value".into(),
                });
            };
            let (k, v) = (k.trim(), v.trim());
            let bad = |reason: String| JvbConfError::Key {
                file: pname.to_owned(),
                key: k.to_owned(),
                reason,
            };
            if let Some(rest) = k.strip_prefix("org.jitsi.videobridge.xmpp.user.") {
                let Some((id, field)) = rest.split_once('.') else {
                    return Err(bad("expected org.jitsi.videobridge.xmpp.user.<id>.<KEY>".into()));
                };
                xmpp.entry(id.to_owned())
                    .or_default()
                    .fields
                    .insert(field.to_ascii_uppercase(), (v.to_owned(), format!("{pname}: {k}")));
            } else if k == "org.ice4j.ice.harvest.STUN_MAPPING_HARVESTER_ADDRESSES" {
                c.ice.stun_servers = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            } else if k == "org.ice4j.ice.harvest.NAT_HARVESTER_PUBLIC_ADDRESS" {
                v.parse::<std::net::IpAddr>()
                    .map_err(|e| bad(format!("not an IP address: {e}")))?;
                c.ice.advertise_ips.push(v.to_owned());
            } else if k == "org.jitsi.videobridge.SINGLE_PORT_HARVESTER_PORT" {
                c.ice.udp_port = v.parse().map_err(|e| bad(format!("not a port: {e}")))?;
            } else {
                ignored.push(format!("{pname}: {k}"));
            }
        }
    }

    apply_xmpp(&mut c, xmpp, file)?;
    Ok(JvbSettings { config: c, ignored })
}

/// Scalars or an array of scalars as a list (comma-separated scalars split).
fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Scalar(s) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        Value::Array(items) => items.iter().map(|i| i.as_scalar().map(str::to_owned)).collect(),
        Value::Object(_) => None,
    }
}

/// Leaves of the tree as (dotted key, value); arrays are leaves.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(entries) => {
            for (k, child) in entries {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// The XMPP client entries onto `[xmpp]`: the first (by id) is the main server, others must
/// share its account, rooms and nickname and become `additional_servers`.
fn apply_xmpp(c: &mut Config, entries: BTreeMap<String, XmppEntry>, file: &str) -> Result<(), JvbConfError> {
    let mut first: Option<(String, XmppEntry)> = None;
    for (id, e) in entries {
        let get = |k: &str| e.fields.get(k).map(|(v, _)| v.as_str());
        let err = |k: &str, reason: String| JvbConfError::Key {
            file: e
                .fields
                .get(k)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| format!("{file}: xmpp-client.configs.{id}")),
            key: k.to_owned(),
            reason,
        };
        // JVB drops an incomplete entry; Palim refuses it so the operator notices.
        for required in ["HOSTNAME", "USERNAME", "PASSWORD", "MUC_JIDS", "MUC_NICKNAME"] {
            if get(required).is_none_or(str::is_empty) {
                return Err(JvbConfError::Key {
                    file: file.to_owned(),
                    key: format!("xmpp-client.configs.{id}.{required}"),
                    reason: "missing (JVB would ignore this whole entry)".into(),
                });
            }
        }
        for k in e.fields.keys() {
            if !matches!(
                k.as_str(),
                "HOSTNAME"
                    | "PORT"
                    | "DOMAIN"
                    | "USERNAME"
                    | "PASSWORD"
                    | "MUC_JIDS"
                    | "MUC_NICKNAME"
                    | "DISABLE_CERTIFICATE_VERIFICATION"
                    | "IQ_HANDLER_MODE"
                    | "SECURITY_MODE"
                    | "MUC"
            ) {
                return Err(err(k, "unknown XMPP client key".into()));
            }
        }
        let port = match get("PORT") {
            Some(p) => p.parse::<u16>().map_err(|e| err("PORT", format!("not a port: {e}")))?,
            None => 5222,
        };
        if let Some(m) = get("SECURITY_MODE") {
            if !m.eq_ignore_ascii_case("required") && !m.eq_ignore_ascii_case("ifpossible") {
                return Err(err(
                    "SECURITY_MODE",
                    format!("{m:?} is not supported (required or ifpossible)"),
                ));
            }
        }
        let dcv = match get("DISABLE_CERTIFICATE_VERIFICATION") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(err(
                    "DISABLE_CERTIFICATE_VERIFICATION",
                    format!("expected true or false, not {v:?}"),
                ))
            }
        };
        let host = get("HOSTNAME").unwrap_or_default().to_owned();
        let domain = get("DOMAIN").unwrap_or(&host).to_owned();
        let rooms: Vec<String> = get("MUC_JIDS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        match &first {
            None => {
                c.xmpp.enabled = true;
                c.xmpp.host = host;
                c.xmpp.port = port;
                c.xmpp.domain = domain;
                c.xmpp.username = get("USERNAME").unwrap_or_default().to_owned();
                c.xmpp.password = get("PASSWORD").unwrap_or_default().to_owned();
                c.xmpp.muc_jids = rooms;
                c.xmpp.muc_nickname = get("MUC_NICKNAME").unwrap_or_default().to_owned();
                c.xmpp.disable_certificate_verification = dcv;
                first = Some((id, e.clone()));
            }
            Some((first_id, _)) => {
                let same = c.xmpp.domain == domain
                    && c.xmpp.username == get("USERNAME").unwrap_or_default()
                    && c.xmpp.password == get("PASSWORD").unwrap_or_default()
                    && c.xmpp.muc_jids == rooms
                    && c.xmpp.muc_nickname == get("MUC_NICKNAME").unwrap_or_default()
                    && c.xmpp.disable_certificate_verification == dcv;
                if !same {
                    return Err(JvbConfError::Key {
                        file: file.to_owned(),
                        key: format!("xmpp-client.configs.{id}"),
                        reason: format!(
                            "Palim connects to several XMPP servers only with the same domain, account, rooms and \
                             nickname as {first_id}"
                        ),
                    });
                }
                let addr = match host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => SocketAddr::new(host.parse().map_err(|_| err("HOSTNAME", "bad address".into()))?, port)
                        .to_string(),
                    Err(_) => format!("{host}:{port}"),
                };
                c.xmpp.additional_servers.push(addr);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
