//! The easynet guide: one chapter per topic, each with examples that run as doctests.
//!
//! Read them in order the first time:
//!
//! 1. [`quick_start`]: an echo server and its client in twenty lines.
//! 2. [`protocols`]: framings, serializers and wrappers; your own protocol.
//! 3. [`handlers`]: portable and async handlers, the rules they run under, what must not
//!    block.
//! 4. [`tls`]: serving and connecting over rustls; picking the crypto provider.
//! 5. [`udp`]: datagram servers and clients.
//! 6. [`unix`]: Unix stream and datagram sockets, peer credentials.
//! 7. [`shutdown`]: graceful shutdown, signals, what happens to requests in flight.
//! 8. [`logging`]: what easynet logs and how to see it.
//! 9. [`testing`]: testing a server without sockets in the simulator.
//! 10. [`operations`]: limits, counters, socket activation, certificate rotation,
//!     restarts.
//! 11. [`writing_a_driver`]: running the sans-IO core in an event loop of your own.
//! 12. [`from_easynetwork`]: every name of EasyNetwork's servers API and its easynet name.

#[doc = include_str!("quick_start.md")]
#[cfg(all(feature = "tokio", feature = "mio", feature = "json"))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "tokio", feature = "mio", feature = "json")))
)]
pub mod quick_start {}

#[doc = include_str!("protocols.md")]
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub mod protocols {}

#[doc = include_str!("handlers.md")]
#[cfg(all(feature = "tokio", feature = "mio"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio", feature = "mio"))))]
pub mod handlers {}

#[doc = include_str!("tls.md")]
#[cfg(all(feature = "tokio", feature = "tls"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio", feature = "tls"))))]
pub mod tls {}

#[doc = include_str!("udp.md")]
#[cfg(all(feature = "tokio", feature = "mio"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio", feature = "mio"))))]
pub mod udp {}

#[doc = include_str!("unix.md")]
#[cfg(all(unix, feature = "tokio"))]
#[cfg_attr(docsrs, doc(cfg(all(unix, feature = "tokio"))))]
pub mod unix {}

#[doc = include_str!("shutdown.md")]
#[cfg(all(feature = "tokio", feature = "mio"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio", feature = "mio"))))]
pub mod shutdown {}

#[doc = include_str!("logging.md")]
pub mod logging {}

#[doc = include_str!("testing.md")]
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod testing {}

#[doc = include_str!("operations.md")]
#[cfg(all(feature = "tokio", feature = "mio"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio", feature = "mio"))))]
pub mod operations {}

#[doc = include_str!("writing_a_driver.md")]
pub mod writing_a_driver {}

#[doc = include_str!("from_easynetwork.md")]
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod from_easynetwork {}
