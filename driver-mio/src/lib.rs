//! Blocking ("standalone") easynet servers and clients on a mio event loop.
//!
//! This crate is a placeholder until the mio driver lands; it re-exports the core so that
//! the workspace layout is complete.

#![deny(missing_docs)]

pub use easynet_core as core;
