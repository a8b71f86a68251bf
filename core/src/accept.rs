//! Accept errors. TODO.
