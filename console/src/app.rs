//! The console's shared state, who is calling, the security headers every answer carries, and
//! the router (pages and `/api/v1`).
//!
//! Invariants: every route but `/login`, `/api/v1/login` and `/api/v1/openapi.json` needs a
//! live session (cookie) or token (`Authorization: Bearer`); every state-changing form post
//! carries the session's CSRF token; every answer carries a Content-Security-Policy that
//! allows no script, no remote content, no framing.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::admin::remote::Federation;
use bulwark::config::ConsoleConfig;

use crate::audit::Audit;
use crate::auth::{allows, Auth, Permission, Session};
use crate::federation::Nodes;

/// The client's address (set per connection by main).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// One dashboard sample: totals over every node that answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub at: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub queued: u64,
    pub nodes_down: usize,
}

/// A week of samples at the default interval.
const MAX_SAMPLES: usize = 60_480;

pub struct Inner {
    pub config: ConsoleConfig,
    pub auth: Auth,
    pub nodes: Nodes,
    pub audit: Audit,
    pub samples: Mutex<VecDeque<Sample>>,
    pub alerts: crate::alerts::Alerts,
    /// The digest links' key and used links (when `[console.digest]` is set).
    pub links: Option<crate::digest::link::Links>,
    /// One digest-link release at a time (check, release, mark).
    pub release_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("TLS: {0}")]
    Pem(#[from] bulwark::admin::https::PemError),
    #[error(transparent)]
    DigestKey(#[from] crate::digest::link::KeyError),
}

pub type State = Arc<Inner>;

pub fn new_state(config: ConsoleConfig) -> Result<State, StateError> {
    let client = Federation::new(
        &config.client_certificate,
        &config.client_private_key,
        &config.ca,
    )?;
    let list = crate::node_list::load(&config).unwrap_or_else(|e| {
        log::error!("node list: {e}; using [[console.node]]");
        config.nodes.clone()
    });
    let nodes = Nodes {
        client,
        nodes: std::sync::RwLock::new(list),
        timeout: config.node_timeout,
    };
    let audit = Audit::new(config.audit_log());
    let state_dir = config.state_dir();
    let alerts = crate::alerts::Alerts::new(crate::alerts::history::History::new(
        state_dir.join("alerts.jsonl"),
    ));
    let links = match config.digest {
        Some(_) => Some(crate::digest::link::Links::open(&state_dir)?),
        None => None,
    };
    Ok(Arc::new(Inner {
        config,
        auth: Auth::new(),
        nodes,
        audit,
        samples: Mutex::new(VecDeque::new()),
        alerts,
        links,
        release_lock: tokio::sync::Mutex::new(()),
    }))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now in milliseconds: the end of an on-demand report. Whole seconds would leave out what
/// happened in the current second (the mail just sent).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Samples every node's status every `sample_interval` for the dashboard charts.
pub fn spawn_sampler(state: State) {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(state.config.sample_interval.max(Duration::from_secs(1)));
        loop {
            tick.tick().await;
            let answers = state.nodes.fan_out(&NodeRequest::Status, None).await;
            let sum = |f: &dyn Fn(&serde_json::Value) -> u64| {
                answers
                    .iter()
                    .filter_map(|a| a.result.as_ref())
                    .map(f)
                    .sum()
            };
            let sample = Sample {
                at: unix_now(),
                accepted: sum(&|r| r["messages"]["accepted"].as_u64().unwrap_or(0)),
                rejected: sum(&|r| r["messages"]["rejected"].as_u64().unwrap_or(0)),
                queued: sum(&|r| r["queue"]["messages"].as_u64().unwrap_or(0)),
                nodes_down: answers.iter().filter(|a| !a.reachable).count(),
            };
            let mut samples = state.samples.lock().unwrap_or_else(|p| p.into_inner());
            samples.push_back(sample);
            while samples.len() > MAX_SAMPLES {
                samples.pop_front();
            }
        }
    });
}

/// An authenticated caller; `cookie` tells a browser session (CSRF applies) from a token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: Session,
    pub token: String,
    pub cookie: bool,
    pub peer: IpAddr,
}

impl Caller {
    pub fn may(&self, permission: Permission) -> Result<(), Refusal> {
        if allows(self.session.role, permission) {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "your role may not do this\n"))
        }
    }

    /// For a quarantine manager: whether every recipient of an entry is in its domains.
    pub fn owns_recipients(&self, recipients: &[String]) -> bool {
        if self.session.role != bulwark::admin::users::Role::Quarantine {
            return true;
        }
        !recipients.is_empty()
            && recipients.iter().all(|r| {
                let domain = r
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_ascii_lowercase();
                self.session.domains.contains(&domain)
            })
    }
}

/// Why a request is refused before anything is done (status and a short text).
pub type Refusal = (StatusCode, &'static str);

pub const COOKIE: &str = "bulwark_session";

fn token_of(parts: &Parts) -> Option<(String, bool)> {
    let headers = &parts.headers;
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((bearer.trim().to_string(), false));
    }
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| (value.to_string(), true))
}

impl FromRequestParts<State> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<Peer>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
        let unauthenticated = || {
            if parts.uri.path().starts_with("/api/") {
                (StatusCode::UNAUTHORIZED, "log in: POST /api/v1/login\n").into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        };
        let Some((token, cookie)) = token_of(parts) else {
            return Err(unauthenticated());
        };
        let Some(session) = state.auth.session(&state.config, &token) else {
            return Err(unauthenticated());
        };
        Ok(Caller {
            session,
            token,
            cookie,
            peer,
        })
    }
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub fn router(state: State) -> Router {
    crate::pages::routes()
        .merge(crate::api::routes())
        .merge(crate::ops::routes())
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}
