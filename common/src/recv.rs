//! Reading a socket straight into a receive buffer: a connection's in-place reads, a
//! datagram loop's [`DatagramBuffers`].

use std::io;

use bytes::BytesMut;

/// Reads from `socket` into `buf`'s spare capacity (reserve room first) without zero-filling
/// it, and extends `buf` by the bytes read. Returns that count; 0 is end of stream (or no
/// spare capacity). For drivers reading in place
/// ([`Driven::read_buffer`](easynet_core::stream::Driven::read_buffer)).
pub fn recv_into<'a, S>(socket: &'a S, buf: &mut BytesMut) -> io::Result<usize>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let n = socket2::SockRef::from(socket).recv(buf.spare_capacity_mut())?;
    let len = buf.len() + n;
    // SAFETY: `recv` initialized the first `n` bytes of the spare capacity (it returns at
    // most the length it was given), so `len` bytes are initialized and `len <= capacity`.
    unsafe { buf.set_len(len) };
    Ok(n)
}

/// Room a datagram read is given: the largest UDP datagram, and Unix datagrams up to 64 KiB
/// (longer ones arrive cut to this; see `DatagramConfig::max_datagram_size`).
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// Most datagrams a loop moves with one system call: Linux's `recvmmsg` and `sendmmsg`
/// (`DatagramBuffers::recv_batch_from`, `send_batch_to`); elsewhere the drivers still take
/// answers from the core this many at a time and send them one by one.
pub const DATAGRAM_BATCH: usize = 8;

/// How many datagrams a loop's next batched read asks for (Linux's `recvmmsg`,
/// [`DatagramBuffers::recv_batch_from`]), kept per socket.
///
/// One at first, so that the first datagram's answer never waits for a batch read behind
/// it; twice as many after each read that got all it asked for, up to [`DATAGRAM_BATCH`];
/// one again once a read finds the queue empty (fewer than asked, or none). Under light
/// load a loop reads and answers one datagram at a time, as a `recv_from` loop does:
/// asking for a whole batch there held each answer back until the batch was read and
/// handled, and the peers, waiting for it, went to sleep more often (UDP 1 and 10 KiB, one
/// request at a time: about 20% fewer messages per second, see BENCHMARKS.md). Under load
/// the reads reach whole batches within a few calls.
///
/// ```
/// use easynet_common::{DATAGRAM_BATCH, ReadAhead};
///
/// let mut ahead = ReadAhead::new();
/// assert_eq!(ahead.next(), 1);
/// ahead.got(1); // all it asked for: more may be queued
/// assert_eq!(ahead.next(), 2);
/// ahead.got(2);
/// ahead.got(4);
/// ahead.got(8);
/// assert_eq!(ahead.next(), DATAGRAM_BATCH);
/// ahead.got(3); // fewer: the queue is empty
/// assert_eq!(ahead.next(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAhead {
    next: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadAhead {
    /// One datagram for the first read.
    pub const fn new() -> Self {
        Self { next: 1 }
    }

    /// Datagrams the next read asks for: 1 to [`DATAGRAM_BATCH`].
    pub const fn next(&self) -> usize {
        self.next
    }

    /// A read asked for [`next`](Self::next) datagrams and got `n`.
    pub fn got(&mut self, n: usize) {
        self.next = if n >= self.next {
            (2 * self.next).min(DATAGRAM_BATCH)
        } else {
            1
        };
    }

    /// A read found no datagram (`WouldBlock`): the next asks for one.
    pub fn drained(&mut self) {
        self.next = 1;
    }
}

/// The shared buffer's room: a batch's where reads are batched, whichever read comes first
/// (made by a single read, a smaller one would never take a batch).
#[cfg(target_os = "linux")]
const SHARED_ROOM: usize = crate::mmsg::BATCH_ROOM;
#[cfg(not(target_os = "linux"))]
const SHARED_ROOM: usize = MAX_DATAGRAM;

/// Where a datagram loop reads its datagrams, each returned as a buffer of its own.
///
/// A datagram is read straight into a buffer that goes with it to the core (no copy, no
/// allocation) whenever that buffer is free again, that is when nothing read into it
/// before is still held: a handler that answers and forgets its request frees it as soon
/// as the answer is sent. While a datagram read into it is still held (a handler kept it,
/// its answer waits for the socket), datagrams are read into a scratch buffer and copied
/// into an allocation of their size, as a loop does without this type. So a loop's memory
/// is the shared buffer and the scratch buffer whatever its handlers keep: [`MAX_DATAGRAM`]
/// bytes each, except that on Linux, where reads may be batched (`recv_batch_from`), the
/// shared buffer has [`DATAGRAM_BATCH`] slots of that size, of which only the pages
/// datagrams land in are touched.
///
/// ```
/// let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"one", server.local_addr()?)?;
/// client.send_to(b"two", server.local_addr()?)?;
/// let mut buffers = easynet_common::DatagramBuffers::new();
/// let (one, _, _) = buffers.recv_from_counting(&server, false)?; // read in place
/// let (two, from, _) = buffers.recv_from_counting(&server, false)?; // `one` is held: copied
/// assert_eq!((&one[..], &two[..], from), (&b"one"[..], &b"two"[..], client.local_addr()?));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct DatagramBuffers {
    /// Read into in place while nothing split off it is alive; made at its first use, with
    /// [`SHARED_ROOM`] bytes. Every byte of its allocation is initialized (made
    /// zeroed, written only by socket reads), so a batch's length may span a slot's unread
    /// rest.
    shared: Option<BytesMut>,
    /// Read into while `shared` is held; made at its first use.
    scratch: Vec<u8>,
}

impl Default for DatagramBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramBuffers {
    /// The buffers of one loop.
    pub fn new() -> Self {
        Self {
            shared: None,
            scratch: Vec::new(),
        }
    }

    /// The shared buffer, made with [`SHARED_ROOM`] if there is none yet.
    fn shared(&mut self) -> &mut BytesMut {
        self.shared.get_or_insert_with(|| {
            // Zeroed by the allocator (fresh pages, none touched before a datagram lands in
            // it: single reads touch the first slot's only).
            let mut shared = BytesMut::zeroed(SHARED_ROOM);
            shared.clear();
            shared
        })
    }

    /// The shared buffer with room for a batch in slots; `None` while something read into
    /// it before is still held.
    #[cfg(target_os = "linux")]
    pub(crate) fn batch_room(&mut self) -> Option<&mut BytesMut> {
        use crate::mmsg::BATCH_ROOM;
        let shared = self.shared();
        shared.try_reclaim(BATCH_ROOM).then_some(shared)
    }

    /// Receives one UDP datagram as [`recv_from_counting`](crate::recv_from_counting) does,
    /// in a buffer of its own.
    pub fn recv_from_counting<'a, S>(
        &mut self,
        socket: &'a S,
        drops: bool,
    ) -> io::Result<(BytesMut, std::net::SocketAddr, Option<u32>)>
    where
        socket2::SockRef<'a>: From<&'a S>,
    {
        let shared = self.shared();
        // All of it: a single read goes in at its start, as a batch's first datagram would.
        if shared.try_reclaim(SHARED_ROOM) {
            let room = &mut shared.spare_capacity_mut()[..MAX_DATAGRAM];
            let (n, from, count) = crate::rxq::recv_from_uninit(socket, room, drops)?;
            // SAFETY: the receive initialized the first `n` bytes of the spare capacity
            // (it returns at most the length it was given).
            unsafe { shared.set_len(n) };
            return Ok((shared.split_to(n), from, count));
        }
        let scratch = self.scratch();
        let (n, from, count) = crate::recv_from_counting(socket, scratch, drops)?;
        Ok((BytesMut::from(&scratch[..n]), from, count))
    }

    /// The scratch buffer, [`MAX_DATAGRAM`] bytes long, for a socket read into it; copy
    /// the datagram out.
    pub fn scratch(&mut self) -> &mut [u8] {
        if self.scratch.is_empty() {
            self.scratch = vec![0; MAX_DATAGRAM];
        }
        &mut self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        (server, client)
    }

    #[test]
    fn reads_in_place_again_once_the_datagram_is_dropped() {
        let (server, client) = pair();
        let mut buffers = DatagramBuffers::new();
        let mut base = None;
        for text in [&b"first"[..], b"second", b"third"] {
            client.send(text).unwrap();
            let (data, from, _) = buffers.recv_from_counting(&server, false).unwrap();
            assert_eq!((&data[..], from), (text, client.local_addr().unwrap()));
            // The same memory each time: no allocation per datagram.
            assert_eq!(*base.get_or_insert(data.as_ptr()), data.as_ptr());
        }
        client.send(b"").unwrap();
        let (data, _, _) = buffers.recv_from_counting(&server, false).unwrap();
        assert!(data.is_empty());
        assert!(buffers.scratch.is_empty());
    }

    #[test]
    fn held_datagrams_are_copied_and_pin_one_buffer_at_most() {
        let (server, client) = pair();
        let mut buffers = DatagramBuffers::new();
        let mut held = Vec::new();
        for i in 0..4u8 {
            client.send(&[i; 100]).unwrap();
            let (data, _, _) = buffers.recv_from_counting(&server, false).unwrap();
            assert_eq!(&data[..], &[i; 100][..]);
            held.push(data);
        }
        // The first went in place; the others, read while it was held, were copied into
        // allocations of their size.
        let base = held[0].as_ptr();
        assert!(held[1..].iter().all(|d| d.capacity() == 100));
        assert_eq!(buffers.scratch.len(), MAX_DATAGRAM);
        drop(held.remove(0));
        client.send(b"again").unwrap();
        let (data, _, _) = buffers.recv_from_counting(&server, false).unwrap();
        assert_eq!(&data[..], b"again");
        assert_eq!(data.as_ptr(), base); // in place again
    }

    #[test]
    fn a_full_size_datagram_fits_in_place() {
        let (server, client) = pair();
        let mut buffers = DatagramBuffers::new();
        let big = vec![7u8; 65_507];
        client.send(&big).unwrap();
        let (data, _, _) = buffers.recv_from_counting(&server, true).unwrap();
        assert_eq!(data.len(), big.len());
        assert!(buffers.scratch.is_empty());
    }
}
