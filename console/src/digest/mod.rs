//! Quarantine digests: one mail to each recipient with quarantined mail (in
//! `[console.digest] domains`, or all), listing each held message with a signed release
//! link (`link`) valid for `link_lifetime`. Opening the link shows the message's sender and
//! subject with one button; the button's POST releases the message to that recipient only.
//! A GET never releases: mail scanners and previews open links, people press buttons.

pub mod link;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bulwark::admin::protocol::Request as NodeRequest;
use bulwark::config::DigestConfig;
use serde_json::Value;

use crate::app::{unix_now, State};
use crate::outbox::{self, Outgoing};
use crate::pages::escape;
use link::Grant;

/// One held message as a recipient's digest lists it.
#[derive(Debug, Clone)]
pub struct Held {
    pub node: String,
    pub id: String,
    pub sender: String,
    pub subject: String,
    pub reason: String,
}

/// What one digest run did, for the API and the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    pub recipient: String,
    pub messages: usize,
    /// The mail's queue id, or why it was not queued.
    pub outcome: Result<String, String>,
}

fn wanted(config: &DigestConfig, recipient: &str) -> bool {
    let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
    config.domains.is_empty()
        || config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
}

/// Every still-held message per recipient, over every node that answered.
async fn held_by_recipient(state: &State, config: &DigestConfig) -> BTreeMap<String, Vec<Held>> {
    let request = NodeRequest::QuarantineList {
        filter: Default::default(),
    };
    let mut by_recipient: BTreeMap<String, Vec<Held>> = BTreeMap::new();
    for answer in state.nodes.fan_out(&request, None).await {
        for entry in answer
            .result
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if entry["state"].as_str() != Some("quarantined") {
                continue;
            }
            let held = Held {
                node: answer.node.clone(),
                id: entry["id"].as_str().unwrap_or("").to_string(),
                sender: entry["sender"].as_str().unwrap_or("").to_string(),
                subject: entry["subject"].as_str().unwrap_or("").to_string(),
                reason: entry["reason"].as_str().unwrap_or("").to_string(),
            };
            for recipient in crate::api::recipients_of(entry) {
                let recipient = recipient.to_ascii_lowercase();
                if wanted(config, &recipient) {
                    by_recipient
                        .entry(recipient)
                        .or_default()
                        .push(held.clone());
                }
            }
        }
    }
    by_recipient
}

/// Mails each recipient its digest now.
pub async fn send_all(state: &State) -> Vec<Sent> {
    let Some(config) = state.config.digest.clone() else {
        return Vec::new();
    };
    let Some(links) = &state.links else {
        return Vec::new();
    };
    let base = state.config.public_url.clone().unwrap_or_default();
    let expires = unix_now() + config.link_lifetime.as_secs();
    let mut sent = Vec::new();
    for (recipient, held) in held_by_recipient(state, &config).await {
        let link = |h: &Held| {
            let grant = Grant {
                node: h.node.clone(),
                id: h.id.clone(),
                recipient: recipient.clone(),
                expires,
            };
            format!(
                "{}/digest/release?t={}",
                base.trim_end_matches('/'),
                links.sign(&grant)
            )
        };
        let (text, html) = render(&held, &link, &config);
        let subject = format!(
            "[Bulwark] {} quarantined message(s) for {recipient}",
            held.len()
        );
        let to = [recipient.clone()];
        let outcome = outbox::send(
            state,
            Outgoing {
                to: &to,
                subject: &subject,
                text: &text,
                html: Some(&html),
                attachment: None,
            },
        )
        .await
        .map_err(|e| e.to_string());
        log::info!(recipient = recipient.as_str(), messages = held.len(), ok = outcome.is_ok(); "quarantine digest");
        sent.push(Sent {
            recipient,
            messages: held.len(),
            outcome,
        });
    }
    sent
}

fn render(
    held: &[Held],
    link: &dyn Fn(&Held) -> String,
    config: &DigestConfig,
) -> (String, String) {
    let hours = config.link_lifetime.as_secs() / 3600;
    let mut text = format!("These messages to you are held in quarantine. Open a link to release one to you (links work once, for {hours} h).\n\n");
    let mut html = format!("<p>These messages to you are held in quarantine. Press a link to release one to you (links work once, for {hours} h).</p><table>");
    for h in held {
        let url = link(h);
        let _ = write!(
            text,
            "From: {}\nSubject: {}\nWhy: {}\nRelease: {url}\n\n",
            h.sender, h.subject, h.reason
        );
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">Release</a></td></tr>",
            escape(&h.sender),
            escape(&h.subject),
            escape(&h.reason),
            escape(&url)
        );
    }
    html.push_str("</table>");
    (text, html)
}
