//! The server's dealings with the C allocator: tuning at start, and handing freed pages back
//! to the OS after bursts of request work, so resident memory tracks the store's real size.
//!
//! The store is made of many small long-lived allocations; request decoding makes many small
//! short-lived ones in the same heaps. glibc returns memory to the OS only from the top of a
//! heap, so the holes that request garbage leaves between store data stay resident. Measured
//! on the peer dataset loaded over HTTP: free-but-resident heap ran from 10% to 40% of RSS,
//! depending on which heap each request thread happened to use (BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by work that frees much memory (a decoded request, a maintenance pass).
static CHURNED: AtomicBool = AtomicBool::new(false);

/// Records that a burst of allocations was freed; the next [`reclaim_if_churned`] trims.
pub fn note_churn() {
    CHURNED.store(true, Ordering::Relaxed);
}

/// Returns whole free pages inside the heaps to the OS if anything churned since the last
/// call. Cheap when nothing did; otherwise a walk of the heaps' free lists (about a
/// millisecond per 100 MB of heap here), so call it from a blocking thread, about once a
/// second.
pub fn reclaim_if_churned() -> bool {
    if !CHURNED.swap(false, Ordering::Relaxed) {
        return false;
    }
    trim();
    true
}

/// Tunes glibc's allocator: a fixed mmap threshold keeps big request buffers out of the heap
/// (glibc otherwise raises the threshold after the first big free, and the heap fragments
/// around store data), and a single arena keeps all small allocations in one heap, where
/// request garbage is reused for store data instead of stranding partly used pages in
/// per-thread heaps. Call once, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; the caller runs it before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 1;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and only releases
    // pages that hold no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
