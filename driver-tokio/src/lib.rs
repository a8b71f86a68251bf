//! Async easynet servers and clients on tokio.
//!
//! [`AsyncTcpServer`] is EasyNetwork's AsyncTCPNetworkServer: a builder for the listening
//! options (host forms, port 0, backlog, reuse_port, max_recv_size, TLS with its timeouts),
//! `activate`, `serve_forever`, `shutdown`, `close`. Each connection is one tokio task that
//! moves bytes between its socket and the core's [`Session`](easynet_core::stream::Session),
//! which runs the portable handler; there is no second state machine here.

#![deny(missing_docs)]

mod async_datagram;
mod async_stream;
mod bind;
mod client;
mod conn;
mod error;
mod event;
mod shell;
mod tcp;
mod udp;

pub use async_datagram::{AsyncDatagramClient, AsyncDatagramHandler, DatagramSendError};
pub use async_stream::{AsyncClient, AsyncStreamHandler, RecvError};
pub use bind::{BindError, Host};
pub use client::{AsyncTcpClient, AsyncUdpClient, ClientError, Responses};
pub use easynet_core as core;
pub use error::{ConfigError, ServerError};
pub use event::EventSet;
pub use tcp::{AsyncTcpServer, TcpServerBuilder};
pub use udp::{AsyncUdpServer, UdpServerBuilder};
