//! Decoding message content from DATA (dot-stuffed, ended by `<CRLF>.<CRLF>`) and BDAT (raw).
//!
//! # Invariants (SMTP smuggling, CVE-2023-51764/5/6)
//! - Only `<CRLF>.<CRLF>` ends DATA, where the first CRLF is a real CRLF sent by the client
//!   (or the start of the data). `\n.\n`, `\r.\r`, `\r\n.\n`, `\r\n\0.\r\n` and every other
//!   variant are content, never a terminator, so no second message can ever begin inside one.
//! - A bare CR or LF is either stored as CRLF (normalise) or flagged so the whole message is
//!   refused (reject); a line that began after a bare CR/LF is never unstuffed and never ends
//!   DATA. Either way the stored content has only CRLF line ends, and a next hop that sees it
//!   (dot-stuffed again on the way out) cannot find a terminator in it either.
//! - NUL bytes are dropped and flagged (the message is refused).
//! - Lines over 1000 octets including CRLF are flagged (RFC 5321 4.5.3.1.6).

use crate::config::BareNewline;

/// Longest text line without its CRLF (RFC 5321 4.5.3.1.6: 1000 with CRLF).
pub const MAX_LINE: usize = 998;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a real CRLF (or the start of DATA).
    LineStart,
    /// At the start of a line that followed a bare CR or LF: no dot handling here.
    SoftLineStart,
    /// A real line start saw ".".
    Dot,
    /// A real line start saw ".\r".
    DotCr,
    /// Inside a line.
    InLine,
    /// Inside a line, just saw "\r".
    Cr,
    /// The terminator has been consumed.
    Done,
}

/// What the content contained that the session must answer for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Anomalies {
    pub bare_newline: bool,
    pub nul: bool,
    pub long_line: bool,
}

pub struct DataDecoder {
    state: State,
    dot_stuffed: bool,
    policy: BareNewline,
    line_len: usize,
    pub anomalies: Anomalies,
}

impl DataDecoder {
    /// For DATA: dot-stuffed, ends at `<CRLF>.<CRLF>`.
    pub fn for_data(policy: BareNewline) -> Self {
        Self::new(true, policy)
    }

    /// For BDAT chunks: no dots, no terminator; same line-end and NUL rules.
    pub fn for_bdat(policy: BareNewline) -> Self {
        Self::new(false, policy)
    }

    fn new(dot_stuffed: bool, policy: BareNewline) -> Self {
        Self {
            state: State::LineStart,
            dot_stuffed,
            policy,
            line_len: 0,
            anomalies: Anomalies::default(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input` into `out`; returns how many bytes were consumed. Consumes everything
    /// unless the terminator was found, in which case the rest belongs to the next command.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return i;
            }
            if self.state == State::InLine {
                i += self.copy_run(&input[i..], out);
                if i >= input.len() {
                    break;
                }
            }
            self.step(input[i], out);
            i += 1;
        }
        i
    }

    /// Copies ordinary line bytes up to the next CR, LF or NUL in one go.
    fn copy_run(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let run = memchr::memchr3(b'\r', b'\n', 0, input).unwrap_or(input.len());
        out.extend_from_slice(&input[..run]);
        self.count(run);
        run
    }

    fn count(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > MAX_LINE {
            self.anomalies.long_line = true;
        }
    }

    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        match (self.state, byte) {
            (_, 0) => {
                self.anomalies.nul = true;
                self.count(1);
                if matches!(self.state, State::LineStart | State::SoftLineStart) {
                    self.state = State::InLine;
                } else if self.state == State::Dot {
                    out.push(b'.');
                    self.state = State::InLine;
                } else if matches!(self.state, State::DotCr | State::Cr) {
                    self.bare_line_end(out);
                    self.state = State::InLine;
                }
            }
            (State::LineStart, b'.') if self.dot_stuffed => {
                self.count(1);
                self.state = State::Dot;
            }
            (State::LineStart | State::SoftLineStart | State::InLine, b'\r') => {
                self.state = State::Cr;
            }
            (State::LineStart | State::SoftLineStart | State::InLine, b'\n') => {
                self.bare_line_end(out);
            }
            (State::LineStart | State::SoftLineStart | State::InLine, _) => {
                out.push(byte);
                self.count(1);
                self.state = State::InLine;
            }
            (State::Dot, b'\r') => self.state = State::DotCr,
            (State::Dot, b'\n') => {
                // ".\n" after a real CRLF: a smuggling probe, kept as a visible "." line.
                out.push(b'.');
                self.bare_line_end(out);
            }
            (State::Dot, _) => {
                // RFC 5321 4.5.2: the first "." of a stuffed line is removed.
                out.push(byte);
                self.count(1);
                self.state = State::InLine;
            }
            (State::DotCr, b'\n') => self.state = State::Done,
            (State::DotCr, _) => {
                out.push(b'.');
                self.bare_line_end(out);
                self.step(byte, out);
            }
            (State::Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                self.line_len = 0;
                self.state = State::LineStart;
            }
            (State::Cr, _) => {
                self.bare_line_end(out);
                self.step(byte, out);
            }
            (State::Done, _) => {}
        }
    }

    /// A bare CR or LF: stored as CRLF, flagged; the next line has no dot handling.
    fn bare_line_end(&mut self, out: &mut Vec<u8>) {
        self.anomalies.bare_newline = true;
        out.extend_from_slice(b"\r\n");
        self.line_len = 0;
        self.state = State::SoftLineStart;
    }

    /// True when the content must be refused under the configured policy.
    pub fn refuse_bare_newline(&self) -> bool {
        self.policy == BareNewline::Reject && self.anomalies.bare_newline
    }

    /// At the end of a BDAT LAST chunk: a pending CR at the very end is a bare CR.
    pub fn finish_bdat(&mut self, out: &mut Vec<u8>) {
        if matches!(self.state, State::Cr) {
            self.bare_line_end(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<u8>, usize, DataDecoder) {
        let mut decoder = DataDecoder::for_data(BareNewline::Normalize);
        let mut out = Vec::new();
        let used = decoder.decode(input, &mut out);
        (out, used, decoder)
    }

    #[test]
    fn plain_message_and_terminator() {
        let (out, used, d) = decode_all(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert!(d.is_done());
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(used, 24);
    }

    #[test]
    fn empty_message() {
        let (out, _, d) = decode_all(b".\r\n");
        assert!(d.is_done());
        assert!(out.is_empty());
    }

    #[test]
    fn dot_unstuffing() {
        let (out, _, _) = decode_all(b"..leading\r\n.x\r\n.\r\n");
        assert_eq!(out, b".leading\r\nx\r\n");
    }

    #[test]
    fn byte_at_a_time_is_identical() {
        let input = b"a\r\n..b\r\nc\rd\ne\r\n.\r\n";
        let (whole, _, _) = decode_all(input);
        let mut decoder = DataDecoder::for_data(BareNewline::Normalize);
        let mut out = Vec::new();
        for byte in input {
            decoder.decode(std::slice::from_ref(byte), &mut out);
        }
        assert!(decoder.is_done());
        assert_eq!(out, whole);
    }

    #[test]
    fn no_smuggling_terminator_ends_data() {
        let probes: [&[u8]; 10] = [
            b"\n.\n",
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
        ];
        for probe in probes {
            let mut input = b"Subject: a\r\n\r\nhello".to_vec();
            input.extend_from_slice(probe);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nDATA\r\nsmuggled\r\n.\r\n");
            let (out, used, d) = decode_all(&input);
            assert!(d.is_done(), "{probe:?}");
            assert_eq!(used, input.len(), "{probe:?} ended early");
            assert!(
                out.windows(8).any(|w| w == b"smuggled"),
                "{probe:?} content lost"
            );
            assert!(d.anomalies.bare_newline || d.anomalies.nul, "{probe:?}");
            let stored_lf = out.iter().enumerate().filter(|(_, &b)| b == b'\n');
            for (i, _) in stored_lf {
                assert_eq!(out[i - 1], b'\r', "{probe:?} stored a bare LF");
            }
        }
    }

    #[test]
    fn long_lines_are_flagged() {
        let mut input = vec![b'a'; 999];
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, _, d) = decode_all(&input);
        assert!(d.anomalies.long_line);
        let mut input = vec![b'a'; 998];
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, _, d) = decode_all(&input);
        assert!(!d.anomalies.long_line);
    }

    #[test]
    fn bdat_keeps_dots() {
        let mut decoder = DataDecoder::for_bdat(BareNewline::Reject);
        let mut out = Vec::new();
        decoder.decode(b"a\r\n.\r\nb\n", &mut out);
        assert_eq!(out, b"a\r\n.\r\nb\r\n");
        assert!(decoder.refuse_bare_newline());
        assert!(!decoder.is_done());
    }
}
