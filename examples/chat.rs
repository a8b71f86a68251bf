//! Chat server: every line a client sends is delivered, as sent, to every other connected
//! client (not echoed to the sender). Server push with `easynet::push::Broadcast`.
//!
//! ```text
//! cargo run --example chat -- [--driver tokio|mio] [--host H] [--port P]
//! ```
//!
//! Prints `listening on ADDR` when ready; SIGINT or SIGTERM shut it down gracefully and it
//! exits with status 0; a second one resets the connections left and it exits with 130.
//! `--help` lists the options.

#[path = "common/logging.rs"]
mod logging;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::Stream;
use easynet::push::{Broadcast, SlowConsumer};

const USAGE: &str = "\
Chat server: every line a client sends goes to every other connected client.

Usage: chat [OPTIONS]

Options:
  --driver tokio|mio   event loop: tokio (async) or mio (blocking) [default: tokio]
  --host HOST          [default: 127.0.0.1]
  --port PORT          [default: 9000]
  -h, --help           print this help

Prints `listening on ADDR`; SIGINT or SIGTERM shut it down gracefully (exit status 0), a
second one resets the connections left (exit status 130).
Logs go to stderr; RUST_LOG sets the filter [default: info].
";

/// One member of the room: joins on connection, leaves on disconnection, and every line it
/// sends goes to the others. A member that does not read loses lines (counted by the room)
/// rather than holding memory without bound or slowing the others down.
struct Member(Arc<Broadcast<String>>);

impl StreamHandler for Member {
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

struct Args {
    mio: bool,
    host: String,
    port: u16,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        mio: false,
        host: "127.0.0.1".into(),
        port: 9000,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("driver") => {
                a.mio = match parser.value()?.string()?.as_str() {
                    "tokio" => false,
                    "mio" => true,
                    d => {
                        return Err(lexopt::Error::UnexpectedValue {
                            option: "driver".into(),
                            value: d.into(),
                        });
                    }
                }
            }
            Long("host") => a.host = parser.value()?.string()?,
            Long("port") => a.port = parser.value()?.parse()?,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

fn announce(addrs: &[impl std::fmt::Display]) {
    let mut out = std::io::stdout().lock();
    for a in addrs {
        let _ = writeln!(out, "listening on {a}");
    }
    let _ = out.flush();
}

/// On the first SIGINT or SIGTERM logs how many members drain and runs `stop` (a graceful
/// shutdown); on the second runs `hurry` (every connection reset now). Registered before
/// `listening on` is printed.
fn on_signals(
    open: impl Fn() -> u64 + Send + 'static,
    stop: impl FnOnce() + Send + 'static,
    hurry: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing the signal handler")?;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if signals.next().is_some() {
            tracing::info!(
                "shutting down, {} connections draining (a second signal closes them at once)",
                open()
            );
            stop();
        }
        if signals.next().is_some() {
            tracing::warn!("second signal: closing every connection now");
            HURRIED.store(true, Ordering::Relaxed);
            hurry();
        }
    });
    Ok(())
}

/// Set by the second signal; the exit status says so.
static HURRIED: AtomicBool = AtomicBool::new(false);

fn serve_tokio(args: &Args, room: Arc<Broadcast<String>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = easynet::aio::AsyncTcpServer::builder(Stream::lines(), move |_: &ConnInfo| {
            Member(room.clone())
        })
        .host(args.host.as_str())
        .port(args.port)
        .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (open, hurry) = (server.clone(), server.clone());
        let runtime = tokio::runtime::Handle::current();
        on_signals(
            move || open.stats().open,
            move || {
                let _ = tx.send(());
            },
            move || {
                runtime.spawn(async move { hurry.shutdown_within(Duration::ZERO).await });
            },
        )?;
        server.activate().await?;
        announce(&server.addresses());
        server
            .serve_with_shutdown(async {
                let _ = rx.await;
            })
            .await?;
        Ok(())
    })
}

/// Prints the addresses when the blocking server is up.
struct Announce(easynet::blocking::ServerHandle);

impl easynet::blocking::EventSet for Announce {
    fn set(&self) {
        announce(&self.0.local_addresses());
    }
}

fn serve_mio(args: &Args, room: Arc<Broadcast<String>>) -> anyhow::Result<()> {
    let server = easynet::blocking::TcpServer::builder(Stream::lines(), move |_: &ConnInfo| {
        Member(room.clone())
    })
    .host(args.host.as_str())
    .port(args.port)
    .build()?;
    let (open, stop, hurry) = (server.handle(), server.handle(), server.handle());
    on_signals(
        move || open.stats().open,
        // `shutdown` waits for the run: not on the signal thread.
        move || drop(std::thread::spawn(move || stop.shutdown(None))),
        move || hurry.shutdown(Some(Duration::ZERO)),
    )?;
    server.serve_notify(Announce(server.handle()))?;
    Ok(())
}

fn main() -> anyhow::Result<ExitCode> {
    let _flush_logs_at_exit = logging::init();
    // lexopt's messages already include their cause: print them once.
    let args = parse_args().map_err(|e| anyhow::anyhow!("{e} (see --help)"))?;
    let room = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    if args.mio {
        serve_mio(&args, room)?;
    } else {
        serve_tokio(&args, room)?;
    }
    // 130, as a shell reports a process ended by SIGINT: the second signal cut it short.
    Ok(if HURRIED.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
