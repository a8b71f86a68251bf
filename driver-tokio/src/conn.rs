//! The task that drives one accepted connection: socket readiness in, [`Session`] out.
//!
//! Written once against [`ConnStream`], which TCP and Unix streams both implement.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

use easynet_core::stream::{Action, CloseHow, Driven};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio::sync::watch;

/// The socket calls a connection task and the async clients make; TCP and Unix streams
/// (and [`StreamSocket`](crate::StreamSocket), either of them) have them.
pub(crate) trait ConnStream: Send + Sync + 'static {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Read readiness without a waiter future (one waker slot, this task's).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Write readiness without a waiter future (one waker slot, this task's).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends end-of-stream (FIN).
    fn shutdown_write(&mut self) -> impl Future<Output = ()> + Send;
    /// Makes the close a reset where the transport has one (SO_LINGER 0 on TCP).
    fn set_abortive(&self);
    /// Bytes the kernel still holds for the peer, if the OS can tell.
    fn unsent(&self) -> Option<usize>;
}

macro_rules! conn_stream {
    ($t:ty) => {
        impl ConnStream for $t {
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            async fn shutdown_write(&mut self) {
                let _ = AsyncWriteExt::shutdown(self).await;
            }
            fn set_abortive(&self) {
                easynet_common::set_abortive(self);
            }
            fn unsent(&self) -> Option<usize> {
                easynet_common::unsent_bytes(self)
            }
        }
    };
}

conn_stream!(TcpStream);
#[cfg(unix)]
conn_stream!(UnixStream);

/// Reads in a row without waiting before the task yields to others.
const DIRECT_READ_BUDGET: u32 = 32;

thread_local! {
    // One read buffer per worker thread, not per connection: an idle connection costs no
    // read buffer. Safe because nothing awaits between the read and `handle_read`.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A socket as a non-blocking [`io::Write`] (`WouldBlock` when full), for
/// [`Driven::write_to`].
pub(crate) struct TryWriter<'a, St>(pub(crate) &'a St);

impl<St: ConnStream> io::Write for TryWriter<'_, St> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The driver's clock: tokio's, so paused-time tests work.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Reads what is available into the session; false when the socket would block.
pub(crate) fn read_into<St, F>(stream: &St, read_size: usize, mut feed: F) -> bool
where
    St: ConnStream,
    F: FnMut(io::Result<&[u8]>),
{
    READ_BUF.with_borrow_mut(|buf| {
        if buf.len() < read_size {
            buf.resize(read_size, 0);
        }
        match stream.try_read(&mut buf[..read_size]) {
            Ok(n) => {
                feed(Ok(&buf[..n]));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                feed(Err(e));
                true
            }
        }
    })
}

/// Drives one server connection over `stream` until the core says to close it: the one
/// loop of this runtime. Every rule is the core's; this moves bytes, readiness and time.
pub(crate) async fn drive<St: ConnStream, D: Driven>(
    mut stream: St,
    mut session: D,
    mut shutdown: watch::Receiver<Option<Instant>>,
) -> CloseHow {
    let mut shutdown_seen = false;
    let mut maybe_readable = true;
    let mut maybe_writable = true;
    let mut direct_reads = 0u32;
    // One `changed()` future for the whole connection: registered with the channel once,
    // not made and dropped at every wait.
    let mut shutdown_rx = shutdown.clone();
    let shutdown_changed = async move { shutdown_rx.changed().await.is_ok() };
    tokio::pin!(shutdown_changed);
    let mut shutdown_fired = false;
    loop {
        if !shutdown_seen && let Some(deadline) = *shutdown.borrow_and_update() {
            shutdown_seen = true;
            session.shutdown(now(), deadline);
        }
        let want = match session.poll_action(now()) {
            Action::Io(want) => want,
            Action::ShutdownWrite => {
                stream.shutdown_write().await;
                maybe_readable = true; // the linger reads now, whatever the cache says
                continue;
            }
            Action::QueryUnsent => {
                session.handle_unsent(now(), stream.unsent());
                continue;
            }
            Action::Close(how) => {
                if how == CloseHow::Abort {
                    stream.set_abortive();
                }
                return how;
            }
            _ => {
                tracing::debug!("unknown action; closing");
                stream.set_abortive();
                return CloseHow::Abort;
            }
        };
        if want.write && maybe_writable {
            match session.write_to(&mut TryWriter(&stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => maybe_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => session.handle_io_error(now()),
            }
            continue;
        }
        // Read again at once while the socket has data, as a plain `read().await` loop would;
        // only a read that would block waits in `select!`. Yield now and then to stay fair.
        if want.read && maybe_readable {
            direct_reads += 1;
            if direct_reads > DIRECT_READ_BUDGET {
                direct_reads = 0;
                tokio::task::yield_now().await;
            }
            maybe_readable = read_once(&stream, &mut session);
            continue;
        }
        if want.resume {
            // The turn's handler budget ran out: the other connections go first.
            tokio::task::yield_now().await;
            session.resume(now());
            continue;
        }
        let deadline = want.timeout.map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            res = std::future::poll_fn(|cx| stream.poll_read_ready(cx)), if want.read => {
                if res.is_err() {
                    session.handle_io_error(now());
                    continue;
                }
                direct_reads = 0;
                maybe_readable = read_once(&stream, &mut session);
            }
            res = std::future::poll_fn(|cx| stream.poll_write_ready(cx)), if want.write => {
                match res {
                    Ok(()) => maybe_writable = true,
                    Err(_) => session.handle_io_error(now()),
                }
            }
            () = std::future::poll_fn(|cx| session.poll_wake(cx)) => session.resume(now()),
            // After the socket: a wake-up for data does not poll the channel again (the
            // loop's `borrow_and_update` sees a shutdown at the next turn anyway).
            ok = &mut shutdown_changed, if !shutdown_seen && !shutdown_fired => {
                shutdown_fired = true;
                if !ok {
                    // The server is gone without a shutdown: stop now.
                    session.shutdown(now(), now());
                    shutdown_seen = true;
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => session.handle_timeout(now()),
        }
    }
}

/// Reads once into the session; false when the socket would block.
fn read_once<St: ConnStream, D: Driven>(stream: &St, session: &mut D) -> bool {
    if let Some(buf) = session.read_buffer() {
        return match stream.try_read_buf(buf) {
            Ok(n) => {
                session.handle_read_in_place(now(), n);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                session.handle_io_error(now());
                true
            }
        };
    }
    let read_size = session.read_size();
    read_into(stream, read_size, |r| match r {
        Ok([]) => session.handle_eof(now()),
        Ok(data) => session.handle_read(now(), data),
        Err(_) => session.handle_io_error(now()),
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}
