//! The daemon's side of the control socket.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{Request, Response, MAX_REQUEST};
use super::quarantine;
use crate::config::changes::{Applies, Change};
use crate::deliver::RetryScope;
use crate::filters::antivirus::Antivirus;
use crate::flow;
use crate::gateway::Gateway;
use crate::queue::{QueueId, QueueState, SpoolError, StateRecord};
use crate::track::{Event, EventKind, Query};

/// Reloads the configuration (the daemon's SIGHUP path): every changed key and whether it
/// was applied, or a message on failure.
pub type ReloadFn = Arc<dyn Fn() -> Result<Vec<Change>, String> + Send + Sync>;
/// Compares the running configuration with the file: every key that differs.
pub type DiffFn = Arc<dyn Fn() -> Result<Vec<Change>, String> + Send + Sync>;

/// What the control socket may do with the configuration.
#[derive(Clone)]
pub struct ConfigHooks {
    pub reload: ReloadFn,
    pub diff: DiffFn,
}

/// What every control transport (unix socket, HTTPS) executes requests against.
pub struct Control {
    pub gateway: Arc<Gateway>,
    pub hooks: ConfigHooks,
    /// The configuration file (none when running on the built-in default): `config-*` requests.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {source}")]
pub struct ControlError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Binds the socket (replacing a stale one) with mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let error = |source| ControlError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let listener = UnixListener::bind(path).map_err(error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(error)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, control: Arc<Control>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, control.clone()));
            }
            Err(e) => {
                log::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, control: Arc<Control>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    let response = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => control.execute(request).await,
            Err(e) => Response::error(format!("malformed request: {e}")),
        },
        _ => Response::error("no request received"),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

impl Control {
    pub async fn execute(&self, request: Request) -> Response {
        match request {
            Request::ConfigGet => super::config_edit::get(self.config_file.as_deref()),
            Request::ConfigValidate { text } => {
                super::config_edit::validate(self.config_file.as_deref(), &text)
            }
            Request::ConfigPut { text, by, note } => {
                let author = super::config_edit::Author {
                    by: by.as_deref().unwrap_or("control"),
                    note: note.as_deref().unwrap_or(""),
                };
                super::config_edit::put(
                    self.config_file.as_deref(),
                    &text,
                    &author,
                    &self.hooks.reload,
                )
            }
            Request::ConfigHistory => super::config_edit::history(self.config_file.as_deref()),
            Request::ConfigVersion { version } => {
                super::config_edit::version(self.config_file.as_deref(), version)
            }
            other => execute(other, &self.gateway, &self.hooks).await,
        }
    }
}

async fn execute(request: Request, gateway: &Gateway, hooks: &ConfigHooks) -> Response {
    match request {
        Request::ConfigGet
        | Request::ConfigValidate { .. }
        | Request::ConfigPut { .. }
        | Request::ConfigHistory
        | Request::ConfigVersion { .. } => {
            Response::error("configuration requests need the control context")
        }
        Request::Status => Response::ok(status(gateway)),
        Request::QueueList => Response::ok(json!(gateway.queue.list())),
        Request::QueueShow { id, body, history } => show(gateway, &id, body, history).await,
        Request::QueueHold { ids } => change_state(gateway, &ids, StateRecord::Hold).await,
        Request::QueueRelease { ids } => change_state(gateway, &ids, StateRecord::Release).await,
        Request::QueueDelete { ids } => delete(gateway, &ids).await,
        Request::QueueFlush {
            destination: Some(destination),
        } => {
            gateway
                .delivery
                .retry_now(RetryScope::Destination(destination.clone()));
            Response::ok(json!({ "flushed": destination }))
        }
        Request::QueueDeliver { id } => match parse_ids(&[id]) {
            Ok(ids) if gateway.queue.contains(ids[0]) => {
                gateway.delivery.retry_now(RetryScope::Message(ids[0]));
                Response::ok(json!({ "delivering": ids[0].to_string() }))
            }
            Ok(ids) => Response::error(format!("no message {} in the queue", ids[0])),
            Err(response) => response,
        },
        Request::QueueFlush { destination: None } => {
            let waiting = gateway
                .queue
                .list()
                .iter()
                .filter(|e| e.state == QueueState::Queued)
                .count();
            gateway.delivery.flush();
            Response::ok(json!({ "flushed": waiting }))
        }
        Request::QueueRequeue { ids } => requeue(gateway, &ids).await,
        Request::QueueDestinations => Response::ok(json!(gateway.delivery.destinations().await)),
        Request::Reload => match (hooks.reload)() {
            Ok(changes) => Response::ok(reload_report(&changes)),
            Err(e) => Response::error(e),
        },
        Request::ConfigDiff => match (hooks.diff)() {
            Ok(changes) => Response::ok(json!(changes)),
            Err(e) => Response::error(e),
        },
        Request::LogLevel { level } => match crate::service::journal::set_level(&level) {
            Ok(level) => {
                log::warn!("log level set to {level} by the operator");
                Response::ok(json!({ "log_level": level.to_string().to_lowercase() }))
            }
            Err(e) => Response::error(e),
        },
        Request::ConfigShow => Response::ok(json!(*gateway.runtime().config)),
        Request::FlowStatus => Response::ok(gateway.flow.status()),
        Request::FlowTop { limit } => Response::ok(json!(gateway.flow.top(limit.unwrap_or(20)))),
        Request::FlowList => Response::ok(json!(gateway.flow.blocked())),
        Request::FlowBlock { target, seconds } => flow_block(gateway, &target, seconds),
        Request::FlowUnblock { target } => flow_unblock(gateway, &target),
        Request::AvStatus => with_antivirus(gateway, |av| Response::ok(av.status())),
        Request::AvUpdate { path } => av_update(gateway, &path).await,
        Request::AvReload => with_antivirus(gateway, |av| match av.reload_signatures() {
            Ok(version) => Response::ok(json!({ "reloaded": true, "version": version })),
            Err(e) => Response::error(format!("reload refused, the old set stays: {e}")),
        }),
        Request::TlsPolicy { domain } => tls_policy(gateway, &domain).await,
        Request::Track(query) => track(gateway, query).await,
        Request::QuarantineList { filter } => quarantine::list(gateway, &filter),
        Request::QuarantineShow { id, raw } => quarantine::show(gateway, &id, raw),
        Request::QuarantineRelease { ids, to, not_spam } => {
            quarantine::release(gateway, &ids, to.as_deref(), not_spam).await
        }
        Request::QuarantineDelete { ids, spam } => quarantine::delete(gateway, &ids, spam).await,
        Request::Submit {
            sender,
            recipients,
            message,
        } => super::submit::submit(gateway, &sender, &recipients, &message).await,
        Request::TrackSummary {
            from_ms,
            to_ms,
            top,
        } => track_summary(gateway, from_ms, to_ms, top).await,
    }
}

/// The policy delivery would apply to `domain` now (the MX hosts looked up afresh).
async fn tls_policy(gateway: &Gateway, domain: &str) -> Response {
    use crate::route::{Resolver, Router, Target};
    let Some(security) = gateway.transport_security.get() else {
        return Response::error("transport security is not running");
    };
    let config = gateway.runtime().config.clone();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let destination = Router::new(&config).destination(&domain);
    let mut error = None;
    let hosts: Vec<(String, u16)> = match &destination.target {
        Target::Hops(hops) => hops.iter().map(|h| (h.host.clone(), h.port)).collect(),
        Target::Maildir(_) => Vec::new(),
        Target::Mx(domain) => {
            let port = config.delivery.mx_port;
            let answer = match crate::route::HickoryResolver::new(&config.dns) {
                Ok(resolver) => resolver.mx(domain).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(crate::route::MxAnswer::Hosts(hosts)) => {
                    hosts.into_iter().map(|h| (h, port)).collect()
                }
                Ok(crate::route::MxAnswer::Implicit) => vec![(domain.clone(), port)],
                Ok(crate::route::MxAnswer::NullMx) => Vec::new(),
                Err(e) => {
                    error = Some(e);
                    Vec::new()
                }
            }
        }
    };
    let mut result = crate::tls_policy::explain(security, &destination, &hosts).await;
    if let (Some(error), Some(map)) = (error, result.as_object_mut()) {
        map.insert("error".into(), json!(error));
    }
    Response::ok(result)
}

fn with_antivirus(gateway: &Gateway, act: impl FnOnce(&Antivirus) -> Response) -> Response {
    match &gateway.runtime().antivirus {
        Some(av) => act(av),
        None => Response::error("anti-virus is not configured ([antivirus] is absent)"),
    }
}

/// Reads the bundle and its `.sig` as the daemon's user and installs it.
async fn av_update(gateway: &Gateway, path: &str) -> Response {
    let Some(av) = gateway.runtime().antivirus.clone() else {
        return with_antivirus(gateway, |_| Response::ok(Value::Null));
    };
    let bundle = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) => return Response::error(format!("cannot read {path}: {e}")),
    };
    let signature = tokio::fs::read(format!("{path}.sig")).await.ok();
    let source = format!("file:{path}");
    match av.install_bundle(&bundle, signature.as_deref(), &source) {
        Ok(version) => {
            log::info!(source:% = source, version:% = version; "antivirus: signature bundle installed");
            Response::ok(json!({ "installed": version }))
        }
        Err(e) => {
            log::warn!(source:% = source, error:% = e; "antivirus: signature bundle refused, old set kept");
            Response::error(format!("bundle refused, the old set stays: {e}"))
        }
    }
}

fn flow_block(gateway: &Gateway, target: &str, seconds: Option<u64>) -> Response {
    let ttl = seconds.map(Duration::from_secs);
    match flow::parse_target(target).and_then(|net| gateway.flow.block(net, ttl).map(|()| net)) {
        Ok(net) => {
            log::info!("flow: {net} blocked by operator for {seconds:?}s");
            Response::ok(json!({ "blocked": net.to_string(), "seconds": seconds }))
        }
        Err(e) => Response::error(e.to_string()),
    }
}

fn flow_unblock(gateway: &Gateway, target: &str) -> Response {
    let outcome = flow::parse_target(target)
        .and_then(|net| gateway.flow.unblock(net).map(|removed| (net, removed)));
    match outcome {
        Ok((net, true)) => {
            log::info!("flow: {net} unblocked by operator");
            Response::ok(json!({ "unblocked": net.to_string() }))
        }
        Ok((net, false)) => Response::error(format!("{net} is not blocked")),
        Err(e) => Response::error(e.to_string()),
    }
}

/// `reloaded` plus the changed keys split by whether the reload applied them.
fn reload_report(changes: &[Change]) -> Value {
    let keys = |applies: Applies| {
        changes
            .iter()
            .filter(|c| c.applies == applies)
            .map(|c| json!({ "key": c.key, "running": c.running, "file": c.file }))
            .collect::<Vec<_>>()
    };
    json!({
        "reloaded": true,
        "applied": keys(Applies::OnReload),
        "needs_restart": keys(Applies::AtRestart),
    })
}

fn status(gateway: &Gateway) -> Value {
    let runtime = gateway.runtime();
    let config = &runtime.config;
    let c = &gateway.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let (journal_segments, journal_bytes) = gateway.spool.journal_usage();
    json!({
        "hostname": config.server.hostname,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": gateway.started.elapsed().as_secs(),
        // The sockets actually bound at start (a reload never rebinds).
        "listeners": gateway.listening(),
        "control_socket": config.server.control_socket,
        "sessions": { "active": load(&c.sessions_active), "total": load(&c.sessions_total), "refused": load(&c.sessions_refused) },
        "messages": { "accepted": load(&c.messages_accepted), "rejected": load(&c.messages_rejected), "bytes_accepted": load(&c.bytes_accepted) },
        "recipients_rejected": load(&c.recipients_rejected),
        "queue": { "messages": gateway.queue.len(), "bytes": gateway.queue.total_size() },
        "journal": { "segments": journal_segments, "bytes": journal_bytes },
        "tracking": gateway.tracker.status(),
        "log": { "events_dropped": crate::service::log_queue::dropped_events() },
        "spool": { "recovery_problems": gateway.spool.recovery_problems() },
        "disk": disk(gateway, config.server.min_free_space),
        "certificates": certificates(config),
        "unknown_recipients_by_client": gateway.harvest.top(10).iter()
            .map(|(ip, n)| json!({ "client": ip.to_string(), "count": n })).collect::<Vec<_>>(),
    })
}

/// The spool's file system: what the console's disk and spool alerts compare.
fn disk(gateway: &Gateway, reserve: u64) -> Value {
    match gateway.spool.file_system() {
        Ok((free, total)) => json!({
            "free_bytes": free,
            "total_bytes": total,
            "used_percent": 100 - free.saturating_mul(100).checked_div(total).unwrap_or(100),
            "reserve_bytes": reserve,
        }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// When each certificate this node serves expires (the console's certificate alert).
fn certificates(config: &crate::config::Config) -> Value {
    let mut files = Vec::new();
    if let Some(tls) = &config.tls {
        files.push(("tls", &tls.certificate));
    }
    if let Some(control) = &config.control {
        files.push(("control", &control.certificate));
    }
    let list: Vec<Value> = files
        .into_iter()
        .map(|(role, path)| match super::certificate::not_after(path) {
            Ok(not_after) => json!({ "role": role, "path": path, "not_after": not_after }),
            Err(e) => json!({ "role": role, "path": path, "error": e.to_string() }),
        })
        .collect();
    json!(list)
}

/// The tracking store's totals for a report, read off the async runtime.
async fn track_summary(gateway: &Gateway, from_ms: i64, to_ms: i64, top: usize) -> Response {
    let tracker = gateway.tracker.clone();
    let top = top.clamp(1, 100);
    match tokio::task::spawn_blocking(move || tracker.summary(from_ms, to_ms, top)).await {
        Ok(Ok(summary)) => Response::ok(json!(summary)),
        Ok(Err(e)) => Response::error(e.to_string()),
        Err(e) => Response::error(format!("tracking summary failed: {e}")),
    }
}

pub(super) fn parse_ids(ids: &[String]) -> Result<Vec<QueueId>, Response> {
    ids.iter()
        .map(|id| {
            id.to_ascii_uppercase()
                .parse::<QueueId>()
                .map_err(|_| Response::error(format!("{id:?} is not a queue id")))
        })
        .collect()
}

async fn show(gateway: &Gateway, id: &str, body: bool, history: bool) -> Response {
    let id = match parse_ids(&[id.to_string()]) {
        Ok(ids) => ids[0],
        Err(response) => return response,
    };
    let Some(entry) = gateway.queue.get(id) else {
        return Response::error(format!("no message {id} in the queue"));
    };
    let content = match gateway.spool.read_content(id).await {
        Ok(content) => content,
        Err(e) => return Response::error(e.to_string()),
    };
    let header_end = memchr::memmem::find(&content, b"\r\n\r\n").map_or(content.len(), |p| p + 2);
    let shown = if body {
        &content[..]
    } else {
        &content[..header_end]
    };
    let mut shown = json!({
        "entry": entry,
        "envelope": entry.envelope,
        "content": String::from_utf8_lossy(shown),
    });
    if history {
        add_history(gateway, id, &mut shown).await;
    }
    Response::ok(shown)
}

/// `history`: the spool's state log (every deferred attempt with its error and next try,
/// recipients' outcomes, holds and releases: there whatever tracking keeps); `attempts`: the
/// tracking store's per-recipient attempts with relay and reply, when it has them.
async fn add_history(gateway: &Gateway, id: QueueId, shown: &mut Value) {
    match gateway.spool.state_history(id).await {
        Ok(records) => shown["history"] = json!(records),
        Err(e) => shown["history_error"] = json!(e.to_string()),
    }
    let tracker = gateway.tracker.clone();
    let query = Query {
        id: Some(id.to_string()),
        ..Query::default()
    };
    match tokio::task::spawn_blocking(move || tracker.timeline(&query)).await {
        Ok(Ok(timeline)) => {
            let attempts: Vec<_> = timeline
                .events
                .into_iter()
                .filter(|e| e.queue_id == id.to_string())
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::Attempt { .. }
                            | EventKind::Delivered { .. }
                            | EventKind::Deferred { .. }
                            | EventKind::Bounced { .. }
                    )
                })
                .collect();
            shown["attempts"] = json!(attempts);
        }
        Ok(Err(e)) => shown["tracking_error"] = json!(e.to_string()),
        Err(e) => shown["tracking_error"] = json!(e.to_string()),
    }
}

/// Routes each message again (see `Request::QueueRequeue`); ids not in the queue are named.
async fn requeue(gateway: &Gateway, ids: &[String]) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let (queued, missing): (Vec<QueueId>, Vec<QueueId>) =
        ids.into_iter().partition(|id| gateway.queue.contains(*id));
    let outcomes = gateway.delivery.requeue(queued).await;
    let requeued: serde_json::Map<String, Value> = outcomes
        .into_iter()
        .map(|(id, outcome)| (id.to_string(), json!(outcome)))
        .collect();
    let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
    Response::ok(json!({ "requeued": requeued, "missing": missing }))
}

async fn change_state(gateway: &Gateway, ids: &[String], record: StateRecord) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let mut missing = Vec::new();
    for id in &ids {
        if !gateway.queue.contains(*id) {
            missing.push(id.to_string());
            continue;
        }
        // Durable before the reply: a power cut must not undo what the operator was told.
        if let Err(e) = gateway.spool.record_durably(*id, record.clone()).await {
            return Response::error(e.to_string());
        }
        gateway.queue.apply(*id, &record);
        track_operator(gateway, *id, &record);
        if record == StateRecord::Release {
            gateway.delivery.submit(*id);
        }
    }
    if !missing.is_empty() {
        return Response::error(format!("not in the queue: {}", missing.join(" ")));
    }
    Response::ok(json!({ "changed": ids.len() }))
}

async fn delete(gateway: &Gateway, ids: &[String]) -> Response {
    let ids = match parse_ids(ids) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let mut missing = Vec::new();
    for id in &ids {
        match gateway.spool.remove(*id).await {
            Ok(()) => {
                let removed = gateway.queue.remove(*id);
                let message_id = removed.as_ref().and_then(|e| e.message_id.as_deref());
                let deleted = EventKind::Deleted {
                    by: OPERATOR.into(),
                };
                gateway.tracker.record(Event::new(*id, message_id, deleted));
                log::info!("deleted by operator: id={id}");
            }
            Err(SpoolError::NotFound(_)) => missing.push(id.to_string()),
            Err(e) => return Response::error(e.to_string()),
        }
    }
    if !missing.is_empty() {
        return Response::error(format!("not in the queue: {}", missing.join(" ")));
    }
    Response::ok(json!({ "deleted": ids.len() }))
}

/// Who tracking names for a `bulwarkctl queue` action.
const OPERATOR: &str = "operator";

/// Hold and release on the message's timeline (other state records are not the operator's).
fn track_operator(gateway: &Gateway, id: QueueId, record: &StateRecord) {
    let kind = match record {
        StateRecord::Hold => EventKind::Held {
            by: OPERATOR.into(),
        },
        StateRecord::Release => EventKind::Released {
            by: OPERATOR.into(),
        },
        _ => return,
    };
    let entry = gateway.queue.get(id);
    let message_id = entry.as_ref().and_then(|e| e.message_id.as_deref());
    gateway.tracker.record(Event::new(id, message_id, kind));
}

/// Reads the store off the async runtime (a query may take a moment on a big store).
async fn track(gateway: &Gateway, query: Query) -> Response {
    let tracker = gateway.tracker.clone();
    match tokio::task::spawn_blocking(move || tracker.timeline(&query)).await {
        Ok(Ok(timeline)) => Response::ok(json!(timeline)),
        Ok(Err(e)) => Response::error(e.to_string()),
        Err(e) => Response::error(format!("tracking query failed: {e}")),
    }
}
