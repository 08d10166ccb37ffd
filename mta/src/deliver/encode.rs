//! Content on the way out: DATA is dot-stuffed and every line ends in CRLF.
//!
//! The spool already holds CRLF-only content; this encoder still turns any bare CR or LF
//! into CRLF, so Bulwark never emits a bare CR or LF to a next hop whatever the spool holds
//! (the outbound half of the SMTP-smuggling defence).
//!
//! No line leaves longer than `MAX_LINE` (998) octets before its CRLF, dot-stuffing
//! included: a longer one (accepted with `[smtp] long_lines = "accept"`) is folded by
//! inserting CRLF SPACE, as Postfix's smtp_line_length_limit does, which keeps header
//! fields unfolding to their original text and does the least damage to MIME bodies.

/// Longest line sent, without its CRLF (RFC 5321 4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// Encodes content for DATA (dot-stuffing) or BDAT (line ends only).
pub struct ContentEncoder {
    dot_stuff: bool,
    at_line_start: bool,
    pending_cr: bool,
    /// Octets of the current output line so far.
    line_len: usize,
}

impl ContentEncoder {
    pub fn for_data() -> Self {
        Self {
            dot_stuff: true,
            at_line_start: true,
            pending_cr: false,
            line_len: 0,
        }
    }

    pub fn for_bdat() -> Self {
        Self {
            dot_stuff: false,
            at_line_start: true,
            pending_cr: false,
            line_len: 0,
        }
    }

    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        while let Some(&byte) = input.first() {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if byte == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.pending_cr = true;
                    input = &input[1..];
                }
                b'\n' => {
                    self.end_line(out);
                    input = &input[1..];
                }
                _ => {
                    // The rest of the line (up to the length limit) goes in one copy.
                    if self.at_line_start && self.dot_stuff && byte == b'.' {
                        out.push(b'.');
                        self.line_len += 1;
                    }
                    self.at_line_start = false;
                    if self.line_len >= MAX_LINE {
                        // Fold: the continuation starts with a space, never a dot.
                        out.extend_from_slice(b"\r\n ");
                        self.line_len = 1;
                    }
                    let end = memchr::memchr2(b'\r', b'\n', input).unwrap_or(input.len());
                    let end = end.min(MAX_LINE - self.line_len);
                    out.extend_from_slice(&input[..end]);
                    self.line_len += end;
                    input = &input[end..];
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        self.line_len = 0;
    }

    /// Ends the content: a final CRLF if the last line lacked one, and for DATA the
    /// terminating `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            self.end_line(out);
            self.pending_cr = false;
        }
        if self.dot_stuff {
            out.extend_from_slice(b".\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(input: &[u8]) -> Vec<u8> {
        let mut encoder = ContentEncoder::for_data();
        let mut out = Vec::new();
        encoder.encode(input, &mut out);
        encoder.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_dots_and_terminates() {
        assert_eq!(data(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(data(b""), b".\r\n");
        assert_eq!(data(b"no newline"), b"no newline\r\n.\r\n");
    }

    #[test]
    fn never_emits_bare_cr_or_lf() {
        let out = data(b"a\nb\rc\r\r\n.\n.\rx");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r');
            }
            if b == b'\r' {
                assert_eq!(out[i + 1], b'\n');
            }
        }
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n..\r\n..\r\nx\r\n.\r\n");
    }

    #[test]
    fn long_lines_are_folded_to_998_octets() {
        let line = [b'.'].iter().chain([b'y'; 4999].iter()).copied();
        let mut input: Vec<u8> = line.collect();
        input.extend_from_slice(b"\r\nshort\r\n");
        let out = data(&input);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert!(
            lines.iter().all(|l| l.len() <= MAX_LINE + 1),
            "a line over 998"
        );
        assert!(lines[1..]
            .iter()
            .all(|l| l.first() != Some(&b'.') || l == b".\r"));
        // Unfolding (dropping each CRLF SPACE) and unstuffing give the original back.
        let text = String::from_utf8(out).expect("ascii");
        let unfolded = text.replace("\r\n ", "");
        let expected = String::from_utf8(input).expect("ascii") + ".\r\n";
        assert_eq!(unfolded.strip_prefix('.'), Some(expected.as_str()));
    }

    #[test]
    fn folding_is_split_invariant() {
        let mut input = vec![b'z'; 2500];
        input.extend_from_slice(b"\r\n");
        input.extend(vec![b'w'; 1998]);
        let mut encoder = ContentEncoder::for_bdat();
        let mut out = Vec::new();
        for piece in input.chunks(7) {
            encoder.encode(piece, &mut out);
        }
        encoder.finish(&mut out);
        let mut whole = ContentEncoder::for_bdat();
        let mut expected = Vec::new();
        whole.encode(&input, &mut expected);
        whole.finish(&mut expected);
        assert_eq!(out, expected);
    }

    #[test]
    fn split_input_is_identical() {
        let input = b"x\r\n.y\r\nz\r";
        let mut encoder = ContentEncoder::for_data();
        let mut out = Vec::new();
        for byte in input {
            encoder.encode(std::slice::from_ref(byte), &mut out);
        }
        encoder.finish(&mut out);
        assert_eq!(out, data(input));
    }
}
