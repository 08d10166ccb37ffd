//! The per-message state log (`queue/ID.st`): one JSON object per line, appended.
//!
//! Losing the tail of this log in a crash can only make Bulwark retry a recipient (a possible
//! duplicate), never lose one, so appends are not synced individually.

use serde::{Deserialize, Serialize};

use super::envelope::RecipientOutcome;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StateRecord {
    Hold,
    /// A delay notice was sent (only one per message).
    Warned,
    Release,
    Recipient {
        index: usize,
        outcome: RecipientOutcome,
    },
    Attempt {
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_at: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Parses a state log, ignoring a torn or garbled line (only the last can be torn).
pub fn replay(log: &[u8]) -> Vec<StateRecord> {
    log.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect()
}

pub fn encode(record: &StateRecord) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_ignored() {
        let mut log = encode(&StateRecord::Hold);
        log.extend(encode(&StateRecord::Release));
        log.extend_from_slice(b"{\"event\":\"ho");
        assert_eq!(replay(&log), vec![StateRecord::Hold, StateRecord::Release]);
    }
}
