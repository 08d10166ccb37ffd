//! The TLS-RPT sender: at the end of each `[tls_policy.report] interval` (a day), one
//! RFC 8460 report per policy domain with counted sessions, to each `rua` of its
//! `_smtp._tls` TXT record: `mailto:` through our own queue (multipart/report,
//! `application/tlsrpt+gzip`), `https:` by POST.
//!
//! A report that cannot be sent is logged and dropped (RFC 8460 allows loss; counters of
//! the next period start empty). The counters are saved every minute meanwhile.

use std::sync::Arc;
use std::time::Duration;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use super::tlsrpt::{self, DomainCounters, Submitter};
use super::{https, TransportSecurity};
use crate::gateway::Gateway;
use crate::queue::unix_now;

/// Runs until the process ends.
pub fn spawn(security: Arc<TransportSecurity>, gateway: Arc<Gateway>) {
    let report = security.config().report.clone();
    if !report.enabled {
        return;
    }
    let tick = report
        .interval
        .min(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        loop {
            ticker.tick().await;
            let now = unix_now();
            let started = security.counters.started_at();
            if now.saturating_sub(started) >= report.interval.as_secs() {
                send_all(&security, &gateway, now).await;
            }
            if let Err(e) = security.counters.save() {
                log::warn!("tls-rpt: cannot save the counters: {e}");
            }
        }
    });
}

async fn send_all(security: &TransportSecurity, gateway: &Gateway, now: u64) {
    let (start, domains) = security.counters.take(now);
    let config = gateway.runtime().config.clone();
    let hostname = config.server.hostname.clone();
    let report_config = &security.config().report;
    let organization = report_config
        .organization
        .clone()
        .unwrap_or(hostname.clone());
    let contact = report_config
        .contact
        .clone()
        .unwrap_or_else(|| format!("postmaster@{hostname}"));
    let submitter = Submitter {
        organization: &organization,
        contact: &contact,
        hostname: &hostname,
    };
    for (domain, counters) in domains {
        let rua = match security.txt(&format!("_smtp._tls.{domain}")).await {
            Some(records) => tlsrpt::rua(&records),
            None => Vec::new(),
        };
        if rua.is_empty() {
            log::debug!(domain = domain.as_str(); "tls-rpt: no rua published; report dropped");
            continue;
        }
        for destination in rua {
            let sent = send_one(
                security,
                gateway,
                &submitter,
                &domain,
                &counters,
                start,
                now,
                &destination,
            )
            .await;
            match sent {
                Ok(()) => {
                    log::info!(domain = domain.as_str(), rua = destination.as_str(); "tls-rpt: report sent")
                }
                Err(e) => {
                    log::warn!(domain = domain.as_str(), rua = destination.as_str(); "tls-rpt: report not sent: {e}")
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_one(
    security: &TransportSecurity,
    gateway: &Gateway,
    submitter: &Submitter<'_>,
    domain: &str,
    counters: &DomainCounters,
    start: u64,
    end: u64,
    destination: &str,
) -> Result<(), String> {
    let json = tlsrpt::report_json(submitter, domain, counters, start, end);
    let compressed = tlsrpt::gzip(&json).map_err(|e| e.to_string())?;
    if let Some(address) = destination.strip_prefix("mailto:") {
        let message = report_mail(submitter, domain, address, &compressed, start, end);
        gateway
            .queue_report(address, submitter.hostname, &message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        post(security, destination, &compressed).await
    }
}

/// The RFC 8460 5.3 mail: human-readable part and the gzip'd JSON.
pub fn report_mail(
    submitter: &Submitter<'_>,
    domain: &str,
    to: &str,
    compressed: &[u8],
    start: u64,
    end: u64,
) -> Vec<u8> {
    let id = tlsrpt::report_id(submitter, domain, start);
    let human = MimePart::new(
        ContentType::new("text/plain").attribute("charset", "us-ascii"),
        BodyPart::Text(
            format!(
                "This is an aggregate TLS report from {} for {domain} ({} to {}).\r\n",
                submitter.organization,
                tlsrpt::rfc3339(start),
                tlsrpt::rfc3339(end)
            )
            .into(),
        ),
    );
    let report = MimePart::new(
        ContentType::new("application/tlsrpt+gzip"),
        BodyPart::Binary(compressed.to_vec().into()),
    )
    .attachment(tlsrpt::file_name(submitter, domain, start, end));
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
        BodyPart::Multipart(vec![human, report]),
    );
    let from = format!("tlsrpt-noreply@{}", submitter.hostname);
    MessageBuilder::new()
        .from(("TLS Report", from.as_str()))
        .to(to)
        .subject(format!(
            "Report Domain: {domain} Submitter: {} Report-ID: <{id}>",
            submitter.organization
        ))
        .header("TLS-Report-Domain", Raw::new(domain.to_string()))
        .header(
            "TLS-Report-Submitter",
            Raw::new(submitter.organization.to_string()),
        )
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .date(end as i64)
        .message_id(id.clone())
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

async fn post(security: &TransportSecurity, url: &str, body: &[u8]) -> Result<(), String> {
    let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| "bad port")?),
        None => (authority, 443),
    };
    let address = security
        .plain
        .lookup_ip(format!("{host}.").as_str())
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .next()
        .ok_or("no address")?;
    let request = https::Request {
        address: std::net::SocketAddr::new(address, port),
        host,
        path,
        post: Some(("application/tlsrpt+gzip", body)),
    };
    https::send(
        request,
        security.webpki()?,
        security.config().mta_sts_fetch_timeout,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}
