//! Talks to `echo_server`: sends each argument (or each stdin line) and prints the replies.
//!
//! ```text
//! cargo run --example echo_client -- [--transport tcp|udp] [--framing json|line]
//!     [--host 127.0.0.1] [--port 9000] [--tls] [--tls-ca PEM] [--server-name NAME] MESSAGE...
//! ```
//!
//! With `--framing json` each message must be a JSON document, e.g. `'{"hello":"world"}'`.
//! The TLS options need the `tls` feature. Errors are printed as one line, causes included
//! (`error: connecting to 127.0.0.1:9000: TLS handshake failed: invalid peer certificate:
//! UnknownIssuer`), and the exit status is 1.

#[path = "common/logging.rs"]
mod logging;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use easynet::aio::{AsyncTcpClient, AsyncUdpClient, TcpClientOptions};
use easynet::protocol::{Datagram, DatagramClientProtocol, Stream, StreamClientProtocol};

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
Sends each MESSAGE (or each line of stdin) to an echo server and prints the replies.

Usage: echo_client [OPTIONS] [MESSAGE]...

Options:
  --transport tcp|udp   [default: tcp]
  --framing json|line   JSON lines (each MESSAGE a JSON document) or text lines [default: json]
  --host HOST           [default: 127.0.0.1]
  --port PORT           [default: 9000]
  --tls                 TLS, trusting the system's CA certificates ($SSL_CERT_FILE or
                        the usual bundle paths) (feature tls)
  --tls-ca PEM          TLS, trusting the CA certificates in this PEM file instead
  --server-name NAME    the name the server's certificate must carry [default: HOST]
  -h, --help            print this help

Logs go to stderr; RUST_LOG sets the filter [default: info].
";

struct Args {
    udp: bool,
    json: bool,
    addr: String,
    /// TLS: the server name, and the CA file (none: the system's).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<(String, Option<String>)>,
    messages: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    use lexopt::prelude::*;
    let (mut udp, mut json) = (false, true);
    let (mut host, mut port, mut ca) = ("127.0.0.1".to_owned(), 9000u16, None);
    let (mut tls, mut server_name) = (false, None);
    let mut messages = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("transport") => {
                udp = match parser.value()?.string()?.as_str() {
                    "tcp" => false,
                    "udp" => true,
                    t => bail!("unknown transport {t:?} (tcp or udp)"),
                }
            }
            Long("framing") => {
                json = match parser.value()?.string()?.as_str() {
                    "json" => true,
                    "line" => false,
                    f => bail!("unknown framing {f:?} (json or line)"),
                }
            }
            Long("host") => host = parser.value()?.string()?,
            Long("port") => port = parser.value()?.parse()?,
            Long("tls") => tls = true,
            Long("tls-ca") => ca = Some(parser.value()?.string()?),
            Long("server-name") => server_name = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Value(m) => messages.push(m.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let tls = tls || ca.is_some() || server_name.is_some();
    if tls && !cfg!(feature = "tls") {
        bail!("TLS needs the tls feature: cargo run --example echo_client --features tls");
    }
    if tls && udp {
        bail!("TLS is for --transport tcp");
    }
    if messages.is_empty() {
        messages = std::io::stdin()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("reading messages from stdin: {e}"))?;
    }
    Ok(Args {
        udp,
        json,
        addr: format!("{host}:{port}"),
        tls: tls.then(|| (server_name.unwrap_or(host), ca)),
        messages,
    })
}

/// The system's CA bundle: `$SSL_CERT_FILE`, else the first of the usual paths.
#[cfg(feature = "tls")]
fn system_roots() -> anyhow::Result<String> {
    const BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        "/etc/ssl/ca-bundle.pem",
    ];
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(f.to_string_lossy().into_owned());
    }
    BUNDLES
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .context("no system CA bundle found: give one with --tls-ca PEM")
}

/// The application picks the rustls crypto provider; this example uses ring.
#[cfg(feature = "tls")]
fn tls_config(ca: Option<&str>) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = match ca {
        Some(ca) => ca.to_owned(),
        None => system_roots()?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).with_context(|| format!("reading {ca}"))? {
        roots.add(cert.with_context(|| format!("reading {ca}"))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

async fn tcp<T, P>(
    args: &Args,
    protocol: P,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<()>
where
    T: std::fmt::Display,
    P: StreamClientProtocol<Request = T, Response = T>,
{
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut options = TcpClientOptions::new().connect_timeout(REPLY_TIMEOUT);
    #[cfg(feature = "tls")]
    if let Some((name, ca)) = &args.tls {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("invalid server name {name:?}"))?;
        options = options.tls(tls_config(ca.as_deref())?, name);
    }
    let mut client = AsyncTcpClient::connect_with(args.addr.as_str(), protocol, options)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    for m in &args.messages {
        client.send(&parse(m)?).await?;
        println!("{}", client.recv_timeout(REPLY_TIMEOUT).await?);
    }
    client.close().await;
    Ok(())
}

async fn udp<T, P>(
    args: &Args,
    protocol: P,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<()>
where
    T: std::fmt::Display,
    P: DatagramClientProtocol<Request = T, Response = T>,
{
    let mut client = AsyncUdpClient::connect(args.addr.as_str(), protocol)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    for m in &args.messages {
        client.send(&parse(m)?).await?;
        println!("{}", client.recv_timeout(REPLY_TIMEOUT).await?);
    }
    Ok(())
}

/// The error and its causes in one line. A cause whose text its parent already shows (many
/// errors print their source in their own message) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let _flush_logs_at_exit = logging::init();
    // lexopt's messages already include their cause: print them once.
    let args = parse_args().map_err(|e| anyhow::anyhow!("{e} (see --help)"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        type Json = serde_json::Value;
        let json = |s: &str| -> anyhow::Result<Json> {
            serde_json::from_str(s).with_context(|| format!("{s:?} is not a JSON document"))
        };
        let text = |s: &str| -> anyhow::Result<String> { Ok(s.to_owned()) };
        match (args.udp, args.json) {
            (false, true) => tcp(&args, Stream::<_, _, Json, Json>::json_lines(), json).await,
            (false, false) => tcp(&args, Stream::lines(), text).await,
            (true, true) => udp(&args, Datagram::<_, Json, Json>::json(), json).await,
            (true, false) => udp(&args, Datagram::lines(), text).await,
        }
    })
}
