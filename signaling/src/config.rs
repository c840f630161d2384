//! The one typed configuration of the `palim` binary.
//!
//! Sources, later ones winning: the built-in defaults, `config.toml` (or the file named by
//! `--config` / `PALIM_CONFIG`), then docker-jitsi-meet's environment variables
//! (colibri.md §1.5), so Palim can take the `jvb` service's place unchanged.
//! An empty file is a valid configuration: REST on 127.0.0.1:8080, media on UDP 10000, no XMPP.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// Everything `palim` can be told. Sections mirror `config.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sfu: SfuSection,
    pub ice: IceSection,
    pub xmpp: XmppSection,
    pub rest: RestSection,
    pub shutdown: ShutdownSection,
    pub websockets: WebSocketsSection,
    pub limits: LimitsSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SfuSection {
    /// Expire an endpoint after this long without incoming RTP, RTCP or ICE.
    #[serde(with = "humantime_serde")]
    pub endpoint_timeout: Duration,
    /// Expire an endpoint whose ICE has not connected this long after creation.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub max_conferences: usize,
    pub max_endpoints_per_conference: usize,
    pub max_ssrcs_per_endpoint: usize,
    /// DTLS handshakes in flight, bridge-wide (robustness.md §2.5).
    pub max_dtls_handshakes: usize,
    /// DTLS handshakes in flight from one source IP (IPv6: one /64; loopback is exempt).
    pub max_dtls_handshakes_per_ip: usize,
    /// SRTP profiles offered, in preference order: `aead_aes_128_gcm`, `aes_cm_128_hmac_sha1_80`.
    pub srtp_profiles: Vec<SrtpProfileName>,
    /// Seed for the non-cryptographic RNG; unset means random.
    pub rng_seed: Option<u64>,
    /// Datagrams per `sendmmsg`/`recvmmsg` system call on the media socket (1 to 32).
    pub io_batch: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SrtpProfileName {
    AeadAes128Gcm,
    AesCm128HmacSha1_80,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IceSection {
    /// Address the media socket binds to.
    pub bind_address: IpAddr,
    /// The single UDP port shared by every endpoint (docker: `JVB_PORT`).
    pub udp_port: u16,
    /// Host candidate addresses; empty means discovered from the machine's interfaces.
    pub host_addresses: Vec<IpAddr>,
    /// Public addresses to advertise, `ip` or `ip#port` (docker: `JVB_ADVERTISE_IPS`).
    pub advertise_ips: Vec<String>,
    /// Consent freshness interval toward the client.
    #[serde(with = "humantime_serde")]
    pub consent_interval: Duration,
    /// STUN servers (`host:port`) asked once at start for this host's public address, which is
    /// then advertised like an `advertise_ips` entry (docker: `JVB_STUN_SERVERS`).
    pub stun_servers: Vec<String>,
    /// `/about/health` fails unless some advertised address is public (not private, loopback
    /// or link-local). JVB: `videobridge.health.require-valid-address` (docker: `JVB_REQUIRE_VALID_ADDRESS`).
    pub require_valid_address: bool,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XmppSection {
    /// Log in to an XMPP server and serve Jicofo in its brewery.
    pub enabled: bool,
    /// XMPP server host (docker: `XMPP_SERVER`).
    pub host: String,
    /// c2s port (docker: `XMPP_PORT`).
    pub port: u16,
    /// The domain to log in to: the auth domain (docker: `XMPP_AUTH_DOMAIN`).
    pub domain: String,
    /// Localpart of the bridge's account (docker: `JVB_AUTH_USER`).
    pub username: String,
    /// The account's password (docker: `JVB_AUTH_PASSWORD`). Never logged.
    pub password: String,
    /// Brewery rooms to join (docker: `JVB_BREWERY_MUC@XMPP_INTERNAL_MUC_DOMAIN`).
    pub muc_jids: Vec<String>,
    /// Occupant nickname, unique per bridge (docker: `JVB_MUC_NICKNAME`). Empty: the hostname.
    pub muc_nickname: String,
    /// Trust any server certificate (docker always sets this).
    pub disable_certificate_verification: bool,
    /// Period of the stats presence.
    #[serde(with = "humantime_serde")]
    pub presence_interval: Duration,
    /// More XMPP servers (`host` or `host:port`), each with its own connection and brewery
    /// presence, same account and rooms (JVB: one `xmpp-client.configs` entry each; docker:
    /// the rest of the comma-separated `XMPP_SERVER`).
    pub additional_servers: Vec<String>,
    /// First delay before reconnecting after the XMPP connection is lost; doubled after each
    /// failed attempt up to `reconnect_max_delay`.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// XMPP ping (XEP-0199) to the server this often (JVB: 30 s); finds half-open connections.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A ping unanswered for this long drops the connection, which is then re-established.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Bound on TCP connect, STARTTLS, SASL and bind; a server that accepts and never answers
    /// is given up on after this long (then the reconnect backoff).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Who may send Colibri2 `conference-modify` (robustness.md §2.3, case 30): JID patterns
    /// matched against the request's `from` (the sender's occupant JID in the brewery) and the
    /// real JID the room disclosed for it. `user@domain` or `user@domain/*` is any resource,
    /// `room@muc/nick` one occupant; `["*"]` allows any brewery occupant, as JVB does. Unset:
    /// `focus@<domain>` (Jicofo's account, as in docker) and `<muc_jid>/focus` for every
    /// brewery (its occupant, for rooms that do not disclose real JIDs). Anything else gets
    /// `<error type='auth'><not-authorized/>` and changes nothing.
    pub focus_jids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestSection {
    /// Serve the private HTTP API (health, version, stats, Colibri2 over REST).
    pub enabled: bool,
    /// Where the private HTTP server listens (docker: `JVB_COLIBRI_PORT` sets the port).
    pub bind: SocketAddr,
    /// Accept `POST /colibri/v2/conferences` (JVB: `COLIBRI_REST_ENABLED`). This is how the
    /// load harness and embedded setups allocate without an XMPP server.
    pub colibri_enabled: bool,
    /// `GET /about/health` (JVB `videobridge.rest.health.enabled`).
    pub health_enabled: bool,
    /// `GET /about/version` (JVB `rest.version.enabled`).
    pub version_enabled: bool,
    /// `GET /colibri/stats` (JVB: part of `videobridge.apis.rest.enabled`).
    pub stats_enabled: bool,
    /// How often `/colibri/stats` is recomputed (JVB `videobridge.stats.interval`, 5 s); 0
    /// computes it on every request.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// `GET /metrics`, Prometheus and OpenMetrics (JVB `videobridge.rest.prometheus.enabled`).
    pub prometheus_enabled: bool,
    /// `GET /colibri/drain`, `POST /colibri/drain/{enable,disable}` (JVB `videobridge.rest.drain.enabled`).
    pub drain_enabled: bool,
    /// `POST /colibri/shutdown` (JVB `videobridge.rest.shutdown.enabled`, docker
    /// `SHUTDOWN_REST_ENABLED`). Off by default: anyone who reaches the port could stop the bridge.
    pub shutdown_enabled: bool,
    /// `GET /debug`, `/debug/{conference}`, `/debug/{conference}/{endpoint}` (JVB `videobridge.rest.debug.enabled`).
    pub debug_enabled: bool,
    /// `POST /debug/fault/panic/{meeting_id}`: make the media core panic while processing that
    /// conference (robustness.md case 57). For tests only; off by default.
    pub fault_injection: bool,
}

/// Graceful shutdown and drain (colibri.md §7; JVB `videobridge.shutdown.*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// In GRACEFUL_SHUTDOWN, move to SHUTTING_DOWN once at most this many endpoints remain.
    pub graceful_shutdown_min_participants: usize,
    /// ...or once this long has passed in GRACEFUL_SHUTDOWN.
    #[serde(with = "humantime_serde")]
    pub graceful_shutdown_max_duration: Duration,
    /// In SHUTTING_DOWN, exit after this long, or as soon as no endpoint is left.
    #[serde(with = "humantime_serde")]
    pub shutting_down_delay: Duration,
    /// Start in drain mode (JVB `videobridge.initial-drain-mode`).
    pub initial_drain_mode: bool,
}

/// The colibri-ws bridge channel and the public HTTP server that serves it (media.md §2.1; JVB
/// `videobridge.websockets.*` and `videobridge.http-servers.public.*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketsSection {
    /// Advertise colibri-ws URLs and accept the sockets (JVB default: off).
    pub enabled: bool,
    /// Where the public HTTP server listens (JVB `http-servers.public.host/port`; JVB's docs use
    /// port 9090). Unset: no public server. Required when `enabled`.
    pub public_bind: Option<SocketAddr>,
    /// The `host[:port]` clients reach that server at (usually a proxy in front); one URL per entry.
    pub domains: Vec<String>,
    /// Advertise `wss://` instead of `ws://` (TLS terminated by the proxy).
    pub tls: bool,
    /// The URL's server-id segment; proxies route `/colibri-ws/{server_id}/` to this bridge.
    pub server_id: String,
    /// Ping the client when nothing was sent for `keepalive_interval`.
    pub send_keepalive_pings: bool,
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Close a socket on which nothing (frame, ping or pong) arrived for this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Negotiate `permessage-deflate`. Not implemented: `true` is refused by `validate`.
    pub enable_compression: bool,
    /// Open HTTP connections the public server serves at once (robustness.md case 38); more
    /// wait in the kernel's accept queue. Upgraded websockets no longer count.
    pub max_connections: usize,
    /// A connection must deliver a request's headers within this (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

/// Memory-pressure shedding (robustness.md case 51; see `memory.rs`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// The memory the bridge may use, MiB; 0: the limit of its cgroup (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`), or none when the cgroup has none.
    pub memory_limit_mib: u64,
    /// Shed load (health 503, stress 1.0, new conferences and endpoints refused) once the
    /// resident set reaches this percentage of the limit.
    pub memory_shed_percent: u8,
    /// ...and stop shedding once it is below this percentage again.
    pub memory_resume_percent: u8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter, e.g. `info` or `info,sfu=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for SfuSection {
    fn default() -> Self {
        let d = sfu::SfuConfig::default();
        Self {
            endpoint_timeout: d.endpoint_timeout,
            connect_timeout: d.connect_timeout,
            max_conferences: d.limits.max_conferences,
            max_endpoints_per_conference: d.limits.max_endpoints_per_conference,
            max_ssrcs_per_endpoint: d.limits.max_ssrcs_per_endpoint,
            max_dtls_handshakes: d.limits.dtls_handshakes.max(),
            max_dtls_handshakes_per_ip: d.limits.dtls_handshakes.per_ip(),
            srtp_profiles: vec![SrtpProfileName::AeadAes128Gcm, SrtpProfileName::AesCm128HmacSha1_80],
            rng_seed: None,
            io_batch: d.io_batch,
        }
    }
}

impl Default for IceSection {
    fn default() -> Self {
        let d = sfu::SfuConfig::default();
        Self {
            bind_address: d.bind_ip,
            udp_port: d.udp_port,
            host_addresses: Vec::new(),
            advertise_ips: Vec::new(),
            consent_interval: d.consent_interval,
            stun_servers: Vec::new(),
            require_valid_address: false,
        }
    }
}

impl Default for XmppSection {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "xmpp.meet.jitsi".into(),
            port: 5222,
            domain: "auth.meet.jitsi".into(),
            username: "jvb".into(),
            password: String::new(),
            muc_jids: vec!["jvbbrewery@internal-muc.meet.jitsi".into()],
            muc_nickname: String::new(),
            disable_certificate_verification: false,
            presence_interval: Duration::from_secs(5),
            additional_servers: Vec::new(),
            reconnect_delay: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            focus_jids: None,
        }
    }
}

impl XmppSection {
    /// `focus_jids`, or its default (see there).
    pub fn focus_patterns(&self) -> Vec<String> {
        match &self.focus_jids {
            Some(p) => p.clone(),
            None => std::iter::once(format!("focus@{}", self.domain))
                .chain(self.muc_jids.iter().map(|m| format!("{m}/focus")))
                .collect(),
        }
    }
}

impl fmt::Debug for XmppSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XmppSection")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("muc_jids", &self.muc_jids)
            .field("muc_nickname", &self.muc_nickname)
            .field(
                "disable_certificate_verification",
                &self.disable_certificate_verification,
            )
            .field("presence_interval", &self.presence_interval)
            .field("additional_servers", &self.additional_servers)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("focus_jids", &self.focus_jids)
            .finish()
    }
}

impl Default for RestSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            colibri_enabled: true,
            health_enabled: true,
            version_enabled: true,
            stats_enabled: true,
            stats_interval: Duration::from_secs(5),
            prometheus_enabled: true,
            drain_enabled: true,
            shutdown_enabled: false,
            debug_enabled: true,
            fault_injection: false,
        }
    }
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self {
            graceful_shutdown_min_participants: 0,
            graceful_shutdown_max_duration: Duration::from_secs(24 * 3600),
            shutting_down_delay: Duration::from_secs(60),
            initial_drain_mode: false,
        }
    }
}

impl Default for WebSocketsSection {
    fn default() -> Self {
        Self {
            enabled: false,
            public_bind: None,
            domains: Vec::new(),
            tls: false,
            server_id: "default-id".into(),
            send_keepalive_pings: true,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            enable_compression: false,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        let t = crate::memory::Thresholds::default();
        Self {
            memory_limit_mib: 0,
            memory_shed_percent: t.shed_percent,
            memory_resume_percent: t.resume_percent,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self { filter: "info".into() }
    }
}

/// Why a configuration was refused. Each message names the key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// toml's message names the line, shows the key and says why.
    #[error("{0}")]
    Parse(toml::de::Error),
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<toml::de::Error> for ConfigError {
    fn from(e: toml::de::Error) -> Self {
        ConfigError::Parse(e)
    }
}

impl Config {
    /// Parse a TOML document. Unknown keys are errors, missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Apply docker-jitsi-meet's environment variables on top (colibri.md §1.5). `env` is a
    /// snapshot of the environment so tests need not mutate the process's.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |k: &str| env.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        if let Some(v) = get("XMPP_SERVER") {
            // A list of `host[:port]`: one connection each (docker: one `shardN` each).
            let mut servers = v.split(',').map(str::trim).filter(|s| !s.is_empty());
            let first = servers.next().unwrap_or_default();
            let (host, port) = split_host_port(first).map_err(|reason| ConfigError::Env {
                var: "XMPP_SERVER",
                value: v.clone(),
                reason,
            })?;
            self.xmpp.host = host;
            if let Some(p) = port {
                self.xmpp.port = p;
            }
            self.xmpp.additional_servers = servers.map(String::from).collect();
            self.xmpp.enabled = true;
            // docker's JVB always trusts the XMPP server's certificate.
            self.xmpp.disable_certificate_verification = true;
        }
        if let Some(v) = get("XMPP_PORT") {
            self.xmpp.port = parse_env("XMPP_PORT", &v)?;
        }
        if let Some(v) = get("XMPP_AUTH_DOMAIN") {
            self.xmpp.domain = v;
        } else if let Some(v) = get("XMPP_DOMAIN") {
            self.xmpp.domain = format!("auth.{v}");
        }
        if let Some(v) = get("JVB_AUTH_USER") {
            self.xmpp.username = v;
        }
        if let Some(v) = get("JVB_AUTH_PASSWORD") {
            self.xmpp.password = v;
        }
        let muc_domain =
            get("XMPP_INTERNAL_MUC_DOMAIN").or_else(|| get("XMPP_DOMAIN").map(|d| format!("internal-muc.{d}")));
        if get("JVB_BREWERY_MUC").is_some() || muc_domain.is_some() {
            let room = get("JVB_BREWERY_MUC").unwrap_or_else(|| "jvbbrewery".into());
            let domain = muc_domain.unwrap_or_else(|| "internal-muc.meet.jitsi".into());
            self.xmpp.muc_jids = vec![if room.contains('@') {
                room
            } else {
                format!("{room}@{domain}")
            }];
        }
        if let Some(v) = get("JVB_MUC_NICKNAME") {
            self.xmpp.muc_nickname = v;
        }
        if let Some(v) = get("JVB_DISABLE_XMPP") {
            if parse_bool_env("JVB_DISABLE_XMPP", &v)? {
                self.xmpp.enabled = false;
            }
        }
        if let Some(v) = get("JVB_PORT") {
            self.ice.udp_port = parse_env("JVB_PORT", &v)?;
        }
        if let Some(v) = get("JVB_ADVERTISE_IPS") {
            self.ice.advertise_ips = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("JVB_STUN_SERVERS") {
            self.ice.stun_servers = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("JVB_DISABLE_STUN") {
            if parse_bool_env("JVB_DISABLE_STUN", &v)? {
                self.ice.stun_servers.clear();
            }
        }
        if let Some(v) = get("JVB_REQUIRE_VALID_ADDRESS") {
            self.ice.require_valid_address = parse_bool_env("JVB_REQUIRE_VALID_ADDRESS", &v)?;
        }
        if let Some(v) = get("COLIBRI_REST_ENABLED") {
            let on = parse_bool_env("COLIBRI_REST_ENABLED", &v)?;
            self.rest.colibri_enabled = on;
            self.rest.stats_enabled = on;
        }
        if let Some(v) = get("SHUTDOWN_REST_ENABLED") {
            self.rest.shutdown_enabled = parse_bool_env("SHUTDOWN_REST_ENABLED", &v)?;
        }
        if let Some(v) = get("JVB_COLIBRI_PORT") {
            let port: u16 = parse_env("JVB_COLIBRI_PORT", &v)?;
            self.rest.bind.set_port(port);
        }
        if self.xmpp.enabled && self.xmpp.password.is_empty() {
            return Err(ConfigError::Invalid {
                key: "xmpp.password",
                reason: "XMPP is enabled but no password is set (JVB_AUTH_PASSWORD)".into(),
            });
        }
        Ok(())
    }

    /// Every check that needs more than the types: the media config, XMPP server and room
    /// names, STUN server addresses. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sfu_config()?;
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        for s in &self.ice.stun_servers {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                _ => return Err(invalid("ice.stun_servers", format!("{s:?} is not host:port"))),
            }
        }
        for s in &self.xmpp.additional_servers {
            split_host_port(s).map_err(|reason| invalid("xmpp.additional_servers", reason))?;
        }
        if self.xmpp.enabled {
            if self.xmpp.host.is_empty() {
                return Err(invalid("xmpp.host", "empty".into()));
            }
            for j in &self.xmpp.muc_jids {
                let ok =
                    matches!(j.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !j.contains('/'));
                if !ok {
                    return Err(invalid(
                        "xmpp.muc_jids",
                        format!("{j:?} is not a bare room JID (room@domain)"),
                    ));
                }
            }
            if self.xmpp.muc_nickname.contains('/') {
                return Err(invalid("xmpp.muc_nickname", "must not contain '/'".into()));
            }
        }
        if !(1..=32).contains(&self.sfu.io_batch) {
            return Err(invalid(
                "sfu.io_batch",
                format!("{} is not between 1 and 32", self.sfu.io_batch),
            ));
        }
        if self.xmpp.presence_interval.is_zero() {
            return Err(invalid("xmpp.presence_interval", "must be more than 0".into()));
        }
        for (key, d) in [
            ("xmpp.ping_interval", self.xmpp.ping_interval),
            ("xmpp.ping_timeout", self.xmpp.ping_timeout),
            ("xmpp.connect_timeout", self.xmpp.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be more than 0".into()));
            }
        }
        if self.sfu.max_dtls_handshakes_per_ip == 0 {
            return Err(invalid("sfu.max_dtls_handshakes_per_ip", "must be more than 0".into()));
        }
        let l = &self.limits;
        if !(1..=100).contains(&l.memory_shed_percent) {
            return Err(invalid(
                "limits.memory_shed_percent",
                format!("{} is not between 1 and 100", l.memory_shed_percent),
            ));
        }
        if l.memory_resume_percent == 0 || l.memory_resume_percent >= l.memory_shed_percent {
            return Err(invalid(
                "limits.memory_resume_percent",
                format!(
                    "{} must be more than 0 and less than limits.memory_shed_percent ({})",
                    l.memory_resume_percent, l.memory_shed_percent
                ),
            ));
        }
        self.validate_websockets()
    }

    fn validate_websockets(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        let ws = &self.websockets;
        if ws.enable_compression {
            return Err(invalid(
                "websockets.enable_compression",
                "permessage-deflate is not implemented; set false",
            ));
        }
        if !ws.enabled {
            return Ok(());
        }
        if ws.public_bind.is_none() {
            return Err(invalid(
                "websockets.public_bind",
                "websockets are enabled but no public HTTP server is configured",
            ));
        }
        if ws.domains.is_empty() {
            return Err(invalid(
                "websockets.domains",
                "websockets are enabled but no domain to advertise is set",
            ));
        }
        for d in &ws.domains {
            if d.is_empty() || d.contains(['/', '?', '#', ' ']) {
                return Err(ConfigError::Invalid {
                    key: "websockets.domains",
                    reason: format!("{d:?} is not host[:port]"),
                });
            }
        }
        let id_ok = !ws.server_id.is_empty()
            && ws
                .server_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
        if !id_ok {
            return Err(invalid(
                "websockets.server_id",
                "must be non-empty and URL-safe ([A-Za-z0-9-_.~])",
            ));
        }
        if ws.send_keepalive_pings && ws.keepalive_interval.is_zero() {
            return Err(invalid("websockets.keepalive_interval", "must be more than 0"));
        }
        if ws.idle_timeout.is_zero() {
            return Err(invalid("websockets.idle_timeout", "must be more than 0"));
        }
        if ws.max_connections == 0 {
            return Err(invalid("websockets.max_connections", "must be more than 0"));
        }
        if ws.header_timeout.is_zero() {
            return Err(invalid("websockets.header_timeout", "must be more than 0"));
        }
        Ok(())
    }

    /// The media core's configuration.
    pub fn sfu_config(&self) -> Result<sfu::SfuConfig, ConfigError> {
        let advertise = self
            .ice
            .advertise_ips
            .iter()
            .map(|s| parse_advertised(s))
            .collect::<Result<Vec<_>, _>>()?;
        if self.sfu.srtp_profiles.is_empty() {
            return Err(ConfigError::Invalid {
                key: "sfu.srtp_profiles",
                reason: "must name at least one profile".into(),
            });
        }
        Ok(sfu::SfuConfig {
            bind_ip: self.ice.bind_address,
            udp_port: self.ice.udp_port,
            host_addresses: self.ice.host_addresses.clone(),
            advertise,
            endpoint_timeout: self.sfu.endpoint_timeout,
            connect_timeout: self.sfu.connect_timeout,
            consent_interval: self.ice.consent_interval,
            limits: sfu::config::Limits {
                max_conferences: self.sfu.max_conferences,
                max_endpoints_per_conference: self.sfu.max_endpoints_per_conference,
                max_ssrcs_per_endpoint: self.sfu.max_ssrcs_per_endpoint,
                dtls_handshakes: sfu::config::HandshakeSlots::with_per_ip(
                    self.sfu.max_dtls_handshakes,
                    self.sfu.max_dtls_handshakes_per_ip,
                ),
            },
            srtp_profiles: self
                .sfu
                .srtp_profiles
                .iter()
                .map(|p| match p {
                    SrtpProfileName::AeadAes128Gcm => sfu::config::SrtpProfile::AeadAes128Gcm,
                    SrtpProfileName::AesCm128HmacSha1_80 => sfu::config::SrtpProfile::Aes128CmHmacSha1_80,
                })
                .collect(),
            rng_seed: self.sfu.rng_seed,
            io_batch: self.sfu.io_batch,
        })
    }
}

fn parse_env<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        var,
        value: value.into(),
        reason: e.to_string(),
    })
}

/// docker's booleans: `1`/`0`, `true`/`false` (any case).
fn parse_bool_env(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value: value.into(),
            reason: "expected 1/0 or true/false".into(),
        }),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the error is the reason.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    let port = |p: &str| p.parse::<u16>().map_err(|e| format!("{s:?}: bad port: {e}"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        let p = match tail.strip_prefix(':') {
            Some(p) => Some(port(p)?),
            None if tail.is_empty() => None,
            None => return Err(format!("{s:?}: junk after ']'")),
        };
        return Ok((host.to_string(), p));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_string(), Some(port(p)?))),
        _ => Ok((s.to_string(), None)),
    }
}

/// `ip` or `ip#port`, as docker's `JVB_ADVERTISE_IPS`.
fn parse_advertised(s: &str) -> Result<sfu::config::AdvertisedAddr, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        key: "ice.advertise_ips",
        reason: format!("{s:?}: {reason}"),
    };
    let (ip, port) = match s.split_once('#') {
        Some((ip, port)) => (
            ip,
            Some(port.parse::<u16>().map_err(|e| bad(format!("bad port: {e}")))?),
        ),
        None => (s, None),
    };
    let ip: IpAddr = ip.trim().parse().map_err(|e| bad(format!("bad address: {e}")))?;
    Ok(sfu::config::AdvertisedAddr { ip, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The documented default file parses and says exactly what the built-in defaults say,
    /// so the file can't drift from the code.
    #[test]
    fn shipped_config_toml_matches_defaults() {
        let text = include_str!("../../config.toml");
        let parsed = Config::from_toml(text).expect("config.toml parses");
        assert_eq!(parsed, Config::default());
    }

    /// An empty file is valid and means the defaults.
    #[test]
    fn empty_file_is_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    /// A typo is an error naming the key, not a silently ignored setting.
    #[test]
    fn unknown_key_is_refused() {
        let err = Config::from_toml("[ice]\nudp_prot = 1\n").unwrap_err().to_string();
        assert!(err.contains("udp_prot"), "{err}");
    }

    /// docker-jitsi-meet's `jvb` service environment configures the same bridge.
    #[test]
    fn docker_env_overrides() {
        let mut c = Config::default();
        c.apply_env(&env(&[
            ("XMPP_SERVER", "xmpp.meet.jitsi:5223"),
            ("XMPP_AUTH_DOMAIN", "auth.example.org"),
            ("XMPP_INTERNAL_MUC_DOMAIN", "internal-muc.example.org"),
            ("JVB_AUTH_USER", "jvb2"),
            ("JVB_AUTH_PASSWORD", "s3cret"),
            ("JVB_BREWERY_MUC", "jvbbrewery"),
            ("JVB_PORT", "10001"),
            ("JVB_ADVERTISE_IPS", "192.0.2.10, 198.51.100.7#12000"),
            ("JVB_COLIBRI_PORT", "8081"),
        ]))
        .unwrap();
        assert!(c.xmpp.enabled);
        assert_eq!((c.xmpp.host.as_str(), c.xmpp.port), ("xmpp.meet.jitsi", 5223));
        assert_eq!(c.xmpp.domain, "auth.example.org");
        assert_eq!(c.xmpp.username, "jvb2");
        assert_eq!(c.xmpp.password, "s3cret");
        assert_eq!(c.xmpp.muc_jids, vec!["jvbbrewery@internal-muc.example.org".to_string()]);
        assert!(c.xmpp.disable_certificate_verification);
        assert_eq!(c.ice.udp_port, 10001);
        assert_eq!(c.rest.bind.port(), 8081);
        let sfu = c.sfu_config().unwrap();
        assert_eq!(sfu.udp_port, 10001);
        assert_eq!(sfu.advertise.len(), 2);
        assert_eq!(sfu.advertise[1].port, Some(12000));
        assert!(
            !format!("{:?}", c.xmpp).contains("s3cret"),
            "password must not be logged"
        );
    }

    /// Bad values are clear errors naming the variable.
    #[test]
    fn bad_env_values_are_errors() {
        let mut c = Config::default();
        let err = c
            .apply_env(&env(&[("JVB_PORT", "ten thousand")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("JVB_PORT"), "{err}");
        let mut c = Config::default();
        let err = c.apply_env(&env(&[("XMPP_SERVER", "xmpp")])).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        let mut c = Config::default();
        c.ice.advertise_ips = vec!["not-an-ip".into()];
        assert!(c.sfu_config().unwrap_err().to_string().contains("advertise_ips"));
    }

    /// Enabling websockets without a public server or a domain is refused by name; a complete
    /// section passes; compression (not implemented) is refused rather than silently ignored.
    #[test]
    fn websockets_section_is_checked() {
        let c = Config::from_toml("[websockets]\nenabled = true\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("websockets.public_bind"), "{err}");
        let c = Config::from_toml("[websockets]\nenabled = true\npublic_bind = \"127.0.0.1:9090\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("websockets.domains"), "{err}");
        let ok =
            "[websockets]\nenabled = true\npublic_bind = \"127.0.0.1:9090\"\ndomains = [\"meet.example.org:443\"]\n";
        let c = Config::from_toml(ok).unwrap();
        c.validate().unwrap();
        assert_eq!(c.websockets.server_id, "default-id");
        assert_eq!(c.websockets.keepalive_interval, Duration::from_secs(15));
        let c = Config::from_toml(&format!("{ok}server_id = \"a/b\"\n")).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("server_id"));
        let c = Config::from_toml("[websockets]\nenable_compression = true\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("enable_compression"));
    }

    /// `[limits]`: the memory keys parse, and thresholds without room for hysteresis are refused.
    #[test]
    fn limits_section_is_checked() {
        let c = Config::from_toml(
            "[limits]\nmemory_limit_mib = 512\nmemory_shed_percent = 90\nmemory_resume_percent = 80\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits.memory_limit_mib, 512);
        assert_eq!((c.limits.memory_shed_percent, c.limits.memory_resume_percent), (90, 80));
        assert_eq!(Config::default().limits.memory_limit_mib, 0, "auto (cgroup) by default");
        let c = Config::from_toml("[limits]\nmemory_shed_percent = 70\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("limits.memory_resume_percent"), "{err}");
        let c = Config::from_toml("[limits]\nmemory_shed_percent = 101\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("limits.memory_shed_percent"), "{err}");
        assert!(
            Config::from_toml("[limits]\nmemory_limit_mb = 1\n").is_err(),
            "typo refused"
        );
    }

    /// `sfu.max_dtls_handshakes_per_ip` reaches the media core's handshake slots; 0 is refused.
    #[test]
    fn dtls_handshakes_per_ip_is_read_and_checked() {
        assert_eq!(Config::default().sfu.max_dtls_handshakes_per_ip, 4);
        let c = Config::from_toml("[sfu]\nmax_dtls_handshakes = 9\nmax_dtls_handshakes_per_ip = 2\n").unwrap();
        c.validate().unwrap();
        let slots = c.sfu_config().unwrap().limits.dtls_handshakes;
        assert_eq!((slots.max(), slots.per_ip()), (9, 2));
        let c = Config::from_toml("[sfu]\nmax_dtls_handshakes_per_ip = 0\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("sfu.max_dtls_handshakes_per_ip"), "{err}");
    }

    /// `XMPP_DOMAIN` alone derives the auth and internal MUC domains the way docker does.
    #[test]
    fn xmpp_domain_derives_subdomains() {
        let mut c = Config::default();
        c.apply_env(&env(&[("XMPP_DOMAIN", "meet.example.org"), ("JVB_AUTH_PASSWORD", "x")]))
            .unwrap();
        assert_eq!(c.xmpp.domain, "auth.meet.example.org");
        assert_eq!(
            c.xmpp.muc_jids,
            vec!["jvbbrewery@internal-muc.meet.example.org".to_string()]
        );
        assert!(!c.xmpp.enabled, "XMPP_DOMAIN alone does not name a server");
    }
}
