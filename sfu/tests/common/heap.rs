//! Counting the bridge's own heap in a test process that also runs clients.

/// Heap accounting by thread (robustness.md cases 13 and 29: the bridge's own growth, not the
/// test process's). Bytes allocated minus bytes freed by threads not marked as client threads:
/// the bridge's tokio workers and the test's main thread (commands, stats). The clients run on
/// a `spawn_blocking` thread that marks itself with [`ClientThread`]. Memory that aws-lc (C)
/// allocates is not seen; the bridge's is per endpoint, not per datagram. A test binary
/// installs it with `#[global_allocator] static ALLOC: common::heap::CountingAlloc =
/// common::heap::CountingAlloc;`.
pub struct CountingAlloc;

static BRIDGE_HEAP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

thread_local! {
    static CLIENT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn track(delta: i64) {
    // `try_with`: during thread teardown the flag is gone; count as the bridge's (the pool's).
    if !CLIENT_THREAD.try_with(|c| c.get()).unwrap_or(false) {
        BRIDGE_HEAP.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only sizes are counted.
#[allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (every allocation goes there).
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        track(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and the caller's contract for `new_size`.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Marks the current thread as a client thread while alive (blocking-pool threads are reused).
pub struct ClientThread;
impl ClientThread {
    pub fn mark() -> Self {
        CLIENT_THREAD.with(|c| c.set(true));
        ClientThread
    }
}
impl Drop for ClientThread {
    fn drop(&mut self) {
        let _ = CLIENT_THREAD.try_with(|c| c.set(false));
    }
}

pub fn bridge_heap_kib() -> i64 {
    BRIDGE_HEAP.load(std::sync::atomic::Ordering::Relaxed) / 1024
}

pub fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
