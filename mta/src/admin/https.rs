//! `[control] listen`: the control protocol over HTTPS with mutual TLS, for the console.
//!
//! `POST /control` with one `Request` as JSON answers one `Response` as JSON, exactly as the
//! unix socket does (the same `Control::execute`). Invariant: the TLS handshake fails unless
//! the client presents a certificate chaining to `[control] ca`; no request is read before
//! that. Every connection is bounded in time and size.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::http::{self, HttpError};
use super::protocol::{Request, Response, MAX_REQUEST};
use super::server::Control;
use crate::config::ControlConfig;

/// A whole exchange (handshake, request, execution, answer) must fit in this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlListenError {
    #[error("[control] {0}")]
    Tls(#[from] PemError),
    #[error("[control] listen {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(PemError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| PemError::NoKey(path.to_path_buf()))
}

pub fn root_store(ca: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca)? {
        roots.add(certificate)?;
    }
    Ok(roots)
}

/// The server side: our certificate, client certificates checked against `ca`. They are
/// required in the handshake unless `anonymous_allowed` (an MTA-STS policy is published,
/// which senders fetch without one); `/control` then still refuses a client without one.
pub fn server_config(
    config: &ControlConfig,
    anonymous_allowed: bool,
) -> Result<Arc<rustls::ServerConfig>, PemError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&config.ca)?),
        provider.clone(),
    );
    let builder = if anonymous_allowed {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder
        .build()
        .map_err(|e| PemError::Verifier(e.to_string()))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            read_certificates(&config.certificate)?,
            read_key(&config.private_key)?,
        )?;
    Ok(Arc::new(tls))
}

pub async fn bind(
    config: &ControlConfig,
    anonymous_allowed: bool,
) -> Result<(TcpListener, TlsAcceptor), ControlListenError> {
    let acceptor = TlsAcceptor::from(server_config(config, anonymous_allowed)?);
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ControlListenError::Bind {
                address: config.listen,
                source,
            })?;
    Ok((listener, acceptor))
}

pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, control: Arc<Control>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (acceptor, control) = (acceptor.clone(), control.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(
                        EXCHANGE_TIMEOUT,
                        exchange(stream, acceptor, control),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log::warn!(client:% = peer; "control over HTTPS: {e}"),
                        Err(_) => log::warn!(client:% = peer; "control over HTTPS: timed out"),
                    }
                });
            }
            Err(e) => {
                log::warn!("control listener accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where senders fetch our MTA-STS policy (RFC 8461 3.3).
const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";

/// The `[tls_policy.publish]` policy as `text/plain`, or 404 when none is configured.
async fn serve_mta_sts(
    tls: &mut tokio_rustls::server::TlsStream<TcpStream>,
    control: &Control,
) -> Result<(), HttpError> {
    let config = control.gateway.runtime().config.clone();
    match crate::tls_policy::published_policy(&config.tls_policy) {
        Some(policy) => http::write_response(tls, 200, "text/plain", policy.as_bytes()).await,
        None => http::write_response(tls, 404, "text/plain", b"no MTA-STS policy\n").await,
    }
}

async fn exchange(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    control: Arc<Control>,
) -> Result<(), HttpError> {
    let mut tls = acceptor.accept(stream).await?;
    let request = http::read_request(&mut tls, MAX_REQUEST).await?;
    if request.path == MTA_STS_PATH && request.method == "GET" {
        return serve_mta_sts(&mut tls, &control).await;
    }
    if tls.get_ref().1.peer_certificates().is_none() {
        return http::write_response(
            &mut tls,
            403,
            "text/plain",
            b"client certificate required\n",
        )
        .await;
    }
    if request.path != "/control" {
        return http::write_response(&mut tls, 404, "text/plain", b"only POST /control\n").await;
    }
    if request.method != "POST" {
        return http::write_response(&mut tls, 405, "text/plain", b"only POST /control\n").await;
    }
    let response = match serde_json::from_slice::<Request>(&request.body) {
        Ok(request) => control.execute(request).await,
        Err(e) => Response::error(format!("malformed request: {e}")),
    };
    let body = serde_json::to_vec(&response).unwrap_or_default();
    http::write_response(&mut tls, 200, "application/json", &body).await
}
