//! Property tests of the serializer wrappers and serde formats: stacked wrappers round-trip
//! any payload, any chunking through a framing yields the same messages, and a corrupt or
//! over-limit frame gives exactly one typed parse error while the frames around it decode.
#![cfg(all(
    feature = "base64",
    feature = "zlib",
    feature = "zstd",
    feature = "cbor",
    feature = "msgpack",
    feature = "json",
    feature = "converter"
))]

use bytes::{Bytes, BytesMut};
use easynet_core::protocol::{
    Base64, Cbor, ConversionError, Converted, Decode, DeserializeError, Encode, FromDto, Json,
    LengthPrefixed, Lines, MessagePack, ParseError, PrefixWidth, RawBytes, Stream,
    StreamClientProtocol, StreamServerProtocol, ToDto, Zlib, Zstd,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

mod support;
use support::chunks::chunks;

fn round_trip<S: Encode<Bytes> + Decode<Bytes>>(s: &S, data: &[u8]) -> Bytes {
    let mut out = BytesMut::from(&b"keep"[..]);
    s.encode(&Bytes::copy_from_slice(data), &mut out).unwrap();
    assert_eq!(
        &out[..4],
        b"keep",
        "encode appends, never touches what is there"
    );
    s.decode(out.split_off(4)).unwrap()
}

/// Decodes a whole wire fed in `parts`; each message or the kind of its parse error.
fn feed<P: StreamServerProtocol>(p: &P, parts: &[Vec<u8>]) -> Vec<Result<P::Request, String>> {
    let mut state = p.new_decoder();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match p.decode_request(&mut state, &mut buf) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(ParseError::Deserialize(e)) => out.push(Err(kind(&e).to_owned())),
                Err(e) => panic!("unexpected framing error {e}"),
            }
        }
    }
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    out
}

fn kind(e: &DeserializeError) -> &'static str {
    match e {
        DeserializeError::Base64(_) => "base64",
        #[cfg(feature = "base64-checksum")]
        DeserializeError::Checksum => "checksum",
        DeserializeError::Decompress(_) => "decompress",
        DeserializeError::TooLarge { .. } => "too large",
        DeserializeError::Cbor(_) => "cbor",
        DeserializeError::MessagePack(_) => "msgpack",
        DeserializeError::Json(_) => "json",
        DeserializeError::Conversion(_) => "conversion",
        _ => "other",
    }
}

/// Payloads that compress well and badly.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (any::<u8>(), 0usize..3000).prop_map(|(b, n)| vec![b; n]),
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'\n')], 0..2000),
    ]
}

/// A message on the wire: a good one, a corrupt frame, or a bomb past the limit.
#[derive(Debug, Clone)]
enum Frame {
    Good(Vec<u8>),
    Corrupt(Vec<u8>),
    Bomb,
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => payload().prop_map(Frame::Good),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Frame::Corrupt),
        1 => Just(Frame::Bomb),
    ]
}

const LIMIT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<(String, Option<i32>)>,
    blob: Vec<u8>,
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        ".{0,20}",
        proptest::collection::vec((".{0,8}", any::<Option<i32>>()), 0..5),
        proptest::collection::vec(any::<u8>(), 0..50),
    )
        .prop_map(|(id, name, tags, blob)| Record {
            id,
            name,
            tags,
            blob,
        })
}

/// The domain side of a converter test: a record whose name must not be empty.
#[derive(Debug, Clone, PartialEq)]
struct Named(Record);

#[derive(Debug, Clone)]
struct NonEmptyName;

impl ToDto<Named> for NonEmptyName {
    type Dto = Record;
    fn to_dto(&self, item: &Named) -> Result<Record, ConversionError> {
        Ok(item.0.clone())
    }
}

impl FromDto<Named> for NonEmptyName {
    type Dto = Record;
    fn from_dto(&self, dto: Record) -> Result<Named, ConversionError> {
        if dto.name.is_empty() {
            return Err(ConversionError::new("empty name"));
        }
        Ok(Named(dto))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn stacked_wrappers_round_trip_any_payload(data in payload()) {
        prop_assert_eq!(&round_trip(&Base64::new(Zlib::new(RawBytes)), &data)[..], &data[..]);
        prop_assert_eq!(&round_trip(&Zstd::new(Base64::url_safe(RawBytes)), &data)[..], &data[..]);
        prop_assert_eq!(&round_trip(&Zlib::new(Zstd::new(RawBytes)), &data)[..], &data[..]);
        let deep = Base64::url_safe(Zstd::new(Zlib::new(Base64::new(RawBytes))).with_level(1).unwrap());
        prop_assert_eq!(&round_trip(&deep, &data)[..], &data[..]);
        #[cfg(feature = "base64-checksum")]
        {
            let signed = Base64::new(Zstd::new(RawBytes)).with_hmac_key(&[9; 32]).unwrap();
            prop_assert_eq!(&round_trip(&signed, &data)[..], &data[..]);
            let summed = Zlib::new(Base64::url_safe(RawBytes).with_checksum());
            prop_assert_eq!(&round_trip(&summed, &data)[..], &data[..]);
        }
    }

    /// Length-prefixed zlib-of-base64 and base64-of-zstd lines: whatever the reads, the same
    /// messages, one typed error per corrupt frame or bomb, the rest unharmed.
    #[test]
    fn any_chunking_through_a_framing_yields_the_same_messages(
        frames in proptest::collection::vec(frame(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let framed: Stream<_, _, Bytes, Bytes> = Stream::new(
            LengthPrefixed::new(PrefixWidth::U32, 1 << 20).unwrap(),
            Zlib::new(Base64::new(RawBytes)).with_limit(LIMIT * 2).unwrap(),
        );
        let lines: Stream<_, _, Bytes, Bytes> = Stream::new(
            Lines::new(),
            Base64::new(Zstd::new(RawBytes).with_limit(LIMIT).unwrap()),
        );
        // The peer has no limit: it is the one sending bombs.
        let peer_framed: Stream<_, _, Bytes, Bytes> = Stream::new(
            LengthPrefixed::new(PrefixWidth::U32, 1 << 20).unwrap(),
            Zlib::new(Base64::new(RawBytes)).with_limit(1 << 30).unwrap(),
        );
        let peer_lines: Stream<_, _, Bytes, Bytes> = Stream::new(
            Lines::new(),
            Base64::new(Zstd::new(RawBytes).with_limit(1 << 30).unwrap()),
        );
        let bomb = Bytes::from(vec![b'x'; 128 << 10]);
        let (mut bomb_f, mut bomb_l) = (BytesMut::new(), BytesMut::new());
        if frames.iter().any(|f| matches!(f, Frame::Bomb)) {
            peer_framed.encode_request(&bomb, &mut bomb_f).unwrap();
            peer_lines.encode_request(&bomb, &mut bomb_l).unwrap();
        }

        let (mut wire_f, mut wire_l) = (BytesMut::new(), BytesMut::new());
        let mut expect_f = Vec::new();
        let mut expect_l = Vec::new();
        for f in &frames {
            match f {
                Frame::Good(d) => {
                    let d = Bytes::copy_from_slice(d);
                    peer_framed.encode_request(&d, &mut wire_f).unwrap();
                    peer_lines.encode_request(&d, &mut wire_l).unwrap();
                    expect_f.push(Ok(d.clone()));
                    expect_l.push(Ok(d));
                }
                Frame::Corrupt(junk) => {
                    // A valid frame whose payload is not zlib / not base64.
                    wire_f.extend_from_slice(&(junk.len() as u32).to_be_bytes());
                    wire_f.extend_from_slice(junk);
                    expect_f.push(Err("decompress".to_owned()));
                    let line: Vec<u8> = junk.iter().map(|b| if *b == b'\n' { b'!' } else { *b | 0x80 }).collect();
                    wire_l.extend_from_slice(&line);
                    wire_l.extend_from_slice(b"\n");
                    expect_l.push(Err("base64".to_owned()));
                }
                Frame::Bomb => {
                    wire_f.extend_from_slice(&bomb_f);
                    wire_l.extend_from_slice(&bomb_l);
                    expect_f.push(Err("too large".to_owned()));
                    expect_l.push(Err("too large".to_owned()));
                }
            }
        }
        prop_assert_eq!(feed(&framed, &chunks(&wire_f, &cuts)), expect_f);
        prop_assert_eq!(feed(&lines, &chunks(&wire_l, &cuts)), expect_l);
    }

    /// The serde formats, alone and stacked, and a converter on top.
    #[test]
    fn serde_formats_round_trip_through_stacks(recs in proptest::collection::vec(record(), 1..5),
                                               cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        fn check<P>(p: &P, recs: &[Record], cuts: &[usize]) -> Result<(), TestCaseError>
        where
            P: StreamServerProtocol<Request = Record> + StreamClientProtocol<Request = Record>,
        {
            let mut wire = BytesMut::new();
            for r in recs {
                p.encode_request(r, &mut wire).unwrap();
            }
            let got: Vec<Record> = feed(p, &chunks(&wire, cuts)).into_iter().map(Result::unwrap).collect();
            prop_assert_eq!(got, recs.to_vec());
            Ok(())
        }
        check(&Stream::<_, _, Record, ()>::cbor(), &recs, &cuts)?;
        check(&Stream::<_, _, Record, ()>::msgpack(), &recs, &cuts)?;
        let lp = || LengthPrefixed::new(PrefixWidth::U16, 60_000).unwrap();
        check(&Stream::<_, _, Record, ()>::new(lp(), Zstd::new(Cbor)), &recs, &cuts)?;
        check(&Stream::<_, _, Record, ()>::new(lp(), Zlib::new(MessagePack::compact())), &recs, &cuts)?;
        check(&Stream::<_, _, Record, ()>::new(Lines::new(), Base64::new(Zlib::new(Json))), &recs, &cuts)?;

        // Domain types over DTOs: an empty name is one typed, recoverable error.
        let conv: Stream<_, _, Named, Named> =
            Stream::new(lp(), Converted::new(Zlib::new(Cbor), NonEmptyName));
        let mut wire = BytesMut::new();
        let mut expect = Vec::new();
        for r in &recs {
            // Encode the DTO directly so that empty names reach the wire.
            let dto: Stream<_, _, Record, ()> = Stream::new(lp(), Zlib::new(Cbor));
            dto.encode_request(r, &mut wire).unwrap();
            expect.push(if r.name.is_empty() { Err("conversion".to_owned()) } else { Ok(Named(r.clone())) });
        }
        prop_assert_eq!(feed(&conv, &chunks(&wire, &cuts)), expect);
    }
}
