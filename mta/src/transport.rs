//! A TCP connection that may have been upgraded to TLS (STARTTLS on either side), as one
//! type the SMTP server session and the delivery client both read and write through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken apart for a TLS handshake (or after a failed one): no I/O possible.
    Closed,
}

impl Transport {
    /// The negotiated protocol version and cipher suite, as "TLSv1.3" and the suite name.
    pub fn tls_details(&self) -> Option<(String, String)> {
        let Transport::Tls(tls) = self else {
            return None;
        };
        let (version, suite) = match tls.as_ref() {
            TlsStream::Client(s) => (
                s.get_ref().1.protocol_version(),
                s.get_ref().1.negotiated_cipher_suite(),
            ),
            TlsStream::Server(s) => (
                s.get_ref().1.protocol_version(),
                s.get_ref().1.negotiated_cipher_suite(),
            ),
        };
        Some((
            version
                .and_then(|v| v.as_str())
                .unwrap_or("TLS")
                .replace("TLSv1_", "TLSv1."),
            suite
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown")
                .to_string(),
        ))
    }
}

impl Transport {
    /// Our end of the connection (the address a next hop saw us connect from).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Transport::Plain(tcp) => tcp.local_addr().ok(),
            Transport::Tls(tls) => tls.get_ref().0.local_addr().ok(),
            Transport::Closed => None,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Closed => Poll::Ready(Ok(())),
        }
    }
}
