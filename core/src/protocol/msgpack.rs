//! MessagePack serializer over serde (feature `msgpack`, the `rmp-serde` crate).

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use super::{Decode, DeserializeError, Encode, SerializeError};

/// MessagePack: any `T: Serialize` out, any `T: DeserializeOwned` in.
///
/// [`MessagePack::new`] writes structs as maps keyed by field name, which is what other
/// languages' MessagePack libraries (EasyNetwork's included) read as a dict;
/// [`MessagePack::compact`] writes them as arrays, smaller but positional. Decoding accepts
/// both. A payload is exactly one value: bytes after it are a
/// [`DeserializeError::MessagePack`].
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{Decode, DeserializeError, Encode, MessagePack};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Point { x: i8, y: i8 }
///
/// let mut named = BytesMut::new();
/// MessagePack::new().encode(&Point { x: 1, y: 2 }, &mut named).unwrap();
/// assert_eq!(&named[..], b"\x82\xa1x\x01\xa1y\x02");
/// let mut compact = BytesMut::new();
/// MessagePack::compact().encode(&Point { x: 1, y: 2 }, &mut compact).unwrap();
/// assert_eq!(&compact[..], b"\x92\x01\x02");
///
/// let p: Point = MessagePack::new().decode(compact).unwrap();
/// assert_eq!(p, Point { x: 1, y: 2 });
/// let err = Decode::<Point>::decode(&MessagePack::new(), BytesMut::from(&b"\x92\x01"[..]));
/// assert!(matches!(err, Err(DeserializeError::MessagePack(_))));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagePack {
    compact: bool,
}

impl MessagePack {
    /// Structs as maps keyed by field name.
    pub const fn new() -> Self {
        Self { compact: false }
    }

    /// Structs as arrays of their fields, in order.
    pub const fn compact() -> Self {
        Self { compact: true }
    }
}

impl<T: Serialize> Encode<T> for MessagePack {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        let mut w = dst.writer();
        if self.compact {
            rmp_serde::encode::write(&mut w, item)?;
        } else {
            rmp_serde::encode::write_named(&mut w, item)?;
        }
        Ok(())
    }
}

impl<T: DeserializeOwned> Decode<T> for MessagePack {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(&payload[..]));
        let item = T::deserialize(&mut de)?;
        let rest = payload.len() - de.position() as usize;
        if rest != 0 {
            return Err(DeserializeError::MessagePack(
                rmp_serde::decode::Error::Syntax(format!(
                    "{rest} trailing bytes after the MessagePack value"
                )),
            ));
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Msg {
        id: u32,
        name: String,
        data: Vec<Option<i64>>,
    }

    fn msg() -> Msg {
        Msg {
            id: 7,
            name: "é".into(),
            data: vec![Some(-1), None],
        }
    }

    #[test]
    fn both_forms_round_trip() {
        for mp in [MessagePack::new(), MessagePack::compact()] {
            let mut out = BytesMut::new();
            mp.encode(&msg(), &mut out).unwrap();
            assert_eq!(Decode::<Msg>::decode(&mp, out).unwrap(), msg());
        }
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        let mut good = BytesMut::new();
        MessagePack::new().encode(&msg(), &mut good).unwrap();
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"\xc0");
        let truncated = good.clone().split_to(good.len() - 1);
        // An array that claims 2^32-1 elements must fail, not allocate them.
        let huge = BytesMut::from(&b"\xdd\xff\xff\xff\xff\x01"[..]);
        for bad in [
            trailing,
            truncated,
            huge,
            BytesMut::from(&b"\xc1"[..]),
            BytesMut::new(),
        ] {
            let err = Decode::<Msg>::decode(&MessagePack::new(), bad.clone());
            assert!(
                matches!(err, Err(DeserializeError::MessagePack(_))),
                "{bad:?}"
            );
        }
    }
}
