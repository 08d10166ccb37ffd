//! `bulwark-sendmail`: the `sendmail`/`mailq` compatibility front end (see
//! `bulwark::service::sendmail` for what it supports and why it submits over loopback SMTP).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark::admin::{client, protocol::Request};
use bulwark::config::{self, Config};
use bulwark::service::sendmail::{self, Invocation, Mode, SendmailError, Submission};

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_else(|| "sendmail".to_string());
    let args: Vec<String> = argv.collect();
    match parse_and_run(&argv0, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendmail: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn parse_and_run(argv0: &str, args: &[String]) -> Result<(), SendmailError> {
    let invocation = sendmail::parse_args(argv0, args)?;
    let config = load_config(invocation.config.as_deref())?;
    match invocation.mode {
        Mode::Deliver => deliver(&invocation, config.as_ref()),
        Mode::Smtp => Submission::connect(&sendmail::submit_target(config.as_ref()))?.relay_stdio(),
        Mode::ListQueue => list_queue(config.as_ref()),
    }
}

/// `-C FILE`, else the default file when it exists (it need not: BULWARK_SUBMIT may say where).
fn load_config(explicit: Option<&str>) -> Result<Option<Config>, SendmailError> {
    let path = match explicit {
        Some(path) => PathBuf::from(path),
        None if Path::new(config::DEFAULT_CONFIG_PATH).exists() => {
            PathBuf::from(config::DEFAULT_CONFIG_PATH)
        }
        None => return Ok(None),
    };
    config::load_file(&path)
        .map(Some)
        .map_err(|e| SendmailError::Config(e.to_string()))
}

fn deliver(invocation: &Invocation, config: Option<&Config>) -> Result<(), SendmailError> {
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input)?;
    let mut message = sendmail::read_message(&input[..], invocation.ignore_dots)?;
    let mut recipients = invocation.recipients.clone();
    if invocation.recipients_from_headers {
        let (from_headers, without_bcc) = sendmail::take_header_recipients(&message);
        recipients.extend(from_headers);
        message = without_bcc;
    }
    if recipients.is_empty() {
        return Err(SendmailError::NoRecipients);
    }
    let host = local_hostname(config);
    let sender = invocation
        .sender
        .clone()
        .unwrap_or_else(|| format!("{}@{host}", login_name()));
    let message = sendmail::ensure_from(message, &sender, invocation.full_name.as_deref());
    Submission::connect(&sendmail::submit_target(config))?.send(
        &host,
        &sender,
        &recipients,
        &message,
    )
}

fn local_hostname(config: Option<&Config>) -> String {
    match config {
        Some(config) => config.server.hostname.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string()),
    }
}

fn login_name() -> String {
    let uid = nix::unistd::Uid::current();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// `mailq`: the queue in a sendmail-like layout.
fn list_queue(config: Option<&Config>) -> Result<(), SendmailError> {
    let socket = std::env::var_os("BULWARK_CONTROL_SOCKET")
        .map(PathBuf::from)
        .or_else(|| config.map(|c| c.server.control_socket.clone()))
        .ok_or_else(|| SendmailError::Queue("no configuration names the control socket".into()))?;
    let response = client::call(&socket, &Request::QueueList)
        .map_err(|e| SendmailError::Queue(e.to_string()))?;
    if !response.ok {
        return Err(SendmailError::Queue(response.error.unwrap_or_default()));
    }
    let entries = response.result.as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        println!("Mail queue is empty");
        return Ok(());
    }
    println!("-Queue ID-        --Size-- ----State---- Sender/Recipient-------");
    for entry in &entries {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        let sender = text(&entry["sender"]);
        println!(
            "{:<17} {:>8} {:<13} {}",
            text(&entry["id"]),
            entry["size"],
            text(&entry["state"]),
            if sender.is_empty() { "<>" } else { &sender }
        );
        for recipient in entry["recipients"].as_array().into_iter().flatten() {
            let address = recipient["address"]
                .as_str()
                .map_or_else(|| text(recipient), str::to_string);
            println!("{:>41}{address}", "");
        }
    }
    println!("-- {} Request(s)", entries.len());
    Ok(())
}
