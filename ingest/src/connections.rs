//! How many connections each listener holds: a cap per listener (`--max-connections`,
//! lowered to what the process's file descriptors allow, keeping some for the log,
//! snapshots and the other listener), connections past it refused at once and counted, and
//! the descriptor limit raised to its hard limit at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept back from the listeners: log segments, snapshots being written and
/// read, token and certificate files, the runtime's own.
pub const RESERVED_FDS: u64 = 256;

/// One listener's connections: a permit per open connection, held until it closes.
pub struct ConnectionCap {
    pub listener: &'static str,
    pub max: usize,
    permits: Arc<Semaphore>,
    refused: AtomicU64,
}

impl ConnectionCap {
    pub fn new(listener: &'static str, max: usize) -> Self {
        ConnectionCap {
            listener,
            max,
            permits: Arc::new(Semaphore::new(max)),
            refused: AtomicU64::new(0),
        }
    }

    /// A permit for a new connection, or `None` (counted) when the listener is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The connection caps of the HTTP and gRPC listeners.
pub struct Connections {
    pub http: ConnectionCap,
    pub grpc: ConnectionCap,
}

impl Connections {
    /// Caps of `configured` connections per listener, lowered so that both listeners full
    /// still leave [`RESERVED_FDS`] descriptors (after raising the soft limit to the hard
    /// one). Says so on standard error when it lowers them.
    pub fn new(configured: usize) -> Self {
        let fds = raise_fd_limit();
        let per_listener = (fds.saturating_sub(RESERVED_FDS) / 2).max(1) as usize;
        let max = configured.min(per_listener);
        if max < configured {
            tracing::warn!(
                configured,
                allowed = max,
                descriptors = fds,
                "--max-connections lowered to what the open-file limit allows"
            );
        }
        Connections {
            http: ConnectionCap::new("http", max),
            grpc: ConnectionCap::new("grpc", max),
        }
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit in force.
#[allow(unsafe_code)]
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_refuses_and_counts_until_a_connection_closes() {
        let cap = ConnectionCap::new("http", 2);
        let a = cap.admit().expect("room");
        let _b = cap.admit().expect("room");
        assert!(cap.admit().is_none());
        assert_eq!((cap.open(), cap.refused()), (2, 1));
        drop(a);
        assert!(cap.admit().is_some());
        assert_eq!(cap.refused(), 1);
    }

    #[test]
    fn caps_leave_descriptors_in_reserve() {
        let c = Connections::new(usize::MAX);
        let fds = raise_fd_limit();
        assert!((c.http.max + c.grpc.max) as u64 + RESERVED_FDS <= fds.max(RESERVED_FDS + 2));
    }
}
