//! Async easynet servers and clients on tokio.
//!
//! This crate is a placeholder until the tokio driver lands; it re-exports the core so that
//! the workspace layout is complete.

#![deny(missing_docs)]

pub use easynet_core as core;
