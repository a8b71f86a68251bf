//! [`StreamSocket`]: the socket under a stream client's connection, TCP or Unix.

use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use crate::conn::ConnStream;

/// The socket of a stream connection, for options (`socket2::SockRef::from`, `peer_cred`).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use easynet_tokio::StreamSocket;
/// let socket = StreamSocket::from(tokio::net::TcpStream::connect("127.0.0.1:9000").await?);
/// if let StreamSocket::Tcp(tcp) = &socket {
///     tcp.set_nodelay(true)?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamSocket {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl From<TcpStream> for StreamSocket {
    fn from(s: TcpStream) -> Self {
        StreamSocket::Tcp(s)
    }
}

#[cfg(unix)]
impl From<UnixStream> for StreamSocket {
    fn from(s: UnixStream) -> Self {
        StreamSocket::Unix(s)
    }
}

/// Calls `$call` on whichever stream it is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            StreamSocket::Tcp($s) => $call,
            #[cfg(unix)]
            StreamSocket::Unix($s) => $call,
        }
    };
}

impl ConnStream for StreamSocket {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        each!(self, s => ConnStream::try_read(s, buf))
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<(usize, bool)> {
        each!(self, s => ConnStream::try_read_buf(s, buf))
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(buf))
    }
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.try_write_vectored(bufs))
    }
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        each!(self, s => s.poll_read_ready(cx))
    }
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        each!(self, s => s.poll_write_ready(cx))
    }
    async fn shutdown_write(&mut self) {
        each!(self, s => ConnStream::shutdown_write(s).await)
    }
    fn set_abortive(&self) {
        each!(self, s => ConnStream::set_abortive(s))
    }
    fn unsent(&self) -> Option<usize> {
        each!(self, s => ConnStream::unsent(s))
    }
}
