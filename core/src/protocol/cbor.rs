//! CBOR serializer over serde (feature `cbor`, the `ciborium` crate).

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use super::{Decode, DeserializeError, Encode, SerializeError};

/// CBOR (RFC 8949): any `T: Serialize` out, any `T: DeserializeOwned` in.
///
/// A payload is exactly one CBOR item: bytes after it are a [`DeserializeError::Cbor`], as
/// for JSON. CBOR is binary, so on a stream use a length prefix (see
/// [`Stream::cbor`](super::Stream::cbor)), not lines.
///
/// ```
/// use bytes::BytesMut;
/// use easynet_core::protocol::{Cbor, Decode, DeserializeError, Encode};
///
/// let mut out = BytesMut::new();
/// Cbor.encode(&(1u8, "two".to_string()), &mut out).unwrap();
/// assert_eq!(&out[..], b"\x82\x01\x63two");
/// let back: (u8, String) = Cbor.decode(out).unwrap();
/// assert_eq!(back, (1, "two".to_string()));
///
/// let err = Decode::<(u8, String)>::decode(&Cbor, BytesMut::from(&b"\x82\x01"[..]));
/// assert!(matches!(err, Err(DeserializeError::Cbor(_))));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cbor;

impl<T: Serialize> Encode<T> for Cbor {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        ciborium::into_writer(item, dst.writer())?;
        Ok(())
    }
}

impl<T: DeserializeOwned> Decode<T> for Cbor {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let mut rest = &payload[..];
        let item = ciborium::from_reader(&mut rest)?;
        if !rest.is_empty() {
            let offset = payload.len() - rest.len();
            return Err(DeserializeError::Cbor(ciborium::de::Error::Semantic(
                Some(offset),
                format!("{} trailing bytes after the CBOR item", rest.len()),
            )));
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Msg {
        id: u32,
        name: String,
        tags: BTreeMap<String, Vec<u8>>,
    }

    fn msg() -> Msg {
        Msg {
            id: 7,
            name: "é".into(),
            tags: [("a".to_string(), vec![1, 2])].into(),
        }
    }

    #[test]
    fn round_trip() {
        let mut out = BytesMut::new();
        Cbor.encode(&msg(), &mut out).unwrap();
        assert_eq!(Decode::<Msg>::decode(&Cbor, out).unwrap(), msg());
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        let mut good = BytesMut::new();
        Cbor.encode(&msg(), &mut good).unwrap();
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"\x00");
        let truncated = good.clone().split_to(good.len() - 1);
        // A byte string that claims 2^40 bytes must fail, not allocate them.
        let huge = BytesMut::from(&b"\x5b\x00\x00\x01\x00\x00\x00\x00\x00ab"[..]);
        for bad in [trailing, truncated, huge, BytesMut::from(&b"\xff"[..])] {
            let err = Decode::<Msg>::decode(&Cbor, bad.clone());
            assert!(matches!(err, Err(DeserializeError::Cbor(_))), "{bad:?}");
        }
        // Well-formed CBOR of the wrong shape.
        let err = Decode::<Msg>::decode(&Cbor, BytesMut::from(&b"\x01"[..]));
        assert!(matches!(err, Err(DeserializeError::Cbor(_))));
    }
}
