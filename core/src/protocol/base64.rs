//! [`Base64`]: a serializer wrapper that base64-encodes what its inner serializer makes
//! (feature `base64`).
//!
//! Base64 turns any payload into printable ASCII with no newline, so binary formats can travel
//! inside [`Lines`](super::Lines) or a text-only channel. The engines are the `base64` crate's.
//!
//! With the feature `base64-checksum`, a SHA-256 digest or an HMAC-SHA256 signature of the
//! inner payload can be appended before encoding and checked after decoding, as in
//! EasyNetwork's `Base64EncoderSerializer(checksum=...)` (ring computes them).

use ::base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use ::base64::engine::{DecodePaddingMode, Engine};
use ::base64::{DecodeSliceError, alphabet};
use bytes::BytesMut;

use super::{Decode, DeserializeError, Encode, SerializeError};

/// Which base64 alphabet a [`Base64`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Base64Alphabet {
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
#[derive(Debug, Clone, Default)]
pub struct Base64<S> {
    inner: S,
    alphabet: Base64Alphabet,
    check: Check,
}

/// What is appended to the inner payload before encoding and checked after decoding.
#[derive(Debug, Clone, Default)]
enum Check {
    #[default]
    None,
    #[cfg(feature = "base64-checksum")]
    Sha256,
    #[cfg(feature = "base64-checksum")]
    Hmac(ring::hmac::Key),
}

/// Length of a SHA-256 digest or HMAC-SHA256 tag.
#[cfg(feature = "base64-checksum")]
const TAG_LEN: usize = 32;

impl<S> Base64<S> {
    /// Standard alphabet, padded.
    pub const fn new(inner: S) -> Self {
        Self::with_alphabet(inner, Base64Alphabet::Standard)
    }

    /// URL-safe alphabet, padded.
    pub const fn url_safe(inner: S) -> Self {
        Self::with_alphabet(inner, Base64Alphabet::UrlSafe)
    }

    /// The given alphabet, padded.
    pub const fn with_alphabet(inner: S, alphabet: Base64Alphabet) -> Self {
        Self {
            inner,
            alphabet,
            check: Check::None,
        }
    }

    /// Appends the SHA-256 digest of the inner payload before encoding and checks it after
    /// decoding (feature `base64-checksum`): a mismatch is a [`DeserializeError::Checksum`].
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use easynet_core::protocol::{Base64, Decode, DeserializeError, Encode, Utf8};
    ///
    /// let b64 = Base64::new(Utf8::new()).with_checksum();
    /// let mut out = BytesMut::new();
    /// b64.encode(&"hi".to_string(), &mut out).unwrap();
    /// assert_eq!(out.len(), 48); // base64 of 2 + 32 bytes
    /// out[1] ^= 1; // still base64, wrong digest
    /// let err = Decode::<String>::decode(&b64, out).unwrap_err();
    /// assert!(matches!(err, DeserializeError::Checksum));
    /// ```
    #[cfg(feature = "base64-checksum")]
    pub fn with_checksum(mut self) -> Self {
        self.check = Check::Sha256;
        self
    }

    /// Appends an HMAC-SHA256 signature of the inner payload made with `key` before encoding
    /// and checks it (in constant time) after decoding (feature `base64-checksum`). As in
    /// EasyNetwork, the key is 32 bytes; any other length is a [`ConfigError`](super::ConfigError).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use easynet_core::protocol::{Base64, Decode, DeserializeError, Encode, Utf8};
    ///
    /// let signed = Base64::url_safe(Utf8::new()).with_hmac_key(&[7; 32]).unwrap();
    /// let mut out = BytesMut::new();
    /// signed.encode(&"hi".to_string(), &mut out).unwrap();
    /// assert_eq!(signed.decode(out.clone()).unwrap(), "hi");
    ///
    /// let other = Base64::url_safe(Utf8::new()).with_hmac_key(&[8; 32]).unwrap();
    /// let err = Decode::<String>::decode(&other, out).unwrap_err();
    /// assert!(matches!(err, DeserializeError::Checksum));
    /// assert!(Base64::new(Utf8::new()).with_hmac_key(b"short").is_err());
    /// ```
    #[cfg(feature = "base64-checksum")]
    pub fn with_hmac_key(mut self, key: &[u8]) -> Result<Self, super::ConfigError> {
        if key.len() != TAG_LEN {
            return Err(super::ConfigError::OutOfRange {
                what: "HMAC key length",
                min: TAG_LEN as i64,
                max: TAG_LEN as i64,
                got: key.len() as i64,
            });
        }
        self.check = Check::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key));
        Ok(self)
    }

    /// The inner serializer.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The alphabet.
    pub fn alphabet(&self) -> Base64Alphabet {
        self.alphabet
    }

    fn engine(&self) -> &'static GeneralPurpose {
        match self.alphabet {
            Base64Alphabet::Standard => &STANDARD,
            Base64Alphabet::UrlSafe => &URL_SAFE,
        }
    }
}

impl<T, S: Encode<T>> Encode<T> for Base64<S> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        // The one intermediate buffer: the inner payload. Base64 goes straight into `dst`.
        let mut raw = BytesMut::new();
        self.inner.encode(item, &mut raw)?;
        self.check.append(&mut raw);
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
        self.check.verify(&mut raw)?;
        self.inner.decode(raw)
    }
}

impl Check {
    /// Appends the digest or signature of `raw` to it.
    #[cfg_attr(not(feature = "base64-checksum"), allow(unused_variables))]
    fn append(&self, raw: &mut BytesMut) {
        match self {
            Check::None => {}
            #[cfg(feature = "base64-checksum")]
            Check::Sha256 => {
                let digest = ring::digest::digest(&ring::digest::SHA256, raw);
                raw.extend_from_slice(digest.as_ref());
            }
            #[cfg(feature = "base64-checksum")]
            Check::Hmac(key) => {
                let tag = ring::hmac::sign(key, raw);
                raw.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// Checks and removes the digest or signature at the end of `raw`.
    #[cfg_attr(not(feature = "base64-checksum"), allow(unused_variables))]
    fn verify(&self, raw: &mut BytesMut) -> Result<(), DeserializeError> {
        match self {
            Check::None => Ok(()),
            #[cfg(feature = "base64-checksum")]
            check => {
                let Some(data_len) = raw.len().checked_sub(TAG_LEN) else {
                    return Err(DeserializeError::Checksum);
                };
                let (data, tag) = raw.split_at(data_len);
                let ok = match check {
                    Check::Hmac(key) => ring::hmac::verify(key, data, tag).is_ok(),
                    _ => ring::digest::digest(&ring::digest::SHA256, data).as_ref() == tag,
                };
                if !ok {
                    return Err(DeserializeError::Checksum);
                }
                raw.truncate(data_len);
                Ok(())
            }
        }
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

    #[cfg(feature = "base64-checksum")]
    #[test]
    fn checksum_and_hmac_match_python_and_reject_tampering() {
        // Python: base64.standard_b64encode(d + hashlib.sha256(d).digest()), d = b"hello".
        let sha = Base64::new(RawBytes).with_checksum();
        let py = b"aGVsbG8s8k26X7CjDiboOyrFueKeGxYeXB+nQl5zBDNik4uYJA==";
        assert_eq!(&enc(&sha, b"hello")[..], py);
        assert_eq!(
            &Decode::<Bytes>::decode(&sha, BytesMut::from(&py[..])).unwrap()[..],
            b"hello"
        );
        // Python: base64.urlsafe_b64encode(d + hmac.new(bytes(range(32)), d, sha256).digest()).
        let key: Vec<u8> = (0..32).collect();
        let mac = Base64::url_safe(RawBytes).with_hmac_key(&key).unwrap();
        let py = b"aGVsbG9TxAJypwwVyk7gr03x8VX9bEHgDOIwfYmH7NS7NqfpkA==";
        assert_eq!(&enc(&mac, b"hello")[..], py);
        assert_eq!(
            &Decode::<Bytes>::decode(&mac, BytesMut::from(&py[..])).unwrap()[..],
            b"hello"
        );

        for s in [sha, mac] {
            let good = enc(&s, b"payload");
            // Every single-byte change of the decoded bytes is caught.
            let raw = STANDARD
                .decode(&good)
                .or_else(|_| URL_SAFE.decode(&good))
                .unwrap();
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 0x40;
                let text = s.engine().encode(&bad);
                let err = Decode::<Bytes>::decode(&s, BytesMut::from(text.as_bytes()));
                assert!(matches!(err, Err(DeserializeError::Checksum)), "byte {i}");
            }
            // Shorter than a tag; plain base64 with no tag.
            for short in [&b""[..], b"YWJj"] {
                let err = Decode::<Bytes>::decode(&s, BytesMut::from(short));
                assert!(matches!(err, Err(DeserializeError::Checksum)));
            }
        }
        assert!(Base64::new(RawBytes).with_hmac_key(&[0; 31]).is_err());
    }
}
