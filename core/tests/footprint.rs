//! What an idle connection costs. The connection machine is most of an idle connection's
//! memory on both drivers (`python3 bench/run.py --idle-only` measures the whole), so it
//! has a budget: state only some connections need is boxed (a rustls session is 1.2 KiB).

use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::stream::{Connection, ServerRole};

/// Bytes of a plain lines connection: 656 with every feature on (2026-11-30), some room.
const BUDGET: usize = 704;

#[test]
fn a_plain_connection_stays_within_its_budget() {
    let size = size_of::<Connection<Stream<Lines, Utf8, String, String>, ServerRole>>();
    assert!(
        size <= BUDGET,
        "a Connection is {size} bytes, over its budget of {BUDGET}: every idle connection \
         pays for it; box what only some connections need, or raise the budget knowingly"
    );
}
