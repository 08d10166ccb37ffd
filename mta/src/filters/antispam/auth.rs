//! Sender authentication with `mail-auth`: SPF (MAIL FROM, or HELO for the null sender),
//! DKIM, ARC and DMARC with the domain's policy, through the `[dns]` servers.
//!
//! # Contract
//! - Every query goes to the configured resolvers (`[dns] servers`, else resolv.conf), with
//!   the configured timeout; a DNS failure is a `temperror` result, never a stage error.
//! - The outcome is an `Authentication-Results:` value (RFC 8601, authserv-id = our host
//!   name), symbols with weights, and whether DMARC failed under `p=reject`.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};

use crate::config::DnsConfig;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the authentication resolver: {0}")]
pub struct AuthSetupError(String);

/// What the checks found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthOutcome {
    /// The value of `Authentication-Results:` (without the field name).
    pub header: String,
    pub symbols: Vec<(String, f64)>,
    /// DMARC failed and the domain publishes `p=reject`.
    pub dmarc_reject: bool,
}

pub struct Authenticator {
    inner: MessageAuthenticator,
}

/// The facts of the session the checks need.
pub struct AuthInput<'a> {
    pub raw: &'a [u8],
    pub client: IpAddr,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub hostname: &'a str,
}

impl Authenticator {
    pub fn new(dns: &DnsConfig) -> Result<Authenticator, AuthSetupError> {
        let mut options = ResolverOpts::default();
        options.timeout = dns.timeout.max(Duration::from_millis(100));
        options.attempts = 2;
        options.ndots = 0;
        let inner = if dns.servers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            for server in &dns.servers {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                config.add_name_server(name_server);
            }
            MessageAuthenticator::new(config, options)
        }
        .map_err(|e| AuthSetupError(e.to_string()))?;
        Ok(Authenticator { inner })
    }

    pub async fn check(&self, input: &AuthInput<'_>) -> AuthOutcome {
        let Some(message) = AuthenticatedMessage::parse(input.raw) else {
            return AuthOutcome {
                header: format!("{}; none", input.hostname),
                ..AuthOutcome::default()
            };
        };
        let helo = if input.helo.is_empty() {
            "unknown"
        } else {
            input.helo
        };
        let spf_params = if input.mail_from.is_empty() {
            SpfParameters::verify_ehlo(input.client, helo, input.hostname)
        } else {
            SpfParameters::verify_mail_from(input.client, helo, input.hostname, input.mail_from)
        };
        let spf = self.inner.verify_spf(spf_params).await;
        let dkim = self.inner.verify_dkim(&message).await;
        let arc = self.inner.verify_arc(&message).await;
        let mail_from_domain = input.mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = self
            .inner
            .verify_dmarc(DmarcParameters::new(
                &message,
                &dkim,
                mail_from_domain,
                &spf,
            ))
            .await;
        let from = message.from();
        let header_from = from.rsplit_once('@').map_or(from, |(_, d)| d);
        let results = AuthenticationResults::new(input.hostname)
            .with_dkim_results(&dkim, header_from)
            .with_spf_mailfrom_result(&spf, input.client, input.mail_from, helo)
            .with_arc_result(&arc, input.client)
            .with_dmarc_result(&dmarc);
        let mut symbols = Vec::new();
        symbols.extend(spf_symbol(spf.result()));
        if dkim.iter().any(|d| d.result() == &DkimResult::Pass) {
            symbols.push(("DKIM_PASS".to_string(), -0.5));
        } else if dkim
            .iter()
            .any(|d| matches!(d.result(), DkimResult::Fail(_)))
        {
            symbols.push(("DKIM_FAIL".to_string(), 1.5));
        }
        if matches!(arc.result(), DkimResult::Fail(_)) {
            symbols.push(("ARC_FAIL".to_string(), 1.0));
        }
        // A published policy and no aligned pass (mail-auth leaves a result None when SPF
        // failed outright and no DKIM signature verified): DMARC fails.
        let temporary = matches!(dmarc.spf_result(), DmarcResult::TempError(_))
            || matches!(dmarc.dkim_result(), DmarcResult::TempError(_));
        let dmarc_failed = dmarc.dmarc_record().is_some()
            && !temporary
            && dmarc.dkim_result() != &DmarcResult::Pass
            && dmarc.spf_result() != &DmarcResult::Pass;
        let dmarc_reject = dmarc_failed && dmarc.policy() == Policy::Reject;
        if dmarc_failed {
            let (symbol, weight) = match dmarc.policy() {
                Policy::Reject => ("DMARC_REJECT", 6.0),
                Policy::Quarantine => ("DMARC_QUARANTINE", 4.0),
                _ => ("DMARC_FAIL_NONE", 1.0),
            };
            symbols.push((symbol.to_string(), weight));
        } else if dmarc.dkim_result() == &DmarcResult::Pass
            || dmarc.spf_result() == &DmarcResult::Pass
        {
            symbols.push(("DMARC_PASS".to_string(), -1.0));
        }
        AuthOutcome {
            header: results.to_string(),
            symbols,
            dmarc_reject,
        }
    }
}

fn spf_symbol(result: SpfResult) -> Option<(String, f64)> {
    let (name, weight) = match result {
        SpfResult::Pass => ("SPF_PASS", -0.5),
        SpfResult::Fail => ("SPF_FAIL", 2.0),
        SpfResult::SoftFail => ("SPF_SOFTFAIL", 0.7),
        _ => return None,
    };
    Some((name.to_string(), weight))
}
