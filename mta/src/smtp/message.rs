//! What the session learns from the content while it streams to the spool: the header
//! section (kept for filters, bounded), the Received: count (loop detection), and our own
//! Received: header, which is the first thing written.

use std::net::IpAddr;

/// Collects the header section (up to the first empty line) of decoded content.
pub struct HeaderScanner {
    header: Vec<u8>,
    limit: usize,
    complete: bool,
    overflow: bool,
}

impl HeaderScanner {
    pub fn new(limit: usize) -> Self {
        Self {
            header: Vec::with_capacity(2048),
            limit,
            complete: false,
            overflow: false,
        }
    }

    /// Feeds decoded content (CRLF line ends only).
    pub fn feed(&mut self, content: &[u8]) {
        if self.complete || self.overflow {
            return;
        }
        let start = self.header.len().saturating_sub(3);
        self.header.extend_from_slice(content);
        if let Some(pos) = memchr::memmem::find(&self.header[start..], b"\r\n\r\n") {
            self.header.truncate(start + pos + 2);
            self.complete = true;
        } else if self.header.starts_with(b"\r\n") {
            // No header at all: the content starts with the empty line.
            self.header.clear();
            self.complete = true;
        }
        if self.header.len() > self.limit {
            self.overflow = true;
            self.header.truncate(self.limit);
        }
    }

    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Number of `Received:` fields in the header section.
    pub fn received_count(&self) -> usize {
        self.header
            .split(|&b| b == b'\n')
            .filter(|line| line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:"))
            .count()
    }
}

/// The facts our Received: header records.
pub struct TraceFacts<'a> {
    pub helo: &'a str,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    /// ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP (RFC 3848).
    pub protocol: &'a str,
    pub tls: Option<(&'a str, &'a str)>,
    pub queue_id: &'a str,
    pub single_recipient: Option<&'a str>,
    pub unix_time: i64,
}

/// Builds our Received: header (RFC 5321 4.4), folded, CRLF-terminated.
pub fn received_header(facts: &TraceFacts<'_>) -> String {
    let helo: String = facts
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let mut header = format!(
        "Received: from {} ([{}])\r\n\tby {} (Bulwark) with {} id {}",
        if helo.is_empty() { "unknown" } else { &helo },
        facts.client_ip,
        facts.hostname,
        facts.protocol,
        facts.queue_id
    );
    if let Some((version, cipher)) = facts.tls {
        header.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
    }
    if let Some(rcpt) = facts.single_recipient {
        header.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    let date = mail_builder::headers::date::Date::new(facts.unix_time).to_rfc822();
    header.push_str(&format!(";\r\n\t{date}\r\n"));
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_and_received_count() {
        let mut scanner = HeaderScanner::new(1024);
        scanner.feed(b"Received: a\r\nreceived: b\r");
        scanner.feed(b"\nSubject: x\r\n\r\nbody Received: c\r\n");
        assert_eq!(
            scanner.header(),
            b"Received: a\r\nreceived: b\r\nSubject: x\r\n"
        );
        assert_eq!(scanner.received_count(), 2);
    }

    #[test]
    fn header_limit() {
        let mut scanner = HeaderScanner::new(10);
        scanner.feed(b"X-Long: 0123456789\r\n");
        assert!(scanner.overflowed());
    }

    #[test]
    fn received_header_is_folded_and_ends_in_crlf() {
        let text = received_header(&TraceFacts {
            helo: "client.example",
            client_ip: "192.0.2.1".parse().expect("ip"),
            hostname: "mx.test",
            protocol: "ESMTPS",
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            queue_id: "0123456789ABCDEF",
            single_recipient: Some("a@example.com"),
            unix_time: 0,
        });
        assert!(text.starts_with("Received: from client.example ([192.0.2.1])\r\n\tby mx.test"));
        assert!(text.contains("using TLSv1.3"));
        assert!(text.ends_with("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
    }
}
