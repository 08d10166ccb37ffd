//! The search index of the quarantine, in SQLite (`index.sqlite`).
//!
//! Only a cache of the records: never synced, repaired at open from the records (rows added,
//! rewritten when their generation differs, or dropped), rebuilt whole when it cannot be read
//! or has another schema version. Text filters match a case-insensitive substring.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, params_from_iter, Connection};
use serde::{Deserialize, Serialize};

use super::{Direction, Entry, QuarantineError, Record, State};
use crate::queue::QueueId;

/// Bumped whenever the table changes: an index of another version is rebuilt.
const SCHEMA_VERSION: i64 = 1;

/// What `quarantine list` searches for; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Quarantined at or after (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Quarantined before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

pub struct Index {
    db: Connection,
}

impl Index {
    /// Opens and repairs the index against `records`; an unusable file is rebuilt.
    pub fn open(path: &Path, records: &[Record]) -> Result<Index, QuarantineError> {
        match Index::open_and_repair(path, records) {
            Ok(index) => Ok(index),
            Err(e) => {
                log::warn!("quarantine index {}: {e}; rebuilding it", path.display());
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
                Index::open_and_repair(path, records)
            }
        }
    }

    fn open_and_repair(path: &Path, records: &[Record]) -> Result<Index, QuarantineError> {
        let db = Connection::open(path)?;
        // The records are the truth: a lost index write is repaired at the next open.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "OFF")?;
        let version: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version != SCHEMA_VERSION {
            db.execute_batch("DROP TABLE IF EXISTS entries;")?;
            db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        }
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS entries (
                id INTEGER PRIMARY KEY,
                sender TEXT NOT NULL,
                recipients TEXT NOT NULL,
                subject TEXT,
                reason TEXT NOT NULL,
                stage TEXT NOT NULL,
                score REAL,
                direction TEXT NOT NULL,
                received_at INTEGER NOT NULL,
                quarantined_at INTEGER NOT NULL,
                size INTEGER NOT NULL,
                state TEXT NOT NULL,
                generation INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS entries_by_date ON entries (quarantined_at);",
        )?;
        let mut index = Index { db };
        index.repair(records)?;
        Ok(index)
    }

    fn repair(&mut self, records: &[Record]) -> Result<(), QuarantineError> {
        let indexed: HashMap<i64, i64> = {
            let mut query = self.db.prepare("SELECT id, generation FROM entries")?;
            let rows = query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let (mut added, mut dropped) = (0usize, 0usize);
        let transaction = self.db.transaction()?;
        for record in records {
            let Some(id) = record.queue_id() else {
                continue;
            };
            if indexed.get(&(id.0 as i64)) != Some(&(record.generation as i64)) {
                upsert(&transaction, record)?;
                added += 1;
            }
        }
        let live: std::collections::HashSet<i64> = records
            .iter()
            .filter_map(|r| r.queue_id())
            .map(|id| id.0 as i64)
            .collect();
        for id in indexed.keys().filter(|id| !live.contains(id)) {
            transaction.execute("DELETE FROM entries WHERE id = ?1", [id])?;
            dropped += 1;
        }
        transaction.commit()?;
        if added + dropped > 0 {
            log::info!("quarantine index: repaired ({added} row(s) written, {dropped} dropped)");
        }
        Ok(())
    }

    pub fn upsert(&mut self, record: &Record) -> Result<(), QuarantineError> {
        upsert(&self.db, record)
    }

    pub fn remove(&mut self, id: QueueId) -> Result<(), QuarantineError> {
        self.db
            .execute("DELETE FROM entries WHERE id = ?1", [id.0 as i64])?;
        Ok(())
    }

    /// Ids quarantined before `cutoff` (seconds since the epoch).
    pub fn quarantined_before(&self, cutoff: u64) -> Result<Vec<QueueId>, QuarantineError> {
        let mut query = self
            .db
            .prepare("SELECT id FROM entries WHERE quarantined_at < ?1 ORDER BY id")?;
        let rows = query.query_map([cutoff as i64], |row| row.get::<_, i64>(0))?;
        let ids: Result<Vec<i64>, _> = rows.collect();
        Ok(ids?.into_iter().map(|id| QueueId(id as u64)).collect())
    }

    pub fn search(&self, filter: &Filter) -> Result<Vec<Entry>, QuarantineError> {
        let mut clauses: Vec<&str> = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let texts = [
            ("instr(lower(sender), lower(?))", &filter.sender),
            ("instr(lower(recipients), lower(?))", &filter.recipient),
            (
                "instr(lower(coalesce(subject, '')), lower(?))",
                &filter.subject,
            ),
            ("instr(lower(reason), lower(?))", &filter.reason),
        ];
        for (clause, value) in texts {
            if let Some(value) = value {
                clauses.push(clause);
                values.push(value.clone().into());
            }
        }
        if let Some(since) = filter.since {
            clauses.push("quarantined_at >= ?");
            values.push((since as i64).into());
        }
        if let Some(until) = filter.until {
            clauses.push("quarantined_at < ?");
            values.push((until as i64).into());
        }
        if let Some(direction) = filter.direction {
            clauses.push("direction = ?");
            values.push(direction.as_str().to_string().into());
        }
        let mut sql = String::from(
            "SELECT id, sender, recipients, subject, reason, stage, score, direction, \
             received_at, quarantined_at, size, state FROM entries",
        );
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut query = self.db.prepare(&sql)?;
        let rows = query.query_map(params_from_iter(values), entry_of_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    #[cfg(test)]
    pub fn generation(&self, id: QueueId) -> Option<i64> {
        self.db
            .query_row(
                "SELECT generation FROM entries WHERE id = ?1",
                [id.0 as i64],
                |row| row.get(0),
            )
            .ok()
    }
}

fn upsert(db: &Connection, record: &Record) -> Result<(), QuarantineError> {
    let Some(id) = record.queue_id() else {
        return Ok(());
    };
    let entry = record.entry();
    let recipients = serde_json::to_string(&entry.recipients).unwrap_or_default();
    db.execute(
        "INSERT OR REPLACE INTO entries (id, sender, recipients, subject, reason, stage, score,
             direction, received_at, quarantined_at, size, state, generation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            id.0 as i64,
            entry.sender,
            recipients,
            entry.subject,
            entry.reason,
            entry.stage,
            entry.score,
            entry.direction.as_str(),
            entry.received_at as i64,
            entry.quarantined_at as i64,
            entry.size as i64,
            entry.state.as_str(),
            record.generation as i64,
        ],
    )?;
    Ok(())
}

fn entry_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let id: i64 = row.get(0)?;
    let recipients: String = row.get(2)?;
    let direction: String = row.get(7)?;
    let state: String = row.get(11)?;
    Ok(Entry {
        id: QueueId(id as u64).to_string(),
        sender: row.get(1)?,
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        subject: row.get(3)?,
        reason: row.get(4)?,
        stage: row.get(5)?,
        score: row.get(6)?,
        direction: if direction == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        received_at: row.get::<_, i64>(8)? as u64,
        quarantined_at: row.get::<_, i64>(9)? as u64,
        size: row.get::<_, i64>(10)? as u64,
        state: State::parse(&state).unwrap_or(State::Quarantined),
    })
}
