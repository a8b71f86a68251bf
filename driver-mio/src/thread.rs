//! [`ServerThread`]: a blocking server on a thread of its own (EasyNetwork's
//! NetworkServerThread), handy in tests and in programs that do other work meanwhile.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use easynet_common::EventSet;

use crate::{ServerError, ServerHandle};

/// A blocking server that [`ServerThread`] can run.
pub trait BlockingServer: Send + 'static {
    /// A handle on the server.
    fn handle(&self) -> ServerHandle;
    /// Serves until shut down, setting `is_up` once serving; see the servers'
    /// `serve_notify`.
    fn serve_notify(&self, is_up: &dyn EventSet) -> Result<(), ServerError>;
}

/// A server running on its own thread.
///
/// ```no_run
/// # use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// # use easynet_core::protocol::Stream;
/// # struct Echo;
/// # impl StreamHandler for Echo { type Request = String; type Response = String;
/// #   fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult { Ok(Next::recv()) } }
/// use easynet_mio::{ServerThread, TcpServer};
///
/// let server = TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
///     .host("127.0.0.1")
///     .build()
///     .unwrap();
/// let mut thread = ServerThread::start(server).unwrap(); // returns once serving
/// let addr = thread.addresses()[0];
/// // ... talk to `addr` ...
/// thread.join(None).unwrap();
/// ```
#[derive(Debug)]
pub struct ServerThread {
    handle: ServerHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ServerThread {
    /// Starts `server` on a new thread and returns once it is serving, or with the error that
    /// stopped it from serving (bind failure, `on_start` error, ...).
    pub fn start<T: BlockingServer>(server: T) -> Result<Self, ServerError> {
        let handle = server.handle();
        let (up_tx, up) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("easynet-server".into())
            .spawn(move || server.serve_notify(&up_tx))
            .map_err(ServerError::Listener)?;
        // The sender is dropped when `serve` returns, so this never waits for ever.
        match up.recv() {
            Ok(()) => Ok(Self {
                handle,
                thread: Some(thread),
            }),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(Self {
                    handle,
                    thread: None,
                }),
                Err(_) => Err(ServerError::Listener(std::io::Error::other(
                    "server thread panicked",
                ))),
            },
        }
    }

    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The bound addresses while serving.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.handle.addresses()
    }

    /// Shuts the server down (bounded by `timeout`, default the server's) and joins the
    /// thread; returns the run's result. Calling it again returns `Ok(())`.
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<(), ServerError> {
        self.handle.shutdown(timeout);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(ServerError::Listener(std::io::Error::other(
                    "server thread panicked",
                )))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join(None);
        }
    }
}
