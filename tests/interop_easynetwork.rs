//! Interoperability with the real Python EasyNetwork library (issue 14), both ways: easynet's
//! clients (tokio and mio) against EasyNetwork's servers, and EasyNetwork's clients (blocking
//! and async) against easynet's servers (tokio and mio); TCP, UDP and TLS; the JSON and line
//! serializers.
//!
//! `tests/interop/easynetwork_peer.py` runs EasyNetwork (the version pinned in
//! `tests/interop/requirements.txt`) as an echo server or as a client and reports what it
//! sees as JSON lines on its standard output, which these tests read instead of sleeping.
//!
//! The interpreter is `$EASYNET_INTEROP_PYTHON` (`.ci/run` sets it), else the virtual
//! environment `target/interop-venv` of this repository. If neither exists the tests print
//! why and pass: that is the only way they skip. To run them locally:
//!
//! ```text
//! python3 -m venv target/interop-venv
//! target/interop-venv/bin/pip install --require-hashes -r tests/interop/requirements.txt
//! cargo test --all-features --test interop_easynetwork
//! ```
//!
//! Every child process is killed and reaped when its guard drops, and every wait is bounded.

#![cfg(all(feature = "tokio", feature = "mio", feature = "tls", feature = "json"))]

#[path = "../core/tests/support/logs.rs"]
#[allow(dead_code)]
mod logs;

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use easynet::aio::ClientError;
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{
    Datagram, DatagramClientProtocol, DatagramServerProtocol, Json, Lines, Stream,
    StreamClientProtocol, StreamServerProtocol, Utf8,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Level;

/// Every wait of these tests gives up after this.
const LIMIT: Duration = Duration::from_secs(20);
/// A graceful close (TLS close_notify exchange included) must take less than this.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The Python interpreter

const SKIP_HELP: &str = "set EASYNET_INTEROP_PYTHON to a Python with EasyNetwork, or run \
    `python3 -m venv target/interop-venv && target/interop-venv/bin/pip install \
    --require-hashes -r tests/interop/requirements.txt`";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, checked once: it must run the peer script with the pinned
/// EasyNetwork. `None` only when no interpreter was named and the default venv is absent.
fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(find_python).as_deref()
}

fn find_python() -> Option<PathBuf> {
    let python = match std::env::var_os("EASYNET_INTEROP_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let venv = repo().join("target/interop-venv/bin/python");
            if !venv.exists() {
                return None;
            }
            venv
        }
    };
    let pinned = pinned_version();
    let peer = Peer::start(&python, "version", &["version".to_owned()]);
    let version = peer.expect("version");
    let done = peer.finish();
    assert!(
        done.status.success(),
        "version check failed: {}",
        done.stderr
    );
    assert_eq!(
        version["easynetwork"].as_str(),
        Some(pinned.as_str()),
        "{} has EasyNetwork {} but tests/interop/requirements.txt pins {pinned}: reinstall the venv",
        python.display(),
        version["easynetwork"]
    );
    eprintln!(
        "interop: EasyNetwork {pinned} on Python {} ({})",
        version["python"].as_str().unwrap_or("?"),
        python.display()
    );
    Some(python)
}

/// The EasyNetwork version pinned in the requirements file.
fn pinned_version() -> String {
    let path = repo().join("tests/interop/requirements.txt");
    let text = std::fs::read_to_string(&path).expect("tests/interop/requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("easynetwork=="))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("requirements.txt pins easynetwork==VERSION")
        .to_owned()
}

/// The interpreter, or: print why this test is skipped and return from it.
macro_rules! python_or_skip {
    () => {
        match python() {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIPPED (no Python with EasyNetwork: EASYNET_INTEROP_PYTHON is unset and \
                     target/interop-venv does not exist): {SKIP_HELP}"
                );
                return;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// A Python peer process

/// A running `easynetwork_peer.py`: its events (JSON lines on stdout) and its stderr. Dropping
/// it kills and reaps the process.
struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Disconnects when the stderr reader has read everything (the pipe closed).
    stderr_done: mpsc::Receiver<()>,
}

/// What a peer left when it ended.
struct Finished {
    name: String,
    status: ExitStatus,
    /// Events not read before `finish`.
    events: Vec<Value>,
    stderr: String,
}

impl Peer {
    fn start(python: &Path, name: &str, args: &[String]) -> Peer {
        let mut child = Command::new(python)
            .arg("-u") // unbuffered: every event line arrives when printed
            .arg("-B") // no __pycache__ in tests/interop
            .arg(repo().join("tests/interop/easynetwork_peer.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "garbage", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let (done, stderr_done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Peer {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
            stderr_done,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next event, within [`LIMIT`]; panics (with the peer's stderr) otherwise.
    fn next(&self) -> Value {
        match self.events.recv_timeout(LIMIT) {
            Ok(v) => v,
            Err(e) => panic!(
                "{}: no event within {LIMIT:?} ({e}); stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// The next event, which must be `name`.
    fn expect(&self, name: &str) -> Value {
        let v = self.next();
        assert_eq!(
            v["event"],
            name,
            "{}: expected a {name} event, got {v}; stderr:\n{}",
            self.name,
            self.stderr()
        );
        v
    }

    /// Closes its stdin (a server stops), reads the events left until stdout closes, then
    /// reaps it; all within [`LIMIT`], else it is killed.
    fn finish(mut self) -> Finished {
        drop(self.stdin.take());
        let deadline = Instant::now() + LIMIT;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => events.push(v),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{}: did not end within {LIMIT:?}; events {events:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            }
        }
        // Its stdout is closed: it is exiting. Reap it, bounded.
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                panic!("{}: still running after closing its stdout", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Its stderr closed with it; let the reader take the last bytes.
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = self.stderr_done.recv_timeout(left) {
            panic!("{}: stderr still open after it exited", self.name);
        }
        Finished {
            name: self.name.clone(),
            status,
            events,
            stderr: self.stderr(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // On every path: an already-reaped child makes both calls fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Finished {
    /// Exited 0 and logged nothing at WARNING or above, no traceback.
    fn assert_clean(&self) {
        assert!(
            self.status.success(),
            "{}: exit {}; stderr:\n{}",
            self.name,
            self.status,
            self.stderr
        );
        let noisy: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| {
                l.contains("Traceback")
                    || ["WARNING", "ERROR", "CRITICAL"]
                        .iter()
                        .any(|lvl| l.starts_with(lvl))
            })
            .collect();
        assert!(
            noisy.is_empty(),
            "{}: EasyNetwork logged problems:\n{}",
            self.name,
            self.stderr
        );
    }

    fn of(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Serializers on both sides

/// A message type and the easynet protocols that match one EasyNetwork serializer.
trait Ser: Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// The peer script's `--serializer`.
    const NAME: &'static str;
    type StreamP: StreamServerProtocol<Request = Self, Response = Self>
        + StreamClientProtocol<Request = Self, Response = Self>;
    type DgramP: DatagramServerProtocol<Request = Self, Response = Self>
        + DatagramClientProtocol<Request = Self, Response = Self>;
    fn stream() -> Self::StreamP;
    /// The request on which the echo servers close the connection instead of answering.
    fn bye() -> Self;
    fn datagram() -> Self::DgramP;
}

/// EasyNetwork's `StringLineSerializer()` (LF): easynet's `Stream::lines`/`Datagram::lines`.
impl Ser for String {
    const NAME: &'static str = "line";
    type StreamP = Stream<Lines, Utf8, String, String>;
    type DgramP = Datagram<Utf8, String, String>;
    fn stream() -> Self::StreamP {
        Stream::lines()
    }
    fn bye() -> Self {
        "bye".to_owned()
    }
    fn datagram() -> Self::DgramP {
        Datagram::lines()
    }
}

/// EasyNetwork's `JSONSerializer()`: easynet's `Stream::json_lines`/`Datagram::json`.
impl Ser for Value {
    const NAME: &'static str = "json";
    type StreamP = Stream<Lines, Json, Value, Value>;
    type DgramP = Datagram<Json, Value, Value>;
    fn stream() -> Self::StreamP {
        Stream::json_lines()
    }
    fn bye() -> Self {
        json!({"bye": true})
    }
    fn datagram() -> Self::DgramP {
        Datagram::json()
    }
}

/// JSON documents both sides must carry unchanged: nesting, escapes, non-ASCII text (sent
/// raw by serde_json, as `\u` escapes by Python), integers beyond 2^53 and up to 64 bits,
/// floats, bare scalars, and one document larger than a socket read.
fn json_messages() -> Vec<Value> {
    vec![
        json!({"hello": "world"}),
        json!([1, 2.5, -3, true, false, null]),
        json!("quotes \" backslash \\ newline \n tab \t control \u{1} slash /"),
        json!({"unicode": "héllo ✓ 🎉 \u{2028}", "nested": {"a": [{}, [], {"b": null}]}}),
        json!(42),
        json!(-0.5),
        json!(1.5e300),
        json!(9_007_199_254_740_993u64), // 2^53 + 1: no float on either side
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!({"big": "x".repeat(30_000), "list": (0..500).collect::<Vec<_>>()}),
    ]
}

/// ASCII lines (EasyNetwork's line serializer is ASCII by default), one longer than a read.
fn line_messages() -> Vec<String> {
    vec![
        "hello".to_owned(),
        "with spaces\tand a tab ".to_owned(),
        "punctuation !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".to_owned(),
        "a lone CR \r inside".to_owned(),
        "x".repeat(30_000),
    ]
}

// ---------------------------------------------------------------------------------------
// TLS material: a CA and a "localhost" certificate it signed, as PEM files and rustls configs

struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// With TLS 1.3 and 1.2 (`versions` empty: rustls's defaults) or only `versions`.
    fn new(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "easynet interop test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&leaf_key, &ca).unwrap();

        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "easynet-interop-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_path = write("ca.pem", ca.pem());
        let cert_path = write("cert.pem", cert.pem());
        let key_path = write("key.pem", leaf_key.serialize_pem());

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = if versions.is_empty() {
            rustls::DEFAULT_VERSIONS
        } else {
            versions
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(ca.der())).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            dir,
            ca: ca_path,
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }

    fn server_name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("localhost").unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_owned()
}

// ---------------------------------------------------------------------------------------
// EasyNetwork's servers, driven by easynet's clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// TLS or not, on both sides; the rustls end picks the versions on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Off,
    /// TLS 1.3 or 1.2 (1.3 is negotiated).
    On,
    /// Only TLS 1.2 (its close_notify exchange differs from 1.3's).
    V12,
}

impl Tls {
    /// The version an easynet client must have negotiated with EasyNetwork.
    fn version(self) -> Option<rustls::ProtocolVersion> {
        match self {
            Tls::Off => None,
            Tls::On => Some(rustls::ProtocolVersion::TLSv1_3),
            Tls::V12 => Some(rustls::ProtocolVersion::TLSv1_2),
        }
    }

    fn pki(self) -> Option<Pki> {
        match self {
            Tls::Off => None,
            Tls::On => Some(Pki::new(&[])),
            Tls::V12 => Some(Pki::new(&[&rustls::version::TLS12])),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Tokio,
    Mio,
}

const DRIVERS: [Driver; 2] = [Driver::Tokio, Driver::Mio];

/// An EasyNetwork echo server: `python easynetwork_peer.py server ...`.
struct PyServer {
    peer: Peer,
    addr: SocketAddr,
}

impl PyServer {
    fn start(python: &Path, transport: Transport, ser: &str, extra: &[String]) -> PyServer {
        let mut args = vec![
            "server".to_owned(),
            "--transport".to_owned(),
            transport.arg().to_owned(),
            "--serializer".to_owned(),
            ser.to_owned(),
        ];
        args.extend_from_slice(extra);
        let name = format!("EasyNetwork {} {ser} server {extra:?}", transport.arg());
        let peer = Peer::start(python, &name, &args);
        let port = peer.expect("listening")["port"]
            .as_u64()
            .expect("a port number");
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
        PyServer { peer, addr }
    }

    fn tls_args(pki: &Pki) -> Vec<String> {
        vec![
            "--certfile".to_owned(),
            path_arg(&pki.cert),
            "--keyfile".to_owned(),
            path_arg(&pki.key),
        ]
    }

    /// The requests the server decoded next (`n` of them), as JSON values.
    fn requests(&self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| self.peer.expect("request")["value"].clone())
            .collect()
    }

    /// Stops it: it must exit 0 without a warning.
    fn stop(self) {
        let done = self.peer.finish();
        assert_eq!(
            done.of("stopped").len(),
            1,
            "{}: events after stop: {:?}",
            done.name,
            done.events
        );
        done.assert_clean();
    }
}

/// What an easynet client got back for each reply it waited for.
#[derive(Debug, PartialEq)]
enum Reply<T> {
    Msg(T),
    /// `ClientError::Parse`: the client skipped the bad bytes and goes on.
    Parse(String),
    /// Any other error; the client stops receiving.
    Error(String),
}

fn reply<T>(r: Result<T, ClientError>) -> Reply<T> {
    match r {
        Ok(m) => Reply::Msg(m),
        Err(ClientError::Parse(e)) => Reply::Parse(e.to_string()),
        Err(e) => Reply::Error(format!("{e:?}")),
    }
}

fn msgs<T: Clone>(v: &[T]) -> Vec<Reply<T>> {
    v.iter().cloned().map(Reply::Msg).collect()
}

/// What an easynet TCP client got, the TLS version it negotiated, how long its close took.
struct Exchange<T> {
    replies: Vec<Reply<T>>,
    version: Option<rustls::ProtocolVersion>,
    close: Duration,
}

/// An easynet TCP (or TLS) client of `driver`: sends every message, then waits for
/// `expect` replies (stopping at the first error other than a parse error), then closes.
fn easynet_tcp<T: Ser>(
    driver: Driver,
    addr: SocketAddr,
    tls: Option<&Pki>,
    messages: &[T],
    expect: usize,
) -> Exchange<T> {
    let mut replies = Vec::new();
    let mut version = None;
    let close = match driver {
        Driver::Tokio => {
            use easynet::aio::AsyncTcpClient;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let connect = async {
                    match tls {
                        Some(pki) => {
                            AsyncTcpClient::connect_tls(
                                addr,
                                T::stream(),
                                pki.client.clone(),
                                Pki::server_name(),
                            )
                            .await
                        }
                        None => AsyncTcpClient::connect(addr, T::stream()).await,
                    }
                };
                let mut c = tokio::time::timeout(LIMIT, connect)
                    .await
                    .expect("connect in time")
                    .expect("connect");
                version = c.tls_info().and_then(|t| t.protocol_version);
                for m in messages {
                    c.send(m).await.expect("send");
                }
                for _ in 0..expect {
                    let r = reply(c.recv_timeout(LIMIT).await);
                    let stop = matches!(r, Reply::Error(_));
                    replies.push(r);
                    if stop {
                        break;
                    }
                }
                let start = Instant::now();
                tokio::time::timeout(LIMIT, c.close())
                    .await
                    .expect("close in time");
                start.elapsed()
            })
        }
        Driver::Mio => {
            use easynet::blocking::TcpClient;
            let mut c = match tls {
                Some(pki) => TcpClient::connect_tls(
                    addr,
                    T::stream(),
                    pki.client.clone(),
                    Pki::server_name(),
                ),
                None => TcpClient::connect(addr, T::stream()),
            }
            .expect("connect");
            version = c.tls_info().and_then(|t| t.protocol_version);
            for m in messages {
                c.send(m).expect("send");
            }
            for _ in 0..expect {
                let r = reply(c.recv_timeout(LIMIT));
                let stop = matches!(r, Reply::Error(_));
                replies.push(r);
                if stop {
                    break;
                }
            }
            let start = Instant::now();
            c.close();
            start.elapsed()
        }
    };
    Exchange {
        replies,
        version,
        close,
    }
}

/// An easynet UDP client of `driver`, as [`easynet_tcp`].
fn easynet_udp<T: Ser>(
    driver: Driver,
    addr: SocketAddr,
    messages: &[T],
    expect: usize,
) -> Vec<Reply<T>> {
    let mut replies = Vec::new();
    match driver {
        Driver::Tokio => {
            use easynet::aio::AsyncUdpClient;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = AsyncUdpClient::connect(addr, T::datagram())
                    .await
                    .expect("connect");
                for m in messages {
                    c.send(m).await.expect("send");
                }
                for _ in 0..expect {
                    let r = reply(c.recv_timeout(LIMIT).await);
                    let stop = matches!(r, Reply::Error(_));
                    replies.push(r);
                    if stop {
                        break;
                    }
                }
                c.close();
            });
        }
        Driver::Mio => {
            use easynet::blocking::UdpClient;
            let mut c = UdpClient::connect(addr, T::datagram()).expect("connect");
            for m in messages {
                c.send(m).expect("send");
            }
            for _ in 0..expect {
                let r = reply(c.recv_timeout(LIMIT));
                let stop = matches!(r, Reply::Error(_));
                replies.push(r);
                if stop {
                    break;
                }
            }
            c.close();
        }
    }
    replies
}

fn as_values<T: Ser>(v: &[T]) -> Vec<Value> {
    v.iter().map(|m| serde_json::to_value(m).unwrap()).collect()
}

/// Both easynet clients (tokio, then mio) against one EasyNetwork server: every message
/// comes back unchanged, EasyNetwork decoded each one as sent, the connection (TCP) ends
/// cleanly on both sides, and EasyNetwork logged nothing.
fn easynet_clients_against_easynetwork<T: Ser>(
    transport: Transport,
    tls: Tls,
    messages: Vec<T>,
    server_args: &[&str],
) {
    let python = python_or_skip!();
    let pki = tls.pki();
    let mut args: Vec<String> = server_args.iter().map(|s| (*s).to_owned()).collect();
    if let Some(pki) = &pki {
        args.extend(PyServer::tls_args(pki));
    }
    let server = PyServer::start(python, transport, T::NAME, &args);
    for driver in DRIVERS {
        let what = format!("easynet {driver:?} client, {transport:?} tls={tls:?}");
        let replies = match transport {
            Transport::Tcp => {
                let ex = easynet_tcp(driver, server.addr, pki.as_ref(), &messages, messages.len());
                assert!(ex.close < CLOSE_LIMIT, "{what}: close took {:?}", ex.close);
                assert_eq!(ex.version, tls.version(), "{what}: TLS version");
                eprintln!("interop: {what} {}: close took {:?}", T::NAME, ex.close);
                ex.replies
            }
            Transport::Udp => easynet_udp(driver, server.addr, &messages, messages.len()),
        };
        assert_eq!(replies, msgs(&messages), "{what}: replies");
        if transport == Transport::Tcp {
            server.peer.expect("connected");
        }
        assert_eq!(
            server.requests(messages.len()),
            as_values(&messages),
            "{what}: what EasyNetwork decoded"
        );
        if transport == Transport::Tcp {
            // The client closed: EasyNetwork sees the end of the connection before the next.
            server.peer.expect("disconnected");
        }
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------
// easynet's servers, driven by EasyNetwork's clients

/// What an easynet server's handler saw.
#[derive(Debug)]
enum Seen<T> {
    /// With the TLS version negotiated.
    Connected(Option<rustls::ProtocolVersion>),
    Request(String, T),
    ParseError(String, String),
    Disconnected(String),
}

/// An echo handler that reports what it sees.
struct Recorder<T> {
    tx: mpsc::Sender<Seen<T>>,
    peer: String,
}

impl<T> Recorder<T> {
    fn new(tx: &mpsc::Sender<Seen<T>>, info: &ConnInfo) -> Self {
        Recorder {
            tx: tx.clone(),
            peer: info.peer.to_string(),
        }
    }

    fn record(&self, received: &Received<T>) -> Option<T>
    where
        T: Clone,
    {
        match received {
            Received::Request(m) => {
                let _ = self.tx.send(Seen::Request(self.peer.clone(), m.clone()));
                Some(m.clone())
            }
            Received::ParseError(e) => {
                let _ = self
                    .tx
                    .send(Seen::ParseError(self.peer.clone(), e.to_string()));
                None
            }
            Received::Timeout => None,
        }
    }
}

impl<T: Ser> StreamHandler for Recorder<T> {
    type Request = T;
    type Response = T;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, T>) -> HandlerResult {
        let version = cx.info().tls.as_ref().and_then(|t| t.protocol_version);
        let _ = self.tx.send(Seen::Connected(version));
        Ok(Next::recv())
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, received: Received<T>) -> HandlerResult {
        if let Some(m) = self.record(&received) {
            if m == T::bye() {
                return Ok(Next::Close);
            }
            cx.send(&m)?;
        }
        Ok(Next::recv())
    }

    fn on_disconnection(&mut self, _: &mut StreamContext<'_, T>) {
        let _ = self.tx.send(Seen::Disconnected(self.peer.clone()));
    }
}

impl<T: Ser> DatagramHandler for Recorder<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut DatagramContext<'_, T>, received: Received<T>) -> HandlerResult {
        if let Some(m) = self.record(&received) {
            cx.send(&m)?;
        }
        Ok(Next::Close)
    }
}

/// A running easynet echo server; dropping it shuts it down.
struct RustServer<T> {
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen<T>>,
    stop: Option<Box<dyn FnOnce()>>,
}

impl<T> Drop for RustServer<T> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl<T: Debug> RustServer<T> {
    /// What the handler saw so far (everything it saw before its last reply is there).
    fn seen_now(&self) -> Vec<Seen<T>> {
        self.seen.try_iter().collect()
    }

    /// Waits (bounded) for the handler of `peer` to see its connection end.
    fn wait_disconnected(&self, peer: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(Seen::Disconnected(p)) if p == peer => return,
                Ok(_) => {}
                Err(e) => panic!("{peer}: no disconnection within {LIMIT:?} ({e})"),
            }
        }
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn easynet_tcp_server<T: Ser>(driver: Driver, tls: Option<&Pki>) -> RustServer<T> {
    let (tx, seen) = mpsc::channel();
    let service = move |info: &ConnInfo| Recorder::new(&tx, info);
    match driver {
        Driver::Tokio => {
            use easynet::aio::AsyncTcpServer;
            let rt = tokio_runtime();
            let mut b = AsyncTcpServer::builder(T::stream(), service)
                .host("127.0.0.1")
                .shutdown_timeout(LIMIT);
            if let Some(pki) = tls {
                b = b.tls(pki.server.clone()).tls_shutdown_timeout(LIMIT);
            }
            let server = b.build().unwrap();
            let (up, mut is_up) = tokio::sync::watch::channel(false);
            let s = server.clone();
            let run = rt.spawn(async move { s.serve_notify(up).await });
            rt.block_on(async { tokio::time::timeout(LIMIT, is_up.wait_for(|u| *u)).await })
                .expect("server up in time")
                .expect("server up");
            let addr = server.addresses()[0];
            let stop = move || {
                rt.block_on(async {
                    tokio::time::timeout(LIMIT, server.shutdown())
                        .await
                        .expect("shutdown in time");
                    tokio::time::timeout(LIMIT, run)
                        .await
                        .expect("serve ends in time")
                        .unwrap()
                        .unwrap();
                });
                rt.shutdown_timeout(LIMIT);
            };
            RustServer {
                addr,
                seen,
                stop: Some(Box::new(stop)),
            }
        }
        Driver::Mio => {
            use easynet::blocking::TcpServer;
            let mut b = TcpServer::builder(T::stream(), service)
                .host("127.0.0.1")
                .shutdown_timeout(LIMIT);
            if let Some(pki) = tls {
                b = b.tls(pki.server.clone()).tls_shutdown_timeout(LIMIT);
            }
            let server = Arc::new(b.build().unwrap());
            mio_run(server.handle(), move |up| server.serve_notify(up), seen)
        }
    }
}

fn easynet_udp_server<T: Ser>(driver: Driver) -> RustServer<T> {
    let (tx, seen) = mpsc::channel();
    let service = move |info: &ConnInfo| Recorder::new(&tx, info);
    match driver {
        Driver::Tokio => {
            use easynet::aio::AsyncUdpServer;
            let rt = tokio_runtime();
            let server = AsyncUdpServer::builder(T::datagram(), service)
                .host("127.0.0.1")
                .shutdown_timeout(LIMIT)
                .build()
                .unwrap();
            let (up, mut is_up) = tokio::sync::watch::channel(false);
            let s = server.clone();
            let run = rt.spawn(async move { s.serve_notify(up).await });
            rt.block_on(async { tokio::time::timeout(LIMIT, is_up.wait_for(|u| *u)).await })
                .expect("server up in time")
                .expect("server up");
            let addr = server.addresses()[0];
            let stop = move || {
                rt.block_on(async {
                    tokio::time::timeout(LIMIT, server.shutdown())
                        .await
                        .expect("shutdown in time");
                    tokio::time::timeout(LIMIT, run)
                        .await
                        .expect("serve ends in time")
                        .unwrap()
                        .unwrap();
                });
                rt.shutdown_timeout(LIMIT);
            };
            RustServer {
                addr,
                seen,
                stop: Some(Box::new(stop)),
            }
        }
        Driver::Mio => {
            use easynet::blocking::UdpServer;
            let server = Arc::new(
                UdpServer::builder(T::datagram(), service)
                    .host("127.0.0.1")
                    .shutdown_timeout(LIMIT)
                    .build()
                    .unwrap(),
            );
            mio_run(server.handle(), move |up| server.serve_notify(up), seen)
        }
    }
}

/// Runs a standalone (mio) server on its own thread until the returned server drops.
fn mio_run<T>(
    handle: easynet::blocking::ServerHandle,
    serve: impl FnOnce(mpsc::Sender<()>) -> Result<(), easynet::blocking::ServerError> + Send + 'static,
    seen: mpsc::Receiver<Seen<T>>,
) -> RustServer<T> {
    let (up, is_up) = mpsc::channel();
    let run = std::thread::spawn(move || serve(up));
    is_up.recv_timeout(LIMIT).expect("server up in time");
    let addr = handle.addresses()[0];
    let stop = move || {
        handle.shutdown(Some(LIMIT));
        run.join().unwrap().unwrap();
    };
    RustServer {
        addr,
        seen,
        stop: Some(Box::new(stop)),
    }
}

/// Runs `python easynetwork_peer.py client ...` to its end.
fn easynetwork_client<T: Ser>(
    python: &Path,
    transport: Transport,
    addr: SocketAddr,
    messages: &[T],
    extra: &[String],
) -> Finished {
    let mut args = vec![
        "client".to_owned(),
        "--transport".to_owned(),
        transport.arg().to_owned(),
        "--serializer".to_owned(),
        T::NAME.to_owned(),
        "--port".to_owned(),
        addr.port().to_string(),
        "--timeout".to_owned(),
        LIMIT.as_secs().to_string(),
        "--messages".to_owned(),
        serde_json::to_string(messages).unwrap(),
    ];
    args.extend_from_slice(extra);
    let name = format!(
        "EasyNetwork {} {} client {extra:?}",
        transport.arg(),
        T::NAME
    );
    Peer::start(python, &name, &args).finish()
}

/// Per client session (one per `--api`), the replies it decoded and how long its close took.
fn sessions(done: &Finished) -> Vec<(String, Vec<Value>, f64)> {
    let mut out: Vec<(String, Vec<Value>, f64)> = Vec::new();
    for e in &done.events {
        match e["event"].as_str() {
            Some("session") => out.push((e["api"].as_str().unwrap().to_owned(), vec![], -1.0)),
            Some("reply") => out.last_mut().unwrap().1.push(e["value"].clone()),
            Some("closed") => out.last_mut().unwrap().2 = e["seconds"].as_f64().unwrap(),
            _ => {}
        }
    }
    out
}

/// The process-wide capture of easynet's log events.
fn logs() -> &'static logs::Capture {
    static LOGS: OnceLock<logs::Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = logs::Capture::default();
        tracing::subscriber::set_global_default(capture.clone()).expect("no other subscriber");
        capture
    })
}

/// easynet's WARN and ERROR events that name one of `peers`.
fn problems_with(peers: &[String]) -> Vec<String> {
    logs()
        .logs()
        .into_iter()
        .filter(|l| l.level <= Level::WARN && peers.iter().any(|p| l.text.contains(p.as_str())))
        .map(|l| format!("{} {}", l.level, l.text))
        .collect()
}

/// EasyNetwork's clients (blocking then async, a connection each) against an easynet server
/// of each driver: every message comes back unchanged, easynet decoded each one as sent,
/// the clients close promptly and quietly, and easynet logged nothing about them.
fn easynetwork_clients_against_easynet<T: Ser>(
    transport: Transport,
    tls: Tls,
    messages: Vec<T>,
    client_args: &[&str],
) {
    let python = python_or_skip!();
    logs();
    let pki = tls.pki();
    let mut args: Vec<String> = vec!["--api".to_owned(), "sync,async".to_owned()];
    args.extend(client_args.iter().map(|s| (*s).to_owned()));
    if let Some(pki) = &pki {
        args.extend(["--cafile".to_owned(), path_arg(&pki.ca)]);
        args.extend(["--server-hostname".to_owned(), "localhost".to_owned()]);
        args.extend([
            "--ssl-shutdown-timeout".to_owned(),
            LIMIT.as_secs().to_string(),
        ]);
    }
    for driver in DRIVERS {
        let what = format!("EasyNetwork clients {args:?} against easynet {driver:?} {transport:?}");
        let server: RustServer<T> = match transport {
            Transport::Tcp => easynet_tcp_server(driver, pki.as_ref()),
            Transport::Udp => easynet_udp_server(driver),
        };
        let done = easynetwork_client(python, transport, server.addr, &messages, &args);
        done.assert_clean();
        assert!(
            done.of("error").is_empty() && done.of("parse_error").is_empty(),
            "{what}: {:?}",
            done.events
        );
        let sessions = sessions(&done);
        assert_eq!(sessions.len(), 2, "{what}: {:?}", done.events);
        for (api, replies, close) in &sessions {
            eprintln!("interop: {what}: the {api} client's close took {close:.4} s");
            assert_eq!(replies, &as_values(&messages), "{what}: {api} replies");
            assert!(
                (0.0..CLOSE_LIMIT.as_secs_f64()).contains(close),
                "{what}: the {api} client's close took {close} s"
            );
        }
        // Each session's requests, in order, as easynet decoded them.
        let mut peers: Vec<String> = Vec::new();
        let mut got: Vec<Vec<T>> = Vec::new();
        let mut ended: Vec<String> = Vec::new();
        let mut versions = Vec::new();
        for s in server.seen_now() {
            match s {
                Seen::Request(p, m) => {
                    if peers.last() != Some(&p) {
                        peers.push(p);
                        got.push(Vec::new());
                    }
                    got.last_mut().unwrap().push(m);
                }
                Seen::ParseError(p, e) => panic!("{what}: easynet: {p}: parse error {e}"),
                Seen::Disconnected(p) => ended.push(p),
                Seen::Connected(v) => versions.push(v),
            }
        }
        assert_eq!(
            got,
            vec![messages.clone(), messages.clone()],
            "{what}: what easynet decoded"
        );
        if transport == Transport::Tcp {
            assert_eq!(versions, [tls.version(); 2], "{what}: TLS versions");
            for p in peers.iter().filter(|p| !ended.contains(p)) {
                server.wait_disconnected(p);
            }
        }
        drop(server);
        let problems = problems_with(&peers);
        assert!(problems.is_empty(), "{what}: easynet logged {problems:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// The matrix: direction x transport x serializer x TLS

#[test]
fn easynet_clients_to_easynetwork_tcp_json() {
    easynet_clients_against_easynetwork(Transport::Tcp, Tls::Off, json_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_tcp_line() {
    easynet_clients_against_easynetwork(Transport::Tcp, Tls::Off, line_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_udp_json() {
    easynet_clients_against_easynetwork(Transport::Udp, Tls::Off, json_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_udp_line() {
    easynet_clients_against_easynetwork(Transport::Udp, Tls::Off, line_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_tls_json() {
    easynet_clients_against_easynetwork(Transport::Tcp, Tls::On, json_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_tls_line() {
    easynet_clients_against_easynetwork(Transport::Tcp, Tls::On, line_messages(), &[]);
}

#[test]
fn easynet_clients_to_easynetwork_tls_not_standard_compatible() {
    easynet_clients_against_easynetwork(
        Transport::Tcp,
        Tls::On,
        line_messages(),
        &["--no-standard-compatible"],
    );
}

#[test]
fn easynetwork_clients_to_easynet_tcp_json() {
    easynetwork_clients_against_easynet(Transport::Tcp, Tls::Off, json_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_tcp_line() {
    easynetwork_clients_against_easynet(Transport::Tcp, Tls::Off, line_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_udp_json() {
    easynetwork_clients_against_easynet(Transport::Udp, Tls::Off, json_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_udp_line() {
    easynetwork_clients_against_easynet(Transport::Udp, Tls::Off, line_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_tls_json() {
    easynetwork_clients_against_easynet(Transport::Tcp, Tls::On, json_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_tls_line() {
    easynetwork_clients_against_easynet(Transport::Tcp, Tls::On, line_messages(), &[]);
}

/// EasyNetwork's clients with `ssl_standard_compatible=False` close without close_notify:
/// easynet's TLS servers take that as a plain end of the connection (behaviour.md §4).
#[test]
fn easynetwork_clients_to_easynet_tls_not_standard_compatible() {
    easynetwork_clients_against_easynet(
        Transport::Tcp,
        Tls::On,
        line_messages(),
        &["--no-standard-compatible"],
    );
}

// ---------------------------------------------------------------------------------------
// Closing first: the server ends the connection (TCP and TLS, both ways)

/// An EasyNetwork server that closes on "bye" (gracefully: close_notify first on TLS unless
/// not standard-compatible): each easynet client gets its reply to "hello", then `Eof`.
fn easynetwork_server_closes_first(tls: Tls, server_args: &[&str]) {
    let python = python_or_skip!();
    let pki = tls.pki();
    let mut args: Vec<String> = server_args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--close-on".to_owned(), "\"bye\"".to_owned()]);
    if let Some(pki) = &pki {
        args.extend(PyServer::tls_args(pki));
    }
    let server = PyServer::start(python, Transport::Tcp, "line", &args);
    let messages = ["hello".to_owned(), String::bye()];
    for driver in DRIVERS {
        let what = format!("easynet {driver:?} client, EasyNetwork server {args:?}");
        let ex = easynet_tcp(driver, server.addr, pki.as_ref(), &messages, 2);
        assert_eq!(ex.version, tls.version(), "{what}: TLS version");
        assert_eq!(
            ex.replies,
            vec![
                Reply::Msg("hello".to_owned()),
                Reply::Error("Eof".to_owned())
            ],
            "{what}"
        );
        assert!(ex.close < CLOSE_LIMIT, "{what}: close took {:?}", ex.close);
        server.peer.expect("connected");
        assert_eq!(server.requests(2), as_values(&messages), "{what}");
        server.peer.expect("disconnected");
    }
    server.stop();
}

#[test]
fn easynetwork_tcp_server_closes_first() {
    easynetwork_server_closes_first(Tls::Off, &[]);
}

#[test]
fn easynetwork_tls_server_closes_first() {
    easynetwork_server_closes_first(Tls::On, &[]);
}

/// Without close_notify (EasyNetwork's `ssl_standard_compatible=False`): easynet's clients
/// take the bare end of the TCP stream as the end of the connection, like EasyNetwork's own
/// clients in that mode.
#[test]
fn easynetwork_tls_server_not_standard_compatible_closes_first() {
    easynetwork_server_closes_first(Tls::On, &["--no-standard-compatible"]);
}

/// An easynet server that closes on "bye" (TLS: close_notify, then waits for the peer's):
/// EasyNetwork's clients get their reply to "hello", then EOF (`ConnectionAbortedError`),
/// and close promptly and quietly.
fn easynet_server_closes_first(tls: Tls) {
    let python = python_or_skip!();
    logs();
    let pki = tls.pki();
    let mut args: Vec<String> = vec!["--api".to_owned(), "sync,async".to_owned()];
    args.extend(["--expect".to_owned(), "2".to_owned()]);
    if let Some(pki) = &pki {
        args.extend(["--cafile".to_owned(), path_arg(&pki.ca)]);
        args.extend([
            "--ssl-shutdown-timeout".to_owned(),
            LIMIT.as_secs().to_string(),
        ]);
    }
    let messages = ["hello".to_owned(), String::bye()];
    for driver in DRIVERS {
        let what = format!("EasyNetwork clients against easynet {driver:?} tls={tls:?}");
        let server: RustServer<String> = easynet_tcp_server(driver, pki.as_ref());
        let done = easynetwork_client(python, Transport::Tcp, server.addr, &messages, &args);
        done.assert_clean();
        let sessions = sessions(&done);
        assert_eq!(sessions.len(), 2, "{what}: {:?}", done.events);
        for (api, replies, close) in &sessions {
            assert_eq!(replies, &vec![json!("hello")], "{what}: {api}");
            assert!(
                (0.0..CLOSE_LIMIT.as_secs_f64()).contains(close),
                "{what}: the {api} client's close took {close} s"
            );
        }
        let errors: Vec<&str> = done
            .of("error")
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            errors,
            ["ConnectionAbortedError", "ConnectionAbortedError"],
            "{what}: EasyNetwork's clients see EOF: {:?}",
            done.events
        );
        let peers: Vec<String> = server
            .seen_now()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Request(p, _) => Some(p),
                _ => None,
            })
            .collect();
        drop(server);
        let problems = problems_with(&peers);
        assert!(problems.is_empty(), "{what}: easynet logged {problems:#?}");
    }
}

#[test]
fn easynet_tcp_server_closes_first() {
    easynet_server_closes_first(Tls::Off);
}

#[test]
fn easynet_tls_server_closes_first() {
    easynet_server_closes_first(Tls::On);
}

// TLS 1.2: the same exchanges and closes when only 1.2 is on offer from the rustls end.

#[test]
fn easynet_clients_to_easynetwork_tls12() {
    easynet_clients_against_easynetwork(Transport::Tcp, Tls::V12, json_messages(), &[]);
}

#[test]
fn easynetwork_clients_to_easynet_tls12() {
    easynetwork_clients_against_easynet(Transport::Tcp, Tls::V12, json_messages(), &[]);
}

#[test]
fn easynetwork_tls12_server_closes_first() {
    easynetwork_server_closes_first(Tls::V12, &[]);
}

#[test]
fn easynet_tls12_server_closes_first() {
    easynet_server_closes_first(Tls::V12);
}

// ---------------------------------------------------------------------------------------
// Serializer details where the two libraries met a difference

/// A line that already ends with its separator is one message, not that line plus an empty
/// one (EasyNetwork's StringLineSerializer; easynet's `Lines` doubled the separator before).
#[test]
fn a_line_ending_with_its_separator_is_one_message_both_ways() {
    let python = python_or_skip!();
    let messages = ["a\n".to_owned(), "after".to_owned()];
    let decoded = ["a".to_owned(), "after".to_owned()];

    let server = PyServer::start(python, Transport::Tcp, "line", &[]);
    let ex = easynet_tcp(Driver::Tokio, server.addr, None, &messages, 2);
    assert_eq!(ex.replies, msgs(&decoded));
    server.peer.expect("connected");
    assert_eq!(
        server.requests(2),
        as_values(&decoded),
        "what EasyNetwork decoded"
    );
    server.peer.expect("disconnected");
    server.stop();

    let server: RustServer<String> = easynet_tcp_server(Driver::Mio, None);
    let done = easynetwork_client(python, Transport::Tcp, server.addr, &messages, &[]);
    done.assert_clean();
    assert_eq!(sessions(&done)[0].1, as_values(&decoded));
    let got: Vec<String> = server
        .seen_now()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Request(_, m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(got, decoded, "what easynet decoded");
}

/// EasyNetwork's line serializer is ASCII by default: easynet's UTF-8 lines reach it as a
/// parse error (the connection goes on); with `encoding="utf-8"` on the EasyNetwork side,
/// non-ASCII lines cross unchanged both ways.
#[test]
fn non_ascii_lines_need_utf8_on_the_easynetwork_side() {
    let python = python_or_skip!();
    let text = "héllo ✓ 🎉".to_owned();

    let server = PyServer::start(python, Transport::Tcp, "line", &[]);
    let ex = easynet_tcp(
        Driver::Tokio,
        server.addr,
        None,
        &[text.clone(), "after".into()],
        1,
    );
    assert_eq!(ex.replies, msgs(&["after".to_owned()]));
    server.peer.expect("connected");
    let err = server.peer.expect("parse_error");
    assert!(
        err["message"].as_str().unwrap().contains("ascii"),
        "EasyNetwork: {err}"
    );
    assert_eq!(server.requests(1), [json!("after")]);
    server.peer.expect("disconnected");
    server.stop();

    let utf8 = ["--encoding".to_owned(), "utf-8".to_owned()];
    for transport in [Transport::Tcp, Transport::Udp] {
        let server = PyServer::start(python, transport, "line", &utf8);
        for driver in DRIVERS {
            let replies = match transport {
                Transport::Tcp => {
                    easynet_tcp(driver, server.addr, None, std::slice::from_ref(&text), 1).replies
                }
                Transport::Udp => easynet_udp(driver, server.addr, std::slice::from_ref(&text), 1),
            };
            assert_eq!(
                replies,
                msgs(std::slice::from_ref(&text)),
                "{driver:?} {transport:?}"
            );
        }
        drop(server);

        let server: RustServer<String> = match transport {
            Transport::Tcp => easynet_tcp_server(Driver::Tokio, None),
            Transport::Udp => easynet_udp_server(Driver::Tokio),
        };
        let done = easynetwork_client(
            python,
            transport,
            server.addr,
            std::slice::from_ref(&text),
            &utf8,
        );
        done.assert_clean();
        assert_eq!(sessions(&done)[0].1, [json!(text)], "{transport:?}");
    }
}

/// EasyNetwork's JSON encoder writes NaN and ±Infinity (Python's `allow_nan=True`) and lone
/// surrogates as `\ud800` escapes; none is standard JSON (RFC 8259), and easynet's JSON
/// serializer (serde_json) refuses each one with a parse error, the connection or peer going
/// on with the next message.
#[test]
fn easynetwork_json_extensions_are_parse_errors_in_easynet() {
    let python = python_or_skip!();
    let messages = r#"[NaN, Infinity, -Infinity, "\ud800", {"after": true}]"#;
    for (transport, driver) in [
        (Transport::Tcp, Driver::Tokio),
        (Transport::Udp, Driver::Mio),
    ] {
        let server: RustServer<Value> = match transport {
            Transport::Tcp => easynet_tcp_server(driver, None),
            Transport::Udp => easynet_udp_server(driver),
        };
        let args = [
            "client".to_owned(),
            "--transport".to_owned(),
            transport.arg().to_owned(),
            "--serializer".to_owned(),
            "json".to_owned(),
            "--port".to_owned(),
            server.addr.port().to_string(),
            "--expect".to_owned(),
            "1".to_owned(),
            "--messages".to_owned(),
            messages.to_owned(),
        ];
        let done = Peer::start(python, "EasyNetwork json client", &args).finish();
        done.assert_clean();
        assert_eq!(
            sessions(&done)[0].1,
            [json!({"after": true})],
            "{transport:?}"
        );
        let seen = server.seen_now();
        let errors = seen
            .iter()
            .filter(|s| matches!(s, Seen::ParseError(..)))
            .count();
        assert_eq!(errors, 4, "{transport:?}: {seen:?}");
        assert!(
            matches!(
                seen.iter().rfind(|s| !matches!(s, Seen::Disconnected(_))),
                Some(Seen::Request(_, v)) if *v == json!({"after": true})
            ),
            "{transport:?}: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Differences left as they are (ignored; `cargo test -- --ignored` shows them failing)

/// EasyNetwork's StringLineSerializer writes nothing at all for an empty string
/// (behaviour.md §5.3), so its peer never sees that message; easynet's `Lines` writes an
/// empty line, which EasyNetwork's server decodes as a request "" (and then answers with
/// nothing, as it writes nothing for "").
#[test]
#[ignore = "difference kept: easynet sends an empty line for \"\" (a real message: e.g. the \
            end of headers), EasyNetwork sends no bytes at all"]
fn an_empty_line_is_not_sent() {
    let python = python_or_skip!();
    let server = PyServer::start(python, Transport::Tcp, "line", &[]);
    let messages = [String::new(), "after".to_owned()];
    let ex = easynet_tcp(Driver::Tokio, server.addr, None, &messages, 1);
    assert_eq!(ex.replies, msgs(&["after".to_owned()]));
    server.peer.expect("connected");
    assert_eq!(
        server.requests(1),
        [json!("after")],
        "EasyNetwork's server got an empty line"
    );
    server.stop();
}

/// Datagrams of EasyNetwork's line serializer carry no newline; on receipt it strips every
/// trailing separator and nothing else (LF mode: "b\n\n" is "b", "a\r" stays "a\r").
/// easynet's `Datagram::lines` strips one LF or CRLF and, after it, one CR.
#[test]
#[ignore = "difference kept: easynet's Datagram::lines strips one trailing LF and one CR \
            (documented, for line tools), EasyNetwork strips every trailing LF and keeps CR"]
fn datagram_lines_strip_trailing_separators_as_easynetwork() {
    let python = python_or_skip!();
    let server: RustServer<String> = easynet_udp_server(Driver::Tokio);
    let messages = ["a\r".to_owned(), "b\n\n".to_owned()];
    let done = easynetwork_client(python, Transport::Udp, server.addr, &messages, &[]);
    done.assert_clean();
    let got: Vec<String> = server
        .seen_now()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Request(_, m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["a\r", "b"], "what easynet decoded");
}

/// Python's integers have no size limit and EasyNetwork's JSON carries them as they are;
/// `serde_json::Value` (without serde_json's `arbitrary_precision`) holds integers beyond 64
/// bits as f64, so an easynet echo server answers 2^64 with 1.8446744073709552e19.
#[test]
#[ignore = "difference kept: serde_json::Value turns integers beyond 64 bits into f64; \
            a typed message (or serde_json's arbitrary_precision) is the application's choice"]
fn json_integers_beyond_64_bits_cross_unchanged() {
    let python = python_or_skip!();
    let server: RustServer<Value> = easynet_tcp_server(Driver::Tokio, None);
    let args = [
        "client".to_owned(),
        "--transport".to_owned(),
        "tcp".to_owned(),
        "--port".to_owned(),
        server.addr.port().to_string(),
        "--messages".to_owned(),
        "[18446744073709551616, -9223372036854775809]".to_owned(),
    ];
    let done = Peer::start(python, "EasyNetwork json client", &args).finish();
    done.assert_clean();
    let reprs: Vec<&str> = done
        .of("reply")
        .iter()
        .map(|e| e["repr"].as_str().unwrap())
        .collect();
    assert_eq!(reprs, ["18446744073709551616", "-9223372036854775809"]);
}
