//! HTML to text for the classifier, and the tricks spammers play in it: hidden text, links
//! whose text names another host than their target, image-only mail; and URL helpers.
//!
//! # Contract
//! - A forgiving, linear scanner, not a parser: it never fails, never recurses, and reads
//!   each byte once. `<script>` and `<style>` contents are dropped; entities are reduced to a
//!   space except the common `&amp; &lt; &gt; &nbsp; &quot;`.
//! - Text inside an element styled `display:none`, `visibility:hidden`, `font-size:0/1px`
//!   or with `color` equal to white on no background counts as hidden (and is still read as
//!   words: the model learns what is hidden too).

/// What a piece of HTML adds up to.
#[derive(Debug, Default, Clone)]
pub struct HtmlText {
    pub text: String,
    /// Letters and digits inside hidden elements.
    pub hidden_chars: usize,
    pub images: usize,
    /// `(href, link text)` of the anchors.
    pub links: Vec<(String, String)>,
    pub link_text_mismatch: bool,
    /// The [`Tag`]s seen, one bit each.
    tags: u32,
}

/// Elements whose presence says something about who wrote the HTML (a mail client, a
/// newsletter tool, a spam kit); each is a classifier token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Font,
    Table,
    Form,
    Input,
    Center,
    Map,
    Iframe,
    Meta,
    Body,
    Blink,
    Bold,
    Image,
}

impl Tag {
    const ALL: [Tag; 12] = [
        Tag::Font,
        Tag::Table,
        Tag::Form,
        Tag::Input,
        Tag::Center,
        Tag::Map,
        Tag::Iframe,
        Tag::Meta,
        Tag::Body,
        Tag::Blink,
        Tag::Bold,
        Tag::Image,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tag::Font => "font",
            Tag::Table => "table",
            Tag::Form => "form",
            Tag::Input => "input",
            Tag::Center => "center",
            Tag::Map => "map",
            Tag::Iframe => "iframe",
            Tag::Meta => "meta",
            Tag::Body => "body",
            Tag::Blink => "blink",
            Tag::Bold => "b",
            Tag::Image => "img",
        }
    }

    fn of(name: &str) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl HtmlText {
    pub fn merge(&mut self, other: HtmlText) {
        self.text.push('\n');
        self.text.push_str(&other.text);
        self.hidden_chars += other.hidden_chars;
        self.images += other.images;
        self.links.extend(other.links);
        self.link_text_mismatch |= other.link_text_mismatch;
        self.tags |= other.tags;
    }

    pub fn has_tag(&self, tag: Tag) -> bool {
        self.tags & (1 << tag as u32) != 0
    }

    pub fn tags(&self) -> impl Iterator<Item = Tag> + '_ {
        Tag::ALL.into_iter().filter(|t| self.has_tag(*t))
    }
}

const SHORTENERS: &[&str] = &[
    "bit.ly",
    "bitly.com",
    "tinyurl.com",
    "goo.gl",
    "t.co",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "s.id",
    "v.gd",
    "t.ly",
    "x.co",
    "lnkd.in",
    "shorte.st",
    "adf.ly",
    "bl.ink",
    "qrco.de",
];

pub fn is_shortener(host: &str) -> bool {
    SHORTENERS.contains(&host)
}

/// The last two labels (three under a two-letter second-level like `co.uk`): near enough
/// to a registrable domain for comparing link text with its target.
pub fn registrable(host: &str) -> &str {
    let labels: Vec<&str> = host.rsplitn(4, '.').collect();
    let keep = match labels.as_slice() {
        [_tld, sld, _, ..]
            if sld.len() <= 3 && matches!(*sld, "co" | "com" | "net" | "org" | "ac" | "gov") =>
        {
            3
        }
        _ => 2,
    };
    if labels.len() <= keep || host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    let cut: usize = labels[..keep].iter().map(|l| l.len() + 1).sum();
    &host[host.len() + 1 - cut..]
}

/// The lower-cased host of an `http(s)://` or `www.` URL.
pub fn url_host(url: &str) -> Option<String> {
    let url = url.trim().trim_start_matches(['"', '\'', '<']);
    let lower = url.get(..8.min(url.len()))?.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("www.") {
        url
    } else {
        return None;
    };
    let end = rest
        .find(|c: char| {
            matches!(c, '/' | '?' | '#' | ':' | '"' | '\'' | '>' | ' ' | '\\') || c.is_whitespace()
        })
        .unwrap_or(rest.len());
    let host = rest[..end].rsplit('@').next()?.trim_end_matches('.');
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    valid.then(|| host.to_ascii_lowercase())
}

/// The URLs written out in a text.
pub fn find_urls(text: &str) -> impl Iterator<Item = String> + '_ {
    let lower = text.to_ascii_lowercase();
    let mut starts = Vec::new();
    for pattern in ["http://", "https://", "www."] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(pattern) {
            let at = from + at;
            let after_scheme = at >= 3 && lower[..at].ends_with("://");
            if !(pattern == "www." && after_scheme) {
                starts.push(at);
            }
            from = at + pattern.len();
        }
    }
    starts.sort_unstable();
    starts.into_iter().map(move |at| {
        let end = text[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>'))
            .map_or(text.len(), |e| at + e);
        text[at..end].to_string()
    })
}

/// Strips `source` to text and notes its tricks.
pub fn strip(source: &str) -> HtmlText {
    let mut out = HtmlText::default();
    let mut rest = source;
    let mut skip_until: Option<&str> = None;
    // Open elements, each marked hidden or not (unclosed tags make this approximate).
    let mut open: Vec<bool> = Vec::new();
    let mut anchor: Option<(String, String)> = None;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if skip_until.is_none() {
            add_text(&mut out, text, open.contains(&true), anchor.as_mut());
        }
        let Some(gt) = rest[lt..].find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        let name = tag_name(tag);
        if let Some(seen) = Tag::of(&name) {
            out.tags |= 1 << seen as u32;
        }
        if let Some(end) = skip_until {
            if name == end {
                skip_until = None;
            }
            continue;
        }
        match name.as_str() {
            "script" | "style" => {
                skip_until = Some(if name == "script" {
                    "/script"
                } else {
                    "/style"
                })
            }
            "img" => out.images += 1,
            "a" => anchor = attribute(tag, "href").map(|href| (href, String::new())),
            "/a" => {
                if let Some((href, text)) = anchor.take() {
                    out.link_text_mismatch |= link_text_names_other_host(&href, &text);
                    out.links.push((href, text));
                }
            }
            "br" | "p" | "/p" | "div" | "/div" | "tr" | "/tr" | "li" => out.text.push('\n'),
            _ => {}
        }
        if name.starts_with('/') {
            open.pop();
        } else if !is_void(&name) && !tag.ends_with('/') && open.len() < 256 {
            open.push(hides(tag));
        }
    }
    if skip_until.is_none() {
        add_text(&mut out, rest, open.contains(&true), anchor.as_mut());
    }
    out
}

fn add_text(out: &mut HtmlText, raw: &str, hidden: bool, anchor: Option<&mut (String, String)>) {
    if raw.is_empty() {
        return;
    }
    let text = decode_entities(raw);
    if hidden {
        out.hidden_chars += text.chars().filter(|c| c.is_alphanumeric()).count();
    }
    if let Some((_, link_text)) = anchor {
        link_text.push_str(&text);
    }
    out.text.push_str(&text);
    out.text.push(' ');
}

fn is_void(name: &str) -> bool {
    matches!(
        name,
        "img"
            | "br"
            | "hr"
            | "meta"
            | "input"
            | "link"
            | "area"
            | "base"
            | "col"
            | "wbr"
            | "!doctype"
    ) || name.starts_with('!')
}

fn decode_entities(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_string();
    }
    raw.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

fn tag_name(tag: &str) -> String {
    tag.trim_start()
        .split(|c: char| c.is_whitespace() || c == '/' && !tag.trim_start().starts_with('/'))
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

/// The value of attribute `name` in a tag's source.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(name) {
        let at = from + at;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[from..].trim_start();
        if !before_ok || !after.starts_with('=') {
            continue;
        }
        let value_at = tag.len() - after.len() + 1;
        let value = tag[value_at..].trim_start();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value.split_whitespace().next().unwrap_or(""),
        };
        return Some(value.to_string());
    }
    None
}

fn hides(tag: &str) -> bool {
    let Some(style) = attribute(tag, "style") else {
        return false;
    };
    let style: String = style
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    style.contains("display:none")
        || style.contains("visibility:hidden")
        || style.contains("font-size:0")
        || style.contains("font-size:1px")
        || (style.contains("color:#fff") && !style.contains("background"))
}

/// The link's text is itself a URL or host name, and a different one from the target's.
fn link_text_names_other_host(href: &str, text: &str) -> bool {
    let text = text.trim();
    let shown = url_host(text).or_else(|| {
        let looks_like_host = text.contains('.')
            && !text.contains(' ')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        looks_like_host.then(|| text.to_ascii_lowercase())
    });
    match (shown, url_host(href)) {
        (Some(shown), Some(target)) => registrable(&shown) != registrable(&target),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_scripts_and_entities() {
        let t =
            strip("<html><style>p{}</style><p>Hello&nbsp;<b>world</b></p><script>x()</script>bye");
        let words: Vec<&str> = t.text.split_whitespace().collect();
        assert_eq!(words, ["Hello", "world", "bye"]);
    }

    #[test]
    fn hidden_text_and_link_mismatch() {
        let t = strip(
            "<a href='http://evil.example/x'>https://bank.example/login</a>\
             <a href=\"https://www.bank.example/\">bank.example</a>\
             <span style=\"display: none\">secret words here</span><img src=x>",
        );
        assert!(t.link_text_mismatch);
        assert_eq!(t.hidden_chars, "secretwordshere".len());
        assert_eq!(t.images, 1);
        assert_eq!(t.links.len(), 2);
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("HTTP://User@Www.Example.COM:80/x").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(url_host("mailto:a@b"), None);
        assert_eq!(registrable("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("www.example.com"), "example.com");
        let urls: Vec<String> = find_urls("see http://a.example/x and www.b.example.").collect();
        assert_eq!(urls, ["http://a.example/x", "www.b.example."]);
    }
}
