//! How many bytes the kernel still holds for a stream socket's peer: the answer to the
//! core's [`Action::QueryUnsent`](easynet_core::stream::Action::QueryUnsent), which ends a
//! lingering close as soon as nothing a reset could destroy is left.
//!
//! ```
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
//! # #[cfg(target_os = "linux")]
//! assert_eq!(easynet_common::unsent_bytes(&client), Some(0));
//! ```

/// Bytes written to a TCP or Unix stream socket that its peer has not acknowledged (TCP,
/// the FIN included) or read (Unix stream) yet (`ioctl(SIOCOUTQ)`); `None` where the OS
/// cannot tell.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn unsent_bytes(socket: &impl std::os::fd::AsFd) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: the fd is borrowed and open; TIOCOUTQ (SIOCOUTQ) writes one int to `n`.
    let rc = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
    if rc == 0 {
        usize::try_from(n).ok()
    } else {
        None
    }
}

/// Bytes not yet taken by the peer; this OS cannot tell, so always `None`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn unsent_bytes<S>(socket: &S) -> Option<usize> {
    let _ = socket;
    None
}
