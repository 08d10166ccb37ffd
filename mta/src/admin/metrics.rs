//! `[metrics] listen`: Prometheus text exposition (format 0.0.4) at `GET /metrics`.
//!
//! Every value is read from state the daemon keeps anyway (counters, the queue index, the
//! delivery engine's destinations, flow control, the spool journal): scraping changes nothing.
//! Plain HTTP, one request per connection, bounded; bind it to loopback or a management net.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};

use super::http;
use crate::gateway::Gateway;
use crate::queue::QueueState;
use crate::telemetry::telemetry;

#[derive(Debug, thiserror::Error)]
#[error("[metrics] listen {address}: {source}")]
pub struct MetricsBindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| MetricsBindError { address, source })
}

pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &gateway))
                        .await;
                });
            }
            Err(e) => {
                log::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, gateway: &Gateway) -> Result<(), http::HttpError> {
    let request = http::read_request(&mut stream, 0).await?;
    if request.method != "GET" || request.path != "/metrics" {
        return http::write_response(&mut stream, 404, "text/plain", b"GET /metrics\n").await;
    }
    let text = render(gateway).await;
    http::write_response(
        &mut stream,
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        text.as_bytes(),
    )
    .await
}

/// One metric family: HELP, TYPE, then its samples (`labels` may be empty).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn plain(value: u64) -> Vec<(String, f64)> {
    vec![(String::new(), value as f64)]
}

fn label(name: &str, value: &str) -> String {
    labels(&[(name, value)])
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Content stages (latency histograms, verdicts) and deliveries, from `telemetry`.
fn pipeline_metrics(out: &mut String) {
    let t = telemetry();
    let verdicts: Vec<(String, f64)> = t
        .verdicts()
        .into_iter()
        .map(|((stage, verdict, by), n)| {
            let labels = labels(&[("stage", &stage), ("verdict", verdict), ("decided_by", &by)]);
            (labels, n as f64)
        })
        .collect();
    family(
        out,
        "bulwark_stage_verdicts_total",
        "counter",
        "Content stage verdicts by stage, verdict and the rule or filter that decided",
        &verdicts,
    );
    let deliveries: Vec<(String, f64)> = t
        .deliveries()
        .into_iter()
        .map(|(status, n)| (label("status", status.as_str()), n as f64))
        .collect();
    family(
        out,
        "bulwark_deliveries_total",
        "counter",
        "Delivery results per recipient by status",
        &deliveries,
    );
    let name = "bulwark_stage_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a content stage took to answer, per stage\n# TYPE {name} histogram"
    );
    for (stage, h) in t.latencies() {
        for (bound, n) in &h.buckets {
            let le = bound.to_string();
            let _ = writeln!(
                out,
                "{name}_bucket{} {n}",
                labels(&[("stage", &stage), ("le", &le)])
            );
        }
        let inf = labels(&[("stage", &stage), ("le", "+Inf")]);
        let _ = writeln!(out, "{name}_bucket{inf} {}", h.count);
        let stage = label("stage", &stage);
        let _ = writeln!(out, "{name}_sum{stage} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{stage} {}", h.count);
    }
}

/// The outbound limits' alerts (a key went over) and refused messages, when configured.
fn outbound_limit_metrics(out: &mut String, gateway: &Gateway) {
    let Some(ledger) = gateway.outbound_ledger() else {
        return;
    };
    let (alerts, refused) = ledger.alert_counts();
    let alerts: Vec<(String, f64)> = alerts
        .iter()
        .map(|(kind, count)| (label("per", kind), *count as f64))
        .collect();
    family(
        out,
        "bulwark_outbound_limit_alerts_total",
        "counter",
        "Outbound limit alerts: a user, sender or client went over its limit",
        &alerts,
    );
    family(
        out,
        "bulwark_outbound_limit_refused_total",
        "counter",
        "Messages deferred or held by the outbound limits",
        &plain(refused),
    );
}

pub async fn render(gateway: &Gateway) -> String {
    let mut out = String::new();
    let c = &gateway.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    family(
        &mut out,
        "bulwark_sessions_total",
        "counter",
        "SMTP sessions accepted",
        &plain(load(&c.sessions_total)),
    );
    family(
        &mut out,
        "bulwark_log_events_dropped_total",
        "counter",
        "Log events dropped because journald (or stderr) was read too slowly",
        &plain(crate::service::log_queue::dropped_events()),
    );
    family(
        &mut out,
        "bulwark_sessions_active",
        "gauge",
        "SMTP sessions open now",
        &plain(load(&c.sessions_active)),
    );
    family(
        &mut out,
        "bulwark_sessions_refused_total",
        "counter",
        "Connections refused at accept",
        &plain(load(&c.sessions_refused)),
    );
    let verdicts = vec![
        (
            label("verdict", "accepted"),
            load(&c.messages_accepted) as f64,
        ),
        (
            label("verdict", "rejected"),
            load(&c.messages_rejected) as f64,
        ),
    ];
    family(
        &mut out,
        "bulwark_messages_total",
        "counter",
        "Messages by verdict at end of data",
        &verdicts,
    );
    family(
        &mut out,
        "bulwark_recipients_rejected_total",
        "counter",
        "Recipients refused at RCPT",
        &plain(load(&c.recipients_rejected)),
    );
    family(
        &mut out,
        "bulwark_bytes_accepted_total",
        "counter",
        "Message bytes accepted",
        &plain(load(&c.bytes_accepted)),
    );
    pipeline_metrics(&mut out);
    queue_metrics(&mut out, gateway);
    destination_metrics(&mut out, gateway).await;
    flow_metrics(&mut out, gateway);
    outbound_limit_metrics(&mut out, gateway);
    let (segments, bytes) = gateway.spool.journal_usage();
    family(
        &mut out,
        "bulwark_journal_segments",
        "gauge",
        "Spool journal segment files",
        &plain(segments as u64),
    );
    family(
        &mut out,
        "bulwark_journal_bytes",
        "gauge",
        "Spool journal size",
        &plain(bytes),
    );
    out
}

fn queue_metrics(out: &mut String, gateway: &Gateway) {
    let entries = gateway.queue.list();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let oldest = entries
        .iter()
        .map(|e| e.arrival)
        .min()
        .map_or(0, |a| now.saturating_sub(a));
    let states = [("queued", QueueState::Queued), ("held", QueueState::Hold)];
    let by_state: Vec<_> = states
        .iter()
        .map(|(name, state)| {
            (
                label("state", name),
                entries.iter().filter(|e| e.state == *state).count() as f64,
            )
        })
        .collect();
    family(
        out,
        "bulwark_queue_messages",
        "gauge",
        "Messages in the queue by state",
        &by_state,
    );
    family(
        out,
        "bulwark_queue_bytes",
        "gauge",
        "Bytes in the queue",
        &plain(gateway.queue.total_size()),
    );
    family(
        out,
        "bulwark_queue_oldest_seconds",
        "gauge",
        "Age of the oldest queued message",
        &plain(oldest),
    );
}

async fn destination_metrics(out: &mut String, gateway: &Gateway) {
    let destinations = gateway.delivery.destinations().await;
    let queued: Vec<_> = destinations
        .iter()
        .map(|d| {
            (
                format!(
                    "{{destination=\"{}\",state=\"{}\"}}",
                    d.destination.replace('"', ""),
                    d.state
                ),
                d.queued as f64,
            )
        })
        .collect();
    family(
        out,
        "bulwark_destination_queued",
        "gauge",
        "Messages waiting per destination and its state",
        &queued,
    );
    let failures: Vec<_> = destinations
        .iter()
        .map(|d| {
            (
                label("destination", &d.destination),
                f64::from(d.consecutive_failures),
            )
        })
        .collect();
    family(
        out,
        "bulwark_destination_failures",
        "gauge",
        "Consecutive delivery failures per destination",
        &failures,
    );
}

fn flow_metrics(out: &mut String, gateway: &Gateway) {
    let status = gateway.flow.status();
    let counter = |name: &str| status["counters"][name].as_u64().unwrap_or(0) as f64;
    let drops = vec![
        (label("reason", "blocked"), counter("dropped_block")),
        (label("reason", "rate"), counter("dropped_rate")),
    ];
    family(
        out,
        "bulwark_flow_drops_total",
        "counter",
        "Connections dropped by flow control",
        &drops,
    );
    family(
        out,
        "bulwark_flow_blocked_sources",
        "gauge",
        "Sources blocked now",
        &plain(gateway.flow.blocked().len() as u64),
    );
}
