//! rcgen certificates and rustls configs for in-memory TLS. TODO(helper B).
