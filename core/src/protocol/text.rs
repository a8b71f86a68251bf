//! Serializers for text and raw bytes.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

use super::{Decode, DeserializeError, Encode, OwnedPayload, SerializeError, checked};

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

    /// Spare bytes a new `String` gets: the longest line separator (CRLF).
    const SEPARATOR_ROOM: usize = 2;

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
            // Room for a line separator: a large line echoed or forwarded then goes out as
            // one buffer, its separator appended in place, not as a second (tiny) one.
            let mut s = String::with_capacity(text.len() + SEPARATOR_ROOM);
            s.push_str(text);
            return s;
        }
        s.clear();
        s.push_str(text);
        s
    }
}

impl Utf8 {
    /// Strips one trailing LF or CRLF when asked to.
    fn trim(&self, payload: &mut BytesMut) {
        if self.trim_newline {
            if payload.ends_with(b"\n") {
                payload.truncate(payload.len() - 1);
            }
            if payload.ends_with(b"\r") {
                payload.truncate(payload.len() - 1);
            }
        }
    }
}

impl Decode<String> for Utf8 {
    fn decode(&self, mut payload: BytesMut) -> Result<String, DeserializeError> {
        self.trim(&mut payload);
        // A large payload that owns its allocation (a frame that was a whole read) becomes
        // the `String` without a copy, unless most of that allocation would be wasted.
        // One that shares its buffer (a line in the middle of a read) is copied, and so are
        // small ones: cheaper than finding out.
        if super::worth_owning(payload.len(), payload.capacity()) {
            return match payload.freeze().try_into_mut() {
                Ok(own) => Ok(checked::string(Vec::from(own))?),
                Err(shared) => Ok(spare::string(checked::str(&shared)?)),
            };
        }
        Ok(spare::string(checked::str(&payload)?))
    }
}

/// UTF-8 text as [`ByteString`](bytestring::ByteString), sharing the frame's buffer:
/// decoding checks it and never copies, and sending one queues its bytes as they are. A
/// handler that echoes or forwards lines does no allocation and no copy per line; a
/// `String` ([`Utf8`]) costs one of each. Its own type, not a second impl on [`Utf8`], so
/// that enabling the feature leaves `Utf8`'s message type inferred as before.
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{ByteString, Decode, Encode, Utf8Shared};
///
/// let line: ByteString = Utf8Shared::new().decode(BytesMut::from("héllo")).unwrap();
/// assert_eq!(&line[..], "héllo");
/// assert!(Utf8Shared::new().decode(BytesMut::from(&b"\xff"[..])).is_err());
/// assert_eq!(Utf8Shared::new().encode_shared(&line).unwrap(), "héllo".as_bytes());
/// ```
#[cfg(feature = "bytestring")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Shared {
    text: Utf8,
}

#[cfg(feature = "bytestring")]
impl Utf8Shared {
    /// Text as is.
    pub const fn new() -> Self {
        Self { text: Utf8::new() }
    }

    /// Text with one trailing LF or CRLF stripped on decode (for datagrams sent by line tools).
    pub const fn trimming_newline() -> Self {
        Self {
            text: Utf8::trimming_newline(),
        }
    }
}

#[cfg(feature = "bytestring")]
impl Decode<bytestring::ByteString> for Utf8Shared {
    fn decode(&self, mut payload: BytesMut) -> Result<bytestring::ByteString, DeserializeError> {
        self.text.trim(&mut payload);
        Ok(checked::byte_string(payload.freeze())?)
    }
}

/// The text's own bytes, shared (no copy).
#[cfg(feature = "bytestring")]
impl Encode<bytestring::ByteString> for Utf8Shared {
    fn encode(
        &self,
        item: &bytestring::ByteString,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    fn encode_shared(&self, item: &bytestring::ByteString) -> Option<Bytes> {
        Some(item.as_bytes().clone())
    }

    fn encode_owned(
        &self,
        item: bytestring::ByteString,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        Ok(Some(OwnedPayload::Shared(item.into_bytes())))
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

    /// A large payload that owns its buffer becomes the `String` in place; one that shares
    /// it (a line in the middle of a read) is copied; both are checked the same way.
    #[test]
    fn a_large_payload_is_taken_when_it_owns_its_buffer_and_copied_when_it_shares_it() {
        let text = "é".repeat(3000);
        let own = BytesMut::from(text.as_bytes());
        let ptr = own.as_ptr();
        let s: String = Utf8::new().decode(own).unwrap();
        assert_eq!((s.as_ptr(), &s[..]), (ptr, &text[..]));

        let mut read = BytesMut::from(format!("{text}\nnext").as_bytes());
        let line = read.split_to(text.len());
        let ptr = line.as_ptr();
        let s: String = Utf8::new().decode(line).unwrap();
        assert_ne!(s.as_ptr(), ptr);
        assert_eq!(s, text);

        let mut bad = text.into_bytes();
        bad[5000] = 0xff;
        let mut read = BytesMut::from(&bad[..]);
        read.extend_from_slice(b"\nnext");
        let shared = read.split_to(bad.len());
        for payload in [BytesMut::from(&bad[..]), shared] {
            let err = Decode::<String>::decode(&Utf8::new(), payload).unwrap_err();
            assert!(matches!(err, DeserializeError::Utf8(e) if e.valid_up_to() == 5000));
        }
    }

    /// A large line copied out of its read (one of several) has room for its separator, so
    /// that echoing or forwarding it queues one buffer, not the line and a one-byte tail.
    #[test]
    fn a_copied_line_is_sent_back_with_its_separator_in_place() {
        use crate::protocol::{Lines, OwnedFrame, Separator, Stream, StreamServerProtocol};
        for sep in [Separator::Lf, Separator::CrLf] {
            let proto: Stream<Lines, Utf8, String, String> =
                Stream::new(Lines::new().separator(sep), Utf8::new());
            let line = "x".repeat(5_000);
            let end = std::str::from_utf8(sep.as_bytes()).unwrap();
            let mut read = BytesMut::from(format!("{line}{end}{line}{end}").as_bytes());
            let mut state = Default::default();
            let got = proto
                .decode_request(&mut state, &mut read)
                .unwrap()
                .unwrap();
            assert!(
                !read.is_empty(),
                "the first of two lines: copied, not taken"
            );
            let frame = proto
                .encode_response_owned(got, &mut BytesMut::new())
                .unwrap();
            let Some(OwnedFrame { body, tail, .. }) = frame else {
                panic!("a large line is framed as it is");
            };
            assert_eq!(tail, b"", "{sep:?}: no separate tail");
            assert_eq!(body.as_slice(), format!("{line}{end}").as_bytes());
        }
    }

    #[cfg(feature = "bytestring")]
    #[test]
    fn a_byte_string_shares_the_frame_and_is_sent_as_it_is() {
        use bytestring::ByteString;
        let mut read = BytesMut::from(&b"h\xc3\xa9llo\r\nnext"[..]);
        let line = read.split_to(8);
        let ptr = line.as_ptr();
        let s: ByteString = Utf8Shared::trimming_newline().decode(line).unwrap();
        assert_eq!((s.as_ptr(), &s[..]), (ptr, "héllo"));
        let shared = Utf8Shared::new().encode_shared(&s).unwrap();
        assert_eq!(shared.as_ptr(), ptr);
        let owned = Utf8Shared::new().encode_owned(s.clone(), &mut BytesMut::new());
        assert_eq!(owned.unwrap(), Some(OwnedPayload::Shared(shared)));
        let mut dst = BytesMut::new();
        Utf8Shared::new().encode(&s, &mut dst).unwrap();
        assert_eq!(&dst[..], "héllo".as_bytes());
        let err = Utf8Shared::new().decode(BytesMut::from(&b"ok\xc3"[..]));
        assert!(matches!(err, Err(DeserializeError::Utf8(e)) if e.valid_up_to() == 2));
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
