//! Blocking ("standalone") easynet servers and clients on a mio event loop.

#![deny(missing_docs)]

pub use easynet_common::{BindError, ConfigError, EventSet, Host, ServerError};
pub use easynet_core as core;
