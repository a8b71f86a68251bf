//! Load generator: N connections, each a request/response loop; every echoed byte is checked.
//!
//! ```text
//! loadgen --addr 127.0.0.1:PORT [--transport tcp|tls|udp] [--conns 8] [--size 1024]
//!         [--pipeline 1] [--seconds 3 | --requests N] [--tls-dir DIR]
//! loadgen idle --addr 127.0.0.1:PORT --conns 1000 --pid SERVER_PID [--sources K]
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
//! memory per connection: `kib_per_conn`, `rss_before_kib`, `rss_after_kib`, `hwm_kib`.

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
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
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

async fn idle(a: Args) -> Result<(), BoxError> {
    let pid = a.pid.ok_or("idle needs --pid")?;
    let (before, _) = rss_kib(pid)?;
    let mut socks = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let mut s = if a.sources > 1 && a.addr.is_ipv4() {
            // Spread over 127.0.0.1 ..= 127.0.0.K: each source has its own ephemeral ports.
            let socket = tokio::net::TcpSocket::new_v4()?;
            let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % a.sources as usize) as u8);
            socket.bind((source, 0).into())?;
            socket.connect(a.addr).await?
        } else {
            tokio::net::TcpStream::connect(a.addr).await?
        };
        s.write_all(b"hi\n").await?;
        let mut b = [0u8; 3];
        s.read_exact(&mut b).await?;
        socks.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the server settle before reading RSS
    let (after, hwm) = rss_kib(pid)?;
    println!(
        "kib_per_conn={:.2} rss_before_kib={before} rss_after_kib={after} hwm_kib={hwm}",
        (after.saturating_sub(before)) as f64 / a.conns as f64
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
