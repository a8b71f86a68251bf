//! [`Stream`] and [`Datagram`]: a framing and a serializer joined into a protocol.

use std::fmt;
use std::marker::PhantomData;

use bytes::BytesMut;

use super::{
    ConfigError, DatagramClientProtocol, DatagramProtocol, DatagramServerProtocol, Decode, Encode,
    Framing, LengthPrefixed, Lines, MAX_DATAGRAM_SIZE, OwnedFrame, OwnedPayload, ParseError,
    PrefixWidth, RawBytes, RawChunks, SerializeError, StreamClientProtocol, StreamProtocol,
    StreamServerProtocol, Utf8,
};

/// A stream protocol: framing `F`, serializer `S`, requests `Req`, responses `Resp`.
///
/// ```
/// use easynet_core::protocol::{PrefixWidth, Stream};
///
/// let lines = Stream::lines(); // String in, String out, LF-separated, 64 KiB limit
/// let frames = Stream::length_prefixed(PrefixWidth::U32, 1 << 20).unwrap(); // Bytes
/// let chunks = Stream::raw(); // whatever each read brought, as Bytes
/// # let _ = (lines, frames, chunks);
/// ```
pub struct Stream<F, S, Req, Resp> {
    framing: F,
    serializer: S,
    // fn() -> keeps Stream Send + Sync whatever the message types are.
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<F: Clone, S: Clone, Req, Resp> Clone for Stream<F, S, Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.framing.clone(), self.serializer.clone())
    }
}

impl<F: fmt::Debug, S: fmt::Debug, Req, Resp> fmt::Debug for Stream<F, S, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("framing", &self.framing)
            .field("serializer", &self.serializer)
            .finish()
    }
}

impl<F, S, Req, Resp> Stream<F, S, Req, Resp> {
    /// Joins a framing and a serializer.
    pub const fn new(framing: F, serializer: S) -> Self {
        Self {
            framing,
            serializer,
            _types: PhantomData,
        }
    }

    /// The framing.
    pub fn framing(&self) -> &F {
        &self.framing
    }

    /// The serializer.
    pub fn serializer(&self) -> &S {
        &self.serializer
    }
}

impl Stream<Lines, Utf8, String, String> {
    /// UTF-8 lines separated by LF, at most [`DEFAULT_LIMIT`](super::DEFAULT_LIMIT) bytes each.
    pub fn lines() -> Self {
        Self::new(Lines::new(), Utf8::new())
    }
}

#[cfg(feature = "bytestring")]
impl Stream<Lines, super::Utf8Shared, super::ByteString, super::ByteString> {
    /// UTF-8 lines as [`ByteString`](super::ByteString)s that share the read buffer: no
    /// allocation and no copy per line, in or out (a `String` line costs one of each).
    /// Otherwise as [`Stream::lines`].
    ///
    /// ```
    /// use easynet_core::protocol::{ByteString, Stream, StreamProtocol};
    ///
    /// let proto = Stream::lines_shared();
    /// let _: &dyn StreamProtocol<Request = ByteString, Response = ByteString, Decoder = _> = &proto;
    /// ```
    pub fn lines_shared() -> Self {
        Self::new(Lines::new(), super::Utf8Shared::new())
    }
}

impl Stream<LengthPrefixed, RawBytes, bytes::Bytes, bytes::Bytes> {
    /// Frames of raw bytes behind a big-endian length prefix of `width`, at most `max` bytes.
    ///
    /// Fails if `max` is 0 or does not fit in the prefix.
    pub fn length_prefixed(width: PrefixWidth, max: usize) -> Result<Self, ConfigError> {
        Ok(Self::new(LengthPrefixed::new(width, max)?, RawBytes))
    }
}

impl Stream<RawChunks, RawBytes, bytes::Bytes, bytes::Bytes> {
    /// No framing: each read is delivered as one message of raw bytes.
    pub fn raw() -> Self {
        Self::new(RawChunks::new(), RawBytes)
    }
}

/// The JSON-lines stream protocol ([`Stream::json_lines`]) with requests of type `Req`
/// and responses of type `Resp`, the same type unless given: where nothing else fixes the
/// message types, name them without a turbofish.
///
/// ```
/// use easynet_core::protocol::{JsonLines, Stream};
///
/// let proto: JsonLines<serde_json::Value> = Stream::json_lines();
/// # let _ = proto;
/// ```
#[cfg(feature = "json")]
pub type JsonLines<Req, Resp = Req> = Stream<Lines, super::Json, Req, Resp>;

#[cfg(feature = "json")]
impl<Req, Resp> Stream<Lines, super::Json, Req, Resp> {
    /// One compact JSON document per LF-terminated line, at most 64 KiB each.
    pub fn json_lines() -> Self {
        Self::new(Lines::new(), super::Json)
    }
}

#[cfg(feature = "cbor")]
impl<Req, Resp> Stream<LengthPrefixed, super::Cbor, Req, Resp> {
    /// One CBOR item per frame behind a 4-byte length prefix, at most
    /// [`DEFAULT_LIMIT`](super::DEFAULT_LIMIT) bytes each.
    ///
    /// ```
    /// use easynet_core::protocol::{Stream, StreamServerProtocol};
    ///
    /// let cbor: Stream<_, _, (u8, String), Vec<u32>> = Stream::cbor();
    /// let mut out = bytes::BytesMut::new();
    /// cbor.encode_response(&vec![1, 2], &mut out).unwrap();
    /// assert_eq!(&out[..], b"\0\0\0\x03\x82\x01\x02");
    /// ```
    pub fn cbor() -> Self {
        Self::new(default_length_prefix(), super::Cbor)
    }
}

#[cfg(feature = "msgpack")]
impl<Req, Resp> Stream<LengthPrefixed, super::MessagePack, Req, Resp> {
    /// One MessagePack value per frame (structs as maps) behind a 4-byte length prefix, at
    /// most [`DEFAULT_LIMIT`](super::DEFAULT_LIMIT) bytes each.
    ///
    /// ```
    /// use easynet_core::protocol::{Stream, StreamServerProtocol};
    ///
    /// let mp: Stream<_, _, (u8, String), Vec<u32>> = Stream::msgpack();
    /// let mut out = bytes::BytesMut::new();
    /// mp.encode_response(&vec![1, 2], &mut out).unwrap();
    /// assert_eq!(&out[..], b"\0\0\0\x03\x92\x01\x02");
    /// ```
    pub fn msgpack() -> Self {
        Self::new(default_length_prefix(), super::MessagePack::new())
    }
}

#[cfg(any(feature = "cbor", feature = "msgpack"))]
fn default_length_prefix() -> LengthPrefixed {
    LengthPrefixed::new(PrefixWidth::U32, super::DEFAULT_LIMIT).expect("64 KiB fits in 4 bytes")
}

impl<F, S, Req, Resp> StreamProtocol for Stream<F, S, Req, Resp>
where
    F: Framing,
    S: Send + Sync + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Request = Req;
    type Response = Resp;
    type Decoder = F::State;

    fn new_decoder(&self) -> F::State {
        F::State::default()
    }
}

impl<F, S, Req, Resp> Stream<F, S, Req, Resp>
where
    F: Framing,
{
    fn decode_with<T>(
        &self,
        state: &mut F::State,
        src: &mut BytesMut,
        decode: impl FnOnce(&S, BytesMut) -> Result<T, super::DeserializeError>,
    ) -> Result<Option<T>, ParseError> {
        match self.framing.decode(state, src)? {
            Some(payload) => Ok(Some(decode(&self.serializer, payload)?)),
            None => Ok(None),
        }
    }

    fn encode_with(
        &self,
        dst: &mut BytesMut,
        encode: impl FnOnce(&S, &mut BytesMut) -> Result<(), SerializeError>,
    ) -> Result<(), SerializeError> {
        let mark = self.framing.encode_start(dst);
        let res = encode(&self.serializer, dst).and_then(|()| self.framing.encode_end(dst, mark));
        if res.is_err() {
            dst.truncate(mark);
        }
        res
    }

    /// The owned path: the serializer hands its payload over whole (then the framing frames
    /// it without a copy) or encodes it into `dst` (then the frame is finished there).
    fn encode_owned_with<T>(
        &self,
        item: T,
        dst: &mut BytesMut,
        encode: impl FnOnce(&S, T, &mut BytesMut) -> Result<Option<OwnedPayload>, SerializeError>,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        let before = dst.len();
        let mark = self.framing.encode_start(dst);
        let res = match encode(&self.serializer, item, dst) {
            Ok(None) => self.framing.encode_end(dst, mark).map(|()| None),
            // A small payload is copied (cheaper than a queue entry): the borrowed path.
            Ok(Some(payload)) if payload.len() < super::OWNED_MIN => {
                dst.extend_from_slice(payload.as_slice());
                self.framing.encode_end(dst, mark).map(|()| None)
            }
            Ok(Some(payload)) => {
                dst.truncate(before); // the head placeholder: the framing writes its own
                self.framing.encode_owned(payload, dst)
            }
            Err(e) => Err(e),
        };
        if res.is_err() {
            dst.truncate(before);
        }
        res
    }
}

impl<F, S, Req, Resp> StreamServerProtocol for Stream<F, S, Req, Resp>
where
    F: Framing,
    S: Decode<Req> + Encode<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn decode_request(
        &self,
        state: &mut F::State,
        src: &mut BytesMut,
    ) -> Result<Option<Req>, ParseError> {
        self.decode_with(state, src, |s, p| s.decode(p))
    }

    fn encode_response(&self, item: &Resp, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.encode_with(dst, |s, d| s.encode(item, d))
    }

    fn response_bytes(&self, item: &Resp) -> Option<bytes::Bytes> {
        self.framing
            .is_transparent()
            .then(|| self.serializer.encode_shared(item))
            .flatten()
    }

    fn encode_response_owned(
        &self,
        item: Resp,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        self.encode_owned_with(item, dst, |s, item, d| s.encode_owned(item, d))
    }
}

impl<F, S, Req, Resp> StreamClientProtocol for Stream<F, S, Req, Resp>
where
    F: Framing,
    S: Encode<Req> + Decode<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn decode_response(
        &self,
        state: &mut F::State,
        src: &mut BytesMut,
    ) -> Result<Option<Resp>, ParseError> {
        self.decode_with(state, src, |s, p| s.decode(p))
    }

    fn encode_request(&self, item: &Req, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.encode_with(dst, |s, d| s.encode(item, d))
    }

    fn request_bytes(&self, item: &Req) -> Option<bytes::Bytes> {
        self.framing
            .is_transparent()
            .then(|| self.serializer.encode_shared(item))
            .flatten()
    }

    fn encode_request_owned(
        &self,
        item: Req,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        self.encode_owned_with(item, dst, |s, item, d| s.encode_owned(item, d))
    }
}

/// A datagram protocol: each datagram is one message, serialized by `S`.
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{Datagram, DatagramServerProtocol};
///
/// let text = Datagram::lines();
/// let req = text.decode_request(BytesMut::from(&b"ping\n"[..])).unwrap();
/// assert_eq!(req, "ping");
/// ```
pub struct Datagram<S, Req, Resp> {
    serializer: S,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<S: Clone, Req, Resp> Clone for Datagram<S, Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.serializer.clone())
    }
}

impl<S: fmt::Debug, Req, Resp> fmt::Debug for Datagram<S, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("serializer", &self.serializer)
            .finish()
    }
}

impl<S, Req, Resp> Datagram<S, Req, Resp> {
    /// Wraps a serializer.
    pub const fn new(serializer: S) -> Self {
        Self {
            serializer,
            _types: PhantomData,
        }
    }

    /// The serializer.
    pub fn serializer(&self) -> &S {
        &self.serializer
    }

    fn check_size(dst: &BytesMut) -> Result<(), SerializeError> {
        if dst.len() > MAX_DATAGRAM_SIZE {
            return Err(SerializeError::TooLarge {
                limit: MAX_DATAGRAM_SIZE,
                got: dst.len(),
            });
        }
        Ok(())
    }
}

impl Datagram<RawBytes, bytes::Bytes, bytes::Bytes> {
    /// Raw bytes: the datagram is the message.
    pub fn raw() -> Self {
        Self::new(RawBytes)
    }
}

impl Datagram<Utf8, String, String> {
    /// UTF-8 text; one trailing LF or CRLF is stripped on receipt, none is added on send.
    pub fn lines() -> Self {
        Self::new(Utf8::trimming_newline())
    }
}

#[cfg(feature = "bytestring")]
impl Datagram<super::Utf8Shared, super::ByteString, super::ByteString> {
    /// UTF-8 text as [`ByteString`](super::ByteString)s that share the received datagram's
    /// buffer: no copy in or out. Otherwise as [`Datagram::lines`].
    ///
    /// ```
    /// use easynet_core::protocol::{ByteString, Datagram, DatagramServerProtocol};
    ///
    /// let proto = Datagram::lines_shared();
    /// let line: ByteString = proto.decode_request(bytes::BytesMut::from("héllo\r\n")).unwrap();
    /// assert_eq!(&line[..], "héllo");
    /// ```
    pub fn lines_shared() -> Self {
        Self::new(super::Utf8Shared::trimming_newline())
    }
}

#[cfg(feature = "json")]
impl<Req, Resp> Datagram<super::Json, Req, Resp> {
    /// One compact JSON document per datagram.
    pub fn json() -> Self {
        Self::new(super::Json)
    }
}

#[cfg(feature = "cbor")]
impl<Req, Resp> Datagram<super::Cbor, Req, Resp> {
    /// One CBOR item per datagram.
    ///
    /// ```
    /// use easynet_core::protocol::{Datagram, DatagramServerProtocol};
    ///
    /// let cbor: Datagram<_, Vec<u32>, String> = Datagram::cbor();
    /// let req = cbor.decode_request(bytes::BytesMut::from(&b"\x81\x07"[..])).unwrap();
    /// assert_eq!(req, vec![7]);
    /// ```
    pub fn cbor() -> Self {
        Self::new(super::Cbor)
    }
}

#[cfg(feature = "msgpack")]
impl<Req, Resp> Datagram<super::MessagePack, Req, Resp> {
    /// One MessagePack value per datagram (structs as maps).
    ///
    /// ```
    /// use easynet_core::protocol::{Datagram, DatagramServerProtocol};
    ///
    /// let mp: Datagram<_, Vec<u32>, String> = Datagram::msgpack();
    /// let req = mp.decode_request(bytes::BytesMut::from(&b"\x91\x07"[..])).unwrap();
    /// assert_eq!(req, vec![7]);
    /// ```
    pub fn msgpack() -> Self {
        Self::new(super::MessagePack::new())
    }
}

impl<S, Req, Resp> DatagramProtocol for Datagram<S, Req, Resp>
where
    S: Send + Sync + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Request = Req;
    type Response = Resp;
}

impl<S, Req, Resp> DatagramServerProtocol for Datagram<S, Req, Resp>
where
    S: Decode<Req> + Encode<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn decode_request(&self, datagram: BytesMut) -> Result<Req, ParseError> {
        Ok(self.serializer.decode(datagram)?)
    }

    fn encode_response(&self, item: &Resp, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.serializer.encode(item, dst)?;
        Self::check_size(dst)
    }

    fn encode_response_owned(
        &self,
        item: Resp,
        dst: &mut BytesMut,
    ) -> Result<Option<bytes::Bytes>, SerializeError> {
        match self.serializer.encode_owned(item, dst)? {
            Some(payload) => {
                if payload.len() > MAX_DATAGRAM_SIZE {
                    return Err(SerializeError::TooLarge {
                        limit: MAX_DATAGRAM_SIZE,
                        got: payload.len(),
                    });
                }
                Ok(Some(payload.into_bytes()))
            }
            None => Self::check_size(dst).map(|()| None),
        }
    }

    fn response_bytes(&self, item: &Resp) -> Option<bytes::Bytes> {
        // Too large: `encode_response` says so.
        self.serializer
            .encode_shared(item)
            .filter(|data| data.len() <= MAX_DATAGRAM_SIZE)
    }
}

impl<S, Req, Resp> DatagramClientProtocol for Datagram<S, Req, Resp>
where
    S: Encode<Req> + Decode<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn decode_response(&self, datagram: BytesMut) -> Result<Resp, ParseError> {
        Ok(self.serializer.decode(datagram)?)
    }

    fn encode_request(&self, item: &Req, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.serializer.encode(item, dst)?;
        Self::check_size(dst)
    }
}
