//! Addresses of peers and servers: an internet socket address or a Unix socket address.
//!
//! [`Addr`] is what handlers see in [`ConnInfo`](crate::handler::ConnInfo), whatever the
//! transport. [`UnixAddr`] is a plain value (a filesystem path, a Linux abstract name, or
//! unnamed), so this crate stays free of I/O and of `std::os::unix`; the drivers convert
//! from and to the OS types. A Unix path or name is held in an `Arc`, so cloning an address
//! never allocates.
//!
//! The datagram machines are generic over the peer address through [`PeerAddr`]:
//! `SocketAddr` for UDP (copied, never allocated) and [`UnixAddr`] for Unix datagrams.
//!
//! ```
//! use easynet_core::addr::{Addr, UnixAddr};
//!
//! let inet: Addr = "127.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap().into();
//! assert_eq!(inet.to_string(), "127.0.0.1:9000");
//! let path = Addr::from(UnixAddr::pathname("/run/app.sock"));
//! assert_eq!(path.to_string(), "/run/app.sock");
//! let name = UnixAddr::abstract_name(b"app");
//! assert_eq!(name.to_string(), "@app");
//! assert!(UnixAddr::unnamed().is_unnamed());
//! ```

use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The address of a peer or of a server socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Addr {
    /// An IPv4 or IPv6 socket address (TCP, UDP).
    Inet(SocketAddr),
    /// A Unix domain socket address.
    Unix(UnixAddr),
}

impl Addr {
    /// The internet address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix address, if this is one.
    pub fn as_unix(&self) -> Option<&UnixAddr> {
        match self {
            Addr::Unix(a) => Some(a),
            Addr::Inet(_) => None,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => a.fmt(f),
            Addr::Unix(a) => a.fmt(f),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::Inet(a)
    }
}

impl From<UnixAddr> for Addr {
    fn from(a: UnixAddr) -> Self {
        Addr::Unix(a)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.as_inet() == Some(*other)
    }
}

impl PartialEq<UnixAddr> for Addr {
    fn eq(&self, other: &UnixAddr) -> bool {
        self.as_unix() == Some(other)
    }
}

/// A Unix domain socket address: a filesystem path, a Linux abstract name, or unnamed.
///
/// An unnamed address is what an unbound socket (a datagram client that never bound, one
/// end of a socket pair) has; a server cannot send to it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixAddr(Kind);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Unnamed,
    Path(Arc<Path>),
    Abstract(Arc<[u8]>),
}

impl UnixAddr {
    /// A filesystem path.
    pub fn pathname(path: impl AsRef<Path>) -> Self {
        Self(Kind::Path(Arc::from(path.as_ref())))
    }

    /// A Linux abstract name (without the leading NUL byte).
    pub fn abstract_name(name: impl AsRef<[u8]>) -> Self {
        Self(Kind::Abstract(Arc::from(name.as_ref())))
    }

    /// The address of an unbound socket.
    pub const fn unnamed() -> Self {
        Self(Kind::Unnamed)
    }

    /// The path, for a filesystem address.
    pub fn as_pathname(&self) -> Option<&Path> {
        match &self.0 {
            Kind::Path(p) => Some(p),
            _ => None,
        }
    }

    /// The name, for an abstract address.
    pub fn as_abstract_name(&self) -> Option<&[u8]> {
        match &self.0 {
            Kind::Abstract(n) => Some(n),
            _ => None,
        }
    }

    /// True for an unbound socket's address.
    pub fn is_unnamed(&self) -> bool {
        matches!(self.0, Kind::Unnamed)
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Unnamed => f.write_str("(unnamed)"),
            Kind::Path(p) => p.display().fmt(f),
            // `@name`, as ss(8) and netstat show abstract names.
            Kind::Abstract(n) => write!(f, "@{}", n.escape_ascii()),
        }
    }
}

impl fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixAddr({self})")
    }
}

/// The credentials of the process at the other end of a Unix socket, as the OS reports
/// them when the connection was made (`SO_PEERCRED` on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCred {
    /// Process id, where the OS reports it (Linux does; the BSDs' `getpeereid` does not).
    pub pid: Option<u32>,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl PeerCred {
    /// Credentials from their parts.
    pub const fn new(uid: u32, gid: u32, pid: Option<u32>) -> Self {
        Self { pid, uid, gid }
    }
}

/// What a datagram peer table can be keyed by: `SocketAddr` (UDP) or [`UnixAddr`].
///
/// Cloning must be cheap (a copy or a reference count): the machines clone the key per
/// datagram.
pub trait PeerAddr:
    Clone + Eq + Hash + Ord + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    /// The address as handlers see it.
    fn to_addr(&self) -> Addr;

    /// The key inside `addr`, if it is of this kind.
    fn from_addr(addr: &Addr) -> Option<&Self>;
}

impl PeerAddr for SocketAddr {
    fn to_addr(&self) -> Addr {
        Addr::Inet(*self)
    }

    fn from_addr(addr: &Addr) -> Option<&Self> {
        match addr {
            Addr::Inet(a) => Some(a),
            Addr::Unix(_) => None,
        }
    }
}

impl PeerAddr for UnixAddr {
    fn to_addr(&self) -> Addr {
        Addr::Unix(self.clone())
    }

    fn from_addr(addr: &Addr) -> Option<&Self> {
        addr.as_unix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_accessors() {
        let a = UnixAddr::abstract_name(b"a\0b");
        assert_eq!(a.to_string(), "@a\\x00b");
        assert_eq!(a.as_abstract_name(), Some(&b"a\0b"[..]));
        assert_eq!(a.as_pathname(), None);
        assert_eq!(UnixAddr::unnamed().to_string(), "(unnamed)");
        let p = Addr::from(UnixAddr::pathname("/tmp/x"));
        assert_eq!(
            p.as_unix().unwrap().as_pathname(),
            Some(Path::new("/tmp/x"))
        );
        assert_eq!(p.as_inet(), None);
        let i: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(Addr::from(i), i);
        assert_eq!(i.to_addr().to_string(), "[::1]:5");
    }
}
