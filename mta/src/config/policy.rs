//! Policy enforcement outside the rule table: DKIM signing keys (`[[dkim]]`) and outbound
//! rate limits (`[outbound_limit]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[[dkim]]`: outbound mail whose From: domain is `domain` (or a subdomain of it) is signed
/// with this key as `d=domain; s=selector`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// PEM: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`, RSA or Ed25519).
    pub private_key: PathBuf,
}

/// What a client over its outbound limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// 451 4.7.1: the client keeps the message and retries later.
    #[default]
    Defer,
    /// 250, then held in the quarantine for review.
    Hold,
}

/// Who a limit counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    /// The SASL-authenticated user.
    User,
    /// The envelope sender address.
    Sender,
    /// The sending client's IP address.
    Client,
}

/// `[outbound_limit]`: messages and recipients per window, per user, sender and client.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutboundLimitConfig {
    #[serde(default = "default_per")]
    pub per: Vec<LimitKey>,
    /// At most this many messages per key per window (0: no message limit).
    #[serde(default = "default_messages")]
    pub messages: u64,
    /// At most this many recipients per key per window (0: no recipient limit).
    #[serde(default = "default_recipients")]
    pub recipients: u64,
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    #[serde(default)]
    pub over_limit: OverLimit,
    /// Where the counters are kept across restarts (default: next to the spool directory).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
}

fn default_per() -> Vec<LimitKey> {
    vec![LimitKey::User, LimitKey::Sender, LimitKey::Client]
}
fn default_messages() -> u64 {
    100
}
fn default_recipients() -> u64 {
    1000
}
fn default_window() -> Duration {
    Duration::from_secs(3600)
}
