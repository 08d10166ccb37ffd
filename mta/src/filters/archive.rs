//! The local archive (`copy` with `archive_dir`): one `.eml` file per message in a folder per
//! day (`DIR/YYYY-MM-DD/QUEUEID.eml`), with an index per day (`index.tsv`: time, queue id,
//! sender, recipients, size, file) for compliance retention.
//!
//! # Invariants
//! - Durable before the 250: the file is written under a temporary name, synced, renamed and
//!   its directory synced; then its index line is appended and synced. A crash leaves at
//!   worst a file without its index line (found by listing the folder), never a torn file
//!   under its final name.
//! - The file is the message as received, with the original envelope recorded first in
//!   `X-Bulwark-Original-Sender` / `X-Bulwark-Original-Recipients`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::queue::DraftSnapshot;

/// What the index records of one message.
pub struct Entry<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub unix_time: u64,
}

/// `YYYY-MM-DD` (UTC) of a Unix time (Howard Hinnant's civil-from-days).
pub fn day_of(unix_time: u64) -> String {
    let days = (unix_time / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Index fields must not hold tabs or line ends.
fn field(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Writes the message (`prefix` fields, then the snapshot) and its index line; returns the file.
pub fn store(
    dir: &Path,
    entry: &Entry<'_>,
    prefix: &[u8],
    message: &DraftSnapshot,
) -> io::Result<PathBuf> {
    let day_dir = dir.join(day_of(entry.unix_time));
    fs::create_dir_all(&day_dir)?;
    let name = format!("{}.eml", field(entry.queue_id).replace(['/', ' '], "_"));
    let path = day_dir.join(&name);
    let temporary = day_dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(prefix)?;
    let mut offset = 0;
    let mut piece = vec![0u8; 1 << 20];
    while offset < message.len() {
        let n = message.read_at(offset, &mut piece)?;
        if n == 0 {
            break;
        }
        file.write_all(&piece[..n])?;
        offset += n as u64;
    }
    file.sync_all()?;
    fs::rename(&temporary, &path)?;
    File::open(&day_dir)?.sync_all()?;
    let line = format!(
        "{}\t{}\t<{}>\t{}\t{}\t{name}\n",
        entry.unix_time,
        field(entry.queue_id),
        field(entry.sender),
        field(&entry.recipients.join(",")),
        prefix.len() as u64 + message.len(),
    );
    let mut index = OpenOptions::new()
        .create(true)
        .append(true)
        .open(day_dir.join("index.tsv"))?;
    index.write_all(line.as_bytes())?;
    index.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_796_169_600), "2026-12-02");
    }
}
