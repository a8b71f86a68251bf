//! Datagram endpoint. TODO(helper C).
