//! Runs the same portable handler on either driver, so one scenario tests both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::Stream;
use easynet::stream::StreamConfig;

/// Echoes lines; "timeout" on timeouts, "error" on parse errors; "quit" closes; "panic" panics.
/// The same type runs on both drivers unchanged.
pub struct Echo {
    pub timeout: Option<Duration>,
}

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, _: &mut StreamContext<'_, String>) -> HandlerResult {
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) if l == "panic" => panic!("requested panic"),
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send(&"timeout".to_owned())?,
            Received::ParseError(_) => cx.send(&"error".to_owned())?,
        }
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }
}

/// What a scenario may set.
#[derive(Clone, Default)]
pub struct Opts {
    pub timeout: Option<Duration>,
    pub write_high_water: Option<usize>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub handshake_timeout: Option<Duration>,
}

impl Opts {
    fn stream(&self) -> StreamConfig {
        let mut c = StreamConfig::default();
        if let Some(h) = self.write_high_water {
            c = c.with_write_high_water(h);
        }
        c
    }
}

/// A server running in the background; `stop` shuts it down and waits.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Running {
    pub fn stop(mut self) {
        if let Some(f) = self.stop.take() {
            f();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            f();
        }
    }
}

pub type Start = fn(Opts) -> Running;

#[cfg(feature = "tokio")]
pub fn tokio(opts: Opts) -> Running {
    use easynet::tokio::AsyncTcpServer;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let timeout = opts.timeout;
    let mut b = AsyncTcpServer::builder(Stream::lines(), move |_: &ConnInfo| Echo { timeout })
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3))
        .stream_config(opts.stream());
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = opts.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let server = b.build().unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = rt.spawn(async move { s.serve_forever(tx).await });
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|u| *u))
            .await
            .unwrap()
            .unwrap();
    });
    let addr = server.addresses()[0];
    Running {
        addr,
        stop: Some(Box::new(move || {
            rt.block_on(async {
                server.shutdown().await;
                task.await.unwrap().unwrap();
            });
        })),
    }
}

#[cfg(feature = "mio")]
pub fn mio(opts: Opts) -> Running {
    use easynet::mio::{ServerThread, StandaloneTcpServer};
    let timeout = opts.timeout;
    let mut b = StandaloneTcpServer::builder(Stream::lines(), move |_: &ConnInfo| Echo { timeout })
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3))
        .stream_config(opts.stream());
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = opts.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let mut thread = ServerThread::start(b.build().unwrap()).unwrap();
    let addr = thread.addresses()[0];
    Running {
        addr,
        stop: Some(Box::new(move || thread.join(None).unwrap())),
    }
}
