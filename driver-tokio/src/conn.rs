//! The task that drives one accepted connection: socket readiness in, [`Session`] out.
//!
//! Written once against [`ConnStream`], which TCP and Unix streams both implement.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

use easynet_core::stream::{Action, CloseHow, Driven, Want};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::orders::Orders;

/// The socket calls a connection task and the async clients make; TCP and Unix streams
/// (and [`StreamSocket`](crate::StreamSocket), either of them) have them.
pub(crate) trait ConnStream: Send + Sync + 'static {
    /// Reads without waiting: the bytes read (0: end of stream) and whether the read
    /// drained the socket (see [`short_read`]).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<(usize, bool)>;
    /// As [`try_read`](Self::try_read), into `buf`'s spare capacity.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<(usize, bool)>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    /// Read readiness without a waiter future (one waker slot, this task's).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Write readiness without a waiter future (one waker slot, this task's).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
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
            fn try_read(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
                let (len, mut short) = (buf.len(), 0);
                // One readiness check: the read itself is the socket's own.
                let res = <$t>::try_io(self, Interest::READABLE, || {
                    let read = std::io::Read::read(&mut &*socket2::SockRef::from(self), buf);
                    short_read(len, &mut short, read)
                });
                drained(res, short)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<(usize, bool)> {
                let (len, mut short) = (buf.capacity() - buf.len(), 0);
                let res = <$t>::try_io(self, Interest::READABLE, || {
                    short_read(len, &mut short, <$t>::try_read_buf(self, buf))
                });
                drained(res, short)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
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

/// A read of up to `len` bytes (`res`) under tokio's own rule for stream sockets (its
/// `poll_read` does the same): a read that returns less than it asked for emptied the
/// kernel's buffer, so it is reported to `try_io` as one that would block, which clears the
/// socket's read readiness; the loop then waits for the next readiness event instead of
/// making a read that would block (one system call per request less). `try_io` clears it
/// against the readiness event it saw before the read: bytes that arrive after the read set
/// it again, nothing is missed. The short read's length goes to `short`.
fn short_read(len: usize, short: &mut usize, res: io::Result<usize>) -> io::Result<usize> {
    let n = res?;
    if n > 0 && n < len {
        *short = n;
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

/// `try_io`'s answer after [`short_read`]: the bytes read and true when the read drained
/// the socket.
fn drained(res: io::Result<usize>, short: usize) -> io::Result<(usize, bool)> {
    match res {
        Ok(n) => Ok((n, false)),
        Err(_) if short > 0 => Ok((short, true)),
        Err(e) => Err(e),
    }
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

/// Reads what is available into the session; false when the socket would block or the read
/// drained it.
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
            Ok((n, drained)) => {
                feed(Ok(&buf[..n]));
                !drained
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

/// What the loop knows of a socket between turns (edge-triggered readiness, as tokio's),
/// and the time of the last wake-up: the clock is read once per wake-up, not per step.
pub(crate) struct Readiness {
    now: Instant,
    /// A read may find bytes (last read did not block).
    readable: bool,
    /// A write may be taken (last write did not block).
    writable: bool,
    /// Reads in a row without waiting, for fairness.
    direct_reads: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            now: now(),
            readable: true,
            writable: true,
            direct_reads: 0,
        }
    }
}

impl Readiness {
    /// Reads the clock: a caller that did not wait in [`turn`] (a client's next call).
    pub(crate) fn touch(&mut self) {
        self.now = now();
    }
}

/// What one [`turn`] did.
pub(crate) enum Turn {
    /// Bytes moved, a deadline fired or the connection was woken: ask again.
    Progress,
    /// The caller's own future completed.
    Other,
    /// The socket was closed this way; the connection is done.
    Closed(CloseHow),
    /// Nothing to do and nothing to wait for.
    Idle,
}

/// One turn of this runtime's one connection loop, for servers (portable and async
/// handlers) and clients alike: does what the core asks next ([`Action`]) and, when it
/// must wait, waits once for what it wants (readiness, its deadline, an outside wake-up)
/// or `other`. Every rule is the core's; this moves bytes, readiness and time. `eager`
/// goes on after each step that did not wait (a server: nothing to look at in between);
/// otherwise the turn returns after each step (a client checks what arrived).
pub(crate) async fn turn<St, D, O>(
    stream: &mut St,
    session: &mut D,
    ready: &mut Readiness,
    other: Option<std::pin::Pin<&mut O>>,
    eager: bool,
) -> Turn
where
    St: ConnStream,
    D: Driven,
    O: Future<Output = ()>,
{
    // The `Want` a write left valid (`Driven::want_after_write`).
    let mut kept: Option<Want> = None;
    loop {
        let action = match kept.take() {
            Some(want) => Action::Io(want),
            None => session.poll_action(ready.now),
        };
        let want = match action {
            Action::Io(want) => want,
            Action::ShutdownWrite => {
                stream.shutdown_write().await;
                ready.readable = true; // the linger reads now, whatever the cache says
                if eager {
                    continue;
                }
                return Turn::Progress;
            }
            Action::QueryUnsent => {
                session.handle_unsent(ready.now, stream.unsent());
                if eager {
                    continue;
                }
                return Turn::Progress;
            }
            Action::Close(how) => {
                if how == CloseHow::Abort {
                    stream.set_abortive();
                }
                return Turn::Closed(how);
            }
            _ => {
                tracing::debug!("unknown action; closing");
                stream.set_abortive();
                return Turn::Closed(CloseHow::Abort);
            }
        };
        if want.write && ready.writable {
            match session.write_to(&mut TryWriter(&*stream)) {
                Ok(_) => kept = session.want_after_write(want),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => session.handle_io_error(ready.now),
            }
            if eager {
                continue;
            }
            return Turn::Progress;
        }
        // Read again at once while the socket has data, as a plain `read().await` loop would;
        // only a read that would block waits below. Yield now and then to stay fair.
        if want.read && ready.readable {
            ready.direct_reads += 1;
            if ready.direct_reads > DIRECT_READ_BUDGET {
                ready.direct_reads = 0;
                tokio::task::yield_now().await;
                ready.now = now();
                ready.readable = read_once(&*stream, session, ready.now);
                return Turn::Progress; // the caller looks at its own orders after a yield
            }
            ready.readable = read_once(&*stream, session, ready.now);
            if eager {
                continue;
            }
            return Turn::Progress;
        }
        if want.resume {
            // The turn's handler budget ran out: the other connections go first.
            tokio::task::yield_now().await;
            ready.now = now();
            session.resume(ready.now);
            return Turn::Progress;
        }
        let deadline = want.timeout.map(tokio::time::Instant::from_std);
        let has_other = other.is_some();
        if !want.read && !want.write && deadline.is_none() && !has_other && !session.wakeable() {
            return Turn::Idle;
        }
        // One wait for the first of these, in this order (a hand-written `select!`: no
        // future per branch; the timer is made only when there is a deadline).
        let mut other = other;
        let mut sleep = std::pin::pin!(sleep_until(deadline));
        let stream = &*stream;
        let woken = std::future::poll_fn(|cx| {
            if want.read
                && let Poll::Ready(res) = stream.poll_read_ready(cx)
            {
                return Poll::Ready(Woken::Read(res.is_ok()));
            }
            if want.write
                && let Poll::Ready(res) = stream.poll_write_ready(cx)
            {
                return Poll::Ready(Woken::Write(res.is_ok()));
            }
            if session.poll_wake(cx).is_ready() {
                return Poll::Ready(Woken::Outside);
            }
            // After the socket: a wake-up for data does not poll it again.
            if let Some(o) = other.as_mut()
                && o.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Woken::Other);
            }
            if deadline.is_some() && sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woken::Timer);
            }
            Poll::Pending
        })
        .await;
        if let Woken::Other = woken {
            return Turn::Other;
        }
        ready.now = now();
        match woken {
            Woken::Read(true) => {
                ready.direct_reads = 0;
                ready.readable = read_once(stream, session, ready.now);
            }
            Woken::Write(true) => ready.writable = true,
            Woken::Read(false) | Woken::Write(false) => session.handle_io_error(ready.now),
            Woken::Outside => session.resume(ready.now),
            Woken::Timer => session.handle_timeout(ready.now),
            Woken::Other => {}
        }
        return Turn::Progress;
    }
}

/// What ended a wait.
enum Woken {
    /// The socket is readable (or failed: false).
    Read(bool),
    /// The socket is writable (or failed: false).
    Write(bool),
    /// An async handler was woken from outside.
    Outside,
    /// The caller's own future completed.
    Other,
    /// The session's deadline.
    Timer,
}

/// Drives one server connection over `stream` until the core says to close it.
///
/// `shutdown` carries the run's shutdown deadline: set when a shutdown begins, set again
/// to an earlier one when the shutdown is hurried (the session keeps the earliest); its
/// sender dropped means the server is gone.
///
/// Cancel safety: the future owns the socket and the session, and runs as its own task.
/// Dropping it (the task aborted, the runtime gone) closes the socket at once and drops
/// the handler with its `Drop` contained, without `on_disconnection`. The server itself
/// never aborts it: a shutdown reaches it as an order through `shutdown`.
///
/// An `async` block rather than an `async fn`: an `async fn`'s future holds each argument
/// twice (as given and in the local it is moved into, rust-lang/rust#62958), and the
/// session is most of what an idle connection's task holds.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn drive<St: ConnStream, D: Driven>(
    mut stream: St,
    mut session: D,
    shutdown: watch::Receiver<Option<Instant>>,
) -> impl Future<Output = ()> {
    async move {
        let mut ready = Readiness::default();
        let mut orders = Orders::new(shutdown);
        let mut gone = false;
        loop {
            match orders.rx.has_changed() {
                Ok(true) => {
                    if let Some(deadline) = *orders.rx.borrow_and_update() {
                        session.shutdown(now(), deadline);
                    }
                    orders.rearm(); // after the look: the next order is one it has not seen
                }
                Ok(false) => {}
                Err(_) if !gone => {
                    // The server is gone: stop now, or by the deadline it had set.
                    gone = true;
                    let deadline = orders.rx.borrow_and_update().unwrap_or_else(now);
                    session.shutdown(now(), deadline);
                }
                Err(_) => {}
            }
            let other = (!gone).then_some(std::pin::Pin::new(&mut orders));
            match turn(&mut stream, &mut session, &mut ready, other, true).await {
                Turn::Closed(_) => return,
                // Woken by the channel: an order or the server gone, looked at above (a
                // `changed` that resolved without either is made again rather than polled
                // once more).
                Turn::Other if matches!(orders.rx.has_changed(), Ok(false)) => orders.rearm(),
                Turn::Other => {}
                Turn::Progress => {}
                Turn::Idle => {
                    // Nothing can happen any more (should not occur): do not hang.
                    tracing::debug!("connection has nothing to wait for; closing");
                    session.shutdown(now(), now());
                }
            }
        }
    }
}

/// Reads once into the session; false when the socket would block or the read drained it.
fn read_once<St: ConnStream, D: Driven>(stream: &St, session: &mut D, now: Instant) -> bool {
    if let Some(buf) = session.read_buffer() {
        return match stream.try_read_buf(buf) {
            Ok((n, drained)) => {
                session.handle_read_in_place(now, n);
                !drained
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                session.handle_io_error(now);
                true
            }
        };
    }
    let read_size = session.read_size();
    read_into(stream, read_size, |r| match r {
        Ok([]) => session.handle_eof(now),
        Ok(data) => session.handle_read(now, data),
        Err(_) => session.handle_io_error(now),
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use easynet_core::ConnId;
    use easynet_core::handler::{
        ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler,
    };
    use easynet_core::protocol::Stream;
    use easynet_core::stream::{Session, StreamConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    use super::{Driven, drive, now};

    /// Bytes of the loop's own state besides the session: the socket, the orders, the
    /// readiness and one wait (about 460 in a test build, 2026-11-30).
    const LOOP_STATE: usize = 640;

    struct Quiet;

    impl StreamHandler for Quiet {
        type Request = String;
        type Response = String;
        fn handle(
            &mut self,
            _: &mut StreamContext<'_, String>,
            _: Received<String>,
        ) -> HandlerResult {
            Ok(Next::recv())
        }
    }

    /// A connection accepted on loopback: the server's socket, a lines session over it with
    /// `handler`, and the client.
    async fn accepted<H>(handler: H) -> (TcpStream, impl Driven, TcpStream)
    where
        H: StreamHandler<Request = String, Response = String>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let info = ConnInfo::new(ConnId(1), peer, addr);
        let protocol = Arc::new(Stream::lines());
        let session = Session::new(now(), handler, protocol, StreamConfig::default(), info);
        (stream, session, client)
    }

    #[tokio::test]
    async fn a_connection_task_holds_its_session_once() {
        let (stream, session, _client) = accepted(Quiet).await;
        let session_size = size_of_val(&session);
        let (_orders, rx) = watch::channel(None);
        let task = drive(stream, session, rx);
        assert!(
            size_of_val(&task) <= session_size + LOOP_STATE,
            "the task is {} bytes for a {session_size}-byte session: it holds a copy of it",
            size_of_val(&task)
        );
    }

    /// Echoes; counts its drops (and panics in `Drop`, user code the session contains);
    /// notes `on_disconnection`.
    struct Watched {
        drops: Arc<AtomicUsize>,
        told: Arc<AtomicBool>,
    }

    impl StreamHandler for Watched {
        type Request = String;
        type Response = String;
        fn handle(
            &mut self,
            cx: &mut StreamContext<'_, String>,
            r: Received<String>,
        ) -> HandlerResult {
            if let Received::Request(line) = r {
                cx.send(line)?;
            }
            Ok(Next::recv())
        }
        fn on_disconnection(&mut self, _: &mut StreamContext<'_, String>) {
            self.told.store(true, Ordering::SeqCst);
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            panic!("a handler's Drop panics");
        }
    }

    /// Cancel safety as `drive` states it: the future dropped part-way closes the socket
    /// and drops the handler (its panicking `Drop` contained), without `on_disconnection`.
    #[tokio::test]
    async fn a_dropped_connection_future_closes_the_socket_and_drops_the_handler() {
        let (drops, told) = (Arc::default(), Arc::default());
        let handler = Watched {
            drops: Arc::clone(&drops),
            told: Arc::clone(&told),
        };
        let (stream, session, mut client) = accepted(handler).await;
        let (_orders, rx) = watch::channel(None);
        let mut task = Box::pin(drive(stream, session, rx));
        client.write_all(b"hi\n").await.unwrap();
        let mut answer = [0; 3];
        tokio::select! {
            () = &mut task => panic!("the connection ended on its own"),
            read = client.read_exact(&mut answer) => { read.unwrap(); }
        }
        assert_eq!(&answer, b"hi\n");
        drop(task);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(!told.load(Ordering::SeqCst));
        let eof = tokio::time::timeout(Duration::from_secs(10), client.read(&mut answer)).await;
        assert_eq!(eof.unwrap().unwrap(), 0, "the socket is closed");
    }
}
