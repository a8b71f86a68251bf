//! Shared pieces of the core's socket-free tests: a virtual clock, rcgen certificates,
//! arbitrary chunking of byte streams.
#![allow(dead_code)]

pub mod certs;
pub mod chunks;
pub mod clock;
pub mod logs;
pub mod sim;
