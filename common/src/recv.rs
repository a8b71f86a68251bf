//! Reading a socket straight into a receive buffer (a connection's in-place reads).

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
