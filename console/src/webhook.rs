//! Alert webhooks: one JSON document POSTed to `[console.alerts] webhook` per notice, over
//! HTTP/1.1 (hyper's client) on plain TCP or rustls with the system's roots. Bounded by a
//! timeout; any 2xx is success, anything else is recorded in the history with its status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Result<Target, WebhookError> {
    let bad = || WebhookError::Url(url.to_string());
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://").ok_or_else(bad)?)
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().map_err(|_| bad())?),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Target {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    })
}

/// POSTs `body` as JSON to `url`; the HTTP status when it is 2xx.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<u16, WebhookError> {
    tokio::time::timeout(TIMEOUT, exchange(url, body.to_string()))
        .await
        .map_err(|_| WebhookError::Timeout(TIMEOUT))?
}

async fn exchange(url: &str, body: String) -> Result<u16, WebhookError> {
    let target = parse(url)?;
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(WebhookError::Connect)?;
    let request = hyper::Request::post(&target.path)
        .header(hyper::header::HOST, &target.host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "bulwark-console")
        .body(Full::new(Bytes::from(body)))?;
    let status = if target.tls {
        let stream = tls_connect(&target.host, tcp).await?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(WebhookError::Status(status))
    }
}

async fn send<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<u16, WebhookError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    // Read (and drop) the body so the server sees a complete exchange.
    let _ = response.into_body().collect().await;
    Ok(status)
}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, WebhookError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| WebhookError::Tls(e.to_string()))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| WebhookError::Tls(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_give_scheme_host_port_and_path() {
        let t = super::parse("http://127.0.0.1:9000/hook?x=1").expect("url");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 9000, "/hook?x=1")
        );
        let t = super::parse("https://hooks.example").expect("url");
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/"));
        assert!(super::parse("ftp://x").is_err());
        assert!(super::parse("http://:80/").is_err());
    }
}
