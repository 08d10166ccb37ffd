//! Running the stages over one message: groups of recipients, budgets, `on_error`, the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::smtp::reply::Reply;
use crate::telemetry::telemetry;

use super::{
    Answer, ArchiveRequest, Context, CopyRequest, Decision, Findings, Modification, OnError, Stage,
    StageError, Verdict,
};

/// The final verdict of a group of recipients.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupVerdict {
    Accept,
    Reject(Reply),
    Tempfail(Reply),
    Discard,
    Quarantine,
}

impl GroupVerdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupVerdict::Accept => "accept",
            GroupVerdict::Reject(_) => "reject",
            GroupVerdict::Tempfail(_) => "tempfail",
            GroupVerdict::Discard => "discard",
            GroupVerdict::Quarantine => "quarantine",
        }
    }
}

/// One stage's say on a group, kept for the tracking timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub stage: String,
    pub verdict: &'static str,
    pub reason: Option<String>,
    pub score: Option<f64>,
}

/// Recipients that share one outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Indexes into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// None while stages are still asked.
    pub verdict: Option<GroupVerdict>,
    pub modifications: Vec<Modification>,
    pub copies: Vec<CopyRequest>,
    pub archives: Vec<ArchiveRequest>,
    /// Keep the original in quarantine (the reason) while delivering the changed message.
    pub hold_original: Option<String>,
    pub findings: Findings,
    /// The stage (or `rule:NAME`) that made the final decision, and why.
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub steps: Vec<Step>,
}

impl Group {
    fn new(recipients: Vec<usize>) -> Self {
        Group {
            recipients,
            verdict: None,
            modifications: Vec::new(),
            copies: Vec::new(),
            archives: Vec::new(),
            hold_original: None,
            findings: Findings::default(),
            decided_by: None,
            reason: None,
            score: None,
            steps: Vec::new(),
        }
    }

    fn split_off(&self, recipients: Vec<usize>) -> Group {
        Group {
            recipients,
            ..self.clone()
        }
    }

    /// The verdict, `Accept` when no stage decided.
    pub fn final_verdict(&self) -> GroupVerdict {
        self.verdict.clone().unwrap_or(GroupVerdict::Accept)
    }

    /// Some modification changes the content (not only the envelope).
    pub fn changes_content(&self) -> bool {
        self.modifications.iter().any(Modification::touches_content)
    }

    fn take(&mut self, stage: &str, decision: Decision) {
        // A stage that found nothing made no decision: no line in the timeline either.
        if decision.is_quiet() {
            self.findings.merge(decision.findings);
            return;
        }
        let by = decision.decided_by.unwrap_or_else(|| stage.to_string());
        self.steps.push(Step {
            stage: by.clone(),
            verdict: decision.verdict.as_str(),
            reason: decision.reason.clone(),
            score: decision.score,
        });
        self.modifications.extend(decision.modifications);
        self.copies.extend(decision.copies);
        self.archives.extend(decision.archives);
        if decision.hold_original.is_some() {
            self.hold_original = decision.hold_original;
        }
        self.findings.merge(decision.findings);
        if decision.score.is_some() {
            self.score = decision.score;
        }
        let verdict = match decision.verdict {
            Verdict::Continue => return,
            Verdict::Accept => GroupVerdict::Accept,
            Verdict::Reject(reply) => GroupVerdict::Reject(reply),
            Verdict::Tempfail(reply) => GroupVerdict::Tempfail(reply),
            Verdict::Discard => GroupVerdict::Discard,
            Verdict::Quarantine => GroupVerdict::Quarantine,
        };
        self.verdict = Some(verdict);
        self.decided_by = Some(by);
        self.reason = decision.reason;
    }
}

/// The ordered stages and the chain's budget.
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    budget: Duration,
}

/// What identifies the message in the decision log.
struct LogKeys<'a> {
    session_id: &'a str,
    queue_id: crate::queue::QueueId,
    client: std::net::IpAddr,
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<dyn Stage>>, budget: Duration) -> Self {
        Pipeline { stages, budget }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn stage_names(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.name().to_string()).collect()
    }

    /// Asks every stage about every open group; returns the groups, each with its outcome.
    /// `skip` names stages not to ask (a release skips the stage that quarantined).
    pub async fn run(&self, base: &Context<'_>, skip: &[String]) -> Vec<Group> {
        let started = Instant::now();
        let mut groups = vec![Group::new(base.recipients.to_vec())];
        let keys = LogKeys {
            session_id: &base.session.session_id,
            queue_id: base.queue_id,
            client: base.session.client.ip(),
        };
        for stage in &self.stages {
            if !stage.scope().covers(base.direction) || skip.iter().any(|s| s == stage.name()) {
                continue;
            }
            let mut next = Vec::with_capacity(groups.len());
            for group in groups {
                if group.verdict.is_some() {
                    next.push(group);
                    continue;
                }
                let remaining = self.budget.saturating_sub(started.elapsed());
                next.extend(ask(stage.as_ref(), base, group, remaining, &keys).await);
            }
            groups = next;
        }
        groups
    }
}

async fn ask(
    stage: &dyn Stage,
    base: &Context<'_>,
    mut group: Group,
    remaining: Duration,
    keys: &LogKeys<'_>,
) -> Vec<Group> {
    let limit = stage.timeout().min(remaining);
    let asked = {
        let cx = Context {
            session: base.session,
            direction: base.direction,
            queue_id: base.queue_id,
            envelope: base.envelope,
            recipients: &group.recipients,
            content: base.content,
            findings: &group.findings,
            hostname: base.hostname,
        };
        let asked_at = Instant::now();
        let asked = tokio::time::timeout(limit, stage.check(&cx)).await;
        telemetry().stage_latency(stage.name(), asked_at.elapsed());
        asked
    };
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return vec![failed(stage, group, error, keys)],
        Err(_) => {
            let error = StageError::new(stage.name(), format!("no answer within {limit:?}"));
            return vec![failed(stage, group, error, keys)];
        }
    };
    match answer {
        Answer::One(decision) => {
            log_decision(stage.name(), &decision, keys, group.recipients.len());
            group.take(stage.name(), decision);
            vec![group]
        }
        Answer::PerRecipient(parts) => split(stage.name(), group, parts, keys),
    }
}

/// Splits `group` by the stage's per-recipient answer; recipients the answer leaves out keep
/// going with no decision from this stage.
fn split(
    stage: &str,
    group: Group,
    parts: Vec<(Vec<usize>, Decision)>,
    keys: &LogKeys<'_>,
) -> Vec<Group> {
    let mut left: Vec<usize> = group.recipients.clone();
    let mut out = Vec::with_capacity(parts.len() + 1);
    for (recipients, decision) in parts {
        let mine: Vec<usize> = recipients
            .into_iter()
            .filter(|r| left.contains(r))
            .collect();
        left.retain(|r| !mine.contains(r));
        if mine.is_empty() {
            continue;
        }
        log_decision(stage, &decision, keys, mine.len());
        let mut part = group.split_off(mine);
        part.take(stage, decision);
        out.push(part);
    }
    if !left.is_empty() {
        out.push(group.split_off(left));
    }
    out
}

fn failed(stage: &dyn Stage, mut group: Group, error: StageError, keys: &LogKeys<'_>) -> Group {
    let policy = stage.on_error();
    telemetry().verdict(stage.name(), "error", stage.name());
    log::warn!(
        session_id = keys.session_id, queue_id:% = keys.queue_id,
        client_addr:% = keys.client, stage = stage.name(),
        on_error:? = policy, reason:% = error;
        "filter failed: stage={} on_error={policy:?} reason={error}", stage.name()
    );
    let decision = match policy {
        OnError::Tempfail => Decision::new(Verdict::Tempfail(Reply::owned(
            451,
            format!(
                "4.7.1 Message could not be checked ({}), try again later",
                stage.name()
            ),
        ))),
        OnError::Reject => Decision::new(Verdict::Reject(Reply::owned(
            550,
            format!("5.7.1 Message refused by filter {}", stage.name()),
        ))),
        OnError::Accept => Decision {
            modifications: vec![Modification::AddHeader {
                name: "X-Bulwark-Unscanned".into(),
                value: format!("{} ({})", stage.name(), error.message),
            }],
            ..Decision::default()
        },
    };
    group.take(stage.name(), decision.with_reason(error.to_string()));
    group
}

fn log_decision(stage: &str, decision: &Decision, keys: &LogKeys<'_>, recipients: usize) {
    let by = decision.decided_by.as_deref().unwrap_or(stage);
    let reason = decision.reason.as_deref().unwrap_or("");
    let verdict = decision.verdict.as_str();
    telemetry().verdict(stage, verdict, by);
    // A stage that found nothing is not a decision worth an info line per message.
    let level = if decision.is_quiet() {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        session_id = keys.session_id, queue_id:% = keys.queue_id,
        client_addr:% = keys.client, stage = by, verdict = verdict,
        reason = reason, score:? = decision.score, recipients = recipients;
        "filter: id={} stage={by} verdict={verdict} reason={reason:?} score={} nrcpt={recipients}",
        keys.queue_id,
        decision.score.map_or("-".to_string(), |s| format!("{s:.1}")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Direction, ListenerRole};
    use crate::pipeline::MessageContent;
    use crate::policy::SessionInfo;
    use crate::queue::{Envelope, Spool, SyncMode};
    use async_trait::async_trait;

    /// A stage that sleeps, fails or answers per recipient, to exercise the runner.
    struct Probe {
        name: &'static str,
        sleep: Duration,
        fail: bool,
        on_error: OnError,
        split_first: bool,
    }

    #[async_trait]
    impl Stage for Probe {
        fn name(&self) -> &str {
            self.name
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(200)
        }
        fn on_error(&self) -> OnError {
            self.on_error
        }
        async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
            tokio::time::sleep(self.sleep).await;
            if self.fail {
                return Err(StageError::new(self.name, "scanner down"));
            }
            if self.split_first && cx.recipients.len() > 1 {
                let reject = Decision::new(Verdict::Reject(Reply::new(550, "5.7.1 no")));
                return Ok(Answer::PerRecipient(vec![(vec![cx.recipients[0]], reject)]));
            }
            Ok(Decision::default().into())
        }
    }

    fn probe(name: &'static str) -> Probe {
        Probe {
            name,
            sleep: Duration::ZERO,
            fail: false,
            on_error: OnError::Tempfail,
            split_first: false,
        }
    }

    async fn run(stages: Vec<Arc<dyn Stage>>, recipients: &[&str]) -> Vec<Group> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), SyncMode::default()).expect("spool");
        let mut draft = spool.begin();
        draft
            .write(b"Subject: x\r\n\r\nbody\r\n")
            .await
            .expect("write");
        let header = b"Subject: x\r\n";
        let content = MessageContent::new(&draft, header, 1 << 20);
        let session = SessionInfo {
            session_id: "t".into(),
            client: "192.0.2.1:1000".parse().expect("addr"),
            local: "127.0.0.1:25".parse().expect("addr"),
            role: ListenerRole::Mx,
            trusted: false,
            helo: None,
            auth_user: None,
            tls: None,
        };
        let envelope = Envelope::for_test("a@example.org", recipients);
        let all: Vec<usize> = (0..recipients.len()).collect();
        let findings = Findings::default();
        let cx = Context {
            session: &session,
            direction: Direction::Inbound,
            queue_id: draft.id(),
            envelope: &envelope,
            recipients: &all,
            content: &content,
            findings: &findings,
            hostname: "mx.test",
        };
        Pipeline::new(stages, Duration::from_secs(5))
            .run(&cx, &[])
            .await
    }

    #[tokio::test]
    async fn a_hanging_stage_hits_its_budget_and_tempfails() {
        let slow = Probe {
            sleep: Duration::from_secs(30),
            ..probe("slow")
        };
        let started = Instant::now();
        let groups = run(vec![Arc::new(slow)], &["b@example.com"]).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            groups[0].final_verdict(),
            GroupVerdict::Tempfail(ref r) if r.code == 451 && r.text.starts_with("4.7.1")
        ));
    }

    #[tokio::test]
    async fn on_error_accept_marks_the_message_and_goes_on() {
        let broken = Probe {
            fail: true,
            on_error: OnError::Accept,
            ..probe("av")
        };
        let groups = run(
            vec![Arc::new(broken), Arc::new(probe("next"))],
            &["b@example.com"],
        )
        .await;
        assert_eq!(groups[0].final_verdict(), GroupVerdict::Accept);
        assert!(groups[0].modifications.iter().any(|m| matches!(
            m,
            Modification::AddHeader { name, value } if name == "X-Bulwark-Unscanned" && value.contains("av")
        )));
        // The failure is a step; the stage after it, which found nothing, is not.
        assert_eq!(groups[0].steps.len(), 1);
    }

    #[tokio::test]
    async fn a_per_recipient_answer_splits_the_group() {
        let splitter = Probe {
            split_first: true,
            ..probe("split")
        };
        let groups = run(
            vec![Arc::new(splitter), Arc::new(probe("after"))],
            &["a@x.example", "b@y.example", "c@y.example"],
        )
        .await;
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].recipients, vec![0]);
        assert!(matches!(groups[0].final_verdict(), GroupVerdict::Reject(_)));
        assert_eq!(groups[1].recipients, vec![1, 2]);
        assert_eq!(groups[1].final_verdict(), GroupVerdict::Accept);
        // The rejected group is not asked again; the other one had nothing said about it.
        assert_eq!(groups[0].steps.len(), 1);
        assert!(groups[1].steps.is_empty());
    }
}
