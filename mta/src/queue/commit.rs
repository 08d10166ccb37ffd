//! Group commit: one thread turns many "make my rename durable" requests into one sync.
//!
//! A request is answered only by a sync that *started after* the request was queued, so every
//! file renamed before the request is covered. The thread takes the first waiting request,
//! drains every other request already queued, syncs once and answers them all; requests that
//! arrive during the sync wait for the next round, which is how batches grow under load.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc;

use serde::Deserialize;
use tokio::sync::oneshot;

/// How the committer makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `syncfs(2)` on the spool's file system: one call covers the whole batch.
    #[default]
    Syncfs,
    /// Each session `fdatasync(2)`s its own file (concurrently, so the journal merges them),
    /// then the queue directory is synced once per batch.
    Fsync,
}

pub(crate) struct CommitRequest {
    pub done: oneshot::Sender<io::Result<()>>,
}

#[derive(Clone)]
pub(crate) struct Committer {
    requests: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the committer thread for the queue directory `queue_dir`.
    pub fn start(queue_dir: &Path, mode: SyncMode) -> io::Result<Self> {
        let dir = File::open(queue_dir)?;
        let (requests, receiver) = mpsc::channel::<CommitRequest>();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run(dir, mode, receiver))?;
        Ok(Self { requests })
    }

    /// Waits until everything renamed before this call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.requests
            .send(CommitRequest { done })
            .map_err(|_| io::Error::other("spool committer has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("spool committer has stopped"))?
    }
}

fn run(dir: File, mode: SyncMode, receiver: mpsc::Receiver<CommitRequest>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter());
        let started = std::time::Instant::now();
        let outcome = sync_batch(&dir, mode);
        log::debug!(
            "spool commit: {} message(s) in {:?}",
            batch.len(),
            started.elapsed()
        );
        for request in batch {
            let reply = match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = request.done.send(reply);
        }
    }
}

fn sync_batch(dir: &File, mode: SyncMode) -> io::Result<()> {
    match mode {
        SyncMode::Syncfs => nix::unistd::syncfs(dir.as_fd()).map_err(io::Error::from),
        // The files' data was flushed by their sessions (Draft::finish); the renames that
        // made them visible need the directory flushed, once for the whole batch.
        SyncMode::Fsync => dir.sync_all(),
    }
}
