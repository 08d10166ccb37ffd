//! `bulwarkctl`: manage a running bulwarkd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark::admin::client::call;
use bulwark::admin::protocol::Request;
use bulwark::daemon::ConfigSource;
use bulwark::quarantine::Filter;
use bulwark::track::{Query, Timeline};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::Value;

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
    /// Reload the configuration, TLS certificates and lists (as SIGHUP does).
    Reload,
    /// Flow control: connection-rate limits and blocked sources.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
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
        #[arg(long)]
        json: bool,
    },
    /// Delete messages from the quarantine for good.
    Delete { ids: Vec<String> },
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
    /// List queued messages.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one message's envelope and header (or whole content with --body).
    Show {
        id: String,
        #[arg(long)]
        body: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep messages from being delivered until released.
    Hold { ids: Vec<String> },
    /// Release held messages.
    Release { ids: Vec<String> },
    /// Delete messages from the queue for good.
    Delete { ids: Vec<String> },
    /// Retry every queued message now, dead destinations included.
    Flush,
    /// Per-destination delivery state: up/down, queued, connections, last error.
    Destinations {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let args = match args.command {
        Command::Dkim { command } => return dkim_keygen(command),
        command => Args { command, ..args },
    };
    let socket = match socket_path(&args) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("bulwarkctl: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (request, printer): (Request, fn(&Value)) = match args.command {
        Command::Status { json } => (
            Request::Status,
            if json { print_json } else { print_status },
        ),
        Command::Reload => (Request::Reload, print_done),
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
        Command::Flow { command } => match flow_request(command, &args.config) {
            Ok(Some(pair)) => pair,
            Ok(None) => return ExitCode::SUCCESS,
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
            QueueCommand::List { json } => (
                Request::QueueList,
                if json { print_json } else { print_queue },
            ),
            QueueCommand::Show { id, body, json } => (
                Request::QueueShow { id, body },
                if json { print_json } else { print_show },
            ),
            QueueCommand::Hold { ids } => (Request::QueueHold { ids }, print_done),
            QueueCommand::Release { ids } => (Request::QueueRelease { ids }, print_done),
            QueueCommand::Delete { ids } => (Request::QueueDelete { ids }, print_done),
            QueueCommand::Flush => (Request::QueueFlush, print_done),
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
        Ok(response) if response.ok => {
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

fn request_needs_ids(request: &Request) -> bool {
    matches!(request,
        Request::QueueHold { ids } | Request::QueueRelease { ids } | Request::QueueDelete { ids }
        | Request::QuarantineRelease { ids, .. } | Request::QuarantineDelete { ids }
        if ids.is_empty())
}

fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    let source = ConfigSource::choose(args.config.clone());
    source
        .load()
        .map(|config| config.server.control_socket)
        .map_err(|e| e.to_string())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
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
            e["size"],
            text(&e["state"]),
            text(&e["next_attempt"]),
            sender
        );
        for r in e["recipients"].as_array().into_iter().flatten() {
            println!("{:>70} {}", "", text(r));
        }
        if !e["last_error"].is_null() {
            println!("{:>70} ({})", "", text(&e["last_error"]));
        }
    }
    println!("-- {} message(s)", entries.len());
}

fn print_show(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value["envelope"]).unwrap_or_default()
    );
    println!("state: {}", text(&value["entry"]["state"]));
    println!();
    print!("{}", text(&value["content"]).replace("\r\n", "\n"));
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
            d["queued"],
            d["active_connections"],
            text(&d["last_error"])
        );
    }
}

type Call = (Request, fn(&Value));

/// The request for a `flow` subcommand; `detach` works on the pins directly (None).
fn flow_request(command: FlowCommand, config: &Option<PathBuf>) -> Result<Option<Call>, String> {
    let pick = |json: bool, human: fn(&Value)| if json { print_json } else { human };
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
        QuarantineCommand::Release { ids, to, json } => (
            Request::QuarantineRelease { ids, to },
            pick(json, print_released),
        ),
        QuarantineCommand::Delete { ids } => (Request::QuarantineDelete { ids }, print_done),
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
