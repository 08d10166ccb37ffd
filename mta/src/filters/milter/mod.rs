//! The milter client: Bulwark asks external mail filters (rspamd, opendkim, clamav-milter,
//! spamass-milter, DLP products) about each message over the Sendmail/Postfix milter
//! protocol, version 6.
//!
//! Contract: [`Milter::check`] tells one milter about one message and returns its verdict
//! and requested modifications ([`MilterOutcome`]), or a [`MilterError`] when the milter is
//! unreachable, hangs past `command_timeout`, closes the connection or breaks the protocol —
//! the caller then applies the milter's `default_action`; nothing here guesses a verdict.
//! Connections are reused across messages (reset with SMFIC_QUIT_NC after a whole message
//! that ended in continue; libmilter cannot be reset after any other end); a connection that
//! failed is dropped, so the next message reconnects. A pooled connection found closed
//! before the milter answered anything is retried once on a fresh connection, so an idle
//! timeout on the milter's side never costs a message its verdict; a timeout is not retried.
//!
//! Layout: `protocol` (framing, commands, typed replies; fuzzed as `milter_reply`),
//! `client` (connections, timeouts, the idle pool), `conversation` (the steps of one
//! message, the negotiated skips, the outcome), `stage` (the pipeline stage: facts and macros
//! from the pipeline's context in, verdict and modifications out).

pub mod client;
pub mod conversation;
pub mod protocol;
mod stage;

use crate::config::MilterConfig;

pub use stage::MilterStage;

pub use client::MilterError;
pub use conversation::{header_fields, BodySource, MessageFacts, MilterOutcome, MilterVerdict};
use protocol::MacroStage;

/// One configured milter and its idle connections.
pub struct Milter {
    pub config: MilterConfig,
    pool: client::ConnectionPool,
    macro_lists: [Vec<String>; 7],
}

impl Milter {
    pub fn new(config: MilterConfig) -> Self {
        let macro_lists = MacroStage::ALL.map(|stage| match stage {
            MacroStage::Connect => config.connect_macros.clone(),
            MacroStage::Helo => config.helo_macros.clone(),
            MacroStage::Mail => config.mail_macros.clone(),
            MacroStage::Rcpt => config.rcpt_macros.clone(),
            MacroStage::Data => config.data_macros.clone(),
            MacroStage::EndOfHeaders => config.end_of_header_macros.clone(),
            MacroStage::EndOfMessage => config.end_of_data_macros.clone(),
        });
        Self {
            config,
            pool: client::ConnectionPool::default(),
            macro_lists,
        }
    }

    /// The macro names sent per stage (before a milter's own SETSYMLIST request).
    pub fn macro_lists(&self) -> &[Vec<String>; 7] {
        &self.macro_lists
    }

    /// Connections waiting for the next message.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Asks the milter about one message. A stale pooled connection is retried on a fresh
    /// one only when the milter answered nothing and no byte of `body` was read yet.
    pub async fn check(
        &self,
        facts: &MessageFacts<'_>,
        body: &mut dyn BodySource,
    ) -> Result<MilterOutcome, MilterError> {
        let (mut connection, reused) = self.pool.take(&self.config).await?;
        let mut tracked = TrackedBody {
            inner: body,
            touched: false,
        };
        let first = conversation::converse(&mut connection, facts, &mut tracked).await;
        let untouched = connection.replies_this_message == 0 && !tracked.touched;
        let (connection, result) = match first {
            Err(error) if reused && untouched && error.is_dead_connection() => {
                log::debug!(milter = self.config.name.as_str(), error:% = error;
                    "pooled milter connection was dead, reconnecting");
                let mut fresh = client::Connection::open(&self.config).await?;
                let retried = conversation::converse(&mut fresh, facts, tracked.inner).await;
                (fresh, retried)
            }
            other => (connection, other),
        };
        match &result {
            Ok(outcome) if outcome.reusable => self.pool.give_back(connection),
            Ok(_) => connection.quit().await,
            Err(_) => drop(connection),
        }
        result
    }
}

/// Remembers whether the body was read, so a retry never sends a half-consumed body.
struct TrackedBody<'b> {
    inner: &'b mut dyn BodySource,
    touched: bool,
}

#[async_trait::async_trait]
impl BodySource for TrackedBody<'_> {
    async fn next_chunk(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
        self.touched = true;
        self.inner.next_chunk(max).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    //! A scripted milter on a unix socket: it records every command and answers from a
    //! script, so the skips, macros, reuse and error paths are checked packet by packet.
    use super::protocol::{command, step};
    use super::*;
    use crate::pipeline::Modification;
    use std::collections::HashMap;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    /// Every command the scripted milter received: (command byte, data).
    type CommandLog = std::sync::Arc<std::sync::Mutex<Vec<(u8, Vec<u8>)>>>;

    struct Chunks(Vec<Vec<u8>>);

    #[async_trait::async_trait]
    impl BodySource for Chunks {
        async fn next_chunk(
            &mut self,
            _max: usize,
        ) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
            Ok((!self.0.is_empty()).then(|| self.0.remove(0)))
        }
    }

    fn config(path: &std::path::Path) -> MilterConfig {
        let text = format!(
            "[server]\nhostname = \"mx.test\"\nspool_dir = \"/tmp/s\"\ncontrol_socket = \"/tmp/c\"\n\
             [[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n\
             [[milter]]\nname = \"scripted\"\naddress = \"unix:{}\"\ncommand_timeout = \"300ms\"\n",
            path.display()
        );
        let config = crate::config::load_str(&text, "test", std::path::Path::new("/")).unwrap();
        config.milters[0].clone()
    }

    fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        protocol::encode(cmd, data, &mut out);
        out
    }

    async fn read_packet(stream: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.ok()?;
        let mut data = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut data).await.ok()?;
        let cmd = data.remove(0);
        Some((cmd, data))
    }

    /// Negotiates `steps`, then answers each command that expects a reply with the next
    /// packet of `eom_replies` at end of message and `c` elsewhere; records commands.
    async fn serve(listener: UnixListener, steps: u32, eom_replies: Vec<Vec<u8>>, log: CommandLog) {
        let (mut stream, _) = listener.accept().await.unwrap();
        while let Some((cmd, data)) = read_packet(&mut stream).await {
            log.lock().unwrap().push((cmd, data.clone()));
            let reply = match cmd {
                command::OPTNEG => {
                    let mut o = Vec::new();
                    for n in [6u32, protocol::action::ALL, steps] {
                        o.extend_from_slice(&n.to_be_bytes());
                    }
                    packet(b'O', &o)
                }
                command::MACRO | command::QUIT_NC | command::QUIT => continue,
                command::HEADER if steps & step::NR_HDR != 0 => continue,
                command::BODYEOB => eom_replies.concat(),
                _ => packet(b'c', &[]),
            };
            stream.write_all(&reply).await.unwrap();
        }
    }

    fn facts<'a>(lists: &'a [Vec<String>; 7]) -> MessageFacts<'a> {
        MessageFacts {
            client_name: "client.example",
            client: protocol::ConnectFamily::Inet("192.0.2.1:4000".parse().unwrap()),
            helo: "client.example",
            sender: "s@example.org",
            sender_args: vec!["SIZE=10".into()],
            recipients: vec!["r@example.com".into()],
            headers: vec![("Subject".into(), "hi".into())],
            macros: HashMap::from([("i".to_string(), "QID1".to_string())]),
            macro_lists: lists,
            reply_budget: 1 << 20,
        }
    }

    #[tokio::test]
    async fn negotiated_skips_are_honoured_and_modifications_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // clamav-milter's flags: no HELO, no EOH, no DATA, no unknown; headers unanswered.
        let steps = 0x342 | step::NR_HDR;
        let mut index = 1u32.to_be_bytes().to_vec();
        index.extend_from_slice(b"X-Old\0\0");
        let replies = vec![
            packet(b'h', b"X-Scanned\0yes\0"),
            packet(b'm', &index),
            packet(b'2', b"<new@example.com>\0NOTIFY=NEVER\0"),
            packet(b'p', &[]),
            packet(b'q', b"held for review\0"),
            packet(b'b', b"new body\r\n"),
            packet(b'c', &[]),
        ];
        tokio::spawn(serve(listener, steps, replies, log.clone()));
        let milter = Milter::new(config(&path));
        let lists = milter.macro_lists().clone();
        let mut body = Chunks(vec![vec![b'x'; 70_000]]);
        let outcome = milter.check(&facts(&lists), &mut body).await.unwrap();
        assert_eq!(outcome.verdict, MilterVerdict::Continue);
        assert_eq!(outcome.quarantine.as_deref(), Some("held for review"));
        assert_eq!(
            outcome.modifications,
            vec![
                Modification::AddHeader {
                    name: "X-Scanned".into(),
                    value: "yes".into()
                },
                Modification::ChangeHeader {
                    name: "X-Old".into(),
                    index: 1,
                    value: None
                },
                Modification::AddRecipient {
                    address: "new@example.com".into(),
                    args: Some("NOTIFY=NEVER".into())
                },
                Modification::ReplaceBody(b"new body\r\n".to_vec()),
            ]
        );
        assert_eq!(
            milter.idle_connections(),
            1,
            "reset with QUIT_NC and pooled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = log.lock().unwrap();
        let commands: Vec<u8> = log.iter().map(|(c, _)| *c).collect();
        assert!(!commands.contains(&command::HELO));
        assert!(!commands.contains(&command::EOH));
        assert!(!commands.contains(&command::DATA));
        let bodies: Vec<usize> = log
            .iter()
            .filter(|(c, _)| *c == command::BODY)
            .map(|(_, d)| d.len())
            .collect();
        assert_eq!(
            bodies,
            [65_535, 70_000 - 65_535],
            "chunks of at most 64 KiB"
        );
        let rcpt_macros = log
            .iter()
            .find(|(c, d)| *c == command::MACRO && d.first() == Some(&command::RCPT))
            .unwrap();
        assert_eq!(
            rcpt_macros.1,
            b"Ri\0QID1\0{rcpt_addr}\0r@example.com\0{rcpt_host}\0example.com\0"
        );
        assert_eq!(commands.last(), Some(&command::QUIT_NC));
    }

    #[tokio::test]
    async fn a_hanging_milter_times_out_and_a_missing_one_fails_to_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hang.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let milter = Milter::new(config(&path));
        let lists = milter.macro_lists().clone();
        let error = milter
            .check(&facts(&lists), &mut Chunks(vec![]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                MilterError::ConnectTimeout { .. } | MilterError::Timeout(_)
            ),
            "{error}"
        );
        let missing = Milter::new(config(&dir.path().join("absent.sock")));
        let error = missing
            .check(&facts(&lists), &mut Chunks(vec![]))
            .await
            .unwrap_err();
        assert!(matches!(error, MilterError::Connect { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_reject_with_text_is_a_verdict_and_the_connection_is_not_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let replies = vec![packet(b'y', b"554-5.7.1 virus found\r\n554 5.7.1 Eicar\0")];
        tokio::spawn(serve(listener, 0, replies, log));
        let milter = Milter::new(config(&path));
        let lists = milter.macro_lists().clone();
        let outcome = milter
            .check(&facts(&lists), &mut Chunks(vec![b"body\r\n".to_vec()]))
            .await
            .unwrap();
        assert_eq!(
            outcome.verdict,
            MilterVerdict::Reject(crate::smtp::reply::Reply::owned(
                554,
                "5.7.1 virus found\n5.7.1 Eicar".into()
            ))
        );
        assert!(
            !outcome.reusable,
            "libmilter cannot take QUIT_NC after a reject at end of message"
        );
        assert_eq!(milter.idle_connections(), 0);
    }

    #[tokio::test]
    async fn a_milter_flooding_modifications_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flood.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let chunk = packet(b'b', &vec![b'x'; 100_000]);
        let replies = vec![chunk; 12];
        tokio::spawn(serve(listener, 0, replies, log));
        let milter = Milter::new(config(&path));
        let lists = milter.macro_lists().clone();
        let error = milter
            .check(&facts(&lists), &mut Chunks(vec![b"body\r\n".to_vec()]))
            .await
            .unwrap_err();
        assert!(matches!(error, MilterError::TooMuch(_)), "{error}");
    }
}
