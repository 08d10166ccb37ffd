//! A rule's conditions, compiled once at load: who (sender, recipients), what (subject, header
//! fields, body text), when (size). All of a rule's conditions must hold.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

use crate::config::{domain_listed, RuleConfig};
use crate::filters::mime::archive::Member;
use crate::filters::mime::names;
use crate::filters::mime::{Attachment, Inventory};

/// A sender or recipient pattern: an address glob (`*@partner.example`) or a domain
/// (`partner.example`; `.partner.example` also for subdomains; `*.partner.example` a glob).
#[derive(Debug, Clone)]
pub enum AddressPattern {
    /// `*@domain` (the commonest pattern): a suffix compare instead of a glob.
    AnyAtDomain(String),
    Address(GlobMatcher),
    Domain(String),
    DomainGlob(GlobMatcher),
}

/// Why a rule did not compile (reported by `--check-config` at the key's position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// The field with the problem (`subject`, `header[1]`, ...).
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError {
        field: field.into(),
        message: message.into(),
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.to_string())
}

impl AddressPattern {
    pub fn parse(pattern: &str) -> Result<AddressPattern, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        if let Some(domain) = pattern.strip_prefix("*@") {
            if !domain.is_empty() && !domain.contains(['*', '?', '[', '{', '\\', '@']) {
                return Ok(AddressPattern::AnyAtDomain(domain.to_ascii_lowercase()));
            }
        }
        if pattern.contains('@') {
            return glob(pattern).map(AddressPattern::Address);
        }
        if pattern.contains(['*', '?', '[']) {
            return glob(pattern).map(AddressPattern::DomainGlob);
        }
        Ok(AddressPattern::Domain(pattern.to_ascii_lowercase()))
    }

    pub fn matches(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        match self {
            AddressPattern::AnyAtDomain(wanted) => {
                address.contains('@') && domain.eq_ignore_ascii_case(wanted)
            }
            AddressPattern::Address(glob) => glob.is_match(address),
            // domain_listed compares ignoring ASCII case: no lowercased copy per message.
            AddressPattern::Domain(domain_pattern) => {
                domain_listed(std::slice::from_ref(domain_pattern), domain)
            }
            AddressPattern::DomainGlob(glob) => glob.is_match(domain),
        }
    }
}

fn regex(field: &str, pattern: &str) -> Result<Regex, CompileError> {
    Regex::new(pattern).map_err(|e| error(field, format!("invalid regex: {e}")))
}

/// The compiled conditions of one rule.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub from: Vec<AddressPattern>,
    pub to: Vec<AddressPattern>,
    pub subject: Option<Regex>,
    pub header: Vec<(String, Regex)>,
    pub body: Option<Regex>,
    pub size_over: Option<u64>,
    /// Whether an earlier stage must (true) or must not (false) have found a virus.
    pub virus: Option<bool>,
    pub spam_score_over: Option<f64>,
    pub attachments: Option<AttachmentConditions>,
}

/// What an attachment must be for the rule to hold (all that are set), tried on the
/// attachment itself and on every member of its archive.
#[derive(Debug, Clone, Default)]
pub struct AttachmentConditions {
    pub names: Vec<GlobMatcher>,
    pub types: Vec<GlobMatcher>,
    pub size_over: Option<u64>,
    /// The attachment must be an archive with an encrypted member.
    pub encrypted_archive: bool,
}

/// An attachment that matched, and what in it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentMatch {
    pub part: usize,
    pub name: Option<String>,
    /// `x.exe`, `archive.zip/inner/x.exe`, `encrypted archive`.
    pub what: String,
}

impl AttachmentConditions {
    fn compile(rule: &RuleConfig) -> Result<Option<AttachmentConditions>, CompileError> {
        if !rule.has_attachment_conditions() {
            return Ok(None);
        }
        let globs = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, p)| glob(p).map_err(|e| error(format!("{field}[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Some(AttachmentConditions {
            names: globs("attachment_names", &rule.attachment_names)?,
            types: globs("attachment_types", &rule.attachment_types)?,
            size_over: rule.attachment_size_over,
            encrypted_archive: rule.encrypted_archive,
        }))
    }

    fn object_matches(&self, name: Option<&str>, types: &[&str], size: u64) -> bool {
        let name_ok = self.names.is_empty()
            || name.is_some_and(|n| {
                names::candidates(n)
                    .iter()
                    .any(|c| self.names.iter().any(|g| g.is_match(c)))
            });
        let type_ok = self.types.is_empty()
            || types
                .iter()
                .any(|t| self.types.iter().any(|g| g.is_match(t)));
        let size_ok = self.size_over.is_none_or(|limit| size > limit);
        name_ok && type_ok && size_ok
    }

    fn has_object_conditions(&self) -> bool {
        !self.names.is_empty() || !self.types.is_empty() || self.size_over.is_some()
    }

    /// What in `attachment` matches, if anything. An archive the bounded walk could not
    /// finish may hold what the rule looks for: unknown counts as a match, not as clean.
    fn matching_object(&self, attachment: &Attachment) -> Option<String> {
        let found = self.matching_seen(attachment);
        if found.is_none() && attachment.archive.limit_hit {
            let name = attachment.name.as_deref().unwrap_or("archive");
            return Some(format!("{name} could not be fully inspected"));
        }
        found
    }

    fn matching_seen(&self, attachment: &Attachment) -> Option<String> {
        if self.encrypted_archive && !attachment.archive.encrypted() {
            return None;
        }
        let own_name = attachment.name.as_deref();
        if !self.has_object_conditions() {
            return Some(format!(
                "{} is an encrypted archive",
                own_name.unwrap_or("attachment")
            ));
        }
        let mut types = vec![attachment.declared_type.as_str()];
        types.extend(attachment.detected_type);
        if self.object_matches(own_name, &types, attachment.size) {
            return Some(own_name.unwrap_or("attachment").to_string());
        }
        let member =
            |m: &&Member| self.object_matches(Some(&m.name), m.detected_type.as_slice(), m.size);
        attachment
            .archive
            .members
            .iter()
            .find(member)
            .map(|m| format!("{}/{}", own_name.unwrap_or("archive"), m.path))
    }

    /// The attachments that match, in part order.
    pub fn matches(&self, inventory: &Inventory) -> Vec<AttachmentMatch> {
        inventory
            .attachments
            .iter()
            .filter_map(|a| {
                self.matching_object(a).map(|what| AttachmentMatch {
                    part: a.part,
                    name: a.name.clone(),
                    what,
                })
            })
            .collect()
    }
}

impl Conditions {
    pub fn compile(rule: &RuleConfig) -> Result<Conditions, CompileError> {
        let patterns = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    AddressPattern::parse(p).map_err(|e| error(format!("{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let header = rule
            .header
            .iter()
            .enumerate()
            .map(|(i, spec)| header_condition(&format!("header[{i}]"), spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conditions {
            from: patterns("from", &rule.from)?,
            to: patterns("to", &rule.to)?,
            subject: rule
                .subject
                .as_deref()
                .map(|p| regex("subject", p))
                .transpose()?,
            header,
            body: rule.body.as_deref().map(|p| regex("body", p)).transpose()?,
            size_over: rule.size_over,
            virus: rule.virus,
            spam_score_over: rule.spam_score_over,
            attachments: AttachmentConditions::compile(rule)?,
        })
    }

    /// Conditions that need the decoded body (a MIME parse).
    pub fn needs_body(&self) -> bool {
        self.body.is_some() || self.attachments.is_some()
    }

    pub fn sender_matches(&self, sender: &str) -> bool {
        self.from.is_empty() || self.from.iter().any(|p| p.matches(sender))
    }

    pub fn recipient_matches(&self, recipient: &str) -> bool {
        self.to.is_empty() || self.to.iter().any(|p| p.matches(recipient))
    }
}

fn header_condition(field: &str, spec: &str) -> Result<(String, Regex), CompileError> {
    let (name, pattern) = spec
        .split_once(':')
        .ok_or_else(|| error(field, "expected \"Name: regex\""))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error(field, format!("invalid header field name {name:?}")));
    }
    Ok((name.to_string(), regex(field, pattern.trim_start())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_patterns() {
        let p = AddressPattern::parse("*@Partner.example").expect("glob");
        assert!(matches!(p, AddressPattern::AnyAtDomain(_)));
        assert!(p.matches("bob@partner.example"));
        assert!(p.matches("BOB@PARTNER.example"));
        assert!(
            p.matches("@partner.example"),
            "as the glob: * matches an empty local part"
        );
        assert!(!p.matches("bob@partner.example.org"));
        assert!(!p.matches("bob@xpartner.example"));
        assert!(!p.matches("partner.example"));
        let g = AddressPattern::parse("b*@partner.example").expect("glob");
        assert!(matches!(g, AddressPattern::Address(_)));
        assert!(g.matches("bob@partner.example") && !g.matches("al@partner.example"));
        let d = AddressPattern::parse("example.com").expect("domain");
        assert!(d.matches("a@EXAMPLE.com"));
        assert!(!d.matches("a@sub.example.com"));
        let s = AddressPattern::parse(".example.com").expect("subdomains");
        assert!(s.matches("a@sub.example.com"));
        let g = AddressPattern::parse("*.example.com").expect("domain glob");
        assert!(g.matches("a@x.example.com"));
        assert!(!g.matches("a@example.org"));
    }

    #[test]
    fn bad_header_spec_names_the_field() {
        let e = header_condition("header[0]", "no colon").expect_err("invalid");
        assert_eq!(e.field, "header[0]");
        let e = header_condition("header[1]", "X-A: (").expect_err("invalid regex");
        assert!(e.message.contains("invalid regex"));
    }
}
