//! Lines framing (LF, CR, CRLF, small limit): any chunking gives the same frames; memory bounded.
#![no_main]

use easynet_core::protocol::{Lines, Separator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u8, Vec<u8>, Vec<u8>)| {
    let (sep, limit, sizes, data) = input;
    let sep = match sep % 3 {
        0 => Separator::Lf,
        1 => Separator::Cr,
        _ => Separator::CrLf,
    };
    let limit = usize::from(limit).max(1);
    let framing = Lines::new().separator(sep).limit(limit).unwrap();
    // The framing may keep one more byte than the limit (a '\r' that may start a CRLF).
    easynet_fuzz::check_framing(&framing, limit, 2, &sizes, &data);
});
