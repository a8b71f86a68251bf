//! Broadcast benchmark: one speaker, N listeners, every 1 KiB line the speaker sends goes to
//! every listener. Measures deliveries per second and the server's CPU time per delivered
//! message, for easynet (a portable handler with `push::Broadcast`) and the hand-written
//! tokio baseline (a task per connection and a `tokio::sync::broadcast` channel).
//!
//! ```text
//! cargo build --release -p easynet-bench
//! target/release/broadcast run --impl easynet-tokio --listeners 1000 --messages 2000
//! target/release/broadcast run --impl tokio-baseline --listeners 10000 --messages 500
//! target/release/broadcast run --impl easynet-mio --listeners 1000 --messages 2000
//! ```
//!
//! `run` starts the server as a child process (pinned to CPU 0 when `taskset` exists),
//! connects the listeners and the speaker from this process, keeps at most `--window`
//! messages in flight (so no queue overflows and nothing is dropped), and reads the child's
//! CPU time from /proc before and after.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use easynet::aio::AsyncTcpServer;
use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::Stream;
use easynet::push::{Broadcast, SlowConsumer};
use easynet::stream::StreamConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn Error + Send + Sync>;

const MESSAGE: usize = 1024;

/// The chat handler: every line goes to every other member.
struct Chat(Arc<Broadcast<String>>);

impl StreamHandler for Chat {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        self.0.insert(cx.pusher());
        Ok(Next::recv())
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(line) = r {
            let me = cx.pusher().info().id;
            self.0.send_except(Some(me), &line)?;
        }
        Ok(Next::recv())
    }

    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, String>) {
        self.0.remove(cx.pusher().info().id);
    }
}

async fn easynet_tokio(port: u16) -> Result<(), BoxError> {
    let room = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    let r = room.clone();
    let server = AsyncTcpServer::builder(Stream::lines(), move |_: &ConnInfo| Chat(r.clone()))
        .host("127.0.0.1")
        .port(port)
        .backlog(4096)
        .stream_config(StreamConfig::default())
        .build()?;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    rx.wait_for(|up| *up).await?;
    println!("listening on {}", server.addresses()[0]);
    stop_signal().await;
    eprintln!("dropped={}", room.dropped());
    server.shutdown().await;
    task.await??;
    Ok(())
}

fn easynet_mio(port: u16) -> Result<(), BoxError> {
    let room = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    let r = room.clone();
    let server =
        easynet::blocking::TcpServer::builder(Stream::lines(), move |_: &ConnInfo| Chat(r.clone()))
            .host("127.0.0.1")
            .port(port)
            .backlog(4096)
            .build()?;
    let mut thread = easynet::blocking::ServerThread::start(server)?;
    println!("listening on {}", thread.addresses()[0]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(stop_signal());
    thread.join(None)?;
    Ok(())
}

/// The hand-written baseline: a task per connection, lines in with `BufReader::read_line`,
/// a `tokio::sync::broadcast` channel of shared `Bytes`, each task writing what it receives.
async fn tokio_baseline(port: u16) -> Result<(), BoxError> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let (tx, _) = tokio::sync::broadcast::channel::<(u64, Bytes)>(1024);
    let accept = async {
        let mut next = 0u64;
        loop {
            let (sock, _) = listener.accept().await?;
            next += 1;
            let me = next;
            let tx = tx.clone();
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r);
                let mut line = Vec::with_capacity(MESSAGE + 1);
                loop {
                    tokio::select! {
                        got = lines.read_until(b'\n', &mut line) => match got {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                let _ = tx.send((me, Bytes::from(std::mem::take(&mut line))));
                            }
                        },
                        msg = rx.recv() => {
                            // What else is there goes out in the same write.
                            let mut out = Vec::new();
                            let mut next = msg;
                            loop {
                                match next {
                                    Ok((from, data)) if from != me => out.extend_from_slice(&data),
                                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                    Err(_) => return,
                                }
                                match rx.try_recv() {
                                    Ok(m) => next = Ok(m),
                                    Err(_) => break,
                                }
                            }
                            if !out.is_empty() && w.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        r = accept => r?,
        () = stop_signal() => {}
    }
    Ok(())
}

async fn stop_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The child's user + system CPU seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ')' field 1 is state: utime and stime are the 12th and 13th.
    (ticks(11) + ticks(12)) / 100.0
}

async fn run(imp: &str, listeners: usize, messages: u64, window: u64) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = if which("taskset") {
        let mut c = std::process::Command::new("taskset");
        c.arg("-c").arg("0").arg(&exe);
        c
    } else {
        std::process::Command::new(&exe)
    };
    let child = cmd
        .args(["serve", "--impl", imp, "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut child = Child(child);
    let mut line = String::new();
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or("unexpected server output")?
        .parse()?;
    let pid = child.0.id();

    // Listeners count the lines they receive.
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..listeners {
        let sock = TcpStream::connect(addr).await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut sock = sock;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                        received.fetch_add(lines as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut speaker = TcpStream::connect(addr).await?;
    speaker.set_nodelay(true)?;
    // Let every connection be accepted and registered before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut line = vec![b'x'; MESSAGE - 1];
    line.push(b'\n');
    let total = listeners as u64 * messages;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let limit = t0 + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < total {
        // At most `window` messages ahead of the slowest possible listener.
        let done = received.load(Ordering::Relaxed) / listeners as u64;
        while sent < messages && sent < done + window {
            speaker.write_all(&line).await?;
            sent += 1;
        }
        if Instant::now() > limit {
            return Err(format!(
                "stalled: {} of {total} deliveries",
                received.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::task::yield_now().await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    println!(
        "impl={imp} listeners={listeners} messages={messages} deliveries_per_s={:.0} server_cpu_us_per_delivery={:.3} seconds={secs:.2}",
        total as f64 / secs,
        cpu * 1e6 / total as f64,
    );
    drop(child);
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// The server process, killed and reaped when dropped (on every path).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let imp = arg(&args, "--impl", String::from("easynet-tokio"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("serve") if imp == "easynet-mio" => easynet_mio(arg(&args, "--port", 0u16)),
        Some("serve") => {
            let port = arg(&args, "--port", 0u16);
            rt.block_on(async {
                match imp.as_str() {
                    "easynet-tokio" => easynet_tokio(port).await,
                    "tokio-baseline" => tokio_baseline(port).await,
                    other => Err(format!("unknown --impl {other}").into()),
                }
            })
        }
        Some("run") => rt.block_on(run(
            &imp,
            arg(&args, "--listeners", 1000usize),
            arg(&args, "--messages", 1000u64),
            arg(&args, "--window", 16u64),
        )),
        _ => Err("usage: broadcast serve|run --impl easynet-tokio|easynet-mio|tokio-baseline [--listeners N] [--messages M] [--window W] [--port P]".into()),
    }
}
