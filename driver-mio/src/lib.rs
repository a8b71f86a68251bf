//! Blocking easynet servers and clients on a mio event loop.
//!
//! A server's [`serve`](TcpServer::serve) runs the server on the calling thread: a mio
//! event loop moves bytes between the sockets and the core's
//! [`Session`](easynet_core::stream::Session)s, which run your portable handlers (the same
//! handler values the tokio driver runs). [`ServerThread`] runs a server on a thread of
//! its own and returns once it serves; a [`ServerHandle`] (`Send + Sync + Clone`) shuts it
//! down from any thread. The clients ([`TcpClient`], [`UdpClient`], ...) block on each call.
//!
//! Handlers run on the event loop: a handler that blocks (a long computation, a blocking
//! call, a sleep) stalls every connection of that loop. Hand such work to a thread of your
//! own, or use the tokio driver's async handlers.
//!
//! # Quick start
//!
//! ```
//! use easynet_mio::{ServerThread, TcpClient, TcpServer};
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
//! let server = TcpServer::builder(Stream::lines(), |_| Upper)
//!     .host("127.0.0.1") // port 0 (the default): the system picks one
//!     .build()?;
//! let mut thread = ServerThread::start(server)?; // or `server.serve()` on this thread
//!
//! let mut client = TcpClient::connect(thread.addresses()[0], Stream::lines())?;
//! client.send(&"hello".to_owned())?;
//! assert_eq!(client.recv()?, "HELLO");
//! client.close();
//! thread.join(None)?; // graceful shutdown
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Running on N cores
//!
//! A server runs one event loop by default. `TcpServer::builder(..).workers(n)`
//! runs `n` loops (TCP only; Unix stream and datagram servers run one): loop 0 on the
//! thread that calls `serve`, the others on threads of their own. Each loop has its
//! own listening sockets on the same address (`SO_REUSEPORT`, set automatically when
//! `n > 1`), so the kernel spreads new connections over the loops; a connection stays on
//! the loop that accepted it. One loop per core is the usual choice
//! (`std::thread::available_parallelism`). Shutdown, `close` and the connection table are
//! shared: `ServerHandle::shutdown` stops every loop. `bench/run.py --scaling` measures 1
//! vs 2 workers.

#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![warn(missing_debug_implementations)]
// docs.rs: label every feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod connect;
mod control;
mod tcp;
mod thread;
mod udp;
mod udp_client;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
mod unix_client;
mod worker;

#[allow(deprecated)]
pub use client::TcpResponses;
pub use client::{Responses, TcpClient};
pub use control::ServerHandle;
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
/// The rustls our TLS types come from (feature `tls`).
#[cfg(feature = "tls")]
pub use easynet_core::rustls;
pub use tcp::{TcpServer, TcpServerBuilder};
pub use thread::{BlockingServer, ServerThread};
pub use udp::{UdpServer, UdpServerBuilder};
pub use udp_client::{UdpClient, UdpResponses};
#[cfg(unix)]
pub use unix::{
    UnixDatagramServer, UnixDatagramServerBuilder, UnixStreamServer, UnixStreamServerBuilder,
};
#[cfg(unix)]
pub use unix_client::{UnixDatagramClient, UnixStreamClient};
