//! Accept errors: which ones pause accepting, which ones are ignored, which ones are fatal.
//!
//! Running out of file descriptors or kernel memory must never stop a server, and must not
//! make it spin on `accept` either: those errors pause accepting for [`ACCEPT_PAUSE`]
//! (100 ms, as EasyNetwork and actix-server do). Errors that concern only the one incoming
//! connection (it was reset before we took it, say) are skipped.
//!
//! ```
//! use std::io;
//! use std::time::{Duration, Instant};
//! use easynet_core::accept::{AcceptAction, AcceptGate};
//!
//! let mut gate = AcceptGate::new();
//! let now = Instant::now();
//! let emfile = io::Error::from_raw_os_error(24); // EMFILE on Linux and macOS
//! assert_eq!(gate.on_error(now, &emfile), AcceptAction::Pause { until: now + Duration::from_millis(100) });
//! assert!(!gate.can_accept(now));
//! assert!(gate.can_accept(now + Duration::from_millis(100)));
//! ```

use std::io;
use std::time::{Duration, Instant};

/// How long accepting pauses after a capacity error.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What an accept error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptErrorClass {
    /// Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): pause, then retry.
    Capacity,
    /// Only that connection failed (reset, aborted, protocol error): skip it.
    Ignorable,
    /// Anything else: the listener cannot go on.
    Fatal,
}

/// What the driver should do after an accept error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptAction {
    /// Stop accepting until `until`, then go on.
    Pause {
        /// When accepting may resume.
        until: Instant,
    },
    /// Accept the next connection straight away.
    Continue,
    /// Stop this listener and report the error.
    Fail,
}

#[cfg(target_os = "linux")]
mod errno {
    pub(super) const CAPACITY: &[i32] = &[24, 23, 105, 12]; // EMFILE ENFILE ENOBUFS ENOMEM
    // EPROTO ENOPROTOOPT EHOSTDOWN ENONET EOPNOTSUPP ENOSR ESOCKTNOSUPPORT EPROTONOSUPPORT
    pub(super) const IGNORABLE: &[i32] = &[71, 92, 112, 64, 95, 63, 94, 93];
}

#[cfg(all(unix, not(target_os = "linux")))]
mod errno {
    pub const CAPACITY: &[i32] = &[24, 23, 55, 12]; // EMFILE ENFILE ENOBUFS ENOMEM (BSD family)
    pub const IGNORABLE: &[i32] = &[100, 42, 64, 102, 44, 43]; // EPROTO ENOPROTOOPT EHOSTDOWN EOPNOTSUPP ESOCKTNOSUPPORT EPROTONOSUPPORT
}

#[cfg(not(unix))]
mod errno {
    pub const CAPACITY: &[i32] = &[];
    pub const IGNORABLE: &[i32] = &[];
}

/// Sorts an accept error (EasyNetwork's lists, §1.5 of the behaviour notes).
pub fn classify(err: &io::Error) -> AcceptErrorClass {
    if let Some(code) = err.raw_os_error() {
        if errno::CAPACITY.contains(&code) {
            return AcceptErrorClass::Capacity;
        }
        if errno::IGNORABLE.contains(&code) {
            return AcceptErrorClass::Ignorable;
        }
    }
    use io::ErrorKind as K;
    match err.kind() {
        K::OutOfMemory => AcceptErrorClass::Capacity,
        K::ConnectionAborted
        | K::ConnectionReset
        | K::PermissionDenied
        | K::TimedOut
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::Interrupted
        | K::WouldBlock => AcceptErrorClass::Ignorable,
        _ => AcceptErrorClass::Fatal,
    }
}

/// Tracks whether accepting is paused.
#[derive(Debug, Clone, Default)]
pub struct AcceptGate {
    paused_until: Option<Instant>,
    pauses: u64,
}

impl AcceptGate {
    /// A gate that is open.
    pub const fn new() -> Self {
        Self {
            paused_until: None,
            pauses: 0,
        }
    }

    /// Reports an accept error and says what to do; a pause or a failed listener is
    /// logged here, once, for every driver.
    pub fn on_error(&mut self, now: Instant, err: &io::Error) -> AcceptAction {
        match classify(err) {
            AcceptErrorClass::Capacity => {
                let until = crate::deadline_after(now, ACCEPT_PAUSE);
                self.paused_until = Some(until);
                self.pauses += 1;
                tracing::error!("accept returned {err}; retrying in 0.1 seconds");
                AcceptAction::Pause { until }
            }
            AcceptErrorClass::Ignorable => AcceptAction::Continue,
            AcceptErrorClass::Fatal => {
                tracing::error!(error = %err, "listener failed; it stops accepting");
                AcceptAction::Fail
            }
        }
    }

    /// True unless a pause is in force at `now`.
    pub fn can_accept(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|until| now >= until)
    }

    /// When the current pause ends, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends the pause once its time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.can_accept(now) {
            self.paused_until = None;
        }
    }

    /// How many times accepting was paused.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_errnos_are_sorted_like_easynetwork() {
        for code in [24, 23, 105, 12] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(code)),
                AcceptErrorClass::Capacity
            );
        }
        for code in [71, 103, 104, 1, 110] {
            // EPROTO ECONNABORTED ECONNRESET EPERM ETIMEDOUT
            assert_eq!(
                classify(&io::Error::from_raw_os_error(code)),
                AcceptErrorClass::Ignorable
            );
        }
        assert_eq!(
            classify(&io::Error::from_raw_os_error(9)),
            AcceptErrorClass::Fatal
        ); // EBADF
    }

    #[test]
    fn pause_lasts_exactly_100ms_and_is_counted() {
        let mut gate = AcceptGate::new();
        let t0 = Instant::now();
        let err = io::Error::from(io::ErrorKind::OutOfMemory);
        assert_eq!(
            gate.on_error(t0, &err),
            AcceptAction::Pause {
                until: t0 + ACCEPT_PAUSE
            }
        );
        assert!(!gate.can_accept(t0 + Duration::from_millis(99)));
        assert_eq!(gate.poll_timeout(), Some(t0 + ACCEPT_PAUSE));
        gate.handle_timeout(t0 + ACCEPT_PAUSE);
        assert!(gate.can_accept(t0 + ACCEPT_PAUSE));
        assert_eq!(gate.poll_timeout(), None);
        assert_eq!(gate.pauses(), 1);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(gate.on_error(t0, &reset), AcceptAction::Continue);
        let other = io::Error::other("boom");
        assert_eq!(gate.on_error(t0, &other), AcceptAction::Fail);
    }
}
