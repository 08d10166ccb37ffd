//! `[tracking]`: where message events are stored and how long they are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Message tracking (`bulwarkctl track`): every message's events in a local store.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TrackingConfig {
    /// The directory of the event store (created if missing).
    #[serde(default = "default_tracking_dir")]
    pub dir: PathBuf,
    /// Events older than this are purged.
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
}

fn default_tracking_dir() -> PathBuf {
    PathBuf::from("/var/lib/bulwark/tracking")
}

fn default_retention() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            dir: default_tracking_dir(),
            retention: default_retention(),
        }
    }
}
