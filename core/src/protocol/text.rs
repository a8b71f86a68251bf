//! Serializers for text and raw bytes.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

use super::{Decode, DeserializeError, Encode, OwnedPayload, SerializeError};

/// UTF-8 text as `String`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8 {
    trim_newline: bool,
}

impl Utf8 {
    /// Text as is.
    pub const fn new() -> Self {
        Self {
            trim_newline: false,
        }
    }

    /// Text with one trailing LF or CRLF stripped on decode (for datagrams sent by line tools).
    pub const fn trimming_newline() -> Self {
        Self { trim_newline: true }
    }
}

impl Encode<String> for Utf8 {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    /// The `String`'s own bytes (no copy). A short one is copied into `dst`, as the framing
    /// would copy it, and its allocation kept for the next line decoded on this thread.
    fn encode_owned(
        &self,
        item: String,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        if item.len() < super::OWNED_MIN {
            dst.extend_from_slice(item.as_bytes());
            spare::keep(item);
            return Ok(None);
        }
        Ok(Some(OwnedPayload::Vec(item.into_bytes())))
    }
}

/// One spent short `String` per thread. An answer copied into a write buffer leaves its
/// allocation here and the next short line decoded on the thread takes it: an echo or a
/// request/answer loop then does no allocation (and no free) per message.
mod spare {
    use super::Cell;

    /// Longest allocation kept: the answers copied are shorter than 4 KiB.
    const MAX: usize = 8 * 1024;

    thread_local! {
        static SPARE: Cell<String> = const { Cell::new(String::new()) };
    }

    pub(super) fn keep(s: String) {
        if s.capacity() <= MAX {
            // `try_with`: not during the thread's teardown.
            let _ = SPARE.try_with(|c| c.set(s));
        }
    }

    /// `text` as a `String`, in the spare allocation when that wastes little (at most a
    /// quarter): a decoded line may be kept long by the handler. A spare that does not fit
    /// is dropped; the next answer leaves another.
    pub(super) fn string(text: &str) -> String {
        let mut s = SPARE.try_with(Cell::take).unwrap_or_default();
        // Wrapping: a capacity below `text.len()` is a huge difference.
        if s.capacity().wrapping_sub(text.len()) > text.len() / 4 + 32 {
            return text.to_owned();
        }
        s.clear();
        s.push_str(text);
        s
    }
}

/// Payloads at least this long are made into a `String` without a copy when they can be.
const OWNED_MIN: usize = 4096;

impl Decode<String> for Utf8 {
    fn decode(&self, mut payload: BytesMut) -> Result<String, DeserializeError> {
        if self.trim_newline {
            if payload.ends_with(b"\n") {
                payload.truncate(payload.len() - 1);
            }
            if payload.ends_with(b"\r") {
                payload.truncate(payload.len() - 1);
            }
        }
        // A large payload that owns its allocation (a frame that was a whole read) becomes
        // the `String` without a copy, unless most of that allocation would be wasted.
        // Small ones are copied: cheaper than finding out.
        if payload.len() >= OWNED_MIN && payload.capacity() <= 2 * payload.len() {
            return String::from_utf8(Vec::from(payload)).map_err(|e| e.utf8_error().into());
        }
        Ok(spare::string(std::str::from_utf8(&payload)?))
    }
}

/// Raw bytes as [`Bytes`]; decoding never fails and never copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawBytes;

impl Encode<Bytes> for RawBytes {
    fn encode(&self, item: &Bytes, dst: &mut BytesMut) -> Result<(), SerializeError> {
        dst.extend_from_slice(item);
        Ok(())
    }

    fn encode_shared(&self, item: &Bytes) -> Option<Bytes> {
        Some(item.clone())
    }

    /// The `Bytes` as they are (no copy).
    fn encode_owned(
        &self,
        item: Bytes,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        Ok(Some(OwnedPayload::Shared(item)))
    }
}

impl Encode<Vec<u8>> for RawBytes {
    fn encode(&self, item: &Vec<u8>, dst: &mut BytesMut) -> Result<(), SerializeError> {
        dst.extend_from_slice(item);
        Ok(())
    }

    /// The vector as it is (no copy).
    fn encode_owned(
        &self,
        item: Vec<u8>,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        Ok(Some(OwnedPayload::Vec(item)))
    }
}

impl Decode<Bytes> for RawBytes {
    fn decode(&self, payload: BytesMut) -> Result<Bytes, DeserializeError> {
        Ok(payload.freeze())
    }
}

impl Decode<Vec<u8>> for RawBytes {
    fn decode(&self, payload: BytesMut) -> Result<Vec<u8>, DeserializeError> {
        Ok(payload.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_rejects_invalid_bytes_with_typed_error() {
        let err = Utf8::new()
            .decode(BytesMut::from(&b"\xff"[..]))
            .unwrap_err();
        assert!(matches!(err, DeserializeError::Utf8(_)));
    }

    #[test]
    fn utf8_trims_one_newline_only_when_asked() {
        let p = || BytesMut::from(&b"hi\r\n"[..]);
        assert_eq!(Utf8::new().decode(p()).unwrap(), "hi\r\n");
        assert_eq!(Utf8::trimming_newline().decode(p()).unwrap(), "hi");
        let lf2 = BytesMut::from(&b"hi\n\n"[..]);
        assert_eq!(Utf8::trimming_newline().decode(lf2).unwrap(), "hi\n");
    }

    #[test]
    fn a_short_owned_answer_is_copied_and_its_buffer_decodes_the_next_line() {
        let mut out = BytesMut::from(&b"head"[..]);
        let answer = String::from("hello");
        let ptr = answer.as_ptr();
        assert!(
            Utf8::new()
                .encode_owned(answer, &mut out)
                .unwrap()
                .is_none()
        );
        assert_eq!(&out[..], b"headhello");
        let next = Utf8::new().decode(BytesMut::from(&b"world"[..])).unwrap();
        assert_eq!(next, "world");
        assert_eq!(next.as_ptr(), ptr, "the spare buffer");
        // A spare much larger than the line is not used: the line may be kept long.
        let mut roomy = String::with_capacity(2_000);
        roomy.push_str("roomy");
        let ptr = roomy.as_ptr();
        Utf8::new().encode_owned(roomy, &mut out).unwrap();
        let line = Utf8::new().decode(BytesMut::from(&b"x"[..])).unwrap();
        assert_eq!(line, "x");
        assert_ne!(line.as_ptr(), ptr);
        assert!(line.capacity() < 100);
        // A large answer is handed over whole.
        let big = "b".repeat(5_000);
        assert!(Utf8::new().encode_owned(big, &mut out).unwrap().is_some());
    }

    #[test]
    fn raw_bytes_round_trip() {
        let mut out = BytesMut::new();
        RawBytes
            .encode(&Bytes::from_static(b"\x00\x01"), &mut out)
            .unwrap();
        let back: Bytes = RawBytes.decode(out).unwrap();
        assert_eq!(&back[..], b"\x00\x01");
    }
}
