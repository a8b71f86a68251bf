//! [`DropCounter`]: how a datagram server (UDP or Unix) shows how many datagrams it dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Datagrams a datagram server dropped since it was built: a peer's queue was full,
/// datagrams were still queued at shutdown, or (Unix) the sender was an unnamed socket that
/// cannot be answered. A shared handle: clone it before handing the server to a thread and
/// read it from anywhere.
///
/// ```
/// use easynet_common::DropCounter;
///
/// let drops = DropCounter::default();
/// let seen_by_server = drops.clone();
/// seen_by_server.add(3);
/// assert_eq!(drops.get(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Arc<AtomicU64>);

impl DropCounter {
    /// Datagrams dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` more drops (the drivers call this).
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
}
