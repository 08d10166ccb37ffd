//! The outbound SMTP client: connect, greeting, EHLO (HELO fallback), STARTTLS by policy,
//! replies with their enhanced status codes, and raw writes for pipelined commands and data.
//!
//! A module of its own, used by delivery (`deliver`) and by recipient callouts (`policy`),
//! so the receiving half never imports the sending half. It knows SMTP, not queues.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::transport::Transport;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A reply from the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    /// All lines joined with a space, enhanced code included as sent.
    pub text: String,
}

impl Response {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code sent by the server, or one derived from the basic code.
    pub fn status(&self) -> String {
        let first = self.text.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = first.split('.').collect();
        let valid = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && parts[0].len() == 1;
        if valid {
            first.to_string()
        } else {
            format!("{}.0.0", self.code / 100)
        }
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("malformed reply from next hop")]
    Malformed,
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the next hop offered in its EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// RFC 8689: the next hop promises to keep REQUIRETLS messages on verified TLS.
    pub requiretls: bool,
}

impl Capabilities {
    fn from_ehlo(reply: &[String]) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "8BITMIME" => caps.eight_bit = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "REQUIRETLS" => caps.requiretls = true,
                _ => {}
            }
        }
        caps
    }
}

pub struct Client {
    stream: BufReader<Transport>,
    pub capabilities: Capabilities,
    pub tls: Option<String>,
    command_timeout: Duration,
    data_timeout: Duration,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(
        peer: SocketAddr,
        connect_timeout: Duration,
        command_timeout: Duration,
        data_timeout: Duration,
    ) -> Result<(Client, Response), ClientError> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| ClientError::Connect(peer, e))?;
        let _ = tcp.set_nodelay(true);
        let mut client = Client {
            stream: BufReader::with_capacity(8 * 1024, Transport::Plain(tcp)),
            capabilities: Capabilities::default(),
            tls: None,
            command_timeout,
            data_timeout,
        };
        let greeting = client.read_response(command_timeout).await?;
        Ok((client, greeting))
    }

    /// The address this connection goes out from (TLS-RPT's sending-mta-ip).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.stream.get_ref().local_addr()
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// How long the next hop may take to answer the end of the data.
    pub fn data_timeout(&self) -> Duration {
        self.data_timeout
    }

    /// EHLO, falling back to HELO when EHLO is refused with 5xx.
    pub async fn hello(&mut self, name: &str) -> Result<Response, ClientError> {
        self.write(format!("EHLO {name}\r\n").as_bytes()).await?;
        let (response, lines) = self.read_lines(self.command_timeout).await?;
        if response.is_positive() {
            self.capabilities = Capabilities::from_ehlo(&lines);
            return Ok(response);
        }
        if !response.is_permanent() {
            return Ok(response);
        }
        self.capabilities = Capabilities::default();
        self.command(&format!("HELO {name}")).await
    }

    /// STARTTLS and the handshake; the caller repeats EHLO afterwards (RFC 3207).
    pub async fn starttls(
        &mut self,
        connector: TlsConnector,
        name: ServerName<'static>,
    ) -> Result<Response, ClientError> {
        let response = self.command("STARTTLS").await?;
        if response.code != 220 {
            return Ok(response);
        }
        let transport = std::mem::replace(self.stream.get_mut(), Transport::Closed);
        let Transport::Plain(tcp) = transport else {
            return Err(ClientError::Tls("already in TLS".into()));
        };
        let tls = tokio::time::timeout(self.command_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("in the TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        *self.stream.get_mut() = Transport::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)));
        self.tls = self
            .stream
            .get_ref()
            .tls_details()
            .map(|(v, c)| format!("{v} {c}"));
        Ok(response)
    }

    pub async fn command(&mut self, line: &str) -> Result<Response, ClientError> {
        self.write(line.as_bytes()).await?;
        self.write(b"\r\n").await?;
        self.read_response(self.command_timeout).await
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let write = self.stream.get_mut().write_all(bytes);
        tokio::time::timeout(self.command_timeout, write)
            .await
            .map_err(|_| ClientError::Timeout("sending"))??;
        Ok(())
    }

    pub async fn read_response(&mut self, timeout: Duration) -> Result<Response, ClientError> {
        self.read_lines(timeout).await.map(|(response, _)| response)
    }

    async fn read_lines(
        &mut self,
        timeout: Duration,
    ) -> Result<(Response, Vec<String>), ClientError> {
        let read = async {
            let mut lines = Vec::new();
            let mut line = String::new();
            // A reply has at most a few dozen lines; a longer one is a broken peer.
            for _ in 0..200 {
                line.clear();
                let n = (&mut self.stream).take(4096).read_line(&mut line).await?;
                if n == 0 {
                    return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                let (code, last, text) = parse_reply_line(&line)?;
                lines.push(text.to_string());
                if last {
                    let text = lines.join(" ");
                    return Ok((Response { code, text }, lines));
                }
            }
            Err(ClientError::Malformed)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout("waiting for a reply"))?
    }

    /// Whether a connection that sat idle can still carry a transaction: the next hop has
    /// sent nothing since its last reply (no 421 on an idle timeout, no EOF).
    pub async fn is_idle_and_open(&mut self) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
        }
        // A zero timeout still polls the read once: pending means nothing arrived.
        tokio::time::timeout(Duration::ZERO, self.stream.fill_buf())
            .await
            .is_err()
    }

    /// QUIT politely (bounded), then close.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if self.write(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_response(Duration::from_secs(5)).await;
            }
            let _ = self.stream.get_mut().shutdown().await;
        })
        .await;
    }
}

use tokio::io::AsyncReadExt;

/// One line of a next hop's reply (line end optional): its code, whether it is the last line
/// (`250 ` or a bare `250`, not `250-`), and its text after the separator. Pure and fuzzed
/// (`fuzz/fuzz_targets/reply_line.rs`): anything a hostile next hop sends is either parsed
/// or `Malformed`, never a panic.
pub fn parse_reply_line(line: &str) -> Result<(u16, bool, &str), ClientError> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    let bytes = trimmed.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(ClientError::Malformed);
    }
    let code: u16 = trimmed[..3].parse().map_err(|_| ClientError::Malformed)?;
    let last = bytes.get(3) != Some(&b'-');
    Ok((code, last, trimmed.get(4..).unwrap_or("")))
}

/// A TLS client config that accepts any certificate: for opportunistic and required TLS,
/// where encryption without authentication is still better than plaintext (RFC 7435).
pub fn unverified_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        });
    Arc::new(config.unwrap_or_else(|_| unreachable_config()))
}

fn unreachable_config() -> rustls::ClientConfig {
    // The ring provider always supports the default protocol versions.
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// A verifying TLS client config: roots from `ca_file` (PEM) or the system store.
pub fn verifying_tls(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok) {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_reply_line("250-a\r\n").ok(), Some((250, false, "a")));
        assert_eq!(parse_reply_line("250 b").ok(), Some((250, true, "b")));
        assert_eq!(parse_reply_line("421").ok(), Some((421, true, "")));
        assert_eq!(parse_reply_line("250\u{e9}x").ok(), Some((250, true, "")));
        for bad in ["", "25", "2x0 a", "\u{e9}\u{e9}", "-250 a"] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enhanced_status() {
        let r = Response {
            code: 550,
            text: "5.1.1 <a@b>: unknown".into(),
        };
        assert_eq!(r.status(), "5.1.1");
        let r = Response {
            code: 451,
            text: "try later".into(),
        };
        assert_eq!(r.status(), "4.0.0");
    }

    #[test]
    fn ehlo_capabilities() {
        let lines: Vec<String> = [
            "mx",
            "PIPELINING",
            "SIZE 1000",
            "8BITMIME",
            "starttls",
            "CHUNKING",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let caps = Capabilities::from_ehlo(&lines);
        assert!(caps.pipelining && caps.eight_bit && caps.starttls && caps.chunking);
        assert_eq!(caps.size, Some(1000));
        assert!(!caps.dsn && !caps.smtputf8);
    }
}
