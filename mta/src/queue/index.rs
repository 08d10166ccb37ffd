//! The in-memory view of the queue: what the operator lists and what delivery schedules.
//!
//! The spool on disk is the truth; the index is rebuilt from it on start (`Spool::open`'s
//! recovered messages plus their state logs) and updated only after the spool changed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::envelope::{Envelope, RecipientOutcome};
use super::id::QueueId;
use super::spool::Recovered;
use super::state::StateRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Waiting for delivery (or for its next attempt).
    Queued,
    /// Held by the operator: never delivered until released.
    Hold,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    pub id: String,
    pub arrival: u64,
    pub size: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub state: QueueState,
    pub next_attempt: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: u32,
    pub warned: bool,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    #[serde(skip)]
    pub envelope: Envelope,
}

impl QueueEntry {
    pub fn new(id: QueueId, envelope: Envelope, size: u64) -> Self {
        Self {
            id: id.to_string(),
            arrival: envelope.received_at,
            size,
            sender: envelope.sender.clone(),
            recipients: envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
            state: QueueState::Queued,
            next_attempt: None,
            last_error: None,
            attempts: 0,
            warned: false,
            message_id: envelope.message_id.clone(),
            subject: envelope.subject.clone(),
            envelope,
        }
    }

    fn apply(&mut self, record: &StateRecord) {
        match record {
            StateRecord::Hold => self.state = QueueState::Hold,
            StateRecord::Release => self.state = QueueState::Queued,
            StateRecord::Warned => self.warned = true,
            StateRecord::Recipient { index, outcome } => {
                if let Some(r) = self.envelope.recipients.get_mut(*index) {
                    r.outcome = outcome.clone();
                }
            }
            StateRecord::Attempt { next_at, error, .. } => {
                self.attempts += 1;
                self.next_attempt = *next_at;
                self.last_error = error.clone();
            }
        }
    }

    pub fn pending_recipients(&self) -> usize {
        self.envelope
            .recipients
            .iter()
            .filter(|r| r.outcome == RecipientOutcome::Pending)
            .count()
    }
}

#[derive(Default)]
pub struct QueueIndex {
    entries: Mutex<BTreeMap<QueueId, QueueEntry>>,
}

impl QueueIndex {
    pub fn from_recovered(recovered: Vec<Recovered>) -> Self {
        let index = QueueIndex::default();
        for message in recovered {
            let mut entry = QueueEntry::new(message.id, message.envelope, message.content_len);
            for record in &message.records {
                entry.apply(record);
            }
            index.insert(message.id, entry);
        }
        index
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<QueueId, QueueEntry>> {
        // A panic while holding the lock cannot leave an entry half-updated (apply is total),
        // so a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: QueueId, entry: QueueEntry) {
        self.lock().insert(id, entry);
    }

    pub fn apply(&self, id: QueueId, record: &StateRecord) -> bool {
        match self.lock().get_mut(&id) {
            Some(entry) => {
                entry.apply(record);
                true
            }
            None => false,
        }
    }

    /// Notes when the delivery engine will next try a message that waits without an attempt
    /// of its own (its destination is down): memory only, the engine re-derives it on start.
    pub fn schedule(&self, id: QueueId, next_at: u64) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.next_attempt = Some(next_at);
        }
    }

    /// Removes the entry if no recipient is pending; true when this call removed it, so
    /// exactly one of several concurrent finishers deletes the spool file.
    pub fn finish_if_done(&self, id: QueueId) -> bool {
        let mut entries = self.lock();
        let done = entries
            .get(&id)
            .is_some_and(|entry| entry.pending_recipients() == 0);
        if done {
            entries.remove(&id);
        }
        done
    }

    pub fn remove(&self, id: QueueId) -> Option<QueueEntry> {
        self.lock().remove(&id)
    }

    /// Looks at an entry without copying it (the delivery engine's per-message path).
    pub fn inspect<T>(&self, id: QueueId, look: impl FnOnce(&QueueEntry) -> T) -> Option<T> {
        self.lock().get(&id).map(look)
    }

    pub fn get(&self, id: QueueId) -> Option<QueueEntry> {
        self.lock().get(&id).cloned()
    }

    pub fn contains(&self, id: QueueId) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn list(&self) -> Vec<QueueEntry> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn total_size(&self) -> u64 {
        self.lock().values().map(|e| e.size).sum()
    }
}
