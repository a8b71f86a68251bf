//! Serializers for text and raw bytes.

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

    /// The `String`'s own bytes (no copy).
    fn encode_owned(
        &self,
        item: String,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        Ok(Some(OwnedPayload::Vec(item.into_bytes())))
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
        Ok(std::str::from_utf8(&payload)?.to_owned())
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
    fn raw_bytes_round_trip() {
        let mut out = BytesMut::new();
        RawBytes
            .encode(&Bytes::from_static(b"\x00\x01"), &mut out)
            .unwrap();
        let back: Bytes = RawBytes.decode(out).unwrap();
        assert_eq!(&back[..], b"\x00\x01");
    }
}
