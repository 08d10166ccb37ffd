//! The pipeline stage: gathers the signals, sums the score, and turns it into a decision per
//! group of recipients (see the module contract in `mod.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::auth::{AuthInput, AuthOutcome, Authenticator};
use super::model::{Model, ModelError};
use super::reputation::{self, Greylist, Greylisted, SenderList};
use super::rules::{RulesError, SpamRules};
use super::scan::Scanner;
use crate::config::{
    parse_allow_entry, parse_list_entry, AntispamConfig, DirectionScope, DmarcRejectAction,
    DnsConfig,
};
use crate::pipeline::{
    Answer, Context, Decision, Findings, Modification, Stage, StageError, Verdict,
};
use crate::route::Resolver;
use crate::rules::AddressPattern;
use crate::smtp::reply::Reply;

const NAME: &str = "antispam";
/// Default weights of a blocklist hit when the entry names none.
const DNSBL_WEIGHT: f64 = 4.0;
const URIBL_WEIGHT: f64 = 4.0;
const LIST_WEIGHT: f64 = 100.0;

#[derive(Debug, thiserror::Error)]
pub enum SpamSetupError {
    #[error("antispam.model: {0}")]
    Model(#[from] ModelError),
    #[error("antispam.rules: {0}")]
    Rules(#[from] RulesError),
    #[error("antispam: {0}")]
    Auth(#[from] super::auth::AuthSetupError),
    #[error("antispam.{field}: {message}")]
    List {
        field: &'static str,
        message: String,
    },
}

/// The thresholds that apply to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Thresholds {
    tag: f64,
    quarantine: f64,
    reject: f64,
    acts: bool,
}

pub struct AntispamStage {
    config: AntispamConfig,
    scanner: Scanner,
    authenticator: Option<Authenticator>,
    resolver: Arc<dyn Resolver>,
    dnsbl: Vec<(String, f64)>,
    uribl: Vec<(String, f64)>,
    allow: SenderList,
    block: SenderList,
    greylist: Option<Greylist>,
    opt_out: Vec<AddressPattern>,
}

fn lists(
    field: &'static str,
    entries: &[String],
    weight: f64,
) -> Result<Vec<(String, f64)>, SpamSetupError> {
    entries
        .iter()
        .map(|e| {
            parse_list_entry(e, weight).map_err(|message| SpamSetupError::List { field, message })
        })
        .collect()
}

fn sender_list(field: &'static str, entries: &[String]) -> Result<SenderList, SpamSetupError> {
    let parsed = entries
        .iter()
        .map(|e| parse_allow_entry(e).map_err(|message| SpamSetupError::List { field, message }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SenderList::new(parsed))
}

impl AntispamStage {
    pub fn new(
        config: &AntispamConfig,
        dns: &DnsConfig,
        resolver: Arc<dyn Resolver>,
    ) -> Result<AntispamStage, SpamSetupError> {
        let model = match &config.model {
            Some(path) if path.exists() => Model::load(path)?,
            _ => Model::builtin()?,
        };
        let rules = match &config.rules {
            Some(path) => SpamRules::load(path)?,
            None => SpamRules::builtin()?,
        };
        let opt_out = config
            .opt_out
            .iter()
            .map(|p| {
                AddressPattern::parse(p).map_err(|message| SpamSetupError::List {
                    field: "opt_out",
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AntispamStage {
            scanner: Scanner { model, rules },
            authenticator: config
                .authentication
                .then(|| Authenticator::new(dns))
                .transpose()?,
            resolver,
            dnsbl: lists("dnsbl", &config.dnsbl, DNSBL_WEIGHT)?,
            uribl: lists("uribl", &config.uribl, URIBL_WEIGHT)?,
            allow: sender_list("allow", &config.allow)?,
            block: sender_list("block", &config.block)?,
            greylist: config
                .greylist
                .then(|| Greylist::new(config.greylist_delay)),
            opt_out,
            config: config.clone(),
        })
    }

    fn thresholds(&self, recipient: &str) -> Thresholds {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        let mut t = Thresholds {
            tag: self.config.tag_score,
            quarantine: self.config.quarantine_score,
            reject: self.config.reject_score,
            acts: !self.opt_out.iter().any(|p| p.matches(recipient)),
        };
        if let Some(d) = self
            .config
            .domains
            .iter()
            .find(|d| d.domain.eq_ignore_ascii_case(domain))
        {
            t.tag = d.tag_score.unwrap_or(t.tag);
            t.quarantine = d.quarantine_score.unwrap_or(t.quarantine);
            t.reject = d.reject_score.unwrap_or(t.reject);
        }
        t
    }

    async fn reputation(&self, client: IpAddr, url_hosts: &[String]) -> Vec<(String, f64)> {
        let mut symbols = Vec::new();
        for (zone, weight) in &self.dnsbl {
            if reputation::listed(&*self.resolver, &reputation::dnsbl_name(client, zone)).await {
                symbols.push((format!("DNSBL_{}", symbol_part(zone)), *weight));
            }
        }
        let mut domains: Vec<&str> = url_hosts
            .iter()
            .map(|h| super::html::registrable(h))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        for (zone, weight) in &self.uribl {
            for domain in domains.iter().take(20) {
                if reputation::listed(&*self.resolver, &format!("{domain}.{zone}")).await {
                    symbols.push((format!("URIBL_{}", symbol_part(zone)), *weight));
                    break;
                }
            }
        }
        symbols
    }

    fn greylisted(&self, cx: &Context<'_>, client: IpAddr) -> bool {
        let Some(greylist) = &self.greylist else {
            return false;
        };
        let sender = cx.envelope.sender.as_str();
        let now = Instant::now();
        let mut deferred = false;
        for recipient in cx.recipient_addresses() {
            deferred |= greylist.check(client, sender, recipient, now) == Greylisted::Defer;
        }
        deferred
    }
}

fn symbol_part(zone: &str) -> String {
    zone.split('.')
        .next()
        .unwrap_or(zone)
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// The score's fields, and the verdict of one group.
struct Outcome {
    score: f64,
    symbols: Vec<(String, f64)>,
    auth: Option<AuthOutcome>,
    raw_subject: Option<String>,
}

impl Outcome {
    fn status(&self, spam: bool) -> String {
        let tests: Vec<&str> = self.symbols.iter().map(|(s, _)| s.as_str()).collect();
        format!(
            "{}, score={:.1} tests={}",
            if spam { "Yes" } else { "No" },
            self.score,
            if tests.is_empty() {
                "NONE".to_string()
            } else {
                tests.join(",")
            }
        )
    }

    fn decision(&self, t: Thresholds, config: &AntispamConfig) -> Decision {
        let spam = self.score >= t.tag;
        let mut modifications = vec![
            Modification::RemoveHeader {
                name: "X-Spam-Flag".into(),
            },
            Modification::RemoveHeader {
                name: "X-Spam-Score".into(),
            },
            Modification::RemoveHeader {
                name: "X-Spam-Status".into(),
            },
        ];
        if let Some(auth) = &self.auth {
            modifications.push(Modification::InsertHeader {
                index: 0,
                name: "Authentication-Results".into(),
                value: auth.header.clone(),
            });
        }
        modifications.push(add("X-Spam-Score", format!("{:.1}", self.score)));
        modifications.push(add("X-Spam-Status", self.status(spam)));
        if spam {
            modifications.push(add("X-Spam-Flag", "YES".to_string()));
            if !config.subject_tag.is_empty() {
                let subject = self.raw_subject.as_deref().unwrap_or("");
                modifications.push(Modification::ChangeHeader {
                    name: "Subject".into(),
                    index: 1,
                    value: Some(
                        format!("{} {subject}", config.subject_tag)
                            .trim_end()
                            .to_string(),
                    ),
                });
            }
        }
        let dmarc_reject = self.auth.as_ref().is_some_and(|a| a.dmarc_reject);
        let verdict = match () {
            _ if !t.acts => Verdict::Continue,
            _ if dmarc_reject && config.dmarc_reject == DmarcRejectAction::Reject => reject(),
            _ if self.score >= t.reject => reject(),
            _ if dmarc_reject && config.dmarc_reject == DmarcRejectAction::Quarantine => {
                Verdict::Quarantine
            }
            _ if self.score >= t.quarantine => Verdict::Quarantine,
            _ => Verdict::Continue,
        };
        let reason = format!("spam score {:.1}", self.score);
        Decision {
            verdict,
            modifications,
            reason: Some(reason),
            score: Some(self.score),
            findings: Findings {
                virus: None,
                spam_score: Some(self.score),
                symbols: self.symbols.clone(),
            },
            ..Decision::default()
        }
    }
}

fn reject() -> Verdict {
    Verdict::Reject(Reply::new(550, "5.7.1 Message rejected as spam"))
}

fn add(name: &str, value: String) -> Modification {
    Modification::AddHeader {
        name: name.to_string(),
        value,
    }
}

#[async_trait]
impl Stage for AntispamStage {
    fn name(&self) -> &str {
        NAME
    }

    fn scope(&self) -> DirectionScope {
        self.config.direction
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
        let client = cx.session.client.ip();
        if self.greylisted(cx, client) {
            let reply = Reply::new(451, "4.7.1 Greylisted, please try again later");
            return Ok(Decision::new(Verdict::Tempfail(reply))
                .with_reason("greylisted")
                .into());
        }
        let outcome = self.score(cx, client).await?;
        let symbols: Vec<String> = outcome
            .symbols
            .iter()
            .map(|(name, weight)| format!("{name}({weight:.2})"))
            .collect();
        let symbols = symbols.join(",");
        log::info!(
            queue_id:% = cx.queue_id, client:% = client, score = outcome.score,
            symbols = symbols.as_str();
            "antispam: id={} client={client} score={:.1} symbols={symbols}", cx.queue_id, outcome.score
        );
        let mut groups: BTreeMap<Vec<u64>, (Thresholds, Vec<usize>)> = BTreeMap::new();
        for &index in cx.recipients {
            let address = cx
                .envelope
                .recipients
                .get(index)
                .map_or("", |r| r.address.as_str());
            let t = self.thresholds(address);
            let key = vec![
                t.tag.to_bits(),
                t.quarantine.to_bits(),
                t.reject.to_bits(),
                u64::from(t.acts),
            ];
            groups.entry(key).or_insert((t, Vec::new())).1.push(index);
        }
        let mut parts: Vec<(Vec<usize>, Decision)> = groups
            .into_values()
            .map(|(t, recipients)| (recipients, outcome.decision(t, &self.config)))
            .collect();
        if parts.len() == 1 {
            let (_, decision) = parts.remove(0);
            return Ok(Answer::One(decision));
        }
        Ok(Answer::PerRecipient(parts))
    }
}

impl AntispamStage {
    async fn score(&self, cx: &Context<'_>, client: IpAddr) -> Result<Outcome, StageError> {
        let header = cx.content.header();
        let fields = cx.content.header_fields();
        let raw_subject = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Subject"))
            .map(|(_, v)| v.clone());
        let from = cx
            .content
            .parsed_header()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string);
        let senders: Vec<&str> = [Some(cx.envelope.sender.as_str()), from.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        let mut symbols = Vec::new();
        if self.allow.matches(client, &senders) {
            symbols.push(("BW_ALLOWLIST".to_string(), -LIST_WEIGHT));
            return Ok(outcome(symbols, None, raw_subject));
        }
        if self.block.matches(client, &senders) {
            symbols.push(("BW_BLOCKLIST".to_string(), LIST_WEIGHT));
        }
        let message = cx
            .content
            .mime()
            .await
            .ok_or_else(|| StageError::new(NAME, "cannot read the message"))?;
        let scan = self.scanner.scan(message, header);
        symbols.extend(scan.symbols);
        let auth = match &self.authenticator {
            Some(authenticator) => Some(self.authenticate(authenticator, cx, client).await?),
            None => None,
        };
        if let Some(auth) = &auth {
            symbols.extend(auth.symbols.iter().cloned());
        }
        symbols.extend(self.reputation(client, &scan.features.url_hosts).await);
        Ok(outcome(symbols, auth, raw_subject))
    }

    async fn authenticate(
        &self,
        authenticator: &Authenticator,
        cx: &Context<'_>,
        client: IpAddr,
    ) -> Result<AuthOutcome, StageError> {
        let raw = cx
            .content
            .bytes(u64::MAX)
            .await
            .map_err(|e| StageError::new(NAME, e.to_string()))?;
        let raw: &[u8] = raw.as_deref().unwrap_or(cx.content.header());
        let input = AuthInput {
            raw,
            client,
            helo: cx.session.helo.as_deref().unwrap_or(""),
            mail_from: cx.envelope.sender.as_str(),
            hostname: cx.hostname,
        };
        Ok(authenticator.check(&input).await)
    }
}

fn outcome(
    symbols: Vec<(String, f64)>,
    auth: Option<AuthOutcome>,
    raw_subject: Option<String>,
) -> Outcome {
    let score = (symbols.iter().map(|(_, w)| w).sum::<f64>() * 10.0).round() / 10.0;
    Outcome {
        score,
        symbols,
        auth,
        raw_subject,
    }
}
