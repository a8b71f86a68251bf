//! Owned sends (`cx.send(line)`) put the same bytes on the wire as borrowed ones
//! (`cx.send(&line)`), for every built-in protocol, whatever the message (separators in it or
//! at its end, empty, large, with or without spare capacity), limits included; and a
//! connection drained in any chunking writes the same stream either way.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, SendError};
use easynet_core::protocol::{
    Datagram, DatagramServerProtocol, LengthPrefixed, Lines, OwnedFrame, PrefixWidth, RawBytes,
    Separator, SerializeError, Stream, StreamClientProtocol, StreamServerProtocol, Utf8,
};
use easynet_core::stream::{Connection, ServerRole, StreamConfig};
use proptest::prelude::*;

/// What the owned path puts on the wire: `dst`'s new bytes, then the body, then the tail.
fn owned_bytes<P: StreamServerProtocol>(
    p: &P,
    item: P::Response,
    prefix: &[u8],
) -> Result<Vec<u8>, SerializeError> {
    let mut dst = BytesMut::from(prefix);
    match p.encode_response_owned(item, &mut dst) {
        Ok(frame) => {
            let mut out = dst[prefix.len()..].to_vec();
            if let Some(OwnedFrame { body, tail, .. }) = frame {
                out.extend_from_slice(body.as_slice());
                out.extend_from_slice(tail);
            }
            Ok(out)
        }
        Err(e) => {
            assert_eq!(&dst[..], prefix, "an error leaves dst as it was");
            Err(e)
        }
    }
}

fn borrowed_bytes<P: StreamServerProtocol>(
    p: &P,
    item: &P::Response,
    prefix: &[u8],
) -> Result<Vec<u8>, SerializeError> {
    let mut dst = BytesMut::from(prefix);
    match p.encode_response(item, &mut dst) {
        Ok(()) => Ok(dst[prefix.len()..].to_vec()),
        Err(e) => {
            assert_eq!(&dst[..], prefix);
            Err(e)
        }
    }
}

fn same<P: StreamServerProtocol>(p: &P, item: P::Response, prefix: &[u8])
where
    P::Response: Clone,
{
    let borrowed = borrowed_bytes(p, &item, prefix).map_err(|e| e.to_string());
    let owned = owned_bytes(p, item, prefix).map_err(|e| e.to_string());
    assert_eq!(owned, borrowed);
}

/// A `String` whose spare capacity is `spare` bytes (0: none, so the separator is a tail).
fn with_spare(text: String, spare: usize) -> String {
    let mut s = String::with_capacity(text.len() + spare);
    s.push_str(&text);
    s
}

fn separator() -> impl Strategy<Value = Separator> {
    prop_oneof![
        Just(Separator::Lf),
        Just(Separator::Cr),
        Just(Separator::CrLf)
    ]
}

/// Text made of letters, CR and LF, short or large (past the 4 KiB copy threshold).
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z]{0,8}",
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
    ];
    (prop::collection::vec(piece, 0..12), 0usize..3).prop_map(|(parts, big)| {
        let mut s = "x".repeat(big * 3000);
        for p in parts {
            s.push_str(&p);
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lines_owned_and_borrowed_write_the_same_bytes(
        sep in separator(), limit in 1usize..9000, msg in text(), spare in 0usize..4,
        prefix in "[a-z\n]{0,3}",
    ) {
        let p: Stream<Lines, Utf8, String, String> =
            Stream::new(Lines::new().separator(sep).limit(limit).unwrap(), Utf8::new());
        same(&p, with_spare(msg, spare), prefix.as_bytes());
    }

    #[test]
    fn length_prefixed_and_raw_owned_and_borrowed_write_the_same_bytes(
        len in 0usize..9000, max in 1usize..9000, wide in any::<bool>(),
    ) {
        let width = if wide { PrefixWidth::U32 } else { PrefixWidth::U16 };
        let payload = Bytes::from(vec![7u8; len]);
        let framed = Stream::new(LengthPrefixed::new(width, max).unwrap(), RawBytes);
        let framed: Stream<_, _, Bytes, Bytes> = framed;
        same(&framed, payload.clone(), b"p");
        same(&Stream::raw(), payload.clone(), b"p");
        // Vec<u8> messages (their own allocation) too.
        let vecs: Stream<_, _, Vec<u8>, Vec<u8>> =
            Stream::new(LengthPrefixed::new(width, max).unwrap(), RawBytes);
        same(&vecs, payload.to_vec(), b"");
    }

    /// Through a connection: any mix of small and large messages, owned or borrowed,
    /// drained by a socket that takes any number of bytes per (vectored) write, gives the
    /// same byte stream.
    #[test]
    fn a_connection_writes_the_same_stream_either_way(
        msgs in prop::collection::vec((text(), 0usize..3, any::<bool>()), 1..12),
        takes in prop::collection::vec(1usize..5000, 1..20),
    ) {
        let mut borrowed = conn();
        let mut owned = conn();
        for (m, spare, own) in &msgs {
            borrowed.send(m).unwrap();
            let m = with_spare(m.clone(), *spare);
            if *own { owned.send_owned(m).unwrap() } else { owned.send(&m).unwrap() }
        }
        let a = drain(&mut borrowed, &takes);
        let b = drain(&mut owned, &takes);
        prop_assert_eq!(&a, &b);
        let expected: Vec<u8> = msgs.iter().flat_map(|(m, _, _)| {
            let mut v = m.clone().into_bytes();
            if !v.ends_with(b"\n") { v.push(b'\n'); }
            v
        }).collect();
        prop_assert_eq!(a, expected);
        prop_assert_eq!(owned.queued(), 0);
    }

    #[test]
    fn datagrams_owned_and_borrowed_are_the_same(len in 0usize..70_000, text in "[a-z\n]{0,20}") {
        let raw = Datagram::raw();
        let payload = Bytes::from(vec![1u8; len]);
        let mut dst = BytesMut::new();
        let borrowed = raw.encode_response(&payload, &mut dst).map(|()| dst.to_vec());
        let mut dst = BytesMut::new();
        let owned = raw.encode_response_owned(payload, &mut dst).map(|d| d.map_or(dst.to_vec(), |b| b.to_vec()));
        prop_assert_eq!(owned.map_err(|e| e.to_string()), borrowed.map_err(|e| e.to_string()));

        let lines = Datagram::lines();
        let mut dst = BytesMut::new();
        lines.encode_response(&text, &mut dst).unwrap();
        let mut dst2 = BytesMut::new();
        let owned = lines.encode_response_owned(text, &mut dst2).unwrap();
        prop_assert_eq!(owned.map_or(dst2.to_vec(), |b| b.to_vec()), dst.to_vec());
    }
}

fn conn() -> Connection<Stream<Lines, Utf8, String, String>, ServerRole> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
    Connection::new(
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        ConnInfo::new(ConnId(1), addr, addr),
    )
}

/// A socket that takes at most the next of `takes` bytes per write (vectored or not).
struct Socket<'a> {
    out: Vec<u8>,
    takes: std::iter::Cycle<std::slice::Iter<'a, usize>>,
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut budget = *self.takes.next().unwrap();
        let mut n = 0;
        for b in bufs {
            let k = budget.min(b.len());
            self.out.extend_from_slice(&b[..k]);
            n += k;
            budget -= k;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn drain<P: StreamServerProtocol>(c: &mut Connection<P, ServerRole>, takes: &[usize]) -> Vec<u8> {
    let mut socket = Socket {
        out: Vec::new(),
        takes: takes.iter().cycle(),
    };
    while c.wants_write() {
        c.write_to(&mut socket).unwrap();
    }
    socket.out
}

#[test]
fn a_large_owned_line_is_queued_without_a_copy() {
    let mut c = conn();
    let line = with_spare("y".repeat(64 * 1024), 1);
    let at = line.as_ptr();
    c.send_owned(line).unwrap();
    // The line's own buffer, separator appended in place, is what goes to the socket.
    let queued = c.transmit();
    assert_eq!(queued.as_ptr(), at);
    assert_eq!(queued.len(), 64 * 1024 + 1);
    assert_eq!(queued.last(), Some(&b'\n'));
}

#[test]
fn a_large_owned_line_without_spare_capacity_gets_its_separator_as_a_tail() {
    let mut c = conn();
    let line = "z".repeat(10_000);
    assert_eq!(line.capacity(), line.len());
    c.send_owned(line).unwrap();
    c.send_owned("small".to_owned()).unwrap();
    // Both buffers in one vectored write.
    let mut expected = "z".repeat(10_000).into_bytes();
    expected.extend_from_slice(b"\nsmall\n");
    assert_eq!(drain(&mut c, &[usize::MAX]), expected);
}

#[test]
fn owned_sends_are_refused_once_closing() {
    let mut c = conn();
    c.close(Instant::now());
    assert!(matches!(
        c.send_owned("late".to_owned()),
        Err(SendError::Closed)
    ));
}

#[test]
fn an_owned_frame_over_the_limit_is_an_error_and_queues_nothing() {
    let p: Stream<_, _, Bytes, Bytes> = Stream::length_prefixed(PrefixWidth::U16, 10).unwrap();
    let mut dst = BytesMut::from(&b"before"[..]);
    let err = p
        .encode_response_owned(Bytes::from_static(b"eleven bytes"), &mut dst)
        .unwrap_err();
    assert!(matches!(
        err,
        SerializeError::TooLarge { limit: 10, got: 12 }
    ));
    assert_eq!(&dst[..], b"before");
    // The client side frames requests the same way: a large payload follows its prefix as
    // it is; a small one is copied after it.
    let p: Stream<_, _, Bytes, Bytes> = Stream::length_prefixed(PrefixWidth::U16, 10_000).unwrap();
    let large = Bytes::from(vec![3u8; 5000]);
    let mut dst = BytesMut::new();
    let frame = p
        .encode_request_owned(large.clone(), &mut dst)
        .unwrap()
        .unwrap();
    assert_eq!(&dst[..], b"\x13\x88");
    assert_eq!(frame.body.as_slice().as_ptr(), large.as_ptr());
    let mut dst = BytesMut::new();
    let small = p.encode_request_owned(Bytes::from_static(b"ok"), &mut dst);
    assert_eq!((small.unwrap(), &dst[..]), (None, &b"\x00\x02ok"[..]));
}

#[cfg(feature = "json")]
#[test]
fn protocols_without_an_owned_path_encode_owned_messages_as_borrowed_ones() {
    let p: Stream<_, _, Vec<u32>, Vec<u32>> = Stream::json_lines();
    same(&p, vec![1, 2, 3], b"x");
    let d: Datagram<_, Vec<u32>, Vec<u32>> = Datagram::json();
    let mut a = BytesMut::new();
    d.encode_response(&vec![4], &mut a).unwrap();
    let mut b = BytesMut::new();
    assert_eq!(d.encode_response_owned(vec![4], &mut b).unwrap(), None);
    assert_eq!(a, b);
}

/// Handlers sending owned responses, through the simulator: the same bytes reach the
/// client, and a serializer that panics on the owned path ends only its connection (or
/// its datagram routine).
#[cfg(feature = "sim")]
mod through_the_simulator {
    use bytes::BytesMut;
    use easynet_core::handler::{
        DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
        StreamHandler,
    };
    use easynet_core::protocol::{
        Datagram, Decode, DeserializeError, Encode, Lines, OwnedPayload, SerializeError, Stream,
        Utf8,
    };
    use easynet_core::sim::{ClientState, DatagramSim, StreamSim};
    use easynet_core::stream::CloseHow;

    /// Echoes each line back, giving it away.
    struct OwnedEcho;

    impl StreamHandler for OwnedEcho {
        type Request = String;
        type Response = String;
        fn handle(
            &mut self,
            cx: &mut StreamContext<'_, String>,
            r: Received<String>,
        ) -> HandlerResult {
            if let Received::Request(line) = r {
                cx.send(line)?;
            }
            Ok(Next::recv())
        }
    }

    impl DatagramHandler for OwnedEcho {
        type Request = String;
        type Response = String;
        fn handle(
            &mut self,
            cx: &mut DatagramContext<'_, String>,
            r: Received<String>,
        ) -> HandlerResult {
            if let Received::Request(line) = r {
                cx.send(line)?;
            }
            Ok(Next::recv())
        }
    }

    #[test]
    fn owned_answers_reach_the_client_whole_and_in_order() {
        let mut sim = StreamSim::new(Stream::lines(), |_| OwnedEcho);
        let c = sim.connect();
        let big = "b".repeat(60_000);
        let mut sent = format!("one\n{big}\ntwo\n").into_bytes();
        sim.send_bytes(c, &sent);
        sim.send_bytes(c, b"three\n");
        sent.extend_from_slice(b"three\n");
        assert_eq!(sim.received_bytes(c), &sent[..]);
        assert_eq!(sim.state(c), ClientState::Open);
    }

    /// UTF-8 lines whose owned path panics on "boom".
    #[derive(Clone)]
    struct Boom;

    impl Encode<String> for Boom {
        fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
            Utf8::new().encode(item, dst)
        }
        fn encode_owned(
            &self,
            item: String,
            dst: &mut BytesMut,
        ) -> Result<Option<OwnedPayload>, SerializeError> {
            if item == "boom" {
                panic!("owned encode panicked on purpose");
            }
            Utf8::new().encode_owned(item, dst)
        }
    }

    impl Decode<String> for Boom {
        fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
            Utf8::new().decode(payload)
        }
    }

    #[test]
    fn a_panic_in_an_owned_encode_ends_only_its_connection() {
        let protocol: Stream<Lines, Boom, String, String> = Stream::new(Lines::new(), Boom);
        let mut sim = StreamSim::new(protocol, |_| OwnedEcho);
        let (bad, good) = (sim.connect(), sim.connect());
        sim.send_bytes(bad, b"fine\nboom\n");
        sim.send_bytes(good, b"ok\n");
        assert_eq!(sim.server_closed(bad), Some(CloseHow::Abort));
        assert_eq!(sim.received_bytes(bad), b"fine\n");
        assert_eq!(sim.received_bytes(good), b"ok\n");
        assert_eq!(sim.state(good), ClientState::Open);
        assert!(sim.is_serving());
    }

    #[test]
    fn a_panic_in_an_owned_datagram_encode_ends_only_that_routine() {
        let protocol: Datagram<Boom, String, String> = Datagram::new(Boom);
        let mut sim = DatagramSim::new(protocol, |_| OwnedEcho);
        let (a, b) = (sim.peer(), sim.peer());
        sim.send_bytes(a, b"boom");
        sim.send_bytes(b, b"hello");
        sim.send_bytes(a, b"again");
        assert_eq!(sim.replies(b), ["hello"]);
        assert_eq!(sim.replies(a), ["again"]);
    }
}
