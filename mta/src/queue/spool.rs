//! Spool files: drafts, commit, recovery, reading back, state logs. See the module doc of
//! `queue` for the contract; this file holds the on-disk format of a message (a "spool
//! image", kept either as its own file `queue/ID` or as a journal record, see journal.rs):
//!
//! ```text
//! "BWQ1" | content (CRLF lines, unstuffed) | envelope (JSON) | trailer (24 bytes)
//! trailer = content_len u64 LE | envelope_len u32 LE | content_crc32 u32 LE
//!         | envelope_crc32 u32 LE | "BWQE"
//! ```
//! A file is valid when its size equals 4 + content_len + envelope_len + 24, the magic numbers
//! match and the envelope CRC matches; the content CRC is checked whenever content is read.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::commit::{Committer, SyncMode};
use super::envelope::Envelope;
use super::id::{IdGenerator, QueueId};
use super::journal::{self, Journal};
use super::state::{self, StateRecord};

const MAGIC: &[u8; 4] = b"BWQ1";
const TRAILER_MAGIC: &[u8; 4] = b"BWQE";
const TRAILER_LEN: u64 = 24;
/// Content beyond this is streamed to the draft file instead of being held in memory.
const DRAFT_BUFFER: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
}

impl SpoolError {
    /// True when the disk is full: the SMTP side answers 452 4.3.1 instead of 451.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT))
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A message found in the spool at start.
#[derive(Debug)]
pub struct Recovered {
    pub id: QueueId,
    pub envelope: Envelope,
    pub content_len: u64,
    pub records: Vec<StateRecord>,
}

struct Paths {
    tmp: PathBuf,
    queue: PathBuf,
}

impl Paths {
    /// `queue/ID`: a message with a file of its own.
    fn message(&self, id: QueueId) -> PathBuf {
        self.queue.join(id.to_string())
    }

    /// `queue/ID.st`: the message's state log.
    fn state_log(&self, id: QueueId) -> PathBuf {
        self.queue.join(format!("{id}.st"))
    }

    /// The replayed state log of `id` (empty when it has none). A log that cannot be read, or
    /// with a damaged line before its last, is counted in `problems` and logged; its message
    /// is recovered held, so that neither a hold nor a delivered recipient is lost silently:
    /// the operator looks at it and releases it.
    fn read_state_log(&self, id: QueueId, problems: &mut usize) -> Vec<StateRecord> {
        let path = self.state_log(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                log::error!(queue_id:% = id, error:% = e;
                    "spool: state log {} unreadable at recovery: {e}; {id} is held", path.display());
                *problems += 1;
                return vec![StateRecord::Hold];
            }
        };
        let (mut records, damaged) = state::replay_checked(&bytes);
        if damaged > 0 {
            log::error!(queue_id:% = id, damaged = damaged;
                "spool: state log {} has {damaged} damaged line(s); {id} is held", path.display());
            *problems += 1;
            records.push(StateRecord::Hold);
        }
        records
    }
}

pub struct Spool {
    paths: Arc<Paths>,
    ids: IdGenerator,
    committer: Committer,
    journal: Arc<Journal>,
    mode: SyncMode,
    /// Tells the migration thread to stop.
    closed: Arc<AtomicBool>,
    /// State logs found unreadable or damaged at recovery (`bulwarkctl status`).
    recovery_problems: usize,
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Spool {
    /// Bytes the daemon may still use on the spool's file system (statvfs: blocks available
    /// to unprivileged users times the fragment size).
    pub fn free_space(&self) -> Result<u64, SpoolError> {
        let queue = &self.paths.queue;
        let stat = nix::sys::statvfs::statvfs(queue.as_path())
            .map_err(|errno| io_at(queue)(io::Error::from(errno)))?;
        Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }

    /// Bytes available to the daemon and the file system's size, for the console's alerts.
    pub fn file_system(&self) -> Result<(u64, u64), SpoolError> {
        let queue = &self.paths.queue;
        let stat = nix::sys::statvfs::statvfs(queue.as_path())
            .map_err(|errno| io_at(queue)(io::Error::from(errno)))?;
        let fragment = stat.fragment_size();
        Ok((
            stat.blocks_available().saturating_mul(fragment),
            stat.blocks().saturating_mul(fragment),
        ))
    }

    /// Opens (creating if needed) the spool under `root`, discards drafts, and returns every
    /// valid committed message. Invalid files (never acknowledged) go to `corrupt/`.
    pub fn open(root: &Path, mode: SyncMode) -> Result<(Spool, Vec<Recovered>), SpoolError> {
        let paths = Paths {
            tmp: root.join("tmp"),
            queue: root.join("queue"),
        };
        for dir in [&paths.tmp, &paths.queue] {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        clear_drafts(&paths.tmp)?;
        let journal_dir = root.join("journal");
        let (journal, found) = Journal::open(&journal_dir).map_err(io_at(&journal_dir))?;
        let journaled: HashSet<QueueId> = found.messages.iter().map(|(id, ..)| *id).collect();
        let mut problems = 0;
        let mut recovered = recover(root, &paths, &found.done, &journaled, &mut problems)?;
        let files: HashSet<QueueId> = recovered.iter().map(|m| m.id).collect();
        for (id, image, mut placed) in found.messages {
            if files.contains(&id) {
                // Migrated before the crash: the file is the copy that counts.
                placed.migrated = true;
                journal.adopt(id, placed);
                continue;
            }
            match decode(&image) {
                Ok((envelope, content)) => {
                    recovered.push(Recovered {
                        id,
                        envelope,
                        content_len: content.len() as u64,
                        records: paths.read_state_log(id, &mut problems),
                    });
                    journal.adopt(id, placed);
                }
                Err(e) => log::warn!("journal: message {id} is unreadable and skipped: {e}"),
            }
        }
        recovered.sort_by_key(|m| m.id);
        remove_orphan_logs(&paths.queue, &recovered);
        journal.reclaim();
        let journal = Arc::new(journal);
        let highest = recovered
            .iter()
            .map(|m| m.id.0)
            .chain(found.done.iter().map(|id| id.0))
            .max()
            .unwrap_or(0);
        let committer =
            Committer::start(&paths.queue, journal.clone(), mode).map_err(io_at(&paths.queue))?;
        let spool = Spool {
            paths: Arc::new(paths),
            ids: IdGenerator::starting_above(highest),
            committer,
            journal,
            mode,
            closed: Arc::new(AtomicBool::new(false)),
            recovery_problems: problems,
        };
        spool.start_migration()?;
        Ok((spool, recovered))
    }

    fn start_migration(&self) -> Result<(), SpoolError> {
        let migration = Migration {
            journal: self.journal.clone(),
            committer: self.committer.clone(),
            paths: self.paths.clone(),
            mode: self.mode,
            closed: self.closed.clone(),
        };
        std::thread::Builder::new()
            .name("spool-migrate".into())
            .spawn(move || migration.run())
            .map(|_| ())
            .map_err(io_at(&self.paths.queue))
    }

    /// Waits until every record requested so far (including "done" records) is written and
    /// flushed: for a clean stop.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.committer
            .sync()
            .await
            .map_err(io_at(&self.journal.dir))
    }

    /// State logs that recovery found unreadable or damaged (their messages were held).
    pub fn recovery_problems(&self) -> usize {
        self.recovery_problems
    }

    /// Segments in the journal and their bytes.
    pub fn journal_usage(&self) -> (usize, u64) {
        self.journal.usage()
    }

    #[cfg(test)]
    fn tune_journal(&self, segment_max: u64, migrate_after: Duration) {
        let mut state = self.journal.lock();
        state.limits.segment_max = segment_max;
        state.limits.migrate_after = migrate_after;
    }

    /// A fresh queue id for something that is not queued (a second quarantine copy).
    pub fn new_id(&self) -> QueueId {
        self.ids.next()
    }

    /// Starts receiving a new message.
    pub fn begin(&self) -> Draft {
        self.draft(self.ids.next(), "")
    }

    /// Starts a second draft under an id that already has one (the pipeline's rewrite of a
    /// message, read from the first draft while this one is written): its own `tmp/` file.
    pub fn begin_rewrite(&self, id: QueueId) -> Draft {
        self.draft(id, ".rewrite")
    }

    fn draft(&self, id: QueueId, tmp_suffix: &'static str) -> Draft {
        Draft {
            id,
            tmp_suffix,
            paths: self.paths.clone(),
            buffer: Vec::with_capacity(8 * 1024),
            file: None,
            content_len: 0,
            crc: crc32fast::Hasher::new(),
            created: false,
            committed: false,
        }
    }

    /// Commits a draft: after `Ok`, the message survives any crash.
    pub async fn commit(
        &self,
        mut draft: Draft,
        envelope: &Envelope,
    ) -> Result<QueueId, SpoolError> {
        let id = draft.id;
        let envelope_json = serde_json::to_vec(envelope).unwrap_or_default();
        if draft.file.is_none() {
            // Small enough to be held whole: one journal record, no file of its own.
            let image = draft.image(&envelope_json);
            draft.committed = true;
            self.committer
                .append(id, image)
                .await
                .map_err(io_at(&self.journal.dir))?;
            return Ok(id);
        }
        let flush_own_file = self.mode == SyncMode::Fsync;
        blocking(move || draft.finish(&envelope_json, flush_own_file)).await?;
        if let Err(e) = self.committer.sync().await {
            // Not durable, so not acknowledged: take it back, or a restart would deliver a
            // message whose sender was told to try again (a duplicate at best).
            let _ = std::fs::remove_file(self.queue_path(id));
            return Err(io_at(&self.paths.queue)(e));
        }
        Ok(id)
    }

    pub fn queue_path(&self, id: QueueId) -> PathBuf {
        self.paths.message(id)
    }

    /// Reads the whole content of a queued message, verifying its checksum.
    pub async fn read_content(&self, id: QueueId) -> Result<Vec<u8>, SpoolError> {
        if let Some(content) = self.journal_content(id).await? {
            return Ok(content);
        }
        let path = self.queue_path(id);
        blocking(move || read_content_blocking(&path, id)).await
    }

    /// The content of a message the journal holds, read and checked (every checksum; the
    /// envelope is not parsed again, the queue index has it).
    async fn journal_content(&self, id: QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let Some((file, placed)) = self.journal.locate(id) else {
            return Ok(None);
        };
        let dir = self.journal.dir.clone();
        let mut image =
            blocking(move || journal::read_image(&file, &placed).map_err(io_at(&dir))).await?;
        let range = content_range(&image)?;
        image.truncate(range.end);
        image.drain(..range.start);
        Ok(Some(image))
    }

    /// Opens a queued message's content for delivery: in memory up to `memory_limit` bytes,
    /// else read from the file piece by piece (its checksum is verified before the last
    /// piece is handed out, so corrupt content never reaches a next hop whole).
    pub async fn open_content(
        &self,
        id: QueueId,
        memory_limit: u64,
    ) -> Result<Content, SpoolError> {
        if let Some(content) = self.journal_content(id).await? {
            let len = content.len() as u64;
            return Ok(Content {
                source: Source::Memory(content),
                path: self.journal.dir.clone(),
                len,
                expected_crc: 0,
                offset: 0,
                crc: crc32fast::Hasher::new(),
            });
        }
        let path = self.queue_path(id);
        blocking(move || {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SpoolError::NotFound(id))
                }
                Err(e) => return Err(io_at(&path)(e)),
            };
            let trailer = read_trailer(&mut file, &path)?;
            let source = if trailer.content_len <= memory_limit {
                Source::Memory(read_content_blocking(&path, id)?)
            } else {
                Source::File(Arc::new(file))
            };
            Ok(Content {
                source,
                path,
                len: trailer.content_len,
                expected_crc: trailer.content_crc,
                offset: 0,
                crc: crc32fast::Hasher::new(),
            })
        })
        .await
    }

    /// Appends a state change to the message's log and makes it durable before returning:
    /// for the operator's hold and release, which a power cut must not undo.
    pub async fn record_durably(&self, id: QueueId, record: StateRecord) -> Result<(), SpoolError> {
        self.journal.note_state_log(id);
        let path = self.paths.state_log(id);
        let queue = self.paths.queue.clone();
        blocking(move || {
            let created = !path.exists();
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_at(&path))?;
            file.write_all(&state::encode(&record))
                .and_then(|()| file.sync_data())
                .map_err(io_at(&path))?;
            if created {
                File::open(&queue)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io_at(&queue))?;
            }
            Ok(())
        })
        .await
    }

    /// The records of `id`'s state log, oldest first (none when it has no log: a message
    /// not yet tried, or delivered at its first attempt).
    pub async fn state_history(&self, id: QueueId) -> Result<Vec<StateRecord>, SpoolError> {
        let path = self.paths.state_log(id);
        blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(state::replay_checked(&bytes).0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_at(&path)(e)),
        })
        .await
    }

    /// Appends a state change to the message's log (not synced: see `state.rs`).
    pub async fn record(&self, id: QueueId, record: StateRecord) -> Result<(), SpoolError> {
        self.journal.note_state_log(id);
        let path = self.paths.state_log(id);
        blocking(move || {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_at(&path))?;
            file.write_all(&state::encode(&record))
                .map_err(io_at(&path))
        })
        .await
    }

    /// Removes a message for good (delivered, bounced or deleted by the operator).
    pub async fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let Some(forgot) = self.journal.forget(id) else {
            let (path, state) = (self.paths.message(id), self.paths.state_log(id));
            return blocking(move || {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(SpoolError::NotFound(id))
                    }
                    Err(e) => return Err(io_at(&path)(e)),
                }
                let _ = fs::remove_file(&state);
                Ok(())
            })
            .await;
        };
        self.committer.finished(id);
        if !forgot.migrated && !forgot.state_log {
            // The usual case after a first-attempt delivery: nothing to unlink.
            return Ok(());
        }
        let (path, state) = (self.paths.message(id), self.paths.state_log(id));
        blocking(move || {
            if forgot.migrated {
                let _ = fs::remove_file(&path);
            }
            let _ = fs::remove_file(&state);
            Ok(())
        })
        .await
    }
}

enum Source {
    Memory(Vec<u8>),
    File(Arc<File>),
}

/// A queued message's content, read sequentially (see `Spool::open_content`).
pub struct Content {
    source: Source,
    path: PathBuf,
    len: u64,
    expected_crc: u32,
    offset: u64,
    crc: crc32fast::Hasher,
}

impl Content {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts reading from the beginning again (a new attempt).
    pub fn rewind(&mut self) {
        self.offset = 0;
        self.crc = crc32fast::Hasher::new();
    }

    /// The first `max` bytes (header checks, the copy returned in a notice).
    pub async fn prefix(&self, max: usize) -> Result<Vec<u8>, SpoolError> {
        let want = (max as u64).min(self.len) as usize;
        match &self.source {
            Source::Memory(bytes) => Ok(bytes[..want].to_vec()),
            Source::File(file) => read_at(file.clone(), self.path.clone(), 4, want).await,
        }
    }

    /// The next piece of at most `max` bytes; None at the end.
    pub async fn next(&mut self, max: usize) -> Result<Option<Vec<u8>>, SpoolError> {
        if self.offset >= self.len {
            return Ok(None);
        }
        let want = (max as u64).min(self.len - self.offset) as usize;
        let piece = match &self.source {
            Source::Memory(bytes) => {
                let start = self.offset as usize;
                bytes[start..start + want].to_vec()
            }
            Source::File(file) => {
                read_at(file.clone(), self.path.clone(), 4 + self.offset, want).await?
            }
        };
        self.offset += piece.len() as u64;
        if let Source::File(_) = self.source {
            self.crc.update(&piece);
            if self.offset == self.len && self.crc.clone().finalize() != self.expected_crc {
                return Err(SpoolError::Corrupt {
                    path: self.path.clone(),
                    reason: "content checksum mismatch",
                });
            }
        }
        Ok(Some(piece))
    }
}

async fn read_at(
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, SpoolError> {
    blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut piece = vec![0u8; len];
        file.read_exact_at(&mut piece, offset)
            .map_err(io_at(&path))?;
        Ok(piece)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(SpoolError::Io {
                path: PathBuf::new(),
                source: io::Error::other(join.to_string()),
            })
        })
}

/// What a draft holds at one moment: `spilled` bytes in its `tmp/` file (after the magic),
/// then `tail` still in memory.
#[derive(Clone)]
pub struct DraftSnapshot {
    file: Option<PathBuf>,
    spilled: u64,
    tail: Arc<[u8]>,
}

impl DraftSnapshot {
    pub fn len(&self) -> u64 {
        self.spilled + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset` of the content (blocking; 0 at the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if offset < self.spilled {
            let path = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("no draft file"))?;
            let want = buf.len().min((self.spilled - offset) as usize);
            let file = File::open(path)?;
            file.read_exact_at(&mut buf[..want], MAGIC.len() as u64 + offset)?;
            return Ok(want);
        }
        let start = ((offset - self.spilled) as usize).min(self.tail.len());
        let want = buf.len().min(self.tail.len() - start);
        buf[..want].copy_from_slice(&self.tail[start..start + want]);
        Ok(want)
    }

    /// Copies the whole content to `out` (blocking), 1 MB at a time.
    pub fn copy_to(&self, out: &mut impl Write) -> io::Result<()> {
        if let Some(path) = &self.file {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
            io::copy(&mut (&mut file).take(self.spilled), out)?;
        }
        out.write_all(&self.tail)
    }
}

/// A message being received. Dropping a draft without committing removes its file.
pub struct Draft {
    id: QueueId,
    tmp_suffix: &'static str,
    paths: Arc<Paths>,
    buffer: Vec<u8>,
    file: Option<File>,
    content_len: u64,
    crc: crc32fast::Hasher,
    /// A file exists under `tmp/` (and must be removed unless committed).
    created: bool,
    committed: bool,
}

impl Draft {
    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Adds content; large messages are streamed to disk in `DRAFT_BUFFER` pieces.
    pub async fn write(&mut self, content: &[u8]) -> Result<(), SpoolError> {
        self.crc.update(content);
        self.content_len += content.len() as u64;
        self.buffer.extend_from_slice(content);
        if self.buffer.len() >= DRAFT_BUFFER {
            self.spill().await?;
        }
        Ok(())
    }

    async fn spill(&mut self) -> Result<(), SpoolError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let file = self.file.take();
        let path = self.tmp_path();
        // Set before the file exists: if creating or writing it fails (ENOSPC), Drop must
        // still remove what was made, or every refused message leaks its draft on a full disk.
        self.created = true;
        let (file, mut buffer) = blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => create_draft(&path)?,
            };
            file.write_all(&buffer).map_err(io_at(&path))?;
            buffer.clear();
            Ok((file, buffer))
        })
        .await?;
        self.file = Some(file);
        self.created = true;
        buffer.reserve(DRAFT_BUFFER);
        self.buffer = buffer;
        Ok(())
    }

    fn tmp_path(&self) -> PathBuf {
        self.paths
            .tmp
            .join(format!("{}{}", self.id, self.tmp_suffix))
    }

    /// The whole content, when it is all still in memory (it never spilled to a file).
    pub fn buffered(&self) -> Option<&[u8]> {
        self.file.is_none().then_some(&self.buffer[..])
    }

    /// A read-only view of the content written so far, for filters that read it while the
    /// draft waits for its verdict (the file part is read through its own descriptor).
    pub fn snapshot(&self) -> DraftSnapshot {
        let spilled = self.content_len - self.buffer.len() as u64;
        DraftSnapshot {
            file: self.file.as_ref().map(|_| self.tmp_path()),
            spilled,
            tail: Arc::from(&self.buffer[..]),
        }
    }

    /// The buffered content followed by the envelope and the trailer.
    fn tail(&mut self, envelope: &[u8]) -> Vec<u8> {
        let mut tail = std::mem::take(&mut self.buffer);
        tail.reserve(envelope.len() + TRAILER_LEN as usize);
        tail.extend_from_slice(envelope);
        tail.extend_from_slice(&self.content_len.to_le_bytes());
        tail.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
        tail.extend_from_slice(&self.crc.clone().finalize().to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(envelope).to_le_bytes());
        tail.extend_from_slice(TRAILER_MAGIC);
        tail
    }

    /// The whole spool image of a draft that never spilled to a file.
    fn image(&mut self, envelope: &[u8]) -> Vec<u8> {
        let tail = self.tail(envelope);
        let mut image = Vec::with_capacity(MAGIC.len() + tail.len());
        image.extend_from_slice(MAGIC);
        image.extend_from_slice(&tail);
        image
    }

    /// Writes the rest, the envelope and the trailer, and renames into `queue/` (no sync).
    fn finish(mut self, envelope: &[u8], flush_own_file: bool) -> Result<(), SpoolError> {
        let path = self.tmp_path();
        self.created = true; // before creating: see `spill`
        let mut file = match self.file.take() {
            Some(f) => f,
            None => create_draft(&path)?,
        };
        let tail = self.tail(envelope);
        file.write_all(&tail).map_err(io_at(&path))?;
        if flush_own_file {
            // Each session flushes its own file on its own blocking thread: concurrent
            // fdatasyncs share journal commits, and the batch then needs one directory sync.
            file.sync_data().map_err(io_at(&path))?;
        }
        let target = self.paths.message(self.id);
        fs::rename(&path, &target).map_err(io_at(&target))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.created && !self.committed {
            let _ = fs::remove_file(self.tmp_path());
        }
    }
}

fn create_draft(path: &Path) -> Result<File, SpoolError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_at(path))?;
    file.write_all(MAGIC).map_err(io_at(path))?;
    Ok(file)
}

fn clear_drafts(tmp: &Path) -> Result<(), SpoolError> {
    for entry in fs::read_dir(tmp).map_err(io_at(tmp))? {
        let entry = entry.map_err(io_at(tmp))?;
        let _ = fs::remove_file(entry.path());
    }
    Ok(())
}

struct Trailer {
    content_len: u64,
    envelope_len: u32,
    content_crc: u32,
    envelope_crc: u32,
}

fn read_trailer(file: &mut File, path: &Path) -> Result<Trailer, SpoolError> {
    let size = file.metadata().map_err(io_at(path))?.len();
    let mut magic = [0u8; 4];
    let mut raw = [0u8; TRAILER_LEN as usize];
    if size >= 4 + TRAILER_LEN {
        file.read_exact(&mut magic).map_err(io_at(path))?;
        file.seek(SeekFrom::Start(size - TRAILER_LEN))
            .map_err(io_at(path))?;
        file.read_exact(&mut raw).map_err(io_at(path))?;
    }
    parse_trailer(&magic, &raw, size).map_err(|reason| SpoolError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Checks the magic numbers and the lengths of a file of `size` bytes. Pure, so that the
/// streaming recovery (`read_trailer`) and the in-memory `decode` share one judgement.
fn parse_trailer(magic: &[u8; 4], raw: &[u8; 24], size: u64) -> Result<Trailer, &'static str> {
    if size < 4 + TRAILER_LEN {
        return Err("shorter than header and trailer");
    }
    if magic != MAGIC {
        return Err("bad magic");
    }
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let trailer = Trailer {
        content_len: u64::from_le_bytes(raw[0..8].try_into().unwrap_or([0; 8])),
        envelope_len: word(8),
        content_crc: word(12),
        envelope_crc: word(16),
    };
    if &raw[20..24] != TRAILER_MAGIC {
        return Err("bad trailer magic");
    }
    let expected = 4u64
        .checked_add(trailer.content_len)
        .and_then(|n| n.checked_add(trailer.envelope_len as u64 + TRAILER_LEN));
    if expected != Some(size) {
        return Err("length does not match trailer");
    }
    Ok(trailer)
}

fn parse_envelope(raw: &[u8], trailer: &Trailer) -> Result<Envelope, &'static str> {
    if crc32fast::hash(raw) != trailer.envelope_crc {
        return Err("envelope checksum mismatch");
    }
    serde_json::from_slice(raw).map_err(|_| "envelope is not valid")
}

/// Decodes a whole spool file held in memory: the envelope and where the content lies in
/// `bytes`. Checks everything recovery checks, plus the content checksum. Never panics on
/// any input (fuzzed by `fuzz/fuzz_targets/spool_decode.rs`).
pub fn decode(bytes: &[u8]) -> Result<(Envelope, Range<usize>), SpoolError> {
    let (trailer, content) = checked_content(bytes)?;
    let envelope_raw = &bytes[content.end..content.end + trailer.envelope_len as usize];
    let envelope = serde_json::from_slice(envelope_raw)
        .map_err(|_| corrupt_in_memory("envelope is not valid"))?;
    Ok((envelope, content))
}

/// Where the content lies in a spool image held in memory, with every checksum verified but
/// the envelope not parsed (delivery has it already from the queue index).
pub fn content_range(bytes: &[u8]) -> Result<Range<usize>, SpoolError> {
    checked_content(bytes).map(|(_, content)| content)
}

fn corrupt_in_memory(reason: &'static str) -> SpoolError {
    SpoolError::Corrupt {
        path: PathBuf::from("<memory>"),
        reason,
    }
}

fn checked_content(bytes: &[u8]) -> Result<(Trailer, Range<usize>), SpoolError> {
    let size = bytes.len() as u64;
    let mut magic = [0u8; 4];
    let mut raw = [0u8; TRAILER_LEN as usize];
    if size >= 4 + TRAILER_LEN {
        magic.copy_from_slice(&bytes[..4]);
        raw.copy_from_slice(&bytes[bytes.len() - TRAILER_LEN as usize..]);
    }
    let trailer = parse_trailer(&magic, &raw, size).map_err(corrupt_in_memory)?;
    // parse_trailer proved 4 + content_len + envelope_len + 24 == bytes.len().
    let content = 4..4 + trailer.content_len as usize;
    let envelope_raw = &bytes[content.end..content.end + trailer.envelope_len as usize];
    if crc32fast::hash(envelope_raw) != trailer.envelope_crc {
        return Err(corrupt_in_memory("envelope checksum mismatch"));
    }
    if crc32fast::hash(&bytes[content.clone()]) != trailer.content_crc {
        return Err(corrupt_in_memory("content checksum mismatch"));
    }
    Ok((trailer, content))
}

fn read_envelope(path: &Path) -> Result<(Envelope, u64), SpoolError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    let trailer = read_trailer(&mut file, path)?;
    let mut raw = vec![0u8; trailer.envelope_len as usize];
    file.seek(SeekFrom::Start(4 + trailer.content_len))
        .map_err(io_at(path))?;
    file.read_exact(&mut raw).map_err(io_at(path))?;
    let envelope = parse_envelope(&raw, &trailer).map_err(|reason| SpoolError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((envelope, trailer.content_len))
}

fn read_content_blocking(path: &Path, id: QueueId) -> Result<Vec<u8>, SpoolError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound(id)),
        Err(e) => return Err(io_at(path)(e)),
    };
    let trailer = read_trailer(&mut file, path)?;
    file.seek(SeekFrom::Start(4)).map_err(io_at(path))?;
    let mut content = vec![0u8; trailer.content_len as usize];
    file.read_exact(&mut content).map_err(io_at(path))?;
    if crc32fast::hash(&content) != trailer.content_crc {
        return Err(SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: "content checksum mismatch",
        });
    }
    Ok(content)
}

/// Reads the per-message files in `queue/`; files of messages the journal records as done
/// (a removal whose unlink did not reach the disk) are deleted.
fn recover(
    root: &Path,
    paths: &Paths,
    done: &HashSet<QueueId>,
    journaled: &HashSet<QueueId>,
    problems: &mut usize,
) -> Result<Vec<Recovered>, SpoolError> {
    let queue = &paths.queue;
    let mut found = Vec::new();
    for entry in fs::read_dir(queue).map_err(io_at(queue))? {
        let entry = entry.map_err(io_at(queue))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(id) = name.parse::<QueueId>() else {
            continue;
        };
        let path = entry.path();
        if done.contains(&id) {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(paths.state_log(id));
            continue;
        }
        match read_envelope(&path) {
            Ok((envelope, content_len)) => {
                found.push(Recovered {
                    id,
                    envelope,
                    content_len,
                    records: paths.read_state_log(id, problems),
                });
            }
            Err(SpoolError::Corrupt { reason, .. }) if journaled.contains(&id) => {
                // A copy out of the journal cut short by the crash; the journal copy (and
                // the state log) still count.
                log::warn!("spool: discarding an incomplete copy of {name}: {reason}");
                let _ = fs::remove_file(&path);
            }
            Err(SpoolError::Corrupt { reason, .. }) => {
                log::warn!("spool: setting aside {name}: {reason} (it was never acknowledged)");
                quarantine_corrupt(root, &path, name)?;
            }
            Err(e) => return Err(e),
        }
    }
    found.sort_by_key(|m| m.id);
    Ok(found)
}

/// State logs whose message is gone (its removal's unlink was lost in a crash).
fn remove_orphan_logs(queue: &Path, recovered: &[Recovered]) {
    let live: HashSet<QueueId> = recovered.iter().map(|m| m.id).collect();
    let Ok(entries) = fs::read_dir(queue) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".st")) else {
            continue;
        };
        if id.parse::<QueueId>().is_ok_and(|id| !live.contains(&id)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Moves the queued messages of old journal segments into files of their own, so a message
/// that waits for days does not keep the journal from shrinking (see journal.rs).
struct Migration {
    journal: Arc<Journal>,
    committer: Committer,
    paths: Arc<Paths>,
    mode: SyncMode,
    closed: Arc<AtomicBool>,
}

impl Migration {
    fn run(self) {
        while !self.closed.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            while let Some((segment, survivors)) = self.journal.due_for_migration() {
                if self.closed.load(Ordering::Relaxed) {
                    return;
                }
                match self.migrate(segment, &survivors) {
                    Ok(()) => log::info!(
                        "journal: moved {} queued message(s) out of segment {segment:016X}",
                        survivors.len()
                    ),
                    Err(e) => {
                        // A full disk, say: the journal keeps the messages meanwhile.
                        log::error!("journal: cannot move messages out of a segment: {e}");
                        std::thread::sleep(Duration::from_secs(10));
                        break;
                    }
                }
                self.journal.reclaim();
            }
        }
    }

    fn migrate(&self, segment: u64, survivors: &[QueueId]) -> Result<(), SpoolError> {
        let mut moved = Vec::new();
        let copied = self.copy_out(survivors, &mut moved).and_then(|()| {
            self.committer
                .sync_blocking()
                .map_err(io_at(&self.paths.queue))
        });
        if let Err(e) = copied {
            // Copies that are not durable must not outlive a failed round: a message delivered
            // meanwhile would come back from its stray file after a restart.
            for id in moved {
                let _ = fs::remove_file(self.paths.message(id));
            }
            return Err(e);
        }
        for id in moved {
            if !self.journal.mark_migrated(id, segment) {
                // Delivered while being copied: the copy must not outlive it.
                let _ = fs::remove_file(self.paths.message(id));
            }
        }
        Ok(())
    }

    /// Writes each survivor's image to `queue/ID` (not yet synced), noting it in `moved`.
    fn copy_out(&self, survivors: &[QueueId], moved: &mut Vec<QueueId>) -> Result<(), SpoolError> {
        for &id in survivors {
            // Gone since the list was made, or already moved: nothing to copy.
            let Some((file, placed)) = self.journal.locate(id) else {
                continue;
            };
            let image = journal::read_image(&file, &placed).map_err(io_at(&self.journal.dir))?;
            let draft = self.paths.tmp.join(format!("{id}.migrating"));
            let target = self.paths.message(id);
            let written = write_file(&draft, &image, self.mode == SyncMode::Fsync)
                .and_then(|()| fs::rename(&draft, &target));
            if let Err(e) = written {
                let _ = fs::remove_file(&draft);
                return Err(io_at(&target)(e));
            }
            moved.push(id);
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8], flush: bool) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    if flush {
        file.sync_data()?;
    }
    Ok(())
}

fn quarantine_corrupt(root: &Path, path: &Path, name: &str) -> Result<(), SpoolError> {
    let corrupt = root.join("corrupt");
    fs::create_dir_all(&corrupt).map_err(io_at(&corrupt))?;
    fs::rename(path, corrupt.join(name)).map_err(io_at(path))?;
    let _ = fs::remove_file(path.with_file_name(format!("{name}.st")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Recipient;

    fn envelope() -> Envelope {
        Envelope {
            sender: "a@example.org".into(),
            recipients: vec![Recipient {
                address: "b@example.com".into(),
                notify: None,
                orcpt: None,
                outcome: Default::default(),
            }],
            received_at: 1,
            client_addr: "127.0.0.1".parse().expect("ip"),
            helo: "client".into(),
            auth_user: None,
            tls: None,
            body: Default::default(),
            smtputf8: false,
            eight_bit: false,
            dsn_ret: None,
            dsn_envid: None,
            message_id: None,
            subject: None,
            require_tls: false,
        }
    }

    #[tokio::test]
    async fn commit_recover_read_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        assert!(found.is_empty());
        let mut draft = spool.begin();
        let big = vec![b'x'; DRAFT_BUFFER * 3 + 17];
        draft.write(b"Subject: hi\r\n\r\n").await.expect("write");
        draft.write(&big).await.expect("write");
        let id = spool.commit(draft, &envelope()).await.expect("commit");
        spool.record(id, StateRecord::Hold).await.expect("record");
        let abandoned = spool.begin();
        let abandoned_id = abandoned.id();
        drop(abandoned);
        drop(spool);

        let (spool, found) = Spool::open(dir.path(), SyncMode::Fsync).expect("reopen");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id);
        assert_eq!(found[0].records, vec![StateRecord::Hold]);
        assert_eq!(found[0].envelope, envelope());
        let content = spool.read_content(id).await.expect("read");
        assert_eq!(content.len(), 15 + big.len());
        assert!(spool.begin().id() > id.max(abandoned_id));
        spool.remove(id).await.expect("remove");
        assert!(matches!(
            spool.remove(id).await,
            Err(SpoolError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn content_streams_in_pieces_and_checks_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let mut draft = spool.begin();
        let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        draft.write(&body).await.expect("write");
        let id = spool.commit(draft, &envelope()).await.expect("commit");
        for limit in [0, u64::MAX] {
            let mut content = spool.open_content(id, limit).await.expect("open");
            let mut read = Vec::new();
            while let Some(piece) = content.next(65_536).await.expect("piece") {
                read.extend(piece);
            }
            assert_eq!(read, body);
            assert_eq!(content.prefix(5).await.expect("prefix"), b"abcde");
        }
        // Flip one byte: streaming notices before handing out the last piece.
        let path = spool.queue_path(id);
        let mut raw = fs::read(&path).expect("read");
        raw[10] ^= 1;
        fs::write(&path, raw).expect("write");
        let mut content = spool.open_content(id, 0).await.expect("open");
        let mut failed = false;
        for _ in 0..10 {
            match content.next(65_536).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
    }

    #[tokio::test]
    async fn truncated_files_are_set_aside_not_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let mut draft = spool.begin();
        // Larger than the draft buffer: a message with a file of its own.
        draft
            .write(&vec![b'x'; DRAFT_BUFFER + 1])
            .await
            .expect("write");
        let id = spool.commit(draft, &envelope()).await.expect("commit");
        let path = spool.queue_path(id);
        drop(spool);
        let full = fs::read(&path).expect("read");
        for cut in [0, 3, 10, full.len() - 1] {
            fs::write(&path, &full[..cut]).expect("truncate");
            let (_, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
            assert!(found.is_empty(), "cut at {cut} recovered");
            assert!(dir.path().join("corrupt").join(id.to_string()).exists());
            fs::rename(dir.path().join("corrupt").join(id.to_string()), &path).expect("back");
        }
    }

    #[tokio::test]
    async fn decode_agrees_with_recovery_and_refuses_every_damaged_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let mut draft = spool.begin();
        let body = b"Subject: hi\r\n\r\nbody\r\n";
        draft.write(body).await.expect("write");
        let json = serde_json::to_vec(&envelope()).expect("json");
        let full = draft.image(&json);
        let (decoded, content) = decode(&full).expect("decode");
        assert_eq!(decoded, envelope());
        assert_eq!(&full[content], body);
        // Any single flipped bit or any truncation is refused, never accepted or a panic.
        for at in 0..full.len() {
            let mut damaged = full.clone();
            damaged[at] ^= 0x20;
            assert!(decode(&damaged).is_err(), "flip at {at} accepted");
            assert!(decode(&full[..at]).is_err(), "cut at {at} accepted");
        }
    }

    async fn small(spool: &Spool, body: &[u8]) -> QueueId {
        let mut draft = spool.begin();
        draft.write(body).await.expect("write");
        spool.commit(draft, &envelope()).await.expect("commit")
    }

    fn segments(root: &Path) -> Vec<PathBuf> {
        let mut list: Vec<PathBuf> = fs::read_dir(root.join("journal"))
            .expect("journal dir")
            .map(|e| e.expect("entry").path())
            .collect();
        list.sort();
        list
    }

    #[tokio::test]
    async fn small_messages_live_in_the_journal_and_are_recovered_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let kept = small(&spool, b"Subject: kept\r\n\r\nbody\r\n").await;
        let gone = small(&spool, b"Subject: gone\r\n\r\nbody\r\n").await;
        assert!(
            !spool.queue_path(kept).exists(),
            "a small message got a file"
        );
        spool.record(kept, StateRecord::Hold).await.expect("record");
        spool.remove(gone).await.expect("remove");
        assert_eq!(
            spool.read_content(kept).await.expect("read"),
            b"Subject: kept\r\n\r\nbody\r\n"
        );
        // The removal's record is written with the next batch (or on its own, unflushed).
        let flush = small(&spool, b"x\r\n").await;
        spool.remove(flush).await.expect("remove");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(spool);

        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        let ids: Vec<QueueId> = found.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![kept]);
        assert_eq!(found[0].records, vec![StateRecord::Hold]);
        assert_eq!(found[0].envelope, envelope());
        let mut content = spool.open_content(kept, 0).await.expect("open");
        assert_eq!(
            content.next(1 << 20).await.expect("piece").expect("some"),
            b"Subject: kept\r\n\r\nbody\r\n"
        );
        assert!(spool.begin().id() > flush);
        spool.remove(kept).await.expect("remove");
        assert!(matches!(
            spool.remove(kept).await,
            Err(SpoolError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_torn_journal_tail_is_ignored_and_never_written_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let id = small(&spool, b"Subject: a\r\n\r\nbody\r\n").await;
        drop(spool);
        let segment = segments(dir.path()).pop().expect("a segment");
        let intact = fs::read(&segment).expect("read");
        // A batch torn by a crash: a partial record after the intact one.
        let mut torn = intact.clone();
        torn.extend_from_slice(&intact[..intact.len() / 2]);
        fs::write(&segment, &torn).expect("tear");
        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        assert_eq!(found.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
        let later = small(&spool, b"Subject: b\r\n\r\nbody\r\n").await;
        drop(spool);
        assert_eq!(segments(dir.path()).len(), 2, "wrote after a torn tail");
        let (_, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        assert_eq!(
            found.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![id, later]
        );
    }

    #[tokio::test]
    async fn segments_turn_over_and_survivors_move_to_their_own_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        spool.tune_journal(4096, Duration::from_millis(200));
        let survivor = small(&spool, &vec![b's'; 3000]).await;
        let mut delivered = Vec::new();
        for _ in 0..6 {
            delivered.push(small(&spool, &vec![b'd'; 3000]).await);
        }
        for id in &delivered {
            spool.remove(*id).await.expect("remove");
        }
        // Segments whose messages are all gone are deleted; the survivor's segment is
        // emptied into queue/ID once it is old enough, then deleted as well.
        let mut moved = false;
        for _ in 0..100 {
            small(&spool, b"tick\r\n").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if spool.queue_path(survivor).exists() && spool.journal_usage().0 <= 2 {
                moved = true;
                break;
            }
        }
        assert!(moved, "survivor not migrated: {:?}", spool.journal_usage());
        assert_eq!(
            spool.read_content(survivor).await.expect("read").len(),
            3000
        );
        drop(spool);
        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        let survivors: Vec<&Recovered> = found.iter().filter(|m| m.id == survivor).collect();
        assert_eq!(survivors.len(), 1, "recovered twice or lost");
        assert!(
            found.iter().all(|m| !delivered.contains(&m.id)),
            "a removed message came back"
        );
        spool.remove(survivor).await.expect("remove");
        assert!(!spool.queue_path(survivor).exists());
    }

    #[tokio::test]
    async fn an_unreadable_or_damaged_state_log_is_reported_and_holds_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let damaged = small(&spool, b"Subject: a\r\n\r\nbody\r\n").await;
        let unreadable = small(&spool, b"Subject: b\r\n\r\nbody\r\n").await;
        let fine = small(&spool, b"Subject: c\r\n\r\nbody\r\n").await;
        spool
            .record_durably(fine, StateRecord::Hold)
            .await
            .expect("hold");
        spool
            .record_durably(fine, StateRecord::Release)
            .await
            .expect("release");
        let queue = dir.path().join("queue");
        let mut log = b"{garbage\n".to_vec();
        log.extend(state::encode(&StateRecord::Release));
        fs::write(queue.join(format!("{damaged}.st")), log).expect("write");
        // A directory where the log should be: reading it fails with EISDIR.
        fs::create_dir(queue.join(format!("{unreadable}.st"))).expect("mkdir");
        drop(spool);
        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        assert_eq!(spool.recovery_problems(), 2);
        let records = |id| {
            found
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.records.clone())
                .expect("recovered")
        };
        assert_eq!(records(fine), [StateRecord::Hold, StateRecord::Release]);
        assert_eq!(records(unreadable), [StateRecord::Hold]);
        assert_eq!(records(damaged).last(), Some(&StateRecord::Hold));
    }

    #[tokio::test]
    async fn a_copy_cut_short_by_a_crash_yields_to_the_journal_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::Syncfs).expect("open");
        let id = small(&spool, b"Subject: a\r\n\r\nbody\r\n").await;
        spool.record(id, StateRecord::Hold).await.expect("record");
        let path = spool.queue_path(id);
        drop(spool);
        // As if the migration thread had renamed a copy whose data never reached the disk.
        fs::write(&path, b"BWQ1 torn").expect("write");
        let (spool, found) = Spool::open(dir.path(), SyncMode::Syncfs).expect("reopen");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id);
        assert_eq!(
            found[0].records,
            vec![StateRecord::Hold],
            "the state log was lost"
        );
        assert!(!path.exists(), "the torn copy stayed");
        assert!(
            !dir.path().join("corrupt").exists(),
            "a journal copy was set aside"
        );
        assert_eq!(
            spool.read_content(id).await.expect("read"),
            b"Subject: a\r\n\r\nbody\r\n"
        );
    }
}
