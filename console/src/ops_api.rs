//! `/api/v1` routes of the console's operations; their `ApiRoute` entries join the main
//! table's, so `/api/v1/openapi.json` documents them too.

use axum::extract::{Query, State as Shared};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiRoute;
use crate::app::{unix_now_ms, Caller, State};
use crate::auth::Permission;
use crate::ops::{mail_report, pdf_response, top, ReportQuery};
use crate::reports::{self, Period};

pub fn table() -> Vec<(ApiRoute, MethodRouter<State>)> {
    let route = |method, path, summary, query| ApiRoute {
        method,
        path,
        summary,
        query,
        authenticated: true,
    };
    vec![
        (
            route(
                "get",
                "/api/v1/alerts",
                "Alerts firing now and the history of notices (newest first)",
                &[],
            ),
            get(alerts),
        ),
        (
            route(
                "get",
                "/api/v1/reports",
                "A report over every node: the last 24 hours or 7 days",
                &[
                    ("period", "daily (default) or weekly"),
                    ("format", "json (default), html or pdf"),
                ],
            ),
            get(report),
        ),
        (
            route(
                "post",
                "/api/v1/reports/mail",
                "Mail the report now to [console.reports] mail_to",
                &[("period", "daily (default) or weekly")],
            ),
            post(report_mail),
        ),
        (
            route(
                "post",
                "/api/v1/digests/send",
                "Mail every recipient its quarantine digest now",
                &[],
            ),
            post(digests_send),
        ),
    ]
}

async fn alerts(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    Json(json!({ "firing": state.alerts.firing(), "history": state.alerts.history.recent() }))
        .into_response()
}

#[derive(Deserialize, Default)]
struct ReportFormat {
    #[serde(default)]
    period: Period,
    #[serde(default)]
    format: Option<String>,
}

async fn report(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<ReportFormat>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Read) {
        return refused.into_response();
    }
    let report = reports::make(&state, q.period, unix_now_ms(), top(&state)).await;
    match q.format.as_deref() {
        Some("pdf") => pdf_response(&report),
        Some("html") => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            reports::html::document(&report),
        )
            .into_response(),
        _ => Json(json!(report)).into_response(),
    }
}

async fn report_mail(
    Shared(state): Shared<State>,
    caller: Caller,
    Query(q): Query<ReportQuery>,
) -> Response {
    if let Err(refused) = caller.may(Permission::Config) {
        return refused.into_response();
    }
    let (status, outcome) = mail_report(&state, &caller, q.period).await;
    (
        status,
        Json(match outcome {
            Ok(id) => json!({ "queued": id }),
            Err(e) => json!({ "error": e }),
        }),
    )
        .into_response()
}

async fn digests_send(Shared(state): Shared<State>, caller: Caller) -> Response {
    if let Err(refused) = caller.may(Permission::Config) {
        return refused.into_response();
    }
    let sent = crate::digest::send_all(&state).await;
    state.audit.record(
        &caller.session.user,
        caller.peer,
        "digests send",
        json!({ "recipients": sent.len() }),
        true,
    );
    Json(json!(sent)).into_response()
}
