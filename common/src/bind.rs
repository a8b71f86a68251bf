//! Listener sockets: host forms, resolution and socket options, built with socket2.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Where a server listens: a name, an IP address, a socket address, several of those, or
/// every interface. Builders' `host` takes anything that converts: `"localhost"`,
/// `"::1"`, an [`IpAddr`], a [`SocketAddr`], a `Vec` or array of them.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr, SocketAddr};
/// use easynet_common::{resolve, Host};
///
/// let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// assert_eq!(resolve(&Host::from(ip), 9000).unwrap(), [SocketAddr::new(ip, 9000)]);
/// // A socket address keeps its own port.
/// let sa = SocketAddr::new(ip, 7000);
/// assert_eq!(resolve(&Host::from(sa), 9000).unwrap(), [sa]);
/// let both = Host::from(vec![Host::from(sa), Host::from("127.0.0.1")]);
/// assert_eq!(resolve(&both, 9000).unwrap().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Host {
    /// Every interface: `0.0.0.0` and `::` (one listener each).
    All,
    /// One host name or address; a name may resolve to several addresses.
    Name(String),
    /// One IP address, with the builder's port.
    Ip(IpAddr),
    /// One socket address, bound as is: its port, not the builder's.
    Addr(SocketAddr),
    /// Several hosts; results are de-duplicated and sorted, one listener per address.
    List(Vec<Host>),
}

impl From<&str> for Host {
    fn from(name: &str) -> Self {
        if name.is_empty() {
            Host::All
        } else {
            Host::Name(name.to_owned())
        }
    }
}

impl From<String> for Host {
    fn from(name: String) -> Self {
        Host::from(name.as_str())
    }
}

impl From<&String> for Host {
    fn from(name: &String) -> Self {
        Host::from(name.as_str())
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Host::Ip(ip)
    }
}

impl From<Ipv4Addr> for Host {
    fn from(ip: Ipv4Addr) -> Self {
        Host::Ip(ip.into())
    }
}

impl From<Ipv6Addr> for Host {
    fn from(ip: Ipv6Addr) -> Self {
        Host::Ip(ip.into())
    }
}

impl From<SocketAddr> for Host {
    fn from(addr: SocketAddr) -> Self {
        Host::Addr(addr)
    }
}

impl<H: Into<Host>> From<Vec<H>> for Host {
    fn from(hosts: Vec<H>) -> Self {
        Host::List(hosts.into_iter().map(Into::into).collect())
    }
}

impl<H: Into<Host>, const N: usize> From<[H; N]> for Host {
    fn from(hosts: [H; N]) -> Self {
        Host::List(hosts.into_iter().map(Into::into).collect())
    }
}

/// Socket options applied to listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// The listen backlog.
    pub backlog: i32,
    /// Set SO_REUSEPORT.
    pub reuse_port: bool,
}

pub use easynet_core::error::BindError;

/// Resolves `host` with `port` into the sorted, de-duplicated addresses to bind.
pub fn resolve(host: &Host, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    resolve_into(host, port, &mut addrs)?;
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "host resolved to no address",
        ));
    }
    Ok(addrs)
}

fn resolve_into(host: &Host, port: u16, addrs: &mut Vec<SocketAddr>) -> io::Result<()> {
    match host {
        Host::All => addrs.extend([
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        ]),
        Host::Name(name) => addrs.extend((name.as_str(), port).to_socket_addrs()?),
        Host::Ip(ip) => addrs.push(SocketAddr::new(*ip, port)),
        Host::Addr(addr) => addrs.push(*addr),
        Host::List(hosts) => {
            for host in hosts {
                resolve_into(host, port, addrs)?;
            }
        }
    }
    Ok(())
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        #[cfg(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
        ))]
        socket.set_reuse_port(true)?;
        #[cfg(not(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
        )))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "reuse_port not supported on this platform",
        ));
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds one TCP listener per address; on any failure closes them all and reports every error.
pub fn tcp_listeners(
    addrs: &[SocketAddr],
    opts: ListenOptions,
) -> Result<Vec<std::net::TcpListener>, Vec<BindError>> {
    let mut listeners = Vec::new();
    let mut errors = Vec::new();
    for &addr in addrs {
        let res = socket(addr, Type::STREAM, Protocol::TCP, opts.reuse_port).and_then(|s| {
            #[cfg(not(windows))]
            s.set_reuse_address(true)?;
            s.bind(&SockAddr::from(addr))?;
            s.listen(opts.backlog)?;
            Ok(std::net::TcpListener::from(s))
        });
        match res {
            Ok(l) => listeners.push(l),
            Err(error) => errors.push(BindError::new(addr, error)),
        }
    }
    if errors.is_empty() {
        Ok(listeners)
    } else {
        Err(errors)
    }
}

/// Binds one UDP socket per address (no SO_REUSEADDR, as EasyNetwork).
pub fn udp_sockets(
    addrs: &[SocketAddr],
    reuse_port: bool,
) -> Result<Vec<std::net::UdpSocket>, Vec<BindError>> {
    let mut sockets = Vec::new();
    let mut errors = Vec::new();
    for &addr in addrs {
        let res = socket(addr, Type::DGRAM, Protocol::UDP, reuse_port).and_then(|s| {
            s.bind(&SockAddr::from(addr))?;
            Ok(std::net::UdpSocket::from(s))
        });
        match res {
            Ok(s) => sockets.push(s),
            Err(error) => errors.push(BindError::new(addr, error)),
        }
    }
    if errors.is_empty() {
        Ok(sockets)
    } else {
        Err(errors)
    }
}

/// TCP_NODELAY and SO_KEEPALIVE on an accepted connection; errors are ignored (EasyNetwork).
pub fn tune_accepted<'a, S>(stream: &'a S)
where
    socket2::SockRef<'a>: From<&'a S>,
{
    tune_accepted_with(stream, Some(&TcpKeepalive::default()));
}

/// TCP_NODELAY, and keepalive as `keepalive` says (`None`: off), on an accepted
/// connection; errors are ignored (EasyNetwork).
pub fn tune_accepted_with<'a, S>(stream: &'a S, keepalive: Option<&TcpKeepalive>)
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_tcp_nodelay(true);
    match keepalive {
        Some(k) => {
            let _ = k.apply(&sock);
        }
        None => {
            let _ = sock.set_keepalive(false);
        }
    }
}

/// TCP keepalive on accepted connections: probes after `time` of silence, every
/// `interval`, `retries` unanswered probes drop the connection. A field left `None` keeps
/// the OS default (Linux: 2 h, 75 s, 9 probes). The servers' default is keepalive on with
/// the OS timings, as EasyNetwork; set it with `tcp_keepalive` on a TCP builder.
///
/// ```
/// use std::time::Duration;
/// use easynet_common::TcpKeepalive;
///
/// let k = TcpKeepalive::new()
///     .with_time(Duration::from_secs(60))
///     .with_interval(Duration::from_secs(10))
///     .with_retries(5);
/// assert_eq!(k.time, Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpKeepalive {
    /// Silence before the first probe (TCP_KEEPIDLE).
    pub time: Option<std::time::Duration>,
    /// Between probes (TCP_KEEPINTVL), where the OS lets it be set.
    pub interval: Option<std::time::Duration>,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT), where the OS lets
    /// it be set.
    pub retries: Option<u32>,
}

impl TcpKeepalive {
    /// Keepalive on, with the OS's timings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`time`](Self::time).
    pub fn with_time(mut self, time: std::time::Duration) -> Self {
        self.time = Some(time);
        self
    }

    /// Sets [`interval`](Self::interval).
    pub fn with_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Sets [`retries`](Self::retries).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Turns keepalive on on `sock` with these settings.
    pub fn apply(&self, sock: &socket2::SockRef<'_>) -> io::Result<()> {
        sock.set_keepalive(true)?;
        let mut k = socket2::TcpKeepalive::new();
        let mut any = false;
        if let Some(t) = self.time {
            k = k.with_time(t);
            any = true;
        }
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "windows"
        ))]
        if let Some(i) = self.interval {
            k = k.with_interval(i);
            any = true;
        }
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd"
        ))]
        if let Some(r) = self.retries {
            k = k.with_retries(r);
            any = true;
        }
        if any {
            sock.set_tcp_keepalive(&k)?;
        }
        Ok(())
    }
}

/// Makes the next close send RST: SO_LINGER {on, 0}.
pub fn set_abortive<'a, S>(stream: &'a S)
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_resolve_like_easynetwork() {
        assert_eq!(Host::from(""), Host::All);
        let all = resolve(&Host::All, 0).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|a| a.ip().is_unspecified()));
        let list = Host::from(vec!["127.0.0.1", "127.0.0.1"]);
        assert_eq!(
            resolve(&list, 7).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 7))],
            "deduplicated"
        );
        let sorted = resolve(&Host::from(vec!["127.0.0.2", "127.0.0.1"]), 1).unwrap();
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    }
}
