//! Datagram decode (UTF-8 lines, JSON, raw): any datagram is a value or a typed error.
#![no_main]

use bytes::BytesMut;
use easynet_core::protocol::{Datagram, DatagramServerProtocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = Datagram::lines();
    if let Ok(s) = lines.decode_request(BytesMut::from(data)) {
        assert!(std::str::from_utf8(data).is_ok());
        assert!(s.len() <= data.len());
    }
    let json = Datagram::<_, serde_json::Value, serde_json::Value>::json();
    let _ = json.decode_request(BytesMut::from(data));
    let raw = Datagram::raw();
    assert_eq!(&raw.decode_request(BytesMut::from(data)).unwrap()[..], data);
});
