//! Relay control: never an open relay.
//!
//! A recipient is accepted only if its domain is one of ours (`relay.domains`), or the client
//! is trusted or authenticated. For our domains, a local part that carries its own routing
//! (`user%other.net`, `other.net!user`, a quoted `"user@other.net"`) is refused from untrusted
//! clients, since the internal server might act on it and relay; address literals are never
//! ours.

use async_trait::async_trait;

use super::{SessionInfo, Stage, Verdict};
use crate::config::{domain_listed, Config};
use crate::smtp::address::Mailbox;
use crate::smtp::reply::{RejectReason, Reply};

pub struct RelayControl {
    domains: Vec<String>,
}

impl RelayControl {
    pub fn new(config: &Config) -> Self {
        Self {
            domains: config.relay.domains.clone(),
        }
    }

    fn is_ours(&self, recipient: &Mailbox) -> bool {
        recipient
            .domain_name()
            .is_some_and(|domain| domain_listed(&self.domains, domain))
    }
}

fn denied(recipient: &Mailbox, why: &str) -> Verdict {
    Verdict::Reject(
        Reply::owned(
            554,
            format!(
                "5.7.1 <{}>: Relay access denied{why}",
                recipient.canonical()
            ),
        )
        .because(RejectReason::RelayDenied),
    )
}

#[async_trait]
impl Stage for RelayControl {
    fn name(&self) -> &'static str {
        "relay"
    }

    async fn on_rcpt(&self, session: &SessionInfo, recipient: &Mailbox) -> Verdict {
        match (self.is_ours(recipient), session.may_relay()) {
            (true, true) => Verdict::Continue,
            (true, false) if recipient.has_routing() => {
                denied(recipient, " (routing in the local part)")
            }
            (true, false) => Verdict::Continue,
            (false, true) => Verdict::Accept,
            (false, false) => denied(recipient, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{builtin_default, ListenerRole};

    fn session(trusted: bool) -> SessionInfo {
        SessionInfo {
            session_id: "test".into(),
            client: "192.0.2.1:1000".parse().expect("addr"),
            local: "127.0.0.1:25".parse().expect("addr"),
            role: ListenerRole::Mx,
            trusted,
            helo: None,
            auth_user: None,
            tls: None,
        }
    }

    fn stage() -> RelayControl {
        let mut config = builtin_default();
        config.relay.domains = vec!["example.com".into()];
        RelayControl::new(&config)
    }

    async fn verdict(address: &str, trusted: bool) -> Verdict {
        let mailbox = Mailbox::parse(address, false).expect("parses");
        stage().on_rcpt(&session(trusted), &mailbox).await
    }

    #[tokio::test]
    async fn untrusted_clients_reach_only_our_domains() {
        assert_eq!(verdict("u@example.com", false).await, Verdict::Continue);
        for trick in [
            "u@other.net",
            "u%other.net@example.com",
            "other.net!u@example.com",
            "u@other.net@example.com",
            "u@[127.0.0.1]",
            "u@sub.example.com",
            "u@example.com.other.net",
        ] {
            assert!(
                matches!(verdict(trick, false).await, Verdict::Reject(r)
                    if r.code == 554 && r.reason == Some(RejectReason::RelayDenied)),
                "{trick}"
            );
        }
    }

    #[tokio::test]
    async fn trusted_clients_relay() {
        assert_eq!(verdict("u@other.net", true).await, Verdict::Accept);
        assert_eq!(verdict("u%x@example.com", true).await, Verdict::Continue);
    }
}
