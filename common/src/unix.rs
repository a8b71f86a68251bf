//! Unix domain sockets for both drivers: binding (with the stale-file rule), the socket
//! file's removal, address conversion between the OS and [`UnixAddr`], sending to a
//! [`UnixAddr`] (paths and abstract names alike) and peer credentials.
//!
//! Stale socket files: binding a path that exists is refused with `AddrInUse` if something
//! accepts connections there (EasyNetwork's rule), and also if the path is not a socket (we
//! never delete a file that is not ours to delete). A socket file nobody listens on
//! (connecting is refused) is left over from a process that died: it is removed and the
//! path is bound. The file we create is removed when the bound socket is dropped, but only
//! if the path still names that file (same device, inode and birth time), so a server that has been
//! replaced at the same path does not delete its successor's socket.
//!
//! ```
//! use easynet_common::unix::{bind_listener, to_unix_addr};
//! use easynet_core::addr::UnixAddr;
//!
//! let path = std::env::temp_dir().join(format!("easynet-doc-{}.sock", std::process::id()));
//! let (listener, file) = bind_listener(&UnixAddr::pathname(&path), 8).unwrap();
//! assert_eq!(to_unix_addr(&listener.local_addr().unwrap()), UnixAddr::pathname(&path));
//! assert!(path.exists());
//! drop((listener, file));
//! assert!(!path.exists());
//! ```

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{SocketAddr as StdUnixAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use easynet_core::addr::{PeerCred, UnixAddr};
use socket2::{Domain, SockAddr, Socket, Type};

/// The socket file a server created; removes it when dropped if the path still names it.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: FileId,
}

/// What tells our file from a later one at the same path: inode numbers are reused at
/// once (tmpfs), so the birth time goes with them where the filesystem keeps it.
#[derive(Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    born: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
        })
    }
}

impl SocketFile {
    fn created(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            id: FileId::of(path)?,
        })
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only if it is still the file we created: another server may own the path now.
        if FileId::of(&self.path).is_ok_and(|id| id == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The OS form of `addr`; fails for an unnamed address (nothing can be sent to it).
pub fn to_sock_addr(addr: &UnixAddr) -> io::Result<SockAddr> {
    if let Some(path) = addr.as_pathname() {
        return SockAddr::unix(path);
    }
    if let Some(name) = addr.as_abstract_name() {
        // socket2 takes a leading NUL as the abstract namespace (Linux, Android).
        let mut bytes = Vec::with_capacity(name.len() + 1);
        bytes.push(0);
        bytes.extend_from_slice(name);
        return SockAddr::unix(OsStr::from_bytes(&bytes));
    }
    Err(unnamed_error())
}

fn unnamed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "an unnamed Unix socket address cannot be bound, connected or sent to",
    )
}

/// The address the peer of a connected Unix stream is bound to, asked of the kernel
/// (`getpeername`): the address mio's `accept` hands back (and tokio's, which is mio's) loses
/// Linux abstract names, so servers read it here. Unnamed when the peer is not bound.
pub fn peer_addr(socket: &impl AsFd) -> UnixAddr {
    match socket2::SockRef::from(socket).peer_addr() {
        Ok(addr) => from_sock_addr(&addr),
        Err(_) => UnixAddr::unnamed(),
    }
}

/// What a Unix stream client knows of its connection: `peer` when the caller knows it (the
/// address it connected to, which not every OS reports back for an abstract name), else the
/// socket's peer; the socket's own address; the server's credentials where the OS gives them.
pub fn client_info(
    socket: &impl AsFd,
    peer: Option<UnixAddr>,
) -> io::Result<easynet_core::handler::ConnInfo> {
    let sock = socket2::SockRef::from(socket);
    let peer = match peer {
        Some(peer) => peer,
        None => from_sock_addr(&sock.peer_addr()?),
    };
    let local = from_sock_addr(&sock.local_addr()?);
    Ok(
        easynet_core::handler::ConnInfo::new(easynet_core::ConnId(0), peer, local)
            .with_peer_cred(peer_cred(socket).ok()),
    )
}

/// The core form of a socket2 Unix address (getpeername / getsockname keep abstract names).
fn from_sock_addr(addr: &SockAddr) -> UnixAddr {
    if let Some(path) = addr.as_pathname() {
        UnixAddr::pathname(path)
    } else if let Some(name) = addr.as_abstract_namespace() {
        UnixAddr::abstract_name(name)
    } else {
        UnixAddr::unnamed()
    }
}

/// The core form of an OS Unix socket address.
pub fn to_unix_addr(addr: &StdUnixAddr) -> UnixAddr {
    if let Some(path) = addr.as_pathname() {
        return UnixAddr::pathname(path);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = addr.as_abstract_name() {
            return UnixAddr::abstract_name(name);
        }
    }
    UnixAddr::unnamed()
}

/// Handles what exists at `path` before binding it (see the module docs).
fn clear_stale(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    let in_use = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} exists and is in use", path.display()),
        )
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(in_use()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => tracing_free_remove(path),
        // A datagram socket file answers EPROTOTYPE to a stream connect: someone may own it.
        Err(_) => match UnixDatagram::unbound().and_then(|d| d.connect(path)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => tracing_free_remove(path),
            _ => Err(in_use()),
        },
    }
}

fn tracing_free_remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn bind_socket(addr: &UnixAddr, ty: Type) -> io::Result<(Socket, Option<SocketFile>)> {
    if let Some(path) = addr.as_pathname() {
        clear_stale(path)?;
    }
    let sock_addr = to_sock_addr(addr)?;
    let socket = Socket::new(Domain::UNIX, ty, None)?;
    socket.bind(&sock_addr)?;
    socket.set_nonblocking(true)?;
    let file = match addr.as_pathname() {
        Some(path) => Some(SocketFile::created(path)?),
        None => None,
    };
    Ok((socket, file))
}

/// Binds a non-blocking Unix stream listener at `addr` with `backlog`; the [`SocketFile`]
/// (for a path) removes the file when dropped, so keep it as long as the listener.
pub fn bind_listener(
    addr: &UnixAddr,
    backlog: i32,
) -> io::Result<(UnixListener, Option<SocketFile>)> {
    let (socket, file) = bind_socket(addr, Type::STREAM)?;
    socket.listen(backlog)?;
    Ok((UnixListener::from(std::os::fd::OwnedFd::from(socket)), file))
}

/// Binds a non-blocking Unix datagram socket at `addr`; see [`bind_listener`] for the file.
pub fn bind_datagram(addr: &UnixAddr) -> io::Result<(UnixDatagram, Option<SocketFile>)> {
    let (socket, file) = bind_socket(addr, Type::DGRAM)?;
    Ok((UnixDatagram::from(std::os::fd::OwnedFd::from(socket)), file))
}

/// A blocking Unix datagram socket for a client: bound to `local` if given, otherwise to a
/// kernel-chosen abstract name on Linux (so the server can answer), and connected to
/// `server`. Elsewhere, without `local` the socket stays unnamed and cannot get answers.
pub fn client_datagram(
    server: &UnixAddr,
    local: Option<&UnixAddr>,
) -> io::Result<(UnixDatagram, Option<SocketFile>)> {
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    let mut file = None;
    match local {
        Some(local) => {
            if let Some(path) = local.as_pathname() {
                clear_stale(path)?;
            }
            socket.bind(&to_sock_addr(local)?)?;
            if let Some(path) = local.as_pathname() {
                file = Some(SocketFile::created(path)?);
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // An empty address asks Linux for an unused abstract name (autobind).
        None => socket.bind(&SockAddr::unix("")?)?,
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        None => {}
    }
    socket.connect(&to_sock_addr(server)?)?;
    Ok((UnixDatagram::from(std::os::fd::OwnedFd::from(socket)), file))
}

/// Connects a blocking Unix stream socket to `addr` (a path or an abstract name).
pub fn connect_stream(addr: &UnixAddr) -> io::Result<UnixStream> {
    connect_stream_from(addr, None).map(|(stream, _)| stream)
}

/// Connects a blocking Unix stream socket to `addr` from `local` when set (a path, under
/// the stale-file rule of the module docs, or an abstract name); the [`SocketFile`] of a
/// bound path removes it when dropped.
pub fn connect_stream_from(
    addr: &UnixAddr,
    local: Option<&UnixAddr>,
) -> io::Result<(UnixStream, Option<SocketFile>)> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let mut file = None;
    if let Some(local) = local {
        if let Some(path) = local.as_pathname() {
            clear_stale(path)?;
        }
        socket.bind(&to_sock_addr(local)?)?;
        if let Some(path) = local.as_pathname() {
            file = Some(SocketFile::created(path)?);
        }
    }
    socket.connect(&to_sock_addr(addr)?)?;
    Ok((UnixStream::from(std::os::fd::OwnedFd::from(socket)), file))
}

/// How a Unix stream client connects: the local address to bind first and the receive
/// size. The defaults are the TCP clients' ([`TcpClientOptions`](crate::TcpClientOptions)):
/// no local address (the socket stays unnamed), 16 KiB reads.
///
/// ```
/// use easynet_common::unix::UnixStreamClientOptions;
/// use easynet_core::addr::UnixAddr;
///
/// let options = UnixStreamClientOptions::new()
///     .local_addr(UnixAddr::pathname("/tmp/client.sock"))
///     .max_recv_size(64 * 1024);
/// assert_eq!(options.stream.read_size, 64 * 1024);
/// assert!(options.validate().is_ok());
/// assert!(UnixStreamClientOptions::new().max_recv_size(0).validate().is_err());
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct UnixStreamClientOptions {
    /// The address to bind before connecting (EasyNetwork's `local_path`): a path (removed
    /// when the client is dropped) or, on Linux, an abstract name.
    pub local_addr: Option<UnixAddr>,
    /// The connection's settings: `read_size` is EasyNetwork's `max_recv_size`.
    pub stream: easynet_core::stream::StreamConfig,
}

impl UnixStreamClientOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`local_addr`](Self::local_addr).
    pub fn local_addr(mut self, addr: UnixAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Most bytes read from the socket at once (EasyNetwork's `max_recv_size`, 16 KiB); 0
    /// is refused when connecting ([`ConfigError::MaxRecvSize`](crate::ConfigError)).
    pub fn max_recv_size(mut self, bytes: usize) -> Self {
        self.stream.read_size = bytes;
        self
    }

    /// Checks the settings a connect relies on.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        if self.stream.read_size == 0 {
            return Err(crate::ConfigError::MaxRecvSize);
        }
        Ok(())
    }
}

/// Sends `buf` as one datagram from `socket` to `to`, without waiting (the socket's mode).
pub fn send_to(socket: &impl AsFd, buf: &[u8], to: &UnixAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(buf, &to_sock_addr(to)?)
}

/// The credentials of the peer of a connected Unix stream socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_cred(socket: &impl AsFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is borrowed and open; `cred` and `len` are valid for writes and `len`
    // holds the size of `cred`, as getsockopt(SO_PEERCRED) requires.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = u32::try_from(cred.pid).ok().filter(|&p| p != 0);
    Ok(PeerCred::new(cred.uid, cred.gid, pid))
}

/// The credentials of the peer of a connected Unix stream socket (no pid here).
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub fn peer_cred(socket: &impl AsFd) -> io::Result<PeerCred> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: the fd is borrowed and open; uid and gid are valid for writes.
    let rc = unsafe { libc::getpeereid(socket.as_fd().as_raw_fd(), &mut uid, &mut gid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred::new(uid, gid, None))
}

/// Peer credentials are not available on this OS.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
pub fn peer_cred(socket: &impl AsFd) -> io::Result<PeerCred> {
    let _ = socket;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are not available on this OS",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("easynet-common-{tag}-{}.sock", std::process::id()))
    }

    #[test]
    fn stale_file_is_replaced_live_one_and_plain_file_refused() {
        let path = temp_path("stale");
        let _ = std::fs::remove_file(&path);
        let addr = UnixAddr::pathname(&path);
        // A socket file nobody listens on: left by a dead process.
        let (l, file) = bind_listener(&addr, 4).unwrap();
        std::mem::forget(file); // keep the file as a crash would
        drop(l);
        assert!(path.exists());
        let (live, file) = bind_listener(&addr, 4).expect("stale file replaced");
        let err = bind_listener(&addr, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop((live, file));
        assert!(!path.exists(), "our file is removed");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = bind_listener(&addr, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(path.exists(), "a regular file is never removed");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_of_a_successor_is_not_removed() {
        let path = temp_path("successor");
        let _ = std::fs::remove_file(&path);
        let addr = UnixAddr::pathname(&path);
        let (l1, f1) = bind_listener(&addr, 4).unwrap();
        drop(l1);
        // Another server took the path over (its own file, another inode).
        let (l2, f2) = bind_listener(&addr, 4).unwrap();
        drop(f1);
        assert!(path.exists(), "the successor's file stays");
        drop((l2, f2));
        assert!(!path.exists());
    }

    #[test]
    fn peer_credentials_are_ours() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((cred.uid, cred.gid), (uid, gid));
        #[cfg(target_os = "linux")]
        assert_eq!(cred.pid, Some(std::process::id()));
    }
}
