//! Echo server on 127.0.0.1:9000: JSON lines by default (`--framing line|raw|json`).
//!
//! Until the tokio and mio drivers land, this example drives the sans-IO core with plain
//! blocking `std::net` sockets, one thread per connection; it shows how little a driver is.
//!
//! ```text
//! cargo run --release --example echo_server -- [--host 127.0.0.1] [--port 9000] [--framing json]
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use easynet::ConnId;
use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::{Stream, StreamServerProtocol};
use easynet::stream::{CloseHow, Session, StreamConfig};

/// Sends every request back; reports parse errors to the log and goes on.
struct Echo<T>(std::marker::PhantomData<T>);

impl<T: Send + 'static> StreamHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, received: Received<T>) -> HandlerResult {
        match received {
            Received::Request(msg) => cx.send(&msg)?,
            Received::ParseError(err) => eprintln!("{}: bad request: {err}", cx.peer_addr()),
            Received::Timeout => {}
        }
        Ok(Next::recv())
    }
}

/// Drives one connection to its end: read, hand bytes to the session, write what it queues.
fn serve<T, P>(mut sock: TcpStream, id: ConnId, protocol: Arc<P>) -> io::Result<()>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let info = ConnInfo::new(id, sock.peer_addr()?, sock.local_addr()?);
    let config = StreamConfig::default();
    let mut buf = vec![0; config.read_size];
    let mut session = Session::new(
        Instant::now(),
        Echo(Default::default()),
        protocol,
        config,
        info,
    );
    loop {
        while !session.transmit().is_empty() {
            let n = sock.write(session.transmit())?;
            session.advance(n);
        }
        match session.poll_close() {
            Some(CloseHow::Graceful) => return sock.shutdown(Shutdown::Write),
            Some(CloseHow::Abort) => return Ok(()),
            None => {}
        }
        let timeout = session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        sock.set_read_timeout(timeout.map(|t| t.max(std::time::Duration::from_millis(1))))?;
        match sock.read(&mut buf) {
            Ok(0) => session.handle_eof(Instant::now()),
            Ok(n) => session.handle_read(Instant::now(), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => session.handle_io_error(Instant::now()),
        }
    }
}

fn main() -> io::Result<()> {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 9000u16;
    let mut framing = "json".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| io::Error::other(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(io::Error::other)?,
            "--framing" => framing = value()?,
            other => return Err(io::Error::other(format!("unknown argument {other}"))),
        }
    }
    let listener = TcpListener::bind((host.as_str(), port))?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let json = Arc::new(Stream::<_, _, serde_json::Value, serde_json::Value>::json_lines());
    let lines = Arc::new(Stream::lines());
    let raw = Arc::new(Stream::raw());
    for (n, sock) in listener.incoming().enumerate() {
        let Ok(sock) = sock else { continue };
        let id = ConnId(n as u64);
        let res = match framing.as_str() {
            "json" => {
                let p = json.clone();
                std::thread::spawn(move || serve(sock, id, p))
            }
            "line" => {
                let p = lines.clone();
                std::thread::spawn(move || serve(sock, id, p))
            }
            "raw" => {
                let p = raw.clone();
                std::thread::spawn(move || serve(sock, id, p))
            }
            other => return Err(io::Error::other(format!("unknown framing {other}"))),
        };
        drop(res);
    }
    Ok(())
}
