//! The durable quarantine: messages a rule or filter stopped, kept for the operator to
//! search, read, release, delete, or let expire.
//!
//! # Durability contract
//! - [`Quarantine::store`] returns `Ok` only when the entry survives `kill -9` and a power
//!   cut: the raw message is written to `tmp/ID.eml`, fsynced, renamed to `messages/ID.eml`
//!   and the directory fsynced; then its record (`queue::Envelope` and [`Why`]) likewise to
//!   `messages/ID.json`. The pipeline acknowledges (250) after that, never before.
//! - The files are the truth. `ID.json` is the commit point of an entry: an `ID.eml` without
//!   its record is a store cut short (never acknowledged) or a delete cut short, and is
//!   removed at open. A record whose message is missing is reported and left out.
//! - Every change to an entry (a release, a release in progress) rewrites its record the same
//!   way (tmp, fsync, rename, fsync dir) before it is reported done.
//! - `index.sqlite` (SQLite, not synced) only serves searches. At open it is compared with
//!   the records (each carries a generation number) and repaired: missing rows added, stale
//!   rows rewritten, rows without a record dropped; an unreadable index is rebuilt whole.
//!
//! # Release, exactly once
//! A release first records durably which recipients it releases and the queue id its copy
//! will get (`pending`), then commits that copy to the spool (skipping every filter: it goes
//! straight to the queue, as `Session::commit` does after the pipeline), then records the
//! release as done. A recipient released once is refused a second time. A crash between the
//! two record writes leaves `pending`; at the next start [`Quarantine::reconcile`] looks for
//! that queue id in the recovered queue: found, the release is completed; not found, the
//! copy was either never committed or committed *and already delivered* in the few
//! milliseconds before the crash. Bulwark cannot tell those apart, so the entry returns to
//! `quarantined` with a warning in the log: releasing it again can then duplicate the
//! message in that one window, and nothing is ever lost.
//!
//! # Layout of `dir`
//! `messages/ID.eml` (the message as it arrived), `messages/ID.json` (its [`Record`]),
//! `tmp/` (emptied at open), `index.sqlite`. IDs are the queue id of the `250 ... queued as`
//! reply, so the quarantine id is the id the sender was given.

mod files;
mod index;
mod release;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::config::Direction;
use crate::config::QuarantineConfig;
use crate::queue::{Envelope, QueueId, SpoolError};

pub use index::Filter;
pub use release::{Released, Requeue};

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("quarantine I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("quarantine index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("quarantine record {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no message {0} in the quarantine")]
    NotFound(QueueId),
    #[error("message {0} is already in the quarantine")]
    Exists(QueueId),
    #[error("message {0} was already released to every recipient asked for")]
    AlreadyReleased(QueueId),
    #[error("{address} is not a recipient of quarantined message {id}")]
    NotARecipient { id: QueueId, address: String },
    #[error("releasing {id}: {source}")]
    Spool { id: QueueId, source: SpoolError },
    #[error("quarantine task: {0}")]
    Task(String),
}

impl QuarantineError {
    /// True when the operator named something that is not there (not a failure of the store).
    pub fn is_not_found(&self) -> bool {
        matches!(self, QuarantineError::NotFound(_))
    }

    /// True when the disk is full: the SMTP side answers 452 4.3.1 instead of 451.
    pub fn is_disk_full(&self) -> bool {
        let full = |e: &std::io::Error| matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT);
        match self {
            QuarantineError::Io { source, .. } => full(source),
            QuarantineError::Spool { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }
}

/// Why a message is in the quarantine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Why {
    /// The stage that decided: a rule's name or a filter's (`antivirus`, `milter:x`).
    pub stage: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub direction: Direction,
}

/// One release of an entry's copy into the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub recipients: Vec<String>,
    /// The id of the queued copy.
    pub queue_id: String,
    pub at: u64,
}

/// The truth about one entry, as `messages/ID.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub envelope: Envelope,
    pub why: Why,
    pub quarantined_at: u64,
    /// Bytes of `ID.eml`.
    pub size: u64,
    #[serde(default)]
    pub releases: Vec<Release>,
    /// A release that was started and not yet recorded as done (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Release>,
    /// Bumped by every rewrite; the index keeps it to notice stale rows.
    #[serde(default)]
    pub generation: u64,
}

/// What the operator sees of an entry's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Quarantined,
    Releasing,
    PartlyReleased,
    Released,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Quarantined => "quarantined",
            State::Releasing => "releasing",
            State::PartlyReleased => "partly-released",
            State::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Quarantined,
            State::Releasing,
            State::PartlyReleased,
            State::Released,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl Record {
    pub fn queue_id(&self) -> Option<QueueId> {
        self.id.parse().ok()
    }

    /// Original recipients that no release has covered yet.
    pub fn unreleased(&self) -> Vec<String> {
        self.envelope
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .filter(|a| !self.is_released_to(a))
            .collect()
    }

    fn is_released_to(&self, address: &str) -> bool {
        self.releases
            .iter()
            .flat_map(|r| &r.recipients)
            .any(|r| r.eq_ignore_ascii_case(address))
    }

    pub fn state(&self) -> State {
        if self.pending.is_some() {
            State::Releasing
        } else if self.releases.is_empty() {
            State::Quarantined
        } else if self.unreleased().is_empty() {
            State::Released
        } else {
            State::PartlyReleased
        }
    }

    /// The row the operator lists and searches (`bulwarkctl quarantine list --json`).
    pub fn entry(&self) -> Entry {
        Entry {
            id: self.id.clone(),
            sender: self.envelope.sender.clone(),
            recipients: self
                .envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
            subject: self.envelope.subject.clone(),
            reason: self.why.reason.clone(),
            stage: self.why.stage.clone(),
            score: self.why.score,
            direction: self.why.direction,
            received_at: self.envelope.received_at,
            quarantined_at: self.quarantined_at,
            size: self.size,
            state: self.state(),
        }
    }
}

/// An entry as listed: the fields of the JSON contract of `quarantine list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub reason: String,
    pub stage: String,
    pub score: Option<f64>,
    pub direction: Direction,
    pub received_at: u64,
    pub quarantined_at: u64,
    pub size: u64,
    pub state: State,
}

/// Writes the raw message into the open temporary file (on a blocking thread).
pub type WriteContent = Box<dyn FnOnce(&mut std::fs::File) -> std::io::Result<()> + Send>;

pub struct Quarantine {
    files: files::Files,
    index: Mutex<index::Index>,
    retention: Duration,
    /// Serialises the changes of existing entries (release, delete, purge).
    changing: tokio::sync::Mutex<()>,
}

impl Quarantine {
    /// Opens (creating if needed) the store, cleans what a crash left, and repairs the index.
    pub fn open(config: &QuarantineConfig) -> Result<Quarantine, QuarantineError> {
        let files = files::Files::open(&config.dir)?;
        let records = files.recover()?;
        let index = index::Index::open(&config.dir.join("index.sqlite"), &records)?;
        log::info!(
            "quarantine {}: {} message(s)",
            config.dir.display(),
            records.len()
        );
        Ok(Quarantine {
            files,
            index: Mutex::new(index),
            retention: config.retention,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// Stores a message durably (see the module doc); `Ok` means it may be acknowledged.
    pub async fn store(
        &self,
        id: QueueId,
        envelope: &Envelope,
        why: Why,
        write_content: WriteContent,
    ) -> Result<(), QuarantineError> {
        let record = Record {
            id: id.to_string(),
            envelope: envelope.clone(),
            why,
            quarantined_at: crate::queue::unix_now(),
            size: 0,
            releases: Vec::new(),
            pending: None,
            generation: 0,
        };
        let files = self.files.clone();
        let record = blocking(move || files.store(record, write_content)).await?;
        self.index_upsert(&record);
        log::info!(
            queue_id:% = id, sender = record.envelope.sender.as_str(), stage = record.why.stage.as_str(),
            reason = record.why.reason.as_str(), direction = record.why.direction.as_str();
            "quarantined: id={id} from=<{}> nrcpt={} size={} stage={} reason={}",
            record.envelope.sender, record.envelope.recipients.len(), record.size,
            record.why.stage, record.why.reason,
        );
        Ok(())
    }

    /// Entries matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>, QuarantineError> {
        self.lock_index().search(filter)
    }

    /// The record of `id`, read from its file.
    pub fn get(&self, id: QueueId) -> Result<Option<Record>, QuarantineError> {
        self.files.read_record(id)
    }

    /// The message exactly as it arrived.
    pub fn raw(&self, id: QueueId) -> Result<Vec<u8>, QuarantineError> {
        self.files.read_message(id)
    }

    /// Removes an entry for good.
    pub async fn delete(&self, id: QueueId) -> Result<(), QuarantineError> {
        let _changing = self.changing.lock().await;
        let files = self.files.clone();
        blocking(move || files.remove(id)).await?;
        self.index_remove(id);
        log::info!(queue_id:% = id; "quarantine: deleted {id}");
        Ok(())
    }

    /// Deletes every entry quarantined more than `retention` before `now` (seconds since the
    /// epoch); returns how many.
    pub async fn purge_expired(&self, now: u64) -> Result<usize, QuarantineError> {
        let cutoff = now.saturating_sub(self.retention.as_secs());
        let expired = self.lock_index().quarantined_before(cutoff)?;
        let _changing = self.changing.lock().await;
        let mut purged = 0;
        for id in expired {
            let files = self.files.clone();
            match blocking(move || files.remove(id)).await {
                Ok(()) | Err(QuarantineError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            self.index_remove(id);
            purged += 1;
        }
        if purged > 0 {
            log::info!(purged = purged; "quarantine: purged {purged} expired message(s)");
        }
        Ok(purged)
    }

    /// How often the daemon should call `purge_expired`: a tenth of the retention, between a
    /// second and an hour, so an entry outlives its retention by at most that.
    pub fn purge_interval(&self) -> Duration {
        (self.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, index::Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The files are the truth: an index write that fails is logged, and repaired at the
    /// next open.
    fn index_upsert(&self, record: &Record) {
        if let Err(e) = self.lock_index().upsert(record) {
            log::error!(queue_id = record.id.as_str(); "quarantine index: {e} (repaired at next start)");
        }
    }

    fn index_remove(&self, id: QueueId) {
        if let Err(e) = self.lock_index().remove(id) {
            log::error!(queue_id:% = id; "quarantine index: {e} (repaired at next start)");
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, QuarantineError> + Send + 'static,
) -> Result<T, QuarantineError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(QuarantineError::Task(join.to_string())))
}

#[cfg(test)]
mod tests;
