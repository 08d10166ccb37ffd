//! The one writer thread: takes events from the channel, inserts them in batches (one
//! transaction each, gathered for up to [`LINGER`] unless a flush asks sooner or the batch is
//! full), answers flush requests once what came before them is written, and
//! purges expired events when the tracker opens and hourly, a bounded piece at a time between
//! batches, so even a large purge (a shortened retention) never leaves the channel unread.
//!
//! A batch the store refuses is counted (`write_failures`) and logged, then forgotten: the
//! writer keeps going, so a full disk costs history, never the thread.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::{now_ms, Event};
use super::store::Store;
use super::Counters;

/// Events per transaction at most.
const MAX_BATCH: usize = 4096;
/// How long the writer gathers events before it commits them. A commit (WAL frames, locks,
/// the statements' reset) costs about as much as dozens of inserts, so at a light load one
/// commit per event would cost more than the events; a query never waits for it (its flush
/// commits at once), and a crash loses at most this much history, never mail.
pub(super) const LINGER: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub enum Command {
    Record(Event),
    /// Answered once everything sent before it is written.
    Flush(Sender<()>),
}

pub fn spawn(
    store: Store,
    commands: Receiver<Command>,
    counters: Arc<Counters>,
    retention: Duration,
) -> std::io::Result<()> {
    let writer = Writer {
        store,
        counters,
        retention,
    };
    std::thread::Builder::new()
        .name("track-writer".into())
        .spawn(move || writer.run(commands))
        .map(drop)
}

struct Writer {
    store: Store,
    counters: Arc<Counters>,
    retention: Duration,
}

impl Writer {
    /// Runs until every sender (the tracker) is gone and the channel is drained.
    fn run(mut self, commands: Receiver<Command>) {
        let mut purge = Some(Purge::new(self.retention));
        let mut next_purge = Instant::now() + PURGE_EVERY;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut flushes = Vec::new();
        loop {
            // While a purge is under way, only look for waiting events between its pieces.
            let wait = match purge {
                Some(_) => Duration::ZERO,
                None => next_purge.saturating_duration_since(Instant::now()),
            };
            match commands.recv_timeout(wait) {
                Ok(first) => {
                    take(first, &mut batch, &mut flushes);
                    // A purge under way goes on between batches: no lingering then.
                    let linger = if purge.is_some() {
                        Duration::ZERO
                    } else {
                        LINGER
                    };
                    gather(&commands, linger, &mut batch, &mut flushes);
                    self.write(&mut batch);
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) if purge.is_none() => {
                    purge = Some(Purge::new(self.retention));
                    next_purge = Instant::now() + PURGE_EVERY;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Some(running) = &mut purge {
                if running.step(&mut self.store) {
                    purge = None;
                }
            }
        }
    }

    fn write(&mut self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        match self.store.insert(batch) {
            Ok(()) => {
                self.counters.written.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters
                    .write_failures
                    .fetch_add(count, Ordering::Relaxed);
                log::error!(events = count; "tracking: {count} event(s) lost: {e}");
            }
        }
        batch.clear();
    }
}

/// A purge in progress: everything older than `before_ms` goes.
struct Purge {
    before_ms: i64,
    deleted: u64,
}

impl Purge {
    fn new(retention: Duration) -> Self {
        Self {
            before_ms: now_ms().saturating_sub(retention.as_millis() as i64),
            deleted: 0,
        }
    }

    /// One piece; true when the purge is over (done, or failed and logged).
    fn step(&mut self, store: &mut Store) -> bool {
        match store.purge_step(self.before_ms) {
            Ok(step) => {
                self.deleted += step.deleted;
                if step.done && self.deleted > 0 {
                    let n = self.deleted;
                    log::info!(events = n; "tracking: purged {n} event(s) past retention");
                }
                step.done
            }
            Err(e) => {
                log::error!("tracking: retention purge failed: {e}");
                true
            }
        }
    }
}

/// Adds to the batch until it is full, a flush waits, or `linger` is over.
fn gather(
    commands: &Receiver<Command>,
    linger: Duration,
    batch: &mut Vec<Event>,
    flushes: &mut Vec<Sender<()>>,
) {
    let deadline = Instant::now() + linger;
    while batch.len() < MAX_BATCH && flushes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match commands.recv_timeout(left) {
            Ok(more) => take(more, batch, flushes),
            // Disconnected: the next receive in `run` sees it once the batch is written.
            Err(_) => break,
        }
    }
}

fn take(command: Command, batch: &mut Vec<Event>, flushes: &mut Vec<Sender<()>>) {
    match command {
        Command::Record(event) => batch.push(event),
        Command::Flush(done) => flushes.push(done),
    }
}
