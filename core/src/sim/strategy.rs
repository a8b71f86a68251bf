//! [proptest](https://docs.rs/proptest) strategies for simulations: how bytes are cut,
//! which faults are injected, which seed drives a run. A property test of a server is then
//! a few lines:
//!
//! ```
//! use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
//! use easynet_core::protocol::Stream;
//! use easynet_core::sim::{StreamSim, strategy};
//! use proptest::prelude::*;
//!
//! struct Echo;
//! impl StreamHandler for Echo {
//!     type Request = String;
//!     type Response = String;
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
//!         if let Received::Request(line) = r { cx.send(&line)?; }
//!         Ok(Next::recv())
//!     }
//! }
//!
//! proptest!(ProptestConfig::with_cases(16), |(faults in strategy::faults(), seed in strategy::seed(), cuts in strategy::chunking(64))| {
//!     let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo).faults(faults).seed(seed).build();
//!     let client = sim.connect();
//!     for chunk in strategy::split(b"one\ntwo\nthree\n", &cuts) {
//!         sim.send_bytes(client, chunk);
//!     }
//!     prop_assert_eq!(sim.replies(client), ["one", "two", "three"]);
//! });
//! ```

use proptest::prelude::*;

use super::Faults;

/// Cut sizes (each 1 to `max`), for [`split`].
pub fn chunking(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max.max(1), 1..32)
}

/// `bytes` cut by `cuts` (cycled); every byte in order, no piece empty.
pub fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    let mut sizes = cuts.iter().copied().filter(|&c| c > 0).cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Stream faults: reads and writes of random sizes (sometimes unbounded), small or large
/// socket buffers.
pub fn faults() -> impl Strategy<Value = Faults> {
    let size = prop_oneof![Just(usize::MAX), 1..=64usize, 1..=4096usize];
    (size.clone(), size, 1..=256 * 1024usize).prop_map(|(read, write, buffer)| {
        Faults::none()
            .with_max_read(read)
            .with_max_write(write)
            .with_socket_buffer(buffer)
    })
}

/// Datagram faults: loss, duplication and reordering, each up to `max_per_mille`.
pub fn datagram_faults(max_per_mille: u16) -> impl Strategy<Value = Faults> {
    let p = 0..=max_per_mille.min(1000);
    (p.clone(), p.clone(), p).prop_map(|(loss, duplicate, reorder)| {
        Faults::none().with_datagram_faults(loss, duplicate, reorder)
    })
}

/// A seed for [`StreamSimBuilder::seed`](super::StreamSimBuilder::seed).
pub fn seed() -> impl Strategy<Value = u64> {
    any::<u64>()
}
