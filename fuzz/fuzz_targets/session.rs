//! The stream session (connection machine + echo handler) fed arbitrary bytes in one read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    easynet_fuzz::run_session(&[], usize::MAX, data);
});
