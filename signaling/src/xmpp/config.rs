//! The XMPP client's configuration: one `configs.<id>` entry of JVB's
//! `videobridge.apis.xmpp-client` (spec/colibri.md §1.4), already parsed. The lead's top-level
//! config maps `config.toml` and the docker-jitsi-meet env vars (§1.5) onto this struct.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One XMPP connection (JVB: one `xmpp-client.configs.<id>` entry, i.e. one shard).
#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// XMPP server host to connect to (`HOSTNAME`; docker: `XMPP_SERVER`, `xmpp.meet.jitsi`).
    pub host: String,
    /// c2s port (`PORT`; docker: `XMPP_PORT`, 5222).
    pub port: u16,
    /// XMPP domain to log in to, the *auth* domain (`DOMAIN`; docker: `XMPP_AUTH_DOMAIN`,
    /// `auth.meet.jitsi`). Empty: `host`, as JVB does.
    pub domain: String,
    /// Localpart of the account (`USERNAME`; docker: `JVB_AUTH_USER`, `jvb`).
    pub username: String,
    /// `PASSWORD` (docker: `JVB_AUTH_PASSWORD`). Its `Debug` is redacted.
    pub password: Password,
    /// Brewery rooms to join (`MUC_JIDS`; docker: `jvbbrewery@internal-muc.meet.jitsi`).
    /// IQ requests are admitted only from occupants of these rooms. May be empty (a client
    /// that joins nothing, e.g. in tests).
    pub muc_jids: Vec<String>,
    /// Occupant nickname, unique per bridge (`MUC_NICKNAME`; docker: `JVB_MUC_NICKNAME` or the
    /// container hostname).
    pub muc_nickname: String,
    /// Trust any server certificate and name (`DISABLE_CERTIFICATE_VERIFICATION`; docker
    /// always sets it). The TLS handshake signature is still checked against the presented key.
    pub disable_certificate_verification: bool,
    /// PEM file of trust anchors used when verification is on. `None`: the system bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<PathBuf>,
    /// `SECURITY_MODE`: whether STARTTLS is required, used when offered, or never used.
    pub security_mode: SecurityMode,
    /// Resource to bind. `None`: the server assigns one (avoids conflicts between two
    /// instances sharing an account).
    pub resource: Option<String>,
    /// Stats presence period (`presence-interval`, JVB 5 s).
    pub presence_interval: Duration,
    /// Only these stat names are published when set (`stats-filter.enabled` + `whitelist`).
    pub stats_whitelist: Option<Vec<String>>,
    /// Delay before the first reconnect attempt after a lost session (JVB 1 s); doubled
    /// after each failed attempt up to `reconnect_max_delay`; retried forever.
    pub reconnect_delay: Duration,
    /// Cap of the reconnect backoff.
    pub reconnect_max_delay: Duration,
    /// XMPP ping to the server every this long (JVB 30 s).
    pub ping_interval: Duration,
    /// A ping unanswered after this long drops the connection (then reconnect).
    pub ping_timeout: Duration,
    /// Bound on TCP connect + STARTTLS + SASL + bind.
    pub connect_timeout: Duration,
    /// A handler that has not answered an IQ after this long gets an `internal-server-error`
    /// reply sent for it (Jicofo's own reply timeout is 15 s).
    pub iq_handler_timeout: Duration,
    /// A write (one stanza) blocked this long drops the connection.
    pub write_timeout: Duration,
    /// Bound on one incoming top-level stanza, in bytes of XML. Larger: the connection is
    /// dropped (and re-established).
    pub max_stanza_size: usize,
    /// Bound on element nesting inside one stanza.
    pub max_stanza_depth: usize,
    /// `jabber:iq:version` answer.
    pub software_name: String,
    /// `jabber:iq:version` answer.
    pub software_version: String,
}

impl Default for XmppConfig {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 5222,
            domain: String::new(),
            username: "jvb".to_owned(),
            password: Password::default(),
            muc_jids: Vec::new(),
            muc_nickname: String::new(),
            disable_certificate_verification: false,
            ca_file: None,
            security_mode: SecurityMode::Required,
            resource: None,
            presence_interval: Duration::from_secs(5),
            stats_whitelist: None,
            reconnect_delay: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            iq_handler_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_stanza_size: 1 << 20,
            max_stanza_depth: 64,
            software_name: "Palim".to_owned(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl XmppConfig {
    /// The domain actually logged in to: `domain`, or `host` when `domain` is empty.
    pub fn effective_domain(&self) -> &str {
        if self.domain.is_empty() {
            &self.host
        } else {
            &self.domain
        }
    }
}

impl XmppConfig {
    /// Checks what the types cannot: a nickname when rooms are configured, room JIDs that are
    /// bare JIDs, non-zero periods.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("host is empty".into());
        }
        if self.username.is_empty() {
            return Err("username is empty".into());
        }
        if !self.muc_jids.is_empty() && self.muc_nickname.is_empty() {
            return Err("muc_nickname is required when muc_jids is set".into());
        }
        if self.muc_nickname.contains('/') {
            return Err(format!("muc_nickname {:?} contains '/'", self.muc_nickname));
        }
        for j in &self.muc_jids {
            let ok = match j.split_once('@') {
                Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !j.contains('/'),
                None => false,
            };
            if !ok {
                return Err(format!("muc_jids entry {j:?} is not a bare room JID (room@domain)"));
            }
        }
        for (name, d) in [
            ("presence_interval", self.presence_interval),
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("connect_timeout", self.connect_timeout),
            ("iq_handler_timeout", self.iq_handler_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.max_stanza_size == 0 || self.max_stanza_depth == 0 {
            return Err("max_stanza_size and max_stanza_depth must be > 0".into());
        }
        Ok(())
    }
}

/// Smack's `SecurityMode` (JVB `SECURITY_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// STARTTLS must be offered and is used (JVB's default for non-local hosts).
    #[default]
    Required,
    /// STARTTLS is used when the server offers it.
    IfPossible,
    /// Never STARTTLS; the password then crosses the wire in SASL as the mechanism allows.
    Disabled,
}

/// A secret whose `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for SASL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password must never reach logs through `{:?}` of the config.
    #[test]
    fn debug_redacts_password() {
        let cfg = XmppConfig {
            password: Password::new("hunter2"),
            ..XmppConfig::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn validation() {
        let ok = XmppConfig {
            muc_jids: vec!["jvbbrewery@internal-muc.meet.jitsi".into()],
            muc_nickname: "jvb-1".into(),
            ..XmppConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            XmppConfig {
                muc_nickname: String::new(),
                ..ok.clone()
            },
            XmppConfig {
                muc_jids: vec!["jvbbrewery".into()],
                ..ok.clone()
            },
            XmppConfig {
                muc_jids: vec!["a@b/c".into()],
                ..ok.clone()
            },
            XmppConfig {
                presence_interval: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn domain_falls_back_to_host() {
        let mut cfg = XmppConfig {
            host: "xmpp.meet.jitsi".into(),
            ..XmppConfig::default()
        };
        assert_eq!(cfg.effective_domain(), "xmpp.meet.jitsi");
        cfg.domain = "auth.meet.jitsi".into();
        assert_eq!(cfg.effective_domain(), "auth.meet.jitsi");
    }
}
