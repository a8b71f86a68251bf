//! Every error of every crate prints each cause once: the cause is in the error's own message and not also
//! its `source`, so a chain printer (anyhow's `{:#}`, a log line with the error chain)
//! shows it once, and a plain `{}` still shows it.

use std::error::Error;
use std::io;

use easynet::error::{BindError, ConfigError, ServerError};
use easynet::protocol::{ConversionError, DeserializeError, ParseError};
use easynet::stream::HandshakeError;

/// What a chain printer shows: every error of the chain, joined by ": ".
fn chain(e: &dyn Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.join(": ")
}

#[track_caller]
fn once(e: &dyn Error, cause: &str) {
    let printed = chain(e);
    assert_eq!(
        printed.matches(cause).count(),
        1,
        "{cause:?} in {printed:?}"
    );
}

#[test]
fn server_errors_print_their_cause_once() {
    once(
        &ServerError::Resolve(io::Error::other("no such host")),
        "no such host",
    );
    once(&ServerError::Listener(io::Error::other("EMFILE")), "EMFILE");
    once(&ServerError::Start("database down".into()), "database down");
    let addr = "127.0.0.1:9000".parse().unwrap();
    let bind = BindError::new(addr, io::Error::from(io::ErrorKind::AddrInUse));
    once(&bind, "address in use");
    once(&ServerError::Bind(vec![bind]), "address in use");
    let unix = easynet::addr::UnixAddr::abstract_name("x");
    once(
        &ServerError::bind_unix(&unix, io::Error::other("taken")),
        "taken",
    );
    once(&ConfigError::Zero { what: "limit" }, "limit");
}

#[test]
fn parse_errors_print_their_cause_once() {
    let utf8 = std::str::from_utf8(std::hint::black_box(&[0xff])).unwrap_err();
    let text = utf8.to_string();
    once(&DeserializeError::from(utf8), &text);
    once(&ParseError::from(DeserializeError::from(utf8)), &text);
    let conversion = ConversionError::with_source("bad port", "x".parse::<u16>().unwrap_err());
    once(&conversion, "invalid digit");
    once(
        &ParseError::from(DeserializeError::from(conversion)),
        "invalid digit",
    );
    once(
        &HandshakeError::Io(io::Error::other("record overflow")),
        "record overflow",
    );
}

#[cfg(feature = "json")]
#[test]
fn codec_errors_print_their_cause_once() {
    use easynet::protocol::SerializeError;
    let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
    let text = json.to_string();
    once(&ParseError::from(DeserializeError::from(json)), &text);
    let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let json = serde_json::to_vec(&map).unwrap_err();
    let text = json.to_string();
    once(&SerializeError::from(json), &text);
}

#[cfg(feature = "tls")]
#[test]
fn tls_errors_print_their_cause_once() {
    use easynet::rustls;
    use easynet::tls::TlsError;
    let rustls = || rustls::Error::General("bad record".into());
    once(&TlsError::from(rustls()), "bad record");
    once(&TlsError::Io(io::Error::other("too large")), "too large");
    once(&HandshakeError::Tls(rustls()), "bad record");
}

#[cfg(feature = "sim-tls")]
#[test]
fn sim_tls_errors_print_their_cause_once() {
    let e =
        easynet::sim::tls::SimTlsError::from(easynet::rustls::Error::General("no provider".into()));
    once(&e, "no provider");
}

#[cfg(feature = "tokio")]
#[test]
fn client_errors_print_their_cause_once() {
    use easynet::aio::ClientError;
    once(
        &ClientError::Io(io::Error::other("connection reset")),
        "connection reset",
    );
    let handshake = easynet::stream::HandshakeError::Io(io::Error::other("overflow"));
    once(&ClientError::Handshake(handshake), "overflow");
    let utf8 = std::str::from_utf8(std::hint::black_box(&[0xff])).unwrap_err();
    let text = utf8.to_string();
    let parse =
        easynet::protocol::ParseError::from(easynet::protocol::DeserializeError::from(utf8));
    once(&ClientError::Parse(parse), &text);
}

#[cfg(all(unix, feature = "tokio"))]
#[test]
fn activation_errors_print_their_cause_once() {
    use easynet::aio::ActivationError;
    let e = ActivationError::NotASocket {
        fd: 3,
        error: io::Error::other("not a socket at all"),
    };
    once(&e, "not a socket at all");
}
