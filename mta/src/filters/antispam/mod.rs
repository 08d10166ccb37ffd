//! The anti-spam stage: one score from several signals, and an action by threshold.
//!
//! # Signals (each a named symbol with a weight; the score is their sum)
//! - The classifier (`model.rs`): logistic regression over hashed words, bigrams, URL hosts,
//!   header tokens and structural flags (`features.rs`, `html.rs`); the flags' learned
//!   shares are reported under their own names, the rest as `BW_CLASSIFIER`.
//! - The rules file (`rules.rs`; GTUBE is built in and always spam).
//! - Sender authentication (`auth.rs`): SPF, DKIM, ARC, DMARC with its policy.
//! - Reputation (`reputation.rs`): DNSBL, URIBL, allow and block lists, greylisting.
//!
//! # Contract
//! - Every scanned message gets `X-Spam-Score`, `X-Spam-Status` and (with authentication on)
//!   `Authentication-Results`; `X-Spam-*` fields the client sent are removed first, so a
//!   sender cannot pre-label its own mail. At `tag_score` it also gets `X-Spam-Flag: YES`
//!   and the subject tag; at `quarantine_score` it is quarantined; at `reject_score` it is
//!   refused with 550 5.7.1 at end of data. A DMARC failure under `p=reject` is refused or
//!   quarantined (`dmarc_reject`) whatever the score.
//! - Thresholds are per recipient: `[[antispam.domain]]` overrides them for a recipient
//!   domain, `opt_out` recipients are scored and labelled but never acted on; recipients
//!   with different outcomes become groups of the pipeline's per-recipient split.
//! - Allowlisted senders skip every network check and score -100; blocklisted ones +100.
//! - The findings (`spam_score`, `symbols`) go to later stages: rules match
//!   `spam_score_over`.
//! - The model is learned from only by `bulwarkctl spam learn` and by the administrator's
//!   releases; never from what senders send on their own (see `learn.rs`).

mod auth;
mod features;
mod html;
pub mod learn;
pub mod model;
mod reputation;
pub mod rules;
pub mod scan;
mod stage;
mod tokens;
pub mod train;

pub use auth::{AuthOutcome, AuthSetupError, Authenticator};
pub use features::{extract, Features, Flag};
pub use stage::{AntispamStage, SpamSetupError};
