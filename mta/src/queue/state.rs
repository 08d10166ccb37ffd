//! The per-message state log (`queue/ID.st`): one JSON object per line, appended.
//!
//! Losing the tail of this log in a crash can only make Bulwark retry a recipient (a possible
//! duplicate), never lose one, so delivery's appends are not synced individually. The
//! operator's hold and release are (`Spool::record_durably`): a power cut must not release
//! held mail.

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

/// Parses a state log and counts the damaged lines other than the last (a torn last line is
/// what a crash leaves; any other is damage that recovery reports).
pub fn replay_checked(log: &[u8]) -> (Vec<StateRecord>, usize) {
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    let mut damaged = 0;
    for (at, line) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(_) if at + 1 == lines.len() && !log.ends_with(b"\n") => {}
            Err(_) => damaged += 1,
        }
    }
    (records, damaged)
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
        assert_eq!(
            replay_checked(&log),
            (vec![StateRecord::Hold, StateRecord::Release], 0),
            "a torn tail is ignored and is not damage"
        );
        let mut damaged = b"{\"event\":\"ho\n".to_vec();
        damaged.extend(encode(&StateRecord::Release));
        assert_eq!(replay_checked(&damaged), (vec![StateRecord::Release], 1));
    }
}
