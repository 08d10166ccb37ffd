//! `[antispam]`: the anti-spam stage's thresholds, model, rules, authentication and
//! reputation settings (see `filters/antispam/`).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{duration, DirectionScope};

/// What a failed DMARC check with `p=reject` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DmarcRejectAction {
    /// 550 5.7.1 at end of data.
    #[default]
    Reject,
    Quarantine,
    /// Only the score (`DMARC_REJECT` symbol) and the header.
    Score,
}

/// Thresholds for the recipients of one domain (`[[antispam.domain]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpamDomainConfig {
    pub domain: String,
    pub tag_score: Option<f64>,
    pub quarantine_score: Option<f64>,
    pub reject_score: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AntispamConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_direction")]
    pub direction: DirectionScope,
    #[serde(default = "default_tag")]
    pub tag_score: f64,
    #[serde(default = "default_quarantine")]
    pub quarantine_score: f64,
    #[serde(default = "default_reject")]
    pub reject_score: f64,
    #[serde(default = "default_subject_tag")]
    pub subject_tag: String,
    /// Unset: the model built into the binary.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Unset: the rules built into the binary.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// DNS blocklists for the client address: `"zone"` or `"zone=weight"`.
    #[serde(default)]
    pub dnsbl: Vec<String>,
    /// URI blocklists for link domains: `"zone"` or `"zone=weight"`.
    #[serde(default)]
    pub uribl: Vec<String>,
    /// Never spam: sender addresses, domains (`.example.com` with subdomains) or networks.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Always spam (scored `reject_score`): as `allow`.
    #[serde(default)]
    pub block: Vec<String>,
    /// Verify SPF, DKIM, DMARC and ARC through `[dns]`.
    #[serde(default = "default_true")]
    pub authentication: bool,
    #[serde(default)]
    pub dmarc_reject: DmarcRejectAction,
    /// Greylist unknown (client /24 or /64, sender, recipient) triplets.
    #[serde(default)]
    pub greylist: bool,
    #[serde(default = "default_greylist_delay", with = "duration")]
    pub greylist_delay: Duration,
    /// Recipients that get no anti-spam action (their copy is only scored).
    #[serde(default)]
    pub opt_out: Vec<String>,
    #[serde(default, rename = "domain")]
    pub domains: Vec<SpamDomainConfig>,
    /// The stage's time budget (DNS included).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_true() -> bool {
    true
}
fn default_direction() -> DirectionScope {
    DirectionScope::Inbound
}
fn default_tag() -> f64 {
    5.0
}
fn default_quarantine() -> f64 {
    10.0
}
fn default_reject() -> f64 {
    15.0
}
fn default_subject_tag() -> String {
    "[SPAM]".to_string()
}
fn default_greylist_delay() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

impl Default for AntispamConfig {
    fn default() -> Self {
        AntispamConfig {
            enabled: true,
            direction: default_direction(),
            tag_score: default_tag(),
            quarantine_score: default_quarantine(),
            reject_score: default_reject(),
            subject_tag: default_subject_tag(),
            model: None,
            rules: None,
            dnsbl: Vec::new(),
            uribl: Vec::new(),
            allow: Vec::new(),
            block: Vec::new(),
            authentication: true,
            dmarc_reject: DmarcRejectAction::default(),
            greylist: false,
            greylist_delay: default_greylist_delay(),
            opt_out: Vec::new(),
            domains: Vec::new(),
            timeout: default_timeout(),
        }
    }
}

/// A blocklist zone with its weight (`"zone=weight"`; the weight defaults to `default`).
pub fn parse_list_entry(entry: &str, default: f64) -> Result<(String, f64), String> {
    let (zone, weight) = match entry.split_once('=') {
        Some((zone, weight)) => {
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} is not a number"))?;
            (zone.trim(), weight)
        }
        None => (entry.trim(), default),
    };
    let valid = !zone.is_empty()
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !valid {
        return Err(format!("{zone:?} is not a DNS zone"));
    }
    Ok((zone.trim_end_matches('.').to_ascii_lowercase(), weight))
}

/// An allow/block entry: a network, an address, or a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    Network(IpNet),
    Address(String),
    Domain(String),
}

pub fn parse_allow_entry(entry: &str) -> Result<ListEntry, String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("empty entry".into());
    }
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(ListEntry::Network(net));
    }
    if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
        return Ok(ListEntry::Network(IpNet::from(ip)));
    }
    if entry.contains('@') {
        return Ok(ListEntry::Address(entry.to_ascii_lowercase()));
    }
    Ok(ListEntry::Domain(entry.to_ascii_lowercase()))
}
