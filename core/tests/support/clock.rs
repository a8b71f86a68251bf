//! A virtual clock: an `Instant` origin plus offsets the test advances by hand.

use std::time::{Duration, Instant};

/// Virtual time; never reads the system clock after creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    now: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            now: Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }

    pub fn advance_ms(&mut self, ms: u64) -> Instant {
        self.advance(Duration::from_millis(ms))
    }
}
