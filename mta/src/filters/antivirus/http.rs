//! A minimal HTTP/1.1 GET for signature updates: `http://` and `https://` (rustls, the system
//! roots), `If-Modified-Since`, `Content-Length` / chunked / read-to-close bodies, one request
//! per connection. No redirects, proxies or compression: an update server that needs them is
//! configured with the final URL. Everything is bounded: the whole exchange by a timeout, the
//! header section and the body by sizes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{0}: no answer within the timeout")]
    Timeout(String),
    #[error("{url}: malformed response: {what}")]
    Malformed { url: String, what: &'static str },
    #[error("{0}: body larger than the limit")]
    TooLarge(String),
    #[error("{url}: TLS: {what}")]
    Tls { url: String, what: String },
}

pub struct Response {
    pub status: u16,
    pub last_modified: Option<String>,
    pub body: Vec<u8>,
}

struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Option<Url> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().ok()?)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(Url {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// GET `url`, at most `max_body` bytes of body, within `timeout`.
pub async fn get(
    url: &str,
    if_modified_since: Option<&str>,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, HttpError> {
    let work = get_unbounded(url, if_modified_since, max_body);
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout(url.to_string()))?
}

async fn get_unbounded(
    url: &str,
    if_modified_since: Option<&str>,
    max_body: usize,
) -> Result<Response, HttpError> {
    let parsed = parse_url(url).ok_or_else(|| HttpError::Url(url.to_string()))?;
    let io_error = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    let tcp = TcpStream::connect((parsed.host.as_str(), parsed.port))
        .await
        .map_err(io_error)?;
    tcp.set_nodelay(true).map_err(io_error)?;
    let mut stream: Box<dyn Io> = if parsed.tls {
        Box::new(tls_connect(url, &parsed.host, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bulwark-av-update\r\nConnection: close\r\n",
        parsed.path, parsed.host
    );
    if let Some(since) = if_modified_since {
        request.push_str(&format!("If-Modified-Since: {since}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    let mut raw = Vec::new();
    stream
        .take((MAX_HEAD + max_body + 64 * 1024) as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(io_error)?;
    parse_response(url, &raw, max_body)
}

async fn tls_connect(
    url: &str,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    let tls_error = |what: String| HttpError::Tls {
        url: url.to_string(),
        what,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| tls_error(e.to_string()))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(e.to_string()))
}

fn parse_response(url: &str, raw: &[u8], max_body: usize) -> Result<Response, HttpError> {
    let malformed = |what| HttpError::Malformed {
        url: url.to_string(),
        what,
    };
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n").ok_or(malformed("no header end"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| malformed("header not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(malformed("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(malformed("bad status line"))?;
    let mut last_modified = None;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "last-modified" => last_modified = Some(value.to_string()),
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or(malformed("bad chunked body"))?
    } else if let Some(length) = length {
        rest.get(..length)
            .ok_or(malformed("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > max_body {
        return Err(HttpError::TooLarge(url.to_string()));
    }
    Ok(Response {
        status,
        last_modified,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = memchr::memmem::find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8000/bundle.zip").expect("test step");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 8000, "/bundle.zip")
        );
        let u = parse_url("https://updates.example.com").expect("test step");
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/"));
        assert!(parse_url("ftp://x/y").is_none());
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.0 200 OK\r\nLast-Modified: Wed, 02 Dec 2026 03:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello";
        let r = parse_response("u", raw, 100).expect("test step");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(
            r.last_modified.as_deref(),
            Some("Wed, 02 Dec 2026 03:00:00 GMT")
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(
            parse_response("u", chunked, 100).expect("test step").body,
            b"hello"
        );
        let not_modified = b"HTTP/1.1 304 Not Modified\r\n\r\n";
        assert_eq!(
            parse_response("u", not_modified, 100)
                .expect("test step")
                .status,
            304
        );
        assert!(matches!(
            parse_response("u", raw, 2),
            Err(HttpError::TooLarge(_))
        ));
    }
}
