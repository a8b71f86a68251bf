//! A TLS server session against a real in-memory rustls client whose bytes the fuzzer
//! corrupts: handshake failures, bad records and alerts must end the session cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<(u16, u8)>)| {
    let (plaintext, flips) = input;
    easynet_fuzz::run_tls_session(&plaintext, &flips);
});
