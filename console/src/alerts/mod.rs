//! Alerts: `[[console.alerts.rule]]` evaluated over every node each `[console.alerts]
//! interval`, notified by mail (through a node's own queue, `outbox`) and/or a webhook, and
//! kept in a history (`/alerts`, `GET /api/v1/alerts`).
//!
//! Contract: an alert is one (rule, node, subject); it is notified when it starts to hold
//! (`fired`), again every `repeat` while it holds (`repeated`), and once when it stops
//! (`cleared`). Every notice is in the history with the outcome of each delivery, so a
//! notice that could not be sent is seen on the page instead of being lost silently.

pub mod evaluate;
pub mod history;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::config::{AlertCondition, AlertsConfig};
use serde_json::{json, Value};

use crate::app::{unix_now, State};
use crate::outbox::{self, Outgoing};
use evaluate::{Finding, NodeFacts, Since};
use history::{Change, History, Notice};

/// One alert that holds now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Firing {
    pub rule: String,
    pub node: String,
    pub subject: String,
    pub detail: String,
    pub since: u64,
    #[serde(skip)]
    last_notified: u64,
}

pub struct Alerts {
    pub history: History,
    firing: Mutex<HashMap<String, Firing>>,
    /// Nodes not answering and destinations down, since when.
    since: Mutex<Since>,
}

impl Alerts {
    pub fn new(history: History) -> Self {
        Self {
            history,
            firing: Mutex::new(HashMap::new()),
            since: Mutex::new(Since::default()),
        }
    }

    pub fn firing(&self) -> Vec<Firing> {
        let firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Firing> = firing.values().cloned().collect();
        list.sort_by(|a, b| (a.since, &a.rule).cmp(&(b.since, &b.rule)));
        list
    }

    /// Folds this round's findings into the firing set: the notices to send.
    fn changes(&self, found: Vec<Finding>, repeat: Duration, now: u64) -> Vec<Notice> {
        let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        let mut notices = Vec::new();
        let mut seen = Vec::new();
        for finding in found {
            let key = finding.key();
            seen.push(key.clone());
            let change = match firing.get_mut(&key) {
                None => Some(Change::Fired),
                Some(f) if now.saturating_sub(f.last_notified) >= repeat.as_secs() => {
                    Some(Change::Repeated)
                }
                Some(_) => None,
            };
            let entry = firing.entry(key).or_insert_with(|| Firing {
                rule: finding.rule.clone(),
                node: finding.node.clone(),
                subject: finding.subject.clone(),
                detail: String::new(),
                since: now,
                last_notified: now,
            });
            entry.detail = finding.detail.clone();
            if let Some(change) = change {
                entry.last_notified = now;
                notices.push(notice(
                    &finding.rule,
                    &finding.node,
                    &finding.subject,
                    change,
                    &finding.detail,
                    now,
                ));
            }
        }
        let gone: Vec<String> = firing
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(f) = firing.remove(&key) {
                let detail = format!("no longer: {}", f.detail);
                notices.push(notice(
                    &f.rule,
                    &f.node,
                    &f.subject,
                    Change::Cleared,
                    &detail,
                    now,
                ));
            }
        }
        notices
    }
}

fn notice(rule: &str, node: &str, subject: &str, change: Change, detail: &str, at: u64) -> Notice {
    Notice {
        at,
        rule: rule.into(),
        node: node.into(),
        subject: subject.into(),
        change,
        detail: detail.into(),
        mail: None,
        webhook: None,
    }
}

/// Evaluates the rules every `interval` for as long as the console runs.
pub fn spawn(state: State) {
    let Some(config) = state.config.alerts.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            round(&state, &config).await;
        }
    });
}

/// One evaluation: ask, evaluate, notify, record.
async fn round(state: &State, config: &AlertsConfig) {
    let facts = gather(state, config).await;
    let now = unix_now();
    let found = evaluate::evaluate(&config.rules, &facts, now);
    let notices = state.alerts.changes(found, config.repeat, now);
    for mut notice in notices {
        log::warn!(rule = notice.rule.as_str(), node = notice.node.as_str(), subject = notice.subject.as_str(),
            change:? = notice.change; "alert: {}", notice.detail);
        deliver(state, config, &mut notice).await;
        state.alerts.history.append(&notice);
    }
}

/// What the rules need from each node; only the requests some rule reads are made.
async fn gather(state: &State, config: &AlertsConfig) -> Vec<NodeFacts> {
    let wants =
        |conditions: &[AlertCondition]| config.rules.iter().any(|r| conditions.contains(&r.when));
    let status = state.nodes.fan_out(&NodeRequest::Status, None).await;
    let empty = || status.iter().map(|_| None).collect::<Vec<Option<Value>>>();
    let results = |answers: Vec<crate::federation::NodeAnswer>| {
        answers.into_iter().map(|a| a.result).collect()
    };
    let queue = if wants(&[AlertCondition::OldestOlderThan]) {
        results(state.nodes.fan_out(&NodeRequest::QueueList, None).await)
    } else {
        empty()
    };
    let destinations = if wants(&[AlertCondition::DestinationDown]) {
        results(
            state
                .nodes
                .fan_out(&NodeRequest::QueueDestinations, None)
                .await,
        )
    } else {
        empty()
    };
    let antivirus = if wants(&[AlertCondition::SignaturesStale]) {
        results(state.nodes.fan_out(&NodeRequest::AvStatus, None).await)
    } else {
        empty()
    };
    let now = unix_now();
    let mut since = state.alerts.since.lock().unwrap_or_else(|p| p.into_inner());
    status
        .into_iter()
        .zip(queue)
        .zip(destinations)
        .zip(antivirus)
        .map(|(((answer, queue), mut destinations), antivirus)| {
            if let Some(Value::Array(list)) = &mut destinations {
                for d in list.iter_mut() {
                    let key = format!(
                        "{}\u{1f}{}",
                        answer.node,
                        d["destination"].as_str().unwrap_or("")
                    );
                    let down = d["state"].as_str() == Some("down");
                    d["down_for"] = json!(since.observe(&key, down, now));
                }
            }
            NodeFacts {
                unreachable_for: since.observe(&answer.node, !answer.reachable, now),
                unreachable_error: answer.error.clone(),
                node: answer.node,
                status: answer.result.unwrap_or(Value::Null),
                queue: queue.unwrap_or(Value::Null),
                destinations: destinations.unwrap_or(Value::Null),
                antivirus: antivirus.unwrap_or(Value::Null),
            }
        })
        .collect()
}

/// Sends the notice by mail and webhook as configured, recording each outcome in it.
async fn deliver(state: &State, config: &AlertsConfig, notice: &mut Notice) {
    let what = match notice.change {
        Change::Fired => "ALERT",
        Change::Repeated => "STILL",
        Change::Cleared => "CLEARED",
    };
    let about = if notice.subject.is_empty() {
        notice.node.clone()
    } else {
        format!("{} {}", notice.node, notice.subject)
    };
    if !config.mail_to.is_empty() {
        let subject = format!("[Bulwark {what}] {} on {about}", notice.rule);
        let text = format!(
            "{what}: rule {} on node {}\n\n{}\n\nSince: {} (seconds since the epoch)\nHistory: /alerts on the console\n",
            notice.rule, about, notice.detail, notice.at
        );
        let sent = outbox::send(
            state,
            Outgoing {
                to: &config.mail_to,
                subject: &subject,
                text: &text,
                html: None,
                attachment: None,
            },
        )
        .await;
        notice.mail = Some(sent.map_err(|e| e.to_string()));
    }
    if let Some(url) = &config.webhook {
        let body = json!({ "alert": notice.rule, "node": notice.node, "subject": notice.subject,
            "change": notice.change, "detail": notice.detail, "at": notice.at });
        notice.webhook = Some(
            crate::webhook::post(url, &body)
                .await
                .map_err(|e| e.to_string()),
        );
    }
}
