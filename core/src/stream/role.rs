//! [`Role`]: which side of the protocol a [`Connection`](super::Connection) speaks.

use bytes::{Bytes, BytesMut};

use crate::protocol::{
    OwnedFrame, ParseError, SerializeError, StreamClientProtocol, StreamProtocol,
    StreamServerProtocol,
};

/// Which side of the protocol a [`Connection`](super::Connection) speaks.
pub trait Role<P: StreamProtocol>: Send + 'static {
    /// What this side receives.
    type Incoming: Send + 'static;
    /// What this side sends.
    type Outgoing: Send + 'static;
    /// True on the server side (connections are logged as accepted clients).
    const SERVER: bool;

    /// Takes the next incoming message off `src`.
    fn decode(
        protocol: &P,
        state: &mut P::Decoder,
        src: &mut BytesMut,
    ) -> Result<Option<Self::Incoming>, ParseError>;

    /// Appends one framed outgoing message to `dst`.
    fn encode(
        protocol: &P,
        item: &Self::Outgoing,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;

    /// The framed outgoing message as shared bytes, when that needs no copy.
    fn shared(protocol: &P, item: &Self::Outgoing) -> Option<Bytes>;

    /// Frames one outgoing message, taking it: its head appended to `dst` and its body
    /// returned to be queued without a copy, or the whole frame appended to `dst`
    /// (`Ok(None)`, the default: [`encode`](Role::encode)).
    fn encode_owned(
        protocol: &P,
        item: Self::Outgoing,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        Self::encode(protocol, &item, dst).map(|()| None)
    }
}

/// The server side: receives requests, sends responses.
#[derive(Debug, Clone, Copy)]
pub struct ServerRole;

/// The client side: sends requests, receives responses.
#[derive(Debug, Clone, Copy)]
pub struct ClientRole;

impl<P: StreamServerProtocol> Role<P> for ServerRole {
    type Incoming = P::Request;
    type Outgoing = P::Response;
    const SERVER: bool = true;

    fn decode(
        protocol: &P,
        state: &mut P::Decoder,
        src: &mut BytesMut,
    ) -> Result<Option<P::Request>, ParseError> {
        protocol.decode_request(state, src)
    }

    fn encode(protocol: &P, item: &P::Response, dst: &mut BytesMut) -> Result<(), SerializeError> {
        protocol.encode_response(item, dst)
    }

    fn shared(protocol: &P, item: &P::Response) -> Option<Bytes> {
        protocol.response_bytes(item)
    }

    fn encode_owned(
        protocol: &P,
        item: P::Response,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        protocol.encode_response_owned(item, dst)
    }
}

impl<P: StreamClientProtocol> Role<P> for ClientRole {
    type Incoming = P::Response;
    type Outgoing = P::Request;
    const SERVER: bool = false;

    fn decode(
        protocol: &P,
        state: &mut P::Decoder,
        src: &mut BytesMut,
    ) -> Result<Option<P::Response>, ParseError> {
        protocol.decode_response(state, src)
    }

    fn encode(protocol: &P, item: &P::Request, dst: &mut BytesMut) -> Result<(), SerializeError> {
        protocol.encode_request(item, dst)
    }

    fn shared(protocol: &P, item: &P::Request) -> Option<Bytes> {
        protocol.request_bytes(item)
    }

    fn encode_owned(
        protocol: &P,
        item: P::Request,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        protocol.encode_request_owned(item, dst)
    }
}
