//! What each alert rule finds in the nodes' answers: a pure function from one round of
//! facts (status, queue, destinations, anti-virus per node, and since when each node has
//! been unreachable) to the conditions that hold now. No I/O, so every rule is unit-tested.

use std::collections::HashMap;

use bulwark::config::{AlertCondition, AlertRule};
use serde_json::Value;

/// What the console learned from one node in one round.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub node: String,
    /// Seconds since the node last answered, when it did not answer this round.
    pub unreachable_for: Option<u64>,
    pub unreachable_error: Option<String>,
    pub status: Value,
    pub queue: Value,
    pub destinations: Value,
    pub antivirus: Value,
}

/// A condition that holds: its rule, node and subject (a destination, a certificate) make
/// one alert; `detail` says what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub node: String,
    pub subject: String,
    pub detail: String,
}

impl Finding {
    pub fn key(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.rule, self.node, self.subject)
    }
}

/// Every finding of `rules` over `facts` at `now` (seconds since the epoch).
pub fn evaluate(rules: &[AlertRule], facts: &[NodeFacts], now: u64) -> Vec<Finding> {
    let mut found = Vec::new();
    for rule in rules {
        for node in facts
            .iter()
            .filter(|f| rule.nodes.is_empty() || rule.nodes.contains(&f.node))
        {
            for (subject, detail) in check(rule, node, now) {
                found.push(Finding {
                    rule: rule.name.clone(),
                    node: node.node.clone(),
                    subject,
                    detail,
                });
            }
        }
    }
    found
}

/// (subject, detail) of each condition `rule` finds on `node`.
fn check(rule: &AlertRule, node: &NodeFacts, now: u64) -> Vec<(String, String)> {
    let limit = rule.limit.unwrap_or(u64::MAX);
    let seconds = rule.duration.as_secs();
    if rule.when == AlertCondition::NodeUnreachable {
        return match node.unreachable_for {
            Some(down) if down >= seconds => vec![(
                String::new(),
                format!(
                    "no answer for {down} s: {}",
                    node.unreachable_error.as_deref().unwrap_or("?")
                ),
            )],
            _ => Vec::new(),
        };
    }
    if node.unreachable_for.is_some() {
        return Vec::new(); // nothing is known about an unreachable node but that.
    }
    match rule.when {
        AlertCondition::QueueAbove => queue_above(node, limit),
        AlertCondition::OldestOlderThan => oldest_older_than(node, seconds, now),
        AlertCondition::DestinationDown => destination_down(node, seconds),
        AlertCondition::SignaturesStale => signatures_stale(node, seconds),
        AlertCondition::DiskNearlyFull => disk_nearly_full(node, limit),
        AlertCondition::SpoolNearlyFull => spool_nearly_full(node, limit),
        AlertCondition::CertificateExpiring => certificate_expiring(node, seconds, now),
        AlertCondition::NodeUnreachable => Vec::new(),
    }
}

fn queue_above(node: &NodeFacts, limit: u64) -> Vec<(String, String)> {
    let queued = node.status["queue"]["messages"].as_u64().unwrap_or(0);
    if queued > limit {
        vec![(
            String::new(),
            format!("{queued} messages queued (limit {limit})"),
        )]
    } else {
        Vec::new()
    }
}

fn oldest_older_than(node: &NodeFacts, seconds: u64, now: u64) -> Vec<(String, String)> {
    let oldest = node
        .queue
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["arrival"].as_u64())
        .min();
    match oldest {
        Some(arrival) if now.saturating_sub(arrival) > seconds => vec![(
            String::new(),
            format!(
                "oldest message queued {} s ago (limit {seconds} s)",
                now.saturating_sub(arrival)
            ),
        )],
        _ => Vec::new(),
    }
}

fn destination_down(node: &NodeFacts, seconds: u64) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for destination in node.destinations.as_array().into_iter().flatten() {
        // `down_for` is how long the console has seen it down (the node's own
        // `down_for_seconds` is the time left until its next probe).
        let Some(down) = destination["down_for"].as_u64() else {
            continue;
        };
        if down >= seconds {
            let name = destination["destination"].as_str().unwrap_or("?");
            let error = destination["last_error"].as_str().unwrap_or("-");
            found.push((
                name.to_string(),
                format!("{name} down for {down} s: {error}"),
            ));
        }
    }
    found
}

fn signatures_stale(node: &NodeFacts, seconds: u64) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let engines = node.antivirus["engines"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (engine, status) in engines {
        let age = status["age_seconds"]
            .as_u64()
            .or(status["database_age_seconds"].as_u64());
        let stale = match (seconds, age) {
            (0, _) => status["stale"].as_bool().unwrap_or(false),
            (limit, Some(age)) => age > limit,
            (_, None) => false,
        };
        if stale {
            let age = age.map_or_else(|| "?".into(), |a| a.to_string());
            found.push((engine.clone(), format!("{engine} signatures {age} s old")));
        }
    }
    found
}

fn disk_nearly_full(node: &NodeFacts, limit: u64) -> Vec<(String, String)> {
    let used = node.status["disk"]["used_percent"].as_u64();
    match used {
        Some(used) if used > limit => vec![(
            String::new(),
            format!("spool file system {used} % used (limit {limit} %)"),
        )],
        _ => Vec::new(),
    }
}

/// The share of the usable space (total minus the reserve) already gone.
fn spool_nearly_full(node: &NodeFacts, limit: u64) -> Vec<(String, String)> {
    let disk = &node.status["disk"];
    let (Some(free), Some(total)) = (disk["free_bytes"].as_u64(), disk["total_bytes"].as_u64())
    else {
        return Vec::new();
    };
    let reserve = disk["reserve_bytes"].as_u64().unwrap_or(0);
    let usable = total.saturating_sub(reserve).max(1);
    let left = free.saturating_sub(reserve);
    let gone = 100 - (left.saturating_mul(100) / usable).min(100);
    if gone > limit {
        vec![(
            String::new(),
            format!("{gone} % of the spool's space above the reserve is used, {left} bytes left before 452"),
        )]
    } else {
        Vec::new()
    }
}

fn certificate_expiring(node: &NodeFacts, seconds: u64, now: u64) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for certificate in node.status["certificates"].as_array().into_iter().flatten() {
        let Some(not_after) = certificate["not_after"].as_i64() else {
            continue;
        };
        let left = not_after - now as i64;
        if left < seconds as i64 {
            let role = certificate["role"].as_str().unwrap_or("?");
            let path = certificate["path"].as_str().unwrap_or("?");
            found.push((
                role.to_string(),
                format!(
                    "{role} certificate {path} expires in {} days",
                    left / 86_400
                ),
            ));
        }
    }
    found
}

/// Since when a state (a node not answering, a destination down) has held, kept across
/// rounds: the first round that saw it.
#[derive(Debug, Default)]
pub struct Since {
    holding_since: HashMap<String, u64>,
}

impl Since {
    /// Records this round's observation; how long it has held, when it holds.
    pub fn observe(&mut self, key: &str, holds: bool, now: u64) -> Option<u64> {
        if !holds {
            self.holding_since.remove(key);
            return None;
        }
        let since = *self.holding_since.entry(key.to_string()).or_insert(now);
        Some(now.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn rule(when: AlertCondition, limit: Option<u64>, seconds: u64) -> AlertRule {
        AlertRule {
            name: "r".into(),
            when,
            limit,
            duration: Duration::from_secs(seconds),
            nodes: Vec::new(),
        }
    }

    fn node(status: Value) -> NodeFacts {
        NodeFacts {
            node: "n1".into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn queue_and_age_rules_fire_above_their_limits_only() {
        let mut facts = node(json!({ "queue": { "messages": 6 } }));
        facts.queue = json!([{ "arrival": 1000 }, { "arrival": 1500 }]);
        let fires = |r: AlertRule| !evaluate(&[r], &[facts.clone()], 2000).is_empty();
        assert!(fires(rule(AlertCondition::QueueAbove, Some(5), 0)));
        assert!(!fires(rule(AlertCondition::QueueAbove, Some(6), 0)));
        assert!(fires(rule(AlertCondition::OldestOlderThan, None, 999)));
        assert!(!fires(rule(AlertCondition::OldestOlderThan, None, 1000)));
    }

    #[test]
    fn destinations_disks_signatures_and_certificates() {
        let mut facts = node(json!({
            "disk": { "free_bytes": 100, "total_bytes": 1000, "reserve_bytes": 50, "used_percent": 90 },
            "certificates": [{ "role": "tls", "path": "/x.pem", "not_after": 2000 + 86_400 }],
        }));
        facts.destinations = json!([{ "destination": "mx.example", "down_for": 120 },
                                     { "destination": "up.example" }]);
        facts.antivirus =
            json!({ "engines": { "builtin": { "age_seconds": 90_000, "stale": false } } });
        let found = |r: AlertRule| evaluate(&[r], &[facts.clone()], 2000);
        let down = found(rule(AlertCondition::DestinationDown, None, 60));
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].subject, "mx.example");
        assert!(found(rule(AlertCondition::DestinationDown, None, 121)).is_empty());
        assert_eq!(
            found(rule(AlertCondition::DiskNearlyFull, Some(80), 0)).len(),
            1
        );
        assert!(found(rule(AlertCondition::DiskNearlyFull, Some(90), 0)).is_empty());
        // 950 usable, 50 left: 95 % gone.
        assert_eq!(
            found(rule(AlertCondition::SpoolNearlyFull, Some(94), 0)).len(),
            1
        );
        assert!(found(rule(AlertCondition::SpoolNearlyFull, Some(95), 0)).is_empty());
        assert_eq!(
            found(rule(AlertCondition::SignaturesStale, None, 86_400)).len(),
            1
        );
        assert!(found(rule(AlertCondition::SignaturesStale, None, 0)).is_empty());
        assert_eq!(
            found(rule(AlertCondition::CertificateExpiring, None, 2 * 86_400)).len(),
            1
        );
        assert!(found(rule(AlertCondition::CertificateExpiring, None, 86_400 / 2)).is_empty());
    }

    #[test]
    fn an_unreachable_node_fires_after_its_duration_and_nothing_else() {
        let mut reach = Since::default();
        assert_eq!(reach.observe("n1", true, 100), Some(0));
        assert_eq!(reach.observe("n1", true, 130), Some(30));
        let mut facts = node(json!({ "queue": { "messages": 100 } }));
        facts.unreachable_for = Some(30);
        let rules = [
            rule(AlertCondition::NodeUnreachable, None, 30),
            rule(AlertCondition::QueueAbove, Some(1), 0),
        ];
        assert_eq!(evaluate(&rules, &[facts.clone()], 130).len(), 1);
        facts.unreachable_for = Some(29);
        assert!(evaluate(&rules, &[facts], 130).is_empty());
        assert_eq!(reach.observe("n1", false, 140), None);
        assert_eq!(reach.observe("n1", true, 150), Some(0));
    }
}
