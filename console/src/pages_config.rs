//! The configuration pages: view a node's file, edit it with validation (line:column), see the
//! diff, apply it to one or several nodes (each node's outcome shown), the node's history with
//! a diff against any version and rollback, and the rules editor (the `[[rule]]` table alone,
//! its problems numbered from its own first line).

use std::fmt::Write as _;

use axum::extract::{Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::app::{Caller, State};
use crate::auth::Permission;
use crate::config_ops::{self, NodeOutcome, Problem};
use crate::config_text::{line_diff, split_rules};
use crate::pages::{check_csrf, csrf_field, escape, layout, problem_page, table, text};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/config", get(config_page).post(config_action))
        .route("/config/version", get(version_page))
        .route("/config/rollback", post(rollback_action))
        .route("/rules", get(rules_page).post(rules_action))
}

#[derive(Deserialize, Default)]
struct NodeChoice {
    #[serde(default)]
    node: Option<String>,
}

fn chosen_node(state: &State, choice: Option<String>) -> String {
    choice
        .or_else(|| state.nodes.list().first().map(|n| n.name.clone()))
        .unwrap_or_default()
}

fn node_picker(state: &State, chosen: &str, action: &str) -> String {
    let options: String = state
        .nodes
        .list()
        .iter()
        .map(|n| {
            let selected = if n.name == chosen { " selected" } else { "" };
            format!("<option{selected}>{}</option>", escape(&n.name))
        })
        .collect();
    format!("<form method=\"get\" action=\"{action}\"><select name=\"node\">{options}</select><button>Show</button></form>")
}

/// One checkbox per node ("apply to"), `checked` ticked.
fn target_boxes(state: &State, checked: &[String]) -> String {
    let boxes: String = state
        .nodes
        .list()
        .iter()
        .map(|n| {
            let tick = if checked.contains(&n.name) {
                " checked"
            } else {
                ""
            };
            format!(
                "<label><input type=\"checkbox\" name=\"target\" value=\"{0}\"{tick}> {0}</label> ",
                escape(&n.name)
            )
        })
        .collect();
    format!("<p id=\"targets\">Nodes: {boxes}</p>")
}

fn config_form(
    state: &State,
    caller: &Caller,
    node: &str,
    targets: &[String],
    text: &str,
) -> String {
    format!("<form method=\"post\" action=\"/config\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><textarea name=\"text\" rows=\"30\" cols=\"100\" id=\"config-text\">{}</textarea>{}<p><button name=\"verb\" value=\"validate\">Validate and show diff</button> <button name=\"verb\" value=\"apply\">Apply and reload</button></p></form>",
        csrf_field(caller), escape(node), escape(text), target_boxes(state, targets))
}

fn history_table(caller: &Caller, node: &str, versions: &[Value]) -> String {
    let rows = versions.iter().map(|v| {
        let number = v["version"].as_u64().unwrap_or(0);
        vec![
            format!(
                "<a href=\"/config/version?node={}&amp;version={number}\">{number}</a>",
                escape(node)
            ),
            text(&v["at"]),
            text(&v["by"]),
            text(&v["note"]),
            rollback_button(caller, node, number),
        ]
    });
    table(
        "history",
        &["version", "applied at (unix)", "by", "note", ""],
        rows,
    )
}

fn rollback_button(caller: &Caller, node: &str, version: u64) -> String {
    format!("<form method=\"post\" action=\"/config/rollback\" style=\"display:inline\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"version\" value=\"{version}\"><button>roll back to {version}</button></form>",
        csrf_field(caller), escape(node))
}

async fn config_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(choice): Query<NodeChoice>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let node = chosen_node(&state, choice.node);
    let mut body = node_picker(&state, &node, "/config");
    let _ = write!(
        body,
        "<p><a href=\"/rules?node={0}\">Rules editor for {0}</a></p>",
        escape(&node)
    );
    match config_ops::current_text(&state, &node).await {
        Ok(current) => body.push_str(&config_form(
            &state,
            &caller,
            &node,
            std::slice::from_ref(&node),
            &current,
        )),
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"down\">node {} did not answer: {}</p>",
                escape(&node),
                escape(&e)
            );
        }
    }
    body.push_str("<h2>History</h2>");
    match config_ops::history(&state, &node).await {
        Ok(versions) if versions.is_empty() => {
            body.push_str("<p>No version applied from the console yet.</p>")
        }
        Ok(versions) => body.push_str(&history_table(&caller, &node, &versions)),
        Err(e) => {
            let _ = write!(body, "<p class=\"problem\">{}</p>", escape(&e));
        }
    }
    layout("Configuration", Some(&caller), &body).into_response()
}

/// A form whose `target` repeats (one per ticked node): read as pairs.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn one(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn problems_list(problems: &[Problem], id: &str) -> String {
    let items: String = problems
        .iter()
        .map(|p| {
            format!(
                "<li class=\"problem\">line {}, column {}: {} {}</li>",
                p.line,
                p.column,
                escape(&p.key),
                escape(&p.message)
            )
        })
        .collect();
    format!("<ul id=\"{id}\">{items}</ul>")
}

/// Each node's outcome as a table row: applied (version), valid, or its problems.
fn outcomes_table(outcomes: &[NodeOutcome], applied: bool) -> String {
    let rows = outcomes.iter().map(|o| {
        let verdict = match (o.ok, applied, o.version) {
            (true, true, Some(v)) => {
                format!("<span class=\"ok\">applied and reloaded (version {v})</span>")
            }
            (true, true, None) => "<span class=\"ok\">applied and reloaded</span>".to_string(),
            (true, false, _) => "<span class=\"ok\">valid</span>".to_string(),
            (false, _, _) if !o.problems.is_empty() => problems_list(&o.problems, "problems"),
            (false, _, _) => format!(
                "<span class=\"problem\">{}</span>",
                escape(o.error.as_deref().unwrap_or("failed"))
            ),
        };
        vec![escape(&o.node), verdict]
    });
    table("outcomes", &["node", "outcome"], rows)
}

async fn config_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = Fields(pairs);
    if let Err(refused) =
        check_csrf(&caller, &form.one("csrf")).and_then(|()| caller.may(Permission::Config))
    {
        return refused.into_response();
    }
    let node = form.one("node");
    let mut targets = form.all("target");
    if targets.is_empty() {
        targets.push(node.clone());
    }
    let text = form.one("text").replace("\r\n", "\n");
    let apply = form.one("verb") == "apply";
    let mut diffs = String::new();
    for target in &targets {
        let old = config_ops::current_text(&state, target)
            .await
            .unwrap_or_default();
        let _ = write!(
            diffs,
            "<h3>{}</h3><pre class=\"diff\" id=\"diff-{0}\">{}</pre>",
            escape(target),
            line_diff(&old, &text)
        );
    }
    let outcomes = if apply {
        config_ops::apply_to(
            &state,
            &caller,
            &targets,
            &text,
            "edited on the configuration page",
        )
        .await
    } else {
        config_ops::validate_on(&state, &targets, &text).await
    };
    let status = if outcomes.iter().all(|o| o.ok) {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = format!(
        "{}<h2>Diff</h2>{diffs}{}",
        outcomes_table(&outcomes, apply),
        config_form(&state, &caller, &node, &targets, &text)
    );
    (status, layout("Configuration", Some(&caller), &body)).into_response()
}

#[derive(Deserialize)]
struct VersionChoice {
    node: String,
    version: u64,
}

async fn version_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(choice): Query<VersionChoice>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let old = match config_ops::version_text(&state, &choice.node, choice.version).await {
        Ok(text) => text,
        Err(e) => {
            return problem_page(
                &caller,
                "Configuration version",
                StatusCode::NOT_FOUND,
                &e,
                "/config",
            )
        }
    };
    let current = config_ops::current_text(&state, &choice.node)
        .await
        .unwrap_or_default();
    let body = format!(
        "<p>Lines marked <span class=\"del\">-</span> are in force now and not in version {v}; <span class=\"add\">+</span> would come back with a rollback.</p><pre id=\"diff\">{}</pre>{}<h2>Version {v}</h2><pre id=\"version-text\">{}</pre>",
        line_diff(&current, &old),
        rollback_button(&caller, &choice.node, choice.version),
        escape(&old),
        v = choice.version
    );
    layout(
        &format!("{} version {}", choice.node, choice.version),
        Some(&caller),
        &body,
    )
    .into_response()
}

#[derive(Deserialize)]
struct RollbackForm {
    #[serde(default)]
    csrf: String,
    node: String,
    version: u64,
}

async fn rollback_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<RollbackForm>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Config))
    {
        return refused.into_response();
    }
    let outcome = config_ops::rollback(&state, &caller, &form.node, form.version).await;
    let status = if outcome.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = format!(
        "{}<p><a href=\"/config?node={}\">back to the configuration</a></p>",
        outcomes_table(&[outcome], true),
        escape(&form.node)
    );
    (status, layout("Rollback", Some(&caller), &body)).into_response()
}

fn rules_form(caller: &Caller, node: &str, rules: &str) -> String {
    format!("<form method=\"post\" action=\"/rules\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><textarea name=\"rules\" rows=\"25\" cols=\"100\" id=\"rules-text\">{}</textarea><p><button name=\"verb\" value=\"validate\">Validate</button> <button name=\"verb\" value=\"apply\">Apply and reload</button></p></form>",
        csrf_field(caller), escape(node), escape(rules))
}

async fn rules_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(choice): Query<NodeChoice>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let node = chosen_node(&state, choice.node);
    let mut body = node_picker(&state, &node, "/rules");
    body.push_str("<p>The <code>[[rule]]</code> table of the node's file, in priority order; the rest of the file is kept as it is. Problems are numbered from the first line below.</p>");
    match config_ops::current_text(&state, &node).await {
        Ok(current) => body.push_str(&rules_form(&caller, &node, &split_rules(&current).rules)),
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"down\">node {} did not answer: {}</p>",
                escape(&node),
                escape(&e)
            );
        }
    }
    layout("Rules", Some(&caller), &body).into_response()
}

#[derive(Deserialize)]
struct RulesForm {
    #[serde(default)]
    csrf: String,
    node: String,
    rules: String,
    verb: String,
}

async fn rules_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<RulesForm>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Config))
    {
        return refused.into_response();
    }
    let apply = form.verb == "apply";
    let rules = form.rules.replace("\r\n", "\n");
    match config_ops::rules_edit(&state, &caller, &form.node, &rules, apply).await {
        Ok(edit) => {
            let status = if edit.outcome.ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let body = format!(
                "{}<h2>Diff</h2><pre id=\"diff\">{}</pre>{}",
                outcomes_table(&[edit.outcome], apply),
                line_diff(&edit.old_rules, &rules),
                rules_form(&caller, &form.node, &rules)
            );
            (status, layout("Rules", Some(&caller), &body)).into_response()
        }
        Err(e) => problem_page(&caller, "Rules", StatusCode::BAD_GATEWAY, &e, "/rules"),
    }
}
