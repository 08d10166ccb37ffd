//! Zip archives, looked into for attachment rules: every member's name, size, detected type
//! and whether it is encrypted, nested archives included.
//!
//! # Bounds
//! At most `Limits::depth` levels, `Limits::members` members in all, and `Limits::bytes`
//! bytes decompressed in all (each read stops at what is left of that budget, so a zip bomb
//! costs at most the budget whatever its headers claim). When a bound is hit the walk stops
//! and says so (`Walk::limit_hit`): rules treat what was not seen as unknown, not as clean.

use std::io::{Cursor, Read};

use super::magic;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    pub members: usize,
    pub bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 4,
            members: 2000,
            bytes: 64 << 20,
        }
    }
}

/// One member of an archive (or of an archive inside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its path, `outer.zip/inner.zip/x.exe` style for nested members.
    pub path: String,
    /// The file name inside the archive.
    pub name: String,
    pub size: u64,
    pub detected_type: Option<&'static str>,
    pub encrypted: bool,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    pub members: Vec<Member>,
    pub limit_hit: bool,
}

impl Walk {
    pub fn encrypted(&self) -> bool {
        self.members.iter().any(|m| m.encrypted)
    }
}

/// Looks into `bytes` when it is a zip; an empty walk otherwise.
pub fn walk(bytes: &[u8], limits: Limits) -> Walk {
    let mut walk = Walk::default();
    let mut budget = limits.bytes;
    visit(bytes, "", 1, &limits, &mut budget, &mut walk);
    walk
}

fn visit(
    bytes: &[u8],
    prefix: &str,
    depth: usize,
    limits: &Limits,
    budget: &mut u64,
    out: &mut Walk,
) {
    if magic::detect(bytes) != Some("application/zip") {
        return;
    }
    if depth > limits.depth {
        out.limit_hit = true;
        return;
    }
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return;
    };
    for index in 0..archive.len() {
        if out.members.len() >= limits.members {
            out.limit_hit = true;
            return;
        }
        let Some((mut member, data)) = read_member(&mut archive, index, budget, out) else {
            continue;
        };
        member.path = format!("{prefix}{}", member.name);
        let nested_prefix = format!("{}/", member.path);
        out.members.push(member);
        if let Some(data) = data {
            visit(&data, &nested_prefix, depth + 1, limits, budget, out);
        }
    }
}

/// The member's facts and, when it could be read within the budget, its bytes.
fn read_member(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    budget: &mut u64,
    out: &mut Walk,
) -> Option<(Member, Option<Vec<u8>>)> {
    let (name, size, encrypted) = {
        let raw = archive.by_index_raw(index).ok()?;
        if raw.is_dir() {
            return None;
        }
        let name = String::from_utf8_lossy(raw.name_raw()).into_owned();
        (name, raw.size(), raw.encrypted())
    };
    let mut member = Member {
        path: String::new(),
        name,
        size,
        detected_type: None,
        encrypted,
    };
    if encrypted {
        return Some((member, None));
    }
    let Ok(entry) = archive.by_index(index) else {
        return Some((member, None));
    };
    let mut data = Vec::new();
    // One byte past the budget tells "exhausted" from "exactly fits".
    let read = entry.take(budget.saturating_add(1)).read_to_end(&mut data);
    if read.is_err() {
        return Some((member, None));
    }
    if data.len() as u64 > *budget {
        out.limit_hit = true;
        *budget = 0;
    } else {
        *budget -= data.len() as u64;
    }
    member.size = member.size.max(data.len() as u64);
    member.detected_type = magic::detect(&data);
    Some((member, Some(data)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut writer = zip::ZipWriter::new(&mut out);
            for (name, data) in files {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated);
                writer.start_file(*name, options).expect("start");
                writer.write_all(data).expect("write");
            }
            writer.finish().expect("finish");
        }
        out.into_inner()
    }

    #[test]
    fn nested_members_are_listed_with_types() {
        let inner = zip_of(&[("payload.exe", b"MZ\x90\x00rest")]);
        let outer = zip_of(&[("readme.txt", b"hi"), ("inner.zip", &inner)]);
        let walk = walk(&outer, Limits::default());
        let paths: Vec<&str> = walk.members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["readme.txt", "inner.zip", "inner.zip/payload.exe"]);
        assert_eq!(
            walk.members[2].detected_type,
            Some("application/x-msdownload")
        );
        assert!(!walk.limit_hit);
    }

    #[test]
    fn depth_and_bytes_are_bounded() {
        let mut nested = zip_of(&[("x.exe", b"MZ")]);
        for _ in 0..6 {
            nested = zip_of(&[("n.zip", &nested)]);
        }
        let walk = walk(&nested, Limits::default());
        assert!(walk.limit_hit);
        let big = zip_of(&[("zeros.bin", &vec![0u8; 1 << 20])]);
        let small = Limits {
            bytes: 1000,
            ..Limits::default()
        };
        assert!(super::walk(&big, small).limit_hit);
    }
}
