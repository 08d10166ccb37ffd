//! Requests and responses on the control socket.

use serde::{Deserialize, Serialize};

use crate::quarantine::Filter;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    QueueList,
    QueueShow {
        id: String,
        #[serde(default)]
        body: bool,
        /// Add every attempt and state change (the spool's state log, and the tracking
        /// store's per-recipient attempts with relay and reply).
        #[serde(default)]
        history: bool,
    },
    QueueHold {
        ids: Vec<String>,
    },
    QueueRelease {
        ids: Vec<String>,
    },
    QueueDelete {
        ids: Vec<String>,
    },
    /// Retry now: everything, or one destination (as `queue destinations` names it).
    QueueFlush {
        #[serde(default)]
        destination: Option<String>,
    },
    /// Try one message now.
    QueueDeliver {
        id: String,
    },
    /// Route messages again with the running configuration and try them now (postsuper -r):
    /// after a route or transport change, mail already waiting for the old next hop moves.
    QueueRequeue {
        ids: Vec<String>,
    },
    QueueDestinations,
    Reload,
    /// The running configuration (restart-only keys as running, not as in the file).
    ConfigShow,
    /// Every key whose running value differs from the file's.
    ConfigDiff,
    /// Sets the log level at run time (off, error, warn, info, debug, trace).
    LogLevel {
        level: String,
    },
    FlowStatus,
    FlowTop {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Blocks `target` (ADDR or ADDR/LEN) for `seconds` (none = until unblocked).
    FlowBlock {
        target: String,
        #[serde(default)]
        seconds: Option<u64>,
    },
    FlowUnblock {
        target: String,
    },
    FlowList,
    /// The configuration file's text.
    ConfigGet,
    /// Checks `text` as a configuration file: `problems` with line and column, nothing changed.
    ConfigValidate {
        text: String,
    },
    /// Validates `text`, replaces the file (the old one kept as `FILE.previous`), reloads, and
    /// records it in the history with `by` (who) and `note` (why, e.g. "rollback to 3").
    ConfigPut {
        text: String,
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        note: Option<String>,
    },
    /// The versions applied over the control protocol, oldest first (`config_history`).
    ConfigHistory,
    /// The text of one version of the history.
    ConfigVersion {
        version: u64,
    },
    /// Engines, signature versions and ages, scan counters.
    AvStatus,
    /// Installs the signature bundle at `path` (its signature at `path.sig`).
    AvUpdate {
        path: String,
    },
    /// Reloads the signature directory (after a change made outside Bulwark).
    AvReload,
    /// The effective outbound TLS policy for a recipient domain (`bulwarkctl tls policy`).
    TlsPolicy {
        domain: String,
    },
    /// A message timeline (`bulwarkctl track`).
    Track(crate::track::Query),
    QuarantineList {
        #[serde(default)]
        filter: Filter,
    },
    /// The entry, its record and the message as text; `raw` adds the exact bytes (base64).
    QuarantineShow {
        id: String,
        #[serde(default)]
        raw: bool,
    },
    /// Re-queues each message once, to all its unreleased recipients or only to `to`.
    /// With `not_spam`, each message is first learned as ham by the anti-spam model.
    QuarantineRelease {
        ids: Vec<String>,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        not_spam: bool,
    },
    /// With `spam`, each message is first learned as spam by the anti-spam model.
    QuarantineDelete {
        ids: Vec<String>,
        #[serde(default)]
        spam: bool,
    },
    /// Queues a message the console wrote (an alert, a report, a digest) through this node's
    /// own queue: `message` is the whole RFC 5322 text; no content filter runs on it.
    Submit {
        sender: String,
        recipients: Vec<String>,
        message: String,
    },
    /// Totals of the tracking store between two times (milliseconds since the epoch): the
    /// numbers of the console's daily and weekly reports.
    TrackSummary {
        from_ms: i64,
        to_ms: i64,
        #[serde(default = "default_top")]
        top: usize,
    },
}

fn default_top() -> usize {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            result,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            result: serde_json::Value::Null,
        }
    }
}

/// Longest request line the daemon reads (ids lists included).
pub const MAX_REQUEST: usize = 1024 * 1024;
