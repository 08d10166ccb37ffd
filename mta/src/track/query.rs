//! What `bulwarkctl track` asks for and what it gets back.
//!
//! Every filter given must match (AND). `--id` and `--message-id` follow links: the messages
//! split, copied or generated from a matching message, and every message sharing a matching
//! message's Message-ID (the same mail on another path or a second node), transitively.
//! With no filter at all the answer is the last hour. An answer holds at most
//! [`MAX_EVENTS`] events, oldest first; `truncated` says when there were more.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::event::{normalise_address, normalise_message_id, EventKind};
use crate::queue::QueueId;

/// The most events one answer holds.
pub const MAX_EVENTS: usize = 10_000;

/// The window of a query that names no filter.
const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// The question, as the control socket carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// A queue id (the `queued as` id), any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// With or without angle brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Only events of the last this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{0:?} is not a queue id (16 hex digits, as in \"queued as ID\")")]
    BadId(String),
    #[error("{0:?} is not a Message-ID")]
    BadMessageId(String),
}

/// A query checked and normalised, ready for the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub id: Option<QueueId>,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub since_ms: Option<i64>,
}

impl Filter {
    /// True when links (splits, copies, shared Message-IDs) are followed.
    pub fn follows_links(&self) -> bool {
        self.id.is_some() || self.message_id.is_some()
    }
}

impl Query {
    pub fn filter(&self, now_ms: i64) -> Result<Filter, QueryError> {
        let id = match &self.id {
            Some(text) => Some(
                text.trim()
                    .to_ascii_uppercase()
                    .parse::<QueueId>()
                    .map_err(|()| QueryError::BadId(text.clone()))?,
            ),
            None => None,
        };
        let message_id = match &self.message_id {
            Some(text) => Some(
                normalise_message_id(text).ok_or_else(|| QueryError::BadMessageId(text.clone()))?,
            ),
            None => None,
        };
        let mut since_seconds = self.since_seconds;
        let unfiltered = id.is_none()
            && message_id.is_none()
            && self.sender.is_none()
            && self.recipient.is_none();
        if unfiltered && since_seconds.is_none() {
            since_seconds = Some(DEFAULT_WINDOW.as_secs());
        }
        Ok(Filter {
            id,
            message_id,
            sender: self.sender.as_deref().map(normalise_address),
            recipient: self.recipient.as_deref().map(normalise_address),
            since_ms: since_seconds.map(|s| now_ms.saturating_sub((s as i64).saturating_mul(1000))),
        })
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub at_ms: i64,
    pub queue_id: String,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl TimelineEntry {
    pub fn new(at_ms: i64, queue_id: QueueId, message_id: Option<String>, kind: EventKind) -> Self {
        let at = UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64);
        Self {
            time: humantime::format_rfc3339_millis(at).to_string(),
            at_ms,
            queue_id: queue_id.to_string(),
            message_id,
            kind,
        }
    }

    /// `time  queue id  event  details`, as `bulwarkctl track` prints it.
    pub fn line(&self) -> String {
        format!(
            "{}  {}  {:<11}  {}",
            self.time,
            self.queue_id,
            self.kind.name(),
            describe(&self.kind, self.message_id.as_deref())
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub events: Vec<TimelineEntry>,
    pub truncated: bool,
}

/// The kind's fields as `key=value` words.
fn describe(kind: &EventKind, message_id: Option<&str>) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match kind {
        EventKind::Received {
            client,
            helo,
            tls,
            auth_user,
            size,
        } => format!(
            "client={client} helo={helo} tls={} auth={} size={size} message_id=<{}>",
            or_dash(tls),
            or_dash(auth_user),
            message_id.unwrap_or("")
        ),
        EventKind::Verdict {
            stage,
            verdict,
            reason,
            score,
        } => format!(
            "stage={stage} verdict={verdict} score={} reason={}",
            score.map_or_else(|| "-".into(), |s| s.to_string()),
            or_dash(reason)
        ),
        EventKind::Queued { recipients } => format!("recipients={recipients}"),
        EventKind::Attempt {
            recipient,
            relay,
            reply,
            dsn_status,
        } => format!(
            "to=<{recipient}> relay={} dsn={dsn_status} reply={reply}",
            or_dash(relay)
        ),
        EventKind::Delivered {
            recipient,
            relay,
            dsn_status,
        } => format!("to=<{recipient}> relay={} dsn={dsn_status}", or_dash(relay)),
        EventKind::Deferred {
            recipient,
            reason,
            retry_in_seconds,
        } => format!("to=<{recipient}> retry_in={retry_in_seconds}s reason={reason}"),
        EventKind::Bounced {
            recipient,
            dsn_status,
            reason,
        } => format!("to=<{recipient}> dsn={dsn_status} reason={reason}"),
        EventKind::Notice { action, notice_id } => format!("action={action} notice={notice_id}"),
        EventKind::Generated { from, reason } => format!("from={from} reason={reason}"),
        EventKind::Quarantined { stage, reason } | EventKind::Discarded { stage, reason } => {
            format!("stage={stage} reason={}", or_dash(reason))
        }
        EventKind::Released { by } | EventKind::Held { by } | EventKind::Deleted { by } => {
            format!("by={by}")
        }
        EventKind::Rejected { stage, reply } => format!("stage={stage} reply={reply}"),
        EventKind::Split { from, recipients } => {
            format!("from={from} recipients={}", recipients.join(","))
        }
        EventKind::Copied { from, reason } => format!("from={from} reason={}", or_dash(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_message_ids_are_normalised() {
        let query = Query {
            id: Some("00000000000000ab".into()),
            message_id: Some("<m@x>".into()),
            sender: Some("<Bob@X>".into()),
            ..Default::default()
        };
        let filter = query.filter(10_000).expect("valid");
        assert_eq!(filter.id, Some(QueueId(0xAB)));
        assert_eq!(filter.message_id.as_deref(), Some("m@x"));
        assert_eq!(filter.sender.as_deref(), Some("bob@x"));
        assert_eq!(filter.since_ms, None, "a filter given: no default window");
        assert!(filter.follows_links());
    }

    #[test]
    fn bad_ids_are_refused_and_no_filter_means_the_last_hour() {
        let bad = Query {
            id: Some("xyz".into()),
            ..Default::default()
        };
        assert_eq!(bad.filter(0), Err(QueryError::BadId("xyz".into())));
        let filter = Query::default().filter(7_200_000).expect("valid");
        assert_eq!(filter.since_ms, Some(3_600_000));
    }

    #[test]
    fn timeline_lines_name_time_id_event_and_details() {
        let entry = TimelineEntry::new(
            0,
            QueueId(1),
            Some("m@x".into()),
            EventKind::Delivered {
                recipient: "a@b".into(),
                relay: Some("mx[127.0.0.1]:25".into()),
                dsn_status: "2.0.0".into(),
            },
        );
        assert_eq!(
            entry.line(),
            "1970-01-01T00:00:00.000Z  0000000000000001  delivered    \
             to=<a@b> relay=mx[127.0.0.1]:25 dsn=2.0.0"
        );
        let json = serde_json::to_value(&entry).expect("serialise");
        assert_eq!(json["event"], "delivered");
        assert_eq!(json["recipient"], "a@b");
        let back: TimelineEntry = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, entry);
    }
}
