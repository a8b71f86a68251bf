//! Stream connections. TODO.
