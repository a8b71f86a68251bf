//! Several UDP datagrams per system call on Linux: `recvmmsg` into a datagram loop's shared
//! buffer, `sendmmsg` of the answers. Under load a loop reads and sends batches, and the
//! cost of entering the kernel is paid once per batch instead of once per datagram.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use bytes::{Buf, BytesMut};
use easynet_core::datagram::Transmit;
use socket2::{SockAddr, SockAddrStorage};

use crate::recv::{DATAGRAM_BATCH, DatagramBuffers, MAX_DATAGRAM};
use crate::rxq::{Control, rxq_ovfl};

/// Bytes of the shared buffer a batch is read into: a slot of [`MAX_DATAGRAM`] per datagram,
/// so that none is cut short.
pub(crate) const BATCH_ROOM: usize = DATAGRAM_BATCH * MAX_DATAGRAM;

impl DatagramBuffers {
    /// Receives up to `max` UDP datagrams (1 to [`DATAGRAM_BATCH`]; a loop asks as its
    /// [`ReadAhead`](crate::ReadAhead) says) with one `recvmmsg`, each in a buffer of its
    /// own that `each` is given with its sender; returns how many, and when `drops`
    /// asks for it the socket's drop count as
    /// [`recv_from_counting`](crate::recv_from_counting) reports it, from the last datagram
    /// that carries one (every datagram is read with a control buffer: the kernel fills one
    /// in only once the socket has dropped). At least one datagram, or an error:
    /// `WouldBlock` when none is queued on a non-blocking socket (a blocking one waits for
    /// the first datagram, not for a whole batch: `MSG_WAITFORONE`).
    ///
    /// The datagrams are read in place, into slots of the shared buffer, when nothing read
    /// into it before is still held; otherwise one datagram is read as
    /// [`recv_from_counting`](Self::recv_from_counting) does.
    ///
    /// ```
    /// use easynet_common::{DATAGRAM_BATCH, DatagramBuffers};
    ///
    /// let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// client.send_to(b"one", server.local_addr()?)?;
    /// client.send_to(b"two", server.local_addr()?)?;
    /// let mut buffers = DatagramBuffers::new();
    /// let mut got = Vec::new();
    /// while got.len() < 2 {
    ///     // Both, usually: loopback queues a datagram before `send_to` returns.
    ///     let each = |data, from| got.push((data, from));
    ///     buffers.recv_batch_from(&server, false, DATAGRAM_BATCH, each)?;
    /// }
    /// assert_eq!((&got[0].0[..], &got[1].0[..]), (&b"one"[..], &b"two"[..]));
    /// assert_eq!(got[1].1, client.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_batch_from<S: AsFd>(
        &mut self,
        socket: &S,
        drops: bool,
        max: usize,
        mut each: impl FnMut(BytesMut, SocketAddr),
    ) -> io::Result<(usize, Option<u32>)> {
        let max = max.clamp(1, DATAGRAM_BATCH);
        let Some(shared) = self.batch_room() else {
            let (data, from, count) = self.recv_from_counting(socket, drops)?;
            each(data, from);
            return Ok((1, count));
        };
        let room = shared.spare_capacity_mut();
        debug_assert!(room.len() >= BATCH_ROOM);
        let base = room.as_mut_ptr();
        // Not zeroed: each call sets what the kernel reads, and only what it wrote is read.
        let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; DATAGRAM_BATCH];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; DATAGRAM_BATCH];
        let mut controls = [const { Control::new() }; DATAGRAM_BATCH];
        // SAFETY: mmsghdr is plain C data; all zeros is an empty header.
        let mut msgs: [libc::mmsghdr; DATAGRAM_BATCH] = unsafe { std::mem::zeroed() };
        let headers = msgs.iter_mut().zip(&mut names).zip(&mut iovs).take(max);
        for (i, ((msg, name), iov)) in headers.enumerate() {
            let iov = iov.write(libc::iovec {
                // SAFETY: slot `i` lies inside `room` (BATCH_ROOM bytes at least).
                iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            });
            let h = &mut msg.msg_hdr;
            h.msg_name = name.as_mut_ptr().cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
        }
        if drops {
            for (msg, control) in msgs.iter_mut().zip(&mut controls).take(max) {
                msg.msg_hdr.msg_control = control.as_mut_ptr().cast();
                msg.msg_hdr.msg_controllen = control.len() as _;
            }
        }
        let fd = socket.as_fd().as_raw_fd();
        let n = loop {
            // SAFETY: every header points at live storage of this frame (names, iovs into
            // `room`, controls) with the lengths given; the kernel writes within them.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    max as _,
                    libc::MSG_WAITFORONE as _,
                    std::ptr::null_mut(),
                )
            };
            if r > 0 {
                break r as usize;
            }
            if r == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        // The latest count: datagrams queued later carry counts at least as high.
        let latest = |(msg, control): (&libc::mmsghdr, &Control)| {
            // Not a usize with every libc.
            #[allow(clippy::unnecessary_cast)]
            let len = msg.msg_hdr.msg_controllen as usize;
            rxq_ovfl(control.received(len))
        };
        let count = if drops {
            msgs[..n].iter().zip(&controls).rev().find_map(latest)
        } else {
            None
        };
        let end = (n - 1) * MAX_DATAGRAM + msgs[n - 1].msg_len as usize;
        // SAFETY: `end` is inside the room the reads were given, and every byte of the
        // shared buffer's allocation is initialized (`DatagramBuffers::shared`).
        unsafe { shared.set_len(end) };
        for (i, (msg, name)) in msgs[..n].iter().zip(&names).enumerate() {
            let len = msg.msg_len as usize;
            let data = shared.split_to(len);
            if i + 1 < n {
                shared.advance(MAX_DATAGRAM - len); // the rest of its slot
            }
            // A UDP socket's senders are IP addresses; anything else is dropped.
            if let Some(from) = sender(name, msg.msg_hdr.msg_namelen) {
                each(data, from);
            }
        }
        Ok((n, count))
    }
}

/// The sender's address a receive wrote into `name` (`len` bytes of it).
fn sender(name: &MaybeUninit<libc::sockaddr_storage>, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: the kernel initialized the first `len` bytes of `name`; they are copied into
    // a zeroed sockaddr_storage (SockAddrStorage is one: repr(transparent)), and `len` is
    // its length.
    unsafe {
        let to: *mut libc::sockaddr_storage = storage.view_as();
        std::ptr::copy_nonoverlapping(name.as_ptr().cast::<u8>(), to.cast::<u8>(), len);
        SockAddr::new(storage, len as libc::socklen_t)
    }
    .as_socket()
}

/// Sends datagrams from the front of `transmits` (at most [`DATAGRAM_BATCH`]) with one
/// `sendmmsg`, in order; returns how many were sent: fewer than given when the socket
/// filled up or the next one failed (the next call reports why). The first one's error
/// when none was sent (`WouldBlock`: no room).
///
/// ```
/// use easynet_core::datagram::Transmit;
///
/// let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let answers = [
///     Transmit { to: a.local_addr()?, data: "to a".into() },
///     Transmit { to: b.local_addr()?, data: "to b".into() },
/// ];
/// assert_eq!(easynet_common::send_batch_to(&server, &answers)?, 2);
/// let mut buf = [0u8; 8];
/// let n = b.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"to b");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_batch_to<S: AsFd>(socket: &S, transmits: &[Transmit]) -> io::Result<usize> {
    let transmits = &transmits[..transmits.len().min(DATAGRAM_BATCH)];
    if transmits.is_empty() {
        return Ok(0);
    }
    // Only the first `transmits.len()` of each are made: all the call reads.
    let mut addrs = [const { MaybeUninit::<SockAddr>::uninit() }; DATAGRAM_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; DATAGRAM_BATCH];
    let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; DATAGRAM_BATCH];
    for (((t, addr), iov), msg) in transmits
        .iter()
        .zip(&mut addrs)
        .zip(&mut iovs)
        .zip(&mut msgs)
    {
        let addr = addr.write(SockAddr::from(t.to));
        let iov = iov.write(libc::iovec {
            // sendmmsg only reads the data.
            iov_base: t.data.as_ptr() as *mut libc::c_void,
            iov_len: t.data.len(),
        });
        // SAFETY: mmsghdr is plain C data; all zeros is an empty header.
        let msg = msg.write(unsafe { std::mem::zeroed() });
        let h = &mut msg.msg_hdr;
        h.msg_name = addr.as_ptr() as *mut libc::c_void;
        h.msg_namelen = addr.len();
        h.msg_iov = iov;
        h.msg_iovlen = 1;
    }
    let fd = socket.as_fd().as_raw_fd();
    loop {
        // SAFETY: the first `transmits.len()` headers point at live addresses and data of
        // this frame, with their lengths; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr().cast(), transmits.len() as _, 0) };
        if r > 0 {
            return Ok(r as usize);
        }
        if r == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// A blocking socket (each read waits for its first datagram), bounded in time.
    fn receiver() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s
    }

    /// Reads one batch into a list of (datagram, sender).
    fn batch(
        buffers: &mut DatagramBuffers,
        server: &UdpSocket,
    ) -> io::Result<Vec<(BytesMut, SocketAddr)>> {
        let mut got = Vec::new();
        let each = |d, f| got.push((d, f));
        let (n, _) = buffers.recv_batch_from(server, false, DATAGRAM_BATCH, each)?;
        assert_eq!(n, got.len());
        Ok(got)
    }

    #[test]
    fn reads_batches_in_place_in_slots_each_from_the_start() {
        let server = receiver();
        let (a, b) = (bound(), bound());
        let to = server.local_addr().unwrap();
        // Sizes from empty to nearly the largest IPv4 datagram: none is cut short.
        let sizes = [0, 1, 1500, 60_000, 7, 512, 65_000, 3, 9, 10];
        let sent: Vec<(Vec<u8>, SocketAddr)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let from = if i % 2 == 0 { &a } else { &b };
                let data: Vec<u8> = (0..n).map(|k| (k + i) as u8).collect();
                from.send_to(&data, to).unwrap();
                (data, from.local_addr().unwrap())
            })
            .collect();
        let mut buffers = DatagramBuffers::new();
        let (mut k, mut calls, mut base) = (0, 0, None);
        while k < sent.len() {
            let got = batch(&mut buffers, &server).unwrap();
            calls += 1;
            assert!(got.len() <= DATAGRAM_BATCH);
            // Each batch let go before the next: each starts at the first slot again.
            let base = *base.get_or_insert(got[0].0.as_ptr() as usize);
            for (i, (data, from)) in got.iter().enumerate() {
                assert_eq!(
                    (&data[..], *from),
                    (&sent[k].0[..], sent[k].1),
                    "datagram {k}"
                );
                assert_eq!(
                    data.as_ptr() as usize - base,
                    i * MAX_DATAGRAM,
                    "datagram {k}"
                );
                k += 1;
            }
        }
        // All were sent before the first read: some call took more than one (loopback
        // queues a datagram before `send_to` returns, so two calls, 8 and 2, as a rule).
        assert!(calls < sent.len(), "{calls} calls");
        server.set_nonblocking(true).unwrap();
        let err = batch(&mut buffers, &server).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    /// A single read first (`recv_from_counting` on the same buffers) made a shared buffer
    /// too small for a batch, and every later batch read was a single one.
    #[test]
    fn batches_after_a_single_read_on_the_same_buffers() {
        let server = receiver();
        let client = bound();
        let to = server.local_addr().unwrap();
        let mut buffers = DatagramBuffers::new();
        client.send_to(b"single", to).unwrap();
        let (single, _, _) = buffers.recv_from_counting(&server, false).unwrap();
        assert_eq!(&single[..], b"single");
        drop(single);
        for i in 0..4u8 {
            client.send_to(&[i; 10], to).unwrap();
        }
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < 4 {
            got.extend(batch(&mut buffers, &server).unwrap());
            calls += 1;
        }
        let want: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
        let got: Vec<Vec<u8>> = got.iter().map(|(d, _)| d.to_vec()).collect();
        assert_eq!(got, want);
        // All four were queued before the first batch read (loopback queues a datagram
        // before `send_to` returns).
        assert_eq!(calls, 1, "one batch, not single reads");
    }

    /// A loop's reads as its `ReadAhead` asks: 1, 2, 4, then the 3 left (fewer than asked:
    /// one next), then 1 of the next 2.
    #[test]
    fn reads_no_more_than_asked() {
        let server = receiver();
        let client = bound();
        let to = server.local_addr().unwrap();
        for i in 0..10u8 {
            client.send_to(&[i], to).unwrap();
        }
        let mut buffers = DatagramBuffers::new();
        let mut ahead = crate::ReadAhead::new();
        let mut read = |ahead: &mut crate::ReadAhead| {
            let mut got = Vec::new();
            let (n, _) = buffers
                .recv_batch_from(&server, false, ahead.next(), |d, _| got.push(d[0]))
                .unwrap();
            ahead.got(n);
            got
        };
        let reads: Vec<Vec<u8>> = (0..4).map(|_| read(&mut ahead)).collect();
        assert_eq!(
            reads,
            [vec![0], vec![1, 2], vec![3, 4, 5, 6], vec![7, 8, 9]]
        );
        assert_eq!(ahead.next(), 1);
        client.send_to(&[10], to).unwrap();
        client.send_to(&[11], to).unwrap();
        assert_eq!(read(&mut ahead), [10]);
        assert_eq!(read(&mut ahead), [11]);
    }

    #[test]
    fn a_held_datagram_makes_reads_single_until_it_is_let_go() {
        let server = receiver();
        let client = bound();
        let to = server.local_addr().unwrap();
        client.send_to(&[0; 100], to).unwrap();
        let mut buffers = DatagramBuffers::new();
        let mut first = batch(&mut buffers, &server).unwrap();
        assert_eq!(first.len(), 1, "one queued");
        let held = first.pop().unwrap().0;
        for i in 1..4u8 {
            client.send_to(&[i; 100], to).unwrap();
        }
        // `held` is alive: one datagram per call, still whole and in order.
        for i in 1..4u8 {
            let got = batch(&mut buffers, &server).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(&got[0].0[..], &[i; 100][..]);
        }
        assert_eq!(&held[..], &[0; 100][..]);
        drop(held);
        for i in 4..7u8 {
            client.send_to(&[i; 100], to).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(batch(&mut buffers, &server).unwrap());
        }
        let got: Vec<&[u8]> = got.iter().map(|(d, _)| &d[..]).collect();
        assert_eq!(got, [&[4u8; 100][..], &[5; 100], &[6; 100]]);
    }

    #[test]
    fn reports_the_drop_count_with_the_batch() {
        let server = bound();
        socket2::SockRef::from(&server)
            .set_recv_buffer_size(1)
            .unwrap();
        crate::enable_socket_drops(&server).unwrap();
        let client = bound();
        let to = server.local_addr().unwrap();
        // The smallest buffer holds a datagram or two; the rest of the burst is dropped.
        for _ in 0..64 {
            let _ = client.send_to(&[0u8; 512], to);
        }
        let mut buffers = DatagramBuffers::new();
        let drained = |buffers: &mut DatagramBuffers| {
            let mut last = None;
            while let Ok((_, d)) = buffers.recv_batch_from(&server, true, 8, |_, _| {}) {
                last = d.or(last);
            }
            last
        };
        drained(&mut buffers);
        // Queued after the drops: read with the count.
        client.send_to(b"last", to).unwrap();
        let last = drained(&mut buffers);
        assert!(last.is_some_and(|d| d > 0), "drops: {last:?}");
    }

    fn transmit(to: SocketAddr, data: &'static str) -> Transmit {
        Transmit {
            to,
            data: data.into(),
        }
    }

    fn received(s: &UdpSocket) -> Vec<String> {
        let mut buf = [0u8; 64];
        std::iter::from_fn(|| {
            let n = s.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .collect()
    }

    #[test]
    fn sends_a_batch_in_order_to_each_peer() {
        let server = bound();
        let (a, b) = (bound(), bound());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let ts: Vec<Transmit> = names
            .iter()
            .enumerate()
            .map(|(i, n)| transmit(if i % 3 == 0 { to_a } else { to_b }, n))
            .collect();
        assert_eq!(send_batch_to(&server, &ts).unwrap(), DATAGRAM_BATCH);
        assert_eq!(send_batch_to(&server, &ts[DATAGRAM_BATCH..]).unwrap(), 2);
        assert_eq!(send_batch_to(&server, &[]).unwrap(), 0);
        assert_eq!(received(&a), ["0", "3", "6", "9"]);
        assert_eq!(received(&b), ["1", "2", "4", "5", "7", "8"]);
    }

    #[test]
    fn a_failing_datagram_ends_the_batch_and_is_reported_next() {
        let server = bound();
        let peer = bound();
        let to = peer.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket fails in the sender (EAFNOSUPPORT).
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let ts = [transmit(to, "a"), transmit(v6, "b"), transmit(to, "c")];
        assert_eq!(send_batch_to(&server, &ts).unwrap(), 1);
        assert!(send_batch_to(&server, &ts[1..]).is_err());
        assert_eq!(send_batch_to(&server, &ts[2..]).unwrap(), 1);
        assert_eq!(received(&peer), ["a", "c"]);
    }
}
