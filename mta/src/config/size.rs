//! Sizes in the config: an integer is bytes, a string is a number with a binary unit
//! (`"512K"`, `"100M"`, `"2G"`; `KiB`/`MiB`/`GiB` and `B` are accepted too).

use serde::{Deserialize, Deserializer, Serializer};

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
                "invalid size {text:?} (use bytes or e.g. \"512K\", \"100M\", \"2G\")"
            ))
        }),
    }
}

/// Written back as bytes.
pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(*bytes)
}

fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::parse("100M"), Some(100 << 20));
        assert_eq!(super::parse("512 KiB"), Some(512 << 10));
        assert_eq!(super::parse("7"), Some(7));
        assert_eq!(super::parse("1T"), None);
        assert_eq!(super::parse("M"), None);
    }
}
