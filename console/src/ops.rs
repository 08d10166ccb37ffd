//! The pages of the console's operations: `/alerts` (what fires now, the rules, the history),
//! `/reports` (a daily or weekly report as HTML, `/reports.pdf` as PDF, mailed on demand)
//! and `/digest/release` (the quarantine digests' signed links: no session, the link is the
//! authority; a GET shows what would be released, only the button's POST releases).

use std::fmt::Write as _;

use axum::extract::{Query, State as Shared};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use bulwark::admin::protocol::Request as NodeRequest;
use serde::Deserialize;
use serde_json::json;

use crate::app::{unix_now, unix_now_ms, Caller, Peer, State};
use crate::auth::Permission;
use crate::digest::link::Refusal;
use crate::pages::{check_csrf, csrf_field, escape, layout};
use crate::reports::{self, Period};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/alerts", get(alerts_page))
        .route("/reports", get(reports_page).post(reports_mail))
        .route("/reports.pdf", get(reports_pdf))
        .route("/digest/release", get(release_page).post(release_action))
}

async fn alerts_page(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let mut body = String::from("<h2>Firing now</h2><table id=\"alerts-firing\"><tr><th>rule</th><th>node</th><th>subject</th><th>since</th><th>detail</th></tr>");
    for f in state.alerts.firing() {
        let _ = write!(
            body,
            "<tr class=\"down\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.rule),
            escape(&f.node),
            escape(&f.subject),
            reports::html::utc(f.since as i64 * 1000),
            escape(&f.detail)
        );
    }
    body.push_str("</table><h2>Rules</h2><table id=\"alerts-rules\"><tr><th>name</th><th>when</th><th>limit</th><th>duration</th><th>nodes</th></tr>");
    for rule in state.config.alerts.iter().flat_map(|a| &a.rules) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td></tr>",
            escape(&rule.name),
            escape(&json!(rule.when).to_string()),
            rule.limit.map_or("-".into(), |l| l.to_string()),
            rule.duration.as_secs(),
            escape(&if rule.nodes.is_empty() {
                "all".into()
            } else {
                rule.nodes.join(", ")
            })
        );
    }
    body.push_str("</table><h2>History</h2><table id=\"alerts-history\"><tr><th>when</th><th>change</th><th>rule</th><th>node</th><th>subject</th><th>detail</th><th>mail</th><th>webhook</th></tr>");
    for n in state.alerts.history.recent().iter().take(200) {
        let outcome = |v: Option<String>| escape(&v.unwrap_or_else(|| "-".into()));
        let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            reports::html::utc(n.at as i64 * 1000), escape(&json!(n.change).to_string()), escape(&n.rule), escape(&n.node), escape(&n.subject), escape(&n.detail),
            outcome(n.mail.as_ref().map(|m| m.clone().unwrap_or_else(|e| format!("failed: {e}")))),
            outcome(n.webhook.as_ref().map(|w| w.clone().map_or_else(|e| format!("failed: {e}"), |s| format!("HTTP {s}")))));
    }
    body.push_str("</table>");
    layout("Alerts", Some(&caller), &body).into_response()
}

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    pub period: Period,
}

pub fn top(state: &State) -> usize {
    state.config.reports.as_ref().map_or(10, |r| r.top)
}

async fn reports_page(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<ReportQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let report = reports::make(&state, q.period, unix_now_ms(), top(&state)).await;
    let name = match q.period {
        Period::Daily => "daily",
        Period::Weekly => "weekly",
    };
    let mut body = format!("<p><a href=\"/reports?period=daily\">daily</a> · <a href=\"/reports?period=weekly\">weekly</a> · <a id=\"report-pdf\" href=\"/reports.pdf?period={name}\">PDF</a></p>");
    if state
        .config
        .reports
        .as_ref()
        .is_some_and(|r| !r.mail_to.is_empty())
    {
        let _ = write!(body, "<form method=\"post\" action=\"/reports\">{}<input type=\"hidden\" name=\"period\" value=\"{name}\"><button>Mail this report now</button></form>", csrf_field(&caller));
    }
    body.push_str(&reports::html::section(&report));
    layout(report.period.title(), Some(&caller), &body).into_response()
}

async fn reports_pdf(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<ReportQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let report = reports::make(&state, q.period, unix_now_ms(), top(&state)).await;
    pdf_response(&report)
}

pub fn pdf_response(report: &reports::Report) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"bulwark-report.pdf\"",
            ),
        ],
        reports::pdf::render(report),
    )
        .into_response()
}

#[derive(Deserialize)]
struct MailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    period: Period,
}

async fn reports_mail(
    Shared(state): Shared<State>,
    caller: Caller,
    Form(form): Form<MailForm>,
) -> Response {
    if let Err(refused) =
        check_csrf(&caller, &form.csrf).and_then(|()| caller.may(Permission::Config))
    {
        return refused.into_response();
    }
    let (status, outcome) = mail_report(&state, &caller, form.period).await;
    let text = match &outcome {
        Ok(id) => format!(
            "<p class=\"ok\" id=\"verdict\">queued as {}</p>",
            escape(id)
        ),
        Err(e) => format!("<p class=\"problem\" id=\"verdict\">{}</p>", escape(e)),
    };
    (
        status,
        layout(
            "Report mailed",
            Some(&caller),
            &format!("{text}<p><a href=\"/reports\">back</a></p>"),
        ),
    )
        .into_response()
}

/// Mails the report of `period` now to `[console.reports] mail_to`, audited.
pub async fn mail_report(
    state: &State,
    caller: &Caller,
    period: Period,
) -> (StatusCode, Result<String, String>) {
    let to = state
        .config
        .reports
        .as_ref()
        .map(|r| r.mail_to.clone())
        .unwrap_or_default();
    if to.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Err("[console.reports] mail_to is empty".into()),
        );
    }
    let report = reports::make(state, period, unix_now_ms(), top(state)).await;
    let outcome = reports::mail(state, &report, &to)
        .await
        .map_err(|e| e.to_string());
    state.audit.record(
        &caller.session.user,
        caller.peer,
        "report mail",
        json!({ "period": period, "outcome": outcome }),
        outcome.is_ok(),
    );
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, outcome)
}

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    t: String,
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::BadSignature => StatusCode::FORBIDDEN,
        Refusal::Expired | Refusal::AlreadyUsed => StatusCode::GONE,
    };
    (
        status,
        layout(
            "Release refused",
            None,
            &format!("<p class=\"problem\" id=\"verdict\">{}</p>", refusal.text()),
        ),
    )
        .into_response()
}

async fn release_page(Shared(state): Shared<State>, Query(q): Query<LinkQuery>) -> Response {
    let Some(links) = &state.links else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let grant = match links.check(&q.t, unix_now()) {
        Ok(grant) => grant,
        Err(refusal) => return refused(refusal),
    };
    let shown = state
        .nodes
        .ask_named(
            &grant.node,
            &NodeRequest::QuarantineShow {
                id: grant.id.clone(),
                raw: false,
            },
        )
        .await;
    let entry = &shown.result["entry"];
    let body = format!("<table id=\"held\"><tr><th>From</th><td>{}</td></tr><tr><th>Subject</th><td>{}</td></tr><tr><th>Why</th><td>{}</td></tr><tr><th>To</th><td>{}</td></tr></table>\
        <form method=\"post\" action=\"/digest/release\"><input type=\"hidden\" name=\"t\" value=\"{}\"><button id=\"release\">Release this message to me</button></form>",
        escape(entry["sender"].as_str().unwrap_or("?")), escape(entry["subject"].as_str().unwrap_or("?")),
        escape(entry["reason"].as_str().unwrap_or("?")), escape(&grant.recipient), escape(&q.t));
    layout("Release a quarantined message", None, &body).into_response()
}

/// Releases what the link grants, once: the check, the release and the mark happen under
/// one lock, so two presses of one link cannot both release.
async fn release_action(
    Shared(state): Shared<State>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(q): Form<LinkQuery>,
) -> Response {
    let Some(links) = &state.links else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let _one_at_a_time = state.release_lock.lock().await;
    let now = unix_now();
    let grant = match links.check(&q.t, now) {
        Ok(grant) => grant,
        Err(refusal) => return refused(refusal),
    };
    let request = NodeRequest::QuarantineRelease {
        ids: vec![grant.id.clone()],
        to: Some(grant.recipient.clone()),
        not_spam: false,
    };
    let answer = state.nodes.ask_named(&grant.node, &request).await;
    let detail =
        json!({ "node": grant.node, "id": grant.id, "to": grant.recipient, "error": answer.error });
    state
        .audit
        .record(&grant.recipient, peer, "digest release", detail, answer.ok);
    if !answer.ok {
        let why = answer.error.unwrap_or_else(|| "refused".into());
        return (
            StatusCode::BAD_GATEWAY,
            layout(
                "Release failed",
                None,
                &format!(
                    "<p class=\"problem\" id=\"verdict\">The message could not be released: {}</p>",
                    escape(&why)
                ),
            ),
        )
            .into_response();
    }
    if let Err(e) = links.mark_used(&q.t, &grant, now) {
        log::error!("digest link released but not marked used: {e}");
    }
    layout(
        "Released",
        None,
        &format!(
            "<p class=\"ok\" id=\"verdict\">Released to {}: it is on its way.</p>",
            escape(&grant.recipient)
        ),
    )
    .into_response()
}
