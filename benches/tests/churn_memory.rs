//! Endpoint churn must not grow the heap (docs/security.md §6, issue 8 soak).
//!
//! A conference of 4 endpoints with DTLS-SRTP really negotiated (`benches::Conference`):
//! endpoint 0 sends all along; the others are replaced one after the other (Colibri2 expire,
//! then a fresh endpoint with new id, address, ICE credentials and SSRCs joins, connects, opens
//! the SCTP bridge channel, asks for video and sends audio and VP8 simulcast ×3 with RTX that
//! the shard forwards to the others). Live heap bytes are counted by a global allocator; after
//! a warm-up of `WARM` lifecycles, `MEASURED` more must leave the live heap where it was
//! (± `SLACK`): whatever the bridge keeps per departed endpoint shows up as growth
//! proportional to the churn. Each lifecycle's media starts on a whole simulated second
//! (`Conference::replace_endpoint`), so bounded caches hold the same amount at both points.
//!
//! Run: `cargo test -p benches --test churn_memory -- --nocapture`
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use benches::Conference;
use sfu::config::SrtpProfile;
use sfu::{Command, ConferenceId, EndpointId};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; counting
// touches only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of GlobalAlloc::alloc.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of GlobalAlloc::alloc_zeroed.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract of GlobalAlloc::realloc.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of GlobalAlloc::dealloc.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Endpoints besides the sender: each lifecycle replaces one of them, in turn.
const OTHERS: usize = 3;
/// Lifecycles before the first measurement (caches, pools and maps reach their size).
const WARM: usize = 10;
/// Lifecycles between the two measurements.
const MEASURED: usize = 40;
/// Packets each joiner sends (1 ms apart; endpoint 0 sends as many meanwhile).
const PACKETS: usize = 100;
/// Allowed difference of live heap bytes between the measurements (≈ 800 B per lifecycle:
/// hash maps that double at some point in between; what the soak saw was ≈ 90 KiB each).
const SLACK: i64 = 32 * 1024;

fn live() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

#[test]
fn endpoint_churn_does_not_grow_the_heap() {
    // The counter is process-wide: this file has one #[test] only.
    // expect: the setup negotiates everything in memory; failing it is a test failure.
    let mut conf = Conference::new(OTHERS, SrtpProfile::AeadAes128Gcm).expect("conference setup");
    conf.joiner_layers = 3;
    conf.joiner_sctp = true;
    // Endpoint 0 stays for the whole test: it receives the joiners' video too, so whatever the
    // bridge keeps on a remaining endpoint for a departed one (caches, streams, projections)
    // accumulates there.
    let now = conf.now;
    conf.shard
        .handle_command(
            now,
            Command::BridgeChannelMessage {
                conf: ConferenceId(1),
                ep: EndpointId(0),
                text: r#"{"colibriClass":"ReceiverVideoConstraints","defaultConstraints":{"maxHeight":720}}"#.into(),
            },
        )
        // expect: a well-formed message to an existing endpoint is accepted.
        .expect("constraints of endpoint 0");
    let mut lifecycle = 0;
    let mut churn = |conf: &mut Conference, n: usize| {
        for _ in 0..n {
            let slot = 1 + lifecycle % OTHERS;
            lifecycle += 1;
            // expect: joining in memory cannot fail unless the bridge is broken.
            let delivered = conf.replace_endpoint(slot, PACKETS).expect("replace endpoint");
            // Media flowed both ways: endpoint 0's and the joiner's packets reached the others.
            assert!(
                delivered >= PACKETS * (OTHERS - 1),
                "lifecycle {lifecycle}: only {delivered} datagrams forwarded"
            );
        }
    };
    churn(&mut conf, WARM);
    // The bridge channel is really up: the oldest joiner heard of the later joins and leaves.
    let heard: Vec<usize> = (1..=OTHERS).map(|k| conf.channel_messages(k)).collect();
    println!("bridge-channel messages received by the current joiners: {heard:?}");
    assert!(
        heard.iter().any(|&n| n > 0),
        "no bridge-channel message arrived over SCTP"
    );
    let warm = live();
    churn(&mut conf, MEASURED);
    let end = live();
    let growth = end - warm;
    println!(
        "live heap after {WARM} lifecycles {warm} B, after {} {end} B: {growth:+} B ({:+.0} B per lifecycle)",
        WARM + MEASURED,
        growth as f64 / MEASURED as f64
    );
    assert!(
        growth.abs() < SLACK,
        "live heap grew {growth} B over {MEASURED} endpoint lifecycles ({} B each)",
        growth / MEASURED as i64
    );
}
