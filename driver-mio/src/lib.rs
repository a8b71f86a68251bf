//! Blocking ("standalone") easynet servers and clients on a mio event loop.
//!
//! [`StandaloneTcpServer`] is EasyNetwork's StandaloneTCPNetworkServer: `serve_forever`
//! blocks the calling thread on a mio event loop that moves bytes between sockets and the
//! core's [`Session`](easynet_core::stream::Session)s, which run the portable handlers (the
//! same handler values the tokio driver runs). A [`ServerHandle`] (`Send + Sync + Clone`)
//! stops it from any thread through a `mio::Waker`.

#![deny(missing_docs)]

mod client;
mod control;
mod tcp;
mod thread;
mod udp;
#[cfg(unix)]
mod unix;
mod worker;

pub use client::{TcpClient, TcpResponses, UdpClient, UdpResponses};
pub use control::ServerHandle;
pub use easynet_common::{
    BindError, ClientError, ConfigError, DropCounter, EventSet, Host, ServerError,
};
pub use easynet_core as core;
pub use tcp::{StandaloneTcpServer, TcpServerBuilder};
pub use thread::{ServerThread, Standalone};
pub use udp::{StandaloneUdpServer, UdpServerBuilder};
#[cfg(unix)]
pub use unix::{
    StandaloneUnixDatagramServer, StandaloneUnixStreamServer, UnixDatagramClient,
    UnixDatagramServerBuilder, UnixStreamClient, UnixStreamServerBuilder,
};
