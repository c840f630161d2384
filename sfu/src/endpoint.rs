//! One participant's transport and per-stream state: ICE agent, DTLS, SRTP, the SSRCs it
//! may send, receive statistics (for our RRs) and send statistics (for our SRs).
//!
//! The shard owns the logic that crosses endpoints (forwarding, PLI routing); this file holds
//! what belongs to one endpoint alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_ice::agent::agent_config::AgentConfig;
use rtc_ice::agent::Agent;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::CandidateConfig;
use rtc_ice::candidate::CandidateType;
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::network_type::NetworkType;
use sansio::Protocol;

use crate::bwe::{NackGenerator, PaddingBudget, ProbeController, RtxCache, RtxEncoder, SendSideBwe, TwccGenerator};
use crate::control::{RemoteTransport, Setup};
use crate::dtls::{Dtls, Role};
use crate::id::Ssrc;
use crate::id::{ConferenceId, EndpointId};
use crate::negotiated::Negotiated;
use crate::receiver::Receiver;
use crate::sctp::Sctp;
use crate::srtp::Srtp;
use crate::wire::rtcp::ReportBlock;

/// How many distinct ICE-validated remote addresses an endpoint remembers.
const MAX_VALIDATED: usize = 16;
/// How many signalled remote candidates are used.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

pub struct Endpoint {
    pub id: EndpointId,
    pub conf: ConferenceId,
    pub span: tracing::Span,
    pub visitor: bool,
    pub sctp_wanted: bool,
    pub ice: Agent,
    pub ice_controlling: bool,
    pub ice_started: bool,
    pub ice_connected: bool,
    pub local_ufrag: String,
    /// An in-place ICE restart in progress (colibri.md §4.3): the agent with the new
    /// credentials, which takes over at its first authenticated STUN exchange.
    pub ice_next: Option<Box<IceRestart>>,
    /// How many ICE restarts were started (the Colibri2 `ice-generation` of the newest).
    pub ice_generation: u32,
    /// The local ufrag replaced by the last completed restart: STUN naming it is refused
    /// (counted) instead of reaching an agent.
    pub retired_ufrag: Option<String>,
    /// Remote address of the ICE-selected pair.
    pub selected: Option<SocketAddr>,
    /// Addresses that passed an authenticated STUN exchange, oldest first, with when each
    /// was last heard (at most [`MAX_VALIDATED`]).
    pub validated: Vec<Validated>,
    /// The consent-freshness interval of this endpoint's agents (jittered at creation), for
    /// the agent a NAT rebinding builds (`shard::rebind`).
    pub consent: Duration,
    /// Addresses in the shard's demux map that point at this endpoint.
    pub demux_addrs: Vec<SocketAddr>,
    pub remote: RemoteTransport,
    pub dtls: Option<Dtls>,
    pub srtp: Option<Box<dyn Srtp>>,
    pub sctp: Option<Sctp>,
    /// Whether SetSources was ever applied. Until then the endpoint's SSRCs are learned from
    /// its traffic; afterwards only the signalled set is accepted, so an empty set means
    /// "forward nothing" (colibri.md §3.6: sources are replace-all).
    pub sources_signalled: bool,
    /// SSRCs learned from traffic before any sources were signalled (capped).
    pub learned: usize,
    /// Payload types, feedback and extension ids from SetMedia.
    pub neg: Negotiated,
    /// Next transport-wide sequence number on packets sent to this endpoint.
    pub tcc_out: u16,
    /// The last REMB value the endpoint sent (bps).
    pub remb_bps: Option<u64>,
    /// Transport-cc feedback toward this endpoint as a sender (media.md §4.1).
    pub twcc_rx: TwccGenerator,
    /// Receive-side estimate and REMB toward this endpoint when it negotiated REMB but not
    /// transport-cc (media.md §4.1).
    pub remb_rx: crate::bwe::RembGenerator,
    /// The last media SSRC received, named in feedback packets.
    pub last_media_ssrc: u32,
    /// Send-side bandwidth estimate of the path toward this endpoint (media.md §4.2).
    pub bwe: SendSideBwe,
    /// What was sent to this endpoint per outgoing video SSRC, for NACKs (media.md §5.2).
    pub rtx_cache: crate::FastMap<u32, RtxCache>,
    /// RTX encapsulation per outgoing video SSRC (its FID partner), when negotiated.
    pub rtx_enc: crate::FastMap<u32, RtxEncoder>,
    /// Probing toward this endpoint (media.md §4.2, §4.3).
    pub prober: ProbeController,
    pub padding: PaddingBudget,
    /// The probe cluster being sent, paced at its bitrate.
    pub probe: Option<crate::bwe::ProbePacer>,
    /// Next padding/probe tick (every 15 ms while there is headroom to find).
    pub next_padding: Option<Instant>,
    /// Sequence number and timestamp of padding-only packets on the bridge's video SSRC.
    pub pad_seq: u16,
    pub pad_ts: u32,
    /// The Colibri2 endpoint id (bridge-channel messages name endpoints by it).
    pub name: String,
    /// What this endpoint receives: its constraints, allocation and projections.
    pub recv: Receiver,
    /// Bridge-channel messages received and not yet processed (bounded, as JVB's queue).
    pub channel_in: std::collections::VecDeque<String>,
    /// Whether the SCTP data channel is open.
    pub channel_open: bool,
    /// Colibri2 force-mute of what this endpoint sends.
    pub force_mute_audio: bool,
    pub force_mute_video: bool,
    /// Whether a colibri-ws websocket is connected.
    pub ws_open: bool,
    /// The channel that last received a message is the active one (media.md §2.1).
    pub ws_active: bool,
    pub rx: crate::FastMap<u32, RxStream>,
    pub tx: crate::FastMap<u32, TxStream>,
    pub created: Instant,
    pub last_activity: Instant,
    pub next_report: Instant,
    /// Cached earliest instant this endpoint needs a timeout (kept by the shard).
    pub deadline: Instant,
    pub expired: bool,
    /// Announced to the others as inactive (`EndpointConnectivityStatusChangeEvent`): no
    /// incoming RTP, RTCP or ICE for [`INACTIVITY_LIMIT`] (media.md §1.4).
    pub inactive: bool,
    /// When the next `ConnectionStats` is due (media.md §2.4).
    pub next_connection_stats: Instant,
}

/// An ICE-validated remote address and when something authenticated last came from it (a
/// STUN request or response the agent accepted, SRTP/SRTCP that passed authentication, or a
/// DTLS record the session took).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    pub addr: SocketAddr,
    pub heard: Instant,
}

/// No incoming RTP, RTCP or ICE for this long: the others are told the endpoint is inactive
/// (JVB `ep-connection-status.max-inactivity-limit`).
pub const INACTIVITY_LIMIT: Duration = Duration::from_secs(8);
/// Before ICE ever connected, the endpoint gets this long (JVB `first-transfer-timeout`).
pub const FIRST_TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);
/// Period of `ConnectionStats` (JVB `connection-stats.interval`).
pub const CONNECTION_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// How many transaction ids of its own checks a restart agent remembers (to route the
/// responses to it rather than to the current agent).
const SENT_IDS: usize = 16;

/// The second ICE agent of an in-place restart (colibri.md §4.3), as JVB's second agent: new
/// local credentials, same host candidates, same DTLS association and SRTP keys.
pub struct IceRestart {
    pub agent: Agent,
    pub ufrag: String,
    pub pwd: String,
    /// The Colibri2 `ice-generation` (1 for the first restart).
    pub generation: u32,
    /// Whether the remote's credentials arrived and connectivity checks started.
    pub started: bool,
    /// Transaction ids of the last [`SENT_IDS`] Binding requests this agent sent.
    sent: [[u8; 12]; SENT_IDS],
    next_sent: usize,
}

impl IceRestart {
    /// Remember the transaction id of a STUN request this agent sends (`msg` is the datagram).
    pub fn record_sent(&mut self, msg: &[u8]) {
        if crate::demux::stun_type(msg) != Some(crate::demux::STUN_BINDING_REQUEST) {
            return;
        }
        if let Some(tid) = msg.get(8..20) {
            self.sent[self.next_sent].copy_from_slice(tid);
            self.next_sent = (self.next_sent + 1) % SENT_IDS;
        }
    }

    fn sent_request(&self, tid: &[u8]) -> bool {
        tid != [0u8; 12] && self.sent.iter().any(|t| t[..] == *tid)
    }
}

/// Which ICE agent of an endpoint a STUN message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceRoute {
    /// The endpoint's current agent.
    Current,
    /// The agent of the restart in progress.
    Next,
    /// The ufrag an ICE restart replaced: refused.
    Retired,
    /// Not one of this endpoint's ufrags.
    Unknown,
}

/// An ICE agent for one endpoint: host candidates on the shared port, UDP only, no mDNS.
pub fn new_agent(
    now: Instant,
    ufrag: String,
    pwd: String,
    ice_controlling: bool,
    hosts: &[SocketAddr],
    keepalive: Duration,
    provider: Arc<dyn RTCCryptoProvider>,
) -> Result<Agent, String> {
    let cfg = AgentConfig {
        local_ufrag: ufrag,
        local_pwd: pwd,
        is_controlling: ice_controlling,
        multicast_dns_mode: MulticastDnsMode::Disabled,
        candidate_types: vec![CandidateType::Host],
        network_types: vec![NetworkType::Udp4, NetworkType::Udp6],
        // Chrome starts DTLS and media right after its first successful check; select
        // peer-reflexive pairs at once (notes/chromium-interop.md §3.7).
        prflx_acceptance_min_wait: Some(Duration::ZERO),
        host_acceptance_min_wait: Some(Duration::ZERO),
        keepalive_interval: Some(keepalive),
        disconnected_timeout: Some(keepalive * 3),
        failed_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let mut ice = Agent::new(now, Arc::new(cfg), provider).map_err(|e| e.to_string())?;
    for h in hosts {
        let c = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: h.ip().to_string(),
                port: h.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| e.to_string())?;
        ice.add_local_candidate(c).map_err(|e| e.to_string())?;
    }
    Ok(ice)
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)] // constructor of a plain aggregate
    pub fn new(
        now: Instant,
        conf: ConferenceId,
        id: EndpointId,
        ice_controlling: bool,
        sctp: bool,
        visitor: bool,
        ufrag: String,
        pwd: String,
        hosts: &[SocketAddr],
        keepalive: Duration,
        provider: Arc<dyn RTCCryptoProvider>,
        parent: &tracing::Span,
    ) -> Result<Self, String> {
        let ice = new_agent(now, ufrag.clone(), pwd, ice_controlling, hosts, keepalive, provider)?;
        let span = tracing::info_span!(parent: parent, "ep", id = id.0);
        Ok(Self {
            id,
            conf,
            span,
            visitor,
            sctp_wanted: sctp,
            ice,
            ice_controlling,
            ice_started: false,
            ice_connected: false,
            local_ufrag: ufrag,
            ice_next: None,
            ice_generation: 0,
            retired_ufrag: None,
            selected: None,
            validated: Vec::new(),
            consent: keepalive,
            demux_addrs: Vec::new(),
            remote: RemoteTransport::default(),
            dtls: None,
            srtp: None,
            sctp: None,
            sources_signalled: false,
            learned: 0,
            neg: Negotiated::default(),
            tcc_out: 1,
            remb_bps: None,
            twcc_rx: TwccGenerator::new(),
            remb_rx: crate::bwe::RembGenerator::new(),
            last_media_ssrc: 0,
            bwe: SendSideBwe::default(),
            rtx_cache: Default::default(),
            rtx_enc: Default::default(),
            prober: ProbeController::new(crate::bwe::INITIAL_BPS),
            padding: PaddingBudget::new(),
            probe: None,
            next_padding: None,
            pad_seq: 1,
            pad_ts: 0,
            name: String::new(),
            recv: Receiver::default(),
            channel_in: std::collections::VecDeque::new(),
            channel_open: false,
            ws_open: false,
            force_mute_audio: false,
            force_mute_video: false,
            ws_active: false,
            rx: Default::default(),
            tx: Default::default(),
            created: now,
            last_activity: now,
            next_report: now + Duration::from_secs(1),
            deadline: now,
            expired: false,
            inactive: false,
            next_connection_stats: now + CONNECTION_STATS_INTERVAL,
        })
    }

    /// Which of this endpoint's ICE agents a STUN Binding request for local ufrag `ufrag`
    /// belongs to.
    pub fn route_request(&self, ufrag: &str) -> IceRoute {
        if ufrag == self.local_ufrag {
            IceRoute::Current
        } else if self.ice_next.as_ref().is_some_and(|n| n.ufrag == ufrag) {
            IceRoute::Next
        } else if self.retired_ufrag.as_deref() == Some(ufrag) {
            IceRoute::Retired
        } else {
            IceRoute::Unknown
        }
    }

    /// Which agent a STUN message other than a request (a response to one of our checks)
    /// belongs to: the restart agent if it sent a request with that transaction id.
    pub fn route_response(&self, msg: &[u8]) -> IceRoute {
        match (&self.ice_next, msg.get(8..20)) {
            (Some(n), Some(tid)) if n.sent_request(tid) => IceRoute::Next,
            _ => IceRoute::Current,
        }
    }

    /// Start an in-place ICE restart with `agent` (built by [`new_agent`] with `ufrag`/`pwd`).
    /// The current agent keeps serving the old credentials until [`Endpoint::complete_ice_restart`].
    pub fn begin_ice_restart(&mut self, agent: Agent, ufrag: String, pwd: String) {
        self.ice_generation = self.ice_generation.saturating_add(1);
        self.ice_next = Some(Box::new(IceRestart {
            agent,
            ufrag,
            pwd,
            generation: self.ice_generation,
            started: false,
            sent: [[0; 12]; SENT_IDS],
            next_sent: 0,
        }));
    }

    /// The restart agent had its first authenticated exchange: it becomes the endpoint's agent,
    /// the old one is closed and its ufrag retired. Returns the ufrag retired by the previous
    /// restart, which the caller must forget entirely (only the last one is kept, so the state
    /// stays bounded), and the ufrag retired now.
    pub fn complete_ice_restart(&mut self) -> Option<(Option<String>, String)> {
        let next = self.ice_next.take()?;
        let IceRestart {
            agent, ufrag, started, ..
        } = *next;
        let mut old = std::mem::replace(&mut self.ice, agent);
        let _ = old.close();
        let old_ufrag = std::mem::replace(&mut self.local_ufrag, ufrag);
        self.ice_started = started;
        let forgotten = self.retired_ufrag.replace(old_ufrag.clone());
        tracing::info!(parent: &self.span, generation = self.ice_generation, "ICE restart completed");
        Some((forgotten, old_ufrag))
    }

    /// The DTLS role implied by the remote `setup` (media.md §1.2).
    pub fn dtls_role(&self) -> Role {
        match self.remote.fingerprints.iter().find_map(|f| f.setup) {
            Some(Setup::Passive) => Role::Client,
            Some(Setup::Active) | Some(Setup::ActPass) | None => Role::Server,
        }
    }

    /// Where to send: the ICE-selected pair, else the DTLS-pinned address (Chrome sends DTLS
    /// and media before the controlling side selects a pair, chromium note §3.7).
    pub fn send_addr(&self) -> Option<SocketAddr> {
        self.selected.or_else(|| self.dtls.as_ref().and_then(|d| d.pinned()))
    }

    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.validated_slot(addr).is_some()
    }

    /// Where `addr` is among the validated addresses: the per-packet check, whose answer
    /// [`Endpoint::heard_at`] takes once the packet authenticated (one scan per packet).
    pub fn validated_slot(&self, addr: SocketAddr) -> Option<usize> {
        self.validated.iter().position(|v| v.addr == addr)
    }

    /// The validated address in `slot` ([`Endpoint::validated_slot`]) was heard at `now`.
    pub fn heard_at(&mut self, slot: usize, now: Instant) {
        if let Some(v) = self.validated.get_mut(slot) {
            v.heard = v.heard.max(now);
        }
    }

    /// Remember `addr` as validated (heard at `now`). When [`MAX_VALIDATED`] are known, the
    /// oldest one that is neither the selected nor the DTLS-pinned address makes room.
    pub fn add_validated(&mut self, addr: SocketAddr, now: Instant) {
        if self.heard_from(addr, now) {
            return;
        }
        if self.validated.len() >= MAX_VALIDATED {
            let keep = [self.selected, self.dtls.as_ref().and_then(|d| d.pinned())];
            if let Some(i) = self.validated.iter().position(|v| !keep.contains(&Some(v.addr))) {
                self.validated.remove(i);
            } else {
                return;
            }
        }
        self.validated.push(Validated { addr, heard: now });
    }

    /// Something authenticated came from `addr` at `now`: false if it is not validated.
    /// Per packet: a scan of at most [`MAX_VALIDATED`] entries, no allocation.
    pub fn heard_from(&mut self, addr: SocketAddr, now: Instant) -> bool {
        match self.validated.iter_mut().find(|v| v.addr == addr) {
            Some(v) => {
                v.heard = v.heard.max(now);
                true
            }
            None => false,
        }
    }

    /// When something authenticated last came from `addr`, if it is validated.
    pub fn last_heard(&self, addr: SocketAddr) -> Option<Instant> {
        self.validated.iter().find(|v| v.addr == addr).map(|v| v.heard)
    }

    /// Whether the endpoint counts as inactive at `now` (media.md §1.4): nothing received for
    /// [`INACTIVITY_LIMIT`], or [`FIRST_TRANSFER_TIMEOUT`] while ICE never connected. Visitors
    /// are not monitored.
    pub fn is_inactive(&self, now: Instant) -> bool {
        if self.visitor {
            return false;
        }
        let limit = if self.ice_connected {
            INACTIVITY_LIMIT
        } else {
            FIRST_TRANSFER_TIMEOUT
        };
        now.saturating_duration_since(self.last_activity) > limit
    }

    /// Whether an SSRC not yet known may be learned from this endpoint's traffic: only while
    /// no sources were ever signalled, and up to `cap` SSRCs.
    pub fn may_learn(&self, cap: usize) -> bool {
        !self.sources_signalled && self.learned < cap
    }
}

/// Receive statistics for one SSRC (RFC 3550 appendix A.1, A.3, A.8).
#[derive(Debug)]
pub struct RxStream {
    pub clock_rate: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    jitter: f64,
    last_transit: Option<f64>,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// Recently seen sequence numbers (duplicate and RTX-copy detection).
    pub seen: SeqWindow,
    /// NACKs toward the sender for this stream (video only, media.md §5.1).
    pub nack: Option<NackGenerator>,
}

impl RxStream {
    pub fn new(seq: u16, clock_rate: u32) -> Self {
        Self {
            clock_rate,
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last_transit: None,
            last_sr: None,
            seen: SeqWindow::default(),
            nack: None,
        }
    }

    /// Record one authenticated packet. `arrival` is seconds on the shard's clock.
    pub fn update(&mut self, seq: u16, rtp_ts: u32, arrival: f64) {
        let delta = seq.wrapping_sub(self.max_seq);
        if delta != 0 && delta < 0x8000 {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        }
        self.received = self.received.wrapping_add(1);
        let transit = arrival * f64::from(self.clock_rate) - f64::from(rtp_ts);
        if let Some(prev) = self.last_transit {
            let mut d = transit - prev;
            // RTP timestamps wrap; a jump of more than half the range is a wrap, not jitter.
            if d.abs() > f64::from(u32::MAX / 2) {
                d = 0.0;
            }
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// A report block, advancing the "prior" counters used for fraction lost.
    pub fn report(&mut self, ssrc: u32, now: Instant) -> ReportBlock {
        let ext_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = ext_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((mid, at)) => {
                let d = now.saturating_duration_since(at);
                (mid, (d.as_secs_f64() * 65536.0) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: Ssrc(ssrc),
            fraction_lost,
            cumulative_lost: lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            ext_highest_seq: ext_max,
            jitter: self.jitter as u32,
            lsr,
            dlsr,
        }
    }
}

/// What the bridge sent to one receiver on one SSRC (for its SR).
#[derive(Debug, Clone)]
pub struct TxStream {
    pub packets: u32,
    pub octets: u32,
    pub last_rtp_ts: u32,
    pub last_sent: Instant,
    pub clock_rate: u32,
}

/// The last [`SeqWindow::SPAN`] sequence numbers of a stream, to drop duplicates (an RTX
/// copy of a packet that did arrive, a sender's double send). SRTP's replay window works on
/// the encrypted stream per SSRC and cannot see RTX copies of the original SSRC.
#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    bits: [u64; 16],
    max: Option<u16>,
}

impl SeqWindow {
    pub const SPAN: u16 = 1024;

    fn bit(&mut self, seq: u16) -> (&mut u64, u64) {
        let i = usize::from(seq % Self::SPAN);
        (&mut self.bits[i / 64], 1u64 << (i % 64))
    }

    /// Record `seq`; false if it was seen already or is too old to tell.
    pub fn insert(&mut self, seq: u16) -> bool {
        let Some(max) = self.max else {
            self.max = Some(seq);
            let (w, m) = self.bit(seq);
            *w |= m;
            return true;
        };
        let delta = crate::wire::rtp::seq_delta(max, seq);
        if delta > 0 {
            if delta as u16 >= Self::SPAN {
                self.bits = [0; 16];
            } else {
                for k in 1..=delta as u16 {
                    let (w, m) = self.bit(max.wrapping_add(k));
                    *w &= !m;
                }
            }
            self.max = Some(seq);
        } else if delta.unsigned_abs() >= Self::SPAN {
            return false;
        }
        let (w, m) = self.bit(seq);
        if *w & m != 0 {
            return false;
        }
        *w |= m;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// STUN routing across an ICE restart: both ufrags reach an agent until the switch, then
    /// the old one is retired and only the last retired ufrag is remembered; responses reach
    /// the restart agent only for transaction ids it sent.
    #[test]
    fn ice_restart_routing() {
        let now = Instant::now();
        let provider = rtc_dtls::crypto_provider::default_provider().expect("crypto provider");
        let host: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let agent = |u: &str| {
            new_agent(
                now,
                u.into(),
                rtc_ice::rand::generate_pwd(),
                true,
                &[host],
                Duration::from_secs(5),
                provider.clone(),
            )
            .expect("agent")
        };
        let mut ep = Endpoint::new(
            now,
            ConferenceId(1),
            EndpointId(1),
            true,
            false,
            false,
            "ufrag0".into(),
            rtc_ice::rand::generate_pwd(),
            &[host],
            Duration::from_secs(5),
            provider.clone(),
            &tracing::Span::none(),
        )
        .expect("endpoint");
        assert_eq!(ep.route_request("ufrag0"), IceRoute::Current);
        assert_eq!(ep.route_request("ufrag1"), IceRoute::Unknown);
        assert!(ep.complete_ice_restart().is_none(), "nothing to complete");

        ep.begin_ice_restart(agent("ufrag1"), "ufrag1".into(), "pwd".into());
        assert_eq!(ep.ice_generation, 1);
        assert_eq!(ep.route_request("ufrag0"), IceRoute::Current, "old ufrag still served");
        assert_eq!(ep.route_request("ufrag1"), IceRoute::Next);
        // A response is the restart agent's only if it sent the request.
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        req.extend_from_slice(&[5; 12]);
        let mut resp = req.clone();
        resp[0..2].copy_from_slice(&crate::demux::STUN_BINDING_SUCCESS.to_be_bytes());
        assert_eq!(ep.route_response(&resp), IceRoute::Current);
        if let Some(n) = ep.ice_next.as_mut() {
            n.record_sent(&req);
            n.record_sent(&resp); // not a request: not recorded
        }
        assert_eq!(ep.route_response(&resp), IceRoute::Next);
        resp[19] = 6;
        assert_eq!(ep.route_response(&resp), IceRoute::Current);
        assert_eq!(ep.route_response(&resp[..10]), IceRoute::Current, "truncated");

        assert_eq!(ep.complete_ice_restart(), Some((None, "ufrag0".to_owned())));
        assert_eq!(ep.local_ufrag, "ufrag1");
        assert_eq!(ep.route_request("ufrag1"), IceRoute::Current);
        assert_eq!(ep.route_request("ufrag0"), IceRoute::Retired);
        assert_eq!(ep.route_response(&resp), IceRoute::Current);

        ep.begin_ice_restart(agent("ufrag2"), "ufrag2".into(), "pwd".into());
        assert_eq!(ep.ice_generation, 2);
        assert_eq!(ep.route_request("ufrag1"), IceRoute::Current);
        assert_eq!(ep.route_request("ufrag0"), IceRoute::Retired);
        assert_eq!(
            ep.complete_ice_restart(),
            Some((Some("ufrag0".to_owned()), "ufrag1".to_owned())),
            "the older retired ufrag is handed back to be forgotten"
        );
        assert_eq!(ep.route_request("ufrag0"), IceRoute::Unknown);
        assert_eq!(ep.route_request("ufrag1"), IceRoute::Retired);
        assert_eq!(ep.route_request("ufrag2"), IceRoute::Current);
    }

    /// Loss, sequence wrap and fraction lost follow RFC 3550 A.3.
    #[test]
    fn seq_window_drops_duplicates_across_wrap() {
        let mut w = SeqWindow::default();
        assert!(w.insert(65530));
        assert!(w.insert(65535));
        assert!(w.insert(3), "forward across the wrap");
        assert!(!w.insert(65535), "duplicate");
        assert!(w.insert(65533), "late but new");
        assert!(!w.insert(65533));
        assert!(!w.insert(3));
        assert!(w.insert(3 + 2000), "a big jump resets");
        assert!(!w.insert(3), "too old to tell is dropped");
        assert!(w.insert(3 + 1999));
    }

    #[test]
    fn rx_stream_loss_and_wrap() {
        let now = Instant::now();
        let mut s = RxStream::new(65530, 90_000);
        for (i, seq) in [65530u16, 65531, 65533, 65535, 0, 1, 3].iter().enumerate() {
            s.update(*seq, i as u32 * 3000, i as f64 / 30.0);
        }
        let r = s.report(7, now);
        assert_eq!(r.ext_highest_seq, 65536 + 3);
        assert_eq!(r.cumulative_lost, 3); // 65532, 65534, 2
        assert_eq!(r.fraction_lost, (3 * 256 / 10) as u8);
        // Nothing new: nothing lost in the interval.
        assert_eq!(s.report(7, now).fraction_lost, 0);
    }
}
