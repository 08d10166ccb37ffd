//! SMTP replies: a code and text that begins with the RFC 3463 enhanced status code.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// One or more lines (separated by `\n`), each without CRLF.
    pub text: Cow<'static, str>,
    /// Why a policy stage refused, where it matters to what happens next (abuse signals,
    /// log fields); decided by the stage, never read back from `text`.
    pub reason: Option<RejectReason>,
}

/// Why a policy stage refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The recipient does not exist (550 5.1.1): the directory-harvest signal.
    UnknownRecipient,
    /// Relaying to a foreign domain without trust or authentication (554 5.7.1).
    RelayDenied,
    /// Recipient verification could not reach the internal server (451 4.4.3).
    VerificationUnavailable,
}

impl RejectReason {
    /// The name in log fields (REASON).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownRecipient => "unknown_recipient",
            RejectReason::RelayDenied => "relay_denied",
            RejectReason::VerificationUnavailable => "verification_unavailable",
        }
    }
}

impl Reply {
    pub const fn new(code: u16, text: &'static str) -> Self {
        Self {
            code,
            text: Cow::Borrowed(text),
            reason: None,
        }
    }

    pub fn owned(code: u16, text: String) -> Self {
        Self {
            code,
            text: Cow::Owned(text),
            reason: None,
        }
    }

    /// The same reply, carrying why it was given.
    pub fn because(mut self, reason: RejectReason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 5xx replies caused by the client count towards the session's error limit.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form (`250-...` continuation lines, `250 ...` last) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let separator = if lines.peek().is_some() { '-' } else { ' ' };
            // Written piecewise: replies are on every command's path, format! costs ~1k
            // instructions each (callgrind, bench/profile.py).
            let code = self.code.min(999);
            out.extend_from_slice(&[
                b'0' + (code / 100) as u8,
                b'0' + (code / 10 % 10) as u8,
                b'0' + (code % 10) as u8,
                separator as u8,
            ]);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

pub const OK: Reply = Reply::new(250, "2.0.0 Ok");
pub const BYE: Reply = Reply::new(221, "2.0.0 Bye");
pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2 Line too long");
pub const UNRECOGNIZED: Reply = Reply::new(500, "5.5.1 Command unrecognized");
pub const NEED_HELO: Reply = Reply::new(503, "5.5.1 Send EHLO or HELO first");
pub const NEED_MAIL: Reply = Reply::new(503, "5.5.1 Need MAIL command");
pub const NEED_RCPT: Reply = Reply::new(503, "5.5.1 Need RCPT command");
pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1 Nested MAIL command");
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, "5.5.1 No valid recipients");
pub const VRFY: Reply = Reply::new(
    252,
    "2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
);
pub const EXPN: Reply = Reply::new(502, "5.5.1 EXPN not available");
pub const HELP: Reply = Reply::new(214, "2.0.0 See RFC 5321");
pub const TOO_BIG: Reply = Reply::new(552, "5.3.4 Message size exceeds fixed maximum message size");
pub const HEADER_TOO_BIG: Reply = Reply::new(552, "5.3.4 Message header size exceeds limit");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3 Too many recipients");
pub const START_DATA: Reply = Reply::new(354, "End data with <CR><LF>.<CR><LF>");
pub const LOOP: Reply = Reply::new(554, "5.4.6 Too many hops (mail loop?)");
pub const BARE_NEWLINE: Reply = Reply::new(
    554,
    "5.5.2 Message contains bare CR or LF characters (only CRLF line ends are allowed)",
);
pub const NUL_BYTES: Reply = Reply::new(554, "5.6.0 Message contains NUL characters");
pub const LONG_LINE: Reply = Reply::new(
    554,
    "5.6.0 Message contains a line longer than 1000 characters",
);
pub const NEEDS_SMTPUTF8: Reply = Reply::new(553, "5.6.7 Non-ASCII address requires SMTPUTF8");
pub const BAD_SENDER: Reply = Reply::new(501, "5.1.7 Bad sender address syntax");
pub const BAD_RECIPIENT: Reply = Reply::new(501, "5.1.3 Bad recipient address syntax");
pub const TLS_READY: Reply = Reply::new(220, "2.0.0 Ready to start TLS");
pub const TLS_UNAVAILABLE: Reply = Reply::new(502, "5.5.1 STARTTLS not available");
pub const TLS_ACTIVE: Reply = Reply::new(503, "5.5.1 TLS already active");
pub const AUTH_NEEDS_TLS: Reply = Reply::new(
    538,
    "5.7.11 Encryption required for requested authentication mechanism",
);
pub const AUTH_UNAVAILABLE: Reply = Reply::new(502, "5.5.1 AUTH not available");
pub const AUTH_ALREADY: Reply = Reply::new(503, "5.5.1 Already authenticated");
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0 Authentication successful");
pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8 Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0 Authentication cancelled");
pub const AUTH_BAD_MECHANISM: Reply = Reply::new(504, "5.5.4 Unrecognized authentication type");
pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0 Authentication required");
pub const LOCAL_ERROR: Reply = Reply::new(451, "4.3.0 Local error in processing, try again later");
pub const DISK_FULL: Reply = Reply::new(452, "4.3.1 Insufficient system storage");
/// Why a message could not be stored: the disk is full (452 4.3.1) or anything else (451).
pub fn not_stored(disk_full: bool) -> Reply {
    if disk_full {
        DISK_FULL
    } else {
        LOCAL_ERROR
    }
}

pub const PREGREET: Reply = Reply::new(554, "5.5.1 Protocol error: talked before greeting");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_wire_form() {
        let mut out = Vec::new();
        Reply::owned(250, "mx\nPIPELINING\nSIZE 10".into()).write_to(&mut out);
        assert_eq!(out, b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }
}
