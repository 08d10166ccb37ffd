//! The control socket's quarantine requests: list, show, release, delete.
//!
//! A request naming several ids handles each one; if any is refused (unknown, already
//! released) the answer is an error naming each refusal, and what was done for the others
//! is said in the same message, so the operator is never left guessing.

use base64::Engine;
use serde_json::json;

use super::protocol::Response;
use super::server::parse_ids;
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

pub async fn release(gateway: &Gateway, ids: &[String], to: Option<&str>) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let into = Requeue {
        spool: &gateway.spool,
        queue: &gateway.queue,
        delivery: &gateway.delivery,
        tracker: &gateway.tracker,
        by: "operator",
    };
    let mut released = Vec::new();
    let mut refused = Vec::new();
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

pub async fn delete(gateway: &Gateway, ids: &[String]) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let mut deleted: Vec<QueueId> = Vec::new();
    let mut refused = Vec::new();
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
