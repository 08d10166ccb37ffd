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
use super::tokens::{for_each_word, pair};

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
    MimeWithoutVersion,
    MessageIdOtherDomain,
    DateMalformed,
    SubjectTrailingId,
    MissingSubject,
    BodyMostlyCaps,
    HtmlForm,
    UrlUserinfo,
    FromLocalDigits,
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
            Flag::MimeWithoutVersion => "MIME_NO_VERSION",
            Flag::MessageIdOtherDomain => "MID_OTHER_DOMAIN",
            Flag::DateMalformed => "DATE_MALFORMED",
            Flag::SubjectTrailingId => "SUBJ_TRAILING_ID",
            Flag::MissingSubject => "MISSING_SUBJECT",
            Flag::BodyMostlyCaps => "BODY_CAPS",
            Flag::HtmlForm => "HTML_FORM",
            Flag::UrlUserinfo => "URL_USERINFO",
            Flag::FromLocalDigits => "FROM_LOCAL_DIGITS",
        }
    }
}

/// The features of one message.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Hashed tokens of the text (subject and body words, bigrams), deduplicated; not yet
    /// reduced to the model's size.
    pub words: Vec<u64>,
    /// Hashed tokens of the envelope of the text: header fields, link targets, MIME and
    /// HTML shape; deduplicated.
    pub meta: Vec<u64>,
    pub flags: Vec<Flag>,
    /// Link hosts, for the URI blocklists.
    pub url_hosts: Vec<String>,
    /// The subject and the decoded text (HTML as text), for body rules.
    pub text: String,
}

pub use super::tokens::hash;

/// The hashed id of a flag (namespace 0, its symbol name).
pub fn flag_token(flag: Flag) -> u64 {
    hash(0, flag.symbol().as_bytes())
}

const NS_WORD: u8 = 1;
const NS_BIGRAM: u8 = 2;
const NS_SUBJECT: u8 = 3;
const NS_URL: u8 = 4;
const NS_HEADER: u8 = 5;
const NS_SHOUT: u8 = 6;
const NS_FROM_NAME: u8 = 7;
const NS_URL_PATH: u8 = 8;
const NS_DOMAIN_GRAM: u8 = 9;

/// Tokens being gathered for one message.
struct Collector {
    words: Vec<u64>,
    meta: Vec<u64>,
    word_count: usize,
    text: String,
    /// Scratch space for normalised words.
    buf: String,
    /// Scratch space for `key:value` meta tokens.
    scratch: String,
}

impl Collector {
    /// Words of `text` in `namespace`, with bigrams (in a namespace per source) and a
    /// token for each shouted word.
    fn words(&mut self, namespace: u8, text: &str) {
        let mut previous: Option<u64> = None;
        let (words, limit) = (&mut self.words, &mut self.word_count);
        for_each_word(text, &mut self.buf, |word| {
            if *limit >= MAX_WORDS {
                return false;
            }
            *limit += 1;
            let token = hash(namespace, word.text.as_bytes());
            words.push(token);
            if word.shouting {
                words.push(hash(NS_SHOUT, word.text.as_bytes()));
            }
            if let Some(prev) = previous {
                words.push(pair(prev, token) ^ u64::from(NS_BIGRAM));
            }
            previous = Some(token);
            true
        });
    }

    /// A meta token `key:value`.
    fn meta(&mut self, key: &str, value: &str) {
        self.scratch.clear();
        self.scratch.push_str(key);
        self.scratch.push(':');
        self.scratch.push_str(value);
        self.scratch.make_ascii_lowercase();
        self.meta.push(hash(NS_HEADER, self.scratch.as_bytes()));
    }

    fn meta_in(&mut self, namespace: u8, text: &str) {
        self.meta.push(hash(namespace, text.as_bytes()));
    }
}

/// A count in a few buckets (0, 1, 2, 3-4, 5-8, 9-16, ...), as text for a meta token.
fn bucket(n: usize) -> &'static str {
    const NAMES: [&str; 8] = ["0", "1", "2", "3-4", "5-8", "9-16", "17-32", "33+"];
    let index = match n {
        0..=2 => n,
        _ => (usize::BITS - (n - 1).leading_zeros()) as usize + 1,
    };
    NAMES[index.min(NAMES.len() - 1)]
}

/// The features of `message`; `raw_header` is its header section as received.
pub fn extract(message: &Message<'_>, raw_header: &[u8]) -> Features {
    let mut out = Collector {
        words: Vec::with_capacity(2048),
        meta: Vec::with_capacity(128),
        word_count: 0,
        text: String::new(),
        buf: String::with_capacity(64),
        scratch: String::with_capacity(64),
    };
    let mut flags = header_flags(message, raw_header);
    header_tokens(message, &mut out);
    let mut body = BodyShape::default();
    for part in &message.parts {
        read_part(part, &mut out, &mut body);
    }
    flags.extend(body.flags(&out.text));
    body.shape_tokens(&mut out);
    let url_hosts = body.url_hosts(&mut out);
    flags.extend(url_flags(&url_hosts, &body));
    for list in [&mut out.words, &mut out.meta] {
        list.sort_unstable();
        list.dedup();
    }
    flags.sort_unstable();
    flags.dedup();
    Features {
        words: out.words,
        meta: out.meta,
        flags,
        url_hosts,
        text: out.text,
    }
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
}

fn header_tokens(message: &Message<'_>, out: &mut Collector) {
    if let Some(subject) = message.subject() {
        out.words(NS_SUBJECT, subject);
        out.text.push_str(subject);
        out.text.push('\n');
    }
    sender_tokens(message, out);
    for name in ["X-Mailer", "User-Agent"] {
        if let Some(value) = message.header_raw(name) {
            let mut taken = 0;
            for_each_word(value, &mut out.buf, |w| {
                out.meta
                    .push(hash(NS_HEADER, format!("mailer:{}", w.text).as_bytes()));
                taken += 1;
                taken < 4
            });
        }
    }
    if let Some(ct) = message.content_type() {
        let sub = ct.subtype().unwrap_or("");
        out.meta("ct", &format!("{}/{sub}", ct.ctype()));
    }
    let present = |name: &str| message.header_raw(name).is_some();
    if present("List-Id") || present("List-Unsubscribe") {
        out.meta_in(NS_HEADER, "list-headers");
    }
    if present("In-Reply-To") || present("References") {
        out.meta_in(NS_HEADER, "thread-headers");
    }
    for name in [
        "X-MSMail-Priority",
        "Importance",
        "Reply-To",
        "Cc",
        "X-Mailer",
        "Organization",
    ] {
        if present(name) {
            out.meta("has", name);
        }
    }
    for name in ["X-Priority", "Precedence"] {
        if let Some(value) = message.header_raw(name) {
            let value = value.split_whitespace().next().unwrap_or("");
            out.meta(name, &value[..value.len().min(16)]);
        }
    }
    let recipients = message.to().map_or(0, |a| a.iter().count());
    out.meta("to-count", bucket(recipients));
}

fn sender_tokens(message: &Message<'_>, out: &mut Collector) {
    let Some(from) = message.from().and_then(|a| a.first()) else {
        return;
    };
    let address = from.address().unwrap_or("");
    if let Some(domain) = domain_of(address) {
        out.meta("from-domain", domain);
        let tld = domain.rsplit('.').next().unwrap_or("");
        out.meta("from-tld", tld);
    }
    let local = address.split('@').next().unwrap_or("");
    let digits = local.bytes().filter(u8::is_ascii_digit).count();
    out.meta("from-local-len", bucket(local.len()));
    out.meta("from-local-digits", bucket(digits));
    match from.name() {
        Some(name) if !name.trim().is_empty() => {
            let mut taken = 0;
            let (meta, buf) = (&mut out.meta, &mut out.buf);
            for_each_word(name, buf, |w| {
                meta.push(hash(NS_FROM_NAME, w.text.as_bytes()));
                taken += 1;
                taken < 4
            });
        }
        _ => out.meta_in(NS_FROM_NAME, "(none)"),
    }
}

fn header_flags(message: &Message<'_>, raw_header: &[u8]) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut check = |cond: bool, flag: Flag| {
        if cond {
            flags.push(flag)
        }
    };
    let date = message.header_raw("Date");
    check(date.is_none(), Flag::MissingDate);
    check(
        date.is_some() && message.date().is_none(),
        Flag::DateMalformed,
    );
    let mid = message.header_raw("Message-ID");
    check(mid.is_none(), Flag::MissingMessageId);
    check(
        mid.is_some_and(|m| !m.contains('@')),
        Flag::MessageIdWithoutDomain,
    );
    check(message.header_raw("Received").is_none(), Flag::NoReceived);
    check(
        message.header_raw("MIME-Version").is_none()
            && message.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("multipart")
                    || ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html"))
            }),
        Flag::MimeWithoutVersion,
    );
    let from = message.from().and_then(|a| a.first());
    check(from.is_none(), Flag::MissingFrom);
    let address = from.and_then(|a| a.address()).unwrap_or("").to_lowercase();
    let from_domain = domain_of(&address).map(str::to_string);
    if let Some(from) = from {
        let name_addr = from.name().filter(|n| n.contains('@'));
        check(
            name_addr.is_some_and(|n| !n.to_lowercase().contains(&address)),
            Flag::FromDisplayNameHasOtherAddress,
        );
        let local = address.split('@').next().unwrap_or("");
        check(
            local.bytes().filter(u8::is_ascii_digit).count() >= 3,
            Flag::FromLocalDigits,
        );
    }
    let mid_domain = message
        .message_id()
        .and_then(domain_of)
        .map(|d| html::registrable(&d.to_ascii_lowercase()).to_string());
    check(
        matches!((&mid_domain, &from_domain), (Some(m), Some(f)) if html::registrable(f) != m),
        Flag::MessageIdOtherDomain,
    );
    let reply_domain = message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(domain_of)
        .map(str::to_lowercase);
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
    let Some(subject) = message.subject().filter(|s| !s.trim().is_empty()) else {
        flags.push(Flag::MissingSubject);
        return;
    };
    let letters = subject.chars().filter(|c| c.is_alphabetic()).count();
    let upper = subject.chars().filter(|c| c.is_uppercase()).count();
    if letters >= 8 && upper * 10 >= letters * 7 {
        flags.push(Flag::SubjectMostlyCaps);
    }
    if subject.matches('!').count() >= 2 {
        flags.push(Flag::ExclamationsInSubject);
    }
    if has_trailing_id(subject) {
        flags.push(Flag::SubjectTrailingId);
    }
    let raw = message.header_raw("Subject").unwrap_or("");
    if raw.contains("=?") {
        flags.push(Flag::SubjectEncoded);
    }
    if raw_subject_has_eight_bit(raw_header) {
        flags.push(Flag::SubjectRawEightBit);
    }
}

/// A subject that ends in a tracking id set off from the text: "... [suhdn]",
/// "...      24871", "... (ID 3x9k)": bulk senders tag each copy so filters cannot
/// match whole subjects.
fn has_trailing_id(subject: &str) -> bool {
    let trimmed = subject.trim_end();
    let Some((before, last)) = trimmed.rsplit_once(char::is_whitespace) else {
        return false;
    };
    let core = last.trim_matches(|c: char| matches!(c, '[' | ']' | '(' | ')' | '-' | '#'));
    if core.len() < 3 || core.len() > 12 || !core.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let bracketed = last.starts_with(['[', '(']) && last.ends_with([']', ')']);
    let spaced = before.ends_with("   ");
    let mixed =
        core.bytes().any(|b| b.is_ascii_digit()) && core.bytes().any(|b| b.is_ascii_alphabetic());
    let digits = core.bytes().all(|b| b.is_ascii_digit());
    (bracketed && (mixed || core.bytes().all(|b| b.is_ascii_lowercase()) && !before.is_empty()))
        || (spaced && (mixed || digits))
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
    binary_parts: usize,
    html: HtmlText,
    plain_chars: usize,
    base64_text: bool,
    charset_mismatch: bool,
    executable: bool,
    urls: Vec<String>,
}

impl BodyShape {
    fn flags(&self, text: &str) -> Vec<Flag> {
        let mut flags = Vec::new();
        let html_text = self
            .html
            .text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .count();
        let mut check = |cond: bool, flag: Flag| {
            if cond {
                flags.push(flag)
            }
        };
        check(self.html_parts > 0 && self.text_parts == 0, Flag::HtmlOnly);
        check(self.html.hidden_chars > 20, Flag::HtmlHiddenText);
        check(
            self.html.images >= 1 && html_text + self.plain_chars < 200,
            Flag::HtmlManyImagesLittleText,
        );
        check(
            self.html_parts > 0 && self.text_parts > 0 && self.plain_chars < 20 && html_text > 200,
            Flag::MultipartAlternativeMismatch,
        );
        check(self.html.link_text_mismatch, Flag::LinkTextOtherHost);
        check(self.html.has_tag(html::Tag::Form), Flag::HtmlForm);
        check(self.base64_text, Flag::Base64Text);
        check(self.charset_mismatch, Flag::CharsetMismatch);
        check(self.executable, Flag::ExecutableAttachment);
        check(mostly_caps(text), Flag::BodyMostlyCaps);
        flags
    }

    /// Tokens of the MIME and HTML shape: part counts, length, notable tags.
    fn shape_tokens(&self, out: &mut Collector) {
        out.meta("text-parts", bucket(self.text_parts));
        out.meta("html-parts", bucket(self.html_parts));
        out.meta("binary-parts", bucket(self.binary_parts));
        out.meta("images", bucket(self.html.images));
        out.meta("links", bucket(self.urls.len() + self.html.links.len()));
        out.meta("length", bucket(out.text.len() / 256));
        for tag in self.html.tags() {
            out.meta("tag", tag.name());
        }
    }

    /// Emits URL tokens; returns the distinct hosts.
    fn url_hosts(&self, out: &mut Collector) -> Vec<String> {
        let urls = || {
            self.urls
                .iter()
                .chain(self.html.links.iter().map(|(href, _)| href))
                .take(MAX_URLS)
        };
        let mut hosts: Vec<String> = urls().filter_map(|u| html::url_host(u)).collect();
        hosts.sort();
        hosts.dedup();
        for host in &hosts {
            out.meta_in(NS_URL, host);
            let registrable = html::registrable(host);
            out.meta_in(NS_URL, registrable);
            out.meta("url-tld", host.rsplit('.').next().unwrap_or(""));
            domain_grams(registrable, out);
        }
        for url in urls() {
            url_path_tokens(url, out);
        }
        hosts
    }
}

/// Four-letter pieces of a domain's first label ("cheapmeds" -> "chea", "heap", ...):
/// a domain never seen before still shares pieces with the ones that were.
fn domain_grams(registrable: &str, out: &mut Collector) {
    let label = registrable.split('.').next().unwrap_or("").as_bytes();
    for gram in label.windows(4).take(16) {
        out.meta.push(hash(NS_DOMAIN_GRAM, gram));
    }
}

/// Words of a URL's path and query ("/remove.php?id=", "/~user/"), and its shape.
fn url_path_tokens(url: &str, out: &mut Collector) {
    let Some(scheme_end) = url.find("://") else {
        return;
    };
    let rest = &url[scheme_end + 3..];
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let path = &rest[path_at..];
    if path.contains('?') {
        out.meta_in(NS_URL_PATH, "(query)");
    }
    if rest[..path_at].contains(':') {
        out.meta_in(NS_URL_PATH, "(port)");
    }
    let mut taken = 0;
    let (meta, buf) = (&mut out.meta, &mut out.buf);
    for_each_word(path, buf, |w| {
        meta.push(hash(NS_URL_PATH, w.text.as_bytes()));
        taken += 1;
        taken < 8
    });
}

/// Four fifths or more of at least 200 letters are capitals.
fn mostly_caps(text: &str) -> bool {
    let (mut letters, mut upper) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()).take(4000) {
        letters += 1;
        upper += usize::from(c.is_uppercase());
    }
    letters >= 200 && upper * 5 >= letters * 4
}

fn url_flags(hosts: &[String], body: &BodyShape) -> Vec<Flag> {
    let mut flags = Vec::new();
    let urls = body.urls.len() + body.html.links.len();
    if hosts.iter().any(|h| html::is_shortener(h)) {
        flags.push(Flag::UrlShortener);
    }
    if hosts.iter().any(|h| h.parse::<std::net::IpAddr>().is_ok()) {
        flags.push(Flag::UrlNumericHost);
    }
    if urls >= 15 {
        flags.push(Flag::ManyUrls);
    }
    let userinfo = |u: &String| {
        u.find("://").is_some_and(|at| {
            let authority = &u[at + 3..];
            let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
            authority[..end].contains('@')
        })
    };
    if body
        .urls
        .iter()
        .chain(body.html.links.iter().map(|(h, _)| h))
        .any(userinfo)
    {
        flags.push(Flag::UrlUserinfo);
    }
    flags
}

fn read_part(part: &MessagePart<'_>, out: &mut Collector, body: &mut BodyShape) {
    let encoding = part.content_transfer_encoding();
    let encoding_base64 = encoding.is_some_and(|e| e.eq_ignore_ascii_case("base64"));
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
            text_part_tokens(charset.as_deref(), encoding, out);
            out.words(NS_WORD, text);
            out.text.push_str(text);
            out.text.push('\n');
        }
        PartType::Html(source) => {
            body.html_parts += 1;
            body.base64_text |= encoding_base64;
            text_part_tokens(charset.as_deref(), encoding, out);
            let stripped = html::strip(source);
            out.words(NS_WORD, &stripped.text);
            out.text.push_str(&stripped.text);
            out.text.push('\n');
            body.html.merge(stripped);
        }
        PartType::Binary(_) | PartType::InlineBinary(_) => {
            body.binary_parts += 1;
            let name = part.attachment_name().unwrap_or("").to_ascii_lowercase();
            body.executable |= [
                ".exe", ".scr", ".pif", ".bat", ".com", ".vbs", ".js", ".jar",
            ]
            .iter()
            .any(|ext| name.ends_with(ext));
            if let Some(ct) = part.content_type() {
                let sub = ct.subtype().unwrap_or("");
                out.meta("part", &format!("{}/{sub}", ct.ctype()));
            }
        }
        PartType::Message(_) | PartType::Multipart(_) => {}
    }
}

fn text_part_tokens(charset: Option<&str>, encoding: Option<&str>, out: &mut Collector) {
    out.meta("charset", charset.unwrap_or("(none)"));
    out.meta("cte", encoding.unwrap_or("(none)"));
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
        assert!(f.words.contains(&hash(NS_WORD, b"noon")));
        assert!(f.words.contains(&hash(NS_SUBJECT, b"lunch")));
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
