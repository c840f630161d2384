//! Wires the parts together: the media core, the Colibri2 handler, the private REST API and
//! (when configured) the XMPP client, and runs them until shutdown.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sfu::Event;
use tracing::{info, warn};

use crate::colibri2::{Colibri2Handler, FocusAuth, HandlerConfig, WebSocketAdvert};
use crate::config::{split_host_port, Config, XmppSection};
use crate::memory::MemoryMonitor;
use crate::ops::{Ops, ShutdownState};
use crate::rest::{self, RestFlags, RestState};
use crate::ws::{WsHub, WsSettings};
use crate::xmpp::{self, BridgeStats, IncomingIq, IqHandler, IqResponse, StanzaError, XmppClient, XmppConfig};

/// JVB's background expiry: conferences with no endpoints older than 20 s, checked every minute.
const IDLE_CONFERENCE_AGE: Duration = Duration::from_secs(20);
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How often the shutdown state machine re-checks the endpoint count.
const SHUTDOWN_TICK: Duration = Duration::from_millis(250);
/// In SHUTTING_DOWN with no endpoint left, stay this long so the `shutting_down` presence
/// reaches the brewery before we leave it.
const SHUTTING_DOWN_MIN: Duration = Duration::from_secs(1);
/// Bound on leaving the brewery at exit.
const XMPP_LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the STUN query at start.
const STUN_TIMEOUT: Duration = Duration::from_secs(3);

/// Run the bridge until `shutdown` resolves, then stop at once (no graceful phase). Tests and
/// embedders use this; the binary uses [`run_with`] and drives [`Ops`] from signals.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let ops = new_ops(&config);
    let stopper = ops.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.force_stop();
    });
    run_with(config, ops).await
}

/// The [`Ops`] for `config` (its own refuse-new-conferences flag, initial drain mode).
pub fn new_ops(config: &Config) -> Arc<Ops> {
    Ops::new(
        Arc::new(AtomicBool::new(false)),
        config.shutdown.initial_drain_mode,
        config.ice.require_valid_address,
    )
}

/// Run the bridge until the shutdown state machine in `ops` says to exit: a graceful
/// shutdown once the last endpoint has left (or the limits of `[shutdown]` passed), or a
/// forced stop ([`Ops::force_stop`]). Returns `Ok` on a clean exit.
pub async fn run_with(config: Config, ops: Arc<Ops>) -> anyhow::Result<()> {
    let mut sfu_config = config.sfu_config()?;
    if !config.ice.stun_servers.is_empty() {
        let local = SocketAddr::new(config.ice.bind_address, config.ice.udp_port);
        match crate::stun::discover(local, &config.ice.stun_servers, STUN_TIMEOUT).await {
            Ok(mapped) => {
                info!(%mapped, "public address from STUN");
                // No NAT (the mapping is one of our own addresses): nothing to add.
                let own = sfu_config.host_addresses.contains(&mapped.ip()) || sfu_config.bind_ip == mapped.ip();
                if !own && !sfu_config.advertise.iter().any(|a| a.ip == mapped.ip()) {
                    sfu_config.advertise.push(sfu::config::AdvertisedAddr {
                        ip: mapped.ip(),
                        port: None,
                    });
                }
            }
            Err(e) => warn!(error = %e, "STUN mapping failed; advertising the other addresses only"),
        }
    }
    let addresses = advertised_ips(&sfu_config);
    let media_addr = SocketAddr::new(sfu_config.bind_ip, sfu_config.udp_port);
    let limits = sfu_config.limits.clone();
    let sfu = sfu::driver::start(sfu_config)
        .await
        .with_context(|| format!("binding the media port {media_addr} (ice.bind_address, ice.udp_port)"))?;
    info!(media = %sfu.local_addr, ?addresses, "media core started");
    ops.set_addresses(addresses);
    let handle = sfu.handle.clone();
    let ws_hub = config.websockets.enabled.then(WsHub::new);
    let memory = MemoryMonitor::from_config(&config.limits);
    memory.sample();
    let colibri = Arc::new(Colibri2Handler::new(
        Arc::new(handle.clone()),
        HandlerConfig {
            graceful_shutdown: ops.refuse_flag(),
            web_sockets: ws_hub.as_ref().map(|_| WebSocketAdvert {
                domains: config.websockets.domains.clone(),
                tls: config.websockets.tls,
                server_id: config.websockets.server_id.clone(),
            }),
            endpoint_gone: ws_hub.as_ref().map(|hub| hub.endpoint_gone_hook()),
            focus: FocusAuth::from_patterns(&config.xmpp.focus_patterns()),
            limits,
            memory_shedding: memory.shedding_flag(),
            ..HandlerConfig::default()
        },
    ));

    tokio::spawn(route_events(sfu.events, colibri.clone(), ops.clone(), ws_hub.clone()));

    // The public HTTP server: colibri-ws only (media.md §2.1).
    if let Some(hub) = &ws_hub {
        let bind = config
            .websockets
            .public_bind
            .context("websockets.enabled needs websockets.public_bind")?;
        let app = crate::ws::router(
            hub.clone(),
            colibri.clone(),
            WsSettings::from_config(&config.websockets),
        );
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the public HTTP server to {bind} (websockets.public_bind)"))?;
        info!(addr = %bind, domains = ?config.websockets.domains, "colibri websockets listening");
        let limits = crate::public_http::PublicLimits {
            max_connections: config.websockets.max_connections,
            header_timeout: config.websockets.header_timeout,
        };
        tokio::spawn(crate::public_http::serve(listener, app, limits));
    }
    tokio::spawn(expire_idle(colibri.clone()));

    let mut clients = Vec::new();
    if config.xmpp.enabled {
        let iq = Arc::new(ColibriIq::new(colibri.clone(), ops.clone()));
        for xcfg in xmpp_configs(&config.xmpp)? {
            let stats_colibri = colibri.clone();
            let stats_ops = ops.clone();
            let stats_memory = memory.clone();
            let presence: Arc<dyn xmpp::PresenceSource> =
                Arc::new(move || presence_stats(&stats_colibri, &stats_ops, &stats_memory));
            let host = format!("{}:{}", xcfg.host, xcfg.port);
            let client = XmppClient::spawn(xcfg, iq.clone(), Some(presence))
                .with_context(|| format!("starting the XMPP client for {host}"))?;
            info!(%host, rooms = ?config.xmpp.muc_jids, "XMPP client started");
            clients.push(client);
        }
        ops.set_xmpp_clients(clients.clone());
        for client in &clients {
            tokio::spawn(count_disconnects(client.clone(), ops.clone()));
        }
    }
    {
        // Shedding starts or ends: tell Jicofo (stress) at once rather than at the next period.
        let clients = clients.clone();
        tokio::spawn(crate::memory::run_sampler(
            memory.clone(),
            crate::memory::SAMPLE_INTERVAL,
            move |_| {
                for c in &clients {
                    c.refresh_presence();
                }
            },
        ));
    }

    if config.rest.enabled {
        let health_ops = ops.clone();
        let mut state = RestState::new(colibri.clone())
            .with_ops(ops.clone())
            .with_flags(RestFlags::from_config(&config.rest))
            .with_stats_interval(config.rest.stats_interval)
            .with_memory(memory.clone())
            .with_health(Arc::new(move || health_ops.health()));
        if let Some(hub) = &ws_hub {
            let hub = hub.clone();
            state = state.with_extra_stats(Arc::new(move || hub.stats.to_map()));
        }
        let app = rest::router(state);
        let listener = tokio::net::TcpListener::bind(config.rest.bind)
            .await
            .with_context(|| format!("binding the REST API to {}", config.rest.bind))?;
        info!(addr = %config.rest.bind, "REST API listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(error = %e, "REST server stopped");
            }
        });
    }

    drive_shutdown(&config, &ops, &colibri, &clients).await;
    info!(state = ops.state().as_str(), "shutting down");
    // Leave the brewery first so Jicofo stops choosing this bridge.
    // All servers at once, one bound for all (a second SIGTERM must exit within 5 s).
    let leaving: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { c.shutdown().await })
        })
        .collect();
    let all_left = async {
        for l in leaving {
            let _ = l.await;
        }
    };
    if tokio::time::timeout(XMPP_LEAVE_TIMEOUT, all_left).await.is_err() {
        warn!("leaving the XMPP servers timed out");
    }
    handle.shutdown().await;
    Ok(())
}

/// The shutdown state machine (colibri.md §7.1). Returns when the process should exit.
async fn drive_shutdown(config: &Config, ops: &Ops, colibri: &Colibri2Handler, clients: &[XmppClient]) {
    let mut presence_rx = ops.watch_presence();
    let mut force_rx = ops.watch_force();
    let mut tick = tokio::time::interval(SHUTDOWN_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_since: Option<Instant> = None;
    loop {
        if ops.is_forced() {
            return;
        }
        tokio::select! {
            _ = force_rx.changed() => continue,
            r = presence_rx.changed() => {
                if r.is_ok() {
                    // Tell Jicofo at once (drain / graceful_shutdown / shutting_down).
                    for c in clients {
                        c.refresh_presence();
                    }
                }
            }
            _ = tick.tick() => {}
        }
        let endpoints = colibri.counts().endpoints;
        match ops.state() {
            ShutdownState::Running => {}
            ShutdownState::GracefulShutdown => {
                let elapsed = ops.graceful_since().map(|t| t.elapsed()).unwrap_or_default();
                if endpoints <= config.shutdown.graceful_shutdown_min_participants
                    || elapsed >= config.shutdown.graceful_shutdown_max_duration
                {
                    ops.advance(ShutdownState::ShuttingDown);
                }
            }
            ShutdownState::ShuttingDown => {
                let since = *shutting_since.get_or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited >= config.shutdown.shutting_down_delay || (endpoints == 0 && waited >= SHUTTING_DOWN_MIN) {
                    return;
                }
            }
        }
    }
}

/// Counts each lost XMPP session (connected → not connected) for `xmpp_disconnects`.
async fn count_disconnects(client: XmppClient, ops: Arc<Ops>) {
    let mut rx = client.watch_state();
    let mut was_connected = rx.borrow_and_update().connected;
    while rx.changed().await.is_ok() {
        let connected = rx.borrow_and_update().connected;
        if was_connected && !connected {
            ops.count_xmpp_disconnect();
        }
        was_connected = connected;
    }
}

/// The IPs the bridge's candidates carry, as the core chooses them (host addresses, else the
/// bound address, else the interfaces' IPv4 addresses plus loopback), plus the advertised ones.
fn advertised_ips(c: &sfu::SfuConfig) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if !c.host_addresses.is_empty() {
        c.host_addresses.clone()
    } else if !c.bind_ip.is_unspecified() {
        vec![c.bind_ip]
    } else {
        let mut v: Vec<IpAddr> = rtc_shared::ifaces::ifaces()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        v.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        v
    };
    ips.extend(c.advertise.iter().map(|a| a.ip));
    ips.sort();
    ips.dedup();
    ips
}

/// What the core reports, applied to the signaling state. The channel closing means the core
/// stopped: health fails from then on.
async fn route_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    colibri: Arc<Colibri2Handler>,
    ops: Arc<Ops>,
    ws: Option<Arc<WsHub>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::EndpointExpired { conf, ep, reason } => {
                info!(%conf, %ep, ?reason, "endpoint expired by the media core");
                colibri.on_endpoint_expired(conf, ep).await;
            }
            Event::DtlsFailed { conf, ep, reason } => warn!(%conf, %ep, %reason, "DTLS failed"),
            // Never waits: a slow or missing socket loses the message (counted in the hub).
            Event::BridgeChannelSend { conf, ep, text } => match &ws {
                Some(hub) => hub.send(conf, ep, text),
                None => tracing::debug!(%conf, %ep, "bridge-channel message for a websocket while websockets are off"),
            },
            other => tracing::debug!(event = ?other, "media core event"),
        }
    }
    ops.set_media_alive(false);
}

async fn expire_idle(colibri: Arc<Colibri2Handler>) {
    let mut tick = tokio::time::interval(IDLE_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let n = colibri
            .expire_idle_conferences(Instant::now(), IDLE_CONFERENCE_AGE)
            .await;
        if n > 0 {
            info!(expired = n, "expired idle conferences");
        }
    }
}

/// `[xmpp]` of the file onto the clients' own configurations: one per server.
fn xmpp_configs(x: &XmppSection) -> anyhow::Result<Vec<XmppConfig>> {
    let nickname = if x.muc_nickname.is_empty() {
        default_nickname()
    } else {
        x.muc_nickname.clone()
    };
    let mut servers = vec![(x.host.clone(), x.port)];
    for s in &x.additional_servers {
        let (host, port) = split_host_port(s).map_err(|reason| anyhow::anyhow!("xmpp.additional_servers: {reason}"))?;
        servers.push((host, port.unwrap_or(x.port)));
    }
    Ok(servers
        .into_iter()
        .map(|(host, port)| XmppConfig {
            host,
            port,
            domain: x.domain.clone(),
            username: x.username.clone(),
            password: xmpp::Password::new(x.password.clone()),
            muc_jids: x.muc_jids.clone(),
            muc_nickname: nickname.clone(),
            disable_certificate_verification: x.disable_certificate_verification,
            presence_interval: x.presence_interval,
            reconnect_delay: x.reconnect_delay,
            reconnect_max_delay: x.reconnect_max_delay,
            ping_interval: x.ping_interval,
            ping_timeout: x.ping_timeout,
            connect_timeout: x.connect_timeout,
            ..XmppConfig::default()
        })
        .collect())
}

/// JVB uses the host name as its occupant nickname.
fn default_nickname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| format!("palim-{}", std::process::id()))
}

/// The stats presence (colibri.md §2).
fn presence_stats(colibri: &Colibri2Handler, ops: &Ops, memory: &MemoryMonitor) -> Vec<(String, String)> {
    let counts = colibri.counts();
    let state = ops.state();
    let stats = BridgeStats {
        stress_level: rest::reported_stress(counts.endpoints, memory.is_shedding()),
        drain: ops.drain(),
        graceful_shutdown: state == ShutdownState::GracefulShutdown,
        shutting_down: state == ShutdownState::ShuttingDown,
        healthy: ops.health().is_ok(),
        conferences: counts.conferences as u64,
        participants: counts.endpoints as u64,
        version: env!("CARGO_PKG_VERSION").to_string(),
        extra: vec![
            ("endpoints".into(), counts.endpoints.to_string()),
            ("octo_endpoints".into(), "0".into()),
        ],
        ..BridgeStats::default()
    };
    stats.to_pairs(std::time::SystemTime::now())
}

/// Colibri2 IQs from the brewery, handed to the handler one at a time in the order Jicofo sent
/// them (JVB answers each conference's requests in order; one queue keeps that trivially).
struct ColibriIq {
    ops: Arc<Ops>,
    queue: tokio::sync::mpsc::UnboundedSender<(IncomingIq, tokio::sync::oneshot::Sender<IqResponse>)>,
}

impl ColibriIq {
    fn new(colibri: Arc<Colibri2Handler>, ops: Arc<Ops>) -> Self {
        let (queue, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(IncomingIq, tokio::sync::oneshot::Sender<IqResponse>)>();
        let worker = colibri.clone();
        tokio::spawn(async move {
            while let Some((iq, reply)) = rx.recv().await {
                let response = if iq.payload.is("conference-modify", xmpp::ns::COLIBRI2) {
                    let senders = [iq.from.as_str(), iq.from_real_jid.as_deref().unwrap_or("")];
                    match worker.handle_xml_from(&iq.payload, &senders).await {
                        Ok(el) => IqResponse::Result(Some(el)),
                        Err(e) => IqResponse::Error(colibri_error(&e)),
                    }
                } else {
                    IqResponse::Error(StanzaError::new(
                        xmpp::Condition::ServiceUnavailable,
                        "Unsupported IQ request",
                    ))
                };
                let _ = reply.send(response);
            }
        });
        Self { ops, queue }
    }
}

fn colibri_error(e: &crate::colibri2::Colibri2Error) -> StanzaError {
    let mut err = StanzaError::new(condition_of(e.condition.as_str()), e.text.clone());
    if let Some(t) = xmpp::ErrorType::parse(e.condition.error_type().as_str()) {
        err = err.with_type(t);
    }
    // Skip the condition and text children, which StanzaError writes itself.
    for child in e.error_children().into_iter().skip(2) {
        err = err.with_extension(child);
    }
    err
}

fn condition_of(name: &str) -> xmpp::Condition {
    xmpp::Condition::parse(name).unwrap_or(xmpp::Condition::InternalServerError)
}

impl IqHandler for ColibriIq {
    fn handle_iq(self: Arc<Self>, iq: IncomingIq) -> impl Future<Output = IqResponse> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue.send((iq, tx)).is_ok();
        async move {
            if !queued {
                return IqResponse::Error(StanzaError::new(
                    xmpp::Condition::InternalServerError,
                    "bridge is stopping",
                ));
            }
            rx.await.unwrap_or_else(|_| {
                IqResponse::Error(StanzaError::new(
                    xmpp::Condition::InternalServerError,
                    "request was dropped",
                ))
            })
        }
    }

    fn health_check(&self) -> Result<(), String> {
        self.ops.health()
    }
}
