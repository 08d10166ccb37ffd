//! The session's byte stream: buffered reads of command lines and message data, batched
//! replies (PIPELINING: replies are flushed only before the session would block on a read),
//! and the STARTTLS upgrade, which discards anything the client pipelined behind STARTTLS.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::reply::Reply;

/// Longest command line including CRLF (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest AUTH command or SASL response line including CRLF (RFC 4954 4: 12,288).
pub const MAX_AUTH_LINE: usize = 12_288;
/// How much of an over-long command line is skipped before it is answered as an error.
const MAX_SKIPPED_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub use crate::transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connection closed by client")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// A command line, or the fact that the client sent one that was too long (already skipped).
pub enum Line {
    Command(Vec<u8>),
    TooLong,
}

/// How a client behaved during the greet delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    Talked,
    Waited,
    HungUp,
}

/// Negotiated TLS, for the Received: header and the logs.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

pub struct SmtpStream {
    transport: Transport,
    /// Input read and not yet consumed is `buffer[start..]`; reads go to the spare capacity,
    /// which is never zeroed (an idle session touches only what its client sent).
    buffer: Vec<u8>,
    start: usize,
    outgoing: Vec<u8>,
}

impl SmtpStream {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            buffer: Vec::with_capacity(READ_CHUNK),
            start: 0,
            outgoing: Vec::with_capacity(1024),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Queues a reply; it is sent before the next blocking read or on `flush`.
    pub fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.outgoing);
    }

    pub async fn flush(&mut self) -> Result<(), StreamError> {
        if !self.outgoing.is_empty() {
            self.transport.write_all(&self.outgoing).await?;
            self.outgoing.clear();
        }
        self.transport.flush().await?;
        Ok(())
    }

    pub fn has_buffered_input(&self) -> bool {
        self.start < self.buffer.len()
    }

    /// Reads more input, flushing pending replies first (the PIPELINING rule).
    async fn fill(&mut self, timeout: Duration) -> Result<(), StreamError> {
        if !self.outgoing.is_empty() {
            self.flush().await?;
        }
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.buffer.len() == self.buffer.capacity() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        // Never more than READ_CHUNK buffered: read_buf only fills the spare capacity.
        let spare = READ_CHUNK.saturating_sub(self.buffer.len()).max(1);
        self.buffer.reserve_exact(spare);
        let mut limited = (&mut self.transport).take(spare as u64);
        let read = tokio::time::timeout(timeout, limited.read_buf(&mut self.buffer))
            .await
            .map_err(|_| StreamError::Timeout)??;
        if read == 0 {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    /// Reads one command line (without CRLF). Over-long lines are consumed and reported.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<Line, StreamError> {
        self.read_line_up_to(timeout, MAX_COMMAND_LINE).await
    }

    /// As `read_line`, with lines up to `limit` bytes including CRLF (AUTH's longer lines).
    pub async fn read_line_up_to(
        &mut self,
        timeout: Duration,
        limit: usize,
    ) -> Result<Line, StreamError> {
        let mut too_long = false;
        let mut skipped = 0;
        loop {
            let pending = &self.buffer[self.start..];
            if let Some(pos) = memchr::memchr(b'\n', pending) {
                let line_end = self.start + pos + 1;
                let line = self.buffer[self.start..line_end].to_vec();
                self.start = line_end;
                if too_long || line.len() > limit {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Command(line));
            }
            if pending.len() >= limit {
                // Skip what we have of the over-long line, keep reading until its LF.
                too_long = true;
                skipped += pending.len();
                self.start = self.buffer.len();
                if skipped >= MAX_SKIPPED_LINE {
                    // An endless line: answer now, so each MAX_SKIPPED_LINE counts as one
                    // protocol error and max_errors ends the session (otherwise a client
                    // streaming bytes without LF would hold the session forever).
                    return Ok(Line::TooLong);
                }
            }
            self.fill(timeout).await?;
        }
    }

    /// Hands up to `limit` buffered (or freshly read) bytes to `consume`, which returns how
    /// many it used; returns that count.
    pub async fn consume<F>(
        &mut self,
        timeout: Duration,
        limit: usize,
        consume: F,
    ) -> Result<usize, StreamError>
    where
        F: FnOnce(&[u8]) -> usize,
    {
        if self.start == self.buffer.len() {
            self.fill(timeout).await?;
        }
        let available = (self.buffer.len() - self.start).min(limit);
        let used = consume(&self.buffer[self.start..self.start + available]);
        self.start += used;
        Ok(used)
    }

    /// Reads and drops `count` bytes (a BDAT chunk that is refused).
    pub async fn discard(
        &mut self,
        mut count: usize,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        while count > 0 {
            count -= self.consume(timeout, count, |input| input.len()).await?;
        }
        Ok(())
    }

    /// Did the client talk before it was spoken to? Waits up to `wait` for input.
    pub async fn talks_first(&mut self, wait: Duration) -> Greeting {
        let Transport::Plain(tcp) = &self.transport else {
            return Greeting::Waited;
        };
        let mut probe = [0u8; 1];
        match tokio::time::timeout(wait, tcp.peek(&mut probe)).await {
            Err(_) => Greeting::Waited,
            Ok(Ok(n)) if n > 0 => Greeting::Talked,
            Ok(_) => Greeting::HungUp,
        }
    }

    /// STARTTLS (or implicit TLS): drops pipelined plaintext, then handshakes.
    pub async fn upgrade(
        &mut self,
        acceptor: TlsAcceptor,
        timeout: Duration,
    ) -> Result<TlsInfo, StreamError> {
        self.flush().await?;
        self.start = 0;
        self.buffer.clear();
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Closed)
        else {
            return Err(StreamError::Io(io::Error::other("TLS already active")));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| StreamError::Timeout)??;
        self.transport = Transport::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
        let (version, cipher) = self.transport.tls_details().unwrap_or_default();
        Ok(TlsInfo { version, cipher })
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.transport.shutdown().await;
    }
}

/// Builds an acceptor from a shared rustls config.
pub fn acceptor(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}
