//! Outbound transport security: which TLS an MX host must get, and the reports about it.
//!
//! `dane` (TLSA records proved by DNSSEC, the certificate verifier), `mta_sts` (the policy
//! file, MX patterns, the cache that survives a restart), `tlsrpt` (per-domain counters and
//! the RFC 8460 report), `report` (the daily sender), `https` (the small client both need).
//! This module ties them together: [`TransportSecurity::host_policy`] walks a destination's
//! policy order (`[tls_policy] mx_order`, or a route's `tls = "dane" | "mta-sts"`) and returns
//! the first policy that applies to a host.
//!
//! # Guarantees
//! - A host with secure, usable TLSA records is only ever reached over TLS whose chain
//!   matches them; a bogus DNSSEC answer (TLSA, or the MX answer of a signed zone) or an
//!   unusable TLSA set refuses the host (defer).
//! - Under an MTA-STS `enforce` policy, a host outside its `mx` list is refused and TLS must
//!   verify against the WebPKI roots; under `testing` failures are reported, not enforced.
//! - Nothing here sends mail in clear when a policy said TLS: callers get `Refused` or a
//!   requirement, never a silent downgrade.

pub mod dane;
pub mod https;
pub mod mta_sts;
pub mod report;
pub mod tlsrpt;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use serde_json::{json, Value};

use crate::config::{Config, OutboundTls, PolicySource, TlsPolicyConfig};
use crate::queue::unix_now;
use crate::route::{Destination, Target};
use dane::{TlsaLookup, TlsaRecord};
use mta_sts::{Cached, Mode};
use tlsrpt::{Failure, PolicyType, ResultType, Session};

#[derive(Debug, thiserror::Error)]
pub enum TlsPolicyError {
    #[error("DNSSEC trust anchor {path}: {reason}")]
    TrustAnchor { path: String, reason: String },
    #[error(transparent)]
    Resolver(#[from] crate::route::ResolverSetupError),
}

/// What TLS one host gets, and under which policy it is reported.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    pub kind: PolicyKind,
    /// The TLS-RPT policy this host's sessions count for (None: not reported).
    pub scope: Option<ReportScope>,
    /// Why this policy was chosen, for logs and `bulwarkctl tls policy`.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyKind {
    /// The route's fixed mode (none, opportunistic, required, verify).
    Fixed(OutboundTls),
    /// TLS required, the chain must match one of these (usable) records.
    Dane(Vec<TlsaRecord>),
    /// TLS verified with the WebPKI roots for the host's name; `Testing` falls back.
    /// `mx_listed` false (only under `Testing`): the host is outside the policy's `mx`
    /// list, so the session fails the policy even when its certificate verifies.
    MtaSts { mode: Mode, mx_listed: bool },
    /// Never connect (defer): the policy forbids this host or cannot be evaluated.
    Refused(ResultType),
    /// Opportunistic TLS because the domain's MTA-STS policy could not be had (RFC 8461
    /// 5.1); the session counts as this TLS-RPT failure (RFC 8460 4.3.2).
    StsUnavailable(ResultType),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportScope {
    pub domain: String,
    pub policy_type: PolicyType,
    pub policy_string: Vec<String>,
}

/// The recipient domain's part of the decision, looked up once per connection.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    /// The recipient domain (MX delivery) or None (explicit next hops).
    pub domain: Option<String>,
    /// DANE may use the MX host names: the MX answer was DNSSEC-secure (RFC 7672 2.2.1),
    /// or the hosts are configured next hops.
    pub dane_names_trusted: bool,
    pub sts: StsStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsStatus {
    /// No `_mta-sts` record and nothing cached (or not an MX destination).
    Absent,
    Active(Cached),
    /// A record says there is a policy, but it could not be fetched and none is cached.
    Unavailable {
        result: ResultType,
        error: String,
    },
}

/// What DNSSEC said about a destination's MX answer (RFC 7672 2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxProof {
    /// Every MX record validated, or a validated denial makes the domain its own MX.
    Secure,
    /// Unsigned or not provably signed: DANE does not apply to these host names.
    Insecure,
    /// Validation failed or did not complete: DANE refuses the destination (defer).
    Bogus(String),
}

impl MxProof {
    /// From the proofs of the MX records in an answer.
    pub fn of_answers(proofs: &[Proof]) -> MxProof {
        if proofs.contains(&Proof::Bogus) {
            MxProof::Bogus("the MX records failed DNSSEC validation".into())
        } else if !proofs.is_empty() && proofs.iter().all(|p| *p == Proof::Secure) {
            MxProof::Secure
        } else {
            MxProof::Insecure
        }
    }

    /// From a failed lookup, classified as for TLSA: a secure denial is an implicit MX
    /// (the domain itself, RFC 5321 5.1) and as secure as an MX record.
    pub fn of_lookup_error(lookup: TlsaLookup) -> MxProof {
        match lookup {
            TlsaLookup::SecureNone => MxProof::Secure,
            TlsaLookup::Bogus(error) => MxProof::Bogus(error),
            TlsaLookup::Insecure | TlsaLookup::Secure { .. } => MxProof::Insecure,
        }
    }
}

pub struct TransportSecurity {
    config: TlsPolicyConfig,
    plain: TokioResolver,
    validating: TokioResolver,
    sts_cache: mta_sts::Cache,
    pub counters: tlsrpt::Counters,
    webpki: Mutex<Option<Arc<rustls::ClientConfig>>>,
}

impl TransportSecurity {
    /// Resolvers for `[dns]` (one validating with the trust anchor), the cache and the
    /// counters from `[tls_policy] state_dir`.
    pub fn new(config: &Config) -> Result<TransportSecurity, TlsPolicyError> {
        let policy = config.tls_policy.clone();
        let anchor = match &policy.dnssec_trust_anchor {
            Some(path) => {
                TrustAnchors::from_file(path).map_err(|e| TlsPolicyError::TrustAnchor {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => TrustAnchors::default(),
        };
        let plain = crate::route::tokio_resolver(&config.dns, None)?;
        let validating = crate::route::tokio_resolver(&config.dns, Some(Arc::new(anchor)))?;
        if let Err(e) = std::fs::create_dir_all(&policy.state_dir) {
            log::warn!(dir:% = policy.state_dir.display(); "tls policy: cannot create the state directory: {e}");
        }
        Ok(TransportSecurity {
            sts_cache: mta_sts::Cache::open(&policy.state_dir),
            counters: tlsrpt::Counters::open(&policy.state_dir, unix_now()),
            config: policy,
            plain,
            validating,
            webpki: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &TlsPolicyConfig {
        &self.config
    }

    /// The roots MTA-STS verifies with (policy fetches and MX certificates): the configured
    /// CA file or the system store.
    pub fn webpki(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut slot = self.webpki.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = slot.as_ref() {
            return Ok(config.clone());
        }
        let config = crate::smtp_client::verifying_tls(self.config.mta_sts_ca_file.as_deref())?;
        *slot = Some(config.clone());
        Ok(config)
    }

    /// The domain's part of the policy for `destination` (MTA-STS only when the order has it).
    pub async fn domain_policy(&self, destination: &Destination) -> DomainPolicy {
        let order = &destination.tls_order;
        let Target::Mx(domain) = &destination.target else {
            return DomainPolicy {
                domain: None,
                dane_names_trusted: true,
                sts: StsStatus::Absent,
            };
        };
        let dane_names_trusted =
            order.contains(&PolicySource::Dane) && self.mx_is_secure(domain).await;
        let sts = if order.contains(&PolicySource::MtaSts) {
            self.sts_policy(domain).await
        } else {
            StsStatus::Absent
        };
        DomainPolicy {
            domain: Some(domain.clone()),
            dane_names_trusted,
            sts,
        }
    }

    async fn mx_is_secure(&self, domain: &str) -> bool {
        self.mx_proof(domain).await == MxProof::Secure
    }

    /// What DNSSEC says about `domain`'s MX answer. hickory reports "bogus" both for
    /// signatures that fail and for answers it cannot chain to the anchor at all (DNS
    /// servers that strip DNSSEC); only the first is an attack or a broken zone, so a bogus
    /// answer counts as one only when the name provably sits in a signed zone.
    async fn mx_proof(&self, domain: &str) -> MxProof {
        let name = format!("{}.", domain.trim_end_matches('.'));
        let proof = match self.validating.lookup(name.as_str(), RecordType::MX).await {
            Ok(lookup) => {
                let proofs: Vec<Proof> = lookup
                    .answers()
                    .iter()
                    .filter(|r| matches!(r.data, RData::MX(_)))
                    .map(|r| r.proof)
                    .collect();
                MxProof::of_answers(&proofs)
            }
            Err(e) => MxProof::of_lookup_error(dane::classify_error(&e)),
        };
        match proof {
            MxProof::Bogus(_) if !self.in_signed_zone(&name).await => MxProof::Insecure,
            other => other,
        }
    }

    /// Whether `name` (absolute) is provably in a zone signed under the trust anchor: its
    /// DNSKEY set validates, or a validated denial says it has none (not the apex).
    async fn in_signed_zone(&self, name: &str) -> bool {
        match self.validating.lookup(name, RecordType::DNSKEY).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .any(|r| r.record_type() == RecordType::DNSKEY && r.proof == Proof::Secure),
            Err(e) => dane::classify_error(&e) == TlsaLookup::SecureNone,
        }
    }

    /// Walks `destination.tls_order` for one host (`port` is the SMTP port, for TLSA).
    pub async fn host_policy(
        &self,
        destination: &Destination,
        domain: &DomainPolicy,
        host: &str,
        port: u16,
    ) -> HostPolicy {
        if destination.tls_order.is_empty() {
            return HostPolicy {
                kind: PolicyKind::Fixed(destination.tls),
                scope: None,
                why: format!("the route sets tls = {:?}", destination.tls).to_lowercase(),
            };
        }
        for source in &destination.tls_order {
            let decided = match source {
                PolicySource::Dane => self.dane_policy(domain, host, port).await,
                PolicySource::MtaSts => sts_host_policy(domain, host),
                PolicySource::Opportunistic => Some(opportunistic_policy(domain)),
            };
            if let Some(policy) = decided {
                return policy;
            }
        }
        HostPolicy {
            kind: PolicyKind::Refused(ResultType::ValidationFailure),
            scope: None,
            why: "no policy of the order applies and opportunistic TLS is not in it".into(),
        }
    }

    async fn dane_policy(
        &self,
        domain: &DomainPolicy,
        host: &str,
        port: u16,
    ) -> Option<HostPolicy> {
        if !domain.dane_names_trusted {
            return self.bogus_mx_refusal(domain).await;
        }
        let scope = |records: &[TlsaRecord]| ReportScope {
            domain: domain.domain.clone().unwrap_or_else(|| host.to_string()),
            policy_type: PolicyType::Tlsa,
            policy_string: records.iter().map(TlsaRecord::presentation).collect(),
        };
        let name = dane::tlsa_name(host, port);
        match dane::lookup(&self.validating, host, port).await {
            TlsaLookup::Secure { records, usable } if usable.is_empty() => Some(HostPolicy {
                kind: PolicyKind::Refused(ResultType::TlsaInvalid),
                scope: Some(scope(&records)),
                why: format!("{name} has secure TLSA records but none is usable (RFC 7672 3.1)"),
            }),
            TlsaLookup::Secure { records, usable } => Some(HostPolicy {
                scope: Some(scope(&records)),
                why: format!(
                    "DANE: {name} has {} secure usable TLSA record(s)",
                    usable.len()
                ),
                kind: PolicyKind::Dane(usable),
            }),
            TlsaLookup::Bogus(error) => Some(HostPolicy {
                kind: PolicyKind::Refused(ResultType::DnssecInvalid),
                scope: Some(scope(&[])),
                why: format!("DANE: the TLSA lookup of {name} failed validation ({error})"),
            }),
            TlsaLookup::SecureNone | TlsaLookup::Insecure => None,
        }
    }

    /// RFC 7672 2.2.1: an MX answer that fails validation is not an unsigned one. DANE
    /// cannot use its host names, and falling back to a weaker policy would let whoever
    /// forged it choose the TLS we use: the destination is refused (deferred) instead.
    async fn bogus_mx_refusal(&self, domain: &DomainPolicy) -> Option<HostPolicy> {
        let name = domain.domain.as_deref()?;
        let MxProof::Bogus(error) = self.mx_proof(name).await else {
            return None;
        };
        Some(HostPolicy {
            kind: PolicyKind::Refused(ResultType::DnssecInvalid),
            scope: Some(ReportScope {
                domain: name.to_string(),
                policy_type: PolicyType::Tlsa,
                policy_string: Vec::new(),
            }),
            why: format!("DANE: the MX lookup of {name} failed validation ({error})"),
        })
    }

    /// The domain's MTA-STS policy: cached, or fetched when the TXT id changed, none is
    /// cached or the cached one is near its end (RFC 8461 5.1).
    pub async fn sts_policy(&self, domain: &str) -> StsStatus {
        let now = unix_now();
        let cached = self.sts_cache.get(domain, now);
        let id = self
            .txt(&format!("_mta-sts.{domain}"))
            .await
            .and_then(|r| mta_sts::policy_id(&r));
        let Some(id) = id else {
            return cached.map_or(StsStatus::Absent, StsStatus::Active);
        };
        if let Some(cached) = &cached {
            if cached.id == id && !cached.wants_refresh(now) {
                return StsStatus::Active(cached.clone());
            }
        }
        match self.fetch_sts(domain).await {
            Ok(policy) => {
                let fresh = Cached {
                    id,
                    policy,
                    fetched_at: now,
                };
                if let Err(e) = self.sts_cache.put(domain, fresh.clone()) {
                    log::warn!(domain = domain; "mta-sts: {e}");
                }
                log::info!(domain = domain, mode = fresh.policy.mode.as_str(), max_age = fresh.policy.max_age; "mta-sts: policy fetched");
                StsStatus::Active(fresh)
            }
            Err((result, error)) => {
                log::warn!(domain = domain, result = result.as_str(); "mta-sts: policy fetch failed: {error}");
                match cached {
                    Some(cached) => StsStatus::Active(cached),
                    None => StsStatus::Unavailable { result, error },
                }
            }
        }
    }

    async fn fetch_sts(&self, domain: &str) -> Result<mta_sts::Policy, (ResultType, String)> {
        let host = format!("mta-sts.{domain}");
        let fetch_error = |e: String| (ResultType::StsPolicyFetchError, e);
        let address = self
            .plain
            .lookup_ip(format!("{host}.").as_str())
            .await
            .map_err(|e| fetch_error(e.to_string()))?
            .iter()
            .next()
            .ok_or_else(|| fetch_error(format!("{host} has no address")))?;
        let tls = self.webpki().map_err(fetch_error)?;
        let request = https::Request {
            address: SocketAddr::new(address, self.config.mta_sts_port),
            host: &host,
            path: "/.well-known/mta-sts.txt",
            post: None,
        };
        let body = https::send(request, tls, self.config.mta_sts_fetch_timeout)
            .await
            .map_err(|e| {
                let result = if e.is_tls() {
                    ResultType::StsWebpkiInvalid
                } else {
                    ResultType::StsPolicyFetchError
                };
                (result, e.to_string())
            })?;
        let text = String::from_utf8_lossy(&body);
        mta_sts::Policy::parse(&text).map_err(|e| (ResultType::StsPolicyInvalid, e.to_string()))
    }

    /// The TXT strings at `name` (each record's strings joined), or None.
    pub async fn txt(&self, name: &str) -> Option<Vec<String>> {
        let lookup = self
            .plain
            .lookup(format!("{name}.").as_str(), RecordType::TXT)
            .await
            .ok()?;
        Some(
            lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Counts one session for TLS-RPT.
    /// `sending` is our address on the connection (none when the failure came before one).
    pub fn record(
        &self,
        scope: &ReportScope,
        host: &str,
        address: SocketAddr,
        sending: Option<IpAddr>,
        outcome: Result<(), ResultType>,
    ) {
        let outcome = outcome.map_err(|result_type| Failure {
            result_type,
            sending_mta_ip: sending.map(|ip| ip.to_string()).unwrap_or_default(),
            receiving_mx_hostname: host.to_string(),
            receiving_ip: address.ip().to_string(),
        });
        log::info!(
            domain = scope.domain.as_str(), mx = host, policy:? = scope.policy_type,
            result = outcome.as_ref().err().map_or("success", |f| f.result_type.as_str());
            "tls-rpt: session counted"
        );
        self.counters.record(Session {
            domain: scope.domain.clone(),
            policy_type: scope.policy_type,
            policy_string: scope.policy_string.clone(),
            mx_host: host.to_string(),
            outcome,
        });
    }
}

/// The last resort of an order: opportunistic TLS, counted as a failure of the domain's
/// MTA-STS policy when a `_mta-sts` record announced one that could not be fetched.
fn opportunistic_policy(domain: &DomainPolicy) -> HostPolicy {
    match (&domain.sts, &domain.domain) {
        (StsStatus::Unavailable { result, error }, Some(name)) => HostPolicy {
            kind: PolicyKind::StsUnavailable(*result),
            scope: Some(ReportScope {
                domain: name.clone(),
                policy_type: PolicyType::Sts,
                policy_string: Vec::new(),
            }),
            why: format!(
                "the MTA-STS policy is unavailable ({error}): opportunistic TLS, failure reported"
            ),
        },
        _ => HostPolicy {
            kind: PolicyKind::Fixed(OutboundTls::Opportunistic),
            scope: None,
            why: "no DANE or MTA-STS policy applies: opportunistic TLS".into(),
        },
    }
}

fn sts_host_policy(domain: &DomainPolicy, host: &str) -> Option<HostPolicy> {
    let name = domain.domain.as_deref()?;
    let cached = match &domain.sts {
        StsStatus::Active(cached) => cached,
        StsStatus::Absent | StsStatus::Unavailable { .. } => return None,
    };
    let policy = &cached.policy;
    let scope = ReportScope {
        domain: name.to_string(),
        policy_type: PolicyType::Sts,
        policy_string: policy.to_text().lines().map(str::to_string).collect(),
    };
    let (mode, listed) = (policy.mode, policy.allows_mx(host));
    let (kind, why) = match (mode, listed) {
        (Mode::None, _) => return None,
        (Mode::Enforce, false) => (
            PolicyKind::Refused(ResultType::ValidationFailure),
            format!(
                "MTA-STS enforce: {host} is not among the policy's mx {:?}",
                policy.mx
            ),
        ),
        (Mode::Enforce, true) => (
            PolicyKind::MtaSts {
                mode: Mode::Enforce,
                mx_listed: true,
            },
            format!("MTA-STS enforce (id {}): verified TLS required", cached.id),
        ),
        (Mode::Testing, _) => (
            PolicyKind::MtaSts {
                mode: Mode::Testing,
                mx_listed: listed,
            },
            format!(
                "MTA-STS testing (id {}): verified TLS tried, failures reported{}",
                cached.id,
                if listed { "" } else { "; host not in mx list" }
            ),
        ),
    };
    Some(HostPolicy {
        kind,
        scope: Some(scope),
        why,
    })
}

/// `bulwarkctl tls policy DOMAIN`: the effective policy for each MX host and why.
pub async fn explain(
    security: &TransportSecurity,
    destination: &Destination,
    hosts: &[(String, u16)],
) -> Value {
    let domain = security.domain_policy(destination).await;
    let mut list = Vec::new();
    for (host, port) in hosts {
        let policy = security
            .host_policy(destination, &domain, host, *port)
            .await;
        list.push(json!({
            "host": host,
            "port": port,
            "policy": kind_name(&policy.kind),
            "why": policy.why,
        }));
    }
    let sts = match &domain.sts {
        StsStatus::Absent => json!(null),
        StsStatus::Active(cached) => json!({
            "id": cached.id,
            "mode": cached.policy.mode.as_str(),
            "mx": cached.policy.mx,
            "max_age": cached.policy.max_age,
            "expires_at": cached.expires_at(),
        }),
        StsStatus::Unavailable { result, error } => json!({
            "unavailable": result.as_str(),
            "error": error,
        }),
    };
    let counters = domain
        .domain
        .as_deref()
        .and_then(|d| security.counters.domain(d))
        .map(|c| {
            json!({
                "successes": c.successes,
                "failures": c.failures.iter().map(|(f, n)| json!({
                    "result-type": f.result_type.as_str(),
                    "mx": f.receiving_mx_hostname,
                    "count": n,
                })).collect::<Vec<_>>(),
            })
        });
    json!({
        "destination": destination.name(),
        "order": destination.tls_order,
        "dnssec_mx": domain.dane_names_trusted,
        "mta_sts": sts,
        "hosts": list,
        "tls_rpt": counters,
    })
}

pub fn kind_name(kind: &PolicyKind) -> String {
    match kind {
        PolicyKind::Fixed(tls) => format!("{tls:?}").to_lowercase(),
        PolicyKind::Dane(_) => "dane".into(),
        PolicyKind::MtaSts { mode, .. } => format!("mta-sts {}", mode.as_str()),
        PolicyKind::Refused(result) => format!("refused ({})", result.as_str()),
        PolicyKind::StsUnavailable(result) => {
            format!("opportunistic ({} reported)", result.as_str())
        }
    }
}

/// The MTA-STS policy file this gateway publishes (`[tls_policy.publish]`), or None.
pub fn published_policy(config: &TlsPolicyConfig) -> Option<String> {
    let publish = config.publish.as_ref()?;
    let mode = match publish.mode.as_str() {
        "enforce" => Mode::Enforce,
        "testing" => Mode::Testing,
        _ => Mode::None,
    };
    let policy = mta_sts::Policy {
        mode,
        mx: publish.mx.clone(),
        max_age: publish.max_age.as_secs(),
    };
    Some(policy.to_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_sts_policy_is_opportunistic_and_reported() {
        let mut domain = DomainPolicy {
            domain: Some("example.net".into()),
            dane_names_trusted: false,
            sts: StsStatus::Unavailable {
                result: ResultType::StsPolicyFetchError,
                error: "HTTP status 404".into(),
            },
        };
        let policy = opportunistic_policy(&domain);
        assert_eq!(
            policy.kind,
            PolicyKind::StsUnavailable(ResultType::StsPolicyFetchError)
        );
        let scope = policy.scope.expect("reported");
        assert_eq!(
            (scope.domain.as_str(), scope.policy_type),
            ("example.net", PolicyType::Sts)
        );
        assert!(sts_host_policy(&domain, "mx.example.net").is_none());
        domain.sts = StsStatus::Absent;
        let policy = opportunistic_policy(&domain);
        assert_eq!(policy.kind, PolicyKind::Fixed(OutboundTls::Opportunistic));
        assert!(policy.scope.is_none());
    }

    #[test]
    fn a_bogus_mx_answer_is_not_an_insecure_one() {
        use Proof::{Bogus, Indeterminate, Insecure, Secure};
        assert_eq!(MxProof::of_answers(&[Secure, Secure]), MxProof::Secure);
        assert_eq!(MxProof::of_answers(&[Secure, Insecure]), MxProof::Insecure);
        assert_eq!(MxProof::of_answers(&[Indeterminate]), MxProof::Insecure);
        assert_eq!(MxProof::of_answers(&[]), MxProof::Insecure);
        assert!(matches!(
            MxProof::of_answers(&[Secure, Bogus]),
            MxProof::Bogus(_)
        ));
        assert_eq!(
            MxProof::of_lookup_error(TlsaLookup::SecureNone),
            MxProof::Secure
        );
        assert_eq!(
            MxProof::of_lookup_error(TlsaLookup::Insecure),
            MxProof::Insecure
        );
        assert_eq!(
            MxProof::of_lookup_error(TlsaLookup::Bogus("servfail".into())),
            MxProof::Bogus("servfail".into())
        );
    }
}
