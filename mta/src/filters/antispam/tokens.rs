//! Words of a text, normalised and hashed, without an allocation per word.
//!
//! # Contract
//! - A word is a run of letters, digits, `$` and `'` (apostrophes trimmed at its ends).
//! - Normalisation (part of the model's feature version): lower case; a run of digits
//!   becomes `#N` (its length), so prices and phone numbers share tokens across messages;
//!   a word longer than 24 characters becomes `~L` (its length in eighths), so random ids
//!   and encoded junk give one "long token" signal instead of a token nobody shares; words
//!   of one character are dropped except `$`.
//! - Hashing is FNV-1a over the normalised bytes in a namespace (stable across platforms;
//!   the model file depends on it). Bigrams combine the two words' hashes ([`pair`]).

/// FNV-1a, 64 bits: stable across platforms and releases (the model file depends on it).
pub fn hash(namespace: u8, text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(namespace);
    for &b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The token of two consecutive words (order matters).
pub fn pair(first: u64, second: u64) -> u64 {
    let h = first.rotate_left(23) ^ second.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 31)
}

/// Longest word kept as itself, in characters.
const MAX_WORD_CHARS: usize = 24;

/// One word as the classifier sees it.
pub struct Word<'a> {
    /// The normalised form.
    pub text: &'a str,
    /// Three or more letters, all upper case, in the original ("FREE").
    pub shouting: bool,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '$' || c == '\''
}

/// Calls `f` with each word of `text`, until it returns false. `buf` is scratch space,
/// reused across calls so that tokenising allocates nothing per word.
pub fn for_each_word(text: &str, buf: &mut String, mut f: impl FnMut(Word<'_>) -> bool) {
    let mut rest = text;
    loop {
        let Some(start) = rest.find(is_word_char) else {
            return;
        };
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        let raw = rest[..end].trim_matches('\'');
        rest = &rest[end..];
        if !normalise(raw, buf) {
            continue;
        }
        let shouting =
            raw.len() >= 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) && !buf.starts_with('#');
        if !f(Word {
            text: buf.as_str(),
            shouting,
        }) {
            return;
        }
    }
}

/// Writes the normalised form of `raw` into `buf`; false when the word is dropped.
fn normalise(raw: &str, buf: &mut String) -> bool {
    use std::fmt::Write;
    buf.clear();
    if raw.is_empty() {
        return false;
    }
    let ascii = raw.is_ascii();
    let chars = if ascii {
        raw.len()
    } else {
        raw.chars().count()
    };
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        let _ = write!(buf, "#{}", raw.len().min(99));
        return true;
    }
    if chars > MAX_WORD_CHARS {
        let _ = write!(buf, "~{}", (chars / 8).min(32));
        return true;
    }
    if chars < 2 && raw != "$" {
        return false;
    }
    if ascii {
        buf.push_str(raw);
        buf.make_ascii_lowercase();
    } else {
        for c in raw.chars() {
            buf.extend(c.to_lowercase());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<(String, bool)> {
        let mut buf = String::new();
        let mut out = Vec::new();
        for_each_word(text, &mut buf, |w| {
            out.push((w.text.to_string(), w.shouting));
            true
        });
        out
    }

    #[test]
    fn normalises_case_numbers_and_long_tokens() {
        let got = words(
            "FREE money: call 5551234 now! a $ 'quoted' aVeryLongRandomTokenOfThirtyTwoX Über",
        );
        let texts: Vec<&str> = got.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            texts,
            ["free", "money", "call", "#7", "now", "$", "quoted", "~4", "über"]
        );
        assert!(got[0].1, "FREE shouts");
        assert!(!got[1].1);
    }

    #[test]
    fn hashing_is_stable() {
        // The model file depends on these exact values.
        assert_eq!(hash(0, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(1, b"free"), 0xfb61_be72_43e8_2a3a);
        assert_ne!(pair(1, 2), pair(2, 1));
    }
}
