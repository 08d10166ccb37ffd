//! `bulwarkctl`: manage a running bulwarkd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark::admin::client::call;
use bulwark::admin::protocol::Request;
use bulwark::admin::users::{self, Role};
use bulwark::daemon::ConfigSource;
use bulwark::quarantine::Filter;
use bulwark::track::{Query, Timeline};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::Value;

#[path = "ctl/spam.rs"]
mod spam;

#[derive(Parser)]
#[command(
    name = "bulwarkctl",
    version,
    about = "Manage the Bulwark mail gateway"
)]
struct Args {
    /// The daemon's control socket (default: from the configuration).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The daemon's configuration file, to find its control socket.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Daemon status: listeners, sessions, counters, queue size.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The mail queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Reload the configuration, TLS certificates and lists (as SIGHUP does); prints each
    /// changed key, applied or waiting for a restart.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Set the daemon's log level now (off, error, warn, info, debug, trace); until restart.
    LogLevel { level: String },
    /// The configuration: the running one, the built-in defaults, or what differs from the file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Flow control: connection-rate limits and blocked sources.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Outbound transport security (DANE, MTA-STS, TLS-RPT).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Anti-virus: engines, signatures and updates.
    Av {
        #[command(subcommand)]
        command: AvCommand,
    },
    /// The anti-spam model: train, learn, score (offline, no daemon needed).
    Spam {
        #[command(subcommand)]
        command: SpamCommand,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// A message's timeline: received, verdicts, queued, delivery attempts and outcomes.
    /// Filters combine; with none, the last hour.
    Track {
        /// The queue id of the "250 ... queued as ID" reply (also shows the messages split or
        /// copied from it, and those sharing its Message-ID).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// The Message-ID, with or without angle brackets.
        #[arg(long = "message-id", value_name = "MID")]
        message_id: Option<String>,
        #[arg(long, value_name = "S")]
        sender: Option<String>,
        #[arg(long, value_name = "R")]
        recipient: Option<String>,
        /// Only events this recent, e.g. 90s, 30m, 2h, 1d (or seconds).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// A JSON array of events.
        #[arg(long)]
        json: bool,
    },
    /// Messages a rule or filter stopped: search, read, release, delete.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// The web console's users (the users file; no daemon needed).
    Console {
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// The control federation's certificates.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Console users.
    User {
        #[command(subcommand)]
        command: UserCommand,
        /// The users file (default: `[console] users_file` of the configuration).
        #[arg(long, global = true, value_name = "PATH")]
        users_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user or replace one's password and role; the password is read from stdin.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// A recipient domain a quarantine manager manages (repeat for several).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Give the user a TOTP second factor; prints its secret and otpauth URI.
        #[arg(long)]
        totp: bool,
    },
    Remove {
        name: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Make (or reuse) the CA, this node's server certificate and the console's client
    /// certificate under DIR; prints the [control] and [[console.node]] settings.
    Enroll {
        /// The node's name (also the first name in its certificate).
        #[arg(long)]
        name: String,
        /// Further host names or IP addresses the console reaches the node by.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Where the certificates live.
        #[arg(long, default_value = "/etc/bulwark/control")]
        dir: PathBuf,
        /// The node's [control] listen address, for the printed settings.
        #[arg(long, default_value = "0.0.0.0:9443")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// The effective outbound TLS policy for mail to DOMAIN, per MX host, and why.
    Policy {
        domain: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AvCommand {
    /// Engines, signature versions and ages, scans, detections, errors.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Install a signature bundle (a zip of signature files; its Ed25519 signature in FILE.sig).
    Update { file: PathBuf },
    /// Reload the signature directory after a change made outside Bulwark.
    Reload,
}

#[derive(Subcommand)]
enum SpamCommand {
    /// Build a model file from a directory of spam and one of ham (one message a file).
    Train {
        #[arg(long, value_name = "DIR")]
        spam: PathBuf,
        #[arg(long, value_name = "DIR")]
        ham: PathBuf,
        /// Where to write the model (default: [antispam] model).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Model size: 2^BITS weights of 2 bytes (10..=20; the shipped model's by default).
        #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(10..=20))]
        bits: Option<u8>,
        /// Passes over the training messages.
        #[arg(long, value_name = "N")]
        epochs: Option<usize>,
        /// L2 regularisation per update.
        #[arg(long, value_name = "X")]
        l2: Option<f32>,
        /// Weight of a spam example's error against a ham example's.
        #[arg(long, value_name = "X")]
        spam_weight: Option<f32>,
    },
    /// Teach the model one message (updates [antispam] model, or --model).
    Learn {
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "ham",
            required_unless_present = "ham"
        )]
        spam: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        ham: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
    },
    /// Score messages offline (classifier and rules; no DNS): one line per file.
    Check {
        files: Vec<PathBuf>,
        /// A model file (default: [antispam] model, else the built-in one).
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// A rules file (default: [antispam] rules, else the built-in rules).
        #[arg(long, value_name = "PATH")]
        rules: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new key for DOMAIN and SELECTOR and print the DNS TXT record to publish.
    Keygen {
        domain: String,
        selector: String,
        /// rsa (2048 bits, what every verifier knows) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the key (default: ./DOMAIN.SELECTOR.pem); never overwritten.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// `bulwarkctl dkim keygen`: local, no daemon needed.
fn dkim_keygen(command: DkimCommand) -> ExitCode {
    use bulwark::filters::dkim::keygen::{self, Algorithm};
    let DkimCommand::Keygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    } = command;
    let algorithm = match algorithm.to_ascii_lowercase().as_str() {
        "rsa" if (2048..=8192).contains(&bits) => Algorithm::Rsa(bits),
        "rsa" => {
            eprintln!("bulwarkctl: --bits must be between 2048 and 8192");
            return ExitCode::FAILURE;
        }
        "ed25519" => Algorithm::Ed25519,
        other => {
            eprintln!("bulwarkctl: unknown algorithm {other:?} (rsa or ed25519)");
            return ExitCode::FAILURE;
        }
    };
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    let written = keygen::generate(algorithm)
        .and_then(|generated| keygen::write_new(&path, &generated.pem).map(|()| generated));
    match written {
        Ok(generated) => {
            println!("# key written to {}", path.display());
            println!("# publish this record in DNS:");
            println!(
                "{}",
                keygen::zone_line(&domain, &selector, &generated.record)
            );
            println!("# and add to bulwark.toml:");
            println!(
                "# [[dkim]]\n# domain = \"{domain}\"\n# selector = \"{selector}\"\n# private_key = \"{}\"",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwarkctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined messages, newest first; text filters match a case-insensitive part.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "S")]
        sender: Option<String>,
        #[arg(long, value_name = "R")]
        recipient: Option<String>,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[arg(long, value_name = "TEXT")]
        subject: Option<String>,
        /// Quarantined within this long, e.g. 2h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// inbound or outbound.
        #[arg(long, value_name = "DIRECTION")]
        direction: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one message: why it was stopped, its envelope, and the message as text.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Write the message exactly as it arrived to standard output (download).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Deliver messages (once): to every recipient not yet released, or only to --to.
    Release {
        ids: Vec<String>,
        /// One of the message's original recipients.
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// The anti-spam verdict was wrong: learn each message as ham first.
        #[arg(long)]
        not_spam: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete messages from the quarantine for good.
    Delete {
        ids: Vec<String>,
        /// Confirmed spam: learn each message as spam first.
        #[arg(long)]
        spam: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The running configuration as TOML (postconf -n); `--defaults`: the built-in default
    /// configuration (postconf -d), without asking the daemon.
    Show {
        #[arg(long)]
        defaults: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every key whose running value differs from the configuration file, and whether a
    /// reload would apply it or it needs a restart.
    Diff {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FlowCommand {
    /// Where the limits are enforced (XDP interfaces or userspace) and the counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The busiest sources: dropped and passed connections.
    Top {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Block ADDR or ADDR/LEN (IPv4 or IPv6).
    Block {
        target: String,
        /// How long, e.g. 3600, 30m, 1h (default: until unblocked).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a block (exactly as it was given).
    Unblock {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Blocked sources with the time left.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the pinned XDP program and maps (uninstall; stop bulwarkd first).
    Detach {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages (all, or those the filters select).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        select: Selection,
    },
    /// Show one message's envelope and header (or whole content with --body); --history adds
    /// every attempt and state change.
    Show {
        id: String,
        #[arg(long)]
        body: bool,
        #[arg(long)]
        history: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep messages from being delivered until released.
    Hold {
        ids: Vec<String>,
        #[command(flatten)]
        select: Selection,
    },
    /// Release held messages.
    Release {
        ids: Vec<String>,
        #[command(flatten)]
        select: Selection,
    },
    /// Delete messages from the queue for good.
    Delete {
        ids: Vec<String>,
        #[command(flatten)]
        select: Selection,
    },
    /// Retry every queued message now, dead destinations included; or only one
    /// destination's mail (`--destination`, as `queue destinations` names it).
    Flush {
        #[arg(long, value_name = "DESTINATION")]
        destination: Option<String>,
    },
    /// Try one message now.
    Deliver { id: String },
    /// Route messages again with the running configuration and try them now (postsuper -r),
    /// e.g. after a route change: mail waiting for the old next hop moves to the new one.
    Requeue {
        ids: Vec<String>,
        #[command(flatten)]
        select: Selection,
    },
    /// Per-destination delivery state: up/down, queued, connections, last error.
    Destinations {
        #[arg(long)]
        json: bool,
    },
}

/// Which queued messages a command acts on besides the ids named (postsuper's `ALL` with
/// filters): `--all` alone is every message; each filter narrows it.
#[derive(clap::Args, Clone, Default)]
struct Selection {
    /// Every message (narrowed by the filters below); needed when no id is named.
    #[arg(long)]
    all: bool,
    /// Only messages in this state (queued, hold).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only messages from this sender ("<>" for the null sender).
    #[arg(long, value_name = "ADDRESS")]
    sender: Option<String>,
    /// Only messages with this recipient.
    #[arg(long, value_name = "ADDRESS")]
    recipient: Option<String>,
    /// Only messages with a recipient in this domain.
    #[arg(long, value_name = "DOMAIN")]
    destination: Option<String>,
}

impl Selection {
    fn filters(&self) -> bool {
        self.state.is_some()
            || self.sender.is_some()
            || self.recipient.is_some()
            || self.destination.is_some()
    }

    fn matches(&self, entry: &Value) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let recipients: Vec<&str> = entry["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let sender = entry["sender"].as_str().unwrap_or("");
        self.state
            .as_deref()
            .is_none_or(|s| same(s, entry["state"].as_str().unwrap_or("")))
            && self
                .sender
                .as_deref()
                .is_none_or(|s| same(s.trim_matches(['<', '>']), sender))
            && self
                .recipient
                .as_deref()
                .is_none_or(|r| recipients.iter().any(|x| same(x, r)))
            && self.destination.as_deref().is_none_or(|d| {
                let d = d.trim_end_matches('.');
                recipients.iter().any(|x| {
                    x.rsplit_once('@')
                        .is_some_and(|(_, domain)| same(domain, d))
                })
            })
    }

    /// `ids` plus the ids of the queued messages selected (asks the daemon for the list).
    fn expand(
        &self,
        socket: &std::path::Path,
        mut ids: Vec<String>,
    ) -> Result<Vec<String>, String> {
        if !self.all {
            if self.filters() {
                return Err("filters select from --all: add --all".into());
            }
            return Ok(ids);
        }
        let listed = call(socket, &Request::QueueList).map_err(|e| e.to_string())?;
        for entry in listed.result.as_array().into_iter().flatten() {
            if self.matches(entry) {
                ids.extend(entry["id"].as_str().map(str::to_string));
            }
        }
        Ok(ids)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let args = match args.command {
        Command::Dkim { command } => return dkim_keygen(command),
        command => Args { command, ..args },
    };
    let local = match &args.command {
        Command::Console { command } => Some(console_command(command, &args.config)),
        Command::Node { command } => Some(node_command(command)),
        _ => None,
    };
    if let Some(outcome) = local {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("bulwarkctl: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Spam { command } = args.command {
        return match spam::run(command, &args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("bulwarkctl: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Config {
        command: ConfigCommand::Show {
            defaults: true,
            json,
        },
    } = args.command
    {
        let defaults = serde_json::to_value(bulwark::config::builtin_default());
        print_config(&defaults.unwrap_or_default(), json);
        return ExitCode::SUCCESS;
    }
    let socket = match socket_path(&args) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("bulwarkctl: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut list_filter: Option<Selection> = None;
    let (request, printer): (Request, fn(&Value)) = match args.command {
        Command::Status { json } => (
            Request::Status,
            if json { print_json } else { print_status },
        ),
        Command::Console { .. } | Command::Node { .. } => return ExitCode::SUCCESS,
        Command::Spam { .. } => return ExitCode::SUCCESS,
        // Handled above: it needs no daemon.
        Command::Dkim { .. } => return ExitCode::SUCCESS,
        Command::Track {
            id,
            message_id,
            sender,
            recipient,
            since,
            json,
        } => {
            let since_seconds = match since.as_deref().map(parse_since).transpose() {
                Ok(seconds) => seconds,
                Err(message) => {
                    eprintln!("bulwarkctl: {message}");
                    return ExitCode::FAILURE;
                }
            };
            let query = Query {
                id,
                message_id,
                sender,
                recipient,
                since_seconds,
            };
            (
                Request::Track(query),
                if json { print_track_json } else { print_track },
            )
        }
        Command::LogLevel { level } => (Request::LogLevel { level }, print_done),
        Command::Reload { json } => (Request::Reload, pick(json, print_reload)),
        Command::Config { command } => match command {
            ConfigCommand::Show { json, .. } => (
                Request::ConfigShow,
                if json { print_json } else { print_toml },
            ),
            ConfigCommand::Diff { json } => (Request::ConfigDiff, pick(json, print_diff)),
        },
        Command::Flow { command } => match flow_request(command, &args.config) {
            Ok(Some(pair)) => pair,
            Ok(None) => return ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("bulwarkctl: {message}");
                return ExitCode::FAILURE;
            }
        },
        Command::Tls {
            command: TlsCommand::Policy { domain, json },
        } => (
            Request::TlsPolicy { domain },
            if json { print_json } else { print_tls_policy },
        ),
        Command::Av { command } => match av_request(command) {
            Ok(pair) => pair,
            Err(message) => {
                eprintln!("bulwarkctl: {message}");
                return ExitCode::FAILURE;
            }
        },
        Command::Quarantine { command } => match quarantine_request(command) {
            Ok(pair) => pair,
            Err(message) => {
                eprintln!("bulwarkctl: {message}");
                return ExitCode::FAILURE;
            }
        },
        Command::Queue { command } => match command {
            QueueCommand::List { json, select } => {
                list_filter = Some(select);
                (
                    Request::QueueList,
                    if json { print_json } else { print_queue },
                )
            }
            QueueCommand::Show {
                id,
                body,
                history,
                json,
            } => (
                Request::QueueShow { id, body, history },
                if json { print_json } else { print_show },
            ),
            QueueCommand::Hold { ids, select } => match select.expand(&socket, ids) {
                Ok(ids) if ids.is_empty() && select.all => return nothing_selected(),
                Ok(ids) => (Request::QueueHold { ids }, print_done),
                Err(e) => return failure(&e),
            },
            QueueCommand::Release { ids, select } => match select.expand(&socket, ids) {
                Ok(ids) if ids.is_empty() && select.all => return nothing_selected(),
                Ok(ids) => (Request::QueueRelease { ids }, print_done),
                Err(e) => return failure(&e),
            },
            QueueCommand::Delete { ids, select } => match select.expand(&socket, ids) {
                Ok(ids) if ids.is_empty() && select.all => return nothing_selected(),
                Ok(ids) => (Request::QueueDelete { ids }, print_done),
                Err(e) => return failure(&e),
            },
            QueueCommand::Flush { destination } => {
                (Request::QueueFlush { destination }, print_done)
            }
            QueueCommand::Deliver { id } => (Request::QueueDeliver { id }, print_done),
            QueueCommand::Requeue { ids, select } => match select.expand(&socket, ids) {
                Ok(ids) if ids.is_empty() && select.all => return nothing_selected(),
                Ok(ids) => (Request::QueueRequeue { ids }, print_requeued),
                Err(e) => return failure(&e),
            },
            QueueCommand::Destinations { json } => (
                Request::QueueDestinations,
                if json { print_json } else { print_destinations },
            ),
        },
    };
    if request_needs_ids(&request) {
        eprintln!("bulwarkctl: name at least one queue id");
        return ExitCode::FAILURE;
    }
    match call(&socket, &request) {
        Ok(mut response) if response.ok => {
            if let (Some(select), Value::Array(entries)) = (&list_filter, &mut response.result) {
                entries.retain(|entry| select.matches(entry));
            }
            printer(&response.result);
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("bulwarkctl: {}", response.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bulwarkctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn users_file(explicit: &Option<PathBuf>, config: &Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return Ok(path.clone());
    }
    let config = ConfigSource::choose(config.clone())
        .load()
        .map_err(|e| e.to_string())?;
    config
        .console
        .map(|console| console.users_file)
        .ok_or_else(|| "the configuration has no [console] section: give --users-file".into())
}

fn console_command(command: &ConsoleCommand, config: &Option<PathBuf>) -> Result<(), String> {
    let ConsoleCommand::User {
        command,
        users_file: explicit,
    } = command;
    let path = users_file(explicit, config)?;
    let mut list = users::load(&path).map_err(|e| e.to_string())?;
    match command {
        UserCommand::Add {
            name,
            role,
            domains,
            totp,
        } => {
            let user = new_user(name, *role, domains, *totp)?;
            list.retain(|u| u.name != user.name);
            list.push(user);
        }
        UserCommand::Remove { name } => {
            let before = list.len();
            list.retain(|u| &u.name != name);
            if list.len() == before {
                return Err(users::UsersError::NoSuchUser(name.clone()).to_string());
            }
        }
        UserCommand::List { json } => {
            print_users(&list, *json);
            return Ok(());
        }
    }
    users::save(&path, &list).map_err(|e| e.to_string())
}

fn new_user(name: &str, role: Role, domains: &[String], totp: bool) -> Result<users::User, String> {
    if !users::valid_name(name) {
        return Err(users::UsersError::BadName(name.into()).to_string());
    }
    if role == Role::Quarantine && domains.is_empty() {
        return Err(users::UsersError::NoDomains.to_string());
    }
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        return Err("the password (read from stdin) must have at least 8 characters".into());
    }
    let secret = if totp {
        Some(users::new_totp_secret().map_err(|e| e.to_string())?)
    } else {
        None
    };
    if let Some(secret) = &secret {
        println!("totp secret: {secret}");
        println!("otpauth://totp/Bulwark:{name}?secret={secret}&issuer=Bulwark");
    }
    Ok(users::User {
        name: name.to_string(),
        role,
        password: users::hash_password(password).map_err(|e| e.to_string())?,
        totp: secret,
        domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
    })
}

fn print_users(list: &[users::User], json: bool) {
    if json {
        let shown: Vec<Value> = list
            .iter()
            .map(|u| serde_json::json!({ "name": u.name, "role": u.role, "totp": u.totp.is_some(), "domains": u.domains }))
            .collect();
        print_json(&Value::Array(shown));
        return;
    }
    for u in list {
        let totp = if u.totp.is_some() { " totp" } else { "" };
        println!("{} {:?}{totp} {}", u.name, u.role, u.domains.join(","));
    }
}

fn node_command(command: &NodeCommand) -> Result<(), String> {
    let NodeCommand::Enroll {
        name,
        hosts,
        dir,
        listen,
    } = command;
    let done = bulwark::admin::enroll::enroll(dir, name, hosts).map_err(|e| e.to_string())?;
    let host = hosts.first().unwrap_or(name);
    let port = listen.rsplit_once(':').map_or("9443", |(_, p)| p);
    println!("# on node {name}:\n[control]\nlisten = {listen:?}\nca = {:?}\ncertificate = {:?}\nprivate_key = {:?}\n",
        done.ca, done.node_certificate, done.node_private_key);
    println!("# on the console:\n[console]\nclient_certificate = {:?}\nclient_private_key = {:?}\nca = {:?}\n",
        done.console_certificate, done.console_private_key, done.ca);
    println!(
        "[[console.node]]\nname = {name:?}\naddress = \"{host}:{port}\"\nserver_name = {name:?}"
    );
    Ok(())
}

fn av_request(command: AvCommand) -> Result<Call, String> {
    Ok(match command {
        AvCommand::Status { json } => (
            Request::AvStatus,
            if json { print_json } else { print_av_status },
        ),
        AvCommand::Update { file } => {
            // The daemon reads the file: give it a path that does not depend on our cwd.
            let path =
                std::fs::canonicalize(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let path = path.to_str().ok_or("the path is not UTF-8")?.to_string();
            (Request::AvUpdate { path }, print_done)
        }
        AvCommand::Reload => (Request::AvReload, print_done),
    })
}

fn print_av_status(value: &Value) {
    let order: Vec<String> = value["order"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    println!("anti-virus engines: {}", order.join(", "));
    for name in &order {
        let engine = &value["engines"][name];
        let c = &engine["counters"];
        let counts = format!(
            "{} scans, {} detections, {} errors",
            c["scans"], c["detections"], c["errors"]
        );
        if name == "clamd" {
            let up = match engine["up"].as_bool() {
                Some(true) => "up",
                Some(false) => "DOWN",
                None => "not checked yet",
            };
            let v = &engine["version"];
            println!(
                "  clamd {} ({up}): engine {}, database {}, age {} s{}; {counts}",
                text(&engine["address"]),
                text(&v["engine"]),
                text(&v["database"]),
                text(&engine["database_age_seconds"]),
                if engine["stale"] == true {
                    " STALE"
                } else {
                    ""
                }
            );
            if let Some(error) = engine["last_error"].as_str() {
                println!("    last error: {error}");
            }
        } else {
            println!(
                "  builtin {}: version {}, {} MD5 + {} SHA-256 signatures, age {} s{}; {counts}",
                text(&engine["signatures_dir"]),
                text(&engine["version"]),
                engine["md5_signatures"],
                engine["sha256_signatures"],
                text(&engine["age_seconds"]),
                if engine["stale"] == true {
                    " STALE"
                } else {
                    ""
                }
            );
            println!("    {}", yara_summary(engine));
        }
    }
    println!(
        "  not scanned (over {} bytes): {}",
        value["max_scan_size"], value["too_large"]
    );
    let u = &value["last_update"];
    if !u.is_null() {
        println!(
            "  last update: {} from {} at {}",
            text(&u["result"]),
            text(&u["source"]),
            u["at"]
        );
    }
}

/// The built-in engine's YARA line: rules in use, or rule files this build ignores.
fn yara_summary(engine: &Value) -> String {
    if engine["yara_compiled_in"] == true {
        format!(
            "YARA: {} rules from {} files",
            engine["yara_rules"], engine["yara_files"]
        )
    } else {
        format!(
            "YARA: not in this build (cargo feature `yara`), {} rule files ignored",
            engine["yara_files_ignored"]
        )
    }
}

fn failure(message: &str) -> ExitCode {
    eprintln!("bulwarkctl: {message}");
    ExitCode::FAILURE
}

fn nothing_selected() -> ExitCode {
    println!("no queued message matches");
    ExitCode::SUCCESS
}

fn request_needs_ids(request: &Request) -> bool {
    matches!(request,
        Request::QueueHold { ids } | Request::QueueRelease { ids } | Request::QueueDelete { ids }
        | Request::QueueRequeue { ids }
        | Request::QuarantineRelease { ids, .. } | Request::QuarantineDelete { ids, .. }
        if ids.is_empty())
}

/// `--socket`, else the configuration's `server.control_socket`. A configuration with
/// problems elsewhere (the daemon may still run an older, valid one) still names its
/// socket: then only that key is read.
fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    let source = ConfigSource::choose(args.config.clone());
    let error = match source.load() {
        Ok(config) => return Ok(config.server.control_socket),
        Err(error) => error,
    };
    match &source {
        ConfigSource::File(path) => socket_named_in(path).ok_or_else(|| error.to_string()),
        ConfigSource::BuiltIn => Err(error.to_string()),
    }
}

fn socket_named_in(path: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let socket = PathBuf::from(table.get("server")?.get("control_socket")?.as_str()?);
    Some(match path.parent() {
        Some(base) if socket.is_relative() => base.join(socket),
        _ => socket,
    })
}

fn print_reload(value: &Value) {
    println!("configuration reloaded");
    for change in value["applied"].as_array().into_iter().flatten() {
        println!(
            "  applied        {}: {} -> {}",
            text(&change["key"]),
            change["running"],
            change["file"]
        );
    }
    for change in value["needs_restart"].as_array().into_iter().flatten() {
        println!(
            "  needs restart  {}: running {}, file {}",
            text(&change["key"]),
            change["running"],
            change["file"]
        );
    }
}

fn print_diff(value: &Value) {
    let Some(changes) = value.as_array() else {
        return;
    };
    if changes.is_empty() {
        println!("the running configuration is the file's");
        return;
    }
    let width = changes
        .iter()
        .map(|c| text(&c["key"]).len())
        .max()
        .unwrap_or(0);
    for c in changes {
        let when = if c["applies"] == "at_restart" {
            "restart"
        } else {
            "reload"
        };
        println!(
            "{:<width$}  running {}  file {}  (applies on {when})",
            text(&c["key"]),
            c["running"],
            c["file"]
        );
    }
}

fn print_toml(value: &Value) {
    print_config(value, false);
}

fn print_config(value: &Value, json: bool) {
    if json {
        return print_json(value);
    }
    match toml::to_string(&without_nulls(value.clone())) {
        Ok(text) => print!("{text}"),
        Err(_) => print_json(value),
    }
}

/// TOML has no null: unset optional keys are left out, as in a file.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// `--json` prints the daemon's answer as is; otherwise `human` formats it.
fn pick(json: bool, human: fn(&Value)) -> fn(&Value) {
    if json {
        print_json
    } else {
        human
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn print_tls_policy(value: &Value) {
    println!("destination: {}", text(&value["destination"]));
    println!("order: {}", text(&value["order"]));
    println!("MX answer DNSSEC-secure: {}", text(&value["dnssec_mx"]));
    match &value["mta_sts"] {
        Value::Null => println!("MTA-STS: no policy"),
        sts => println!("MTA-STS: {sts}"),
    }
    for host in value["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        println!(
            "  {}:{}  {}  ({})",
            text(&host["host"]),
            text(&host["port"]),
            text(&host["policy"]),
            text(&host["why"])
        );
    }
    if let Some(error) = value["error"].as_str() {
        println!("MX lookup: {error}");
    }
    if !value["tls_rpt"].is_null() {
        println!("TLS-RPT this period: {}", value["tls_rpt"]);
    }
}

fn print_done(value: &Value) {
    if let Some(map) = value.as_object() {
        let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("{}", parts.join(", "));
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_status(value: &Value) {
    println!(
        "bulwarkd {} on {}",
        text(&value["version"]),
        text(&value["hostname"])
    );
    println!("  pid {}, up {} s", value["pid"], value["uptime_seconds"]);
    if let Some(listeners) = value["listeners"].as_array() {
        for l in listeners {
            println!(
                "  listening on {} ({})",
                text(&l["address"]),
                text(&l["role"])
            );
        }
    }
    let s = &value["sessions"];
    println!(
        "  sessions: {} active, {} total, {} refused",
        s["active"], s["total"], s["refused"]
    );
    let m = &value["messages"];
    println!(
        "  messages: {} accepted ({} bytes), {} rejected; {} recipients rejected",
        m["accepted"], m["bytes_accepted"], m["rejected"], value["recipients_rejected"]
    );
    let q = &value["queue"];
    println!(
        "  queue: {} message(s), {} bytes",
        q["messages"], q["bytes"]
    );
    let j = &value["journal"];
    println!(
        "  spool journal: {} segment(s), {} bytes on disk",
        j["segments"], j["bytes"]
    );
    let t = &value["tracking"];
    println!(
        "  tracking: {} event(s) recorded, {} written, {} dropped, {} write failure(s)",
        t["recorded"], t["written"], t["dropped"], t["write_failures"]
    );
    let problems = &value["spool"]["recovery_problems"];
    if problems.as_u64().is_some_and(|n| n > 0) {
        println!(
            "  spool recovery: {problems} damaged state log(s), their messages held (see the log)"
        );
    }
}

fn print_queue(value: &Value) {
    let Some(entries) = value.as_array() else {
        return;
    };
    if entries.is_empty() {
        println!("Mail queue is empty");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{:<16} {:>7} {:>9} {:<6} {:<20} SENDER / RECIPIENTS",
        "ID", "AGE", "SIZE", "STATE", "NEXT ATTEMPT"
    );
    // Recipients and the last error line up under SENDER.
    let indent = " ".repeat(16 + 1 + 7 + 1 + 9 + 1 + 6 + 1 + 20 + 1);
    for e in entries {
        let age = now.saturating_sub(e["arrival"].as_u64().unwrap_or(now));
        let sender = e["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>");
        println!(
            "{:<16} {:>6}s {:>9} {:<6} {:<20} {}",
            text(&e["id"]),
            age,
            e["size"].as_u64().unwrap_or(0),
            text(&e["state"]),
            unix_time(&e["next_attempt"]),
            sender
        );
        for r in e["recipients"].as_array().into_iter().flatten() {
            println!("{indent}{}", text(r));
        }
        if !e["last_error"].is_null() {
            println!("{indent}({})", text(&e["last_error"]));
        }
    }
    println!("-- {} message(s)", entries.len());
}

/// A Unix time as `2026-12-02T04:33:13Z` (UTC); `-` when none is scheduled.
fn unix_time(value: &Value) -> String {
    match value.as_u64() {
        Some(secs) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        None => "-".into(),
    }
}

fn print_show(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value["envelope"]).unwrap_or_default()
    );
    println!("state: {}", text(&value["entry"]["state"]));
    if let Some(history) = value["history"].as_array() {
        print_history(history, &value["envelope"]);
    }
    if let Some(attempts) = value["attempts"].as_array() {
        print_attempts(attempts);
    }
    if !value["tracking_error"].is_null() {
        println!(
            "attempts: tracking store unavailable: {}",
            text(&value["tracking_error"])
        );
    }
    println!();
    print!("{}", text(&value["content"]).replace("\r\n", "\n"));
}

/// The state log, one line per record: attempts with their error and next try, recipients'
/// final outcomes, the operator's holds and releases.
fn print_history(history: &[Value], envelope: &Value) {
    println!("history:");
    if history.is_empty() {
        println!("  (no attempt yet)");
    }
    for record in history {
        let when = |key: &str| unix_time(&record[key]);
        match record["event"].as_str().unwrap_or("") {
            "attempt" => println!(
                "  {}  attempt   {}; next try {}",
                when("at"),
                record["error"].as_str().unwrap_or("deferred"),
                when("next_at")
            ),
            "recipient" => {
                let index = record["index"].as_u64().unwrap_or(0) as usize;
                let address = &envelope["recipients"][index]["address"];
                println!(
                    "  {:<20}  recipient {} {}",
                    "",
                    text(address),
                    text(&record["outcome"])
                );
            }
            other => println!("  {:<20}  {other}", ""),
        }
    }
}

/// The tracking store's per-recipient attempts: where each went and what it answered.
fn print_attempts(attempts: &[Value]) {
    println!("attempts:");
    if attempts.is_empty() {
        println!("  (none recorded)");
    }
    for a in attempts {
        println!(
            "  {}  {:<9} {} relay={} {}",
            text(&a["time"]),
            text(&a["event"]),
            text(&a["recipient"]),
            a["relay"].as_str().unwrap_or("-"),
            a["reply"]
                .as_str()
                .or(a["reason"].as_str())
                .unwrap_or_default()
        );
    }
}

fn print_requeued(value: &Value) {
    for (id, outcome) in value["requeued"].as_object().into_iter().flatten() {
        match outcome["outcome"].as_str().unwrap_or("") {
            "routed" => {
                let to: Vec<&str> = outcome["destinations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!("{id}: routed to {}", to.join(", "));
            }
            "after_attempt" => println!("{id}: being delivered now; routed again when that ends"),
            "held" => println!("{id}: held; release it to deliver it"),
            other => println!("{id}: {other}"),
        }
    }
    for id in value["missing"].as_array().into_iter().flatten() {
        println!("{}: not in the queue", text(id));
    }
}

fn print_destinations(value: &Value) {
    let Some(list) = value.as_array() else { return };
    if list.is_empty() {
        println!("No destinations with queued mail");
        return;
    }
    println!(
        "{:<40} {:<5} {:>7} {:>6} LAST ERROR",
        "DESTINATION", "STATE", "QUEUED", "CONNS"
    );
    for d in list {
        println!(
            "{:<40} {:<5} {:>7} {:>6} {}",
            text(&d["destination"]),
            text(&d["state"]),
            d["queued"].as_u64().unwrap_or(0),
            d["active_connections"].as_u64().unwrap_or(0),
            text(&d["last_error"])
        );
    }
}

type Call = (Request, fn(&Value));

/// The request for a `flow` subcommand; `detach` works on the pins directly (None).
fn flow_request(command: FlowCommand, config: &Option<PathBuf>) -> Result<Option<Call>, String> {
    Ok(Some(match command {
        FlowCommand::Status { json } => (Request::FlowStatus, pick(json, print_flow_status)),
        FlowCommand::Top { limit, json } => (
            Request::FlowTop { limit: Some(limit) },
            pick(json, print_flow_top),
        ),
        FlowCommand::List { json } => (Request::FlowList, pick(json, print_flow_list)),
        FlowCommand::Block {
            target,
            duration,
            json,
        } => {
            let seconds = duration.as_deref().map(parse_duration).transpose()?;
            (
                Request::FlowBlock { target, seconds },
                pick(json, print_done),
            )
        }
        FlowCommand::Unblock { target, json } => {
            (Request::FlowUnblock { target }, pick(json, print_done))
        }
        FlowCommand::Detach { json } => {
            let source = ConfigSource::choose(config.clone());
            let pin_dir = source.load().map_err(|e| e.to_string())?.flow.pin_dir;
            let removed = bulwark_ebpf::detach(&pin_dir).map_err(|e| e.to_string())?;
            let result = serde_json::json!({ "pin_dir": pin_dir, "removed": removed });
            if json {
                print_json(&result);
            } else {
                println!(
                    "removed {} pin(s) under {}",
                    removed.len(),
                    pin_dir.display()
                );
            }
            return Ok(None);
        }
    }))
}

/// The request for a `quarantine` subcommand.
fn quarantine_request(command: QuarantineCommand) -> Result<Call, String> {
    let pick = |json: bool, human: fn(&Value)| if json { print_json } else { human };
    Ok(match command {
        QuarantineCommand::List {
            json,
            sender,
            recipient,
            reason,
            subject,
            since,
            direction,
            limit,
        } => {
            let since = since
                .as_deref()
                .map(|text| {
                    humantime::parse_duration(text)
                        .map(|ago| unix_now().saturating_sub(ago.as_secs()))
                        .map_err(|e| format!("--since {text:?}: {e} (e.g. 30m, 2h, 7d)"))
                })
                .transpose()?;
            let direction = direction
                .as_deref()
                .map(|text| {
                    serde_json::from_value(Value::String(text.to_ascii_lowercase()))
                        .map_err(|_| format!("--direction {text:?}: use inbound or outbound"))
                })
                .transpose()?;
            let filter = Filter {
                sender,
                recipient,
                subject,
                reason,
                since,
                until: None,
                direction,
                limit,
            };
            (
                Request::QuarantineList { filter },
                pick(json, print_quarantine),
            )
        }
        QuarantineCommand::Show { id, json, raw } => (
            Request::QuarantineShow { id, raw },
            if raw {
                print_raw
            } else {
                pick(json, print_quarantine_show)
            },
        ),
        QuarantineCommand::Release {
            ids,
            to,
            not_spam,
            json,
        } => (
            Request::QuarantineRelease { ids, to, not_spam },
            pick(json, print_released),
        ),
        QuarantineCommand::Delete { ids, spam } => {
            (Request::QuarantineDelete { ids, spam }, print_done)
        }
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn print_quarantine(value: &Value) {
    let Some(entries) = value.as_array() else {
        return;
    };
    if entries.is_empty() {
        println!("Quarantine is empty (or nothing matches)");
        return;
    }
    println!(
        "{:<16} {:>7} {:>9} {:<16} {:<8} SENDER / RECIPIENTS / SUBJECT / REASON",
        "ID", "AGE", "SIZE", "STATE", "DIR"
    );
    let now = unix_now();
    for e in entries {
        let age = now.saturating_sub(e["quarantined_at"].as_u64().unwrap_or(now));
        let sender = e["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>");
        println!(
            "{:<16} {:>6}s {:>9} {:<16} {:<8} {}",
            text(&e["id"]),
            age,
            e["size"],
            text(&e["state"]),
            text(&e["direction"]),
            sender
        );
        for r in e["recipients"].as_array().into_iter().flatten() {
            println!("{:>62} {}", "", text(r));
        }
        println!("{:>62} subject: {}", "", text(&e["subject"]));
        println!("{:>62} {}: {}", "", text(&e["stage"]), text(&e["reason"]));
    }
    println!("-- {} message(s)", entries.len());
}

fn print_quarantine_show(value: &Value) {
    let entry = &value["entry"];
    for field in [
        "id",
        "state",
        "direction",
        "stage",
        "reason",
        "score",
        "subject",
    ] {
        println!("{field}: {}", text(&entry[field]));
    }
    println!("quarantined_at: {}", entry["quarantined_at"]);
    for release in value["record"]["releases"].as_array().into_iter().flatten() {
        println!(
            "released: as {} to {} at {}",
            text(&release["queue_id"]),
            text(&release["recipients"]),
            release["at"]
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&value["record"]["envelope"]).unwrap_or_default()
    );
    println!();
    print!("{}", text(&value["content"]).replace("\r\n", "\n"));
}

/// `show --raw`: the exact bytes, for `> message.eml`.
fn print_raw(value: &Value) {
    use base64::Engine;
    use std::io::Write;
    let encoded = value["raw_base64"].as_str().unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(bytes) => {
            let _ = std::io::stdout().write_all(&bytes);
        }
        Err(e) => eprintln!("bulwarkctl: the daemon sent no valid message: {e}"),
    }
}

fn print_released(value: &Value) {
    for r in value["released"].as_array().into_iter().flatten() {
        println!(
            "{} released as {} to {}",
            text(&r["id"]),
            text(&r["queue_id"]),
            r["recipients"]
                .as_array()
                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    }
}

fn parse_duration(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_secs().max(1))
        .map_err(|e| format!("--for {text:?}: {e} (use seconds or e.g. 30m, 1h)"))
}

fn parse_since(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| format!("--since {text:?}: {e} (use seconds or e.g. 30m, 2h, 1d)"))
}

fn warn_if_truncated(value: &Value) {
    if value["truncated"].as_bool() == Some(true) {
        let shown = value["events"].as_array().map_or(0, Vec::len);
        eprintln!("bulwarkctl: only the first {shown} events are shown; narrow the query");
    }
}

fn print_track(value: &Value) {
    warn_if_truncated(value);
    let timeline = match Timeline::deserialize(value) {
        Ok(timeline) => timeline,
        Err(e) => {
            eprintln!("bulwarkctl: bulwarkd sent a timeline this bulwarkctl cannot read: {e}");
            return;
        }
    };
    if timeline.events.is_empty() {
        println!("No events");
    }
    for entry in &timeline.events {
        println!("{}", entry.line());
    }
}

fn print_track_json(value: &Value) {
    warn_if_truncated(value);
    print_json(&value["events"]);
}

fn print_flow_status(v: &Value) {
    println!("enforcement: {}", v["enforcement"].as_str().unwrap_or("?"));
    for a in v["attached"].as_array().into_iter().flatten() {
        println!(
            "attached: {} ({} XDP)",
            a["interface"].as_str().unwrap_or("?"),
            a["mode"].as_str().unwrap_or("?")
        );
    }
    if let Some(reason) = v["fallback_reason"].as_str() {
        println!("kernel attach failed: {reason}");
    }
    if let Some(counters) = v["counters"].as_object() {
        for (name, value) in counters {
            println!("{name:>14}: {value}");
        }
    }
    println!("blocked: {}", v["blocked"]);
}

fn print_flow_top(v: &Value) {
    println!("{:<40} {:>10} {:>10}", "SOURCE", "PASSED", "DROPPED");
    for s in v.as_array().into_iter().flatten() {
        println!(
            "{:<40} {:>10} {:>10}",
            s["source"].as_str().unwrap_or("?"),
            s["passed"],
            s["dropped"]
        );
    }
}

fn print_flow_list(v: &Value) {
    println!("{:<40} {:>12} {:>10}", "BLOCKED", "EXPIRES IN", "HITS");
    for b in v.as_array().into_iter().flatten() {
        let expires = b["expires_in"]
            .as_u64()
            .map_or_else(|| "never".to_string(), |s| format!("{s}s"));
        println!(
            "{:<40} {:>12} {:>10}",
            b["network"].as_str().unwrap_or("?"),
            expires,
            b["hits"]
        );
    }
}
