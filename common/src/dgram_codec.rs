//! [`DatagramCodec`]: the protocol side of a datagram client, the same for every driver.

use std::io;

use bytes::BytesMut;
use easynet_core::protocol::DatagramClientProtocol;

use crate::ClientError;

/// Encodes a datagram client's requests into a buffer it keeps (a send does not allocate)
/// and decodes what arrives in its receive buffer; the driver moves the bytes.
///
/// ```
/// use easynet_common::DatagramCodec;
/// use easynet_core::protocol::Datagram;
///
/// let mut codec = DatagramCodec::new(Datagram::lines());
/// assert_eq!(codec.encode(&"hi".to_owned()).unwrap(), b"hi");
/// codec.recv_buf()[..2].copy_from_slice(b"ok");
/// assert_eq!(codec.decode(2).unwrap(), "ok");
/// ```
#[derive(Debug)]
pub struct DatagramCodec<P> {
    protocol: P,
    /// Where the driver receives a datagram (the largest a datagram can be).
    buf: Vec<u8>,
    /// The datagram being sent, kept between sends.
    out: BytesMut,
}

impl<P: DatagramClientProtocol> DatagramCodec<P> {
    /// A codec for `protocol` with a 64 KiB receive buffer.
    pub fn new(protocol: P) -> Self {
        Self {
            protocol,
            buf: vec![0; 64 * 1024],
            out: BytesMut::new(),
        }
    }

    /// `request`'s datagram, to send as one.
    pub fn encode(&mut self, request: &P::Request) -> Result<&[u8], ClientError> {
        self.out.clear();
        self.protocol.encode_request(request, &mut self.out)?;
        Ok(&self.out)
    }

    /// The buffer to receive the next datagram into.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The response in the first `n` bytes of [`recv_buf`](Self::recv_buf).
    pub fn decode(&self, n: usize) -> Result<P::Response, ClientError> {
        Ok(self
            .protocol
            .decode_response(BytesMut::from(&self.buf[..n]))?)
    }
}

/// The error of an address asked of a closed client.
pub fn client_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client is closed")
}
