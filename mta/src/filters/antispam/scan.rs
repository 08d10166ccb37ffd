//! The offline part of the anti-spam score: classifier and rules over one parsed message.
//! No I/O: the stage, `bulwarkctl spam check` and the benchmark all score through here.

use mail_parser::Message;

use super::features::{self, Features};
use super::model::Model;
use super::rules::{RuleInput, SpamRules};
use crate::pipeline::header_fields;

/// Score points per unit of classifier log-odds: a message the model puts at odds of
/// e^2 : 1 for spam reaches the default `tag_score` (5.0) on the classifier alone. Chosen by
/// measurement on the held-out split: at log-odds 2 the shipped model flags no more than
/// 0.3 % of ham (bench/RESULTS.md).
pub const CLASSIFIER_WEIGHT: f64 = 2.5;
/// The symbol of the classifier's share (words and everything not reported as a flag).
pub const CLASSIFIER_SYMBOL: &str = "BW_CLASSIFIER";

/// A model and a rule set, ready to score.
pub struct Scanner {
    pub model: Model,
    pub rules: SpamRules,
}

/// What scanning found.
pub struct Scan {
    /// Named contributions; they add up to [`Scan::score`].
    pub symbols: Vec<(String, f64)>,
    pub features: Features,
}

impl Scan {
    pub fn score(&self) -> f64 {
        self.symbols.iter().map(|(_, w)| w).sum()
    }
}

impl Scanner {
    pub fn scan(&self, message: &Message<'_>, raw_header: &[u8]) -> Scan {
        let features = features::extract(message, raw_header);
        let example = self.model.example(&features, false);
        let logit = self.model.logit(&example);
        let mut symbols = Vec::new();
        let mut flags_total = 0.0;
        for flag in &features.flags {
            let weight = self.model.weight(features::flag_token(*flag)) * CLASSIFIER_WEIGHT;
            flags_total += weight;
            symbols.push((flag.symbol().to_string(), round(weight)));
        }
        symbols.insert(
            0,
            (
                CLASSIFIER_SYMBOL.to_string(),
                round(logit * CLASSIFIER_WEIGHT - flags_total),
            ),
        );
        let mut headers = header_fields(raw_header);
        if let Some(subject) = message.subject() {
            headers.push(("Subject".to_string(), subject.to_string()));
        }
        let input = RuleInput {
            headers: &headers,
            text: &features.text,
            url_hosts: &features.url_hosts,
        };
        symbols.extend(self.rules.matches(&input));
        Scan { symbols, features }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The header section of a raw message (up to the empty line), and the message with a
/// leading mbox `From ` line removed.
pub fn split_raw(raw: &[u8]) -> (&[u8], &[u8]) {
    let raw = if raw.starts_with(b"From ") {
        memchr::memchr(b'\n', raw).map_or(raw, |nl| &raw[nl + 1..])
    } else {
        raw
    };
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    (&raw[..end], raw)
}

/// Parses `raw` (a file as stored, mbox `From ` line allowed) and scans it.
pub fn scan_bytes(scanner: &Scanner, raw: &[u8]) -> Option<Scan> {
    let (header, message) = split_raw(raw);
    let parsed = mail_parser::MessageParser::default().parse(message)?;
    Some(scanner.scan(&parsed, header))
}
