//! Outbound rate limits (`[outbound_limit]`): messages and recipients per window, counted per
//! authenticated user, per envelope sender and per sending client. Over the limit, mail is
//! deferred (451 4.7.1) or held in the quarantine for review — never bounced — and an alert
//! fires: a compromised account must not get the organisation blocklisted.
//!
//! # Invariants
//! - A message is counted against every key at once, and only when no key is over: a
//!   deferred message costs nothing, so the client's retry is not double-counted.
//! - Sliding windows: a key's usage is kept in `SLOTS` slots of `window / SLOTS` each, and a
//!   message is allowed only when the slots that overlap the last `window` plus this message
//!   stay within the limit. So no stretch of `window` length ever holds more than the limit (a
//!   burst at the edge of a fixed window could have doubled it); a refused message gets
//!   through once the oldest slot has aged out, at most one slot later than exactly.
//! - Memory per key is bounded (at most `SLOTS + 1` slots).
//! - The counters are written to the state file (temporary file, fsync, rename) before the
//!   stage answers, so a restart keeps them; a missing file is an empty ledger, an unreadable
//!   one is logged and replaced. A file from the fixed-window version is read as one slot per
//!   key (conservatively, at its window's start).
//! - The alert (a warning event with `alert = "outbound_limit"` and the
//!   `bulwark_outbound_limit_alerts_total` metric) fires once when a key goes over, not for
//!   every refused message; each refused message is still one info event. A key is alerted
//!   about again once its usage has left the window entirely (or after a restart).
//! - The ledger lives in the gateway (`LedgerSlot`), so a reload keeps the counts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{DirectionScope, LimitKey, OutboundLimitConfig, OverLimit};
use crate::pipeline::{Answer, Context, Decision, Stage, StageError, Verdict};
use crate::queue::unix_now;
use crate::smtp::reply::Reply;

/// Slots per window: the window slides in steps of `window / SLOTS` (a minute for an hour).
const SLOTS: u64 = 60;

/// What a key sent in one slot of time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Slot {
    start: u64,
    messages: u64,
    recipients: u64,
}

/// One key's recent usage, oldest slot first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Usage {
    slots: VecDeque<Slot>,
}

impl Usage {
    /// Drops the slots that no longer overlap the window ending at `now`.
    fn expire(&mut self, now: u64, window: u64, width: u64) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.start + width + window <= now)
        {
            self.slots.pop_front();
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(m, r), s| {
            (m + s.messages, r.saturating_add(s.recipients))
        })
    }

    fn add(&mut self, now: u64, width: u64, recipients: u64) {
        let start = now - now % width;
        match self.slots.back_mut() {
            Some(slot) if slot.start == start => {
                slot.messages += 1;
                slot.recipients = slot.recipients.saturating_add(recipients);
            }
            _ => self.slots.push_back(Slot {
                start,
                messages: 1,
                recipients,
            }),
        }
    }
}

/// The fixed-window counter of the state file's first version.
#[derive(Debug, Clone, Copy, Deserialize)]
struct FixedCounter {
    window_start: u64,
    messages: u64,
    recipients: u64,
}

/// The state file: the sliding version, or the fixed-window one it replaced.
#[derive(Deserialize)]
#[serde(untagged)]
enum StateFile {
    Sliding { sliding: BTreeMap<String, Usage> },
    Fixed(BTreeMap<String, FixedCounter>),
}

#[derive(Serialize)]
struct StateFileOut<'a> {
    sliding: &'a BTreeMap<String, Usage>,
}

fn from_fixed(fixed: BTreeMap<String, FixedCounter>) -> BTreeMap<String, Usage> {
    fixed
        .into_iter()
        .map(|(key, c)| {
            let slot = Slot {
                start: c.window_start,
                messages: c.messages,
                recipients: c.recipients,
            };
            (
                key,
                Usage {
                    slots: [slot].into(),
                },
            )
        })
        .collect()
}

/// Which limit a key is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over {
    pub key: String,
    pub what: &'static str,
    /// What the key sent in the last window.
    pub count: u64,
    /// The key just went over (the alert fires); false while it stays over.
    pub newly: bool,
}

struct State {
    usage: BTreeMap<String, Usage>,
    /// Keys over a limit that the alert fired for.
    alerted: BTreeSet<String>,
}

/// The persistent counters.
pub struct Ledger {
    path: PathBuf,
    state: Mutex<State>,
    /// Alerts fired, by key kind (`user`, `sender`, `client`), for the metrics.
    alerts: Mutex<BTreeMap<&'static str, u64>>,
    /// Messages refused (deferred or held) since start.
    refused: AtomicU64,
}

fn read_state(path: &Path) -> BTreeMap<String, Usage> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(StateFile::Sliding { sliding }) => sliding,
            Ok(StateFile::Fixed(fixed)) => from_fixed(fixed),
            Err(e) => {
                log::error!(
                    "outbound_limit: {}: unreadable state, starting empty: {e}",
                    path.display()
                );
                BTreeMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            log::error!("outbound_limit: {}: {e}; starting empty", path.display());
            BTreeMap::new()
        }
    }
}

/// `sender:a@b` → `sender`.
fn key_kind(key: &str) -> &'static str {
    match key.split_once(':').map(|(kind, _)| kind) {
        Some("user") => "user",
        Some("sender") => "sender",
        Some("client") => "client",
        _ => "other",
    }
}

impl Ledger {
    pub fn open(path: &Path) -> Ledger {
        Ledger {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                usage: read_state(path),
                alerted: BTreeSet::new(),
            }),
            alerts: Mutex::new(BTreeMap::new()),
            refused: AtomicU64::new(0),
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
        let width = window.div_ceil(SLOTS).max(1);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { usage, alerted } = &mut *state;
        usage.retain(|key, usage| {
            usage.expire(now, window, width);
            let active = !usage.slots.is_empty();
            if !active {
                alerted.remove(key);
            }
            active
        });
        for key in keys {
            let (messages, sent_to) = state.usage.get(key).map(Usage::totals).unwrap_or_default();
            let over = |limit: u64, used: u64, adding: u64| {
                limit > 0 && used.saturating_add(adding) > limit
            };
            let what = if over(config.messages, messages, 1) {
                Some(("messages", messages))
            } else if over(config.recipients, sent_to, recipients) {
                Some(("recipients", sent_to))
            } else {
                None
            };
            if let Some((what, count)) = what {
                let newly = state.alerted.insert(key.clone());
                self.count_refusal(key, newly);
                return Err(Over {
                    key: key.clone(),
                    what,
                    count,
                    newly,
                });
            }
        }
        for key in keys {
            state
                .usage
                .entry(key.clone())
                .or_default()
                .add(now, width, recipients);
        }
        if let Err(e) = self.persist(&state.usage) {
            log::error!("outbound_limit: cannot save {}: {e}", self.path.display());
        }
        Ok(())
    }

    fn count_refusal(&self, key: &str, newly: bool) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if newly {
            let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
            *alerts.entry(key_kind(key)).or_default() += 1;
        }
    }

    /// Alerts fired by key kind, and messages refused, since start (for `/metrics`).
    pub fn alert_counts(&self) -> (Vec<(&'static str, u64)>, u64) {
        let alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        (
            alerts.iter().map(|(k, v)| (*k, *v)).collect(),
            self.refused.load(Ordering::Relaxed),
        )
    }

    fn persist(&self, usage: &BTreeMap<String, Usage>) -> std::io::Result<()> {
        let bytes =
            serde_json::to_vec(&StateFileOut { sliding: usage }).map_err(std::io::Error::other)?;
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

    /// The ledger in use, if outbound limits are configured (or were, before a reload).
    pub fn current(&self) -> Option<Arc<Ledger>> {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        let outcome = match self.config.over_limit {
            OverLimit::Hold => "held",
            OverLimit::Defer => "deferred",
        };
        if over.newly {
            log::warn!(
                queue_id:% = cx.queue_id, alert = "outbound_limit", key = over.key.as_str(),
                limit = over.what, count = over.count, outcome = outcome;
                "alert: outbound limit reached: {} sent {} {} in the last {}; id={} {outcome}",
                over.key, over.count, over.what,
                humantime::format_duration(self.config.window), cx.queue_id
            );
        } else {
            log::info!(
                queue_id:% = cx.queue_id, key = over.key.as_str(), limit = over.what,
                outcome = outcome;
                "outbound_limit: id={} {outcome}: {} is still over its {} limit",
                cx.queue_id, over.key, over.what
            );
        }
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
        assert_eq!((over.what, over.newly), ("messages", true));
        let again = ledger.charge(&keys, 1, &config(2), 102).expect_err("still");
        assert!(!again.newly, "the alert fires once per episode");
        assert_eq!(ledger.alert_counts(), (vec![("sender", 1)], 2));
        let reopened = Ledger::open(&path);
        assert!(
            reopened.charge(&keys, 1, &config(2), 103).is_err(),
            "survives a restart"
        );
        // Slots are a second wide (60 s / 60): the first ages out at 100 + 1 + 60.
        assert!(reopened.charge(&keys, 1, &config(2), 160).is_err());
        assert!(
            reopened.charge(&keys, 1, &config(2), 161).is_ok(),
            "the oldest slot left the window"
        );
        let over = reopened
            .charge(&keys, 5, &config(10), 230)
            .expect_err("too many recipients");
        assert_eq!(over.what, "recipients");
    }

    #[test]
    fn a_burst_at_the_window_edge_cannot_double_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(&dir.path().join("limits.json"));
        let keys = vec!["client:192.0.2.1".to_string()];
        let limit = OutboundLimitConfig {
            recipients: 0,
            ..config(10)
        };
        // One message early in the window, nine just before a fixed window would have ended.
        assert!(ledger.charge(&keys, 1, &limit, 1000).is_ok());
        for _ in 0..9 {
            assert!(ledger.charge(&keys, 1, &limit, 1058).is_ok());
        }
        assert!(ledger.charge(&keys, 1, &limit, 1059).is_err());
        // Past the first message's window: only its one place is free, the nine still count.
        assert!(ledger.charge(&keys, 1, &limit, 1061).is_ok());
        assert!(ledger.charge(&keys, 1, &limit, 1062).is_err());
        assert!(ledger.charge(&keys, 1, &limit, 1118).is_err());
        for _ in 0..9 {
            assert!(ledger.charge(&keys, 1, &limit, 1119).is_ok());
        }
        // No 60 s stretch ever held more than ten.
    }

    #[test]
    fn a_fixed_window_state_file_is_read_conservatively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("limits.json");
        std::fs::write(
            &path,
            br#"{"sender:a@x":{"window_start":100,"messages":2,"recipients":2}}"#,
        )
        .expect("write");
        let ledger = Ledger::open(&path);
        let keys = vec!["sender:a@x".to_string()];
        assert!(ledger.charge(&keys, 1, &config(2), 150).is_err());
        assert!(ledger.charge(&keys, 1, &config(2), 161).is_ok());
        let saved = std::fs::read_to_string(&path).expect("saved");
        assert!(saved.starts_with(r#"{"sliding":"#), "{saved}");
    }
}
