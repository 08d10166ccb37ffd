//! The events of a message's life, as stored and as shown by `bulwarkctl track`.
//!
//! An [`Event`] names its message by queue id (the id of the `250 ... queued as ID` reply) and,
//! when known, by Message-ID: the Message-ID links the copies of a split and the same message
//! on a second Bulwark node. Message-IDs are stored normalised ([`normalise_message_id`]),
//! addresses lower-cased ([`normalise_address`]), so a search matches however they were written.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::queue::QueueId;

/// One thing that happened to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The client sent it (before the filters decided).
    Received {
        client: String,
        helo: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_user: Option<String>,
        size: u64,
    },
    /// One rule's or filter's decision.
    Verdict {
        stage: String,
        verdict: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
    },
    /// Safe in the spool; the client got its 250.
    Queued {
        recipients: usize,
    },
    /// One try to hand a recipient to a next hop (`relay` is None when none could be reached).
    Attempt {
        recipient: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        reply: String,
        dsn_status: String,
    },
    Delivered {
        recipient: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        dsn_status: String,
    },
    /// A temporary failure; the next try is due in `retry_in_seconds`.
    Deferred {
        recipient: String,
        reason: String,
        retry_in_seconds: u64,
    },
    Bounced {
        recipient: String,
        dsn_status: String,
        reason: String,
    },
    /// A delivery status notice (`failed`, `delayed`, `relayed`) was queued as `notice_id`.
    Notice {
        action: String,
        #[serde(with = "hex_id")]
        notice_id: QueueId,
    },
    /// This message is a notice Bulwark generated about message `from`.
    Generated {
        #[serde(with = "hex_id")]
        from: QueueId,
        reason: String,
    },
    Quarantined {
        stage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Released {
        by: String,
    },
    Held {
        by: String,
    },
    Deleted {
        by: String,
    },
    Discarded {
        stage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Rejected {
        stage: String,
        reply: String,
    },
    /// This message carries part of the recipients of message `from`.
    Split {
        #[serde(with = "hex_id")]
        from: QueueId,
        recipients: Vec<String>,
    },
    /// This message is a copy of message `from` (a `copy` rule, a redirect).
    Copied {
        #[serde(with = "hex_id")]
        from: QueueId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl EventKind {
    /// The stored and shown name (`received`, `delivered`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Received { .. } => "received",
            EventKind::Verdict { .. } => "verdict",
            EventKind::Queued { .. } => "queued",
            EventKind::Attempt { .. } => "attempt",
            EventKind::Delivered { .. } => "delivered",
            EventKind::Deferred { .. } => "deferred",
            EventKind::Bounced { .. } => "bounced",
            EventKind::Notice { .. } => "notice",
            EventKind::Generated { .. } => "generated",
            EventKind::Quarantined { .. } => "quarantined",
            EventKind::Released { .. } => "released",
            EventKind::Held { .. } => "held",
            EventKind::Deleted { .. } => "deleted",
            EventKind::Discarded { .. } => "discarded",
            EventKind::Rejected { .. } => "rejected",
            EventKind::Split { .. } => "split",
            EventKind::Copied { .. } => "copied",
        }
    }

    /// The message this one was made from (split, copy, notice), if any.
    pub fn derived_from(&self) -> Option<QueueId> {
        match self {
            EventKind::Generated { from, .. }
            | EventKind::Split { from, .. }
            | EventKind::Copied { from, .. } => Some(*from),
            _ => None,
        }
    }
}

/// An event with the keys it is found by.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub queue_id: QueueId,
    /// Normalised (no angle brackets, no surrounding space).
    pub message_id: Option<String>,
    /// Normalised envelope sender (`""` for the null sender), when this event carries it.
    pub sender: Option<String>,
    /// Normalised envelope recipients, when this event carries them.
    pub recipients: Vec<String>,
    pub kind: EventKind,
}

impl Event {
    /// An event now. `message_id` may be written with or without angle brackets.
    pub fn new(queue_id: QueueId, message_id: Option<&str>, kind: EventKind) -> Self {
        Self {
            at_ms: now_ms(),
            queue_id,
            message_id: message_id.and_then(normalise_message_id),
            sender: None,
            recipients: Vec::new(),
            kind,
        }
    }

    /// Makes the message findable by its envelope (`--sender`, `--recipient`).
    pub fn with_envelope<'a>(
        mut self,
        sender: &str,
        recipients: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.sender = Some(normalise_address(sender));
        self.recipients = recipients.into_iter().map(normalise_address).collect();
        self
    }

    /// The same event at another time (tests, benchmarks, replayed history).
    pub fn at(mut self, at_ms: i64) -> Self {
        self.at_ms = at_ms;
        self
    }
}

/// `<abc@example.com>`, ` abc@example.com ` and `abc@example.com` are one Message-ID.
/// None for an empty one.
pub fn normalise_message_id(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(trimmed)
        .trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// Addresses are searched case-insensitively and without angle brackets; `<>` is `""`.
pub fn normalise_address(text: &str) -> String {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(trimmed);
    inner.to_lowercase()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Queue ids in events are written as in the `queued as` reply: 16 hex digits.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::queue::QueueId;

    pub fn serialize<S: Serializer>(id: &QueueId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<QueueId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.to_ascii_uppercase()
            .parse()
            .map_err(|()| serde::de::Error::custom(format!("{text:?} is not a queue id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_one_with_or_without_brackets() {
        assert_eq!(
            normalise_message_id("<abc@example.com>").as_deref(),
            Some("abc@example.com")
        );
        assert_eq!(
            normalise_message_id("  abc@example.com ").as_deref(),
            Some("abc@example.com")
        );
        assert_eq!(normalise_message_id("<>"), None);
        assert_eq!(normalise_message_id(""), None);
    }

    #[test]
    fn addresses_are_lower_cased_and_unbracketed() {
        assert_eq!(
            normalise_address("<Alice@Example.COM>"),
            "alice@example.com"
        );
        assert_eq!(normalise_address("<>"), "");
    }

    #[test]
    fn kinds_serialise_with_their_name_and_hex_ids() {
        let kind = EventKind::Split {
            from: QueueId(0xAB),
            recipients: vec!["a@b".into()],
        };
        let json = serde_json::to_value(&kind).expect("serialise");
        assert_eq!(json["event"], "split");
        assert_eq!(json["from"], "00000000000000AB");
        let back: EventKind = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, kind);
        assert_eq!(back.derived_from(), Some(QueueId(0xAB)));
        assert_eq!(back.name(), "split");
    }
}
