//! The connection task: connect, run one session until it fails, wait the reconnect delay,
//! and again, forever; plus the cheap cloneable handle the rest of Palim holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use rustls::ClientConfig;
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::config::XmppConfig;
use super::iq::{
    bare_lower, build_reply, classify_iq, set_attr, Condition, IncomingIq, IqHandler, IqKind, IqResponse, IqType,
    StanzaError,
};
use super::muc::{
    presence_to, room_config_submit, stats_element, unavailable_to, Occupant, PresenceEvent, PresenceSource, Room,
    RoomUpdate,
};
use super::reader::{XmlEvent, XmlReader};
use super::stream::{self, check_stream_error, read_event, serialize, write_bytes, BoxedStream};
use super::{ns, tls, XmppError};

/// What the rest of Palim (REST health, stats) can see of the connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionState {
    /// Logged in and bound.
    pub connected: bool,
    /// Our full JID while connected.
    pub jid: Option<String>,
    pub rooms: Vec<RoomState>,
    /// Successful logins since start (1 after the first; each reconnect adds one).
    pub sessions: u64,
    /// The error that ended the last session or connection attempt.
    pub last_error: Option<String>,
    /// Stanzas over the size limit that were skipped (an IQ request among them answered with
    /// an error) instead of ending the session.
    pub oversized_stanzas: u64,
}

impl ConnectionState {
    /// Connected and present in every configured room.
    pub fn all_joined(&self) -> bool {
        self.connected && self.rooms.iter().all(|r| r.joined)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomState {
    pub jid: String,
    pub joined: bool,
    /// Everyone in the room, us included, as last seen in presence.
    pub occupants: Vec<Occupant>,
}

/// Why an IQ we sent got no result.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum SendIqError {
    #[error("not connected")]
    NotConnected,
    #[error("connection lost before the reply")]
    Disconnected,
    #[error("no reply in time")]
    Timeout,
    #[error("client shut down")]
    Closed,
    #[error("not an IQ request: {0}")]
    Invalid(&'static str),
    #[error("error reply: {0}")]
    Stanza(StanzaError),
}

enum Command {
    SendIq {
        iq: Element,
        reply: oneshot::Sender<Result<Element, SendIqError>>,
    },
    RefreshPresence,
    Shutdown,
}

struct Shared {
    cmd_tx: mpsc::UnboundedSender<Command>,
    state_rx: watch::Receiver<ConnectionState>,
    presence_tx: broadcast::Sender<PresenceEvent>,
    next_id: Arc<AtomicU64>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// `host:port` of the server, for metrics labels.
    server: String,
}

/// Handle to one XMPP connection. Cheap to clone; the connection task ends when
/// [`Self::shutdown`] is called or the last clone is dropped (both leave the rooms gracefully).
#[derive(Clone)]
pub struct XmppClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for XmppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppClient")
            .field("state", &*self.shared.state_rx.borrow())
            .finish()
    }
}

impl XmppClient {
    /// Starts the connection task on the current tokio runtime. Fails only on an invalid
    /// configuration ([`XmppConfig::validate`], an unreadable `ca_file`); connection problems
    /// are retried forever and visible in [`Self::state`].
    pub fn spawn<H: IqHandler>(
        config: XmppConfig,
        handler: Arc<H>,
        presence: Option<Arc<dyn PresenceSource>>,
    ) -> Result<Self, XmppError> {
        config.validate().map_err(XmppError::Config)?;
        let tls = tls::client_config(&config)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let rooms: Vec<RoomState> = config
            .muc_jids
            .iter()
            .map(|j| RoomState {
                jid: j.clone(),
                ..RoomState::default()
            })
            .collect();
        let (state_tx, state_rx) = watch::channel(ConnectionState {
            rooms,
            ..ConnectionState::default()
        });
        let (presence_tx, _) = broadcast::channel(1024);
        let next_id = Arc::new(AtomicU64::new(1));
        let server = if config.host.contains(':') {
            format!("[{}]:{}", config.host, config.port)
        } else {
            format!("{}:{}", config.host, config.port)
        };
        let task = Task {
            cfg: Arc::new(config),
            tls,
            handler,
            presence,
            cmd_rx,
            state_tx,
            presence_tx: presence_tx.clone(),
            next_id: next_id.clone(),
        };
        let join = tokio::spawn(task.run());
        Ok(Self {
            shared: Arc::new(Shared {
                cmd_tx,
                state_rx,
                presence_tx,
                next_id,
                task: Mutex::new(Some(join)),
                server,
            }),
        })
    }

    /// The server this client connects to, `host:port` (`[v6]:port`).
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    pub fn state(&self) -> ConnectionState {
        let mut st = self.shared.state_rx.borrow().clone();
        if self.shared.cmd_tx.is_closed() {
            // The connection task is gone (shut down, or a bug made it panic): whatever it
            // last published is stale.
            st.connected = false;
            st.jid = None;
            for r in &mut st.rooms {
                r.joined = false;
                r.occupants.clear();
            }
            st.last_error
                .get_or_insert_with(|| "XMPP connection task ended".to_owned());
        }
        st
    }

    /// Changes whenever the connection, a room join or an occupant changes.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state_rx.clone()
    }

    pub fn is_connected(&self) -> bool {
        !self.shared.cmd_tx.is_closed() && self.shared.state_rx.borrow().connected
    }

    /// Connected and joined to every configured room.
    pub fn is_joined(&self) -> bool {
        !self.shared.cmd_tx.is_closed() && self.shared.state_rx.borrow().all_joined()
    }

    /// Every presence seen in our rooms (others' and our own reflected), from now on.
    pub fn subscribe_presence(&self) -> broadcast::Receiver<PresenceEvent> {
        self.shared.presence_tx.subscribe()
    }

    /// Sends the stats presence now instead of at the next tick (e.g. after drain or
    /// graceful-shutdown changed, so Jicofo learns it at once).
    pub fn refresh_presence(&self) {
        let _ = self.shared.cmd_tx.send(Command::RefreshPresence);
    }

    /// Sends `<iq type=kind to=to>payload</iq>` and waits for the reply: `Ok(child)` for a
    /// result, `Err(Stanza(..))` for an error reply.
    pub async fn send_iq(
        &self,
        to: &str,
        kind: IqType,
        payload: Element,
        wait: Duration,
    ) -> Result<Option<Element>, SendIqError> {
        let mut iq = Element::bare("iq", ns::CLIENT);
        set_attr(&mut iq, "to", to);
        set_attr(&mut iq, "type", kind.as_str());
        iq.append_child(payload);
        let reply = self.send_iq_stanza(iq, wait).await?;
        if reply.attr("type") == Some("error") {
            return Err(SendIqError::Stanza(
                StanzaError::from_stanza(&reply).unwrap_or_else(|| StanzaError::new(Condition::UndefinedCondition, "")),
            ));
        }
        Ok(reply.children().next().cloned())
    }

    /// Sends a complete `<iq>` as given (an `id` is added if missing) and returns the whole
    /// reply stanza, result or error. For tests and unusual requests.
    pub async fn send_iq_stanza(&self, mut iq: Element, wait: Duration) -> Result<Element, SendIqError> {
        if !iq.is("iq", ns::CLIENT) {
            return Err(SendIqError::Invalid("not a jabber:client <iq>"));
        }
        if !matches!(iq.attr("type"), Some("get") | Some("set")) {
            return Err(SendIqError::Invalid("type must be get or set"));
        }
        if iq.attr("id").is_none() {
            let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            set_attr(&mut iq, "id", format!("palim-q{n}"));
        }
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd_tx
            .send(Command::SendIq { iq, reply: tx })
            .map_err(|_| SendIqError::Closed)?;
        match timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SendIqError::Disconnected),
            Err(_) => Err(SendIqError::Timeout),
        }
    }

    /// Leaves the rooms (unavailable presence), closes the stream and stops reconnecting.
    /// Returns when the connection task has ended (bounded: a few seconds at most).
    pub async fn shutdown(&self) {
        let _ = self.shared.cmd_tx.send(Command::Shutdown);
        let join = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(mut join) = join {
            if timeout(Duration::from_secs(5), &mut join).await.is_err() {
                warn!("XMPP task did not end in time; aborting it");
                join.abort();
            }
        }
    }
}

/// The connection task's state across sessions.
struct Task<H> {
    cfg: Arc<XmppConfig>,
    tls: Arc<ClientConfig>,
    handler: Arc<H>,
    presence: Option<Arc<dyn PresenceSource>>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    state_tx: watch::Sender<ConnectionState>,
    presence_tx: broadcast::Sender<PresenceEvent>,
    next_id: Arc<AtomicU64>,
}

/// How a session ended.
enum End {
    Shutdown,
    Failed(XmppError),
}

impl<H: IqHandler> Task<H> {
    async fn run(mut self) {
        let host = format!("{}:{}", self.cfg.host, self.cfg.port);
        // Consecutive failed attempts since the last successful login (backoff exponent).
        let mut failures: u32 = 0;
        loop {
            let (cfg, tls) = (self.cfg.clone(), self.tls.clone());
            let attempt = timeout(
                self.cfg.connect_timeout,
                async move { stream::connect(&cfg, &tls).await },
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    cmd = self.cmd_rx.recv() => if !idle_command(cmd) { return },
                }
            };
            let end = match result {
                Ok(Ok(neg)) => {
                    info!(jid = %neg.jid, %host, "XMPP connected");
                    failures = 0;
                    self.run_session(neg).await
                }
                Ok(Err(e)) => {
                    failures = failures.saturating_add(1);
                    End::Failed(e)
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    End::Failed(XmppError::Timeout("connect"))
                }
            };
            let err = match end {
                End::Shutdown => return,
                End::Failed(e) => e,
            };
            warn!(%host, error = %err, "XMPP connection failed; reconnecting");
            self.state_tx.send_modify(|s| {
                s.connected = false;
                s.jid = None;
                s.last_error = Some(err.to_string());
                for r in &mut s.rooms {
                    r.joined = false;
                    r.occupants.clear();
                }
            });
            let wait = reconnect_backoff(self.cfg.reconnect_delay, self.cfg.reconnect_max_delay, failures);
            debug!(%host, ?wait, failures, "XMPP reconnect scheduled");
            let delay = sleep(wait);
            tokio::pin!(delay);
            loop {
                tokio::select! {
                    _ = &mut delay => break,
                    cmd = self.cmd_rx.recv() => if !idle_command(cmd) { return },
                }
            }
        }
    }

    async fn run_session(&mut self, neg: stream::Negotiated) -> End {
        let (mut rd, wr) = tokio::io::split(neg.stream);
        let mut reader = neg.reader;
        let mut buf = vec![0u8; stream::READ_BUF];
        let (out_tx, mut out_rx) = mpsc::channel::<Element>(1024);
        let rooms = self
            .cfg
            .muc_jids
            .iter()
            .map(|j| Room::new(j, &self.cfg.muc_nickname))
            .collect();
        let mut s = Session {
            cfg: self.cfg.clone(),
            handler: self.handler.clone(),
            presence: self.presence.clone(),
            wr,
            jid: neg.jid.clone(),
            rooms,
            pending: HashMap::new(),
            out_tx,
            state_tx: &self.state_tx,
            presence_tx: &self.presence_tx,
            next_id: self.next_id.clone(),
            ping_deadline: None,
        };
        self.state_tx.send_modify(|st| {
            st.connected = true;
            st.jid = Some(neg.jid.clone());
            st.sessions += 1;
        });
        let result = s
            .serve(&mut rd, &mut reader, &mut buf, &mut out_rx, &mut self.cmd_rx)
            .await;
        match result {
            Ok(()) => {
                s.close(&mut rd, &mut reader, &mut buf).await;
                End::Shutdown
            }
            Err(e) => {
                s.fail_pending();
                End::Failed(e)
            }
        }
    }
}

/// What an IQ we sent is waiting for.
enum Pending {
    Caller(oneshot::Sender<Result<Element, SendIqError>>),
    Ping,
    RoomConfig(String),
}

/// One logged-in stream.
struct Session<'t, H> {
    cfg: Arc<XmppConfig>,
    handler: Arc<H>,
    presence: Option<Arc<dyn PresenceSource>>,
    wr: WriteHalf<BoxedStream>,
    jid: String,
    rooms: Vec<Room>,
    pending: HashMap<String, Pending>,
    /// Replies from handler tasks. A fresh channel per session: a reply computed after the
    /// stream it came from died is dropped, never sent on the next stream.
    out_tx: mpsc::Sender<Element>,
    state_tx: &'t watch::Sender<ConnectionState>,
    presence_tx: &'t broadcast::Sender<PresenceEvent>,
    next_id: Arc<AtomicU64>,
    ping_deadline: Option<Instant>,
}

impl<H: IqHandler> Session<'_, H> {
    /// Runs until shutdown (`Ok`) or failure.
    async fn serve(
        &mut self,
        rd: &mut ReadHalf<BoxedStream>,
        reader: &mut XmlReader,
        buf: &mut [u8],
        out_rx: &mut mpsc::Receiver<Element>,
        cmd_rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), XmppError> {
        self.send_presence_all().await?;
        let now = Instant::now();
        let mut presence_tick = interval_at(now + self.cfg.presence_interval, self.cfg.presence_interval);
        presence_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping_tick = interval_at(now + self.cfg.ping_interval, self.cfg.ping_interval);
        ping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let ping_deadline = self.ping_deadline;
            tokio::select! {
                ev = read_event(rd, reader, buf) => match ev? {
                    XmlEvent::Stanza(el) => self.handle_stanza(el).await?,
                    XmlEvent::Oversized(top) => self.handle_oversized(top).await?,
                    XmlEvent::StreamClose => return Err(XmppError::StreamClosed),
                    XmlEvent::StreamOpen { .. } => {
                        return Err(XmppError::Protocol("second stream header".into()))
                    }
                },
                Some(reply) = out_rx.recv() => self.write(&reply).await?,
                cmd = cmd_rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => return Ok(()),
                    Some(Command::SendIq { iq, reply }) => {
                        if let Some(id) = iq.attr("id") {
                            self.pending.insert(id.to_owned(), Pending::Caller(reply));
                        }
                        self.write(&iq).await?;
                    }
                    Some(Command::RefreshPresence) => self.send_presence_all().await?,
                },
                _ = presence_tick.tick() => self.send_presence_all().await?,
                _ = ping_tick.tick() => {
                    // Callers that gave up waiting leave closed senders behind.
                    self.pending.retain(|_, p| !matches!(p, Pending::Caller(tx) if tx.is_closed()));
                    if self.ping_deadline.is_none() {
                        self.send_ping().await?;
                    }
                }
                _ = sleep_until(ping_deadline.unwrap_or_else(Instant::now)), if ping_deadline.is_some() => {
                    return Err(XmppError::PingTimeout);
                }
            }
        }
    }

    async fn handle_stanza(&mut self, el: Element) -> Result<(), XmppError> {
        if el.ns() != ns::CLIENT {
            check_stream_error(&el)?;
            debug!(name = el.name(), ns = %el.ns(), "ignoring non-stanza element");
            return Ok(());
        }
        match el.name() {
            "iq" => self.handle_iq(el).await,
            "presence" => self.handle_presence(el).await,
            _ => {
                debug!(name = el.name(), "ignoring stanza");
                Ok(())
            }
        }
    }

    /// A stanza over the size limit, skipped by the reader (`top`: its top element without
    /// children). An IQ request gets an error answer (robustness.md case 31: an error, the
    /// session stays up, nothing changes); anything else is dropped.
    async fn handle_oversized(&mut self, top: Element) -> Result<(), XmppError> {
        self.state_tx.send_modify(|st| st.oversized_stanzas += 1);
        let (from, to, id) = (top.attr("from"), top.attr("to"), top.attr("id"));
        warn!(
            name = top.name(),
            ?from,
            ?id,
            limit = self.cfg.max_stanza_size,
            "stanza over the size limit skipped"
        );
        let request = top.is("iq", ns::CLIENT) && matches!(top.attr("type"), Some("get" | "set"));
        if !request || id.is_none() {
            return Ok(());
        }
        let err = StanzaError::new(
            Condition::PolicyViolation,
            format!("stanza larger than {} bytes", self.cfg.max_stanza_size),
        );
        let reply = build_reply(id, from, to, &IqResponse::Error(err));
        self.write(&reply).await
    }

    async fn handle_iq(&mut self, el: Element) -> Result<(), XmppError> {
        let from = el.attr("from");
        let to = el.attr("to");
        let (kind, id, payload) = match classify_iq(&el) {
            IqKind::Request { kind, id, payload } => (kind, id, payload),
            IqKind::Malformed { id, error } => {
                warn!(from = ?from, %error, "malformed IQ");
                let reply = build_reply(id, from, to, &IqResponse::Error(error));
                return self.write(&reply).await;
            }
            IqKind::Response { id, is_error } => {
                match self.pending.remove(id) {
                    Some(Pending::Caller(tx)) => {
                        let _ = tx.send(Ok(el.clone()));
                    }
                    Some(Pending::Ping) => self.ping_deadline = None,
                    Some(Pending::RoomConfig(room)) => {
                        if is_error {
                            warn!(%room, error = ?StanzaError::from_stanza(&el), "room configuration refused");
                        } else {
                            debug!(%room, "room configured (whois=anyone)");
                        }
                    }
                    None => debug!(id, "reply to nothing we are waiting for"),
                }
                return Ok(());
            }
            IqKind::Ignore(why) => {
                debug!(why, "ignoring IQ");
                return Ok(());
            }
        };
        let reply_with = |resp: IqResponse| build_reply(Some(id), from, to, &resp);

        // XMPP ping: answered for anyone (the server pings too).
        if payload.is("ping", ns::PING) {
            let resp = match kind {
                IqType::Get => IqResponse::Result(None),
                IqType::Set => bad_type("ping"),
            };
            return self.write(&reply_with(resp)).await;
        }

        // Admission (JVB: jicoco MucClient): only occupants of a configured room, i.e. the
        // bare `from` is one of our room JIDs. The room relays IQs only from its occupants.
        let from_bare = from.map(bare_lower).unwrap_or_default();
        let Some(room) = self.rooms.iter().find(|r| r.jid_lower == from_bare) else {
            warn!(from = ?from, payload = payload.name(), "IQ from outside the brewery: forbidden");
            let err = StanzaError::new(Condition::Forbidden, "Not a brewery occupant");
            return self.write(&reply_with(IqResponse::Error(err))).await;
        };
        let mut from_real_jid = None;
        if let Some(nick) = from.and_then(|f| f.split_once('/')).map(|(_, n)| n) {
            match room.occupants.get(nick) {
                Some(o) => from_real_jid.clone_from(&o.real_jid),
                None => debug!(nick, "IQ from an occupant we have no presence for yet"),
            }
        }

        if payload.is("healthcheck", ns::HEALTHCHECK) {
            let resp = match kind {
                IqType::Set => bad_type("healthcheck"),
                IqType::Get => match self.handler.health_check() {
                    Ok(()) => IqResponse::Result(None),
                    Err(reason) => IqResponse::Error(StanzaError::new(Condition::InternalServerError, reason)),
                },
            };
            return self.write(&reply_with(resp)).await;
        }
        if payload.is("query", ns::VERSION) {
            let resp = match kind {
                IqType::Set => bad_type("version"),
                IqType::Get => IqResponse::Result(Some(self.version_query())),
            };
            return self.write(&reply_with(resp)).await;
        }
        if payload.is("query", ns::DISCO_INFO) && kind == IqType::Get {
            return self.write(&reply_with(IqResponse::Result(Some(disco_info())))).await;
        }

        if !self.handler.accepts(payload) {
            debug!(name = payload.name(), ns = %payload.ns(), "unsupported IQ payload");
            let err = StanzaError::new(Condition::ServiceUnavailable, "Unsupported IQ request");
            return self.write(&reply_with(IqResponse::Error(err))).await;
        }
        let incoming = IncomingIq {
            id: id.to_owned(),
            from: from.unwrap_or_default().to_owned(),
            from_real_jid,
            to: to.map(str::to_owned).unwrap_or_else(|| self.jid.clone()),
            kind,
            payload: payload.clone(),
        };
        // Called here, in stanza order; only the returned future runs concurrently.
        let fut = self.handler.clone().handle_iq(incoming);
        let out_tx = self.out_tx.clone();
        let limit = self.cfg.iq_handler_timeout;
        let (id, from, to) = (id.to_owned(), from.map(str::to_owned), to.map(str::to_owned));
        tokio::spawn(async move {
            let mut job = tokio::spawn(fut);
            let resp = match timeout(limit, &mut job).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    warn!(%id, error = %e, "IQ handler failed");
                    IqResponse::Error(StanzaError::new(
                        Condition::InternalServerError,
                        "internal error while handling the request",
                    ))
                }
                Err(_) => {
                    job.abort();
                    warn!(%id, "IQ handler timed out");
                    IqResponse::Error(StanzaError::new(
                        Condition::InternalServerError,
                        "timed out handling the request",
                    ))
                }
            };
            let reply = build_reply(Some(&id), from.as_deref(), to.as_deref(), &resp);
            if out_tx.send(reply).await.is_err() {
                debug!(%id, "connection gone; IQ reply dropped");
            }
        });
        Ok(())
    }

    async fn handle_presence(&mut self, el: Element) -> Result<(), XmppError> {
        let from_bare = el.attr("from").map(bare_lower).unwrap_or_default();
        let Some(idx) = self.rooms.iter().position(|r| r.jid_lower == from_bare) else {
            debug!(from = ?el.attr("from"), "presence from outside our rooms");
            return Ok(());
        };
        let (update, event) = self.rooms[idx].handle_presence(&el);
        let room_jid = self.rooms[idx].jid.clone();
        match update {
            RoomUpdate::Nothing => {}
            RoomUpdate::Joined { created } => {
                info!(room = %room_jid, nick = %self.cfg.muc_nickname, created, "joined MUC");
                if created {
                    let id = self.new_id();
                    self.pending.insert(id.clone(), Pending::RoomConfig(room_jid.clone()));
                    self.write(&room_config_submit(&room_jid, &id)).await?;
                }
            }
            RoomUpdate::Left { reason } => {
                warn!(room = %room_jid, %reason, "not in MUC; will rejoin at the next presence tick");
            }
        }
        self.publish_rooms();
        if let Some(ev) = event {
            let _ = self.presence_tx.send(ev);
        }
        Ok(())
    }

    fn publish_rooms(&self) {
        self.state_tx.send_modify(|st| {
            st.rooms = self
                .rooms
                .iter()
                .map(|r| RoomState {
                    jid: r.jid.clone(),
                    joined: r.joined,
                    occupants: r.occupants.values().cloned().collect(),
                })
                .collect();
        });
    }

    /// Stats presence to every joined room; a (re)join presence to every other room.
    async fn send_presence_all(&mut self) -> Result<(), XmppError> {
        let mut ext = Vec::new();
        if let Some(src) = &self.presence {
            ext.push(stats_element(&src.stats(), self.cfg.stats_whitelist.as_deref()));
            ext.extend(src.extensions());
        }
        let mut out = Vec::new();
        for room in &self.rooms {
            if room.joined && ext.is_empty() {
                continue;
            }
            out.push(presence_to(&room.jid, &room.nick, !room.joined, ext.clone()));
        }
        for p in out {
            self.write(&p).await?;
        }
        Ok(())
    }

    async fn send_ping(&mut self) -> Result<(), XmppError> {
        let id = self.new_id();
        let mut iq = Element::bare("iq", ns::CLIENT);
        set_attr(&mut iq, "type", "get");
        set_attr(&mut iq, "id", id.as_str());
        set_attr(&mut iq, "to", self.cfg.effective_domain());
        iq.append_child(Element::bare("ping", ns::PING));
        self.pending.insert(id, Pending::Ping);
        self.ping_deadline = Some(Instant::now() + self.cfg.ping_timeout);
        self.write(&iq).await
    }

    fn version_query(&self) -> Element {
        let mut q = Element::bare("query", ns::VERSION);
        for (name, value) in [
            ("name", self.cfg.software_name.as_str()),
            ("version", self.cfg.software_version.as_str()),
            ("os", std::env::consts::OS),
        ] {
            let mut e = Element::bare(name, ns::VERSION);
            e.append_text(value);
            q.append_child(e);
        }
        q
    }

    fn new_id(&self) -> String {
        format!("palim-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    async fn write(&mut self, el: &Element) -> Result<(), XmppError> {
        let bytes = serialize(el)?;
        write_bytes(&mut self.wr, &bytes, self.cfg.write_timeout).await
    }

    /// Graceful end: unavailable presence to every joined room, `</stream:stream>`, and a short
    /// wait for the server's own close so the presence is processed before the TCP close.
    async fn close(&mut self, rd: &mut ReadHalf<BoxedStream>, reader: &mut XmlReader, buf: &mut [u8]) {
        let leaves: Vec<Element> = self
            .rooms
            .iter()
            .filter(|r| r.joined)
            .map(|r| unavailable_to(&r.jid, &r.nick))
            .collect();
        for p in &leaves {
            if let Err(e) = self.write(p).await {
                debug!(error = %e, "leaving MUC failed");
                break;
            }
        }
        let timeout_write = self.cfg.write_timeout.min(Duration::from_secs(2));
        let _ = write_bytes(&mut self.wr, b"</stream:stream>", timeout_write).await;
        let _ = timeout(Duration::from_secs(2), async {
            loop {
                match read_event(rd, reader, buf).await {
                    Ok(XmlEvent::StreamClose) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.wr).await;
        self.fail_pending();
        self.state_tx.send_modify(|st| {
            st.connected = false;
            st.jid = None;
            for r in &mut st.rooms {
                r.joined = false;
                r.occupants.clear();
            }
        });
        info!("XMPP connection closed");
    }

    fn fail_pending(&mut self) {
        for (_, p) in self.pending.drain() {
            if let Pending::Caller(tx) = p {
                let _ = tx.send(Err(SendIqError::Disconnected));
            }
        }
    }
}

/// A command while not connected. Returns false when the task must end.
fn idle_command(cmd: Option<Command>) -> bool {
    match cmd {
        None | Some(Command::Shutdown) => false,
        Some(Command::SendIq { reply, .. }) => {
            let _ = reply.send(Err(SendIqError::NotConnected));
            true
        }
        Some(Command::RefreshPresence) => true,
    }
}

fn bad_type(what: &str) -> IqResponse {
    IqResponse::Error(StanzaError::new(
        Condition::BadRequest,
        format!("{what} must be an IQ get"),
    ))
}

/// JVB's advertised features (§1.2); Jicofo does not depend on them.
fn disco_info() -> Element {
    let mut q = Element::bare("query", ns::DISCO_INFO);
    let mut id = Element::bare("identity", ns::DISCO_INFO);
    set_attr(&mut id, "category", "component");
    set_attr(&mut id, "type", "generic");
    set_attr(&mut id, "name", "Palim");
    q.append_child(id);
    for var in [
        ns::HEALTHCHECK,
        "urn:xmpp:jingle:apps:dtls:0",
        "urn:xmpp:jingle:transports:ice-udp:1",
        ns::VERSION,
        ns::PING,
    ] {
        let mut f = Element::bare("feature", ns::DISCO_INFO);
        set_attr(&mut f, "var", var);
        q.append_child(f);
    }
    q
}

/// The wait before the next connection attempt: `base` after a session that had logged in,
/// then doubled for each consecutive failed attempt, never more than `max` (nor less than
/// `base`).
pub fn reconnect_backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max.max(base))
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..7).map(|f| reconnect_backoff(b, m, f).as_secs()).collect();
        assert_eq!(got, vec![1, 1, 2, 4, 5, 5, 5]);
        assert_eq!(reconnect_backoff(b, m, u32::MAX), m);
        // A cap below the base means no growth.
        assert_eq!(reconnect_backoff(b, Duration::ZERO, 3), b);
    }
}
