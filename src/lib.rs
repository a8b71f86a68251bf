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
    ConnId, accept, addr, datagram, error, handler, lifecycle, log_limit, protocol, push, server,
    stats, stream,
};
#[cfg(feature = "tls")]
pub use easynet_core::{rustls, tls};

pub mod guide;
pub mod prelude;

/// `use easynet::*` brings nothing named `tokio` or `mio` into scope, so the runtime's
/// attribute and the crates keep their names:
///
/// ```no_run
/// use easynet::*;
///
/// #[tokio::main]
/// async fn main() {
///     let _server = aio::AsyncTcpServer::builder(protocol::Stream::lines(), |_| Echo)
///         .host("127.0.0.1")
///         .build()
///         .unwrap();
///     tokio::task::yield_now().await;
/// }
/// # struct Echo;
/// # impl handler::StreamHandler for Echo { type Request = String; type Response = String;
/// #   fn handle(&mut self, _: &mut handler::StreamContext<'_, String>, _: handler::Received<String>) -> handler::HandlerResult { Ok(handler::Next::recv()) } }
/// ```
#[cfg(all(doctest, feature = "tokio"))]
pub struct GlobImportDoctest;

/// The blocking servers and clients (the mio driver, crate `easynet-mio`): `serve` runs
/// the server on the calling thread. Named after what it is rather than its event loop, so
/// that `use easynet::*` does not shadow the `mio` crate.
#[cfg(feature = "mio")]
pub mod blocking {
    #[doc(inline)]
    pub use easynet_mio::*;
}
/// The async servers and clients (the tokio driver, crate `easynet-tokio`). Not called
/// `tokio`, so that `use easynet::*` leaves `#[tokio::main]` and the `tokio` crate alone.
#[cfg(feature = "tokio")]
pub mod aio {
    #[doc(inline)]
    pub use easynet_tokio::*;
}
