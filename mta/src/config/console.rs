//! The management surface's configuration: `[control]` (the control protocol over HTTPS with
//! mutual TLS), `[metrics]` (Prometheus text) and `[console]` (the web console, run by the
//! separate `bulwark-console` binary from the same file, and the nodes it federates).
//!
//! Invariant: a node's `[control] listen` is served only with a client CA (`ca`): there is no
//! way to configure it without client-certificate authentication.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[control]`: the control protocol over HTTPS; only clients whose certificate chains to `ca`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    /// PEM CA whose client certificates may connect (`bulwarkctl node enroll` makes it).
    pub ca: PathBuf,
    /// This node's server certificate (PEM chain) and key.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `[metrics]`: Prometheus text format at `/metrics`, plain HTTP (bind it to loopback).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[console]`: read only by `bulwark-console`; bulwarkd ignores it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleConfig {
    /// HTTPS only.
    pub listen: SocketAddr,
    /// Written by `bulwarkctl console user ...`, never by hand; re-read when it changes.
    pub users_file: PathBuf,
    /// The console's server certificate; default: the `[tls]` certificate.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The console's client certificate towards the nodes, and the CA their server
    /// certificates chain to (`bulwarkctl node enroll` makes all three).
    pub client_certificate: PathBuf,
    pub client_private_key: PathBuf,
    pub ca: PathBuf,
    /// Every administrator must have a TOTP second factor to log in.
    #[serde(default = "default_true")]
    pub require_totp_for_admins: bool,
    /// A session unused this long ends.
    #[serde(default = "default_session_idle", with = "duration")]
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    #[serde(default = "default_session_lifetime", with = "duration")]
    pub session_lifetime: Duration,
    /// Failed logins from one address within `login_window` before it is refused (and
    /// blocked on every node by flow control for `login_block`).
    #[serde(default = "default_login_failures")]
    pub login_failures: u32,
    #[serde(default = "default_login_window", with = "duration")]
    pub login_window: Duration,
    #[serde(default = "default_login_block", with = "duration")]
    pub login_block: Duration,
    /// Answer budget of one node for one query; a slower node is reported as not answering.
    #[serde(default = "default_node_timeout", with = "duration")]
    pub node_timeout: Duration,
    /// How often the dashboard's counters are sampled from every node.
    #[serde(default = "default_sample_interval", with = "duration")]
    pub sample_interval: Duration,
    /// The audit log (JSON lines); default: `users_file` + `.audit`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The node list as added and removed on the Nodes page (TOML, `[[node]]`); once it exists
    /// it is the list, `[[console.node]]` only seeds it. Default: `users_file` + `.nodes`.
    #[serde(default)]
    pub nodes_file: Option<PathBuf>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<ConsoleNode>,
    /// Alert history, the digest link key, used links, schedule marks; default:
    /// `users_file` + `.state`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The console's address as mail readers reach it (digest links), `https://host:port`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub mail: Option<super::ConsoleMailConfig>,
    #[serde(default)]
    pub alerts: Option<super::AlertsConfig>,
    #[serde(default)]
    pub reports: Option<super::ReportsConfig>,
    #[serde(default)]
    pub digest: Option<super::DigestConfig>,
}

/// One federated gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleNode {
    pub name: String,
    /// The node's `[control] listen`, `host:port`.
    pub address: String,
    /// The name its certificate carries; default: the host part of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl ConsoleNode {
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or_else(|| {
            let host = self
                .address
                .rsplit_once(':')
                .map_or(self.address.as_str(), |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']')
        })
    }
}

impl ConsoleConfig {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            let mut name = self.users_file.clone().into_os_string();
            name.push(".state");
            PathBuf::from(name)
        })
    }

    pub fn nodes_file(&self) -> PathBuf {
        self.nodes_file.clone().unwrap_or_else(|| {
            let mut name = self.users_file.clone().into_os_string();
            name.push(".nodes");
            PathBuf::from(name)
        })
    }

    pub fn audit_log(&self) -> PathBuf {
        self.audit_log.clone().unwrap_or_else(|| {
            let mut name = self.users_file.clone().into_os_string();
            name.push(".audit");
            PathBuf::from(name)
        })
    }
}

fn default_true() -> bool {
    true
}
fn default_session_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_session_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_login_failures() -> u32 {
    5
}
fn default_login_window() -> Duration {
    Duration::from_secs(300)
}
fn default_login_block() -> Duration {
    Duration::from_secs(3600)
}
fn default_node_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_sample_interval() -> Duration {
    Duration::from_secs(10)
}
