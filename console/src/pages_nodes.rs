//! The Nodes page: each gateway's status (or why it did not answer), and, for admins, adding
//! or removing a node (written to `[console] nodes_file`, audited).

use axum::extract::State as Shared;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::config::ConsoleNode;
use serde::Deserialize;
use serde_json::Value;

use crate::app::{Caller, State};
use crate::auth::Permission;
use crate::node_list;
use crate::pages::{check_csrf, csrf_field, escape, layout, problem_page, table, text};

pub fn routes() -> Router<State> {
    Router::new().route("/nodes", get(nodes_page).post(nodes_action))
}

fn status_row(
    caller: &Caller,
    node: &ConsoleNode,
    answer: &crate::federation::NodeAnswer,
) -> Vec<String> {
    let (class, label) = match &answer.result {
        Some(_) => ("ok", "up".to_string()),
        None => (
            "down",
            format!("DOWN: {}", answer.error.as_deref().unwrap_or("?")),
        ),
    };
    let r = answer.result.clone().unwrap_or(Value::Null);
    let remove = if caller.may(Permission::Nodes).is_ok() {
        format!("<form method=\"post\" action=\"/nodes\" style=\"display:inline\">{}<input type=\"hidden\" name=\"name\" value=\"{}\"><button name=\"verb\" value=\"remove\">remove</button></form>",
            csrf_field(caller), escape(&node.name))
    } else {
        String::new()
    };
    vec![
        escape(&node.name),
        escape(&node.address),
        format!("<span class=\"{class}\">{}</span>", escape(&label)),
        text(&r["hostname"]),
        text(&r["version"]),
        text(&r["uptime_seconds"]),
        text(&r["queue"]["messages"]),
        remove,
    ]
}

async fn nodes_page(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let list = state.nodes.list();
    let answers = state.nodes.fan_out(&NodeRequest::Status, None).await;
    let rows = list
        .iter()
        .zip(&answers)
        .map(|(node, a)| status_row(&caller, node, a));
    let mut body = table(
        "nodes",
        &[
            "node", "address", "state", "hostname", "version", "uptime", "queue", "",
        ],
        rows,
    );
    if caller.may(Permission::Nodes).is_ok() {
        body.push_str(&format!("<h2>Add a node</h2><p>Enrol it first with <code>bulwarkctl node enroll</code> (its certificate must chain to the console's CA).</p><form method=\"post\" action=\"/nodes\" id=\"add-node\">{}<input name=\"name\" placeholder=\"name\"> <input name=\"address\" placeholder=\"host:port of its [control] listen\"> <input name=\"server_name\" placeholder=\"certificate name (default: host)\"> <button name=\"verb\" value=\"add\">Add node</button></form>",
            csrf_field(&caller)));
    }
    layout("Nodes", Some(&caller), &body).into_response()
}

#[derive(Deserialize)]
pub struct NodeForm {
    #[serde(default)]
    csrf: String,
    verb: String,
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    server_name: String,
}

/// Adds a node to the list, writes the nodes file, audits; the list in force changes only when
/// the file was written.
pub fn add_node(
    state: &State,
    caller: &Caller,
    node: ConsoleNode,
) -> Result<(), node_list::NodeListError> {
    let mut list = state.nodes.list();
    let outcome = node_list::check_new(&list, &node).and_then(|()| {
        list.push(node.clone());
        node_list::save(&state.config.nodes_file(), &list)
    });
    state.audit.record(&caller.session.user, caller.peer, "node add",
        serde_json::json!({ "node": node, "error": outcome.as_ref().err().map(ToString::to_string) }), outcome.is_ok());
    outcome.map(|()| state.nodes.replace(list))
}

pub fn remove_node(
    state: &State,
    caller: &Caller,
    name: &str,
) -> Result<(), node_list::NodeListError> {
    let mut list = state.nodes.list();
    let before = list.len();
    list.retain(|n| n.name != name);
    let outcome = if list.len() == before {
        Err(node_list::NodeListError::Unknown(name.to_string()))
    } else {
        node_list::save(&state.config.nodes_file(), &list)
    };
    state.audit.record(&caller.session.user, caller.peer, "node remove",
        serde_json::json!({ "node": name, "error": outcome.as_ref().err().map(ToString::to_string) }), outcome.is_ok());
    outcome.map(|()| state.nodes.replace(list))
}

async fn nodes_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<NodeForm>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Nodes))
    {
        return refused.into_response();
    }
    let outcome = match form.verb.as_str() {
        "add" => add_node(
            &state,
            &caller,
            ConsoleNode {
                name: form.name.trim().to_string(),
                address: form.address.trim().to_string(),
                server_name: Some(form.server_name.trim().to_string()).filter(|s| !s.is_empty()),
            },
        ),
        "remove" => remove_node(&state, &caller, &form.name),
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    match outcome {
        Ok(()) => Redirect::to("/nodes").into_response(),
        Err(e) => problem_page(
            &caller,
            "Nodes",
            StatusCode::BAD_REQUEST,
            &e.to_string(),
            "/nodes",
        ),
    }
}
