//! Message tracking: every message's life as structured events in a local store, and the
//! timeline `bulwarkctl track` prints.
//!
//! # Contract
//! - [`Tracker::record`] never blocks and never fails its caller: the event goes into a bounded
//!   channel to one writer thread; when the channel is full the event is dropped and counted
//!   (`bulwarkctl status` shows the count). Tracking is history, not mail: losing an event
//!   never loses or delays a message.
//! - The writer inserts in batched transactions (prepared statements) into SQLite in WAL
//!   mode, so a timeline query reads while the writer writes.
//! - Events of one producer keep their order: what a session records before it submits a
//!   message for delivery comes before every delivery event of that message.
//! - Events older than `[tracking] retention` are purged when the tracker opens and hourly,
//!   in bounded pieces between batches (a large purge never leaves the channel unread).
//! - A timeline query first waits (bounded) until everything recorded before it is written.
//!
//! # Keys
//! An event names its message by queue id and, when known, by Message-ID (the link across a
//! split and to the same message on a second Bulwark node). Messages made from another
//! (split, copy, generated notice) name it in their `from` field.
//!
//! Recording points: `received` and `queued` at the session's commit
//! ([`received_and_queued`]), attempts and outcomes in `deliver::outcome`, operator actions
//! in `admin::server`, verdicts, quarantine and splits in the content pipeline.

mod event;
mod query;
mod store;
mod summary;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use event::{normalise_address, normalise_message_id, now_ms, Event, EventKind};
pub use query::{Filter, Query, QueryError, Timeline, TimelineEntry, MAX_EVENTS};
pub use store::{Store, StoreError, DATABASE};
pub use summary::{Count, Summary};

use crate::config::TrackingConfig;
use crate::queue::{Envelope, QueueId};
use writer::Command;

/// Events waiting for the writer; beyond this they are dropped (about 20 s of a relay at
/// 5,000 messages/s with 4 events each would never get there unless the disk stalls).
pub const CHANNEL_CAPACITY: usize = 65_536;

/// How long a query waits for the writer to catch up before it reads anyway.
const QUERY_FLUSH_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("tracking directory {dir}: {source}")]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("tracking store in {dir}: {source}")]
    Open { dir: PathBuf, source: StoreError },
    #[error("tracking writer thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the writer has done, for `bulwarkctl status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub recorded: AtomicU64,
    pub written: AtomicU64,
    /// The channel was full.
    pub dropped: AtomicU64,
    /// Written in a batch the store refused (disk full, corrupt file).
    pub write_failures: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub recorded: u64,
    pub written: u64,
    pub dropped: u64,
    pub write_failures: u64,
}

pub struct Tracker {
    inbox: SyncSender<Command>,
    counters: Arc<Counters>,
    reader: Mutex<Store>,
    dir: PathBuf,
}

impl Tracker {
    /// Creates the directory if needed, opens the store and starts the writer.
    pub fn open(config: &TrackingConfig) -> Result<Tracker, TrackError> {
        Self::open_with(&config.dir, config.retention, CHANNEL_CAPACITY)
    }

    pub fn open_with(
        dir: &Path,
        retention: Duration,
        capacity: usize,
    ) -> Result<Tracker, TrackError> {
        let (tracker, store, commands) = Self::unstarted(dir, capacity)?;
        writer::spawn(store, commands, tracker.counters.clone(), retention)
            .map_err(TrackError::Spawn)?;
        Ok(tracker)
    }

    /// The tracker and the writer's half, before the writer runs.
    fn unstarted(
        dir: &Path,
        capacity: usize,
    ) -> Result<(Tracker, Store, mpsc::Receiver<Command>), TrackError> {
        std::fs::create_dir_all(dir).map_err(|source| TrackError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
        let open = |source| TrackError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        let store = Store::open_for_writing(dir).map_err(open)?;
        let reader = Store::open(dir).map_err(open)?;
        let (inbox, commands) = mpsc::sync_channel(capacity);
        let tracker = Tracker {
            inbox,
            counters: Arc::new(Counters::default()),
            reader: Mutex::new(reader),
            dir: dir.to_path_buf(),
        };
        Ok((tracker, store, commands))
    }

    /// Hands `event` to the writer; drops (and counts) it if the writer is behind.
    pub fn record(&self, event: Event) {
        Counters::bump(&self.counters.recorded);
        match self.inbox.try_send(Command::Record(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped.is_multiple_of(10_000) {
                    log::warn!(dropped; "tracking: writer behind, {dropped} event(s) dropped so far");
                }
            }
            Err(TrySendError::Disconnected(_)) => Counters::bump(&self.counters.write_failures),
        }
    }

    /// Waits up to `wait` until every event recorded before the call is written.
    pub fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let (done, written) = mpsc::channel();
        let mut command = Command::Flush(done);
        loop {
            match self.inbox.try_send(command) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    command = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        written.recv_timeout(left).is_ok()
    }

    /// The timeline `query` asks for (blocking: call it off the async runtime).
    pub fn timeline(&self, query: &Query) -> Result<Timeline, TrackError> {
        let filter = query.filter(now_ms())?;
        self.flush(QUERY_FLUSH_WAIT);
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(reader.timeline(&filter, MAX_EVENTS)?)
    }

    /// The report totals between `from_ms` and `to_ms` (blocking: call it off the runtime).
    pub fn summary(&self, from_ms: i64, to_ms: i64, top: usize) -> Result<Summary, TrackError> {
        self.flush(QUERY_FLUSH_WAIT);
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(summary::summarise(&reader, from_ms, to_ms, top)?)
    }

    pub fn status(&self) -> Status {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Status {
            dir: self.dir.clone(),
            recorded: load(&self.counters.recorded),
            written: load(&self.counters.written),
            dropped: load(&self.counters.dropped),
            write_failures: load(&self.counters.write_failures),
        }
    }
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the client sent, with the envelope so the message is found by sender and recipient.
pub fn received_event(id: QueueId, envelope: &Envelope, size: u64) -> Event {
    let received = EventKind::Received {
        client: envelope.client_addr.to_string(),
        helo: envelope.helo.clone(),
        tls: envelope.tls.clone(),
        auth_user: envelope.auth_user.clone(),
        size,
    };
    let recipients = envelope.recipients.iter().map(|r| r.address.as_str());
    Event::new(id, envelope.message_id.as_deref(), received)
        .with_envelope(&envelope.sender, recipients)
}

/// The session's two events once a message is safe in the spool: `received`, then `queued`.
pub fn received_and_queued(tracker: &Tracker, id: QueueId, envelope: &Envelope, size: u64) {
    tracker.record(received_event(id, envelope, size));
    let queued = EventKind::Queued {
        recipients: envelope.recipients.len(),
    };
    tracker.record(Event::new(id, envelope.message_id.as_deref(), queued));
}

#[cfg(test)]
mod tests;
