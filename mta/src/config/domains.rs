//! Domain lists (`relay.domains`, `[[recipients]] domains`, `[[route]] domains`): their syntax,
//! and how a recipient check's entries relate to `relay.domains`.
//!
//! Every list means the same thing: `example.com` is that domain, `.example.com` any of its
//! subdomains (not itself), matched case-insensitively with no trailing dot
//! ([`super::domain_listed`]). An entry that is not a domain name is refused at load: read
//! as a domain it would match nothing and silently switch off the control it belongs to.

/// Why `entry` is not a domain-list entry, or None when it is one. `*` is accepted only
/// when `wildcard` (routes); a trailing dot is allowed (it is removed at load).
pub(super) fn entry_problem(entry: &str, wildcard: bool) -> Option<String> {
    if entry == "*" {
        return (!wildcard)
            .then(|| format!("{entry:?} is not a domain (wildcards would make an open relay)"));
    }
    let name = entry.strip_prefix('.').unwrap_or(entry);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels_valid = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if name.is_empty() || name.len() > 253 || !labels_valid {
        return Some(format!(
            "{entry:?} is not a domain name (letters, digits, '-' and dots; \".example.com\" \
             for every subdomain)"
        ));
    }
    None
}

/// True when every domain `entry` (normalised) names is also in `relay` (normalised): the
/// same entry, or a subdomain entry of a domain relay lists as `.parent`.
pub(super) fn covered_by(relay: &[String], entry: &str) -> bool {
    match entry.strip_prefix('.') {
        None => super::domain_listed(relay, entry),
        // Every subdomain of `parent` is ours when relay lists `.parent` itself or a
        // `.grandparent` above it; a plain `parent` entry covers none of them.
        Some(parent) => {
            let subdomain_entries: Vec<String> = relay
                .iter()
                .filter(|r| r.starts_with('.'))
                .cloned()
                .collect();
            relay.iter().any(|r| r == entry) || super::domain_listed(&subdomain_entries, parent)
        }
    }
}

/// Lower case, no trailing dot: the form every domain list is matched in.
pub(super) fn normalise(entry: &str) -> String {
    entry.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_domain_names_or_subdomain_patterns() {
        assert_eq!(entry_problem("Example.COM.", false), None);
        assert_eq!(entry_problem(".sub.example.com", false), None);
        assert_eq!(entry_problem("xn--bcher-kva.example", false), None);
        assert_eq!(entry_problem("*", true), None);
        for bad in [
            "*",
            "",
            ".",
            "*.example.com",
            "exa mple.com",
            "a..b",
            "-a.com",
            "user@example.com",
        ] {
            assert!(entry_problem(bad, false).is_some(), "{bad:?} accepted");
        }
        assert!(entry_problem(&"a".repeat(64), false).is_some());
    }

    #[test]
    fn a_check_entry_is_covered_only_by_what_relay_accepts() {
        let relay = vec!["example.com".to_string(), ".corp.test".to_string()];
        assert!(covered_by(&relay, "example.com"));
        assert!(covered_by(&relay, ".corp.test"));
        assert!(covered_by(&relay, "a.corp.test"));
        assert!(covered_by(&relay, ".a.corp.test"));
        assert!(
            !covered_by(&relay, ".example.com"),
            "subdomains of example.com are not ours"
        );
        assert!(!covered_by(&relay, "corp.test"));
        assert!(!covered_by(&relay, "example.org"));
        let plain = vec!["a.corp.test".to_string(), ".other.test".to_string()];
        assert!(!covered_by(&plain, ".a.corp.test"));
    }
}
