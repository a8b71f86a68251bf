//! Async stream handlers: `client.recv().await` is EasyNetwork's `yield`.
//!
//! The handler rules and the client live in the core
//! ([`easynet_core::stream::AsyncSession`]), as the portable handlers' do; this driver runs
//! them in the same connection task as portable handlers (`conn::drive`), supplying the
//! task's waker for what a handler awaits outside its connection.

pub use easynet_core::stream::{AsyncStreamHandler, RecvError, StreamPeer};
