//! Daily and weekly reports: the nodes' tracking totals (`track-summary`) over the 24 hours
//! or 7 days before the report is made, summed over every node that answered (the nodes
//! that did not are named in the report), as HTML (`html`) and PDF (`pdf`), on demand
//! (`/reports`, `GET /api/v1/reports`) and mailed on a schedule (`schedule`).

pub mod html;
pub mod pdf;

use std::collections::BTreeMap;

use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::track::{Count, Summary};
use serde::{Deserialize, Serialize};

use crate::app::State;
use crate::outbox::{self, OutboxError, Outgoing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[default]
    Daily,
    Weekly,
}

impl Period {
    pub fn seconds(self) -> i64 {
        match self {
            Period::Daily => 86_400,
            Period::Weekly => 7 * 86_400,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Period::Daily => "Daily report",
            Period::Weekly => "Weekly report",
        }
    }
}

/// A report: the totals over every node that answered, and each node's own.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub period: Period,
    pub from_ms: i64,
    pub to_ms: i64,
    pub total: Summary,
    pub nodes: Vec<(String, Summary)>,
    /// Nodes that did not answer, with why.
    pub missing: Vec<(String, String)>,
}

/// Asks every node for the period ending at `to_ms` and sums the answers.
pub async fn make(state: &State, period: Period, to_ms: i64, top: usize) -> Report {
    let from_ms = to_ms - period.seconds() * 1000;
    let request = NodeRequest::TrackSummary {
        from_ms,
        to_ms,
        top,
    };
    let answers = state.nodes.fan_out(&request, None).await;
    let mut nodes = Vec::new();
    let mut missing = Vec::new();
    for answer in answers {
        match answer.result.map(serde_json::from_value::<Summary>) {
            Some(Ok(summary)) => nodes.push((answer.node, summary)),
            Some(Err(e)) => missing.push((answer.node, format!("unreadable answer: {e}"))),
            None => missing.push((answer.node, answer.error.unwrap_or_else(|| "?".into()))),
        }
    }
    let total = sum(nodes.iter().map(|(_, s)| s), from_ms, to_ms, top);
    Report {
        period,
        from_ms,
        to_ms,
        total,
        nodes,
        missing,
    }
}

/// Adds the counts; each top list merged by key, largest first, `top` long.
fn sum<'a>(
    summaries: impl Iterator<Item = &'a Summary>,
    from_ms: i64,
    to_ms: i64,
    top: usize,
) -> Summary {
    let mut total = Summary {
        from_ms,
        to_ms,
        ..Default::default()
    };
    let mut lists: [BTreeMap<String, u64>; 4] = Default::default();
    for s in summaries {
        total.received += s.received;
        total.delivered += s.delivered;
        total.deferred += s.deferred;
        total.bounced += s.bounced;
        total.rejected += s.rejected;
        total.quarantined += s.quarantined;
        total.discarded += s.discarded;
        total.spam += s.spam;
        total.viruses += s.viruses;
        let parts = [
            &s.top_senders,
            &s.top_recipients,
            &s.top_destinations,
            &s.rejections,
        ];
        for (merged, list) in lists.iter_mut().zip(parts) {
            for count in list {
                *merged.entry(count.key.clone()).or_default() += count.count;
            }
        }
    }
    let [senders, recipients, destinations, rejections] = lists.map(|m| ranked(m, top));
    total.top_senders = senders;
    total.top_recipients = recipients;
    total.top_destinations = destinations;
    total.rejections = rejections;
    total
}

fn ranked(merged: BTreeMap<String, u64>, top: usize) -> Vec<Count> {
    let mut list: Vec<Count> = merged
        .into_iter()
        .map(|(key, count)| Count { key, count })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    list.truncate(top);
    list
}

/// Mails `report` (HTML body, PDF attached) to `to`; the queue id on the mail node.
pub async fn mail(state: &State, report: &Report, to: &[String]) -> Result<String, OutboxError> {
    let subject = format!(
        "[Bulwark] {} {} to {}",
        report.period.title(),
        html::utc(report.from_ms),
        html::utc(report.to_ms)
    );
    let text = html::text(report);
    let page = html::document(report);
    let pdf = pdf::render(report);
    let name = format!(
        "bulwark-{}-report.pdf",
        match report.period {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
        }
    );
    outbox::send(
        state,
        Outgoing {
            to,
            subject: &subject,
            text: &text,
            html: Some(&page),
            attachment: Some((&name, "application/pdf", pdf)),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(received: u64, senders: &[(&str, u64)]) -> Summary {
        Summary {
            received,
            top_senders: senders
                .iter()
                .map(|(k, c)| Count {
                    key: k.to_string(),
                    count: *c,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn node_totals_add_up_and_top_lists_merge_by_key() {
        let a = summary(3, &[("bob@x", 2), ("eve@y", 1)]);
        let b = summary(4, &[("eve@y", 3), ("amy@z", 1)]);
        let total = sum([&a, &b].into_iter(), 0, 1, 2);
        assert_eq!(total.received, 7);
        let keys: Vec<_> = total
            .top_senders
            .iter()
            .map(|c| (c.key.as_str(), c.count))
            .collect();
        assert_eq!(keys, [("eve@y", 4), ("bob@x", 2)]);
    }
}
