//! Content on the way out: DATA is dot-stuffed and every line ends in CRLF.
//!
//! The spool already holds CRLF-only content; this encoder still turns any bare CR or LF
//! into CRLF, so Bulwark never emits a bare CR or LF to a next hop whatever the spool holds
//! (the outbound half of the SMTP-smuggling defence).

/// Encodes content for DATA (dot-stuffing) or BDAT (line ends only).
pub struct ContentEncoder {
    dot_stuff: bool,
    at_line_start: bool,
    pending_cr: bool,
}

impl ContentEncoder {
    pub fn for_data() -> Self {
        Self {
            dot_stuff: true,
            at_line_start: true,
            pending_cr: false,
        }
    }

    pub fn for_bdat() -> Self {
        Self {
            dot_stuff: false,
            at_line_start: true,
            pending_cr: false,
        }
    }

    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        while let Some(&byte) = input.first() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
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
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    input = &input[1..];
                }
                _ => {
                    // The rest of the line goes in one copy.
                    let end = memchr::memchr2(b'\r', b'\n', input).unwrap_or(input.len());
                    if self.at_line_start && self.dot_stuff && byte == b'.' {
                        out.push(b'.');
                    }
                    out.extend_from_slice(&input[..end]);
                    self.at_line_start = false;
                    input = &input[end..];
                }
            }
        }
    }

    /// Ends the content: a final CRLF if the last line lacked one, and for DATA the
    /// terminating `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
            self.pending_cr = false;
            self.at_line_start = true;
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
