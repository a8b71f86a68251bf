//! Rate limits for log lines a client can cause at will (parse errors, handler errors,
//! failed handshakes, bad datagrams): without them a client sending garbage makes the server
//! write a line per request, and a slow log sink then slows the server.
//!
//! [`LogLimiter`] is one peer's budget: at most `burst` lines per `window`; what is over is
//! counted, and the next line that passes carries the count (`suppressed = K`), or
//! [`take_suppressed`](LogLimiter::take_suppressed) hands it over when the peer goes away.
//! [`PeerLogLimits`] keeps one budget per peer in a map of bounded size, so a flood of
//! peers cannot make it grow without bound. Both take `now` from the caller (no clock
//! reads), like every machine of the core.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use easynet_core::log_limit::LogLimiter;
//!
//! let start = Instant::now();
//! let mut limit = LogLimiter::new(2, Duration::from_secs(1));
//! assert_eq!(limit.check(start), Some(0)); // log it
//! assert_eq!(limit.check(start), Some(0));
//! assert_eq!(limit.check(start), None); // suppressed, counted
//! assert_eq!(limit.check(start), None);
//! // A second later the next line passes and says what was left out.
//! assert_eq!(limit.check(start + Duration::from_secs(1)), Some(2));
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lines a peer may cause per [`DEFAULT_WINDOW`] before the rest are counted instead.
pub const DEFAULT_BURST: u32 = 5;
/// The window of [`DEFAULT_BURST`]: one second.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);
/// Peers [`PeerLogLimits`] keeps a budget for, by default; the others share one.
pub const DEFAULT_PEERS: usize = 1024;

/// One peer's log budget: at most `burst` lines per window; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    /// Start of the current window; `None` before the first line.
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_WINDOW)
    }
}

impl LogLimiter {
    /// At most `burst` lines per `window` (a `burst` of 0 suppresses everything).
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// A line is about to be written at `now`: `Some(k)` means write it, and `k` lines were
    /// suppressed since the last one written (say so when `k > 0`); `None` means leave it
    /// out (it is counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines suppressed and not yet reported; resets the count. Call it when the peer goes
    /// away, to log one "suppressed K similar messages" line.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// True when the window has passed and nothing waits to be reported: the budget holds
    /// nothing worth keeping.
    fn is_stale(&self, now: Instant) -> bool {
        self.suppressed == 0
            && self
                .start
                .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
    }
}

/// One [`LogLimiter`] per peer, for at most `capacity` peers; peers beyond it share one
/// budget, so memory stays bounded under a flood of peers and so does the number of lines.
///
/// ```
/// use std::time::{Duration, Instant};
/// use easynet_core::log_limit::PeerLogLimits;
///
/// let now = Instant::now();
/// let mut limits = PeerLogLimits::new(1, Duration::from_secs(1), 2);
/// assert_eq!(limits.check("a", now), Some(0));
/// assert_eq!(limits.check("a", now), None); // a's budget is used
/// assert_eq!(limits.check("b", now), Some(0)); // b has its own
/// assert_eq!(limits.check("c", now), Some(0)); // the map is full: c and d share one
/// assert_eq!(limits.check("d", now), None);
/// assert!(limits.len() <= 2);
/// ```
#[derive(Debug, Clone)]
pub struct PeerLogLimits<K> {
    peers: HashMap<K, LogLimiter>,
    /// The budget of peers that found the map full.
    overflow: LogLimiter,
    template: LogLimiter,
    capacity: usize,
    /// Stale entries are swept at most once per window, so a full map costs one scan per
    /// window, not one per line.
    swept: Option<Instant>,
}

impl<K: Hash + Eq> Default for PeerLogLimits<K> {
    fn default() -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_WINDOW, DEFAULT_PEERS)
    }
}

impl<K: Hash + Eq> PeerLogLimits<K> {
    /// `burst` lines per `window` for each of at most `capacity` peers.
    pub fn new(burst: u32, window: Duration, capacity: usize) -> Self {
        Self {
            peers: HashMap::new(),
            overflow: LogLimiter::new(burst, window),
            template: LogLimiter::new(burst, window),
            capacity,
            swept: None,
        }
    }

    /// [`LogLimiter::check`] with `peer`'s budget.
    pub fn check(&mut self, peer: K, now: Instant) -> Option<u64> {
        if let Some(limit) = self.peers.get_mut(&peer) {
            return limit.check(now);
        }
        if self.peers.len() >= self.capacity {
            self.sweep(now);
        }
        if self.peers.len() >= self.capacity {
            return self.overflow.check(now);
        }
        self.peers
            .entry(peer)
            .or_insert_with(|| self.template.clone())
            .check(now)
    }

    /// `peer` went away: its budget is dropped, returning what it had suppressed and not
    /// reported.
    pub fn remove(&mut self, peer: &K) -> u64 {
        self.peers
            .remove(peer)
            .map_or(0, |mut l| l.take_suppressed())
    }

    /// Peers with a budget of their own.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer has a budget of its own.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let window = self.template.window;
        if self
            .swept
            .is_some_and(|s| now.saturating_duration_since(s) < window)
        {
            return;
        }
        self.swept = Some(now);
        self.peers.retain(|_, l| !l.is_stale(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_rest_is_reported_once() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(3, SEC);
        let passed = (0..1000).filter(|_| l.check(t0).is_some()).count();
        assert_eq!(passed, 3);
        assert_eq!(l.check(t0 + SEC), Some(997));
        assert_eq!(l.take_suppressed(), 0);
        assert_eq!(l.check(t0 + SEC), Some(0));
    }

    #[test]
    fn what_is_left_at_the_end_is_handed_over() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1, SEC);
        l.check(t0);
        l.check(t0);
        l.check(t0);
        assert_eq!(l.take_suppressed(), 2);
        assert_eq!(l.take_suppressed(), 0);
    }

    #[test]
    fn the_map_is_bounded_and_stale_peers_make_room() {
        let t0 = Instant::now();
        let mut m = PeerLogLimits::new(1, SEC, 4);
        for p in 0..100u32 {
            m.check(p, t0);
        }
        assert_eq!(m.len(), 4);
        // A window later the old budgets are stale: new peers get their own again.
        assert_eq!(m.check(1000, t0 + SEC), Some(0));
        assert_eq!(m.check(1000, t0 + SEC), None);
        assert!(m.len() <= 4);
        assert_eq!(m.remove(&1000), 1);
    }

    proptest! {
        /// Whatever the peers and timing: each budget writes at most `burst` lines per
        /// window, every event is either written or counted in a later report, and the
        /// map never holds more than its capacity.
        #[test]
        fn lines_are_bounded_and_nothing_is_lost(
            events in prop::collection::vec((0u8..16, 0u64..300), 1..400),
            burst in 0u32..4,
            capacity in 1usize..6,
        ) {
            let t0 = Instant::now();
            let window = Duration::from_millis(100);
            let mut m = PeerLogLimits::new(burst, window, capacity);
            let mut now = t0;
            let (mut written, mut reported) = (0u64, 0u64);
            let mut lines: Vec<Instant> = Vec::new();
            for &(peer, step) in &events {
                now += Duration::from_millis(step);
                if let Some(k) = m.check(peer, now) {
                    written += 1;
                    reported += k;
                    lines.push(now);
                }
                prop_assert!(m.len() <= capacity);
            }
            let peers: std::collections::HashSet<u8> = events.iter().map(|e| e.0).collect();
            for p in peers {
                reported += m.remove(&p);
            }
            reported += m.overflow.take_suppressed();
            prop_assert_eq!(written + reported, events.len() as u64);
            // Any span of one window overlaps at most two windows of each budget: at most
            // capacity + 1 budgets (a slot is reused only once stale) of 2 x `burst` lines.
            let most = 2 * (capacity + 1) * burst as usize;
            for (i, &t) in lines.iter().enumerate() {
                let n = lines[i..].iter().take_while(|&&u| u < t + window).count();
                prop_assert!(n <= most, "{} lines in a window, at most {}", n, most);
            }
        }
    }
}
