//! Decoding throughput of the built-in framings. TODO(helper A).
fn main() {}
