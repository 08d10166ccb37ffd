//! Quarantine actions beyond one release: "release and allow sender" (the message released,
//! its sender added to that node's `[antispam] allow`) and bulk release/delete of many
//! selected messages, each with its own outcome. Shared by the pages and the API.
//!
//! Invariants: a caller acts only on entries it may see (a quarantine manager: its domains);
//! allowing a sender changes the node's anti-spam policy for every domain, so it needs the
//! `Flow`-and-`Quarantine` rights of an operator or admin, never a quarantine manager's; every
//! action is in the audit log.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{quarantine_entries, release_one, ReleaseTarget};
use crate::app::{Caller, State};
use crate::auth::Permission;
use bulwark::admin::protocol::Request as NodeRequest;

/// The entry `id` on `node` if the caller may see it.
pub async fn visible_entry(state: &State, caller: &Caller, node: &str, id: &str) -> Option<Value> {
    let answers = quarantine_entries(state, caller).await;
    let found = crate::pages::entries(&answers)
        .find(|(n, e)| *n == node && e["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
        .map(|(_, e)| e.clone());
    found
}

#[derive(Debug, Serialize)]
pub struct ReleaseAllowOutcome {
    pub released: bool,
    pub sender: String,
    pub allowed: crate::config_ops::NodeOutcome,
}

#[derive(Debug, thiserror::Error)]
pub enum QuarantineActionError {
    #[error("your role may not change the anti-spam allow list")]
    Forbidden,
    #[error("no quarantined message {0} you may see on {1}")]
    NotFound(String, String),
    #[error("release failed: {0}")]
    Release(String),
}

/// Releases `id` on `node`, then adds its envelope sender to the node's allow list.
pub async fn release_and_allow(
    state: &State,
    caller: &Caller,
    node: &str,
    id: &str,
) -> Result<ReleaseAllowOutcome, QuarantineActionError> {
    if caller.may(Permission::Flow).is_err() || caller.may(Permission::Quarantine).is_err() {
        return Err(QuarantineActionError::Forbidden);
    }
    let entry = visible_entry(state, caller, node, id)
        .await
        .ok_or_else(|| QuarantineActionError::NotFound(id.to_string(), node.to_string()))?;
    let sender = entry["sender"].as_str().unwrap_or("").to_string();
    let target = ReleaseTarget {
        node: node.to_string(),
        to: None,
    };
    release_one(state, caller, id, &target)
        .await
        .map_err(|(_, why)| QuarantineActionError::Release(why))?;
    let allowed = crate::config_ops::allow_sender(state, caller, node, &sender).await;
    Ok(ReleaseAllowOutcome {
        released: true,
        sender,
        allowed,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    Release,
    Delete,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Item {
    pub node: String,
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct ItemOutcome {
    pub node: String,
    pub id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `action` on every item the caller may see, one node request per node; each item's outcome.
pub async fn bulk(
    state: &State,
    caller: &Caller,
    action: BulkAction,
    items: &[Item],
) -> Vec<ItemOutcome> {
    let visible = quarantine_entries(state, caller).await;
    let may_see = |item: &Item| {
        crate::pages::entries(&visible).any(|(n, e)| {
            n == item.node
                && e["id"]
                    .as_str()
                    .is_some_and(|i| i.eq_ignore_ascii_case(&item.id))
        })
    };
    let mut outcomes = Vec::new();
    let mut nodes: Vec<&str> = items.iter().map(|i| i.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for node in nodes {
        let (seen, unseen): (Vec<&Item>, Vec<&Item>) = items
            .iter()
            .filter(|i| i.node == node)
            .partition(|i| may_see(i));
        outcomes.extend(unseen.into_iter().map(|i| ItemOutcome {
            node: i.node.clone(),
            id: i.id.clone(),
            ok: false,
            error: Some("no such message you may see".into()),
        }));
        if seen.is_empty() {
            continue;
        }
        let ids: Vec<String> = seen.iter().map(|i| i.id.clone()).collect();
        let request = match action {
            BulkAction::Release => NodeRequest::QuarantineRelease {
                ids: ids.clone(),
                to: None,
                not_spam: false,
            },
            BulkAction::Delete => NodeRequest::QuarantineDelete {
                ids: ids.clone(),
                spam: false,
            },
        };
        let response = state.nodes.ask_named(node, &request).await;
        outcomes.extend(ids.into_iter().map(|id| ItemOutcome {
            node: node.to_string(),
            id,
            ok: response.ok,
            error: response.error.clone(),
        }));
    }
    let ok = !outcomes.is_empty() && outcomes.iter().all(|o| o.ok);
    state.audit.record(
        &caller.session.user,
        caller.peer,
        &format!("quarantine bulk {}", json!(action).as_str().unwrap_or("?")),
        json!({ "outcomes": outcomes }),
        ok,
    );
    outcomes
}
