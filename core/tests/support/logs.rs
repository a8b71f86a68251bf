//! A `tracing` subscriber that keeps every event (level and fields), for tests of what the
//! core logs. Install it with `tracing::subscriber::with_default` (the core logs on the
//! calling thread).

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// What the capture kept of one event: its level and its fields, `message` first.
#[derive(Debug, Clone)]
pub struct Log {
    pub level: Level,
    pub text: String,
}

/// Every event logged while it was the subscriber.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<Log>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formats like a real subscriber would, user `Display` included.
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let log = Log {
            level: *event.metadata().level(),
            text: fields.0,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(log);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// Everything kept so far.
    pub fn logs(&self) -> Vec<Log> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
