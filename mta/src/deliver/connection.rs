//! One outbound connection: takes jobs for its destination from the engine one after
//! another, connects on the first job (next hops in order, every address of each, TLS by
//! the route's policy), reuses the connection for later jobs, and reports each job's result.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::attempt::{self, Outcome};
use super::engine::{Job, JobReport};
use super::outcome::{self, Applied};
use super::secure::{self, Negotiated, NegotiationError};
use super::Context;
use crate::queue::{Content, QueueEntry, QueueState};
use crate::route::{Destination, DnsError, MxAnswer, Target};
use crate::smtp_client::Client;
use crate::tls_policy::{DomainPolicy, HostPolicy, PolicyKind};

/// Messages up to this size are read into memory for delivery; larger ones are streamed.
const IN_MEMORY_LIMIT: u64 = 1024 * 1024;
/// How much of the original a notice returns (RET=FULL included), like Postfix's
/// bounce_size_limit: enough to identify the message, not a second copy of a huge one.
const RETURNED_CONTENT_LIMIT: usize = 100 * 1024;

/// An established session with a next hop.
pub(crate) struct Connected {
    pub client: Client,
    /// `host[ip]:port` for logs and DSNs.
    pub relay: String,
    /// The next hops after this one, for recipients it defers.
    pub fallbacks: Vec<(String, SocketAddr)>,
    /// TLS verified by DANE, MTA-STS or `verify` (what REQUIRETLS needs).
    pub authenticated: bool,
}

/// Why no next hop could be used.
enum DestinationError {
    /// Try again later (unreachable, 4xx greeting, TLS failure, DNS timeout).
    Temporary(String),
    /// The destination can never accept mail (null MX, no such domain): bounce.
    Permanent { status: &'static str, text: String },
}

pub(crate) async fn run(context: Arc<Context>, name: String, destination: Destination) {
    let mut connected: Option<Connected> = None;
    let mut jobs_done = 0usize;
    let mut next = context.next_job(&name, None).await;
    while let Some(job) = next.take() {
        let report = run_job(&context, &destination, &mut connected, &job).await;
        let keep_going = !report.destination_failed && connected.is_some();
        context.finished(job, report);
        jobs_done += 1;
        if !keep_going || jobs_done >= destination.max_messages_per_connection {
            break;
        }
        next = match context.next_job(&name, None).await {
            Some(job) => Some(job),
            None => wait_for_job(&context, &name, &mut connected).await,
        };
    }
    if let Some(connected) = connected {
        connected.client.quit().await;
    }
    context.connection_ended(name);
}

/// Keeps an open connection for the destination's next message (connection caching), and
/// drops it if the next hop closed it meanwhile, so the job reconnects instead of failing.
async fn wait_for_job(
    context: &Context,
    name: &str,
    connected: &mut Option<Connected>,
) -> Option<Job> {
    let idle = context
        .gateway
        .runtime()
        .config
        .delivery
        .connection_idle_time;
    if idle.is_zero() {
        return None;
    }
    let job = context.next_job(name, Some(idle)).await?;
    if let Some(session) = connected.as_mut() {
        if !session.client.is_idle_and_open().await {
            log::debug!("delivery: {} closed the idle connection", session.relay);
            *connected = None;
        }
    }
    Some(job)
}

/// A job parked at a down destination whose message is due to expire or to get its delay
/// notice: apply a deferral without connecting (the outcome code bounces or warns).
pub(crate) async fn parked(context: Arc<Context>, job: Job, reason: String) {
    let report = match context.gateway.queue.get(job.id) {
        None => JobReport::skipped(),
        Some(entry) => {
            let header = match context.gateway.spool.open_content(job.id, 0).await {
                Ok(content) => content
                    .prefix(RETURNED_CONTENT_LIMIT)
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let results = attempt::all(
                &job.recipients,
                Outcome::Deferred {
                    diagnostic: reason.clone(),
                },
            );
            let applied =
                outcome::apply(&context, &entry, &header, &job, results, None, false).await;
            JobReport {
                deferred: applied.deferred,
                retry_at: applied.retry_at,
                error: Some(reason),
                destination_failed: false,
                skipped: true,
            }
        }
    };
    context.finished(job, report);
}

/// Removes a message none of whose recipients is pending.
pub(crate) async fn remove_finished(context: Arc<Context>, id: crate::queue::QueueId) {
    if context.gateway.queue.finish_if_done(id) {
        match context.gateway.spool.remove(id).await {
            Ok(()) => log::info!("removed: id={id} (all recipients were already done)"),
            Err(e) => log::error!("cannot remove finished message {id}: {e}"),
        }
    }
}

/// One job on this connection: the message loaded, a session (kept for the next job),
/// REQUIRETLS checked, the recipients sent (failing over to later next hops), and the
/// results applied.
async fn run_job(
    context: &Context,
    destination: &Destination,
    connected: &mut Option<Connected>,
    job: &Job,
) -> JobReport {
    let Loaded {
        entry,
        mut message,
        header,
    } = match load(context, destination, job).await {
        ControlFlow::Continue(loaded) => loaded,
        ControlFlow::Break(report) => return report,
    };
    if let ControlFlow::Break(report) =
        ensure_connected(context, destination, connected, &entry, &header, job).await
    {
        return report;
    }
    let Some(session) = connected.as_mut() else {
        return JobReport::skipped();
    };
    let require_tls = entry.envelope.require_tls;
    if let Some(refusal) =
        secure::requiretls_refusal(require_tls, session.authenticated, &session.client)
    {
        let results = attempt::all(&job.recipients, refusal);
        let relay = Some(session.relay.clone());
        let applied = outcome::apply(context, &entry, &header, job, results, relay, false).await;
        return report(applied, None, false);
    }
    let (mut sent, broken) = send(session, &entry, &mut message, &header, job).await;
    let fallbacks = session.fallbacks.clone();
    if broken {
        // The next job connects afresh.
        *connected = None;
    }
    if sent.any_deferred() && !fallbacks.is_empty() {
        let hops = &fallbacks[..];
        sent = fail_over_deferred(
            context,
            destination,
            hops,
            &entry,
            sent,
            &mut message,
            &header,
            job,
        )
        .await;
    }
    let error = sent.results.iter().find_map(|(_, o)| match o {
        Outcome::Deferred { diagnostic } => Some(diagnostic.clone()),
        _ => None,
    });
    let relay = Some(sent.relay);
    let applied = outcome::apply(
        context,
        &entry,
        &header,
        job,
        sent.results,
        relay,
        sent.dsn_passed_on,
    )
    .await;
    report(applied, error, false)
}

/// A job's message, ready to send.
struct Loaded {
    entry: QueueEntry,
    /// The whole message, read as it is sent.
    message: Content,
    /// Its first `RETURNED_CONTENT_LIMIT` bytes, for the notices that return it.
    header: Vec<u8>,
}

/// The job's message; or, when there is nothing to send, the report (held or gone meanwhile,
/// delivered into a Maildir, unreadable and so deferred).
async fn load(
    context: &Context,
    destination: &Destination,
    job: &Job,
) -> ControlFlow<JobReport, Loaded> {
    let gateway = &context.gateway;
    let Some(entry) = gateway.queue.get(job.id) else {
        return ControlFlow::Break(JobReport::skipped());
    };
    if entry.state == QueueState::Hold {
        return ControlFlow::Break(JobReport::skipped());
    }
    if let Target::Maildir(dir) = &destination.target {
        return ControlFlow::Break(into_maildir(context, &entry, job, dir).await);
    }
    let opened = match gateway.spool.open_content(job.id, IN_MEMORY_LIMIT).await {
        Ok(content) => content
            .prefix(RETURNED_CONTENT_LIMIT)
            .await
            .map(|prefix| (content, prefix)),
        Err(e) => Err(e),
    };
    match opened {
        Ok((message, header)) => ControlFlow::Continue(Loaded {
            entry,
            message,
            header,
        }),
        Err(e) => ControlFlow::Break(spool_unreadable(context, &entry, job, e).await),
    }
}

/// A session with the destination: the one this connection holds, or a new one. When no
/// next hop can be used the job's recipients are deferred (unreachable) or bounced (the
/// destination can never take mail), and that report is returned.
async fn ensure_connected(
    context: &Context,
    destination: &Destination,
    connected: &mut Option<Connected>,
    entry: &QueueEntry,
    header: &[u8],
    job: &Job,
) -> ControlFlow<JobReport> {
    if connected.is_some() {
        return ControlFlow::Continue(());
    }
    let (failed, error, destination_failed) = match connect(context, destination).await {
        Ok(session) => {
            *connected = Some(session);
            return ControlFlow::Continue(());
        }
        Err(DestinationError::Temporary(error)) => {
            let diagnostic = error.clone();
            (Outcome::Deferred { diagnostic }, error, true)
        }
        Err(DestinationError::Permanent { status, text }) => {
            let status = status.to_string();
            let diagnostic = text.clone();
            (Outcome::Bounced { status, diagnostic }, text, false)
        }
    };
    let results = attempt::all(&job.recipients, failed);
    let applied = outcome::apply(context, entry, header, job, results, None, false).await;
    ControlFlow::Break(report(applied, Some(error), destination_failed))
}

/// What the recipients came to, and through which next hop.
struct Sent {
    results: Results,
    relay: String,
    /// The next hop took our DSN request (it reports success itself).
    dsn_passed_on: bool,
}

impl Sent {
    fn any_deferred(&self) -> bool {
        self.results
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Deferred { .. }))
    }
}

/// Sends the job on the session; whether the session broke on the way.
async fn send(
    session: &mut Connected,
    entry: &QueueEntry,
    message: &mut Content,
    header: &[u8],
    job: &Job,
) -> (Sent, bool) {
    let (results, broken) = attempt::send(
        &mut session.client,
        &entry.envelope,
        &job.recipients,
        message,
        header,
    )
    .await;
    let sent = Sent {
        results,
        relay: session.relay.clone(),
        dsn_passed_on: session.client.capabilities.dsn,
    };
    (sent, broken)
}

/// Recipients the next hop deferred (a 4xx, a lost connection) go to the route's later next
/// hops now rather than waiting for a retry; the settled ones are applied first.
#[allow(clippy::too_many_arguments)]
async fn fail_over_deferred(
    context: &Context,
    destination: &Destination,
    fallbacks: &[(String, SocketAddr)],
    entry: &QueueEntry,
    mut sent: Sent,
    message: &mut Content,
    header: &[u8],
    job: &Job,
) -> Sent {
    let (settled, deferred) = partition(std::mem::take(&mut sent.results));
    if !settled.is_empty() {
        let relay = Some(sent.relay.clone());
        let passed_on = sent.dsn_passed_on;
        outcome::apply(context, entry, header, job, settled, relay, passed_on).await;
    }
    let retried = fail_over(
        context,
        destination,
        fallbacks,
        entry,
        deferred,
        message,
        header,
    )
    .await;
    Sent {
        results: retried.results,
        relay: retried.relay.unwrap_or(sent.relay),
        dsn_passed_on: retried.dsn_passed_on.unwrap_or(sent.dsn_passed_on),
    }
}

/// The queued copy could not be read (EMFILE, a file gone missing, an I/O error): the job's
/// recipients are deferred like any temporary failure, so the message keeps a next attempt,
/// still expires and still gets its delay notice, and the operator is alerted. Dropping the
/// job instead would leave the message queued forever with nothing scheduled.
async fn spool_unreadable(
    context: &Context,
    entry: &crate::queue::QueueEntry,
    job: &Job,
    error: crate::queue::SpoolError,
) -> JobReport {
    let diagnostic = format!("451 4.3.0 cannot read the queued message: {error}");
    log::error!(
        queue_id:% = job.id, alert = "spool_read", reason = diagnostic.as_str();
        "delivery: ALERT id={}: cannot read the spool file ({error}); deferred",
        job.id
    );
    let results = attempt::all(
        &job.recipients,
        Outcome::Deferred {
            diagnostic: diagnostic.clone(),
        },
    );
    let applied = outcome::apply(context, entry, &[], job, results, None, false).await;
    report(applied, Some(diagnostic), false)
}

/// Local delivery: each recipient's copy written into the Maildir (see `maildir`).
async fn into_maildir(
    context: &Context,
    entry: &crate::queue::QueueEntry,
    job: &Job,
    dir: &std::path::Path,
) -> JobReport {
    let content = match context.gateway.spool.read_content(job.id).await {
        Ok(content) => content,
        Err(e) => return spool_unreadable(context, entry, job, e).await,
    };
    let hostname = context.gateway.runtime().config.server.hostname.clone();
    let recipients: Vec<(usize, String)> = job
        .recipients
        .iter()
        .filter_map(|&i| Some((i, entry.envelope.recipients.get(i)?.address.clone())))
        .collect();
    let (dir, shared) = (dir.to_path_buf(), std::sync::Arc::new(content));
    let copy = shared.clone();
    let written = tokio::task::spawn_blocking(move || {
        recipients
            .into_iter()
            .map(|(index, address)| {
                let outcome = match super::maildir::deliver(&dir, &address, &copy, &hostname) {
                    Ok(path) => Outcome::Delivered {
                        reply: format!("250 2.0.0 delivered to {}", path.display()),
                    },
                    Err(e) => Outcome::Deferred {
                        diagnostic: format!("451 4.3.0 cannot write the maildir: {e}"),
                    },
                };
                (index, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let results = written.unwrap_or_else(|e| {
        attempt::all(
            &job.recipients,
            Outcome::Deferred {
                diagnostic: format!("451 4.3.0 maildir writer failed: {e}"),
            },
        )
    });
    let header = &shared[..shared.len().min(RETURNED_CONTENT_LIMIT)];
    let relay = Some("maildir".to_string());
    let applied = outcome::apply(context, entry, header, job, results, relay, true).await;
    report(applied, None, false)
}

/// Splits results into (final: delivered or bounced, deferred).
type Results = Vec<(usize, Outcome)>;

fn partition(results: Results) -> (Results, Results) {
    results
        .into_iter()
        .partition(|(_, o)| !matches!(o, Outcome::Deferred { .. }))
}

struct FailOver {
    results: Vec<(usize, Outcome)>,
    relay: Option<String>,
    dsn_passed_on: Option<bool>,
}

/// Tries `recipients` on each later next hop in turn until none is deferred.
async fn fail_over(
    context: &Context,
    destination: &Destination,
    fallbacks: &[(String, SocketAddr)],
    entry: &crate::queue::QueueEntry,
    deferred: Vec<(usize, Outcome)>,
    message: &mut crate::queue::Content,
    header: &[u8],
) -> FailOver {
    let mut pending: Vec<usize> = deferred.iter().map(|(i, _)| *i).collect();
    let mut settled: Vec<(usize, Outcome)> = Vec::new();
    let mut last = deferred;
    let mut relay = None;
    let mut dsn_passed_on = None;
    let domain = domain_policy(context, destination).await;
    for (host, address) in fallbacks {
        if pending.is_empty() {
            break;
        }
        let policy = host_policy(context, destination, &domain, host, address.port()).await;
        let mut session = match connect_one(context, destination, host, *address, &policy).await {
            Ok(session) => session,
            Err(error) => {
                log::warn!(
                    "delivery: next hop {host}[{}]:{} failed: {error}",
                    address.ip(),
                    address.port()
                );
                continue;
            }
        };
        if let Some(refusal) = secure::requiretls_refusal(
            entry.envelope.require_tls,
            session.authenticated,
            &session.client,
        ) {
            session.client.quit().await;
            settled.extend(pending.iter().map(|&i| (i, refusal.clone())));
            pending.clear();
            last = Vec::new();
            break;
        }
        let (results, _) = attempt::send(
            &mut session.client,
            &entry.envelope,
            &pending,
            message,
            header,
        )
        .await;
        dsn_passed_on = Some(session.client.capabilities.dsn);
        relay = Some(session.relay.clone());
        session.client.quit().await;
        let (done, deferred) = partition(results);
        settled.extend(done);
        pending = deferred.iter().map(|(i, _)| *i).collect();
        last = deferred;
    }
    settled.extend(last);
    FailOver {
        results: settled,
        relay,
        dsn_passed_on,
    }
}

fn report(applied: Applied, error: Option<String>, destination_failed: bool) -> JobReport {
    JobReport {
        deferred: applied.deferred,
        retry_at: applied.retry_at,
        error,
        destination_failed,
        skipped: false,
    }
}

/// The addresses to try, in order: (host name for TLS and logs, socket address).
async fn candidates(
    context: &Context,
    destination: &Destination,
) -> Result<Vec<(String, SocketAddr)>, DestinationError> {
    let resolver = &context.resolver;
    let mx_port = context.gateway.runtime().config.delivery.mx_port;
    let mut hosts: Vec<(String, u16)> = Vec::new();
    let mut mx_domain: Option<&str> = None;
    match &destination.target {
        Target::Hops(hops) => hosts.extend(hops.iter().map(|h| (h.host.clone(), h.port))),
        // Never connected to (run_job writes the maildir instead).
        Target::Maildir(_) => return Err(DestinationError::Temporary("a maildir".into())),
        Target::Mx(domain) => {
            mx_domain = Some(domain);
            match resolver.mx(domain).await {
                Ok(MxAnswer::Hosts(list)) => hosts.extend(list.into_iter().map(|h| (h, mx_port))),
                Ok(MxAnswer::Implicit) => hosts.push((domain.clone(), mx_port)),
                Ok(MxAnswer::NullMx) => {
                    return Err(DestinationError::Permanent {
                        status: "5.1.10",
                        text: format!("556 5.1.10 {domain} does not accept mail (null MX)"),
                    })
                }
                Err(e) if e.is_permanent() => {
                    return Err(DestinationError::Permanent {
                        status: "5.1.2",
                        text: format!("550 5.1.2 {e}"),
                    })
                }
                Err(e) => return Err(DestinationError::Temporary(e.to_string())),
            }
        }
    }
    let mut addresses = Vec::new();
    let mut last_dns_error: Option<DnsError> = None;
    for (host, port) in hosts {
        match resolver.addresses(&host).await {
            Ok(ips) => addresses.extend(
                ips.into_iter()
                    .map(|ip| (host.clone(), SocketAddr::new(ip, port))),
            ),
            Err(e) => last_dns_error = Some(e),
        }
    }
    if addresses.is_empty() {
        let permanent = last_dns_error.as_ref().is_some_and(DnsError::is_permanent);
        let error = last_dns_error.map_or("no next hop".to_string(), |e| e.to_string());
        // An implicit MX whose domain has no address is as dead as a null MX.
        if let (Some(domain), true) = (mx_domain, permanent) {
            return Err(DestinationError::Permanent {
                status: "5.1.2",
                text: format!("550 5.1.2 {domain}: no mail exchanger or address ({error})"),
            });
        }
        return Err(DestinationError::Temporary(error));
    }
    Ok(addresses)
}

async fn connect(
    context: &Context,
    destination: &Destination,
) -> Result<Connected, DestinationError> {
    let addresses = candidates(context, destination).await?;
    let domain = domain_policy(context, destination).await;
    let mut last_error = String::from("no next hop");
    for (position, (host, address)) in addresses.iter().enumerate() {
        let (host, address) = (host.clone(), *address);
        let policy = host_policy(context, destination, &domain, &host, address.port()).await;
        match connect_one(context, destination, &host, address, &policy).await {
            Ok(mut connected) => {
                connected.fallbacks = addresses[position + 1..].to_vec();
                return Ok(connected);
            }
            Err(error) => {
                log::warn!(
                    "delivery: next hop {host}[{}]:{} failed: {error}",
                    address.ip(),
                    address.port()
                );
                last_error = format!("{host}[{}]:{}: {error}", address.ip(), address.port());
            }
        }
    }
    Err(DestinationError::Temporary(last_error))
}

/// The destination's part of the TLS policy (MTA-STS, secure MX), once per connection.
async fn domain_policy(context: &Context, destination: &Destination) -> DomainPolicy {
    match context.gateway.transport_security.get() {
        Some(security) => security.domain_policy(destination).await,
        None => DomainPolicy {
            domain: None,
            dane_names_trusted: false,
            sts: crate::tls_policy::StsStatus::Absent,
        },
    }
}

/// The TLS policy of one next hop; logged once per connection attempt.
async fn host_policy(
    context: &Context,
    destination: &Destination,
    domain: &DomainPolicy,
    host: &str,
    port: u16,
) -> HostPolicy {
    let policy = match context.gateway.transport_security.get() {
        Some(security) => security.host_policy(destination, domain, host, port).await,
        None => HostPolicy {
            kind: PolicyKind::Fixed(destination.tls),
            scope: None,
            why: "transport security is not running".into(),
        },
    };
    log::debug!(
        destination = destination.name().as_str(), host = host,
        policy = crate::tls_policy::kind_name(&policy.kind).as_str(), why = policy.why.as_str();
        "delivery: TLS policy chosen"
    );
    policy
}

async fn connect_one(
    context: &Context,
    destination: &Destination,
    host: &str,
    address: SocketAddr,
    policy: &HostPolicy,
) -> Result<Connected, String> {
    if let PolicyKind::Refused(result) = policy.kind {
        if let (Some(scope), Some(security)) =
            (&policy.scope, context.gateway.transport_security.get())
        {
            // Refused before connecting: there is no sending address to report.
            security.record(scope, host, address, None, Err(result));
        }
        return Err(format!("not connecting: {}", policy.why));
    }
    let delivery = context.gateway.runtime().config.delivery.clone();
    let helo = delivery
        .helo_name
        .clone()
        .unwrap_or_else(|| context.gateway.runtime().config.server.hostname.clone());
    let (mut client, greeting) = Client::connect(
        address,
        delivery.connect_timeout,
        delivery.command_timeout,
        delivery.data_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    if greeting.code / 100 != 2 {
        client.quit().await;
        return Err(format!("greeting: {greeting}"));
    }
    let hello = client.hello(&helo).await.map_err(|e| e.to_string())?;
    if !hello.is_positive() {
        client.quit().await;
        return Err(format!("EHLO: {hello}"));
    }
    let negotiated = secure::negotiate(
        context,
        destination,
        &mut client,
        host,
        address,
        policy,
        &helo,
    )
    .await;
    let authenticated = match negotiated {
        Ok(Negotiated::Plain) => false,
        Ok(Negotiated::Tls { authenticated }) => authenticated,
        Err(NegotiationError::Retry(e, fallback)) => {
            log::info!(
                "delivery: STARTTLS with {host}[{}] failed ({e}); retrying as tls = {:?}",
                address.ip(),
                fallback
            );
            let retry = HostPolicy {
                kind: PolicyKind::Fixed(fallback),
                scope: None,
                why: format!("retry after: {e}"),
            };
            return Box::pin(connect_one(context, destination, host, address, &retry)).await;
        }
        Err(NegotiationError::Failed(e)) => {
            client.quit().await;
            return Err(e);
        }
    };
    let relay = format!("{host}[{}]:{}", address.ip(), address.port());
    Ok(Connected {
        client,
        relay,
        fallbacks: Vec::new(),
        authenticated,
    })
}
