//! Talks to `echo_server`: sends each argument (or each stdin line) and prints the replies.
//!
//! ```text
//! cargo run --example echo_client -- [--transport tcp|udp] [--framing json|line]
//!     [--host 127.0.0.1] [--port 9000] [--tls-ca PEM] MESSAGE...
//! ```
//!
//! With `--framing json` each message must be a JSON document, e.g. `'{"hello":"world"}'`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use easynet::protocol::{Datagram, DatagramClientProtocol, Stream, StreamClientProtocol};
use easynet::tokio::{AsyncTcpClient, AsyncUdpClient};

type BoxError = Box<dyn Error + Send + Sync>;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    transport: String,
    framing: String,
    addr: String,
    ca: Option<String>,
    messages: Vec<String>,
}

fn parse_args() -> Result<Args, BoxError> {
    let (mut transport, mut framing) = ("tcp".to_owned(), "json".to_owned());
    let (mut host, mut port, mut ca) = ("127.0.0.1".to_owned(), 9000u16, None);
    let mut messages = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--transport" => transport = value()?,
            "--framing" => framing = value()?,
            "--host" => host = value()?,
            "--port" => port = value()?.parse()?,
            "--tls-ca" => ca = Some(value()?),
            _ => messages.push(arg),
        }
    }
    if messages.is_empty() {
        messages = std::io::stdin().lines().collect::<Result<_, _>>()?;
    }
    Ok(Args {
        transport,
        framing,
        addr: format!("{host}:{port}"),
        ca,
        messages,
    })
}

fn tls_config(ca: &str) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn tcp<T, P>(
    args: &Args,
    protocol: P,
    parse: impl Fn(&str) -> Result<T, BoxError>,
) -> Result<(), BoxError>
where
    T: std::fmt::Display,
    P: StreamClientProtocol<Request = T, Response = T>,
{
    let mut client = match &args.ca {
        Some(ca) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            AsyncTcpClient::connect_tls(args.addr.as_str(), protocol, tls_config(ca)?, name).await?
        }
        None => AsyncTcpClient::connect(args.addr.as_str(), protocol).await?,
    };
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
    parse: impl Fn(&str) -> Result<T, BoxError>,
) -> Result<(), BoxError>
where
    T: std::fmt::Display,
    P: DatagramClientProtocol<Request = T, Response = T>,
{
    let mut client = AsyncUdpClient::connect(args.addr.as_str(), protocol).await?;
    for m in &args.messages {
        client.send(&parse(m)?).await?;
        println!("{}", client.recv_timeout(REPLY_TIMEOUT).await?);
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        type Json = serde_json::Value;
        let json = |s: &str| -> Result<Json, BoxError> { Ok(serde_json::from_str(s)?) };
        let text = |s: &str| -> Result<String, BoxError> { Ok(s.to_owned()) };
        match (args.transport.as_str(), args.framing.as_str()) {
            ("tcp", "json") => tcp(&args, Stream::<_, _, Json, Json>::json_lines(), json).await,
            ("tcp", "line") => tcp(&args, Stream::lines(), text).await,
            ("udp", "json") => udp(&args, Datagram::<_, Json, Json>::json(), json).await,
            ("udp", "line") => udp(&args, Datagram::lines(), text).await,
            (t, f) => Err(format!("unsupported transport/framing {t}/{f}").into()),
        }
    })
}
