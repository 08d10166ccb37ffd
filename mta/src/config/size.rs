//! Sizes in the config: an integer is bytes, a string has a unit (`"512KB"`, `"20MB"`, `"1GB"`;
//! K/M/G are powers of 1024, as administrators read a message size).

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Bytes(u64),
    Text(String),
}

/// Parses `"20MB"`, `"20 MiB"`, `"512k"`, `"1000"`; None when it is not a size.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Raw::deserialize(deserializer)? {
        Raw::Bytes(bytes) => Ok(bytes),
        Raw::Text(text) => parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {text:?} (use bytes or e.g. \"512KB\", \"20MB\", \"1GB\")"
            ))
        }),
    }
}

/// Written back as bytes.
pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(*bytes)
}

/// For `Option<u64>` fields.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_some(bytes),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "super::deserialize")] u64);
        Option::<Wrapped>::deserialize(deserializer).map(|w| w.map(|Wrapped(v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse("20MB"), Some(20 << 20));
        assert_eq!(parse("512 KiB"), Some(512 << 10));
        assert_eq!(parse("1000"), Some(1000));
        assert_eq!(parse("1g"), Some(1 << 30));
        assert_eq!(parse("MB"), None);
        assert_eq!(parse("20XB"), None);
    }
}
