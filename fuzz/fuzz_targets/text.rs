//! Text frames (`Utf8` to `String`, `Utf8Shared` to `ByteString`): for any bytes, the same
//! answer as std's check, error position included, whether the frame owns its buffer (taken
//! whole past 4 KiB) or shares it (a line in the middle of a read). The SIMD check and the
//! `unsafe` constructors after it (`protocol::checked`) are what this holds to std.
#![no_main]

use bytes::BytesMut;
use easynet_core::protocol::{ByteString, Decode, DeserializeError, Utf8, Utf8Shared};
use libfuzzer_sys::fuzz_target;

/// A frame of `bytes` that owns its buffer, and one that shares a larger one.
fn frames(bytes: &[u8]) -> [BytesMut; 2] {
    let mut read = BytesMut::from(bytes);
    read.extend_from_slice(b"\nnext line");
    [BytesMut::from(bytes), read.split_to(bytes.len())]
}

fn same<T: AsRef<str>>(got: Result<T, DeserializeError>, want: &Result<&str, std::str::Utf8Error>) {
    match (got, want) {
        (Ok(text), Ok(want)) => assert_eq!(text.as_ref(), *want),
        (Err(DeserializeError::Utf8(e)), Err(want)) => assert_eq!(e, *want),
        (got, want) => panic!("got {:?}, std says {want:?}", got.map(|t| t.as_ref().len())),
    }
}

fuzz_target!(|input: (u8, Vec<u8>)| {
    let (repeat, data) = input;
    // Repeated past the size from which a frame that owns its buffer becomes the `String`.
    let bytes = data.repeat(usize::from(repeat % 8) + 1);
    let want = std::str::from_utf8(&bytes);
    for frame in frames(&bytes) {
        same::<String>(Utf8::new().decode(frame), &want);
    }
    for frame in frames(&bytes) {
        same::<ByteString>(Utf8Shared::new().decode(frame), &want);
    }
});
