//! The administrator's contract: one TOML file, one typed home.
//!
//! Every option Bulwark reads lives in these structs; nothing else in the daemon reads raw TOML.
//! Unknown keys are errors (they are usually typos that would otherwise silently do nothing).
//! `load` parses and validates; `check` reports every problem with `line:column` and the key
//! path so `bulwarkd --check-config` can print them all at once. The shipped
//! `packaging/bulwark.toml` documents every option below.

mod antispam;
mod builtin;
pub mod changes;
mod console;
mod console_ops;
mod domains;
mod duration;
mod load;
mod milter;
mod pipeline;
mod policy;
mod ranges;
mod size;
mod tls_policy;
mod tracking;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use antispam::{
    parse_allow_entry, parse_list_entry, AntispamConfig, DmarcRejectAction, ListEntry,
    SpamDomainConfig,
};
pub use builtin::{builtin_default, DEFAULT_CONFIG_PATH};
pub use console::{ConsoleConfig, ConsoleNode, ControlConfig, MetricsConfig};
pub use console_ops::{
    AlertCondition, AlertRule, AlertsConfig, ConsoleMailConfig, DigestConfig, ReportsConfig,
};
pub use load::{load_file, load_str, ConfigError, Problem};
pub use milter::{MilterAddress, MilterConfig};
pub use pipeline::{
    disclaimer_source, Direction, DirectionScope, OnError, PipelineConfig, RuleAction, RuleConfig,
};
pub use policy::{DkimConfig, LimitKey, OutboundLimitConfig, OverLimit};
pub use size::parse as parse_size;
pub use tls_policy::{PolicySource, PublishedPolicyConfig, TlsPolicyConfig, TlsReportConfig};
pub use tracking::TrackingConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Anti-virus scanning (`[antivirus]`); absent: no scanning.
    #[serde(default)]
    pub antivirus: Option<AntivirusConfig>,
    /// Absent: no anti-spam stage (the built-in default and the shipped file enable it).
    #[serde(default)]
    pub antispam: Option<AntispamConfig>,
    #[serde(default)]
    pub dkim: Vec<DkimConfig>,
    #[serde(default)]
    pub outbound_limit: Option<OutboundLimitConfig>,
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Outbound DANE / MTA-STS / TLS-RPT and the MTA-STS policy we publish.
    #[serde(default)]
    pub tls_policy: TlsPolicyConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    #[serde(default)]
    pub control: Option<ControlConfig>,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    /// External mail filters, asked in this order (`[[milter]]`).
    #[serde(default, rename = "milter")]
    pub milters: Vec<MilterConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerConfig {
    /// The name this gateway announces in its greeting, EHLO reply and Received: headers.
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub control_socket: PathBuf,
    /// How the spool makes a batch of messages durable before 250.
    #[serde(default)]
    pub spool_sync: SyncMode,
    /// Started as root (outside systemd), the daemon becomes this user once its ports are bound.
    #[serde(default)]
    pub user: Option<String>,
    /// The group to run as; default: the user's login group.
    #[serde(default)]
    pub group: Option<String>,
    /// Free space kept on the spool's file system: below it new mail gets 452 4.3.1 at
    /// MAIL (before the disk is full), while delivery and bounces go on. 0 = no reserve.
    #[serde(default = "default_min_free_space", with = "size")]
    pub min_free_space: u64,
}

fn default_min_free_space() -> u64 {
    100 << 20
}

/// How the spool makes a batch of renamed per-message files durable before 250 (the
/// type lives here, the ground floor; `queue` uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `syncfs(2)` on the spool's file system: one call covers the whole batch.
    #[default]
    Syncfs,
    /// Each session `fdatasync(2)`s its own file (concurrently, so the journal merges them),
    /// then the queue directory is synced once per batch.
    Fsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Port 25: mail from the Internet and from trusted groupware servers.
    Mx,
    /// Port 587: clients must authenticate (after STARTTLS) before MAIL.
    Submission,
    /// Port 465: TLS from the first byte, then as submission.
    Submissions,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TlsConfig {
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuthConfig {
    /// Lines `user:$6$salt$hash` (SHA-512 crypt, as `openssl passwd -6` makes) or `$5$` (SHA-256).
    pub users_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RelayConfig {
    /// The organisation's domains: mail to them is accepted from anyone.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Clients that may relay to any domain (the groupware servers).
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientCheckKind {
    AcceptAll,
    List,
    Callout,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RecipientCheckConfig {
    /// Which of `relay.domains` this check covers, matched as there (`.example.com` =
    /// every subdomain); the first check whose domains match a recipient applies.
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// NOOP, RSET, VRFY, HELP and repeated HELO/EHLO a session may send before each further
    /// one counts as an error (Postfix's smtpd_junk_command_limit); reset by each accepted
    /// message.
    #[serde(default = "default_junk_command_limit")]
    pub junk_command_limit: u32,
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
    // Postfix's smtpd_hard_error_limit: 10 cuts off a legitimate sender with a stale list.
    20
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
fn default_junk_command_limit() -> u32 {
    100
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
            junk_command_limit: default_junk_command_limit(),
        }
    }
}

/// How a bare CR or LF inside message data is treated. Either way only `<CRLF>.<CRLF>` ends
/// DATA, so no smuggled second message can appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Store a bare CR or LF as CRLF (what Postfix 3.9 calls `normalize`).
    Normalize,
    /// Refuse the whole message with 554 5.5.2 once it ends.
    Reject,
}

/// What happens to message lines over 998 octets (RFC 5321 4.5.3.1.6's 1,000 with CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLines {
    /// Accept them (non-compliant senders are common) and fold them on the way out, so no
    /// next hop ever sees a line over 998 octets (what Postfix does).
    Accept,
    /// Refuse the message with 554 5.6.0 at the end of data.
    Reject,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SmtpConfig {
    /// Pause before the greeting for untrusted clients; a client that talks during it is
    /// refused (spam bots often do). Zero still refuses clients whose bytes beat the banner.
    #[serde(default = "default_greet_delay", with = "duration")]
    pub greet_delay: Duration,
    #[serde(default = "default_bare_newline")]
    pub bare_newline: BareNewline,
    #[serde(default = "default_long_lines")]
    pub long_lines: LongLines,
}

fn default_greet_delay() -> Duration {
    Duration::from_millis(0)
}
fn default_bare_newline() -> BareNewline {
    BareNewline::Normalize
}
fn default_long_lines() -> LongLines {
    LongLines::Accept
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            greet_delay: default_greet_delay(),
            bare_newline: default_bare_newline(),
            long_lines: default_long_lines(),
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
            let cut = domain.len().wrapping_sub(parent.len());
            domain.len() > parent.len()
                && domain.as_bytes()[cut - 1] == b'.'
                && domain.as_bytes()[cut..].eq_ignore_ascii_case(parent.as_bytes())
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
        assert!(domain_listed(&list, "A.Sub.ORG"));
        assert!(!domain_listed(&list, "sub.org"));
        assert!(!domain_listed(&list, "asub.org"));
    }
}

/// TLS towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
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
    /// DANE (RFC 7672) where the MX host has secure TLSA records, else opportunistic.
    Dane,
    /// The domain's MTA-STS policy (RFC 8461) where it has one, else opportunistic.
    #[serde(rename = "mta-sts")]
    MtaSts,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RouteConfig {
    /// Recipient domains this route serves; `*` matches any, `.example.com` subdomains.
    pub domains: Vec<String>,
    /// Next hops tried in order (failover), `host:port` or `host` (port 25).
    #[serde(default)]
    pub next_hops: Vec<String>,
    /// One next hop for everything this route serves (an ISP relay).
    #[serde(default)]
    pub smart_host: Option<String>,
    /// Deliver locally into this Maildir instead of over SMTP (one file per recipient).
    #[serde(default)]
    pub maildir: Option<PathBuf>,
    /// Absent: MX delivery follows `[tls_policy] mx_order`, next hops are opportunistic.
    #[serde(default)]
    pub tls: Option<OutboundTls>,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// A virus scanner `[antivirus].engines` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AvEngine {
    /// A clamd reached over `[antivirus].clamd` (INSTREAM).
    Clamd,
    /// The in-process engine: MIME and zip walk, hash lists, EICAR, disguised executables.
    Builtin,
}

/// What happens to a message an engine found a virus in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AvAction {
    /// 554 5.7.1 with the virus name.
    #[default]
    Reject,
    /// Accepted (250) and kept in quarantine instead of delivered.
    Quarantine,
    /// Accepted (250) and dropped.
    Discard,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AntivirusConfig {
    /// The engines that scan each message, in order; the first detection decides.
    #[serde(default = "default_av_engines")]
    pub engines: Vec<AvEngine>,
    /// `unix:/path/to/socket` or `tcp:HOST:PORT`.
    #[serde(default = "default_av_clamd")]
    pub clamd: String,
    #[serde(default)]
    pub action: AvAction,
    /// `tempfail` (451 4.7.1) or `accept` (delivered, marked not scanned).
    #[serde(default)]
    pub on_error: OnError,
    /// Larger messages are not scanned (accepted with the not-scanned header, logged); the
    /// built-in engine holds at most this much of a message in memory, clamd is streamed to.
    /// Keep clamd's StreamMaxLength at least this large.
    #[serde(default = "default_av_max_scan_size", with = "size")]
    pub max_scan_size: u64,
    #[serde(default)]
    pub direction: DirectionScope,
    /// The built-in engine's signature set (`*.hdb`/`*.hsb` hash lists, `VERSION`).
    #[serde(default = "default_av_signatures_dir")]
    pub signatures_dir: PathBuf,
    /// A signature bundle polled every `update_interval` (its signature at URL + `.sig`);
    /// empty: manual updates only (`bulwarkctl av update FILE`).
    #[serde(default)]
    pub update_url: String,
    /// Base64 Ed25519 public key (32 raw bytes, or the SubjectPublicKeyInfo openssl writes)
    /// every bundle must be signed with.
    #[serde(default)]
    pub update_public_key: String,
    #[serde(default = "default_av_update_interval", with = "duration")]
    pub update_interval: Duration,
    /// One scan's budget, clamd connect included.
    #[serde(default = "default_av_timeout", with = "duration")]
    pub timeout: Duration,
    /// Signatures older than this raise an alert (a warning and `stale` in `av status`).
    #[serde(default = "default_av_max_signature_age", with = "duration")]
    pub max_signature_age: Duration,
}

fn default_av_engines() -> Vec<AvEngine> {
    vec![AvEngine::Clamd, AvEngine::Builtin]
}
fn default_av_clamd() -> String {
    "unix:/run/clamav/clamd.ctl".into()
}
fn default_av_max_scan_size() -> u64 {
    25 << 20
}
fn default_av_signatures_dir() -> PathBuf {
    PathBuf::from("/var/lib/bulwark/signatures")
}
fn default_av_update_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_av_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_av_max_signature_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// `[quarantine]`: where stopped messages are kept and for how long (see `crate::quarantine`).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
