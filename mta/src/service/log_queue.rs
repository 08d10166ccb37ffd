//! Log events leave the thread that made them through a bounded queue; one writer thread
//! hands them to journald or stderr, in order.
//!
//! A journal socket that is read slowly (journald under load, a rate limit, a stopped
//! journald) blocks the sender of a datagram. Without the queue every session task and the
//! delivery engine would stall on it, once per connect and disconnect — a flood would slow
//! all mail. With it a slow journal costs only events: when the queue is full the event is
//! dropped and counted, and the writer reports the count as one warning once it catches up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use log::kv::{self, VisitSource};
use log::{Level, Log, Metadata, Record};

/// Events waiting for the writer; at ~300 bytes each, a few MB at most.
const CAPACITY: usize = 16_384;
/// How long `flush` (at exit) waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Events dropped by this process's logger (one per process), for status and metrics.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log events were dropped because the writer fell behind (`bulwarkctl status`,
/// `bulwark_log_events_dropped_total`).
pub fn dropped_events() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The installed logger: the calling side of the queue.
pub struct QueuedLog {
    queue: SyncSender<Entry>,
    inner: Arc<dyn Log>,
    dropped: Arc<AtomicU64>,
}

enum Entry {
    Event(Event),
    /// Answered once every event before it has been written.
    Flush(SyncSender<()>),
}

/// A record with everything it borrowed copied, so it can cross to the writer thread.
struct Event {
    level: Level,
    target: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    message: String,
    fields: Fields,
}

/// Key-values as text: the journal and stderr write them as text anyway.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        self.0.push((key.as_str().to_string(), value.to_string()));
        Ok(())
    }
}

impl kv::Source for Fields {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        for (key, value) in &self.0 {
            visitor.visit_pair(kv::Key::from_str(key), kv::Value::from(value.as_str()))?;
        }
        Ok(())
    }
}

impl Event {
    fn copy_of(record: &Record) -> Event {
        let mut fields = Fields::default();
        // A key-value that fails to format is left out; the message text still names it.
        let _ = record.key_values().visit(&mut fields);
        Event {
            level: record.level(),
            target: record.target().to_string(),
            module_path: record.module_path().map(str::to_string),
            file: record.file().map(str::to_string),
            line: record.line(),
            message: record.args().to_string(),
            fields,
        }
    }

    fn write_to(&self, inner: &dyn Log) {
        inner.log(
            &Record::builder()
                .level(self.level)
                .target(&self.target)
                .module_path(self.module_path.as_deref())
                .file(self.file.as_deref())
                .line(self.line)
                .key_values(&self.fields)
                .args(format_args!("{}", self.message))
                .build(),
        );
    }
}

impl QueuedLog {
    /// Starts the writer thread in front of `inner`.
    pub fn start(inner: Box<dyn Log>) -> std::io::Result<QueuedLog> {
        let (queue, entries) = mpsc::sync_channel(CAPACITY);
        let inner: Arc<dyn Log> = Arc::from(inner);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = (inner.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("bulwark-log".into())
            .spawn(move || write_all(entries, &*writer.0, &writer.1))?;
        Ok(QueuedLog {
            queue,
            inner,
            dropped,
        })
    }

    /// Events this logger dropped so far because the writer was behind.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_all(entries: Receiver<Entry>, inner: &dyn Log, dropped: &AtomicU64) {
    let mut reported = 0;
    for entry in entries {
        match entry {
            Entry::Event(event) => event.write_to(inner),
            Entry::Flush(done) => {
                inner.flush();
                let _ = done.send(());
            }
        }
        let now = dropped.load(Ordering::Relaxed);
        if now > reported {
            inner.log(
                &Record::builder()
                    .level(Level::Warn)
                    .target("bulwark::service::log_queue")
                    .args(format_args!(
                        "log: {} events dropped: the log writer fell behind (journald slow or stopped)",
                        now - reported
                    ))
                    .build(),
            );
            reported = now;
        }
    }
}

impl Log for QueuedLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        match self.queue.try_send(Entry::Event(Event::copy_of(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (bounded) until everything logged before has been written: called at exit so
    /// the last events (why the daemon stopped) are not lost.
    fn flush(&self) {
        let (done, finished) = mpsc::sync_channel(1);
        if self.queue.send(Entry::Flush(done)).is_ok() {
            let _ = finished.recv_timeout(FLUSH_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what reaches it; `gate` makes it block like a full journal socket.
    #[derive(Default)]
    struct Recorder {
        lines: Mutex<Vec<String>>,
        gate: Mutex<()>,
    }

    struct Shared(Arc<Recorder>);

    impl Log for Shared {
        fn enabled(&self, metadata: &Metadata) -> bool {
            metadata.level() <= Level::Info
        }
        fn log(&self, record: &Record) {
            let _open = self.0.gate.lock().unwrap_or_else(|p| p.into_inner());
            let mut fields = Fields::default();
            let _ = record.key_values().visit(&mut fields);
            let fields: Vec<String> = fields.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.0
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "{} {} [{}]",
                    record.level(),
                    record.args(),
                    fields.join(",")
                ));
        }
        fn flush(&self) {}
    }

    fn lines(recorder: &Recorder) -> Vec<String> {
        recorder
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    #[test]
    fn events_arrive_in_order_with_their_fields_after_flush() {
        let recorder = Arc::new(Recorder::default());
        let log = QueuedLog::start(Box::new(Shared(recorder.clone()))).expect("writer thread");
        for n in 0..100 {
            log.log(
                &Record::builder()
                    .level(Level::Info)
                    .key_values(&[("session_id", n)])
                    .args(format_args!("connect {n}"))
                    .build(),
            );
        }
        log.log(
            &Record::builder()
                .level(Level::Debug)
                .args(format_args!("filtered"))
                .build(),
        );
        log.flush();
        let got = lines(&recorder);
        assert_eq!(got.len(), 100, "{got:?}");
        assert_eq!(got[0], "INFO connect 0 [session_id=0]");
        assert_eq!(got[99], "INFO connect 99 [session_id=99]");
    }

    #[test]
    fn a_blocked_writer_drops_and_counts_instead_of_blocking_the_caller() {
        let recorder = Arc::new(Recorder::default());
        let log = QueuedLog::start(Box::new(Shared(recorder.clone()))).expect("writer thread");
        let blocked = recorder.gate.lock().unwrap_or_else(|p| p.into_inner());
        let extra = 500;
        for n in 0..CAPACITY + extra {
            log.log(
                &Record::builder()
                    .level(Level::Info)
                    .args(format_args!("event {n}"))
                    .build(),
            );
        }
        // The caller got here although the writer could not write a single event.
        // The writer holds one event while blocked: every other one past the capacity is dropped.
        assert!(
            log.dropped() >= extra as u64 - 1,
            "dropped {}",
            log.dropped()
        );
        drop(blocked);
        log.flush();
        let got = lines(&recorder);
        let warning = got
            .iter()
            .find(|l| l.contains("events dropped"))
            .expect("a drop warning");
        assert!(warning.starts_with("WARN log: "), "{warning}");
    }
}
