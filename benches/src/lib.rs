//! Criterion benches of the media core live in `benches/`; this library is their in-memory
//! harness.
//!
//! [`Conference`] wires one real [`sfu::Shard`] to str0m 0.25 clients without sockets: every
//! datagram a client emits is handed to [`Shard::handle_datagram`], every [`sfu::Transmit`]
//! is delivered to the client owning its address, on a simulated clock. ICE, DTLS and SRTP
//! are really negotiated (the same Direct-API client setup as `sfu/tests/common/mod.rs`:
//! ICE controlled, DTLS active, RTP mode). Endpoint 0 is the sender; endpoints 1..=N receive.
//!
//! The measured path is then [`Conference::forward`]: one SRTP datagram produced by the
//! sender's str0m (made ahead of time with [`Conference::make_video_packets`], outside any
//! timing), `handle_datagram`, and draining `poll_transmit`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use sfu::config::SrtpProfile;
use sfu::control::{
    Fingerprint, GroupSemantics, LocalTransport, MediaDescription, MediaKind, PayloadType, RemoteTransport,
    RtpExtension, Setup, SourceDescription, SsrcGroup,
};
use sfu::{ClockAnchor, Command, ConferenceId, EndpointId, Reply, SfuConfig, Shard, Ssrc};
use str0m::config::DtlsVersion;
use str0m::format::Codec;
use str0m::ice::IceCreds;
use str0m::media::{Frequency, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub const PT_OPUS: u8 = 111;
pub const PT_VP8: u8 = 100;
const MID_AUDIO: &str = "0";
const MID_VIDEO: &str = "1";
const CONF: ConferenceId = ConferenceId(1);
/// Size of the SRTP video datagrams the benches forward.
pub const VIDEO_DATAGRAM_LEN: usize = 1200;

static CRYPTO: Once = Once::new();

fn init_crypto() {
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The bridge's address (never bound: there are no sockets).
pub fn bridge_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10000)
}

fn client_addr(i: usize) -> SocketAddr {
    // 20000.. never collides with the bridge's port for the N ≤ 40000 used here.
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000 + i as u16)
}

fn audio_ssrc(i: usize) -> u32 {
    0x1000_0000 + i as u32
}

fn video_ssrc(i: usize) -> u32 {
    0x2000_0000 + i as u32
}

/// SSRC of simulcast layer `k` (0 = [`video_ssrc`]) of client `i`.
fn layer_ssrc(i: usize, k: usize) -> u32 {
    video_ssrc(i) + (k as u32) * 0x0100_0000
}

/// RTX SSRC of simulcast layer `k` of client `i`.
fn rtx_ssrc(i: usize, k: usize) -> u32 {
    0x4000_0000 + i as u32 + (k as u32) * 0x0100_0000
}

/// RTX payload type (apt = [`PT_VP8`]).
pub const PT_RTX: u8 = 96;

/// Setup failure (the harness is for benches and tests; errors are reported, not hidden).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

fn err(s: impl Into<String>) -> SetupError {
    SetupError(s.into())
}

/// One in-memory str0m client.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    ice: IceCreds,
    next_timeout: Instant,
    connected: bool,
    /// RTP packets str0m decrypted and delivered, per SSRC.
    rtp_received: HashMap<u32, usize>,
    video_seq: u64,
    started: Instant,
    /// Index the address and SSRCs derive from (the endpoint id).
    id: usize,
    /// Video encodings sent: 1, or 3 for simulcast (each with an RTX SSRC).
    layers: usize,
    /// Open the bridge channel over SCTP once connected (as lib-jitsi-meet).
    sctp: bool,
    /// Bridge-channel messages received.
    pub channel_messages: usize,
}

impl Client {
    fn new(now: Instant, i: usize, layers: usize) -> Result<Self, SetupError> {
        let ice = IceCreds::new();
        let mut cfg = RtcConfig::new()
            .set_local_ice_credentials(ice.clone())
            .set_rtp_mode(true)
            .set_dtls_version(DtlsVersion::Dtls12)
            .clear_codecs();
        let codecs = cfg.codec_config();
        codecs.add_config(
            Pt::new_with_value(PT_OPUS),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            Default::default(),
        );
        codecs.add_config(
            Pt::new_with_value(PT_VP8),
            Some(Pt::new_with_value(PT_RTX)),
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            Default::default(),
        );
        let mut rtc = cfg.build(now);
        let addr = client_addr(i);
        let cand = Candidate::host(addr, "udp").map_err(|e| err(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        {
            let mut api = rtc.direct_api();
            api.declare_media(Mid::from(MID_AUDIO), str0m::media::MediaKind::Audio);
            api.declare_media(Mid::from(MID_VIDEO), str0m::media::MediaKind::Video);
            api.declare_stream_tx(audio_ssrc(i).into(), None, Mid::from(MID_AUDIO), None);
            if layers == 1 {
                api.declare_stream_tx(video_ssrc(i).into(), None, Mid::from(MID_VIDEO), None);
            } else {
                for k in 0..layers {
                    api.declare_stream_tx(
                        layer_ssrc(i, k).into(),
                        Some(rtx_ssrc(i, k).into()),
                        Mid::from(MID_VIDEO),
                        None,
                    );
                }
            }
        }
        Ok(Self {
            rtc,
            addr,
            ice,
            next_timeout: now,
            connected: false,
            rtp_received: HashMap::new(),
            video_seq: 5000,
            started: now,
            id: i,
            layers,
            sctp: false,
            channel_messages: 0,
        })
    }

    fn remote_transport(&mut self) -> RemoteTransport {
        let ice = &self.ice;
        let fp = self.rtc.direct_api().local_dtls_fingerprint().clone();
        RemoteTransport {
            ufrag: Some(ice.ufrag.clone()),
            pwd: Some(ice.pass.clone()),
            fingerprints: vec![Fingerprint {
                hash: fp.hash_func.clone(),
                value: fp.bytes.clone(),
                setup: Some(Setup::Active),
            }],
            candidates: vec![self.addr],
        }
    }

    fn connect(&mut self, bridge: &LocalTransport) -> Result<(), SetupError> {
        for c in &bridge.candidates {
            if c.addr == bridge_addr() {
                let cand = Candidate::host(c.addr, "udp").map_err(|e| err(format!("bridge candidate: {e}")))?;
                self.rtc.add_remote_candidate(cand);
            }
        }
        let fp_bytes = bridge
            .fingerprint_sha256
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| err(format!("bridge fingerprint: {e}")))?;
        let mut api = self.rtc.direct_api();
        api.set_ice_lite(false);
        api.set_ice_controlling(false);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: bridge.ufrag.clone(),
            pass: bridge.pwd.clone(),
        });
        api.set_remote_fingerprint(str0m::config::Fingerprint {
            hash_func: "sha-256".into(),
            bytes: fp_bytes,
        });
        api.start_dtls(true).map_err(|e| err(format!("start dtls: {e}")))
    }

    /// Drain str0m's outputs: datagrams are appended to `out`, events recorded.
    fn poll(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => out.push((self.addr, t.contents.to_vec())),
                Ok(Output::Event(Event::Connected)) => {
                    self.connected = true;
                    if self.sctp {
                        let mut api = self.rtc.direct_api();
                        api.start_sctp(true);
                        api.create_data_channel(str0m::channel::ChannelConfig {
                            label: "JVB data channel".into(),
                            protocol: "http://jitsi.org/protocols/colibri".into(),
                            ..Default::default()
                        });
                    }
                }
                Ok(Output::Event(Event::ChannelData(_))) => self.channel_messages += 1,
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    *self.rtp_received.entry(*p.header.ssrc).or_insert(0) += 1;
                }
                Ok(Output::Event(_)) => {}
                Err(_) => break,
            }
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, self.addr, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
            self.poll(out);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        self.poll(out);
    }

    fn write_video(&mut self, now: Instant, i: usize, payload: Vec<u8>) {
        self.video_seq += 1;
        let ts = (now - self.started).as_millis() as u32 * 90;
        let exts = ExtensionValues {
            mid: Some(Mid::from(MID_VIDEO)),
            ..Default::default()
        };
        for k in 0..self.layers {
            if let Some(s) = self.rtc.direct_api().stream_tx(&layer_ssrc(i, k).into()) {
                s.write_rtp(
                    RtpWrite::new(
                        Pt::new_with_value(PT_VP8),
                        self.video_seq.into(),
                        ts,
                        now,
                        payload.clone(),
                    )
                    .marker(true)
                    .ext_vals(exts.clone()),
                );
            }
        }
    }
    fn write_audio(&mut self, now: Instant, i: usize, seq: u64) {
        let ts = (now - self.started).as_millis() as u32 * 48;
        let exts = ExtensionValues {
            mid: Some(Mid::from(MID_AUDIO)),
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        if let Some(s) = self.rtc.direct_api().stream_tx(&audio_ssrc(i).into()) {
            s.write_rtp(RtpWrite::new(Pt::new_with_value(PT_OPUS), seq.into(), ts, now, vec![0xF8; 80]).ext_vals(exts));
        }
    }
}

/// A datagram ready for [`Conference::forward`]: sender address and SRTP bytes.
pub struct Datagram {
    pub from: SocketAddr,
    pub data: BytesMut,
}

/// One conference on one shard: endpoint 0 sends, endpoints 1..=N receive.
pub struct Conference {
    pub shard: Shard,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    /// The simulated clock.
    pub now: Instant,
    payload_len: usize,
    packets_made: u32,
    /// Endpoint id (and client index for address and SSRCs) of the next joiner.
    next_id: usize,
    /// Video encodings of the endpoints [`Conference::replace_endpoint`] creates: 1, or 3
    /// for VP8 simulcast with RTX (as lib-jitsi-meet's camera).
    pub joiner_layers: usize,
    /// Whether those endpoints open the SCTP bridge channel.
    pub joiner_sctp: bool,
    /// Start of the simulated clock.
    epoch: Instant,
}

/// Create endpoint `i` on the shard (sources: audio and video SSRCs derived from `i`, media as
/// Jicofo signals it) and its str0m client, ICE/DTLS started towards the bridge. Every client
/// expects the streams of endpoint 0, the sender of [`Conference::forward`].
fn join(shard: &mut Shard, now: Instant, i: usize, layers: usize, sctp: bool) -> Result<Client, SetupError> {
    let ep = EndpointId(i as u32);
    let bridge = match shard.handle_command(
        now,
        Command::CreateEndpoint {
            conf: CONF,
            ep,
            ice_controlling: true,
            sctp,
            visitor: false,
            name: format!("ep{i}"),
            ssrc_rewriting: false,
        },
    ) {
        Ok(Reply::EndpointCreated(t)) => t,
        other => return Err(err(format!("create endpoint: {other:?}"))),
    };
    let mut client = Client::new(now, i, layers)?;
    client.sctp = sctp;
    let transport = client.remote_transport();
    let cmds = [
        Command::SetRemoteTransport {
            conf: CONF,
            ep,
            transport,
        },
        Command::SetSources {
            conf: CONF,
            ep,
            sources: sources(i, layers),
        },
    ];
    for cmd in cmds
        .into_iter()
        .chain(
            media_descriptions()
                .into_iter()
                .map(|media| Command::SetMedia { conf: CONF, ep, media }),
        )
    {
        shard
            .handle_command(now, cmd)
            .map_err(|e| err(format!("command: {e:?}")))?;
    }
    client.connect(&bridge)?;
    if i > 0 {
        let mut api = client.rtc.direct_api();
        api.expect_stream_rx(audio_ssrc(0).into(), None, Mid::from(MID_AUDIO), None);
        api.expect_stream_rx(video_ssrc(0).into(), None, Mid::from(MID_VIDEO), None);
    }
    Ok(client)
}

impl Conference {
    /// Create the conference with `receivers` receivers, negotiate ICE/DTLS/SRTP for all
    /// endpoints (bridge offering only `profile`), and check that one video packet from the
    /// sender reaches every receiver decrypted.
    pub fn new(receivers: usize, profile: SrtpProfile) -> Result<Self, SetupError> {
        init_crypto();
        let start = Instant::now();
        let config = SfuConfig {
            bind_ip: bridge_addr().ip(),
            udp_port: bridge_addr().port(),
            rng_seed: Some(7),
            srtp_profiles: vec![profile],
            ..SfuConfig::default()
        };
        let clock = ClockAnchor {
            instant: start,
            system: SystemTime::now(),
        };
        let mut shard = Shard::new(config, bridge_addr(), clock).map_err(err)?;
        shard
            .handle_command(start, Command::CreateConference { conf: CONF })
            .map_err(|e| err(format!("create conference: {e:?}")))?;
        let mut clients = Vec::new();
        let mut by_addr = HashMap::new();
        for i in 0..=receivers {
            let client = join(&mut shard, start, i, 1, false)?;
            by_addr.insert(client.addr, i);
            clients.push(client);
        }
        let mut conf = Self {
            shard,
            clients,
            by_addr,
            now: start,
            payload_len: 1000,
            packets_made: 0,
            next_id: receivers + 1,
            joiner_layers: 1,
            joiner_sctp: false,
            epoch: start,
        };
        // Run the simulated network until every client has DTLS-SRTP up (30 simulated s).
        for _ in 0..30_000 {
            conf.step(Duration::from_millis(1));
            if conf.clients.iter().all(|c| c.connected) {
                break;
            }
        }
        let up = conf.clients.iter().filter(|c| c.connected).count();
        if up != conf.clients.len() {
            return Err(err(format!("{up} of {} clients connected", conf.clients.len())));
        }
        // Every receiver asks for video as lib-jitsi-meet does (no video is forwarded before
        // the first constraints), here through the command the websocket path uses.
        for i in 1..=receivers {
            conf.shard
                .handle_command(
                    conf.now,
                    Command::BridgeChannelMessage {
                        conf: CONF,
                        ep: EndpointId(i as u32),
                        text: r#"{"colibriClass":"ReceiverVideoConstraints","defaultConstraints":{"maxHeight":720}}"#
                            .into(),
                    },
                )
                .map_err(|e| err(format!("constraints: {e}")))?;
        }
        // Let ICE nomination and the last DTLS flights settle (and the allocation run).
        for _ in 0..200 {
            conf.step(Duration::from_millis(5));
        }
        // Size the payload so the sender's SRTP datagram is VIDEO_DATAGRAM_LEN bytes.
        let probe = conf.make_video_packets(1)?;
        let len = probe[0].data.len();
        conf.payload_len = (conf.payload_len + VIDEO_DATAGRAM_LEN)
            .checked_sub(len)
            .ok_or_else(|| err("video datagram overhead too large"))?;
        // Correctness check of the whole path: one packet, through the shard, decrypted by
        // every receiver's str0m.
        let pkts = conf.make_video_packets(1)?;
        if pkts[0].data.len() != VIDEO_DATAGRAM_LEN {
            return Err(err(format!("datagram is {} bytes", pkts[0].data.len())));
        }
        for p in pkts.into_iter().chain(probe) {
            conf.deliver_to_shard(p.from, p.data);
        }
        conf.flush();
        for _ in 0..20 {
            conf.step(Duration::from_millis(5));
        }
        let vs = video_ssrc(0);
        let got = conf.clients[1..]
            .iter()
            .filter(|c| c.rtp_received.get(&vs).copied().unwrap_or(0) >= 1)
            .count();
        if got != receivers {
            return Err(err(format!(
                "{got} of {receivers} receivers decrypted the check packet"
            )));
        }
        Ok(conf)
    }

    /// Bridge-channel messages the client in `slot` received so far.
    pub fn channel_messages(&self, slot: usize) -> usize {
        self.clients.get(slot).map_or(0, |c| c.channel_messages)
    }

    /// Number of receivers.
    pub fn receivers(&self) -> usize {
        self.clients.len() - 1
    }

    /// Advance the simulated clock by `dt` and run every client and the shard until quiet.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        let mut out = Vec::new();
        for c in self.clients.iter_mut() {
            c.tick(now, &mut out);
        }
        for (from, data) in out {
            self.deliver_to_shard(from, BytesMut::from(&data[..]));
        }
        if self.shard.poll_timeout().is_some_and(|t| t <= now) {
            self.shard.handle_timeout(now);
        }
        self.flush();
    }

    fn deliver_to_shard(&mut self, from: SocketAddr, data: BytesMut) {
        self.shard.handle_datagram(self.now, bridge_addr(), from, data);
    }

    /// Deliver the shard's transmits to the clients, and their answers back, until quiet.
    fn flush(&mut self) {
        for _ in 0..100 {
            let mut out = Vec::new();
            while let Some(t) = self.shard.poll_transmit() {
                if let Some(&i) = self.by_addr.get(&t.remote) {
                    self.clients[i].receive(self.now, bridge_addr(), &t.data, &mut out);
                }
            }
            while self.shard.poll_event().is_some() {}
            if out.is_empty() {
                return;
            }
            for (from, data) in out {
                self.deliver_to_shard(from, BytesMut::from(&data[..]));
            }
        }
    }

    /// `count` SRTP video datagrams from the sender, made by its str0m, in sequence order
    /// (each can be forwarded once: SRTP replay protection drops repeats). The simulated
    /// clock advances 1 ms per packet. Anything else the sender emits (RTCP) is discarded.
    pub fn make_video_packets(&mut self, count: usize) -> Result<Vec<Datagram>, SetupError> {
        let mut v = Vec::with_capacity(count);
        let mut out = Vec::new();
        for _ in 0..count {
            self.now += Duration::from_millis(1);
            let now = self.now;
            self.packets_made = self.packets_made.wrapping_add(1);
            let payload = payload(self.packets_made, self.payload_len);
            let sender = &mut self.clients[0];
            sender.write_video(now, 0, payload);
            out.clear();
            // str0m sends queued RTP on its next timeout handling; force one now.
            let _ = sender.rtc.handle_input(Input::Timeout(now));
            sender.poll(&mut out);
            let before = v.len();
            for (from, data) in out.drain(..) {
                // RTP, not RTCP (RFC 5761 §4: RTCP packet types 192..=223).
                if data.len() > 1 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1]) {
                    v.push(Datagram {
                        from,
                        data: BytesMut::from(&data[..]),
                    });
                }
            }
            if v.len() != before + 1 {
                return Err(err(format!(
                    "sender emitted {} RTP datagrams for one write",
                    v.len() - before
                )));
            }
        }
        Ok(v)
    }

    /// The measured path: one datagram into the shard, then drain `poll_transmit`. Returns
    /// how many datagrams came out (dropped here: the receivers' str0m is not timed).
    /// Never inlined, so callgrind can collect exactly this function (`--toggle-collect`).
    #[inline(never)]
    pub fn forward(&mut self, d: Datagram) -> usize {
        self.shard.handle_datagram(self.now, bridge_addr(), d.from, d.data);
        let mut n = 0;
        while let Some(t) = self.shard.poll_transmit() {
            std::hint::black_box(&t);
            // As the driver does after sending: the buffer goes back to the shard's pool.
            self.shard.recycle(t.data);
            n += 1;
        }
        n
    }
    /// Endpoint churn as in the soak (colibri.md §3: Colibri2 expire, then a fresh endpoint):
    /// the endpoint in `slot` (1..=receivers) is expired and replaced by a new endpoint with a
    /// fresh id, address, ICE credentials and SSRCs, which connects (ICE, DTLS-SRTP), asks for
    /// video, and then sends `packets` audio and VP8 packets (1 ms apart) that the shard
    /// forwards to the others, while endpoint 0 keeps sending too. Returns how many datagrams
    /// the shard sent to the other clients' addresses meanwhile.
    pub fn replace_endpoint(&mut self, slot: usize, packets: usize) -> Result<usize, SetupError> {
        if slot == 0 || slot >= self.clients.len() {
            return Err(err(format!("slot {slot} is not a receiver")));
        }
        let old = &self.clients[slot];
        let (old_id, old_addr) = (old.id, old.addr);
        self.shard
            .handle_command(
                self.now,
                Command::ExpireEndpoint {
                    conf: CONF,
                    ep: EndpointId(old_id as u32),
                },
            )
            .map_err(|e| err(format!("expire: {e:?}")))?;
        self.by_addr.remove(&old_addr);
        let id = self.next_id;
        self.next_id += 1;
        let client = join(&mut self.shard, self.now, id, self.joiner_layers, self.joiner_sctp)?;
        self.by_addr.insert(client.addr, slot);
        self.clients[slot] = client;
        for _ in 0..30_000 {
            self.step(Duration::from_millis(1));
            if self.clients[slot].connected {
                break;
            }
        }
        if !self.clients[slot].connected {
            return Err(err(format!("endpoint {id} did not connect")));
        }
        self.shard
            .handle_command(
                self.now,
                Command::BridgeChannelMessage {
                    conf: CONF,
                    ep: EndpointId(id as u32),
                    text: r#"{"colibriClass":"ReceiverVideoConstraints","defaultConstraints":{"maxHeight":720}}"#
                        .into(),
                },
            )
            .map_err(|e| err(format!("constraints: {e}")))?;
        // Start the media on a whole simulated second, so every lifecycle has the same phase
        // against the shard's periodic work (allocation, reports): the caches then hold the
        // same amount each time and only what is left behind accumulates.
        while (self.now - self.epoch).subsec_millis() != 0 {
            self.step(Duration::from_millis(1));
        }
        let mut delivered = 0;
        for _ in 0..packets {
            self.now += Duration::from_millis(1);
            let now = self.now;
            self.packets_made = self.packets_made.wrapping_add(1);
            let payload = payload(self.packets_made, self.payload_len);
            let mut out = Vec::new();
            for (k, c) in [(0, 0usize), (slot, id)] {
                let client = &mut self.clients[k];
                client.write_video(now, c, payload.clone());
                let seq = client.video_seq;
                client.write_audio(now, c, seq);
                let _ = client.rtc.handle_input(Input::Timeout(now));
                client.poll(&mut out);
            }
            for (k, c) in self.clients.iter_mut().enumerate() {
                if k != 0 && k != slot {
                    c.tick(now, &mut out);
                }
            }
            for (from, data) in out {
                self.shard
                    .handle_datagram(now, bridge_addr(), from, BytesMut::from(&data[..]));
            }
            if self.shard.poll_timeout().is_some_and(|t| t <= now) {
                self.shard.handle_timeout(now);
            }
            delivered += self.flush_counting(slot);
        }
        Ok(delivered)
    }

    /// [`Conference::flush`], counting the shard's datagrams to clients other than `slot`.
    fn flush_counting(&mut self, slot: usize) -> usize {
        let mut n = 0;
        for _ in 0..100 {
            let mut out = Vec::new();
            while let Some(t) = self.shard.poll_transmit() {
                if let Some(&i) = self.by_addr.get(&t.remote) {
                    if i != slot {
                        n += 1;
                    }
                    self.clients[i].receive(self.now, bridge_addr(), &t.data, &mut out);
                }
                self.shard.recycle(t.data);
            }
            while self.shard.poll_event().is_some() {}
            if out.is_empty() {
                break;
            }
            for (from, data) in out {
                self.deliver_to_shard(from, BytesMut::from(&data[..]));
            }
        }
        n
    }
}

/// A VP8 keyframe payload (4-byte descriptor with a 15-bit picture ID, no temporal layers,
/// keyframe header of 640x360): classified and projected like a real single-layer stream.
fn payload(n: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    let pid = (n & 0x7FFF) as u16;
    p.extend_from_slice(&[0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8]);
    p.extend_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    p.extend_from_slice(&n.to_be_bytes());
    while p.len() < len {
        p.push((p.len() as u8).wrapping_mul(31));
    }
    p
}

/// Client `i`'s sources: audio, and video with `layers` encodings (simulcast with RTX when
/// more than one).
fn sources(i: usize, layers: usize) -> Vec<SourceDescription> {
    let (audio, video) = (audio_ssrc(i), video_ssrc(i));
    if layers > 1 {
        let layer: Vec<Ssrc> = (0..layers).map(|k| Ssrc(layer_ssrc(i, k))).collect();
        let mut groups = vec![SsrcGroup {
            semantics: GroupSemantics::Sim,
            ssrcs: layer.clone(),
        }];
        let mut ssrcs = layer.clone();
        for (k, l) in layer.iter().enumerate() {
            ssrcs.push(Ssrc(rtx_ssrc(i, k)));
            groups.push(SsrcGroup {
                semantics: GroupSemantics::Fid,
                ssrcs: vec![*l, Ssrc(rtx_ssrc(i, k))],
            });
        }
        return vec![
            SourceDescription {
                kind: MediaKind::Audio,
                name: format!("{audio:x}-a0"),
                ssrcs: vec![Ssrc(audio)],
                groups: vec![],
                video_type: None,
            },
            SourceDescription {
                kind: MediaKind::Video,
                name: format!("{video:x}-v0"),
                ssrcs,
                groups,
                video_type: None,
            },
        ];
    }
    vec![
        SourceDescription {
            kind: MediaKind::Audio,
            name: format!("{audio:x}-a0"),
            ssrcs: vec![Ssrc(audio)],
            groups: vec![],
            video_type: None,
        },
        SourceDescription {
            kind: MediaKind::Video,
            name: format!("{video:x}-v0"),
            ssrcs: vec![Ssrc(video)],
            groups: vec![],
            video_type: None,
        },
    ]
}

/// What Jicofo would signal, with str0m's standard extension ids (as the e2e tests).
fn media_descriptions() -> Vec<MediaDescription> {
    let ext = |id, uri: &str| RtpExtension {
        id,
        uri: uri.to_owned(),
    };
    let common = [
        ext(2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        ext(
            3,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ),
        ext(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ];
    let pt = |pt, name: &str, clock_rate| PayloadType {
        pt,
        name: name.to_owned(),
        clock_rate,
        apt: None,
        feedback: vec![],
    };
    let mut audio_ext = common.to_vec();
    audio_ext.push(ext(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    let mut video_ext = common.to_vec();
    video_ext.push(ext(13, "urn:3gpp:video-orientation"));
    vec![
        MediaDescription {
            kind: MediaKind::Audio,
            payload_types: vec![pt(PT_OPUS, "opus", 48_000)],
            extensions: audio_ext,
        },
        MediaDescription {
            kind: MediaKind::Video,
            payload_types: vec![
                pt(PT_VP8, "VP8", 90_000),
                PayloadType {
                    apt: Some(PT_VP8),
                    ..pt(PT_RTX, "rtx", 90_000)
                },
            ],
            extensions: video_ext,
        },
    ]
}
