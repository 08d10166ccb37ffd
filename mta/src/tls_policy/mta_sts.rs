//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file fetched over HTTPS from
//! `mta-sts.DOMAIN`, MX pattern matching, and the policy cache that survives a restart.
//!
//! # Contract
//! - A policy is used only if it parsed completely (version, mode, max_age, and an `mx`
//!   line unless the mode is `none`); a bad file is a fetch failure, never a weaker policy.
//! - The cache holds each domain's last good policy until `max_age` after it was fetched;
//!   a failed refresh keeps it (RFC 8461 5.1), an expired one is dropped. It is written to
//!   `STATE_DIR/mta-sts.json` (atomically, by rename) on every change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The longest max_age RFC 8461 3.2 allows (one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// `mx` patterns as written (lower-case): `mail.example.com` or `*.example.net`.
    pub mx: Vec<String>,
    pub max_age: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {0}: not `key: value`")]
    Syntax(usize),
    #[error("version is not STSv1")]
    Version,
    #[error("mode {0:?} is not enforce, testing or none")]
    Mode(String),
    #[error("max_age {0:?} is not a number of seconds up to 31557600")]
    MaxAge(String),
    #[error("missing {0}")]
    Missing(&'static str),
}

impl Policy {
    /// Parses a policy file (RFC 8461 3.2): `key: value` lines, LF or CRLF, unknown keys
    /// ignored, `mx` repeated.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or(PolicyError::Syntax(number + 1))?;
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(PolicyError::Mode(other.to_string())),
                    })
                }
                "max_age" => {
                    let seconds = value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s <= MAX_AGE_LIMIT && value.len() <= 10)
                        .ok_or_else(|| PolicyError::MaxAge(value.to_string()))?;
                    max_age = Some(seconds);
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err(PolicyError::Version);
        }
        let mode = mode.ok_or(PolicyError::Missing("mode"))?;
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::Missing("mx"));
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// The file as served (`bulwarkctl tls policy`, the inbound policy).
    pub fn to_text(&self) -> String {
        let mut text = format!("version: STSv1\r\nmode: {}\r\n", self.mode.as_str());
        for mx in &self.mx {
            text.push_str(&format!("mx: {mx}\r\n"));
        }
        text.push_str(&format!("max_age: {}\r\n", self.max_age));
        text
    }

    /// Whether `host` is one of the policy's MX hosts (RFC 8461 4.1).
    pub fn allows_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|pattern| mx_matches(pattern, host))
    }
}

/// `*.example.net` matches one extra left-most label only; anything else matches exactly;
/// case and a trailing dot do not matter.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => host == pattern,
    }
}

/// The `id` of a `_mta-sts` TXT record (`v=STSv1; id=...;`), or None when the record is
/// not an STSv1 record or its id is not 1-32 letters and digits.
pub fn txt_id(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let id = fields.find_map(|f| f.strip_prefix("id="))?.trim();
    let valid = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| id.to_string())
}

/// The id among a domain's TXT records: exactly one STSv1 record counts (RFC 8461 3.1).
pub fn policy_id(records: &[String]) -> Option<String> {
    let ids: Vec<String> = records
        .iter()
        .filter(|r| r.starts_with("v=STSv1"))
        .filter_map(|r| txt_id(r))
        .collect();
    match ids.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// A cached policy with when it was fetched (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub id: String,
    pub policy: Policy,
    pub fetched_at: u64,
}

impl Cached {
    pub fn expires_at(&self) -> u64 {
        self.fetched_at.saturating_add(self.policy.max_age)
    }

    /// Due for a fetch: expired, or in the last tenth of its life (refreshed before it
    /// expires, so a domain that goes away keeps its policy for the rest of max_age).
    pub fn wants_refresh(&self, now: u64) -> bool {
        now.saturating_add(self.policy.max_age / 10) >= self.expires_at()
    }
}

/// Policies by domain, kept on disk.
pub struct Cache {
    file: PathBuf,
    entries: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug, thiserror::Error)]
#[error("MTA-STS cache {path}: {source}")]
pub struct CacheError {
    path: String,
    source: std::io::Error,
}

impl Cache {
    /// Opens `dir/mta-sts.json` (missing is empty; unreadable or corrupt is logged and
    /// empty, since policies are fetched again).
    pub fn open(dir: &Path) -> Cache {
        let file = dir.join("mta-sts.json");
        let entries = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(file:% = file.display(); "mta-sts: cache unreadable ({e}); starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                log::warn!(file:% = file.display(); "mta-sts: cannot read the cache ({e})");
                HashMap::new()
            }
        };
        Cache {
            file,
            entries: Mutex::new(entries),
        }
    }

    /// The unexpired policy of `domain`.
    pub fn get(&self, domain: &str, now: u64) -> Option<Cached> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(domain)
            .filter(|c| c.expires_at() > now)
            .cloned()
    }

    pub fn put(&self, domain: &str, cached: Cached) -> Result<(), CacheError> {
        let snapshot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.insert(domain.to_string(), cached);
            serde_json::to_vec_pretty(&*entries).unwrap_or_default()
        };
        self.write(&snapshot)
    }

    /// Drops `domain` (its policy expired).
    pub fn remove(&self, domain: &str) -> Result<(), CacheError> {
        let snapshot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.remove(domain).is_none() {
                return Ok(());
            }
            serde_json::to_vec_pretty(&*entries).unwrap_or_default()
        };
        self.write(&snapshot)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), CacheError> {
        let error = |source| CacheError {
            path: self.file.display().to_string(),
            source,
        };
        let temporary = self.file.with_extension("json.new");
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        std::fs::write(&temporary, bytes).map_err(error)?;
        std::fs::rename(&temporary, &self.file).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_example_and_refuses_bad_files() {
        let text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
        let policy = Policy::parse(text).expect("valid");
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 604_800);
        assert_eq!(policy.mx.len(), 3);
        assert_eq!(Policy::parse(&policy.to_text()), Ok(policy));
        let lf = "version: STSv1\nmode: testing\nmx: a.test\nmax_age: 86400\nextension: x\n";
        assert_eq!(Policy::parse(lf).map(|p| p.mode), Ok(Mode::Testing));
        let none = "version: STSv1\nmode: none\nmax_age: 86400\n";
        assert_eq!(Policy::parse(none).map(|p| p.mode), Ok(Mode::None));
        for (bad, error) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", PolicyError::Version),
            (
                "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                PolicyError::Mode("strict".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmax_age: 1\n",
                PolicyError::Missing("mx"),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a\n",
                PolicyError::Missing("max_age"),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601\n",
                PolicyError::MaxAge("31557601".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
                PolicyError::MaxAge("-1".into()),
            ),
            ("version: STSv1\ngarbage\n", PolicyError::Syntax(2)),
        ] {
            assert_eq!(Policy::parse(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn mx_patterns_match_one_label_only() {
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(!mx_matches("mail.example.com", "mail2.example.com"));
        assert!(mx_matches("*.example.net", "mx1.example.net"));
        assert!(!mx_matches("*.example.net", "a.b.example.net"));
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(!mx_matches("*.example.net", ".example.net"));
        assert!(!mx_matches("*.example.net", "mx1.example.net.evil"));
    }

    #[test]
    fn txt_records_give_one_id() {
        assert_eq!(
            txt_id("v=STSv1; id=20160831085700Z;"),
            Some("20160831085700Z".into())
        );
        assert_eq!(txt_id("v=STSv1;id=abc"), Some("abc".into()));
        assert_eq!(txt_id("v=STSv1; id=a-b"), None);
        assert_eq!(txt_id("v=spf1 -all"), None);
        let two = vec!["v=STSv1; id=a".to_string(), "v=STSv1; id=b".to_string()];
        assert_eq!(policy_id(&two), None, "two STS records: no policy");
        let one = vec!["v=spf1 -all".to_string(), "v=STSv1; id=b".to_string()];
        assert_eq!(policy_id(&one), Some("b".into()));
    }

    #[test]
    fn cache_survives_reopening_and_expires() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = Policy::parse("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 100\n")
            .expect("valid");
        let cached = Cached {
            id: "1".into(),
            policy,
            fetched_at: 1000,
        };
        Cache::open(dir.path())
            .put("example.test", cached.clone())
            .expect("written");
        let reopened = Cache::open(dir.path());
        assert_eq!(reopened.get("example.test", 1050), Some(cached.clone()));
        assert_eq!(reopened.get("example.test", 1100), None, "expired");
        assert!(!cached.wants_refresh(1050));
        assert!(cached.wants_refresh(1091));
    }
}
