//! A deterministic simulator: a whole easynet server and its clients in memory, on a
//! virtual clock, with no sockets, no threads, no runtime and no sleeping.
//!
//! Test a server's logic the way it runs in production: [`StreamSim`] runs the core's
//! server machine (service hooks, many connections, graceful shutdown, close) with the
//! same sessions the drivers run, portable or async handlers, plain or TLS;
//! [`DatagramSim`] does the same for datagram endpoints. Simulated clients speak the same
//! protocol value (messages or raw bytes), half-close, reset, or stop reading; a raw
//! client ([`StreamSim::connect_raw`]) speaks no protocol at all. A test sees what each
//! client received and how its connection ended, and how the server closed it
//! ([`StreamSim::server_closed`]). Faults
//! ([`Faults`]) cut reads and writes into random chunks, bound the socket buffers, and
//! lose, duplicate or reorder datagrams; all randomness comes from one seed, so a run is
//! reproduced by its seed, and its [`trace`](StreamSim::trace) says what happened when.
//!
//! ```
//! use std::time::Duration;
//! use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
//! use easynet_core::protocol::Stream;
//! use easynet_core::sim::StreamSim;
//!
//! struct Echo;
//! impl StreamHandler for Echo {
//!     type Request = String;
//!     type Response = String;
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
//!         match r {
//!             Received::Request(line) => cx.send(&line)?,
//!             Received::Timeout => cx.send("timeout".to_owned())?,
//!             Received::ParseError(_) => cx.send("error".to_owned())?,
//!         }
//!         Ok(Next::recv_timeout(Duration::from_secs(5)))
//!     }
//! }
//!
//! let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Echo);
//! let client = sim.connect();
//! sim.send(client, &"hello".to_owned());
//! sim.send_bytes(client, b"wor");
//! sim.send_bytes(client, b"ld\n");
//! assert_eq!(sim.replies(client), ["hello", "world"]);
//! sim.advance(Duration::from_secs(5)); // virtual time: returns at once
//! assert_eq!(sim.replies(client), ["timeout"]);
//! sim.shutdown();
//! assert!(sim.is_stopped());
//! ```

mod datagram;
mod net;
mod record;
pub mod strategy;
mod stream;
#[cfg(feature = "sim-tls")]
pub mod tls;

use std::time::Duration;

pub use datagram::{DatagramSim, DatagramSimBuilder, PeerId};
pub use record::{Call, Calls, LogEvent, Recorded, RecordedHandler, record};
pub use stream::{ClientId, ClientState, StreamSim, StreamSimBuilder};

/// Faults the simulator injects; see [`StreamSim::set_faults`] and
/// [`DatagramSim::set_faults`]. All random choices come from the simulator's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// Most bytes one read hands over; each read takes between 1 and this many, at random.
    /// `usize::MAX` (the default): whatever is there, up to the reader's read size.
    pub max_read: usize,
    /// Most bytes one write takes; each write takes between 1 and this many (partial
    /// writes). `usize::MAX` (the default): as much as the socket buffer has room for.
    pub max_write: usize,
    /// Bytes in flight per direction and connection before the writer is told to wait
    /// (`WouldBlock`): the kernel's socket buffers. Default 256 KiB.
    pub socket_buffer: usize,
    /// Datagrams lost, per thousand (each direction). Default 0.
    pub loss_per_mille: u16,
    /// Datagrams delivered twice, per thousand. Default 0.
    pub duplicate_per_mille: u16,
    /// Datagrams held back and delivered after the next one, per thousand. Default 0.
    pub reorder_per_mille: u16,
}

impl Faults {
    /// No faults: whole reads and writes, 256 KiB socket buffers, no datagram loss.
    pub fn none() -> Self {
        Self {
            max_read: usize::MAX,
            max_write: usize::MAX,
            socket_buffer: 256 * 1024,
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            reorder_per_mille: 0,
        }
    }

    /// Reads and writes of 1 to `n` bytes at random.
    pub fn chunked(n: usize) -> Self {
        Self::none().with_max_read(n).with_max_write(n)
    }

    /// These faults with reads of 1 to `n` bytes.
    pub fn with_max_read(mut self, n: usize) -> Self {
        self.max_read = n.max(1);
        self
    }

    /// These faults with writes of 1 to `n` bytes.
    pub fn with_max_write(mut self, n: usize) -> Self {
        self.max_write = n.max(1);
        self
    }

    /// These faults with socket buffers of `bytes` (at least 1).
    pub fn with_socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = bytes.max(1);
        self
    }

    /// These faults with datagram loss, duplication and reordering, each per thousand.
    pub fn with_datagram_faults(mut self, loss: u16, duplicate: u16, reorder: u16) -> Self {
        self.loss_per_mille = loss.min(1000);
        self.duplicate_per_mille = duplicate.min(1000);
        self.reorder_per_mille = reorder.min(1000);
        self
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

/// One side of a simulated connection or datagram exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The simulated client.
    Client,
    /// The server.
    Server,
}

/// Something the simulator did, for [`StreamSim::trace`] and [`DatagramSim::trace`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client connected; the server accepted it as connection `conn`.
    Connected {
        /// The client.
        client: u64,
        /// The server's connection id.
        conn: u64,
    },
    /// A client could not connect: the server is not accepting.
    Refused {
        /// The client.
        client: u64,
    },
    /// `bytes` were read by `to` on `client`'s connection.
    Read {
        /// The client.
        client: u64,
        /// Who read.
        to: Side,
        /// How many bytes.
        bytes: usize,
    },
    /// `from` shut down its write side (FIN).
    Fin {
        /// The client.
        client: u64,
        /// Who sent it.
        from: Side,
    },
    /// `side` closed the connection, gracefully or with a reset.
    Closed {
        /// The client.
        client: u64,
        /// Who closed.
        side: Side,
        /// With a reset.
        abort: bool,
    },
    /// A reset reached `to`: unread bytes there were destroyed.
    Reset {
        /// The client.
        client: u64,
        /// Who got it.
        to: Side,
        /// Unread bytes destroyed with it.
        lost: usize,
    },
    /// A timer of `side` fired.
    Timer {
        /// The client.
        client: u64,
        /// Whose timer.
        side: Side,
    },
    /// A graceful shutdown began.
    Shutdown,
    /// `on_stop` ran.
    Teardown,
    /// The run ended.
    Stopped,
    /// A datagram of `bytes` reached `to`.
    Datagram {
        /// The peer.
        peer: u64,
        /// Who got it.
        to: Side,
        /// Its size.
        bytes: usize,
    },
    /// A datagram to `to` was lost.
    Lost {
        /// The peer.
        peer: u64,
        /// Who would have got it.
        to: Side,
    },
    /// A datagram to `to` was duplicated.
    Duplicated {
        /// The peer.
        peer: u64,
        /// Who gets it twice.
        to: Side,
    },
    /// A datagram to `to` was held back, to arrive after the next one.
    Reordered {
        /// The peer.
        peer: u64,
        /// Who gets it late.
        to: Side,
    },
}

/// One [`Event`] and when it happened, as time since the simulation began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// Virtual time since the simulation began.
    pub at: Duration,
    /// What happened.
    pub event: Event,
}

/// The seeded random source of a simulation: the only randomness it has.
#[derive(Debug, Clone)]
pub(crate) struct Chance(fastrand::Rng);

impl Chance {
    pub(crate) fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// A size between 1 and `max`, at most `len` (`len` if `max` is unbounded).
    pub(crate) fn size(&mut self, len: usize, max: usize) -> usize {
        if len == 0 {
            0
        } else if max >= len {
            if max == usize::MAX {
                len
            } else {
                self.0.usize(1..=len)
            }
        } else {
            self.0.usize(1..=max)
        }
    }

    /// True `per_mille` times in a thousand.
    pub(crate) fn per_mille(&mut self, per_mille: u16) -> bool {
        per_mille > 0 && self.0.u16(0..1000) < per_mille
    }
}
