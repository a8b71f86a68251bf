//! The examples' logging: tracing to stderr, filtered by `RUST_LOG` (default `info`),
//! through a non-blocking writer.

/// Installs the subscriber; keep the guard until exit (it flushes what is queued).
///
/// Lines go to a bounded queue (4096 lines, about 1 MB) that a thread of its own writes to
/// stderr: when stderr is slow or blocked (a pipe nobody reads), the queue fills and further
/// lines are dropped rather than stalling an event loop.
pub fn init() -> tracing_appender::non_blocking::WorkerGuard {
    let (stderr, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(true)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(stderr)
        // Colours only for a terminal: a pipe or a file gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    guard
}
