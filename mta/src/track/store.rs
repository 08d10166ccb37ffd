//! The event store: one SQLite database (WAL) in the tracking directory.
//!
//! Tables: `events` (one row per event: time, queue id, kind, the kind's fields as JSON),
//! `messages` (one row per queue id that some event named by Message-ID, sender or origin)
//! and `recipients` (queue id by recipient). Indexes cover every way a timeline is asked for:
//! queue id, Message-ID, sender, recipient, time, and the origin of splits and copies.
//! The store is the history, not the mail: `synchronous = NORMAL` may lose the last events
//! of a power cut, never a message. In WAL mode NORMAL already syncs only at checkpoints, not
//! per commit, so `OFF` would save no CPU worth having and would risk a corrupt file (a
//! checkpoint without its fsync) on a power cut.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::event::{Event, EventKind};
use super::query::{Filter, Timeline, TimelineEntry};
use crate::queue::QueueId;

/// The database file inside the tracking directory.
pub const DATABASE: &str = "events.sqlite";

/// How many messages a linked query (`--id`, `--message-id`) gathers at most.
const MAX_LINKED: usize = 1000;
/// Rows deleted per statement by a purge, so the writer is never away for long.
pub(super) const PURGE_CHUNK: usize = 5000;
/// The writer's page cache in KiB (SQLite's negative `cache_size`): the Message-ID, sender and
/// recipient indexes take random inserts, and a cache holding their hot pages keeps the
/// writer from waiting on reads (measured: 20k events/s with SQLite's default 2 MiB, 56k
/// with 64 MiB on a 1M-event store). Queries keep the default.
const WRITER_CACHE_KIB: i64 = -32_768;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    queue_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_queue_id ON events(queue_id);
CREATE INDEX IF NOT EXISTS events_by_time ON events(at_ms);
CREATE TABLE IF NOT EXISTS messages (
    queue_id INTEGER PRIMARY KEY,
    first_ms INTEGER NOT NULL,
    message_id TEXT,
    sender TEXT,
    parent_id INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages(message_id);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages(sender);
CREATE INDEX IF NOT EXISTS messages_by_parent ON messages(parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS recipients (
    recipient TEXT NOT NULL,
    queue_id INTEGER NOT NULL,
    PRIMARY KEY (recipient, queue_id)
) WITHOUT ROWID;
";

const INSERT_EVENT: &str =
    "INSERT INTO events (at_ms, queue_id, kind, details) VALUES (?1, ?2, ?3, ?4)";
const UPSERT_MESSAGE: &str = "
INSERT INTO messages (queue_id, first_ms, message_id, sender, parent_id)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (queue_id) DO UPDATE SET
    message_id = coalesce(messages.message_id, excluded.message_id),
    sender = coalesce(messages.sender, excluded.sender),
    parent_id = coalesce(messages.parent_id, excluded.parent_id)";
const INSERT_RECIPIENT: &str =
    "INSERT OR IGNORE INTO recipients (recipient, queue_id) VALUES (?1, ?2)";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("tracking store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("tracking store: event {seq} is unreadable: {source}")]
    Details { seq: i64, source: serde_json::Error },
}

/// What one [`Store::purge_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStep {
    pub deleted: u64,
    /// Nothing older is left.
    pub done: bool,
}

pub struct Store {
    connection: Connection,
    /// Queue ids whose `messages` row already holds their Message-ID: later events of the
    /// same message (attempts, outcomes) skip the upsert. Bounded by [`MAX_KNOWN`].
    known: HashSet<i64>,
    /// Events were deleted since the orphaned keys were last dropped. Without it a purge that
    /// finds nothing past retention (every start, most hours) skips the two full scans of
    /// `messages` and `recipients`. False at open: the orphans of a purge a stop cut short are
    /// harmless (a key no event joins) and go with the next purge that deletes anything.
    orphans_possible: bool,
}

/// Queue ids remembered by [`Store::known`] before it starts over (a forgotten id costs one
/// redundant upsert, nothing else).
const MAX_KNOWN: usize = 100_000;

/// Queue ids are u64 (a microsecond clock); SQLite integers are i64. The clock stays below
/// 2^63 for the next 290,000 years, so the cast is exact.
fn key(id: QueueId) -> i64 {
    id.0 as i64
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let connection = Connection::open(dir.join(DATABASE))?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(SCHEMA)?;
        Ok(Store {
            connection,
            known: HashSet::new(),
            orphans_possible: false,
        })
    }

    /// Opens the store for the writer: as [`Store::open`], with a larger page cache.
    pub fn open_for_writing(dir: &Path) -> Result<Store, StoreError> {
        let store = Self::open(dir)?;
        store
            .connection
            .pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        store
            .connection
            .pragma_update(None, "temp_store", "MEMORY")?;
        Ok(store)
    }

    /// Writes `events` in one transaction.
    pub fn insert(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        let mut learned = Vec::new();
        {
            let mut insert_event = transaction.prepare_cached(INSERT_EVENT)?;
            let mut upsert_message = transaction.prepare_cached(UPSERT_MESSAGE)?;
            let mut insert_recipient = transaction.prepare_cached(INSERT_RECIPIENT)?;
            // One buffer for every event's details: no allocation per event.
            let mut details = Vec::with_capacity(256);
            for event in events {
                details.clear();
                serde_json::to_writer(&mut details, &event.kind)
                    .map_err(|source| StoreError::Details { seq: -1, source })?;
                // serde_json writes UTF-8 only; the column stays TEXT as before.
                let text = std::str::from_utf8(&details).unwrap_or_default();
                let id = key(event.queue_id);
                insert_event.execute(params![event.at_ms, id, event.kind.name(), text])?;
                let parent = event.kind.derived_from().map(key);
                let new_message_id = event.message_id.is_some() && !self.known.contains(&id);
                if new_message_id || event.sender.is_some() || parent.is_some() {
                    upsert_message.execute(params![
                        id,
                        event.at_ms,
                        event.message_id,
                        event.sender,
                        parent
                    ])?;
                    if event.message_id.is_some() {
                        learned.push(id);
                    }
                }
                for recipient in &event.recipients {
                    insert_recipient.execute(params![recipient, id])?;
                }
            }
        }
        transaction.commit()?;
        // Only what is committed is known: a refused batch is upserted again next time.
        if self.known.len() + learned.len() > MAX_KNOWN {
            self.known.clear();
        }
        self.known.extend(learned);
        Ok(())
    }

    /// Deletes events older than `before_ms`, then the messages and recipients no event
    /// names any more. Returns the number of events deleted.
    pub fn purge(&mut self, before_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let step = self.purge_step(before_ms)?;
            deleted += step.deleted;
            if step.done {
                return Ok(deleted);
            }
        }
    }

    /// One bounded piece of a purge (at most [`PURGE_CHUNK`] events), so the writer can take
    /// new events between pieces; the last piece also drops the orphaned keys.
    pub fn purge_step(&mut self, before_ms: i64) -> Result<PurgeStep, StoreError> {
        let deleted = self.connection.execute(
            "DELETE FROM events WHERE seq IN \
             (SELECT seq FROM events WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
            params![before_ms, PURGE_CHUNK as i64],
        )?;
        self.orphans_possible |= deleted > 0;
        let done = deleted < PURGE_CHUNK;
        if done && self.orphans_possible {
            self.drop_orphans(before_ms)?;
        }
        Ok(PurgeStep {
            deleted: deleted as u64,
            done,
        })
    }

    /// Drops the messages and recipients no event names any more.
    fn drop_orphans(&mut self, before_ms: i64) -> Result<(), StoreError> {
        self.connection.execute(
            "DELETE FROM messages WHERE first_ms < ?1 AND NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.queue_id = messages.queue_id)",
            params![before_ms],
        )?;
        self.connection.execute(
            "DELETE FROM recipients WHERE NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.queue_id = recipients.queue_id)",
            [],
        )?;
        // Some remembered ids may have lost their row.
        self.known.clear();
        self.orphans_possible = false;
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn connection_for_tests(&self) -> &Connection {
        &self.connection
    }

    /// For the read-only aggregate queries of `summary`.
    pub(super) fn reader(&self) -> &Connection {
        &self.connection
    }

    /// The events `filter` asks for, oldest first, at most `limit`.
    pub fn timeline(&self, filter: &Filter, limit: usize) -> Result<Timeline, StoreError> {
        let linked = if filter.follows_links() {
            let ids = self.linked(filter)?;
            if ids.is_empty() {
                return Ok(Timeline::default());
            }
            Some(ids)
        } else {
            None
        };
        let (sql, values) = timeline_sql(filter, linked.as_ref(), limit);
        let mut statement = self.connection.prepare(&sql)?;
        let mut rows = statement.query(params_from_iter(values))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let details: String = row.get(4)?;
            let kind: EventKind = serde_json::from_str(&details)
                .map_err(|source| StoreError::Details { seq, source })?;
            let queue_id = QueueId(row.get::<_, i64>(2)? as u64);
            events.push(TimelineEntry::new(row.get(1)?, queue_id, row.get(3)?, kind));
        }
        let truncated = events.len() > limit;
        events.truncate(limit);
        Ok(Timeline { events, truncated })
    }

    /// The queue ids a linked query covers: the seeds, then (transitively) the messages made
    /// from them and the messages sharing their Message-IDs.
    fn linked(&self, filter: &Filter) -> Result<BTreeSet<i64>, StoreError> {
        let mut found: BTreeSet<i64> = BTreeSet::new();
        if let Some(id) = filter.id {
            found.insert(key(id));
        } else if let Some(message_id) = &filter.message_id {
            found.extend(self.ids_with_message_id(message_id)?);
        }
        let mut frontier: Vec<i64> = found.iter().copied().collect();
        while !frontier.is_empty() && found.len() < MAX_LINKED {
            let mut next = Vec::new();
            for id in frontier {
                for neighbour in self.neighbours(id)? {
                    if found.len() < MAX_LINKED && found.insert(neighbour) {
                        next.push(neighbour);
                    }
                }
            }
            frontier = next;
        }
        Ok(found)
    }

    fn ids_with_message_id(&self, message_id: &str) -> Result<Vec<i64>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT queue_id FROM messages WHERE message_id = ?1 LIMIT ?2")?;
        let ids = statement
            .query_map(params![message_id, MAX_LINKED as i64], |row| row.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// Messages made from `id`, and messages sharing its Message-ID.
    fn neighbours(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        let mut children = self
            .connection
            .prepare_cached("SELECT queue_id FROM messages WHERE parent_id = ?1 LIMIT ?2")?;
        let mut ids = children
            .query_map(params![id, MAX_LINKED as i64], |row| row.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        let message_id: Option<String> = self
            .connection
            .prepare_cached("SELECT message_id FROM messages WHERE queue_id = ?1")?
            .query_row(params![id], |row| row.get(0))
            .optional()?
            .flatten();
        if let Some(message_id) = message_id {
            ids.extend(self.ids_with_message_id(&message_id)?);
        }
        Ok(ids)
    }
}

/// The timeline's SELECT and its parameters.
fn timeline_sql(
    filter: &Filter,
    linked: Option<&BTreeSet<i64>>,
    limit: usize,
) -> (String, Vec<SqlValue>) {
    let mut sql = String::from(
        "SELECT e.seq, e.at_ms, e.queue_id, m.message_id, e.details FROM events e \
         LEFT JOIN messages m ON m.queue_id = e.queue_id WHERE 1",
    );
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(ids) = linked {
        let marks = vec!["?"; ids.len()].join(",");
        sql.push_str(&format!(" AND e.queue_id IN ({marks})"));
        values.extend(ids.iter().map(|&id| SqlValue::Integer(id)));
        if let (Some(_), Some(message_id)) = (filter.id, &filter.message_id) {
            sql.push_str(" AND m.message_id = ?");
            values.push(SqlValue::Text(message_id.clone()));
        }
    }
    if let Some(sender) = &filter.sender {
        sql.push_str(" AND e.queue_id IN (SELECT queue_id FROM messages WHERE sender = ?)");
        values.push(SqlValue::Text(sender.clone()));
    }
    if let Some(recipient) = &filter.recipient {
        sql.push_str(" AND e.queue_id IN (SELECT queue_id FROM recipients WHERE recipient = ?)");
        values.push(SqlValue::Text(recipient.clone()));
    }
    if let Some(since_ms) = filter.since_ms {
        sql.push_str(" AND e.at_ms >= ?");
        values.push(SqlValue::Integer(since_ms));
    }
    sql.push_str(" ORDER BY e.at_ms, e.seq LIMIT ?");
    values.push(SqlValue::Integer(limit as i64 + 1));
    (sql, values)
}
