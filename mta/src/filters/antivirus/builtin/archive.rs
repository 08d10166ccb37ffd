//! Zip archives: each member read through a bounded reader and checked as an object.
//!
//! A member may expand to at most `max(RATIO_FLOOR, compressed × MAX_RATIO)` bytes and to no
//! more than what is left of the message's unpack budget; the reader stops one byte past the
//! limit, so a bomb costs at most the limit in memory and time, whatever its headers claim.

use std::io::{Cursor, Read};

use super::{BombLimit, Detection, Object, Walk, MAX_DEPTH, MAX_ENTRIES, MAX_RATIO, RATIO_FLOOR};

/// A local file header or an empty archive's end record.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

impl Walk<'_> {
    pub(super) fn zip(&mut self, bytes: &[u8], depth: usize) -> Option<Detection> {
        if depth > MAX_DEPTH {
            return Some(Detection::NestingLimit);
        }
        // Not readable as a zip: EICAR and the hashes were already checked on its bytes.
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
        if archive.len() > MAX_ENTRIES {
            return Some(Detection::ZipBomb(BombLimit::Entries));
        }
        for index in 0..archive.len() {
            let (name, data) = match self.read_member(&mut archive, index) {
                Member::Data(name, data) => (name, data),
                Member::Skipped => continue,
                Member::Bomb(limit) => return Some(Detection::ZipBomb(limit)),
            };
            let object = Object {
                name: Some(&name),
                content_type: None,
                bytes: &data,
            };
            if let Some(found) = self.object(&object, depth) {
                return Some(found);
            }
        }
        None
    }

    fn read_member(
        &mut self,
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        index: usize,
    ) -> Member {
        // Encrypted, unsupported or corrupt members cannot be looked into.
        let Ok(entry) = archive.by_index(index) else {
            return Member::Skipped;
        };
        if entry.is_dir() {
            return Member::Skipped;
        }
        let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        let by_ratio = entry
            .compressed_size()
            .saturating_mul(MAX_RATIO)
            .max(RATIO_FLOOR);
        let limit = by_ratio.min(self.budget);
        let mut data = Vec::new();
        if entry
            .take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .is_err()
        {
            return Member::Skipped;
        }
        let size = data.len() as u64;
        if size > limit {
            return Member::Bomb(if limit == self.budget {
                BombLimit::Size
            } else {
                BombLimit::Ratio
            });
        }
        self.budget -= size;
        Member::Data(name, data)
    }
}

enum Member {
    Data(String, Vec<u8>),
    Skipped,
    Bomb(BombLimit),
}
