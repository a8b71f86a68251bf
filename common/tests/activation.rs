//! Socket activation (`listen_fds`) in a child process, as `systemd-socket-activate` starts
//! one: a bound listener as descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` set to the
//! child's own id (a shell sets it to `$$` and then `exec`s the child, which keeps the id).
//! The child is this test binary, running only [`child`].

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use easynet_common::SocketKind;

/// Set in the child's environment: the address its inherited listener must have.
const CHILD: &str = "EASYNET_ACTIVATION_CHILD";

#[test]
fn a_child_takes_the_listener_passed_as_fd_3_and_serves_on_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "export LISTEN_PID=$$; exec \"$@\"", "sh"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "echo")
        .env(CHILD, addr.to_string())
        .stdout(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The listener becomes descriptor 3, inherited across exec (dup2 clears
            // close-on-exec; if it already is 3, clear it by hand).
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if ok < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // The parent keeps its own copy (as a service manager does) but never accepts on it.
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert_eq!(line, "activated\n");
    let status = child.wait().unwrap();
    assert!(status.success(), "child: {status}");
}

/// The child's side; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(expected) = std::env::var(CHILD) else {
        return;
    };
    // SAFETY: the test harness runs this test alone (--test-threads=1); its other thread
    // only waits for it and does not touch the environment.
    let sockets = unsafe { easynet_common::listen_fds() }.unwrap();
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].kind(), SocketKind::Tcp);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} left in the environment"
        );
    }
    // SAFETY: as above.
    assert!(unsafe { easynet_common::listen_fds() }.unwrap().is_empty());
    let listener = TcpListener::from(sockets.into_iter().next().unwrap().into_fd());
    assert_eq!(listener.local_addr().unwrap().to_string(), expected);
    // Close-on-exec again, so that our own children do not inherit it.
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0);
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"activated\n").unwrap();
}
