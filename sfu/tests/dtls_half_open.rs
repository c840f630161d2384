//! Robustness case 21: 10^4 half-open DTLS handshakes from 10^3 source IPs, at the DTLS layer
//! (`sfu::dtls::Dtls` in server role, one per bridge endpoint, sans-IO, simulated time).
//!
//! In the bridge only ICE-validated addresses of signalled endpoints reach DTLS, and each
//! endpoint has one handshake; 10^4 such endpoints would need 10^4 Colibri2 allocations
//! (beyond the conference limits), so the flood is driven at the layer below the shard: 10^4
//! server `Dtls`es sharing the default `HandshakeSlots` (256 bridge-wide, 4 per IP).
//!
//! This binary has its own counting global allocator, so the heap held by the flood is
//! measured, not estimated. One test only: nothing else allocates concurrently.
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sfu::config::{HandshakeSlots, Limits, SrtpProfile};
use sfu::control::Fingerprint;
use sfu::dtls::{Dtls, DtlsContext, DtlsDrop, DtlsEvent, LocalCert, Role, HANDSHAKE_TIMEOUT};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// adds bookkeeping on an atomic counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const IPS: u32 = 1_000;
const PER_IP: u32 = 10;
const MIB: usize = 1024 * 1024;

/// Attacker source `k` (0..1000): 10.0.k/256.k%256, one port per handshake.
fn attacker(k: u32, n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | k)), 20_000 + n as u16)
}

fn fingerprint(cert: &LocalCert) -> Fingerprint {
    Fingerprint {
        hash: "sha-256".into(),
        value: cert
            .fingerprint_sha256
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect(),
        setup: None,
    }
}

/// 10^4 ClientHellos that never finish, 10 from each of 10^3 IPs: at every step at most 256
/// handshakes are in flight and at most 4 from one IP; everything over the caps is refused
/// without state and counted by reason; the heap the flood holds stays under 16 MiB. When the
/// half-open handshakes reach `HANDSHAKE_TIMEOUT` their slots are freed, and a legitimate
/// client from a fresh IP, refused during the flood, then completes its handshake in well
/// under 1 s of simulated time.
#[test]
fn half_open_dtls_flood_is_capped_and_a_legitimate_handshake_completes() {
    let provider = rtc_dtls::crypto_provider::default_provider().expect("aws-lc-rs provider");
    let bridge_cert = LocalCert::generate(&provider).expect("bridge certificate");
    let client_cert = LocalCert::generate(&provider).expect("client certificate");
    let slots: HandshakeSlots = Limits::default().dtls_handshakes;
    assert_eq!(
        (slots.max(), slots.per_ip()),
        (256, 4),
        "the defaults (robustness.md §2.5)"
    );
    let client_fps = [fingerprint(&client_cert)];
    let bridge_fps = [fingerprint(&bridge_cert)];
    let allowed = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
    let ctx = DtlsContext {
        provider: &provider,
        cert: &bridge_cert,
        fingerprints: &client_fps,
        allowed: &allowed,
        slots: &slots,
    };
    let local: SocketAddr = "192.0.2.1:10000".parse().expect("literal");
    let t0 = Instant::now();

    // A real ClientHello (rtc-dtls client), replayed by every attacker.
    // The clients' own caps (they are not the bridge's): ample.
    let client_slots = HandshakeSlots::with_per_ip(8, 8);
    let client_ctx = DtlsContext {
        provider: &provider,
        cert: &client_cert,
        fingerprints: &bridge_fps,
        allowed: &allowed,
        slots: &client_slots,
    };
    let hello = {
        let mut c = Dtls::new(Role::Client, attacker(0, 0));
        c.connect(t0, local, &client_ctx, &mut Vec::new());
        c.poll_transmit().expect("a ClientHello")
    };

    // The bridge endpoints, created before the flood (Colibri2 made them), and the legitimate
    // user's endpoint.
    let mut endpoints: Vec<Dtls> = (0..IPS * PER_IP).map(|_| Dtls::new(Role::Server, local)).collect();
    let mut legit_bridge = Dtls::new(Role::Server, local);
    let legit_addr: SocketAddr = "198.51.100.7:40000".parse().expect("literal");
    let before_flood = LIVE.load(Ordering::Relaxed);

    let mut events = Vec::new();
    let (mut started, mut ip_cap, mut limit, mut sent_back) = (0, 0, 0, 0usize);
    let mut peak = 0usize;
    for k in 0..IPS {
        for n in 0..PER_IP {
            let i = (k * PER_IP + n) as usize;
            let from = attacker(k, n);
            match endpoints[i].handle_datagram(t0, from, hello.clone(), &ctx, &mut events) {
                Ok(()) => started += 1,
                Err(DtlsDrop::HandshakeIpCap) => ip_cap += 1,
                Err(DtlsDrop::HandshakeLimit) => limit += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
            while let Some(d) = endpoints[i].poll_transmit() {
                sent_back += d.len();
            }
            assert!(slots.in_flight() <= 256);
            assert!(slots.in_flight_from(from.ip()) <= 4);
            peak = peak.max(LIVE.load(Ordering::Relaxed));
        }
    }
    assert!(events.is_empty(), "refusals are not failures");
    assert_eq!(started, 256, "the bridge-wide cap");
    // IPs 0..63 get 4 each; IPs 0..62 get 6 per-IP refusals each; once IP 63 has its 4 the
    // bridge is full, and the bridge-wide cap is checked first.
    assert_eq!(ip_cap, 63 * 6, "the per-IP cap");
    assert_eq!(limit, (IPS * PER_IP) as usize - 256 - 63 * 6);
    assert_eq!(slots.in_flight(), 256);
    assert!(
        sent_back > 0,
        "the started handshakes were answered (HelloVerifyRequest)"
    );

    // The legitimate user's first ClientHello, during the flood: refused, counted.
    let mut legit_client = Dtls::new(Role::Client, legit_addr);
    legit_client.connect(t0, local, &client_ctx, &mut Vec::new());
    let first = legit_client.poll_transmit().expect("ClientHello");
    assert_eq!(
        legit_bridge.handle_datagram(t0, legit_addr, first, &ctx, &mut events),
        Err(DtlsDrop::HandshakeLimit)
    );

    // The attackers never answer. Their handshakes retransmit and time out; the timers run
    // every second for all 10^4 endpoints.
    let mut t = t0;
    while slots.in_flight() > 0 {
        t += Duration::from_secs(1);
        assert!(t <= t0 + HANDSHAKE_TIMEOUT, "slots freed by the handshake timeout");
        for ep in endpoints.iter_mut() {
            if ep.poll_timeout().is_some_and(|d| d <= t) {
                ep.handle_timeout(t, &mut events);
            }
            while ep.poll_transmit().is_some() {}
        }
        assert!(slots.in_flight() <= 256);
        peak = peak.max(LIVE.load(Ordering::Relaxed));
    }
    let freed_at = t;
    assert_eq!(freed_at, t0 + HANDSHAKE_TIMEOUT);
    let timeouts = events
        .iter()
        .filter(|e| matches!(e, DtlsEvent::Failed(r) if r == "handshake timeout"))
        .count();
    assert_eq!(timeouts, 256, "exactly the started handshakes failed, by timeout");
    let held = peak - before_flood;
    eprintln!(
        "case 21: 10^4 ClientHellos: {started} started, {ip_cap} refused per IP, {limit} refused \
         bridge-wide; heap held by the flood at peak {} KiB ({} bytes per started handshake); \
         10^4 idle endpoints' DTLS state {} KiB",
        held / 1024,
        held / 256,
        before_flood / 1024
    );
    assert!(held < 16 * MIB, "flood held {held} bytes");

    // A legitimate user now (a fresh client: the first one's retransmissions ran out while
    // the flood held every slot; a browser re-joins). Datagrams pass instantly; timers run
    // in 10 ms steps.
    drop(legit_client);
    let mut legit_client = Dtls::new(Role::Client, legit_addr);
    let mut client_events = Vec::new();
    legit_client.connect(freed_at, local, &client_ctx, &mut client_events);
    let mut t = freed_at;
    while !(legit_bridge.is_connected() && legit_client.is_connected()) && t < freed_at + Duration::from_secs(5) {
        while let Some(d) = legit_client.poll_transmit() {
            let r = legit_bridge.handle_datagram(t, legit_addr, d, &ctx, &mut events);
            assert_eq!(r, Ok(()));
        }
        while let Some(d) = legit_bridge.poll_transmit() {
            let _ = legit_client.handle_datagram(t, local, d, &client_ctx, &mut client_events);
        }
        if legit_bridge.is_connected() && legit_client.is_connected() {
            break;
        }
        t += Duration::from_millis(10);
        legit_bridge.handle_timeout(t, &mut events);
        legit_client.handle_timeout(t, &mut client_events);
    }
    assert!(legit_bridge.is_connected(), "legitimate handshake completes");
    assert!(events.iter().any(|e| matches!(e, DtlsEvent::Connected { .. })));
    let took = t - freed_at;
    eprintln!("case 21: legitimate handshake completed {took:?} after the slots were freed");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(slots.in_flight(), 0, "its slot is freed once connected");
    drop(endpoints);
    assert_eq!(slots.in_flight_from(attacker(0, 0).ip()), 0);
}
