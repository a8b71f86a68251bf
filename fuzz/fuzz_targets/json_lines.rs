//! JSON lines: arbitrary bytes decode to values or typed errors, never a panic; after any
//! error the next valid document still decodes.
#![no_main]

use bytes::BytesMut;
use easynet_core::protocol::{Stream, StreamProtocol, StreamServerProtocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let protocol = Stream::<_, _, serde_json::Value, serde_json::Value>::json_lines();
    let mut state = protocol.new_decoder();
    let mut buf = BytesMut::from(data);
    buf.extend_from_slice(b"\n{\"ok\":1}\n");
    let mut last = None;
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 1_000_000, "decoder does not progress");
        match protocol.decode_request(&mut state, &mut buf) {
            Ok(Some(v)) => last = Some(v),
            Ok(None) => break,
            Err(_) => last = None,
        }
    }
    assert_eq!(
        last,
        Some(serde_json::json!({"ok": 1})),
        "valid document after garbage"
    );
});
