//! [`Broadcast`]: one message to many connections, encoded once.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Pusher, TrySendError};
use crate::ConnId;
use crate::protocol::SerializeError;

/// What [`Broadcast`] does with a member whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Skip the message for that member and count it ([`Broadcast::dropped`]); the default.
    #[default]
    DropMessage,
    /// Reset that member's connection and remove it.
    Disconnect,
}

/// A set of connections that get the same messages: each message is encoded once, then
/// queued on each member without a lock held while encoding. Members are added with their
/// pusher (usually in `on_connection`) and removed by connection id (in
/// `on_disconnection`); closed members are removed as they are met.
///
/// ```
/// use easynet_core::push::{Broadcast, SlowConsumer};
/// let room: Broadcast<String> = Broadcast::new(SlowConsumer::DropMessage);
/// assert_eq!(room.send(&"nobody listens".to_owned()).unwrap(), 0);
/// ```
pub struct Broadcast<T> {
    members: RwLock<HashMap<ConnId, Pusher<T>>>,
    policy: SlowConsumer,
    dropped: AtomicU64,
}

impl<T> fmt::Debug for Broadcast<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("members", &self.len())
            .field("policy", &self.policy)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl<T> Default for Broadcast<T> {
    fn default() -> Self {
        Self::new(SlowConsumer::default())
    }
}

impl<T> Broadcast<T> {
    /// An empty set with a slow-consumer `policy`.
    pub fn new(policy: SlowConsumer) -> Self {
        Self {
            members: RwLock::new(HashMap::new()),
            policy,
            dropped: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Pusher<T>>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Pusher<T>>> {
        self.members.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member (replacing one with the same connection id).
    pub fn insert(&self, pusher: Pusher<T>) {
        self.write().insert(pusher.info().id, pusher);
    }

    /// Removes a member.
    pub fn remove(&self, conn: ConnId) {
        self.write().remove(&conn);
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True without members.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Messages skipped so far because a member's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends `message` to every member; returns how many queued it.
    pub fn send(&self, message: &T) -> Result<usize, SerializeError> {
        self.send_except(None, message)
    }

    /// Sends `message` to every member but `except` (the sender of a chat line, say);
    /// returns how many queued it.
    pub fn send_except(
        &self,
        except: Option<ConnId>,
        message: &T,
    ) -> Result<usize, SerializeError> {
        // Encoded once, with no lock held.
        let Some(first) = self.read().values().next().cloned() else {
            return Ok(0);
        };
        let frame = first.encode(message)?;
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (id, member) in self.read().iter() {
            if Some(*id) == except {
                continue;
            }
            match member.try_send_encoded(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => match self.policy {
                    SlowConsumer::DropMessage => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    SlowConsumer::Disconnect => {
                        member.abort();
                        gone.push(*id);
                    }
                },
                Err(_) => gone.push(*id),
            }
        }
        if !gone.is_empty() {
            let mut members = self.write();
            for id in gone {
                members.remove(&id);
            }
        }
        Ok(delivered)
    }
}
