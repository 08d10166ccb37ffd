//! `/api/v1`: the REST API for automation. One table (`ROUTES`) both mounts the handlers and
//! generates `/api/v1/openapi.json`, so the document cannot drift from the code. Tokens come
//! from `POST /api/v1/login` and carry the user's role: the same permissions as the pages.

use axum::extract::{Path, Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use bulwark::admin::protocol::Request as NodeRequest;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{Caller, Peer, State};
use crate::auth::{LoginRefusal, Permission, FAILURE_DELAY};

/// One documented API route.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Query parameters (name, description).
    pub query: &'static [(&'static str, &'static str)],
    pub authenticated: bool,
}

fn table() -> Vec<(ApiRoute, MethodRouter<State>)> {
    let mut table = core_table();
    table.extend(crate::api_ops::table());
    table
}

fn core_table() -> Vec<(ApiRoute, MethodRouter<State>)> {
    let route = |method, path, summary, query, authenticated| ApiRoute {
        method,
        path,
        summary,
        query,
        authenticated,
    };
    vec![
        (
            route(
                "post",
                "/api/v1/login",
                "Log in with {username, password[, totp]}; answers {token}",
                &[],
                false,
            ),
            post(login),
        ),
        (
            route(
                "get",
                "/api/v1/status",
                "Every node's status (or why it did not answer)",
                &[],
                true,
            ),
            get(status),
        ),
        (
            route("get", "/api/v1/queue", "Every node's queue", &[], true),
            get(queue),
        ),
        (
            route(
                "get",
                "/api/v1/quarantine",
                "Quarantined messages on every node (a quarantine manager sees its domains only)",
                &[],
                true,
            ),
            get(quarantine),
        ),
        (
            route(
                "post",
                "/api/v1/quarantine/{id}/release",
                "Release a quarantined message",
                &[
                    ("node", "the node holding it"),
                    ("to", "only this recipient"),
                ],
                true,
            ),
            post(release),
        ),
        (
            route(
                "get",
                "/api/v1/track",
                "Message timelines across every node",
                &[
                    ("id", "queue id"),
                    ("sender", "envelope sender"),
                    ("recipient", "envelope recipient"),
                ],
                true,
            ),
            get(track),
        ),
        (
            route(
                "get",
                "/api/v1/nodes",
                "Each node: reachable, hostname, version, queue",
                &[],
                true,
            ),
            get(nodes),
        ),
        (
            route("get", "/api/v1/openapi.json", "This document", &[], false),
            get(openapi),
        ),
    ]
}

/// This module's routes and the operations' (`ops_api`), one table for mounting and OpenAPI.
fn all_routes() -> Vec<(ApiRoute, MethodRouter<State>)> {
    let mut all = table();
    all.extend(crate::ops_api::table());
    all
}

pub fn routes() -> Router<State> {
    // One path may carry several methods (GET and POST /api/v1/nodes): merge them first,
    // since mounting a path twice is refused.
    let mut by_path: Vec<(&'static str, MethodRouter<State>)> = Vec::new();
    for (spec, handler) in all_routes() {
        match by_path.iter().position(|(path, _)| *path == spec.path) {
            Some(i) => {
                let (path, earlier) = by_path.swap_remove(i);
                by_path.push((path, earlier.merge(handler)));
            }
            None => by_path.push((spec.path, handler)),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (spec, _) in all_routes() {
        let mut parameters: Vec<Value> = spec
            .query
            .iter()
            .map(|(name, description)| json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string" } }))
            .collect();
        for name in path_parameters(spec.path) {
            parameters.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
        }
        let security = if spec.authenticated {
            json!([{ "bearer": [] }])
        } else {
            json!([])
        };
        let operation = json!({ "summary": spec.summary, "parameters": parameters, "security": security,
            "responses": { "200": { "description": "OK" }, "401": { "description": "no session or token" }, "403": { "description": "role does not allow it" } } });
        let entry = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        entry[spec.method] = operation;
    }
    json!({ "openapi": "3.0.3", "info": { "title": "Bulwark console API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } }, "paths": paths })
}

/// The `{name}` segments of a route path.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

#[derive(Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub totp: Option<String>,
}

/// The login decision shared by the API and the login page: a session token or a refusal;
/// failures are slowed, counted, and at the limit the address is blocked on every node.
pub async fn attempt_login(
    state: &State,
    peer: std::net::IpAddr,
    login: &Login,
) -> Result<String, LoginRefusal> {
    let outcome = state.auth.login(
        &state.config,
        peer,
        &login.username,
        &login.password,
        login.totp.as_deref(),
    );
    match &outcome {
        Ok((_, session)) => {
            state
                .audit
                .record(&session.user, peer, "login", json!({}), true);
        }
        Err(LoginRefusal::RateLimited) => {}
        Err(refusal) => {
            log::warn!(user = login.username.as_str(), from:% = peer; "console login refused: {refusal:?}");
            tokio::time::sleep(FAILURE_DELAY).await;
            if state.auth.record_failure(&state.config, peer) {
                block_everywhere(state, peer).await;
            }
        }
    }
    outcome.map(|(token, _)| token)
}

async fn block_everywhere(state: &State, peer: std::net::IpAddr) {
    let request = NodeRequest::FlowBlock {
        target: peer.to_string(),
        seconds: Some(state.config.login_block.as_secs()),
    };
    let answers = state.nodes.fan_out(&request, None).await;
    state.audit.record(
        "console",
        peer,
        "flow-block after login failures",
        json!(answers),
        true,
    );
}

async fn login(
    Shared(state): Shared<State>,
    Extension(Peer(peer)): Extension<Peer>,
    Json(login): Json<Login>,
) -> Response {
    match attempt_login(&state, peer, &login).await {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(LoginRefusal::RateLimited) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": "too many failed logins" })),
        )
            .into_response(),
        Err(LoginRefusal::TotpRequired) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "totp required" })),
        )
            .into_response(),
        Err(LoginRefusal::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "bad credentials" })),
        )
            .into_response(),
    }
}

async fn ask_all(
    state: &State,
    caller: &Caller,
    permission: Permission,
    request: NodeRequest,
) -> Response {
    if let Err(refused) = caller.may(permission) {
        return refused.into_response();
    }
    Json(json!(state.nodes.fan_out(&request, None).await)).into_response()
}

async fn status(Shared(state): Shared<State>, caller: Caller) -> Response {
    ask_all(&state, &caller, Permission::Read, NodeRequest::Status).await
}

async fn queue(Shared(state): Shared<State>, caller: Caller) -> Response {
    ask_all(&state, &caller, Permission::Read, NodeRequest::QueueList).await
}

async fn nodes(Shared(state): Shared<State>, caller: Caller) -> Response {
    ask_all(&state, &caller, Permission::Read, NodeRequest::Status).await
}

/// Every node's quarantine, with what a quarantine manager may not see removed.
pub async fn quarantine_entries(
    state: &State,
    caller: &Caller,
) -> Vec<crate::federation::NodeAnswer> {
    let request = NodeRequest::QuarantineList {
        filter: Default::default(),
    };
    let mut answers = state.nodes.fan_out(&request, None).await;
    for answer in &mut answers {
        if let Some(Value::Array(entries)) = &mut answer.result {
            entries.retain(|entry| caller.owns_recipients(&recipients_of(entry)));
        }
    }
    answers
}

pub fn recipients_of(entry: &Value) -> Vec<String> {
    entry["recipients"]
        .as_array()
        .map_or_else(Vec::new, |list| {
            list.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
}

async fn quarantine(Shared(state): Shared<State>, caller: Caller) -> Response {
    if !(caller.may(Permission::Read).is_ok() || caller.may(Permission::Quarantine).is_ok()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    Json(json!(quarantine_entries(&state, &caller).await)).into_response()
}

#[derive(Deserialize)]
pub struct ReleaseTarget {
    pub node: String,
    #[serde(default)]
    pub to: Option<String>,
}

/// Releases `id` on `node` when the caller may; the audit log records the attempt.
pub async fn release_one(
    state: &State,
    caller: &Caller,
    id: &str,
    target: &ReleaseTarget,
) -> Result<Value, (StatusCode, String)> {
    caller.may(Permission::Quarantine).map_err(|_| {
        (
            StatusCode::FORBIDDEN,
            "your role may not release".to_string(),
        )
    })?;
    let visible = quarantine_entries(state, caller).await;
    let found = visible
        .iter()
        .filter(|a| a.node == target.node)
        .filter_map(|a| a.result.as_ref()?.as_array())
        .flatten()
        .any(|entry| {
            entry["id"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(id))
        });
    if !found {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no quarantined message {id} you may see on {}", target.node),
        ));
    }
    let request = NodeRequest::QuarantineRelease {
        ids: vec![id.to_string()],
        to: target.to.clone(),
        not_spam: false,
    };
    let answers = state.nodes.fan_out(&request, Some(&target.node)).await;
    let ok = answers.iter().all(|a| a.result.is_some());
    state.audit.record(
        &caller.session.user,
        caller.peer,
        "quarantine-release",
        json!({ "node": target.node, "id": id, "to": target.to, "answers": answers }),
        ok,
    );
    if ok {
        Ok(json!(answers))
    } else {
        Err((StatusCode::BAD_GATEWAY, json!(answers).to_string()))
    }
}

async fn release(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Query(target): Query<ReleaseTarget>,
) -> Response {
    match release_one(&state, &caller, &id, &target).await {
        Ok(answers) => Json(answers).into_response(),
        Err((status, message)) => (status, message).into_response(),
    }
}

#[derive(Deserialize, Default)]
pub struct TrackQuery {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default)]
    pub recipient: Option<String>,
}

pub fn node_track(query: &TrackQuery) -> NodeRequest {
    let blank = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    NodeRequest::Track(bulwark::track::Query {
        id: blank(&query.id),
        message_id: None,
        sender: blank(&query.sender),
        recipient: blank(&query.recipient),
        since_seconds: None,
    })
}

async fn track(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(query): Query<TrackQuery>,
) -> Response {
    ask_all(&state, &caller, Permission::Read, node_track(&query)).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_mounts_once_with_all_its_methods() {
        // axum panics on a path mounted twice: building the router is the check.
        let _router = super::routes();
    }

    #[test]
    fn openapi_lists_every_route_of_the_table() {
        let document = super::openapi_document();
        for path in [
            "/api/v1/login",
            "/api/v1/status",
            "/api/v1/queue",
            "/api/v1/quarantine",
            "/api/v1/quarantine/{id}/release",
            "/api/v1/track",
            "/api/v1/nodes",
            "/api/v1/config/history",
            "/api/v1/config/apply",
            "/api/v1/config/rollback",
            "/api/v1/config/rules",
            "/api/v1/quarantine/{id}/release-allow",
            "/api/v1/quarantine/bulk",
            "/api/v1/queue/destinations",
            "/api/v1/nodes/{name}",
        ] {
            assert!(document["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(
            document["paths"]["/api/v1/login"]["post"]["security"],
            serde_json::json!([])
        );
    }
}
