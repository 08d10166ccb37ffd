//! A clamd client: `zINSTREAM` over a unix socket or TCP, `PING`, `VERSION`.
//!
//! # Contract
//! - A scan streams the message in chunks of at most [`CHUNK`] bytes, each with its 4-byte
//!   big-endian length, then a zero length; it never holds more than one chunk (plus what the
//!   caller's source holds). The caller caps what it streams (`max_scan_size`); clamd's own
//!   `StreamMaxLength` cannot be asked, so when clamd answers `INSTREAM size limit exceeded`
//!   the scan fails with [`ClamdError::SizeLimitExceeded`], never with a verdict.
//! - Every exchange (connect included) is bounded by the client's timeout; TCP connections set
//!   TCP_NODELAY so a small message is one segment each way, not a Nagle/delayed-ACK stall.
//! - Connections are kept open between scans in clamd's `IDSESSION` mode (a small pool of idle
//!   sessions, each used by one scan at a time and dropped after any error or when idle longer
//!   than [`SESSION_IDLE`], well under clamd's default 30 s IdleTimeout), or opened per scan.
//! - clamd's text replies are turned into [`ScanReply`] / [`ClamdError`] here and nowhere else.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Largest chunk sent in one INSTREAM length frame.
pub const CHUNK: usize = 64 * 1024;
/// Idle sessions older than this are closed rather than reused.
pub const SESSION_IDLE: Duration = Duration::from_secs(10);
/// Idle sessions kept for reuse.
const POOL_SIZE: usize = 16;
/// Longest reply line read from clamd.
const MAX_REPLY: usize = 8 * 1024;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    Unix(PathBuf),
    /// `host:port`, resolved at connect.
    Tcp(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a clamd address (use \"unix:/path\" or \"tcp:HOST:PORT\")")]
pub struct AddressError(String);

impl ClamdAddress {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let bad = || AddressError(text.to_string());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.starts_with('/') {
                return Ok(ClamdAddress::Unix(PathBuf::from(path)));
            }
        } else if let Some(host_port) = text.strip_prefix("tcp:") {
            let port_ok = host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if port_ok {
                return Ok(ClamdAddress::Tcp(host_port.to_string()));
            }
        }
        Err(bad())
    }
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            ClamdAddress::Tcp(host_port) => write!(f, "tcp:{host_port}"),
        }
    }
}

/// Why clamd gave no verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClamdError {
    #[error("clamd {address}: connect: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("clamd: {0}")]
    Io(#[from] std::io::Error),
    #[error("clamd: no answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "clamd: INSTREAM size limit exceeded (raise clamd's StreamMaxLength to max_scan_size)"
    )]
    SizeLimitExceeded,
    #[error("clamd answered an error: {0}")]
    Refused(String),
    #[error("clamd: unexpected reply {0:?}")]
    Protocol(String),
    #[error("clamd: reading the message: {0}")]
    Source(String),
    /// A pooled session that clamd had closed (restart, idle timeout): nothing was scanned,
    /// the scan may be retried on a fresh connection.
    #[error("clamd: pooled session was closed: {0}")]
    StaleSession(std::io::Error),
}

/// clamd's verdict on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanReply {
    Clean,
    Infected(String),
}

/// Where the bytes of a scan come from (the spool reader, or memory in tests).
#[async_trait]
pub trait ChunkSource: Send {
    /// The next at most `max` bytes; `None` at the end.
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, String>;
}

/// An in-memory source, for small messages and tests.
pub struct SliceSource<'a>(pub &'a [u8]);

#[async_trait]
impl ChunkSource for SliceSource<'_> {
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let (head, rest) = self.0.split_at(max.min(self.0.len()));
        self.0 = rest;
        Ok(Some(head.to_vec()))
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection in IDSESSION mode.
struct Session {
    io: Box<dyn Io>,
    next_id: u64,
    idle_since: Instant,
}

/// How scans use connections (measured in bench/RESULTS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// Keep IDSESSION connections open between scans.
    Pooled,
    /// A fresh connection per scan (closed by clamd after the reply).
    PerScan,
}

pub struct Clamd {
    address: ClamdAddress,
    timeout: Duration,
    mode: ConnectionMode,
    idle: Mutex<Vec<Session>>,
}

impl Clamd {
    pub fn new(address: ClamdAddress, timeout: Duration, mode: ConnectionMode) -> Self {
        Self {
            address,
            timeout,
            mode,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    /// Streams `source` to clamd and returns its verdict.
    pub async fn scan(&self, source: &mut dyn ChunkSource) -> Result<ScanReply, ClamdError> {
        let timeout = self.timeout;
        let work = async {
            match self.mode {
                ConnectionMode::PerScan => {
                    let mut io = self.connect().await?;
                    let reply = instream(&mut io, b"zINSTREAM\0", source).await?;
                    parse_scan_reply(&reply)
                }
                ConnectionMode::Pooled => self.scan_in_session(source).await,
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClamdError::Timeout(timeout))?
    }

    async fn scan_in_session(&self, source: &mut dyn ChunkSource) -> Result<ScanReply, ClamdError> {
        let (mut session, reused) = match self.take_idle() {
            Some(session) => (session, true),
            None => (self.open_session().await?, false),
        };
        let id = session.next_id;
        let reply = match instream(&mut session.io, b"zINSTREAM\0", source).await {
            Ok(reply) => reply,
            Err(ClamdError::Io(e)) if reused => {
                self.drop_idle();
                return Err(ClamdError::StaleSession(e));
            }
            Err(e) => return Err(e),
        };
        let text = strip_session_id(&reply, id)?;
        let verdict = parse_scan_reply(text)?;
        session.next_id += 1;
        session.idle_since = Instant::now();
        self.put_idle(session);
        Ok(verdict)
    }

    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|s| s.idle_since.elapsed() < SESSION_IDLE);
        idle.pop()
    }

    fn put_idle(&self, session: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(session);
        }
    }

    /// Sessions open and waiting for the next scan.
    pub fn idle_sessions(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes every idle session (after clamd went away, or at reload).
    pub fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn open_session(&self) -> Result<Session, ClamdError> {
        let mut io = self.connect().await?;
        io.write_all(b"zIDSESSION\0").await?;
        Ok(Session {
            io,
            next_id: 1,
            idle_since: Instant::now(),
        })
    }

    /// `PING`: true when clamd answered `PONG` within the timeout.
    pub async fn ping(&self) -> Result<(), ClamdError> {
        let reply = self.simple(b"zPING\0").await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(ClamdError::Protocol(reply))
        }
    }

    /// `VERSION`: the engine and database version.
    pub async fn version(&self) -> Result<ClamdVersion, ClamdError> {
        let reply = self.simple(b"zVERSION\0").await?;
        ClamdVersion::parse(&reply).ok_or(ClamdError::Protocol(reply))
    }

    async fn simple(&self, command: &[u8]) -> Result<String, ClamdError> {
        let work = async {
            let mut io = self.connect().await?;
            io.write_all(command).await?;
            read_reply(&mut io).await
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClamdError::Timeout(self.timeout))?
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClamdError> {
        let connect_error = |source| ClamdError::Connect {
            address: self.address.to_string(),
            source,
        };
        match &self.address {
            ClamdAddress::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(connect_error)?;
                Ok(Box::new(stream))
            }
            ClamdAddress::Tcp(host_port) => {
                let stream = TcpStream::connect(host_port.as_str())
                    .await
                    .map_err(connect_error)?;
                stream.set_nodelay(true).map_err(connect_error)?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// Sends `command` and the stream, returns clamd's reply text (without the NUL).
async fn instream(
    io: &mut Box<dyn Io>,
    command: &[u8],
    source: &mut dyn ChunkSource,
) -> Result<String, ClamdError> {
    match send_stream(io, command, source).await {
        Ok(()) => read_reply(io).await,
        // clamd stops reading once the stream is over its limit and answers at once: the
        // reply, not the broken pipe, says why.
        Err(ClamdError::Io(write_error)) => match read_reply(io).await {
            Ok(reply) if !reply.is_empty() => Ok(reply),
            _ => Err(ClamdError::Io(write_error)),
        },
        Err(other) => Err(other),
    }
}

async fn send_stream(
    io: &mut Box<dyn Io>,
    command: &[u8],
    source: &mut dyn ChunkSource,
) -> Result<(), ClamdError> {
    let mut frame = Vec::with_capacity(CHUNK + 16);
    frame.extend_from_slice(command);
    while let Some(chunk) = source.next_chunk(CHUNK).await.map_err(ClamdError::Source)? {
        if chunk.is_empty() {
            continue;
        }
        // A source may hand out more than asked; frame it in pieces clamd accepts.
        for piece in chunk.chunks(CHUNK) {
            frame.extend_from_slice(&(piece.len() as u32).to_be_bytes());
            frame.extend_from_slice(piece);
            if frame.len() >= CHUNK {
                io.write_all(&frame).await?;
                frame.clear();
            }
        }
    }
    frame.extend_from_slice(&0u32.to_be_bytes());
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one NUL-terminated reply.
async fn read_reply(io: &mut Box<dyn Io>) -> Result<String, ClamdError> {
    let mut reply = Vec::with_capacity(64);
    let mut byte = [0u8; 256];
    loop {
        let n = io.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if reply.last() == Some(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    if reply.last() == Some(&0) {
        reply.pop();
    }
    let text = String::from_utf8_lossy(&reply).trim().to_string();
    if text.is_empty() {
        return Err(ClamdError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(text)
}

/// `"3: stream: OK"` in session `id` → `"stream: OK"`.
fn strip_session_id(reply: &str, id: u64) -> Result<&str, ClamdError> {
    let protocol = || ClamdError::Protocol(reply.to_string());
    let (number, rest) = reply.split_once(": ").ok_or_else(protocol)?;
    if number.parse::<u64>().ok() != Some(id) {
        return Err(protocol());
    }
    Ok(rest)
}

/// `"stream: OK"`, `"stream: NAME FOUND"`, `"... ERROR"`.
fn parse_scan_reply(reply: &str) -> Result<ScanReply, ClamdError> {
    let body = reply.strip_prefix("stream: ").unwrap_or(reply);
    if body == "OK" {
        return Ok(ScanReply::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        return Ok(ScanReply::Infected(name.to_string()));
    }
    if let Some(error) = body.strip_suffix(" ERROR") {
        if error.starts_with("INSTREAM size limit exceeded") {
            return Err(ClamdError::SizeLimitExceeded);
        }
        return Err(ClamdError::Refused(error.to_string()));
    }
    Err(ClamdError::Protocol(reply.to_string()))
}

/// clamd's `VERSION` answer: `ClamAV 1.4.6/27412/Tue Dec  1 09:28:02 2026`, or just
/// `ClamAV 1.4.6` when only custom signatures are loaded (no official database to date).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClamdVersion {
    pub engine: String,
    pub database: Option<u64>,
    /// The database's build time, seconds since the Unix epoch.
    pub database_time: Option<u64>,
}

impl ClamdVersion {
    pub fn parse(reply: &str) -> Option<Self> {
        let mut fields = reply.splitn(3, '/');
        let engine = fields.next()?.strip_prefix("ClamAV ")?.trim().to_string();
        let database = fields.next().and_then(|d| d.trim().parse().ok());
        let database_time = fields.next().and_then(parse_ctime);
        Some(Self {
            engine,
            database,
            database_time,
        })
    }
}

/// `"Tue Dec  1 09:28:02 2026"` (ctime, UTC) → seconds since the epoch.
fn parse_ctime(text: &str) -> Option<u64> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [_, month, day, time, year] = fields.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|n| n.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + (h * 3600 + m * 60 + s) as i64;
    u64::try_from(seconds).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            ClamdAddress::parse("unix:/run/clamav/clamd.ctl"),
            Ok(ClamdAddress::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            ClamdAddress::parse("tcp:127.0.0.1:3310"),
            Ok(ClamdAddress::Tcp("127.0.0.1:3310".into()))
        );
        assert!(ClamdAddress::parse("unix:relative").is_err());
        assert!(ClamdAddress::parse("tcp:host").is_err());
        assert!(ClamdAddress::parse("127.0.0.1:3310").is_err());
    }

    #[test]
    fn scan_replies() {
        assert_eq!(
            parse_scan_reply("stream: OK").expect("test step"),
            ScanReply::Clean
        );
        assert_eq!(
            parse_scan_reply("stream: Eicar-Test-Signature FOUND").expect("test step"),
            ScanReply::Infected("Eicar-Test-Signature".into())
        );
        assert!(matches!(
            parse_scan_reply("INSTREAM size limit exceeded. ERROR"),
            Err(ClamdError::SizeLimitExceeded)
        ));
        assert!(matches!(
            parse_scan_reply("stream: Can't allocate memory ERROR"),
            Err(ClamdError::Refused(_))
        ));
        assert_eq!(
            strip_session_id("7: stream: OK", 7).expect("test step"),
            "stream: OK"
        );
        assert!(strip_session_id("6: stream: OK", 7).is_err());
    }

    #[test]
    fn version_with_and_without_database() {
        let v =
            ClamdVersion::parse("ClamAV 1.4.6/27412/Tue Dec  1 09:28:02 2026").expect("test step");
        assert_eq!(v.engine, "1.4.6");
        assert_eq!(v.database, Some(27412));
        // 2026-12-01T09:28:02Z
        assert_eq!(v.database_time, Some(1_796_117_282));
        let custom = ClamdVersion::parse("ClamAV 1.4.6").expect("test step");
        assert_eq!(custom.database_time, None);
        assert!(ClamdVersion::parse("PONG").is_none());
    }
}
