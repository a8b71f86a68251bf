//! Async easynet servers and clients on tokio.
//!
//! A server ([`AsyncTcpServer`], [`AsyncUdpServer`], the Unix ones) is built from a protocol
//! and a handler factory, then [`serve`](AsyncTcpServer::serve)d on the current runtime
//! (or [`serve_with_shutdown`](AsyncTcpServer::serve_with_shutdown) until a signal) and
//! stopped with [`shutdown`](AsyncTcpServer::shutdown); it is `Clone`, every clone the same
//! server. Each connection is one tokio task that moves bytes between its socket and the
//! core's [`Session`](easynet_core::stream::Session), which runs the handler.
//!
//! Two kinds of handlers: portable ones (`StreamHandler`, `DatagramHandler`) are plain
//! functions called on the connection's task, so they must not block or run long (that
//! task, and on a `current_thread` runtime every connection, waits); async ones
//! ([`AsyncStreamHandler`], [`AsyncDatagramHandler`]) `await` freely on a
//! [`StreamPeer`] / [`DatagramPeer`].
//!
//! # Quick start
//!
//! ```
//! use easynet_tokio::{AsyncTcpClient, AsyncTcpServer};
//! use easynet_core::handler::{HandlerResult, Next, Received, StreamContext, StreamHandler};
//! use easynet_core::protocol::Stream;
//!
//! struct Upper;
//!
//! impl StreamHandler for Upper {
//!     type Request = String;
//!     type Response = String;
//!
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
//!         if let Received::Request(line) = r {
//!             cx.send(line.to_uppercase())?;
//!         }
//!         Ok(Next::recv())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AsyncTcpServer::builder(Stream::lines(), |_| Upper)
//!     .host("127.0.0.1") // port 0 (the default): the system picks one
//!     .build()?;
//! server.activate().await?; // bind now, to learn the address
//! let addr = server.addresses()[0];
//! let running = tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve().await }
//! });
//!
//! let mut client = AsyncTcpClient::connect(addr, Stream::lines()).await?;
//! client.send(&"hello".to_owned()).await?;
//! assert_eq!(client.recv().await?, "HELLO");
//! client.close().await;
//!
//! server.shutdown().await; // graceful
//! running.await??;
//! # Ok(()) }
//! ```
//!
//! # Running on N cores
//!
//! The servers run on whatever runtime calls them: one task per connection (and per accept
//! loop), so a multi-thread runtime spreads connections over its worker threads, e.g.
//! `tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()`
//! (or `#[tokio::main(flavor = "multi_thread", worker_threads = n)]`), then
//! `rt.block_on(server.serve())`. A `current_thread` runtime runs everything on
//! one thread, which is the cheapest per request when one core is enough. Each connection
//! task keeps no read buffer of its own (one per worker thread), so more workers cost
//! a buffer each, not one per connection. `bench/run.py --scaling` measures 1 vs 2 workers.

#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![warn(missing_debug_implementations)]
// docs.rs: label every feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod async_datagram;
mod async_stream;
mod client;
mod conn;
mod connect;
mod datagram_server;
mod dgram;
mod orders;
mod relay;
mod shell;
mod socket;
mod stream_server;
mod tcp;
mod udp;
mod udp_client;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
mod unix_client;

pub use async_stream::{AsyncStreamHandler, RecvError, StreamPeer};
pub use client::{AsyncTcpClient, Responses};
/// The options of a Unix stream client's `connect_with` and `from_std`.
#[cfg(unix)]
pub use easynet_common::unix::UnixStreamClientOptions;
#[cfg(feature = "webpki-roots")]
pub use easynet_common::webpki_roots_config;
/// Socket activation: the listening sockets a service manager passed (`LISTEN_FDS`).
#[cfg(unix)]
pub use easynet_common::{ActivationError, InheritedSocket, SocketKind, listen_fds};
pub use easynet_common::{
    BindError, ClientError, ConfigError, DropCounter, EventSet, Host, ServerError,
    TcpClientOptions, TcpKeepalive,
};
pub use easynet_core as core;
pub use easynet_core::datagram::{AsyncDatagramHandler, DatagramPeer, DatagramSendError};
/// The rustls our TLS types come from (feature `tls`).
#[cfg(feature = "tls")]
pub use easynet_core::rustls;
pub use socket::StreamSocket;
pub use tcp::{AsyncTcpServer, TcpServerBuilder};
pub use udp::{AsyncUdpServer, UdpServerBuilder};
pub use udp_client::{AsyncUdpClient, UdpResponses};
#[cfg(unix)]
pub use unix::{
    AsyncUnixDatagramServer, AsyncUnixStreamServer, UnixDatagramServerBuilder,
    UnixStreamServerBuilder,
};
#[cfg(unix)]
pub use unix_client::{AsyncUnixDatagramClient, AsyncUnixStreamClient};
