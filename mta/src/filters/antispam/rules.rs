//! The spam rules file: header, body and URI patterns with weights.
//!
//! # Format
//! One rule a line; `#` starts a comment; blank lines are ignored.
//! ```text
//! header SYMBOL Field-Name /regex/flags WEIGHT   # each field of that name (decoded value)
//! body   SYMBOL /regex/flags WEIGHT              # decoded text and HTML-as-text, subject too
//! uri    SYMBOL /regex/flags WEIGHT              # each link host
//! ```
//! `flags` may be `i` (ignore case) and `s` (`.` matches a line end). `SYMBOL` is upper case letters, digits and `_`; it is
//! what `X-Spam-Status` lists. A rule counts once per message however often it matches.
//!
//! # Contract
//! - The whole file compiles at load or is refused with the line number of the first bad
//!   rule: the daemon never runs half a rule set.
//! - GTUBE is not a rule: it is checked in code (`GTUBE` symbol, weight 1000), so no rules
//!   file can make it pass.

use std::path::Path;

use regex::{Regex, RegexBuilder};

/// The rules built into the binary (used when `rules` is unset).
pub const DEFAULT_RULES: &str = include_str!("default.rules");

/// The Generic Test for Unsolicited Bulk Email.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
pub const GTUBE_WEIGHT: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

#[derive(Debug, Clone)]
pub enum Target {
    Header(String),
    Body,
    Uri,
}

#[derive(Debug, Clone)]
pub struct SpamRule {
    pub symbol: String,
    pub target: Target,
    pub pattern: Regex,
    pub weight: f64,
}

/// A compiled rules file.
#[derive(Debug, Clone, Default)]
pub struct SpamRules {
    pub rules: Vec<SpamRule>,
}

/// What a message shows the rules.
pub struct RuleInput<'a> {
    /// (name, decoded value) of every header field.
    pub headers: &'a [(String, String)],
    pub text: &'a str,
    pub url_hosts: &'a [String],
}

impl SpamRules {
    pub fn builtin() -> Result<SpamRules, RulesError> {
        SpamRules::parse(DEFAULT_RULES)
    }

    pub fn load(path: &Path) -> Result<SpamRules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RulesError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        SpamRules::parse(&text)
    }

    pub fn parse(text: &str) -> Result<SpamRules, RulesError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let rule = parse_line(line).map_err(|message| RulesError::Line {
                line: i + 1,
                message,
            })?;
            rules.push(rule);
        }
        Ok(SpamRules { rules })
    }

    /// The symbols that match, with their weights (GTUBE first when present).
    pub fn matches(&self, input: &RuleInput<'_>) -> Vec<(String, f64)> {
        let mut hits = Vec::new();
        if input.text.contains(GTUBE) {
            hits.push(("GTUBE".to_string(), GTUBE_WEIGHT));
        }
        for rule in &self.rules {
            let hit = match &rule.target {
                Target::Header(name) => input
                    .headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && rule.pattern.is_match(v)),
                Target::Body => rule.pattern.is_match(input.text),
                Target::Uri => input.url_hosts.iter().any(|h| rule.pattern.is_match(h)),
            };
            if hit {
                hits.push((rule.symbol.clone(), rule.weight));
            }
        }
        hits
    }
}

/// A `#` outside a /regex/ starts a comment.
fn strip_comment(line: &str) -> &str {
    let mut in_regex = false;
    for (i, c) in line.char_indices() {
        match c {
            '/' => in_regex = !in_regex,
            '#' if !in_regex => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_line(line: &str) -> Result<SpamRule, String> {
    let mut words = line.splitn(3, char::is_whitespace);
    let kind = words.next().unwrap_or("");
    let symbol = words.next().unwrap_or("").to_string();
    let rest = words.next().unwrap_or("").trim();
    let symbol_ok = !symbol.is_empty()
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !symbol_ok {
        return Err(format!("{symbol:?} is not a symbol (A-Z, 0-9, _)"));
    }
    let (target, rest) = match kind {
        "header" => {
            let (name, rest) = rest
                .split_once(char::is_whitespace)
                .ok_or("header needs a field name and a /regex/")?;
            (
                Target::Header(name.trim_end_matches(':').to_string()),
                rest.trim(),
            )
        }
        "body" => (Target::Body, rest),
        "uri" => (Target::Uri, rest),
        other => return Err(format!("unknown rule type {other:?} (header, body, uri)")),
    };
    let (pattern, weight) = pattern_and_weight(rest)?;
    Ok(SpamRule {
        symbol,
        target,
        pattern,
        weight,
    })
}

fn pattern_and_weight(rest: &str) -> Result<(Regex, f64), String> {
    let open = rest.strip_prefix('/').ok_or("expected /regex/")?;
    let close = open.rfind('/').ok_or("the /regex/ is not closed")?;
    let (source, tail) = (&open[..close], &open[close + 1..]);
    let (flags, weight) = tail
        .split_once(char::is_whitespace)
        .ok_or("expected a weight")?;
    let weight: f64 = weight
        .trim()
        .parse()
        .map_err(|_| format!("weight {:?} is not a number", weight.trim()))?;
    let mut builder = RegexBuilder::new(source);
    for flag in flags.chars() {
        match flag {
            'i' => builder.case_insensitive(true),
            's' => builder.dot_matches_new_line(true),
            other => return Err(format!("unknown regex flag {other:?}")),
        };
    }
    let pattern = builder
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))?;
    Ok((pattern, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_compile() {
        let rules = SpamRules::builtin().expect("shipped rules compile");
        assert!(rules.rules.len() >= 10);
    }

    #[test]
    fn parse_and_match() {
        let rules = SpamRules::parse(
            "# comment\nheader SUBJ_WIN Subject /you (have )?won/i 2.5\n\
             body PHARMA /v[i1]agra/i 3 # trailing comment\nuri BAD_HOST /\\.invalid$/ 4.0\n",
        )
        .expect("valid");
        let headers = vec![("subject".to_string(), "You WON a prize".to_string())];
        let hosts = vec!["x.invalid".to_string()];
        let input = RuleInput {
            headers: &headers,
            text: &format!("cheap V1AGRA {GTUBE}"),
            url_hosts: &hosts,
        };
        let hits: Vec<String> = rules.matches(&input).into_iter().map(|h| h.0).collect();
        assert_eq!(hits, ["GTUBE", "SUBJ_WIN", "PHARMA", "BAD_HOST"]);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = SpamRules::parse("body OK /a/ 1\nbody lower /a/ 1\n").expect_err("bad symbol");
        assert!(matches!(e, RulesError::Line { line: 2, .. }));
        let e = SpamRules::parse("body X /(/ 1").expect_err("bad regex");
        assert!(e.to_string().contains("invalid regex"));
        let e = SpamRules::parse("meta X /a/ 1").expect_err("bad kind");
        assert!(e.to_string().contains("unknown rule type"));
    }
}
