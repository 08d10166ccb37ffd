//! The federation client: one `Request` to one node's `[control] listen` over HTTPS with
//! mutual TLS, answered by one `Response`. The console speaks nothing else to a node, so a new
//! node feature reaches the console as a new `Request` variant, never as a new protocol.
//!
//! Invariant: the node's certificate must chain to the console's `ca` and carry the node's
//! name; the whole exchange is under the caller's timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::http::{self, HttpError};
use super::https::{read_certificates, read_key, root_store, PemError};
use super::protocol::{Request, Response};

/// Largest answer read from a node (a whole queue listing fits).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("answer is not a control response: {0}")]
    Protocol(String),
}

/// The console's client identity and trust anchor, shared by every node connection.
#[derive(Clone)]
pub struct Federation {
    connector: TlsConnector,
}

impl Federation {
    pub fn new(certificate: &Path, private_key: &Path, ca: &Path) -> Result<Self, PemError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(root_store(ca)?)
            .with_client_auth_cert(read_certificates(certificate)?, read_key(private_key)?)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Sends `request` to the node at `address` whose certificate names `server_name`.
    pub async fn call(
        &self,
        address: &str,
        server_name: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, RemoteError> {
        tokio::time::timeout(timeout, self.exchange(address, server_name, request))
            .await
            .map_err(|_| RemoteError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        address: &str,
        server_name: &str,
        request: &Request,
    ) -> Result<Response, RemoteError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| RemoteError::ServerName(server_name.to_string()))?;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(RemoteError::Connect)?;
        let mut tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(RemoteError::Connect)?;
        let body = serde_json::to_vec(request).map_err(|e| RemoteError::Protocol(e.to_string()))?;
        http::write_request(&mut tls, server_name, "/control", &body).await?;
        let (status, answer) = http::read_response(&mut tls, MAX_ANSWER).await?;
        if status != 200 {
            return Err(RemoteError::Status(status));
        }
        serde_json::from_slice(&answer).map_err(|e| RemoteError::Protocol(e.to_string()))
    }
}
