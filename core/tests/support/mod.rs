//! Shared pieces of the core's socket-free tests: a virtual clock, rcgen certificates.
#![allow(dead_code)]

pub mod certs;
pub mod clock;
pub mod sim;
