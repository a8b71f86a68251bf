//! Shared pieces of the integration tests.
#![allow(dead_code)]

pub mod drivers;
#[cfg(unix)]
pub mod unix;
