//! The names almost every server and client uses, for `use easynet::prelude::*`.
//!
//! Handler traits and what they are called with, the protocol constructors, and the
//! servers and clients of each enabled driver. Everything here is also at its own path;
//! nothing here is named `tokio` or `mio`, so a glob import does not hide those crates
//! (`#[tokio::main]` keeps working).
//!
//! ```
//! use easynet::prelude::*;
//!
//! struct Echo;
//!
//! impl StreamHandler for Echo {
//!     type Request = String;
//!     type Response = String;
//!
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
//!         if let Received::Request(line) = r {
//!             cx.send(line)?;
//!         }
//!         Ok(Next::recv())
//!     }
//! }
//!
//! # #[cfg(feature = "mio")] {
//! let server = TcpServer::builder(Stream::lines(), |_| Echo)
//!     .host("127.0.0.1")
//!     .build()
//!     .unwrap();
//! let mut thread = ServerThread::start(server).unwrap();
//! let mut client = TcpClient::connect(thread.addresses()[0], Stream::lines()).unwrap();
//! client.send(&"hi".to_owned()).unwrap();
//! assert_eq!(client.recv().unwrap(), "hi");
//! thread.join(None).unwrap();
//! # }
//! ```
//!
//! A glob import next to `#[tokio::main]`:
//!
//! ```no_run
//! use easynet::prelude::*;
//!
//! #[tokio::main]
//! async fn main() {
//!     let _lines = Stream::lines();
//! }
//! ```

pub use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service, StreamContext, StreamHandler,
};
pub use easynet_core::protocol::{Datagram, ParseError, Stream};
pub use easynet_core::stream::{AsyncStreamHandler, RecvError, StreamPeer};

#[cfg(feature = "mio")]
pub use easynet_mio::{ServerHandle, ServerThread, TcpClient, TcpServer, UdpClient, UdpServer};
#[cfg(feature = "tokio")]
pub use easynet_tokio::{AsyncTcpClient, AsyncTcpServer, AsyncUdpClient, AsyncUdpServer};
// The same two types from either driver.
#[cfg(all(feature = "mio", not(feature = "tokio")))]
pub use easynet_mio::{ClientError, ServerError};
#[cfg(feature = "tokio")]
pub use easynet_tokio::{ClientError, ServerError};
