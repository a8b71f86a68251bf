//! [`Base64`]: a serializer wrapper that base64-encodes what its inner serializer makes
//! (feature `base64`).
//!
//! Base64 turns any payload into printable ASCII with no newline, so binary formats can travel
//! inside [`Lines`](super::Lines) or a text-only channel. The engines are the `base64` crate's.

use ::base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use ::base64::engine::{DecodePaddingMode, Engine};
use ::base64::{DecodeSliceError, alphabet};
use bytes::BytesMut;

use super::{Decode, DeserializeError, Encode, SerializeError};

/// Which base64 alphabet a [`Base64`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Alphabet {
    /// RFC 4648 §4: `A-Z a-z 0-9 + /` (Python's `standard_b64encode`).
    #[default]
    Standard,
    /// RFC 4648 §5: `A-Z a-z 0-9 - _` (Python's `urlsafe_b64encode`).
    UrlSafe,
}

// Padded on encode (as EasyNetwork's Base64EncoderSerializer), padding optional on decode.
const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

/// Base64 around an inner serializer `S`: encodes what `S` makes, decodes before `S` parses.
///
/// Invalid base64 is a [`DeserializeError::Base64`], a recoverable parse error.
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{Base64, Decode, Encode, Utf8};
///
/// let b64 = Base64::new(Utf8::new());
/// let mut out = BytesMut::new();
/// b64.encode(&"hi?".to_string(), &mut out).unwrap();
/// assert_eq!(&out[..], b"aGk/");
/// assert_eq!(b64.decode(out).unwrap(), "hi?");
///
/// let url = Base64::url_safe(Utf8::new());
/// let mut out = BytesMut::new();
/// url.encode(&"hi?".to_string(), &mut out).unwrap();
/// assert_eq!(&out[..], b"aGk_");
/// assert!(Decode::<String>::decode(&url, BytesMut::from(&b"a!"[..])).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Base64<S> {
    inner: S,
    alphabet: Alphabet,
}

impl<S> Base64<S> {
    /// Standard alphabet, padded.
    pub const fn new(inner: S) -> Self {
        Self::with_alphabet(inner, Alphabet::Standard)
    }

    /// URL-safe alphabet, padded.
    pub const fn url_safe(inner: S) -> Self {
        Self::with_alphabet(inner, Alphabet::UrlSafe)
    }

    /// The given alphabet, padded.
    pub const fn with_alphabet(inner: S, alphabet: Alphabet) -> Self {
        Self { inner, alphabet }
    }

    /// The inner serializer.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The alphabet.
    pub fn alphabet(&self) -> Alphabet {
        self.alphabet
    }

    fn engine(&self) -> &'static GeneralPurpose {
        match self.alphabet {
            Alphabet::Standard => &STANDARD,
            Alphabet::UrlSafe => &URL_SAFE,
        }
    }
}

impl<T, S: Encode<T>> Encode<T> for Base64<S> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        // The one intermediate buffer: the inner payload. Base64 goes straight into `dst`.
        let mut raw = BytesMut::new();
        self.inner.encode(item, &mut raw)?;
        let start = dst.len();
        let len = ::base64::encoded_len(raw.len(), true).ok_or(SerializeError::TooLarge {
            limit: usize::MAX,
            got: raw.len(),
        })?;
        dst.resize(start + len, 0);
        let written = self
            .engine()
            .encode_slice(&raw, &mut dst[start..])
            .expect("buffer sized by encoded_len");
        dst.truncate(start + written);
        Ok(())
    }
}

impl<T, S: Decode<T>> Decode<T> for Base64<S> {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let mut raw = BytesMut::zeroed(payload.len().div_ceil(4) * 3);
        let len = match self.engine().decode_slice(&payload, &mut raw) {
            Ok(len) => len,
            Err(DecodeSliceError::DecodeError(e)) => return Err(e.into()),
            // Cannot happen: the buffer is sized for the longest output.
            Err(e @ DecodeSliceError::OutputSliceTooSmall) => {
                return Err(DeserializeError::Other(e.into()));
            }
        };
        raw.truncate(len);
        self.inner.decode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawBytes;
    use bytes::Bytes;

    fn enc<S: Encode<Bytes>>(s: &S, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::from(&b"head"[..]);
        s.encode(&Bytes::copy_from_slice(data), &mut out).unwrap();
        out.split_off(4)
    }

    #[test]
    fn standard_and_url_safe_round_trip() {
        let data = b"\xfb\xff\xfe binary \x00";
        for s in [Base64::new(RawBytes), Base64::url_safe(RawBytes)] {
            let out = enc(&s, data);
            assert!(out.iter().all(|b| b.is_ascii_graphic()));
            let back: Bytes = s.decode(out).unwrap();
            assert_eq!(&back[..], data);
        }
        assert_eq!(&enc(&Base64::new(RawBytes), b"\xfb\xff")[..], b"+/8=");
        assert_eq!(&enc(&Base64::url_safe(RawBytes), b"\xfb\xff")[..], b"-_8=");
    }

    #[test]
    fn padding_is_optional_on_decode() {
        let back: Bytes = Base64::new(RawBytes)
            .decode(BytesMut::from(&b"+/8"[..]))
            .unwrap();
        assert_eq!(&back[..], b"\xfb\xff");
    }

    #[test]
    fn invalid_base64_is_a_typed_error() {
        for bad in [&b"ab$d"[..], b"-_8=", b"a", b"ab=c"] {
            let err = Decode::<Bytes>::decode(&Base64::new(RawBytes), BytesMut::from(bad));
            assert!(matches!(err, Err(DeserializeError::Base64(_))), "{bad:?}");
        }
        // The other alphabet's symbols are rejected too.
        let err =
            Decode::<Bytes>::decode(&Base64::url_safe(RawBytes), BytesMut::from(&b"+/8="[..]));
        assert!(matches!(err, Err(DeserializeError::Base64(_))));
    }

    #[test]
    fn inner_errors_pass_through() {
        let err = Decode::<String>::decode(
            &Base64::new(crate::protocol::Utf8::new()),
            BytesMut::from(&b"/w=="[..]),
        );
        assert!(matches!(err, Err(DeserializeError::Utf8(_))));
    }
}
