//! Protocols: how messages become bytes and back.
//!
//! A protocol is two pieces, kept apart so that they compose:
//!
//! - a [`Framing`] cuts a byte stream into frames (lines, length-prefixed frames, raw chunks)
//!   and writes frames back; it owns the per-connection decode state and the size limits;
//! - a serializer ([`Encode`] / [`Decode`]) turns one frame's payload into a message and back
//!   (UTF-8 text, raw bytes, JSON, CBOR, MessagePack).
//!
//! Serializers compose: a wrapper holds an inner serializer and transforms its payload —
//! [`Base64`], [`Zlib`], [`Zstd`] — or converts the message before it (`Converted`, domain
//! types over wire DTOs). `Stream::new(LengthPrefixed::new(PrefixWidth::U32, 1 << 20)?,
//! Zlib::new(Json))` is JSON inside zlib inside a length prefix. Each wrapper and format is
//! behind its own feature (`base64`, `base64-checksum`, `zlib`, `zstd`, `cbor`, `msgpack`,
//! `converter`).
//!
//! [`Stream`] joins a framing and a serializer into a [`StreamProtocol`] for TCP/TLS, and
//! [`Datagram`] wraps a serializer into a [`DatagramProtocol`] for UDP, where the datagram is
//! the frame. One protocol value serves both sides: a server decodes `Request`s and encodes
//! `Response`s ([`StreamServerProtocol`]), a client does the reverse
//! ([`StreamClientProtocol`]).
//!
//! Parse errors are recoverable, as in EasyNetwork: a decoder that rejects a frame has
//! already removed it from the buffer, so the rest is kept and the next frame decodes.
//!
//! ```
//! use bytes::BytesMut;
//! use easynet_core::protocol::{Stream, StreamProtocol, StreamServerProtocol};
//!
//! let lines = Stream::lines();
//! let mut state = lines.new_decoder();
//! let mut buf = BytesMut::from(&b"hello\nworld\n"[..]);
//! assert_eq!(lines.decode_request(&mut state, &mut buf).unwrap().as_deref(), Some("hello"));
//! assert_eq!(lines.decode_request(&mut state, &mut buf).unwrap().as_deref(), Some("world"));
//! assert_eq!(lines.decode_request(&mut state, &mut buf).unwrap(), None);
//!
//! let mut out = BytesMut::new();
//! lines.encode_response(&"bye".to_string(), &mut out).unwrap();
//! assert_eq!(&out[..], b"bye\n");
//! ```

#[cfg(feature = "base64")]
mod base64;
#[cfg(feature = "cbor")]
mod cbor;
mod checked;
#[cfg(any(feature = "zlib", feature = "zstd"))]
mod compress;
#[cfg(feature = "converter")]
mod converter;
mod error;
mod framed;
#[cfg(feature = "json")]
mod json;
mod length;
mod lines;
#[cfg(feature = "msgpack")]
mod msgpack;
mod raw;
mod text;
#[cfg(feature = "zlib")]
mod zlib;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(feature = "base64")]
pub use self::base64::{Base64, Base64Alphabet};
#[cfg(feature = "zstd")]
pub use self::zstd::Zstd;
/// Text that shares its buffer ([`Utf8`] decodes lines into it without a copy).
#[cfg(feature = "bytestring")]
pub use bytestring::ByteString;
#[cfg(feature = "cbor")]
pub use cbor::Cbor;
#[cfg(feature = "converter")]
pub use converter::{ConversionError, Converted, Converter, FromDto, Stapled, ToDto};
pub use error::{BoxError, ConfigError, DeserializeError, ParseError, SerializeError};
#[cfg(feature = "json")]
pub use framed::JsonLines;
pub use framed::{Datagram, Stream};
#[cfg(feature = "json")]
pub use json::Json;
pub use length::{LengthPrefixed, LengthState, PrefixWidth};
pub use lines::{LineState, Lines, Separator};
#[cfg(feature = "msgpack")]
pub use msgpack::MessagePack;
pub use raw::RawChunks;
#[cfg(feature = "bytestring")]
pub use text::Utf8Shared;
pub use text::{RawBytes, Utf8};
#[cfg(feature = "zlib")]
pub use zlib::Zlib;

use bytes::{Bytes, BytesMut};

/// A payload handed over whole by [`Encode::encode_owned`]: the message's own buffer,
/// queued for the socket as it is, without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedPayload {
    /// A vector of its own (a `String`'s bytes): a framing may append its trailer (a line
    /// separator) in its spare capacity.
    Vec(Vec<u8>),
    /// Shared bytes (a `Bytes` message).
    Shared(Bytes),
}

impl OwnedPayload {
    /// The payload's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            OwnedPayload::Vec(v) => v,
            OwnedPayload::Shared(b) => b,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as shared bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        match self {
            OwnedPayload::Vec(v) => Bytes::from(v),
            OwnedPayload::Shared(b) => b,
        }
    }
}

impl AsRef<[u8]> for OwnedPayload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// A frame around a payload handed over whole ([`Framing::encode_owned`]): the frame's head
/// (a length prefix, say) was appended to the caller's buffer; then come `body`, then
/// `tail` (a separator that did not fit in the body's spare capacity).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnedFrame {
    /// The payload, as it goes out.
    pub body: OwnedPayload,
    /// Bytes that follow the body.
    pub tail: &'static [u8],
}

impl OwnedFrame {
    /// A frame that is `body` (after the head the framing wrote), nothing after it.
    pub fn new(body: OwnedPayload) -> Self {
        Self { body, tail: b"" }
    }

    /// This frame with `tail` after its body.
    pub fn with_tail(mut self, tail: &'static [u8]) -> Self {
        self.tail = tail;
        self
    }
}

/// Owned payloads at least this long are framed without a copy ([`Framing::encode_owned`]);
/// shorter ones are copied into the write buffer, which costs less than queueing a buffer of
/// their own.
pub(crate) const OWNED_MIN: usize = 4096;

/// True when a received frame of `len` bytes whose buffer holds `capacity` is worth
/// handing over whole (its message made of it without a copy): one rule for the framing
/// that gives a line its read buffer and the serializer that takes it. Large, and not
/// mostly spare room, which a message kept long would hold on to.
pub(crate) fn worth_owning(len: usize, capacity: usize) -> bool {
    len >= OWNED_MIN && capacity <= 2 * len
}

/// Default limit of a line, a length-prefixed frame or a JSON document: 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Largest payload of a UDP datagram over IPv4.
pub const MAX_DATAGRAM_SIZE: usize = 65_507;

/// Cuts a byte stream into frames and writes frames back.
///
/// Modelled on tokio-util's `Decoder`/`Encoder`, with EasyNetwork's rule on top: an error
/// from [`decode`](Framing::decode) means the bad frame has been removed from `src` (or the
/// framing is skipping it), and the bytes after it are kept.
pub trait Framing: Clone + Send + Sync + 'static {
    /// Per-connection decode state, such as "skipping an over-long line".
    type State: Default + Send + 'static;

    /// Takes the next complete frame's payload off the front of `src`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. The framing must never hold more than
    /// its limit of one frame in `src` without either returning the frame or an error.
    fn decode(
        &self,
        state: &mut Self::State,
        src: &mut BytesMut,
    ) -> Result<Option<BytesMut>, ParseError>;

    /// Starts a frame in `dst` (writes a header placeholder if the framing has one) and
    /// returns the mark to pass to [`encode_end`](Framing::encode_end).
    fn encode_start(&self, dst: &mut BytesMut) -> usize;

    /// Ends the frame started at `mark`, after its payload was appended to `dst`. On error
    /// the caller truncates `dst` back to `mark`.
    fn encode_end(&self, dst: &mut BytesMut, mark: usize) -> Result<(), SerializeError>;

    /// True when a frame is its payload, nothing added: the payload may then be sent as is.
    fn is_transparent(&self) -> bool {
        false
    }

    /// Frames a payload handed over whole ([`Encode::encode_owned`]) without copying it:
    /// appends the frame's head to `dst` and returns the body and what follows it
    /// (`Ok(Some)`), or appends the whole frame to `dst` (`Ok(None)`, a copy). On error
    /// `dst` is unchanged.
    ///
    /// By default the payload is copied between [`encode_start`](Framing::encode_start)
    /// and [`encode_end`](Framing::encode_end), so a framing that does not override this
    /// frames owned and borrowed messages alike.
    fn encode_owned(
        &self,
        payload: OwnedPayload,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        let before = dst.len();
        let mark = self.encode_start(dst);
        dst.extend_from_slice(payload.as_slice());
        match self.encode_end(dst, mark) {
            Ok(()) => Ok(None),
            Err(e) => {
                dst.truncate(before);
                Err(e)
            }
        }
    }
}

/// Turns a message into a frame payload.
pub trait Encode<T>: Clone + Send + Sync + 'static {
    /// Appends the payload of `item` to `dst`.
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError>;

    /// The payload of `item` as shared bytes, when it already is that (no copy); `None`
    /// otherwise, and then [`encode`](Encode::encode) is used.
    fn encode_shared(&self, item: &T) -> Option<bytes::Bytes> {
        let _ = item;
        None
    }

    /// Encodes `item`, taking it: when the payload is the message's own buffer (a
    /// `String`'s bytes, a `Bytes`), returns it whole (`Ok(Some)`, nothing appended to
    /// `dst`) so that it is queued without a copy; otherwise appends the payload to `dst`
    /// and returns `Ok(None)`. On error `dst` is unchanged.
    ///
    /// The bytes must be those [`encode`](Encode::encode) would append. By default this is
    /// `encode(&item, dst)`.
    fn encode_owned(
        &self,
        item: T,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedPayload>, SerializeError> {
        self.encode(&item, dst).map(|()| None)
    }
}

/// Turns a frame payload into a message.
pub trait Decode<T>: Clone + Send + Sync + 'static {
    /// Parses one complete payload.
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError>;
}

/// What both sides of a stream protocol share: the message types and the decode state.
pub trait StreamProtocol: Send + Sync + 'static {
    /// What a client sends and a server receives.
    type Request: Send + 'static;
    /// What a server sends and a client receives.
    type Response: Send + 'static;
    /// Per-connection decode state.
    type Decoder: Send + 'static;

    /// A fresh decode state for a new connection.
    fn new_decoder(&self) -> Self::Decoder;
}

/// The server side of a stream protocol: decodes requests, encodes responses.
pub trait StreamServerProtocol: StreamProtocol {
    /// Takes the next request off `src`; see [`Framing::decode`] for the contract.
    fn decode_request(
        &self,
        state: &mut Self::Decoder,
        src: &mut BytesMut,
    ) -> Result<Option<Self::Request>, ParseError>;
    /// Appends one framed response to `dst`; on error `dst` is unchanged.
    fn encode_response(
        &self,
        item: &Self::Response,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;

    /// The whole framed response as shared bytes when that needs no copy (raw bytes, no
    /// framing); the connection then queues it as is. `None` by default.
    fn response_bytes(&self, item: &Self::Response) -> Option<bytes::Bytes> {
        let _ = item;
        None
    }

    /// Frames one response, taking it: the head is appended to `dst` and the body (the
    /// response's own buffer) returned to be queued without a copy (`Ok(Some)`), or the
    /// whole frame is appended to `dst` (`Ok(None)`). On error `dst` is unchanged. The
    /// bytes are those of [`encode_response`](Self::encode_response); by default it is
    /// used.
    fn encode_response_owned(
        &self,
        item: Self::Response,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        self.encode_response(&item, dst).map(|()| None)
    }
}

/// The client side of a stream protocol: encodes requests, decodes responses.
pub trait StreamClientProtocol: StreamProtocol {
    /// Takes the next response off `src`; see [`Framing::decode`] for the contract.
    fn decode_response(
        &self,
        state: &mut Self::Decoder,
        src: &mut BytesMut,
    ) -> Result<Option<Self::Response>, ParseError>;
    /// Appends one framed request to `dst`; on error `dst` is unchanged.
    fn encode_request(
        &self,
        item: &Self::Request,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;

    /// Like [`StreamServerProtocol::response_bytes`], for requests.
    fn request_bytes(&self, item: &Self::Request) -> Option<bytes::Bytes> {
        let _ = item;
        None
    }

    /// Like [`StreamServerProtocol::encode_response_owned`], for requests.
    fn encode_request_owned(
        &self,
        item: Self::Request,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        self.encode_request(&item, dst).map(|()| None)
    }
}

/// What both sides of a datagram protocol share: the message types.
pub trait DatagramProtocol: Send + Sync + 'static {
    /// What a client sends and a server receives.
    type Request: Send + 'static;
    /// What a server sends and a client receives.
    type Response: Send + 'static;
}

/// The server side of a datagram protocol.
pub trait DatagramServerProtocol: DatagramProtocol {
    /// Parses one datagram as a request.
    fn decode_request(&self, datagram: BytesMut) -> Result<Self::Request, ParseError>;
    /// Appends one response datagram to `dst` (which the caller gives empty).
    fn encode_response(
        &self,
        item: &Self::Response,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;

    /// Encodes one response datagram, taking it: the datagram is returned whole when it is
    /// the response's own buffer (`Ok(Some)`, no copy; `dst` untouched), or appended to
    /// `dst` (which the caller gives empty) as [`encode_response`](Self::encode_response)
    /// does (`Ok(None)`, the default).
    fn encode_response_owned(
        &self,
        item: Self::Response,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, SerializeError> {
        self.encode_response(&item, dst).map(|()| None)
    }

    /// The whole response datagram as shared bytes when that needs no copy (raw bytes, text
    /// as `ByteString`): a borrowed send then queues it as is. `None` by default, and then
    /// [`encode_response`](Self::encode_response) makes it. When `Some`, the bytes are
    /// those `encode_response` would append, within the datagram size limit.
    fn response_bytes(&self, item: &Self::Response) -> Option<Bytes> {
        let _ = item;
        None
    }
}

/// One response datagram of its own: the response's own bytes when the protocol shares them
/// ([`DatagramServerProtocol::response_bytes`], no copy), else encoded into a new buffer.
/// What a borrowed send and a pusher queue.
pub(crate) fn response_datagram<P: DatagramServerProtocol + ?Sized>(
    protocol: &P,
    item: &P::Response,
) -> Result<Bytes, SerializeError> {
    if let Some(data) = protocol.response_bytes(item) {
        return Ok(data);
    }
    let mut dst = BytesMut::new();
    protocol.encode_response(item, &mut dst)?;
    Ok(dst.freeze())
}

/// The client side of a datagram protocol.
pub trait DatagramClientProtocol: DatagramProtocol {
    /// Parses one datagram as a response.
    fn decode_response(&self, datagram: BytesMut) -> Result<Self::Response, ParseError>;
    /// Appends one request datagram to `dst` (which the caller gives empty).
    fn encode_request(
        &self,
        item: &Self::Request,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;
}
