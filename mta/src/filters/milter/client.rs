//! Connections to one milter: connect (TCP with TCP_NODELAY, or a unix socket), negotiate,
//! exchange packets under timeouts, and keep idle connections for the next message.
//!
//! Invariants: a [`Connection`] in the idle pool has finished a whole message and been reset
//! with SMFIC_QUIT_NC, so the next message starts at SMFIC_CONNECT; a connection that saw any
//! error, or a conversation that ended early, is closed and never pooled. Commands that need
//! no reply are buffered and go out with the next one that does (one write per round trip).
//! Every wait is bounded: `connect_timeout` for the connection and its negotiation,
//! `command_timeout` for each reply, restarted by each SMFIR_PROGRESS.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::protocol::{self, Negotiated, ProtocolError, Response};
use crate::config::{MilterAddress, MilterConfig};

/// Idle connections kept per milter; more are closed when returned.
const MAX_IDLE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to {address} took longer than {after:?}")]
    ConnectTimeout { address: String, after: Duration },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the milter closed the connection")]
    Closed,
    #[error("talking to the milter: {0}")]
    Io(#[from] std::io::Error),
    #[error("the milter broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("unexpected reply {reply} at {step}")]
    Unexpected { reply: String, step: &'static str },
    #[error("the milter shut the connection down")]
    Shutdown,
    #[error("the milter's requests exceed {0} bytes for one message")]
    TooMuch(usize),
    #[error("reading the message: {0}")]
    Content(Box<dyn std::error::Error + Send + Sync>),
}

impl MilterError {
    /// The connection was found closed or reset (not a slow or misbehaving milter).
    pub fn is_dead_connection(&self) -> bool {
        matches!(self, MilterError::Closed | MilterError::Io(_))
    }
}

trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// One negotiated connection to a milter.
pub struct Connection {
    stream: BufReader<Box<dyn Duplex>>,
    pending: Vec<u8>,
    pub negotiated: Negotiated,
    /// Replies read since the connection was taken for the current message.
    pub replies_this_message: usize,
    /// Bytes of replies read since the connection was taken for the current message.
    pub bytes_this_message: usize,
    command_timeout: Duration,
    /// The TCP socket (a duplicate descriptor) for TCP_QUICKACK; None on a unix socket.
    tcp: Option<socket2::Socket>,
}

impl Connection {
    /// Connects and negotiates options, all within `connect_timeout`.
    pub async fn open(config: &MilterConfig) -> Result<Self, MilterError> {
        let address = config.address.to_string();
        let after = config.connect_timeout;
        let opened = tokio::time::timeout(after, Self::open_unbounded(config));
        opened
            .await
            .map_err(|_| MilterError::ConnectTimeout { address, after })?
    }

    async fn open_unbounded(config: &MilterConfig) -> Result<Self, MilterError> {
        let connect_error = |source| MilterError::Connect {
            address: config.address.to_string(),
            source,
        };
        let mut quickack = None;
        let stream: Box<dyn Duplex> = match &config.address {
            MilterAddress::Inet { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_error)?;
                // Without it a milter round trip waits ~40 ms on delayed ACK (issue #18).
                tcp.set_nodelay(true).map_err(connect_error)?;
                let fd = tcp.as_fd().try_clone_to_owned().map_err(connect_error)?;
                quickack = Some(socket2::Socket::from(fd));
                Box::new(tcp)
            }
            MilterAddress::Unix(path) => {
                Box::new(UnixStream::connect(path).await.map_err(connect_error)?)
            }
        };
        let mut connection = Connection {
            stream: BufReader::with_capacity(16 * 1024, stream),
            pending: Vec::with_capacity(4096),
            negotiated: Negotiated {
                version: 0,
                actions: 0,
                steps: 0,
                macros: Default::default(),
            },
            replies_this_message: 0,
            bytes_this_message: 0,
            command_timeout: config.command_timeout,
            tcp: quickack,
        };
        protocol::encode_options(connection.buffer());
        match connection.exchange("negotiation").await? {
            Response::Options(negotiated) => connection.negotiated = negotiated,
            other => return Err(unexpected(&other, "negotiation")),
        }
        let agreed = &connection.negotiated;
        log::info!(
            milter = config.name.as_str(), address:% = config.address, version = agreed.version,
            actions = agreed.actions, steps = agreed.steps;
            "milter connected: name={} address={} version={} actions={:#x} steps={:#x}",
            config.name, config.address, agreed.version, agreed.actions, agreed.steps
        );
        connection.replies_this_message = 0;
        Ok(connection)
    }

    /// The buffer of commands not yet written; they go out with the next [`Self::exchange`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Writes the buffered commands and reads the reply, skipping progress packets.
    pub async fn exchange(&mut self, step: &'static str) -> Result<Response, MilterError> {
        self.flush().await?;
        loop {
            let response = self.read_response().await?;
            self.replies_this_message += 1;
            match response {
                Response::Progress => continue,
                Response::Shutdown => return Err(MilterError::Shutdown),
                other => {
                    log::trace!(step = step; "milter reply {other:?}");
                    return Ok(other);
                }
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), MilterError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let timeout = self.command_timeout;
        let write = async {
            self.stream.get_mut().write_all(&self.pending).await?;
            self.stream.get_mut().flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| MilterError::Timeout(timeout))??;
        self.pending.clear();
        Ok(())
    }

    async fn read_response(&mut self) -> Result<Response, MilterError> {
        // A milter that writes a reply in several small packets (modifications, then the
        // verdict) without TCP_NODELAY waits for our ACK of the first before sending the
        // next; a delayed ACK costs it ~40 ms each. Linux clears QUICKACK by itself, so it is
        // set again before each read.
        if let Some(tcp) = &self.tcp {
            tcp.set_tcp_quickack(true)?;
        }
        let timeout = self.command_timeout;
        let read = async {
            let mut prefix = [0u8; 4];
            read_exact_or_closed(&mut self.stream, &mut prefix).await?;
            let length = protocol::packet_length(prefix)?;
            let mut packet = vec![0u8; length];
            read_exact_or_closed(&mut self.stream, &mut packet).await?;
            self.bytes_this_message += length;
            Ok::<_, MilterError>(protocol::decode_reply(&packet)?)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| MilterError::Timeout(timeout))?
    }

    /// Ends the connection politely (best effort: it is being dropped anyway).
    pub async fn quit(mut self) {
        self.pending.clear();
        protocol::encode(protocol::command::QUIT, &[], &mut self.pending);
        let _ = self.flush().await;
    }
}

async fn read_exact_or_closed(
    stream: &mut BufReader<Box<dyn Duplex>>,
    buf: &mut [u8],
) -> Result<(), MilterError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(MilterError::Closed),
        Err(e) => Err(MilterError::Io(e)),
    }
}

pub fn unexpected(response: &Response, step: &'static str) -> MilterError {
    let mut reply = format!("{response:?}");
    reply.truncate(80);
    MilterError::Unexpected { reply, step }
}

/// The idle connections of one milter.
#[derive(Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<Connection>>,
}

impl ConnectionPool {
    /// An idle connection (`true`: reused) or a new one.
    pub async fn take(&self, config: &MilterConfig) -> Result<(Connection, bool), MilterError> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match reused {
            Some(mut connection) => {
                connection.replies_this_message = 0;
                connection.bytes_this_message = 0;
                Ok((connection, true))
            }
            None => Ok((Connection::open(config).await?, false)),
        }
    }

    /// Keeps a connection that finished a message and was reset with QUIT_NC.
    pub fn give_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}
