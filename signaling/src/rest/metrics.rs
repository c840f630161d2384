//! `GET /metrics`: Prometheus text format 0.0.4, OpenMetrics 1.0 or JSON, chosen by the
//! `Accept` header as JVB does (media.md §8.4). JVB's names (namespace `jitsi_jvb_`) where JVB
//! has the metric; Palim's own under `palim_`. Counters carry the `_total` suffix on samples.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value};

use super::{reported_stress, Snapshot};
use crate::ops::ShutdownState;

/// The exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// `text/plain; version=0.0.4` (the default).
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `application/json`: one flat object, names without namespace.
    Json,
}

impl MetricsFormat {
    /// From an `Accept` header: OpenMetrics or JSON when asked for, else Prometheus text.
    pub fn negotiate(accept: &str) -> Self {
        let a = accept.to_ascii_lowercase();
        if a.contains("application/openmetrics-text") {
            MetricsFormat::OpenMetrics
        } else if a.contains("application/json") && !a.contains("text/plain") {
            MetricsFormat::Json
        } else {
            MetricsFormat::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            MetricsFormat::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            MetricsFormat::Json => "application/json",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

struct Family {
    /// Full name without the `_total` suffix.
    name: String,
    kind: Kind,
    help: &'static str,
    /// (label pairs, value)
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

fn families(s: &Snapshot) -> Vec<Family> {
    let c = &s.counts;
    let core = &s.core;
    let mut out = Vec::new();
    let mut one = |ns: &str, name: &str, kind: Kind, help: &'static str, v: f64| {
        out.push(Family {
            name: format!("{ns}{name}"),
            kind,
            help,
            samples: vec![(Vec::new(), v)],
        });
    };
    const J: &str = "jitsi_jvb_";
    const P: &str = "palim_";
    use Kind::{Counter, Gauge};
    one(
        J,
        "conferences",
        Gauge,
        "Current number of conferences.",
        c.conferences as f64,
    );
    one(
        J,
        "conferences_created",
        Counter,
        "The total number of conferences created.",
        c.total_conferences_created as f64,
    );
    one(
        J,
        "conferences_completed",
        Counter,
        "The total number of conferences completed.",
        c.total_conferences_completed as f64,
    );
    one(
        J,
        "endpoints",
        Counter,
        "The total number of endpoints created.",
        c.total_participants as f64,
    );
    one(
        J,
        "local_endpoints",
        Gauge,
        "Number of local endpoints that exist currently.",
        c.endpoints as f64,
    );
    one(
        J,
        "current_endpoints",
        Gauge,
        "Number of endpoints that exist currently.",
        c.endpoints as f64,
    );
    one(
        J,
        "visitors",
        Counter,
        "The total number of visitor endpoints created.",
        c.total_visitors as f64,
    );
    one(
        J,
        "current_visitors",
        Gauge,
        "Number of visitor endpoints that exist currently.",
        c.visitors as f64,
    );
    one(
        J,
        "largest_conference",
        Gauge,
        "The endpoint count of the largest conference.",
        c.largest_conference as f64,
    );
    one(J, "relays", Counter, "The total number of relays created.", 0.0);
    one(
        J,
        "endpoints_ice_failed",
        Counter,
        "Endpoints whose ICE failed.",
        core.ice_failures as f64,
    );
    one(
        P,
        "ice_rebinds",
        Counter,
        "Endpoints whose media moved to a new ICE-authenticated address (NAT rebinding).",
        core.ice_rebinds as f64,
    );
    one(
        J,
        "endpoints_dtls_failed",
        Counter,
        "Endpoints whose DTLS handshake failed.",
        core.dtls_failures as f64,
    );
    one(
        P,
        "dtls_fingerprint_mismatch",
        Counter,
        "DTLS handshakes failed because the peer's certificate matched no signalled fingerprint.",
        core.dtls_fingerprint_mismatches as f64,
    );
    one(
        J,
        "packets_received",
        Counter,
        "Packets received (RTP and RTCP).",
        (core.rtp_packets_received + core.rtcp_packets_received) as f64,
    );
    one(
        J,
        "packets_sent",
        Counter,
        "Packets sent (RTP and RTCP).",
        (core.rtp_packets_sent + core.rtcp_packets_sent) as f64,
    );
    one(
        J,
        "bytes_received",
        Counter,
        "Bytes received on the media port.",
        core.bytes_received as f64,
    );
    one(
        J,
        "bytes_sent",
        Counter,
        "Bytes sent from the media port.",
        core.bytes_sent as f64,
    );
    one(
        J,
        "stress",
        Gauge,
        "Current stress (0-1); 1 while shedding under memory pressure.",
        reported_stress(c.endpoints, s.memory.shedding),
    );
    one(
        J,
        "healthy",
        Gauge,
        "Whether the bridge passes its health check.",
        b(s.healthy),
    );
    one(
        J,
        "graceful_shutdown",
        Gauge,
        "Whether a graceful shutdown is in progress.",
        b(s.state == ShutdownState::GracefulShutdown),
    );
    one(
        J,
        "shutting_down",
        Gauge,
        "Whether the bridge is shutting down.",
        b(s.state == ShutdownState::ShuttingDown),
    );
    one(
        J,
        "drain_mode",
        Gauge,
        "Whether the bridge is in drain mode.",
        b(s.drain),
    );
    let started = s
        .started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    one(
        J,
        "startup_time",
        Gauge,
        "The startup time of the bridge (seconds since the epoch).",
        started,
    );
    one(
        J,
        "xmpp_disconnects",
        Counter,
        "XMPP connections lost.",
        s.xmpp.disconnects as f64,
    );
    one(
        P,
        "endpoints_connected",
        Gauge,
        "Endpoints whose DTLS handshake completed.",
        core.endpoints_connected as f64,
    );
    one(
        P,
        "rtp_packets_received",
        Counter,
        "RTP packets received.",
        core.rtp_packets_received as f64,
    );
    one(
        P,
        "rtp_packets_sent",
        Counter,
        "RTP packets sent.",
        core.rtp_packets_sent as f64,
    );
    one(
        P,
        "rtcp_packets_received",
        Counter,
        "RTCP packets received.",
        core.rtcp_packets_received as f64,
    );
    one(
        P,
        "rtcp_packets_sent",
        Counter,
        "RTCP packets sent.",
        core.rtcp_packets_sent as f64,
    );
    one(
        P,
        "keyframe_requests_forwarded",
        Counter,
        "PLI/FIR forwarded to a media sender.",
        core.keyframe_requests_forwarded as f64,
    );
    one(
        P,
        "keyframe_requests_suppressed",
        Counter,
        "PLI/FIR suppressed by the rate limit.",
        core.keyframe_requests_suppressed as f64,
    );
    one(
        P,
        "nacks_sent",
        Counter,
        "NACKs sent toward senders for uplink loss.",
        core.nacks_sent as f64,
    );
    one(
        P,
        "retransmissions",
        Counter,
        "Packets retransmitted to receivers from the bridge's cache.",
        core.retransmissions as f64,
    );
    one(
        P,
        "bridge_channel_messages_received",
        Counter,
        "Bridge-channel messages received from endpoints (SCTP and websocket).",
        core.channel_messages_received as f64,
    );
    one(
        P,
        "bridge_channel_messages_sent",
        Counter,
        "Bridge-channel messages sent to endpoints.",
        core.channel_messages_sent as f64,
    );
    one(
        P,
        "padding_packets_sent",
        Counter,
        "Padding-only RTP packets sent to probe receivers' bandwidth.",
        core.padding_packets_sent as f64,
    );
    one(
        P,
        "projection_dropped_packets",
        Counter,
        "Video packets not forwarded to a receiver because it gets another layer.",
        core.projection_drops as f64,
    );
    one(
        P,
        "xmpp_clients_configured",
        Gauge,
        "XMPP connections configured.",
        s.xmpp.clients_configured as f64,
    );
    one(
        P,
        "xmpp_clients_connected",
        Gauge,
        "XMPP connections logged in.",
        s.xmpp.clients_connected as f64,
    );
    one(
        P,
        "mucs_joined",
        Gauge,
        "Brewery rooms joined, all connections together.",
        s.xmpp.mucs_joined as f64,
    );
    one(
        P,
        "task_panics",
        Counter,
        "Panics caught in the media core; each tore down the conference it happened in (robustness.md case 57).",
        core.task_panics as f64,
    );
    one(
        P,
        "dtls_handshakes_in_flight",
        Gauge,
        "DTLS handshakes started and neither connected nor failed (bridge-wide).",
        s.limits.dtls_handshakes_in_flight as f64,
    );
    one(
        P,
        "colibri2_not_authorized",
        Counter,
        "Colibri2 requests refused because the sender is not an allowed focus (xmpp.focus_jids).",
        s.limits.refused_not_authorized as f64,
    );
    one(
        P,
        "memory_rss_bytes",
        Gauge,
        "Resident set size of the bridge process, sampled once per second.",
        s.memory.rss_bytes as f64,
    );
    one(
        P,
        "memory_limit_bytes",
        Gauge,
        "The memory limit shedding is measured against (limits.memory_limit_mib or the cgroup's); 0: none.",
        s.memory.limit_bytes.unwrap_or(0) as f64,
    );
    one(
        P,
        "memory_shedding",
        Gauge,
        "1 while the bridge sheds load under memory pressure (health 503, stress 1, new endpoints refused).",
        b(s.memory.shedding),
    );
    // Every limit: its configured value, and how often it refused something (robustness.md §2.5).
    let drop_count = |reason: &str| {
        core.drops
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let l = &s.limits;
    let limits: [(&str, f64, u64); 8] = [
        ("conferences", l.max_conferences as f64, l.refused_conferences),
        (
            "endpoints_per_conference",
            l.max_endpoints_per_conference as f64,
            l.refused_endpoints,
        ),
        ("ssrcs_per_endpoint", l.max_ssrcs_per_endpoint as f64, l.refused_ssrcs),
        (
            "dtls_handshakes_in_flight",
            l.max_dtls_handshakes as f64,
            drop_count("dtls_handshake_limit"),
        ),
        (
            "dtls_handshakes_per_ip",
            l.max_dtls_handshakes_per_ip as f64,
            drop_count("dtls_handshake_ip_cap"),
        ),
        (
            "bridge_channel_message_bytes",
            sfu::bridge_channel::MAX_MESSAGE_LEN as f64,
            drop_count("channel_too_large"),
        ),
        (
            "bridge_channel_messages_per_second",
            sfu::receiver::CHANNEL_RATE,
            drop_count("channel_rate_limited"),
        ),
        ("memory", s.memory.limit_bytes.unwrap_or(0) as f64, l.refused_memory),
    ];
    out.push(Family {
        name: "palim_xmpp_connected".into(),
        kind: Kind::Gauge,
        help: "1 while the XMPP connection to this server is logged in, else 0.",
        samples: s
            .xmpp
            .servers
            .iter()
            .map(|(server, up)| (vec![("server", server.clone())], b(*up)))
            .collect(),
    });
    out.push(Family {
        name: "palim_limit".into(),
        kind: Kind::Gauge,
        help: "Configured limit, by limit.",
        samples: limits
            .iter()
            .map(|(name, v, _)| (vec![("limit", (*name).to_owned())], *v))
            .collect(),
    });
    out.push(Family {
        name: "palim_limit_refusals".into(),
        kind: Kind::Counter,
        help: "Requests, handshakes or messages refused because a limit was reached, by limit.",
        samples: limits
            .iter()
            .map(|(name, _, n)| (vec![("limit", (*name).to_owned())], *n as f64))
            .collect(),
    });
    out.push(Family {
        name: "palim_dropped_packets".into(),
        kind: Kind::Counter,
        help: "Datagrams dropped by the media core, by reason.",
        samples: core
            .drops
            .iter()
            .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n as f64))
            .collect(),
    });
    out
}

/// Every family name (without `_total`), for tests and the dashboard.
pub fn metric_names() -> Vec<String> {
    let snap = Snapshot {
        counts: Default::default(),
        core: Default::default(),
        state: ShutdownState::Running,
        drain: false,
        healthy: true,
        xmpp: Default::default(),
        started: UNIX_EPOCH,
        limits: Default::default(),
        memory: Default::default(),
    };
    families(&snap).into_iter().map(|f| f.name).collect()
}

fn value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(l: &[(&'static str, String)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    format!("{{{}}}", parts.join(","))
}

/// The body of `/metrics` in `format`.
pub fn render_metrics(s: &Snapshot, format: MetricsFormat) -> String {
    let fams = families(s);
    let mut out = String::new();
    match format {
        MetricsFormat::Json => {
            let mut m = Map::new();
            for f in fams {
                let short = f.name.strip_prefix("jitsi_jvb_").unwrap_or(&f.name).to_owned();
                if f.samples.len() == 1 && f.samples[0].0.is_empty() {
                    m.insert(short, serde_json::json!(f.samples[0].1));
                } else {
                    let mut inner = Map::new();
                    for (l, v) in &f.samples {
                        let key = l.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(",");
                        inner.insert(key, serde_json::json!(v));
                    }
                    m.insert(short, Value::Object(inner));
                }
            }
            return Value::Object(m).to_string();
        }
        MetricsFormat::Prometheus => {
            for f in fams {
                let sample_name = match f.kind {
                    Kind::Counter => format!("{}_total", f.name),
                    Kind::Gauge => f.name.clone(),
                };
                let kind = if f.kind == Kind::Counter { "counter" } else { "gauge" };
                let _ = writeln!(out, "# HELP {sample_name} {}", f.help);
                let _ = writeln!(out, "# TYPE {sample_name} {kind}");
                for (l, v) in &f.samples {
                    let _ = writeln!(out, "{sample_name}{} {}", labels(l), value(*v));
                }
            }
        }
        MetricsFormat::OpenMetrics => {
            for f in fams {
                let kind = if f.kind == Kind::Counter { "counter" } else { "gauge" };
                let sample_name = match f.kind {
                    Kind::Counter => format!("{}_total", f.name),
                    Kind::Gauge => f.name.clone(),
                };
                let _ = writeln!(out, "# TYPE {} {kind}", f.name);
                let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
                for (l, v) in &f.samples {
                    let _ = writeln!(out, "{sample_name}{} {}", labels(l), value(*v));
                }
            }
            out.push_str("# EOF\n");
        }
    }
    out
}
