//! Length-prefixed framing, 4-byte prefix: any chunking gives the same frames; memory bounded.
#![no_main]

use easynet_core::protocol::{LengthPrefixed, PrefixWidth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, Vec<u8>, Vec<u8>)| {
    let (max, sizes, data) = input;
    let max = usize::from(max).max(1);
    let framing = LengthPrefixed::new(PrefixWidth::U32, max).unwrap();
    easynet_fuzz::check_framing(&framing, max, 4, &sizes, &data);
});
