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
