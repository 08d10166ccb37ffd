//! The content pipeline's configuration: `[pipeline]` (budgets, parse limit) and the rule table
//! `[[rule]]` (who + what + when → action, in priority order; see `rules/`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, size};

/// Which way a message travels through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the Internet to the organisation.
    Inbound,
    /// From a trusted network or an authenticated client (the groupware servers) out.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which messages a rule or filter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DirectionScope {
    Inbound,
    Outbound,
    #[default]
    Any,
}

impl DirectionScope {
    pub fn covers(self, direction: Direction) -> bool {
        match self {
            DirectionScope::Any => true,
            DirectionScope::Inbound => direction == Direction::Inbound,
            DirectionScope::Outbound => direction == Direction::Outbound,
        }
    }
}

/// What a filter's failure (error or timeout) means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// 451 4.7.1: the client keeps the message and retries; nothing is lost.
    #[default]
    Tempfail,
    /// Go on without this filter's verdict; the message is marked unscanned.
    Accept,
    /// 550 5.7.1 (milters' `default_action = "reject"`).
    Reject,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PipelineConfig {
    /// The whole chain's time at end of data; stays below the client's DATA patience
    /// (RFC 5321 4.5.3.2.6: 10 minutes).
    #[serde(default = "default_time_budget", with = "duration")]
    pub time_budget: Duration,
    /// A stage's budget when its own section sets none.
    #[serde(default = "default_stage_timeout", with = "duration")]
    pub stage_timeout: Duration,
    /// Messages up to this size are parsed whole for body rules and filters; the header of a
    /// larger one is still parsed, its body conditions see only the first `max_parse_size`.
    #[serde(
        default = "default_max_parse_size",
        deserialize_with = "size::deserialize",
        serialize_with = "size::serialize"
    )]
    pub max_parse_size: u64,
}

fn default_time_budget() -> Duration {
    Duration::from_secs(300)
}
fn default_stage_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_parse_size() -> u64 {
    25 << 20
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            time_budget: default_time_budget(),
            stage_timeout: default_stage_timeout(),
            max_parse_size: default_max_parse_size(),
        }
    }
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    // Final: the first one that matches decides.
    Accept,
    Reject,
    Tempfail,
    Discard,
    Quarantine,
    // Not final: applied, and evaluation goes on.
    Tag,
    AddHeader,
    Copy,
    Redirect,
    /// Removes the attachments the rule's attachment conditions match (the original is kept
    /// in quarantine).
    Strip,
    /// Adds `disclaimer_text` / `disclaimer_html`.
    Disclaimer,
}

impl RuleAction {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RuleAction::Accept
                | RuleAction::Reject
                | RuleAction::Tempfail
                | RuleAction::Discard
                | RuleAction::Quarantine
        )
    }
}

/// `[[rule]]`: conditions (all must hold) and an action.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RuleConfig {
    pub name: String,
    /// Higher runs first; equal priorities keep file order.
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub direction: DirectionScope,
    /// Sender address globs (`*@partner.example`) or domains (`partner.example`,
    /// `.partner.example` for subdomains too).
    #[serde(default)]
    pub from: Vec<String>,
    /// Recipient address globs or domains, matched per recipient (the message is split when
    /// recipients differ).
    #[serde(default)]
    pub to: Vec<String>,
    /// Regex on the decoded Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// `"Name: regex"` on the decoded value of any field of that name.
    #[serde(default)]
    pub header: Vec<String>,
    /// Regex on the decoded text parts (text/plain, and text/html as text).
    #[serde(default)]
    pub body: Option<String>,
    #[serde(
        default,
        deserialize_with = "size::option::deserialize",
        serialize_with = "size::option::serialize"
    )]
    pub size_over: Option<u64>,
    /// `true`: an earlier stage (anti-virus) found malware; `false`: none was found.
    #[serde(default)]
    pub virus: Option<bool>,
    /// The anti-spam score is above this (an unscored message never matches).
    #[serde(default)]
    pub spam_score_over: Option<f64>,
    /// Attachment name globs (case-insensitive, on the decoded name, tricks undone).
    #[serde(default)]
    pub attachment_names: Vec<String>,
    /// MIME type globs, matched on the declared and on the detected (magic bytes) type.
    #[serde(default)]
    pub attachment_types: Vec<String>,
    #[serde(
        default,
        deserialize_with = "size::option::deserialize",
        serialize_with = "size::option::serialize"
    )]
    pub attachment_size_over: Option<u64>,
    /// An attachment is a password-protected zip.
    #[serde(default)]
    pub encrypted_archive: bool,
    pub action: RuleAction,
    #[serde(default)]
    pub reason: Option<String>,
    /// For `add_header`: `"Name: value"`.
    #[serde(default)]
    pub add_header: Option<String>,
    /// For `copy`.
    #[serde(default)]
    pub copy_to: Vec<String>,
    /// For `copy`: also (or instead) written to this local archive directory.
    #[serde(default)]
    pub archive_dir: Option<std::path::PathBuf>,
    /// For `redirect`.
    #[serde(default)]
    pub redirect_to: Vec<String>,
    /// For `disclaimer`: the text (inline, or an absolute path to a file).
    #[serde(default)]
    pub disclaimer_text: Option<String>,
    /// For `disclaimer`: the HTML fragment (inline, or an absolute path to a file).
    #[serde(default)]
    pub disclaimer_html: Option<String>,
    /// For `tag`: the subject prefix.
    #[serde(default)]
    pub tag: Option<String>,
}

/// A problem in one rule: the field, the list index within it, and what is wrong.
pub type RuleProblem = (&'static str, Option<usize>, String);

impl RuleConfig {
    /// Every problem the rule has (regexes and globs are compiled to find them); the rule
    /// table (`rules/`) compiles them for use.
    pub fn problems(&self) -> Vec<RuleProblem> {
        let regex = |field: &'static str, index: Option<usize>, pattern: &str| {
            regex::Regex::new(pattern).err().map(|e| {
                (
                    field,
                    index,
                    format!("invalid regex: {}", one_line(&e.to_string())),
                )
            })
        };
        let mut found: Vec<RuleProblem> = Vec::new();
        found.extend(
            self.subject
                .as_deref()
                .and_then(|p| regex("subject", None, p)),
        );
        found.extend(self.body.as_deref().and_then(|p| regex("body", None, p)));
        for (i, spec) in self.header.iter().enumerate() {
            match spec.split_once(':') {
                Some((name, pattern)) if valid_field_name(name.trim()) => {
                    found.extend(regex("header", Some(i), pattern.trim_start()))
                }
                _ => found.push(("header", Some(i), "expected \"Name: regex\"".into())),
            }
        }
        for (field, list) in [
            ("attachment_names", &self.attachment_names),
            ("attachment_types", &self.attachment_types),
        ] {
            for (i, pattern) in list.iter().enumerate() {
                if let Err(e) = globset::Glob::new(pattern) {
                    found.push((field, Some(i), format!("invalid pattern: {e}")));
                }
            }
        }
        for (field, list) in [("from", &self.from), ("to", &self.to)] {
            for (i, pattern) in list.iter().enumerate() {
                if let Some(message) = address_pattern_problem(pattern) {
                    found.push((field, Some(i), message));
                }
            }
        }
        found.extend(self.action_problems());
        found
    }

    fn action_problems(&self) -> Vec<RuleProblem> {
        // Reported at `action`: the parameter is missing, so it has no position of its own.
        let needs = |field: &'static str| {
            let action = format!("{:?}", self.action).to_lowercase();
            (
                "action",
                None,
                format!("action = \"{action}\" needs {field}"),
            )
        };
        let mut found = Vec::new();
        match self.action {
            RuleAction::Tag if self.tag.as_deref().is_none_or(str::is_empty) => {
                found.push(needs("tag"))
            }
            RuleAction::AddHeader => {
                match self.add_header.as_deref().and_then(|s| s.split_once(':')) {
                    Some((name, _)) if valid_field_name(name.trim()) => {}
                    _ => found.push(("add_header", None, "expected \"Name: value\"".into())),
                }
            }
            RuleAction::Copy if self.copy_to.is_empty() && self.archive_dir.is_none() => {
                found.push(needs("copy_to or archive_dir"))
            }
            RuleAction::Strip if !self.has_attachment_conditions() => {
                found.push(needs("an attachment condition"))
            }
            RuleAction::Disclaimer
                if self.disclaimer_text.is_none() && self.disclaimer_html.is_none() =>
            {
                found.push(needs("disclaimer_text or disclaimer_html"))
            }
            RuleAction::Redirect if self.redirect_to.is_empty() => found.push(needs("redirect_to")),
            _ => {}
        }
        for (field, value) in [
            ("disclaimer_text", &self.disclaimer_text),
            ("disclaimer_html", &self.disclaimer_html),
        ] {
            if let Err(e) = value.as_deref().map(disclaimer_source).transpose() {
                found.push((field, None, e));
            }
        }
        for (field, list) in [
            ("copy_to", &self.copy_to),
            ("redirect_to", &self.redirect_to),
        ] {
            for (i, address) in list.iter().enumerate() {
                if !plausible_address(address) {
                    found.push((
                        field,
                        Some(i),
                        format!("{address:?} is not an email address"),
                    ));
                }
            }
        }
        found
    }
}

impl RuleConfig {
    pub fn has_attachment_conditions(&self) -> bool {
        !self.attachment_names.is_empty()
            || !self.attachment_types.is_empty()
            || self.attachment_size_over.is_some()
            || self.encrypted_archive
    }
}

/// A disclaimer given inline, or as an absolute path to a file holding it.
pub fn disclaimer_source(value: &str) -> Result<String, String> {
    if !value.starts_with('/') || value.contains('\n') {
        return Ok(value.to_string());
    }
    std::fs::read_to_string(value).map_err(|e| format!("cannot read {value}: {e}"))
}

/// regex's errors span lines (pattern, caret, message): one line for `FILE:LINE:COL: ...`.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.last().map_or(String::new(), |l| {
        format!(
            "{} in {:?}",
            l.trim_start_matches("error: "),
            lines.first().unwrap_or(&"")
        )
    })
}

fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// `local@domain` without white space or brackets.
pub fn plausible_address(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !address.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
}

fn address_pattern_problem(pattern: &str) -> Option<String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Some("empty pattern".into());
    }
    if pattern.contains(['*', '?', '[', '{']) || pattern.contains('@') {
        return globset::Glob::new(pattern)
            .err()
            .map(|e| format!("invalid pattern: {e}"));
    }
    None
}
