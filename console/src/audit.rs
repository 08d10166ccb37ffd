//! The audit log: one JSON line per change (who, when, what, from where, outcome), appended
//! and flushed before the change's answer is sent; viewable on /audit, exported as JSON lines
//! at /audit.jsonl.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub struct Audit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Audit {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn record(&self, user: &str, from: IpAddr, action: &str, detail: Value, ok: bool) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = json!({ "at": at, "user": user, "from": from.to_string(), "action": action, "detail": detail, "ok": ok });
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(e) = written {
            log::error!(path:% = self.path.display(); "audit log write failed: {e}");
        }
        log::info!(user = user, from:% = from, action = action, ok = ok; "console change");
    }

    /// Every record, oldest first.
    pub fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    pub fn export(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}
