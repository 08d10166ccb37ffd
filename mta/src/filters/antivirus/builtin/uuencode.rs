//! uuencoded files inside a text part (`begin 644 name` ... `end`), as old mailers and some
//! malware droppers still send them. Lines that do not decode end the file early; a file is
//! returned as far as it decoded.

/// Every uuencoded file in `text`, as (name, bytes), decoding at most `budget` bytes in all.
pub fn files(text: &[u8], budget: usize) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut used = 0usize;
    let mut lines = text.split(|&b| b == b'\n').map(trim_cr);
    while let Some(line) = lines.next() {
        let Some(name) = begin_line(line) else {
            continue;
        };
        let mut bytes = Vec::new();
        for line in lines.by_ref() {
            if line == b"end" || !decode_line(line, &mut bytes) || used + bytes.len() > budget {
                break;
            }
        }
        bytes.truncate(budget.saturating_sub(used));
        used += bytes.len();
        found.push((name, bytes));
        if used >= budget {
            break;
        }
    }
    found
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `begin 644 name` → `name`.
fn begin_line(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"begin ")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (mode, name) = text.split_once(' ')?;
    if mode.len() < 3 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    Some(name.trim().to_string())
}

/// Appends one line's bytes; false when the line is not uuencoded.
fn decode_line(line: &[u8], out: &mut Vec<u8>) -> bool {
    let Some((&first, rest)) = line.split_first() else {
        return false;
    };
    let value = |c: u8| c.wrapping_sub(b' ') & 0x3f;
    let length = value(first) as usize;
    if length == 0 {
        return true;
    }
    if rest.len() < length.div_ceil(3) * 4 || rest.iter().any(|c| !(b' '..=b'`').contains(c)) {
        return false;
    }
    let mut decoded = Vec::with_capacity(length + 2);
    for group in rest.chunks(4).take(length.div_ceil(3)) {
        let [a, b, c, d] = [group[0], group[1], group[2], group[3]].map(value);
        decoded.extend_from_slice(&[a << 2 | b >> 4, b << 4 | c >> 2, c << 6 | d]);
    }
    decoded.truncate(length);
    out.extend_from_slice(&decoded);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_python_uu_encodes() {
        // binascii.b2a_uu(b"hello, uuencoded world\n") in a begin/end block.
        let text = b"Some text\r\nbegin 644 greeting.txt\r\n7:&5L;&\\L('5U96YC;V1E9\"!W;W)L9`H`\r\n`\r\nend\r\n";
        let files = files(text, 1 << 20);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "greeting.txt");
        assert_eq!(files[0].1, b"hello, uuencoded world\n");
    }

    #[test]
    fn budget_bounds_the_output() {
        let mut text = b"begin 644 big\n".to_vec();
        for _ in 0..1000 {
            text.extend_from_slice(
                b"M86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A\n",
            );
        }
        let files = files(&text, 1000);
        assert!(files[0].1.len() <= 1000);
    }
}
