//! The filter seam: an ordered chain of stages, each seeing the session at connect, HELO,
//! MAIL, RCPT and end of data (with the parsed message), behind one trait.
//!
//! # Contract
//! - Stages run in order; the first verdict other than `Continue` decides and later stages
//!   are not asked. `Accept` at RCPT means "accepted, skip the remaining checks" (e.g. a
//!   trusted client relaying out); `Reject` carries the exact SMTP reply.
//! - Stages never touch the SMTP state machine or the spool: the session asks, the chain
//!   answers. Anti-virus, anti-spam, policy filters and milters plug in here.
//! - Relay control is always the first RCPT stage, so no later stage can open a relay.

mod harvest;
mod recipients;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

pub use harvest::HarvestTracker;
pub use recipients::{CalloutCache, RecipientValidation, RecipientsError};
pub use relay::RelayControl;

use crate::config::{Config, ListenerRole};
use crate::queue::Envelope;
use crate::smtp::address::Mailbox;
use crate::smtp::reply::Reply;

/// What the chain knows about the client.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Names the session in every log event about it.
    pub session_id: String,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub role: ListenerRole,
    /// In `relay.trusted_networks`.
    pub trusted: bool,
    pub helo: Option<String>,
    pub auth_user: Option<String>,
    pub tls: Option<String>,
}

impl SessionInfo {
    /// May relay to any domain.
    pub fn may_relay(&self) -> bool {
        self.trusted || self.auth_user.is_some()
    }

    /// Outbound when the client is trusted or authenticated (the groupware servers), else
    /// inbound.
    pub fn direction(&self) -> crate::config::Direction {
        if self.may_relay() {
            crate::config::Direction::Outbound
        } else {
            crate::config::Direction::Inbound
        }
    }
}

/// The message at end of data, as stages see it.
pub struct MessageView<'a> {
    pub envelope: &'a Envelope,
    /// The header section as received (our Received: header first), CRLF line ends.
    pub header: &'a [u8],
    pub content_len: u64,
}

impl MessageView<'_> {
    /// The header section parsed by mail-parser (the body is not kept in memory).
    pub fn parsed_header(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::default().parse_headers(self.header)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    Continue,
    Accept,
    Reject(Reply),
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;

    async fn on_connect(&self, _session: &SessionInfo) -> Verdict {
        Verdict::Continue
    }

    async fn on_helo(&self, _session: &SessionInfo, _helo: &str) -> Verdict {
        Verdict::Continue
    }

    async fn on_mail(&self, _session: &SessionInfo, _sender: &str) -> Verdict {
        Verdict::Continue
    }

    async fn on_rcpt(&self, _session: &SessionInfo, _recipient: &Mailbox) -> Verdict {
        Verdict::Continue
    }

    async fn on_message(&self, _session: &SessionInfo, _message: &MessageView<'_>) -> Verdict {
        Verdict::Continue
    }
}

/// Runs `ask` on each stage until one decides.
macro_rules! first_decision {
    ($stages:expr, $stage:ident => $ask:expr) => {{
        for $stage in $stages.iter() {
            let verdict = $ask.await;
            if verdict != Verdict::Continue {
                log::debug!("policy: stage {} decided {:?}", $stage.name(), verdict);
                return verdict;
            }
        }
        Verdict::Continue
    }};
}

#[derive(Default)]
pub struct Chain {
    stages: Vec<Arc<dyn Stage>>,
}

impl Chain {
    /// The standard chain for `config`: relay control, then recipient validation.
    pub fn from_config(
        config: &Config,
        harvest: Arc<HarvestTracker>,
        callouts: Arc<CalloutCache>,
    ) -> Result<Chain, RecipientsError> {
        let mut chain = Chain::default();
        chain.push(Arc::new(RelayControl::new(config)));
        chain.push(Arc::new(RecipientValidation::from_config(
            config, harvest, callouts,
        )?));
        Ok(chain)
    }

    pub fn push(&mut self, stage: Arc<dyn Stage>) {
        self.stages.push(stage);
    }

    pub async fn connect(&self, session: &SessionInfo) -> Verdict {
        first_decision!(self.stages, s => s.on_connect(session))
    }

    pub async fn helo(&self, session: &SessionInfo, helo: &str) -> Verdict {
        first_decision!(self.stages, s => s.on_helo(session, helo))
    }

    pub async fn mail(&self, session: &SessionInfo, sender: &str) -> Verdict {
        first_decision!(self.stages, s => s.on_mail(session, sender))
    }

    pub async fn rcpt(&self, session: &SessionInfo, recipient: &Mailbox) -> Verdict {
        first_decision!(self.stages, s => s.on_rcpt(session, recipient))
    }

    pub async fn message(&self, session: &SessionInfo, message: &MessageView<'_>) -> Verdict {
        first_decision!(self.stages, s => s.on_message(session, message))
    }
}
