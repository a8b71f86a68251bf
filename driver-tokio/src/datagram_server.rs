//! What the UDP and Unix datagram servers share: the run (one task per socket, teardown)
//! and the socket loop driving the core's [`DatagramServer`], written once against
//! [`DgramSocket`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_common::{DATAGRAM_BATCH, DatagramBuffers, ReadAhead};
use easynet_core::datagram::{DatagramConfig, DatagramServer, Output, Transmit};
use easynet_core::handler::{DatagramHandler, Service};
use easynet_core::protocol::DatagramServerProtocol;
use easynet_core::stats::SocketDrops;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_datagram;
use crate::conn::now;
use crate::dgram::{DgramSocket, Event, Wait};
use crate::shell::Shell;
use crate::{DropCounter, EventSet, ServerError};
use easynet_core::datagram::AsyncDatagramHandler;

/// Datagrams read per wake-up before the loop waits again (each batch's answers go out
/// before the next read, in both loops).
pub(crate) const READ_BUDGET: usize = 32;

thread_local! {
    // One set of receive buffers per worker thread, not per socket or peer: datagrams
    // read in place (UDP on Linux: in batches) while nothing read before is held.
    static RECV_BUFFERS: RefCell<DatagramBuffers> = RefCell::new(DatagramBuffers::new());
}

/// Serves one bound socket until cancelled.
pub(crate) type ServeSocket<D> = Arc<
    dyn Fn(
            Arc<D>,
            CancellationToken,
            CancellationToken,
        ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>>
        + Send
        + Sync,
>;

/// Runs portable handlers on each socket.
pub(crate) fn portable<S, P, D>(
    service: Arc<S>,
    protocol: Arc<P>,
    config: DatagramConfig,
    drops: DropCounter,
) -> ServeSocket<D>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    Arc::new(move |socket, cancel, closed| {
        let endpoint = socket.local().and_then(|local| {
            DatagramServer::new(service.clone(), protocol.clone(), local, config.clone())
                .map_err(io::Error::other)
        });
        let drops = drops.clone();
        Box::pin(async move { serve_socket(socket, endpoint?, cancel, closed, drops).await })
    })
}

/// Runs async handlers on each socket.
pub(crate) fn asynchronous<S, P, D>(
    service: Arc<S>,
    protocol: Arc<P>,
    config: DatagramConfig,
    drops: DropCounter,
) -> ServeSocket<D>
where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    Arc::new(move |socket, cancel, closed| {
        let (service, protocol, config) = (service.clone(), protocol.clone(), config.clone());
        Box::pin(async_datagram::serve_socket(
            socket,
            service,
            protocol,
            config,
            cancel,
            closed,
            drops.clone(),
        ))
    })
}

/// A datagram server's shared state, whatever its sockets are.
pub(crate) struct DgramCore<S, D> {
    pub service: Arc<S>,
    pub serve_socket: ServeSocket<D>,
    pub shutdown_timeout: Duration,
    pub shell: Arc<Shell<D>>,
    /// Every datagram the sockets' loops dropped.
    pub drops: DropCounter,
}

impl<S: Service, D: DgramSocket> DgramCore<S, D> {
    pub(crate) fn new(
        service: Arc<S>,
        serve_socket: ServeSocket<D>,
        shutdown_timeout: Duration,
        drops: DropCounter,
        recorder: easynet_core::stats::Recorder,
    ) -> Self {
        Self {
            service,
            serve_socket,
            shutdown_timeout,
            shell: Arc::new(Shell::new(shutdown_timeout, recorder)),
            drops,
        }
    }

    /// Serves until shutdown, `stop` or close.
    pub(crate) async fn serve_notify(
        self: &Arc<Self>,
        bind: impl FnOnce() -> Result<Vec<Arc<D>>, ServerError>,
        is_up: impl EventSet,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let this = self.clone();
        self.shell
            .run(bind, is_up, stop, move |_, cancel, sockets| async move {
                this.run(&cancel, sockets).await
            })
            .await
    }

    async fn run(
        &self,
        cancel: &CancellationToken,
        sockets: Vec<Arc<D>>,
    ) -> Result<(), ServerError> {
        let service = self.service.clone();
        self.shell.init(&*service)?;
        let addrs: Vec<String> = sockets
            .iter()
            .filter_map(|s| s.local().ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!("Start serving at {}", addrs.join(", "));
        let mut tasks = JoinSet::new();
        for socket in sockets {
            let (cancel, closed) = (cancel.clone(), self.shell.closed.clone());
            tasks.spawn((self.serve_socket)(socket, cancel, closed));
        }
        self.shell.serving();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(ServerError::Listener(e))),
                Err(e) => failure = failure.or(Some(ServerError::Listener(io::Error::other(e)))),
            }
            cancel.cancel(); // one socket failing stops the run
        }
        crate::stream_server::teardown(service, self.shutdown_timeout).await;
        tracing::info!("Server stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Logs a datagram from a sender that cannot be answered (an unnamed Unix socket); the
/// server drops it (counted in `drops`) and goes on. Rate-limited: the 1st, 2nd, 4th,
/// 8th... of a socket.
pub(crate) fn unanswerable(count: &mut u64, drops: &DropCounter) {
    drops.add(1);
    *count += 1;
    if count.is_power_of_two() {
        tracing::warn!(
            dropped = *count,
            "datagram from an unnamed Unix socket dropped: it cannot be answered (bind the client socket)"
        );
    }
}

/// What a socket loop keeps from one read to the next.
pub(crate) struct Reads {
    /// The kernel's drop count, read with the datagrams (every read asks).
    pub(crate) socket_drops: SocketDrops,
    /// Datagrams dropped because their sender cannot be answered.
    pub(crate) unnamed: u64,
    /// Datagrams the next read asks for (batched reads).
    pub(crate) ahead: ReadAhead,
}

impl Reads {
    pub(crate) fn new(socket_drops: SocketDrops) -> Self {
        Self {
            socket_drops,
            unnamed: 0,
            ahead: ReadAhead::new(),
        }
    }
}

/// One read of the socket (a batch of up to `reads.ahead` where it reads in batches),
/// without waiting, into `deliver`; a datagram that cannot be answered is counted and
/// dropped. How many datagrams it took (a receive error counts one), `None` when the socket
/// would block.
pub(crate) fn read_once<D: DgramSocket>(
    socket: &D,
    reads: &mut Reads,
    drops: &DropCounter,
    mut deliver: impl FnMut(D::Addr, BytesMut),
) -> Option<usize> {
    let unnamed = &mut reads.unnamed;
    let received = RECV_BUFFERS.with_borrow_mut(|buffers| {
        socket.try_recv_batch(buffers, reads.ahead.next(), |data, from| match from {
            Some(from) => deliver(from, data),
            None => unanswerable(unnamed, drops),
        })
    });
    match received {
        Ok((n, count)) => {
            reads.ahead.got(n);
            if let Some(count) = count {
                reads.socket_drops.report(count);
            }
            Some(n)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            reads.ahead.drained();
            None
        }
        // ICMP errors (connection refused from an earlier send) concern one peer.
        Err(e) => {
            tracing::debug!(error = %e, "datagram receive error");
            Some(1)
        }
    }
}

/// Sends what the endpoint's handlers produced, a batch at a time, until it is idle; its
/// next timer. `batch` is only its scratch space, empty between calls.
///
/// Cancel safety: dropped while it waits for room, the datagrams of its batch not sent yet
/// are lost ([`DgramSocket::send_all`]'s; the core keeps no copy), and those sent stay sent:
/// a later call starts from what the endpoint holds next and sends nothing twice.
async fn send_answers<S, P, D>(
    endpoint: &mut DatagramServer<S, P, D::Addr>,
    socket: &D,
    batch: &mut Vec<Transmit<D::Addr>>,
) -> Option<Instant>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    // Left over only by a call dropped part-way: some of it was sent.
    batch.clear();
    loop {
        let idle = loop {
            if batch.len() == DATAGRAM_BATCH {
                break None;
            }
            match endpoint.poll_output() {
                Output::Transmit(t) => batch.push(t),
                Output::Idle { next_timeout } => break Some(next_timeout),
                _ => {}
            }
        };
        socket.send_all(batch).await;
        // Sent ones let go of the buffer their request was read into.
        batch.clear();
        if let Some(next_timeout) = idle {
            return next_timeout;
        }
    }
}

/// One socket's loop: datagrams in, handler responses out, timers in between.
///
/// Cancel safety: it is meant to be stopped with `cancel` or `closed`, after which it sends
/// what the core still holds without waiting and returns. Dropped instead (its task
/// aborted) while it waits for room to send, the batch's datagrams not sent yet are lost
/// ([`DgramSocket::send_all`]'s cancel safety; the core keeps no copy).
async fn serve_socket<S, P, D>(
    socket: Arc<D>,
    mut endpoint: DatagramServer<S, P, D::Addr>,
    cancel: CancellationToken,
    closed: CancellationToken,
    drops: DropCounter,
) -> io::Result<()>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    // Drops from before this run (a given socket, an earlier run) are not ours.
    let mut reads = Reads::new(SocketDrops::starting_at(
        endpoint.recorder().clone(),
        socket.drop_count().unwrap_or(0),
    ));
    let mut counted = 0;
    let mut batch = Vec::with_capacity(DATAGRAM_BATCH);
    let mut wait = Wait::new(&cancel, &closed);
    loop {
        let dropped = endpoint.drops();
        drops.add(dropped - counted);
        counted = dropped;
        let next_timeout = send_answers(&mut endpoint, &*socket, &mut batch).await;
        // Pushed datagrams wait in the endpoint; the next drain sends them.
        let event = wait
            .wait(&*socket, next_timeout, |cx| endpoint.poll_wake(cx))
            .await;
        match event {
            Event::Stop => break,
            Event::Readable(res) => {
                res?;
                let mut read = 0;
                while read < READ_BUDGET {
                    let deliver = |from, data| endpoint.handle_datagram(now(), from, data);
                    match read_once(&*socket, &mut reads, &drops, deliver) {
                        Some(n) => read += n,
                        None => break,
                    }
                    // A batch's answers go out before the next read: its peers go on at
                    // once, and the buffer it was read into is free again, so the next
                    // read is a batch in place too, not a single one copied (as mio's loop).
                    send_answers(&mut endpoint, &*socket, &mut batch).await;
                }
            }
            Event::Timer => endpoint.handle_timeout(now()),
            Event::Woken => {}
        }
    }
    endpoint.shutdown(now());
    drops.add(endpoint.drops() - counted);
    while let Output::Transmit(t) = endpoint.poll_output() {
        let _ = socket.try_send_to(&t.data, &t.to);
    }
    Ok(())
}

/// The `datagram_config`, `build`, `build_async` and `finish` methods of a datagram server
/// builder with `service`, `protocol` and `cfg` fields.
macro_rules! datagram_builder_methods {
    ($server:ident, $socket:ty) => {
        /// Per-peer queue bound and idle eviction.
        pub fn datagram_config(mut self, config: DatagramConfig) -> Self {
            self.cfg.datagram = config;
            self
        }

        /// Makes a server whose peers run portable [`DatagramHandler`]s (nothing is bound
        /// yet).
        pub fn build(self) -> Result<$server<S, P>, ConfigError>
        where
            S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
        {
            self.finish($crate::datagram_server::portable)
        }

        /// Makes a server whose peers run [`AsyncDatagramHandler`]s (nothing is bound yet).
        pub fn build_async(self) -> Result<$server<S, P>, ConfigError>
        where
            S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
        {
            self.finish($crate::datagram_server::asynchronous)
        }

        fn finish(
            self,
            serve: impl FnOnce(
                Arc<S>,
                Arc<P>,
                DatagramConfig,
                $crate::DropCounter,
            ) -> $crate::datagram_server::ServeSocket<$socket>,
        ) -> Result<$server<S, P>, ConfigError> {
            self.cfg.validate()?;
            let service = Arc::new(self.service);
            let drops = $crate::DropCounter::default();
            // Every endpoint counts into the server machine's recorder.
            let recorder = easynet_core::stats::Recorder::new();
            let mut cfg = self.cfg;
            cfg.datagram.recorder = Some(recorder.clone());
            let serve_socket = serve(
                service.clone(),
                Arc::new(self.protocol),
                cfg.datagram.clone(),
                drops.clone(),
            );
            Ok($server {
                core: Arc::new($crate::datagram_server::DgramCore::new(
                    service,
                    serve_socket,
                    cfg.shutdown_timeout,
                    drops,
                    recorder,
                )),
                cfg: Arc::new(cfg),
                _protocol: std::marker::PhantomData,
            })
        }
    };
}
pub(crate) use datagram_builder_methods;

/// `dropped_datagrams()` on a datagram server with a `core: Arc<DgramCore<..>>` field.
macro_rules! dropped_datagrams {
    ($server:ident) => {
        impl<S, P> $server<S, P> {
            /// Datagrams dropped so far: a peer's queue was full, datagrams were still queued
            /// at shutdown, or (Unix) the sender was an unnamed socket that cannot be
            /// answered. A handle that stays current.
            pub fn dropped_datagrams(&self) -> $crate::DropCounter {
                self.core.drops.clone()
            }

            /// A snapshot of the server's counters (datagrams and bytes in and out,
            /// requests, parse errors, handler errors and panics, drops); cheap, callable
            /// from anywhere at any time.
            pub fn stats(&self) -> easynet_core::stats::ServerStats {
                let mut stats = self.core.shell.stats();
                // Includes what only the socket loops see (unnamed Unix senders).
                stats.dropped_datagrams = stats.dropped_datagrams.max(self.core.drops.get());
                stats
            }
        }
    };
}
pub(crate) use dropped_datagrams;

#[cfg(test)]
mod tests;
