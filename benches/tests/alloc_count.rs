//! Heap allocations on the steady-state forwarding path, counted by a global allocator.
//!
//! One sender, 4 receivers with DTLS-SRTP really negotiated (`benches::Conference`); 1,000
//! 1,200-byte SRTP video packets forwarded; only `Conference::forward` (handle_datagram +
//! draining poll_transmit) is counted, not the sender's str0m that made the packets.
//!
//! Run: `cargo test -p benches --test alloc_count -- --nocapture`
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use benches::Conference;
use sfu::config::SrtpProfile;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; counting
// touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded contract of GlobalAlloc::alloc.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded contract of GlobalAlloc::alloc_zeroed.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded contract of GlobalAlloc::realloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of GlobalAlloc::dealloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RECEIVERS: usize = 4;
const PACKETS: usize = 1000;

/// Forwards `PACKETS` packets (after a warm-up) and returns (allocations, bytes, forwarded).
fn measure(profile: SrtpProfile) -> (u64, u64, usize) {
    // expect: the setup negotiates everything in memory; failing it is a test failure.
    let mut conf = Conference::new(RECEIVERS, profile).expect("conference setup");
    // Warm-up: per-stream state (rx/tx maps, SRTP contexts' first use, queue capacity, the
    // send-buffer pool) and the retransmission caches, which allocate each of their 500 slots
    // once (media.md §5.2).
    for p in conf.make_video_packets(600).expect("sender packets") {
        conf.forward(p);
    }
    let pkts = conf.make_video_packets(PACKETS).expect("sender packets");
    let mut forwarded = 0;
    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    // The test harness runs tests on threads; the counter is process-wide, so this file
    // has one #[test] only and nothing else runs meanwhile.
    COUNTING.store(true, Ordering::SeqCst);
    for p in pkts {
        forwarded += conf.forward(p);
    }
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst), forwarded)
}

#[test]
fn allocations_per_forwarded_packet() {
    for (name, profile) in [
        ("AEAD_AES_128_GCM", SrtpProfile::AeadAes128Gcm),
        ("AES_CM_128_HMAC_SHA1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let (allocs, bytes, forwarded) = measure(profile);
        assert_eq!(forwarded, PACKETS * RECEIVERS, "{name}: not every packet was forwarded");
        let per_fwd = allocs as f64 / forwarded as f64;
        let per_in = allocs as f64 / PACKETS as f64;
        println!(
            "{name}: {allocs} allocations ({bytes} bytes) for {PACKETS} input packets -> {forwarded} forwarded: \
             {per_in:.2} per input packet, {per_fwd:.2} ({:.0} bytes) per forwarded packet",
            bytes as f64 / forwarded as f64
        );
        // Steady-state forwarding allocates nothing: in-place SRTP, pooled send buffers,
        // preallocated retransmission slots, projections and classification on the stack.
        assert_eq!(allocs, 0, "{name}: {per_fwd:.2} allocations per forwarded packet");
    }
}
