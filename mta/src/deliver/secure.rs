//! TLS for one outbound session by its host's policy (see `tls_policy`): STARTTLS with the
//! policy's verifier, what a failure means (defer, or retry without authentication where
//! the policy allows it), the TLS-RPT count of the session, and the REQUIRETLS gate.
//!
//! # Guarantees
//! - Under DANE or MTA-STS `enforce`, a session without STARTTLS or whose certificate does
//!   not verify is refused: the caller defers, nothing is sent in clear.
//! - A REQUIRETLS message goes only over a session that is authenticated (DANE, MTA-STS or
//!   `verify`) to a next hop that offered REQUIRETLS (RFC 8689 4.2).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::attempt::Outcome;
use super::Context;
use crate::config::OutboundTls;
use crate::route::Destination;
use crate::smtp_client::{Client, ClientError};
use crate::tls_policy::mta_sts::Mode;
use crate::tls_policy::tlsrpt::ResultType;
use crate::tls_policy::{HostPolicy, PolicyKind};

/// How the session ended up.
pub(super) enum Negotiated {
    Plain,
    Tls { authenticated: bool },
}

pub(super) enum NegotiationError {
    /// Reconnect with this fixed mode (opportunistic TLS failed, MTA-STS testing).
    Retry(String, OutboundTls),
    /// The host must not be used now (defer).
    Failed(String),
}

/// STARTTLS (or not) by `policy`, on a session that has just said EHLO.
pub(super) async fn negotiate(
    context: &Context,
    destination: &Destination,
    client: &mut Client,
    host: &str,
    address: SocketAddr,
    policy: &HostPolicy,
    helo: &str,
) -> Result<Negotiated, NegotiationError> {
    let outcome = match &policy.kind {
        PolicyKind::Fixed(tls) => {
            return fixed(context, destination, client, host, *tls, helo).await
        }
        PolicyKind::Refused(_) => return Err(NegotiationError::Failed(policy.why.clone())),
        PolicyKind::StsUnavailable(result) => {
            if let (Some(scope), Some(security)) = (&policy.scope, security(context)) {
                let sending = client.local_address().map(|a| a.ip());
                security.record(scope, host, address, sending, Err(*result));
            }
            let tls = OutboundTls::Opportunistic;
            return fixed(context, destination, client, host, tls, helo).await;
        }
        PolicyKind::Dane(records) => {
            let config = crate::tls_policy::dane::client_config(records.clone());
            authenticated(client, host, config, helo, ResultType::ValidationFailure).await
        }
        PolicyKind::MtaSts { .. } => {
            let config = security(context)
                .ok_or_else(|| "transport security is not running".to_string())
                .and_then(|s| s.webpki());
            match config {
                Ok(config) => {
                    authenticated(client, host, config, helo, ResultType::StsWebpkiInvalid).await
                }
                Err(e) => Err((ResultType::StsWebpkiInvalid, e)),
            }
        }
    };
    if let (Some(scope), Some(security)) = (&policy.scope, security(context)) {
        let sending = client.local_address().map(|a| a.ip());
        security.record(
            scope,
            host,
            address,
            sending,
            counted(&policy.kind, &outcome),
        );
    }
    match (outcome, &policy.kind) {
        (Ok(()), kind) => Ok(Negotiated::Tls {
            authenticated: !outside_mx_list(kind),
        }),
        (
            Err((_, error)),
            PolicyKind::MtaSts {
                mode: Mode::Testing,
                ..
            },
        ) => {
            log::warn!(host = host, policy = "mta-sts testing"; "delivery: {error}; delivering without authentication (testing)");
            Err(NegotiationError::Retry(error, OutboundTls::Opportunistic))
        }
        (Err((_, error)), _) => Err(NegotiationError::Failed(format!("{}: {error}", policy.why))),
    }
}

/// An MX outside an MTA-STS (testing) policy's list fails the policy however good its
/// certificate is: reported as such, and not authenticated enough for REQUIRETLS.
fn outside_mx_list(kind: &PolicyKind) -> bool {
    matches!(
        kind,
        PolicyKind::MtaSts {
            mx_listed: false,
            ..
        }
    )
}

/// What one session under `kind` counts for TLS-RPT.
fn counted(
    kind: &PolicyKind,
    outcome: &Result<(), (ResultType, String)>,
) -> Result<(), ResultType> {
    match outcome {
        Ok(()) if outside_mx_list(kind) => Err(ResultType::ValidationFailure),
        Ok(()) => Ok(()),
        Err((result, _)) => Err(*result),
    }
}

fn security(context: &Context) -> Option<&Arc<crate::tls_policy::TransportSecurity>> {
    context.gateway.transport_security.get()
}

/// STARTTLS that must succeed with `config`; the error carries its TLS-RPT result type.
async fn authenticated(
    client: &mut Client,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    helo: &str,
    verify_failure: ResultType,
) -> Result<(), (ResultType, String)> {
    if !client.capabilities.starttls {
        return Err((
            ResultType::StarttlsNotSupported,
            "the next hop does not offer STARTTLS".into(),
        ));
    }
    match start_tls_with(client, host, config, helo).await {
        Ok(()) => Ok(()),
        Err(TlsStep::Handshake(e)) => Err((verify_failure, e)),
        Err(TlsStep::Refused(e)) => Err((ResultType::StarttlsNotSupported, e)),
    }
}

/// The route's fixed modes, as before DANE and MTA-STS.
async fn fixed(
    context: &Context,
    destination: &Destination,
    client: &mut Client,
    host: &str,
    tls: OutboundTls,
    helo: &str,
) -> Result<Negotiated, NegotiationError> {
    let wants_tls = match tls {
        OutboundTls::None => false,
        OutboundTls::Opportunistic | OutboundTls::Dane | OutboundTls::MtaSts => {
            client.capabilities.starttls
        }
        OutboundTls::Required | OutboundTls::Verify => {
            if !client.capabilities.starttls {
                return Err(NegotiationError::Failed(
                    "TLS is required but the next hop does not offer STARTTLS".into(),
                ));
            }
            true
        }
    };
    if !wants_tls {
        return Ok(Negotiated::Plain);
    }
    let config = if tls == OutboundTls::Verify {
        context
            .verifying_tls(destination.ca_file.as_ref())
            .map_err(NegotiationError::Failed)?
    } else {
        context.unverified_tls.clone()
    };
    match start_tls_with(client, host, config, helo).await {
        Ok(()) => Ok(Negotiated::Tls {
            authenticated: tls == OutboundTls::Verify,
        }),
        // Opportunistic TLS that fails is retried once in plaintext (RFC 7435).
        Err(e)
            if matches!(
                tls,
                OutboundTls::Opportunistic | OutboundTls::Dane | OutboundTls::MtaSts
            ) =>
        {
            Err(NegotiationError::Retry(e.to_string(), OutboundTls::None))
        }
        Err(e) => Err(NegotiationError::Failed(e.to_string())),
    }
}

/// Where STARTTLS failed.
enum TlsStep {
    /// Not offered after all, or refused with a non-220 reply.
    Refused(String),
    /// The handshake (the certificate check included) or the EHLO after it.
    Handshake(String),
}

impl std::fmt::Display for TlsStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsStep::Refused(e) | TlsStep::Handshake(e) => f.write_str(e),
        }
    }
}

async fn start_tls_with(
    client: &mut Client,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    helo: &str,
) -> Result<(), TlsStep> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| TlsStep::Refused(format!("bad TLS name {host}: {e}")))?;
    let response = client
        .starttls(TlsConnector::from(config), name)
        .await
        .map_err(|e: ClientError| TlsStep::Handshake(e.to_string()))?;
    if response.code != 220 {
        return Err(TlsStep::Refused(format!("STARTTLS refused: {response}")));
    }
    let hello = client
        .hello(helo)
        .await
        .map_err(|e| TlsStep::Handshake(e.to_string()))?;
    if !hello.is_positive() {
        return Err(TlsStep::Handshake(format!("EHLO after STARTTLS: {hello}")));
    }
    Ok(())
}

/// RFC 8689 4.2.1: the bounce a REQUIRETLS message gets when this session cannot carry it,
/// or None when it can.
pub(super) fn requiretls_refusal(
    require_tls: bool,
    authenticated: bool,
    client: &Client,
) -> Option<Outcome> {
    if !require_tls {
        return None;
    }
    let reason = if !authenticated {
        "the next hop could not be authenticated by DANE, MTA-STS or a verified certificate"
    } else if !client.capabilities.requiretls {
        "the next hop does not offer REQUIRETLS"
    } else {
        return None;
    };
    Some(Outcome::Bounced {
        status: "5.7.30".into(),
        diagnostic: format!("550 5.7.30 REQUIRETLS support required: {reason}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlisted_mx_under_testing_counts_as_a_failure_even_with_good_tls() {
        let testing = |mx_listed| PolicyKind::MtaSts {
            mode: Mode::Testing,
            mx_listed,
        };
        assert_eq!(counted(&testing(true), &Ok(())), Ok(()));
        assert_eq!(
            counted(&testing(false), &Ok(())),
            Err(ResultType::ValidationFailure)
        );
        let stripped = Err((ResultType::StarttlsNotSupported, "no STARTTLS".to_string()));
        assert_eq!(
            counted(&testing(false), &stripped),
            Err(ResultType::StarttlsNotSupported)
        );
        assert_eq!(
            counted(&PolicyKind::Dane(Vec::new()), &stripped),
            Err(ResultType::StarttlsNotSupported)
        );
        assert!(outside_mx_list(&testing(false)));
        assert!(!outside_mx_list(&testing(true)));
        assert!(!outside_mx_list(&PolicyKind::Dane(Vec::new())));
    }
}
