//! TLS sessions over rustls 0.23: one type for both sides. TODO(helper B): implement.

use std::sync::Arc;

use bytes::BytesMut;

/// What the handshake settled, for handlers and logs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The negotiated ALPN protocol.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The SNI name the client asked for (server side).
    pub server_name: Option<String>,
    /// The peer's certificate chain, if it sent one.
    pub peer_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A TLS failure; the connection cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls rejected the peer's data or the configuration.
    #[error("TLS error: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One TLS session (server or client) driven with bytes in and bytes out.
pub struct TlsSession {
    _conn: rustls::Connection,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession").finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A server session.
    pub fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, TlsError> {
        let _ = config;
        todo!()
    }

    /// A client session for `server_name`.
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, TlsError> {
        let _ = (config, server_name);
        todo!()
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        todo!()
    }

    /// Feeds ciphertext read from the socket; appends decrypted plaintext to `plaintext`.
    ///
    /// On error an alert may be queued: call [`write_ciphertext`](Self::write_ciphertext)
    /// once more before closing.
    pub fn read_ciphertext(
        &mut self,
        data: &[u8],
        plaintext: &mut BytesMut,
    ) -> Result<(), TlsError> {
        let _ = (data, plaintext);
        todo!()
    }

    /// Queues plaintext for sending (encrypted by the next `write_ciphertext`).
    pub fn write_plaintext(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }

    /// Appends every pending TLS record to `out`.
    pub fn write_ciphertext(&mut self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }

    /// Queues a close_notify alert.
    pub fn send_close_notify(&mut self) {
        todo!()
    }

    /// True once the peer's close_notify was received.
    pub fn peer_closed(&self) -> bool {
        todo!()
    }

    /// What the handshake settled.
    pub fn info(&self) -> TlsInfo {
        todo!()
    }
}
