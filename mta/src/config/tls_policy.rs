//! `[tls_policy]`: outbound transport security for MX delivery (DANE, MTA-STS, TLS-RPT)
//! and the MTA-STS policy this gateway publishes for its own domains.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// One way to choose TLS for an MX host, tried in `mx_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    /// Secure TLSA records of the MX host (RFC 7672).
    Dane,
    /// The recipient domain's MTA-STS policy (RFC 8461).
    MtaSts,
    /// STARTTLS when offered, unauthenticated.
    Opportunistic,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TlsPolicyConfig {
    /// For routes without `tls` that deliver by MX: the first source that has a policy for
    /// the destination decides (default DANE, then MTA-STS, then opportunistic).
    #[serde(default = "default_order")]
    pub mx_order: Vec<PolicySource>,
    /// DNSKEY records (zone-file form) to validate DNSSEC from; absent: the IANA root keys.
    #[serde(default)]
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// MTA-STS policy cache and TLS-RPT counters live here (created if missing).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// CA certificates (PEM) for fetching MTA-STS policies; absent: the system roots.
    #[serde(default)]
    pub mta_sts_ca_file: Option<PathBuf>,
    /// The port of `https://mta-sts.DOMAIN/` (443; tests use another).
    #[serde(default = "default_https_port")]
    pub mta_sts_port: u16,
    #[serde(default = "default_fetch_timeout", with = "duration")]
    pub mta_sts_fetch_timeout: Duration,
    #[serde(default)]
    pub report: TlsReportConfig,
    /// Our own MTA-STS policy, served at `/.well-known/mta-sts.txt` on the control HTTPS
    /// listener (`[control]`); absent: nothing served.
    #[serde(default)]
    pub publish: Option<PublishedPolicyConfig>,
}

/// TLS-RPT (RFC 8460): daily reports to the `rua` of each policy domain.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TlsReportConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a report period lasts (one day).
    #[serde(default = "default_report_interval", with = "duration")]
    pub interval: Duration,
    /// `organization-name`; default: the server's host name.
    #[serde(default)]
    pub organization: Option<String>,
    /// `contact-info`; default: `postmaster@HOSTNAME`.
    #[serde(default)]
    pub contact: Option<String>,
}

/// The policy file this gateway serves for the domains it receives mail for.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PublishedPolicyConfig {
    /// `enforce`, `testing` or `none`.
    pub mode: String,
    /// The MX names senders may use (`*.example.com` allowed).
    #[serde(default)]
    pub mx: Vec<String>,
    #[serde(default = "default_max_age", with = "duration")]
    pub max_age: Duration,
}

fn default_order() -> Vec<PolicySource> {
    vec![
        PolicySource::Dane,
        PolicySource::MtaSts,
        PolicySource::Opportunistic,
    ]
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/bulwark/tls")
}
fn default_https_port() -> u16 {
    443
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_report_interval() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for TlsReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_report_interval(),
            organization: None,
            contact: None,
        }
    }
}

impl Default for TlsPolicyConfig {
    fn default() -> Self {
        Self {
            mx_order: default_order(),
            dnssec_trust_anchor: None,
            state_dir: default_state_dir(),
            mta_sts_ca_file: None,
            mta_sts_port: default_https_port(),
            mta_sts_fetch_timeout: default_fetch_timeout(),
            report: TlsReportConfig::default(),
            publish: None,
        }
    }
}
