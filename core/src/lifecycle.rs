//! Server lifecycle. TODO.
