//! The hand-written mio baselines (issue 16): what a competent programmer writes with mio
//! alone when speed is the point, so that the easynet mio rows compare against an honest
//! bound rather than a weak loop.
//!
//! One thread, edge-triggered readiness (each socket registered once for both directions),
//! 64 KiB reads into a per-connection buffer, `memchr` to find lines, answers written straight
//! from that buffer (an echo's answer is its input), and output kept only while the socket is
//! full (no reading meanwhile: the peer's flow control pushes back).
//!
//! - `mio-raw`: every byte read is echoed.
//! - `mio-lines`: each complete line is a message: checked to be UTF-8 (what a `String`
//!   line codec checks; an invalid line is dropped), echoed with its newline.
//! - `mio-rustls`: the line echo over rustls: socket reads of 64 KiB into one buffer fed to
//!   rustls, plaintext drained with `fill_buf` (no zero-filled staging), answers written to
//!   rustls's writer and its records to the socket with `write_tls` (vectored).
//! - `mio-lines-string`, `mio-rustls-string`: the same loops with a `String` per line, as a
//!   user writes them when the handler takes `String`s (what easynet's `Stream::lines()` and
//!   tokio-util's `LinesCodec` hand over): each line is checked and copied into its own
//!   `String`, given to an echo handler, and the answers are written from those `String`s, each
//!   with its newline, in one vectored write (`writev`, or one plaintext write to rustls).
//! - `mio-udp`: `recv_from` into one 64 KiB buffer, `send_to` from it.
//! - `mio-udp-mmsg` (Linux): the same with batched system calls, as easynet's mio driver
//!   makes them: up to 8 datagrams per `recvmmsg` (one at first, doubling while reads fill
//!   up), each into a 64 KiB slot, echoed with one `sendmmsg`.

use std::collections::VecDeque;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::BoxError;

/// Bytes per socket read.
const READ: usize = 64 * 1024;
/// A line longer than this closes the connection (tokio-util's baseline uses the same limit).
const MAX_LINE: usize = 1 << 20;
const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// What a TCP baseline echoes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Raw,
    Lines,
    TlsLines,
    /// Lines handed to the handler as `String`s.
    LinesString,
    /// TLS lines handed to the handler as `String`s.
    TlsLinesString,
}

/// The handler of the `*String` kinds: an echo.
fn handle(line: String) -> String {
    line
}

/// A poll with a waker that SIGTERM sets off, and the flag it sets. The caller keeps the
/// waker: dropping the last one closes its eventfd, which can lose the wake-up (mio#1764).
fn poll_with_stop() -> io::Result<(Poll, Arc<Waker>, Arc<AtomicBool>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, w) = (stop.clone(), waker.clone());
    crate::stop_on_sigterm(move || {
        flag.store(true, Ordering::SeqCst);
        let _ = w.wake();
    });
    Ok((poll, waker, stop))
}

struct Conn {
    sock: TcpStream,
    data: Data,
    tls: Option<rustls::ServerConnection>,
    /// `*String` kinds: answers not yet written.
    answers: Answers,
    readable: bool,
    writable: bool,
}

/// A connection's buffer.
#[derive(Default)]
struct Data {
    /// `buf[..filled]` holds data. Plain: `[out_start..out_end]` is the answer still to be
    /// written, `[out_end..filled]` input not yet a complete line. TLS: plaintext of a
    /// line not yet complete.
    buf: Vec<u8>,
    filled: usize,
    out_start: usize,
    out_end: usize,
    /// Where the newline search goes on (bytes before it hold no newline past `out_end`).
    scanned: usize,
}

impl Data {
    /// Moves `out_end` past every complete line read so far; invalid UTF-8 lines are cut out.
    fn complete_lines(&mut self) -> Result<(), Gone> {
        let mut start = self.out_end;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.filled]) {
            let end = self.scanned + i + 1;
            if std::str::from_utf8(&self.buf[start..end - 1]).is_ok() {
                start = end;
                self.scanned = end;
            } else {
                self.buf.copy_within(end..self.filled, start);
                self.filled -= end - start;
                self.scanned = start;
            }
        }
        self.out_end = start;
        self.scanned = self.filled;
        if self.filled - self.out_end > MAX_LINE {
            return Err(Gone);
        }
        Ok(())
    }

    /// `*String` kinds: every complete line read so far goes to [`handle`] as a `String` (a
    /// copy, checked to be UTF-8; an invalid line is dropped) and its answer is queued; the
    /// rest (a partial line) moves to the front.
    fn take_lines(&mut self, answers: &mut Answers) -> Result<(), Gone> {
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.filled]) {
            let end = self.scanned + i + 1;
            if let Ok(line) = std::str::from_utf8(&self.buf[start..end - 1]) {
                answers.queue.push_back(handle(line.to_owned()));
            }
            start = end;
            self.scanned = end;
        }
        if start > 0 {
            self.buf.copy_within(start..self.filled, 0);
            self.filled -= start;
        }
        self.scanned = self.filled;
        if self.filled > MAX_LINE {
            return Err(Gone);
        }
        Ok(())
    }
}

/// Up to this many answers go in one `writev` (two slices each).
const GATHER: usize = 32;

/// `*String` kinds: the answers not yet written, each to be followed by a newline.
#[derive(Default)]
struct Answers {
    queue: VecDeque<String>,
    /// Bytes of the first answer (with its newline) written already.
    head: usize,
}

impl Answers {
    /// Fills `iov` with what is left to write of the first answers; returns how many slices.
    fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let (mut n, mut skip) = (0, self.head);
        for answer in self.queue.iter().take(iov.len() / 2) {
            for part in [answer.as_bytes(), b"\n"] {
                if skip >= part.len() {
                    skip -= part.len();
                } else {
                    iov[n] = IoSlice::new(&part[skip..]);
                    (n, skip) = (n + 1, 0);
                }
            }
        }
        n
    }

    /// Drops the answers that `written` more bytes complete.
    fn written(&mut self, written: usize) {
        let mut done = self.head + written;
        while let Some(answer) = self.queue.front() {
            if done < answer.len() + 1 {
                break;
            }
            done -= answer.len() + 1;
            self.queue.pop_front();
        }
        self.head = done;
    }
}

/// Why a connection ends.
struct Gone;

impl Conn {
    /// Does everything the socket allows; `Err` when the connection is finished.
    fn service(&mut self, kind: Kind, rbuf: &mut [u8]) -> Result<(), Gone> {
        match kind {
            Kind::TlsLines | Kind::TlsLinesString => return self.service_tls(kind, rbuf),
            Kind::LinesString => return self.service_strings(),
            Kind::Raw | Kind::Lines => {}
        }
        loop {
            while self.data.out_start < self.data.out_end {
                if !self.writable {
                    return Ok(()); // socket full: wait for writable, read nothing meanwhile
                }
                match self
                    .sock
                    .write(&self.data.buf[self.data.out_start..self.data.out_end])
                {
                    Ok(n) => self.data.out_start += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Gone),
                }
            }
            if self.data.out_end > 0 {
                // Everything answered: what is left (a partial line) moves to the front.
                self.data
                    .buf
                    .copy_within(self.data.out_end..self.data.filled, 0);
                self.data.filled -= self.data.out_end;
                self.data.scanned -= self.data.out_end;
                self.data.out_start = 0;
                self.data.out_end = 0;
            }
            if !self.readable {
                return Ok(());
            }
            self.read_more()?;
            match kind {
                Kind::Raw => {
                    self.data.out_end = self.data.filled;
                    self.data.scanned = self.data.filled;
                }
                _ => self.data.complete_lines()?,
            }
        }
    }

    /// One read of up to [`READ`] bytes after what the buffer holds (it grows to make room);
    /// `WouldBlock` clears `readable`.
    fn read_more(&mut self) -> Result<(), Gone> {
        if self.data.buf.len() - self.data.filled < READ {
            self.data.buf.resize(self.data.filled + READ, 0);
        }
        match self.sock.read(&mut self.data.buf[self.data.filled..]) {
            Ok(0) => Err(Gone),
            Ok(n) => {
                self.data.filled += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(Gone),
        }
    }

    /// `mio-lines-string`: as `service`, with the answers written from their `String`s.
    fn service_strings(&mut self) -> Result<(), Gone> {
        loop {
            while !self.answers.queue.is_empty() {
                if !self.writable {
                    return Ok(()); // socket full: wait for writable, read nothing meanwhile
                }
                let mut iov = [IoSlice::new(&[]); 2 * GATHER];
                let n = self.answers.slices(&mut iov);
                match self.sock.write_vectored(&iov[..n]) {
                    Ok(n) => self.answers.written(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Gone),
                }
            }
            if !self.readable {
                return Ok(());
            }
            self.read_more()?;
            self.data.take_lines(&mut self.answers)?;
        }
    }

    fn service_tls(&mut self, kind: Kind, rbuf: &mut [u8]) -> Result<(), Gone> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Err(Gone);
            };
            while tls.wants_write() {
                if !self.writable {
                    return Ok(()); // socket full: wait for writable, read nothing meanwhile
                }
                match tls.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Gone),
                }
            }
            if !self.readable {
                return Ok(());
            }
            let n = match self.sock.read(rbuf) {
                Ok(0) => return Err(Gone),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Gone),
            };
            let mut data = &rbuf[..n];
            while !data.is_empty() {
                // rustls takes what fits in its record buffer; process and go on.
                if tls.read_tls(&mut data).is_err() {
                    return Err(Gone);
                }
                let state = match tls.process_new_packets() {
                    Ok(state) => state,
                    Err(_) => {
                        let _ = tls.write_tls(&mut self.sock); // the alert, best effort
                        return Err(Gone);
                    }
                };
                if state.plaintext_bytes_to_read() > 0 {
                    let mut reader = tls.reader();
                    while let Ok(chunk) = reader.fill_buf() {
                        if chunk.is_empty() {
                            break;
                        }
                        let len = chunk.len();
                        self.data.buf.extend_from_slice(chunk);
                        reader.consume(len);
                    }
                    self.data.filled = self.data.buf.len();
                    if kind == Kind::TlsLinesString {
                        self.data.take_lines(&mut self.answers)?;
                        self.data.buf.truncate(self.data.filled);
                        // One plaintext write of every answer and its newline: rustls
                        // seals it as one payload (the buffer limit is off: it takes all).
                        let parts: Vec<IoSlice<'_>> = (self.answers.queue.iter())
                            .flat_map(|a| [IoSlice::new(a.as_bytes()), IoSlice::new(b"\n")])
                            .collect();
                        let _ = tls.writer().write_vectored(&parts);
                        self.answers.queue.clear();
                    } else {
                        self.data.complete_lines()?;
                    }
                    if self.data.out_end > 0 {
                        // Takes it all: the buffer limit is off.
                        let _ = tls.writer().write_all(&self.data.buf[..self.data.out_end]);
                        self.data.buf.drain(..self.data.out_end);
                        self.data.filled = self.data.buf.len();
                        self.data.scanned = self.data.filled;
                        self.data.out_end = 0;
                    }
                }
                if state.peer_has_closed() {
                    let _ = tls.write_tls(&mut self.sock);
                    return Err(Gone);
                }
            }
        }
    }
}

/// The TCP baselines: raw echo, line echo, line echo over rustls.
pub(crate) fn serve_tcp(
    addr: SocketAddr,
    kind: Kind,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), BoxError> {
    let (poll, _waker, stop) = poll_with_stop()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    crate::announce(listener.local_addr()?);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; if tls.is_some() { READ } else { 0 }];
    let mut poll = poll;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                LISTENER => loop {
                    let mut sock = match listener.accept() {
                        Ok((sock, _)) => sock,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    };
                    let _ = sock.set_nodelay(true);
                    let mut session = None;
                    if let Some(cfg) = &tls {
                        let Ok(mut s) = rustls::ServerConnection::new(cfg.clone()) else {
                            continue;
                        };
                        s.set_buffer_limit(None);
                        session = Some(s);
                    }
                    let idx = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    // Registered once; the first wait reports what is ready already.
                    poll.registry().register(
                        &mut sock,
                        Token(idx),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[idx] = Some(Conn {
                        sock,
                        data: Data::default(),
                        tls: session,
                        answers: Answers::default(),
                        readable: false,
                        writable: false,
                    });
                },
                Token(idx) => {
                    let Some(Some(c)) = conns.get_mut(idx) else {
                        continue;
                    };
                    c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    c.writable |= ev.is_writable() || ev.is_write_closed();
                    if c.service(kind, &mut rbuf).is_err()
                        && let Some(mut c) = conns[idx].take()
                    {
                        let _ = poll.registry().deregister(&mut c.sock);
                        free.push(idx);
                    }
                }
            }
        }
    }
}

/// Binds a UDP socket on `addr` and calls `drain` with it after every wake-up, until
/// SIGTERM; `drain` reads until the socket would block.
fn udp_loop(addr: SocketAddr, mut drain: impl FnMut(&UdpSocket)) -> Result<(), BoxError> {
    let (poll, _waker, stop) = poll_with_stop()?;
    let mut poll = poll;
    let mut socket = UdpSocket::bind(addr)?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    crate::announce(socket.local_addr()?);
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        drain(&socket);
    }
}

/// The UDP baseline: `recv_from` into one buffer, `send_to` from it.
pub(crate) fn serve_udp(addr: SocketAddr) -> Result<(), BoxError> {
    let mut buf = vec![0u8; READ];
    udp_loop(addr, |socket| {
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
    })
}

/// Datagrams per `recvmmsg`/`sendmmsg` in `serve_udp_mmsg` (easynet's `DATAGRAM_BATCH`).
const BATCH: usize = 8;

/// The batched UDP baseline (Linux): up to [`BATCH`] datagrams per `recvmmsg`, each into a
/// 64 KiB slot of one buffer, echoed with one `sendmmsg`. Each wake-up's first read asks for
/// one datagram, and each read that gets all it asked for doubles the next (as easynet's
/// `ReadAhead`): asking for a whole batch every time holds the first answer back until the
/// batch is read, which cost about 15% of the messages per second with one request at a time.
#[cfg(target_os = "linux")]
pub(crate) fn serve_udp_mmsg(addr: SocketAddr) -> Result<(), BoxError> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; READ * BATCH];
    // SAFETY (all below): plain C structs, zeroed is valid; pointers set before each call
    // point into `buf`, `names` and `iovs`, which outlive the calls.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut want = 1;
    udp_loop(addr, |socket| {
        let fd = socket.as_raw_fd();
        loop {
            for i in 0..BATCH {
                iovs[i] = libc::iovec {
                    iov_base: buf[i * READ..].as_mut_ptr().cast(),
                    iov_len: READ,
                };
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
            }
            let n = unsafe {
                libc::recvmmsg(fd, msgs.as_mut_ptr(), want as _, 0, std::ptr::null_mut())
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    want = 1;
                    break;
                }
                continue;
            }
            let n = n as usize;
            want = if n == want { (2 * want).min(BATCH) } else { 1 };
            for i in 0..n {
                iovs[i].iov_len = msgs[i].msg_len as usize;
            }
            let mut sent = 0;
            while sent < n {
                let r =
                    unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as _, 0) };
                if r <= 0 {
                    break;
                }
                sent += r as usize;
            }
        }
    })
}

#[cfg(test)]
mod tests;
