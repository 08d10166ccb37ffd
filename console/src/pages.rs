//! The server-rendered pages: HTML built with every dynamic value escaped, no script at all,
//! one embedded stylesheet, charts as inline SVG. Each state-changing form carries the
//! session's CSRF token and is refused without it; a quarantined message is shown as escaped
//! text only (never rendered, nothing remote loaded).

use std::fmt::Write as _;

use axum::extract::{Path, Query, State as Shared};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use bulwark::admin::protocol::Request as NodeRequest;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{
    attempt_login, node_track, quarantine_entries, release_one, Login, ReleaseTarget, TrackQuery,
};
use crate::app::{unix_now, Caller, Peer, Refusal, State, COOKIE};
use crate::auth::{LoginRefusal, Permission};
use crate::federation::NodeAnswer;

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#222}nav{background:#1d3557;padding:.5em}nav a{color:#fff;margin-right:1em;text-decoration:none}main{padding:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.down{color:#b00020;font-weight:bold}.ok{color:#006400}pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}.problem{color:#b00020}.add{color:#006400}.del{color:#b00020}";

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route("/", get(dashboard))
        .route("/queue", get(queue_page).post(queue_action))
        .route("/quarantine", get(quarantine_page).post(quarantine_action))
        .route("/quarantine/{node}/{id}", get(preview))
        .route("/quarantine/bulk", post(quarantine_bulk))
        .route("/track", get(track_page))
        .route("/flow", get(flow_page).post(flow_action))
        .route("/audit", get(audit_page))
        .route("/audit.jsonl", get(audit_export))
        .merge(crate::pages_config::routes())
        .merge(crate::pages_nodes::routes())
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => "-".into(),
        other => escape(&other.to_string()),
    }
}

pub(crate) fn layout(title: &str, caller: Option<&Caller>, body: &str) -> Html<String> {
    let nav = match caller {
        Some(c) => format!(
            "<nav><a href=\"/\">Dashboard</a><a href=\"/queue\">Queue</a><a href=\"/quarantine\">Quarantine</a><a href=\"/track\">Tracking</a><a href=\"/config\">Configuration</a><a href=\"/flow\">Flow</a><a href=\"/nodes\">Nodes</a><a href=\"/audit\">Audit</a><a href=\"/alerts\">Alerts</a><a href=\"/reports\">Reports</a>\
             <form method=\"post\" action=\"/logout\" style=\"display:inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out {}</button></form></nav>",
            c.session.csrf, escape(&c.session.user)),
        None => String::new(),
    };
    Html(format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>{} - Bulwark</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>{nav}<main><h1>{}</h1>{body}</main></body></html>", escape(title), escape(title)))
}

pub(crate) fn csrf_field(caller: &Caller) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        caller.session.csrf
    )
}

/// Compares in time independent of where the strings differ.
fn same_secret(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Refuses a browser post whose CSRF token is not the session's.
pub(crate) fn check_csrf(caller: &Caller, token: &str) -> Result<(), Refusal> {
    if caller.cookie && !same_secret(&caller.session.csrf, token) {
        return Err((StatusCode::FORBIDDEN, "missing or wrong CSRF token\n"));
    }
    Ok(())
}

/// "node X did not answer: why" lines for the nodes without a result.
pub(crate) fn unanswered(answers: &[NodeAnswer]) -> String {
    answers
        .iter()
        .filter(|a| a.result.is_none())
        .map(|a| {
            format!(
                "<p class=\"down\">node {} did not answer: {}</p>",
                escape(&a.node),
                escape(a.error.as_deref().unwrap_or("?"))
            )
        })
        .collect()
}

/// One table: its `id`, the header cells (plain text, escaped here), then the rows, whose
/// cells are already rendered HTML (each caller escapes what it puts in).
pub(crate) fn table(
    id: &str,
    headers: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let mut out = format!("<table id=\"{}\"><tr>", escape(id));
    for header in headers {
        let _ = write!(out, "<th>{}</th>", escape(header));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// Every (node, entry) of the answers whose result is a list (queue, quarantine, flow lists).
pub(crate) fn entries(answers: &[NodeAnswer]) -> impl Iterator<Item = (&str, &Value)> {
    answers.iter().flat_map(|a| {
        a.result
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |e| (a.node.as_str(), e))
    })
}

/// The page of a refused or failed change: the reason, and a way back.
pub(crate) fn problem_page(
    caller: &Caller,
    title: &str,
    status: StatusCode,
    why: &str,
    back: &str,
) -> Response {
    (
        status,
        layout(
            title,
            Some(caller),
            &format!(
                "<p class=\"problem\">{}</p><p><a href=\"{back}\">back</a></p>",
                escape(why)
            ),
        ),
    )
        .into_response()
}

async fn login_page() -> Html<String> {
    layout("Log in", None, LOGIN_FORM)
}

const LOGIN_FORM: &str = "<form method=\"post\" action=\"/login\"><p><label>User <input name=\"username\" autocomplete=\"username\"></label></p><p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label></p><p><label>TOTP code <input name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label></p><button>Log in</button></form>";

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    totp: String,
}

async fn login_form(
    Shared(state): Shared<State>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let login = Login {
        username: form.username,
        password: form.password,
        totp: Some(form.totp).filter(|t| !t.is_empty()),
    };
    match attempt_login(&state, peer, &login).await {
        Ok(token) => {
            let cookie = format!(
                "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
                state.config.session_lifetime.as_secs()
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(refusal) => {
            let (status, why) = match refusal {
                LoginRefusal::RateLimited => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins from your address; try later.",
                ),
                LoginRefusal::TotpRequired => {
                    (StatusCode::UNAUTHORIZED, "A valid TOTP code is required.")
                }
                LoginRefusal::BadCredentials => {
                    (StatusCode::UNAUTHORIZED, "Wrong user or password.")
                }
            };
            (
                status,
                layout(
                    "Log in",
                    None,
                    &format!("<p class=\"problem\">{why}</p>{LOGIN_FORM}"),
                ),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(refused) = check_csrf(&caller, &form.csrf) {
        return refused.into_response();
    }
    state.auth.logout(&caller.token);
    let cookie = format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// A polyline chart of `values` (oldest first), as inline SVG.
fn chart(title: &str, values: &[u64]) -> String {
    let (width, height) = (600.0, 120.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        width
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                height - (*v as f64 / max) * height
            )
        })
        .collect();
    format!("<figure><figcaption>{} (max {})</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\"><rect width=\"100%\" height=\"100%\" fill=\"#f8f8f8\"/><polyline fill=\"none\" stroke=\"#1d3557\" stroke-width=\"2\" points=\"{}\"/></svg></figure>", escape(title), max, points.join(" "))
}

#[derive(Deserialize)]
struct Range {
    #[serde(default)]
    range: Option<String>,
}

async fn dashboard(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(range): Query<Range>,
) -> Response {
    if caller.may(Permission::Read).is_err() {
        return Redirect::to("/quarantine").into_response();
    }
    let answers = state.nodes.fan_out(&NodeRequest::Status, None).await;
    let mut body = unanswered(&answers);
    body.push_str("<table><tr><th>node</th><th>accepted</th><th>rejected</th><th>queue</th><th>sessions</th></tr>");
    let (mut accepted, mut rejected, mut queued) = (0, 0, 0);
    for a in answers.iter() {
        let Some(r) = &a.result else { continue };
        accepted += r["messages"]["accepted"].as_u64().unwrap_or(0);
        rejected += r["messages"]["rejected"].as_u64().unwrap_or(0);
        queued += r["queue"]["messages"].as_u64().unwrap_or(0);
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"accepted\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.node),
            r["messages"]["accepted"],
            r["messages"]["rejected"],
            r["queue"]["messages"],
            r["sessions"]["total"]
        );
    }
    let _ = write!(body, "<tr><th>total</th><td id=\"total-accepted\">{accepted}</td><td>{rejected}</td><td>{queued}</td><td></td></tr></table>");
    let seconds = match range.range.as_deref() {
        Some("day") => 86_400,
        Some("week") => 604_800,
        _ => 3_600,
    };
    let since = unix_now().saturating_sub(seconds);
    let samples: Vec<_> = state
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|s| s.at >= since)
        .cloned()
        .collect();
    body.push_str("<p><a href=\"/?range=hour\">hour</a> · <a href=\"/?range=day\">day</a> · <a href=\"/?range=week\">week</a></p>");
    body.push_str(&chart(
        "messages accepted",
        &samples.iter().map(|s| s.accepted).collect::<Vec<_>>(),
    ));
    body.push_str(&chart(
        "messages rejected",
        &samples.iter().map(|s| s.rejected).collect::<Vec<_>>(),
    ));
    body.push_str(&chart(
        "queue size",
        &samples.iter().map(|s| s.queued).collect::<Vec<_>>(),
    ));
    layout("Dashboard", Some(&caller), &body).into_response()
}

async fn queue_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(search): Query<Search>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let answers = state.nodes.fan_out(&NodeRequest::QueueList, None).await;
    let needle = search.q.clone().unwrap_or_default().to_ascii_lowercase();
    let mut body = format!("<form method=\"get\"><input name=\"q\" value=\"{}\" placeholder=\"sender, recipient, subject, id\"><button>Search</button></form>", escape(&needle));
    body.push_str(&unanswered(&answers));
    let rows = entries(&answers)
        .filter(|(_, e)| needle.is_empty() || e.to_string().to_ascii_lowercase().contains(&needle))
        .map(|(node, e)| {
            let id = e["id"].as_str().unwrap_or("");
            vec![
                escape(node),
                text(&e["id"]),
                text(&e["state"]),
                text(&e["sender"]),
                text(&e["recipients"]),
                text(&e["subject"]),
                text(&e["last_error"]),
                action_buttons(&caller, "/queue", node, id, &["hold", "release", "delete"]),
            ]
        });
    body.push_str(&table(
        "queue",
        &[
            "node",
            "id",
            "state",
            "sender",
            "recipients",
            "subject",
            "last error",
            "",
        ],
        rows,
    ));
    for node in &state.nodes.list() {
        body.push_str(&action_buttons(
            &caller,
            "/queue",
            &node.name,
            "",
            &["flush"],
        ));
    }
    body.push_str(&destinations_section(&state, &caller).await);
    layout("Queue", Some(&caller), &body).into_response()
}

/// Per-destination state from each node's delivery engine: waiting messages, connections,
/// failures, the last error, and when it is tried next (a destination that is down).
async fn destinations_section(state: &State, caller: &Caller) -> String {
    let answers = state
        .nodes
        .fan_out(&NodeRequest::QueueDestinations, None)
        .await;
    let rows = entries(&answers).map(|(node, d)| {
        let next = match d["down_for_seconds"].as_u64() {
            Some(seconds) => format!("in {seconds} s"),
            None => "when a message is ready".to_string(),
        };
        let destination = d["destination"].as_str().unwrap_or("");
        vec![
            escape(node),
            escape(destination),
            text(&d["state"]),
            text(&d["queued"]),
            format!(
                "{}/{}",
                text(&d["active_connections"]),
                text(&d["connection_limit"])
            ),
            text(&d["consecutive_failures"]),
            text(&d["last_error"]),
            escape(&next),
            destination_flush(caller, node, destination),
        ]
    });
    format!(
        "<h2>Destinations</h2>{}{}",
        unanswered(&answers),
        table(
            "destinations",
            &[
                "node",
                "destination",
                "state",
                "queued",
                "connections",
                "failures",
                "last error",
                "next attempt",
                ""
            ],
            rows
        )
    )
}

fn destination_flush(caller: &Caller, node: &str, destination: &str) -> String {
    format!("<form method=\"post\" action=\"/queue\" style=\"display:inline\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"to\" value=\"{}\"><button name=\"verb\" value=\"flush-destination\">retry now</button></form>",
        csrf_field(caller), escape(node), escape(destination))
}

pub(crate) fn action_buttons(
    caller: &Caller,
    action: &str,
    node: &str,
    id: &str,
    verbs: &[&str],
) -> String {
    verbs
        .iter()
        .map(|verb| format!("<form method=\"post\" action=\"{action}\" style=\"display:inline\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button name=\"verb\" value=\"{verb}\">{verb}{}</button></form>",
            csrf_field(caller), escape(node), escape(id), if id.is_empty() { format!(" {}", escape(node)) } else { String::new() }))
        .collect()
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    #[serde(default)]
    csrf: String,
    node: String,
    #[serde(default)]
    id: String,
    verb: String,
    #[serde(default)]
    to: String,
}

/// Sends one change to one node, audits it, and answers with a page saying how it went.
async fn change(
    state: &State,
    caller: &Caller,
    title: &str,
    back: &str,
    node: &str,
    request: NodeRequest,
) -> Response {
    let detail = json!({ "node": node, "request": request });
    let answers = state.nodes.fan_out(&request, Some(node)).await;
    let ok = !answers.is_empty() && answers.iter().all(|a| a.result.is_some());
    state
        .audit
        .record(&caller.session.user, caller.peer, title, detail, ok);
    let outcome = if ok {
        "<p class=\"ok\">done</p>".to_string()
    } else {
        unanswered(&answers)
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (
        status,
        layout(
            title,
            Some(caller),
            &format!(
                "{outcome}<pre>{}</pre><p><a href=\"{back}\">back</a></p>",
                escape(&json!(answers).to_string())
            ),
        ),
    )
        .into_response()
}

async fn queue_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<Action>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Queue))
    {
        return refused.into_response();
    }
    let ids = vec![form.id.clone()];
    let request = match form.verb.as_str() {
        "hold" => NodeRequest::QueueHold { ids },
        "release" => NodeRequest::QueueRelease { ids },
        "delete" => NodeRequest::QueueDelete { ids },
        "flush" => NodeRequest::QueueFlush { destination: None },
        "flush-destination" => NodeRequest::QueueFlush {
            destination: Some(form.to.clone()),
        },
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    change(
        &state,
        &caller,
        &format!("queue {}", form.verb),
        "/queue",
        &form.node,
        request,
    )
    .await
}

async fn quarantine_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(search): Query<Search>,
) -> Response {
    if caller.may(Permission::Read).is_err() && caller.may(Permission::Quarantine).is_err() {
        return StatusCode::FORBIDDEN.into_response();
    }
    let answers = quarantine_entries(&state, &caller).await;
    let needle = search.q.clone().unwrap_or_default().to_ascii_lowercase();
    let mut body = format!("<form method=\"get\"><input name=\"q\" value=\"{}\" placeholder=\"sender, recipient, subject, reason\"><button>Search</button></form>", escape(&needle));
    body.push_str(&unanswered(&answers));
    let verbs: &[&str] = if caller.may(Permission::Flow).is_ok() {
        &["release", "release-allow", "delete"]
    } else {
        &["release", "delete"]
    };
    let rows = entries(&answers)
        .filter(|(_, e)| needle.is_empty() || e.to_string().to_ascii_lowercase().contains(&needle))
        .map(|(node, e)| {
            let id = e["id"].as_str().unwrap_or("");
            // The checkbox belongs to the bulk form below (HTML `form` attribute): no nesting.
            vec![format!("<input type=\"checkbox\" name=\"item\" value=\"{}/{}\" form=\"bulk\" aria-label=\"select {}\">", escape(node), escape(id), escape(id)),
                escape(node), format!("<a href=\"/quarantine/{}/{}\">{}</a>", escape(node), escape(id), escape(id)),
                text(&e["sender"]), text(&e["recipients"]), text(&e["subject"]), text(&e["reason"]), text(&e["state"]),
                action_buttons(&caller, "/quarantine", node, id, verbs)]
        });
    body.push_str(&table(
        "quarantine",
        &[
            "",
            "node",
            "id",
            "sender",
            "recipients",
            "subject",
            "reason",
            "state",
            "",
        ],
        rows,
    ));
    let _ = write!(body, "<form method=\"post\" action=\"/quarantine/bulk\" id=\"bulk\">{}<p>Selected: <button name=\"verb\" value=\"release\">release selected</button> <button name=\"verb\" value=\"delete\">delete selected</button></p></form>", csrf_field(&caller));
    layout("Quarantine", Some(&caller), &body).into_response()
}

async fn quarantine_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<Action>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Quarantine))
    {
        return refused.into_response();
    }
    match form.verb.as_str() {
        "release" => {
            let target = ReleaseTarget {
                node: form.node.clone(),
                to: Some(form.to.clone()).filter(|t| !t.is_empty()),
            };
            match release_one(&state, &caller, &form.id, &target).await {
                Ok(answers) => layout("Released", Some(&caller), &format!("<p class=\"ok\">released {}</p><pre>{}</pre><p><a href=\"/quarantine\">back</a></p>", escape(&form.id), escape(&answers.to_string()))).into_response(),
                Err((status, message)) => (status, layout("Release refused", Some(&caller), &format!("<p class=\"problem\">{}</p>", escape(&message)))).into_response(),
            }
        }
        "release-allow" => {
            match crate::quarantine_ops::release_and_allow(&state, &caller, &form.node, &form.id)
                .await
            {
                Ok(done) => {
                    let allowed = if done.allowed.ok {
                        format!("<p class=\"ok\" id=\"allowed\">sender {} added to the allow list of {} (version {})</p>", escape(&done.sender), escape(&form.node), done.allowed.version.unwrap_or(0))
                    } else {
                        format!("<p class=\"problem\" id=\"allowed\">released, but the sender was not allowed: {}</p>", escape(done.allowed.error.as_deref().unwrap_or("?")))
                    };
                    layout("Released", Some(&caller), &format!("<p class=\"ok\">released {}</p>{allowed}<p><a href=\"/quarantine\">back</a></p>", escape(&form.id))).into_response()
                }
                Err(e) => problem_page(
                    &caller,
                    "Release refused",
                    StatusCode::FORBIDDEN,
                    &e.to_string(),
                    "/quarantine",
                ),
            }
        }
        "delete" => {
            if crate::quarantine_ops::visible_entry(&state, &caller, &form.node, &form.id)
                .await
                .is_none()
            {
                return (StatusCode::NOT_FOUND, "no such message you may see\n").into_response();
            }
            change(
                &state,
                &caller,
                "quarantine delete",
                "/quarantine",
                &form.node,
                NodeRequest::QuarantineDelete {
                    ids: vec![form.id.clone()],
                    spam: false,
                },
            )
            .await
        }
        _ => (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    }
}

#[derive(Deserialize)]
struct BulkForm {
    #[serde(default)]
    csrf: String,
    verb: String,
}

/// Release or delete every selected message (`item` = `node/id`, repeated).
async fn quarantine_bulk(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let form = BulkForm {
        csrf: field("csrf"),
        verb: field("verb"),
    };
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Quarantine))
    {
        return refused.into_response();
    }
    let action = match form.verb.as_str() {
        "release" => crate::quarantine_ops::BulkAction::Release,
        "delete" => crate::quarantine_ops::BulkAction::Delete,
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    let items: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| k == "item")
        .filter_map(|(_, v)| v.split_once('/'))
        .map(|(node, id)| crate::quarantine_ops::Item {
            node: node.to_string(),
            id: id.to_string(),
        })
        .collect();
    if items.is_empty() {
        return problem_page(
            &caller,
            "Bulk action",
            StatusCode::BAD_REQUEST,
            "no message selected",
            "/quarantine",
        );
    }
    let outcomes = crate::quarantine_ops::bulk(&state, &caller, action, &items).await;
    let rows = outcomes.iter().map(|o| {
        let verdict = if o.ok {
            "<span class=\"ok\">done</span>".to_string()
        } else {
            format!(
                "<span class=\"problem\">{}</span>",
                escape(o.error.as_deref().unwrap_or("failed"))
            )
        };
        vec![escape(&o.node), escape(&o.id), verdict]
    });
    let body = format!(
        "{}<p><a href=\"/quarantine\">back</a></p>",
        table("bulk-outcomes", &["node", "id", "outcome"], rows)
    );
    layout(&format!("Bulk {}", form.verb), Some(&caller), &body).into_response()
}

/// The message as escaped text: nothing in it can run or load anything.
async fn preview(
    Shared(state): Shared<State>,
    caller: Caller,
    Path((node, id)): Path<(String, String)>,
) -> Response {
    if crate::quarantine_ops::visible_entry(&state, &caller, &node, &id)
        .await
        .is_none()
    {
        return (StatusCode::NOT_FOUND, "no such message you may see\n").into_response();
    }
    let answers = state
        .nodes
        .fan_out(
            &NodeRequest::QuarantineShow {
                id: id.clone(),
                raw: false,
            },
            Some(&node),
        )
        .await;
    let shown = answers
        .first()
        .and_then(|a| a.result.clone())
        .unwrap_or(Value::Null);
    let content = shown["text"]
        .as_str()
        .or(shown["content"].as_str())
        .map_or_else(|| shown.to_string(), String::from);
    let body = format!(
        "{}<pre id=\"preview\">{}</pre>{}",
        unanswered(&answers),
        escape(&content),
        action_buttons(&caller, "/quarantine", &node, &id, &["release", "delete"])
    );
    layout(&format!("Quarantined message {id}"), Some(&caller), &body).into_response()
}

async fn track_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(query): Query<TrackQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let value = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let mut body = format!("<form method=\"get\"><input name=\"id\" placeholder=\"queue id\" value=\"{}\"><input name=\"sender\" placeholder=\"sender\" value=\"{}\"><input name=\"recipient\" placeholder=\"recipient\" value=\"{}\"><button>Search all nodes</button></form>",
        value(&query.id), value(&query.sender), value(&query.recipient));
    if query.id.is_some() || query.sender.is_some() || query.recipient.is_some() {
        let answers = state.nodes.fan_out(&node_track(&query), None).await;
        body.push_str(&unanswered(&answers));
        body.push_str("<table id=\"timeline\"><tr><th>node</th><th>event</th></tr>");
        for a in &answers {
            for event in a.result.as_ref().map(flatten_events).unwrap_or_default() {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape(&a.node),
                    escape(&event.to_string())
                );
            }
        }
        body.push_str("</table>");
    }
    layout("Message tracking", Some(&caller), &body).into_response()
}

/// A node's track answer as a list of events, whatever grouping it uses.
fn flatten_events(result: &Value) -> Vec<Value> {
    match result {
        Value::Array(list) => list.clone(),
        Value::Object(map) => map
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![result.clone()]),
        _ => Vec::new(),
    }
}

async fn flow_page(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let answers = state.nodes.fan_out(&NodeRequest::FlowList, None).await;
    let mut body = unanswered(&answers);
    let rows = entries(&answers).map(|(node, e)| {
        let target = e["network"]
            .as_str()
            .or(e["target"].as_str())
            .or(e["source"].as_str())
            .unwrap_or("");
        vec![
            escape(node),
            escape(target),
            escape(&e.to_string()),
            flow_button(&caller, node, target, "unblock"),
        ]
    });
    body.push_str(&table("blocked", &["node", "source", "detail", ""], rows));
    body.push_str("<h2>Block a source</h2>");
    for node in &state.nodes.list() {
        let _ = write!(body, "<form method=\"post\" action=\"/flow\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><input name=\"target\" placeholder=\"address or network\"><input name=\"seconds\" placeholder=\"seconds (empty: until unblocked)\"><button name=\"verb\" value=\"block\">block on {}</button></form>",
            csrf_field(&caller), escape(&node.name), escape(&node.name));
    }
    layout("Flow control", Some(&caller), &body).into_response()
}

fn flow_button(caller: &Caller, node: &str, target: &str, verb: &str) -> String {
    format!("<form method=\"post\" action=\"/flow\" style=\"display:inline\">{}<input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"target\" value=\"{}\"><button name=\"verb\" value=\"{verb}\">{verb}</button></form>",
        csrf_field(caller), escape(node), escape(target))
}

#[derive(Deserialize)]
struct FlowEdit {
    #[serde(default)]
    csrf: String,
    node: String,
    target: String,
    verb: String,
    #[serde(default)]
    seconds: String,
}

async fn flow_action(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<FlowEdit>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Flow))
    {
        return refused.into_response();
    }
    let request = match form.verb.as_str() {
        "block" => NodeRequest::FlowBlock {
            target: form.target.clone(),
            seconds: form.seconds.trim().parse().ok(),
        },
        "unblock" => NodeRequest::FlowUnblock {
            target: form.target.clone(),
        },
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    change(
        &state,
        &caller,
        &format!("flow {}", form.verb),
        "/flow",
        &form.node,
        request,
    )
    .await
}

async fn audit_page(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let entries = state.audit.entries();
    let rows = entries.iter().rev().take(500).map(|e| {
        vec![
            text(&e["at"]),
            text(&e["user"]),
            text(&e["from"]),
            text(&e["action"]),
            text(&e["ok"]),
            escape(&e["detail"].to_string()),
        ]
    });
    let body = format!(
        "<p><a href=\"/audit.jsonl\">export (JSON lines)</a></p>{}",
        table(
            "audit",
            &["when", "who", "from", "what", "ok", "detail"],
            rows
        )
    );
    layout("Audit log", Some(&caller), &body).into_response()
}

async fn audit_export(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"bulwark-audit.jsonl\"",
            ),
        ],
        state.audit.export(),
    )
        .into_response()
}
