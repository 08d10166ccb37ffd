//! The little HTTPS client MTA-STS and TLS-RPT need: one HTTP/1.1 request per connection
//! (`Connection: close`), a verified certificate, no redirects (RFC 8461 3.3), a bounded
//! body. Not a general HTTP client: no chunked uploads, no keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Policy files are small; RFC 8461 suggests a 64 KiB limit.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("bad host name {0}")]
    Name(String),
    #[error("timed out")]
    Timeout,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response")]
    Malformed,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl HttpsError {
    /// Failed on the certificate (or the handshake), not on reachability or content.
    pub fn is_tls(&self) -> bool {
        matches!(self, HttpsError::Tls { .. })
    }
}

pub struct Request<'a> {
    pub address: SocketAddr,
    pub host: &'a str,
    pub path: &'a str,
    /// POST with this content type and body; None: GET.
    pub post: Option<(&'a str, &'a [u8])>,
}

/// Sends `request` and returns the body of a 2xx answer.
pub async fn send(
    request: Request<'_>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<u8>, HttpsError> {
    tokio::time::timeout(timeout, exchange(request, tls))
        .await
        .map_err(|_| HttpsError::Timeout)?
}

async fn exchange(
    request: Request<'_>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, HttpsError> {
    let tcp = TcpStream::connect(request.address)
        .await
        .map_err(|e| HttpsError::Connect(request.address, e))?;
    let name = ServerName::try_from(request.host.to_string())
        .map_err(|_| HttpsError::Name(request.host.to_string()))?;
    let mut stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| HttpsError::Tls {
            host: request.host.to_string(),
            source,
        })?;
    let head = match request.post {
        None => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bulwark\r\nConnection: close\r\n\r\n",
            request.path, request.host
        ),
        Some((content_type, body)) => format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bulwark\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            request.path,
            request.host,
            body.len()
        ),
    };
    stream.write_all(head.as_bytes()).await?;
    if let Some((_, body)) = request.post {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    let mut response = Vec::new();
    let mut limited = (&mut stream).take((MAX_BODY + 16 * 1024) as u64 + 1);
    // A server that closes without close_notify still gave us its whole answer.
    if let Err(e) = limited.read_to_end(&mut response).await {
        if response.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(HttpsError::Io(e));
        }
    }
    parse_response(&response)
}

/// The body of a `200`-class HTTP/1.x response (Content-Length or read to close; chunked
/// bodies are decoded).
pub fn parse_response(response: &[u8]) -> Result<Vec<u8>, HttpsError> {
    let split = memchr::memmem::find(response, b"\r\n\r\n").ok_or(HttpsError::Malformed)?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| HttpsError::Malformed)?;
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpsError::Malformed)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpsError::Malformed)?;
    if !(200..300).contains(&status) {
        return Err(HttpsError::Status(status));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.get(..length).ok_or(HttpsError::Malformed)?.to_vec()
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(HttpsError::TooLarge);
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, HttpsError> {
    let mut out = Vec::new();
    // Bounded: every round consumes at least the size line.
    while !body.is_empty() {
        let line_end = memchr::memmem::find(body, b"\r\n").ok_or(HttpsError::Malformed)?;
        let size_text =
            std::str::from_utf8(&body[..line_end]).map_err(|_| HttpsError::Malformed)?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpsError::Malformed)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_BODY || body.len() < size {
            return Err(HttpsError::Malformed);
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloXX";
        assert_eq!(parse_response(ok).expect("ok"), b"hello");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).expect("ok"), b"abcde");
        assert!(matches!(
            parse_response(b"HTTP/1.1 301 Moved\r\nLocation: x\r\n\r\n"),
            Err(HttpsError::Status(301))
        ));
        assert!(parse_response(b"garbage").is_err());
    }
}
