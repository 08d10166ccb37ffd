//! Outbound rate limits (`[outbound_limit]`): messages and recipients per window, counted per
//! authenticated user, per envelope sender and per sending client. Over the limit, mail is
//! deferred (451 4.7.1) or held in the quarantine for review — never bounced — and an alert
//! event is logged: a compromised account must not get the organisation blocklisted.
//!
//! # Invariants
//! - A message is counted against every key at once, and only when no key is over: a
//!   deferred message costs nothing, so the client's retry is not double-counted.
//! - Fixed windows per key, starting at its first message. The counters are written to the
//!   state file (temporary file, fsync, rename) before the stage answers, so a restart keeps
//!   them; a missing file is an empty ledger, an unreadable one is logged and replaced.
//! - The ledger lives in the gateway (`LedgerSlot`), so a reload keeps the counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{DirectionScope, LimitKey, OutboundLimitConfig, OverLimit};
use crate::pipeline::{Answer, Context, Decision, Stage, StageError, Verdict};
use crate::queue::unix_now;
use crate::smtp::reply::Reply;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Counter {
    window_start: u64,
    messages: u64,
    recipients: u64,
}

/// Which limit a key is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over {
    pub key: String,
    pub what: &'static str,
    pub count: u64,
}

/// The persistent counters.
pub struct Ledger {
    path: PathBuf,
    counters: Mutex<BTreeMap<String, Counter>>,
}

impl Ledger {
    pub fn open(path: &Path) -> Ledger {
        let counters = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::error!(
                    "outbound_limit: {}: unreadable state, starting empty: {e}",
                    path.display()
                );
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                log::error!("outbound_limit: {}: {e}; starting empty", path.display());
                BTreeMap::new()
            }
        };
        Ledger {
            path: path.to_path_buf(),
            counters: Mutex::new(counters),
        }
    }

    /// Counts one message with `recipients` against every key, unless one is over.
    pub fn charge(
        &self,
        keys: &[String],
        recipients: u64,
        config: &OutboundLimitConfig,
        now: u64,
    ) -> Result<(), Over> {
        let window = config.window.as_secs().max(1);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|_, c| now < c.window_start + window);
        for key in keys {
            let current = counters.get(key).copied().unwrap_or_default();
            let over = |limit: u64, used: u64, adding: u64| limit > 0 && used + adding > limit;
            if over(config.messages, current.messages, 1) {
                return Err(Over {
                    key: key.clone(),
                    what: "messages",
                    count: current.messages,
                });
            }
            if over(config.recipients, current.recipients, recipients) {
                return Err(Over {
                    key: key.clone(),
                    what: "recipients",
                    count: current.recipients,
                });
            }
        }
        for key in keys {
            let counter = counters.entry(key.clone()).or_insert(Counter {
                window_start: now,
                ..Counter::default()
            });
            counter.messages += 1;
            counter.recipients += recipients;
        }
        if let Err(e) = self.persist(&counters) {
            log::error!("outbound_limit: cannot save {}: {e}", self.path.display());
        }
        Ok(())
    }

    fn persist(&self, counters: &BTreeMap<String, Counter>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(counters).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// The gateway's ledger, kept across reloads while the state file stays the same.
#[derive(Default)]
pub struct LedgerSlot {
    ledger: Mutex<Option<Arc<Ledger>>>,
}

impl LedgerSlot {
    pub fn get(&self, path: &Path) -> Arc<Ledger> {
        let mut slot = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(ledger) if ledger.path == path => ledger.clone(),
            _ => {
                let ledger = Arc::new(Ledger::open(path));
                *slot = Some(ledger.clone());
                ledger
            }
        }
    }
}

/// The pipeline stage.
pub struct OutboundLimit {
    config: OutboundLimitConfig,
    ledger: Arc<Ledger>,
}

impl OutboundLimit {
    pub fn new(config: OutboundLimitConfig, ledger: Arc<Ledger>) -> Self {
        OutboundLimit { config, ledger }
    }

    fn keys(&self, cx: &Context<'_>) -> Vec<String> {
        let mut keys = Vec::new();
        for kind in &self.config.per {
            match kind {
                LimitKey::User => {
                    keys.extend(cx.session.auth_user.as_ref().map(|u| format!("user:{u}")))
                }
                LimitKey::Sender if !cx.envelope.sender.is_empty() => keys.push(format!(
                    "sender:{}",
                    cx.envelope.sender.to_ascii_lowercase()
                )),
                LimitKey::Sender => {}
                LimitKey::Client => keys.push(format!("client:{}", cx.session.client.ip())),
            }
        }
        keys
    }
}

#[async_trait]
impl Stage for OutboundLimit {
    fn name(&self) -> &str {
        "outbound_limit"
    }

    fn scope(&self) -> DirectionScope {
        DirectionScope::Outbound
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
        let keys = self.keys(cx);
        let recipients = cx.recipients.len() as u64;
        let Err(over) = self
            .ledger
            .charge(&keys, recipients, &self.config, unix_now())
        else {
            return Ok(Decision::default().into());
        };
        log::warn!(
            queue_id:% = cx.queue_id, alert = "outbound_limit", key = over.key.as_str(),
            limit = over.what;
            "alert: outbound limit reached: {} sent {} {} in the current window; id={} {}",
            over.key, over.count, over.what, cx.queue_id,
            if self.config.over_limit == OverLimit::Hold { "held" } else { "deferred" }
        );
        let reason = format!("outbound limit of {} reached for {}", over.what, over.key);
        let verdict = match self.config.over_limit {
            OverLimit::Defer => Verdict::Tempfail(Reply::owned(
                451,
                format!(
                    "4.7.1 Outbound limit reached for {}, try again later",
                    over.key
                ),
            )),
            OverLimit::Hold => Verdict::Quarantine,
        };
        Ok(Decision::new(verdict).with_reason(reason).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(messages: u64) -> OutboundLimitConfig {
        OutboundLimitConfig {
            per: vec![LimitKey::Sender],
            messages,
            recipients: 3,
            window: Duration::from_secs(60),
            over_limit: OverLimit::Defer,
            state_file: None,
        }
    }

    #[test]
    fn limits_count_persist_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("limits.json");
        let keys = vec!["sender:a@x".to_string()];
        let ledger = Ledger::open(&path);
        assert!(ledger.charge(&keys, 1, &config(2), 100).is_ok());
        assert!(ledger.charge(&keys, 1, &config(2), 101).is_ok());
        let over = ledger
            .charge(&keys, 1, &config(2), 102)
            .expect_err("third is over");
        assert_eq!(over.what, "messages");
        let reopened = Ledger::open(&path);
        assert!(
            reopened.charge(&keys, 1, &config(2), 103).is_err(),
            "survives a restart"
        );
        assert!(
            reopened.charge(&keys, 1, &config(2), 161).is_ok(),
            "a new window"
        );
        let over = reopened
            .charge(&keys, 5, &config(10), 162)
            .expect_err("too many recipients");
        assert_eq!(over.what, "recipients");
    }
}
