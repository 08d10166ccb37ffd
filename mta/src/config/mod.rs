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
mod milter;
mod pipeline;
mod policy;
mod size;
mod tracking;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

pub use builtin::{builtin_default, DEFAULT_CONFIG_PATH};
pub use load::{load_file, load_str, ConfigError, Problem};
pub use milter::{MilterAddress, MilterConfig};
pub use pipeline::{
    disclaimer_source, Direction, DirectionScope, OnError, PipelineConfig, RuleAction, RuleConfig,
};
pub use policy::{DkimConfig, LimitKey, OutboundLimitConfig, OverLimit};
pub use size::parse as parse_size;
pub use tracking::TrackingConfig;

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
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub flow: FlowConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub dkim: Vec<DkimConfig>,
    #[serde(default)]
    pub outbound_limit: Option<OutboundLimitConfig>,
    #[serde(default)]
    pub tracking: TrackingConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// External mail filters, asked in this order (`[[milter]]`).
    #[serde(default, rename = "milter")]
    pub milters: Vec<MilterConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// The name this gateway announces in its greeting, EHLO reply and Received: headers.
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub control_socket: PathBuf,
    /// How the spool makes a batch of messages durable before 250.
    #[serde(default)]
    pub spool_sync: crate::queue::SyncMode,
    /// Started as root (outside systemd), the daemon becomes this user once its ports are bound.
    #[serde(default)]
    pub user: Option<String>,
    /// The group to run as; default: the user's login group.
    #[serde(default)]
    pub group: Option<String>,
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

/// TLS towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, without certificate checks; plaintext when not offered.
    #[default]
    Opportunistic,
    /// STARTTLS must be offered and succeed (certificate not checked); else the hop fails.
    Required,
    /// As required, and the certificate must chain to `ca_file` (or the system roots) and
    /// match the next hop's name.
    Verify,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// Recipient domains this route serves; `*` matches any, `.example.com` subdomains.
    pub domains: Vec<String>,
    /// Next hops tried in order (failover), `host:port` or `host` (port 25).
    #[serde(default)]
    pub next_hops: Vec<String>,
    /// One next hop for everything this route serves (an ISP relay).
    #[serde(default)]
    pub smart_host: Option<String>,
    #[serde(default)]
    pub tls: OutboundTls,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Concurrent connections to this route's destination.
    #[serde(default = "default_route_connections")]
    pub max_connections: usize,
    #[serde(default = "default_messages_per_connection")]
    pub max_messages_per_connection: usize,
}

fn default_route_connections() -> usize {
    20
}
fn default_messages_per_connection() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// First retry after a temporary failure; doubles per attempt up to `retry_max`.
    #[serde(default = "default_retry_initial", with = "duration")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", with = "duration")]
    pub retry_max: Duration,
    /// Then the remaining recipients bounce (4.4.7).
    #[serde(default = "default_queue_lifetime", with = "duration")]
    pub max_queue_lifetime: Duration,
    /// A delay notice after this long in the queue; 0 = never.
    #[serde(default = "default_delay_warning", with = "duration")]
    pub delay_warning: Duration,
    /// Consecutive failures before a destination is marked down (then only a probe retries).
    #[serde(default = "default_dead_failures")]
    pub dead_destination_failures: u32,
    /// Connections to all destinations together.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long a connection with nothing to send stays open for the next message to its
    /// destination (Postfix's smtp_connection_cache_time_limit); 0 closes it at once.
    #[serde(default = "default_connection_idle_time", with = "duration")]
    pub connection_idle_time: Duration,
    /// Waiting for a reply to a command (RFC 5321 4.5.3.2: 5 minutes).
    #[serde(default = "default_client_command_timeout", with = "duration")]
    pub command_timeout: Duration,
    /// Waiting for the reply after the data (RFC 5321 4.5.3.2.6: 10 minutes).
    #[serde(default = "default_client_data_timeout", with = "duration")]
    pub data_timeout: Duration,
    /// Port for hosts found by MX lookup.
    #[serde(default = "default_mx_port")]
    pub mx_port: u16,
    /// Where bounces of null-sender mail go; empty drops them (logged).
    #[serde(default)]
    pub double_bounce: String,
    /// Name in our EHLO; default `server.hostname`.
    #[serde(default)]
    pub helo_name: Option<String>,
}

fn default_retry_initial() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(4000)
}
fn default_queue_lifetime() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}
fn default_delay_warning() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_dead_failures() -> u32 {
    5
}
fn default_max_connections() -> usize {
    200
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connection_idle_time() -> Duration {
    Duration::from_secs(2)
}
fn default_client_command_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_client_data_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_mx_port() -> u16 {
    25
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_queue_lifetime: default_queue_lifetime(),
            delay_warning: default_delay_warning(),
            dead_destination_failures: default_dead_failures(),
            max_connections: default_max_connections(),
            connect_timeout: default_connect_timeout(),
            connection_idle_time: default_connection_idle_time(),
            command_timeout: default_client_command_timeout(),
            data_timeout: default_client_data_timeout(),
            mx_port: default_mx_port(),
            double_bounce: String::new(),
            helo_name: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DnsConfig {
    /// Resolvers as `ip:port`; empty uses /etc/resolv.conf.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    #[serde(default = "default_dns_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_dns_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: default_dns_timeout(),
        }
    }
}

/// How flow control enforces its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowMode {
    /// XDP on `interfaces` when possible, else (or with no interfaces) userspace limits.
    #[default]
    Auto,
    /// Userspace limits at accept only, even where eBPF would work.
    Userspace,
    /// No connection-rate limits and no automatic blocks.
    Off,
}

/// Connection-rate limiting and abuse blocking (`[flow]`): in the kernel (XDP) where it can
/// attach, else at accept. Sources in `allow`, `relay.trusted_networks` and loopback are exempt.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowConfig {
    #[serde(default)]
    pub mode: FlowMode,
    /// Interfaces to attach the XDP program to; empty = no kernel attach.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Ports whose SYNs the kernel program watches.
    #[serde(default = "default_flow_ports")]
    pub ports: Vec<u16>,
    /// New connections per second per source (IPv4 /32, IPv6 /64); 0 = unlimited.
    #[serde(default = "default_syn_rate")]
    pub syn_rate: u32,
    /// Connections a source may open at once before the rate applies.
    #[serde(default = "default_syn_burst")]
    pub syn_burst: u32,
    /// Sources never limited nor blocked (besides trusted networks and loopback).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Unknown recipients (550 5.1.1) from one address within `harvest_window` that block it.
    #[serde(default = "default_harvest_unknown")]
    pub harvest_unknown_recipients: usize,
    /// The window every abuse signal is counted in.
    #[serde(default = "default_harvest_window", with = "duration")]
    pub harvest_window: Duration,
    /// Failed AUTH attempts within the window that block the address; 0 = never.
    #[serde(default = "default_auth_failures")]
    pub auth_failures: usize,
    /// Sessions refused for talking before the greeting within the window; 0 = never.
    #[serde(default = "default_pregreet_sessions")]
    pub pregreet_sessions: usize,
    /// Sessions closed for too many errors within the window; 0 = never.
    #[serde(default = "default_error_sessions")]
    pub error_sessions: usize,
    /// How long an automatic block lasts.
    #[serde(default = "default_block_seconds", with = "duration")]
    pub block_seconds: Duration,
    /// Where the kernel program's links and maps are pinned (bpffs).
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
}

fn default_flow_ports() -> Vec<u16> {
    vec![25, 587, 465]
}
fn default_syn_rate() -> u32 {
    10
}
fn default_syn_burst() -> u32 {
    40
}
fn default_harvest_unknown() -> usize {
    10
}
fn default_harvest_window() -> Duration {
    Duration::from_secs(60)
}
fn default_auth_failures() -> usize {
    10
}
fn default_pregreet_sessions() -> usize {
    3
}
fn default_error_sessions() -> usize {
    3
}
fn default_block_seconds() -> Duration {
    Duration::from_secs(3600)
}
fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/bulwark")
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            mode: FlowMode::default(),
            interfaces: Vec::new(),
            ports: default_flow_ports(),
            syn_rate: default_syn_rate(),
            syn_burst: default_syn_burst(),
            allow: Vec::new(),
            harvest_unknown_recipients: default_harvest_unknown(),
            harvest_window: default_harvest_window(),
            auth_failures: default_auth_failures(),
            pregreet_sessions: default_pregreet_sessions(),
            error_sessions: default_error_sessions(),
            block_seconds: default_block_seconds(),
            pin_dir: default_pin_dir(),
        }
    }
}

/// `[quarantine]`: where stopped messages are kept and for how long (see `crate::quarantine`).
#[derive(Debug, Clone, Deserialize)]
pub struct QuarantineConfig {
    /// The store: one raw message, one record per entry, and a rebuildable search index.
    #[serde(default = "default_quarantine_dir")]
    pub dir: PathBuf,
    /// Entries older than this are purged (released or not).
    #[serde(default = "default_quarantine_retention", with = "duration")]
    pub retention: Duration,
}

fn default_quarantine_dir() -> PathBuf {
    PathBuf::from("/var/lib/bulwark/quarantine")
}
fn default_quarantine_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            dir: default_quarantine_dir(),
            retention: default_quarantine_retention(),
        }
    }
}
