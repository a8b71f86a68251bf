//! JSON serializer over serde (feature `json`).

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use super::{Decode, DeserializeError, Encode, SerializeError};

/// Compact JSON: any `T: Serialize` out, any `T: DeserializeOwned` in.
///
/// Compact output never holds a raw newline, so it is safe inside [`Lines`](super::Lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl<T: Serialize> Encode<T> for Json {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        serde_json::to_writer(dst.writer(), item)?;
        Ok(())
    }
}

impl<T: DeserializeOwned> Decode<T> for Json {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        Ok(serde_json::from_slice(&payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_typed_error() {
        let mut out = BytesMut::new();
        Json.encode(&serde_json::json!({"a": [1, 2]}), &mut out)
            .unwrap();
        assert_eq!(&out[..], br#"{"a":[1,2]}"#);
        let v: serde_json::Value = Json.decode(out).unwrap();
        assert_eq!(v["a"][1], 2);
        let err = <Json as Decode<serde_json::Value>>::decode(&Json, BytesMut::from(&b"{"[..]));
        assert!(matches!(err, Err(DeserializeError::Json(_))));
    }
}
