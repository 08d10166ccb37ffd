//! The alert history: one JSON line per notice (fired, repeated, cleared) with how it was
//! delivered, appended under the console's state directory; read back for `/alerts` and
//! `GET /api/v1/alerts`, newest first.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Whether the alert started, is still on (a repeat), or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Fired,
    Repeated,
    Cleared,
}

/// One notice and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub at: u64,
    pub rule: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub change: Change,
    pub detail: String,
    /// The mail's queue id on the mail node, or why it could not be queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<Result<String, String>>,
    /// The webhook's HTTP status, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Result<u16, String>>,
}

/// The most notices read back for a page or an API answer.
const SHOWN: usize = 1000;

pub struct History {
    path: PathBuf,
    lock: Mutex<()>,
}

impl History {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn append(&self, notice: &Notice) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let written = serde_json::to_string(notice)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(file, "{line}")
            });
        if let Err(e) = written {
            log::error!(path:% = self.path.display(); "alert history write failed: {e}");
        }
    }

    /// The latest notices, newest first.
    pub fn recent(&self) -> Vec<Notice> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut notices: Vec<Notice> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        notices.reverse();
        notices.truncate(SHOWN);
        notices
    }
}
