//! Edits of a node's configuration text made by the console before it sends the whole text
//! back with `config-put`: the `[[rule]]` blocks cut out for the rules editor and put back,
//! a sender added to `[antispam] allow`, and the line diff shown before applying.
//!
//! Invariant: these edits never decide validity; the node validates every text exactly as
//! `bulwarkd --check-config` would and refuses a bad one. An edit whose result does not parse
//! to what it meant (checked with the TOML parser) is refused here instead of being sent.

use std::fmt::Write as _;

use crate::pages::escape;

/// A configuration split for the rules editor: everything but the rules, and the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesSplit {
    pub rest: String,
    pub rules: String,
}

/// Whether a line opens a table, and whether that table is a rule (`[[rule]]`, `[rule.x]`).
fn header_kind(line: &str) -> Option<bool> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('[') {
        return None;
    }
    let name = trimmed.trim_start_matches('[').trim_start();
    let is_rule = name.strip_prefix("rule").is_some_and(|after| {
        after.trim_start().starts_with(']') || after.trim_start().starts_with('.')
    });
    Some(is_rule)
}

/// Cuts every `[[rule]]` block (header to the next non-rule header) out of `text`. Comments
/// right above a rule's header travel with the block before it, which is what a reader expects
/// of a file whose rules are kept together.
pub fn split_rules(text: &str) -> RulesSplit {
    let (mut rest, mut rules) = (String::new(), String::new());
    let mut in_rule = false;
    for line in text.split_inclusive('\n') {
        if let Some(is_rule) = header_kind(line) {
            in_rule = is_rule;
        }
        if in_rule {
            rules.push_str(line);
        } else {
            rest.push_str(line);
        }
    }
    RulesSplit { rest, rules }
}

/// The whole text again, the rules at its end; and the line (1-based) where the rules start.
pub fn join_rules(rest: &str, rules: &str) -> (String, usize) {
    let mut text = rest.trim_end().to_string();
    text.push_str("\n\n");
    let first_rule_line = text.lines().count() + 1;
    let rules = rules.replace("\r\n", "\n");
    text.push_str(rules.trim_end());
    text.push('\n');
    (text, first_rule_line)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowEditError {
    #[error("this node has no [antispam] section: there is no allow list to add to")]
    NoAntispam,
    #[error("{0:?} is already in [antispam] allow")]
    AlreadyAllowed(String),
    #[error("the sender is empty (a bounce): nothing to allow")]
    NoSender,
    #[error("[antispam] allow is not written as one array the console can extend; edit it on the configuration page")]
    Unrecognised,
}

fn allow_list(text: &str) -> Option<Vec<String>> {
    let table: toml::Table = text.parse().ok()?;
    let spam = table.get("antispam")?.as_table()?;
    Some(
        spam.get("allow")
            .and_then(|a| a.as_array())
            .map_or_else(Vec::new, |list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            }),
    )
}

/// `text` with `entry` added to `[antispam] allow` (the rest of the file, comments included,
/// unchanged).
pub fn add_allow(text: &str, entry: &str) -> Result<String, AllowEditError> {
    let entry = entry.trim();
    if entry.is_empty() || entry == "<>" {
        return Err(AllowEditError::NoSender);
    }
    let before = allow_list(text).ok_or(AllowEditError::NoAntispam)?;
    if before.iter().any(|e| e.eq_ignore_ascii_case(entry)) {
        return Err(AllowEditError::AlreadyAllowed(entry.to_string()));
    }
    let quoted = toml::Value::String(entry.to_string()).to_string();
    let edited = insert_allow(text, &quoted).ok_or(AllowEditError::Unrecognised)?;
    let mut expected = vec![entry.to_string()];
    expected.extend(before);
    if allow_list(&edited) != Some(expected) {
        return Err(AllowEditError::Unrecognised);
    }
    Ok(edited)
}

/// The byte range of the `[antispam]` section's lines (after its header line).
fn antispam_section(text: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if start.is_some() && trimmed.starts_with('[') {
            return start.map(|s| (s, offset));
        }
        if trimmed == "[antispam]"
            || trimmed.starts_with("[antispam]#")
            || trimmed.starts_with("[antispam] ")
        {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    start.map(|s| (s, text.len()))
}

fn insert_allow(text: &str, quoted: &str) -> Option<String> {
    let (start, end) = antispam_section(text)?;
    let section = &text[start..end];
    let mut offset = start;
    for line in section.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_allow = trimmed
            .strip_prefix("allow")
            .is_some_and(|after| after.trim_start().starts_with('='));
        if is_allow {
            // First in the array: right after `[` a trailing comma is always valid TOML,
            // whatever (values, comments, nothing) follows.
            let open = offset + line.find('[')?;
            closing_bracket(text, open)?;
            return Some(format!("{}{quoted}, {}", &text[..=open], &text[open + 1..]));
        }
        offset += line.len();
    }
    Some(format!(
        "{}allow = [{quoted}]\n{}",
        &text[..start],
        &text[start..]
    ))
}

/// The `]` closing the array opened at `open`, skipping strings and comments.
fn closing_bracket(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut escaped = false;
    for (i, c) in text[open..].char_indices() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => comment = true,
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
        escaped = false;
    }
    None
}

/// Lines only in `old` (-) and only in `new` (+), in file order: enough to review an edit.
pub fn line_diff(old: &str, new: &str) -> String {
    let mut out = String::new();
    for line in old.lines().filter(|l| !new.lines().any(|n| n == *l)) {
        let _ = writeln!(out, "<span class=\"del\">- {}</span>", escape(line));
    }
    for line in new.lines().filter(|l| !old.lines().any(|o| o == *l)) {
        let _ = writeln!(out, "<span class=\"add\">+ {}</span>", escape(line));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const FILE: &str = "[server]\nhostname = \"mx\"\n\n# the invoice rule\n[[rule]]\nname = \"a\"\naction = \"quarantine\"\n\n[antispam]\nallow = [\n  \"10.0.0.0/8\", # office\n]\n[[rule]]\nname = \"b\"\naction = \"accept\"\n";

    #[test]
    fn rules_are_cut_out_and_put_back_at_the_end() {
        let split = split_rules(FILE);
        assert!(split.rules.starts_with("[[rule]]\nname = \"a\""));
        assert!(split.rules.contains("name = \"b\""));
        assert!(!split.rest.contains("[[rule]]"));
        assert!(split.rest.contains("[antispam]"));
        let (text, first) = join_rules(&split.rest, &split.rules);
        assert_eq!(text.lines().nth(first - 1), Some("[[rule]]"));
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["rule"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_sender_joins_the_allow_list_and_comments_stay() {
        let edited = add_allow(FILE, "friend@example.org").unwrap();
        assert!(edited.contains("# office"));
        assert_eq!(
            allow_list(&edited).unwrap(),
            vec!["friend@example.org", "10.0.0.0/8"]
        );
        assert_eq!(
            add_allow(&edited, "friend@example.org"),
            Err(AllowEditError::AlreadyAllowed("friend@example.org".into()))
        );
        let bare = add_allow("[antispam]\nenabled = true\n", "x@example.org").unwrap();
        assert_eq!(allow_list(&bare).unwrap(), vec!["x@example.org"]);
        assert_eq!(
            add_allow("[server]\n", "x@example.org"),
            Err(AllowEditError::NoAntispam)
        );
    }
}
