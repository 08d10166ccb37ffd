//! The content pipeline: what happens to a message between the end of DATA and the 250.
//!
//! Every content filter (rules, anti-virus, anti-spam, milters) is a [`Stage`]. A stage sees
//! the session, the envelope and the whole message ([`MessageContent`]: memory for small
//! messages, the spool draft's file for large ones; its MIME tree parsed once, on demand, and
//! shared) and answers with a [`Decision`]: a [`Verdict`] plus a list of [`Modification`]s
//! (the milter modification set, so a milter maps onto it one to one).
//!
//! # Contract
//! - Stages run in order on the message *as received*: like Postfix's milters, a stage does not
//!   see an earlier stage's edits. The edits of every stage are applied once, in order, into a
//!   fresh draft (`apply.rs`) after our Received: header; nothing else edits a message.
//! - A message no stage changes is committed from its original draft (the journal fast path).
//! - The reply is sent only once the message's final form — or its quarantine copy — is
//!   durable (`outcome.rs`): the spool's rule "250 only after commit" holds for every group.
//! - Per-recipient policy: a stage may answer differently for groups of recipients
//!   ([`Answer::PerRecipient`]); the message is then split into one queued copy per group with
//!   the same outcome (as amavis does). The client is told 5xx only when every group rejects,
//!   4xx when any group tempfails (nothing is committed then, so a retry duplicates nothing);
//!   otherwise 250, and rejected recipients get a delivery status notification.
//! - Each stage has a time budget and an `on_error` policy; the whole chain has a budget below
//!   the client's DATA patience. A failed or late stage never loses mail: `tempfail` answers
//!   451 4.7.1 (nothing committed), `accept` goes on and marks the message unscanned.
//! - Every stage decision is one log event (`run.rs`).

mod apply;
mod content;
mod outcome;
mod run;
pub mod stages;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::config::{Direction, DirectionScope, OnError};
pub use apply::{apply_to_envelope, rewrite_header, HeaderEdit};
pub use content::{header_fields, ContentError, ContentReader, MessageContent};
pub use outcome::Disposal;
pub use run::{Group, GroupVerdict, Pipeline, Step};

use crate::policy::SessionInfo;
use crate::queue::{Envelope, QueueId};
use crate::smtp::reply::Reply;

/// What a stage sees of one message.
pub struct Context<'a> {
    pub session: &'a SessionInfo,
    pub direction: Direction,
    /// The id of the `250 ... queued as ID` reply (and of the quarantine entry).
    pub queue_id: QueueId,
    pub envelope: &'a Envelope,
    /// Indexes into `envelope.recipients` of the recipients this answer is for.
    pub recipients: &'a [usize],
    pub content: &'a MessageContent<'a>,
    /// What earlier stages found, for later stages (rules match `virus`, `spam_score_over`).
    pub findings: &'a Findings,
    /// Our `[server] hostname`.
    pub hostname: &'a str,
}

impl Context<'_> {
    /// The addresses of the recipients this answer is for.
    pub fn recipient_addresses(&self) -> impl Iterator<Item = &str> {
        self.recipients
            .iter()
            .filter_map(|&i| self.envelope.recipients.get(i))
            .map(|r| r.address.as_str())
    }
}

/// Facts a stage established that later stages may act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// The name of the malware found, if any.
    pub virus: Option<String>,
    /// The anti-spam score, if the message was scored.
    pub spam_score: Option<f64>,
    /// Named signals with their weights (anti-spam symbols, rule names).
    pub symbols: Vec<(String, f64)>,
}

impl Findings {
    /// Takes what `other` established; a later value replaces an earlier one.
    pub fn merge(&mut self, other: Findings) {
        if other.virus.is_some() {
            self.virus = other.virus;
        }
        if other.spam_score.is_some() {
            self.spam_score = other.spam_score;
        }
        self.symbols.extend(other.symbols);
    }
}

/// A stage's answer for the message (or for one group of its recipients).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Verdict {
    /// No objection; later stages decide.
    #[default]
    Continue,
    /// Deliver; later stages are not asked.
    Accept,
    /// 5xx with this exact reply.
    Reject(Reply),
    /// 4xx with this exact reply.
    Tempfail(Reply),
    /// 250, then dropped (logged and tracked).
    Discard,
    /// 250, then kept in the quarantine with the decision's reason.
    Quarantine,
}

impl Verdict {
    pub fn is_final(&self) -> bool {
        !matches!(self, Verdict::Continue)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
            Verdict::Discard => "discard",
            Verdict::Quarantine => "quarantine",
        }
    }
}

/// One change to the message, as a milter would request it (SMFIR_*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// Appended after the last header field (SMFIR_ADDHEADER).
    AddHeader { name: String, value: String },
    /// Inserted at `index`, 0 being the first field after our Received: (SMFIR_INSHEADER).
    InsertHeader {
        index: usize,
        name: String,
        value: String,
    },
    /// The `index`-th (1-based) field called `name` gets `value`, or is deleted when `None`
    /// (SMFIR_CHGHEADER); an index past the last occurrence appends the field.
    ChangeHeader {
        name: String,
        index: usize,
        value: Option<String>,
    },
    /// Every field called `name` is deleted.
    RemoveHeader { name: String },
    /// The body (after the empty line) is replaced, CRLF line ends (SMFIR_REPLBODY).
    ReplaceBody(Vec<u8>),
    /// SMFIR_ADDRCPT / SMFIR_ADDRCPT_PAR.
    AddRecipient {
        address: String,
        args: Option<String>,
    },
    /// SMFIR_DELRCPT.
    DeleteRecipient { address: String },
    /// SMFIR_CHGFROM.
    ChangeSender {
        address: String,
        args: Option<String>,
    },
}

impl Modification {
    /// Changes the content (as opposed to the envelope only).
    pub fn touches_content(&self) -> bool {
        !matches!(
            self,
            Modification::AddRecipient { .. }
                | Modification::DeleteRecipient { .. }
                | Modification::ChangeSender { .. }
        )
    }
}

/// A copy of the message as received to other recipients, queued as a message of its own with
/// the original envelope recorded in `X-Bulwark-Original-*` header fields (journaling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    pub recipients: Vec<String>,
    /// Who asked (rule or stage name), for the log and the tracking timeline.
    pub by: String,
}

/// A copy of the message as received written to a local archive directory (`archive_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRequest {
    pub dir: std::path::PathBuf,
    pub by: String,
}

/// A stage's decision for a group of recipients.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub verdict: Verdict,
    pub modifications: Vec<Modification>,
    pub copies: Vec<CopyRequest>,
    pub archives: Vec<ArchiveRequest>,
    /// The message is delivered changed (attachments stripped) and the original, as
    /// received, is kept in quarantine for this reason so it can be released whole.
    pub hold_original: Option<String>,
    /// Why (logged; shown in the quarantine and, for rules, in the reply text).
    pub reason: Option<String>,
    pub score: Option<f64>,
    /// Which part of the stage decided (a rule's name), when that is not the stage itself.
    pub decided_by: Option<String>,
    pub findings: Findings,
}

impl Decision {
    pub fn new(verdict: Verdict) -> Self {
        Decision {
            verdict,
            ..Decision::default()
        }
    }

    /// Nothing to say: no verdict, no change, no score (logged at debug, not tracked).
    pub fn is_quiet(&self) -> bool {
        self.verdict == Verdict::Continue
            && self.modifications.is_empty()
            && self.copies.is_empty()
            && self.score.is_none()
            && self.decided_by.is_none()
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// A stage's answer: one decision, or one per group of recipients (indexes into
/// `envelope.recipients`, a partition of `Context::recipients`).
#[derive(Debug, Clone, PartialEq)]
// One answer per stage and message, moved once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    One(Decision),
    PerRecipient(Vec<(Vec<usize>, Decision)>),
}

impl From<Decision> for Answer {
    fn from(decision: Decision) -> Self {
        Answer::One(decision)
    }
}

/// A stage could not decide (its scanner is down, it timed out, it broke its protocol).
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    pub stage: String,
    pub message: String,
}

impl StageError {
    pub fn new(stage: impl Into<String>, message: impl Into<String>) -> Self {
        StageError {
            stage: stage.into(),
            message: message.into(),
        }
    }
}

/// One content filter.
#[async_trait]
pub trait Stage: Send + Sync {
    /// The name in logs, tracking and quarantine entries.
    fn name(&self) -> &str;

    /// Which messages it looks at.
    fn scope(&self) -> DirectionScope {
        DirectionScope::Any
    }

    /// Its time budget per message (the pipeline enforces it).
    fn timeout(&self) -> Duration;

    /// What a failure or a timeout means for the message.
    fn on_error(&self) -> OnError {
        OnError::Tempfail
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError>;
}
