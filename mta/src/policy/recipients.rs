//! Recipient validation for our domains: accept-all, a list file, or a callout (an RCPT probe
//! to the internal server, answers cached with separate positive and negative TTLs).
//!
//! Unknown recipients get 550 5.1.1 and are recorded per client address (the harvest signal).
//! A callout that cannot reach any next hop answers 451 4.4.3 so the sender retries: the
//! gateway never bounces mail for a valid user because the groupware server was down.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{HarvestTracker, SessionInfo, Stage, Verdict};
use crate::bounded::BoundedMap;
use crate::config::{Config, RecipientCheckConfig, RecipientCheckKind};
use crate::smtp::address::{quoted, Mailbox};
use crate::smtp::reply::{RejectReason, Reply};
use crate::smtp_client::{Client, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum RecipientsError {
    #[error("cannot read recipient list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

enum Check {
    AcceptAll,
    List(HashSet<String>),
    Callout {
        next_hops: Vec<String>,
        positive_ttl: Duration,
        negative_ttl: Duration,
        timeout: Duration,
    },
}

struct DomainCheck {
    domains: Vec<String>,
    check: Check,
}

/// Callout answers remembered at most (the oldest go first).
const CALLOUT_ANSWERS_MAX: usize = 200_000;

/// Callout answers, shared across config reloads.
pub struct CalloutCache {
    answers: Mutex<BoundedMap<String, (bool, Instant)>>,
}

impl Default for CalloutCache {
    fn default() -> Self {
        Self {
            answers: Mutex::new(BoundedMap::new(CALLOUT_ANSWERS_MAX)),
        }
    }
}

impl CalloutCache {
    fn get(&self, address: &str) -> Option<bool> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .get(address)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(known, _)| *known)
    }

    fn put(&self, address: String, known: bool, ttl: Duration) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.insert(address, (known, Instant::now() + ttl));
    }
}

pub struct RecipientValidation {
    checks: Vec<DomainCheck>,
    harvest: Arc<HarvestTracker>,
    callouts: Arc<CalloutCache>,
    hostname: String,
}

impl RecipientValidation {
    pub fn from_config(
        config: &Config,
        harvest: Arc<HarvestTracker>,
        callouts: Arc<CalloutCache>,
    ) -> Result<Self, RecipientsError> {
        let checks = config
            .recipient_checks
            .iter()
            .map(build_check)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            checks,
            harvest,
            callouts,
            hostname: config.server.hostname.clone(),
        })
    }

    fn check_for(&self, domain: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| crate::config::domain_listed(&c.domains, domain))
            .map(|c| &c.check)
    }

    fn unknown(&self, session: &SessionInfo, recipient: &Mailbox) -> Verdict {
        let count = self.harvest.record(session.client.ip());
        log::info!(
            "recipient unknown: client={} recipient={} unknown_in_window={count}",
            session.client.ip(),
            recipient.canonical()
        );
        Verdict::Reject(
            Reply::owned(
                550,
                format!(
                    "5.1.1 <{}>: Recipient address rejected: User unknown",
                    recipient.canonical()
                ),
            )
            .because(RejectReason::UnknownRecipient),
        )
    }

    async fn callout(
        &self,
        address: &str,
        next_hops: &[String],
        positive_ttl: Duration,
        negative_ttl: Duration,
        timeout: Duration,
    ) -> Option<bool> {
        if let Some(known) = self.callouts.get(address) {
            return Some(known);
        }
        for hop in next_hops {
            let probe =
                tokio::time::timeout(timeout, probe(hop, &self.hostname, address, timeout)).await;
            match probe {
                Ok(Ok(Some(known))) => {
                    let ttl = if known { positive_ttl } else { negative_ttl };
                    self.callouts.put(address.to_string(), known, ttl);
                    return Some(known);
                }
                Ok(Ok(None)) => log::warn!("callout to {hop} for {address}: temporary answer"),
                Ok(Err(e)) => log::warn!("callout to {hop} for {address}: {e}"),
                Err(_) => log::warn!("callout to {hop} for {address}: timed out"),
            }
        }
        None
    }
}

fn build_check(config: &RecipientCheckConfig) -> Result<DomainCheck, RecipientsError> {
    let check = match config.check {
        RecipientCheckKind::AcceptAll => Check::AcceptAll,
        RecipientCheckKind::List => Check::List(match &config.file {
            Some(path) => load_list(path)?,
            None => HashSet::new(),
        }),
        RecipientCheckKind::Callout => Check::Callout {
            next_hops: config.next_hops.clone(),
            positive_ttl: config.positive_ttl,
            negative_ttl: config.negative_ttl,
            timeout: config.timeout,
        },
    };
    Ok(DomainCheck {
        domains: config.domains.clone(),
        check,
    })
}

/// One address per line (`#` comments); `@domain` accepts the whole domain. Case-insensitive.
fn load_list(path: &Path) -> Result<HashSet<String>, RecipientsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipientsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_end_matches('.').to_lowercase())
        .collect())
}

fn list_contains(list: &HashSet<String>, recipient: &Mailbox) -> bool {
    let full = recipient.canonical().to_lowercase();
    let whole_domain = format!("@{}", recipient.domain);
    list.contains(&full) || list.contains(&whole_domain)
}

#[async_trait]
impl Stage for RecipientValidation {
    fn name(&self) -> &'static str {
        "recipients"
    }

    async fn on_rcpt(&self, session: &SessionInfo, recipient: &Mailbox) -> Verdict {
        let Some(domain) = recipient.domain_name() else {
            return Verdict::Continue;
        };
        match self.check_for(domain) {
            None | Some(Check::AcceptAll) => Verdict::Continue,
            Some(Check::List(list)) if list_contains(list, recipient) => Verdict::Continue,
            Some(Check::List(_)) => self.unknown(session, recipient),
            Some(Check::Callout {
                next_hops,
                positive_ttl,
                negative_ttl,
                timeout,
            }) => {
                let address = recipient.canonical().to_lowercase();
                let answer = self
                    .callout(&address, next_hops, *positive_ttl, *negative_ttl, *timeout)
                    .await;
                match answer {
                    Some(true) => Verdict::Continue,
                    Some(false) => self.unknown(session, recipient),
                    None => Verdict::Reject(
                        Reply::new(
                            451,
                            "4.4.3 Recipient verification unavailable, try again later",
                        )
                        .because(RejectReason::VerificationUnavailable),
                    ),
                }
            }
        }
    }
}

/// Asks `hop` whether it would accept `address`: `Some(true)` for 2xx, `Some(false)` for 5xx
/// to RCPT, `None` for anything temporary. Speaks through the delivery client.
async fn probe(
    hop: &str,
    hostname: &str,
    address: &str,
    timeout: Duration,
) -> std::io::Result<Option<bool>> {
    let failed = |e: ClientError| std::io::Error::other(e.to_string());
    let peer = tokio::net::lookup_host(hop)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{hop}: no address")))?;
    let (mut client, greeting) = Client::connect(peer, timeout, timeout, timeout)
        .await
        .map_err(failed)?;
    let mut answer = None;
    if greeting.code / 100 == 2
        && client.hello(hostname).await.map_err(failed)?.is_positive()
        && client
            .command("MAIL FROM:<>")
            .await
            .map_err(failed)?
            .is_positive()
    {
        let rcpt = client
            .command(&format!("RCPT TO:<{}>", quoted(address)))
            .await
            .map_err(failed)?;
        answer = match rcpt.code / 100 {
            2 => Some(true),
            5 => Some(false),
            _ => None,
        };
    }
    client.quit().await;
    Ok(answer)
}
