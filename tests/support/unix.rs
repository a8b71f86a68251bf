//! Unix socket test helpers: unique temporary paths that clean up, our own credentials, and
//! a handler that answers with what the server knows about its peer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use easynet::handler::{
    DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext, StreamHandler,
};

/// A unique path in the temp dir, removed (if still there) when dropped.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("easynet-{tag}-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A unique Linux abstract name.
pub fn abstract_name(tag: &str) -> Vec<u8> {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("easynet-{tag}-{}-{n}", std::process::id()).into_bytes()
}

/// "uid gid pid" of this process, as `Whoami` answers it.
pub fn me() -> String {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    format!("{uid} {gid} Some({})", std::process::id())
}

/// Echoes lines; "whoami" answers the peer's credentials ("uid gid pid"), "peer" the peer's
/// address and "local" the server's; "quit" closes; a datagram past the size limit is
/// answered "too large: GOT > LIMIT". Runs on both drivers.
pub struct Whoami;

fn answer(info: &easynet::handler::ConnInfo, line: String) -> String {
    match line.as_str() {
        "whoami" => match info.peer_cred {
            Some(c) => format!("{} {} {:?}", c.uid, c.gid, c.pid),
            None => "none".to_owned(),
        },
        "peer" => info.peer.to_string(),
        "local" => info.local.to_string(),
        _ => line,
    }
}

impl StreamHandler for Whoami {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) => {
                let reply = answer(cx.info(), l);
                cx.send(&reply)?;
            }
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
        }
        Ok(Next::recv())
    }
}

/// The answer to a datagram of `got` bytes past a `limit`.
pub fn too_large(got: usize, limit: usize) -> String {
    format!("too large: {got} > {limit}")
}

impl DatagramHandler for Whoami {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        match r {
            Received::Request(l) => {
                let reply = answer(cx.info(), l);
                cx.send(&reply)?;
            }
            Received::ParseError(easynet::protocol::ParseError::FrameTooLarge { limit, got }) => {
                cx.send(too_large(got, limit))?;
            }
            _ => {}
        }
        Ok(Next::Close)
    }
}
