//! TLS on stream connections, in memory: a real rustls handshake between a server
//! `Session` and a client `Connection`, with rcgen certificates (reference/behaviour.md §4).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Next, Received};
use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::stream::{ClientRole, CloseHow, Connection, Session, StreamConfig};
use easynet_core::tls::TlsSession;
use support::certs::{Identity, localhost};
use support::clock::Clock;
use support::sim::{Scripted, Seen, addr, info};

type Lp = Stream<Lines, Utf8, String, String>;

struct Pair {
    clock: Clock,
    server: Session<Scripted, Lp>,
    client: Connection<Lp, ClientRole>,
    server_closed: Option<CloseHow>,
}

impl Pair {
    fn new(
        handler: Scripted,
        server_cfg: Arc<rustls::ServerConfig>,
        client_cfg: Arc<rustls::ClientConfig>,
        config: StreamConfig,
    ) -> Self {
        let clock = Clock::new();
        let tls = TlsSession::server(server_cfg).unwrap();
        let server = Session::with_tls(
            clock.now(),
            handler,
            Arc::new(Stream::lines()),
            config.clone(),
            info(1),
            tls,
        );
        let ctls = TlsSession::client(client_cfg, localhost()).unwrap();
        let cinfo = ConnInfo::new(ConnId(0), addr(9000), addr(40001));
        let client =
            Connection::with_tls(clock.now(), Arc::new(Stream::lines()), config, cinfo, ctls);
        Self {
            clock,
            server,
            client,
            server_closed: None,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        for _ in 0..16 {
            let now = self.clock.now();
            let c2s = self.client.transmit().to_vec();
            self.client.advance(c2s.len());
            if !c2s.is_empty() && self.server_closed.is_none() {
                self.server.handle_read(now, &c2s);
            }
            let s2c = self.server.transmit().to_vec();
            self.server.advance(s2c.len());
            if !s2c.is_empty() {
                self.client.handle_read(now, &s2c);
            }
            if self.server_closed.is_none() {
                self.server_closed = self.server.poll_close();
            }
            if c2s.is_empty() && s2c.is_empty() {
                break;
            }
        }
    }

    fn client_line(&mut self) -> Option<String> {
        let now = self.clock.now();
        if !self.client.is_receiving() {
            self.client.recv(now, None);
        }
        match self.client.poll_received(now) {
            Some(Received::Request(r)) => Some(r),
            _ => None,
        }
    }
}

fn echo() -> (Scripted, Arc<Mutex<Vec<Seen>>>) {
    Scripted::echo()
}

#[test]
fn handshake_then_echo_with_tls_info_in_on_connection() {
    let id = Identity::localhost();
    let seen_tls = Arc::new(Mutex::new(None));
    let s = seen_tls.clone();
    let (h, log) = Scripted::new(move |cx, seen| {
        if *seen == Seen::Connected {
            *s.lock().unwrap() = cx.info().tls.clone();
        }
        if let Seen::Request(r) = seen {
            cx.send(r)?;
        }
        Ok(Next::recv())
    });
    let mut p = Pair::new(
        h,
        id.server_config(),
        id.client_config(),
        StreamConfig::default(),
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "no handler call before the handshake"
    );
    p.client.send(&"hello".to_owned()).unwrap(); // buffered until the handshake is done
    p.pump();
    assert!(p.client.is_ready());
    assert_eq!(p.client_line().as_deref(), Some("hello"));
    let tls = seen_tls
        .lock()
        .unwrap()
        .clone()
        .expect("TLS info in on_connection");
    assert_eq!(tls.protocol_version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert!(tls.cipher_suite.is_some());
    assert_eq!(
        *log.lock().unwrap(),
        [Seen::Connected, Seen::Request("hello".into())]
    );
}

#[test]
fn large_messages_cross_in_both_directions() {
    let id = Identity::localhost();
    let (h, _) = echo();
    let mut p = Pair::new(
        h,
        id.server_config(),
        id.client_config(),
        StreamConfig::default(),
    );
    let big = "z".repeat(60_000);
    for _ in 0..3 {
        p.client.send(&big).unwrap();
    }
    p.pump();
    for _ in 0..3 {
        assert_eq!(p.client_line().as_deref(), Some(big.as_str()));
    }
}

#[test]
fn tls12_only_server_negotiates_tls12() {
    let id = Identity::localhost();
    let (h, _) = echo();
    let mut p = Pair::new(
        h,
        id.server_config_tls12(),
        id.client_config(),
        StreamConfig::default(),
    );
    p.pump();
    assert_eq!(
        p.server.info().tls.as_ref().unwrap().protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[test]
fn handshake_timeout_closes_abortively_without_handler_calls() {
    let id = Identity::localhost();
    let (h, log) = echo();
    let config = StreamConfig::default().with_tls_handshake_timeout(Duration::from_secs(2));
    let mut p = Pair::new(h, id.server_config(), id.client_config(), config);
    // The client never sends its hello.
    let t = p.server.poll_timeout().unwrap();
    assert_eq!(t, p.clock.now() + Duration::from_secs(2));
    p.clock.advance(Duration::from_millis(1999));
    p.server.handle_timeout(p.clock.now());
    assert_eq!(p.server.poll_close(), None);
    p.clock.advance(Duration::from_millis(1));
    p.server.handle_timeout(p.clock.now());
    assert_eq!(p.server.poll_close(), Some(CloseHow::Abort));
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn garbage_instead_of_a_hello_sends_an_alert_and_calls_no_handler() {
    let id = Identity::localhost();
    let (h, log) = echo();
    let mut p = Pair::new(
        h,
        id.server_config(),
        id.client_config(),
        StreamConfig::default(),
    );
    p.server
        .handle_read(p.clock.now(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!p.server.transmit().is_empty(), "an alert is flushed first");
    let n = p.server.transmit().len();
    p.server.advance(n);
    assert_eq!(p.server.poll_close(), Some(CloseHow::Abort));
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn untrusted_server_certificate_fails_the_client_and_the_server_sees_nothing() {
    let id = Identity::localhost();
    let other = Identity::localhost();
    let (h, log) = echo();
    let mut p = Pair::new(
        h,
        id.server_config(),
        other.client_config(),
        StreamConfig::default(),
    );
    p.pump();
    assert!(!p.client.is_ready());
    assert!(p.client.is_closing(), "client failed the handshake");
    assert!(log.lock().unwrap().is_empty());
    assert!(
        p.server_closed.is_some(),
        "server closed after the client's alert"
    );
}

#[test]
fn graceful_close_exchanges_close_notify() {
    let id = Identity::localhost();
    let (h, log) = Scripted::new(|_, seen| {
        Ok(if matches!(seen, Seen::Request(_)) {
            Next::Close
        } else {
            Next::recv()
        })
    });
    let mut p = Pair::new(
        h,
        id.server_config(),
        id.client_config(),
        StreamConfig::default(),
    );
    p.pump();
    p.client.send(&"bye".to_owned()).unwrap();
    p.pump();
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&Seen::Disconnected {
            closing: true,
            send_refused: true
        })
    );
    // The server sent close_notify and waits for the client's.
    assert_eq!(p.server_closed, None);
    assert!(p.client.is_input_finished(), "client saw close_notify");
    p.client.close(p.clock.now());
    p.pump();
    assert_eq!(p.server_closed, Some(CloseHow::Graceful));
}

#[test]
fn close_notify_wait_is_bounded_then_resets() {
    let id = Identity::localhost();
    let (h, _) = Scripted::new(|_, seen| {
        Ok(if matches!(seen, Seen::Request(_)) {
            Next::Close
        } else {
            Next::recv()
        })
    });
    let config = StreamConfig::default().with_shutdown_timeout(Duration::from_secs(5));
    let mut p = Pair::new(h, id.server_config(), id.client_config(), config);
    p.pump();
    p.client.send(&"bye".to_owned()).unwrap();
    p.pump();
    assert_eq!(p.server_closed, None);
    p.clock.advance(Duration::from_secs(5));
    p.server.handle_timeout(p.clock.now());
    assert_eq!(p.server.poll_close(), Some(CloseHow::Abort));
}

#[test]
fn not_standard_compatible_closes_without_close_notify() {
    let id = Identity::localhost();
    let (h, _) = Scripted::new(|_, seen| {
        Ok(if matches!(seen, Seen::Request(_)) {
            Next::Close
        } else {
            Next::recv()
        })
    });
    let config = StreamConfig::default().with_tls_standard_compatible(false);
    let mut p = Pair::new(h, id.server_config(), id.client_config(), config);
    p.pump();
    p.client.send(&"bye".to_owned()).unwrap();
    p.pump();
    assert_eq!(p.server_closed, Some(CloseHow::Graceful));
    assert!(!p.client.is_input_finished(), "no close_notify was sent");
}

#[test]
fn tcp_eof_without_close_notify_is_a_disconnect() {
    let id = Identity::localhost();
    let (h, log) = echo();
    let mut p = Pair::new(
        h,
        id.server_config(),
        id.client_config(),
        StreamConfig::default(),
    );
    p.pump();
    p.server.handle_eof(p.clock.now());
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&Seen::Disconnected {
            closing: true,
            send_refused: true
        })
    );
    let n = p.server.transmit().len();
    p.server.advance(n);
    assert!(p.server.poll_close().is_some());
}
