//! Errors of framing and serialization.

use std::error::Error as StdError;

/// A boxed error from user code (a custom serializer, a handler).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Bytes received could not be turned into a message.
///
/// A parse error is recoverable: the bad frame has already been taken off the receive buffer
/// (or is being skipped), the rest of the buffer is kept and the connection goes on. The
/// handler gets the error in [`Received::ParseError`](crate::handler::Received::ParseError).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A line grew past the line limit before its separator came. The line is skipped up to
    /// and including the next separator.
    #[error("line exceeds the limit of {limit} bytes (at least {got} bytes received)")]
    LineTooLong {
        /// The configured limit, in bytes, separator excluded.
        limit: usize,
        /// How many bytes of the line had been received when the limit was hit.
        got: usize,
    },
    /// A length prefix announced a frame larger than the maximum. The frame's bytes are skipped
    /// as they arrive.
    #[error("frame of {got} bytes exceeds the maximum of {limit} bytes")]
    FrameTooLarge {
        /// The configured maximum payload length.
        limit: usize,
        /// The announced payload length.
        got: usize,
    },
    /// A complete frame was received but its payload is not a valid message.
    #[error(transparent)]
    Deserialize(#[from] DeserializeError),
}

/// The payload of a complete frame is not a valid message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeserializeError {
    /// The payload is not valid UTF-8.
    #[error("invalid UTF-8: {0}")]
    Utf8(std::str::Utf8Error),
    /// The payload is not the expected JSON document.
    #[cfg(feature = "json")]
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// The payload is not the expected CBOR item.
    #[cfg(feature = "cbor")]
    #[error("invalid CBOR: {0}")]
    Cbor(ciborium::de::Error<std::io::Error>),
    /// The payload is not the expected MessagePack value.
    #[cfg(feature = "msgpack")]
    #[error("invalid MessagePack: {0}")]
    MessagePack(rmp_serde::decode::Error),
    /// The payload is not valid base64.
    #[cfg(feature = "base64")]
    #[error("invalid base64: {0}")]
    Base64(::base64::DecodeError),
    /// The checksum or HMAC signature of a base64 payload does not match (EasyNetwork's
    /// "Invalid token").
    #[cfg(feature = "base64-checksum")]
    #[error("checksum mismatch")]
    Checksum,
    /// The payload is not a valid compressed stream (corrupt, truncated, trailing bytes).
    #[cfg(any(feature = "zlib", feature = "zstd"))]
    #[error("cannot decompress: {0}")]
    Decompress(std::io::Error),
    /// The payload decodes to more bytes than allowed (a decompression bomb, for example).
    /// Decoding stopped at the limit: nothing past it was allocated.
    #[error("decoded payload exceeds the limit of {limit} bytes (at least {got} bytes)")]
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
        /// How many bytes had been decoded when the limit was hit.
        got: usize,
    },
    /// A converter rejected the decoded DTO.
    #[cfg(feature = "converter")]
    #[error("cannot convert the received DTO: {0}")]
    Conversion(super::ConversionError),
    /// A custom serializer rejected the payload.
    #[error("{0}")]
    Other(BoxError),
}

/// A message could not be turned into bytes. Nothing of it was queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SerializeError {
    /// The encoded message is larger than the framing allows.
    #[error("message of {got} bytes exceeds the maximum of {limit} bytes")]
    TooLarge {
        /// The maximum the framing (or datagram size) allows.
        limit: usize,
        /// The encoded size.
        got: usize,
    },
    /// The message could not be encoded as JSON.
    #[cfg(feature = "json")]
    #[error("cannot encode JSON: {0}")]
    Json(serde_json::Error),
    /// The message could not be encoded as CBOR.
    #[cfg(feature = "cbor")]
    #[error("cannot encode CBOR: {0}")]
    Cbor(ciborium::ser::Error<std::io::Error>),
    /// The message could not be encoded as MessagePack.
    #[cfg(feature = "msgpack")]
    #[error("cannot encode MessagePack: {0}")]
    MessagePack(rmp_serde::encode::Error),
    /// The compressor failed.
    #[cfg(any(feature = "zlib", feature = "zstd"))]
    #[error("cannot compress: {0}")]
    Compress(std::io::Error),
    /// A converter could not turn the message into its DTO.
    #[cfg(feature = "converter")]
    #[error("cannot convert the message to its DTO: {0}")]
    Conversion(super::ConversionError),
    /// A custom serializer failed.
    #[error("{0}")]
    Other(BoxError),
}

pub use crate::error::ConfigError;

// The causes are in the messages, so they are not `source`s (a chain printer would
// print them twice): `From` by hand instead of `#[from]`.
impl From<std::str::Utf8Error> for DeserializeError {
    fn from(e: std::str::Utf8Error) -> Self {
        DeserializeError::Utf8(e)
    }
}

#[cfg(feature = "json")]
impl From<serde_json::Error> for DeserializeError {
    fn from(e: serde_json::Error) -> Self {
        DeserializeError::Json(e)
    }
}

#[cfg(feature = "cbor")]
impl From<ciborium::de::Error<std::io::Error>> for DeserializeError {
    fn from(e: ciborium::de::Error<std::io::Error>) -> Self {
        DeserializeError::Cbor(e)
    }
}

#[cfg(feature = "msgpack")]
impl From<rmp_serde::decode::Error> for DeserializeError {
    fn from(e: rmp_serde::decode::Error) -> Self {
        DeserializeError::MessagePack(e)
    }
}

#[cfg(feature = "base64")]
impl From<::base64::DecodeError> for DeserializeError {
    fn from(e: ::base64::DecodeError) -> Self {
        DeserializeError::Base64(e)
    }
}

#[cfg(feature = "converter")]
impl From<super::ConversionError> for DeserializeError {
    fn from(e: super::ConversionError) -> Self {
        DeserializeError::Conversion(e)
    }
}

#[cfg(feature = "json")]
impl From<serde_json::Error> for SerializeError {
    fn from(e: serde_json::Error) -> Self {
        SerializeError::Json(e)
    }
}

#[cfg(feature = "cbor")]
impl From<ciborium::ser::Error<std::io::Error>> for SerializeError {
    fn from(e: ciborium::ser::Error<std::io::Error>) -> Self {
        SerializeError::Cbor(e)
    }
}

#[cfg(feature = "msgpack")]
impl From<rmp_serde::encode::Error> for SerializeError {
    fn from(e: rmp_serde::encode::Error) -> Self {
        SerializeError::MessagePack(e)
    }
}

#[cfg(feature = "converter")]
impl From<super::ConversionError> for SerializeError {
    fn from(e: super::ConversionError) -> Self {
        SerializeError::Conversion(e)
    }
}
