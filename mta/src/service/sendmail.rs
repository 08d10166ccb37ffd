//! The `sendmail` compatibility front end (installed as /usr/sbin/sendmail and mailq through
//! alternatives), so cron, scripts and MUAs that call sendmail keep working.
//!
//! Contract: a message is handed to the local daemon over SMTP on loopback, and `sendmail`
//! exits 0 only after the daemon answered 250 to the end of data, i.e. after the message is
//! durable in the spool. Otherwise it exits with a sysexits(3) code (75 = try again later).
//! SMTP over loopback was chosen over the control socket because it needs no privilege
//! (the control socket is 0660 bulwark), and every message then passes the same session,
//! relay and filter policy as any other: no second, less-checked way in. Local senders may
//! relay when loopback is in `relay.trusted_networks` (the shipped config has it).
//!
//! Supported: `-t` (recipients from To/Cc/Bcc; Bcc removed), `-i`/`-oi` (a lone "." does not
//! end the input), `-f SENDER`, `-F NAME` (for a From: header the message lacks), `-bs` (SMTP
//! on stdin/stdout, relayed to the daemon), `-bp` and the name `mailq` (list the queue over
//! the control socket), `-bm` (the default). Options sendmail accepts but that have no meaning
//! here (`-o*` other than `-oi`, `-v`, `-N`, `-R`, `-V`, `-B`, `-X`) are ignored.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// sysexits(3) codes that callers of sendmail understand.
pub mod exit {
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const NOUSER: u8 = 67;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const TEMPFAIL: u8 = 75;
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Submit the message on stdin (`-bm`, the default).
    Deliver,
    /// `-bs`: speak SMTP on stdin/stdout.
    Smtp,
    /// `-bp` / `mailq`: list the queue.
    ListQueue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub mode: Mode,
    pub sender: Option<String>,
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// `-t`: add recipients from the To, Cc and Bcc headers.
    pub recipients_from_headers: bool,
    /// `-i`/`-oi`: only end of input ends the message.
    pub ignore_dots: bool,
    /// `-C FILE`: the Bulwark configuration (default /etc/bulwark/bulwark.toml).
    pub config: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendmailError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("no recipients (give them as arguments or use -t)")]
    NoRecipients,
    #[error("cannot reach the mail daemon at {0}: {1}")]
    Connect(String, io::Error),
    #[error("talking to the mail daemon: {0}")]
    Io(#[from] io::Error),
    #[error("the mail daemon refused {stage}: {code} {text}")]
    Refused {
        stage: &'static str,
        code: u16,
        text: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("queue listing: {0}")]
    Queue(String),
}

impl SendmailError {
    /// The sysexits code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            SendmailError::Usage(_) => exit::USAGE,
            SendmailError::NoRecipients => exit::USAGE,
            SendmailError::Connect(..) | SendmailError::Io(_) => exit::TEMPFAIL,
            SendmailError::Refused { code, .. } if *code < 500 => exit::TEMPFAIL,
            SendmailError::Refused { stage: "RCPT", .. } => exit::NOUSER,
            SendmailError::Refused { stage: "DATA", .. } => exit::DATAERR,
            SendmailError::Refused { .. } => exit::UNAVAILABLE,
            SendmailError::Config(_) => exit::SOFTWARE,
            SendmailError::Queue(_) => exit::UNAVAILABLE,
        }
    }
}

/// Parses sendmail's command line. `argv0` decides `mailq`.
pub fn parse_args(argv0: &str, args: &[String]) -> Result<Invocation, SendmailError> {
    let mut inv = Invocation {
        mode: Mode::Deliver,
        sender: None,
        full_name: None,
        recipients: Vec::new(),
        recipients_from_headers: false,
        ignore_dots: false,
        config: None,
    };
    if argv0
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("mailq"))
    {
        inv.mode = Mode::ListQueue;
    }
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        let Some(option) = arg.strip_prefix('-').filter(|o| !o.is_empty()) else {
            inv.recipients.push(arg.clone());
            continue;
        };
        // Options with a value take it attached (-fuser) or as the next argument (-f user).
        let mut value = |attached: &str| -> Result<String, SendmailError> {
            if attached.is_empty() {
                rest.next()
                    .cloned()
                    .ok_or_else(|| SendmailError::Usage(format!("{arg} needs a value")))
            } else {
                Ok(attached.to_string())
            }
        };
        match option.split_at(1) {
            ("t", "") => inv.recipients_from_headers = true,
            ("i", "") => inv.ignore_dots = true,
            ("o", "i") => inv.ignore_dots = true,
            ("o", _) | ("v", _) => {}
            ("f", v) | ("r", v) => inv.sender = Some(value(v)?),
            ("F", v) => inv.full_name = Some(value(v)?),
            ("C", v) => inv.config = Some(value(v)?),
            ("N" | "R" | "V" | "B" | "X", v) => {
                value(v)?;
            }
            ("b", "m") => inv.mode = Mode::Deliver,
            ("b", "s") => inv.mode = Mode::Smtp,
            ("b", "p") => inv.mode = Mode::ListQueue,
            _ => return Err(SendmailError::Usage(format!("unsupported option {arg}"))),
        }
    }
    inv.recipients.extend(rest.cloned());
    Ok(inv)
}

/// Reads the message: to end of input, or (without -i) to a line holding a lone ".".
/// Lines come back ending in CRLF whatever the caller used.
pub fn read_message(input: impl Read, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(input);
    let mut message = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let content = trim_newline(&line);
        if !ignore_dots && content == b"." {
            break;
        }
        message.extend_from_slice(content);
        message.extend_from_slice(b"\r\n");
    }
    Ok(message)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits at the blank line that ends the header section (offset of the body).
fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2)
}

/// `-t`: the To, Cc and Bcc addresses, and the message without its Bcc header.
pub fn take_header_recipients(message: &[u8]) -> (Vec<String>, Vec<u8>) {
    let end = header_end(message);
    let mut recipients = Vec::new();
    if let Some(parsed) = mail_parser::MessageParser::default().parse_headers(&message[..end]) {
        for list in [parsed.to(), parsed.cc(), parsed.bcc()]
            .into_iter()
            .flatten()
        {
            recipients.extend(list.iter().filter_map(|a| a.address()).map(str::to_string));
        }
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut in_bcc = false;
    for line in message[..end].split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            in_bcc = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !in_bcc {
            kept.extend_from_slice(line);
        }
    }
    kept.extend_from_slice(&message[end..]);
    (recipients, kept)
}

/// Prepends `From:` when the message has none (as sendmail does with -F/-f).
pub fn ensure_from(message: Vec<u8>, sender: &str, full_name: Option<&str>) -> Vec<u8> {
    let end = header_end(&message);
    let has_from = message[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"from:"));
    if has_from {
        return message;
    }
    let from = match full_name {
        // A quoted phrase: quote and backslash are escaped, line breaks dropped.
        Some(name) => {
            let name: String = name
                .chars()
                .filter(|c| !c.is_control())
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("From: \"{name}\" <{sender}>\r\n")
        }
        None => format!("From: <{sender}>\r\n"),
    };
    let mut out = from.into_bytes();
    out.extend_from_slice(&message);
    out
}

/// Dot-stuffs CRLF lines for DATA and appends the terminator.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

const TIMEOUT: Duration = Duration::from_secs(300);

/// A minimal SMTP client for one submission on loopback.
pub struct Submission {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Submission {
    pub fn connect(target: &str) -> Result<Submission, SendmailError> {
        let connect_error = |e| SendmailError::Connect(target.to_string(), e);
        let addresses: Vec<SocketAddr> = target.to_socket_addrs().map_err(connect_error)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, Duration::from_secs(30)) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(TIMEOUT))?;
                    stream.set_write_timeout(Some(TIMEOUT))?;
                    let writer = stream.try_clone()?;
                    return Ok(Submission {
                        reader: BufReader::new(stream),
                        writer,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(connect_error(last))
    }

    /// Reads one (possibly multi-line) reply: (code, text of the last line).
    fn reply(&mut self) -> Result<(u16, String), SendmailError> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed").into(),
                );
            }
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"))
                })?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.get(4..).unwrap_or("").trim_end().to_string()));
            }
        }
    }

    fn expect(&mut self, stage: &'static str, want: u16) -> Result<(), SendmailError> {
        let (code, text) = self.reply()?;
        if code / 100 == want / 100 {
            Ok(())
        } else {
            Err(SendmailError::Refused { stage, code, text })
        }
    }

    fn command(&mut self, stage: &'static str, line: &str, want: u16) -> Result<(), SendmailError> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(stage, want)
    }

    /// Greeting, EHLO, MAIL, RCPT..., DATA, QUIT. Returns once the message is queued.
    pub fn send(
        mut self,
        helo: &str,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<(), SendmailError> {
        self.expect("the connection", 220)?;
        self.command("EHLO", &format!("EHLO {helo}"), 250)?;
        self.command("MAIL", &format!("MAIL FROM:<{sender}>"), 250)?;
        for recipient in recipients {
            self.command("RCPT", &format!("RCPT TO:<{recipient}>"), 250)?;
        }
        self.command("DATA", "DATA", 354)?;
        self.writer.write_all(&dot_stuff(message))?;
        self.expect("DATA", 250)?;
        // The message is queued; a failing QUIT changes nothing.
        let _ = self.command("QUIT", "QUIT", 221);
        Ok(())
    }

    /// `-bs`: copies stdin to the daemon and the daemon's replies to stdout until either side
    /// closes.
    pub fn relay_stdio(self) -> Result<(), SendmailError> {
        let mut to_daemon = self.writer;
        let mut from_daemon = self.reader;
        let upstream = std::thread::spawn(move || {
            let copied = io::copy(&mut io::stdin().lock(), &mut to_daemon);
            let _ = to_daemon.shutdown(std::net::Shutdown::Write);
            copied
        });
        let mut stdout = io::stdout().lock();
        io::copy(&mut from_daemon, &mut stdout)?;
        stdout.flush()?;
        // stdin may stay open after the daemon said 221 and closed: do not wait for it.
        drop(upstream);
        Ok(())
    }
}

/// The address to submit to: `BULWARK_SUBMIT` (host:port), else the first `mx` listener of
/// the configuration (a wildcard address means loopback).
pub fn submit_target(config: Option<&crate::config::Config>) -> String {
    if let Ok(target) = std::env::var("BULWARK_SUBMIT") {
        return target;
    }
    let listener = config.and_then(|c| {
        c.listeners
            .iter()
            .find(|l| l.role == crate::config::ListenerRole::Mx)
    });
    match listener {
        Some(l) if l.address.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if l.address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(loopback, l.address.port()).to_string()
        }
        Some(l) => l.address.to_string(),
        None => "127.0.0.1:25".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_usual_cron_and_script_invocations() {
        let inv = parse_args(
            "sendmail",
            &args(&["-oi", "-t", "-f", "root@h", "-Fcron daemon"]),
        )
        .expect("valid");
        assert!(inv.ignore_dots && inv.recipients_from_headers);
        assert_eq!(inv.sender.as_deref(), Some("root@h"));
        assert_eq!(inv.full_name.as_deref(), Some("cron daemon"));
        let inv = parse_args(
            "/usr/sbin/sendmail",
            &args(&["-i", "-fme@h", "a@x", "--", "-b@y"]),
        )
        .expect("valid");
        assert_eq!(inv.recipients, args(&["a@x", "-b@y"]));
        assert_eq!(
            parse_args("mailq", &[]).expect("valid").mode,
            Mode::ListQueue
        );
        assert_eq!(
            parse_args("sendmail", &args(&["-bs"])).expect("valid").mode,
            Mode::Smtp
        );
        assert!(parse_args("sendmail", &args(&["-f"])).is_err());
        assert!(parse_args("sendmail", &args(&["-q"])).is_err());
    }

    #[test]
    fn a_lone_dot_ends_input_unless_i() {
        let text = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(
            read_message(&text[..], false).expect("read"),
            b"Subject: x\r\n\r\nline\r\n"
        );
        assert!(read_message(&text[..], true)
            .expect("read")
            .ends_with(b".\r\nafter\r\n"));
    }

    #[test]
    fn header_recipients_and_bcc_removed() {
        let message =
            b"To: A <a@x>, b@y\r\nBcc: hidden@z,\r\n  also@z\r\nSubject: s\r\n\r\nBcc: body@q\r\n";
        let (recipients, kept) = take_header_recipients(message);
        assert_eq!(recipients, args(&["a@x", "b@y", "hidden@z", "also@z"]));
        assert_eq!(
            kept,
            b"To: A <a@x>, b@y\r\nSubject: s\r\n\r\nBcc: body@q\r\n"
        );
    }

    #[test]
    fn from_is_added_only_when_missing() {
        let added = ensure_from(
            b"Subject: s\r\n\r\nbody\r\n".to_vec(),
            "me@h",
            Some("Me \"x\""),
        );
        assert!(added.starts_with(b"From: \"Me \\\"x\\\"\" <me@h>\r\nSubject: s\r\n"));
        let kept = ensure_from(b"from: a@b\r\n\r\n".to_vec(), "me@h", None);
        assert_eq!(kept, b"from: a@b\r\n\r\n");
        assert_eq!(
            ensure_from(b"\r\nbody\r\n".to_vec(), "me@h", None),
            b"From: <me@h>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n"), b"..a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
