//! `/api/v1` routes for configuration (apply to several nodes, history, rollback, rules),
//! quarantine (release and allow sender, bulk), queue destinations and the node list; mounted
//! and documented through the same table as the rest of the API (`api::table`).
//!
//! A state-changing call with a browser session cookie must carry the session's CSRF token in
//! `X-CSRF-Token`; a bearer token needs none (no browser sends it on its own).

use axum::extract::{Path, Query, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Json;
use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::config::ConsoleNode;
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiRoute;
use crate::app::{Caller, State};
use crate::auth::Permission;
use crate::config_ops;
use crate::quarantine_ops::{self, BulkAction, Item};

fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
) -> ApiRoute {
    ApiRoute {
        method,
        path,
        summary,
        query,
        authenticated: true,
    }
}

pub fn table() -> Vec<(ApiRoute, MethodRouter<State>)> {
    vec![
        (route("get", "/api/v1/config/history", "A node's configuration versions (who, when, note), newest first", &[("node", "the node")]), get(history)),
        (route("get", "/api/v1/config/version", "The text of one version of a node's configuration", &[("node", "the node"), ("version", "the version number")]), get(version)),
        (route("post", "/api/v1/config/apply", "Validate and apply {text} to each of {nodes}, with reload; each node's outcome", &[]), post(apply)),
        (route("post", "/api/v1/config/rollback", "Apply version {version} of {node}'s history again (validated, reloaded)", &[]), post(rollback)),
        (route("post", "/api/v1/config/rules", "Validate (or with apply=true apply) {rules}, the [[rule]] table of {node}; problems numbered from the rules' first line", &[]), post(rules)),
        (route("post", "/api/v1/quarantine/{id}/release-allow", "Release a quarantined message and add its sender to the node's [antispam] allow list", &[("node", "the node holding it")]), post(release_allow)),
        (route("post", "/api/v1/quarantine/bulk", "{action: release|delete, items: [{node, id}]}: each item's outcome", &[]), post(bulk)),
        (route("get", "/api/v1/queue/destinations", "Every node's destinations: state, queued, failures, last error, retry", &[]), get(destinations)),
        (route("post", "/api/v1/nodes", "Add {name, address[, server_name]} to the console's node list (admin)", &[]), post(add_node)),
        (route("delete", "/api/v1/nodes/{name}", "Remove a node from the console's node list (admin)", &[]), delete(remove_node)),
    ]
}

// The Err is the finished refusal handed straight back to axum, once per refused request:
// boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn refuse_csrf(caller: &Caller, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    crate::pages::check_csrf(caller, given).map_err(IntoResponse::into_response)
}

#[allow(clippy::result_large_err)] // as refuse_csrf
fn guard(caller: &Caller, headers: &HeaderMap, permission: Permission) -> Result<(), Response> {
    refuse_csrf(caller, headers)?;
    caller.may(permission).map_err(IntoResponse::into_response)
}

fn bad_gateway(e: String) -> Response {
    (StatusCode::BAD_GATEWAY, Json(json!({ "error": e }))).into_response()
}

#[derive(Deserialize)]
struct NodeQuery {
    node: String,
    #[serde(default)]
    version: Option<u64>,
}

async fn history(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<NodeQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    match config_ops::history(&state, &q.node).await {
        Ok(versions) => Json(versions).into_response(),
        Err(e) => bad_gateway(e),
    }
}

async fn version(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<NodeQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let Some(version) = q.version else {
        return (StatusCode::BAD_REQUEST, "version=N\n").into_response();
    };
    match config_ops::version_text(&state, &q.node, version).await {
        Ok(text) => {
            Json(json!({ "node": q.node, "version": version, "text": text })).into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({ "error": e }))).into_response(),
    }
}

fn outcomes_response<T: serde::Serialize>(all_ok: bool, body: T) -> Response {
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct ApplyBody {
    text: String,
    nodes: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

async fn apply(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<ApplyBody>,
) -> Response {
    if let Err(refused) = guard(&caller, &headers, Permission::Config) {
        return refused;
    }
    if body.nodes.is_empty() {
        return (StatusCode::BAD_REQUEST, "nodes: at least one\n").into_response();
    }
    let note = body
        .note
        .unwrap_or_else(|| "applied through the API".into());
    let outcomes = config_ops::apply_to(&state, &caller, &body.nodes, &body.text, &note).await;
    outcomes_response(outcomes.iter().all(|o| o.ok), outcomes)
}

#[derive(Deserialize)]
struct RollbackBody {
    node: String,
    version: u64,
}

async fn rollback(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<RollbackBody>,
) -> Response {
    if let Err(refused) = guard(&caller, &headers, Permission::Config) {
        return refused;
    }
    let outcome = config_ops::rollback(&state, &caller, &body.node, body.version).await;
    outcomes_response(outcome.ok, outcome)
}

#[derive(Deserialize)]
struct RulesBody {
    node: String,
    rules: String,
    #[serde(default)]
    apply: bool,
}

async fn rules(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<RulesBody>,
) -> Response {
    let permission = if body.apply {
        Permission::Config
    } else {
        Permission::Read
    };
    if let Err(refused) = guard(&caller, &headers, permission) {
        return refused;
    }
    match config_ops::rules_edit(&state, &caller, &body.node, &body.rules, body.apply).await {
        Ok(edit) => outcomes_response(edit.outcome.ok, edit),
        Err(e) => bad_gateway(e),
    }
}

#[derive(Deserialize)]
struct OnNode {
    node: String,
}

async fn release_allow(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(on): Query<OnNode>,
) -> Response {
    if let Err(refused) = refuse_csrf(&caller, &headers) {
        return refused;
    }
    match quarantine_ops::release_and_allow(&state, &caller, &on.node, &id).await {
        Ok(done) => outcomes_response(done.allowed.ok, done),
        Err(e @ quarantine_ops::QuarantineActionError::Forbidden) => (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e @ quarantine_ops::QuarantineActionError::NotFound(..)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => bad_gateway(e.to_string()),
    }
}

#[derive(Deserialize)]
struct BulkBody {
    action: BulkAction,
    items: Vec<Item>,
}

async fn bulk(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<BulkBody>,
) -> Response {
    if let Err(refused) = guard(&caller, &headers, Permission::Quarantine) {
        return refused;
    }
    let outcomes = quarantine_ops::bulk(&state, &caller, body.action, &body.items).await;
    outcomes_response(outcomes.iter().all(|o| o.ok), outcomes)
}

async fn destinations(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    Json(
        state
            .nodes
            .fan_out(&NodeRequest::QueueDestinations, None)
            .await,
    )
    .into_response()
}

async fn add_node(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Json(node): Json<ConsoleNode>,
) -> Response {
    if let Err(refused) = guard(&caller, &headers, Permission::Nodes) {
        return refused;
    }
    match crate::pages_nodes::add_node(&state, &caller, node) {
        Ok(()) => (StatusCode::CREATED, Json(state.nodes.list())).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn remove_node(
    Shared(state): Shared<State>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(refused) = guard(&caller, &headers, Permission::Nodes) {
        return refused;
    }
    match crate::pages_nodes::remove_node(&state, &caller, &name) {
        Ok(()) => Json(state.nodes.list()).into_response(),
        Err(e @ crate::node_list::NodeListError::Unknown(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
