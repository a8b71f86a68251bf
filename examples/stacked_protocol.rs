//! Stacked protocols, server and client in one process on 127.0.0.1 (port 0); exits by itself.
//!
//! ```text
//! cargo run --example stacked_protocol --features zlib,zstd,cbor
//! ```
//!
//! - TCP: JSON inside zlib inside a 4-byte length prefix, with a converter so the handler sees
//!   a domain `Command` while the wire carries a `CommandDto`.
//! - UDP: CBOR inside zstd, one message per datagram.
//!
//! A decompression bomb sent over TCP reaches the handler as a typed parse error, and the
//! connection goes on. Logs go to stderr, filtered by `RUST_LOG` (default `info`).

#[path = "common/logging.rs"]
mod logging;

use std::time::Duration;

use bytes::BytesMut;
use easynet::aio::{AsyncTcpClient, AsyncTcpServer, AsyncUdpClient, AsyncUdpServer};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{
    Cbor, ConversionError, Converted, Datagram, DeserializeError, Encode, FromDto, Json,
    LengthPrefixed, ParseError, PrefixWidth, Stream, ToDto, Zlib, Zstd,
};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
Stacked protocols, server and client in one process on 127.0.0.1; exits by itself.

Usage: stacked_protocol [-h|--help]

Logs go to stderr; RUST_LOG sets the filter [default: info].
";

/// The wire form of a command.
#[derive(Serialize, Deserialize)]
struct CommandDto {
    op: String,
    n: i64,
}

/// What the handler works with.
#[derive(Debug)]
enum Command {
    Add(i64),
    Reset,
}

/// Commands to and from their DTO; replies (`String`) go as they are.
#[derive(Clone)]
struct Commands;

impl ToDto<Command> for Commands {
    type Dto = CommandDto;
    fn to_dto(&self, c: &Command) -> Result<CommandDto, ConversionError> {
        let (op, n) = match c {
            Command::Add(n) => ("add", *n),
            Command::Reset => ("reset", 0),
        };
        Ok(CommandDto { op: op.into(), n })
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

impl ToDto<String> for Commands {
    type Dto = String;
    fn to_dto(&self, s: &String) -> Result<String, ConversionError> {
        Ok(s.clone())
    }
}

impl FromDto<String> for Commands {
    type Dto = String;
    fn from_dto(&self, s: String) -> Result<String, ConversionError> {
        Ok(s)
    }
}

type TcpProtocol = Stream<LengthPrefixed, Converted<Zlib<Json>, Commands>, Command, String>;

fn tcp_protocol() -> anyhow::Result<TcpProtocol> {
    // JSON inside zlib (at most 64 KiB once inflated) inside a length prefix (1 MiB).
    let framing = LengthPrefixed::new(PrefixWidth::U32, 1 << 20)?;
    Ok(Stream::new(
        framing,
        Converted::new(Zlib::new(Json), Commands),
    ))
}

fn udp_protocol() -> Datagram<Zstd<Cbor>, Vec<i64>, i64> {
    Datagram::new(Zstd::new(Cbor))
}

/// A running sum per connection.
struct Calc(i64);

impl StreamHandler for Calc {
    type Request = Command;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, String>,
        r: Received<Command>,
    ) -> HandlerResult {
        let reply = match r {
            Received::Request(Command::Add(n)) => {
                self.0 += n;
                format!("sum {}", self.0)
            }
            Received::Request(Command::Reset) => {
                self.0 = 0;
                "reset".to_owned()
            }
            Received::ParseError(ParseError::Deserialize(DeserializeError::TooLarge {
                limit,
                ..
            })) => format!("rejected: inflates past {limit} bytes"),
            Received::ParseError(e) => format!("rejected: {e}"),
            Received::Timeout => "timeout".to_owned(),
        };
        cx.send(&reply)?;
        Ok(Next::recv())
    }
}

/// Sums each datagram.
struct Sum;

impl DatagramHandler for Sum {
    type Request = Vec<i64>;
    type Response = i64;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, i64>,
        r: Received<Vec<i64>>,
    ) -> HandlerResult {
        if let Received::Request(v) = r {
            cx.send(v.iter().sum::<i64>())?;
        }
        Ok(Next::Close)
    }
}

/// Only `--help`: the example takes no options.
fn parse_args() -> anyhow::Result<()> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    if let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _flush_logs_at_exit = logging::init();
    // lexopt's messages already include their cause: print them once.
    parse_args().map_err(|e| anyhow::anyhow!("{e} (see --help)"))?;
    let tcp = AsyncTcpServer::builder(tcp_protocol()?, |_: &ConnInfo| Calc(0))
        .host("127.0.0.1")
        .port(0)
        .build()?;
    let udp = AsyncUdpServer::builder(udp_protocol(), |_: &ConnInfo| Sum)
        .host("127.0.0.1")
        .port(0)
        .build()?;
    let (tcp_up, mut tcp_ready) = tokio::sync::watch::channel(false);
    let (udp_up, mut udp_ready) = tokio::sync::watch::channel(false);
    let tcp_task = tokio::spawn({
        let tcp = tcp.clone();
        async move { tcp.serve_notify(tcp_up).await }
    });
    let udp_task = tokio::spawn({
        let udp = udp.clone();
        async move { udp.serve_notify(udp_up).await }
    });
    tcp_ready.wait_for(|up| *up).await?;
    udp_ready.wait_for(|up| *up).await?;

    // TCP: domain commands in, text replies out.
    let mut client = AsyncTcpClient::connect(tcp.addresses()[0], tcp_protocol()?).await?;
    client.send(&Command::Add(40)).await?;
    client.send(&Command::Add(2)).await?;
    println!("tcp: {}", client.recv_timeout(TIMEOUT).await?);
    println!("tcp: {}", client.recv_timeout(TIMEOUT).await?);

    // A bomb: a small frame that inflates to 1 MiB, sent as raw length-prefixed bytes.
    let mut bomb = BytesMut::new();
    let unlimited = Zlib::new(Json).with_limit(usize::MAX)?;
    unlimited.encode(
        &serde_json::json!({"op": "x".repeat(1 << 20), "n": 0}),
        &mut bomb,
    )?;
    println!("bomb: {} bytes on the wire", bomb.len());
    let raw = Stream::length_prefixed(PrefixWidth::U32, 1 << 20)?;
    let mut attacker = AsyncTcpClient::connect(tcp.addresses()[0], raw).await?;
    attacker.send(&bomb.freeze()).await?;
    let reply = attacker.recv_timeout(TIMEOUT).await?;
    let reply: String = easynet::protocol::Decode::decode(&Zlib::new(Json), reply.into())?;
    println!("tcp: {reply}");

    // UDP: CBOR in zstd.
    let mut udp_client = AsyncUdpClient::connect(udp.addresses()[0], udp_protocol()).await?;
    udp_client.send(&vec![1, 2, 3, 4]).await?;
    println!("udp: sum {}", udp_client.recv_timeout(TIMEOUT).await?);

    tcp.shutdown().await;
    udp.shutdown().await;
    tcp_task.await??;
    udp_task.await??;
    Ok(())
}
