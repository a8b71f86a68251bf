//! The kernel's per-socket drop count on UDP sockets (Linux SO_RXQ_OVFL): enable it, then
//! read it with a datagram ([`recv_from_with_drops`], or with each datagram of a batch:
//! `DatagramBuffers::recv_batch_from`). Elsewhere enabling does nothing and no count is read.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// Asks the kernel to report the socket's receive-buffer drops with each datagram
/// (SO_RXQ_OVFL; read them with [`recv_from_with_drops`]). Linux only: elsewhere `Ok(())`
/// and nothing changes. The drivers call it on every UDP socket they serve, bound or given.
///
/// ```
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// easynet_common::enable_socket_drops(&socket)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn enable_socket_drops<'a, S>(socket: &'a S) -> io::Result<()>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let sock = socket2::SockRef::from(socket);
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RXQ_OVFL,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket2::SockRef::from(socket);
    Ok(())
}

/// The socket's drop count now, as [`recv_from_with_drops`] reports it with later
/// datagrams (SO_MEMINFO, Linux 4.6 and later): where a server's count of a socket it was
/// given starts. `None` where it cannot be read (other systems, and Linux architectures
/// whose SO_MEMINFO number differs from the generic one).
///
/// ```
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let now = easynet_common::socket_drop_count(&socket);
/// assert!(now.is_none_or(|n| n == 0));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn socket_drop_count<'a, S>(socket: &'a S) -> Option<u32>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let sock = socket2::SockRef::from(socket);
    // The generic number (asm-generic/socket.h), which these architectures use unchanged;
    // libc does not define it.
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )
    ))]
    {
        use std::os::fd::AsRawFd;
        const SO_MEMINFO: libc::c_int = 55;
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that many.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let full = len as usize == std::mem::size_of_val(&info);
        (rc == 0 && full).then_some(info[libc::SK_MEMINFO_DROPS as usize])
    }
    #[cfg(not(all(
        target_os = "linux",
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )
    )))]
    {
        let _ = sock;
        None
    }
}

/// Receives one datagram into `buf` like `recv_from`, with the socket's cumulative drop
/// count when the kernel sends it (Linux, after [`enable_socket_drops`], once the socket
/// has dropped something; a `u32` that wraps). One `recvmsg` in place of a `recvfrom`; the
/// control buffer is on the stack. Elsewhere a plain `recv_from` and `None`.
///
/// ```
/// use easynet_common::{enable_socket_drops, recv_from_with_drops};
///
/// let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// enable_socket_drops(&server)?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"hi", server.local_addr()?)?;
/// let mut buf = [0u8; 16];
/// let (n, from, drops) = recv_from_with_drops(&server, &mut buf)?;
/// assert_eq!((&buf[..n], from), (&b"hi"[..], client.local_addr()?));
/// assert_eq!(drops, None); // nothing dropped yet: the kernel sends no count
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn recv_from_with_drops<'a, S>(
    socket: &'a S,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u32>)>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    recv_from_counting(socket, buf, true)
}

/// [`recv_from_with_drops`] when `drops` is true; otherwise a plain `recvfrom` (cheaper:
/// no control buffer) that reports no count.
///
/// ```
/// let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"hi", server.local_addr()?)?;
/// let mut buf = [0u8; 16];
/// let (n, _, drops) = easynet_common::recv_from_counting(&server, &mut buf, false)?;
/// assert_eq!((&buf[..n], drops), (&b"hi"[..], None));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn recv_from_counting<'a, S>(
    socket: &'a S,
    buf: &mut [u8],
    drops: bool,
) -> io::Result<(usize, SocketAddr, Option<u32>)>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    // SAFETY: the socket only writes initialized bytes into the slice, and an initialized
    // `[u8]` is a valid `[MaybeUninit<u8>]`.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    recv_from_uninit(socket, uninit, drops)
}

/// [`recv_from_counting`] into memory not initialized yet: the first `n` bytes of `buf`
/// are initialized when it returns `n`.
pub(crate) fn recv_from_uninit<'a, S>(
    socket: &'a S,
    buf: &mut [MaybeUninit<u8>],
    drops: bool,
) -> io::Result<(usize, SocketAddr, Option<u32>)>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let sock = socket2::SockRef::from(socket);
    #[cfg(target_os = "linux")]
    if drops {
        let mut control = Control::new();
        // SAFETY: a zeroed sockaddr_storage with its full length is what recvmsg fills in.
        let mut addr = unsafe {
            socket2::SockAddr::new(
                socket2::SockAddrStorage::zeroed(),
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            )
        };
        let mut bufs = [socket2::MaybeUninitSlice::new(buf)];
        let mut msg = socket2::MsgHdrMut::new()
            .with_addr(&mut addr)
            .with_buffers(&mut bufs)
            .with_control(&mut control.0);
        let n = sock.recvmsg(&mut msg, 0)?;
        let len = msg.control_len(); // the last use of `msg`: `control` is ours again
        let from = addr.as_socket().ok_or_else(not_inet)?;
        return Ok((n, from, rxq_ovfl(control.received(len))));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = drops;
    let (n, from) = sock.recv_from(buf)?;
    Ok((n, from.as_socket().ok_or_else(not_inet)?, None))
}

fn not_inet() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
}

/// A receive's control buffer: cmsghdr needs its alignment; room for SO_RXQ_OVFL and a
/// few more (options a given socket may have on), which are skipped.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
pub(crate) struct Control([MaybeUninit<u8>; 128]);

#[cfg(target_os = "linux")]
impl Control {
    pub(crate) const fn new() -> Self {
        Self([MaybeUninit::uninit(); 128])
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut MaybeUninit<u8> {
        self.0.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes a receive reported it wrote (`msg_controllen`).
    pub(crate) fn received(&self, len: usize) -> &[u8] {
        let len = len.min(self.0.len());
        // SAFETY: the kernel initialized the first `msg_controllen` bytes it reported.
        unsafe { &*(&self.0[..len] as *const [MaybeUninit<u8>] as *const [u8]) }
    }
}

/// The SO_RXQ_OVFL count in a received control buffer (the bytes `recvmsg` reported),
/// if there is one.
#[cfg(target_os = "linux")]
pub(crate) fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    if control.is_empty() {
        return None;
    }
    // SAFETY: the CMSG_* macros only read headers inside [msg_control, +msg_controllen),
    // and `control` is that many initialized bytes, aligned for cmsghdr (the caller's
    // buffer, or the test's). The data is read unaligned.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = control.as_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SO_RXQ_OVFL
                && c.cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A control buffer as the kernel writes it: one message per (level, type, u32).
    fn control(msgs: &[(libc::c_int, libc::c_int, u32)]) -> Vec<u64> {
        // u64s: cmsghdr's alignment.
        let space = unsafe { libc::CMSG_SPACE(4) } as usize;
        let mut out = vec![0u64; (space * msgs.len()).div_ceil(8)];
        let base = out.as_mut_ptr().cast::<u8>();
        for (i, &(level, ty, value)) in msgs.iter().enumerate() {
            // SAFETY: each message fits in its CMSG_SPACE slot inside `out`.
            unsafe {
                let cmsg = base.add(i * space).cast::<libc::cmsghdr>();
                (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
                (*cmsg).cmsg_level = level;
                (*cmsg).cmsg_type = ty;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>(), value);
            }
        }
        out
    }

    fn bytes(v: &[u64]) -> &[u8] {
        // SAFETY: u64s are plain bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
    }

    #[test]
    fn finds_the_count_among_other_messages() {
        let c = control(&[
            (libc::IPPROTO_IP, libc::IP_TTL, 64),
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 42),
        ]);
        assert_eq!(rxq_ovfl(bytes(&c)), Some(42));
    }

    #[test]
    fn no_count_without_the_message() {
        assert_eq!(rxq_ovfl(&[]), None);
        let c = control(&[(libc::IPPROTO_IP, libc::IP_TTL, 64)]);
        assert_eq!(rxq_ovfl(bytes(&c)), None);
        // A truncated header is not read.
        assert_eq!(rxq_ovfl(&bytes(&c)[..4]), None);
    }

    #[test]
    fn reads_the_kernels_count_on_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&server)
            .set_recv_buffer_size(1)
            .unwrap();
        enable_socket_drops(&server).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest buffer holds a datagram or two; the rest of the burst is dropped.
        for _ in 0..64 {
            client
                .send_to(&[0u8; 512], server.local_addr().unwrap())
                .unwrap();
        }
        let mut buf = [0u8; 1024];
        let (n, from, drops) = recv_from_with_drops(&server, &mut buf).unwrap();
        assert_eq!((n, from), (512, client.local_addr().unwrap()));
        let _ = drops; // the first datagram was queued before any drop: no count needed
        client
            .send_to(b"last", server.local_addr().unwrap())
            .unwrap();
        server.set_nonblocking(true).unwrap();
        let mut last = None;
        while let Ok((_, _, d)) = recv_from_with_drops(&server, &mut buf) {
            last = d.or(last);
        }
        assert!(last.is_some_and(|d| d > 0), "drops: {last:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(socket_drop_count(&server), last);
    }
}
