//! Shared pieces of the core's socket-free tests: a virtual clock, rcgen certificates,
//! arbitrary chunking of byte streams, a log-capturing subscriber, a recording line
//! handler. The in-memory server itself is the public simulator, `easynet_core::sim`.
#![allow(dead_code)]

pub mod certs;
pub mod chunks;
pub mod clock;
pub mod logs;
pub mod scripted;
