//! A report as HTML (a page section, and a whole document for mail) and as plain text; every
//! value escaped. Element ids (`report-received`, ...) let tests and scripts read numbers.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use bulwark::track::{Count, Summary};

use super::Report;
use crate::pages::escape;

/// `2026-12-02 07:00 UTC`.
pub fn utc(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    // `2026-12-02T07:00:00Z`: ASCII, fixed positions.
    let text = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// The volume rows: (label, id, value).
pub fn volumes(s: &Summary) -> [(&'static str, &'static str, u64); 9] {
    [
        ("Messages received", "received", s.received),
        ("Recipients delivered", "delivered", s.delivered),
        ("Deliveries deferred", "deferred", s.deferred),
        ("Recipients bounced", "bounced", s.bounced),
        ("Messages rejected", "rejected", s.rejected),
        ("Messages quarantined", "quarantined", s.quarantined),
        ("Messages discarded", "discarded", s.discarded),
        ("Spam caught", "spam", s.spam),
        ("Viruses caught", "viruses", s.viruses),
    ]
}

/// The "top" lists: (title, id, list).
pub fn tops(s: &Summary) -> [(&'static str, &'static str, &[Count]); 4] {
    [
        ("Top senders", "senders", &s.top_senders),
        ("Top recipients", "recipients", &s.top_recipients),
        ("Top destinations", "destinations", &s.top_destinations),
        ("Rejections by reason", "rejections", &s.rejections),
    ]
}

/// The report as a section of a page.
pub fn section(report: &Report) -> String {
    let mut out = format!(
        "<p id=\"report-period\">{} from {} to {}</p>",
        report.period.title(),
        utc(report.from_ms),
        utc(report.to_ms)
    );
    for (node, why) in &report.missing {
        let _ = write!(
            out,
            "<p class=\"down\">node {} did not answer: {}</p>",
            escape(node),
            escape(why)
        );
    }
    out.push_str("<table id=\"report-volumes\"><tr><th></th><th>total</th>");
    for (node, _) in &report.nodes {
        let _ = write!(out, "<th>{}</th>", escape(node));
    }
    out.push_str("</tr>");
    for (i, (label, id, value)) in volumes(&report.total).into_iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td>{label}</td><td id=\"report-{id}\">{value}</td>"
        );
        for (_, summary) in &report.nodes {
            let _ = write!(out, "<td>{}</td>", volumes(summary)[i].2);
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    for (title, id, list) in tops(&report.total) {
        let _ = write!(out, "<h2>{title}</h2><table id=\"report-{id}\">");
        if list.is_empty() {
            out.push_str("<tr><td>none</td></tr>");
        }
        for count in list {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(&count.key),
                count.count
            );
        }
        out.push_str("</table>");
    }
    out
}

/// A whole HTML document, for mail (styles inline: mail readers drop style sheets).
pub fn document(report: &Report) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body style=\"font-family:sans-serif\"><h1>{}</h1>{}</body></html>",
        report.period.title(),
        report.period.title(),
        section(report)
    )
}

/// The same numbers as plain text (the mail's text part).
pub fn text(report: &Report) -> String {
    let mut out = format!(
        "{} from {} to {}\n\n",
        report.period.title(),
        utc(report.from_ms),
        utc(report.to_ms)
    );
    for (node, why) in &report.missing {
        let _ = writeln!(out, "node {node} did not answer: {why}");
    }
    for (label, _, value) in volumes(&report.total) {
        let _ = writeln!(out, "{label:<24} {value}");
    }
    for (title, _, list) in tops(&report.total) {
        let _ = writeln!(out, "\n{title}");
        for count in list {
            let _ = writeln!(out, "  {:<40} {}", count.key, count.count);
        }
    }
    out
}
