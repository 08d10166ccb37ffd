//! The durable spool and the in-memory queue index.
//!
//! # Contract
//! A message is acknowledged (250) only after [`spool::Draft::commit`] returned `Ok`: by then its
//! content and envelope are in one file under `queue/` and a file-system sync covering that file
//! and its directory entry has completed. `kill -9` at any moment therefore loses nothing
//! acknowledged; whatever was not acknowledged is either absent or detectably incomplete and is
//! discarded on recovery, so nothing half-written is ever delivered.
//!
//! # Layout of `spool_dir`
//! - `tmp/ID`     drafts being received; never valid after a restart (emptied on start).
//! - `queue/ID`   committed messages: `BWQ1`, content, envelope (JSON), 24-byte trailer.
//! - `queue/ID.st` an append-only log of state changes (hold, release, per-recipient outcomes);
//!   a torn last line is ignored on replay.
//!
//! # Why it is fast and still durable
//! One fsync per message caps a spool at the disk's flush rate. Instead, sessions write and
//! rename their files without syncing and then wait on a shared committer thread, which issues
//! one `syncfs(2)` for every file renamed since its previous sync (group commit). Under load,
//! dozens of messages share each sync; idle, a lone message pays for one sync, as it would with
//! fsync. Small messages are buffered and written with a single `write` at commit time, so the
//! data path costs create + write + rename per message. See `commit.rs` for the batching rule.
//! (`spool_sync = "fsync"` instead has each session fdatasync its own file, concurrently so the
//! journal merges them, and the committer sync the directory once per batch.)
//!
//! Measured (bench/RESULTS.md): the sync itself averages ~1 ms per batch here; what costs is the
//! per-message create + write + rename contending with the journal commits (p50 ~2 ms). A
//! preallocated write-ahead segment would take that metadata off the critical path.

mod commit;
mod envelope;
mod id;
mod index;
pub mod journal;
pub mod spool;
mod state;

pub use commit::SyncMode;
pub use envelope::{unix_now, BodyType, DsnRet, Envelope, Recipient, RecipientOutcome};
pub use id::QueueId;
pub use index::{QueueEntry, QueueIndex, QueueState};
pub use spool::{Content, Draft, Spool, SpoolError};
pub use state::StateRecord;
