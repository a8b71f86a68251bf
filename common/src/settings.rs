//! The settings every server builder offers, and the setter methods both drivers' builders
//! get from [`listen_setters!`](crate::listen_setters) and [`tcp_setters!`](crate::tcp_setters).

use std::time::Duration;

use easynet_core::addr::UnixAddr;
use easynet_core::datagram::DatagramConfig;
use easynet_core::stream::StreamConfig;

use crate::{ConfigError, Host};

/// Where and how a server listens (TCP and UDP).
#[derive(Debug, Clone)]
pub struct Listen {
    /// One name, several, or every interface.
    pub host: Host,
    /// 0 picks a free port per socket.
    pub port: u16,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// Sockets already bound, served instead of binding `host` and `port` (socket
    /// activation, a supervisor, a test); the server serves on duplicates of them.
    pub inherited: Vec<std::sync::Arc<socket2::Socket>>,
}

impl Listen {
    /// Duplicates of the [`inherited`](Self::inherited) sockets, non-blocking, as `T`
    /// (`std::net::TcpListener`, `std::net::UdpSocket`); `None` when none was given: bind.
    pub fn inherited<T: From<socket2::Socket>>(&self) -> Option<std::io::Result<Vec<T>>> {
        if self.inherited.is_empty() {
            return None;
        }
        Some(
            self.inherited
                .iter()
                .map(|s| {
                    let dup = s.try_clone()?;
                    dup.set_nonblocking(true)?;
                    Ok(T::from(dup))
                })
                .collect(),
        )
    }

    /// Every inherited socket is of type `ty`.
    fn check_inherited(&self, ty: socket2::Type) -> Result<(), ConfigError> {
        for s in &self.inherited {
            match s.r#type() {
                Ok(t) if t == ty => {}
                _ => return Err(ConfigError::InheritedSocket),
            }
        }
        Ok(())
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            host: Host::Name("localhost".into()),
            port: 0,
            reuse_port: false,
            inherited: Vec::new(),
        }
    }
}

/// Settings of a TCP server builder; EasyNetwork's defaults.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// Where to listen.
    pub listen: Listen,
    /// The listen backlog: 100.
    pub backlog: i32,
    /// Connects and disconnects logged at INFO (true) or DEBUG.
    pub log_client_connection: bool,
    /// Per-connection settings.
    pub stream: StreamConfig,
    /// How long a shutdown waits for connections: 30 s.
    pub shutdown_timeout: Duration,
    /// At most this many connections open at once: `None` (see
    /// [`stream_setters!`](crate::stream_setters)'s `max_connections`).
    pub max_connections: Option<usize>,
    /// TCP keepalive on accepted connections: on, with the OS's timings.
    pub keepalive: Option<crate::TcpKeepalive>,
    /// The TLS configuration, if serving TLS (replaceable while the server runs).
    #[cfg(feature = "tls")]
    pub tls: Option<easynet_core::tls::SharedServerConfig>,
    /// TLS options given (they need `tls`).
    pub tls_options: Vec<&'static str>,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            backlog: 100,
            log_client_connection: true,
            stream: StreamConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: None,
            keepalive: Some(crate::TcpKeepalive::default()),
            #[cfg(feature = "tls")]
            tls: None,
            tls_options: Vec::new(),
        }
    }
}

impl TcpSettings {
    /// Checks what `build` must refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_stream(&self.stream, self.max_connections)?;
        self.listen.check_inherited(socket2::Type::STREAM)?;
        #[cfg(feature = "tls")]
        let has_tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let has_tls = false;
        match self.tls_options.first() {
            Some(opt) if !has_tls => Err(ConfigError::TlsOptionWithoutTls(opt)),
            _ => Ok(()),
        }
    }
}

/// Settings of a UDP server builder.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    /// Where to listen.
    pub listen: Listen,
    /// Per-peer queue bound and idle eviction.
    pub datagram: DatagramConfig,
    /// Default timeout of a blocking server's shutdown: 30 s.
    pub shutdown_timeout: Duration,
}

impl Default for UdpSettings {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            datagram: DatagramConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl UdpSettings {
    /// Checks what `build` must refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.datagram.max_pending == 0 {
            return Err(ConfigError::MaxPending);
        }
        self.listen.check_inherited(socket2::Type::DGRAM)
    }
}

/// Settings of a Unix stream server builder; the TCP defaults where they apply.
#[derive(Debug, Clone)]
pub struct UnixStreamSettings {
    /// The path or abstract name to bind; required.
    pub addr: Option<UnixAddr>,
    /// The listen backlog: 100.
    pub backlog: i32,
    /// Connects and disconnects logged at INFO (true) or DEBUG.
    pub log_client_connection: bool,
    /// Per-connection settings.
    pub stream: StreamConfig,
    /// How long a shutdown waits for connections: 30 s.
    pub shutdown_timeout: Duration,
    /// At most this many connections open at once: `None`.
    pub max_connections: Option<usize>,
    /// A listener already bound, served instead of binding `addr` (socket activation).
    pub inherited: Option<std::sync::Arc<socket2::Socket>>,
}

impl Default for UnixStreamSettings {
    fn default() -> Self {
        Self {
            addr: None,
            backlog: 100,
            log_client_connection: true,
            stream: StreamConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: None,
            inherited: None,
        }
    }
}

impl UnixStreamSettings {
    /// Checks what `build` must refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_unix_source(
            self.addr.as_ref(),
            self.inherited.as_deref(),
            socket2::Type::STREAM,
        )?;
        check_stream(&self.stream, self.max_connections)
    }

    /// The listener to serve (non-blocking), its address, and the socket file we made (to
    /// remove when done): a duplicate of the inherited listener (no file of ours), or
    /// `addr` bound now.
    #[cfg(unix)]
    pub fn listener(
        &self,
    ) -> Result<
        (
            std::os::unix::net::UnixListener,
            UnixAddr,
            Option<crate::unix::SocketFile>,
        ),
        crate::ServerError,
    > {
        if let Some(socket) = &self.inherited {
            let listener = std::os::unix::net::UnixListener::from(inherited_dup(socket)?);
            let local = listener
                .local_addr()
                .map_err(crate::ServerError::Listener)?;
            return Ok((listener, crate::unix::to_unix_addr(&local), None));
        }
        let addr = self.addr.as_ref().ok_or(crate::ServerError::Closed)?;
        let (listener, file) = crate::unix::bind_listener(addr, self.backlog)
            .map_err(|e| crate::ServerError::bind_unix(addr, e))?;
        Ok((listener, addr.clone(), file))
    }
}

fn check_stream(stream: &StreamConfig, max_connections: Option<usize>) -> Result<(), ConfigError> {
    if stream.read_size == 0 {
        return Err(ConfigError::MaxRecvSize);
    }
    if max_connections == Some(0) {
        return Err(ConfigError::MaxConnections);
    }
    if stream.idle_timeout == Some(Duration::ZERO) {
        return Err(ConfigError::IdleTimeout);
    }
    Ok(())
}

/// Settings of a Unix datagram server builder.
#[derive(Debug, Clone)]
pub struct UnixDatagramSettings {
    /// The path or abstract name to bind; required.
    pub addr: Option<UnixAddr>,
    /// Per-peer queue bound and idle eviction.
    pub datagram: DatagramConfig,
    /// Default timeout of a shutdown: 30 s.
    pub shutdown_timeout: Duration,
    /// A socket already bound, served instead of binding `addr` (socket activation).
    pub inherited: Option<std::sync::Arc<socket2::Socket>>,
}

impl Default for UnixDatagramSettings {
    fn default() -> Self {
        Self {
            addr: None,
            datagram: DatagramConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            inherited: None,
        }
    }
}

impl UnixDatagramSettings {
    /// The socket to serve (non-blocking), its address, and the socket file we made: a
    /// duplicate of the inherited socket (no file of ours), or `addr` bound now.
    #[cfg(unix)]
    pub fn socket(
        &self,
    ) -> Result<
        (
            std::os::unix::net::UnixDatagram,
            UnixAddr,
            Option<crate::unix::SocketFile>,
        ),
        crate::ServerError,
    > {
        if let Some(socket) = &self.inherited {
            let socket = std::os::unix::net::UnixDatagram::from(inherited_dup(socket)?);
            let local = socket.local_addr().map_err(crate::ServerError::Listener)?;
            return Ok((socket, crate::unix::to_unix_addr(&local), None));
        }
        let addr = self.addr.as_ref().ok_or(crate::ServerError::Closed)?;
        let (socket, file) =
            crate::unix::bind_datagram(addr).map_err(|e| crate::ServerError::bind_unix(addr, e))?;
        Ok((socket, addr.clone(), file))
    }

    /// Checks what `build` must refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_unix_source(
            self.addr.as_ref(),
            self.inherited.as_deref(),
            socket2::Type::DGRAM,
        )?;
        if self.datagram.max_pending == 0 {
            return Err(ConfigError::MaxPending);
        }
        Ok(())
    }
}

/// A Unix server needs an address to bind or an inherited Unix socket of type `ty`.
fn check_unix_source(
    addr: Option<&UnixAddr>,
    inherited: Option<&socket2::Socket>,
    ty: socket2::Type,
) -> Result<(), ConfigError> {
    if let Some(socket) = inherited {
        let domain = socket.local_addr().map(|a| a.domain());
        return match (domain, socket.r#type()) {
            (Ok(socket2::Domain::UNIX), Ok(t)) if t == ty => Ok(()),
            _ => Err(ConfigError::InheritedSocket),
        };
    }
    match addr {
        Some(a) if !a.is_unnamed() => Ok(()),
        _ => Err(ConfigError::NoUnixAddress),
    }
}

/// A non-blocking duplicate of an inherited socket.
#[cfg(unix)]
fn inherited_dup(socket: &socket2::Socket) -> Result<std::os::fd::OwnedFd, crate::ServerError> {
    let dup = socket.try_clone().map_err(crate::ServerError::Listener)?;
    dup.set_nonblocking(true)
        .map_err(crate::ServerError::Listener)?;
    Ok(dup.into())
}

/// Setter methods for a Unix server builder with a `settings` field holding
/// `addr: Option<UnixAddr>` and `shutdown_timeout`.
#[macro_export]
#[doc(hidden)]
macro_rules! unix_setters {
    ($settings:ident) => {
        /// Binds this filesystem path. A socket file nobody listens on is replaced; a path
        /// in use, or that is not a socket, is refused. The file is removed when the
        /// server lets the socket go.
        pub fn path(mut self, path: impl AsRef<std::path::Path>) -> Self {
            self.$settings.addr = Some(easynet_core::addr::UnixAddr::pathname(path));
            self
        }

        /// Binds this Linux abstract name (no file; gone with the socket).
        pub fn abstract_name(mut self, name: impl AsRef<[u8]>) -> Self {
            self.$settings.addr = Some(easynet_core::addr::UnixAddr::abstract_name(name));
            self
        }

        /// Binds this address (a path or an abstract name).
        pub fn address(mut self, addr: easynet_core::addr::UnixAddr) -> Self {
            self.$settings.addr = Some(addr);
            self
        }

        /// Serves on this Unix socket, already bound, instead of binding an address: a
        /// `std::os::unix::net::UnixListener` (listening) for a stream server, a
        /// `UnixDatagram` for a datagram server (socket activation, a supervisor). The
        /// server serves on a duplicate and never removes its file; `build` refuses a
        /// socket of the wrong family or type.
        pub fn from_std(mut self, socket: impl Into<socket2::Socket>) -> Self {
            self.$settings.inherited = Some(std::sync::Arc::new(socket.into()));
            self
        }

        /// How long a shutdown waits for the server to finish; default 30 s.
        pub fn shutdown_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$settings.shutdown_timeout = timeout;
            self
        }
    };
}

/// Setter methods for a Unix stream builder with a `settings: UnixStreamSettings` field.
#[macro_export]
#[doc(hidden)]
macro_rules! unix_stream_setters {
    ($settings:ident) => {
        $crate::unix_setters!($settings);
        $crate::stream_setters!($settings);
    };
}

/// Setter methods for a builder with a `settings` field holding a `listen: Listen`.
#[macro_export]
#[doc(hidden)]
macro_rules! listen_setters {
    ($settings:ident) => {
        /// Listens on a host: a name or address string (a name may resolve to several
        /// addresses), an `IpAddr`, a `SocketAddr` (bound with its own port), or a `Vec`
        /// or array of those. Default `"localhost"`.
        pub fn host(mut self, host: impl Into<$crate::Host>) -> Self {
            self.$settings.listen.host = host.into();
            self
        }

        /// Listens on several hosts (anything [`host`](Self::host) takes), one socket per
        /// resolved address (de-duplicated, sorted).
        pub fn hosts<I: IntoIterator<Item = T>, T: Into<$crate::Host>>(mut self, hosts: I) -> Self {
            self.$settings.listen.host =
                $crate::Host::List(hosts.into_iter().map(Into::into).collect());
            self
        }

        /// Listens on every interface (`0.0.0.0` and `::`, one socket each).
        pub fn all_interfaces(mut self) -> Self {
            self.$settings.listen.host = $crate::Host::All;
            self
        }

        /// The port; 0 picks a free one per socket. Default 0.
        pub fn port(mut self, port: u16) -> Self {
            self.$settings.listen.port = port;
            self
        }

        /// Serves on this socket, already bound, instead of binding `host` and `port`: a
        /// `std::net::TcpListener` (listening) for a TCP server, a `std::net::UdpSocket`
        /// for a UDP one, from socket activation
        /// ([`listen_fds`](easynet_common::listen_fds)), a supervisor or a test. May be
        /// given several times. The server serves on duplicates and keeps this one open
        /// until it is dropped; `build` refuses a socket of the wrong type.
        pub fn from_std(mut self, socket: impl Into<socket2::Socket>) -> Self {
            self.$settings
                .listen
                .inherited
                .push(std::sync::Arc::new(socket.into()));
            self
        }

        /// Sets SO_REUSEPORT; default off.
        pub fn reuse_port(mut self, on: bool) -> Self {
            self.$settings.listen.reuse_port = on;
            self
        }

        /// How long a shutdown waits for the server to finish; default 30 s.
        pub fn shutdown_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$settings.shutdown_timeout = timeout;
            self
        }
    };
}

/// The stream setters TCP and Unix builders share.
#[macro_export]
#[doc(hidden)]
macro_rules! stream_setters {
    ($settings:ident) => {
        /// The listen backlog; default 100.
        pub fn backlog(mut self, backlog: i32) -> Self {
            self.$settings.backlog = backlog;
            self
        }

        /// Bytes read per socket read; default 16 KiB; must be positive.
        pub fn max_recv_size(mut self, bytes: usize) -> Self {
            self.$settings.stream.read_size = bytes;
            self
        }

        /// Logs connects and disconnects at INFO (default) rather than DEBUG.
        pub fn log_client_connection(mut self, on: bool) -> Self {
            self.$settings.log_client_connection = on;
            self.$settings.stream.log_connections = on;
            self
        }

        /// At most `n` connections open at once; default: no limit of ours (the
        /// process's file descriptor limit, where accepting pauses on EMFILE). At `n` the
        /// server stops accepting, so new connections wait in the kernel's listen backlog
        /// (then the client's connect times out, or the kernel refuses once the backlog is
        /// full), and accepts again as soon as one closes. `build` refuses 0. A server with
        /// several listeners or mio workers counts them all together.
        ///
        /// No default limit: the right number depends on the handler's memory and the
        /// descriptors the process may open, which only the application knows; EasyNetwork
        /// has none.
        pub fn max_connections(mut self, n: usize) -> Self {
            self.$settings.max_connections = Some(n);
            self
        }

        /// Closes a connection that receives no byte for `timeout`, gracefully (what it
        /// sent is answered, then FIN), whatever its handler waits for; default none
        /// ([`StreamConfig::idle_timeout`](easynet_core::stream::StreamConfig::idle_timeout)
        /// says why). `build` refuses zero. A later
        /// [`stream_config`](Self::stream_config) replaces it.
        pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$settings.stream.idle_timeout = Some(timeout);
            self
        }

        /// Any other per-connection setting (write high-water mark, ...).
        pub fn stream_config(mut self, config: easynet_core::stream::StreamConfig) -> Self {
            let log = self.$settings.log_client_connection;
            self.$settings.stream = config.with_log_connections(log);
            self
        }
    };
}

/// Setter methods for a TCP builder with a `settings: TcpSettings` field.
#[macro_export]
#[doc(hidden)]
macro_rules! tcp_setters {
    ($settings:ident) => {
        $crate::listen_setters!($settings);
        $crate::stream_setters!($settings);

        /// TCP keepalive on accepted connections: `Some` turns it on with those timings
        /// (fields left `None` keep the OS's), `None` turns it off. Default: on, with the
        /// OS's timings (EasyNetwork). It finds peers that vanished without a FIN (a
        /// crashed host, a dropped NAT entry), which the idle timeout would only find if
        /// set.
        pub fn tcp_keepalive(mut self, keepalive: Option<$crate::TcpKeepalive>) -> Self {
            self.$settings.keepalive = keepalive;
            self
        }

        /// Serves TLS with this rustls configuration: an `Arc<rustls::ServerConfig>`, or a
        /// [`SharedServerConfig`](easynet_core::tls::SharedServerConfig) whose clone you keep
        /// to replace the configuration while the server runs (new connections use the new
        /// one, open connections keep theirs).
        #[cfg(feature = "tls")]
        pub fn tls(mut self, config: impl Into<easynet_core::tls::SharedServerConfig>) -> Self {
            self.$settings.tls = Some(config.into());
            self
        }

        /// TLS handshake deadline; default 60 s. Only with `tls`.
        pub fn tls_handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$settings.stream.tls_handshake_timeout = timeout;
            self.$settings.tls_options.push("tls_handshake_timeout");
            self
        }

        /// TLS close deadline; default 30 s. Only with `tls`.
        pub fn tls_shutdown_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$settings.stream.shutdown_timeout = timeout;
            self.$settings.tls_options.push("tls_shutdown_timeout");
            self
        }

        /// Exchange close_notify on close; default true. Only with `tls`.
        pub fn tls_standard_compatible(mut self, on: bool) -> Self {
            self.$settings.stream.tls_standard_compatible = on;
            self.$settings.tls_options.push("tls_standard_compatible");
            self
        }
    };
}
