//! Stacked protocols over loopback on both drivers: JSON in zlib in a length prefix with a
//! converter (domain types in the handler, DTOs on the wire), CBOR in zstd datagrams, and
//! MessagePack in zlib in HMAC-signed base64 lines. Each scenario runs on the tokio and the mio servers
//! with both drivers' clients, and shows that a decompression bomb, a corrupt frame and a
//! rejected DTO each reach the handler as a typed parse error while the connection (or the
//! datagram peer's routine) goes on.

#![cfg(all(
    feature = "tokio",
    feature = "mio",
    feature = "json",
    feature = "zlib",
    feature = "zstd",
    feature = "cbor",
    feature = "msgpack",
    feature = "base64",
    feature = "base64-checksum",
    feature = "converter"
))]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{
    Base64, Cbor, ConversionError, Converted, Datagram, Decode, DeserializeError, Encode, FromDto,
    Json, LengthPrefixed, Lines, MessagePack, ParseError, PrefixWidth, Stream, ToDto, Zlib, Zstd,
};
use serde::{Deserialize, Serialize};
use support::drivers::{self, Opts, Running};

const LIMIT: Duration = Duration::from_secs(10);

/// What crosses the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CommandDto {
    op: String,
    n: i64,
}

/// What the handler works with.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Add(i64),
    Reset,
}

/// Replies, serialized as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Reply {
    Value(i64),
    Error(String),
}

/// Commands to and from their DTO; replies as they are.
#[derive(Debug, Clone)]
struct Commands;

impl ToDto<Command> for Commands {
    type Dto = CommandDto;
    fn to_dto(&self, c: &Command) -> Result<CommandDto, ConversionError> {
        Ok(match c {
            Command::Add(n) => CommandDto {
                op: "add".into(),
                n: *n,
            },
            Command::Reset => CommandDto {
                op: "reset".into(),
                n: 0,
            },
        })
    }
}

impl FromDto<Command> for Commands {
    type Dto = CommandDto;
    fn from_dto(&self, dto: CommandDto) -> Result<Command, ConversionError> {
        match dto.op.as_str() {
            "add" => Ok(Command::Add(dto.n)),
            "reset" => Ok(Command::Reset),
            other => Err(ConversionError::new(format!("unknown op {other:?}"))),
        }
    }
}

impl ToDto<Reply> for Commands {
    type Dto = Reply;
    fn to_dto(&self, r: &Reply) -> Result<Reply, ConversionError> {
        Ok(r.clone())
    }
}

impl FromDto<Reply> for Commands {
    type Dto = Reply;
    fn from_dto(&self, r: Reply) -> Result<Reply, ConversionError> {
        Ok(r)
    }
}

/// The kind of a parse error, as the handler tells it to the peer.
fn kind(e: &ParseError) -> String {
    match e {
        ParseError::Deserialize(DeserializeError::TooLarge { limit, .. }) => {
            format!("too large, limit {limit}")
        }
        ParseError::Deserialize(DeserializeError::Decompress(_)) => "decompress".into(),
        ParseError::Deserialize(DeserializeError::Conversion(c)) => {
            format!("conversion: {}", c.message())
        }
        ParseError::Deserialize(DeserializeError::Json(_)) => "json".into(),
        ParseError::Deserialize(DeserializeError::Cbor(_)) => "cbor".into(),
        ParseError::Deserialize(DeserializeError::MessagePack(_)) => "msgpack".into(),
        ParseError::Deserialize(DeserializeError::Base64(_)) => "base64".into(),
        ParseError::Deserialize(DeserializeError::Checksum) => "checksum".into(),
        other => format!("unexpected: {other}"),
    }
}

// --- JSON in zlib in a length prefix, with a converter -------------------------------------

type CalcProtocol = Stream<LengthPrefixed, Converted<Zlib<Json>, Commands>, Command, Reply>;

fn calc_protocol() -> CalcProtocol {
    Stream::new(
        LengthPrefixed::new(PrefixWidth::U32, 1 << 20).unwrap(),
        Converted::new(Zlib::new(Json), Commands),
    )
}

/// Keeps a running sum per connection; answers parse errors with their kind.
struct Calc {
    acc: i64,
}

impl StreamHandler for Calc {
    type Request = Command;
    type Response = Reply;

    fn handle(&mut self, cx: &mut StreamContext<'_, Reply>, r: Received<Command>) -> HandlerResult {
        let reply = match r {
            Received::Request(Command::Add(n)) => {
                self.acc += n;
                Reply::Value(self.acc)
            }
            Received::Request(Command::Reset) => {
                self.acc = 0;
                Reply::Value(0)
            }
            Received::ParseError(e) => Reply::Error(kind(&e)),
            Received::Timeout => Reply::Error("timeout".into()),
        };
        cx.send(&reply)?;
        Ok(Next::recv())
    }
}

fn calc_servers() -> [(&'static str, Running); 2] {
    let service = |_: &ConnInfo| Calc { acc: 0 };
    [
        (
            "tokio",
            drivers::tokio_tcp(calc_protocol(), service, Opts::default()),
        ),
        (
            "mio",
            drivers::mio_tcp(calc_protocol(), service, Opts::default()),
        ),
    ]
}

/// The payload of a frame as a peer with no limit would make it.
fn zlib_json<T: Serialize>(item: &T) -> Bytes {
    let mut out = BytesMut::new();
    Zlib::new(Json)
        .with_limit(usize::MAX >> 1)
        .unwrap()
        .encode(item, &mut out)
        .unwrap();
    out.freeze()
}

fn dto(op: &str, n: i64) -> CommandDto {
    CommandDto { op: op.into(), n }
}

#[test]
fn json_in_zlib_in_length_prefix_with_a_converter_on_both_drivers() {
    for (driver, server) in calc_servers() {
        // tokio client, domain types.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use easynet::aio::AsyncTcpClient;
            let mut c = AsyncTcpClient::connect(server.addr, calc_protocol())
                .await
                .unwrap();
            c.send(&Command::Add(2)).await.unwrap();
            c.send(&Command::Add(40)).await.unwrap();
            assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), Reply::Value(2));
            assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), Reply::Value(42));
        });

        // mio client, domain types.
        let mut c = easynet::blocking::TcpClient::connect(server.addr, calc_protocol()).unwrap();
        c.send(&Command::Add(7)).unwrap();
        c.send(&Command::Reset).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), Reply::Value(7), "{driver}");
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), Reply::Value(0), "{driver}");

        // A raw-frame client sends what a well-behaved client cannot.
        let raw_protocol = Stream::length_prefixed(PrefixWidth::U32, 1 << 20).unwrap();
        let mut raw = easynet::blocking::TcpClient::connect(server.addr, raw_protocol).unwrap();
        let bomb = zlib_json(&dto(&"x".repeat(1 << 20), 0));
        assert!(
            bomb.len() < 8 * 1024,
            "a small frame that inflates to 1 MiB"
        );
        let frames = [
            (zlib_json(&dto("add", 5)), Reply::Value(5)),
            (bomb, Reply::Error("too large, limit 65536".into())),
            (
                Bytes::from_static(b"\x78\x9cnot deflate"),
                Reply::Error("decompress".into()),
            ),
            (
                zlib_json(&dto("mul", 3)),
                Reply::Error("conversion: unknown op \"mul\"".into()),
            ),
            (
                zlib_json(&serde_json::json!({"op": 1})),
                Reply::Error("json".into()),
            ),
            // The connection went on, its handler's state too.
            (zlib_json(&dto("add", 1)), Reply::Value(6)),
        ];
        for (frame, _) in &frames {
            raw.send(frame).unwrap();
        }
        for (_, want) in frames {
            let payload = raw.recv_timeout(LIMIT).unwrap();
            let got: Reply = Zlib::new(Json).decode(BytesMut::from(payload)).unwrap();
            assert_eq!(got, want, "{driver}");
        }
        server.stop();
    }
}

#[test]
fn a_response_past_the_clients_limit_is_a_typed_error_and_the_next_one_reads() {
    let service = |_: &ConnInfo| Calc { acc: 0 };
    // The client applies its own limit to what it receives: 20 bytes of JSON.
    let small = || -> CalcProtocol {
        Stream::new(
            LengthPrefixed::new(PrefixWidth::U32, 1 << 20).unwrap(),
            Converted::new(Zlib::new(Json).with_limit(20).unwrap(), Commands),
        )
    };
    for server in [
        drivers::tokio_tcp(calc_protocol(), service, Opts::default()),
        drivers::mio_tcp(calc_protocol(), service, Opts::default()),
    ] {
        let mut c = easynet::blocking::TcpClient::connect(server.addr, small()).unwrap();
        c.send(&Command::Add(1)).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), Reply::Value(1));
        // {"Value":-4611686018427387903} is 30 bytes.
        c.send(&Command::Add(i64::MIN / 2)).unwrap();
        let err = c.recv_timeout(LIMIT).unwrap_err();
        assert!(
            matches!(
                err,
                easynet::blocking::ClientError::Parse(ParseError::Deserialize(
                    DeserializeError::TooLarge { limit: 20, got: 21 }
                ))
            ),
            "{err}"
        );
        c.send(&Command::Reset).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), Reply::Value(0));
        server.stop();
    }
}

// --- CBOR in zstd datagrams ------------------------------------------------------------------

type SumProtocol = Datagram<Zstd<Cbor>, Vec<i64>, Reply>;

fn sum_protocol() -> SumProtocol {
    Datagram::new(Zstd::new(Cbor))
}

/// Sums each datagram's numbers; a per-peer count shows the routine survives parse errors.
struct Sum {
    seen: i64,
}

impl DatagramHandler for Sum {
    type Request = Vec<i64>;
    type Response = Reply;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, Reply>,
        r: Received<Vec<i64>>,
    ) -> HandlerResult {
        self.seen += 1;
        let reply = match r {
            Received::Request(v) => Reply::Value(v.iter().sum::<i64>() * 1000 + self.seen),
            Received::ParseError(e) => Reply::Error(kind(&e)),
            Received::Timeout => Reply::Error("timeout".into()),
        };
        cx.send(&reply)?;
        Ok(Next::recv())
    }
}

#[test]
fn cbor_in_zstd_datagrams_on_both_drivers_and_the_poll_loop() {
    let service = |_: &ConnInfo| Sum { seen: 0 };
    for (driver, server) in [
        ("tokio", drivers::tokio_udp(sum_protocol(), service)),
        ("mio", drivers::mio_udp(sum_protocol(), service)),
        #[cfg(unix)]
        ("poll_loop", drivers::poll_loop_udp(sum_protocol(), service)),
    ] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = easynet::aio::AsyncUdpClient::connect(server.addr, sum_protocol())
                .await
                .unwrap();
            c.send(&vec![1, 2, 3]).await.unwrap();
            assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), Reply::Value(6001));
        });
        let mut c = easynet::blocking::UdpClient::connect(server.addr, sum_protocol()).unwrap();
        c.send(&vec![10, -4]).unwrap();
        assert_eq!(
            c.recv_timeout(LIMIT).unwrap(),
            Reply::Value(6001),
            "{driver}"
        );

        // A raw socket sends a bomb, corrupt bytes, the wrong CBOR, then a good datagram.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let unlimited = Zstd::new(Cbor).with_limit(usize::MAX >> 1).unwrap();
        let enc = |item: &dyn Fn(&mut BytesMut)| {
            let mut out = BytesMut::new();
            item(&mut out);
            out
        };
        let bomb = enc(&|o| unlimited.encode(&vec![0i64; 200_000], o).unwrap());
        assert!(bomb.len() < 1024);
        let wrong = enc(&|o| unlimited.encode(&"not a list", o).unwrap());
        let good = enc(&|o| unlimited.encode(&vec![5i64], o).unwrap());
        let sends: [(&[u8], Reply); 4] = [
            (&bomb, Reply::Error("too large, limit 65536".into())),
            (b"\x28\xb5\x2f\xfdjunk", Reply::Error("decompress".into())),
            (&wrong, Reply::Error("cbor".into())),
            (&good, Reply::Value(5004)),
        ];
        for (datagram, want) in sends {
            send_and_check(&sock, server.addr, datagram, want, driver);
        }
        server.stop();
    }
}

fn send_and_check(sock: &UdpSocket, to: SocketAddr, datagram: &[u8], want: Reply, driver: &str) {
    sock.send_to(datagram, to).unwrap();
    let mut buf = [0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, to);
    let got: Reply = Zstd::new(Cbor).decode(BytesMut::from(&buf[..n])).unwrap();
    assert_eq!(got, want, "{driver}");
}

// --- MessagePack in zlib in HMAC-signed base64 lines -----------------------------------------

type Signed = Base64<Zlib<MessagePack>>;
type Base64Lines = Stream<Lines, Signed, Vec<String>, Reply>;

fn signed(key: u8) -> Signed {
    Base64::new(Zlib::new(MessagePack::new()))
        .with_hmac_key(&[key; 32])
        .unwrap()
}

fn base64_lines() -> Base64Lines {
    Stream::new(Lines::new(), signed(1))
}

/// Counts the words of each request.
struct Words;

impl StreamHandler for Words {
    type Request = Vec<String>;
    type Response = Reply;

    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, Reply>,
        r: Received<Vec<String>>,
    ) -> HandlerResult {
        let reply = match r {
            Received::Request(words) => Reply::Value(words.len() as i64),
            Received::ParseError(e) => Reply::Error(kind(&e)),
            Received::Timeout => Reply::Error("timeout".into()),
        };
        cx.send(&reply)?;
        Ok(Next::recv())
    }
}

#[test]
fn msgpack_in_zlib_in_base64_lines_on_both_drivers() {
    let service = |_: &ConnInfo| Words;
    for (driver, server) in [
        (
            "tokio",
            drivers::tokio_tcp(base64_lines(), service, Opts::default()),
        ),
        (
            "mio",
            drivers::mio_tcp(base64_lines(), service, Opts::default()),
        ),
    ] {
        let mut c = easynet::blocking::TcpClient::connect(server.addr, base64_lines()).unwrap();
        c.send(&vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), Reply::Value(2), "{driver}");
        // Not base64, a wrong signature, a signed payload that is not zlib, then a good line.
        let mut raw = easynet::blocking::TcpClient::connect(server.addr, Stream::lines()).unwrap();
        let line = |s: &Signed, item: &Vec<String>| {
            let mut out = BytesMut::new();
            s.encode(item, &mut out).unwrap();
            String::from_utf8(out.to_vec()).unwrap()
        };
        let not_zlib = Base64::new(easynet::protocol::RawBytes)
            .with_hmac_key(&[1; 32])
            .unwrap();
        let mut not_zlib_line = BytesMut::new();
        not_zlib
            .encode(&Bytes::from_static(b"not zlib"), &mut not_zlib_line)
            .unwrap();
        raw.send(&"%%%".to_owned()).unwrap();
        raw.send(&line(&signed(2), &vec!["forged".to_owned()]))
            .unwrap();
        raw.send(&String::from_utf8(not_zlib_line.to_vec()).unwrap())
            .unwrap();
        raw.send(&line(&signed(1), &vec!["x".to_owned()])).unwrap();
        let decode =
            |line: String| -> Reply { signed(1).decode(BytesMut::from(line.as_bytes())).unwrap() };
        let mut next = || decode(raw.recv_timeout(LIMIT).unwrap());
        assert_eq!(next(), Reply::Error("base64".into()), "{driver}");
        assert_eq!(next(), Reply::Error("checksum".into()), "{driver}");
        assert_eq!(next(), Reply::Error("decompress".into()), "{driver}");
        assert_eq!(next(), Reply::Value(1), "{driver}");
        server.stop();
    }
}
