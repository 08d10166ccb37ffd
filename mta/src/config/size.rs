//! Byte sizes in the config: an integer is bytes, a string has a unit (`"512KB"`, `"25MB"`,
//! `"1GiB"`). KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Bytes(u64),
    Text(String),
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Raw::deserialize(deserializer)? {
        Raw::Bytes(bytes) => Ok(bytes),
        Raw::Text(text) => parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {text:?} (use bytes or e.g. \"512KB\", \"25MB\", \"1GiB\")"
            ))
        }),
    }
}

/// `"25MB"` → 25,000,000; `None` for anything else than digits and a known unit.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse("25MB"), Some(25_000_000));
        assert_eq!(parse("1 GiB"), Some(1 << 30));
        assert_eq!(parse("512kib"), Some(512 * 1024));
        assert_eq!(parse("100"), Some(100));
        assert_eq!(parse("MB"), None);
        assert_eq!(parse("5 parsecs"), None);
        assert_eq!(parse("99999999999999999999GB"), None);
    }
}
