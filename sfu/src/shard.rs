//! The unit of ownership: many conferences, the demux tables, timers, RNG and counters.
//!
//! Sans-IO: every input is a `handle_*(now, …)` call, every output a `poll_*` call; see the
//! crate docs for the run-loop contract. Nothing here reads a clock or touches a socket.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_ice::state::ConnectionState;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sansio::Protocol;

use crate::allocation::{AllocConfig, AllocInput, Allocator};
use crate::bwe::RtxCache;
use crate::bwe::{NackGenerator, PADDING_PERIOD};
use crate::config::SfuConfig;
use crate::control::{
    CandidateKind, Command, CommandError, Event, ExpireReason, LocalCandidate, LocalTransport, RemoteTransport, Reply,
    SourceDescription,
};
use crate::demux::{self, Kind};
use crate::dtls::{Dtls, DtlsContext, DtlsEvent, LocalCert, Role};
use crate::egress::{self, OutExtensions, OutHeader};
use crate::endpoint::{new_agent, Endpoint, IceRoute, RxStream, TxStream, MAX_REMOTE_CANDIDATES};
use crate::id::{ConferenceId, EndpointId, Ssrc};
use crate::negotiated::Codec;
use crate::projection::ssrc_slots::SlotAssignment;
use crate::projection::Verdict;
use crate::receiver::SlotPools;
use crate::sctp::{ChannelEvent, Sctp};
use crate::sources::{SourceKey, SourceTable};
use crate::speaker::SpeakerDetector;
use crate::stats::Stats;
use crate::video::{self, VideoState};
use crate::wire::rtcp::{self, RtcpCompound, RtcpPacket, SenderInfo};
use crate::wire::rtp::RtpHeader;

/// At most one PLI/FIR per media SSRC per this interval is forwarded to its sender.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Period of the conference timer: dominant speaker, allocation triggers.
pub const CONFERENCE_TICK: Duration = Duration::from_millis(100);
/// Re-allocate at least this often (bitrates of layers move; JVB: 5 s).
pub const MAX_TIME_BETWEEN_ALLOCATIONS: Duration = Duration::from_secs(1);
/// Recent speakers announced besides the dominant one (JVB's `recent-speakers-count`).
const RECENT_SPEAKERS: usize = 10;
/// Interval between the bridge's own RR/SR towards each endpoint (jittered ±10 %).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Demux entries one endpoint may own (signalled candidates plus validated addresses).
const MAX_DEMUX_ADDRS: usize = 64;

/// A datagram to send from the shared media socket.
#[derive(Debug)]
pub struct Transmit {
    pub remote: SocketAddr,
    pub data: BytesMut,
}

/// Ties the monotonic clock to wall-clock time, for RTCP SR NTP timestamps.
#[derive(Debug, Clone, Copy)]
pub struct ClockAnchor {
    pub instant: Instant,
    pub system: SystemTime,
}

mod guard;
#[cfg(test)]
mod ice_restart_tests;
#[cfg(test)]
mod nat_rebinding_tests;
mod rebind;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod test_support;

type Key = (ConferenceId, EndpointId);

struct Conference {
    span: tracing::Span,
    /// Sender SSRC of the bridge's own RTCP (Colibri2 `jvb-v0`).
    video_ssrc: u32,
    endpoints: crate::FastMap<EndpointId, Endpoint>,
    /// Every signalled (or learned) source and the route of each of its SSRCs.
    sources: SourceTable,
    /// Per audio source: silent packets in a row and packets dropped so far (the drop is
    /// hidden from receivers by shifting sequence numbers, media.md §6).
    silence: crate::FastMap<SourceKey, Silence>,
    /// Per video source: codec, layers, heights and bitrates learnt from the bitstream.
    video: crate::FastMap<SourceKey, VideoState>,
    /// Video types announced over the bridge channel (`SourceVideoTypeMessage`), which override
    /// the signalled one.
    video_types: crate::FastMap<SourceKey, crate::bridge_channel::VideoType>,
    speaker: SpeakerDetector,
    allocator: Allocator,
    alloc_cfg: AllocConfig,
    /// Something changed that needs a new allocation for every receiver.
    realloc: bool,
    last_alloc: Instant,
    /// Reallocations grown keyframes ran at once (`handle_rtp`): the start of the current
    /// [`SYNC_REALLOC_WINDOW`] and how many ran in it.
    sync_allocs: (Instant, u8),
    /// Conference-level timer (dominant speaker, allocation).
    next_tick: Instant,
    /// `SenderSourceConstraints` last sent per source.
    sender_max: crate::FastMap<SourceKey, i32>,
    /// Bridge-channel output was queued on some endpoint: drive them all.
    channel_dirty: bool,
    /// Scratch buffer for outgoing bridge-channel messages.
    scratch: String,
    keyframes: KeyframeLimiter,
    fir_seq: crate::FastMap<u32, u8>,
}

#[derive(Default)]
struct Counters {
    rtp_rx: u64,
    rtp_tx: u64,
    rtcp_rx: u64,
    rtcp_tx: u64,
    bytes_rx: u64,
    bytes_tx: u64,
    dtls_failures: u64,
    dtls_fingerprint_mismatches: u64,
    ice_failures: u64,
    /// Endpoints whose media moved to a new address (NAT rebinding, `rebind.rs`).
    ice_rebinds: u64,
    keyframe_forwarded: u64,
    keyframe_suppressed: u64,
    nacks_sent: u64,
    retransmissions: u64,
    channel_rx: u64,
    channel_tx: u64,
    channel_ignored: u64,
    projection_drops: u64,
    padding_sent: u64,
    task_panics: u64,
}

/// Outputs and counters, kept apart from the conferences so both can be borrowed at once.
#[derive(Default)]
struct Io {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    c: Counters,
    drops: BTreeMap<&'static str, u64>,
    /// Send buffers given back by the driver after sending.
    pool: Vec<BytesMut>,
    /// When the datagram being handled reached the socket (the kernel's receive timestamp), if
    /// known: transport-cc and REMB record it instead of the handling time (see
    /// [`Shard::handle_datagram_at`]).
    arrival: Option<Instant>,
}

/// Capacity of pooled send buffers: a full-size RTP packet plus header growth and SRTP tag.
const BUF_CAPACITY: usize = 1600;
/// Buffers kept in the pool at most.
const POOL_MAX: usize = 4096;

impl Io {
    fn drop(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_insert(0) += 1;
    }
    fn send(&mut self, remote: SocketAddr, data: BytesMut) {
        self.c.bytes_tx += data.len() as u64;
        self.transmits.push_back(Transmit { remote, data });
    }
    /// A send buffer from the pool (see [`Shard::recycle`]).
    fn take_buf(&mut self) -> BytesMut {
        self.pool.pop().unwrap_or_else(|| BytesMut::with_capacity(BUF_CAPACITY))
    }
}

/// Read-only context the per-endpoint code needs.
struct Env<'a> {
    config: &'a SfuConfig,
    provider: &'a Arc<dyn RTCCryptoProvider>,
    cert: &'a LocalCert,
}

pub struct Shard {
    config: SfuConfig,
    provider: Arc<dyn RTCCryptoProvider>,
    cert: LocalCert,
    local_addr: SocketAddr,
    hosts: Vec<SocketAddr>,
    local_candidates: Vec<LocalCandidate>,
    conferences: crate::FastMap<ConferenceId, Conference>,
    by_addr: crate::FastMap<SocketAddr, Key>,
    by_ufrag: HashMap<String, Key>,
    io: Io,
    rng: StdRng,
    clock: ClockAnchor,
    span: tracing::Span,
    next_timeout: Option<Instant>,
    /// The conference being processed, for tearing it down if that processing panics
    /// (see `guard.rs`).
    in_conf: Option<ConferenceId>,
    /// Conferences armed to panic in their next timer pass or datagram (fault injection).
    armed: guard::Armed,
}

impl Shard {
    /// A shard serving the shared socket bound at `local_addr`. Generates the process
    /// certificate; use [`Shard::with_cert`] to share one between shards.
    pub fn new(config: SfuConfig, local_addr: SocketAddr, clock: ClockAnchor) -> Result<Self, String> {
        let provider = rtc_dtls::crypto_provider::default_provider().map_err(|e| e.to_string())?;
        let cert = LocalCert::generate(&provider)?;
        Ok(Self::with_cert(config, local_addr, clock, provider, cert))
    }

    pub fn with_cert(
        config: SfuConfig,
        local_addr: SocketAddr,
        clock: ClockAnchor,
        provider: Arc<dyn RTCCryptoProvider>,
        cert: LocalCert,
    ) -> Self {
        let hosts: Vec<SocketAddr> = host_ips(&config, local_addr)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, local_addr.port()))
            .collect();
        let mut local_candidates = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            local_candidates.push(LocalCandidate {
                addr: *h,
                priority: priority(126, i),
                foundation: (i + 1).to_string(),
                kind: CandidateKind::Host,
                related: None,
            });
        }
        for (i, a) in config.advertise.iter().enumerate() {
            local_candidates.push(LocalCandidate {
                addr: SocketAddr::new(a.ip, a.port.unwrap_or(local_addr.port())),
                priority: priority(100, i),
                foundation: (hosts.len() + i + 1).to_string(),
                kind: CandidateKind::Srflx,
                related: hosts.first().copied(),
            });
        }
        let seed = config.rng_seed.unwrap_or_else(|| rand::rng().random());
        Self {
            span: tracing::info_span!("shard", idx = 0),
            config,
            provider,
            cert,
            local_addr,
            hosts,
            local_candidates,
            conferences: Default::default(),
            by_addr: Default::default(),
            by_ufrag: HashMap::new(),
            io: Io::default(),
            rng: StdRng::seed_from_u64(seed),
            clock,
            next_timeout: None,
            in_conf: None,
            armed: guard::Armed::default(),
        }
    }

    /// SHA-256 fingerprint of the process certificate.
    pub fn fingerprint(&self) -> &str {
        &self.cert.fingerprint_sha256
    }

    /// The host candidates' addresses.
    pub fn host_addresses(&self) -> &[SocketAddr] {
        &self.hosts
    }

    /// One datagram (see [`Shard::handle_datagram`], which runs this under a panic guard).
    fn datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: BytesMut) {
        self.io.c.bytes_rx += data.len() as u64;
        let kind = demux::classify(&data);
        let key = match kind {
            Kind::Stun => return self.handle_stun(now, local, remote, data),
            Kind::Unknown => return self.io.drop("unknown_protocol"),
            Kind::Dtls | Kind::Rtp | Kind::Rtcp => match self.by_addr.get(&remote) {
                Some(k) => *k,
                None => return self.io.drop("unknown_source"),
            },
        };
        self.in_conf = Some(key.0);
        self.armed.check(key.0, crate::control::FaultSite::Datagram);
        let env = Env {
            config: &self.config,
            provider: &self.provider,
            cert: &self.cert,
        };
        let Some(conf) = self.conferences.get_mut(&key.0) else {
            return self.io.drop("unknown_source");
        };
        match kind {
            Kind::Dtls => {
                let Some(ep) = conf.endpoints.get_mut(&key.1) else {
                    return self.io.drop("unknown_source");
                };
                handle_dtls(now, ep, remote, data, &env, &mut self.io);
                drive(now, ep, &env, &mut self.io, &mut self.by_addr);
                if !ep.channel_in.is_empty() {
                    process_channel(now, conf, key.1, &mut self.io);
                }
                if conf.channel_dirty {
                    conf.channel_dirty = false;
                    for e in conf.endpoints.values_mut() {
                        drive(now, e, &env, &mut self.io, &mut self.by_addr);
                    }
                }
            }
            Kind::Rtp => handle_rtp(now, conf, key.1, remote, data, &env, &mut self.io, self.clock),
            Kind::Rtcp => handle_rtcp(now, conf, key.1, remote, data, &mut self.io, self.clock),
            Kind::Stun | Kind::Unknown => {}
        }
        if let Some(ep) = conf.endpoints.get_mut(&key.1) {
            let d = deadline(ep, &self.config);
            self.next_timeout = min_opt(self.next_timeout, Some(d));
        }
    }

    fn handle_stun(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: BytesMut) {
        let Some(typ) = demux::stun_type(&data) else {
            return self.io.drop("malformed_stun");
        };
        let key = if typ == demux::STUN_BINDING_REQUEST {
            let Some(ufrag) = demux::stun_local_ufrag(&data) else {
                return self.io.drop("malformed_stun");
            };
            match self.by_ufrag.get(ufrag) {
                Some(k) => *k,
                None => return self.io.drop("unknown_ufrag"),
            }
        } else {
            match self.by_addr.get(&remote) {
                Some(k) => *k,
                None => return self.io.drop("unknown_source"),
            }
        };
        self.in_conf = Some(key.0);
        self.armed.check(key.0, crate::control::FaultSite::Datagram);
        let ice_local = self.ice_local(local, remote);
        let env = Env {
            config: &self.config,
            provider: &self.provider,
            cert: &self.cert,
        };
        let Some(ep) = self
            .conferences
            .get_mut(&key.0)
            .and_then(|c| c.endpoints.get_mut(&key.1))
        else {
            return self.io.drop("unknown_source");
        };
        // Which of the endpoint's agents (an ICE restart runs two, colibri.md §4.3).
        let route = if typ == demux::STUN_BINDING_REQUEST {
            demux::stun_local_ufrag(&data).map_or(IceRoute::Unknown, |u| ep.route_request(u))
        } else {
            ep.route_response(&data)
        };
        match route {
            IceRoute::Retired => {
                tracing::trace!(parent: &ep.span, %remote, "STUN with the ufrag an ICE restart replaced");
                return self.io.drop("stale_ufrag");
            }
            IceRoute::Unknown => return self.io.drop("unknown_ufrag"),
            IceRoute::Current | IceRoute::Next => {}
        }
        let nominated =
            typ == demux::STUN_BINDING_REQUEST && route == IceRoute::Current && rebind::use_candidate(&data);
        if nominated && ep.ice_controlling && ep.selected.is_some() && !rebind::ice_controlling(&data) {
            // rtc-ice, controlling, refuses USE-CANDIDATE before checking the integrity: once
            // connected, a nominating check (case 17) is authenticated and answered here
            // instead. (A role conflict, ICE-CONTROLLING, is still the agent's to resolve.)
            let local = ep.ice.get_local_credentials();
            let authentic = ep
                .remote
                .ufrag
                .as_deref()
                .is_some_and(|ru| rebind::authenticate(&data, &local.ufrag, ru, &local.pwd));
            if !authentic {
                tracing::trace!(parent: &ep.span, %remote, "nominating check rejected");
                return self.io.drop("stun_rejected");
            }
            let mut out = self.io.take_buf();
            rebind::binding_success(&data, remote, &local.pwd, &mut out);
            self.io.send(remote, out);
            ep.add_validated(remote, now);
            ep.last_activity = now;
            map_addr(&mut self.by_addr, ep, key, remote, true);
            if self.by_addr.get(&remote) == Some(&key) && rebind::should_rebind(ep, remote, true, now) {
                if let Err(e) = rebind::rebind(now, ep, remote, &self.hosts, &self.provider, &mut self.io) {
                    tracing::warn!(parent: &ep.span, %remote, error = %e, "NAT rebinding failed");
                }
            }
            drive(now, ep, &env, &mut self.io, &mut self.by_addr);
            let d = deadline(ep, &self.config);
            self.next_timeout = min_opt(self.next_timeout, Some(d));
            return;
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: ice_local,
                peer_addr: remote,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: data,
        };
        let read = match (route, ep.ice_next.as_mut()) {
            (IceRoute::Next, Some(next)) => next.agent.handle_read(msg),
            _ => ep.ice.handle_read(msg),
        };
        match read {
            Ok(()) if typ == demux::STUN_BINDING_REQUEST || typ == demux::STUN_BINDING_SUCCESS => {
                // Authenticated (USERNAME and MESSAGE-INTEGRITY checked by the agent).
                ep.add_validated(remote, now);
                ep.last_activity = now;
                map_addr(&mut self.by_addr, ep, key, remote, true);
                if route == IceRoute::Next {
                    // The first successful check with the new credentials: switch to them.
                    if let Some((Some(forgotten), _retired)) = ep.complete_ice_restart() {
                        self.by_ufrag.remove(&forgotten);
                    }
                } else if typ == demux::STUN_BINDING_REQUEST
                    && self.by_addr.get(&remote) == Some(&key)
                    && rebind::should_rebind(ep, remote, nominated, now)
                {
                    // A request from a new address while the selected one is silent: the
                    // endpoint's NAT rebound (a browser, ICE-controlled, never nominates).
                    if let Err(e) = rebind::rebind(now, ep, remote, &self.hosts, &self.provider, &mut self.io) {
                        tracing::warn!(parent: &ep.span, %remote, error = %e, "NAT rebinding failed");
                    }
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::trace!(parent: &ep.span, %remote, error = %e, "stun rejected");
                self.io.drop("stun_rejected");
            }
        }
        drive(now, ep, &env, &mut self.io, &mut self.by_addr);
        let d = deadline(ep, &self.config);
        self.next_timeout = min_opt(self.next_timeout, Some(d));
    }

    /// The local candidate address the agent knows for a datagram received on `local`
    /// (the socket may be bound to the unspecified address).
    fn ice_local(&self, local: SocketAddr, remote: SocketAddr) -> SocketAddr {
        if self.hosts.contains(&local) {
            return local;
        }
        let same_family = |h: &&SocketAddr| h.is_ipv4() == remote.is_ipv4();
        self.hosts
            .iter()
            .filter(same_family)
            .find(|h| h.ip().is_loopback() == remote.ip().is_loopback())
            .or_else(|| self.hosts.iter().find(same_family))
            .copied()
            .unwrap_or(local)
    }

    fn command(&mut self, now: Instant, cmd: Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::CreateConference { conf } => {
                if self.conferences.contains_key(&conf) {
                    return Err(CommandError::ConferenceExists(conf));
                }
                if self.conferences.len() >= self.config.limits.max_conferences {
                    return Err(CommandError::LimitReached("conferences"));
                }
                let audio_ssrc = self.random_ssrc();
                let mut video_ssrc = self.random_ssrc();
                while video_ssrc == audio_ssrc {
                    video_ssrc = self.random_ssrc();
                }
                let span = tracing::info_span!(parent: &self.span, "conf", id = conf.0);
                tracing::info!(parent: &span, "conference created");
                self.conferences.insert(
                    conf,
                    Conference {
                        span,
                        video_ssrc,
                        endpoints: Default::default(),
                        sources: SourceTable::default(),
                        silence: Default::default(),
                        video: Default::default(),
                        video_types: Default::default(),
                        speaker: SpeakerDetector::new(RECENT_SPEAKERS),
                        allocator: Allocator::new(),
                        alloc_cfg: AllocConfig::default(),
                        realloc: false,
                        last_alloc: now,
                        sync_allocs: (now, 0),
                        next_tick: now + CONFERENCE_TICK,
                        sender_max: Default::default(),
                        channel_dirty: false,
                        scratch: String::new(),
                        keyframes: KeyframeLimiter::default(),
                        fir_seq: Default::default(),
                    },
                );
                Ok(Reply::ConferenceCreated {
                    audio_ssrc: Ssrc(audio_ssrc),
                    video_ssrc: Ssrc(video_ssrc),
                })
            }
            Command::ExpireConference { conf } => {
                if let Some(c) = self.conferences.remove(&conf) {
                    tracing::info!(parent: &c.span, "conference expired");
                    for (_, ep) in c.endpoints {
                        self.forget_endpoint(now, ep);
                    }
                }
                Ok(Reply::Done)
            }
            Command::CreateEndpoint {
                conf,
                ep,
                ice_controlling,
                sctp,
                visitor,
                name,
                ssrc_rewriting,
            } => {
                let consent = self.jittered(self.config.consent_interval);
                let slots = if ssrc_rewriting && self.conferences.contains_key(&conf) {
                    Some(self.slot_pools(conf))
                } else {
                    None
                };
                let c = conference_mut(&mut self.conferences, conf)?;
                if c.endpoints.contains_key(&ep) {
                    return Err(CommandError::EndpointExists { conf, ep });
                }
                if c.endpoints.len() >= self.config.limits.max_endpoints_per_conference {
                    return Err(CommandError::LimitReached("endpoints per conference"));
                }
                let mut ufrag = rtc_ice::rand::generate_ufrag();
                while self.by_ufrag.contains_key(&ufrag) {
                    ufrag = rtc_ice::rand::generate_ufrag();
                }
                let pwd = rtc_ice::rand::generate_pwd();
                let endpoint = Endpoint::new(
                    now,
                    conf,
                    ep,
                    ice_controlling,
                    sctp,
                    visitor,
                    ufrag.clone(),
                    pwd.clone(),
                    &self.hosts,
                    consent,
                    self.provider.clone(),
                    &c.span,
                )
                .map_err(CommandError::Internal)?;
                tracing::info!(parent: &endpoint.span, visitor, sctp, ssrc_rewriting, %name, "endpoint created");
                let mut endpoint = endpoint;
                endpoint.name = name;
                endpoint.recv.slots = slots;
                c.endpoints.insert(ep, endpoint);
                c.speaker.add_endpoint(ep);
                c.realloc = true;
                self.by_ufrag.insert(ufrag.clone(), (conf, ep));
                Ok(Reply::EndpointCreated(LocalTransport {
                    ufrag,
                    pwd,
                    fingerprint_sha256: self.cert.fingerprint_sha256.clone(),
                    candidates: self.local_candidates.clone(),
                }))
            }
            Command::SetMedia { conf, ep, media } => {
                // Additive, as JVB: payload types and ids once signalled stay.
                self.endpoint_mut(conf, ep)?.neg.apply(&media);
                Ok(Reply::Done)
            }
            Command::SetRemoteTransport { conf, ep, transport } => self.set_remote_transport(now, conf, ep, transport),
            Command::RestartIce { conf, ep } => self.restart_ice(now, conf, ep),
            Command::SetSources { conf, ep, sources } => self.set_sources(conf, ep, sources),
            Command::ExpireEndpoint { conf, ep } => {
                if let Some(e) = self.conferences.get_mut(&conf).and_then(|c| c.endpoints.remove(&ep)) {
                    tracing::info!(parent: &e.span, "endpoint expired by command");
                    self.forget_endpoint(now, e);
                }
                Ok(Reply::Done)
            }
            Command::SetForceMute { conf, ep, audio, video } => {
                let c = conference_mut(&mut self.conferences, conf)?;
                let e = endpoint_in(&mut c.endpoints, conf, ep)?;
                e.force_mute_audio = audio;
                e.force_mute_video = video;
                tracing::info!(parent: &e.span, audio, video, "force mute");
                Ok(Reply::Done)
            }
            Command::SetInitialLastN { conf, ep, last_n } => {
                let c = conference_mut(&mut self.conferences, conf)?;
                let e = endpoint_in(&mut c.endpoints, conf, ep)?;
                if e.recv.settings.set_last_n(last_n) {
                    c.realloc = true;
                }
                Ok(Reply::Done)
            }
            Command::BridgeChannelWebSocket { conf, ep, open } => {
                let c = conference_mut(&mut self.conferences, conf)?;
                let e = endpoint_in(&mut c.endpoints, conf, ep)?;
                e.ws_open = open;
                e.ws_active = open;
                if open {
                    // The current state goes out on the new channel (§2.1).
                    e.channel_in.push_front(String::new());
                    process_channel(now, c, ep, &mut self.io);
                }
                Ok(Reply::Done)
            }
            Command::BridgeChannelMessage { conf, ep, text } => {
                let env = Env {
                    config: &self.config,
                    provider: &self.provider,
                    cert: &self.cert,
                };
                let c = conference_mut(&mut self.conferences, conf)?;
                let e = endpoint_in(&mut c.endpoints, conf, ep)?;
                if e.channel_in.len() >= crate::receiver::CHANNEL_QUEUE {
                    self.io.drop("channel_queue_full");
                    return Err(CommandError::LimitReached("bridge-channel queue"));
                }
                e.ws_active = true;
                e.channel_in.push_back(text);
                process_channel(now, c, ep, &mut self.io);
                if c.channel_dirty {
                    c.channel_dirty = false;
                    for e in c.endpoints.values_mut() {
                        drive(now, e, &env, &mut self.io, &mut self.by_addr);
                    }
                }
                Ok(Reply::Done)
            }
            Command::SendDataChannelText { conf, ep, text } => {
                let env = Env {
                    config: &self.config,
                    provider: &self.provider,
                    cert: &self.cert,
                };
                let e = endpoint_in(&mut conference_mut(&mut self.conferences, conf)?.endpoints, conf, ep)?;
                let sctp = e
                    .sctp
                    .as_mut()
                    .ok_or_else(|| CommandError::Invalid("data channel not open".into()))?;
                sctp.send_text(now, &text)
                    .map_err(|m| CommandError::Invalid(m.into()))?;
                drive(now, e, &env, &mut self.io, &mut self.by_addr);
                Ok(Reply::Done)
            }
            Command::InjectPanic { conf, site } => {
                conference_mut(&mut self.conferences, conf)?;
                self.armed.arm(conf, site);
                self.armed.check(conf, crate::control::FaultSite::Command);
                Ok(Reply::Done)
            }
            #[allow(unreachable_patterns)] // Command is non_exhaustive for other crates only
            _ => Err(CommandError::Invalid("unsupported command".into())),
        }
    }

    fn endpoint_mut(&mut self, conf: ConferenceId, ep: EndpointId) -> Result<&mut Endpoint, CommandError> {
        endpoint_in(&mut conference_mut(&mut self.conferences, conf)?.endpoints, conf, ep)
    }

    /// Colibri2 `ice-restart` (colibri.md §4.3): a second agent with new credentials; the
    /// current one keeps working until the new one has its first authenticated exchange.
    fn restart_ice(&mut self, now: Instant, conf: ConferenceId, ep: EndpointId) -> Result<Reply, CommandError> {
        let consent = self.jittered(self.config.consent_interval);
        let c = conference_mut(&mut self.conferences, conf)?;
        let e = endpoint_in(&mut c.endpoints, conf, ep)?;
        let transport = |ufrag: &str, pwd: &str| LocalTransport {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
            fingerprint_sha256: self.cert.fingerprint_sha256.clone(),
            candidates: self.local_candidates.clone(),
        };
        if let Some(n) = &e.ice_next {
            // Asked again before the client used the new credentials: the same ones.
            return Ok(Reply::IceRestarted {
                transport: transport(&n.ufrag, &n.pwd),
                generation: Some(n.generation),
            });
        }
        if !e.ice_connected {
            let creds = e.ice.get_local_credentials();
            tracing::debug!(parent: &e.span, "ice-restart before ICE connected: current credentials");
            return Ok(Reply::IceRestarted {
                transport: transport(&creds.ufrag, &creds.pwd),
                generation: None,
            });
        }
        let mut ufrag = rtc_ice::rand::generate_ufrag();
        while self.by_ufrag.contains_key(&ufrag) {
            ufrag = rtc_ice::rand::generate_ufrag();
        }
        let pwd = rtc_ice::rand::generate_pwd();
        let agent = new_agent(
            now,
            ufrag.clone(),
            pwd.clone(),
            e.ice_controlling,
            &self.hosts,
            consent,
            self.provider.clone(),
        )
        .map_err(CommandError::Internal)?;
        e.begin_ice_restart(agent, ufrag.clone(), pwd.clone());
        tracing::info!(parent: &e.span, generation = e.ice_generation, "ICE restart started");
        self.by_ufrag.insert(ufrag.clone(), (conf, ep));
        Ok(Reply::IceRestarted {
            transport: transport(&ufrag, &pwd),
            generation: Some(e.ice_generation),
        })
    }

    fn set_remote_transport(
        &mut self,
        now: Instant,
        conf: ConferenceId,
        ep: EndpointId,
        t: RemoteTransport,
    ) -> Result<Reply, CommandError> {
        let local_addr = self.local_addr;
        let env = Env {
            config: &self.config,
            provider: &self.provider,
            cert: &self.cert,
        };
        let c = conference_mut(&mut self.conferences, conf)?;
        let e = endpoint_in(&mut c.endpoints, conf, ep)?;
        if !t.fingerprints.is_empty() {
            e.remote.fingerprints = t.fingerprints;
        }
        if e.dtls.is_none() && (!e.remote.fingerprints.is_empty() || t.ufrag.is_some()) {
            let role = e.dtls_role();
            tracing::debug!(parent: &e.span, ?role, "dtls role");
            e.dtls = Some(Dtls::new(role, local_addr));
        }
        for cand in t.candidates.into_iter().take(MAX_REMOTE_CANDIDATES) {
            if e.remote.candidates.contains(&cand) || e.remote.candidates.len() >= MAX_REMOTE_CANDIDATES {
                continue;
            }
            e.remote.candidates.push(cand);
            let rc = remote_host_candidate(cand);
            match rc {
                Ok(rc) => {
                    if let Some(n) = e.ice_next.as_mut().filter(|n| n.started) {
                        if let Err(err) = n.agent.add_remote_candidate(rc.clone()) {
                            tracing::debug!(parent: &e.span, %cand, error = %err, "remote candidate refused");
                        }
                    }
                    if let Err(err) = e.ice.add_remote_candidate(rc) {
                        tracing::debug!(parent: &e.span, %cand, error = %err, "remote candidate refused");
                    }
                }
                Err(err) => {
                    tracing::debug!(parent: &e.span, %cand, error = %err, "bad remote candidate")
                }
            }
        }
        if let (Some(u), Some(p)) = (t.ufrag, t.pwd) {
            if let Some(n) = e.ice_next.as_mut() {
                // The client's answer to an ICE restart (colibri.md §4.3 step 3): it goes to
                // the new agent, with every candidate known so far.
                if !n.started {
                    let span = &e.span;
                    for cand in &e.remote.candidates {
                        if let Ok(rc) = remote_host_candidate(*cand) {
                            if let Err(err) = n.agent.add_remote_candidate(rc) {
                                tracing::debug!(parent: span, %cand, error = %err, "remote candidate refused");
                            }
                        }
                    }
                    n.agent
                        .start_connectivity_checks(now, e.ice_controlling, u.clone(), p.clone())
                        .map_err(|err| CommandError::Invalid(format!("ICE credentials: {err}")))?;
                    n.started = true;
                } else if e.remote.ufrag.as_deref() != Some(&u) || e.remote.pwd.as_deref() != Some(&p) {
                    n.agent
                        .set_remote_credentials(u.clone(), p.clone())
                        .map_err(|err| CommandError::Invalid(format!("ICE credentials: {err}")))?;
                }
                e.remote.ufrag = Some(u);
                e.remote.pwd = Some(p);
            } else if !e.ice_started {
                e.ice
                    .start_connectivity_checks(now, e.ice_controlling, u.clone(), p.clone())
                    .map_err(|err| CommandError::Invalid(format!("ICE credentials: {err}")))?;
                e.ice_started = true;
                e.remote.ufrag = Some(u);
                e.remote.pwd = Some(p);
            }
        }
        drive(now, e, &env, &mut self.io, &mut self.by_addr);
        Ok(Reply::Done)
    }

    fn set_sources(
        &mut self,
        conf: ConferenceId,
        ep: EndpointId,
        sources: Vec<SourceDescription>,
    ) -> Result<Reply, CommandError> {
        let max = self.config.limits.max_ssrcs_per_endpoint;
        let c = conference_mut(&mut self.conferences, conf)?;
        let e = endpoint_in(&mut c.endpoints, conf, ep)?;
        // Every SSRC signalled counts, used or not.
        let mut all: Vec<u32> = sources
            .iter()
            .flat_map(|s| s.ssrcs.iter().chain(s.groups.iter().flat_map(|g| g.ssrcs.iter())))
            .map(|x| x.0)
            .collect();
        all.sort_unstable();
        all.dedup();
        if all.len() > max {
            return Err(CommandError::LimitReached("ssrcs per endpoint"));
        }
        let before = ssrcs_of(&c.sources, ep);
        let removed = c
            .sources
            .set_endpoint_sources(ep, &sources)
            .map_err(CommandError::Invalid)?;
        let gone: Vec<u32> = before.into_iter().filter(|x| c.sources.route(*x).is_none()).collect();
        for k in &removed {
            c.silence.remove(k);
            c.video.remove(k);
            c.video_types.remove(k);
            c.sender_max.remove(k);
        }
        forget_unrouted(&c.sources, &mut c.keyframes, &mut c.fir_seq);
        c.realloc = true;
        e.sources_signalled = true;
        e.learned = 0;
        let table = &c.sources;
        e.rx.retain(|ssrc, _| table.route(*ssrc).is_some_and(|r| r.owner == ep));
        for other in c.endpoints.values_mut() {
            retire_outbound(other, &gone);
            other.tx.retain(|ssrc, _| !removed.contains(ssrc));
            other.recv.projections.retain(|k, _| !removed.contains(k));
            other.rtx_cache.retain(|k, _| !removed.contains(k));
            other.rtx_enc.retain(|k, _| !removed.contains(k));
            sources_changed(other, &c.sources, &removed);
        }
        Ok(Reply::Done)
    }

    /// Remove every trace of an endpoint already taken out of its conference.
    fn forget_endpoint(&mut self, now: Instant, mut ep: Endpoint) {
        for a in &ep.demux_addrs {
            if self.by_addr.get(a) == Some(&(ep.conf, ep.id)) {
                self.by_addr.remove(a);
            }
        }
        self.by_ufrag.remove(&ep.local_ufrag);
        if let Some(mut n) = ep.ice_next.take() {
            self.by_ufrag.remove(&n.ufrag);
            let _ = n.agent.close();
        }
        if let Some(u) = &ep.retired_ufrag {
            self.by_ufrag.remove(u);
        }
        if let Some(c) = self.conferences.get_mut(&ep.conf) {
            let gone = ssrcs_of(&c.sources, ep.id);
            let removed = c.sources.remove_endpoint(ep.id);
            for k in &removed {
                c.silence.remove(k);
                c.video.remove(k);
                c.video_types.remove(k);
                c.sender_max.remove(k);
            }
            forget_unrouted(&c.sources, &mut c.keyframes, &mut c.fir_seq);
            c.speaker.remove_endpoint(ep.id);
            c.realloc = true;
            // The others stop sending the departed endpoint's streams: forget exactly those.
            for other in c.endpoints.values_mut() {
                retire_outbound(other, &gone);
                other.tx.retain(|ssrc, _| !removed.contains(ssrc));
                other.recv.projections.retain(|k, _| !removed.contains(k));
                other.rtx_cache.retain(|k, _| !removed.contains(k));
                other.rtx_enc.retain(|k, _| !removed.contains(k));
                sources_changed(other, &c.sources, &removed);
            }
        }
        let addr = ep.send_addr();
        if let (Some(d), Some(addr)) = (ep.dtls.as_mut(), addr) {
            d.close(now);
            while let Some(b) = d.poll_transmit() {
                self.io.send(addr, b);
            }
        }
        let _ = ep.ice.close();
        ep.expired = true;
    }

    /// Expire everything (close_notify to every connected endpoint).
    pub fn shutdown(&mut self, now: Instant) {
        let confs: Vec<ConferenceId> = self.conferences.keys().copied().collect();
        for c in confs {
            let _ = self.command(now, Command::ExpireConference { conf: c });
        }
        self.next_timeout = None;
    }

    /// Timers (see [`Shard::handle_timeout`], which runs this under a panic guard).
    fn timeout(&mut self, now: Instant) {
        let env = Env {
            config: &self.config,
            provider: &self.provider,
            cert: &self.cert,
        };
        let mut expired: Vec<(Key, ExpireReason)> = Vec::new();
        let ntp = ntp_time(self.clock, now);
        for (cid, c) in self.conferences.iter_mut() {
            self.in_conf = Some(*cid);
            self.armed.check(*cid, crate::control::FaultSite::Timer);
            if now >= c.next_tick {
                c.next_tick = now + CONFERENCE_TICK;
                conference_tick(now, c, &mut self.io);
                if c.channel_dirty {
                    // Bridge-channel output of the tick leaves now, not at each endpoint's
                    // next deadline.
                    c.channel_dirty = false;
                    for ep in c.endpoints.values_mut() {
                        flush_channel(now, ep, &mut self.io);
                    }
                }
            }
            let video_ssrc = c.video_ssrc;
            for (eid, ep) in c.endpoints.iter_mut() {
                if ep.deadline > now {
                    continue;
                }
                if ep.ice.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = ep.ice.handle_timeout(now);
                }
                if let Some(n) = ep.ice_next.as_mut() {
                    if n.agent.poll_timeout().is_some_and(|t| t <= now) {
                        let _ = n.agent.handle_timeout(now);
                    }
                }
                if let Some(mut n) = ep.ice_next.take_if(|n| n.agent.state() == ConnectionState::Failed) {
                    // The client never completed the restart: keep the old credentials.
                    tracing::warn!(parent: &ep.span, generation = n.generation, "ICE restart failed");
                    self.by_ufrag.remove(&n.ufrag);
                    let _ = n.agent.close();
                }
                let mut devs = Vec::new();
                if let Some(d) = ep.dtls.as_mut() {
                    if d.poll_timeout().is_some_and(|t| t <= now) {
                        d.handle_timeout(now, &mut devs);
                    }
                }
                on_dtls_events(now, ep, devs, &mut self.io);
                if let Some(sctp) = ep.sctp.as_mut() {
                    if sctp.poll_timeout().is_some_and(|t| t <= now) {
                        let mut chev = Vec::new();
                        sctp.handle_timeout(now, &mut chev);
                        on_channel_events(ep, chev, &mut self.io);
                    }
                }
                if ep.srtp.is_some() {
                    send_uplink_feedback(now, ep, video_ssrc, &mut self.io);
                    send_probing(now, ep, video_ssrc, &mut self.io);
                }
                if now >= ep.next_report {
                    let jitter = self.rng.random_range(900..1100);
                    ep.next_report = now + REPORT_INTERVAL * jitter / 1000;
                    send_reports(now, ep, video_ssrc, ntp, &mut self.io);
                }
                drive(now, ep, &env, &mut self.io, &mut self.by_addr);
                // An ICE restart in progress may still rescue an endpoint whose first agent
                // failed (the restart's own failure ends it, see above).
                if ep.ice.state() == ConnectionState::Failed && ep.ice_next.is_none() {
                    expired.push(((*cid, *eid), ExpireReason::IceFailed));
                } else if !ep.ice_connected && now >= ep.created + self.config.connect_timeout {
                    expired.push(((*cid, *eid), ExpireReason::NeverConnected));
                } else if now >= ep.last_activity + self.config.endpoint_timeout {
                    expired.push(((*cid, *eid), ExpireReason::Inactive));
                }
                deadline(ep, &self.config);
            }
        }
        for ((conf, ep), reason) in expired {
            self.in_conf = Some(conf);
            if let Some(e) = self.conferences.get_mut(&conf).and_then(|c| c.endpoints.remove(&ep)) {
                tracing::info!(parent: &e.span, ?reason, "endpoint expired");
                self.forget_endpoint(now, e);
                self.io.events.push_back(Event::EndpointExpired { conf, ep, reason });
            }
        }
        self.in_conf = None;
        self.next_timeout = self
            .conferences
            .values()
            .flat_map(|c| {
                c.endpoints
                    .values()
                    .map(|e| e.deadline)
                    .chain(std::iter::once(c.next_tick))
            })
            .min();
    }

    fn recompute_timeout(&mut self) {
        let mut t = None;
        for c in self.conferences.values_mut() {
            t = min_opt(t, Some(c.next_tick));
            for ep in c.endpoints.values_mut() {
                t = min_opt(t, Some(deadline(ep, &self.config)));
            }
        }
        self.next_timeout = t;
    }

    /// Give a sent datagram's buffer back, so the next forwarded packet reuses it instead of
    /// allocating. Buffers still shared elsewhere or too small are simply dropped.
    pub fn recycle(&mut self, mut data: BytesMut) {
        if self.io.pool.len() < POOL_MAX && data.capacity() >= BUF_CAPACITY {
            data.clear();
            self.io.pool.push(data);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.io.transmits.pop_front()?;
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.io.events.pop_front()
    }

    /// When [`Shard::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    pub fn stats(&self) -> Stats {
        let mut endpoints = 0;
        let mut connected = 0;
        for c in self.conferences.values() {
            endpoints += c.endpoints.len();
            connected += c.endpoints.values().filter(|e| e.srtp.is_some()).count();
        }
        let c = &self.io.c;
        Stats {
            conferences: self.conferences.len(),
            endpoints,
            endpoints_connected: connected,
            rtp_packets_received: c.rtp_rx,
            rtp_packets_sent: c.rtp_tx,
            rtcp_packets_received: c.rtcp_rx,
            rtcp_packets_sent: c.rtcp_tx,
            bytes_received: c.bytes_rx,
            bytes_sent: c.bytes_tx,
            dtls_failures: c.dtls_failures,
            dtls_fingerprint_mismatches: c.dtls_fingerprint_mismatches,
            ice_failures: c.ice_failures,
            ice_rebinds: c.ice_rebinds,
            keyframe_requests_forwarded: c.keyframe_forwarded,
            keyframe_requests_suppressed: c.keyframe_suppressed,
            nacks_sent: c.nacks_sent,
            retransmissions: c.retransmissions,
            channel_messages_received: c.channel_rx,
            channel_messages_sent: c.channel_tx,
            projection_drops: c.projection_drops,
            padding_packets_sent: c.padding_sent,
            drops: self.io.drops.iter().map(|(k, v)| (*k, *v)).collect(),
            task_panics: c.task_panics,
            endpoint_bwe: self
                .conferences
                .values()
                .flat_map(|c| c.endpoints.values())
                .map(|e| (e.name.clone(), receiver_bwe(e)))
                .collect(),
        }
    }

    /// Draw a receiver's SSRC pools (media.md §3.5): [`crate::receiver::SSRC_SLOTS`] video
    /// slots (primary and RTX) and as many audio slots, random, distinct, and distinct from
    /// every SSRC the conference already uses.
    fn slot_pools(&mut self, conf: ConferenceId) -> Box<SlotPools> {
        let n = crate::receiver::SSRC_SLOTS;
        let mut drawn: HashSet<u32> = HashSet::with_capacity(3 * n);
        let mut draw = |rng: &mut StdRng, confs: &crate::FastMap<ConferenceId, Conference>| loop {
            let x: u32 = rng.random();
            let taken = confs
                .get(&conf)
                .is_some_and(|c| c.video_ssrc == x || c.sources.route(x).is_some());
            if x != 0 && !taken && drawn.insert(x) {
                return x;
            }
        };
        let video: Vec<(u32, u32)> = (0..n)
            .map(|_| {
                (
                    draw(&mut self.rng, &self.conferences),
                    draw(&mut self.rng, &self.conferences),
                )
            })
            .collect();
        let audio: Vec<u32> = (0..n).map(|_| draw(&mut self.rng, &self.conferences)).collect();
        Box::new(SlotPools::new(&video, &audio))
    }

    fn random_ssrc(&mut self) -> u32 {
        loop {
            let s: u32 = self.rng.random();
            if s != 0 {
                return s;
            }
        }
    }

    /// `d` randomised to 0.8–1.2× (JVB's consent-freshness `randomize-interval`).
    fn jittered(&mut self, d: Duration) -> Duration {
        d * self.rng.random_range(800..1200) / 1000
    }
}

/// A receiver's view after the conference's sources changed: removed sources' slots are
/// freed silently (media.md §3.5) and its audio subscription names are resolved again.
fn sources_changed(r: &mut Endpoint, sources: &SourceTable, removed: &[SourceKey]) {
    if let Some(slots) = r.recv.slots.as_mut() {
        for k in removed {
            slots.release(*k);
        }
    }
    if r.recv.audio.has_names() {
        r.recv.audio.resolve(|n| audio_source_named(sources, n));
    }
}

/// The audio source called `name`.
fn audio_source_named(sources: &SourceTable, name: &str) -> Option<SourceKey> {
    sources
        .iter()
        .find(|s| s.kind == crate::control::MediaKind::Audio && s.name == name)
        .map(|s| s.key)
}

fn priority(type_pref: u32, index: usize) -> u32 {
    let local_pref = 65535u32.saturating_sub(index as u32);
    (type_pref << 24) | (local_pref << 8) | 255
}

/// Host candidate IPs: configured ones; else the bind address if specific; else every
/// non-loopback IPv4 address plus 127.0.0.1.
fn host_ips(config: &SfuConfig, local: SocketAddr) -> Vec<IpAddr> {
    if !config.host_addresses.is_empty() {
        return config.host_addresses.clone();
    }
    if !local.ip().is_unspecified() {
        return vec![local.ip()];
    }
    let mut ips: Vec<IpAddr> = rtc_shared::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    ips.sort();
    ips.dedup();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    ips
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The earliest instant this endpoint needs `handle_timeout`; also caches it in the endpoint
/// so `handle_timeout` can skip endpoints that are not due.
fn deadline(ep: &mut Endpoint, config: &SfuConfig) -> Instant {
    let mut t = ep.last_activity + config.endpoint_timeout;
    if !ep.ice_connected {
        t = t.min(ep.created + config.connect_timeout);
    }
    if let Some(i) = ep.ice.poll_timeout() {
        t = t.min(i);
    }
    if let Some(i) = ep.ice_next.as_mut().and_then(|n| n.agent.poll_timeout()) {
        t = t.min(i);
    }
    if let Some(d) = ep.dtls.as_ref().and_then(|d| d.poll_timeout()) {
        t = t.min(d);
    }
    if ep.srtp.is_some() {
        t = t.min(ep.next_report);
    }
    if let Some(x) = ep.sctp.as_ref().and_then(|s| s.poll_timeout()) {
        t = t.min(x);
    }
    if ep.srtp.is_some() {
        if let Some(x) = ep.twcc_rx.next_deadline() {
            t = t.min(x);
        }
        if let Some(x) = ep.remb_rx.next_deadline() {
            t = t.min(x);
        }
        if let Some(x) = ep.next_padding {
            t = t.min(x);
        }
        if ep.neg.transport_cc() {
            if let Some(x) = ep.prober.next_deadline() {
                t = t.min(x);
            }
        }
        for rx in ep.rx.values() {
            if let Some(x) = rx.nack.as_ref().and_then(|n| n.next_deadline()) {
                t = t.min(x);
            }
        }
    }
    ep.deadline = t;
    t
}

/// Transport-cc feedback and NACKs due toward `ep` as a sender.
fn send_uplink_feedback(now: Instant, ep: &mut Endpoint, bridge_ssrc: u32, io: &mut Io) {
    let (Some(dst), Some(srtp)) = (ep.send_addr(), ep.srtp.as_mut()) else {
        return;
    };
    let mut buf = [0u8; 1200];
    let media = Ssrc(ep.last_media_ssrc);
    if ep.twcc_rx.next_deadline().is_some_and(|t| t <= now) {
        while let Some(n) = ep.twcc_rx.poll_feedback(now, Ssrc(bridge_ssrc), media, &mut buf) {
            match srtp.protect_rtcp(&buf[..n]) {
                Ok(enc) => {
                    io.c.rtcp_tx += 1;
                    io.send(dst, enc);
                }
                Err(e) => io.drop(e.protect_drop_reason(true)),
            }
        }
    }
    if ep.remb_rx.next_deadline().is_some_and(|t| t <= now) {
        let remb = !ep.neg.transport_cc() && (0u8..128).any(|pt| ep.neg.pt(pt).is_some_and(|p| p.fb.remb));
        match remb
            .then(|| ep.remb_rx.poll_remb(now, Ssrc(bridge_ssrc), &mut buf))
            .flatten()
        {
            Some(n) => match srtp.protect_rtcp(&buf[..n]) {
                Ok(enc) => {
                    tracing::trace!(len = n, "REMB sent");
                    io.c.rtcp_tx += 1;
                    io.send(dst, enc);
                }
                Err(e) => io.drop(e.protect_drop_reason(true)),
            },
            None => ep.remb_rx.skip(now),
        }
    }
    for (ssrc, rx) in ep.rx.iter_mut() {
        let Some(nack) = rx.nack.as_mut() else { continue };
        if nack.next_deadline().is_none_or(|t| t > now) {
            continue;
        }
        while let Some(n) = nack.poll_nack(now, Ssrc(bridge_ssrc), Ssrc(*ssrc), &mut buf) {
            match srtp.protect_rtcp(&buf[..n]) {
                Ok(enc) => {
                    io.c.rtcp_tx += 1;
                    io.c.nacks_sent += 1;
                    io.send(dst, enc);
                }
                Err(e) => io.drop(e.protect_drop_reason(true)),
            }
        }
    }
}

/// NTP time (RFC 3550 §4) of `now`.
fn ntp_time(clock: ClockAnchor, now: Instant) -> u64 {
    let sys = match now.checked_duration_since(clock.instant) {
        Some(d) => clock.system + d,
        None => clock
            .system
            .checked_sub(clock.instant.duration_since(now))
            .unwrap_or(UNIX_EPOCH),
    };
    let d = sys.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A signalled remote UDP candidate, as the ICE agent takes it.
fn remote_host_candidate(addr: SocketAddr) -> Result<rtc_ice::candidate::Candidate, String> {
    rtc_ice::candidate::candidate_host::CandidateHostConfig {
        base_config: rtc_ice::candidate::CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(|e| e.to_string())
}

fn map_addr(
    by_addr: &mut crate::FastMap<SocketAddr, Key>,
    ep: &mut Endpoint,
    key: Key,
    addr: SocketAddr,
    replace: bool,
) {
    match by_addr.get(&addr) {
        Some(k) if *k == key => return,
        Some(_) if !replace => return,
        _ => {}
    }
    if !ep.demux_addrs.contains(&addr) {
        if ep.demux_addrs.len() >= MAX_DEMUX_ADDRS {
            // Full. An authenticated address (`replace`) takes the place of the oldest entry
            // that is neither validated nor the one media goes to, so an endpoint whose NAT
            // rebinds again and again (a roaming phone) stays reachable; otherwise give up.
            let send = ep.send_addr();
            let evict = ep
                .demux_addrs
                .iter()
                .position(|a| !ep.is_validated(*a) && Some(*a) != send)
                .filter(|_| replace);
            let Some(i) = evict else {
                return;
            };
            let gone = ep.demux_addrs.remove(i);
            if by_addr.get(&gone) == Some(&key) {
                by_addr.remove(&gone);
            }
        }
        ep.demux_addrs.push(addr);
    }
    by_addr.insert(addr, key);
}

/// Drain an endpoint's ICE and DTLS after any input: transmits, state changes, client
/// DTLS start.
fn drive(now: Instant, ep: &mut Endpoint, env: &Env<'_>, io: &mut Io, by_addr: &mut crate::FastMap<SocketAddr, Key>) {
    let key = (ep.conf, ep.id);
    // The agent of an ICE restart in progress: its checks, and their transaction ids so the
    // responses reach it (its events matter only once it took over).
    while let Some(t) = ep.ice_next.as_mut().and_then(|n| n.agent.poll_write()) {
        if let Some(n) = ep.ice_next.as_mut() {
            n.record_sent(&t.message);
        }
        let to = t.transport.peer_addr;
        map_addr(by_addr, ep, key, to, false);
        io.send(to, t.message);
    }
    while ep.ice_next.as_mut().and_then(|n| n.agent.poll_event()).is_some() {}
    while let Some(t) = ep.ice.poll_write() {
        let to = t.transport.peer_addr;
        // Responses to our checks come back from where we sent them.
        map_addr(by_addr, ep, key, to, false);
        io.send(to, t.message);
    }
    while let Some(ev) = ep.ice.poll_event() {
        match ev.event {
            rtc_ice::agent::Event::ConnectionStateChange(s) => {
                tracing::debug!(parent: &ep.span, state = ?s, "ice state");
                match s {
                    ConnectionState::Connected | ConnectionState::Completed => ep.ice_connected = true,
                    ConnectionState::Failed => {
                        io.c.ice_failures += 1;
                        tracing::warn!(parent: &ep.span, "ICE failed");
                        io.events.push_back(Event::IceFailed {
                            conf: ep.conf,
                            ep: ep.id,
                        });
                    }
                    _ => {}
                }
            }
            rtc_ice::agent::Event::SelectedCandidatePairChange(_, remote) => {
                let addr = remote.addr();
                let first = ep.selected.is_none();
                ep.selected = Some(addr);
                ep.ice_connected = true;
                ep.add_validated(addr, now);
                map_addr(by_addr, ep, key, addr, true);
                if first {
                    tracing::info!(parent: &ep.span, %addr, "ICE connected");
                    io.events.push_back(Event::IceConnected {
                        conf: ep.conf,
                        ep: ep.id,
                        remote: addr,
                    });
                } else {
                    tracing::debug!(parent: &ep.span, %addr, "ICE pair switched");
                }
            }
            _ => {}
        }
    }
    // Client role: start the handshake once ICE found a working address.
    let mut devs = Vec::new();
    if let Some(d) = ep.dtls.as_mut() {
        if d.role() == Role::Client && d.pinned().is_none() && !d.is_failed() {
            if let Some(addr) = ep.selected.or_else(|| ep.validated.first().map(|v| v.addr)) {
                let ctx = DtlsContext {
                    provider: env.provider,
                    cert: env.cert,
                    fingerprints: &ep.remote.fingerprints,
                    allowed: &env.config.srtp_profiles,
                    slots: &env.config.limits.dtls_handshakes,
                };
                d.connect(now, addr, &ctx, &mut devs);
            }
        }
    }
    on_dtls_events(now, ep, devs, io);
    flush_channel(now, ep, io);
}

/// Push queued SCTP output (bridge-channel messages) through DTLS onto the wire now, so a
/// message queued before a media packet is also sent before it.
fn flush_channel(now: Instant, ep: &mut Endpoint, io: &mut Io) {
    if let (Some(sctp), Some(d)) = (ep.sctp.as_mut(), ep.dtls.as_mut()) {
        while let Some(pkts) = sctp.poll_transmit(now) {
            for p in pkts {
                if !d.write(now, &p) {
                    io.drop("sctp_send_failed");
                }
            }
        }
    }
    if let Some(addr) = ep.send_addr() {
        if let Some(d) = ep.dtls.as_mut() {
            while let Some(b) = d.poll_transmit() {
                io.send(addr, b);
            }
        }
    }
}

fn handle_dtls(now: Instant, ep: &mut Endpoint, remote: SocketAddr, data: BytesMut, env: &Env<'_>, io: &mut Io) {
    let Some(slot) = ep.validated_slot(remote) else {
        return io.drop("not_ice_validated");
    };
    let Some(d) = ep.dtls.as_mut() else {
        return io.drop("dtls_before_transport");
    };
    let ctx = DtlsContext {
        provider: env.provider,
        cert: env.cert,
        fingerprints: &ep.remote.fingerprints,
        allowed: &env.config.srtp_profiles,
        slots: &env.config.limits.dtls_handshakes,
    };
    let mut devs = Vec::new();
    match d.handle_datagram(now, remote, data, &ctx, &mut devs) {
        Ok(()) => {
            ep.last_activity = now;
            ep.heard_at(slot, now);
        }
        Err(reason) => io.drop(reason.reason()),
    }
    on_dtls_events(now, ep, devs, io);
}

fn on_dtls_events(now: Instant, ep: &mut Endpoint, devs: Vec<DtlsEvent>, io: &mut Io) {
    for ev in devs {
        match ev {
            DtlsEvent::Connected { srtp, profile } => {
                tracing::info!(parent: &ep.span, ?profile, "DTLS connected");
                ep.srtp = Some(srtp);
                if ep.neg.transport_cc() {
                    // GoogleCc2's initial exponential probes (media.md §4.2).
                    ep.prober.on_estimate(ep.bwe.estimate_bps(), now);
                }
                io.events.push_back(Event::DtlsConnected {
                    conf: ep.conf,
                    ep: ep.id,
                });
                if ep.sctp_wanted && ep.sctp.is_none() {
                    let key = ep
                        .dtls
                        .as_ref()
                        .and_then(|d| d.pinned())
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9)));
                    ep.sctp = Some(Sctp::new(key));
                }
            }
            DtlsEvent::Failed(reason) => {
                tracing::warn!(parent: &ep.span, %reason, "DTLS failed");
                io.c.dtls_failures += 1;
                if ep.dtls.as_ref().is_some_and(|d| d.fingerprint_mismatched()) {
                    io.c.dtls_fingerprint_mismatches += 1;
                }
                io.events.push_back(Event::DtlsFailed {
                    conf: ep.conf,
                    ep: ep.id,
                    reason,
                });
            }
            DtlsEvent::Data(data) => match ep.sctp.as_mut() {
                Some(sctp) => {
                    let mut chev = Vec::new();
                    sctp.handle_data(now, data, &mut chev);
                    on_channel_events(ep, chev, io);
                }
                None => io.drop("sctp_not_enabled"),
            },
            DtlsEvent::Closed => {
                tracing::info!(parent: &ep.span, "DTLS closed by peer");
                ep.srtp = None;
            }
        }
    }
}

fn on_channel_events(ep: &mut Endpoint, chev: Vec<ChannelEvent>, io: &mut Io) {
    if let Some(sctp) = ep.sctp.as_mut() {
        for d in sctp.drops.drain(..) {
            io.drop(d);
        }
    }
    for ev in chev {
        match ev {
            ChannelEvent::Open => {
                ep.channel_open = true;
                // Processed with the conference at hand: the current state goes out first.
                ep.channel_in.push_front(String::new());
                io.events.push_back(Event::DataChannelOpen {
                    conf: ep.conf,
                    ep: ep.id,
                });
            }
            ChannelEvent::Text(text) => {
                if ep.channel_in.len() >= crate::receiver::CHANNEL_QUEUE {
                    io.drop("channel_queue_full");
                } else {
                    ep.ws_active = false;
                    ep.channel_in.push_back(text);
                }
            }
            ChannelEvent::Closed => {
                ep.channel_open = false;
                tracing::info!(parent: &ep.span, "data channel closed");
            }
        }
    }
}

/// The conference a command names.
fn conference_mut(
    confs: &mut crate::FastMap<ConferenceId, Conference>,
    conf: ConferenceId,
) -> Result<&mut Conference, CommandError> {
    confs.get_mut(&conf).ok_or(CommandError::ConferenceNotFound(conf))
}

/// The endpoint a command names, in the endpoints of conference `conf`.
fn endpoint_in(
    endpoints: &mut crate::FastMap<EndpointId, Endpoint>,
    conf: ConferenceId,
    ep: EndpointId,
) -> Result<&mut Endpoint, CommandError> {
    endpoints
        .get_mut(&ep)
        .ok_or(CommandError::EndpointNotFound { conf, ep })
}

/// Silence discard state of one audio source (media.md §6).
#[derive(Debug, Default)]
struct Silence {
    /// Consecutive packets with level 127.
    run: u32,
    /// Packets dropped so far: subtracted from every later sequence number.
    dropped: u16,
}

/// Forward at most this many silent packets in a row (JVB's `forwarded-silence-packets-limit`).
const SILENCE_FORWARD_LIMIT: u32 = 3;

#[allow(clippy::too_many_arguments)] // the hot path takes its pieces explicitly
fn handle_rtp(
    now: Instant,
    conf: &mut Conference,
    from: EndpointId,
    remote: SocketAddr,
    mut data: BytesMut,
    env: &Env<'_>,
    io: &mut Io,
    clock: ClockAnchor,
) {
    let Some(ep) = conf.endpoints.get_mut(&from) else {
        return io.drop("unknown_source");
    };
    let Some(slot) = ep.validated_slot(remote) else {
        return io.drop("not_ice_validated");
    };
    let Ok(h) = RtpHeader::parse(&data) else {
        return io.drop("malformed_rtp");
    };
    if ep.visitor {
        return io.drop("visitor_media");
    }
    let ssrc = h.ssrc().0;
    let route = match conf.sources.route(ssrc) {
        Some(r) if r.owner == from => Some(*r),
        Some(_) => return io.drop("foreign_ssrc"),
        None if ep.may_learn(env.config.limits.max_ssrcs_per_endpoint) => None,
        None => return io.drop("unknown_ssrc"),
    };
    let Some(srtp) = ep.srtp.as_mut() else {
        return io.drop("srtp_not_ready");
    };
    // Decrypted in the received buffer: no allocation on the receive side.
    if let Err(e) = srtp.unprotect_rtp_in_place(&mut data) {
        return io.drop(e.drop_reason(false));
    }
    io.c.rtp_rx += 1;
    ep.last_activity = now;
    ep.heard_at(slot, now);
    // The padding count was encrypted: parse again.
    let Ok(mut h) = RtpHeader::parse(&data) else {
        return io.drop("malformed_rtp");
    };
    // Every packet counts for the sender's bandwidth estimate, RTX and padding included.
    if ep.neg.ext.transport_cc != 0 {
        if let Some(tw) = h.transport_cc_seq(&data, ep.neg.ext.transport_cc) {
            ep.twcc_rx.record(tw, io.arrival.unwrap_or(now), h.marker());
        }
    } else {
        // No transport-cc: a receive-side estimate, sent as REMB if negotiated (§4.1).
        let ast = ep.neg.ext.abs_send_time;
        let send_time = (ast != 0).then(|| h.abs_send_time(&data, ast)).flatten();
        ep.remb_rx
            .on_packet(io.arrival.unwrap_or(now), ssrc, data.len(), send_time);
    }
    let route = match route {
        Some(r) => r,
        None => {
            let kind = ep.neg.pt(h.pt()).map_or(crate::control::MediaKind::Video, |p| p.kind);
            let Some(r) = conf.sources.learn(from, ssrc, kind) else {
                return io.drop("unknown_ssrc");
            };
            ep.learned += 1;
            r
        }
    };
    // RTX (RFC 4588): the original sequence number leads the payload.
    if route.rtx {
        let payload = h.payload_range();
        if payload.len() < 2 {
            return io.drop("rtx_padding");
        }
        let osn = u16::from_be_bytes([data[payload.start], data[payload.start + 1]]);
        let apt = ep.neg.pt(h.pt()).and_then(|p| p.apt).unwrap_or(h.pt());
        let Some(primary) = conf
            .sources
            .get(route.source)
            .and_then(|s| s.encodings.get(usize::from(route.encoding)))
            .map(|e| e.ssrc)
        else {
            return io.drop("unknown_ssrc");
        };
        // Move the header up over the OSN, then drop the two leading bytes.
        data.copy_within(0..payload.start, 2);
        let _ = data.split_to(2);
        let Ok(h2) = RtpHeader::parse(&data) else {
            return io.drop("malformed_rtp");
        };
        h = h2;
        h.set_seq(&mut data, osn);
        h.set_ssrc(&mut data, crate::id::Ssrc(primary));
        h.set_pt(&mut data, apt);
    }
    let ssrc = h.ssrc().0;
    let seq = h.seq();
    let arrival = now.saturating_duration_since(clock.instant).as_secs_f64();
    let rate = ep.neg.clock_rate(h.pt(), Some(route.kind));
    let rx = ep.rx.entry(ssrc).or_insert_with(|| RxStream::new(seq, rate));
    if !rx.seen.insert(seq) {
        return io.drop("duplicate_rtp");
    }
    rx.update(seq, h.timestamp(), arrival);
    if route.kind == crate::control::MediaKind::Video {
        rx.nack.get_or_insert_with(NackGenerator::new).on_packet(seq, now);
        ep.last_media_ssrc = ssrc;
    } else if ep.last_media_ssrc == 0 {
        ep.last_media_ssrc = ssrc;
    }
    if h.payload_range().is_empty() {
        // Padding-only (probing): counted, never forwarded.
        return io.drop("padding_only");
    }
    let sender_ext = ep.neg.ext;
    let codec = ep.neg.pt(h.pt()).map_or(Codec::Other, |p| p.codec);
    let is_video = route.kind == crate::control::MediaKind::Video;

    let mut out_seq = seq;
    let mut classified = None;
    let mut grew = false;
    if is_video && ep.force_mute_video {
        return io.drop("force_muted");
    }
    if !is_video {
        let level = h.audio_level(&data, sender_ext.audio_level);
        let silence = conf.silence.entry(route.source).or_default();
        if ep.force_mute_audio && level.is_some() {
            // Hidden from receivers like silence (media.md §6).
            silence.dropped = silence.dropped.wrapping_add(1);
            return io.drop("force_muted");
        }
        if let Some(l) = level {
            conf.speaker.level(now, from, l.level);
        }
        match level {
            Some(l) if l.level == 127 => {
                silence.run += 1;
                if silence.run > SILENCE_FORWARD_LIMIT {
                    silence.dropped = silence.dropped.wrapping_add(1);
                    return io.drop("audio_silence");
                }
            }
            Some(_) => silence.run = 0,
            None => {}
        }
        out_seq = seq.wrapping_sub(silence.dropped);
    } else {
        let sources = &conf.sources;
        let state = conf
            .video
            .entry(route.source)
            .or_insert_with(|| VideoState::new(sources.get(route.source).map_or(1, |s| s.encodings.len() as u8)));
        let dd_ext = match sender_ext.av1_dd {
            0 => None,
            id => h.extension(&data, id),
        };
        let payload = h.payload(&data);
        match video::classify(
            now,
            state,
            codec,
            route.encoding,
            seq,
            h.timestamp(),
            h.marker(),
            payload,
            dd_ext,
        ) {
            Ok(c) => classified = Some(c),
            Err(reason) => {
                io.drop(reason);
                // An AV1 stream without its structure needs a keyframe (as JVB).
                if reason == "av1_dd_unusable" {
                    request_keyframe(now, conf, BRIDGE, KeyframeRequest::Pli(ssrc), io);
                }
                return;
            }
        }
        if state.layering_changed {
            state.layering_changed = false;
            conf.realloc = true;
            // A larger keyframe (the sender raised its resolution) is judged against the new
            // heights before it is forwarded: a receiver whose height limit the encoding now
            // exceeds is moved off it at this packet (`cut_outgrown`), not after it.
            grew = state.grown != 0;
        }
    }
    if grew && sync_realloc_allowed(now, &mut conf.sync_allocs) {
        reallocate(now, conf, io);
    }

    let mut keyframe_wanted: Option<u8> = None;
    let payload_len = h.payload_range().len() as u32;
    let mut dd_buf = [0u8; 255];
    let keyframe_start = classified
        .as_ref()
        .is_some_and(|c| c.meta.keyframe && c.meta.start_of_frame);
    // Borrowed out for the source maps while the receivers are iterated; `mem::take` of a
    // String does not allocate. Put back after the loop.
    let from_name = conf
        .endpoints
        .get_mut(&from)
        .map(|e| std::mem::take(&mut e.name))
        .unwrap_or_default();
    let src_codec = conf.video.get(&route.source).and_then(|v| v.codec);
    for (rid, r) in conf.endpoints.iter_mut() {
        if *rid == from {
            continue;
        }
        let Some(dst) = r.send_addr() else { continue };
        if r.srtp.is_none() {
            continue;
        }
        if !is_video && !r.recv.audio.wants(route.source) {
            continue;
        }
        let mut out = OutHeader {
            ssrc: route.source,
            seq: out_seq,
            ts: h.timestamp(),
            marker: h.marker(),
            pt: h.pt(),
        };
        let mut rewrite = None;
        let mut dd_len = 0;
        if let Some(cl) = classified.as_ref() {
            let Some(p) = r.recv.projections.get_mut(&route.source) else {
                continue;
            };
            // A projection the allocation made before the source's first packet is Generic.
            if let Some(c) = src_codec {
                p.set_codec(c);
            }
            let verdict = p.on_packet(now, &cl.meta);
            if let Some(e) = p.needs_keyframe() {
                keyframe_wanted = Some(e);
            }
            let rw = match verdict {
                Verdict::Forward(rw) => rw,
                Verdict::Drop(_) => {
                    io.c.projection_drops += 1;
                    continue;
                }
            };
            out.seq = rw.seq;
            out.ts = rw.ts;
            out.marker = rw.marker;
            if let (Some(dd), Some(mask)) = (cl.dd.as_ref(), rw.active_decode_targets) {
                let mut d = dd.clone();
                d.active_decode_targets = Some(mask);
                let structure = conf.video.get(&route.source).and_then(|v| v.av1_structure.as_ref());
                dd_len = crate::codec::av1_dd::write(&d, structure, &mut dd_buf).unwrap_or(0);
            }
            rewrite = Some(rw);
        }
        if r.recv.slots.is_some() {
            // SSRC-rewriting mode (media.md §3.5): audio takes a slot on its first packet, the
            // map going out before it; video slots are assigned by the allocation.
            let mut mapped = r.recv.slots.as_mut().and_then(|s| {
                if is_video {
                    s.video.rewrite(route.source, out.seq, out.ts, keyframe_start)
                } else {
                    s.audio.rewrite(route.source, out.seq, out.ts, false)
                }
            });
            if mapped.is_none() && !is_video {
                // No slot yet (or a reordered packet from before it: `activate` then finds
                // the existing slot and nothing is announced).
                let assigned = r.recv.slots.as_mut().and_then(|s| s.audio.activate(route.source));
                if let Some(SlotAssignment::Assigned { ssrc, .. }) = assigned {
                    announce_audio_slot(
                        now,
                        r,
                        &conf.sources,
                        route.source,
                        ssrc,
                        &from_name,
                        &mut conf.scratch,
                        io,
                    );
                    mapped = r
                        .recv
                        .slots
                        .as_mut()
                        .and_then(|s| s.audio.rewrite(route.source, out.seq, out.ts, false));
                }
            }
            let Some((ssrc, seq, ts)) = mapped else {
                io.drop("ssrc_slot_unmapped");
                continue;
            };
            out.ssrc = ssrc;
            out.seq = seq;
            out.ts = ts;
            // TL0PICIDX and AV1 frame numbers continue on the slot across remaps (§3.5).
            if let (true, Some(s), Some(cl)) = (is_video, r.recv.slots.as_mut(), classified.as_ref()) {
                if let Some(rw) = rewrite.as_mut() {
                    rw.tl0picidx = rw.tl0picidx.map(|t| s.video.continue_tl0(route.source, t));
                }
                if let Some(dd) = cl.dd.as_ref() {
                    let frame = s.video.continue_frame(route.source, dd.frame_number);
                    if frame != dd.frame_number {
                        let mut d = dd.clone();
                        d.frame_number = frame;
                        if let Some(mask) = rewrite.and_then(|rw| rw.active_decode_targets) {
                            d.active_decode_targets = Some(mask);
                        }
                        let structure = conf.video.get(&route.source).and_then(|v| v.av1_structure.as_ref());
                        dd_len = crate::codec::av1_dd::write(&d, structure, &mut dd_buf).unwrap_or(0);
                    }
                }
            }
        }
        let mut buf = io.take_buf();
        let tcc = (r.neg.ext.transport_cc != 0).then(|| {
            let s = r.tcc_out;
            r.tcc_out = r.tcc_out.wrapping_add(1);
            s
        });
        let exts = OutExtensions {
            av1_dd: (dd_len > 0).then(|| &dd_buf[..dd_len]),
            transport_cc: tcc,
        };
        let Some(at) = egress::write_packet(&mut buf, &data, &h, &sender_ext, &r.neg.ext, out, exts) else {
            io.drop("egress_too_large");
            continue;
        };
        if let (Some(cl), Some(rw)) = (classified.as_ref(), rewrite) {
            if let (Some(pid), Some(tl0)) = (rw.picture_id, rw.tl0picidx) {
                let payload = &mut buf[at..];
                let ok = match (&cl.vp8, &cl.vp9) {
                    (Some(d), _) => crate::codec::vp8::rewrite(payload, d, pid, tl0).is_ok(),
                    (_, Some(d)) => crate::codec::vp9::rewrite(payload, d, pid, tl0).is_ok(),
                    _ => true,
                };
                if !ok {
                    io.drop("codec_rewrite_failed");
                }
            }
            // What was sent, for the receiver's NACKs (video only, media.md §5.2).
            r.rtx_cache
                .entry(out.ssrc)
                .or_insert_with(|| RtxCache::new(now))
                .insert(out.seq, &buf, now);
        }
        if let Some(t) = tcc {
            // Media sent during a probe cluster is part of it (as libwebrtc's pacer probes).
            match r.probe.as_mut() {
                Some(p) => {
                    p.on_sent(buf.len());
                    r.bwe.on_probe_sent(t, buf.len(), p.cluster.info(), now);
                }
                None => r.bwe.on_sent(t, buf.len(), now),
            }
        }
        let Some(srtp) = r.srtp.as_mut() else { continue };
        match srtp.protect_rtp_in_place(&mut buf) {
            Ok(()) => {
                io.c.rtp_tx += 1;
                r.padding.on_sent(buf.len());
                io.send(dst, buf);
                let tx = r.tx.entry(out.ssrc).or_insert(TxStream {
                    packets: 0,
                    octets: 0,
                    last_rtp_ts: out.ts,
                    last_sent: now,
                    clock_rate: rate,
                });
                tx.packets = tx.packets.wrapping_add(1);
                tx.octets = tx.octets.wrapping_add(payload_len);
                tx.last_rtp_ts = out.ts;
                tx.last_sent = now;
            }
            Err(e) => io.drop(e.protect_drop_reason(false)),
        }
    }
    if let Some(e) = conf.endpoints.get_mut(&from) {
        e.name = from_name;
    }
    if let Some(e) = keyframe_wanted {
        let media = conf
            .sources
            .get(route.source)
            .and_then(|s| s.encodings.get(usize::from(e)))
            .map(|x| x.ssrc);
        if let Some(media) = media {
            request_keyframe(now, conf, BRIDGE, KeyframeRequest::Pli(media), io);
        }
    }
}

/// Tell receiver `r` that audio source `key` (owned by `owner`) now comes on slot `ssrc`, and
/// push the message out before the media that follows (media.md §3.5). Only on assignment.
#[allow(clippy::too_many_arguments)] // called from the forwarding loop with split borrows
fn announce_audio_slot(
    now: Instant,
    r: &mut Endpoint,
    sources: &SourceTable,
    key: SourceKey,
    ssrc: u32,
    owner: &str,
    scratch: &mut String,
    io: &mut Io,
) {
    use crate::bridge_channel::{self as bc, AudioSourceMapping};
    let Some(info) = sources.get(key) else { return };
    let m = [AudioSourceMapping {
        source: &info.name,
        owner,
        ssrc,
        mid: None,
    }];
    if bc::write_audio_sources_map(scratch, &m).is_ok() {
        tracing::debug!(parent: &r.span, source = %info.name, ssrc, "audio slot assigned");
        channel_send(now, r, scratch, io);
        flush_channel(now, r, io);
    }
}

/// The requester id of keyframe requests the bridge makes itself (layer switches).
const BRIDGE: EndpointId = EndpointId(u32::MAX);

/// At most one keyframe request per media SSRC per [`KEYFRAME_MIN_INTERVAL`], across all
/// requesters (JVB's source-wide limit, media.md §5.3).
#[derive(Default)]
struct KeyframeLimiter {
    last: crate::FastMap<u32, Instant>,
}

impl KeyframeLimiter {
    fn allow(&self, media: u32, now: Instant) -> bool {
        self.last
            .get(&media)
            .is_none_or(|t| now.saturating_duration_since(*t) >= KEYFRAME_MIN_INTERVAL)
    }
    fn sent(&mut self, media: u32, now: Instant) {
        self.last.insert(media, now);
    }
}

/// Per-SSRC keyframe state (the limiter's last request, the FIR sequence number) is keyed by
/// every media SSRC of a source, simulcast layers included, not only by its key: once
/// sources are gone, keep only the SSRCs that still have a route (else each departed
/// simulcast sender would leave its layers' entries behind for the conference's lifetime).
/// Every SSRC (media and RTX, all encodings) of `owner`'s sources.
fn ssrcs_of(table: &SourceTable, owner: EndpointId) -> Vec<u32> {
    table
        .iter()
        .filter(|s| s.owner == owner)
        .flat_map(|s| s.encodings.iter().flat_map(|e| std::iter::once(e.ssrc).chain(e.rtx)))
        .collect()
}

/// `ep` will not be sent `gone` any more (their source left): prune their outbound SRTP
/// state. Nonce-safe whatever happens later: a pruned SSRC sent again resumes above its
/// highest index or is refused (`srtp/outbound.rs`, docs/security.md §6).
fn retire_outbound(ep: &mut Endpoint, gone: &[u32]) {
    if let Some(srtp) = ep.srtp.as_mut() {
        for ssrc in gone {
            srtp.retire_outbound_ssrc(*ssrc);
        }
    }
}

fn forget_unrouted(table: &SourceTable, keyframes: &mut KeyframeLimiter, fir_seq: &mut crate::FastMap<u32, u8>) {
    keyframes.last.retain(|ssrc, _| table.route(*ssrc).is_some());
    fir_seq.retain(|ssrc, _| table.route(*ssrc).is_some());
}

/// A keyframe request to route.
#[derive(Debug, Clone, Copy)]
enum KeyframeRequest {
    Pli(u32),
    Fir(u32),
}

fn handle_rtcp(
    now: Instant,
    conf: &mut Conference,
    from: EndpointId,
    remote: SocketAddr,
    mut data: BytesMut,
    io: &mut Io,
    clock: ClockAnchor,
) {
    let Some(ep) = conf.endpoints.get_mut(&from) else {
        return io.drop("unknown_source");
    };
    let Some(slot) = ep.validated_slot(remote) else {
        return io.drop("not_ice_validated");
    };
    let Some(srtp) = ep.srtp.as_mut() else {
        return io.drop("srtp_not_ready");
    };
    if let Err(e) = srtp.unprotect_rtcp_in_place(&mut data) {
        return io.drop(e.drop_reason(true));
    }
    let plain = data;
    io.c.rtcp_rx += 1;
    ep.last_activity = now;
    ep.heard_at(slot, now);
    // Keyframe requests are routed after the walk (they need the whole conference); a compound
    // packet carries a handful at most, the rest are dropped and counted.
    let mut requests = [None::<KeyframeRequest>; MAX_KEYFRAME_REQUESTS];
    let mut n_req = 0;
    let mut push = |r: KeyframeRequest, io: &mut Io| {
        if n_req < MAX_KEYFRAME_REQUESTS {
            requests[n_req] = Some(r);
            n_req += 1;
        } else {
            io.drop("keyframe_requests_excess");
        }
    };
    for item in RtcpCompound::new(&plain) {
        match item {
            Ok(RtcpPacket::SenderReport(sr)) => {
                if let Some(rx) = ep.rx.get_mut(&sr.ssrc.0) {
                    rx.on_sender_report(sr.info.ntp_time, now);
                }
            }
            Ok(RtcpPacket::ReceiverReport(rr)) => on_report_blocks(now, ep, rr.blocks, clock),
            Ok(RtcpPacket::Pli(p)) => match received_encoding_ssrc(ep, &conf.sources, p.media.0) {
                Some(media) => push(KeyframeRequest::Pli(media), io),
                None => io.drop("keyframe_not_received"),
            },
            Ok(RtcpPacket::Fir(f)) => {
                for e in f.entries {
                    match received_encoding_ssrc(ep, &conf.sources, e.ssrc.0) {
                        Some(media) => push(KeyframeRequest::Fir(media), io),
                        None => io.drop("keyframe_not_received"),
                    }
                }
            }
            Ok(RtcpPacket::Remb(r)) => ep.remb_bps = Some(r.bitrate),
            Ok(RtcpPacket::TransportCc(t)) => {
                ep.bwe.on_feedback(&t, now);
                ep.prober.on_estimate(ep.bwe.estimate_bps(), now);
                tracing::trace!(parent: &ep.span, estimate = ep.bwe.estimate_bps(), stats = ?ep.bwe.stats(), "transport-cc feedback");
            }
            Ok(RtcpPacket::Nack(n)) => {
                let media = n.media.0;
                // At most MAX_NACKED_PER_PACKET numbers served per NACK (robustness.md §2.2).
                let mut seqs = n.lost_seqs();
                for seq in seqs.by_ref().take(MAX_NACKED_PER_PACKET) {
                    retransmit(now, ep, &conf.sources, media, seq, io);
                }
                if seqs.next().is_some() {
                    io.drop("nack_too_many_seqs");
                }
            }
            Ok(_) => {}
            Err(_) => io.drop("malformed_rtcp"),
        }
    }
    for r in requests.into_iter().flatten() {
        request_keyframe(now, conf, from, r, io);
    }
}

/// [`current_encoding_ssrc`] for a keyframe request, or `None` when the requester is not being
/// sent that video source (robustness.md case 28: ignored and counted). An SSRC no source in
/// the conference has passes through, for the routing to count as `keyframe_unknown_ssrc`;
/// so does audio (no projection; a PLI for it costs the sender nothing).
fn received_encoding_ssrc(r: &Endpoint, sources: &SourceTable, media: u32) -> Option<u32> {
    let source = r.recv.slots.as_ref().and_then(|s| s.source_of(media)).unwrap_or(media);
    let video = sources
        .route(source)
        .is_some_and(|s| s.kind == crate::control::MediaKind::Video);
    let receives = r.recv.projections.get(&source).is_some_and(|p| p.target().is_some());
    if receives || !video {
        Some(current_encoding_ssrc(r, sources, media))
    } else {
        None
    }
}

/// The SSRC a receiver's keyframe request really concerns: the encoding its projection of
/// that source currently forwards (it only knows the source's primary SSRC, §3.5).
fn current_encoding_ssrc(r: &Endpoint, sources: &SourceTable, media: u32) -> u32 {
    // In SSRC-rewriting mode the receiver names slot SSRCs: map back to the source first.
    let media = r.recv.slots.as_ref().and_then(|s| s.source_of(media)).unwrap_or(media);
    r.recv
        .projections
        .get(&media)
        .and_then(|p| p.current_encoding())
        .and_then(|e| sources.get(media)?.encodings.get(usize::from(e)))
        .map_or(media, |e| e.ssrc)
}

/// RTT and loss from a receiver's report blocks about what we send it.
fn on_report_blocks(now: Instant, ep: &mut Endpoint, blocks: crate::wire::rtcp::ReportBlocks<'_>, clock: ClockAnchor) {
    let mid = (ntp_time(clock, now) >> 16) as u32;
    let mut rtt = None;
    let mut lost = 0u8;
    for b in blocks {
        if !ep.tx.contains_key(&b.ssrc.0) {
            continue;
        }
        lost = lost.max(b.fraction_lost);
        if b.lsr != 0 {
            let units = mid.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
            // Anything above a minute is a wrap or a bogus block.
            if units < 60 * 65536 {
                rtt = Some(Duration::from_micros(u64::from(units) * 1_000_000 / 65536));
            }
        }
    }
    ep.bwe.on_receiver_report(lost, rtt, now);
}

/// Sequence numbers served from one RTCP NACK; the rest of it is ignored (counted).
const MAX_NACKED_PER_PACKET: usize = 256;

/// Answer one NACKed sequence number from the receiver's cache (media.md §5.2): RTX when the
/// receiver negotiated it for this payload type and the source has an RTX SSRC, else plain.
fn retransmit(now: Instant, r: &mut Endpoint, sources: &SourceTable, media: u32, seq: u16, io: &mut Io) {
    let rtt = r.bwe.rtt();
    let Some(dst) = r.send_addr() else { return };
    let Some(cache) = r.rtx_cache.get_mut(&media) else {
        return io.drop("nack_unknown_ssrc");
    };
    let original = match cache.on_nack(seq, now, rtt) {
        crate::bwe::Resend::Send(b) => b,
        crate::bwe::Resend::TooSoon => return,
        crate::bwe::Resend::Miss => return io.drop("nack_cache_miss"),
        crate::bwe::Resend::OverBudget => return io.drop("nack_over_budget"),
    };
    let mut buf = io.take_buf();
    let pt = original.get(1).map_or(0, |b| b & 0x7F);
    // The cache is keyed by what was sent: a slot SSRC in rewriting mode, whose RTX SSRC is
    // the slot's own (media.md §3.5), else the source's primary SSRC and its FID partner.
    let rtx_ssrc = match r.recv.slots.as_ref() {
        Some(slots) => slots.video.rtx_of(media),
        None => sources.get(media).and_then(|s| s.encodings.first()).and_then(|e| e.rtx),
    };
    match (r.neg.rtx_pt(pt), rtx_ssrc) {
        (Some(rtx_pt), Some(rtx_ssrc)) => {
            let enc = r
                .rtx_enc
                .entry(media)
                .or_insert_with(|| crate::bwe::RtxEncoder::new(Ssrc(rtx_ssrc), rtx_pt));
            buf.resize(original.len() + 2 + egress::SRTP_TRAILER, 0);
            match enc.encapsulate(original, &mut buf) {
                Ok(n) => buf.truncate(n),
                Err(_) => return io.drop("rtx_encapsulate_failed"),
            }
        }
        _ => buf.extend_from_slice(original),
    }
    // A fresh transport-wide sequence number: the receiver's estimator sees a new packet.
    if r.neg.ext.transport_cc != 0 {
        if let Ok(h) = RtpHeader::parse(&buf) {
            let t = r.tcc_out;
            if h.set_transport_cc_seq(&mut buf, r.neg.ext.transport_cc, t).is_ok() {
                r.tcc_out = r.tcc_out.wrapping_add(1);
                r.bwe.on_sent(t, buf.len(), now);
            }
        }
    }
    let Some(srtp) = r.srtp.as_mut() else { return };
    match srtp.protect_rtp_in_place(&mut buf) {
        Ok(()) => {
            io.c.retransmissions += 1;
            r.padding.on_sent(buf.len());
            io.send(dst, buf);
        }
        Err(e) => io.drop(e.protect_drop_reason(false)),
    }
}

/// Padding-only packets per 15 ms tick at most (≈ 2.7 Mbps of padding at 255 bytes each).
const MAX_PADDING_PACKETS: usize = 20;
/// Bytes of padding per padding-only packet (RFC 3550: the count is one byte).
const PADDING_LEN: usize = 255;

/// Probe clusters and §4.3 padding toward `ep`: padding-only RTP packets on the bridge's video
/// SSRC, each with a transport-wide sequence number, so the receiver's feedback shows whether
/// the path has room for the layers it does not get yet.
fn send_probing(now: Instant, ep: &mut Endpoint, bridge_ssrc: u32, io: &mut Io) {
    if !ep.neg.transport_cc() {
        ep.next_padding = None;
        return;
    }
    if ep.prober.next_deadline().is_some_and(|t| t <= now) {
        ep.prober.handle_timeout(now);
    }
    if ep.probe.is_none() {
        if let Some(c) = ep.prober.poll_cluster() {
            ep.probe = Some(crate::bwe::ProbePacer::new(c, now));
            ep.next_padding = Some(now);
        }
    }
    let Some(at) = ep.next_padding else { return };
    if at > now {
        return;
    }
    let estimate = ep.bwe.estimate_bps();
    let bytes = ep
        .padding
        .padding_bytes(now, ep.recv.ideal_bps, ep.recv.target_bps, estimate);
    // A probe cluster is paced at its bitrate (ProbePacer), so its packets' send times spread.
    let probe_count = ep.probe.as_ref().map_or(0, |p| p.packets_due(now, PADDING_LEN + 20));
    let (Some(dst), Some(pt)) = (ep.send_addr(), ep.neg.padding_pt()) else {
        return;
    };
    let count = (probe_count + bytes.div_ceil(PADDING_LEN + 20)).min(MAX_PADDING_PACKETS);
    ep.pad_ts = ep.pad_ts.wrapping_add(3000);
    for i in 0..count {
        let probe_info = ep.probe.as_ref().filter(|_| i < probe_count).map(|p| p.cluster.info());
        let mut buf = io.take_buf();
        let tcc = ep.tcc_out;
        let tcc_bytes = tcc.to_be_bytes();
        let exts: [(u8, &[u8]); 1] = [(ep.neg.ext.transport_cc, &tcc_bytes)];
        let fields = crate::wire::rtp::RtpHeaderFields {
            marker: false,
            pt,
            seq: ep.pad_seq,
            timestamp: ep.pad_ts,
            ssrc: Ssrc(bridge_ssrc),
            csrcs: &[],
            extensions: &exts,
        };
        let mut head = [0u8; 32];
        let Ok(n) = fields.write_to(&mut head) else { return };
        head[0] |= 0x20; // P: the packet is all padding
        buf.extend_from_slice(&head[..n]);
        buf.resize(n + PADDING_LEN, 0);
        buf[n + PADDING_LEN - 1] = PADDING_LEN as u8;
        let len = buf.len();
        let Some(srtp) = ep.srtp.as_mut() else { return };
        if let Err(e) = srtp.protect_rtp_in_place(&mut buf) {
            io.drop(e.protect_drop_reason(false));
            return;
        }
        ep.tcc_out = ep.tcc_out.wrapping_add(1);
        ep.pad_seq = ep.pad_seq.wrapping_add(1);
        match probe_info {
            Some(info) => ep.bwe.on_probe_sent(tcc, len, info, now),
            None => ep.bwe.on_sent(tcc, len, now),
        }
        if let Some(p) = ep.probe.as_mut().filter(|_| probe_info.is_some()) {
            p.on_sent(len);
        }
        io.c.padding_sent += 1;
        ep.padding.on_sent(buf.len());
        io.send(dst, buf);
    }
    if ep.probe.is_some_and(|p| p.done()) {
        ep.probe = None;
    }
    let probe_next = ep
        .probe
        .and_then(|p| p.next_due(PADDING_LEN + 20))
        .map(|t| t.max(now + Duration::from_millis(1)));
    let pad_next =
        (ep.recv.ideal_bps > ep.recv.target_bps).then(|| ep.padding.next_deadline().unwrap_or(now + PADDING_PERIOD));
    ep.next_padding = match (probe_next, pad_next) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// Keyframe requests honoured per compound RTCP packet.
const MAX_KEYFRAME_REQUESTS: usize = 8;

/// Route a receiver's PLI/FIR to the sender of the media SSRC, as from the bridge, at most
/// once per [`KEYFRAME_MIN_INTERVAL`] per SSRC (media.md §5.3).
fn request_keyframe(now: Instant, conf: &mut Conference, requester: EndpointId, req: KeyframeRequest, io: &mut Io) {
    route_keyframe_request(now, conf, requester, req, false, io);
}

/// [`request_keyframe`]; `bypass_limit` sends it even within [`KEYFRAME_MIN_INTERVAL`] of the
/// last one (once per encoding cut, `reallocate`), still restarting the interval.
fn route_keyframe_request(
    now: Instant,
    conf: &mut Conference,
    requester: EndpointId,
    req: KeyframeRequest,
    bypass_limit: bool,
    io: &mut Io,
) {
    let media = match req {
        KeyframeRequest::Pli(s) | KeyframeRequest::Fir(s) => s,
    };
    let Some(owner) = conf.sources.route(media).map(|r| r.owner) else {
        return io.drop("keyframe_unknown_ssrc");
    };
    if owner == requester {
        return;
    }
    if !bypass_limit && !conf.keyframes.allow(media, now) {
        io.c.keyframe_suppressed += 1;
        tracing::trace!(media, ?requester, "keyframe request suppressed (rate limit)");
        return;
    }
    tracing::debug!(media, ?requester, "keyframe request");
    let Some(ep) = conf.endpoints.get_mut(&owner) else {
        return;
    };
    let (Some(dst), Some(srtp)) = (ep.send_addr(), ep.srtp.as_mut()) else {
        return;
    };
    let mut buf = [0u8; 20];
    let n = match req {
        KeyframeRequest::Pli(_) => rtcp::write_pli(&mut buf, Ssrc(conf.video_ssrc), Ssrc(media)),
        KeyframeRequest::Fir(_) => {
            let seq = conf.fir_seq.entry(media).or_insert(0);
            *seq = seq.wrapping_add(1);
            rtcp::write_fir(&mut buf, Ssrc(conf.video_ssrc), Ssrc(media), *seq)
        }
    };
    let Ok(n) = n else {
        return io.drop("rtcp_write_failed");
    };
    match srtp.protect_rtcp(&buf[..n]) {
        Ok(enc) => {
            conf.keyframes.sent(media, now);
            io.c.keyframe_forwarded += 1;
            io.c.rtcp_tx += 1;
            io.send(dst, enc);
        }
        Err(e) => io.drop(e.protect_drop_reason(true)),
    }
}

/// The bridge's RR (for what it receives from `ep`) and SRs (for what it sends to `ep`).
fn send_reports(now: Instant, ep: &mut Endpoint, bridge_ssrc: u32, ntp: u64, io: &mut Io) {
    let (Some(dst), Some(srtp)) = (ep.send_addr(), ep.srtp.as_mut()) else {
        return;
    };
    let mut buf = [0u8; 8 + 24 * 31];
    if !ep.rx.is_empty() {
        let blocks: Vec<_> = ep
            .rx
            .iter_mut()
            .take(31)
            .map(|(ssrc, s)| s.report(*ssrc, now))
            .collect();
        let n = rtcp::write_rr(&mut buf, Ssrc(bridge_ssrc), &blocks).unwrap_or(0);
        if n == 0 {
            io.drop("rtcp_write_failed");
        } else if let Ok(enc) = srtp.protect_rtcp(&buf[..n]) {
            io.c.rtcp_tx += 1;
            io.send(dst, enc);
        }
    }
    for (ssrc, tx) in ep.tx.iter() {
        let elapsed = now.saturating_duration_since(tx.last_sent).as_secs_f64();
        let rtp_ts = tx.last_rtp_ts.wrapping_add((elapsed * f64::from(tx.clock_rate)) as u32);
        let info = SenderInfo {
            ntp_time: ntp,
            rtp_time: rtp_ts,
            packet_count: tx.packets,
            octet_count: tx.octets,
        };
        let Ok(n) = rtcp::write_sr(&mut buf, Ssrc(*ssrc), &info, &[]) else {
            io.drop("rtcp_write_failed");
            continue;
        };
        if let Ok(enc) = srtp.protect_rtcp(&buf[..n]) {
            io.c.rtcp_tx += 1;
            io.send(dst, enc);
        }
    }
}

/// Queue a bridge-channel message to `ep` on its active channel: the websocket when it last
/// received a message there (or SCTP is not open), else the SCTP data channel (the caller
/// drives the endpoint afterwards). Without any channel it is dropped and counted.
fn channel_send(now: Instant, ep: &mut Endpoint, text: &str, io: &mut Io) {
    if ep.ws_open && (ep.ws_active || !ep.channel_open) {
        io.c.channel_tx += 1;
        io.events.push_back(Event::BridgeChannelSend {
            conf: ep.conf,
            ep: ep.id,
            text: text.to_owned(),
        });
        return;
    }
    match ep.sctp.as_mut() {
        Some(sctp) if ep.channel_open => {
            if sctp.send_text(now, text).is_err() {
                io.drop("channel_send_failed");
            } else {
                io.c.channel_tx += 1;
            }
        }
        _ => io.drop("channel_unavailable"),
    }
}

/// Handle the bridge-channel messages queued on `from` (media.md §2).
fn process_channel(now: Instant, conf: &mut Conference, from: EndpointId, io: &mut Io) {
    use crate::bridge_channel::{self as bc, Incoming};
    let Some(ep) = conf.endpoints.get_mut(&from) else {
        return;
    };
    let queued = std::mem::take(&mut ep.channel_in);
    let from_name = ep.name.clone();
    for text in queued {
        if text.is_empty() {
            // The channel just opened: the current state goes out (§2.1).
            channel_opened(now, conf, from, io);
            continue;
        }
        io.c.channel_rx += 1;
        let allowed = conf.endpoints.get_mut(&from).is_some_and(|e| e.recv.rate.allow(now));
        if !allowed {
            io.drop("channel_rate_limited");
            continue;
        }
        let msg = match bc::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(ep = %from_name, error = %e, "bridge-channel message refused");
                io.drop(channel_error_reason(&e));
                continue;
            }
        };
        match msg {
            Incoming::ClientHello => {
                let mut out = std::mem::take(&mut conf.scratch);
                if bc::write_server_hello(&mut out, Some(env!("CARGO_PKG_VERSION"))).is_ok() {
                    if let Some(ep) = conf.endpoints.get_mut(&from) {
                        channel_send(now, ep, &out, io);
                    }
                }
                conf.scratch = out;
            }
            Incoming::ReceiverVideoConstraints(c) => {
                let sources = &conf.sources;
                let Some(ep) = conf.endpoints.get_mut(&from) else {
                    return;
                };
                let changed = ep.recv.settings.apply(&c, &conf.alloc_cfg, |name| {
                    sources.iter().find(|s| s.name == name).map(|s| s.key)
                });
                if changed {
                    conf.realloc = true;
                }
            }
            Incoming::LastNChanged { last_n } => {
                let Some(ep) = conf.endpoints.get_mut(&from) else {
                    return;
                };
                if ep.recv.settings.set_last_n(last_n) {
                    conf.realloc = true;
                }
            }
            Incoming::EndpointMessage(m) => {
                let mut out = std::mem::take(&mut conf.scratch);
                if bc::write_endpoint_message(&mut out, &from_name, &m).is_ok() {
                    let broadcast = m.to.is_empty();
                    for (id, r) in conf.endpoints.iter_mut() {
                        if *id != from && (broadcast || r.name == m.to) {
                            channel_send(now, r, &out, io);
                        }
                    }
                    conf.channel_dirty = true;
                }
                conf.scratch = out;
            }
            Incoming::EndpointStats(st) => {
                let mut out = std::mem::take(&mut conf.scratch);
                if bc::write_endpoint_stats(&mut out, &from_name, &st).is_ok() {
                    for (id, r) in conf.endpoints.iter_mut() {
                        if *id != from {
                            channel_send(now, r, &out, io);
                        }
                    }
                    conf.channel_dirty = true;
                }
                conf.scratch = out;
            }
            Incoming::SourceVideoType {
                source_name,
                video_type,
                ..
            } => {
                let key = conf
                    .sources
                    .iter()
                    .find(|s| s.name == source_name && s.owner == from)
                    .map(|s| s.key);
                if let Some(key) = key {
                    if conf.video_types.insert(key, video_type) != Some(video_type) {
                        reannounce_video_slot(now, conf, key, io);
                    }
                    conf.realloc = true;
                }
            }
            Incoming::VideoType { video_type } => {
                let name = format!("{from_name}-v0");
                if let Some(s) = conf.sources.iter().find(|s| s.name == name && s.owner == from) {
                    conf.video_types.insert(s.key, video_type);
                    conf.realloc = true;
                }
            }
            Incoming::ReceiverAudioSubscription(sub) => {
                let sources = &conf.sources;
                let Some(ep) = conf.endpoints.get_mut(&from) else {
                    return;
                };
                tracing::debug!(parent: &ep.span, ?sub, "audio subscription");
                ep.recv.audio.set(sub, |n| audio_source_named(sources, n));
            }
            // Relay messages are accepted and not acted on (no relays yet).
            _ => io.c.channel_ignored += 1,
        }
    }
}

fn channel_error_reason(e: &crate::bridge_channel::ChannelError) -> &'static str {
    use crate::bridge_channel::ChannelError as E;
    match e {
        E::TooLarge { .. } => "channel_too_large",
        E::InvalidJson(..) => "channel_invalid_json",
        E::DuplicateKey { .. } => "channel_duplicate_key",
        E::UnknownClass(..) => "channel_unknown_class",
        _ => "channel_invalid_message",
    }
}

/// A receiver's channel opened: tell it what it is getting and who speaks (§2.1).
fn channel_opened(now: Instant, conf: &mut Conference, ep: EndpointId, io: &mut Io) {
    use crate::bridge_channel as bc;
    let names = |conf: &Conference, id: EndpointId| conf.endpoints.get(&id).map(|e| e.name.clone());
    let mut out = std::mem::take(&mut conf.scratch);
    if let Some(dominant) = conf.speaker.dominant().and_then(|d| names(conf, d)) {
        let previous: Vec<String> = conf
            .speaker
            .previous_speakers()
            .iter()
            .filter_map(|p| names(conf, *p))
            .collect();
        if bc::write_dominant_speaker(&mut out, &dominant, &previous, false).is_ok() {
            if let Some(r) = conf.endpoints.get_mut(&ep) {
                channel_send(now, r, &out, io);
            }
        }
    }
    // Re-announce what is forwarded (an empty list included) and our own sources' constraints.
    let fwd: Vec<String> = conf
        .endpoints
        .get(&ep)
        .and_then(|r| r.recv.announced.as_ref())
        .map(|keys| {
            keys.iter()
                .filter_map(|k| conf.sources.get(*k).map(|s| s.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    if bc::write_forwarded_sources(&mut out, &fwd).is_ok() {
        if let Some(r) = conf.endpoints.get_mut(&ep) {
            channel_send(now, r, &out, io);
        }
    }
    let own: Vec<(String, i32)> = conf
        .sources
        .iter()
        .filter(|s| s.owner == ep && s.kind == crate::control::MediaKind::Video)
        .filter_map(|s| conf.sender_max.get(&s.key).map(|h| (s.name.clone(), *h)))
        .collect();
    for (name, h) in own {
        if bc::write_sender_source_constraints(&mut out, &name, h).is_ok() {
            if let Some(r) = conf.endpoints.get_mut(&ep) {
                channel_send(now, r, &out, io);
            }
        }
    }
    // Every endpoint currently inactive (media.md §2.1 (c)).
    let inactive: Vec<String> = conf
        .endpoints
        .values()
        .filter(|e| e.inactive)
        .map(|e| e.name.clone())
        .collect();
    for name in inactive {
        if bc::write_connectivity_status(&mut out, &name, false).is_ok() {
            if let Some(r) = conf.endpoints.get_mut(&ep) {
                channel_send(now, r, &out, io);
            }
        }
    }
    conf.scratch = out;
    // SSRC-rewriting mode: the whole current map again.
    let mapped = conf
        .endpoints
        .get(&ep)
        .and_then(|r| r.recv.slots.as_ref())
        .map(|slots| {
            let v: Vec<(SourceKey, u32, Option<u32>)> = slots
                .video
                .slots()
                .filter_map(|s| Some((s.source?, s.ssrc, s.rtx)))
                .collect();
            let a: Vec<(SourceKey, u32, Option<u32>)> = slots
                .audio
                .slots()
                .filter_map(|s| Some((s.source?, s.ssrc, None)))
                .collect();
            (v, a)
        });
    if let Some((v, a)) = mapped {
        let v: Vec<MapEntry> = v.iter().filter_map(|(k, s, x)| map_entry(conf, *k, *s, *x)).collect();
        let a: Vec<MapEntry> = a.iter().filter_map(|(k, s, x)| map_entry(conf, *k, *s, *x)).collect();
        send_source_maps(now, conf, ep, &v, &a, io);
    }
    conf.channel_dirty = true;
}

/// A source's video type changed: receivers in SSRC-rewriting mode that have it on a slot get
/// its map entry again (the map carries `videoType`).
fn reannounce_video_slot(now: Instant, conf: &mut Conference, key: SourceKey, io: &mut Io) {
    let holders: Vec<(EndpointId, u32, Option<u32>)> = conf
        .endpoints
        .iter()
        .filter_map(|(id, e)| {
            let slots = e.recv.slots.as_ref()?;
            let ssrc = slots.video.ssrc_of(key)?;
            Some((*id, ssrc, slots.video.rtx_of(ssrc)))
        })
        .collect();
    for (rid, ssrc, rtx) in holders {
        if let Some(entry) = map_entry(conf, key, ssrc, rtx) {
            send_source_maps(now, conf, rid, &[entry], &[], io);
        }
    }
}

/// One entry of a source map, owned (built only when a slot assignment changes).
struct MapEntry {
    source: String,
    owner: String,
    ssrc: u32,
    rtx: Option<u32>,
    video_type: crate::bridge_channel::VideoType,
}

/// The video type a source is announced and allocated with: the bridge-channel one if the
/// owner sent one, else the signalled one.
fn source_video_type(
    video_types: &crate::FastMap<SourceKey, crate::bridge_channel::VideoType>,
    s: &crate::sources::SourceInfo,
) -> crate::bridge_channel::VideoType {
    use crate::bridge_channel::VideoType as V;
    video_types.get(&s.key).copied().unwrap_or(match s.video_type {
        Some(crate::control::VideoType::Desktop) => V::Desktop,
        _ => V::Camera,
    })
}

fn map_entry(conf: &Conference, key: SourceKey, ssrc: u32, rtx: Option<u32>) -> Option<MapEntry> {
    let info = conf.sources.get(key)?;
    Some(MapEntry {
        source: info.name.clone(),
        owner: conf
            .endpoints
            .get(&info.owner)
            .map(|e| e.name.clone())
            .unwrap_or_default(),
        ssrc,
        rtx,
        video_type: source_video_type(&conf.video_types, info),
    })
}

/// Send `VideoSourcesMap` / `AudioSourcesMap` with these entries to `rid` and push them onto
/// the wire at once, ahead of any media on the slots they name (media.md §3.5).
fn send_source_maps(
    now: Instant,
    conf: &mut Conference,
    rid: EndpointId,
    video: &[MapEntry],
    audio: &[MapEntry],
    io: &mut Io,
) {
    use crate::bridge_channel::{self as bc, AudioSourceMapping, VideoSourceMapping};
    if video.is_empty() && audio.is_empty() {
        return;
    }
    let mut out = std::mem::take(&mut conf.scratch);
    if let Some(r) = conf.endpoints.get_mut(&rid) {
        if !video.is_empty() {
            let m: Vec<VideoSourceMapping<'_>> = video
                .iter()
                .map(|e| VideoSourceMapping {
                    source: &e.source,
                    owner: &e.owner,
                    ssrc: e.ssrc,
                    rtx: e.rtx,
                    video_type: e.video_type,
                    mid: None,
                })
                .collect();
            if bc::write_video_sources_map(&mut out, &m).is_ok() {
                channel_send(now, r, &out, io);
            }
        }
        if !audio.is_empty() {
            let m: Vec<AudioSourceMapping<'_>> = audio
                .iter()
                .map(|e| AudioSourceMapping {
                    source: &e.source,
                    owner: &e.owner,
                    ssrc: e.ssrc,
                    mid: None,
                })
                .collect();
            if bc::write_audio_sources_map(&mut out, &m).is_ok() {
                channel_send(now, r, &out, io);
            }
        }
        flush_channel(now, r, io);
    }
    conf.scratch = out;
}

/// Connectivity (media.md §1.4, §2.4): tell everyone when an endpoint goes quiet or comes
/// back; and each receiver's downlink estimate every 10 s (`ConnectionStats`).
fn connectivity_and_stats(now: Instant, conf: &mut Conference, io: &mut Io) {
    use crate::bridge_channel as bc;
    let mut changes: Vec<(String, bool)> = Vec::new();
    for e in conf.endpoints.values_mut() {
        let inactive = e.is_inactive(now);
        if inactive != e.inactive {
            e.inactive = inactive;
            tracing::info!(parent: &e.span, active = !inactive, "connectivity status");
            changes.push((e.name.clone(), !inactive));
        }
    }
    let mut out = std::mem::take(&mut conf.scratch);
    for (name, active) in &changes {
        if bc::write_connectivity_status(&mut out, name, *active).is_ok() {
            for r in conf.endpoints.values_mut() {
                if r.channel_open || r.ws_open {
                    channel_send(now, r, &out, io);
                }
            }
        }
    }
    for e in conf.endpoints.values_mut() {
        if now < e.next_connection_stats {
            continue;
        }
        e.next_connection_stats = now + crate::endpoint::CONNECTION_STATS_INTERVAL;
        if !(e.channel_open || e.ws_open) {
            continue;
        }
        if let Some(bwe) = receiver_bwe(e) {
            if bc::write_connection_stats(&mut out, bwe).is_ok() {
                channel_send(now, e, &out, io);
                conf.channel_dirty = true;
            }
        }
    }
    if !changes.is_empty() {
        conf.channel_dirty = true;
    }
    conf.scratch = out;
}

/// The conference timer: dominant speaker decisions and allocation triggers.
fn conference_tick(now: Instant, conf: &mut Conference, io: &mut Io) {
    connectivity_and_stats(now, conf, io);
    if let Some(change) = conf.speaker.tick(now) {
        announce_dominant(now, conf, change.dominant, io);
        conf.realloc = true;
    }
    let bwe_moved = conf.endpoints.values().any(|e| {
        crate::allocation::bwe_changed(
            e.recv.alloc_bwe,
            receiver_bwe(e),
            crate::allocation::BWE_CHANGE_THRESHOLD,
        )
    });
    if conf.realloc || bwe_moved || now >= conf.last_alloc + MAX_TIME_BETWEEN_ALLOCATIONS {
        reallocate(now, conf, io);
    }
}

fn announce_dominant(now: Instant, conf: &mut Conference, dominant: EndpointId, io: &mut Io) {
    use crate::bridge_channel as bc;
    let Some(name) = conf.endpoints.get(&dominant).map(|e| e.name.clone()) else {
        return;
    };
    let previous: Vec<String> = conf
        .speaker
        .previous_speakers()
        .iter()
        .filter_map(|p| conf.endpoints.get(p).map(|e| e.name.clone()))
        .collect();
    let mut out = std::mem::take(&mut conf.scratch);
    if bc::write_dominant_speaker(&mut out, &name, &previous, false).is_ok() {
        for r in conf.endpoints.values_mut() {
            if r.channel_open || r.ws_open {
                channel_send(now, r, &out, io);
            }
        }
    }
    conf.scratch = out;
    tracing::debug!(parent: &conf.span, dominant = %name, "dominant speaker");
}

/// The estimate an allocation may trust for `ep` (media.md §3.2 `trustBwe`): transport-cc
/// negotiated (else REMB, else none = unlimited).
fn receiver_bwe(ep: &Endpoint) -> Option<u64> {
    if ep.neg.transport_cc() {
        Some(ep.bwe.estimate_bps())
    } else {
        ep.remb_bps
    }
}

/// Encodings of a source the allocator may choose from. An SVC stream (spatial layers in the
/// bitstream) travels in the first encoding only: lib-jitsi-meet still signals a three-SSRC SIM
/// group for VP9/AV1, but the other two SSRCs carry nothing, and offering their (empty, 0 bps)
/// layers let a collapsed estimate pick a layer that never arrives.
fn svc_encodings(encodings: u8, spatial: u8) -> u8 {
    if spatial > 1 {
        encodings.min(1)
    } else {
        encodings
    }
}

/// Run the allocator for every receiver and apply the result to its projections (§3.2).
fn reallocate(now: Instant, conf: &mut Conference, io: &mut Io) {
    use crate::allocation::{Layer as AllocLayer, Source as AllocSource};
    use crate::bridge_channel as bc;
    conf.realloc = false;
    conf.last_alloc = now;
    // Sources in speech order: the speaker order first, then the rest by endpoint id.
    let mut order: Vec<EndpointId> = conf.speaker.order().to_vec();
    let mut rest: Vec<EndpointId> = conf.endpoints.keys().filter(|e| !order.contains(e)).copied().collect();
    rest.sort_unstable();
    order.extend(rest);
    let mut sources: Vec<AllocSource<SourceKey>> = Vec::new();
    for owner in &order {
        let mut mine: Vec<&crate::sources::SourceInfo> = conf
            .sources
            .iter()
            .filter(|s| s.owner == *owner && s.kind == crate::control::MediaKind::Video)
            .collect();
        mine.sort_by_key(|s| s.key);
        for s in mine {
            let video_type = source_video_type(&conf.video_types, s);
            let state = conf
                .video
                .entry(s.key)
                .or_insert_with(|| VideoState::new(s.encodings.len() as u8));
            let (e_n, s_n, t_n) = state.layers.dimensions();
            let e_n = svc_encodings(e_n, s_n);
            let mut layers = Vec::with_capacity(usize::from(e_n) * usize::from(s_n) * usize::from(t_n));
            for e in 0..e_n {
                for sp in 0..s_n {
                    for t in 0..t_n {
                        let id = crate::bitrate::LayerId {
                            encoding: e,
                            spatial: sp,
                            temporal: t,
                        };
                        layers.push(AllocLayer {
                            id,
                            height: i32::from(state.height_of(id)),
                            fps: 30.0 / f64::from(1u32 << (t_n - 1 - t)),
                            bitrate_bps: state.layer_bitrate_bps(now, id),
                            active: state.layer_active(now, id),
                        });
                    }
                }
            }
            sources.push(AllocSource {
                name: s.key,
                owner: s.owner,
                video_type,
                layers,
            });
        }
    }
    let ids: Vec<EndpointId> = conf.endpoints.keys().copied().collect();
    let mut out = std::mem::take(&mut conf.scratch);
    // SSRC-rewriting mode: video slots (re)assigned by this allocation, and the encodings to
    // ask a keyframe of (a slot starts on one).
    let mut assigned: Vec<(EndpointId, SourceKey, u32, Option<u32>)> = Vec::new();
    let mut keyframes: Vec<u32> = Vec::new();
    // Encodings a projection was cut down to because the estimate collapsed: their keyframe is
    // asked for at once, past the rate limit (docs/bwe.md, "Downlink step").
    let mut urgent: Vec<u32> = Vec::new();
    for rid in ids {
        let Some(r) = conf.endpoints.get_mut(&rid) else {
            continue;
        };
        let prev_bwe = r.recv.alloc_bwe;
        let bwe = allocation_bwe(prev_bwe, receiver_bwe(r));
        r.recv.alloc_bwe = bwe;
        let input = AllocInput {
            receiver: rid,
            settings: &r.recv.settings,
            sources: &sources,
            bandwidth_bps: bwe,
        };
        let margin = up_switch_margin(now, r.recv.up_hold, bwe);
        let before: Vec<(SourceKey, Option<crate::bitrate::LayerId>)> =
            r.recv.alloc.sources.iter().map(|s| (s.source, s.target)).collect();
        conf.allocator
            .allocate_with_margin(&input, &conf.alloc_cfg, margin, &mut r.recv.alloc);
        if let (true, Some(b)) = (estimate_driven_down_switch(prev_bwe, bwe, &before, &r.recv.alloc), bwe) {
            r.recv.up_hold = Some((now + UP_SWITCH_HOLD, b));
            tracing::debug!(parent: &r.span, ?prev_bwe, ?bwe, "estimate-driven down-switch: up-switch hold");
        }
        let ideal: u64 = r.recv.alloc.sources.iter().map(|s| s.ideal_bps).sum();
        r.recv.target_bps = r.recv.alloc.target_bps();
        // Below the ideal, the demand (padding, probing) is what an up-switch needs, margin
        // included: padding and probes stop once the estimate covers the demand, and with the
        // bare ideal an estimate between it and the margin stayed there (no up-switch, nothing
        // to find more).
        r.recv.ideal_bps = if ideal > r.recv.target_bps {
            ideal.saturating_add((ideal as f64 * margin) as u64)
        } else {
            ideal
        };
        if r.neg.transport_cc() {
            r.prober.set_demand(r.recv.ideal_bps);
            if r.recv.ideal_bps > r.recv.target_bps && r.next_padding.is_none() {
                r.next_padding = Some(now);
            }
        }
        tracing::trace!(parent: &r.span, ?bwe, settings = ?r.recv.settings, sources = ?sources, alloc = ?r.recv.alloc, "allocation");
        for sa in &r.recv.alloc.sources {
            let target = sa.target.map(|l| {
                let state = conf.video.get(&sa.source);
                (l, projection_layer(l, state))
            });
            match (target, r.recv.projections.get_mut(&sa.source)) {
                (Some((l, t)), Some(p)) => {
                    let state = conf.video.get_mut(&sa.source);
                    if let Some(e) = cut_outgrown(p, t, state.as_deref(), &sa.effective) {
                        tracing::debug!(parent: &r.span, source = sa.source, to = e, "encoding outgrew the height limit: cut");
                        if let Some(media) = conf
                            .sources
                            .get(sa.source)
                            .and_then(|s| s.encodings.get(usize::from(e)))
                        {
                            urgent.push(media.ssrc);
                        }
                    } else if let Some(e) = apply_target(now, p, t, l, state, prev_bwe, bwe) {
                        tracing::debug!(parent: &r.span, source = sa.source, ?prev_bwe, ?bwe, to = e, "estimate collapsed: encoding cut");
                        // The link's queue is full of the cut encoding: let it drain for the
                        // lower keyframe. No retransmissions of what was sent before the cut
                        // (frames older than that keyframe), no padding for a while.
                        let out_ssrc = r
                            .recv
                            .slots
                            .as_ref()
                            .map_or(Some(sa.source), |s| s.video.ssrc_of(sa.source));
                        if let Some(c) = out_ssrc.and_then(|x| r.rtx_cache.get_mut(&x)) {
                            c.flush();
                        }
                        r.padding.hold_until(now + PADDING_HOLD_AFTER_CUT);
                        if let Some(media) = conf
                            .sources
                            .get(sa.source)
                            .and_then(|s| s.encodings.get(usize::from(e)))
                        {
                            urgent.push(media.ssrc);
                        }
                    }
                }
                (Some((_, t)), None) => {
                    let codec = conf
                        .video
                        .get(&sa.source)
                        .and_then(|v| v.codec)
                        .unwrap_or(crate::projection::Codec::Generic);
                    let mut p = crate::projection::Projection::new(sa.source, codec, 1, 1);
                    p.set_target(Some(t));
                    r.recv.projections.insert(sa.source, p);
                }
                (None, Some(p)) => p.set_target(None),
                (None, None) => {}
            }
        }
        // Projections of sources no longer allocated at all are suspended.
        for (k, p) in r.recv.projections.iter_mut() {
            if r.recv.alloc.get(*k).is_none() {
                p.set_target(None);
            }
        }
        // A source needs a slot once its effective constraints are non-zero (media.md §3.5).
        // Lowest priority first: the top sources end up most recently used.
        if let Some(slots) = r.recv.slots.as_mut() {
            for sa in r.recv.alloc.sources.iter().rev() {
                if sa.effective.is_disabled() {
                    continue;
                }
                if let Some(SlotAssignment::Assigned { ssrc, evicted, .. }) = slots.video.activate(sa.source) {
                    let source = sa.source;
                    tracing::debug!(receiver = rid.0, source, ssrc, ?evicted, "video slot assigned");
                    assigned.push((rid, sa.source, ssrc, slots.video.rtx_of(ssrc)));
                    if let Some(media) = sa
                        .target
                        .and_then(|t| conf.sources.get(sa.source)?.encodings.get(usize::from(t.encoding)))
                    {
                        keyframes.push(media.ssrc);
                    }
                }
            }
        }
        let fwd = &r.recv.alloc.forwarded;
        if r.recv.announced.as_ref() != Some(fwd) {
            r.recv.announced = Some(fwd.clone());
            let names: Vec<&str> = fwd
                .iter()
                .filter_map(|k| conf.sources.get(*k).map(|s| s.name.as_str()))
                .collect();
            if (r.channel_open || r.ws_open) && bc::write_forwarded_sources(&mut out, &names).is_ok() {
                channel_send(now, r, &out, io);
            }
        }
    }
    // What each sender needs to send: the largest height any receiver gets (§2.4).
    for src in &sources {
        let max = crate::allocation::sender_constraints(src.name, conf.endpoints.values().map(|e| &e.recv.alloc));
        if conf.sender_max.get(&src.name) == Some(&max) {
            continue;
        }
        conf.sender_max.insert(src.name, max);
        let Some(info) = conf.sources.get(src.name) else {
            continue;
        };
        if let Some(owner) = conf.endpoints.get_mut(&info.owner) {
            if (owner.channel_open || owner.ws_open)
                && bc::write_sender_source_constraints(&mut out, &info.name, max).is_ok()
            {
                channel_send(now, owner, &out, io);
            }
        }
    }
    for v in conf.video.values_mut() {
        v.take_grown();
    }
    conf.scratch = out;
    // The maps go out before any media on the new slots (which wait for a keyframe).
    let mut i = 0;
    while i < assigned.len() {
        let rid = assigned[i].0;
        let n = assigned[i..].iter().take_while(|a| a.0 == rid).count();
        let entries: Vec<MapEntry> = assigned[i..i + n]
            .iter()
            .filter_map(|(_, k, s, x)| map_entry(conf, *k, *s, *x))
            .collect();
        send_source_maps(now, conf, rid, &entries, &[], io);
        i += n;
    }
    for media in keyframes {
        request_keyframe(now, conf, BRIDGE, KeyframeRequest::Pli(media), io);
    }
    urgent.sort_unstable();
    urgent.dedup();
    for media in urgent {
        route_keyframe_request(now, conf, BRIDGE, KeyframeRequest::Pli(media), true, io);
    }
    conf.channel_dirty = true;
}

/// When the encoding projection `p` forwards is above the allocated layer `t` because its
/// height grew past the receiver's limit (`effective`; the sender raised its resolution:
/// Chrome's CPU and bandwidth adaptation scale every simulcast encoding, so an encoding chosen
/// as "≤ 180p" at a quarter of the input size sends 720p once the input is back), stops it at
/// once: its new, larger keyframe is not forwarded, and the projection waits for a keyframe of
/// the allocated encoding (JVB keeps forwarding it until that keyframe arrives). Returns the
/// encoding whose keyframe is to be asked for at once.
fn cut_outgrown(
    p: &mut crate::projection::Projection,
    t: crate::projection::Layer,
    state: Option<&VideoState>,
    effective: &crate::bridge_channel::VideoConstraints,
) -> Option<u8> {
    let state = state?;
    let c = p.current_encoding().filter(|c| *c > t.encoding)?;
    let height = state.height_of(crate::bitrate::LayerId {
        encoding: c,
        spatial: 0,
        temporal: 0,
    });
    let outgrew = state.encoding_grew(c) && effective.height_is_limited() && i32::from(height) > effective.max_height;
    (outgrew && p.cut_to_target(t)).then_some(t.encoding)
}

/// Gives projection `p` the allocated layer `t` (`l` as the allocator chose it). When the
/// allocation lowered the encoding because the estimate collapsed ([`estimate_collapsed`], judged
/// with the bitrate of the current encoding's base layer), the current encoding is cut at once
/// and the projection goes down to the allocated encoding if that layer takes at most half the
/// new estimate, else to the lowest active encoding (the smallest keyframe into a link whose
/// queue is still full); the next allocation raises it again as a normal up-switch, which keeps
/// the lower encoding flowing until the higher keyframe arrives. Returns the encoding cut to,
/// whose keyframe is to be asked for at once.
fn apply_target(
    now: Instant,
    p: &mut crate::projection::Projection,
    t: crate::projection::Layer,
    l: crate::bitrate::LayerId,
    mut state: Option<&mut VideoState>,
    prev_bwe: Option<u64>,
    bwe: Option<u64>,
) -> Option<u8> {
    use crate::bitrate::LayerId;
    let base = |encoding: u8| LayerId {
        encoding,
        spatial: 0,
        temporal: 0,
    };
    let cur = p.current_encoding().filter(|c| *c > t.encoding);
    let collapsed = cur.is_some_and(|c| {
        let base_bps = state.as_deref_mut().map_or(0, |v| v.layer_bitrate_bps(now, base(c)));
        estimate_collapsed(prev_bwe, bwe, base_bps)
    });
    if !collapsed {
        p.set_target(Some(t));
        return None;
    }
    // The allocated layer when it leaves half the new estimate for the keyframe burst into a
    // full queue, else the lowest active encoding.
    let roomy = bwe.is_some_and(|b| {
        state
            .as_deref_mut()
            .is_some_and(|v| v.layer_bitrate_bps(now, l).saturating_mul(2) <= b)
    });
    let lowest = if roomy {
        l.encoding
    } else {
        (0..=l.encoding)
            .find(|e| state.as_deref_mut().is_some_and(|v| v.layer_active(now, base(*e))))
            .unwrap_or(l.encoding)
    };
    let floor = projection_layer(LayerId { encoding: lowest, ..l }, state.as_deref());
    p.cut_to_target(floor).then_some(lowest)
}

/// A keyframe that raised a layer's height reallocates at once (see `handle_rtp`), at most
/// [`SYNC_REALLOCS`] times per [`SYNC_REALLOC_WINDOW`] per conference; beyond that the next
/// conference tick does it. A resolution change of a three-encoding sender takes three (one
/// keyframe per encoding, within milliseconds); the cap bounds what a sender alternating
/// keyframe sizes can make the shard spend on allocations.
const SYNC_REALLOC_WINDOW: Duration = Duration::from_secs(1);
const SYNC_REALLOCS: u8 = 6;

/// Whether a grown keyframe may reallocate at once; `window`: (start, count) of the current
/// window, updated.
fn sync_realloc_allowed(now: Instant, window: &mut (Instant, u8)) -> bool {
    if now >= window.0 + SYNC_REALLOC_WINDOW {
        *window = (now, 0);
    }
    if window.1 >= SYNC_REALLOCS {
        return false;
    }
    window.1 += 1;
    true
}

/// Up-switch hysteresis (docs/bwe.md, "Downlink step"; JVB has none): a layer above a source's
/// previous target is only allocated when the estimate exceeds its bitrate by this fraction.
const UP_SWITCH_MARGIN: f64 = 0.15;
/// The margin for this long after an estimate-driven down-switch.
const UP_SWITCH_HOLD: Duration = Duration::from_secs(10);
/// The margin during [`UP_SWITCH_HOLD`]: only a clearly larger estimate (a probe that found
/// the capacity back) raises a layer again.
const UP_SWITCH_HOLD_MARGIN: f64 = 0.5;

/// The hold ends early once the estimate reaches this multiple of the one it started with (the
/// capacity came back: a step up must not wait for the hold).
const UP_SWITCH_HOLD_RELEASE: f64 = 1.5;

/// The up-switch margin for an allocation at `now` with estimate `bwe`; `hold`: until when an
/// up-switch hold runs and the estimate it started with.
fn up_switch_margin(now: Instant, hold: Option<(Instant, u64)>, bwe: Option<u64>) -> f64 {
    let held = hold
        .is_some_and(|(until, at)| now < until && bwe.is_none_or(|b| (b as f64) < at as f64 * UP_SWITCH_HOLD_RELEASE));
    if held {
        UP_SWITCH_HOLD_MARGIN
    } else {
        UP_SWITCH_MARGIN
    }
}

/// The estimate an allocation uses (after JVB `BandwidthAllocator.bandwidthChanged`): a rise
/// is taken only when it exceeds [`crate::allocation::BWE_CHANGE_THRESHOLD`] over the one the
/// previous allocation used; a fall is always taken (down-switches stay immediate; JVB also
/// waits for a 15 % fall, which kept 360p on a 0.6 Mbit/s link while the estimate sank slowly).
/// Re-allocations for other reasons (the 1 s period, another receiver's estimate, speakers)
/// must not pick up small rises: each one re-decided the layer against a noisy estimate
/// (180p ↔ 360p every second).
fn allocation_bwe(prev: Option<u64>, current: Option<u64>) -> Option<u64> {
    match (prev, current) {
        (Some(p), Some(c)) if c < p => current,
        _ if crate::allocation::bwe_changed(prev, current, crate::allocation::BWE_CHANGE_THRESHOLD) => current,
        _ => prev,
    }
}

/// Whether an allocation with estimate `bwe` (previous allocation: `prev_bwe`, targets
/// `before`) lowered a source's layer while the estimate fell.
fn estimate_driven_down_switch<K: Copy + Eq>(
    prev_bwe: Option<u64>,
    bwe: Option<u64>,
    before: &[(K, Option<crate::bitrate::LayerId>)],
    after: &crate::allocation::Allocation<K>,
) -> bool {
    let fell = matches!((prev_bwe, bwe), (Some(p), Some(n)) if n < p);
    let key = |l: crate::bitrate::LayerId| (l.encoding, l.spatial, l.temporal);
    fell && before.iter().any(|(k, old)| {
        let new = after.get(*k).and_then(|a| a.target);
        match (old, new) {
            (Some(o), Some(n)) => key(n) < key(*o),
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// No padding toward a receiver for this long after an encoding cut (docs/bwe.md, "Downlink
/// step"): the link's queue drains for the lower encoding's keyframe.
const PADDING_HOLD_AFTER_CUT: Duration = Duration::from_secs(1);

/// Whether a receiver's estimate fell from `prev` to `now` so far that a downscale must not
/// wait for the lower encoding's keyframe while forwarding the current one (docs/bwe.md,
/// "Downlink step"): it fell, and either by more than half or below `base_bps`, the bitrate of
/// the current encoding's base layer (what a pending downscale keeps forwarding). Without an
/// estimate before and after (no transport-cc / REMB) nothing collapsed.
fn estimate_collapsed(prev: Option<u64>, now: Option<u64>, base_bps: u64) -> bool {
    match (prev, now) {
        (Some(p), Some(n)) => n < p && (n < p / 2 || base_bps > n),
        _ => false,
    }
}

/// The projection's view of an allocated layer (AV1: with its decode target). The active mask
/// holds the decode targets contained in the chosen one — every frame present in them is
/// present in it — judged from the templates' DTIs, not from layer ids: in K-SVC structures
/// (L3T3_KEY) the upper spatial targets do not contain the lower ones.
fn projection_layer(l: crate::bitrate::LayerId, state: Option<&VideoState>) -> crate::projection::Layer {
    use crate::codec::av1_dd::Dti;
    let decode_target = state.and_then(|v| v.av1_structure.as_ref()).and_then(|s| {
        let dt = s.decode_target_for(l.spatial, l.temporal)?;
        let present =
            |t: &crate::codec::av1_dd::FrameTemplate, i: usize| t.dtis.get(i).is_some_and(|d| *d != Dti::NotPresent);
        let mut mask = 0u32;
        for i in 0..usize::from(s.decode_target_count).min(32) {
            if s.templates.iter().all(|t| !present(t, i) || present(t, dt)) {
                mask |= 1 << i;
            }
        }
        Some(crate::projection::DecodeTarget {
            index: dt as u8,
            active_mask: mask,
        })
    });
    crate::projection::Layer {
        encoding: l.encoding,
        spatial: l.spatial,
        temporal: l.temporal,
        decode_target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{MediaKind, SourceDescription};

    pub(super) fn shard(config: SfuConfig) -> (Shard, Instant) {
        let now = Instant::now();
        let clock = ClockAnchor {
            instant: now,
            system: SystemTime::now(),
        };
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        (Shard::new(config, local, clock).expect("shard"), now)
    }

    pub(super) fn create(s: &mut Shard, now: Instant, conf: u32, ep: u32) -> Result<Reply, CommandError> {
        s.handle_command(
            now,
            Command::CreateEndpoint {
                conf: ConferenceId(conf),
                ep: EndpointId(ep),
                ice_controlling: true,
                sctp: false,
                visitor: false,
                name: format!("ep{ep}"),
                ssrc_rewriting: false,
            },
        )
    }

    fn stun_request(username: &str) -> BytesMut {
        test_support::stun_binding(username, 1)
    }

    pub(super) fn drops(s: &Shard, reason: &str) -> u64 {
        s.stats()
            .drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// SSRCs are learned from traffic only until sources are first signalled; after that
    /// the signalled set is authoritative, and an empty set (colibri2 `<sources/>`, which
    /// is replace-all) accepts nothing.
    #[test]
    fn learning_stops_once_sources_are_signalled() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(matches!(create(&mut s, now, 1, 1), Ok(Reply::EndpointCreated(_))));
        let cap = SfuConfig::default().limits.max_ssrcs_per_endpoint;
        fn ep(s: &Shard) -> &Endpoint {
            &s.conferences[&ConferenceId(1)].endpoints[&EndpointId(1)]
        }
        let known = |s: &Shard, ssrc: u32| s.conferences[&ConferenceId(1)].sources.route(ssrc).is_some();
        assert!(!known(&s, 7) && ep(&s).may_learn(cap), "never signalled: learns");
        let set = |s: &mut Shard, ssrcs: Vec<u32>| {
            let sources = ssrcs
                .into_iter()
                .map(|x| SourceDescription {
                    kind: MediaKind::Audio,
                    name: format!("x-a{x}"),
                    ssrcs: vec![Ssrc(x)],
                    groups: vec![],
                    video_type: None,
                })
                .collect();
            s.handle_command(
                now,
                Command::SetSources {
                    conf: c,
                    ep: EndpointId(1),
                    sources,
                },
            )
        };
        assert_eq!(set(&mut s, vec![7]), Ok(Reply::Done));
        assert!(known(&s, 7) && !known(&s, 8) && !ep(&s).may_learn(cap));
        assert_eq!(set(&mut s, vec![]), Ok(Reply::Done));
        assert!(!known(&s, 7), "an empty set removes the SSRC");
        assert!(!ep(&s).may_learn(cap), "an empty set is not 'unsignalled'");
    }

    pub(super) fn audio_source(owner: &str, ssrc: u32) -> SourceDescription {
        SourceDescription {
            kind: MediaKind::Audio,
            name: format!("{owner}-a0"),
            ssrcs: vec![Ssrc(ssrc)],
            groups: vec![],
            video_type: None,
        }
    }

    fn create_rewriting(s: &mut Shard, now: Instant, conf: u32, ep: u32) {
        let r = s.handle_command(
            now,
            Command::CreateEndpoint {
                conf: ConferenceId(conf),
                ep: EndpointId(ep),
                ice_controlling: true,
                sctp: true,
                visitor: false,
                name: format!("ep{ep}"),
                ssrc_rewriting: true,
            },
        );
        assert!(matches!(r, Ok(Reply::EndpointCreated(_))), "{r:?}");
    }

    /// A receiver with the capability gets 50 video (primary + RTX) and 50 audio slot SSRCs,
    /// all distinct and none already used in the conference; one without it gets none.
    #[test]
    fn rewriting_receiver_gets_distinct_slot_ssrcs() {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(5),
            ..SfuConfig::default()
        });
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        let set = Command::SetSources {
            conf: c,
            ep: EndpointId(1),
            sources: vec![audio_source("ep1", 0x1234)],
        };
        assert_eq!(s.handle_command(now, set), Ok(Reply::Done));
        create_rewriting(&mut s, now, 1, 2);
        let conf = &s.conferences[&c];
        assert!(conf.endpoints[&EndpointId(1)].recv.slots.is_none());
        let slots = conf.endpoints[&EndpointId(2)].recv.slots.as_ref().expect("slot pools");
        assert_eq!(slots.video.len(), crate::receiver::SSRC_SLOTS);
        assert_eq!(slots.audio.len(), crate::receiver::SSRC_SLOTS);
        let mut all: Vec<u32> = slots
            .video
            .slots()
            .flat_map(|v| [Some(v.ssrc), v.rtx])
            .chain(slots.audio.slots().map(|a| Some(a.ssrc)))
            .map(|x| x.expect("every video slot has an RTX SSRC"))
            .collect();
        assert!(!all.contains(&0x1234) && !all.contains(&conf.video_ssrc) && !all.contains(&0));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3 * crate::receiver::SSRC_SLOTS);
    }

    /// `ReceiverAudioSubscription` sets the receiver's filter; a source named before it is
    /// signalled is resolved when it is; a departed owner's slots are freed.
    #[test]
    fn audio_subscription_and_slot_release_follow_the_sources() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        create_rewriting(&mut s, now, 1, 2);
        let set1 = |ssrcs: Vec<SourceDescription>| Command::SetSources {
            conf: c,
            ep: EndpointId(1),
            sources: ssrcs,
        };
        assert_eq!(
            s.handle_command(now, set1(vec![audio_source("ep1", 11)])),
            Ok(Reply::Done)
        );
        let msg = Command::BridgeChannelMessage {
            conf: c,
            ep: EndpointId(2),
            text: r#"{"colibriClass":"ReceiverAudioSubscription","mode":"Include","list":["ep3-a0"]}"#.into(),
        };
        assert_eq!(s.handle_command(now, msg), Ok(Reply::Done));
        let rx = |s: &Shard| -> bool { s.conferences[&c].endpoints[&EndpointId(2)].recv.audio.wants(11) };
        assert!(!rx(&s), "ep1-a0 is not included");
        // The included name appears later, on the same SSRC's source renamed.
        let mut later = audio_source("ep1", 11);
        later.name = "ep3-a0".into();
        assert_eq!(s.handle_command(now, set1(vec![later])), Ok(Reply::Done));
        assert!(rx(&s), "resolved once signalled");
        // A slot held for ep1's source is freed silently when ep1 leaves.
        let slots = |s: &mut Shard| -> Option<u32> {
            let e = s.conferences.get_mut(&c)?.endpoints.get_mut(&EndpointId(2))?;
            let p = e.recv.slots.as_mut()?;
            p.audio.ssrc_of(11)
        };
        {
            let e = s
                .conferences
                .get_mut(&c)
                .and_then(|c| c.endpoints.get_mut(&EndpointId(2)));
            let p = e.and_then(|e| e.recv.slots.as_mut()).expect("pools");
            assert!(matches!(p.audio.activate(11), Some(SlotAssignment::Assigned { .. })));
        }
        assert!(slots(&mut s).is_some());
        let expire = Command::ExpireEndpoint {
            conf: c,
            ep: EndpointId(1),
        };
        assert_eq!(s.handle_command(now, expire), Ok(Reply::Done));
        assert_eq!(slots(&mut s), None);
    }

    /// Keyframe state is kept per media SSRC, simulcast layers included: a departed sender's
    /// (or a replaced source's) layers must not stay behind in the limiter or FIR counters
    /// (they did: the soak's churn left two entries per simulcast lifecycle).
    #[test]
    fn keyframe_state_of_every_layer_is_forgotten() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        assert!(create(&mut s, now, 1, 2).is_ok());
        let sim = |base: u32| {
            let ss = |v: &[u32]| v.iter().map(|x| Ssrc(*x)).collect::<Vec<_>>();
            let mut groups = vec![crate::control::SsrcGroup {
                semantics: crate::control::GroupSemantics::Sim,
                ssrcs: ss(&[base, base + 1, base + 2]),
            }];
            for k in 0..3 {
                groups.push(crate::control::SsrcGroup {
                    semantics: crate::control::GroupSemantics::Fid,
                    ssrcs: ss(&[base + k, base + 10 + k]),
                });
            }
            vec![SourceDescription {
                kind: MediaKind::Video,
                name: format!("ep1-v{base}"),
                ssrcs: ss(&[base, base + 1, base + 2, base + 10, base + 11, base + 12]),
                groups,
                video_type: None,
            }]
        };
        let set = |sources| Command::SetSources {
            conf: c,
            ep: EndpointId(1),
            sources,
        };
        // What request_keyframe records for PLIs/FIRs on each layer.
        let requested = |s: &mut Shard, base: u32| {
            let conf = s.conferences.get_mut(&c).expect("conference");
            for k in 0..3 {
                conf.keyframes.sent(base + k, now);
                conf.fir_seq.insert(base + k, 1);
            }
        };
        let held = |s: &Shard| (s.conferences[&c].keyframes.last.len(), s.conferences[&c].fir_seq.len());
        assert_eq!(s.handle_command(now, set(sim(100))), Ok(Reply::Done));
        requested(&mut s, 100);
        assert_eq!(held(&s), (3, 3));
        // Replace-all with new SSRCs: the old layers go.
        assert_eq!(s.handle_command(now, set(sim(200))), Ok(Reply::Done));
        assert_eq!(held(&s), (0, 0));
        requested(&mut s, 200);
        assert_eq!(held(&s), (3, 3));
        let expire = Command::ExpireEndpoint {
            conf: c,
            ep: EndpointId(1),
        };
        assert_eq!(s.handle_command(now, expire), Ok(Reply::Done));
        assert_eq!(held(&s), (0, 0));
    }

    /// SRTP that does nothing: lets a test drive the forwarding path with plain packets.
    pub(super) struct PlainSrtp;
    impl crate::srtp::Srtp for PlainSrtp {
        fn unprotect_rtp(&mut self, p: &[u8]) -> Result<BytesMut, crate::srtp::SrtpError> {
            Ok(BytesMut::from(p))
        }
        fn protect_rtp(&mut self, p: &[u8]) -> Result<BytesMut, crate::srtp::SrtpError> {
            Ok(BytesMut::from(p))
        }
        fn unprotect_rtcp(&mut self, p: &[u8]) -> Result<BytesMut, crate::srtp::SrtpError> {
            Ok(BytesMut::from(p))
        }
        fn protect_rtcp(&mut self, p: &[u8]) -> Result<BytesMut, crate::srtp::SrtpError> {
            Ok(BytesMut::from(p))
        }
    }

    pub(super) fn peer_addr(ep: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20000 + ep as u16))
    }

    /// Mark `ep` connected at [`peer_addr`] with [`PlainSrtp`].
    pub(super) fn connect_plain(s: &mut Shard, conf: ConferenceId, ep: u32) {
        let addr = peer_addr(ep);
        let e = s
            .conferences
            .get_mut(&conf)
            .and_then(|c| c.endpoints.get_mut(&EndpointId(ep)))
            .expect("endpoint exists");
        e.srtp = Some(Box::new(PlainSrtp));
        e.selected = Some(addr);
        e.ice_connected = true;
        let created = e.created;
        e.add_validated(addr, created);
        s.by_addr.insert(addr, (conf, EndpointId(ep)));
    }

    /// Signal VP8 (PT 100, no RTX, no extensions) for endpoint `ep` of conference 1.
    pub(super) fn set_vp8(s: &mut Shard, now: Instant, ep: u32) {
        let media = crate::control::MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![crate::control::PayloadType {
                pt: 100,
                name: "VP8".into(),
                clock_rate: 90_000,
                apt: None,
                feedback: vec![],
            }],
            extensions: vec![],
        };
        let cmd = Command::SetMedia {
            conf: ConferenceId(1),
            ep: EndpointId(ep),
            media,
        };
        assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
    }

    /// Signal Opus (PT 111) with `extensions` for endpoint `ep` of conference 1.
    pub(super) fn set_opus(s: &mut Shard, now: Instant, ep: u32, extensions: Vec<crate::control::RtpExtension>) {
        let media = crate::control::MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![crate::control::PayloadType {
                pt: 111,
                name: "opus".into(),
                clock_rate: 48_000,
                apt: None,
                feedback: vec![],
            }],
            extensions,
        };
        let cmd = Command::SetMedia {
            conf: ConferenceId(1),
            ep: EndpointId(ep),
            media,
        };
        assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
    }

    /// Datagrams handed over together (one `recvmmsg` batch, one `now`) keep the kernel's
    /// arrival spacing in the transport-cc feedback the sender gets.
    #[test]
    fn transport_cc_records_kernel_arrival_times() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        let twcc = crate::control::RtpExtension {
            id: 5,
            uri: crate::negotiated::URI_TRANSPORT_CC.into(),
        };
        set_opus(&mut s, now, 1, vec![twcc]);
        connect_plain(&mut s, c, 1);
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        // Five packets that arrived 10 ms apart, all read at `batch_at`.
        let batch_at = now + Duration::from_millis(100);
        for i in 0..5u16 {
            let mut p = vec![0x90, 111];
            p.extend_from_slice(&(100 + i).to_be_bytes());
            p.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
            p.extend_from_slice(&77u32.to_be_bytes());
            // One-byte header extension block: id 5, two bytes of transport seq, padding.
            p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x51]);
            p.extend_from_slice(&i.to_be_bytes());
            p.push(0);
            p.extend_from_slice(&[1; 20]);
            let arrival = now + Duration::from_millis(50 + 10 * u64::from(i));
            s.handle_datagram_at(batch_at, arrival, local, peer_addr(1), BytesMut::from(&p[..]));
        }
        let later = batch_at + Duration::from_millis(200);
        s.handle_timeout(later);
        let mut deltas = Vec::new();
        while let Some(tx) = s.poll_transmit() {
            if tx.remote != peer_addr(1) || demux::classify(&tx.data) != Kind::Rtcp {
                continue;
            }
            for p in rtcp::RtcpCompound::new(&tx.data).flatten() {
                if let rtcp::RtcpPacket::TransportCc(t) = p {
                    deltas.extend(t.packets().filter_map(|p| p.recv_delta));
                }
            }
        }
        assert_eq!(deltas.len(), 5, "all five reported: {deltas:?}");
        // 10 ms = 40 ticks of 250 µs between packets (with the batch time they would be 0).
        assert_eq!(&deltas[1..], &[40, 40, 40, 40], "{deltas:?}");
    }

    pub(super) fn rtp(ssrc: u32, seq: u16, ts: u32, tag: u8) -> BytesMut {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[tag; 20]);
        BytesMut::from(&p[..])
    }

    /// More audio sources than slots: the receiver's two audio slots are remapped again and
    /// again (LRU), each remap announced before the first packet on the slot, and each slot
    /// stays one stream: seq +1 and timestamps increasing across source changes.
    #[test]
    fn audio_slots_remap_and_stay_continuous() {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(9),
            ..SfuConfig::default()
        });
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        for ep in 1..=3 {
            assert!(create(&mut s, now, 1, ep).is_ok());
            let set = Command::SetSources {
                conf: c,
                ep: EndpointId(ep),
                sources: vec![audio_source(&format!("ep{ep}"), 100 + ep)],
            };
            assert_eq!(s.handle_command(now, set), Ok(Reply::Done));
        }
        create_rewriting(&mut s, now, 1, 4);
        for ep in 1..=4 {
            set_opus(&mut s, now, ep, vec![]);
            connect_plain(&mut s, c, ep);
        }
        {
            let r = s
                .conferences
                .get_mut(&c)
                .and_then(|c| c.endpoints.get_mut(&EndpointId(4)));
            let r = r.expect("receiver");
            // Two audio slots only, so three sources must share them; maps as websocket events.
            r.recv.slots = Some(Box::new(SlotPools::new(&[(1, 2)], &[501, 502])));
            r.ws_open = true;
            r.ws_active = true;
        }
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let mut next = [0u16, 1000, 30_000, 65_000];
        let order = [1u32, 2, 1, 2, 3, 3, 1, 2, 3, 1, 1, 2, 2, 3, 1, 3, 2, 1];
        // slot SSRC -> source name last announced; per slot: last (seq, ts).
        let mut announced: HashMap<u32, String> = HashMap::new();
        let mut last: HashMap<u32, (u16, u32)> = HashMap::new();
        let mut maps = 0;
        let mut forwarded = 0;
        let mut t = now;
        for round in 0..4 {
            for &ep in &order {
                t += Duration::from_millis(20);
                let i = ep as usize;
                next[i] = next[i].wrapping_add(1);
                let ts = u32::from(next[i]).wrapping_mul(960).wrapping_add(ep * 7_777_777);
                s.handle_datagram(t, local, peer_addr(ep), rtp(100 + ep, next[i], ts, ep as u8));
                while let Some(ev) = s.poll_event() {
                    if let Event::BridgeChannelSend {
                        ep: EndpointId(4),
                        text,
                        ..
                    } = ev
                    {
                        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                        if v["colibriClass"] == "AudioSourcesMap" {
                            for e in v["mappedSources"].as_array().into_iter().flatten() {
                                let ssrc = e["ssrc"].as_u64().expect("ssrc") as u32;
                                announced.insert(ssrc, e["source"].as_str().expect("name").to_owned());
                                maps += 1;
                            }
                        }
                    }
                }
                while let Some(tx) = s.poll_transmit() {
                    if tx.remote != peer_addr(4) {
                        continue;
                    }
                    let h = RtpHeader::parse(&tx.data).expect("rtp");
                    let (slot, seq, ts) = (h.ssrc().0, h.seq(), h.timestamp());
                    let tag = tx.data[h.payload_range().start];
                    assert!(slot == 501 || slot == 502, "round {round}: media on {slot}");
                    forwarded += 1;
                    assert_eq!(
                        announced.get(&slot).map(String::as_str),
                        Some(format!("ep{tag}-a0").as_str()),
                        "slot {slot} carries ep{tag} without a map saying so"
                    );
                    if let Some((ls, lt)) = last.insert(slot, (seq, ts)) {
                        assert_eq!(seq, ls.wrapping_add(1), "slot {slot}: seq gap or repeat");
                        let dt = ts.wrapping_sub(lt);
                        assert!(dt > 0 && dt < 0x8000_0000, "slot {slot}: timestamp went backwards");
                    }
                }
            }
        }
        assert_eq!(forwarded, 4 * order.len(), "every packet reaches the receiver");
        assert!(maps > 6, "only {maps} slot assignments: the slots were not remapped");
        assert_eq!(drops(&s, "ssrc_slot_unmapped"), 0);
        // A PLI from the receiver names a slot SSRC; it reaches the slot's current source's
        // sender, for that sender's own SSRC.
        let owner: u32 = announced[&501]
            .trim_start_matches("ep")
            .trim_end_matches("-a0")
            .parse()
            .expect("ep<n>-a0");
        let mut buf = [0u8; 20];
        let n = rtcp::write_pli(&mut buf, Ssrc(9), Ssrc(501)).expect("pli");
        s.handle_datagram(t, local, peer_addr(4), BytesMut::from(&buf[..n]));
        let mut routed = false;
        while let Some(tx) = s.poll_transmit() {
            if tx.remote != peer_addr(owner) {
                continue;
            }
            for p in RtcpCompound::new(&tx.data).flatten() {
                if let RtcpPacket::Pli(p) = p {
                    assert_eq!(p.media.0, 100 + owner);
                    routed = true;
                }
            }
        }
        assert!(routed, "the PLI on slot 501 did not reach ep{owner}");
    }

    /// A VP8 packet: 15-bit picture ID descriptor, keyframe header (640x360) or delta tag.
    pub(super) fn vp8_rtp(ssrc: u32, seq: u16, ts: u32, pid: u16, keyframe: bool) -> BytesMut {
        vp8_rtp_sized(ssrc, seq, ts, pid, keyframe.then_some((640, 360)), 0x5A)
    }

    /// A VP8 packet: 15-bit picture ID descriptor, a keyframe header of `key`'s (width, height)
    /// or a delta tag, then 100 bytes of `fill`.
    pub(super) fn vp8_rtp_sized(ssrc: u32, seq: u16, ts: u32, pid: u16, key: Option<(u16, u16)>, fill: u8) -> BytesMut {
        let mut p = vec![0x80, 0x80 | 100]; // V=2; marker, PT 100
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8]);
        if let Some((w, h)) = key {
            p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&w.to_le_bytes());
            p.extend_from_slice(&h.to_le_bytes());
        } else {
            p.extend_from_slice(&[0x11, 0, 0]);
        }
        p.resize(p.len() + 100, fill);
        BytesMut::from(&p[..])
    }

    /// Chrome scales every simulcast encoding with its input (CPU and bandwidth adaptation).
    /// A receiver limited to 180p that was given encoding 2 while it carried 180p (the input
    /// at a quarter size) must not get that encoding's 720p keyframe once the input is back:
    /// it moves, at that keyframe, to the encoding that carries ≤ 180p (the headless-Chromium
    /// test "receiver asking maxHeight 180" decoded 720p and 360p frames in 2 of 16 runs).
    /// `order`: the order in which the three encodings' keyframes arrive at the resize.
    fn outgrown_encoding_run(order: [usize; 3]) -> Vec<(usize, Option<u16>)> {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(18),
            ..SfuConfig::default()
        });
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        assert!(create(&mut s, now, 1, 4).is_ok());
        let sim = [300u32, 301, 302];
        let video = SourceDescription {
            kind: MediaKind::Video,
            name: "ep1-v0".into(),
            ssrcs: sim.iter().map(|x| Ssrc(*x)).collect(),
            groups: vec![crate::control::SsrcGroup {
                semantics: crate::control::GroupSemantics::Sim,
                ssrcs: sim.iter().map(|x| Ssrc(*x)).collect(),
            }],
            video_type: Some(crate::control::VideoType::Camera),
        };
        let set = Command::SetSources {
            conf: c,
            ep: EndpointId(1),
            sources: vec![video],
        };
        assert_eq!(s.handle_command(now, set), Ok(Reply::Done));
        for ep in [1, 4] {
            set_vp8(&mut s, now, ep);
            connect_plain(&mut s, c, ep);
        }
        receiver_asks(&mut s, now, c, 4, 180);
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        // Input at 320x180 (encodings 80x45, 160x90, 320x180), then at 1280x720 from frame 60.
        let size = |e: usize, n: u16| {
            let h = if n < 60 { 45u16 << e } else { 180u16 << e };
            (h * 16 / 9, h)
        };
        let mut got = Vec::new();
        let mut t = now;
        let mut pli_wanted = [false; 3];
        for n in 0..120u16 {
            t += Duration::from_millis(33);
            for e in order {
                // Keyframes: the first frame, the resize (all three), and answers to PLIs.
                let key = n == 0 || n == 60 || std::mem::take(&mut pli_wanted[e]);
                let p = vp8_rtp_sized(
                    sim[e],
                    1000 * e as u16 + n,
                    u32::from(n) * 3000,
                    n,
                    key.then(|| size(e, n)),
                    e as u8,
                );
                s.handle_datagram(t, local, peer_addr(1), p);
                s.handle_timeout(t);
                while let Some(tx) = s.poll_transmit() {
                    if tx.remote == peer_addr(1) {
                        for p in RtcpCompound::new(&tx.data).flatten() {
                            if let RtcpPacket::Pli(p) = p {
                                if let Some(k) = sim.iter().position(|x| *x == p.media.0) {
                                    pli_wanted[k] = true;
                                }
                            }
                        }
                    }
                    if tx.remote != peer_addr(4) || demux::classify(&tx.data) != Kind::Rtp {
                        continue;
                    }
                    let h = RtpHeader::parse(&tx.data).expect("rtp");
                    let body = &tx.data[h.payload_range()];
                    // Descriptor 4 bytes, then the VP8 header: keyframe (10) or delta (3).
                    let (height, tag) = if body[4] & 1 == 0 {
                        (Some(u16::from_le_bytes([body[12], body[13]])), body[14])
                    } else {
                        (None, body[7])
                    };
                    if n >= 1 {
                        got.push((usize::from(tag), height));
                    }
                }
            }
        }
        got
    }

    #[test]
    fn encoding_that_outgrows_the_height_limit_is_cut_at_its_keyframe() {
        for order in [[2, 1, 0], [0, 1, 2]] {
            let got = outgrown_encoding_run(order);
            let heights: Vec<u16> = got.iter().filter_map(|g| g.1).collect();
            // The setup: the 180p receiver was on encoding 2 while it carried 180p.
            assert!(
                got.iter().filter(|g| g.0 == 2).count() > 30,
                "{order:?}: encoding 2 (then 320x180) forwarded before the resize: {got:?}"
            );
            assert!(
                heights.iter().all(|h| *h <= 180),
                "{order:?}: a keyframe over 180p reached the 180p receiver: {heights:?}"
            );
            let last_two = got.iter().rposition(|g| g.0 == 2).expect("encoding 2 forwarded");
            let after = &got[last_two + 1..];
            assert_eq!(
                after.first().copied(),
                Some((0, Some(180))),
                "{order:?}: encoding 0 from its 180p keyframe"
            );
            assert!(
                after.len() > 40 && after.iter().all(|g| g.0 == 0),
                "{order:?}: encoding 0 after the resize: {after:?}"
            );
        }
    }

    /// Robustness case 26: a receiver sends 1,000 NACKs within a second, each naming 272
    /// sequence numbers; the bridge serves at most 256 of each, and what it resends stays within
    /// twice the media it forwarded to that receiver.
    #[test]
    fn nack_flood_is_served_within_budget() {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(26),
            ..SfuConfig::default()
        });
        vp8_call(&mut s, now, false);
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let (mut media_bytes, mut resent_bytes) = (0u64, 0u64);
        let mut newest = None;
        let mut t = now;
        for n in 0..60u16 {
            t += Duration::from_millis(33);
            let p = vp8_rtp(200, 3000 + n, u32::from(n) * 3000, n, n % 15 == 0);
            s.handle_datagram(t, local, peer_addr(1), p);
            s.handle_timeout(t);
            while let Some(tx) = s.poll_transmit() {
                if tx.remote == peer_addr(4) && demux::classify(&tx.data) == Kind::Rtp {
                    let h = RtpHeader::parse(&tx.data).expect("rtp");
                    if h.pt() == 100 {
                        media_bytes += tx.data.len() as u64;
                        newest = Some((h.ssrc().0, h.seq()));
                    }
                }
            }
        }
        let (ssrc, newest) = newest.expect("video forwarded");
        let mut buf = [0u8; 256];
        let mut resent = 0;
        for _ in 0..1000 {
            t += Duration::from_millis(1);
            let pairs = (0..17u16).map(|j| crate::wire::rtcp::NackPair {
                pid: newest.wrapping_sub(16 * j),
                blp: 0xFFFF,
            });
            let n = rtcp::write_nack(&mut buf, Ssrc(9), Ssrc(ssrc), pairs).expect("nack");
            s.handle_datagram(t, local, peer_addr(4), BytesMut::from(&buf[..n]));
            while let Some(tx) = s.poll_transmit() {
                if tx.remote == peer_addr(4) && demux::classify(&tx.data) == Kind::Rtp {
                    let h = RtpHeader::parse(&tx.data).expect("rtp");
                    if h.pt() == 96 {
                        resent_bytes += tx.data.len() as u64;
                        resent += 1;
                    }
                }
            }
        }
        assert!(resent > 0, "NACKs are answered");
        assert!(
            resent_bytes <= 2 * media_bytes,
            "{resent} retransmissions, {resent_bytes} bytes, for {media_bytes} bytes of media"
        );
        assert_eq!(drops(&s, "nack_too_many_seqs"), 1000);
        assert!(drops(&s, "nack_over_budget") > 0);
    }

    /// Conference 1: endpoint 1 sends VP8 source "ep1-v0" (SSRC 200, RTX 201), endpoint 4
    /// receives it (with one video slot 601/602 and audio slot 501 when `rewriting`); both
    /// negotiated VP8 (PT 100) with RTX (PT 96), connected with plain SRTP, receiver at 720p.
    pub(super) fn vp8_call(s: &mut Shard, now: Instant, rewriting: bool) {
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(s, now, 1, 1).is_ok());
        if rewriting {
            create_rewriting(s, now, 1, 4);
        } else {
            assert!(create(s, now, 1, 4).is_ok());
        }
        let video = SourceDescription {
            kind: MediaKind::Video,
            name: "ep1-v0".into(),
            ssrcs: vec![Ssrc(200), Ssrc(201)],
            groups: vec![crate::control::SsrcGroup {
                semantics: crate::control::GroupSemantics::Fid,
                ssrcs: vec![Ssrc(200), Ssrc(201)],
            }],
            video_type: Some(crate::control::VideoType::Camera),
        };
        let set = Command::SetSources {
            conf: c,
            ep: EndpointId(1),
            sources: vec![video],
        };
        assert_eq!(s.handle_command(now, set), Ok(Reply::Done));
        let pt = |pt, name: &str, apt| crate::control::PayloadType {
            pt,
            name: name.into(),
            clock_rate: 90_000,
            apt,
            feedback: vec![],
        };
        for ep in [1, 4] {
            let media = crate::control::MediaDescription {
                kind: MediaKind::Video,
                payload_types: vec![pt(100, "VP8", None), pt(96, "rtx", Some(100))],
                extensions: vec![],
            };
            let cmd = Command::SetMedia {
                conf: c,
                ep: EndpointId(ep),
                media,
            };
            assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
            connect_plain(s, c, ep);
        }
        {
            let r = s
                .conferences
                .get_mut(&c)
                .and_then(|c| c.endpoints.get_mut(&EndpointId(4)));
            let r = r.expect("receiver");
            if rewriting {
                r.recv.slots = Some(Box::new(SlotPools::new(&[(601, 602)], &[501])));
            }
        }
        receiver_asks(s, now, c, 4, 720);
    }

    /// Endpoint `ep` of `c` gets a bridge channel (an open websocket) and sends
    /// ReceiverVideoConstraints with default `maxHeight`.
    pub(super) fn receiver_asks(s: &mut Shard, now: Instant, c: ConferenceId, ep: u32, max_height: i32) {
        if let Some(r) = s
            .conferences
            .get_mut(&c)
            .and_then(|c| c.endpoints.get_mut(&EndpointId(ep)))
        {
            r.ws_open = true;
            r.ws_active = true;
        }
        let text = format!(
            r#"{{"colibriClass":"ReceiverVideoConstraints","lastN":-1,"defaultConstraints":{{"maxHeight":{max_height}}}}}"#
        );
        let constraints = Command::BridgeChannelMessage {
            conf: c,
            ep: EndpointId(ep),
            text,
        };
        assert_eq!(s.handle_command(now, constraints), Ok(Reply::Done));
    }

    /// Video in rewriting mode: the allocation gives the source a slot and announces it (with
    /// the slot's RTX SSRC) before any media; media goes out on the slot SSRC from a keyframe;
    /// a NACK for the slot SSRC is answered as RTX on the slot's RTX SSRC.
    #[test]
    fn video_slot_announced_first_and_nack_answered_on_its_rtx() {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(4),
            ..SfuConfig::default()
        });
        vp8_call(&mut s, now, true);
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let mut map_seen_at = None;
        let mut got: Vec<(u32, u16, u8)> = Vec::new();
        let mut t = now;
        for n in 0..90u16 {
            t += Duration::from_millis(33);
            let key = n % 15 == 0;
            s.handle_datagram(
                t,
                local,
                peer_addr(1),
                vp8_rtp(200, 3000 + n, u32::from(n) * 3000, n, key),
            );
            s.handle_timeout(t);
            while let Some(ev) = s.poll_event() {
                if let Event::BridgeChannelSend {
                    ep: EndpointId(4),
                    text,
                    ..
                } = ev
                {
                    if text.contains("VideoSourcesMap") {
                        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                        let e = &v["mappedSources"][0];
                        assert_eq!((e["source"].as_str(), e["ssrc"].as_u64()), (Some("ep1-v0"), Some(601)));
                        assert_eq!((e["rtx"].as_u64(), e["owner"].as_str()), (Some(602), Some("ep1")));
                        assert_eq!(e["videoType"], "CAMERA");
                        map_seen_at.get_or_insert(got.len());
                    }
                }
            }
            while let Some(tx) = s.poll_transmit() {
                if tx.remote != peer_addr(4) || demux::classify(&tx.data) != Kind::Rtp {
                    continue;
                }
                let h = RtpHeader::parse(&tx.data).expect("rtp");
                got.push((h.ssrc().0, h.seq(), h.pt()));
            }
        }
        let media: Vec<&(u32, u16, u8)> = got.iter().filter(|g| g.2 == 100).collect();
        assert!(media.len() > 30, "video forwarded: {got:?}");
        assert_eq!(map_seen_at, Some(0), "the map came before any media");
        assert!(media.iter().all(|g| g.0 == 601), "video only on the slot SSRC: {got:?}");
        for w in media.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1), "slot seq continuous");
        }
        // The receiver lost one: NACK for the slot SSRC, answered as RTX on the slot's RTX SSRC.
        let lost = media[media.len() / 2].1;
        let mut buf = [0u8; 32];
        let pair = crate::wire::rtcp::NackPair { pid: lost, blp: 0 };
        let n = rtcp::write_nack(&mut buf, Ssrc(9), Ssrc(601), [pair]).expect("nack");
        s.handle_datagram(t, local, peer_addr(4), BytesMut::from(&buf[..n]));
        let mut rtx = None;
        while let Some(tx) = s.poll_transmit() {
            if tx.remote == peer_addr(4) && demux::classify(&tx.data) == Kind::Rtp {
                let h = RtpHeader::parse(&tx.data).expect("rtp");
                let osn = tx.data[h.payload_range().start..][..2].to_vec();
                rtx = Some((h.ssrc().0, h.pt(), u16::from_be_bytes([osn[0], osn[1]])));
            }
        }
        assert_eq!(rtx, Some((602, 96, lost)), "retransmission on the slot's RTX SSRC");
    }

    /// A VP8 packet with picture ID and TL0PICIDX (every frame a base-layer frame).
    fn vp8_rtp_tl0(ssrc: u32, seq: u16, ts: u32, pid: u16, tl0: u8, keyframe: bool) -> BytesMut {
        let mut p = vec![0x80, 0x80 | 100];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x90, 0xC0, 0x80 | (pid >> 8) as u8, pid as u8, tl0]);
        if keyframe {
            p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        } else {
            p.extend_from_slice(&[0x11, 0, 0]);
        }
        p.resize(p.len() + 100, 0x5A);
        BytesMut::from(&p[..])
    }

    /// One video slot shared by two VP8 senders as the receiver moves its on-stage source back
    /// and forth: every hand-over is announced before media, and on the slot SSRC the sequence
    /// numbers stay +1 and TL0PICIDX stays +1 per base-layer frame across the remaps (§3.5).
    #[test]
    fn video_slot_remaps_keep_seq_and_tl0picidx_continuous() {
        let (mut s, now) = shard(SfuConfig {
            rng_seed: Some(5),
            ..SfuConfig::default()
        });
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        for ep in 1..=2 {
            assert!(create(&mut s, now, 1, ep).is_ok());
            let video = SourceDescription {
                kind: MediaKind::Video,
                name: format!("ep{ep}-v0"),
                ssrcs: vec![Ssrc(200 + ep)],
                groups: vec![],
                video_type: Some(crate::control::VideoType::Camera),
            };
            let set = Command::SetSources {
                conf: c,
                ep: EndpointId(ep),
                sources: vec![video],
            };
            assert_eq!(s.handle_command(now, set), Ok(Reply::Done));
        }
        create_rewriting(&mut s, now, 1, 4);
        for ep in [1, 2, 4] {
            set_vp8(&mut s, now, ep);
            connect_plain(&mut s, c, ep);
        }
        {
            let r = s
                .conferences
                .get_mut(&c)
                .and_then(|c| c.endpoints.get_mut(&EndpointId(4)));
            let r = r.expect("receiver");
            r.recv.slots = Some(Box::new(SlotPools::new(&[(601, 602)], &[501])));
            r.ws_open = true;
            r.ws_active = true;
        }
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        let stage = |name: &str| Command::BridgeChannelMessage {
            conf: c,
            ep: EndpointId(4),
            text: format!(
                r#"{{"colibriClass":"ReceiverVideoConstraints","lastN":1,"onStageSources":["{name}"],"defaultConstraints":{{"maxHeight":720}}}}"#
            ),
        };
        // Per sender: seq, picture ID and TL0PICIDX counters far apart from each other.
        let mut seq = [0u16, 100, 40_000];
        let mut tl0 = [0u8, 10, 200];
        let mut announced: Option<String> = None;
        let mut maps = 0;
        let mut last: Option<(u16, u8)> = None;
        let mut per_source = [0usize; 3];
        let mut t = now;
        for round in 0..6u16 {
            let on = if round % 2 == 0 { 1 } else { 2 };
            assert_eq!(s.handle_command(t, stage(&format!("ep{on}-v0"))), Ok(Reply::Done));
            for n in 0..40u16 {
                t += Duration::from_millis(33);
                for ep in 1..=2usize {
                    seq[ep] = seq[ep].wrapping_add(1);
                    tl0[ep] = tl0[ep].wrapping_add(1);
                    let ts = u32::from(seq[ep]).wrapping_mul(3000);
                    let key = n % 10 == 0;
                    let pkt = vp8_rtp_tl0(200 + ep as u32, seq[ep], ts, seq[ep] & 0x7fff, tl0[ep], key);
                    s.handle_datagram(t, local, peer_addr(ep as u32), pkt);
                }
                s.handle_timeout(t);
                while let Some(ev) = s.poll_event() {
                    if let Event::BridgeChannelSend {
                        ep: EndpointId(4),
                        text,
                        ..
                    } = ev
                    {
                        if text.contains("VideoSourcesMap") {
                            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                            for e in v["mappedSources"].as_array().into_iter().flatten() {
                                assert_eq!(e["ssrc"].as_u64(), Some(601));
                                announced = e["source"].as_str().map(str::to_owned);
                                maps += 1;
                            }
                        }
                    }
                }
                while let Some(tx) = s.poll_transmit() {
                    if tx.remote != peer_addr(4) || demux::classify(&tx.data) != Kind::Rtp {
                        continue;
                    }
                    let h = RtpHeader::parse(&tx.data).expect("rtp");
                    if h.pt() != 100 {
                        continue; // padding/probes
                    }
                    assert_eq!(h.ssrc().0, 601, "video only on the slot SSRC");
                    let payload = &tx.data[h.payload_range()];
                    let out_tl0 = payload[4];
                    // Which sender: the payload tail is the same for both, so go by the map.
                    let owner = announced.as_deref().expect("media before any map");
                    per_source[if owner == "ep1-v0" { 1 } else { 2 }] += 1;
                    if let Some((ls, lt)) = last {
                        assert_eq!(h.seq(), ls.wrapping_add(1), "round {round}: slot seq not +1");
                        assert_eq!(out_tl0, lt.wrapping_add(1), "round {round}: TL0PICIDX not +1");
                    }
                    last = Some((h.seq(), out_tl0));
                }
            }
        }
        assert!(maps >= 6, "the slot changed hands {maps} times, want 6");
        assert!(
            per_source[1] > 40 && per_source[2] > 40,
            "both sources forwarded: {per_source:?}"
        );
    }

    /// An endpoint that never connects is inactive after the first-transfer timeout (15 s),
    /// and one that received something is inactive after 8 s of silence; visitors never.
    #[test]
    fn connectivity_inactivity_limits() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        assert!(create(&mut s, now, 1, 1).is_ok());
        let ep = |s: &mut Shard| -> bool { s.conferences[&c].endpoints[&EndpointId(1)].inactive };
        s.handle_timeout(now + Duration::from_secs(9));
        assert!(!ep(&mut s), "not connected yet: 15 s first-transfer timeout");
        s.handle_timeout(now + Duration::from_secs(16));
        assert!(ep(&mut s));
        // Connected and active again, then 8 s of nothing.
        let t = now + Duration::from_secs(17);
        if let Some(e) = s
            .conferences
            .get_mut(&c)
            .and_then(|c| c.endpoints.get_mut(&EndpointId(1)))
        {
            e.ice_connected = true;
            e.last_activity = t;
        }
        s.handle_timeout(t + Duration::from_millis(200));
        assert!(!ep(&mut s), "activity makes it active again");
        s.handle_timeout(t + Duration::from_secs(7));
        assert!(!ep(&mut s));
        s.handle_timeout(t + Duration::from_secs(9));
        assert!(ep(&mut s), "8 s without anything");
    }

    /// When an endpoint leaves, the others forget the send streams of its SSRCs, and only
    /// those (sender reports for everyone else's streams continue with their counters).
    #[test]
    fn expiry_forgets_only_the_departed_endpoints_send_streams() {
        let (mut s, now) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        assert!(s.handle_command(now, Command::CreateConference { conf: c }).is_ok());
        for ep in 1..=3 {
            assert!(matches!(create(&mut s, now, 1, ep), Ok(Reply::EndpointCreated(_))));
        }
        let source = |x: u32| SourceDescription {
            kind: MediaKind::Audio,
            name: format!("x-a{x}"),
            ssrcs: vec![Ssrc(x)],
            groups: vec![],
            video_type: None,
        };
        for (ep, ssrc) in [(1, 7), (2, 9)] {
            let cmd = Command::SetSources {
                conf: c,
                ep: EndpointId(ep),
                sources: vec![source(ssrc)],
            };
            assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
        }
        let receiver = EndpointId(3);
        for ssrc in [7, 9] {
            let tx = TxStream {
                packets: 5,
                octets: 500,
                last_rtp_ts: 0,
                last_sent: now,
                clock_rate: 48_000,
            };
            let conf = s.conferences.get_mut(&c).expect("created above");
            conf.endpoints
                .get_mut(&receiver)
                .expect("created above")
                .tx
                .insert(ssrc, tx);
        }
        let cmd = Command::ExpireEndpoint {
            conf: c,
            ep: EndpointId(1),
        };
        assert_eq!(s.handle_command(now, cmd), Ok(Reply::Done));
        let tx = &s.conferences[&c].endpoints[&receiver].tx;
        assert!(!tx.contains_key(&7), "the departed sender's stream is forgotten");
        assert_eq!(
            tx.get(&9).map(|t| t.packets),
            Some(5),
            "the other sender's stream is kept"
        );
    }

    /// One long-lived receiver with real SRTP and 2,000 sender lifecycles, each with a new
    /// audio SSRC: every lifecycle's media still reaches the receiver (before pruning the
    /// receiver's outbound SRTP state held every SSRC ever sent, capped at 1,024, so senders
    /// past ~1,000 were dropped as `srtp_ssrc_limit`), the state stays bounded, and a
    /// rejoining sender that reuses its SSRC resumes only above the indices already used.
    #[test]
    fn long_lived_receiver_gets_media_through_sender_churn() {
        use crate::srtp::{split_keying_material, InPlaceSrtp, Profile};
        let (mut s, mut t) = shard(SfuConfig::default());
        let c = ConferenceId(1);
        let local: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        assert!(s.handle_command(t, Command::CreateConference { conf: c }).is_ok());
        let set_media = |s: &mut Shard, ep: u32, t: Instant| set_opus(s, t, ep, vec![]);
        // The receiver: the bridge's side protects for real, a `browser` session per lifecycle
        // unprotects (ours caps inbound SSRCs at 1,024 as any receiver's state must be capped).
        const RX: u32 = 1;
        assert!(create(&mut s, t, 1, RX).is_ok());
        set_media(&mut s, RX, t);
        connect_plain(&mut s, c, RX);
        let profile = Profile::AeadAes128Gcm;
        let km: Vec<u8> = (0..profile.keying_material_len() as u8)
            .map(|i| i.wrapping_mul(29))
            .collect();
        let bridge =
            InPlaceSrtp::new(profile, &split_keying_material(&km, profile, false).expect("length")).expect("keys");
        s.conferences
            .get_mut(&c)
            .and_then(|c| c.endpoints.get_mut(&EndpointId(RX)))
            .expect("receiver")
            .srtp = Some(Box::new(bridge));
        let outbound = |s: &Shard| {
            s.conferences[&c].endpoints[&EndpointId(RX)]
                .srtp
                .as_ref()
                .expect("srtp")
                .outbound_state()
        };

        // One lifecycle: join, signal `ssrc`, send `n` packets from `seq0`, leave. Returns
        // the (SSRC, index) pairs the browser decrypted.
        let lifecycle = |s: &mut Shard, ep: u32, ssrc: u32, seq0: u16, n: u16, t: &mut Instant| {
            assert!(create(s, *t, 1, ep).is_ok());
            set_media(s, ep, *t);
            let cmd = Command::SetSources {
                conf: c,
                ep: EndpointId(ep),
                sources: vec![audio_source(&format!("ep{ep}"), ssrc)],
            };
            assert_eq!(s.handle_command(*t, cmd), Ok(Reply::Done));
            connect_plain(s, c, ep);
            let mut browser =
                InPlaceSrtp::new(profile, &split_keying_material(&km, profile, true).expect("length")).expect("keys");
            let mut got = Vec::new();
            for k in 0..n {
                *t += Duration::from_millis(20);
                let seq = seq0.wrapping_add(k);
                s.handle_datagram(*t, local, peer_addr(ep), rtp(ssrc, seq, u32::from(seq) * 960, 7));
                while let Some(tx) = s.poll_transmit() {
                    if tx.remote != peer_addr(RX) || tx.data.len() < 12 || tx.data[1] & 0x7f != 111 {
                        continue;
                    }
                    let mut data = tx.data.to_vec();
                    let len = browser
                        .unprotect_rtp(&mut data)
                        .expect("the browser decrypts what it is sent");
                    let h = RtpHeader::parse(&data[..len]).expect("rtp");
                    got.push((h.ssrc().0, h.seq()));
                }
            }
            let expire = Command::ExpireEndpoint {
                conf: c,
                ep: EndpointId(ep),
            };
            assert_eq!(s.handle_command(*t, expire), Ok(Reply::Done));
            got
        };

        const LIFECYCLES: u32 = 2_000;
        let mut peak = 0;
        for i in 0..LIFECYCLES {
            let ssrc = 0x1000_0000 + i * 7919;
            let got = lifecycle(&mut s, 100 + i, ssrc, (i * 331) as u16, 3, &mut t);
            assert_eq!(
                got.len(),
                3,
                "lifecycle {i} (SSRC {ssrc:#x}): the receiver got {got:?}; {:?}",
                s.stats().drops
            );
            let st = outbound(&s);
            assert!(st.active <= crate::srtp::OUTBOUND_MAX_ACTIVE && st.retired <= crate::srtp::OUTBOUND_MAX_RETIRED);
            peak = peak.max(st.heap_bytes);
        }
        let st = outbound(&s);
        // Each departed sender's SSRC was pruned at once; the oldest went on to the filter.
        assert_eq!(st.active, 0, "{st:?}");
        assert_eq!(st.retired, crate::srtp::OUTBOUND_MAX_RETIRED);
        assert_eq!(st.filtered, u64::from(LIFECYCLES) - st.retired as u64);
        assert!(peak <= 100 * 1024, "outbound SRTP state peaked at {peak} bytes: {st:?}");
        assert_eq!(drops(&s, "srtp_ssrc_limit"), 0);

        // A sender rejoining with the SSRC it had (the last lifecycle's) continuing above its
        // old sequence numbers is resumed; one restarting below them is refused (counted), not
        // sent under nonces already used.
        let last = 0x1000_0000 + (LIFECYCLES - 1) * 7919;
        let seq_last = ((LIFECYCLES - 1) * 331) as u16;
        let got = lifecycle(&mut s, 9_000, last, seq_last.wrapping_add(3), 2, &mut t);
        assert_eq!(
            got,
            vec![(last, seq_last.wrapping_add(3)), (last, seq_last.wrapping_add(4))]
        );
        let got = lifecycle(&mut s, 9_001, last, seq_last, 2, &mut t);
        assert!(got.is_empty(), "indices already used were sent again: {got:?}");
        assert_eq!(drops(&s, "srtp_index_reused"), 2);
        // The first sender's SSRC is long out of the record: refused for good.
        let first = 0x1000_0000;
        let got = lifecycle(&mut s, 9_002, first, 40_000, 2, &mut t);
        assert!(
            got.is_empty(),
            "an SSRC pushed out of the record was sent again: {got:?}"
        );
        assert_eq!(drops(&s, "srtp_ssrc_retired"), 2);
    }

    /// Commands enforce existence and the configured limits.
    #[test]
    fn commands_and_limits() {
        let mut cfg = SfuConfig::default();
        cfg.limits.max_conferences = 1;
        cfg.limits.max_endpoints_per_conference = 1;
        cfg.limits.max_ssrcs_per_endpoint = 2;
        let (mut s, now) = shard(cfg);
        let c1 = ConferenceId(1);
        assert!(matches!(
            s.handle_command(now, Command::CreateConference { conf: c1 }),
            Ok(Reply::ConferenceCreated { audio_ssrc, video_ssrc }) if audio_ssrc != video_ssrc
        ));
        assert_eq!(
            s.handle_command(now, Command::CreateConference { conf: c1 }),
            Err(CommandError::ConferenceExists(c1))
        );
        assert_eq!(
            s.handle_command(now, Command::CreateConference { conf: ConferenceId(2) }),
            Err(CommandError::LimitReached("conferences"))
        );
        assert_eq!(
            create(&mut s, now, 9, 1),
            Err(CommandError::ConferenceNotFound(ConferenceId(9)))
        );
        let Ok(Reply::EndpointCreated(t)) = create(&mut s, now, 1, 1) else {
            panic!("endpoint not created")
        };
        assert_eq!(t.fingerprint_sha256, s.fingerprint());
        assert_eq!(
            t.candidates[0].addr,
            "127.0.0.1:10000".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(t.candidates[0].kind, CandidateKind::Host);
        assert!(t.ufrag.len() >= 4 && t.pwd.len() >= 22);
        assert_eq!(
            create(&mut s, now, 1, 1),
            Err(CommandError::EndpointExists {
                conf: c1,
                ep: EndpointId(1)
            })
        );
        assert_eq!(
            create(&mut s, now, 1, 2),
            Err(CommandError::LimitReached("endpoints per conference"))
        );
        let src = |ssrcs: Vec<u32>| SourceDescription {
            kind: MediaKind::Video,
            name: "x-v0".into(),
            ssrcs: ssrcs.into_iter().map(Ssrc).collect(),
            groups: vec![],
            video_type: None,
        };
        let set = |s: &mut Shard, v| {
            s.handle_command(
                now,
                Command::SetSources {
                    conf: c1,
                    ep: EndpointId(1),
                    sources: vec![src(v)],
                },
            )
        };
        assert_eq!(set(&mut s, vec![1, 2]), Ok(Reply::Done));
        assert_eq!(
            set(&mut s, vec![1, 2, 3]),
            Err(CommandError::LimitReached("ssrcs per endpoint"))
        );
        assert_eq!(s.stats().endpoints, 1);
        // Expiry frees the ufrag demux entry: a check for it is now an unknown ufrag.
        assert_eq!(
            s.handle_command(now, Command::ExpireConference { conf: c1 }),
            Ok(Reply::Done)
        );
        assert_eq!(s.stats().conferences, 0);
        let from: SocketAddr = "127.0.0.1:4000".parse().expect("literal");
        s.handle_datagram(now, from, from, stun_request(&format!("{}:abcd", t.ufrag)));
        assert_eq!(drops(&s, "unknown_ufrag"), 1);
        assert_eq!(
            s.handle_command(
                now,
                Command::ExpireEndpoint {
                    conf: c1,
                    ep: EndpointId(1)
                }
            ),
            Ok(Reply::Done)
        );
    }

    /// Unknown or malformed datagrams are dropped by reason; an unauthenticated check with a
    /// valid ufrag does not map its address to the endpoint.
    #[test]
    fn demux_drops_by_reason() {
        let (mut s, now) = shard(SfuConfig::default());
        let local = "127.0.0.1:10000".parse().expect("literal");
        let from: SocketAddr = "127.0.0.1:5555".parse().expect("literal");
        s.handle_command(now, Command::CreateConference { conf: ConferenceId(1) })
            .expect("conf");
        let Ok(Reply::EndpointCreated(t)) = create(&mut s, now, 1, 1) else {
            panic!("endpoint not created")
        };
        s.handle_command(
            now,
            Command::SetRemoteTransport {
                conf: ConferenceId(1),
                ep: EndpointId(1),
                transport: RemoteTransport {
                    ufrag: Some("abcd".into()),
                    pwd: Some("p".repeat(22)),
                    ..Default::default()
                },
            },
        )
        .expect("transport");
        while s.poll_transmit().is_some() {}

        s.handle_datagram(
            now,
            local,
            from,
            BytesMut::from(&[0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..]),
        );
        assert_eq!(drops(&s, "unknown_source"), 1);
        s.handle_datagram(now, local, from, BytesMut::from(&[0xFFu8; 40][..]));
        assert_eq!(drops(&s, "unknown_protocol"), 1);
        s.handle_datagram(now, local, from, BytesMut::from(&[0u8; 24][..]));
        assert_eq!(drops(&s, "malformed_stun"), 1);
        s.handle_datagram(now, local, from, stun_request("nobody:abcd"));
        assert_eq!(drops(&s, "unknown_ufrag"), 1);
        // Right ufrag, no MESSAGE-INTEGRITY: rejected by the agent, address not learned.
        s.handle_datagram(now, local, from, stun_request(&format!("{}:abcd", t.ufrag)));
        assert_eq!(drops(&s, "stun_rejected"), 1);
        s.handle_datagram(now, local, from, BytesMut::from(&[22u8, 0xFE, 0xFD, 0, 0][..]));
        assert_eq!(drops(&s, "unknown_source"), 2);
        assert!(s.poll_event().is_none());
        assert_eq!(s.stats().drops_total(), 6);
    }

    /// The core expires endpoints itself: never connected within `connect_timeout`, or no
    /// incoming traffic for `endpoint_timeout`; their demux entries go with them.
    #[test]
    fn expiry() {
        for (endpoint_timeout, connect_timeout, reason) in [
            (60, 120, ExpireReason::Inactive),
            (60, 30, ExpireReason::NeverConnected),
        ] {
            let cfg = SfuConfig {
                endpoint_timeout: Duration::from_secs(endpoint_timeout),
                connect_timeout: Duration::from_secs(connect_timeout),
                ..SfuConfig::default()
            };
            let (mut s, now) = shard(cfg);
            s.handle_command(now, Command::CreateConference { conf: ConferenceId(1) })
                .expect("conf");
            let Ok(Reply::EndpointCreated(t)) = create(&mut s, now, 1, 7) else {
                panic!("endpoint not created")
            };
            let first = endpoint_timeout.min(connect_timeout);
            let deadline = s.poll_timeout().expect("an endpoint has a deadline");
            assert!(deadline <= now + Duration::from_secs(first));
            s.handle_timeout(now + Duration::from_secs(first) - Duration::from_millis(1));
            assert_eq!(s.poll_event(), None, "expired too early");
            s.handle_timeout(now + Duration::from_secs(first));
            assert_eq!(
                s.poll_event(),
                Some(Event::EndpointExpired {
                    conf: ConferenceId(1),
                    ep: EndpointId(7),
                    reason
                })
            );
            assert_eq!(s.stats().endpoints, 0);
            assert!(s.by_ufrag.is_empty() && s.by_addr.is_empty());
            let from: SocketAddr = "127.0.0.1:4000".parse().expect("literal");
            s.handle_datagram(now, from, from, stun_request(&format!("{}:abcd", t.ufrag)));
            assert_eq!(drops(&s, "unknown_ufrag"), 1);
        }
    }

    /// Host candidates: the bound address when specific; with an unspecified bind, the
    /// machine's IPv4 addresses plus 127.0.0.1 (tests run on loopback). Advertised public
    /// addresses become srflx candidates related to the first host candidate.
    #[test]
    fn candidates() {
        let any: SocketAddr = "0.0.0.0:10000".parse().expect("literal");
        let ips = host_ips(&SfuConfig::default(), any);
        assert_eq!(ips.last(), Some(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(ips.iter().filter(|ip| ip.is_loopback()).count(), 1);
        assert!(ips.iter().all(|ip| ip.is_ipv4() && !ip.is_unspecified()));

        let cfg = SfuConfig {
            advertise: vec![
                crate::config::AdvertisedAddr {
                    ip: "198.51.100.7".parse().expect("literal"),
                    port: None,
                },
                crate::config::AdvertisedAddr {
                    ip: "203.0.113.9".parse().expect("literal"),
                    port: Some(12000),
                },
            ],
            ..SfuConfig::default()
        };
        let (mut s, now) = shard(cfg);
        s.handle_command(now, Command::CreateConference { conf: ConferenceId(1) })
            .expect("conf");
        let Ok(Reply::EndpointCreated(t)) = create(&mut s, now, 1, 1) else {
            panic!("endpoint not created")
        };
        let host: SocketAddr = "127.0.0.1:10000".parse().expect("literal");
        assert_eq!(t.candidates.len(), 3);
        assert_eq!(
            (t.candidates[0].addr, t.candidates[0].kind),
            (host, CandidateKind::Host)
        );
        assert_eq!(t.candidates[0].priority, (126 << 24) | (65535 << 8) | 255);
        assert_eq!(
            t.candidates[1].addr,
            "198.51.100.7:10000".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(
            t.candidates[2].addr,
            "203.0.113.9:12000".parse::<SocketAddr>().expect("literal")
        );
        for c in &t.candidates[1..] {
            assert_eq!((c.kind, c.related), (CandidateKind::Srflx, Some(host)));
            assert!(c.priority < t.candidates[0].priority);
        }
        let foundations: std::collections::HashSet<_> = t.candidates.iter().map(|c| &c.foundation).collect();
        assert_eq!(foundations.len(), 3);
    }

    /// One keyframe request per media SSRC per 250 ms; SSRCs are limited independently.
    #[test]
    fn keyframe_rate_limit() {
        let now = Instant::now();
        let mut l = KeyframeLimiter::default();
        assert!(l.allow(1, now));
        l.sent(1, now);
        assert!(!l.allow(1, now + Duration::from_millis(100)));
        assert!(l.allow(2, now + Duration::from_millis(100)));
        assert!(!l.allow(1, now + Duration::from_millis(249)));
        assert!(l.allow(1, now + KEYFRAME_MIN_INTERVAL));
        l.last.remove(&1);
        assert!(l.allow(1, now));
    }

    /// A downscale is a collapse (cut at once) only when the estimate fell, and by more than half
    /// or below the current encoding's base layer; not without estimates or when it rose.
    #[test]
    fn estimate_collapse_rule() {
        // The step scenario: 2.0 → 0.37 Mbit/s with 720p's 1.5 Mbit/s being forwarded.
        assert!(estimate_collapsed(Some(2_000_000), Some(370_000), 1_500_000));
        // Fell by more than half, the base layer would still fit.
        assert!(estimate_collapsed(Some(3_000_000), Some(1_400_000), 500_000));
        // Fell 30 % and the current base layer fits: a normal (JVB) downscale.
        assert!(!estimate_collapsed(Some(2_000_000), Some(1_400_000), 500_000));
        // Fell a little, below the current base layer: collapse.
        assert!(estimate_collapsed(Some(1_600_000), Some(1_400_000), 1_500_000));
        // Rose or unchanged (constraints, last-N changed the target): never.
        assert!(!estimate_collapsed(Some(1_000_000), Some(1_000_000), 1_500_000));
        assert!(!estimate_collapsed(Some(500_000), Some(1_000_000), 1_500_000));
        // No estimate before or after.
        assert!(!estimate_collapsed(None, Some(100_000), 1_500_000));
        assert!(!estimate_collapsed(Some(3_000_000), None, 1_500_000));
    }

    /// The allocation → projection hand-over: a collapse cuts the current encoding at once
    /// (the projection waits for the lower keyframe, forwarding nothing), a mild drop keeps the
    /// plain (JVB) downscale.
    #[test]
    fn apply_target_cuts_only_on_collapse() {
        use crate::bitrate::LayerId;
        use crate::projection::{Codec, Layer, PacketMeta, Projection, Verdict};
        let now = Instant::now();
        let lid = |encoding| LayerId {
            encoding,
            spatial: 0,
            temporal: 2,
        };
        let on_720p = || {
            let mut p = Projection::new(7, Codec::Generic, 1, 1);
            p.set_target(Some(projection_layer(lid(2), None)));
            let key = PacketMeta {
                encoding: 2,
                seq: 1,
                marker: true,
                start_of_frame: true,
                end_of_frame: true,
                keyframe: true,
                ..PacketMeta::default()
            };
            assert!(matches!(p.on_packet(now, &key), Verdict::Forward(_)));
            p
        };
        let to: Layer = projection_layer(lid(1), None);
        // 2.0 → 1.5 Mbit/s, nothing known of the base layer: a plain downscale.
        let mut p = on_720p();
        assert_eq!(
            apply_target(now, &mut p, to, lid(1), None, Some(2_000_000), Some(1_500_000)),
            None
        );
        assert_eq!((p.current_encoding(), p.target()), (Some(2), Some(to)));
        // 3.0 → 1.0 Mbit/s: cut, the keyframe of encoding 1 wanted at once.
        let mut p = on_720p();
        assert_eq!(
            apply_target(now, &mut p, to, lid(1), None, Some(3_000_000), Some(1_000_000)),
            Some(1)
        );
        assert_eq!((p.current_encoding(), p.target()), (None, Some(to)));
        assert_eq!(p.needs_keyframe(), Some(1));
    }

    /// JVB's `bweChangeThreshold` for rises: an allocation keeps the estimate the previous one
    /// used until the current one is more than 15 % above it; a fall is taken at once.
    #[test]
    fn allocation_bwe_follows_large_rises_and_every_fall() {
        assert_eq!(allocation_bwe(None, Some(500_000)), Some(500_000));
        assert_eq!(allocation_bwe(Some(500_000), Some(560_000)), Some(500_000));
        assert_eq!(allocation_bwe(Some(500_000), Some(480_000)), Some(480_000));
        assert_eq!(allocation_bwe(Some(500_000), Some(580_000)), Some(580_000));
        assert_eq!(allocation_bwe(Some(500_000), Some(420_000)), Some(420_000));
        assert_eq!(allocation_bwe(Some(500_000), None), None);
    }

    /// The larger up-switch margin applies until the hold ends (or the estimate rises to 1.5×
    /// the one the hold started with), the normal one after.
    #[test]
    fn up_switch_margin_during_and_after_hold() {
        let now = Instant::now();
        let b = Some(500_000);
        assert_eq!(up_switch_margin(now, None, b), UP_SWITCH_MARGIN);
        let hold = Some((now + UP_SWITCH_HOLD, 500_000));
        assert_eq!(up_switch_margin(now, hold, b), UP_SWITCH_HOLD_MARGIN);
        assert_eq!(up_switch_margin(now, hold, Some(740_000)), UP_SWITCH_HOLD_MARGIN);
        assert_eq!(up_switch_margin(now + UP_SWITCH_HOLD, hold, b), UP_SWITCH_MARGIN);
        // The capacity came back (a step up): the hold ends early.
        assert_eq!(up_switch_margin(now, hold, Some(760_000)), UP_SWITCH_MARGIN);
        const { assert!(UP_SWITCH_HOLD_MARGIN > UP_SWITCH_MARGIN) };
    }

    /// A down-switch starts the hold only when the estimate fell; a lower layer for another
    /// reason (constraints, a layer's bitrate rising) or an up-switch does not.
    #[test]
    fn estimate_driven_down_switch_needs_a_falling_estimate() {
        use crate::allocation::{Allocation, SourceAllocation};
        use crate::bitrate::LayerId;
        let alloc = |t: Option<LayerId>| Allocation {
            sources: vec![SourceAllocation {
                source: 1u32,
                owner: EndpointId(1),
                effective: crate::bridge_channel::VideoConstraints::UNLIMITED,
                on_stage: false,
                target: t,
                ideal: Some(LayerId::new(2, 0, 2)),
                target_bps: 0,
                ideal_bps: 0,
                suspended: false,
            }],
            ..Allocation::default()
        };
        let (p360, p180) = (Some(LayerId::new(1, 0, 2)), Some(LayerId::new(0, 0, 2)));
        let before = [(1u32, p360)];
        let (hi, lo) = (Some(600_000), Some(400_000));
        assert!(estimate_driven_down_switch(hi, lo, &before, &alloc(p180)));
        assert!(estimate_driven_down_switch(hi, lo, &before, &alloc(None)));
        assert!(!estimate_driven_down_switch(hi, hi, &before, &alloc(p180)));
        assert!(!estimate_driven_down_switch(lo, hi, &before, &alloc(p180)));
        assert!(!estimate_driven_down_switch(hi, lo, &before, &alloc(p360)));
        assert!(!estimate_driven_down_switch(hi, lo, &[(1u32, p180)], &alloc(p360)));
        assert!(!estimate_driven_down_switch(None, lo, &before, &alloc(p180)));
    }

    /// NTP time follows the wall-clock anchor.
    /// In a K-SVC structure (L2T1_KEY) the upper spatial target does not contain the lower one
    /// (its delta frames never reference S0), in full SVC (L2T1) it does; the projection's
    /// "switch at once to a contained target" and the advertised active mask depend on it.
    #[test]
    fn av1_contained_decode_targets_follow_the_templates() {
        use crate::codec::av1_dd::{Dti, FrameDependencyStructure, FrameTemplate};
        let t = |sid: u8, dtis: [Dti; 2]| FrameTemplate {
            spatial_id: sid,
            temporal_id: 0,
            dtis: dtis.to_vec(),
            fdiffs: vec![],
            chain_diffs: vec![],
        };
        let structure = |s0_delta_in_dt1: Dti| FrameDependencyStructure {
            template_id_offset: 0,
            decode_target_count: 2,
            chain_count: 0,
            decode_target_protected_by_chain: vec![],
            templates: vec![
                t(0, [Dti::Switch, Dti::Switch]),
                t(0, [Dti::Required, s0_delta_in_dt1]),
                t(1, [Dti::NotPresent, Dti::Switch]),
                t(1, [Dti::NotPresent, Dti::Required]),
            ],
            resolutions: vec![],
        };
        let layer = |s: FrameDependencyStructure, sid: u8| {
            let mut v = VideoState::new(1);
            v.av1_structure = Some(s);
            let id = crate::bitrate::LayerId {
                encoding: 0,
                spatial: sid,
                temporal: 0,
            };
            projection_layer(id, Some(&v))
                .decode_target
                .map(|d| (d.index, d.active_mask))
        };
        // K-SVC: S1 delta frames stand alone, S0 delta frames are not part of DT1.
        assert_eq!(layer(structure(Dti::NotPresent), 1), Some((1, 0b10)));
        assert_eq!(layer(structure(Dti::NotPresent), 0), Some((0, 0b01)));
        // Full SVC: every S0 frame is needed by DT1 too.
        assert_eq!(layer(structure(Dti::Required), 1), Some((1, 0b11)));
        assert_eq!(layer(structure(Dti::Required), 0), Some((0, 0b01)));
    }

    #[test]
    fn ntp_from_anchor() {
        let now = Instant::now();
        let clock = ClockAnchor {
            instant: now,
            system: UNIX_EPOCH + Duration::from_millis(1500),
        };
        let ntp = ntp_time(clock, now + Duration::from_secs(1));
        assert_eq!(ntp >> 32, 2_208_988_800 + 2);
        assert_eq!((ntp & 0xFFFF_FFFF) >> 31, 1, "half a second");
    }
}
