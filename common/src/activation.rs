//! Socket activation: the listening sockets a service manager (systemd, or
//! `systemd-socket-activate` by hand) bound and passed to this process, under the
//! protocol of `sd_listen_fds(3)`: `LISTEN_PID` is this process's id, `LISTEN_FDS` the
//! number of descriptors passed, starting at 3 (`SD_LISTEN_FDS_START`).
//!
//! Hand them to a server builder (`listener(..)`, `socket(..)`) after converting them:
//! [`InheritedSocket::kind`] says what each one is.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, SockRef, Type};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Why the passed sockets could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number.
    #[error("{var} is not a number: {value:?}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `LISTEN_FDS` names more descriptors than a process can have.
    #[error("LISTEN_FDS names too many descriptors: {0}")]
    TooMany(u64),
    /// A passed descriptor is not an open socket.
    #[error("descriptor {fd} is not a socket: {error}")]
    NotASocket {
        /// The descriptor.
        fd: RawFd,
        /// What the OS said.
        error: io::Error,
    },
}

/// What an inherited socket is, to pick the builder it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketKind {
    /// A TCP socket (IPv4 or IPv6): `std::net::TcpListener::from(fd)`.
    Tcp,
    /// A UDP socket: `std::net::UdpSocket::from(fd)`.
    Udp,
    /// A Unix stream socket: `std::os::unix::net::UnixListener::from(fd)`.
    UnixStream,
    /// A Unix datagram socket: `std::os::unix::net::UnixDatagram::from(fd)`.
    UnixDatagram,
    /// Anything else (a FIFO, a socket of another family or type).
    Other,
}

/// One socket passed by the service manager; owns its descriptor.
#[derive(Debug)]
pub struct InheritedSocket {
    fd: OwnedFd,
    kind: SocketKind,
}

impl InheritedSocket {
    /// What it is.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The descriptor, to convert (`TcpListener::from(socket.into_fd())`).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// How many descriptors the environment passes to a process with id `pid`: 0 when
/// `LISTEN_PID` is unset or names another process (the variables were meant for a parent).
fn passed(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<usize, ActivationError> {
    let Some(listen_pid) = listen_pid else {
        return Ok(0);
    };
    let number = |var, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| ActivationError::Invalid {
                var,
                value: value.to_owned(),
            })
    };
    if number("LISTEN_PID", listen_pid)? != u64::from(pid) {
        return Ok(0);
    }
    let n = number("LISTEN_FDS", listen_fds.unwrap_or("0"))?;
    // Past i32 the descriptor numbers would wrap.
    if n > (i32::MAX - LISTEN_FDS_START) as u64 {
        return Err(ActivationError::TooMany(n));
    }
    Ok(n as usize)
}

/// Takes the sockets the service manager passed to this process, as `sd_listen_fds(1)`
/// does: if `LISTEN_PID` is this process's id, the `LISTEN_FDS` descriptors from 3 on are
/// this process's, marked close-on-exec; `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
/// are removed from the environment either way (so children do not take them, and a
/// second call returns nothing). Empty when nothing was passed.
///
/// # Safety
///
/// Call it at the start of `main`, before any other thread exists: it changes the
/// environment, which another thread reading or writing it at the same time makes
/// undefined behaviour (`std::env::remove_var`). And nothing else in the process may own
/// the descriptors passed: they become owned by what this returns.
///
/// ```
/// // Nothing passed (LISTEN_PID unset): nothing taken, nothing changed.
/// // SAFETY: a doctest's main; no other thread touches the environment.
/// let sockets = unsafe { easynet_common::listen_fds() }.unwrap();
/// assert!(sockets.is_empty());
/// ```
pub unsafe fn listen_fds() -> Result<Vec<InheritedSocket>, ActivationError> {
    let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let (pid_var, fds_var) = (var("LISTEN_PID"), var("LISTEN_FDS"));
    if pid_var.is_none() {
        return Ok(Vec::new());
    }
    // SAFETY: the caller promised that no other thread uses the environment.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let n = passed(pid_var.as_deref(), fds_var.as_deref(), std::process::id())?;
    let mut sockets = Vec::with_capacity(n);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n as RawFd {
        // SAFETY: the service manager passed this descriptor to this process (LISTEN_PID)
        // and the caller promised nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let kind = match kind_of(&fd) {
            Ok(kind) => kind,
            Err(error) => {
                // Not what was promised: leave it open rather than close a descriptor
                // something else may use.
                let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
                return Err(ActivationError::NotASocket { fd, error });
            }
        };
        let _ = SockRef::from(&fd).set_cloexec(true);
        sockets.push(InheritedSocket { fd, kind });
    }
    Ok(sockets)
}

fn kind_of(fd: &OwnedFd) -> io::Result<SocketKind> {
    let sock = SockRef::from(fd);
    let ty = sock.r#type()?;
    let domain = sock.local_addr()?.domain();
    Ok(match (domain, ty) {
        (Domain::IPV4 | Domain::IPV6, Type::STREAM) => SocketKind::Tcp,
        (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => SocketKind::Udp,
        (Domain::UNIX, Type::STREAM) => SocketKind::UnixStream,
        (Domain::UNIX, Type::DGRAM) => SocketKind::UnixDatagram,
        _ => SocketKind::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_follow_sd_listen_fds() {
        assert_eq!(passed(None, Some("2"), 7).unwrap(), 0, "no LISTEN_PID");
        assert_eq!(
            passed(Some("8"), Some("2"), 7).unwrap(),
            0,
            "another process's"
        );
        assert_eq!(passed(Some("7"), Some("2"), 7).unwrap(), 2);
        assert_eq!(passed(Some("7"), None, 7).unwrap(), 0);
        assert!(matches!(
            passed(Some("x"), Some("2"), 7),
            Err(ActivationError::Invalid {
                var: "LISTEN_PID",
                ..
            })
        ));
        assert!(matches!(
            passed(Some("7"), Some("-1"), 7),
            Err(ActivationError::Invalid {
                var: "LISTEN_FDS",
                ..
            })
        ));
        assert!(matches!(
            passed(Some("7"), Some("99999999999"), 7),
            Err(ActivationError::TooMany(_))
        ));
    }
}
