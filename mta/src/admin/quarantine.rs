//! The control socket's quarantine requests: list, show, release, delete.
//!
//! A release marked "not spam" first learns the message as ham, a delete marked "spam"
//! learns it as spam (`antispam::learn`), into `[antispam] model`; the running pipeline
//! then reloads so the next message is scored by the updated model. A message that cannot
//! be learned (no model file configured, unreadable) is refused, not released or deleted
//! without the verdict the operator asked for.
//!
//! A request naming several ids handles each one; if any is refused (unknown, already
//! released) the answer is an error naming each refusal, and what was done for the others
//! is said in the same message, so the operator is never left guessing.

use base64::Engine;
use serde_json::json;

use super::protocol::Response;
use super::server::parse_ids;
use crate::filters::antispam::learn::learn_bytes;
use crate::gateway::Gateway;
use crate::quarantine::{Filter, QuarantineError, Requeue};
use crate::queue::QueueId;

pub fn list(gateway: &Gateway, filter: &Filter) -> Response {
    match gateway.quarantine.list(filter) {
        Ok(entries) => Response::ok(json!(entries)),
        Err(e) => Response::error(e.to_string()),
    }
}

pub fn show(gateway: &Gateway, id: &str, raw: bool) -> Response {
    let id = match parse_ids(&[id.to_string()]) {
        Ok(ids) => ids[0],
        Err(response) => return response,
    };
    let quarantine = &gateway.quarantine;
    let record = match quarantine.get(id) {
        Ok(Some(record)) => record,
        Ok(None) => return Response::error(QuarantineError::NotFound(id).to_string()),
        Err(e) => return Response::error(e.to_string()),
    };
    let message = match quarantine.raw(id) {
        Ok(message) => message,
        Err(e) => return Response::error(e.to_string()),
    };
    let mut result = json!({
        "entry": record.entry(),
        "record": record,
        "content": String::from_utf8_lossy(&message),
    });
    if raw {
        result["raw_base64"] = base64::engine::general_purpose::STANDARD
            .encode(&message)
            .into();
    }
    Response::ok(result)
}

/// Learns quarantined message `id` as spam or ham into the configured model file.
fn learn(gateway: &Gateway, id: QueueId, spam: bool) -> Result<(), String> {
    let config = gateway.runtime().config.clone();
    let path = config
        .antispam
        .as_ref()
        .and_then(|a| a.model.clone())
        .ok_or_else(|| format!("{id}: cannot learn: [antispam] model names no model file"))?;
    let raw = gateway.quarantine.raw(id).map_err(|e| e.to_string())?;
    let verdict = if spam { "spam" } else { "ham" };
    let learned = learn_bytes(&path, &raw, spam).map_err(|e| format!("{id}: learning: {e}"))?;
    log::info!(
        queue_id:% = id, verdict = verdict, before = learned.before, after = learned.after,
        steps = learned.steps, model:% = path.display();
        "antispam: learned {id} as {verdict}: log-odds {:.2} -> {:.2} in {} steps",
        learned.before, learned.after, learned.steps
    );
    Ok(())
}

/// Reloads the running configuration, so the pipeline scores with the file just learned.
fn reload_model(gateway: &Gateway) -> Result<(), String> {
    let config = (*gateway.runtime().config).clone();
    gateway
        .reload(config)
        .map(|_| ())
        .map_err(|e| format!("learned, but the running model was not reloaded: {e}"))
}

/// Learns each id (when `spam` is given); returns those learned and the refusals.
fn learn_all(
    gateway: &Gateway,
    ids: Vec<QueueId>,
    spam: Option<bool>,
) -> (Vec<QueueId>, Vec<String>) {
    let Some(spam) = spam else {
        return (ids, Vec::new());
    };
    let (mut learned, mut refused) = (Vec::new(), Vec::new());
    for id in ids {
        match learn(gateway, id, spam) {
            Ok(()) => learned.push(id),
            Err(e) => refused.push(e),
        }
    }
    if !learned.is_empty() {
        if let Err(e) = reload_model(gateway) {
            refused.push(e);
        }
    }
    (learned, refused)
}

pub async fn release(
    gateway: &Gateway,
    ids: &[String],
    to: Option<&str>,
    not_spam: bool,
) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let (ids, mut refused) = learn_all(gateway, ids, not_spam.then_some(false));
    let into = Requeue {
        spool: &gateway.spool,
        queue: &gateway.queue,
        delivery: &gateway.delivery,
        tracker: &gateway.tracker,
        by: "operator",
    };
    let mut released = Vec::new();
    for id in ids {
        match gateway.quarantine.release(id, to, &into).await {
            Ok(done) => released.push(done),
            Err(e) => refused.push(e.to_string()),
        }
    }
    if refused.is_empty() {
        return Response::ok(json!({ "released": released }));
    }
    let done: Vec<String> = released
        .iter()
        .map(|r| format!("{} released as {}", r.id, r.queue_id))
        .collect();
    Response::error(answer(&refused, &done))
}

pub async fn delete(gateway: &Gateway, ids: &[String], spam: bool) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let (ids, mut refused) = learn_all(gateway, ids, spam.then_some(true));
    let mut deleted: Vec<QueueId> = Vec::new();
    for id in ids {
        match gateway.quarantine.delete(id).await {
            Ok(()) => deleted.push(id),
            Err(e) => refused.push(e.to_string()),
        }
    }
    if refused.is_empty() {
        return Response::ok(json!({ "deleted": deleted.len() }));
    }
    let done: Vec<String> = deleted.iter().map(|id| format!("{id} deleted")).collect();
    Response::error(answer(&refused, &done))
}

fn answer(refused: &[String], done: &[String]) -> String {
    let mut text = refused.join("; ");
    if !done.is_empty() {
        text.push_str(&format!(" (done: {})", done.join(", ")));
    }
    text
}
