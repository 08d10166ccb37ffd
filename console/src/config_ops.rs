//! Configuration changes the console makes on nodes, shared by the pages and the API: apply
//! one text to one or several nodes (each validated, written and reloaded by the node itself,
//! each with its own outcome), roll a node back to a version of its history, check and apply
//! the `[[rule]]` table edited on its own, add a sender to a node's anti-spam allow list.
//!
//! Invariant: every apply goes through the node's `config-put` (validation, atomic replace,
//! reload, history with the console user's name) and is written to the audit log with its
//! per-node outcome; nothing here writes a node's file any other way.

use bulwark::admin::protocol::{Request as NodeRequest, Response as NodeResponse};
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::{Caller, State};
use crate::config_text::{add_allow, join_rules, split_rules};

/// One `line:column` problem the node found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub key: String,
    pub message: String,
}

/// What one node answered to a validate or apply.
#[derive(Debug, Clone, Serialize)]
pub struct NodeOutcome {
    pub node: String,
    pub ok: bool,
    /// The history version the node recorded (apply only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn problems_of(result: &Value) -> Vec<Problem> {
    result["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Problem {
            line: p["line"].as_u64().unwrap_or(0),
            column: p["column"].as_u64().unwrap_or(0),
            key: p["key"].as_str().unwrap_or("").to_string(),
            message: p["message"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

fn outcome(node: &str, response: &NodeResponse) -> NodeOutcome {
    let problems = problems_of(&response.result);
    NodeOutcome {
        node: node.to_string(),
        ok: response.ok && problems.is_empty(),
        version: response.result["version"].as_u64(),
        problems,
        error: response.error.clone(),
    }
}

/// The node's configuration file text (or why there is none).
pub async fn current_text(state: &State, node: &str) -> Result<String, String> {
    let response = state.nodes.ask_named(node, &NodeRequest::ConfigGet).await;
    match (response.ok, response.result["text"].as_str()) {
        (true, Some(text)) => Ok(text.to_string()),
        _ => Err(response.error.unwrap_or_else(|| "no text".into())),
    }
}

/// Validates `text` on each of `nodes` (nothing changes).
pub async fn validate_on(state: &State, nodes: &[String], text: &str) -> Vec<NodeOutcome> {
    let request = NodeRequest::ConfigValidate {
        text: text.to_string(),
    };
    let mut outcomes = Vec::new();
    for node in nodes {
        outcomes.push(outcome(node, &state.nodes.ask_named(node, &request).await));
    }
    outcomes
}

/// Applies `text` to each of `nodes`, one after the other (a bad text stops at the first
/// node's validation only for that node: each node validates against its own base directory).
pub async fn apply_to(
    state: &State,
    caller: &Caller,
    nodes: &[String],
    text: &str,
    note: &str,
) -> Vec<NodeOutcome> {
    let request = NodeRequest::ConfigPut {
        text: text.to_string(),
        by: Some(caller.session.user.clone()),
        note: Some(note.to_string()),
    };
    let mut outcomes = Vec::new();
    for node in nodes {
        outcomes.push(outcome(node, &state.nodes.ask_named(node, &request).await));
    }
    let ok = !outcomes.is_empty() && outcomes.iter().all(|o| o.ok);
    state.audit.record(
        &caller.session.user,
        caller.peer,
        "config apply",
        json!({ "nodes": nodes, "note": note, "outcomes": outcomes }),
        ok,
    );
    outcomes
}

/// The versions a node recorded, newest first.
pub async fn history(state: &State, node: &str) -> Result<Vec<Value>, String> {
    let response = state
        .nodes
        .ask_named(node, &NodeRequest::ConfigHistory)
        .await;
    match (response.ok, response.result) {
        (true, Value::Array(mut versions)) => {
            versions.reverse();
            Ok(versions)
        }
        (_, _) => Err(response.error.unwrap_or_else(|| "no history".into())),
    }
}

/// The text of one version of a node's history.
pub async fn version_text(state: &State, node: &str, version: u64) -> Result<String, String> {
    let response = state
        .nodes
        .ask_named(node, &NodeRequest::ConfigVersion { version })
        .await;
    match (response.ok, response.result["text"].as_str()) {
        (true, Some(text)) => Ok(text.to_string()),
        _ => Err(response.error.unwrap_or_else(|| "no such version".into())),
    }
}

/// Applies version `version` of `node`'s history again (validated and reloaded like any edit).
pub async fn rollback(state: &State, caller: &Caller, node: &str, version: u64) -> NodeOutcome {
    match version_text(state, node, version).await {
        Ok(text) => {
            let note = format!("rollback to version {version}");
            let mut outcomes = apply_to(state, caller, &[node.to_string()], &text, &note).await;
            outcomes
                .pop()
                .unwrap_or_else(|| failed(node, "no answer".into()))
        }
        Err(e) => failed(node, e),
    }
}

fn failed(node: &str, error: String) -> NodeOutcome {
    NodeOutcome {
        node: node.to_string(),
        ok: false,
        version: None,
        problems: Vec::new(),
        error: Some(error),
    }
}

/// A rules edit checked (or applied) as part of the node's whole file; problems inside the
/// rules are numbered from the rules text's first line (`in_rules`), others keep file lines.
#[derive(Debug, Clone, Serialize)]
pub struct RulesOutcome {
    pub outcome: NodeOutcome,
    pub first_rule_line: usize,
    pub old_rules: String,
}

pub async fn rules_edit(
    state: &State,
    caller: &Caller,
    node: &str,
    rules: &str,
    apply: bool,
) -> Result<RulesOutcome, String> {
    let current = current_text(state, node).await?;
    let split = split_rules(&current);
    let (text, first_rule_line) = join_rules(&split.rest, rules);
    let nodes = [node.to_string()];
    let mut outcomes = if apply {
        apply_to(state, caller, &nodes, &text, "rules edited").await
    } else {
        validate_on(state, &nodes, &text).await
    };
    let mut outcome = outcomes.pop().ok_or("no answer")?;
    for problem in &mut outcome.problems {
        if problem.line as usize >= first_rule_line {
            problem.line -= first_rule_line as u64 - 1;
            problem.key = format!("rules: {}", problem.key);
        }
    }
    Ok(RulesOutcome {
        outcome,
        first_rule_line,
        old_rules: split.rules,
    })
}

/// Adds `sender` to `[antispam] allow` on `node` (validated, reloaded, audited, in the history).
pub async fn allow_sender(state: &State, caller: &Caller, node: &str, sender: &str) -> NodeOutcome {
    let edited = match current_text(state, node).await {
        Ok(current) => add_allow(&current, sender).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match edited {
        Ok(text) => {
            let note = format!("allow sender {sender} (released from quarantine)");
            let mut outcomes = apply_to(state, caller, &[node.to_string()], &text, &note).await;
            outcomes
                .pop()
                .unwrap_or_else(|| failed(node, "no answer".into()))
        }
        Err(e) => {
            state.audit.record(
                &caller.session.user,
                caller.peer,
                "antispam allow",
                json!({ "node": node, "sender": sender, "error": e }),
                false,
            );
            failed(node, e)
        }
    }
}
