//! Report totals over a time window of the tracking store: what the console's daily and
//! weekly reports show (volumes, spam and viruses caught, top senders, recipients and
//! destinations, rejections by reason).
//!
//! Definitions (each a count of events in `[from_ms, to_ms)`):
//! - `received`: messages received (one `received` event each); `delivered`, `deferred`,
//!   `bounced`: recipient outcomes; `rejected`, `quarantined`, `discarded`: pipeline ends.
//! - `spam`: `antispam` verdicts that stopped a message (reject, quarantine, discard);
//!   `viruses`: the same for `antivirus`.
//! - top senders and recipients: by messages received; destinations: the domain of each
//!   delivered recipient; rejections: by stage and reply.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};

/// One row of a "top" list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub from_ms: i64,
    pub to_ms: i64,
    pub received: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub rejected: u64,
    pub quarantined: u64,
    pub discarded: u64,
    pub spam: u64,
    pub viruses: u64,
    pub top_senders: Vec<Count>,
    pub top_recipients: Vec<Count>,
    pub top_destinations: Vec<Count>,
    pub rejections: Vec<Count>,
}

const COUNT_KIND: &str =
    "SELECT count(*) FROM events WHERE kind = ?1 AND at_ms >= ?2 AND at_ms < ?3";
const COUNT_STOPPED_BY: &str = "SELECT count(*) FROM events WHERE kind = 'verdict' \
    AND at_ms >= ?2 AND at_ms < ?3 AND json_extract(details, '$.stage') = ?1 \
    AND json_extract(details, '$.verdict') IN ('reject', 'quarantine', 'discard')";
const TOP_SENDERS: &str = "SELECT coalesce(nullif(m.sender, ''), '<>'), count(*) FROM events e \
    JOIN messages m ON m.queue_id = e.queue_id WHERE e.kind = 'received' \
    AND e.at_ms >= ?1 AND e.at_ms < ?2 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?3";
const TOP_RECIPIENTS: &str = "SELECT r.recipient, count(*) FROM events e \
    JOIN recipients r ON r.queue_id = e.queue_id WHERE e.kind = 'received' \
    AND e.at_ms >= ?1 AND e.at_ms < ?2 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?3";
const TOP_DESTINATIONS: &str = "SELECT lower(substr(json_extract(details, '$.recipient'), \
    instr(json_extract(details, '$.recipient'), '@') + 1)), count(*) FROM events \
    WHERE kind = 'delivered' AND at_ms >= ?1 AND at_ms < ?2 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?3";
const REJECTIONS: &str = "SELECT json_extract(details, '$.stage') || ': ' || \
    json_extract(details, '$.reply'), count(*) FROM events WHERE kind = 'rejected' \
    AND at_ms >= ?1 AND at_ms < ?2 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?3";

pub(super) fn summarise(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    top: usize,
) -> Result<Summary, StoreError> {
    let db = store.reader();
    let kind = |name: &str| count(db, COUNT_KIND, name, from_ms, to_ms);
    let stopped_by = |stage: &str| count(db, COUNT_STOPPED_BY, stage, from_ms, to_ms);
    let list = |sql: &str| top_list(db, sql, from_ms, to_ms, top);
    Ok(Summary {
        from_ms,
        to_ms,
        received: kind("received")?,
        delivered: kind("delivered")?,
        deferred: kind("deferred")?,
        bounced: kind("bounced")?,
        rejected: kind("rejected")?,
        quarantined: kind("quarantined")?,
        discarded: kind("discarded")?,
        spam: stopped_by("antispam")?,
        viruses: stopped_by("antivirus")?,
        top_senders: list(TOP_SENDERS)?,
        top_recipients: list(TOP_RECIPIENTS)?,
        top_destinations: list(TOP_DESTINATIONS)?,
        rejections: list(REJECTIONS)?,
    })
}

fn count(db: &Connection, sql: &str, key: &str, from: i64, to: i64) -> Result<u64, StoreError> {
    let n: i64 = db
        .prepare_cached(sql)?
        .query_row(params![key, from, to], |row| row.get(0))?;
    Ok(n.max(0) as u64)
}

fn top_list(
    db: &Connection,
    sql: &str,
    from: i64,
    to: i64,
    top: usize,
) -> Result<Vec<Count>, StoreError> {
    let mut statement = db.prepare_cached(sql)?;
    let rows = statement.query_map(params![from, to, top as i64], |row| {
        let key: Option<String> = row.get(0)?;
        let count: i64 = row.get(1)?;
        Ok(Count {
            key: key.unwrap_or_default(),
            count: count.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
