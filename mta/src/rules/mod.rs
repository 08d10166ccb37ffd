//! The administrator's rule table (`[[rule]]`): who + what + when → action, in priority order,
//! as Proxmox Mail Gateway's rule system; one stage of the content pipeline.
//!
//! # Contract
//! - Rules run highest priority first (file order among equals). A rule matches when all its
//!   conditions hold; a rule without conditions matches every message of its direction.
//! - Non-final actions (`tag`, `add_header`, `copy`, `redirect`) are applied and evaluation goes
//!   on; the first final action (`accept`, `reject`, `tempfail`, `discard`, `quarantine`) wins.
//! - `to` is matched per recipient: recipients that match different rules get different
//!   outcomes, and the pipeline splits the message into one copy per group.
//! - Everything (regexes, globs, action parameters) is compiled at load; a bad rule is a
//!   config error with line:column, never a surprise at run time.

mod condition;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use condition::{AddressPattern, AttachmentMatch, CompileError, Conditions};

use crate::config::{disclaimer_source, DirectionScope, RuleAction, RuleConfig};
use crate::filters::attachment::{self, Removal};
use crate::filters::disclaimer::Disclaimer;
use crate::filters::mime::archive::Limits;
use crate::filters::mime::splice::Edits;
use crate::filters::mime::{inventory, Inventory};
use crate::pipeline::{
    Answer, ArchiveRequest, Context, CopyRequest, Decision, Modification, Stage, StageError,
    Verdict,
};
use crate::smtp::reply::Reply;

/// What a matching rule does, with its parameters.
#[derive(Debug, Clone)]
enum Action {
    Accept,
    Reject,
    Tempfail,
    Discard,
    Quarantine,
    Tag(String),
    AddHeader {
        name: String,
        value: String,
    },
    Copy {
        to: Vec<String>,
        archive: Option<std::path::PathBuf>,
    },
    Redirect(Vec<String>),
    Strip,
    Disclaimer(Disclaimer),
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    scope: DirectionScope,
    conditions: Conditions,
    action: Action,
    reason: Option<String>,
}

impl Rule {
    fn is_final(&self) -> bool {
        matches!(
            self.action,
            Action::Accept
                | Action::Reject
                | Action::Tempfail
                | Action::Discard
                | Action::Quarantine
        )
    }
}

/// The verdict for a virus no rule decided on (the anti-virus `action`), by virus name.
pub type VirusFallback = Arc<dyn Fn(&str) -> Verdict + Send + Sync>;

/// The compiled rule table.
pub struct RuleSet {
    rules: Vec<Rule>,
    timeout: Duration,
    virus_fallback: Option<VirusFallback>,
}

impl RuleSet {
    /// Compiles the rules; the error names the rule's index in the file and the field.
    pub fn compile(
        configs: &[RuleConfig],
        timeout: Duration,
    ) -> Result<RuleSet, (usize, CompileError)> {
        let mut indexed: Vec<(usize, &RuleConfig)> = configs.iter().enumerate().collect();
        // Stable: equal priorities keep file order.
        indexed.sort_by_key(|(_, r)| std::cmp::Reverse(r.priority));
        let rules = indexed
            .into_iter()
            .map(|(i, config)| compile_rule(config).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleSet {
            rules,
            timeout,
            virus_fallback: None,
        })
    }

    /// Some final rule acts on `virus = true`: the anti-virus stage then leaves the decision
    /// on a detection to the rules (see [`RuleSet::set_virus_fallback`]).
    pub fn decides_viruses(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.is_final() && r.conditions.virus == Some(true))
    }

    /// A message a virus was found in and that no final rule decided on gets `fallback`, so a
    /// detection is never let through by a rule table that only handles some recipients.
    pub fn set_virus_fallback(&mut self, fallback: VirusFallback) {
        self.virus_fallback = Some(fallback);
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn per_recipient(&self) -> bool {
        self.rules.iter().any(|r| !r.conditions.to.is_empty())
    }
}

fn compile_rule(config: &RuleConfig) -> Result<Rule, CompileError> {
    let conditions = Conditions::compile(config)?;
    let missing = |field: &str| CompileError {
        field: field.to_string(),
        message: format!("action {:?} needs {field}", config.action),
    };
    let action = match config.action {
        RuleAction::Accept => Action::Accept,
        RuleAction::Reject => Action::Reject,
        RuleAction::Tempfail => Action::Tempfail,
        RuleAction::Discard => Action::Discard,
        RuleAction::Quarantine => Action::Quarantine,
        RuleAction::Tag => Action::Tag(config.tag.clone().ok_or_else(|| missing("tag"))?),
        RuleAction::AddHeader => {
            let spec = config
                .add_header
                .as_deref()
                .ok_or_else(|| missing("add_header"))?;
            let (name, value) = spec
                .split_once(':')
                .filter(|(n, _)| {
                    !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| CompileError {
                    field: "add_header".into(),
                    message: "expected \"Name: value\"".into(),
                })?;
            Action::AddHeader {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            }
        }
        RuleAction::Copy if config.copy_to.is_empty() && config.archive_dir.is_some() => {
            Action::Copy {
                to: Vec::new(),
                archive: config.archive_dir.clone(),
            }
        }
        RuleAction::Copy => Action::Copy {
            to: addresses("copy_to", &config.copy_to)?,
            archive: config.archive_dir.clone(),
        },
        RuleAction::Strip if config.has_attachment_conditions() => Action::Strip,
        RuleAction::Strip => return Err(missing("an attachment condition")),
        RuleAction::Disclaimer => Action::Disclaimer(disclaimer(config)?),
        RuleAction::Redirect => Action::Redirect(addresses("redirect_to", &config.redirect_to)?),
    };
    Ok(Rule {
        name: config.name.clone(),
        scope: config.direction,
        conditions,
        action,
        reason: config.reason.clone(),
    })
}

fn disclaimer(config: &RuleConfig) -> Result<Disclaimer, CompileError> {
    let read = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(disclaimer_source)
            .transpose()
            .map_err(|message| CompileError {
                field: field.to_string(),
                message,
            })
    };
    let found = Disclaimer {
        text: read("disclaimer_text", &config.disclaimer_text)?,
        html: read("disclaimer_html", &config.disclaimer_html)?,
    };
    if found.text.is_none() && found.html.is_none() {
        return Err(CompileError {
            field: "action".into(),
            message: "action \"disclaimer\" needs disclaimer_text or disclaimer_html".into(),
        });
    }
    Ok(found)
}

fn addresses(field: &str, list: &[String]) -> Result<Vec<String>, CompileError> {
    if list.is_empty() {
        return Err(CompileError {
            field: field.to_string(),
            message: format!("{field} needs at least one address"),
        });
    }
    for (i, address) in list.iter().enumerate() {
        let valid = address.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') || domain == "localhost"
        });
        if !valid || address.contains(char::is_whitespace) {
            return Err(CompileError {
                field: format!("{field}[{i}]"),
                message: format!("{address:?} is not an email address"),
            });
        }
    }
    Ok(list.to_vec())
}

/// Memoised message-wide condition results (one per rule) for one evaluation.
struct MessageFacts<'c, 'a> {
    cx: &'c Context<'a>,
    matched: Vec<Option<bool>>,
    /// The attachments, listed once for all rules.
    inventory: Option<Inventory>,
    /// The attachments each rule's attachment conditions matched (for `strip`).
    attachments: Vec<Vec<AttachmentMatch>>,
}

impl<'c, 'a> MessageFacts<'c, 'a> {
    async fn holds(&mut self, index: usize, rule: &Rule) -> bool {
        if let Some(known) = self.matched[index] {
            return known;
        }
        let mut result = message_conditions_hold(&rule.conditions, self.cx).await;
        if result {
            if let Some(conditions) = &rule.conditions.attachments {
                let found = conditions.matches(self.inventory().await);
                result = !found.is_empty();
                self.attachments[index] = found;
            }
        }
        self.matched[index] = Some(result);
        result
    }

    async fn inventory(&mut self) -> &Inventory {
        if self.inventory.is_none() {
            let listed = match self.cx.content.mime().await {
                Some(message) => inventory(message, Limits::default()),
                None => Inventory::default(),
            };
            self.inventory = Some(listed);
        }
        self.inventory.get_or_insert_with(Inventory::default)
    }
}

async fn message_conditions_hold(c: &Conditions, cx: &Context<'_>) -> bool {
    if !c.sender_matches(&cx.envelope.sender) {
        return false;
    }
    if c.size_over.is_some_and(|limit| cx.content.len() <= limit) {
        return false;
    }
    if c.virus
        .is_some_and(|want| cx.findings.virus.is_some() != want)
    {
        return false;
    }
    if let Some(limit) = c.spam_score_over {
        if !cx.findings.spam_score.is_some_and(|score| score > limit) {
            return false;
        }
    }
    if let Some(subject) = &c.subject {
        if !subject.is_match(&cx.content.subject()) {
            return false;
        }
    }
    let header_holds = |(name, pattern): &(String, regex::Regex)| {
        cx.content.field_values(name).any(|v| pattern.is_match(&v))
    };
    if !c.header.iter().all(header_holds) {
        return false;
    }
    if let Some(body) = &c.body {
        if !body.is_match(&cx.content.text().await) {
            return false;
        }
    }
    true
}

impl RuleSet {
    /// The rules (indexes) that apply to one recipient, up to the first final one.
    async fn matching(
        &self,
        facts: &mut MessageFacts<'_, '_>,
        recipient: Option<&str>,
    ) -> Vec<usize> {
        let mut hits = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.scope.covers(facts.cx.direction) {
                continue;
            }
            if let Some(recipient) = recipient {
                if !rule.conditions.recipient_matches(recipient) {
                    continue;
                }
            }
            if !facts.holds(index, rule).await {
                continue;
            }
            hits.push(index);
            if rule.is_final() {
                break;
            }
        }
        hits
    }

    async fn decision(
        &self,
        hits: &[usize],
        facts: &MessageFacts<'_, '_>,
        recipients: &[usize],
    ) -> Decision {
        let cx = facts.cx;
        let mut decision = Decision::default();
        let mut edits = Edits::default();
        for &index in hits {
            let rule = &self.rules[index];
            let reason = rule.reason.clone().unwrap_or_else(|| rule.name.clone());
            decision
                .findings
                .symbols
                .push((format!("rule:{}", rule.name), 0.0));
            match &rule.action {
                Action::Tag(tag) => decision.modifications.extend(tag_subject(cx, tag)),
                Action::AddHeader { name, value } => {
                    decision.modifications.push(Modification::AddHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                }
                Action::Copy { to, archive } => {
                    let by = format!("rule:{}", rule.name);
                    if !to.is_empty() {
                        decision.copies.push(CopyRequest {
                            recipients: to.clone(),
                            by: by.clone(),
                        });
                    }
                    if let Some(dir) = archive {
                        decision.archives.push(ArchiveRequest {
                            dir: dir.clone(),
                            by,
                        });
                    }
                }
                Action::Redirect(to) => decision.modifications.extend(redirect(cx, recipients, to)),
                Action::Strip => {
                    let Some(message) = cx.content.mime().await else {
                        continue;
                    };
                    let removals: Vec<Removal> = facts.attachments[index]
                        .iter()
                        .map(|m| Removal {
                            part: m.part,
                            name: m.name.clone(),
                            why: format!("{reason} ({})", m.what),
                        })
                        .collect();
                    attachment::strip(message, &removals, &mut edits);
                    decision.hold_original =
                        Some(format!("stripped by rule:{}: {reason}", rule.name));
                }
                Action::Disclaimer(disclaimer) => {
                    let Some(message) = cx.content.mime().await else {
                        continue;
                    };
                    if let Err(skipped) = disclaimer.add(message, &mut edits) {
                        log::info!(
                            queue_id:% = cx.queue_id, rule = rule.name.as_str();
                            "disclaimer: id={} not added by rule:{}: {}",
                            cx.queue_id, rule.name, skipped.as_str()
                        );
                    }
                }
                final_action => {
                    decision.verdict = final_verdict(final_action, &rule.conditions, &reason);
                    decision.reason = Some(reason);
                    decision.decided_by = Some(format!("rule:{}", rule.name));
                }
            }
        }
        if !edits.is_empty() {
            self.finish_edits(cx, edits, &mut decision).await;
        }
        if decision.decided_by.is_none() && !hits.is_empty() {
            // Only non-final rules matched: the timeline names them all.
            let names: Vec<String> = hits
                .iter()
                .map(|&i| format!("rule:{}", self.rules[i].name))
                .collect();
            decision.decided_by = Some(names.join(","));
        }
        if let (Verdict::Continue, Some(virus), Some(fallback)) =
            (&decision.verdict, &cx.findings.virus, &self.virus_fallback)
        {
            decision.verdict = fallback(virus);
            decision.reason = Some(format!("virus {virus}"));
            decision.decided_by = Some("antivirus".into());
        }
        decision
    }

    /// Turns the collected body edits into modifications; a message too large to have been
    /// parsed whole cannot be spliced safely, so it is quarantined instead.
    async fn finish_edits(&self, cx: &Context<'_>, edits: Edits, decision: &mut Decision) {
        match cx.content.bytes(u64::MAX).await {
            Ok(Some(raw)) => {
                let body_offset = cx.content.body_offset() as usize;
                decision
                    .modifications
                    .extend(edits.into_modifications(&raw, body_offset));
            }
            _ if decision.verdict.is_final() => {}
            _ => {
                decision.verdict = Verdict::Quarantine;
                decision.reason = Some("too large to edit in place".into());
                decision.hold_original = None;
            }
        }
    }
}

fn final_verdict(action: &Action, conditions: &Conditions, reason: &str) -> Verdict {
    let text = printable(reason);
    match action {
        Action::Accept => Verdict::Accept,
        // RFC 3463: 5.3.4, message too big for system (a size policy, not a content one).
        Action::Reject if conditions.size_over.is_some() => Verdict::Reject(Reply::owned(
            552,
            format!("5.3.4 Message size exceeds a policy limit: {text}"),
        )),
        Action::Reject => {
            Verdict::Reject(Reply::owned(550, format!("5.7.1 Message rejected: {text}")))
        }
        Action::Tempfail => {
            Verdict::Tempfail(Reply::owned(451, format!("4.7.1 Message deferred: {text}")))
        }
        Action::Discard => Verdict::Discard,
        Action::Quarantine => Verdict::Quarantine,
        _ => Verdict::Continue,
    }
}

/// Reply text must stay one printable line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

fn tag_subject(cx: &Context<'_>, tag: &str) -> Vec<Modification> {
    let current = cx
        .content
        .header_fields()
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("subject"))
        .map(|(_, value)| value.clone());
    match current {
        Some(subject) if subject.starts_with(tag) => Vec::new(),
        Some(subject) => vec![Modification::ChangeHeader {
            name: "Subject".into(),
            index: 1,
            value: Some(format!("{tag} {subject}")),
        }],
        None => vec![Modification::AddHeader {
            name: "Subject".into(),
            value: tag.to_string(),
        }],
    }
}

fn redirect(cx: &Context<'_>, recipients: &[usize], to: &[String]) -> Vec<Modification> {
    let mut changes: Vec<Modification> = recipients
        .iter()
        .filter_map(|&i| cx.envelope.recipients.get(i))
        .map(|r| Modification::DeleteRecipient {
            address: r.address.clone(),
        })
        .collect();
    changes.extend(to.iter().map(|address| Modification::AddRecipient {
        address: address.clone(),
        args: None,
    }));
    changes
}

#[async_trait]
impl Stage for RuleSet {
    fn name(&self) -> &str {
        "rules"
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
        let mut facts = MessageFacts {
            cx,
            matched: vec![None; self.rules.len()],
            inventory: None,
            attachments: vec![Vec::new(); self.rules.len()],
        };
        if !self.per_recipient() {
            let hits = self.matching(&mut facts, None).await;
            return Ok(self.decision(&hits, &facts, cx.recipients).await.into());
        }
        // One recipient (most mail) cannot split: no grouping needed.
        if let [only] = cx.recipients {
            let address = cx
                .envelope
                .recipients
                .get(*only)
                .map(|r| r.address.as_str());
            let hits = self.matching(&mut facts, Some(address.unwrap_or(""))).await;
            return Ok(self.decision(&hits, &facts, cx.recipients).await.into());
        }
        let mut by_outcome: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for &index in cx.recipients {
            let address = cx
                .envelope
                .recipients
                .get(index)
                .map_or("", |r| r.address.as_str());
            let hits = self.matching(&mut facts, Some(address)).await;
            by_outcome.entry(hits).or_default().push(index);
        }
        if by_outcome.len() == 1 {
            let (hits, _) = by_outcome.into_iter().next().unwrap_or_default();
            return Ok(self.decision(&hits, &facts, cx.recipients).await.into());
        }
        let mut parts = Vec::with_capacity(by_outcome.len());
        for (hits, recipients) in by_outcome {
            let decision = self.decision(&hits, &facts, &recipients).await;
            parts.push((recipients, decision));
        }
        Ok(Answer::PerRecipient(parts))
    }
}
