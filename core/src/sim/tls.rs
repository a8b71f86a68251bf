//! Certificates for simulated TLS (feature `sim-tls`): a self-signed identity for
//! `localhost`, generated with rcgen, as the configs [`StreamSimBuilder::tls`] takes.
//!
//! The application picks the crypto provider (the library enables none):
//!
//! ```
//! use std::sync::Arc;
//! use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
//! use easynet_core::protocol::Stream;
//! use easynet_core::sim::{StreamSim, tls};
//!
//! struct Echo;
//! impl StreamHandler for Echo {
//!     type Request = String;
//!     type Response = String;
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
//!         if let Received::Request(line) = r { cx.send(&line)?; }
//!         Ok(Next::recv())
//!     }
//! }
//!
//! let provider = Arc::new(rustls::crypto::ring::default_provider());
//! let (server, client, name) = tls::self_signed(provider).unwrap();
//! let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo)
//!     .tls(server, client, name)
//!     .build();
//! let c = sim.connect();
//! sim.send(c, &"over TLS".to_owned());
//! assert_eq!(sim.replies(c), ["over TLS"]);
//! ```
//!
//! [`StreamSimBuilder::tls`]: super::StreamSimBuilder::tls

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// Why [`self_signed`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimTlsError {
    /// The certificate could not be generated.
    #[error("cannot generate the certificate: {0}")]
    Certificate(rcgen::Error),
    /// rustls refused the configuration (the provider lacks what it needs, say).
    #[error("invalid TLS configuration: {0}")]
    Config(rustls::Error),
}

/// A fresh self-signed certificate for `localhost`: a server config serving it, a client
/// config trusting it, and the name to connect to, all with `provider`.
pub fn self_signed(
    provider: Arc<CryptoProvider>,
) -> Result<
    (
        Arc<rustls::ServerConfig>,
        Arc<rustls::ClientConfig>,
        ServerName<'static>,
    ),
    SimTlsError,
> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    Ok((Arc::new(server), Arc::new(client), name))
}

// The causes are in the messages, so they are not `source`s (a chain printer would
// print them twice): `From` by hand instead of `#[from]`.
impl From<rcgen::Error> for SimTlsError {
    fn from(e: rcgen::Error) -> Self {
        SimTlsError::Certificate(e)
    }
}

impl From<rustls::Error> for SimTlsError {
    fn from(e: rustls::Error) -> Self {
        SimTlsError::Config(e)
    }
}
