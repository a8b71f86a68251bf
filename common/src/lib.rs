//! What the easynet drivers share: host forms and listener sockets built with socket2, and
//! the [`EventSet`] that `serve_notify` signals when a server is up.
//!
//! Applications use these types through `easynet-tokio`, `easynet-mio` or the `easynet`
//! facade, which re-export them. The socket helpers (`tcp_listeners`, `start_connect`,
//! `recv_from_with_drops`, ...) are public for third-party drivers; the builder setter
//! macros the two drivers share are hidden and not part of the API.
//!
//! ```
//! use easynet_common::{Host, resolve};
//!
//! let addrs = resolve(&Host::from("127.0.0.1"), 0).unwrap();
//! assert_eq!(addrs.len(), 1);
//! ```

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![warn(unreachable_pub)]
// docs.rs: label every feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(unix)]
mod activation;
mod bind;
mod client;
mod dgram_codec;
mod error;
mod event;
#[cfg(target_os = "linux")]
mod mmsg;
mod recv;
mod rxq;
mod sendq;
mod settings;
mod stats;
#[cfg(unix)]
pub mod unix;

#[cfg(unix)]
pub use activation::{ActivationError, InheritedSocket, LISTEN_FDS_START, SocketKind, listen_fds};
pub use bind::{
    BindError, Host, ListenOptions, TcpKeepalive, resolve, set_abortive, tcp_listeners,
    tune_accepted, tune_accepted_with, udp_sockets,
};
#[cfg(feature = "webpki-roots")]
pub use client::webpki_roots_config;
pub use client::{
    HAPPY_EYEBALLS_DELAY, TcpClientOptions, attempt_order, attempts_failed, connect_timed_out,
    start_connect,
};
pub use dgram_codec::{DatagramCodec, client_closed};
pub use error::{ClientError, ConfigError, ServerError};
pub use event::EventSet;
#[cfg(target_os = "linux")]
pub use mmsg::send_batch_to;
pub use recv::{DATAGRAM_BATCH, DatagramBuffers, MAX_DATAGRAM, ReadAhead, recv_into};
pub use rxq::{enable_socket_drops, recv_from_counting, recv_from_with_drops, socket_drop_count};
pub use sendq::unsent_bytes;
pub use settings::{Listen, TcpSettings, UdpSettings, UnixDatagramSettings, UnixStreamSettings};
pub use stats::DropCounter;
