//! Echo server: every request goes back to its sender. JSON lines over TCP on
//! 127.0.0.1:9000 by default.
//!
//! ```text
//! cargo run --release --example echo_server -- [--driver tokio|mio] [--transport tcp|udp]
//!     [--framing json|line|raw] [--host H] [--port P] [--tls-cert PEM --tls-key PEM]
//!     [--unix PATH]
//! ```
//!
//! `--unix PATH` serves a Unix stream socket at PATH instead of TCP (Unix only).
//!
//! Prints `listening on ADDR` once per bound address when ready; SIGINT or SIGTERM shut it
//! down gracefully (requests already read are answered) and it exits with status 0.

use std::error::Error;
use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;
use std::sync::Arc;

use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{Datagram, DatagramServerProtocol, Stream, StreamServerProtocol};
use easynet::tokio::{AsyncTcpServer, AsyncUdpServer};

type BoxError = Box<dyn Error + Send + Sync>;

/// Sends every request back; a parse error is logged and the connection goes on.
struct Echo<T>(PhantomData<fn() -> T>);

impl<T> Echo<T> {
    fn new(_: &ConnInfo) -> Self {
        Echo(PhantomData)
    }
}

impl<T: Send + 'static> StreamHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, received: Received<T>) -> HandlerResult {
        match received {
            Received::Request(msg) => cx.send(&msg)?,
            Received::ParseError(e) => eprintln!("{}: bad request: {e}", cx.peer_addr()),
            Received::Timeout => {}
        }
        Ok(Next::recv())
    }
}

impl<T: Send + 'static> DatagramHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut DatagramContext<'_, T>, received: Received<T>) -> HandlerResult {
        match received {
            Received::Request(msg) => cx.send(&msg)?,
            Received::ParseError(e) => eprintln!("{}: bad request: {e}", cx.peer_addr()),
            Received::Timeout => {}
        }
        Ok(Next::Close)
    }
}

struct Args {
    driver: String,
    transport: String,
    framing: String,
    host: String,
    port: u16,
    tls: Option<(String, String)>,
    unix: Option<String>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        driver: "tokio".into(),
        transport: "tcp".into(),
        framing: "json".into(),
        host: "127.0.0.1".into(),
        port: 9000,
        tls: None,
        unix: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--driver" => a.driver = value()?,
            "--transport" => a.transport = value()?,
            "--framing" => a.framing = value()?,
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse()?,
            "--tls-cert" => cert = Some(value()?),
            "--tls-key" => key = Some(value()?),
            "--unix" => a.unix = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "usage: echo_server [--driver tokio|mio] [--transport tcp|udp] [--framing json|line|raw] [--host H] [--port P] [--tls-cert PEM --tls-key PEM] [--unix PATH]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    a.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if a.unix.is_some() && (a.transport != "tcp" || a.tls.is_some()) {
        return Err("--unix serves a plain stream socket (no --transport udp, no TLS)".into());
    }
    Ok(a)
}

fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn announce(addrs: &[impl Display]) {
    let mut out = std::io::stdout().lock();
    for a in addrs {
        let _ = writeln!(out, "listening on {a}");
    }
    let _ = out.flush();
}

/// Registers SIGINT and SIGTERM handlers now (before "listening on" is printed, so a signal
/// sent right after it is never missed) and resolves when one arrives.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Activates `$server`, prints `$addrs` (clients that come before the run serves wait in
/// the kernel's queue), serves until a signal, then shuts down gracefully.
macro_rules! serve_until_signal {
    ($server:expr, |$s:ident| $addrs:expr) => {{
        let server = $server;
        let stop = stop_signal();
        server.activate().await?;
        let $s = &server;
        announce(&$addrs);
        server.serve_with_shutdown(stop).await?;
        Ok(())
    }};
}

async fn serve_tcp<T, P>(args: &Args, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let mut builder = AsyncTcpServer::builder(protocol, Echo::<T>::new)
        .host(args.host.as_str())
        .port(args.port);
    if let Some((cert, key)) = &args.tls {
        builder = builder.tls(tls_config(cert, key)?);
    }
    serve_until_signal!(builder.build()?, |s| s.addresses())
}

async fn serve_udp<T, P>(args: &Args, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: DatagramServerProtocol<Request = T, Response = T>,
{
    if args.tls.is_some() {
        return Err("TLS is for --transport tcp".into());
    }
    let server = AsyncUdpServer::builder(protocol, Echo::<T>::new)
        .host(args.host.as_str())
        .port(args.port)
        .build()?;
    serve_until_signal!(server, |s| s.addresses())
}

#[cfg(unix)]
async fn serve_unix<T, P>(path: &str, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let server = easynet::tokio::AsyncUnixStreamServer::builder(protocol, Echo::<T>::new)
        .path(path)
        .build()?;
    serve_until_signal!(server, |s| Vec::from_iter(s.address()))
}

/// Prints the addresses when the blocking server is up.
struct Announce(easynet::mio::ServerHandle);

impl easynet::mio::EventSet for Announce {
    fn set(&self) {
        announce(&self.0.local_addresses());
    }
}

/// Shuts the blocking server down when a signal comes (tokio only listens for signals here).
fn shutdown_on_signal(handle: easynet::mio::ServerHandle) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = {
        let _guard = rt.enter();
        stop_signal()
    };
    std::thread::spawn(move || {
        rt.block_on(stop);
        handle.shutdown(None);
    });
    Ok(())
}

fn mio_tcp<T, P>(args: &Args, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let mut builder = easynet::mio::StandaloneTcpServer::builder(protocol, Echo::<T>::new)
        .host(args.host.as_str())
        .port(args.port);
    if let Some((cert, key)) = &args.tls {
        builder = builder.tls(tls_config(cert, key)?);
    }
    let server = builder.build()?;
    shutdown_on_signal(server.handle())?;
    server.serve_forever(Announce(server.handle()))?;
    Ok(())
}

fn mio_udp<T, P>(args: &Args, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: DatagramServerProtocol<Request = T, Response = T>,
{
    if args.tls.is_some() {
        return Err("TLS is for --transport tcp".into());
    }
    let server = easynet::mio::StandaloneUdpServer::builder(protocol, Echo::<T>::new)
        .host(args.host.as_str())
        .port(args.port)
        .build()?;
    shutdown_on_signal(server.handle())?;
    server.serve_forever(Announce(server.handle()))?;
    Ok(())
}

#[cfg(unix)]
fn mio_unix<T, P>(path: &str, protocol: P) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let server = easynet::mio::StandaloneUnixStreamServer::builder(protocol, Echo::<T>::new)
        .path(path)
        .build()?;
    shutdown_on_signal(server.handle())?;
    server.serve_forever(Announce(server.handle()))?;
    Ok(())
}

/// `--unix PATH`: a Unix stream socket on either driver.
#[cfg(unix)]
fn main_unix(args: &Args, path: &str) -> Result<(), BoxError> {
    type Json = serde_json::Value;
    if args.driver == "mio" {
        return match args.framing.as_str() {
            "json" => mio_unix(path, Stream::<_, _, Json, Json>::json_lines()),
            "line" => mio_unix(path, Stream::lines()),
            "raw" => mio_unix(path, Stream::raw()),
            f => Err(format!("unknown framing {f}").into()),
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.framing.as_str() {
            "json" => serve_unix(path, Stream::<_, _, Json, Json>::json_lines()).await,
            "line" => serve_unix(path, Stream::lines()).await,
            "raw" => serve_unix(path, Stream::raw()).await,
            f => Err(format!("unknown framing {f}").into()),
        }
    })
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    type Json = serde_json::Value;
    if let Some(path) = &args.unix {
        #[cfg(unix)]
        return main_unix(&args, path);
        #[cfg(not(unix))]
        return Err(format!("--unix {path}: Unix sockets need a Unix OS").into());
    }
    if args.driver == "mio" {
        return match (args.transport.as_str(), args.framing.as_str()) {
            ("tcp", "json") => mio_tcp(&args, Stream::<_, _, Json, Json>::json_lines()),
            ("tcp", "line") => mio_tcp(&args, Stream::lines()),
            ("tcp", "raw") => mio_tcp(&args, Stream::raw()),
            ("udp", "json") => mio_udp(&args, Datagram::<_, Json, Json>::json()),
            ("udp", "line") => mio_udp(&args, Datagram::lines()),
            ("udp", "raw") => mio_udp(&args, Datagram::raw()),
            (t, f) => Err(format!("unknown transport/framing {t}/{f}").into()),
        };
    }
    if args.driver != "tokio" {
        return Err(format!("unknown driver {:?} (tokio or mio)", args.driver).into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match (args.transport.as_str(), args.framing.as_str()) {
            ("tcp", "json") => serve_tcp(&args, Stream::<_, _, Json, Json>::json_lines()).await,
            ("tcp", "line") => serve_tcp(&args, Stream::lines()).await,
            ("tcp", "raw") => serve_tcp(&args, Stream::raw()).await,
            ("udp", "json") => serve_udp(&args, Datagram::<_, Json, Json>::json()).await,
            ("udp", "line") => serve_udp(&args, Datagram::lines()).await,
            ("udp", "raw") => serve_udp(&args, Datagram::raw()).await,
            (t, f) => Err(format!("unknown transport/framing {t}/{f}").into()),
        }
    })
}
