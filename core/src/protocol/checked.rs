//! Text made of bytes that were checked to be UTF-8 with SIMD (simdutf8: several times
//! the speed of `str::from_utf8` on ASCII, the check every text frame pays).
//!
//! The only `unsafe` in the core lives here: a `String` or a `ByteString` made without the
//! standard library's second check, each right after the check it relies on. Without it a
//! frame that owns its buffer would be checked twice or copied.

#![allow(unsafe_code)]

use std::str::Utf8Error;

/// `bytes` as text. simdutf8's check; std's, run on failure only, gives the error's position.
pub(super) fn str(bytes: &[u8]) -> Result<&str, Utf8Error> {
    simdutf8::basic::from_utf8(bytes).or_else(|_| std::str::from_utf8(bytes))
}

/// `bytes` as a `String`, without a copy.
pub(super) fn string(bytes: Vec<u8>) -> Result<String, Utf8Error> {
    str(&bytes)?;
    // SAFETY: `str` just checked that `bytes` are UTF-8.
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// `bytes` as a `ByteString`, without a copy.
#[cfg(feature = "bytestring")]
pub(super) fn byte_string(bytes: bytes::Bytes) -> Result<bytestring::ByteString, Utf8Error> {
    str(&bytes)?;
    // SAFETY: `str` just checked that `bytes` are UTF-8.
    Ok(unsafe { bytestring::ByteString::from_bytes_unchecked(bytes) })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: the same answer as std's checks, error position included.
        #[test]
        fn agrees_with_std(bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            ".{0,200}".prop_map(String::into_bytes),
        ]) {
            let std = std::str::from_utf8(&bytes);
            prop_assert_eq!(super::str(&bytes), std);
            prop_assert_eq!(super::string(bytes.clone()), String::from_utf8(bytes.clone()).map_err(|e| e.utf8_error()));
            #[cfg(feature = "bytestring")]
            {
                let shared = super::byte_string(bytes.clone().into());
                prop_assert_eq!(shared.as_deref().map_err(|e| *e), std);
            }
        }
    }
}
