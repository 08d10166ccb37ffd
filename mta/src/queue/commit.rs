//! Group commit: one thread turns many "make this durable" requests into one write and one
//! flush.
//!
//! Requests are journal appends (a small message's whole spool image), "done" records and
//! waits for per-message files renamed into `queue/` (large or migrated messages). The thread
//! takes the first waiting request, drains every other request already queued, writes all
//! journal records of the batch with one `pwrite` at the end of the open segment, flushes
//! once and answers them all; requests that arrive meanwhile wait for the next round, which
//! is how batches grow under load. A request is answered only by a flush that started after
//! it was queued, so everything it covers is on disk.
//!
//! The flush: `fdatasync` of the segment when the batch has only journal records (the data
//! blocks and the file's new size, no directory or inode creation); `syncfs` when files were
//! renamed too (it covers both); in `fsync` mode the files were flushed by their sessions and
//! the queue directory is synced instead. "Done" records alone are not flushed: losing one
//! can only redeliver a message, never lose one, and the next flush carries them anyway.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::id::QueueId;
use super::journal::{self, Journal};

pub use crate::config::SyncMode;

type Done = oneshot::Sender<io::Result<()>>;

enum Request {
    /// A message's spool image, to be journaled.
    Append {
        id: QueueId,
        image: Vec<u8>,
        done: Done,
    },
    /// The message left the queue.
    Finished(QueueId),
    /// Files renamed into `queue/` must become durable.
    SyncFiles(Done),
}

#[derive(Clone)]
pub(crate) struct Committer {
    requests: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer thread for the queue directory `queue_dir` and the journal.
    pub fn start(queue_dir: &Path, journal: Arc<Journal>, mode: SyncMode) -> io::Result<Self> {
        let dir = File::open(queue_dir)?;
        let (requests, receiver) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || Writer { dir, mode, journal }.run(receiver))?;
        Ok(Self { requests })
    }

    /// Journals `image` (a whole spool file) for `id`; after Ok it survives any crash.
    pub async fn append(&self, id: QueueId, image: Vec<u8>) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Request::Append { id, image, done })?;
        wait.await.map_err(|_| stopped())?
    }

    /// Waits until everything renamed into `queue/` before this call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Request::SyncFiles(done))?;
        wait.await.map_err(|_| stopped())?
    }

    /// As `sync`, from a plain thread (the migration thread).
    pub fn sync_blocking(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Request::SyncFiles(done))?;
        wait.blocking_recv().map_err(|_| stopped())?
    }

    /// Records that `id` left the queue (not waited for; see the module doc).
    pub fn finished(&self, id: QueueId) {
        let _ = self.send(Request::Finished(id));
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.requests.send(request).map_err(|_| stopped())
    }
}

/// One error for every request of a batch; the OS error code survives (ENOSPC must still
/// read as a full disk: 452 4.3.1, not 451).
fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

fn stopped() -> io::Error {
    io::Error::other("spool committer has stopped")
}

struct Writer {
    dir: File,
    mode: SyncMode,
    journal: Arc<Journal>,
}

/// One round's requests, laid out for a single write.
#[derive(Default)]
struct Batch {
    records: Vec<u8>,
    /// Appended messages: id, offset of their record within `records`, record length.
    messages: Vec<(QueueId, u64, u32)>,
    waiting: Vec<Done>,
    files: bool,
}

impl Writer {
    fn run(self, receiver: mpsc::Receiver<Request>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = Batch::default();
            for request in std::iter::once(first).chain(receiver.try_iter()) {
                batch.add(request);
            }
            let started = std::time::Instant::now();
            let outcome = self.commit(&batch);
            log::debug!(
                "spool commit: {} message(s), {} byte(s) in {:?}",
                batch.messages.len(),
                batch.records.len(),
                started.elapsed()
            );
            for done in batch.waiting {
                let _ = done.send(outcome.as_ref().map(|_| ()).map_err(copy_error));
            }
            self.journal.reclaim();
        }
    }

    fn commit(&self, batch: &Batch) -> io::Result<()> {
        let appended = if batch.records.is_empty() {
            None
        } else {
            Some(self.write(batch)?)
        };
        let flushed = match (batch.files, self.mode, &appended) {
            (true, SyncMode::Syncfs, _) => {
                nix::unistd::syncfs(self.dir.as_fd()).map_err(io::Error::from)
            }
            (true, SyncMode::Fsync, Some((_, file, _))) => {
                file.sync_data().and_then(|()| self.dir.sync_all())
            }
            (true, SyncMode::Fsync, None) => self.dir.sync_all(),
            (false, _, Some((_, file, _))) if !batch.messages.is_empty() => file.sync_data(),
            (false, _, _) => Ok(()),
        };
        let Some((segment, file, start)) = appended else {
            return flushed;
        };
        if let Err(e) = flushed {
            // After a failed flush the page cache cannot be trusted: cut the batch off and
            // never write to this segment again.
            let _ = file.set_len(start);
            self.journal.seal();
            return Err(e);
        }
        let placed: Vec<(QueueId, u64, u32)> = batch
            .messages
            .iter()
            .map(|&(id, offset, len)| (id, start + offset, len))
            .collect();
        let end = start + batch.records.len() as u64;
        self.journal.committed(segment, end, &placed);
        Ok(())
    }

    /// Writes the batch's records at the end of the open segment.
    fn write(&self, batch: &Batch) -> io::Result<(u64, Arc<File>, u64)> {
        let (segment, file, start) = self.journal.segment_for_batch()?;
        if let Err(e) = file.write_all_at(&batch.records, start) {
            if file.set_len(start).is_err() {
                self.journal.seal();
            }
            return Err(e);
        }
        Ok((segment, file, start))
    }
}

impl Batch {
    fn add(&mut self, request: Request) {
        match request {
            Request::Append { id, image, done } => {
                let offset = self.records.len() as u64;
                journal::encode_message(&mut self.records, id, &image);
                let len = (self.records.len() as u64 - offset) as u32;
                self.messages.push((id, offset, len));
                self.waiting.push(done);
            }
            Request::Finished(id) => journal::encode_done(&mut self.records, id),
            Request::SyncFiles(done) => {
                self.files = true;
                self.waiting.push(done);
            }
        }
    }
}
