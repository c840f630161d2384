//! The `conference-modify` handler: colibri.md §3.10, in order, against the media core.
//!
//! Jitsi's string ids (meeting-id, endpoint ids) stop here: they are interned into
//! [`ConferenceId`]/[`EndpointId`] (bridge-wide `u32` counters) and the core only sees those.
//! Requests are processed one at a time (one async lock over the whole state), which gives the
//! per-conference ordering JVB guarantees; each command to the core is a channel round trip, so
//! this is not a throughput concern at signaling rates.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use minidom::Element;
use tokio::sync::Mutex;

use sfu::control::{
    CandidateKind, Fingerprint, GroupSemantics, LocalTransport, MediaDescription, MediaKind,
    PayloadType as CorePayloadType, RemoteTransport, RtpExtension, Setup, SourceDescription, SsrcGroup, VideoType,
};
use sfu::driver::SfuHandle;
use sfu::{Command, CommandError, ConferenceId, EndpointId, Reply, Ssrc, Stats};

use super::error::{Colibri2Error, ErrorCondition};
use super::json::{JsonConferenceModified, JsonConferenceModify};
use super::{
    Candidate, ConferenceModified, ConferenceModify, DtlsFingerprint, Endpoint, EndpointResponse, ForceMute,
    IceUdpTransport, Media, MediaSource, Sctp, Source, Transport,
};

/// A boxed `Send` future, so [`MediaCore`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The part of the media core the handler drives. Implemented for [`SfuHandle`]; unit tests use
/// a fake.
pub trait MediaCore: Send + Sync + 'static {
    fn command(&self, cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>>;
    fn stats(&self) -> BoxFuture<'_, Stats>;
}

impl MediaCore for SfuHandle {
    fn command(&self, cmd: Command) -> BoxFuture<'_, Result<Reply, CommandError>> {
        Box::pin(SfuHandle::command(self, cmd))
    }

    fn stats(&self) -> BoxFuture<'_, Stats> {
        Box::pin(SfuHandle::stats(self))
    }
}

/// How long one core command may take before the request fails (default).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The only SCTP port JVB (and we) accept and answer (colibri.md §3.5).
pub const SCTP_PORT: u16 = 5000;

/// Handler settings.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// `videobridge.sctp.enabled`: accept `<sctp/>` in endpoint transports.
    pub sctp_enabled: bool,
    /// Set while in GRACEFUL_SHUTDOWN: new conferences are refused (colibri.md §7.1).
    pub graceful_shutdown: Arc<AtomicBool>,
    /// Bound on each core command ([`COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
    /// Colibri websockets (media.md §2.1): when set, every new endpoint's transport advertises
    /// one `web-socket` URL per domain.
    pub web_sockets: Option<WebSocketAdvert>,
    /// Called (synchronously, under the handler's state lock: keep it short) for every local
    /// endpoint the handler forgets: Colibri2 expire, conference expiry, or the core's own
    /// expiry. The websocket server closes the endpoint's socket with 1001 from here.
    pub endpoint_gone: Option<EndpointGoneHook>,
    /// Who may send `conference-modify` over XMPP (robustness.md §2.3). REST is not checked
    /// (it is the operator's private API).
    pub focus: FocusAuth,
    /// The media core's configured limits (the core enforces them; the handler reports them
    /// with its refusal counts, [`Colibri2Handler::limits`]).
    pub limits: sfu::config::Limits,
    /// Set while the bridge sheds load under memory pressure (`memory.rs`): new conferences
    /// and endpoints are refused with "Limit reached: memory"; existing ones are served.
    pub memory_shedding: Arc<AtomicBool>,
}

/// The XMPP senders allowed to send Colibri2 (config `xmpp.focus_jids`).
///
/// A request is authorized when its `from` (the focus's occupant JID in the brewery) or the
/// real JID the room disclosed for that occupant matches one pattern: `user@domain` or
/// `user@domain/*` (any resource), or a full `user@domain/resource`. Node and domain compare
/// case-insensitively, the resource exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FocusAuth {
    /// Anyone the XMPP layer admitted (a brewery occupant): JVB's behaviour.
    #[default]
    Any,
    Jids(Vec<String>),
}

impl FocusAuth {
    /// From `xmpp.focus_jids`: `["*"]` (or any `*` entry) allows anyone.
    pub fn from_patterns(patterns: &[String]) -> Self {
        if patterns.iter().any(|p| p.trim() == "*") {
            FocusAuth::Any
        } else {
            FocusAuth::Jids(patterns.iter().map(|p| p.trim().to_owned()).collect())
        }
    }

    /// Whether any of `senders` (JIDs, empty ones ignored) matches.
    pub fn allows(&self, senders: &[&str]) -> bool {
        match self {
            FocusAuth::Any => true,
            FocusAuth::Jids(patterns) => senders
                .iter()
                .filter(|s| !s.is_empty())
                .any(|s| patterns.iter().any(|p| jid_matches(p, s))),
        }
    }
}

fn jid_matches(pattern: &str, jid: &str) -> bool {
    let (pb, pr) = match pattern.split_once('/') {
        Some((b, "*")) => (b, None),
        Some((b, r)) => (b, Some(r)),
        None => (pattern, None),
    };
    let (jb, jr) = match jid.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (jid, None),
    };
    !pb.is_empty() && pb.eq_ignore_ascii_case(jb) && pr.is_none_or(|r| jr == Some(r))
}

/// The configured limits and how often each refused a request, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitReport {
    pub max_conferences: usize,
    pub max_endpoints_per_conference: usize,
    pub max_ssrcs_per_endpoint: usize,
    pub max_dtls_handshakes: usize,
    pub max_dtls_handshakes_per_ip: usize,
    /// DTLS handshakes holding a slot now (bridge-wide).
    pub dtls_handshakes_in_flight: usize,
    pub refused_conferences: u64,
    pub refused_endpoints: u64,
    pub refused_ssrcs: u64,
    /// `conference-modify` requests refused with `not-authorized` (not from the focus).
    pub refused_not_authorized: u64,
    /// New conferences or endpoints refused while shedding under memory pressure.
    pub refused_memory: u64,
}

#[derive(Debug, Default)]
struct Refusals {
    conferences: AtomicU64,
    endpoints: AtomicU64,
    ssrcs: AtomicU64,
    not_authorized: AtomicU64,
    memory: AtomicU64,
}

/// What goes into the advertised colibri-ws URLs:
/// `{ws|wss}://{domain}/colibri-ws/{server_id}/{conference}/{endpoint}?pwd={password}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketAdvert {
    /// One URL per entry (`host[:port]`, as clients reach the public HTTP server).
    pub domains: Vec<String>,
    /// `wss` instead of `ws` (TLS terminated in front of the bridge).
    pub tls: bool,
    pub server_id: String,
}

/// See [`HandlerConfig::endpoint_gone`].
#[derive(Clone)]
pub struct EndpointGoneHook(pub Arc<dyn Fn(ConferenceId, EndpointId) + Send + Sync>);

impl std::fmt::Debug for EndpointGoneHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointGoneHook")
    }
}

/// Length of the per-endpoint colibri-ws password (media.md §2.1).
pub const WS_PASSWORD_LEN: usize = 24;

/// What the websocket server needs to admit a socket for one endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WebSocketTarget {
    pub conf: ConferenceId,
    pub ep: EndpointId,
    /// The endpoint's colibri-ws password (never logged).
    pub password: String,
}

impl std::fmt::Debug for WebSocketTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketTarget")
            .field("conf", &self.conf)
            .field("ep", &self.ep)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            sctp_enabled: true,
            graceful_shutdown: Arc::new(AtomicBool::new(false)),
            command_timeout: COMMAND_TIMEOUT,
            web_sockets: None,
            endpoint_gone: None,
            focus: FocusAuth::Any,
            limits: sfu::config::Limits::default(),
            memory_shedding: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Current gauges and totals for stats and presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerCounts {
    pub conferences: usize,
    /// Local endpoints, visitors included (JVB's `endpoints`/`participants`).
    pub endpoints: usize,
    pub visitors: usize,
    /// Endpoints in the largest conference.
    pub largest_conference: usize,
    pub total_conferences_created: u64,
    pub total_conferences_completed: u64,
    pub total_participants: u64,
    pub total_visitors: u64,
}

/// A snapshot of one conference, for `/colibri/stats`, debug dumps and the bridge channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceInfo {
    pub id: ConferenceId,
    pub meeting_id: String,
    pub name: Option<String>,
    pub feedback_ssrcs: (Ssrc, Ssrc),
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub id: EndpointId,
    /// Jicofo's endpoint id (the MUC resource).
    pub name: String,
    pub stats_id: Option<String>,
    pub visitor: bool,
    pub sctp: bool,
    pub capabilities: Vec<String>,
    pub force_mute: ForceMute,
    /// −1 is unlimited.
    pub initial_last_n: Option<i32>,
    pub extmap_allow_mixed: bool,
    /// At least one audio (video) payload type was signalled.
    pub has_audio_pt: bool,
    pub has_video_pt: bool,
    /// The source names of the endpoint's current (full) source set.
    pub source_names: Vec<String>,
}

/// Handles Colibri2 `conference-modify` requests from XMPP and REST.
pub struct Colibri2Handler {
    core: Arc<dyn MediaCore>,
    config: HandlerConfig,
    state: Mutex<State>,
    /// Mirror of the counts, readable without awaiting the state lock.
    counts: StdMutex<HandlerCounts>,
    refusals: Refusals,
}

#[derive(Default)]
struct State {
    conferences: HashMap<String, Conference>,
    /// Reverse index: interned id → meeting-id (core events and the bridge channel use ids).
    meeting_ids: HashMap<ConferenceId, String>,
    next_conference: u32,
    next_endpoint: u32,
    totals: Totals,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    conferences_created: u64,
    conferences_completed: u64,
    participants: u64,
    visitors: u64,
}

struct Conference {
    id: ConferenceId,
    meeting_id: String,
    name: Option<String>,
    feedback: (Ssrc, Ssrc),
    created: Instant,
    /// Keyed by Jicofo's endpoint id; `order` keeps creation order for stable dumps.
    endpoints: HashMap<String, EndpointState>,
}

struct EndpointState {
    info: EndpointInfo,
    order: u64,
    /// The colibri-ws `pwd`, fixed for the endpoint's lifetime (clients re-dial the same URL).
    ws_password: String,
}

impl Colibri2Handler {
    pub fn new(core: Arc<dyn MediaCore>, config: HandlerConfig) -> Self {
        Colibri2Handler {
            core,
            config,
            state: Mutex::new(State::default()),
            counts: StdMutex::new(HandlerCounts::default()),
            refusals: Refusals::default(),
        }
    }

    /// The flag that puts the handler in graceful-shutdown mode (shared with REST/shutdown).
    pub fn graceful_shutdown_flag(&self) -> Arc<AtomicBool> {
        self.config.graceful_shutdown.clone()
    }

    /// The media core, for stats.
    pub fn core(&self) -> &Arc<dyn MediaCore> {
        &self.core
    }

    /// Handle a `<conference-modify>` element; the answer is the `<conference-modified>`
    /// element or the error to put in the error IQ.
    pub async fn handle_xml(&self, request: &Element) -> Result<Element, Colibri2Error> {
        let req = ConferenceModify::from_element(request)?;
        self.handle(req).await.map(|r| r.to_element())
    }

    /// Handle a `<conference-modify>` that came over XMPP from `senders` (the IQ's `from` and,
    /// when the room disclosed it, the sender's real JID): refused with `not-authorized`, and
    /// nothing done, unless one of them is an allowed focus ([`HandlerConfig::focus`]).
    pub async fn handle_xml_from(&self, request: &Element, senders: &[&str]) -> Result<Element, Colibri2Error> {
        self.authorize(senders)?;
        self.handle_xml(request).await
    }

    /// The focus check alone ([`Self::handle_xml_from`]); counts refusals.
    pub fn authorize(&self, senders: &[&str]) -> Result<(), Colibri2Error> {
        if self.config.focus.allows(senders) {
            return Ok(());
        }
        self.refusals.not_authorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(?senders, "conference-modify from a non-focus JID: not-authorized");
        Err(Colibri2Error::not_authorized())
    }

    /// The configured limits and the refusals counted so far.
    pub fn limits(&self) -> LimitReport {
        let l = &self.config.limits;
        let r = &self.refusals;
        LimitReport {
            max_conferences: l.max_conferences,
            max_endpoints_per_conference: l.max_endpoints_per_conference,
            max_ssrcs_per_endpoint: l.max_ssrcs_per_endpoint,
            max_dtls_handshakes: l.dtls_handshakes.max(),
            max_dtls_handshakes_per_ip: l.dtls_handshakes.per_ip(),
            dtls_handshakes_in_flight: l.dtls_handshakes.in_flight(),
            refused_conferences: r.conferences.load(Ordering::Relaxed),
            refused_endpoints: r.endpoints.load(Ordering::Relaxed),
            refused_ssrcs: r.ssrcs.load(Ordering::Relaxed),
            refused_not_authorized: r.not_authorized.load(Ordering::Relaxed),
            refused_memory: r.memory.load(Ordering::Relaxed),
        }
    }

    /// Handle the JSON form. `meeting_id` (from a PATCH path) overrides the body's.
    pub async fn handle_json(
        &self,
        body: &[u8],
        meeting_id: Option<&str>,
    ) -> Result<JsonConferenceModified, Colibri2Error> {
        let mut json = JsonConferenceModify::from_slice(body)?;
        if let Some(id) = meeting_id {
            json.meeting_id = Some(id.to_owned());
        }
        let req = ConferenceModify::try_from(json)?;
        self.handle(req).await.map(|r| JsonConferenceModified::from(&r))
    }

    /// colibri.md §3.10 steps 2–9 (step 1, the MUC admission check, is the XMPP layer's).
    #[tracing::instrument(skip_all, fields(meeting_id = %req.meeting_id))]
    pub async fn handle(&self, req: ConferenceModify) -> Result<ConferenceModified, Colibri2Error> {
        let mut guard = self.state.lock().await;
        let result = self.handle_locked(&mut guard, req).await;
        self.publish_counts(&guard);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "conference-modify refused");
        }
        result
    }

    async fn handle_locked(&self, st: &mut State, req: ConferenceModify) -> Result<ConferenceModified, Colibri2Error> {
        let meeting_id = req.meeting_id.as_str();

        // 2. Find (or create) the conference.
        let exists = st.conferences.contains_key(meeting_id);
        if req.create {
            if exists {
                return Err(Colibri2Error::conference_already_exists(meeting_id));
            }
            if self.config.graceful_shutdown.load(Ordering::Relaxed) {
                return Err(Colibri2Error::graceful_shutdown());
            }
            self.check_memory()?;
            if let Some(name) = &req.name {
                if !is_bare_jid(name) {
                    return Err(Colibri2Error::bad_request(format!("Invalid conference name: {name}")));
                }
            }
        } else if !exists {
            return Err(Colibri2Error::conference_not_found(meeting_id));
        }

        // 3. Request shape.
        check_shape(&req)?;
        if !req.relays.is_empty() {
            // Relays (Octo) are not implemented: JVB's answer when they are disabled.
            return Err(Colibri2Error::new(
                ErrorCondition::FeatureNotImplemented,
                "Octo is disabled in configuration",
            ));
        }

        let mut conference_created = false;
        if req.create {
            let conf = ConferenceId(st.next_conference);
            st.next_conference = st.next_conference.wrapping_add(1);
            let reply = self
                .command(Command::CreateConference { conf })
                .await
                .map_err(|e| Colibri2Error::from_command(&e, meeting_id, None))?;
            let Reply::ConferenceCreated { audio_ssrc, video_ssrc } = reply else {
                return Err(Colibri2Error::internal(format!(
                    "unexpected reply to CreateConference: {reply:?}"
                )));
            };
            tracing::info!(conf = %conf, name = ?req.name, "conference created");
            st.meeting_ids.insert(conf, req.meeting_id.clone());
            st.conferences.insert(
                req.meeting_id.clone(),
                Conference {
                    id: conf,
                    meeting_id: req.meeting_id.clone(),
                    name: req.name.clone(),
                    feedback: (audio_ssrc, video_ssrc),
                    created: Instant::now(),
                    endpoints: HashMap::new(),
                },
            );
            st.totals.conferences_created += 1;
            conference_created = true;
        }

        // 4. Endpoints, in document order.
        let ignorable = is_ignorable(&req);
        let mut response = ConferenceModified::default();
        let mut endpoint_created = false;
        for ep in &req.endpoints {
            let resp = self.handle_endpoint(st, meeting_id, ep, ignorable).await?;
            endpoint_created |= ep.create && resp.transport.is_some();
            response.endpoints.push(resp);
        }

        // 5. connects: media export is not implemented; accepted and ignored (§3.8).
        if req.connects {
            tracing::warn!("ignoring <connects>: media export is not supported");
        }

        // 7. Feedback sources on any create.
        let conf = st
            .conferences
            .get(meeting_id)
            .ok_or_else(|| Colibri2Error::internal("conference vanished while handling the request"))?;
        if conference_created || endpoint_created {
            response.sources = Some(feedback_sources(conf.feedback));
        }

        // 8. Expire the conference "after replying": the reply is already decided here.
        if req.expire || (!req.create && conf.endpoints.is_empty()) {
            self.expire_conference(st, meeting_id).await;
        }
        Ok(response)
    }

    async fn handle_endpoint(
        &self,
        st: &mut State,
        meeting_id: &str,
        ep: &Endpoint,
        ignorable: bool,
    ) -> Result<EndpointResponse, Colibri2Error> {
        let State {
            conferences,
            next_endpoint,
            totals,
            ..
        } = st;
        let conf = conferences
            .get_mut(meeting_id)
            .ok_or_else(|| Colibri2Error::conference_not_found(meeting_id))?;
        let conf_id = conf.id;
        let err = |e: CommandError| Colibri2Error::from_command(&e, meeting_id, Some(&ep.id));

        if ep.expire {
            if let Some(old) = conf.endpoints.remove(&ep.id) {
                tracing::info!(conf = %conf_id, ep = %old.info.id, name = %ep.id, "endpoint expired");
                self.endpoint_gone(conf_id, old.info.id);
                match self
                    .command(Command::ExpireEndpoint {
                        conf: conf_id,
                        ep: old.info.id,
                    })
                    .await
                {
                    Ok(_) | Err(CommandError::EndpointNotFound { .. }) => {}
                    Err(e) => return Err(err(e)),
                }
            }
            return Ok(EndpointResponse {
                id: ep.id.clone(),
                expire: true,
                transport: None,
            });
        }

        let mut local: Option<(LocalTransport, bool)> = None;
        if ep.create {
            if conf.endpoints.contains_key(&ep.id) {
                return Err(Colibri2Error::new(
                    ErrorCondition::Conflict,
                    format!("Endpoint with ID {} already exists", ep.id),
                ));
            }
            self.check_memory()?;
            let Some(transport) = &ep.transport else {
                return Err(Colibri2Error::bad_request(format!(
                    "Attempt to create endpoint {} without a transport",
                    ep.id
                )));
            };
            if !ep.has_capability("source-names") {
                return Err(Colibri2Error::bad_request("Source name support is mandatory."));
            }
            let sctp = match &transport.sctp {
                None => false,
                Some(sctp) => {
                    self.check_sctp(sctp)?;
                    true
                }
            };
            let visitor = ep.is_visitor();
            check_visitor_sources(ep)?;
            let id = EndpointId(*next_endpoint);
            *next_endpoint = next_endpoint.wrapping_add(1);
            let reply = self
                .command(Command::CreateEndpoint {
                    conf: conf_id,
                    ep: id,
                    ice_controlling: transport.ice_controlling,
                    sctp,
                    visitor,
                    name: ep.id.clone(),
                    ssrc_rewriting: ep.has_capability("ssrc-rewriting"),
                })
                .await
                .map_err(err)?;
            let Reply::EndpointCreated(lt) = reply else {
                return Err(Colibri2Error::internal(format!(
                    "unexpected reply to CreateEndpoint: {reply:?}"
                )));
            };
            tracing::info!(conf = %conf_id, ep = %id, name = %ep.id, visitor, sctp, "endpoint created");
            totals.participants += 1;
            if visitor {
                totals.visitors += 1;
            }
            let order = totals.participants;
            conf.endpoints.insert(
                ep.id.clone(),
                EndpointState {
                    info: EndpointInfo {
                        id,
                        name: ep.id.clone(),
                        stats_id: None,
                        visitor,
                        sctp,
                        capabilities: ep.capabilities.clone(),
                        force_mute: ForceMute::default(),
                        initial_last_n: None,
                        extmap_allow_mixed: false,
                        has_audio_pt: false,
                        has_video_pt: false,
                        source_names: vec![],
                    },
                    order,
                    ws_password: ws_password(),
                },
            );
            local = Some((lt, sctp));
        } else if !conf.endpoints.contains_key(&ep.id) {
            if ignorable {
                return Ok(EndpointResponse {
                    id: ep.id.clone(),
                    expire: false,
                    transport: None,
                });
            }
            return Err(Colibri2Error::unknown_endpoint(&ep.id));
        }

        let result = self.apply_endpoint(conf, ep).await;
        if let Err(CommandError::EndpointNotFound { .. }) = &result {
            // The core expired it on its own (inactivity) before we heard: forget it too, and let
            // Jicofo re-invite the participant (unknown_endpoint).
            if let Some(old) = conf.endpoints.remove(&ep.id) {
                self.endpoint_gone(conf_id, old.info.id);
            }
        }
        let restarted = result.map_err(err)?;
        // The response carries the transport for a create or an ICE restart (§3.10).
        let local = local.map(|(lt, sctp)| (lt, sctp, None)).or_else(|| {
            let sctp = conf.endpoints.get(&ep.id).is_some_and(|s| s.info.sctp);
            restarted.map(|(lt, generation)| (lt, sctp, generation))
        });
        let transport = local.map(|(lt, sctp, generation)| {
            let mut t = local_transport(&lt, sctp);
            if let Some(ice) = t.ice.as_mut() {
                ice.ice_generation = generation;
            }
            if let (Some(ws), Some(ice), Some(state)) =
                (&self.config.web_sockets, t.ice.as_mut(), conf.endpoints.get(&ep.id))
            {
                ice.web_sockets = web_socket_urls(ws, conf_id, &ep.id, &state.ws_password);
            }
            t
        });
        Ok(EndpointResponse {
            id: ep.id.clone(),
            expire: false,
            transport,
        })
    }

    /// Apply media, initial-last-n, transport, sources, force-mute and ice-restart, in that
    /// order (§3.10). Returns the bridge transport after an ICE restart, with its
    /// `ice-generation` (none when ICE had not connected yet and nothing was restarted).
    async fn apply_endpoint(
        &self,
        conf: &mut Conference,
        ep: &Endpoint,
    ) -> Result<Option<(LocalTransport, Option<u32>)>, CommandError> {
        let conf_id = conf.id;
        let Some(state) = conf.endpoints.get_mut(&ep.id) else {
            return Err(CommandError::Internal(format!("endpoint {} missing", ep.id)));
        };
        let ep_id = state.info.id;
        if ep.stats_id.is_some() {
            state.info.stats_id.clone_from(&ep.stats_id);
        }
        for media in &ep.media {
            let description = media_description(media);
            let has_pt = !description.payload_types.is_empty();
            self.command(Command::SetMedia {
                conf: conf_id,
                ep: ep_id,
                media: description,
            })
            .await?;
            match media.kind {
                MediaKind::Audio => state.info.has_audio_pt |= has_pt,
                MediaKind::Video => state.info.has_video_pt |= has_pt,
            }
            state.info.extmap_allow_mixed |= media.extmap_allow_mixed;
        }
        if let Some(n) = ep.initial_last_n {
            state.info.initial_last_n = Some(n);
            self.command(Command::SetInitialLastN {
                conf: conf_id,
                ep: ep_id,
                last_n: n,
            })
            .await?;
        }
        if let Some(ice) = ep.transport.as_ref().and_then(|t| t.ice.as_ref()) {
            let transport = remote_transport(ice);
            self.command(Command::SetRemoteTransport {
                conf: conf_id,
                ep: ep_id,
                transport,
            })
            .await?;
        }
        if let Some(sources) = &ep.sources {
            if state.info.visitor && !sources.is_empty() {
                return Err(CommandError::Invalid("sources on a visitor endpoint".into()));
            }
            let sources: Vec<SourceDescription> = sources.iter().map(source_description).collect();
            let names = sources.iter().map(|s| s.name.clone()).collect();
            self.command(Command::SetSources {
                conf: conf_id,
                ep: ep_id,
                sources,
            })
            .await?;
            state.info.source_names = names;
        }
        if let Some(fm) = ep.force_mute {
            state.info.force_mute = fm;
            self.command(Command::SetForceMute {
                conf: conf_id,
                ep: ep_id,
                audio: fm.audio,
                video: fm.video,
            })
            .await?;
        }
        if ep.transport.as_ref().is_some_and(|t| t.ice_restart) {
            // In-place ICE restart, last (colibri.md §3.10, §4.3): new local credentials, same
            // candidates and certificate; the DTLS association and SRTP keys stay.
            let reply = self
                .command(Command::RestartIce {
                    conf: conf_id,
                    ep: ep_id,
                })
                .await?;
            let Reply::IceRestarted { transport, generation } = reply else {
                return Err(CommandError::Internal(format!(
                    "unexpected reply to RestartIce: {reply:?}"
                )));
            };
            tracing::info!(conf = %conf_id, ep = %ep_id, ?generation, "ice-restart");
            return Ok(Some((transport, generation)));
        }
        Ok(None)
    }

    /// One command to the core, bounded in time: a stuck core becomes internal-server-error
    /// well inside Jicofo's 15 s reply timeout instead of silence (colibri.md §8, check 68).
    async fn command(&self, cmd: Command) -> Result<Reply, CommandError> {
        let limit = self.config.command_timeout;
        let r = match tokio::time::timeout(limit, self.core.command(cmd)).await {
            Ok(r) => r,
            Err(_) => Err(CommandError::Internal(format!(
                "media core did not answer within {limit:?}"
            ))),
        };
        if let Err(CommandError::LimitReached(what)) = &r {
            let counter = match *what {
                "conferences" => Some(&self.refusals.conferences),
                "endpoints per conference" => Some(&self.refusals.endpoints),
                "ssrcs per endpoint" => Some(&self.refusals.ssrcs),
                _ => None,
            };
            if let Some(c) = counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(limit = what, "request refused by a configured limit");
        }
        r
    }

    /// Refuse new conferences and endpoints while shedding under memory pressure (counted).
    fn check_memory(&self) -> Result<(), Colibri2Error> {
        if !self.config.memory_shedding.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.refusals.memory.fetch_add(1, Ordering::Relaxed);
        tracing::info!(limit = "memory", "request refused: shedding load under memory pressure");
        Err(Colibri2Error::limit_reached("memory"))
    }

    fn check_sctp(&self, sctp: &Sctp) -> Result<(), Colibri2Error> {
        if !self.config.sctp_enabled {
            return Err(Colibri2Error::new(
                ErrorCondition::FeatureNotImplemented,
                "SCTP support is not configured",
            ));
        }
        if let Some(role) = &sctp.role {
            if role != "server" {
                return Err(Colibri2Error::new(
                    ErrorCondition::FeatureNotImplemented,
                    format!("Unsupported SCTP role: {role}"),
                ));
            }
        }
        if let Some(port) = sctp.port {
            if port != SCTP_PORT {
                return Err(Colibri2Error::bad_request(format!(
                    "Specific SCTP port requested, not supported: {port}"
                )));
            }
        }
        Ok(())
    }

    async fn expire_conference(&self, st: &mut State, meeting_id: &str) {
        let Some(conf) = st.conferences.remove(meeting_id) else {
            return;
        };
        st.meeting_ids.remove(&conf.id);
        st.totals.conferences_completed += 1;
        for e in conf.endpoints.values() {
            self.endpoint_gone(conf.id, e.info.id);
        }
        tracing::info!(conf = %conf.id, endpoints = conf.endpoints.len(), "conference expired");
        if let Err(e) = self.command(Command::ExpireConference { conf: conf.id }).await {
            tracing::warn!(conf = %conf.id, error = %e, "expiring conference in the core failed");
        }
    }

    /// Background expiry (colibri.md §3.10): expire every conference with no endpoints that is
    /// older than `min_age` (JVB: 20 s, checked every minute). Returns how many were expired.
    pub async fn expire_idle_conferences(&self, now: Instant, min_age: Duration) -> usize {
        let mut st = self.state.lock().await;
        let idle: Vec<String> = st
            .conferences
            .values()
            .filter(|c| c.endpoints.is_empty() && now.saturating_duration_since(c.created) > min_age)
            .map(|c| c.meeting_id.clone())
            .collect();
        for meeting_id in &idle {
            self.expire_conference(&mut st, meeting_id).await;
        }
        self.publish_counts(&st);
        idle.len()
    }

    /// The core expired an endpoint on its own (`Event::EndpointExpired`): forget it.
    pub async fn on_endpoint_expired(&self, conf: ConferenceId, ep: EndpointId) {
        let mut st = self.state.lock().await;
        let State {
            conferences,
            meeting_ids,
            ..
        } = &mut *st;
        if let Some(c) = meeting_ids.get(&conf).and_then(|m| conferences.get_mut(m)) {
            let before = c.endpoints.len();
            c.endpoints.retain(|_, e| e.info.id != ep);
            if c.endpoints.len() != before {
                self.endpoint_gone(conf, ep);
            }
        }
        self.publish_counts(&st);
    }

    /// The colibri-ws admission data for `endpoint` (Jicofo's id) in the conference whose
    /// bridge-local id is `conf` (the id in the websocket URL). `None` when either is unknown.
    pub async fn web_socket_target(&self, conf: ConferenceId, endpoint: &str) -> Option<WebSocketTarget> {
        let st = self.state.lock().await;
        let c = st.conferences.get(st.meeting_ids.get(&conf)?)?;
        let e = c.endpoints.get(endpoint)?;
        Some(WebSocketTarget {
            conf,
            ep: e.info.id,
            password: e.ws_password.clone(),
        })
    }

    fn endpoint_gone(&self, conf: ConferenceId, ep: EndpointId) {
        if let Some(hook) = &self.config.endpoint_gone {
            (hook.0)(conf, ep);
        }
    }

    /// Whether a conference with this meeting-id exists.
    pub async fn has_conference(&self, meeting_id: &str) -> bool {
        self.state.lock().await.conferences.contains_key(meeting_id)
    }

    /// Jicofo's ids for an interned endpoint: `(meeting-id, endpoint id)`.
    pub async fn endpoint_names(&self, conf: ConferenceId, ep: EndpointId) -> Option<(String, String)> {
        let st = self.state.lock().await;
        let c = st.conferences.get(st.meeting_ids.get(&conf)?)?;
        let e = c.endpoints.values().find(|e| e.info.id == ep)?;
        Some((c.meeting_id.clone(), e.info.name.clone()))
    }

    /// The interned ids for Jicofo's `(meeting-id, endpoint id)`.
    pub async fn endpoint_ids(&self, meeting_id: &str, endpoint: &str) -> Option<(ConferenceId, EndpointId)> {
        let st = self.state.lock().await;
        let c = st.conferences.get(meeting_id)?;
        Some((c.id, c.endpoints.get(endpoint)?.info.id))
    }

    /// A snapshot of every conference, ordered by id.
    pub async fn conferences(&self) -> Vec<ConferenceInfo> {
        let st = self.state.lock().await;
        let mut out: Vec<ConferenceInfo> = st
            .conferences
            .values()
            .map(|c| {
                let mut eps: Vec<&EndpointState> = c.endpoints.values().collect();
                eps.sort_by_key(|e| e.order);
                ConferenceInfo {
                    id: c.id,
                    meeting_id: c.meeting_id.clone(),
                    name: c.name.clone(),
                    feedback_ssrcs: c.feedback,
                    endpoints: eps.into_iter().map(|e| e.info.clone()).collect(),
                }
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Current counts (no await: readable from presence timers).
    pub fn counts(&self) -> HandlerCounts {
        match self.counts.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn publish_counts(&self, st: &State) {
        let mut c = HandlerCounts {
            conferences: st.conferences.len(),
            total_conferences_created: st.totals.conferences_created,
            total_conferences_completed: st.totals.conferences_completed,
            total_participants: st.totals.participants,
            total_visitors: st.totals.visitors,
            ..Default::default()
        };
        for conf in st.conferences.values() {
            c.endpoints += conf.endpoints.len();
            c.visitors += conf.endpoints.values().filter(|e| e.info.visitor).count();
            c.largest_conference = c.largest_conference.max(conf.endpoints.len());
        }
        match self.counts.lock() {
            Ok(mut slot) => *slot = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }
}

/// A fresh colibri-ws password: [`WS_PASSWORD_LEN`] characters from `[a-zA-Z0-9]`, from the
/// thread-local CSPRNG (it guards the endpoint's bridge channel, so it must not be guessable).
fn ws_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), WS_PASSWORD_LEN)
}

/// One URL per configured domain (media.md §2.1).
fn web_socket_urls(ws: &WebSocketAdvert, conf: ConferenceId, endpoint: &str, password: &str) -> Vec<super::WebSocket> {
    let scheme = if ws.tls { "wss" } else { "ws" };
    ws.domains
        .iter()
        .map(|domain| super::WebSocket {
            url: Some(format!(
                "{scheme}://{domain}/colibri-ws/{}/{conf}/{endpoint}?pwd={password}",
                ws.server_id
            )),
            active: false,
        })
        .collect()
}

/// §3.10 step 3: several endpoints only for batch expiry / force-mute; no endpoint/relay mix;
/// at most one relay.
fn check_shape(req: &ConferenceModify) -> Result<(), Colibri2Error> {
    if !req.endpoints.is_empty() && !req.relays.is_empty() {
        return Err(Colibri2Error::feature_not_implemented(
            "Using both endpoints and relays in the same request is not supported",
        ));
    }
    if req.relays.len() > 1 {
        return Err(Colibri2Error::feature_not_implemented(
            "Using more than one relay in a request is not supported",
        ));
    }
    if req.endpoints.len() > 1
        && req
            .endpoints
            .iter()
            .any(|e| e.create || !e.media.is_empty() || e.transport.is_some() || e.sources.is_some())
    {
        return Err(Colibri2Error::feature_not_implemented(
            "Using more than one endpoint in a request is only supported for expire and force-mute",
        ));
    }
    Ok(())
}

/// A request is "ignorable" for unknown endpoints when it only expires and/or force-mutes.
fn is_ignorable(req: &ConferenceModify) -> bool {
    req.endpoints
        .iter()
        .all(|e| !e.create && e.media.is_empty() && e.transport.is_none() && e.sources.is_none())
        && req.relays.iter().all(|r| r.expire)
}

fn check_visitor_sources(ep: &Endpoint) -> Result<(), Colibri2Error> {
    if ep.is_visitor() && ep.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(Colibri2Error::bad_request(format!(
            "Sources on visitor endpoint {}",
            ep.id
        )));
    }
    Ok(())
}

/// A bare JID `local@domain` (or a bare domain): no resource, no whitespace, parts non-empty
/// and at most 1023 bytes (RFC 7622 §3.1).
fn is_bare_jid(s: &str) -> bool {
    if s.is_empty() || s.contains('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let (local, domain) = match s.split_once('@') {
        Some((l, d)) => (Some(l), d),
        None => (None, s),
    };
    let part_ok = |p: &str| !p.is_empty() && p.len() <= 1023;
    local.is_none_or(|l| part_ok(l) && !l.contains(['"', '&', '\'', ':', '<', '>']))
        && part_ok(domain)
        && !domain.contains('@')
}

fn feedback_sources((audio, video): (Ssrc, Ssrc)) -> Vec<MediaSource> {
    let one = |kind, name: &str, ssrc: Ssrc| MediaSource {
        kind,
        id: name.to_owned(),
        synthetic: false,
        sources: vec![Source {
            ssrc: ssrc.0,
            name: Some(name.to_owned()),
            video_type: None,
            rid: None,
            msid: None,
        }],
        ssrc_groups: vec![],
    };
    vec![
        one(MediaKind::Audio, "jvb-a0", audio),
        one(MediaKind::Video, "jvb-v0", video),
    ]
}

/// The bridge side of a new endpoint's transport (colibri.md §3.5, §4.1).
fn local_transport(lt: &LocalTransport, sctp: bool) -> Transport {
    let candidates = lt
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (cand_type, rel_addr, rel_port) = match c.kind {
                CandidateKind::Host => ("host", None, None),
                CandidateKind::Srflx => (
                    "srflx",
                    c.related.map(|r| r.ip().to_string()),
                    c.related.map(|r| r.port()),
                ),
            };
            Candidate {
                component: 1,
                foundation: c.foundation.clone(),
                generation: 0,
                id: Some(format!("{:x}{:02x}", c.priority, i)),
                ip: c.addr.ip().to_string(),
                port: c.addr.port(),
                priority: c.priority,
                protocol: "udp".into(),
                cand_type: cand_type.into(),
                rel_addr,
                rel_port,
                network: Some(0),
                tcptype: None,
            }
        })
        .collect();
    Transport {
        ice: Some(IceUdpTransport {
            ufrag: Some(lt.ufrag.clone()),
            pwd: Some(lt.pwd.clone()),
            ice_generation: None,
            rtcp_mux: true,
            candidates,
            fingerprints: vec![DtlsFingerprint {
                fingerprint: lt.fingerprint_sha256.clone(),
                hash: Some("sha-256".into()),
                setup: Some("actpass".into()),
                cryptex: false,
            }],
            web_sockets: vec![],
        }),
        sctp: sctp.then(|| Sctp {
            port: Some(SCTP_PORT),
            role: Some("server".into()),
        }),
        ..Default::default()
    }
}

fn media_description(media: &Media) -> MediaDescription {
    MediaDescription {
        kind: media.kind,
        payload_types: media
            .payload_types
            .iter()
            .map(|pt| CorePayloadType {
                pt: pt.id,
                name: pt.name.clone().unwrap_or_default(),
                clock_rate: pt.clockrate.unwrap_or(0),
                apt: pt.parameter("apt").and_then(|v| v.trim().parse().ok()),
                feedback: pt
                    .rtcp_fbs
                    .iter()
                    .map(|fb| (fb.fb_type.clone(), fb.subtype.clone()))
                    .collect(),
            })
            .collect(),
        extensions: media
            .rtp_hdrexts
            .iter()
            .map(|x| RtpExtension {
                id: x.id,
                uri: x.uri.clone(),
            })
            .collect(),
    }
}

/// The client's transport: fingerprints decoded, only literal-IP UDP candidates of generation 0.
/// Malformed pieces are dropped with a log rather than refused: in the update path any error
/// makes Jicofo tear down the whole session (colibri.md §3.12).
fn remote_transport(ice: &IceUdpTransport) -> RemoteTransport {
    let fingerprints = ice
        .fingerprints
        .iter()
        .filter_map(|f| {
            let value = decode_fingerprint(&f.fingerprint);
            if value.is_none() {
                tracing::warn!(fingerprint = %super::truncated(&f.fingerprint), "ignoring malformed fingerprint");
            }
            Some(Fingerprint {
                hash: f.hash.as_deref().unwrap_or("sha-256").to_ascii_lowercase(),
                value: value?,
                setup: f.setup.as_deref().and_then(parse_setup),
            })
        })
        .collect();
    let candidates = ice
        .candidates
        .iter()
        // Generation 0, or that of the ICE restart this transport answers (§3.5, §4.3).
        .filter(|c| {
            c.protocol.eq_ignore_ascii_case("udp") && (c.generation == 0 || Some(c.generation) == ice.ice_generation)
        })
        .filter_map(|c| Some(SocketAddr::new(c.ip.parse::<IpAddr>().ok()?, c.port)))
        .collect();
    RemoteTransport {
        ufrag: ice.ufrag.clone(),
        pwd: ice.pwd.clone(),
        fingerprints,
        candidates,
    }
}

/// `AB:CD:…` (any case) to bytes.
fn decode_fingerprint(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect()
}

fn parse_setup(s: &str) -> Option<Setup> {
    match s.to_ascii_lowercase().as_str() {
        "active" => Some(Setup::Active),
        "passive" => Some(Setup::Passive),
        "actpass" => Some(Setup::ActPass),
        _ => None,
    }
}

fn source_description(ms: &MediaSource) -> SourceDescription {
    let mut ssrcs: Vec<Ssrc> = Vec::with_capacity(ms.sources.len());
    for s in &ms.sources {
        if !ssrcs.contains(&Ssrc(s.ssrc)) {
            ssrcs.push(Ssrc(s.ssrc));
        }
    }
    let groups = ms
        .ssrc_groups
        .iter()
        .filter(|g| g.ssrcs.len() >= 2)
        .filter_map(|g| {
            let semantics = match g.semantics.to_ascii_uppercase().as_str() {
                "SIM" => GroupSemantics::Sim,
                "FID" => GroupSemantics::Fid,
                "FEC-FR" => GroupSemantics::FecFr,
                _ => return None,
            };
            Some(SsrcGroup {
                semantics,
                ssrcs: g.ssrcs.iter().map(|s| Ssrc(*s)).collect(),
            })
        })
        .collect();
    let video_type = ms.sources.iter().find_map(|s| {
        let t = s.video_type.as_deref()?.to_ascii_lowercase();
        match t.as_str() {
            "camera" => Some(VideoType::Camera),
            "desktop" | "desktop_high_fps" => Some(VideoType::Desktop),
            _ => None,
        }
    });
    SourceDescription {
        kind: ms.kind,
        name: ms.id.clone(),
        ssrcs,
        groups,
        video_type,
    }
}

#[cfg(test)]
mod tests;
