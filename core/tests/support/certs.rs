//! rcgen certificates and rustls configs (ring provider) for in-memory and loopback TLS.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for "localhost" and its key.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn localhost() -> Self {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        Self {
            cert: c.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into()),
        }
    }

    /// A self-signed certificate for "localhost" whose subject (and issuer) is `cn`: a
    /// client trusting it sees another issuer than rcgen's default name (`UnknownIssuer`,
    /// not `BadSignature`).
    pub fn localhost_named(cn: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .unwrap();
        Arc::new(cfg)
    }

    /// A server config that speaks only TLS 1.2.
    pub fn server_config_tls12(&self) -> Arc<rustls::ServerConfig> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .unwrap();
        Arc::new(cfg)
    }

    /// A client config that trusts this identity.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    }
}

pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}
