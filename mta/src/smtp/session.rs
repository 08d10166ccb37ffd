//! One SMTP session as an explicit state machine (RFC 5321, with PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, STARTTLS, AUTH and REQUIRETLS inside TLS).
//!
//! # Invariants
//! - Every command has one place that decides whether it is allowed now (`dispatch`).
//! - `250 ... queued as` is sent only after `Spool::commit` returned Ok.
//! - Anything pipelined behind STARTTLS is discarded before the handshake.
//! - A client that reaches `max_errors` error replies gets 421 and is disconnected.
//! - Message content is streamed to the spool; only the header section is kept in memory.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{
    Error as ParseError, MailFrom, RcptTo, Request, AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_8BITMIME,
    MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

use super::address::{AddressError, Mailbox};
use super::auth;
use super::data::DataDecoder;
use super::disposal::{self, Received, Taken};
use super::message::{received_header, HeaderScanner, TraceFacts};
use super::reply::{self, RejectReason, Reply};
use super::stream::{
    acceptor, Greeting, Line, SmtpStream, StreamError, TlsInfo, MAX_AUTH_LINE, MAX_COMMAND_LINE,
};
use crate::config::{LimitsConfig, ListenerRole, LongLines};
use crate::flow::Signal;
use crate::gateway::{Counters, Gateway, Origin, Runtime};
use crate::pipeline::{Context, Disposal, Findings, Group, MessageContent};
use crate::policy::{MessageView, SessionInfo, Verdict};
use crate::queue::{unix_now, BodyType, Draft, DsnRet, Envelope, QueueId, Recipient, SpoolError};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A session id unique across restarts: the daemon's start second, then a counter.
fn next_session_id() -> String {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    static STARTED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let started = *STARTED.get_or_init(unix_now);
    format!("{started:x}.{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

struct Transaction {
    sender: String,
    body: BodyType,
    smtputf8: bool,
    ret: Option<DsnRet>,
    envid: Option<String>,
    /// MAIL FROM ... REQUIRETLS (RFC 8689), only accepted inside TLS.
    require_tls: bool,
    recipients: Vec<Recipient>,
    /// A RCPT was tried (even if refused): DATA then gets 554, not 503.
    rcpt_attempted: bool,
    /// Content received so far by BDAT.
    chunks: Option<Receiving>,
}

/// Content being received (DATA, or BDAT across several chunks).
struct Receiving {
    draft: Draft,
    decoder: DataDecoder,
    header: HeaderScanner,
    client_bytes: u64,
    too_big: bool,
    eight_bit: bool,
    spool_error: Option<SpoolError>,
    /// Our Received: field, the first bytes of the draft (the scanner sees only the client's).
    trace: String,
}

pub struct Session {
    gateway: Arc<Gateway>,
    runtime: Arc<Runtime>,
    stream: SmtpStream,
    info: SessionInfo,
    esmtp: bool,
    tls: Option<TlsInfo>,
    transaction: Option<Transaction>,
    errors: u32,
    /// Commands that moved no mail since the last accepted message.
    junk_commands: u32,
    messages: usize,
}

impl Session {
    pub fn new(
        gateway: Arc<Gateway>,
        stream: SmtpStream,
        client: SocketAddr,
        local: SocketAddr,
        role: ListenerRole,
    ) -> Self {
        let runtime = gateway.runtime();
        let trusted = runtime
            .config
            .relay
            .trusted_networks
            .iter()
            .any(|net| net.contains(&client.ip()));
        Self {
            gateway,
            runtime,
            stream,
            info: SessionInfo {
                session_id: next_session_id(),
                client,
                local,
                role,
                trusted,
                helo: None,
                auth_user: None,
                tls: None,
            },
            esmtp: false,
            tls: None,
            transaction: None,
            errors: 0,
            junk_commands: 0,
            messages: 0,
        }
    }

    fn limits(&self) -> &LimitsConfig {
        &self.runtime.config.limits
    }

    fn hostname(&self) -> &str {
        &self.runtime.config.server.hostname
    }

    /// Runs the session to its end; errors only end the session, never the daemon.
    pub async fn run(mut self) {
        // Info, probes and floods included: the log queue (service::log_queue) drops rather
        // than blocks when journald reads slowly.
        log::info!(
            session_id = self.info.session_id.as_str(), client_addr:% = self.info.client.ip();
            "connect: session {} from {} to {}", self.info.session_id, self.info.client, self.info.local
        );
        match self.converse().await {
            Ok(()) => {}
            Err(StreamError::Timeout) => {
                let text = format!("4.4.2 {} Timeout, closing connection", self.hostname());
                self.stream.reply(&Reply::owned(421, text));
                log::info!("session {}: timeout", self.info.client);
            }
            Err(StreamError::Closed) => {
                log::debug!("session {}: client disconnected", self.info.client)
            }
            Err(StreamError::Io(e)) => log::debug!("session {}: {e}", self.info.client),
        }
        self.stream.shutdown().await;
        log::info!(
            session_id = self.info.session_id.as_str(), client_addr:% = self.info.client.ip(),
            messages = self.messages;
            "disconnect: session {} from {} messages={}", self.info.session_id, self.info.client, self.messages
        );
    }

    async fn converse(&mut self) -> Result<(), StreamError> {
        if !self.opening().await? {
            return Ok(());
        }
        loop {
            let timeout = self.limits().command_timeout;
            let line = self.stream.read_line_up_to(timeout, MAX_AUTH_LINE).await?;
            let messages_before = self.messages;
            let next = match line {
                Line::Command(bytes) if bytes.len() <= MAX_COMMAND_LINE || is_auth(&bytes) => {
                    self.command(&bytes).await?
                }
                Line::TooLong | Line::Command(_) => {
                    self.error(&reply::LINE_TOO_LONG);
                    Next::Continue
                }
            };
            if matches!(next, Next::Close) {
                return Ok(());
            }
            if self.messages != messages_before {
                // As Postfix: a client that delivers mail is not idling with junk.
                self.junk_commands = 0;
            }
            if self.errors >= self.limits().max_errors {
                let text = format!(
                    "4.7.0 {} Too many errors, closing connection",
                    self.hostname()
                );
                self.stream.reply(&Reply::owned(421, text));
                log::info!("session {}: too many errors", self.info.client);
                self.gateway
                    .flow
                    .signal(self.info.client.ip(), Signal::ProtocolErrors);
                return Ok(());
            }
        }
    }

    /// Connect checks, pre-greet detection, implicit TLS and the banner. False: closed.
    async fn opening(&mut self) -> Result<bool, StreamError> {
        if let Verdict::Reject(reply) = self.runtime.chain.connect(&self.info).await {
            self.log_reject("CONNECT", &reply, "");
            self.stream.reply(&reply);
            return Ok(false);
        }
        if self.info.role == ListenerRole::Submissions {
            let Some(tls) = self.runtime.tls.clone() else {
                return Ok(false);
            };
            self.tls = Some(
                self.stream
                    .upgrade(acceptor(tls), TLS_HANDSHAKE_TIMEOUT)
                    .await?,
            );
            self.note_tls();
        } else if self.pregreet_detected().await {
            log::info!("session {}: talked before greeting", self.info.client);
            Counters::bump(&self.gateway.counters.sessions_refused);
            self.gateway
                .flow
                .signal(self.info.client.ip(), Signal::Pregreet);
            self.stream.reply(&reply::PREGREET);
            return Ok(false);
        }
        let banner = format!("{} ESMTP Bulwark", self.hostname());
        self.stream.reply(&Reply::owned(220, banner));
        self.stream.flush().await?;
        Ok(true)
    }

    async fn pregreet_detected(&mut self) -> bool {
        let delay = self.runtime.config.smtp.greet_delay;
        let ip = self.info.client.ip();
        if self.info.trusted || delay.is_zero() || self.gateway.greet_passed_recently(ip) {
            return false;
        }
        match self.stream.talks_first(delay).await {
            Greeting::Talked => true,
            Greeting::Waited => {
                self.gateway.remember_greet_pass(ip);
                false
            }
            // Hanging up during the pause earns no pass.
            Greeting::HungUp => false,
        }
    }

    fn note_tls(&mut self) {
        self.info.tls = self
            .tls
            .as_ref()
            .map(|t| format!("{} {}", t.version, t.cipher));
    }

    /// Sends an error reply and counts it towards `max_errors`.
    fn error(&mut self, reply: &Reply) {
        self.errors += 1;
        self.stream.reply(reply);
    }

    /// Answers a command that moves no mail (NOOP, RSET, VRFY, HELP, a repeated HELO):
    /// past `junk_command_limit` of them each counts as an error, so `max_errors` ends a
    /// session that only idles (Postfix's smtpd_junk_command_limit).
    fn junk(&mut self, reply: &Reply) {
        self.junk_commands += 1;
        if self.junk_commands > self.limits().junk_command_limit {
            self.errors += 1;
        }
        self.stream.reply(reply);
    }

    fn answer(&mut self, reply: &Reply) {
        if reply.is_permanent() {
            self.errors += 1;
        }
        self.stream.reply(reply);
    }

    async fn command(&mut self, line: &[u8]) -> Result<Next, StreamError> {
        if line.contains(&0) {
            self.error(&Reply::new(500, "5.5.2 NUL character in command"));
            return Ok(Next::Continue);
        }
        match Request::parse(&mut line.iter()) {
            Ok(request) => {
                let request = request.into_owned();
                self.dispatch(request).await
            }
            Err(e) => {
                self.error(&parse_error_reply(&e));
                Ok(Next::Continue)
            }
        }
    }

    async fn dispatch(&mut self, request: Request<String>) -> Result<Next, StreamError> {
        if self.bdat_in_progress()
            && !matches!(
                request,
                Request::Bdat { .. } | Request::Rset | Request::Quit | Request::Noop { .. }
            )
        {
            self.error(&Reply::new(
                503,
                "5.5.1 BDAT transfer in progress, send BDAT or RSET",
            ));
            return Ok(Next::Continue);
        }
        match request {
            Request::Ehlo { host } => self.helo(host, true).await,
            Request::Helo { host } => self.helo(host, false).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await,
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::Rset => {
                self.transaction = None;
                self.junk(&reply::OK);
            }
            Request::Noop { .. } => self.junk(&reply::OK),
            Request::Vrfy { .. } => self.junk(&reply::VRFY),
            Request::Expn { .. } => self.error(&reply::EXPN),
            Request::Help { .. } => self.junk(&reply::HELP),
            Request::Quit => {
                self.stream.reply(&reply::BYE);
                return Ok(Next::Close);
            }
            Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(&Reply::new(502, "5.5.1 Command not implemented")),
        }
        Ok(Next::Continue)
    }

    fn bdat_in_progress(&self) -> bool {
        self.transaction
            .as_ref()
            .is_some_and(|t| t.chunks.is_some())
    }

    async fn helo(&mut self, host: String, extended: bool) {
        if host.is_empty() || host.len() > 255 {
            self.error(&Reply::new(501, "5.5.4 Syntax: EHLO hostname"));
            return;
        }
        if let Verdict::Reject(reply) = self.runtime.chain.helo(&self.info, &host).await {
            self.log_reject("HELO", &reply, &format!("helo={host}"));
            self.answer(&reply);
            return;
        }
        let repeated = self.info.helo.is_some();
        self.info.helo = Some(host);
        self.esmtp = extended;
        self.transaction = None;
        if !extended {
            let reply = Reply::owned(250, self.hostname().to_string());
            return self.hello_reply(&reply, repeated);
        }
        let mut lines = vec![
            self.hostname().to_string(),
            "PIPELINING".into(),
            format!("SIZE {}", self.limits().max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.runtime.tls.is_some() && !self.stream.is_tls() {
            lines.push("STARTTLS".into());
        }
        if self.runtime.users.is_some() && self.stream.is_tls() && self.info.auth_user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        // RFC 8689 2: offered only where the client's message arrives over TLS.
        if self.stream.is_tls() {
            lines.push("REQUIRETLS".into());
        }
        self.hello_reply(&Reply::owned(250, lines.join("\n")), repeated);
    }

    /// A repeated HELO/EHLO (not the one STARTTLS requires) is a junk command.
    fn hello_reply(&mut self, reply: &Reply, repeated: bool) {
        if repeated {
            self.junk(reply);
        } else {
            self.stream.reply(reply);
        }
    }

    async fn mail(&mut self, from: MailFrom<String>) {
        if self.info.helo.is_none() {
            return self.error(&reply::NEED_HELO);
        }
        if self.transaction.is_some() {
            return self.error(&reply::NESTED_MAIL);
        }
        let needs_auth = matches!(
            self.info.role,
            ListenerRole::Submission | ListenerRole::Submissions
        );
        if needs_auth && self.info.auth_user.is_none() {
            return self.error(&reply::AUTH_REQUIRED);
        }
        if self.messages >= self.limits().max_messages_per_session {
            return self.error(&Reply::new(
                452,
                "4.5.3 Too many messages in this session, reconnect",
            ));
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.error(&Reply::new(555, "5.5.4 Unsupported MAIL parameter"));
        }
        let require_tls = from.flags & MAIL_REQUIRETLS != 0;
        if require_tls && !self.stream.is_tls() {
            return self.error(&Reply::new(530, "5.7.10 REQUIRETLS needs a TLS session"));
        }
        if from.size as u64 > self.limits().max_message_size {
            return self.error(&reply::TOO_BIG);
        }
        if !self.spool_has_room(from.size as u64) {
            return self.stream.reply(&reply::DISK_FULL);
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !from.address.is_empty() {
            if let Err(e) = Mailbox::parse(&from.address, smtputf8) {
                return self.error(&address_error_reply(e, &reply::BAD_SENDER));
            }
        }
        if let Verdict::Reject(reply) = self.runtime.chain.mail(&self.info, &from.address).await {
            self.log_reject("MAIL", &reply, &format!("from=<{}>", from.address));
            return self.answer(&reply);
        }
        self.transaction = Some(Transaction {
            sender: from.address,
            body: if from.flags & MAIL_BODY_8BITMIME != 0 {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8,
            ret: match from.flags {
                f if f & MAIL_RET_FULL != 0 => Some(DsnRet::Full),
                f if f & MAIL_RET_HDRS != 0 => Some(DsnRet::Hdrs),
                _ => None,
            },
            envid: from.env_id,
            require_tls,
            recipients: Vec::new(),
            rcpt_attempted: false,
            chunks: None,
        });
        self.stream.reply(&Reply::new(250, "2.1.0 Ok"));
    }

    /// True while the spool keeps `[server] min_free_space` free after a message of
    /// `declared` bytes (its SIZE). Only new mail is refused: delivery and the notices it
    /// sends use the spool without asking, so the queue drains and frees space.
    fn spool_has_room(&self, declared: u64) -> bool {
        let reserve = self.runtime.config.server.min_free_space;
        if reserve == 0 {
            return true;
        }
        match self.gateway.spool.free_space() {
            Ok(free) if free >= reserve.saturating_add(declared) => true,
            Ok(free) => {
                log::warn!(
                    client_addr:% = self.info.client.ip(), reason = "min_free_space";
                    "reject: MAIL from {}: 452 4.3.1 only {free} bytes free on the spool \
                     (min_free_space {reserve})",
                    self.info.client.ip()
                );
                false
            }
            // Cannot tell: let the write itself find out (it answers 452 when full).
            Err(e) => {
                log::warn!("spool: cannot read the free space: {e}");
                true
            }
        }
    }

    async fn rcpt(&mut self, to: RcptTo<String>) {
        let max_recipients = self.limits().max_recipients;
        let Some(transaction) = &mut self.transaction else {
            return self.error(&reply::NEED_MAIL);
        };
        transaction.rcpt_attempted = true;
        if transaction.recipients.len() >= max_recipients {
            self.stream.reply(&reply::TOO_MANY_RECIPIENTS);
            return;
        }
        let mailbox = match Mailbox::parse(&to.address, transaction.smtputf8) {
            Ok(mailbox) => mailbox,
            Err(e) => return self.error(&address_error_reply(e, &reply::BAD_RECIPIENT)),
        };
        match self.runtime.chain.rcpt(&self.info, &mailbox).await {
            Verdict::Reject(reply) => {
                Counters::bump(&self.gateway.counters.recipients_rejected);
                self.log_reject("RCPT", &reply, &format!("to=<{}>", mailbox.canonical()));
                if reply.reason == Some(RejectReason::UnknownRecipient) {
                    self.gateway
                        .flow
                        .signal(self.info.client.ip(), Signal::UnknownRecipient);
                }
                return self.answer(&reply);
            }
            Verdict::Continue | Verdict::Accept => {}
        }
        let recipient = Recipient {
            address: mailbox.canonical(),
            notify: notify_string(to.flags),
            // smtp-proto accepts only the rfc822 type and hands back the decoded address.
            orcpt: to.orcpt.map(|address| format!("rfc822;{address}")),
            outcome: Default::default(),
        };
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(recipient);
        }
        self.stream.reply(&Reply::new(250, "2.1.5 Ok"));
    }

    /// Checks that content may start now; the error reply otherwise.
    fn content_allowed(&self) -> Result<(), Reply> {
        match &self.transaction {
            None => Err(reply::NEED_MAIL),
            Some(t) if !t.rcpt_attempted => Err(reply::NEED_RCPT),
            Some(t) if t.recipients.is_empty() => Err(reply::NO_VALID_RECIPIENTS),
            Some(_) => Ok(()),
        }
    }

    fn begin_content(&self, decoder: DataDecoder) -> Receiving {
        Receiving {
            draft: self.gateway.spool.begin(),
            decoder,
            header: HeaderScanner::new(self.limits().max_header_size),
            client_bytes: 0,
            too_big: false,
            eight_bit: false,
            spool_error: None,
            trace: String::new(),
        }
    }

    async fn data(&mut self) -> Result<Next, StreamError> {
        if let Err(reply) = self.content_allowed() {
            self.error(&reply);
            return Ok(Next::Continue);
        }
        self.stream.reply(&reply::START_DATA);
        let policy = self.runtime.config.smtp.bare_newline;
        let mut receiving = self.begin_content(DataDecoder::for_data(policy));
        self.write_trace_header(&mut receiving).await;
        let timeout = self.limits().data_timeout;
        let max = self.limits().max_message_size;
        let mut out = Vec::with_capacity(32 * 1024);
        while !receiving.decoder.is_done() {
            out.clear();
            let decoder = &mut receiving.decoder;
            self.stream
                .consume(timeout, usize::MAX, |input| decoder.decode(input, &mut out))
                .await?;
            receiving.take(&out, max).await;
        }
        self.finish_content(receiving).await;
        Ok(Next::Continue)
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Result<Next, StreamError> {
        let timeout = self.limits().data_timeout;
        if let Err(reply) = self.content_allowed() {
            self.stream.discard(size, timeout).await?;
            self.error(&reply);
            return Ok(Next::Continue);
        }
        let mut receiving = match self.transaction.as_mut().and_then(|t| t.chunks.take()) {
            Some(receiving) => receiving,
            None => {
                let policy = self.runtime.config.smtp.bare_newline;
                let mut receiving = self.begin_content(DataDecoder::for_bdat(policy));
                self.write_trace_header(&mut receiving).await;
                receiving
            }
        };
        let max = self.limits().max_message_size;
        let mut remaining = size;
        let mut out = Vec::with_capacity(32 * 1024);
        while remaining > 0 {
            out.clear();
            let decoder = &mut receiving.decoder;
            let used = self
                .stream
                .consume(timeout, remaining, |input| decoder.decode(input, &mut out))
                .await?;
            remaining -= used;
            receiving.take(&out, max).await;
        }
        if last {
            out.clear();
            receiving.decoder.finish_bdat(&mut out);
            receiving.take(&out, max).await;
            self.finish_content(receiving).await;
        } else {
            let text = format!("2.0.0 {size} octets received");
            self.stream.reply(&Reply::owned(250, text));
            if let Some(transaction) = &mut self.transaction {
                transaction.chunks = Some(receiving);
            }
        }
        Ok(Next::Continue)
    }

    fn protocol_name(&self) -> &'static str {
        match (
            self.esmtp,
            self.tls.is_some(),
            self.info.auth_user.is_some(),
        ) {
            (false, false, _) => "SMTP",
            (false, true, _) => "SMTPS",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    async fn write_trace_header(&self, receiving: &mut Receiving) {
        let id = receiving.draft.id().to_string();
        let single = match &self.transaction {
            Some(t) if t.recipients.len() == 1 => Some(t.recipients[0].address.as_str()),
            _ => None,
        };
        let header = received_header(&TraceFacts {
            helo: self.info.helo.as_deref().unwrap_or(""),
            client_ip: self.info.client.ip(),
            hostname: self.hostname(),
            protocol: self.protocol_name(),
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.version.as_str(), t.cipher.as_str())),
            queue_id: &id,
            single_recipient: single,
            unix_time: unix_now() as i64,
        });
        if let Err(e) = receiving.draft.write(header.as_bytes()).await {
            receiving.spool_error = Some(e);
        }
        receiving.trace = header;
    }

    /// Decides on the received content and commits it, replying either way.
    async fn finish_content(&mut self, receiving: Receiving) {
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        if let Some(reply) = self.content_problem(&receiving) {
            self.refuse_message(&transaction.sender, "content", &reply);
            return self.answer(&reply);
        }
        let envelope = self.envelope(transaction, &receiving);
        let view = MessageView {
            envelope: &envelope,
            header: receiving.header.header(),
            content_len: receiving.draft.content_len(),
        };
        if let Verdict::Reject(reply) = self.runtime.chain.message(&self.info, &view).await {
            self.refuse_message(&envelope.sender, "policy", &reply);
            return self.answer(&reply);
        }
        if self.runtime.pipeline.is_empty() {
            return self.commit(receiving.draft, envelope).await;
        }
        // What stages see and edit: the whole header section, ours first.
        let header = [receiving.trace.as_bytes(), receiving.header.header()].concat();
        let groups = self.run_pipeline(&receiving, &header, &envelope).await;
        match Disposal::of(groups) {
            Disposal::Refuse(reply, groups) => {
                self.refuse_message(&envelope.sender, "filter", &reply);
                let (id, size) = (receiving.draft.id(), receiving.draft.content_len());
                let tracker = &self.gateway.tracker;
                disposal::record_received(tracker, id, &envelope, size, &groups);
                for group in groups.iter().filter(|g| g.verdict.is_some()) {
                    disposal::record_end(tracker, id, &envelope, group);
                }
                self.answer(&reply);
            }
            Disposal::Take(groups) => self.take(receiving, &header, envelope, groups).await,
        }
    }

    async fn run_pipeline(
        &self,
        receiving: &Receiving,
        header: &[u8],
        envelope: &Envelope,
    ) -> Vec<Group> {
        let content = MessageContent::new(
            &receiving.draft,
            header,
            self.runtime.config.pipeline.max_parse_size,
        );
        let all: Vec<usize> = (0..envelope.recipients.len()).collect();
        let findings = Findings::default();
        let cx = Context {
            session: &self.info,
            direction: self.info.direction(),
            queue_id: receiving.draft.id(),
            envelope,
            recipients: &all,
            content: &content,
            findings: &findings,
            hostname: self.hostname(),
        };
        self.runtime.pipeline.run(&cx, &[]).await
    }

    /// Commits what the pipeline decided, then replies 250 (or 4xx when nothing could be).
    async fn take(
        &mut self,
        receiving: Receiving,
        header: &[u8],
        envelope: Envelope,
        groups: Vec<Group>,
    ) {
        let id = receiving.draft.id();
        let size = receiving.draft.content_len();
        let message = Received {
            draft: receiving.draft,
            header,
            envelope,
        };
        let sender = message.envelope.sender.clone();
        let hostname = self.runtime.config.server.hostname.clone();
        let sealer = self.runtime.sealer.clone();
        match disposal::take(
            &self.gateway,
            &self.info,
            &hostname,
            &sealer,
            message,
            groups,
        )
        .await
        {
            Ok(taken) => {
                self.log_taken(id, &sender, size, &taken);
                let counters = &self.gateway.counters;
                Counters::bump(&counters.messages_accepted);
                counters.bytes_accepted.fetch_add(size, Ordering::Relaxed);
                self.messages += 1;
                self.stream
                    .reply(&Reply::owned(250, format!("2.0.0 Ok: queued as {id}")));
            }
            Err(e) => {
                log::error!(
                    session_id = self.info.session_id.as_str(), queue_id:% = id,
                    client_addr:% = self.info.client.ip();
                    "filter: id={id}: cannot commit the message: {e}"
                );
                self.stream.reply(&reply::not_stored(e.is_disk_full()));
            }
        }
    }

    fn log_taken(&self, id: QueueId, sender: &str, size: u64, taken: &Taken) {
        let client = self.info.client.ip();
        for (queued, recipients) in &taken.queued {
            log::info!(
                session_id = self.info.session_id.as_str(), queue_id:% = queued,
                client_addr:% = client, sender = sender;
                "queued: id={queued} from=<{sender}> nrcpt={} size={size} client={client} split_from={}",
                recipients.len(),
                if *queued == id { "-".to_string() } else { id.to_string() },
            );
        }
        for (copy, recipients, by) in &taken.copies {
            log::info!(
                session_id = self.info.session_id.as_str(), queue_id:% = copy;
                "queued: id={copy} copy_of={id} by={by} to={}", recipients.join(",")
            );
        }
        for (what, lists) in [
            ("quarantined", &taken.quarantined),
            ("discarded", &taken.discarded),
            ("rejected", &taken.rejected),
        ] {
            for recipients in lists {
                log::info!(
                    session_id = self.info.session_id.as_str(), queue_id:% = id,
                    client_addr:% = client, sender = sender;
                    "{what}: id={id} from=<{sender}> to={}", recipients.join(",")
                );
            }
        }
    }

    /// One info event per refusal before DATA, with the fields journald indexes.
    fn log_reject(&self, step: &str, reply: &Reply, detail: &str) {
        log::info!(
            session_id = self.info.session_id.as_str(), client_addr:% = self.info.client.ip(),
            stage = step, smtp_code = reply.code, reason = reply.text.as_ref();
            "reject: {step} session={} from {}: {} {}; {detail}",
            self.info.session_id,
            self.info.client.ip(),
            reply.code,
            reply.text
        );
    }

    /// Logs a message refused at end of data and counts it.
    fn refuse_message(&self, sender: &str, by: &str, reply: &Reply) {
        Counters::bump(&self.gateway.counters.messages_rejected);
        log::info!(
            session_id = self.info.session_id.as_str(), client_addr:% = self.info.client.ip(),
            sender = sender, stage = by, reply_code = reply.code, reason = reply.text.as_ref();
            "reject: message from {} <{sender}> by {by}: {} {}",
            self.info.client.ip(),
            reply.code,
            reply.text
        );
    }

    fn content_problem(&self, receiving: &Receiving) -> Option<Reply> {
        let anomalies = receiving.decoder.anomalies;
        if let Some(e) = &receiving.spool_error {
            log::error!("spool: {e}");
            return Some(reply::not_stored(e.is_disk_full()));
        }
        if receiving.too_big {
            return Some(reply::TOO_BIG);
        }
        if anomalies.nul {
            return Some(reply::NUL_BYTES);
        }
        if receiving.decoder.refuse_bare_newline() {
            return Some(reply::BARE_NEWLINE);
        }
        if anomalies.long_line && self.runtime.config.smtp.long_lines == LongLines::Reject {
            return Some(reply::LONG_LINE);
        }
        if receiving.header.overflowed() {
            return Some(reply::HEADER_TOO_BIG);
        }
        // Our own Received: header is in the count, as it will be at the next hop.
        if receiving.header.received_count() > self.limits().max_received_headers {
            return Some(reply::LOOP);
        }
        None
    }

    fn envelope(&self, transaction: Transaction, receiving: &Receiving) -> Envelope {
        let parsed = mail_parser::MessageParser::default().parse_headers(receiving.header.header());
        let message_id = parsed
            .as_ref()
            .and_then(|m| m.message_id())
            .map(str::to_string);
        let subject = parsed
            .as_ref()
            .and_then(|m| m.subject())
            .map(str::to_string);
        Envelope {
            sender: transaction.sender,
            recipients: transaction.recipients,
            received_at: unix_now(),
            client_addr: self.info.client.ip(),
            helo: self.info.helo.clone().unwrap_or_default(),
            auth_user: self.info.auth_user.clone(),
            tls: self.info.tls.clone(),
            body: transaction.body,
            smtputf8: transaction.smtputf8,
            eight_bit: receiving.eight_bit,
            dsn_ret: transaction.ret,
            dsn_envid: transaction.envid,
            message_id,
            subject,
            require_tls: transaction.require_tls,
        }
    }

    async fn commit(&mut self, draft: Draft, envelope: Envelope) {
        let size = draft.content_len();
        let sender = envelope.sender.clone();
        let nrcpt = envelope.recipients.len();
        let message_id = envelope.message_id.clone();
        match self.gateway.enqueue(draft, envelope, Origin::Client).await {
            Ok(id) => {
                let client = self.info.client.ip();
                log::info!(
                    session_id = self.info.session_id.as_str(), queue_id:% = id,
                    client_addr:% = client, sender = sender.as_str();
                    "queued: id={id} from=<{sender}> nrcpt={nrcpt} size={size} client={client} message_id={}",
                    message_id.as_deref().unwrap_or("-"),
                );
                let counters = &self.gateway.counters;
                Counters::bump(&counters.messages_accepted);
                counters.bytes_accepted.fetch_add(size, Ordering::Relaxed);
                self.messages += 1;
                self.stream
                    .reply(&Reply::owned(250, format!("2.0.0 Ok: queued as {id}")));
            }
            Err(e) => {
                log::error!("spool commit failed: {e}");
                self.stream.reply(&reply::not_stored(e.is_disk_full()));
            }
        }
    }

    async fn starttls(&mut self) -> Result<Next, StreamError> {
        if self.stream.is_tls() {
            self.error(&reply::TLS_ACTIVE);
            return Ok(Next::Continue);
        }
        let Some(tls) = self.runtime.tls.clone() else {
            self.error(&reply::TLS_UNAVAILABLE);
            return Ok(Next::Continue);
        };
        self.stream.reply(&reply::TLS_READY);
        let handshake = self
            .stream
            .upgrade(acceptor(tls), TLS_HANDSHAKE_TIMEOUT)
            .await;
        self.tls = Some(handshake.inspect_err(|e| self.handshake_failed(e))?);
        self.note_tls();
        // RFC 3207 4.2: forget everything learned before TLS.
        self.info.helo = None;
        self.esmtp = false;
        self.transaction = None;
        Ok(Next::Continue)
    }

    /// One info event per failed STARTTLS handshake: a client with a broken TLS stack, a
    /// scanner, or a downgrade attempt, each worth seeing without debug logging.
    fn handshake_failed(&self, error: &StreamError) {
        let reason = match error {
            StreamError::Timeout => "timed out".to_string(),
            StreamError::Closed => "client closed the connection".to_string(),
            StreamError::Io(e) => e.to_string(),
        };
        log::info!(
            session_id = self.info.session_id.as_str(), client_addr:% = self.info.client.ip(),
            reason = reason.as_str();
            "tls: handshake failed: session {} from {}: {reason}", self.info.session_id, self.info.client
        );
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Result<Next, StreamError> {
        let refusal = if self.info.auth_user.is_some() {
            Some(reply::AUTH_ALREADY)
        } else if self.runtime.users.is_none() {
            Some(reply::AUTH_UNAVAILABLE)
        } else if !self.stream.is_tls() {
            Some(reply::AUTH_NEEDS_TLS)
        } else if self.info.helo.is_none() || !self.esmtp {
            Some(reply::NEED_HELO)
        } else if self.transaction.is_some() {
            Some(Reply::new(
                503,
                "5.5.1 AUTH not allowed during a mail transaction",
            ))
        } else if mechanism != AUTH_PLAIN && mechanism != AUTH_LOGIN {
            Some(reply::AUTH_BAD_MECHANISM)
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.error(&reply);
            return Ok(Next::Continue);
        }
        let credentials = if mechanism == AUTH_PLAIN {
            self.sasl_plain(initial).await?
        } else {
            self.sasl_login(initial).await?
        };
        let Some((user, password)) = credentials else {
            self.error(&reply::AUTH_CANCELLED);
            return Ok(Next::Continue);
        };
        let users = self.runtime.users.clone();
        let name = user.clone();
        let valid =
            tokio::task::spawn_blocking(move || users.is_some_and(|u| u.verify(&name, &password)))
                .await
                .unwrap_or(false);
        if valid {
            log::info!("auth: client={} user={user}", self.info.client.ip());
            self.info.auth_user = Some(user);
            self.stream.reply(&reply::AUTH_OK);
        } else {
            log::warn!("auth failed: client={} user={user}", self.info.client.ip());
            self.error(&reply::AUTH_FAILED);
            self.gateway
                .flow
                .signal(self.info.client.ip(), Signal::AuthFailure);
        }
        Ok(Next::Continue)
    }

    /// Reads one SASL continuation line; None when the client cancelled with `*`.
    async fn sasl_response(&mut self, prompt: &str) -> Result<Option<String>, StreamError> {
        self.stream.reply(&Reply::owned(334, prompt.to_string()));
        let timeout = self.limits().command_timeout;
        let line = match self.stream.read_line_up_to(timeout, MAX_AUTH_LINE).await? {
            Line::Command(line) => line,
            Line::TooLong => return Ok(None),
        };
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text == "*" {
            return Ok(None);
        }
        Ok(auth::decode_b64(&text))
    }

    async fn sasl_plain(
        &mut self,
        initial: String,
    ) -> Result<Option<(String, String)>, StreamError> {
        let decoded = if initial.is_empty() {
            self.sasl_response("").await?
        } else {
            auth::decode_b64(&initial)
        };
        Ok(decoded.and_then(|d| auth::parse_plain(&d)))
    }

    async fn sasl_login(
        &mut self,
        initial: String,
    ) -> Result<Option<(String, String)>, StreamError> {
        let user = if initial.is_empty() {
            self.sasl_response(&auth::encode_b64("Username:")).await?
        } else {
            auth::decode_b64(&initial)
        };
        let Some(user) = user else { return Ok(None) };
        let password = self.sasl_response(&auth::encode_b64("Password:")).await?;
        Ok(password.map(|p| (user, p)))
    }
}

impl Receiving {
    /// Takes decoded content: counts it, streams it to the draft unless already refused.
    async fn take(&mut self, content: &[u8], max: u64) {
        if content.is_empty() {
            return;
        }
        self.client_bytes += content.len() as u64;
        if self.client_bytes > max {
            self.too_big = true;
        }
        if self.too_big || self.spool_error.is_some() {
            return;
        }
        self.header.feed(content);
        self.eight_bit = self.eight_bit || !content.is_ascii();
        if let Err(e) = self.draft.write(content).await {
            self.spool_error = Some(e);
        }
    }
}

fn notify_string(flags: u64) -> Option<String> {
    if flags & RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let names: Vec<&str> = [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    (!names.is_empty()).then(|| names.join(","))
}

fn address_error_reply(error: AddressError, syntax: &Reply) -> Reply {
    match error {
        AddressError::NeedsSmtputf8 => reply::NEEDS_SMTPUTF8,
        _ => syntax.clone(),
    }
}

fn parse_error_reply(error: &ParseError) -> Reply {
    match error {
        ParseError::UnknownCommand => reply::UNRECOGNIZED,
        ParseError::InvalidSenderAddress => reply::BAD_SENDER,
        ParseError::InvalidRecipientAddress => reply::BAD_RECIPIENT,
        ParseError::SyntaxError { syntax } => Reply::owned(501, format!("5.5.4 Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            Reply::owned(501, format!("5.5.4 Invalid parameter {param}"))
        }
        ParseError::UnsupportedParameter { param } => Reply::owned(
            555,
            format!("5.5.4 Unsupported parameter {}", printable(param)),
        ),
        _ => Reply::new(500, "5.5.2 Syntax error"),
    }
}

/// An AUTH command, whose initial response may make the line up to MAX_AUTH_LINE long.
fn is_auth(line: &[u8]) -> bool {
    line.len() > 5 && line[..5].eq_ignore_ascii_case(b"AUTH ")
}

fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| c.is_ascii_graphic()) && text.len() <= 64 {
        Cow::Borrowed(text)
    } else {
        Cow::Borrowed("(unprintable)")
    }
}
