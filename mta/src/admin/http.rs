//! The smallest HTTP/1.1 the control and metrics listeners need: one request per connection
//! (`Connection: close`), a bounded head, `Content-Length` bodies only (no chunked coding).
//!
//! Invariant: never reads more than `MAX_HEAD` bytes of head or the caller's body limit, and
//! every read is under the caller's timeout; anything else is refused, never guessed at.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("body longer than {0} bytes")]
    BodyTooLong(usize),
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
}

/// A request line, the `Content-Length` body, nothing else kept.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Reads up to the end of the head; returns the head and any body bytes read past it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(String, Vec<u8>), HttpError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            let head =
                String::from_utf8(buffer).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
            return Ok((head, rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLong);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed inside the head"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> Result<usize, HttpError> {
    let mut length = 0;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed("transfer-encoding is not supported"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed("bad content-length"))?;
        }
    }
    Ok(length)
}

async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut body: Vec<u8>,
    length: usize,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    if length > limit {
        return Err(HttpError::BodyTooLong(limit));
    }
    if body.len() < length {
        let start = body.len();
        body.resize(length, 0);
        stream.read_exact(&mut body[start..]).await?;
    }
    body.truncate(length);
    Ok(body)
}

pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Result<HttpRequest, HttpError> {
    let (head, rest) = read_head(stream).await?;
    let mut words = head.split("\r\n").next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Err(HttpError::Malformed("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    let length = content_length(&head)?;
    let body = read_body(stream, rest, length, limit).await?;
    Ok(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        body,
    })
}

pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), HttpError> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    Ok(())
}

pub async fn write_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    body: &[u8],
) -> Result<(), HttpError> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    Ok(())
}

/// A response's status and body (`limit` bytes at most).
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Result<(u16, Vec<u8>), HttpError> {
    let (head, rest) = read_head(stream).await?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(HttpError::Malformed("bad status line"))?;
    let length = content_length(&head)?;
    let body = read_body(stream, rest, length, limit).await?;
    Ok((status, body))
}
