//! Mailbox analysis for relay decisions.
//!
//! `smtp-proto` parses the path (it strips source routes, as RFC 5321 4.1.1.3 says to ignore
//! them, and removes the quotes of a quoted local part). Here we split what it returns at the
//! *last* `@` and classify the parts, so that `"user@other.net"@example.com` is seen as a local
//! part holding `@` at our domain (a relay trick), never as mail for other.net.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// Lower-cased, without a trailing dot.
    Name(String),
    /// An address literal such as `[192.0.2.1]` or `[IPv6:::1]`, as written.
    Literal(String),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(literal) => f.write_str(literal),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: Domain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("no domain")]
    NoDomain,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("malformed domain")]
    BadDomain,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtputf8,
    #[error("address too long")]
    TooLong,
}

/// RFC 5321 says 64, but real mailing-list bounce addresses (VERP, SRS) exceed it and
/// Postfix accepts them; 255 is the sane bound that still refuses garbage.
const MAX_LOCAL_PART: usize = 255;
/// The whole address, as the SMTP path parser (smtp-proto) also bounds it.
const MAX_ADDRESS: usize = 256;

impl Mailbox {
    /// Parses `local@domain` as returned by the SMTP path parser.
    pub fn parse(address: &str, smtputf8: bool) -> Result<Mailbox, AddressError> {
        if address.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        if !smtputf8 && !address.is_ascii() {
            return Err(AddressError::NeedsSmtputf8);
        }
        let (local, domain) = address.rsplit_once('@').ok_or(AddressError::NoDomain)?;
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong);
        }
        Ok(Mailbox {
            local: local.to_string(),
            domain: parse_domain(domain)?,
        })
    }

    /// A local part that carries its own routing (`user%host`, `host!user`, `user@host`):
    /// the next hop might act on it, so only trusted clients may use it.
    pub fn has_routing(&self) -> bool {
        self.local.contains(['@', '%', '!'])
    }

    /// The domain name, if this is not an address literal.
    pub fn domain_name(&self) -> Option<&str> {
        match &self.domain {
            Domain::Name(name) => Some(name),
            Domain::Literal(_) => None,
        }
    }

    /// `local@domain` with the domain normalised; used as the lookup key and stored address.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// RFC 5322 atext; non-ASCII too (RFC 6531/6532 allow UTF-8 there).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// An address as SMTP paths and RFC 5322 fields must write it. The path parser removes the
/// quotes of a quoted local part, so `"smith, john"@example.com` is stored as `smith,
/// john@example.com`: a local part that is not a dot-string gets its quotes back (with `\`
/// before `"` and `\`). The null sender and addresses without `@` stay as they are.
pub fn quoted(address: &str) -> Cow<'_, str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Cow::Borrowed(address);
    };
    let dot_string = local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
    if dot_string {
        return Cow::Borrowed(address);
    }
    let mut out = String::with_capacity(address.len() + 4);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("\"@");
    out.push_str(domain);
    Cow::Owned(out)
}

fn parse_domain(domain: &str) -> Result<Domain, AddressError> {
    if domain.starts_with('[') {
        let valid = domain.ends_with(']') && is_literal(&domain[1..domain.len() - 1]);
        return if valid {
            Ok(Domain::Literal(domain.to_string()))
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let name = domain.strip_suffix('.').unwrap_or(domain);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(AddressError::BadDomain);
    }
    Ok(Domain::Name(name.to_lowercase()))
}

fn is_literal(inner: &str) -> bool {
    if let Some(v6) = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
    {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    inner.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_that_need_quotes_get_them_back() {
        assert_eq!(quoted("john.smith@example.com"), "john.smith@example.com");
        assert_eq!(
            quoted("smith, john@example.com"),
            "\"smith, john\"@example.com"
        );
        assert_eq!(
            quoted("user@other.net@example.com"),
            "\"user@other.net\"@example.com"
        );
        assert_eq!(quoted(r#"a"b\c@example.com"#), r#""a\"b\\c"@example.com"#);
        assert_eq!(quoted("..dots@example.com"), "\"..dots\"@example.com");
        assert_eq!(quoted(""), "");
        assert_eq!(quoted("postmaster"), "postmaster");
        assert_eq!(quoted("j\u{f6}rg@example.com"), "j\u{f6}rg@example.com");
    }

    #[test]
    fn ordinary_and_trailing_dot() {
        let m = Mailbox::parse("User@Example.COM.", false).expect("valid");
        assert_eq!(m.domain_name(), Some("example.com"));
        assert_eq!(m.local, "User");
        assert!(!m.has_routing());
    }

    #[test]
    fn long_verp_local_parts_are_accepted_up_to_255() {
        let verp = format!("bounce-{}=list.example.org", "x".repeat(180));
        assert!(Mailbox::parse(&format!("{verp}@example.com"), false).is_ok());
        // The whole address is bounded too (256, as the path parser bounds it).
        let longest = "l".repeat(253);
        assert!(Mailbox::parse(&format!("{longest}@a"), false).is_ok());
        assert_eq!(
            Mailbox::parse(&format!("{longest}xyz@a"), false),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn routing_in_the_local_part() {
        for address in [
            "user%other.net@example.com",
            "other.net!user@example.com",
            "user@other.net@example.com",
        ] {
            let m = Mailbox::parse(address, false).expect("parses");
            assert_eq!(m.domain_name(), Some("example.com"));
            assert!(m.has_routing(), "{address}");
        }
    }

    #[test]
    fn malformed_domains_and_literals() {
        assert_eq!(
            Mailbox::parse("u@example.com..", false),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            Mailbox::parse("u@[1.2.3]", false),
            Err(AddressError::BadDomain)
        );
        let m = Mailbox::parse("u@[IPv6:::1]", false).expect("literal");
        assert_eq!(m.domain_name(), None);
        assert_eq!(
            Mailbox::parse("ü@example.com", false),
            Err(AddressError::NeedsSmtputf8)
        );
        assert!(Mailbox::parse("ü@exämple.com", true).is_ok());
        assert_eq!(
            Mailbox::parse("nodomain", false),
            Err(AddressError::NoDomain)
        );
    }
}
