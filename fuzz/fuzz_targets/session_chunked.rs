//! The stream session fed arbitrary bytes in arbitrary chunks, written through a small window.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (window, sizes, data) = input;
    easynet_fuzz::run_session(&sizes, usize::from(window), &data);
});
