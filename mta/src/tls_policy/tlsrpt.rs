//! SMTP TLS Reporting (RFC 8460): per policy domain, the sessions that met their policy and
//! the ones that failed (with why), turned into the daily JSON report, gzip-compressed.
//!
//! # Contract
//! - Every outbound session under a policy (DANE, MTA-STS or none found) counts once:
//!   success when TLS met the policy, failure with a `result-type` otherwise.
//! - A report covers the counters since the previous one; taking a report resets them.
//! - Counters are kept in `STATE_DIR/tlsrpt.json` so a restart does not lose a day.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The policy a session was held to, as RFC 8460 4.4 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    #[serde(rename = "tlsa")]
    Tlsa,
    #[serde(rename = "sts")]
    Sts,
    #[serde(rename = "no-policy-found")]
    NoPolicyFound,
}

/// Why a session failed its policy (RFC 8460 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// One failed session's details, the key failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failure {
    pub result_type: ResultType,
    pub sending_mta_ip: String,
    pub receiving_mx_hostname: String,
    pub receiving_ip: String,
}

/// A policy domain's counters for the current period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCounters {
    pub policy_type: Option<PolicyType>,
    /// The policy as RFC 8460 wants it quoted (TLSA records, or the STS file's lines).
    #[serde(default)]
    pub policy_string: Vec<String>,
    #[serde(default)]
    pub mx_hosts: Vec<String>,
    pub successes: u64,
    #[serde(default)]
    pub failures: Vec<(Failure, u64)>,
}

impl DomainCounters {
    pub fn failure_count(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

/// What a session under a policy reports.
#[derive(Debug, Clone)]
pub struct Session {
    pub domain: String,
    pub policy_type: PolicyType,
    pub policy_string: Vec<String>,
    pub mx_host: String,
    pub outcome: Result<(), Failure>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Period {
    started_at: u64,
    domains: BTreeMap<String, DomainCounters>,
}

pub struct Counters {
    file: PathBuf,
    period: Mutex<Period>,
}

impl Counters {
    /// Opens `dir/tlsrpt.json`; a missing or unreadable file starts a new period at `now`.
    pub fn open(dir: &Path, now: u64) -> Counters {
        let file = dir.join("tlsrpt.json");
        let period = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Period {
                started_at: now,
                domains: BTreeMap::new(),
            });
        Counters {
            file,
            period: Mutex::new(period),
        }
    }

    pub fn record(&self, session: Session) {
        let mut period = self.period.lock().unwrap_or_else(|p| p.into_inner());
        let counters = period.domains.entry(session.domain).or_default();
        counters.policy_type = Some(session.policy_type);
        counters.policy_string = session.policy_string;
        if !counters.mx_hosts.contains(&session.mx_host) {
            counters.mx_hosts.push(session.mx_host);
        }
        match session.outcome {
            Ok(()) => counters.successes += 1,
            Err(failure) => match counters.failures.iter_mut().find(|(f, _)| *f == failure) {
                Some((_, n)) => *n += 1,
                None => counters.failures.push((failure, 1)),
            },
        }
    }

    pub fn domain(&self, domain: &str) -> Option<DomainCounters> {
        let period = self.period.lock().unwrap_or_else(|p| p.into_inner());
        period.domains.get(domain).cloned()
    }

    pub fn started_at(&self) -> u64 {
        self.period
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started_at
    }

    /// Ends the period at `now`: its counters, and a fresh period begins.
    pub fn take(&self, now: u64) -> (u64, BTreeMap<String, DomainCounters>) {
        let mut period = self.period.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::mem::replace(&mut period.started_at, now);
        (started, std::mem::take(&mut period.domains))
    }

    /// Writes the counters (atomically) so a restart keeps them.
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = {
            let period = self.period.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*period).unwrap_or_default()
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = self.file.with_extension("json.new");
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, &self.file)
    }
}

/// Who sends the report (RFC 8460 4.4 `organization-name`, `contact-info`).
pub struct Submitter<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
    /// The host name in the report id and the mail's subject.
    pub hostname: &'a str,
}

/// The RFC 8460 JSON report for one policy domain over [start, end) (epoch seconds).
pub fn report_json(
    submitter: &Submitter<'_>,
    domain: &str,
    counters: &DomainCounters,
    start: u64,
    end: u64,
) -> Value {
    let failures: Vec<Value> = counters
        .failures
        .iter()
        .map(|(f, n)| {
            let mut detail = json!({
                "result-type": f.result_type.as_str(),
                "receiving-mx-hostname": f.receiving_mx_hostname,
                "receiving-ip": f.receiving_ip,
                "failed-session-count": n,
            });
            // Optional in RFC 8460 4.4: left out rather than sent empty.
            if !f.sending_mta_ip.is_empty() {
                detail["sending-mta-ip"] = json!(f.sending_mta_ip);
            }
            detail
        })
        .collect();
    json!({
        "organization-name": submitter.organization,
        "date-range": {
            "start-datetime": rfc3339(start),
            "end-datetime": rfc3339(end),
        },
        "contact-info": submitter.contact,
        "report-id": report_id(submitter, domain, start),
        "policies": [{
            "policy": {
                "policy-type": counters.policy_type.unwrap_or(PolicyType::NoPolicyFound),
                "policy-string": counters.policy_string,
                "policy-domain": domain,
                "mx-host": counters.mx_hosts,
            },
            "summary": {
                "total-successful-session-count": counters.successes,
                "total-failure-session-count": counters.failure_count(),
            },
            "failure-details": failures,
        }],
    })
}

pub fn report_id(submitter: &Submitter<'_>, domain: &str, start: u64) -> String {
    format!("{start}.{domain}@{}", submitter.hostname)
}

/// RFC 8460 5.3's file name: `sender!policy-domain!begin!end.json.gz`.
pub fn file_name(submitter: &Submitter<'_>, domain: &str, start: u64, end: u64) -> String {
    format!("{}!{domain}!{start}!{end}.json.gz", submitter.hostname)
}

pub fn gzip(json: &Value) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(json.to_string().as_bytes())?;
    encoder.finish()
}

/// `2026-12-02T00:00:00Z` from epoch seconds (civil-from-days, no time zone database).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The `rua` destinations of a `_smtp._tls` TXT record (`v=TLSRPTv1; rua=mailto:a@b,https://c`).
pub fn rua(records: &[String]) -> Vec<String> {
    let Some(record) = records.iter().find(|r| r.starts_with("v=TLSRPTv1")) else {
        return Vec::new();
    };
    record
        .split(';')
        .filter_map(|f| f.trim().strip_prefix("rua="))
        .flat_map(|list| list.split(','))
        .map(|u| u.trim().to_string())
        .filter(|u| u.starts_with("mailto:") || u.starts_with("https://"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ResultType) -> Failure {
        Failure {
            result_type: kind,
            sending_mta_ip: "192.0.2.1".into(),
            receiving_mx_hostname: "mx.example.test".into(),
            receiving_ip: "198.51.100.2".into(),
        }
    }

    fn session(outcome: Result<(), Failure>) -> Session {
        Session {
            domain: "example.test".into(),
            policy_type: PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), "mode: testing".into()],
            mx_host: "mx.example.test".into(),
            outcome,
        }
    }

    #[test]
    fn report_follows_rfc_8460() {
        let dir = tempfile::tempdir().expect("dir");
        let counters = Counters::open(dir.path(), 1_764_633_600);
        counters.record(session(Ok(())));
        counters.record(session(Err(failure(ResultType::StarttlsNotSupported))));
        counters.record(session(Err(failure(ResultType::StarttlsNotSupported))));
        counters.save().expect("saved");
        let reopened = Counters::open(dir.path(), 0);
        let (start, domains) = reopened.take(1_764_720_000);
        assert_eq!(start, 1_764_633_600, "the period survived the reopening");
        let submitter = Submitter {
            organization: "Example Org",
            contact: "mailto:postmaster@gw.test",
            hostname: "gw.test",
        };
        let report = report_json(
            &submitter,
            "example.test",
            &domains["example.test"],
            start,
            1_764_720_000,
        );
        assert_eq!(
            report["date-range"]["start-datetime"],
            "2025-12-02T00:00:00Z"
        );
        assert_eq!(report["date-range"]["end-datetime"], "2025-12-03T00:00:00Z");
        let policy = &report["policies"][0];
        assert_eq!(policy["policy"]["policy-type"], "sts");
        assert_eq!(policy["policy"]["policy-domain"], "example.test");
        assert_eq!(policy["summary"]["total-successful-session-count"], 1);
        assert_eq!(policy["summary"]["total-failure-session-count"], 2);
        let detail = &policy["failure-details"][0];
        assert_eq!(detail["result-type"], "starttls-not-supported");
        assert_eq!(detail["failed-session-count"], 2);
        assert_eq!(detail["receiving-mx-hostname"], "mx.example.test");
        let compressed = gzip(&report).expect("gzip");
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut text,
        )
        .expect("gunzip");
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), report);
        assert!(reopened.take(1).1.is_empty(), "taking resets");
    }

    #[test]
    fn rua_lists_mail_and_https() {
        let records =
            vec!["v=TLSRPTv1; rua=mailto:tls@example.test,https://r.example.test/v1".to_string()];
        assert_eq!(
            rua(&records),
            vec!["mailto:tls@example.test", "https://r.example.test/v1"]
        );
        assert!(rua(&["v=spf1".to_string()]).is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
