//! The `echo_client` example, run as a user would: its flags, and its errors as one line
//! that names the cause. Runs the example binary cargo built next to this test
//! (`target/<profile>/examples/echo_client`; `cargo test` builds examples).

#![cfg(all(feature = "tokio", feature = "mio", feature = "json", feature = "tls"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::PrivateKeyDer;
use support::drivers::{self, Opts};

/// The example must be done within this.
const LIMIT: Duration = Duration::from_secs(5);

fn example() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/echo_client
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir
        .join("examples")
        .join(format!("echo_client{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --example echo_client --all-features`",
        bin.display()
    );
    bin
}

/// Runs the example with `args` (and `env`), bounded by [`LIMIT`]; returns its output and
/// how long it ran.
fn run(args: &[&str], env: &[(&str, &std::path::Path)]) -> (Output, Duration) {
    let mut cmd = Command::new(example());
    cmd.args(args)
        .env("RUST_LOG", "off")
        .env_remove("SSL_CERT_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(LIMIT) {
        Ok(out) => (out.unwrap(), started.elapsed()),
        Err(_) => {
            // SAFETY: kill(2) on the child we started; no memory is involved.
            #[cfg(unix)]
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!("echo_client {args:?} still running after {LIMIT:?}");
        }
    }
}

/// The one line the example printed on stderr, after checking it failed with status 1.
fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A self-signed identity for "localhost" named `tag` (distinct names: a CA of another
/// name is an unknown issuer), and its certificate in a PEM file.
fn identity(tag: &str) -> (certs::Identity, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, tag);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = std::env::temp_dir().join(format!(
        "easynet-echo-client-{}-{tag}.pem",
        std::process::id()
    ));
    std::fs::write(&path, cert.pem()).unwrap();
    let id = certs::Identity {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    };
    (id, path)
}

#[test]
fn help_and_unknown_flags() {
    let (out, _) = run(&["--help"], &[]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--tls ", "--tls-ca", "--server-name"] {
        assert!(help.contains(flag), "{help}");
    }
    let (out, _) = run(&["--no-such-flag"], &[]);
    let err = failure(&out);
    assert!(
        err.contains("--no-such-flag") && err.contains("--help"),
        "{err}"
    );
}

#[test]
fn tls_to_a_plain_server_fails_at_once_naming_the_cause() {
    // A plain-text server: it answers every connection with a line at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello\n").unwrap();
        // Held open until the client leaves: only the bytes can tell it is not TLS.
        let _ = std::io::Read::read(&mut s, &mut [0; 1024]);
    });
    let (_, system_roots) = identity("roots");
    let (out, took) = run(
        &["--tls", "--port", &port, "hi"],
        &[("SSL_CERT_FILE", &system_roots)],
    );
    let err = failure(&out);
    assert!(err.contains("does not speak TLS"), "{err}");
    assert!(
        err.contains(&format!("connecting to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(took < LIMIT, "{took:?}");
    server.join().unwrap();
    let _ = std::fs::remove_file(system_roots);
}

#[test]
fn a_certificate_that_does_not_verify_is_named() {
    let (id, id_ca) = identity("server");
    let (_, other_ca) = identity("other");
    let server = drivers::mio(Opts {
        tls: Some(id.server_config().into()),
        ..Opts::default()
    });
    let addr: SocketAddr = server.addr;
    let port = addr.port().to_string();
    let ca = other_ca.to_str().unwrap();
    let (out, _) = run(
        &[
            "--tls-ca",
            ca,
            "--server-name",
            "localhost",
            "--port",
            &port,
            "hi",
        ],
        &[],
    );
    let err = failure(&out);
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Printed once, though the error is also a source of the context around it.
    assert_eq!(err.matches("UnknownIssuer").count(), 1, "{err}");

    // The name checked is the host unless --server-name says otherwise.
    let id_ca_arg = id_ca.to_str().unwrap();
    let (out, _) = run(&["--tls-ca", id_ca_arg, "--port", &port, "hi"], &[]);
    let err = failure(&out);
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
    // And with the right CA and name it talks.
    let (out, _) = run(
        &[
            "--tls-ca",
            id_ca_arg,
            "--server-name",
            "localhost",
            "--framing",
            "line",
            "--port",
            &port,
            "hi",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "hi\n");
    server.stop();
    for f in [other_ca, id_ca] {
        let _ = std::fs::remove_file(f);
    }
}
