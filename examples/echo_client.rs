//! Talks to `echo_server`: sends each argument (or each stdin line) and prints the replies.
//!
//! ```text
//! cargo run --example echo_client -- [--transport tcp|udp] [--framing json|line]
//!     [--host 127.0.0.1] [--port 9000] [--tls-ca PEM] MESSAGE...
//! ```
//!
//! With `--framing json` each message must be a JSON document, e.g. `'{"hello":"world"}'`.
//! `--tls-ca` needs the `tls` feature.

use std::time::Duration;

use anyhow::{Context, bail};
use easynet::protocol::{Datagram, DatagramClientProtocol, Stream, StreamClientProtocol};
use easynet::tokio::{AsyncTcpClient, AsyncUdpClient};

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
Sends each MESSAGE (or each line of stdin) to an echo server and prints the replies.

Usage: echo_client [OPTIONS] [MESSAGE]...

Options:
  --transport tcp|udp   [default: tcp]
  --framing json|line   JSON lines (each MESSAGE a JSON document) or text lines [default: json]
  --host HOST           [default: 127.0.0.1]
  --port PORT           [default: 9000]
  --tls-ca PEM          TLS, trusting this CA certificate; the server name is localhost
                        (feature tls)
  -h, --help            print this help

Logs go to stderr; RUST_LOG sets the filter [default: info].
";

struct Args {
    udp: bool,
    json: bool,
    addr: String,
    ca: Option<String>,
    messages: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    use lexopt::prelude::*;
    let (mut udp, mut json) = (false, true);
    let (mut host, mut port, mut ca) = ("127.0.0.1".to_owned(), 9000u16, None);
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
            Long("tls-ca") => ca = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Value(m) => messages.push(m.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if ca.is_some() && !cfg!(feature = "tls") {
        bail!("TLS needs the tls feature: cargo run --example echo_client --features tls");
    }
    if ca.is_some() && udp {
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
        ca,
        messages,
    })
}

/// The application picks the rustls crypto provider; this example uses ring.
#[cfg(feature = "tls")]
fn tls_config(ca: &str) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
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
    let mut client = match &args.ca {
        #[cfg(feature = "tls")]
        Some(ca) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            AsyncTcpClient::connect_tls(args.addr.as_str(), protocol, tls_config(ca)?, name).await
        }
        _ => AsyncTcpClient::connect(args.addr.as_str(), protocol).await,
    }
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
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
