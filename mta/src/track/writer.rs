//! The one writer thread: takes events from the channel, inserts them in batches (one
//! transaction each), answers flush requests once what came before them is written, and
//! purges expired events when the tracker opens and hourly.
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
        self.purge();
        let mut next_purge = Instant::now() + PURGE_EVERY;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut flushes = Vec::new();
        loop {
            let wait = next_purge.saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(first) => {
                    take(first, &mut batch, &mut flushes);
                    while batch.len() < MAX_BATCH {
                        match commands.try_recv() {
                            Ok(more) => take(more, &mut batch, &mut flushes),
                            Err(_) => break,
                        }
                    }
                    self.write(&mut batch);
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.purge();
                    next_purge = Instant::now() + PURGE_EVERY;
                }
                Err(RecvTimeoutError::Disconnected) => return,
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

    fn purge(&mut self) {
        let before = now_ms().saturating_sub(self.retention.as_millis() as i64);
        match self.store.purge(before) {
            Ok(0) => {}
            Ok(n) => log::info!(events = n; "tracking: purged {n} event(s) past retention"),
            Err(e) => log::error!("tracking: retention purge failed: {e}"),
        }
    }
}

fn take(command: Command, batch: &mut Vec<Event>, flushes: &mut Vec<Sender<()>>) {
    match command {
        Command::Record(event) => batch.push(event),
        Command::Flush(done) => flushes.push(done),
    }
}
