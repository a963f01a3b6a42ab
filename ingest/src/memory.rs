//! The server's dealings with the C allocator: tuning at start, and handing freed pages back
//! to the OS after bursts of request work, so resident memory tracks the store's real size.
//!
//! The store is made of many small long-lived allocations; request decoding makes many small
//! short-lived ones in the same heaps. glibc returns memory to the OS only from the top of a
//! heap, so the holes that request garbage leaves between store data stay resident. Measured
//! on the peer dataset loaded over HTTP: free-but-resident heap ran from 10% to 40% of RSS,
//! depending on which heap each request thread happened to use (BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Request buffers kept for the next request, a few for the whole server rather than one
/// per thread: the blocking pool runs a thread per request in flight, and per-thread
/// buffers of a decompressed remote-write body (hundreds of kilobytes each) had grown to
/// 177 bytes per series of resident memory on the peer dataset (BENCHMARKS.md). A pool is
/// emptied when the requests pause (the trim in [`reclaim_if_churned`]): kept through a
/// pause they were another 44 bytes per series there, for nothing.
pub struct Pool<T> {
    items: std::sync::Mutex<Vec<T>>,
    registered: AtomicBool,
}

/// A pool as the trim sees it: something to empty.
trait Drain: Sync {
    fn drain(&self) -> usize;
}

/// Every pool that has kept an item: pools are statics, so they are registered once, at
/// their first [`Pool::give`], and never leave.
static POOLS: std::sync::Mutex<Vec<&'static dyn Drain>> = std::sync::Mutex::new(Vec::new());

/// Drops what every pool keeps; returns how many items that was.
pub fn drain_pools() -> usize {
    let pools = POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    pools.iter().map(|p| p.drain()).sum()
}

/// Buffers a [`Pool`] keeps: as many as requests convert at once on this kind of machine.
const POOLED: usize = 4;

impl<T: Default + Send + 'static> Pool<T> {
    pub const fn new() -> Self {
        Pool {
            items: std::sync::Mutex::new(Vec::new()),
            registered: AtomicBool::new(false),
        }
    }

    /// A kept buffer, or a new one.
    pub fn take(&self) -> T {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Keeps `item` for a later [`Pool::take`], unless the pool is full.
    pub fn give(&'static self, item: T) {
        if !self.registered.swap(true, Ordering::Relaxed) {
            POOLS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(self);
        }
        let mut items = self
            .items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if items.len() < POOLED {
            items.push(item);
        }
    }
}

impl<T: Default + Send + 'static> Default for Pool<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send> Drain for Pool<T> {
    fn drain(&self) -> usize {
        // Dropped outside the lock: freeing hundreds of kilobytes is not instant.
        let kept = std::mem::take(
            &mut *self
                .items
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        kept.len()
    }
}

/// When work that frees much memory (a decoded request, a maintenance pass) last ran, in
/// milliseconds since [`epoch`] plus one; 0 when nothing churned since the last trim.
static LAST_CHURN: AtomicU64 = AtomicU64::new(0);

/// Trimming waits until churn has paused this long: during a sustained load every trim
/// would hand back pages that the next requests fault in again (measured: a tenth of the
/// server's CPU under remote-write load went to page faults and TLB shootdowns). Loaders
/// and agents send back to back; a pause this long is the end of a burst.
const QUIET: Duration = Duration::from_millis(500);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Records that a burst of allocations was freed; a [`reclaim_if_churned`] after the next
/// quiet half second empties the pools and trims.
pub fn note_churn() {
    LAST_CHURN.store(now_ms(), Ordering::Relaxed);
}

/// Empties the request pools and returns whole free pages inside the heaps to the OS if
/// anything churned since the last trim and nothing has for half a second. Cheap otherwise;
/// a trim walks the heaps' free lists (about a millisecond per 100 MB of heap here), so
/// call it from a blocking thread, a few times a second.
pub fn reclaim_if_churned() -> bool {
    let last = LAST_CHURN.load(Ordering::Relaxed);
    if last == 0 || now_ms().saturating_sub(last) < QUIET.as_millis() as u64 {
        return false;
    }
    // Churn that lands between the load and here is kept for the next call.
    if LAST_CHURN
        .compare_exchange(last, 0, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    drain_pools();
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

/// The allocator's own view: bytes handed out (in use, small and mmapped chunks), and
/// bytes free inside its heap (resident unless trimmed), for `/metrics`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn allocator_bytes() -> Option<(usize, usize)> {
    // SAFETY: mallinfo2 only reads the allocator's statistics (taking each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd, info.fordblks))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn allocator_bytes() -> Option<(usize, usize)> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_empties_the_pools() {
        static BUFFERS: Pool<Vec<u8>> = Pool::new();
        BUFFERS.give(vec![7; 100_000]);
        BUFFERS.give(vec![8; 100_000]);
        assert_eq!(BUFFERS.take().len(), 100_000, "a kept buffer is reused");
        assert!(drain_pools() >= 1);
        assert!(BUFFERS.take().is_empty(), "nothing kept after the drain");
        // Registered once: giving again keeps the buffer for the next drain.
        BUFFERS.give(vec![9; 10]);
        let entries = POOLS
            .lock()
            .unwrap()
            .iter()
            .filter(|p| std::ptr::addr_eq(**p as *const dyn Drain, &BUFFERS))
            .count();
        assert_eq!(entries, 1);
        assert!(drain_pools() >= 1);
    }
}
