//! The server-level idle timeout of one connection: closed once no byte came for a while,
//! whatever its handler waits for.
//!
//! The timer is lazy, as the datagram peers' idle eviction is: a read only notes its time,
//! and the deadline the driver sees moves only when it fires early (the peer was heard
//! since). So a busy connection does not push a new timer on every read.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(super) struct IdleTimer {
    /// `None`: no idle timeout (the default), or it fired already.
    timeout: Option<Duration>,
    /// When the last byte came (or the connection started).
    last: Option<Instant>,
    /// When to look next: the driver's timer.
    check: Option<Instant>,
}

impl IdleTimer {
    pub(super) fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            last: None,
            check: None,
        }
    }

    /// Bytes came at `now` (or the connection starts).
    #[inline]
    pub(super) fn touch(&mut self, now: Instant) {
        let Some(timeout) = self.timeout else {
            return;
        };
        self.last = Some(now);
        if self.check.is_none() {
            // A timeout the clock cannot add is no timeout.
            self.check = now.checked_add(timeout);
        }
    }

    /// Starts the timer if nothing has yet.
    #[inline]
    pub(super) fn start(&mut self, now: Instant) {
        if self.last.is_none() {
            self.touch(now);
        }
    }

    /// When [`expired`](Self::expired) has something to look at.
    #[inline]
    pub(super) fn next(&self) -> Option<Instant> {
        self.check
    }

    /// True once, when nothing came for the whole timeout; re-arms from the last byte
    /// otherwise.
    pub(super) fn expired(&mut self, now: Instant) -> bool {
        let (Some(timeout), Some(check), Some(last)) = (self.timeout, self.check, self.last) else {
            return false;
        };
        if now < check {
            return false;
        }
        match last.checked_add(timeout) {
            Some(due) if now < due => {
                self.check = Some(due);
                false
            }
            Some(_) => {
                self.stop();
                true
            }
            None => {
                self.stop();
                false
            }
        }
    }

    /// No idle timeout any more (it fired, or the connection is closing).
    pub(super) fn stop(&mut self) {
        self.timeout = None;
        self.check = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_silence_and_moves_lazily_with_reads() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut idle = IdleTimer::new(Some(10 * s));
        idle.start(t0);
        assert_eq!(idle.next(), Some(t0 + 10 * s));
        idle.touch(t0 + 4 * s);
        assert_eq!(
            idle.next(),
            Some(t0 + 10 * s),
            "a read does not move the timer"
        );
        assert!(!idle.expired(t0 + 10 * s));
        assert_eq!(
            idle.next(),
            Some(t0 + 14 * s),
            "re-armed from the last byte"
        );
        assert!(idle.expired(t0 + 14 * s));
        assert_eq!(idle.next(), None);
        assert!(!idle.expired(t0 + 100 * s), "once");
    }

    #[test]
    fn none_and_unaddable_timeouts_never_fire() {
        let t0 = Instant::now();
        let mut off = IdleTimer::new(None);
        off.start(t0);
        assert_eq!(off.next(), None);
        let mut max = IdleTimer::new(Some(Duration::MAX));
        max.start(t0);
        assert_eq!(max.next(), None);
        assert!(!max.expired(t0 + Duration::from_secs(1 << 40)));
    }
}
