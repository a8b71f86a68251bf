//! Shared pieces of the integration tests.
#![allow(dead_code)]

pub mod drivers;
#[cfg(unix)]
pub mod unix;

/// An example binary (`examples/NAME.rs`), built by `cargo test` beside the test binaries
/// (`cargo test --test X` alone does not rebuild it: build the example first after
/// changing it).
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example {name}`)",
        bin.display()
    );
    bin
}

/// Starts the echo_server example with `args` (`RUST_LOG=info`, stdout and stderr piped)
/// and waits for its `listening on ADDR` line: the child (its stderr still to be taken)
/// and the address.
pub fn spawn_echo_server(args: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(example("echo_server"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}
