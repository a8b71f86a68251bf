//! Property tests of the framings: any chunking of a byte stream yields the same frames,
//! over-limit frames give exactly one typed error each, and buffers stay bounded.

use bytes::{BufMut, BytesMut};
use easynet_core::protocol::{
    Framing, LengthPrefixed, Lines, ParseError, PrefixWidth, Separator, Stream,
    StreamClientProtocol, StreamProtocol, StreamServerProtocol,
};
use proptest::prelude::*;

mod support;
use support::chunks::chunks;

/// Feeds chunks one by one, decoding until `None` after each; checks `bound` after every
/// `None`. Returns the frames (or error kinds) in order.
fn feed<F: Framing>(framing: &F, parts: &[Vec<u8>], bound: usize) -> Vec<Result<Vec<u8>, usize>> {
    let mut state = F::State::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match framing.decode(&mut state, &mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => {
                    assert!(
                        buf.len() <= bound,
                        "buffer holds {} > {bound} bytes",
                        buf.len()
                    );
                    break;
                }
                Err(ParseError::LineTooLong { got, .. }) => out.push(Err(got.min(1))),
                Err(ParseError::FrameTooLarge { got, .. }) => out.push(Err(got)),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    out
}

fn line_bytes(sep: Separator) -> impl Strategy<Value = u8> {
    match sep {
        // In CRLF mode a lone LF is data.
        Separator::CrLf => prop_oneof![Just(b'a'), Just(b'\n'), Just(0xff), Just(b' ')].boxed(),
        _ => prop_oneof![Just(b'a'), Just(b'z'), Just(0xff), Just(b' ')].boxed(),
    }
}

fn separator() -> impl Strategy<Value = Separator> {
    prop_oneof![
        Just(Separator::Lf),
        Just(Separator::Cr),
        Just(Separator::CrLf)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lines_any_chunking_same_frames_and_one_error_per_long_line(
        (sep, lines) in separator().prop_flat_map(|sep| {
            (Just(sep), proptest::collection::vec(proptest::collection::vec(line_bytes(sep), 0..40), 0..12))
        }),
        limit in 1usize..24,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let framing = Lines::new().separator(sep).limit(limit).unwrap();
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for line in &lines {
            stream.extend_from_slice(line);
            stream.extend_from_slice(sep.as_bytes());
            expected.push(if line.len() <= limit { Ok(line.clone()) } else { Err(1) });
        }
        let got = feed(&framing, &chunks(&stream, &cuts), limit + 1);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn length_prefixed_any_chunking_same_frames_and_oversize_skipped(
        wide in any::<bool>(),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..10),
        max in 1usize..40,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let width = if wide { PrefixWidth::U32 } else { PrefixWidth::U16 };
        let framing = LengthPrefixed::new(width, max).unwrap();
        let mut stream = BytesMut::new();
        let mut expected = Vec::new();
        for f in &frames {
            if wide { stream.put_u32(f.len() as u32) } else { stream.put_u16(f.len() as u16) }
            stream.extend_from_slice(f);
            expected.push(if f.len() <= max { Ok(f.clone()) } else { Err(f.len()) });
        }
        let got = feed(&framing, &chunks(&stream, &cuts), width.bytes() + max);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn length_prefixed_encode_decode_round_trip(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let proto = Stream::length_prefixed(PrefixWidth::U16, 256).unwrap();
        let mut stream = BytesMut::new();
        let mut expected = Vec::new();
        for f in &frames {
            let item = bytes::Bytes::from(f.clone());
            let before = stream.len();
            match proto.encode_request(&item, &mut stream) {
                Ok(()) => expected.push(f.clone()),
                Err(_) => prop_assert_eq!(stream.len(), before, "a failed encode leaves nothing"),
            }
        }
        let mut state = proto.new_decoder();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in chunks(&stream, &cuts) {
            buf.extend_from_slice(&part);
            while let Some(item) = proto.decode_request(&mut state, &mut buf).unwrap() {
                got.push(item.to_vec());
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_lines_round_trip_under_any_chunking(
        values in proptest::collection::vec((any::<i64>(), "[a-z\\n\"\\\\]{0,12}"), 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        type V = serde_json::Value;
        let proto = Stream::<_, _, V, V>::json_lines();
        let values: Vec<V> = values.into_iter().map(|(n, s)| serde_json::json!({"n": n, "s": s})).collect();
        let mut stream = BytesMut::new();
        for v in &values {
            proto.encode_response(v, &mut stream).unwrap();
        }
        let mut state = proto.new_decoder();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in chunks(&stream, &cuts) {
            buf.extend_from_slice(&part);
            while let Some(v) = proto.decode_response(&mut state, &mut buf).unwrap() {
                got.push(v);
            }
        }
        prop_assert_eq!(got, values);
    }
}
