//! Converters: the handler works with domain types, the wire carries DTOs (feature
//! `converter`, EasyNetwork's packet converters).
//!
//! A converter maps a domain type `T` to the data-transfer object its serializer knows
//! ([`ToDto`], used on send) and back ([`FromDto`], used on receive). [`Converted`] puts a
//! converter in front of a serializer, so `Stream::new(framing, Converted::new(Json, conv))`
//! has domain `Request`/`Response` types while `Json` only ever sees DTOs.
//!
//! - A *symmetric* converter implements both traits for a type: that is a [`Converter`].
//!   One converter value may implement them for several types (say the request and the
//!   response types), so one protocol value still serves both sides.
//! - [`Stapled`] joins a converter used on send and one used on receive (EasyNetwork's
//!   `StapledPacketConverter`), for when they are written separately.
//!
//! `from_dto` rejecting a DTO is a [`DeserializeError::Conversion`], a recoverable parse
//! error the handler receives; `to_dto` failing is a [`SerializeError::Conversion`]. Nothing of
//! this runs unless a protocol is built with [`Converted`].

use std::borrow::Cow;
use std::fmt;

use bytes::BytesMut;

use super::{BoxError, Decode, DeserializeError, Encode, SerializeError};

/// A converter rejected a value: a DTO that is not a valid domain value, or a domain value
/// with no DTO (EasyNetwork's `PacketConversionError`).
///
/// ```
/// use easynet_core::protocol::ConversionError;
///
/// let e = ConversionError::with_source("bad port", "99999".parse::<u16>().unwrap_err());
/// assert_eq!(e.message(), "bad port");
/// assert_eq!(e.to_string(), "bad port: number too large to fit in target type");
/// assert!(e.cause().is_some());
/// // The cause is in the message, so it is not also the `source` (printed once).
/// assert!(std::error::Error::source(&e).is_none());
/// ```
#[derive(Debug)]
pub struct ConversionError {
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl ConversionError {
    /// An error with a message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and the error that caused it.
    pub fn with_source(message: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error that caused it, if one was given. Its text is already in this error's
    /// message, so it is not returned by `source`.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConversionError {}

/// Turns a domain value `T` into the DTO sent on the wire.
pub trait ToDto<T>: Clone + Send + Sync + 'static {
    /// What the serializer encodes.
    type Dto;
    /// The DTO of `item`; an error is a [`SerializeError::Conversion`] and nothing is sent.
    fn to_dto(&self, item: &T) -> Result<Self::Dto, ConversionError>;
}

/// Turns a received DTO into a domain value `T`.
pub trait FromDto<T>: Clone + Send + Sync + 'static {
    /// What the serializer decodes.
    type Dto;
    /// The domain value of `dto`; an error is a [`DeserializeError::Conversion`], a
    /// recoverable parse error.
    // The converter is a value (it may hold settings), so `from_` takes `&self`.
    #[allow(clippy::wrong_self_convention)]
    fn from_dto(&self, dto: Self::Dto) -> Result<T, ConversionError>;
}

/// A symmetric converter: `T` to and from one DTO type. Implemented for every type that
/// implements [`ToDto<T>`] and [`FromDto<T>`] with the same DTO.
///
/// ```
/// use easynet_core::protocol::{ConversionError, Converter, FromDto, ToDto};
///
/// /// Celsius in the domain, tenths of a degree (an integer) on the wire.
/// struct Celsius(f64);
///
/// #[derive(Clone)]
/// struct Tenths;
/// impl ToDto<Celsius> for Tenths {
///     type Dto = i32;
///     fn to_dto(&self, c: &Celsius) -> Result<i32, ConversionError> {
///         Ok((c.0 * 10.0).round() as i32)
///     }
/// }
/// impl FromDto<Celsius> for Tenths {
///     type Dto = i32;
///     fn from_dto(&self, t: i32) -> Result<Celsius, ConversionError> {
///         Ok(Celsius(f64::from(t) / 10.0))
///     }
/// }
///
/// fn round_trip<T, C: Converter<T>>(c: &C, v: &T) -> T {
///     c.from_dto(c.to_dto(v).unwrap()).unwrap()
/// }
/// assert_eq!(round_trip(&Tenths, &Celsius(21.54)).0, 21.5);
/// ```
pub trait Converter<T>: ToDto<T> + FromDto<T, Dto = <Self as ToDto<T>>::Dto> {}

impl<T, C> Converter<T> for C where C: ToDto<T> + FromDto<T, Dto = <C as ToDto<T>>::Dto> {}

/// A serializer `S` of DTOs made a serializer of domain types by the converter `C`.
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{
///     ConversionError, Converted, Decode, DeserializeError, Encode, FromDto, ToDto, Utf8,
/// };
///
/// /// A domain type; the wire carries it as decimal text.
/// #[derive(Debug, PartialEq)]
/// struct Port(u16);
///
/// #[derive(Clone)]
/// struct PortText;
/// impl ToDto<Port> for PortText {
///     type Dto = String;
///     fn to_dto(&self, p: &Port) -> Result<String, ConversionError> {
///         Ok(p.0.to_string())
///     }
/// }
/// impl FromDto<Port> for PortText {
///     type Dto = String;
///     fn from_dto(&self, s: String) -> Result<Port, ConversionError> {
///         s.parse().map(Port).map_err(|e| ConversionError::with_source("not a port", e))
///     }
/// }
///
/// let ser = Converted::new(Utf8::new(), PortText);
/// let mut out = BytesMut::new();
/// ser.encode(&Port(8080), &mut out).unwrap();
/// assert_eq!(&out[..], b"8080");
/// assert_eq!(ser.decode(out).unwrap(), Port(8080));
/// let err = Decode::<Port>::decode(&ser, BytesMut::from(&b"99999"[..])).unwrap_err();
/// assert!(matches!(err, DeserializeError::Conversion(_)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converted<S, C> {
    serializer: S,
    converter: C,
}

impl<S, C> Converted<S, C> {
    /// Puts `converter` in front of `serializer`.
    pub const fn new(serializer: S, converter: C) -> Self {
        Self {
            serializer,
            converter,
        }
    }

    /// The DTO serializer.
    pub fn serializer(&self) -> &S {
        &self.serializer
    }

    /// The converter.
    pub fn converter(&self) -> &C {
        &self.converter
    }
}

impl<T, S, C> Encode<T> for Converted<S, C>
where
    C: ToDto<T>,
    S: Encode<C::Dto>,
{
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        let dto = self.converter.to_dto(item)?;
        self.serializer.encode(&dto, dst)
    }

    fn encode_shared(&self, item: &T) -> Option<bytes::Bytes> {
        let dto = self.converter.to_dto(item).ok()?;
        self.serializer.encode_shared(&dto)
    }
}

impl<T, S, C> Decode<T> for Converted<S, C>
where
    C: FromDto<T>,
    S: Decode<C::Dto>,
{
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let dto = self.serializer.decode(payload)?;
        Ok(self.converter.from_dto(dto)?)
    }
}

/// A converter made of one used on send (`Sent`, its [`ToDto`]) and one used on receive
/// (`Received`, its [`FromDto`]).
///
/// ```
/// use easynet_core::protocol::{ConversionError, Converted, FromDto, Stapled, ToDto, Utf8};
///
/// #[derive(Clone)]
/// struct Upper;
/// impl ToDto<String> for Upper {
///     type Dto = String;
///     fn to_dto(&self, s: &String) -> Result<String, ConversionError> {
///         Ok(s.to_uppercase())
///     }
/// }
/// #[derive(Clone)]
/// struct Trimmed;
/// impl FromDto<String> for Trimmed {
///     type Dto = String;
///     fn from_dto(&self, s: String) -> Result<String, ConversionError> {
///         Ok(s.trim().to_owned())
///     }
/// }
///
/// let ser = Converted::new(Utf8::new(), Stapled::new(Upper, Trimmed));
/// # use easynet_core::protocol::{Decode, Encode};
/// # let mut out = bytes::BytesMut::new();
/// # ser.encode(&"a".to_string(), &mut out).unwrap();
/// # assert_eq!(&out[..], b"A");
/// # assert_eq!(Decode::<String>::decode(&ser, bytes::BytesMut::from(&b" b "[..])).unwrap(), "b");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stapled<Sent, Received> {
    sent: Sent,
    received: Received,
}

impl<Sent, Received> Stapled<Sent, Received> {
    /// Joins the converter for sent values and the one for received values.
    pub const fn new(sent: Sent, received: Received) -> Self {
        Self { sent, received }
    }

    /// The converter used on send.
    pub fn sent(&self) -> &Sent {
        &self.sent
    }

    /// The converter used on receive.
    pub fn received(&self) -> &Received {
        &self.received
    }
}

impl<T, Sent, Received> ToDto<T> for Stapled<Sent, Received>
where
    Sent: ToDto<T>,
    Received: Clone + Send + Sync + 'static,
{
    type Dto = Sent::Dto;
    fn to_dto(&self, item: &T) -> Result<Self::Dto, ConversionError> {
        self.sent.to_dto(item)
    }
}

impl<T, Sent, Received> FromDto<T> for Stapled<Sent, Received>
where
    Sent: Clone + Send + Sync + 'static,
    Received: FromDto<T>,
{
    type Dto = Received::Dto;
    fn from_dto(&self, dto: Self::Dto) -> Result<T, ConversionError> {
        self.received.from_dto(dto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        Lines, ParseError, Stream, StreamClientProtocol, StreamProtocol, StreamServerProtocol, Utf8,
    };

    /// Requests are numbers on the wire, the domain is `Even`; responses are `Reply`.
    #[derive(Debug, PartialEq)]
    struct Even(u32);
    #[derive(Debug, PartialEq)]
    struct Reply(String);

    #[derive(Clone)]
    struct Conv;
    impl ToDto<Even> for Conv {
        type Dto = String;
        fn to_dto(&self, e: &Even) -> Result<String, ConversionError> {
            if e.0 % 2 == 1 {
                return Err(ConversionError::new("odd"));
            }
            Ok(e.0.to_string())
        }
    }
    impl FromDto<Even> for Conv {
        type Dto = String;
        fn from_dto(&self, s: String) -> Result<Even, ConversionError> {
            let n: u32 = s
                .parse()
                .map_err(|e| ConversionError::with_source("not a number", e))?;
            if n % 2 == 1 {
                return Err(ConversionError::new("odd"));
            }
            Ok(Even(n))
        }
    }
    impl ToDto<Reply> for Conv {
        type Dto = String;
        fn to_dto(&self, r: &Reply) -> Result<String, ConversionError> {
            Ok(format!("reply:{}", r.0))
        }
    }
    impl FromDto<Reply> for Conv {
        type Dto = String;
        fn from_dto(&self, s: String) -> Result<Reply, ConversionError> {
            s.strip_prefix("reply:")
                .map(|r| Reply(r.to_owned()))
                .ok_or_else(|| ConversionError::new("no reply prefix"))
        }
    }

    fn assert_converter<T, C: Converter<T>>(_: &C) {}

    #[test]
    fn one_protocol_value_serves_both_sides_with_domain_types() {
        assert_converter::<Even, _>(&Conv);
        let p: Stream<_, _, Even, Reply> =
            Stream::new(Lines::new(), Converted::new(Utf8::new(), Conv));
        let mut wire = BytesMut::new();
        p.encode_request(&Even(4), &mut wire).unwrap();
        p.encode_response(&Reply("ok".into()), &mut wire).unwrap();
        assert_eq!(&wire[..], b"4\nreply:ok\n");

        let mut state = p.new_decoder();
        let mut src = BytesMut::from(&b"3\nx\n8\n"[..]);
        let errs: Vec<_> = (0..2)
            .map(|_| p.decode_request(&mut state, &mut src).unwrap_err())
            .collect();
        for e in &errs {
            assert!(
                matches!(e, ParseError::Deserialize(DeserializeError::Conversion(_))),
                "{e}"
            );
        }
        assert_eq!(errs[0].to_string(), "cannot convert the received DTO: odd");
        assert!(
            errs[1]
                .to_string()
                .ends_with("not a number: invalid digit found in string")
        );
        // The connection goes on: the next frame decodes.
        assert_eq!(
            p.decode_request(&mut state, &mut src).unwrap(),
            Some(Even(8))
        );
        let mut st = p.new_decoder();
        let mut resp = BytesMut::from(&b"reply:hi\n"[..]);
        assert_eq!(
            p.decode_response(&mut st, &mut resp).unwrap(),
            Some(Reply("hi".into()))
        );
    }

    #[test]
    fn to_dto_failure_is_a_serialize_error_and_writes_nothing() {
        let p: Stream<_, _, Even, Reply> =
            Stream::new(Lines::new(), Converted::new(Utf8::new(), Conv));
        let mut wire = BytesMut::from(&b"kept"[..]);
        let err = p.encode_request(&Even(3), &mut wire).unwrap_err();
        assert!(matches!(err, SerializeError::Conversion(_)));
        assert_eq!(&wire[..], b"kept");
    }

    #[test]
    fn stapled_uses_each_side_for_its_direction() {
        #[derive(Clone)]
        struct Never;
        impl FromDto<Even> for Never {
            type Dto = String;
            fn from_dto(&self, _: String) -> Result<Even, ConversionError> {
                Err(ConversionError::new("never"))
            }
        }
        let ser = Converted::new(Utf8::new(), Stapled::new(Conv, Never));
        let mut out = BytesMut::new();
        ser.encode(&Even(2), &mut out).unwrap();
        assert_eq!(&out[..], b"2");
        let err = Decode::<Even>::decode(&ser, out).unwrap_err();
        assert_eq!(err.to_string(), "cannot convert the received DTO: never");
    }
}
