//! The console's operations, under `[console]`: how it sends mail (`[console.mail]`, through
//! one node's own queue), alerts (`[console.alerts]` with `[[console.alerts.rule]]`), reports
//! (`[console.reports]`) and quarantine digests (`[console.digest]`). Read only by
//! `bulwark-console`; `load` checks them (line:column) with the rest of the file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[console.mail]`: the console's mail (alerts, reports, digests) is queued on `node`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleMailConfig {
    /// A `[[console.node]]` name.
    pub node: String,
    /// The envelope sender and `From:` of the console's mail.
    pub from: String,
}

/// `[console.alerts]`: rules evaluated over every node each `interval`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertsConfig {
    #[serde(default = "default_alert_interval", with = "duration")]
    pub interval: Duration,
    /// Mailed (through `[console.mail]`) when an alert fires and when it clears.
    #[serde(default)]
    pub mail_to: Vec<String>,
    /// `http://` or `https://` URL that gets each firing and clearing as a JSON POST.
    #[serde(default)]
    pub webhook: Option<String>,
    /// A condition still true this long after its notice is notified again.
    #[serde(default = "default_alert_repeat", with = "duration")]
    pub repeat: Duration,
    #[serde(default, rename = "rule")]
    pub rules: Vec<AlertRule>,
}

/// One `[[console.alerts.rule]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertRule {
    pub name: String,
    pub when: AlertCondition,
    /// Messages (`queue_above`) or percent (`disk_nearly_full`, `spool_nearly_full`).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Age (`oldest_older_than`, `signatures_stale`), how long (`destination_down`,
    /// `node_unreachable`; 0 = at once) or how far ahead (`certificate_expiring`).
    #[serde(default, with = "duration")]
    pub duration: Duration,
    /// Only these `[[console.node]]` names; empty: every node.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCondition {
    /// More than `limit` messages in a node's queue.
    QueueAbove,
    /// The oldest queued message arrived more than `duration` ago.
    OldestOlderThan,
    /// A destination has been down (refusing or unreachable) for `duration`.
    DestinationDown,
    /// Anti-virus signatures older than `duration` (0: the node's own `max_signature_age`).
    SignaturesStale,
    /// The spool's file system is more than `limit` percent used.
    DiskNearlyFull,
    /// More than `limit` percent of the space left above `[server] min_free_space` is gone:
    /// the node nears the point where it answers 452 to new mail.
    SpoolNearlyFull,
    /// A certificate the node serves expires within `duration`.
    CertificateExpiring,
    /// The node has not answered for `duration`.
    NodeUnreachable,
}

impl AlertCondition {
    /// Whether the rule needs `limit`.
    pub fn needs_limit(self) -> bool {
        matches!(
            self,
            Self::QueueAbove | Self::DiskNearlyFull | Self::SpoolNearlyFull
        )
    }

    /// Whether the rule needs a non-zero `duration`.
    pub fn needs_duration(self) -> bool {
        matches!(self, Self::OldestOlderThan | Self::CertificateExpiring)
    }
}

/// `[console.reports]`: daily and weekly reports mailed at `hour` (UTC); weekly on Mondays.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReportsConfig {
    #[serde(default)]
    pub mail_to: Vec<String>,
    #[serde(default = "default_true")]
    pub daily: bool,
    #[serde(default = "default_true")]
    pub weekly: bool,
    #[serde(default = "default_report_hour")]
    pub hour: u8,
    /// Entries in each "top" list.
    #[serde(default = "default_top")]
    pub top: usize,
}

/// `[console.digest]`: a daily mail at `hour` (UTC) to each recipient with quarantined mail,
/// listing it with signed release links valid for `link_lifetime`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DigestConfig {
    #[serde(default = "default_digest_hour")]
    pub hour: u8,
    #[serde(default = "default_link_lifetime", with = "duration")]
    pub link_lifetime: Duration,
    /// Only recipients in these domains get a digest; empty: every recipient.
    #[serde(default)]
    pub domains: Vec<String>,
}

fn default_alert_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_alert_repeat() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_true() -> bool {
    true
}
fn default_report_hour() -> u8 {
    6
}
fn default_digest_hour() -> u8 {
    7
}
fn default_top() -> usize {
    10
}
fn default_link_lifetime() -> Duration {
    Duration::from_secs(72 * 3600)
}
