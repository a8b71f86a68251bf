//! The client and activation errors print each cause once (see core's error_messages).

use std::error::Error;
use std::io;

use easynet_common::{ActivationError, ClientError};

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
fn client_errors_print_their_cause_once() {
    once(
        &ClientError::Io(io::Error::other("connection reset")),
        "connection reset",
    );
    let handshake = easynet_core::stream::HandshakeError::Io(io::Error::other("overflow"));
    once(&ClientError::Handshake(handshake), "overflow");
    let utf8 = std::str::from_utf8(std::hint::black_box(&[0xff])).unwrap_err();
    let text = utf8.to_string();
    let parse = easynet_core::protocol::ParseError::from(
        easynet_core::protocol::DeserializeError::from(utf8),
    );
    once(&ClientError::Parse(parse), &text);
}

#[test]
fn activation_errors_print_their_cause_once() {
    let e = ActivationError::NotASocket {
        fd: 3,
        error: io::Error::other("not a socket at all"),
    };
    once(&e, "not a socket at all");
}
