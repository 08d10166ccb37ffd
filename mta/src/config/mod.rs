//! The administrator's contract: one TOML file, one typed home.
//!
//! Every option Bulwark reads lives in these structs; nothing else in the daemon reads raw TOML.
//! Unknown keys are errors (they are usually typos that would otherwise silently do nothing).
//! `load` parses and validates; `check` reports every problem with `line:column` and the key
//! path so `bulwarkd --check-config` can print them all at once. The shipped
//! `packaging/bulwark.toml` documents every option below.

mod builtin;
mod duration;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

pub use builtin::{builtin_default, DEFAULT_CONFIG_PATH};
pub use load::{load_file, load_str, ConfigError, Problem};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub relay: RelayConfig,
    #[serde(default, rename = "recipients")]
    pub recipient_checks: Vec<RecipientCheckConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// The name this gateway announces in its greeting, EHLO reply and Received: headers.
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub control_socket: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Port 25: mail from the Internet and from trusted groupware servers.
    Mx,
    /// Port 587: clients must authenticate (after STARTTLS) before MAIL.
    Submission,
    /// Port 465: TLS from the first byte, then as submission.
    Submissions,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub role: ListenerRole,
    /// Concurrent sessions on this listener; more get 421 4.7.0.
    #[serde(default = "default_listener_sessions")]
    pub max_sessions: usize,
}

fn default_listener_sessions() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct TlsConfig {
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// Lines `user:$6$salt$hash` (SHA-512 crypt, as `openssl passwd -6` makes) or `$5$` (SHA-256).
    pub users_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RelayConfig {
    /// The organisation's domains: mail to them is accepted from anyone.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Clients that may relay to any domain (the groupware servers).
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientCheckKind {
    AcceptAll,
    List,
    Callout,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecipientCheckConfig {
    pub domains: Vec<String>,
    pub check: RecipientCheckKind,
    /// For `list`: one address per line (`#` comments); `@domain` accepts a whole domain.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// For `callout`: the internal server to probe with RCPT, tried in order.
    #[serde(default)]
    pub next_hops: Vec<String>,
    /// How long a positive callout answer is trusted.
    #[serde(default = "default_callout_positive_ttl", with = "duration")]
    pub positive_ttl: Duration,
    /// How long a negative callout answer is trusted.
    #[serde(default = "default_callout_negative_ttl", with = "duration")]
    pub negative_ttl: Duration,
    /// Connect plus whole-dialogue timeout of one callout.
    #[serde(default = "default_callout_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_callout_positive_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_callout_negative_ttl() -> Duration {
    Duration::from_secs(3 * 3600)
}
fn default_callout_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitsConfig {
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Concurrent sessions from one client address, across listeners; more get 421 4.7.0.
    #[serde(default = "default_max_sessions_per_client")]
    pub max_sessions_per_client: usize,
    /// Protocol errors in one session before 421 and disconnect.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// More Received: headers than this is a mail loop: 554 5.4.6.
    #[serde(default = "default_max_received_headers")]
    pub max_received_headers: usize,
    /// Largest header section kept for filters; more is refused with 552 5.3.4.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: usize,
    /// Waiting for a command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    #[serde(default = "default_command_timeout", with = "duration")]
    pub command_timeout: Duration,
    /// Waiting for the next block of message data (4.5.3.2.6 client side is 3 minutes).
    #[serde(default = "default_data_timeout", with = "duration")]
    pub data_timeout: Duration,
    /// Messages per session; more get 421 (keeps one client from pinning a session forever).
    #[serde(default = "default_max_messages_per_session")]
    pub max_messages_per_session: usize,
}

fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}
fn default_max_recipients() -> usize {
    1000
}
fn default_max_sessions_per_client() -> usize {
    50
}
fn default_max_errors() -> u32 {
    10
}
fn default_max_received_headers() -> usize {
    50
}
fn default_max_header_size() -> usize {
    1024 * 1024
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_data_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_max_messages_per_session() -> usize {
    10_000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_sessions_per_client: default_max_sessions_per_client(),
            max_errors: default_max_errors(),
            max_received_headers: default_max_received_headers(),
            max_header_size: default_max_header_size(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            max_messages_per_session: default_max_messages_per_session(),
        }
    }
}

/// How a bare CR or LF inside message data is treated. Either way only `<CRLF>.<CRLF>` ends
/// DATA, so no smuggled second message can appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Store a bare CR or LF as CRLF (what Postfix 3.9 calls `normalize`).
    Normalize,
    /// Refuse the whole message with 554 5.5.2 once it ends.
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmtpConfig {
    /// Pause before the greeting for untrusted clients; a client that talks during it is
    /// refused (spam bots often do). Zero still refuses clients whose bytes beat the banner.
    #[serde(default = "default_greet_delay", with = "duration")]
    pub greet_delay: Duration,
    #[serde(default = "default_bare_newline")]
    pub bare_newline: BareNewline,
}

fn default_greet_delay() -> Duration {
    Duration::from_millis(0)
}
fn default_bare_newline() -> BareNewline {
    BareNewline::Normalize
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            greet_delay: default_greet_delay(),
            bare_newline: default_bare_newline(),
        }
    }
}

impl Config {
    /// True when `domain` (already lower-cased, no trailing dot) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain_listed(&self.relay.domains, domain)
    }
}

/// Domain list match: exact (case-insensitive), or `.example.com` for any subdomain of it.
pub fn domain_listed(list: &[String], domain: &str) -> bool {
    list.iter().any(|entry| {
        if let Some(parent) = entry.strip_prefix('.') {
            domain.len() > parent.len()
                && domain.ends_with(parent)
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
        } else {
            entry.eq_ignore_ascii_case(domain)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_list_matching() {
        let list = vec!["Example.com".to_string(), ".sub.org".to_string()];
        assert!(domain_listed(&list, "example.com"));
        assert!(!domain_listed(&list, "xexample.com"));
        assert!(!domain_listed(&list, "a.example.com"));
        assert!(domain_listed(&list, "a.sub.org"));
        assert!(!domain_listed(&list, "sub.org"));
        assert!(!domain_listed(&list, "asub.org"));
    }
}
