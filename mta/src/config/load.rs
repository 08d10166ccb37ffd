//! Loading and validating the config file, reporting every problem with line:column and key path.
//!
//! Syntax and type errors stop the parse (toml reports the first one with its span); unknown
//! keys are collected all at once (serde_ignored) and semantic problems (paths that cannot work,
//! an open relay in disguise, a missing list file) are collected after a successful parse.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{domains, ranges, Config, ListenerRole, RecipientCheckKind};

/// One segment of a key path: `listener[1].address` is `[Key(listener), Index(1), Key(address)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A problem found in the file, located for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.key_path, self.message
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in {origin}:\n{}", problems.len(), render(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {origin}:{p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&text, &path.display().to_string(), base)
}

/// Parses and validates `text`; `base` resolves relative file names in it.
pub fn load_str(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    };
    let spans = match DeTable::parse(text) {
        Ok(table) => table,
        Err(error) => return Err(invalid(vec![from_toml_error(text, &error)])),
    };
    let mut unknown = Vec::new();
    let deserializer = toml::de::Deserializer::from(spans.clone());
    let parsed: Result<Config, _> = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(segments_of(&path));
    });
    let mut config = match parsed {
        Ok(config) => config,
        Err(error) => return Err(invalid(vec![from_toml_error(text, &error)])),
    };
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|path| locate(text, &spans, &path, "unknown key".to_string()))
        .collect();
    for (path, message) in validate(&mut config, base) {
        problems.push(locate(text, &spans, &path, message));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(invalid(problems))
    }
}

fn from_toml_error(text: &str, error: &toml::de::Error) -> Problem {
    let offset = error.span().map(|s| s.start).unwrap_or(0);
    let (line, column) = line_column(text, offset);
    Problem {
        line,
        column,
        key_path: String::new(),
        message: error.message().trim().to_string(),
    }
}

fn segments_of(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = segments_of(parent);
            v.push(Segment::Index(*index));
            v
        }
        P::Map { parent, key } => {
            let mut v = segments_of(parent);
            v.push(Segment::Key(key.clone()));
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments_of(parent)
        }
    }
}

fn key_path_string(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds where `path` is written (its key, or the nearest enclosing one that exists).
fn locate(text: &str, root: &Spanned<DeTable<'_>>, path: &[Segment], message: String) -> Problem {
    let offset = span_of(root, path).unwrap_or(0);
    let (line, column) = line_column(text, offset);
    Problem {
        line,
        column,
        key_path: key_path_string(path),
        message,
    }
}

fn span_of(root: &Spanned<DeTable<'_>>, path: &[Segment]) -> Option<usize> {
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    for segment in path {
        let value = match (segment, table, array) {
            (Segment::Key(key), Some(t), _) => {
                let (k, v) = t.get_key_value(key.as_str())?;
                best = Some(k.span().start);
                v
            }
            (Segment::Index(i), _, Some(a)) => {
                let v = a.get(*i)?;
                best = Some(v.span().start);
                v
            }
            _ => return best,
        };
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    best
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

pub(super) type Found = Vec<(Vec<Segment>, String)>;

pub(super) fn key(path: &[&str]) -> Vec<Segment> {
    path.iter().map(|k| Segment::Key(k.to_string())).collect()
}

/// `a.b[index]`: one element of a list.
fn element(path: &[&str], index: usize) -> Vec<Segment> {
    let mut segments = key(path);
    segments.push(Segment::Index(index));
    segments
}

pub(super) fn indexed(table: &str, index: usize, field: &str) -> Vec<Segment> {
    vec![
        Segment::Key(table.to_string()),
        Segment::Index(index),
        Segment::Key(field.to_string()),
    ]
}

/// Semantic checks; also resolves relative paths against `base` and normalises domain names.
fn validate(config: &mut Config, base: &Path) -> Found {
    let mut found = Found::new();
    validate_server(config, &mut found);
    validate_account_names(config, &mut found);
    validate_listeners(config, &mut found);
    validate_relay(config, &mut found);
    validate_recipient_checks(config, base, &mut found);
    validate_routes(config, base, &mut found);
    validate_flow(config, &mut found);
    validate_rules(config, &mut found);
    validate_console(config, &mut found);
    validate_antivirus(config, &mut found);
    validate_antispam(config, &mut found);
    validate_tracking(config, &mut found);
    validate_tls_policy(config, base, &mut found);
    validate_milters(config, &mut found);
    ranges::check(config, &mut found);
    resolve_paths(config, base);
    validate_dkim(config, &mut found);
    validate_quarantine(config, &mut found);
    found
}

fn validate_console(config: &Config, found: &mut Found) {
    let Some(console) = &config.console else {
        return;
    };
    if console.certificate.is_some() != console.private_key.is_some() {
        found.push((
            key(&["console", "certificate"]),
            "certificate and private_key go together".into(),
        ));
    }
    if console.certificate.is_none() && config.tls.is_none() {
        found.push((
            key(&["console", "listen"]),
            "the console serves HTTPS only: set certificate/private_key or a [tls] section".into(),
        ));
    }
    validate_console_ops(console, found);
    for (i, node) in console.nodes.iter().enumerate() {
        if console.nodes[..i]
            .iter()
            .any(|other| other.name == node.name)
        {
            found.push((
                indexed_in(&["console", "node"], i, "name"),
                format!("node {:?} is listed twice", node.name),
            ));
        }
        if node
            .address
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            found.push((
                indexed_in(&["console", "node"], i, "address"),
                format!("{:?} is not host:port", node.address),
            ));
        }
    }
}

/// `[console.mail]`, `[console.alerts]`, `[console.reports]`, `[console.digest]`: what the
/// types cannot say (a rule's parameter, a node that must be listed, mail addresses).
fn validate_console_ops(console: &super::ConsoleConfig, found: &mut Found) {
    let listed = |name: &str| console.nodes.iter().any(|n| n.name == name);
    let wants_mail = console
        .alerts
        .as_ref()
        .is_some_and(|a| !a.mail_to.is_empty())
        || console
            .reports
            .as_ref()
            .is_some_and(|r| !r.mail_to.is_empty())
        || console.digest.is_some();
    match &console.mail {
        Some(mail) if !listed(&mail.node) => found.push((
            key(&["console", "mail", "node"]),
            format!("{:?} is not a [[console.node]] name", mail.node),
        )),
        None if wants_mail => found.push((
            key(&["console", "listen"]),
            "alerts, reports or digests are mailed: set [console.mail] node and from".into(),
        )),
        _ => {}
    }
    if console.digest.is_some() && console.public_url.is_none() {
        found.push((
            key(&["console", "digest"]),
            "digest links need [console] public_url (https://host:port)".into(),
        ));
    }
    for (field, list) in [
        ("alerts", console.alerts.as_ref().map(|a| &a.mail_to)),
        ("reports", console.reports.as_ref().map(|r| &r.mail_to)),
    ] {
        for address in list.into_iter().flatten() {
            if !address.contains('@') {
                found.push((
                    key(&["console", field, "mail_to"]),
                    format!("{address:?} is not a mail address"),
                ));
            }
        }
    }
    if let Some(reports) = &console.reports {
        if reports.hour > 23 {
            found.push((
                key(&["console", "reports", "hour"]),
                "an hour is 0 to 23".into(),
            ));
        }
    }
    if let Some(digest) = &console.digest {
        if digest.hour > 23 {
            found.push((
                key(&["console", "digest", "hour"]),
                "an hour is 0 to 23".into(),
            ));
        }
    }
    let Some(alerts) = &console.alerts else {
        return;
    };
    if let Some(url) = &alerts.webhook {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            found.push((
                key(&["console", "alerts", "webhook"]),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    for (i, rule) in alerts.rules.iter().enumerate() {
        let at = |field| indexed_in(&["console", "alerts", "rule"], i, field);
        if rule.when.needs_limit() && rule.limit.is_none() {
            found.push((at("when"), format!("{:?} needs a limit", rule.name)));
        }
        if rule.when.needs_duration() && rule.duration.is_zero() {
            found.push((at("when"), format!("{:?} needs a duration", rule.name)));
        }
        if let Some(bad) = rule.nodes.iter().find(|n| !listed(n)) {
            found.push((
                at("nodes"),
                format!("{bad:?} is not a [[console.node]] name"),
            ));
        }
    }
}

fn indexed_in(tables: &[&str], index: usize, field: &str) -> Vec<Segment> {
    let mut path = key(tables);
    path.push(Segment::Index(index));
    path.push(Segment::Key(field.to_string()));
    path
}

fn validate_rules(config: &Config, found: &mut Found) {
    for (i, rule) in config.rules.iter().enumerate() {
        for (field, index, message) in rule.problems() {
            let mut path = indexed("rule", i, field);
            if let Some(index) = index {
                path.push(Segment::Index(index));
            }
            found.push((path, message));
        }
    }
}

fn validate_antispam(config: &Config, found: &mut Found) {
    let Some(spam) = &config.antispam else {
        return;
    };
    let at = |field: &str| key(&["antispam", field]);
    if !(spam.tag_score <= spam.quarantine_score && spam.quarantine_score <= spam.reject_score) {
        found.push((
            at("tag_score"),
            "needs tag_score <= quarantine_score <= reject_score".into(),
        ));
    }
    for field in ["dnsbl", "uribl"] {
        let list = if field == "dnsbl" {
            &spam.dnsbl
        } else {
            &spam.uribl
        };
        for (i, entry) in list.iter().enumerate() {
            if let Err(message) = super::parse_list_entry(entry, 0.0) {
                found.push((element(&["antispam", field], i), message));
            }
        }
    }
    for field in ["allow", "block"] {
        let list = if field == "allow" {
            &spam.allow
        } else {
            &spam.block
        };
        for (i, entry) in list.iter().enumerate() {
            if let Err(message) = super::parse_allow_entry(entry) {
                found.push((element(&["antispam", field], i), message));
            }
        }
    }
    if spam.timeout.is_zero() {
        found.push((at("timeout"), "must not be 0".into()));
    }
}

/// After `resolve_paths`: each key must load, each domain be signed by one key only.
fn validate_dkim(config: &Config, found: &mut Found) {
    for (i, dkim) in config.dkim.iter().enumerate() {
        if let Some(problem) = crate::filters::dkim::key_problem(&dkim.private_key) {
            found.push((indexed("dkim", i, "private_key"), problem));
        }
        let selector_ok = !dkim.selector.is_empty()
            && dkim.selector.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !selector_ok {
            found.push((indexed("dkim", i, "selector"), "not a DNS label".into()));
        }
        if config.dkim[..i]
            .iter()
            .any(|d| d.domain.eq_ignore_ascii_case(&dkim.domain))
        {
            found.push((
                indexed("dkim", i, "domain"),
                "a second key for this domain".into(),
            ));
        }
    }
    if let Some(limit) = &config.outbound_limit {
        if limit.window.is_zero() {
            found.push((
                key(&["outbound_limit", "window"]),
                "must be greater than 0".into(),
            ));
        }
    }
}

fn validate_server(config: &Config, found: &mut Found) {
    let host = &config.server.hostname;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        found.push((
            key(&["server", "hostname"]),
            format!("{host:?} is not a valid host name"),
        ));
    }
}

/// User and group names as useradd(8) accepts them; whether they exist is checked when the
/// daemon drops privileges (the file is also checked on machines without the service user).
fn validate_account_names(config: &Config, found: &mut Found) {
    let accounts = [
        ("user", &config.server.user),
        ("group", &config.server.group),
    ];
    for (field, name) in accounts {
        let Some(name) = name else { continue };
        let valid = !name.is_empty()
            && name.len() <= 32
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            found.push((
                key(&["server", field]),
                format!("{name:?} is not a valid {field} name"),
            ));
        }
    }
}

fn validate_listeners(config: &Config, found: &mut Found) {
    if config.listeners.is_empty() {
        found.push((
            key(&["listener"]),
            "at least one [[listener]] is needed".into(),
        ));
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        let needs_tls = matches!(
            listener.role,
            ListenerRole::Submission | ListenerRole::Submissions
        );
        if needs_tls && config.tls.is_none() {
            found.push((
                indexed("listener", i, "role"),
                "submission and submissions listeners need a [tls] section".into(),
            ));
        }
        if needs_tls && config.auth.is_none() {
            found.push((
                indexed("listener", i, "role"),
                "submission and submissions listeners need an [auth] section".into(),
            ));
        }
        let duplicate = config.listeners[..i]
            .iter()
            .any(|other| other.address == listener.address);
        if duplicate {
            found.push((
                indexed("listener", i, "address"),
                format!("{} is already used by another listener", listener.address),
            ));
        }
    }
}

fn validate_relay(config: &mut Config, found: &mut Found) {
    for (i, domain) in config.relay.domains.iter_mut().enumerate() {
        if let Some(problem) = domains::entry_problem(domain, false) {
            found.push((element(&["relay", "domains"], i), problem));
        }
        *domain = domains::normalise(domain);
    }
    for (i, net) in config.relay.trusted_networks.iter().enumerate() {
        if net.prefix_len() == 0 {
            found.push((
                element(&["relay", "trusted_networks"], i),
                format!("{net} trusts the whole Internet: that is an open relay"),
            ));
        }
    }
}

fn validate_recipient_checks(config: &Config, base: &Path, found: &mut Found) {
    for (i, check) in config.recipient_checks.iter().enumerate() {
        match check.check {
            RecipientCheckKind::List => match &check.file {
                None => found.push((
                    indexed("recipients", i, "check"),
                    "check = \"list\" needs file = \"...\"".into(),
                )),
                Some(file) if !base.join(file).is_file() => found.push((
                    indexed("recipients", i, "file"),
                    format!(
                        "{} does not exist or is not a file",
                        base.join(file).display()
                    ),
                )),
                Some(_) => {}
            },
            RecipientCheckKind::Callout if check.next_hops.is_empty() => found.push((
                indexed("recipients", i, "check"),
                "check = \"callout\" needs next_hops = [\"host:port\", ...]".into(),
            )),
            _ => {}
        }
        for domain in &check.domains {
            let path = indexed("recipients", i, "domains");
            if let Some(problem) = domains::entry_problem(domain, false) {
                found.push((path, problem));
            } else if !domains::covered_by(&config.relay.domains, &domains::normalise(domain)) {
                found.push((
                    path,
                    format!("{domain:?} is not in relay.domains, so it is never checked"),
                ));
            }
        }
    }
}

fn validate_routes(config: &Config, base: &Path, found: &mut Found) {
    for (i, route) in config.routes.iter().enumerate() {
        if route.domains.is_empty() {
            found.push((
                indexed("route", i, "domains"),
                "name at least one domain, or \"*\"".into(),
            ));
        }
        for (j, domain) in route.domains.iter().enumerate() {
            if let Some(problem) = domains::entry_problem(domain, true) {
                let mut path = indexed("route", i, "domains");
                path.push(Segment::Index(j));
                found.push((path, problem));
            }
        }
        if route.maildir.is_some() && (route.smart_host.is_some() || !route.next_hops.is_empty()) {
            found.push((
                indexed("route", i, "maildir"),
                "a route delivers into a maildir or to next hops, not both".into(),
            ));
        }
        if route.smart_host.is_some() && !route.next_hops.is_empty() {
            found.push((
                indexed("route", i, "smart_host"),
                "use smart_host or next_hops, not both".into(),
            ));
        }
        let hops = route.smart_host.iter().chain(route.next_hops.iter());
        for hop in hops {
            if let Err(e) = crate::route::NextHop::parse(hop) {
                let field = if route.smart_host.as_ref() == Some(hop) {
                    "smart_host"
                } else {
                    "next_hops"
                };
                found.push((indexed("route", i, field), e.to_string()));
            }
        }
        if let Some(ca_file) = &route.ca_file {
            if !base.join(ca_file).is_file() {
                found.push((
                    indexed("route", i, "ca_file"),
                    format!(
                        "{} does not exist or is not a file",
                        base.join(ca_file).display()
                    ),
                ));
            }
        }
    }
}

fn validate_antivirus(config: &Config, found: &mut Found) {
    use super::AvEngine;
    use crate::filters::antivirus::{ClamdAddress, UpdateKey};
    let Some(av) = &config.antivirus else { return };
    let at = |field: &str| key(&["antivirus", field]);
    if av.engines.is_empty() {
        found.push((at("engines"), "name at least one engine".into()));
    }
    for (i, engine) in av.engines.iter().enumerate() {
        if av.engines[..i].contains(engine) {
            found.push((element(&["antivirus", "engines"], i), "listed twice".into()));
        }
    }
    if av.engines.contains(&AvEngine::Clamd) {
        if let Err(e) = ClamdAddress::parse(&av.clamd) {
            found.push((at("clamd"), e.to_string()));
        }
    }
    if av.max_scan_size == 0 {
        found.push((at("max_scan_size"), "must be greater than 0".into()));
    }
    if av.engines.contains(&AvEngine::Builtin) && av.max_scan_size > config.pipeline.max_parse_size
    {
        found.push((
            at("max_scan_size"),
            "the built-in engine reads what it scans in memory: keep it at most [pipeline] max_parse_size".into(),
        ));
    }
    if !av.update_public_key.is_empty() {
        if let Err(e) = UpdateKey::parse(&av.update_public_key) {
            found.push((at("update_public_key"), e.to_string()));
        }
    }
    if !av.update_url.is_empty() {
        if av.update_public_key.is_empty() {
            found.push((
                at("update_url"),
                "automatic updates need update_public_key to verify bundles".into(),
            ));
        }
        if !(av.update_url.starts_with("http://") || av.update_url.starts_with("https://")) {
            found.push((
                at("update_url"),
                "must be an http:// or https:// URL".into(),
            ));
        }
    }
    if av.update_interval < std::time::Duration::from_secs(1) {
        found.push((at("update_interval"), "must be at least 1s".into()));
    }
}

fn validate_tls_policy(config: &Config, base: &Path, found: &mut Found) {
    let policy = &config.tls_policy;
    if policy.mx_order.is_empty() {
        found.push((
            key(&["tls_policy", "mx_order"]),
            "must name at least one of dane, mta-sts, opportunistic".into(),
        ));
    }
    for (name, file) in [
        ("dnssec_trust_anchor", &policy.dnssec_trust_anchor),
        ("mta_sts_ca_file", &policy.mta_sts_ca_file),
    ] {
        if let Some(file) = file {
            if !base.join(file).is_file() {
                found.push((
                    key(&["tls_policy", name]),
                    format!("{} is not a readable file", base.join(file).display()),
                ));
            }
        }
    }
    if policy.report.interval.is_zero() {
        found.push((
            key(&["tls_policy", "report", "interval"]),
            "must be longer than 0".into(),
        ));
    }
    if let Some(publish) = &policy.publish {
        if !matches!(publish.mode.as_str(), "enforce" | "testing" | "none") {
            found.push((
                key(&["tls_policy", "publish", "mode"]),
                "must be enforce, testing or none".into(),
            ));
        }
        if publish.mx.is_empty() && publish.mode != "none" {
            found.push((
                key(&["tls_policy", "publish", "mx"]),
                "must name the MX hosts senders may use".into(),
            ));
        }
        if publish.max_age.as_secs() > crate::tls_policy::mta_sts::MAX_AGE_LIMIT {
            found.push((
                key(&["tls_policy", "publish", "max_age"]),
                "must be at most one year (31557600 s)".into(),
            ));
        }
    }
}

fn validate_tracking(config: &Config, found: &mut Found) {
    if config.tracking.retention.is_zero() {
        found.push((
            key(&["tracking", "retention"]),
            "must be greater than 0 (events would be purged as they are written)".into(),
        ));
    }
    if config.tracking.dir.as_os_str().is_empty() {
        found.push((key(&["tracking", "dir"]), "must name a directory".into()));
    }
}

fn validate_milters(config: &Config, found: &mut Found) {
    for (i, milter) in config.milters.iter().enumerate() {
        if milter.name.trim().is_empty() {
            found.push((indexed("milter", i, "name"), "must not be empty".into()));
        }
        if config.milters[..i].iter().any(|m| m.name == milter.name) {
            found.push((
                indexed("milter", i, "name"),
                format!("a milter named {:?} is already defined", milter.name),
            ));
        }
        let timeouts = [
            ("connect_timeout", milter.connect_timeout),
            ("command_timeout", milter.command_timeout),
            ("message_timeout", milter.message_timeout),
        ];
        for (field, timeout) in timeouts {
            if timeout.is_zero() {
                found.push((indexed("milter", i, field), "must not be 0".into()));
            }
        }
    }
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut config.server.spool_dir);
    resolve(&mut config.server.control_socket);
    for dkim in &mut config.dkim {
        resolve(&mut dkim.private_key);
    }
    for rule in &mut config.rules {
        if let Some(dir) = &mut rule.archive_dir {
            resolve(dir);
        }
    }
    if let Some(file) = config
        .outbound_limit
        .as_mut()
        .and_then(|l| l.state_file.as_mut())
    {
        resolve(file);
    }
    resolve(&mut config.tracking.dir);
    resolve(&mut config.tls_policy.state_dir);
    for file in [
        &mut config.tls_policy.dnssec_trust_anchor,
        &mut config.tls_policy.mta_sts_ca_file,
    ]
    .into_iter()
    .flatten()
    {
        resolve(file);
    }
    resolve(&mut config.quarantine.dir);
    if let Some(tls) = &mut config.tls {
        resolve(&mut tls.certificate);
        resolve(&mut tls.private_key);
    }
    if let Some(auth) = &mut config.auth {
        resolve(&mut auth.users_file);
    }
    if let Some(control) = &mut config.control {
        for path in [
            &mut control.ca,
            &mut control.certificate,
            &mut control.private_key,
        ] {
            resolve(path);
        }
    }
    if let Some(console) = &mut config.console {
        let paths = [
            &mut console.users_file,
            &mut console.client_certificate,
            &mut console.client_private_key,
            &mut console.ca,
        ];
        for path in paths {
            resolve(path);
        }
        let optional = [
            &mut console.certificate,
            &mut console.private_key,
            &mut console.audit_log,
        ];
        for path in optional.into_iter().flatten() {
            resolve(path);
        }
    }
    if let Some(av) = &mut config.antivirus {
        resolve(&mut av.signatures_dir);
    }
    if let Some(antispam) = &mut config.antispam {
        antispam.model.iter_mut().for_each(resolve);
        antispam.rules.iter_mut().for_each(resolve);
    }
    for route in &mut config.routes {
        if let Some(ca_file) = &mut route.ca_file {
            resolve(ca_file);
        }
        if let Some(maildir) = &mut route.maildir {
            resolve(maildir);
        }
        for domain in &mut route.domains {
            *domain = domains::normalise(domain);
        }
    }
    for check in &mut config.recipient_checks {
        if let Some(file) = &mut check.file {
            resolve(file);
        }
        for domain in &mut check.domains {
            *domain = domains::normalise(domain);
        }
    }
}

/// After `resolve_paths`: the quarantine must not share the spool's directory (both keep a
/// `tmp/` that they empty at start).
fn validate_quarantine(config: &Config, found: &mut Found) {
    let quarantine = &config.quarantine;
    if quarantine.retention.is_zero() {
        found.push((key(&["quarantine", "retention"]), "must not be 0".into()));
    }
    if quarantine.dir == config.server.spool_dir {
        found.push((
            key(&["quarantine", "dir"]),
            "must not be the spool directory".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
[server]
hostname = "mx1.example.com"
spool_dir = "/tmp/spool"
control_socket = "/tmp/ctl.sock"

[[listener]]
address = "127.0.0.1:2525"
role = "mx"

[relay]
domains = ["Example.com."]
trusted_networks = ["10.1.0.0/24"]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_str(text, "test.toml", Path::new("/"))
    }

    #[test]
    fn minimal_config_loads_and_normalises_domains() {
        let config = load(MINIMAL).expect("valid");
        assert_eq!(config.relay.domains, vec!["example.com"]);
        assert_eq!(config.limits.max_recipients, 1000);
    }

    #[test]
    fn flow_section_defaults_and_problems() {
        let config = load(MINIMAL).expect("valid");
        assert!(
            config.flow.interfaces.is_empty(),
            "no kernel attach by default"
        );
        assert_eq!(config.flow.ports, vec![25, 587, 465]);
        let text = MINIMAL.to_string()
            + "\n[flow]\ninterfaces = [\"eth0\"]\nsyn_rate = 5\nsyn_burst = 0\n\
               allow = [\"0.0.0.0/0\"]\nblock_seconds = \"1h\"\nports = [0]\n";
        let err = load(&text).expect_err("bad flow section");
        let paths: Vec<&str> = err.problems().iter().map(|p| p.key_path.as_str()).collect();
        assert_eq!(
            paths,
            ["flow.syn_burst", "flow.allow[0]", "flow.ports"],
            "{err}"
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_position() {
        let text = MINIMAL.replace("role = \"mx\"", "role = \"mx\"\nadress = \"x\"")
            + "\n[limits]\nmax_mesage_size = 5\n";
        let err = load(&text).expect_err("unknown keys");
        let problems = err.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].key_path, "listener[0].adress");
        assert_eq!((problems[0].line, problems[0].column), (10, 1));
        assert_eq!(problems[1].key_path, "limits.max_mesage_size");
    }

    #[test]
    fn type_errors_have_a_position() {
        let text = MINIMAL.replace("\"127.0.0.1:2525\"", "\"not an address\"");
        let err = load(&text).expect_err("bad address");
        assert_eq!(err.problems()[0].line, 8);
    }

    #[test]
    fn open_relay_configurations_are_refused() {
        let text = MINIMAL.replace("\"10.1.0.0/24\"", "\"0.0.0.0/0\"");
        let err = load(&text).expect_err("open relay");
        assert_eq!(err.problems()[0].key_path, "relay.trusted_networks[0]");
        let text = MINIMAL.replace("\"Example.com.\"", "\"*\"");
        assert!(load(&text).is_err());
    }

    #[test]
    fn service_user_names_are_checked() {
        let with = |line: &str| MINIMAL.replacen("[server]\n", &format!("[server]\n{line}\n"), 1);
        let config = load(&with("user = \"bulwark\"\ngroup = \"mail\"")).expect("valid");
        assert_eq!(config.server.group.as_deref(), Some("mail"));
        let err = load(&with("user = \"-rf x\"")).expect_err("invalid user");
        assert!(err.to_string().contains("server.user"), "{err}");
    }

    #[test]
    fn durations_accept_seconds_and_text() {
        let text = MINIMAL.to_string() + "\n[limits]\ncommand_timeout = \"2m\"\ndata_timeout = 7\n";
        let config = load(&text).expect("valid");
        assert_eq!(config.limits.command_timeout.as_secs(), 120);
        assert_eq!(config.limits.data_timeout.as_secs(), 7);
    }

    #[test]
    fn tracking_defaults_paths_and_problems() {
        let config = load(MINIMAL).expect("valid");
        assert_eq!(
            config.tracking.dir,
            PathBuf::from("/var/lib/bulwark/tracking")
        );
        assert_eq!(config.tracking.retention.as_secs(), 14 * 24 * 3600);
        let text = MINIMAL.to_string() + "\n[tracking]\ndir = \"track\"\nretention = \"2d\"\n";
        let config = load(&text).expect("valid");
        assert_eq!(
            config.tracking.dir,
            PathBuf::from("/track"),
            "relative to the file"
        );
        assert_eq!(config.tracking.retention.as_secs(), 2 * 24 * 3600);
        let text = MINIMAL.to_string() + "\n[tracking]\nretention = 0\n";
        let err = load(&text).expect_err("zero retention");
        assert_eq!(err.problems()[0].key_path, "tracking.retention", "{err}");
    }

    #[test]
    fn quarantine_defaults_and_problems() {
        let config = load(MINIMAL).expect("valid");
        assert_eq!(
            config.quarantine.dir,
            PathBuf::from("/var/lib/bulwark/quarantine")
        );
        assert_eq!(config.quarantine.retention.as_secs(), 30 * 24 * 3600);
        let text = MINIMAL.to_string() + "\n[quarantine]\ndir = \"q\"\nretention = \"2d\"\n";
        let config = load_str(&text, "test.toml", Path::new("/etc/bulwark")).expect("valid");
        assert_eq!(config.quarantine.dir, PathBuf::from("/etc/bulwark/q"));
        assert_eq!(config.quarantine.retention.as_secs(), 2 * 24 * 3600);
        let text = MINIMAL.to_string() + "\n[quarantine]\ndir = \"/tmp/spool\"\nretention = 0\n";
        let err = load(&text).expect_err("bad quarantine");
        let paths: Vec<&str> = err.problems().iter().map(|p| p.key_path.as_str()).collect();
        assert_eq!(paths, ["quarantine.dir", "quarantine.retention"], "{err}");
    }
}

#[cfg(test)]
mod shipped_example {
    use super::*;

    #[test]
    fn milters_load_with_defaults_and_problems() {
        let load = |text: &str| load_str(text, "test.toml", Path::new("/"));
        let base = "[server]\nhostname = \"mx.example\"\nspool_dir = \"/var/spool/b\"\ncontrol_socket = \"/run/b.sock\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n";
        let good = format!("{base}[[milter]]\nname = \"rspamd\"\naddress = \"inet:11332@127.0.0.1\"\ncommand_timeout = \"5s\"\n");
        let config = load(&good).expect("valid milter");
        let milter = &config.milters[0];
        assert_eq!(milter.command_timeout, std::time::Duration::from_secs(5));
        assert_eq!(milter.default_action, crate::config::OnError::Tempfail);
        assert_eq!(milter.rcpt_macros, ["i", "{rcpt_addr}", "{rcpt_host}"]);
        let bad = format!("{base}[[milter]]\nname = \"a\"\naddress = \"unix:/s\"\nconnect_timeout = 0\n[[milter]]\nname = \"a\"\naddress = \"unix:/t\"\n");
        let error = load(&bad).expect_err("two problems");
        let paths: Vec<_> = error
            .problems()
            .iter()
            .map(|p| p.key_path.clone())
            .collect();
        assert_eq!(paths, ["milter[0].connect_timeout", "milter[1].name"]);
        let address = format!("{base}[[milter]]\nname = \"a\"\naddress = \"11332\"\n");
        assert!(load(&address)
            .expect_err("bad address")
            .to_string()
            .contains("inet:PORT@HOST"));
    }

    #[test]
    fn packaged_example_config_is_valid() {
        let text = include_str!("../../../packaging/bulwark.toml");
        let config = load_str(text, "packaging/bulwark.toml", Path::new("/etc/bulwark"))
            .expect("the shipped example must load");
        assert_eq!(config.server.spool_dir, PathBuf::from("/var/spool/bulwark"));
        assert_eq!(config.server.user.as_deref(), Some("bulwark"));
        assert_eq!(
            config.quarantine.dir,
            PathBuf::from("/var/lib/bulwark/quarantine")
        );
    }

    #[test]
    fn packaged_antivirus_block_is_valid_when_uncommented() {
        let text = include_str!("../../../packaging/bulwark.toml");
        let start = text.find("#[antivirus]").expect("documented");
        let block: String = text[start..]
            .lines()
            .map(|l| {
                if l.starts_with("#[")
                    || l.starts_with("#") && l.contains(" = ") && !l.starts_with("# ")
                {
                    &l[1..]
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{}{block}\n", &text[..start]);
        let config = load_str(&text, "packaging/bulwark.toml", Path::new("/etc/bulwark"))
            .expect("the uncommented [antivirus] block must load");
        let av = config.antivirus.expect("[antivirus] present");
        assert_eq!(av.max_scan_size, 25 << 20);
        assert_eq!(av.engines.len(), 2);
        assert_eq!(av.update_interval.as_secs(), 3600);
        assert_eq!(av.max_signature_age.as_secs(), 7 * 24 * 3600);
    }

    #[test]
    fn antivirus_problems_are_located() {
        let text = super::tests::MINIMAL.to_string()
            + "\n[antivirus]\nengines = [\"clamd\", \"clamd\"]\nclamd = \"localhost:3310\"\n\
               max_scan_size = \"25 parsecs\"\n";
        let err = load_str(&text, "t", Path::new("/")).expect_err("bad size");
        assert!(err.to_string().contains("invalid size"), "{err}");
        let text = text.replace("\"25 parsecs\"", "\"1MB\"") + "update_url = \"ftp://x\"\n";
        let err = load_str(&text, "t", Path::new("/")).expect_err("bad antivirus");
        let paths: Vec<&str> = err.problems().iter().map(|p| p.key_path.as_str()).collect();
        assert!(paths.contains(&"antivirus.engines[1]"), "{paths:?}");
        assert!(paths.contains(&"antivirus.clamd"), "{paths:?}");
        assert!(paths.contains(&"antivirus.update_url"), "{paths:?}");
    }
}

fn validate_flow(config: &Config, found: &mut Found) {
    let flow = &config.flow;
    if flow.syn_rate > 0 && flow.syn_burst == 0 {
        found.push((
            key(&["flow", "syn_burst"]),
            "must be at least 1 when syn_rate is set".into(),
        ));
    }
    if flow.ports.is_empty() || flow.ports.contains(&0) || flow.ports.len() > 64 {
        found.push((
            key(&["flow", "ports"]),
            "needs 1 to 64 ports, none of them 0".into(),
        ));
    }
    if flow.harvest_window.is_zero() {
        found.push((key(&["flow", "harvest_window"]), "must not be 0".into()));
    }
    if flow.block_seconds.is_zero() {
        found.push((key(&["flow", "block_seconds"]), "must not be 0".into()));
    }
    for (i, name) in flow.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            found.push((
                element(&["flow", "interfaces"], i),
                format!("{name:?} is not an interface name"),
            ));
        }
    }
    for (i, net) in flow.allow.iter().enumerate() {
        if net.prefix_len() == 0 {
            found.push((
                element(&["flow", "allow"], i),
                format!("{net} would exempt the whole Internet from flow control"),
            ));
        }
    }
}
