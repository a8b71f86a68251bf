//! Echo servers for the benchmarks: easynet on both drivers, and the hand-written baselines a
//! Rust user would write instead. Every server runs on one thread.
//!
//! ```text
//! bench-server IMPL [--port P] [--tls-dir DIR] [--workers N]
//!                                                   # prints "listening on ADDR"; stops on SIGTERM
//! bench-server gen-cert DIR                         # writes DIR/cert.der and DIR/key.der
//! ```
//!
//! IMPL: easynet-tokio-lines easynet-tokio-raw easynet-tokio-tls easynet-tokio-udp
//!       easynet-tokio-udp-async   (the UDP echo as an async handler, a routine per datagram)
//!       easynet-mio-lines easynet-mio-raw easynet-mio-tls easynet-mio-udp
//!       easynet-tokio-bytestring easynet-mio-bytestring   (lines as `ByteString`: no copy)
//!       easynet-mio-tls-bytestring   (TLS lines as `ByteString`)
//!       tokio-lines tokio-raw tokio-rustls tokio-udp
//!       mio-lines mio-raw mio-rustls mio-udp mio-udp-mmsg   (the hand-written mio loops:
//!       `mio_baseline`; the last on Linux only)
//!       mio-lines-string mio-rustls-string   (the mio line loops with a `String` per line)
//!
//! `--workers N` (easynet stream servers only): N mio event loops (`workers(N)`), or a tokio
//! multi-thread runtime with N worker threads instead of the `current_thread` runtime.

use std::error::Error;
mod mio_baseline;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{ByteString, Datagram, Stream};

type BoxError = Box<dyn Error + Send + Sync>;

struct Echo<T>(std::marker::PhantomData<fn() -> T>);

fn echo<T>(_: &ConnInfo) -> Echo<T> {
    Echo(std::marker::PhantomData)
}

impl<T: Send + 'static> StreamHandler for Echo<T> {
    type Request = T;
    type Response = T;
    fn handle(&mut self, cx: &mut StreamContext<'_, T>, r: Received<T>) -> HandlerResult {
        if let Received::Request(m) = r {
            cx.send(m)?;
        }
        Ok(Next::recv())
    }
}

impl<T: Send + 'static> DatagramHandler for Echo<T> {
    type Request = T;
    type Response = T;
    fn handle(&mut self, cx: &mut DatagramContext<'_, T>, r: Received<T>) -> HandlerResult {
        if let Received::Request(m) = r {
            cx.send(m)?;
        }
        Ok(Next::Close)
    }
}

fn announce(addr: SocketAddr) {
    println!("listening on {addr}");
    let _ = io::stdout().flush();
}

fn tls_files(dir: &str) -> Result<(Vec<u8>, Vec<u8>), BoxError> {
    Ok((
        std::fs::read(format!("{dir}/cert.der"))?,
        std::fs::read(format!("{dir}/key.der"))?,
    ))
}

fn server_config(dir: &str) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    let (cert, key) = tls_files(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )?;
    Ok(Arc::new(config))
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let which = args
        .next()
        .ok_or("usage: bench-server IMPL [--port P] [--tls-dir DIR]")?;
    if which == "gen-cert" {
        let dir = args.next().ok_or("gen-cert DIR")?;
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(format!("{dir}/cert.der"), c.cert.der())?;
        std::fs::write(format!("{dir}/key.der"), c.signing_key.serialize_der())?;
        return Ok(());
    }
    let (mut port, mut tls_dir) = (0u16, String::from("target/bench-tls"));
    let mut workers = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().ok_or("--port P")?.parse()?,
            "--tls-dir" => tls_dir = args.next().ok_or("--tls-dir DIR")?,
            "--workers" => workers = Some(args.next().ok_or("--workers N")?.parse::<usize>()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match which.as_str() {
        "easynet-mio-lines" => {
            easynet_mio_tcp(addr, Stream::lines(), echo::<String>, None, workers)
        }
        "easynet-mio-bytestring" => easynet_mio_tcp(
            addr,
            Stream::lines_shared(),
            echo::<ByteString>,
            None,
            workers,
        ),
        "easynet-mio-raw" => easynet_mio_tcp(addr, Stream::raw(), echo::<Bytes>, None, workers),
        "easynet-mio-tls" => easynet_mio_tcp(
            addr,
            Stream::lines(),
            echo::<String>,
            Some(server_config(&tls_dir)?),
            workers,
        ),
        "easynet-mio-tls-bytestring" => easynet_mio_tcp(
            addr,
            Stream::lines_shared(),
            echo::<ByteString>,
            Some(server_config(&tls_dir)?),
            workers,
        ),
        "easynet-mio-udp" => {
            let server = easynet::blocking::UdpServer::builder(Datagram::raw(), echo::<Bytes>)
                .host("127.0.0.1")
                .port(port)
                .build()?;
            let handle = server.handle();
            stop_on_sigterm(move || handle.shutdown(None));
            server.serve_notify(Announce(server.handle()))?;
            Ok(())
        }
        "mio-lines" => mio_baseline::serve_tcp(addr, mio_baseline::Kind::Lines, None),
        "mio-lines-string" => mio_baseline::serve_tcp(addr, mio_baseline::Kind::LinesString, None),
        "mio-raw" => mio_baseline::serve_tcp(addr, mio_baseline::Kind::Raw, None),
        "mio-rustls-string" => mio_baseline::serve_tcp(
            addr,
            mio_baseline::Kind::TlsLinesString,
            Some(server_config(&tls_dir)?),
        ),
        "mio-rustls" => mio_baseline::serve_tcp(
            addr,
            mio_baseline::Kind::TlsLines,
            Some(server_config(&tls_dir)?),
        ),
        "mio-udp" => mio_baseline::serve_udp(addr),
        #[cfg(target_os = "linux")]
        "mio-udp-mmsg" => mio_baseline::serve_udp_mmsg(addr),
        other => {
            let rt = match workers {
                Some(n) => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n.max(1))
                    .enable_all()
                    .build()?,
                None => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            };
            rt.block_on(tokio_main(other, addr, &tls_dir))
        }
    }
}

struct Announce(easynet::blocking::ServerHandle);

impl easynet::blocking::EventSet for Announce {
    fn set(&self) {
        if let Some(a) = self.0.addresses().first() {
            announce(*a);
        }
    }
}

/// Calls `stop` when SIGTERM arrives (a small runtime on its own thread listens for it).
fn stop_on_sigterm(stop: impl FnOnce() + Send + 'static) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut term = {
        let _g = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM")
    };
    std::thread::spawn(move || {
        rt.block_on(term.recv());
        stop();
    });
}

fn easynet_mio_tcp<P, T>(
    addr: SocketAddr,
    protocol: P,
    service: fn(&ConnInfo) -> Echo<T>,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: Option<usize>,
) -> Result<(), BoxError>
where
    T: Send + 'static,
    P: easynet::protocol::StreamServerProtocol<Request = T, Response = T>,
{
    let mut b = easynet::blocking::TcpServer::builder(protocol, service)
        .host("127.0.0.1")
        .port(addr.port())
        .log_client_connection(false)
        .workers(workers.unwrap_or(1));
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    let server = b.build()?;
    let handle = server.handle();
    stop_on_sigterm(move || handle.shutdown(None));
    server.serve_notify(Announce(server.handle()))?;
    Ok(())
}

/// The datagram echo as an async handler: one routine per datagram, which receives it and
/// sends it back.
struct AsyncEcho;

impl easynet::aio::AsyncDatagramHandler for AsyncEcho {
    type Request = Bytes;
    type Response = Bytes;

    async fn handle(
        &mut self,
        peer: &mut easynet::aio::DatagramPeer<Bytes, Bytes>,
    ) -> Result<(), easynet::handler::HandlerError> {
        let data = peer.recv().await?;
        peer.send(&data).await?;
        Ok(())
    }
}

async fn tokio_main(which: &str, addr: SocketAddr, tls_dir: &str) -> Result<(), BoxError> {
    use easynet::aio::{AsyncTcpServer, AsyncUdpServer};
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    match which {
        "easynet-tokio-lines"
        | "easynet-tokio-raw"
        | "easynet-tokio-tls"
        | "easynet-tokio-bytestring" => {
            macro_rules! serve {
                ($server:expr) => {{
                    let server = $server;
                    server.activate().await?;
                    announce(server.addresses()[0]);
                    let s = server.clone();
                    let run = tokio::spawn(async move { s.serve().await });
                    term.recv().await;
                    server.shutdown().await;
                    run.await??;
                }};
            }
            match which {
                "easynet-tokio-raw" => serve!(
                    AsyncTcpServer::builder(Stream::raw(), echo::<Bytes>)
                        .host("127.0.0.1")
                        .port(addr.port())
                        .log_client_connection(false)
                        .build()?
                ),
                "easynet-tokio-bytestring" => serve!(
                    AsyncTcpServer::builder(Stream::lines_shared(), echo::<ByteString>)
                        .host("127.0.0.1")
                        .port(addr.port())
                        .log_client_connection(false)
                        .build()?
                ),
                "easynet-tokio-tls" => serve!(
                    AsyncTcpServer::builder(Stream::lines(), echo::<String>)
                        .host("127.0.0.1")
                        .port(addr.port())
                        .log_client_connection(false)
                        .tls(server_config(tls_dir)?)
                        .build()?
                ),
                _ => serve!(
                    AsyncTcpServer::builder(Stream::lines(), echo::<String>)
                        .host("127.0.0.1")
                        .port(addr.port())
                        .log_client_connection(false)
                        .build()?
                ),
            }
            Ok(())
        }
        "easynet-tokio-udp" => {
            let server = AsyncUdpServer::builder(Datagram::raw(), echo::<Bytes>)
                .host("127.0.0.1")
                .port(addr.port())
                .build()?;
            server.activate().await?;
            announce(server.addresses()[0]);
            let s = server.clone();
            let run = tokio::spawn(async move { s.serve().await });
            term.recv().await;
            server.shutdown().await;
            run.await??;
            Ok(())
        }
        "easynet-tokio-udp-async" => {
            let server = AsyncUdpServer::builder(Datagram::raw(), |_: &ConnInfo| AsyncEcho)
                .host("127.0.0.1")
                .port(addr.port())
                .build_async()?;
            server.activate().await?;
            announce(server.addresses()[0]);
            let s = server.clone();
            let run = tokio::spawn(async move { s.serve().await });
            term.recv().await;
            server.shutdown().await;
            run.await??;
            Ok(())
        }
        "tokio-lines" | "tokio-raw" | "tokio-rustls" => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            announce(listener.local_addr()?);
            let acceptor = match which {
                "tokio-rustls" => Some(tokio_rustls::TlsAcceptor::from(server_config(tls_dir)?)),
                _ => None,
            };
            let raw = which == "tokio-raw";
            loop {
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        let _ = sock.set_nodelay(true);
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match acceptor {
                                Some(a) => {
                                    if let Ok(tls) = a.accept(sock).await {
                                        let _ = framed_lines(tls).await;
                                    }
                                }
                                None if raw => { let _ = raw_echo(sock).await; }
                                None => { let _ = framed_lines(sock).await; }
                            }
                        });
                    }
                }
            }
        }
        "tokio-udp" => {
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            announce(socket.local_addr()?);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    r = socket.recv_from(&mut buf) => {
                        let (n, from) = r?;
                        let _ = socket.send_to(&buf[..n], from).await;
                    }
                }
            }
        }
        other => Err(format!("unknown implementation {other}").into()),
    }
}

/// The tokio-util baseline: `Framed<_, LinesCodec>`, one `send` per line.
async fn framed_lines<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    sock: S,
) -> Result<(), BoxError> {
    use futures_util::{SinkExt, StreamExt};
    let mut framed = tokio_util::codec::Framed::new(
        sock,
        tokio_util::codec::LinesCodec::new_with_max_length(1 << 20),
    );
    while let Some(line) = framed.next().await {
        framed.send(line?).await?;
    }
    Ok(())
}

/// The raw tokio baseline: read, write it all back.
async fn raw_echo(mut sock: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sock.write_all(&buf[..n]).await?;
    }
}
