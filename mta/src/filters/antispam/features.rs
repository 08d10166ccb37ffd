//! What the classifier sees of a message: hashed tokens and structural flags.
//!
//! # Contract
//! - [`extract`] is a pure function of the parsed message: the same bytes give the same
//!   features on every machine (FNV-1a hashing, no random seeds), so a model trained by
//!   `bulwarkctl spam train` scores identically in the daemon.
//! - Tokens come from the decoded subject, the text parts, the HTML parts stripped to text
//!   (script and style dropped), the URLs' hosts and a few header fields. Dates, Received
//!   paths and message ids are left out on purpose: they date a corpus and do not travel.
//! - Structural [`Flag`]s (header anomalies, hidden HTML text, shorteners, link text that
//!   names another host than its target, encoding tricks, MIME shape) are features too, so
//!   the model weighs them; their learned weights are reported as symbols.
//! - Work is bounded: at most [`MAX_WORDS`] words and [`MAX_URLS`] URLs per message.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::html::{self, HtmlText};

/// Words read per message (subject included); the rest of a long message adds little.
pub const MAX_WORDS: usize = 3000;
/// URLs read per message.
pub const MAX_URLS: usize = 100;

/// A structural signal, a classifier feature of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flag {
    MissingDate,
    MissingMessageId,
    MissingFrom,
    MessageIdWithoutDomain,
    FromDisplayNameHasOtherAddress,
    ReplyToOtherDomain,
    NoToHeader,
    UndisclosedRecipients,
    SubjectMostlyCaps,
    SubjectEncoded,
    SubjectRawEightBit,
    HtmlOnly,
    HtmlHiddenText,
    HtmlManyImagesLittleText,
    UrlShortener,
    UrlNumericHost,
    LinkTextOtherHost,
    ManyUrls,
    Base64Text,
    CharsetMismatch,
    MultipartAlternativeMismatch,
    ExecutableAttachment,
    NoReceived,
    ExclamationsInSubject,
}

impl Flag {
    /// The symbol name in `X-Spam-Status` and the log.
    pub fn symbol(self) -> &'static str {
        match self {
            Flag::MissingDate => "MISSING_DATE",
            Flag::MissingMessageId => "MISSING_MID",
            Flag::MissingFrom => "MISSING_FROM",
            Flag::MessageIdWithoutDomain => "MID_NO_DOMAIN",
            Flag::FromDisplayNameHasOtherAddress => "FROM_NAME_OTHER_ADDR",
            Flag::ReplyToOtherDomain => "REPLYTO_OTHER_DOMAIN",
            Flag::NoToHeader => "MISSING_TO",
            Flag::UndisclosedRecipients => "TO_UNDISCLOSED",
            Flag::SubjectMostlyCaps => "SUBJ_CAPS",
            Flag::SubjectEncoded => "SUBJ_ENCODED",
            Flag::SubjectRawEightBit => "SUBJ_RAW_8BIT",
            Flag::HtmlOnly => "HTML_ONLY",
            Flag::HtmlHiddenText => "HTML_HIDDEN_TEXT",
            Flag::HtmlManyImagesLittleText => "HTML_IMAGES_LITTLE_TEXT",
            Flag::UrlShortener => "URL_SHORTENER",
            Flag::UrlNumericHost => "URL_NUMERIC_HOST",
            Flag::LinkTextOtherHost => "LINK_TEXT_OTHER_HOST",
            Flag::ManyUrls => "MANY_URLS",
            Flag::Base64Text => "BASE64_TEXT",
            Flag::CharsetMismatch => "CHARSET_MISMATCH",
            Flag::MultipartAlternativeMismatch => "ALTERNATIVE_MISMATCH",
            Flag::ExecutableAttachment => "EXECUTABLE_ATTACHMENT",
            Flag::NoReceived => "NO_RECEIVED",
            Flag::ExclamationsInSubject => "SUBJ_EXCLAMATIONS",
        }
    }
}

/// The features of one message.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Hashed token ids (not yet reduced to the model's size), deduplicated.
    pub tokens: Vec<u64>,
    pub flags: Vec<Flag>,
    /// Link hosts, for the URI blocklists.
    pub url_hosts: Vec<String>,
    /// The subject and the decoded text (HTML as text), for body rules.
    pub text: String,
}

/// FNV-1a, 64 bits: stable across platforms and releases (the model file depends on it).
pub fn hash(namespace: u8, text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(namespace);
    for &b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hashed id of a flag (namespace 0, its symbol name).
pub fn flag_token(flag: Flag) -> u64 {
    hash(0, flag.symbol().as_bytes())
}

const NS_WORD: u8 = 1;
const NS_BIGRAM: u8 = 2;
const NS_SUBJECT: u8 = 3;
const NS_URL: u8 = 4;
const NS_HEADER: u8 = 5;

struct Collector {
    tokens: Vec<u64>,
    words: usize,
    text: String,
}

impl Collector {
    fn words(&mut self, namespace: u8, text: &str) {
        let mut previous: Option<String> = None;
        for word in words(text) {
            if self.words >= MAX_WORDS {
                return;
            }
            self.words += 1;
            self.tokens.push(hash(namespace, word.as_bytes()));
            if namespace == NS_WORD {
                if let Some(prev) = &previous {
                    let pair = format!("{prev} {word}");
                    self.tokens.push(hash(NS_BIGRAM, pair.as_bytes()));
                }
            }
            previous = Some(word);
        }
    }

    fn token(&mut self, namespace: u8, text: &str) {
        self.tokens.push(hash(namespace, text.as_bytes()));
    }
}

/// Lower-cased words of 2 to 24 characters; numbers keep only their length ("#3").
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '$' || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| {
            let n = w.chars().count();
            (2..=24).contains(&n) || *w == "$"
        })
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_digit()) {
                format!("#{}", w.len())
            } else {
                w.to_lowercase()
            }
        })
}

/// The features of `message`; `raw_header` is its header section as received.
pub fn extract(message: &Message<'_>, raw_header: &[u8]) -> Features {
    let mut out = Collector {
        tokens: Vec::with_capacity(1024),
        words: 0,
        text: String::new(),
    };
    let mut flags = header_flags(message, raw_header);
    header_tokens(message, &mut out);
    let mut body = BodyShape::default();
    for part in &message.parts {
        read_part(part, &mut out, &mut body);
    }
    flags.extend(body.flags());
    let url_hosts = body.url_hosts(&mut out);
    flags.extend(url_flags(
        &url_hosts,
        body.urls.len() + body.html.links.len(),
    ));
    for flag in &flags {
        out.tokens.push(flag_token(*flag));
    }
    out.tokens.sort_unstable();
    out.tokens.dedup();
    flags.sort_unstable();
    flags.dedup();
    Features {
        tokens: out.tokens,
        flags,
        url_hosts,
        text: out.text,
    }
}

fn header_tokens(message: &Message<'_>, out: &mut Collector) {
    if let Some(subject) = message.subject() {
        out.words(NS_SUBJECT, subject);
        out.text.push_str(subject);
        out.text.push('\n');
    }
    if let Some(from) = message.from().and_then(|a| a.first()) {
        if let Some(domain) = from.address().and_then(|a| a.rsplit_once('@')).map(|p| p.1) {
            out.token(NS_HEADER, &format!("from-domain:{}", domain.to_lowercase()));
        }
    }
    for name in ["X-Mailer", "User-Agent"] {
        if let Some(value) = message.header_raw(name) {
            for word in words(value).take(4) {
                out.token(NS_HEADER, &format!("mailer:{word}"));
            }
        }
    }
    if let Some(ct) = message.content_type() {
        let sub = ct.subtype().unwrap_or("");
        out.token(NS_HEADER, &format!("ct:{}/{sub}", ct.ctype()));
    }
    if message.header_raw("List-Id").is_some() || message.header_raw("List-Unsubscribe").is_some() {
        out.token(NS_HEADER, "list-headers");
    }
    if message.header_raw("In-Reply-To").is_some() || message.header_raw("References").is_some() {
        out.token(NS_HEADER, "thread-headers");
    }
}

fn header_flags(message: &Message<'_>, raw_header: &[u8]) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut check = |cond: bool, flag: Flag| {
        if cond {
            flags.push(flag)
        }
    };
    check(message.header_raw("Date").is_none(), Flag::MissingDate);
    let mid = message.header_raw("Message-ID");
    check(mid.is_none(), Flag::MissingMessageId);
    check(
        mid.is_some_and(|m| !m.contains('@')),
        Flag::MessageIdWithoutDomain,
    );
    check(message.header_raw("Received").is_none(), Flag::NoReceived);
    let from = message.from().and_then(|a| a.first());
    check(from.is_none(), Flag::MissingFrom);
    let from_domain = from
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_lowercase());
    if let Some(from) = from {
        let name_addr = from.name().filter(|n| n.contains('@'));
        let address = from.address().unwrap_or("").to_lowercase();
        check(
            name_addr.is_some_and(|n| !n.to_lowercase().contains(&address)),
            Flag::FromDisplayNameHasOtherAddress,
        );
    }
    let reply_domain = message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_lowercase());
    check(
        matches!((&reply_domain, &from_domain), (Some(r), Some(f)) if r != f),
        Flag::ReplyToOtherDomain,
    );
    let to = message.header_raw("To");
    check(to.is_none(), Flag::NoToHeader);
    check(
        to.is_some_and(|t| t.to_lowercase().contains("undisclosed")),
        Flag::UndisclosedRecipients,
    );
    subject_flags(message, raw_header, &mut flags);
    flags
}

fn subject_flags(message: &Message<'_>, raw_header: &[u8], flags: &mut Vec<Flag>) {
    let Some(subject) = message.subject() else {
        return;
    };
    let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
    let upper = letters.iter().filter(|c| c.is_uppercase()).count();
    if letters.len() >= 8 && upper * 10 >= letters.len() * 7 {
        flags.push(Flag::SubjectMostlyCaps);
    }
    if subject.matches('!').count() >= 2 {
        flags.push(Flag::ExclamationsInSubject);
    }
    let raw = message.header_raw("Subject").unwrap_or("");
    if raw.contains("=?") {
        flags.push(Flag::SubjectEncoded);
    }
    if raw_subject_has_eight_bit(raw_header) {
        flags.push(Flag::SubjectRawEightBit);
    }
}

fn raw_subject_has_eight_bit(raw_header: &[u8]) -> bool {
    let mut in_subject = false;
    for line in raw_header.split(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            in_subject = line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:");
        }
        if in_subject && line.iter().any(|&b| b >= 0x80) {
            return true;
        }
    }
    false
}

/// What the body's parts add up to.
#[derive(Default)]
struct BodyShape {
    text_parts: usize,
    html_parts: usize,
    html: HtmlText,
    plain_chars: usize,
    base64_text: bool,
    charset_mismatch: bool,
    executable: bool,
    urls: Vec<String>,
}

impl BodyShape {
    fn flags(&self) -> Vec<Flag> {
        let mut flags = Vec::new();
        let html_text = self
            .html
            .text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .count();
        if self.html_parts > 0 && self.text_parts == 0 {
            flags.push(Flag::HtmlOnly);
        }
        if self.html.hidden_chars > 20 {
            flags.push(Flag::HtmlHiddenText);
        }
        if self.html.images >= 1 && html_text + self.plain_chars < 200 {
            flags.push(Flag::HtmlManyImagesLittleText);
        }
        if self.html_parts > 0 && self.text_parts > 0 && self.plain_chars < 20 && html_text > 200 {
            flags.push(Flag::MultipartAlternativeMismatch);
        }
        if self.html.link_text_mismatch {
            flags.push(Flag::LinkTextOtherHost);
        }
        if self.base64_text {
            flags.push(Flag::Base64Text);
        }
        if self.charset_mismatch {
            flags.push(Flag::CharsetMismatch);
        }
        if self.executable {
            flags.push(Flag::ExecutableAttachment);
        }
        flags
    }

    /// Emits URL tokens and flags; returns the distinct hosts.
    fn url_hosts(&self, out: &mut Collector) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .urls
            .iter()
            .chain(self.html.links.iter().map(|(href, _)| href))
            .filter_map(|u| html::url_host(u))
            .take(MAX_URLS)
            .collect();
        hosts.sort();
        hosts.dedup();
        for host in &hosts {
            out.token(NS_URL, host);
            out.token(NS_URL, html::registrable(host));
        }
        hosts
    }
}

fn url_flags(hosts: &[String], urls: usize) -> Vec<Flag> {
    let mut flags = Vec::new();
    if hosts.iter().any(|h| html::is_shortener(h)) {
        flags.push(Flag::UrlShortener);
    }
    if hosts.iter().any(|h| h.parse::<std::net::IpAddr>().is_ok()) {
        flags.push(Flag::UrlNumericHost);
    }
    if urls >= 15 {
        flags.push(Flag::ManyUrls);
    }
    flags
}

fn read_part(part: &MessagePart<'_>, out: &mut Collector, body: &mut BodyShape) {
    let encoding_base64 = part
        .content_transfer_encoding()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    let charset = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .map(str::to_ascii_lowercase);
    match &part.body {
        PartType::Text(text) => {
            body.text_parts += 1;
            body.plain_chars += text.chars().filter(|c| c.is_alphanumeric()).count();
            body.base64_text |= encoding_base64;
            body.charset_mismatch |= charset_mismatch(charset.as_deref(), text);
            body.urls.extend(html::find_urls(text).take(MAX_URLS));
            out.words(NS_WORD, text);
            out.text.push_str(text);
            out.text.push('\n');
        }
        PartType::Html(source) => {
            body.html_parts += 1;
            body.base64_text |= encoding_base64;
            let stripped = html::strip(source);
            out.words(NS_WORD, &stripped.text);
            out.text.push_str(&stripped.text);
            out.text.push('\n');
            body.html.merge(stripped);
        }
        PartType::Binary(_) | PartType::InlineBinary(_) => {
            let name = part.attachment_name().unwrap_or("").to_ascii_lowercase();
            body.executable |= [
                ".exe", ".scr", ".pif", ".bat", ".com", ".vbs", ".js", ".jar",
            ]
            .iter()
            .any(|ext| name.ends_with(ext));
            if let Some(ct) = part.content_type() {
                let sub = ct.subtype().unwrap_or("");
                out.token(NS_HEADER, &format!("part:{}/{sub}", ct.ctype()));
            }
        }
        PartType::Message(_) | PartType::Multipart(_) => {}
    }
}

/// A part declared ASCII or Latin that decodes to mostly other scripts (or the reverse is
/// harmless): the declared charset lies about the text.
fn charset_mismatch(charset: Option<&str>, text: &str) -> bool {
    let Some(charset) = charset else {
        return false;
    };
    let latin = matches!(charset, "us-ascii" | "iso-8859-1" | "windows-1252");
    let letters = text.chars().filter(|c| c.is_alphabetic()).take(2000);
    let (mut total, mut foreign) = (0usize, 0usize);
    for c in letters {
        total += 1;
        if (c as u32) > 0x24f {
            foreign += 1;
        }
    }
    latin && total > 50 && foreign * 3 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(raw: &str) -> Features {
        let message = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        let header_end = raw.find("\r\n\r\n").unwrap_or(raw.len());
        extract(&message, &raw.as_bytes()[..header_end])
    }

    #[test]
    fn hashing_is_stable() {
        // The model file depends on these exact values.
        assert_eq!(hash(1, b"free"), hash(1, b"free"));
        assert_ne!(hash(1, b"free"), hash(3, b"free"));
        assert_eq!(hash(0, b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn plain_ham_has_no_anomalies() {
        let f = features(
            "Received: from a by b\r\nFrom: Ann <ann@example.com>\r\nTo: bob@example.org\r\n\
             Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\
             Subject: lunch tomorrow\r\n\r\nShall we meet at noon?\r\n",
        );
        assert!(f.flags.is_empty(), "{:?}", f.flags);
        assert!(f.tokens.contains(&hash(NS_WORD, b"noon")));
        assert!(f.tokens.contains(&hash(NS_SUBJECT, b"lunch")));
    }

    #[test]
    fn html_tricks_are_flagged() {
        let f = features(
            "From: x@spam.example\r\nSubject: FREE MONEY NOW!!\r\nContent-Type: text/html\r\n\r\n\
             <p>Click <a href=\"http://bit.ly/abc\">www.yourbank.example</a></p>\
             <div style=\"display:none\">lorem ipsum dolor sit amet consectetur words</div>\r\n",
        );
        for flag in [
            Flag::HtmlOnly,
            Flag::HtmlHiddenText,
            Flag::UrlShortener,
            Flag::LinkTextOtherHost,
            Flag::SubjectMostlyCaps,
            Flag::ExclamationsInSubject,
            Flag::MissingDate,
            Flag::MissingMessageId,
        ] {
            assert!(f.flags.contains(&flag), "{flag:?} in {:?}", f.flags);
        }
        assert_eq!(f.url_hosts, vec!["bit.ly".to_string()]);
    }
}
