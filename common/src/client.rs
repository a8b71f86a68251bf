//! What the TCP clients of both drivers share: their options ([`TcpClientOptions`]) and the
//! order in which resolved addresses are tried (RFC 8305, "happy eyeballs").

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use easynet_core::stream::StreamConfig;

use crate::ConfigError;

/// EasyNetwork's `happy_eyeballs_delay` default, RFC 8305's recommended value.
pub const HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(250);

/// How a TCP client connects: time limits, local address, receive size and TLS. The
/// defaults are EasyNetwork's: no connect timeout (the OS's), 250 ms between connection
/// attempts, 16 KiB reads, TLS handshake 60 s, TLS shutdown 30 s, standard-compatible TLS
/// close.
///
/// ```
/// use std::time::Duration;
/// use easynet_common::TcpClientOptions;
///
/// let options = TcpClientOptions::new()
///     .connect_timeout(Duration::from_secs(5))
///     .max_recv_size(64 * 1024);
/// assert_eq!(options.connect_timeout, Some(Duration::from_secs(5)));
/// assert_eq!(options.stream.read_size, 64 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpClientOptions {
    /// Bound of the whole connect, every address tried included (TLS handshake excluded:
    /// [`StreamConfig::tls_handshake_timeout`] bounds it). `None`: the OS's own limit.
    pub connect_timeout: Option<Duration>,
    /// Head start of each connection attempt over the next one when the host resolves to
    /// several addresses (RFC 8305): 250 ms.
    pub happy_eyeballs_delay: Duration,
    /// The local address to bind before connecting (port 0: any port). Only addresses of
    /// its family are tried.
    pub local_addr: Option<SocketAddr>,
    /// The connection's settings: `read_size` is EasyNetwork's `max_recv_size`, and the
    /// TLS handshake and shutdown timeouts and the standard-compatible close live here.
    pub stream: StreamConfig,
    /// TLS: the rustls configuration and the name the server's certificate must carry
    /// (set apart from the address, so an IP address or another name can be used).
    #[cfg(feature = "tls")]
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Default for TcpClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: None,
            happy_eyeballs_delay: HAPPY_EYEBALLS_DELAY,
            local_addr: None,
            stream: StreamConfig::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl TcpClientOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets [`happy_eyeballs_delay`](Self::happy_eyeballs_delay).
    pub fn happy_eyeballs_delay(mut self, delay: Duration) -> Self {
        self.happy_eyeballs_delay = delay;
        self
    }

    /// Sets [`local_addr`](Self::local_addr).
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Most bytes read from the socket at once (EasyNetwork's `max_recv_size`, 16 KiB); 0
    /// is refused when connecting ([`ConfigError::MaxRecvSize`]).
    pub fn max_recv_size(mut self, bytes: usize) -> Self {
        self.stream.read_size = bytes;
        self
    }

    /// Connects over TLS, checking that the server's certificate is valid for
    /// `server_name` (which need not be the host connected to).
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Self {
        self.tls = Some((config, server_name));
        self
    }

    /// Bound of the TLS handshake (EasyNetwork's `ssl_handshake_timeout`, 60 s).
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.stream.tls_handshake_timeout = timeout;
        self
    }

    /// Bound of a graceful close, TLS close_notify exchange included (EasyNetwork's
    /// `ssl_shutdown_timeout`, 30 s).
    pub fn tls_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.stream.shutdown_timeout = timeout;
        self
    }

    /// On close, send close_notify and wait for the peer's (true, the default), or just
    /// end the TCP stream (EasyNetwork's `ssl_standard_compatible`).
    pub fn tls_standard_compatible(mut self, on: bool) -> Self {
        self.stream.tls_standard_compatible = on;
        self
    }

    /// Checks the settings a connect relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stream.read_size == 0 {
            return Err(ConfigError::MaxRecvSize);
        }
        Ok(())
    }

    /// The addresses to try, in order (see [`attempt_order`]), keeping only those of the
    /// local address's family when one is set. Fails when none is left.
    pub fn targets(
        &self,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> io::Result<Vec<SocketAddr>> {
        let local = self.local_addr;
        let order = attempt_order(
            resolved
                .into_iter()
                .filter(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4())),
        );
        if order.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no address to connect to (of the local address's family)",
            ));
        }
        Ok(order)
    }
}

/// The order in which a client tries resolved addresses (RFC 8305 §4): families
/// interleaved, starting with the family of the first address, duplicates removed.
///
/// ```
/// use std::net::SocketAddr;
/// use easynet_common::attempt_order;
///
/// let a: Vec<SocketAddr> = ["[::1]:1", "[::2]:1", "127.0.0.1:1", "127.0.0.2:1"]
///     .iter().map(|s| s.parse().unwrap()).collect();
/// let order = attempt_order(a.iter().copied());
/// assert_eq!(order, [a[0], a[2], a[1], a[3]]);
/// ```
pub fn attempt_order(resolved: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut all: Vec<SocketAddr> = Vec::new();
    for a in resolved {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    let Some(first) = all.first().copied() else {
        return all;
    };
    let (mut same, mut other): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| a.is_ipv4() == first.is_ipv4());
    same.reverse();
    other.reverse();
    let mut order = Vec::with_capacity(same.len() + other.len());
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

/// The error of a connect where every attempt failed: the only one, or all of them in one
/// line (the kind of the last).
pub fn attempts_failed(mut errors: Vec<(SocketAddr, io::Error)>) -> io::Error {
    if errors.len() == 1 {
        return errors
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_else(|| io::ErrorKind::NotConnected.into());
    }
    let kind = errors
        .last()
        .map_or(io::ErrorKind::NotConnected, |(_, e)| e.kind());
    let all: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    io::Error::new(
        kind,
        format!("all connection attempts failed ({})", all.join("; ")),
    )
}

/// The error of a connect that ran out of time.
pub fn connect_timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no connection within {timeout:?}"),
    )
}

/// Starts a non-blocking connect to `addr` from `local` (when set); the connection is
/// made once the socket is writable without a pending error (the blocking client waits
/// for that with mio).
pub fn start_connect(addr: SocketAddr, local: Option<SocketAddr>) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(local) = local {
        socket.bind(&local.into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if in_progress(&e) => Ok(socket),
        Err(e) => Err(e),
    }
}

fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// A rustls client configuration that trusts Mozilla's root certificates (the
/// `webpki-roots` crate): what a client connecting to public servers needs, with the crypto
/// `provider` the application chose (easynet enables none). Feature `webpki-roots`.
///
/// webpki-roots rather than the OS store (rustls-native-certs): the roots are data compiled
/// in, the same on every platform and in containers without a CA bundle, with no platform
/// code; they change with the crate's releases.
///
/// ```
/// use std::sync::Arc;
/// use easynet_common::{TcpClientOptions, webpki_roots_config};
///
/// let provider = Arc::new(rustls::crypto::ring::default_provider());
/// let config = webpki_roots_config(provider).unwrap();
/// let name = "example.com".try_into().unwrap();
/// let options = TcpClientOptions::new().tls(config, name);
/// assert!(options.tls.is_some());
/// ```
#[cfg(feature = "webpki-roots")]
pub fn webpki_roots_config(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
