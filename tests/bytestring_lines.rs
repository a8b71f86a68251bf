//! Lines as `ByteString` (`Stream::lines_shared`) on both drivers over loopback: pipelined
//! lines of every size the read path treats differently (short and copied into the write
//! buffer, long and queued as they are, one that takes the whole read buffer), bad UTF-8 as
//! a typed parse error after which the connection goes on. And datagrams as `ByteString`
//! (`Datagram::lines_shared`): text echoed, a trailing newline stripped, bad UTF-8 a typed
//! parse error.

#![cfg(all(feature = "tokio", feature = "mio", feature = "bytestring"))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{ByteString, Datagram, ParseError, Stream};
use support::drivers::{self, Opts, Running};

/// The echo's answer: the text itself, "bad utf-8" for text that is not UTF-8.
fn answer(r: Received<ByteString>) -> Option<ByteString> {
    match r {
        Received::Request(text) => Some(text),
        Received::ParseError(ParseError::Deserialize(_)) => {
            Some(ByteString::from_static("bad utf-8"))
        }
        Received::ParseError(e) => panic!("unexpected parse error {e}"),
        Received::Timeout => None,
    }
}

/// Echoes each line.
struct Echo;

impl StreamHandler for Echo {
    type Request = ByteString;
    type Response = ByteString;

    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, ByteString>,
        r: Received<ByteString>,
    ) -> HandlerResult {
        if let Some(text) = answer(r) {
            cx.send(text)?;
        }
        Ok(Next::recv())
    }
}

fn check(server: Running) {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    // Short, long (queued without a copy), multi-byte text, bad UTF-8, and a last line long
    // enough to take the read buffer.
    let lines: Vec<Vec<u8>> = vec![
        b"one".to_vec(),
        "é".repeat(6000).into_bytes(),
        b"two".to_vec(),
        b"\xff\xfe".to_vec(),
        "x".repeat(20_000).into_bytes(),
    ];
    let mut request = Vec::new();
    for l in &lines {
        request.extend_from_slice(l);
        request.push(b'\n');
    }
    writer.write_all(&request).unwrap();
    for l in &lines {
        let mut got = String::new();
        reader.read_line(&mut got).unwrap();
        let want = std::str::from_utf8(l).unwrap_or("bad utf-8");
        assert_eq!(got.trim_end_matches('\n'), want);
    }
    server.stop();
}

#[test]
fn mio_echoes_byte_string_lines() {
    check(drivers::mio_tcp(
        Stream::lines_shared(),
        |_: &ConnInfo| Echo,
        Opts::default(),
    ));
}

#[test]
fn tokio_echoes_byte_string_lines() {
    check(drivers::tokio_tcp(
        Stream::lines_shared(),
        |_: &ConnInfo| Echo,
        Opts::default(),
    ));
}

/// Echoes each datagram's text.
struct DatagramEcho;

impl DatagramHandler for DatagramEcho {
    type Request = ByteString;
    type Response = ByteString;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, ByteString>,
        r: Received<ByteString>,
    ) -> HandlerResult {
        if let Some(text) = answer(r) {
            cx.send(text)?;
        }
        Ok(Next::Close)
    }
}

fn check_datagrams(server: Running) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.connect(server.addr).unwrap();
    let big = "é".repeat(6000);
    let cases: [(&[u8], &str); 4] = [
        (b"one\n", "one"),
        (big.as_bytes(), &big),
        (b"two\r\n", "two"),
        (b"\xff\xfe", "bad utf-8"),
    ];
    let mut buf = vec![0; 65_536];
    for (sent, want) in cases {
        // One at a time: a datagram lost on loopback would show as a timeout, not a mix-up.
        s.send(sent).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
    }
    server.stop();
}

#[test]
fn mio_echoes_byte_string_datagrams() {
    check_datagrams(drivers::mio_udp(
        Datagram::lines_shared(),
        |_: &ConnInfo| DatagramEcho,
    ));
}

#[test]
fn tokio_echoes_byte_string_datagrams() {
    check_datagrams(drivers::tokio_udp(
        Datagram::lines_shared(),
        |_: &ConnInfo| DatagramEcho,
    ));
}
