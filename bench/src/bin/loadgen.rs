//! Load generator: N connections, each a request/response loop; every echoed byte is checked.
//!
//! ```text
//! loadgen --addr 127.0.0.1:PORT [--transport tcp|tls|udp] [--conns 8] [--size 1024]
//!         [--pipeline 1] [--seconds 3 | --requests N] [--tls-dir DIR]
//! loadgen idle --addr 127.0.0.1:PORT --conns 1000 --pid SERVER_PID [--sources K] [--hold]
//! ```
//!
//! `--threads N` runs the load on a tokio multi-thread runtime with N workers (default: one
//! thread). `--sources K` (idle) connects from 127.0.0.1 ..= 127.0.0.K in turn, for more
//! connections than one source address has ephemeral ports (about 28,000 on Linux).
//!
//! A request is `pipeline` messages of `size` bytes (newline-terminated for TCP) written at
//! once; its response is the same bytes back. Prints one line of `key=value` results:
//! `msgs_per_s`, `mib_per_s` (one way), `p50_us`, `p99_us`, `max_us`, `errors`, `msgs`.
//! `--requests N` makes each connection send exactly N requests (no time limit): a fixed
//! load, for counting the server's instructions per message (`bench/callgrind.py`).
//! `idle` opens mostly-idle connections (one echo each) and prints the server's resident
//! memory per connection: `kib_per_conn`, `rss_before_kib`, `rss_after_kib`, `hwm_kib`, and
//! `conns` with `server_sockets` (the sockets the server process has open then: every
//! connection accepted and still held, plus its listener). `--hold` prints `connected=N` once
//! all are connected and waits for a line (or the end) on stdin before it measures: several
//! load generators, each with its own server, then hold all their connections at once.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type BoxError = Box<dyn Error + Send + Sync>;

struct Args {
    addr: SocketAddr,
    transport: String,
    conns: usize,
    size: usize,
    pipeline: usize,
    seconds: f64,
    /// Requests per connection (0: as many as `seconds` allows).
    requests: u64,
    tls_dir: String,
    pid: Option<u32>,
    threads: usize,
    sources: u8,
    hold: bool,
}

fn parse() -> Result<(bool, Args), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let idle = args.first().is_some_and(|a| a == "idle");
    if idle {
        args.remove(0);
    }
    let mut a = Args {
        addr: "127.0.0.1:9000".parse()?,
        transport: "tcp".into(),
        conns: 8,
        size: 1024,
        pipeline: 1,
        seconds: 3.0,
        requests: 0,
        tls_dir: "target/bench-tls".into(),
        pid: None,
        threads: 1,
        sources: 1,
        hold: false,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--hold" {
            a.hold = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => a.addr = v.parse()?,
            "--transport" => a.transport = v,
            "--conns" => a.conns = v.parse()?,
            "--size" => a.size = v.parse()?,
            "--pipeline" => a.pipeline = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--requests" => a.requests = v.parse()?,
            "--tls-dir" => a.tls_dir = v,
            "--pid" => a.pid = Some(v.parse()?),
            "--threads" => a.threads = v.parse()?,
            "--sources" => a.sources = v.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok((idle, a))
}

/// `pipeline` messages of `size` bytes; TCP messages end with '\n'. Content varies by
/// connection so that crossed wires would be caught.
fn request(conn: usize, size: usize, pipeline: usize, newline: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(size * pipeline);
    for m in 0..pipeline {
        for i in 0..size {
            out.push(b'a' + ((conn + m + i) % 26) as u8);
        }
        if newline && let Some(last) = out.last_mut() {
            *last = b'\n';
        }
    }
    out
}

struct Stats {
    latencies: Vec<u32>,
    errors: u64,
}

/// The end of a connection's load: a time, or a number of requests.
#[derive(Clone, Copy)]
struct Until {
    time: Instant,
    requests: u64,
}

impl Until {
    fn going(&self, done: usize) -> bool {
        if self.requests > 0 {
            (done as u64) < self.requests
        } else {
            Instant::now() < self.time
        }
    }
}

async fn tcp_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    req: Vec<u8>,
    until: Until,
) -> Stats {
    let mut resp = vec![0u8; req.len()];
    let mut stats = Stats {
        latencies: Vec::new(),
        errors: 0,
    };
    while until.going(stats.latencies.len()) {
        let t = Instant::now();
        if sock.write_all(&req).await.is_err() || sock.read_exact(&mut resp).await.is_err() {
            stats.errors += 1;
            break;
        }
        if resp != req {
            stats.errors += 1;
        }
        stats
            .latencies
            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    stats
}

async fn udp_loop(
    addr: SocketAddr,
    conn: usize,
    size: usize,
    pipeline: usize,
    until: Until,
) -> Stats {
    let mut stats = Stats {
        latencies: Vec::new(),
        errors: 0,
    };
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        stats.errors += 1;
        return stats;
    };
    if sock.connect(addr).await.is_err() {
        stats.errors += 1;
        return stats;
    }
    let msg = request(conn, size, 1, false);
    let mut buf = vec![0u8; 64 * 1024];
    while until.going(stats.latencies.len()) {
        let t = Instant::now();
        for _ in 0..pipeline {
            if sock.send(&msg).await.is_err() {
                stats.errors += 1;
            }
        }
        for _ in 0..pipeline {
            match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                Ok(Ok(n)) if buf[..n] == msg[..] => {}
                _ => stats.errors += 1, // lost or wrong: counted, not retried
            }
        }
        stats
            .latencies
            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    stats
}

fn client_tls(dir: &str) -> Result<tokio_rustls::TlsConnector, BoxError> {
    let cert = std::fs::read(format!("{dir}/cert.der"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.into())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn load(a: Args) -> Result<(), BoxError> {
    let connector = if a.transport == "tls" {
        Some(client_tls(&a.tls_dir)?)
    } else {
        None
    };
    // Connect everyone first, so the measured time is the request loop only.
    let mut streams = Vec::new();
    if a.transport != "udp" {
        for _ in 0..a.conns {
            let sock = tokio::net::TcpStream::connect(a.addr).await?;
            sock.set_nodelay(true)?;
            streams.push(sock);
        }
    }
    let start = Instant::now();
    let until = Until {
        time: start + Duration::from_secs_f64(a.seconds),
        requests: a.requests,
    };
    let mut tasks = Vec::new();
    for (i, sock) in streams.into_iter().enumerate() {
        let req = request(i, a.size, a.pipeline, true);
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            match connector {
                Some(c) => match c.connect("localhost".try_into().expect("name"), sock).await {
                    Ok(tls) => tcp_loop(tls, req, until).await,
                    Err(_) => Stats {
                        latencies: Vec::new(),
                        errors: 1,
                    },
                },
                None => tcp_loop(sock, req, until).await,
            }
        }));
    }
    if a.transport == "udp" {
        for i in 0..a.conns {
            tasks.push(tokio::spawn(udp_loop(a.addr, i, a.size, a.pipeline, until)));
        }
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let s = t.await?;
        lat.extend(s.latencies);
        errors += s.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let msgs = (lat.len() * a.pipeline) as f64;
    println!(
        "msgs_per_s={:.0} mib_per_s={:.1} p50_us={} p99_us={} max_us={} errors={} msgs={}",
        msgs / elapsed,
        msgs * a.size as f64 / elapsed / (1024.0 * 1024.0),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        errors,
        msgs
    );
    Ok(())
}

fn rss_kib(pid: u32) -> Result<(u64, u64), BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// The sockets among a process's open files.
fn socket_count(pid: u32) -> Result<usize, BoxError> {
    let mut n = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if std::fs::read_link(e?.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            n += 1;
        }
    }
    Ok(n)
}

/// IP_BIND_ADDRESS_NO_PORT: the source port is chosen at connect(), unique per destination
/// (as without bind) rather than per address, so ports in use towards another server or in
/// TIME_WAIT from an earlier run do not run a source address out of ports. It is also fast:
/// 100 000 connections from 4 sources took 180-270 s with bind()'s own port search, 10 s with it.
#[cfg(target_os = "linux")]
fn bind_no_port(s: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_no_port(_: &tokio::net::TcpSocket) -> std::io::Result<()> {
    Ok(())
}

/// A connection that has had one echo.
async fn idle_conn(
    addr: SocketAddr,
    source: Option<std::net::Ipv4Addr>,
) -> Result<tokio::net::TcpStream, BoxError> {
    let mut s = match source {
        Some(source) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            bind_no_port(&socket)?;
            socket.bind((source, 0).into())?;
            socket.connect(addr).await?
        }
        None => tokio::net::TcpStream::connect(addr).await?,
    };
    s.write_all(b"hi\n").await?;
    let mut b = [0u8; 3];
    s.read_exact(&mut b).await?;
    Ok(s)
}

async fn idle(a: Args) -> Result<(), BoxError> {
    let pid = a.pid.ok_or("idle needs --pid")?;
    let (before, _) = rss_kib(pid)?;
    let mut socks = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        // Spread over 127.0.0.1 ..= 127.0.0.K: each source has its own ephemeral ports.
        let source = (a.sources > 1 && a.addr.is_ipv4())
            .then(|| std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % a.sources as usize) as u8));
        // A server out of files leaves the connection unaccepted in its backlog: no echo.
        let s = tokio::time::timeout(Duration::from_secs(10), idle_conn(a.addr, source))
            .await
            .map_err(|_| {
                format!("connection {i}: no echo within 10 s (the server's open-file limit?)")
            })??;
        socks.push(s);
    }
    if a.hold {
        use std::io::Write;
        println!("connected={}", socks.len());
        std::io::stdout().flush()?;
        std::io::stdin().read_line(&mut String::new())?; // the connections are idle meanwhile
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the server settle before reading RSS
    let (after, hwm) = rss_kib(pid)?;
    let server_sockets = socket_count(pid)?;
    println!(
        "kib_per_conn={:.2} rss_before_kib={before} rss_after_kib={after} hwm_kib={hwm} conns={} server_sockets={server_sockets}",
        (after.saturating_sub(before)) as f64 / a.conns as f64,
        socks.len()
    );
    drop(socks);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let (is_idle, args) = parse()?;
    let rt = if args.threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    if is_idle {
        rt.block_on(idle(args))
    } else {
        rt.block_on(load(args))
    }
}
