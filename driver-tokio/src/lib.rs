//! Async easynet servers and clients on tokio.
//!
//! [`AsyncTcpServer`] is EasyNetwork's AsyncTCPNetworkServer: a builder for the listening
//! options (host forms, port 0, backlog, reuse_port, max_recv_size, TLS with its timeouts),
//! `activate`, `serve` (or `serve_with_shutdown`), `shutdown`, `close`. Each
//! connection is one tokio task that moves bytes between its socket and the core's
//! [`Session`](easynet_core::stream::Session), which runs the portable handler; there is no
//! second state machine here.
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
