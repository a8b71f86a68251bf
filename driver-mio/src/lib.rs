//! Blocking ("standalone") easynet servers and clients on a mio event loop.
//!
//! [`TcpServer`] is EasyNetwork's StandaloneTCPNetworkServer: `serve`
//! blocks the calling thread on a mio event loop that moves bytes between sockets and the
//! core's [`Session`](easynet_core::stream::Session)s, which run the portable handlers (the
//! same handler values the tokio driver runs). A [`ServerHandle`] (`Send + Sync + Clone`)
//! stops it from any thread through a `mio::Waker`.
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
