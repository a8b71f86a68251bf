//! easynet: message-oriented network servers and clients.
//!
//! Pick a protocol, write a handler; easynet owns sockets, framing, TLS, timeouts,
//! concurrency and graceful shutdown. This facade re-exports the sans-IO core and, behind
//! features, the tokio (`tokio`) and mio (`mio`) drivers. The [`guide`] walks through it
//! chapter by chapter; [`prelude`] has the names almost every program uses.

#![deny(missing_docs)]
// docs.rs: label every feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README's examples are compiled as doc tests.
#![doc = include_str!("../README.md")]

#[cfg(feature = "sim")]
pub use easynet_core::sim;
pub use easynet_core::{
    ConnId, accept, addr, datagram, handler, lifecycle, log_limit, protocol, push, server, stats,
    stream,
};
#[cfg(feature = "tls")]
pub use easynet_core::{rustls, tls};

pub mod guide;
pub mod prelude;

#[cfg(feature = "mio")]
pub use easynet_mio as mio;
#[cfg(feature = "tokio")]
pub use easynet_tokio as tokio;
