//! The journal: small messages appended to shared segment files, one flush per batch.
//!
//! ```text
//! journal/SSSSSSSSSSSSSSSS   segments, 16 hex digits, written in order, never rewritten
//! record  = "BWJ1" | kind u8 | 0 0 0 | id u64 LE | payload_len u32 LE | crc32 u32 LE | payload
//! crc32   = over bytes 4..20 of the record (kind, id, length) and the payload
//! kind 1  = message: the payload is a whole spool image ("BWQ1" .. trailer, see spool.rs)
//! kind 2  = done: the message `id` left the queue (delivered, bounced, deleted)
//! ```
//!
//! A segment is read from its start until the first record that does not check out (a torn
//! last batch); the writer never appends after a failed write it could not cut off, and a
//! restarted daemon always writes to a fresh segment.
//!
//! # Reclaiming space
//! A "done" record only ever refers to a message in its own or an older segment, so segments
//! are deleted oldest first, once none of their messages is still queued. A message that
//! stays queued (a destination is down) would pin its segment and every newer one, so when
//! the oldest sealed segment still holds messages after `MIGRATE_AFTER` (or the journal has
//! grown past `MIGRATE_SEGMENTS`), its survivors are copied to per-message files in `queue/`
//! (made durable first) and the segment goes. Recovery prefers such a file to the journal copy
//! and honours "done" records for both, so a crash at any step neither loses nor revives mail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::id::QueueId;

const MAGIC: &[u8; 4] = b"BWJ1";
pub const HEADER_LEN: usize = 24;
const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;
/// A segment takes no new batch once it is this large.
pub const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// A segment whose messages are all gone is swapped for a fresh one once this large, so a
/// quiet gateway does not keep a big dead segment on disk.
const SEGMENT_DEAD_ROTATE: u64 = 4 * 1024 * 1024;
/// Survivors of the oldest sealed segment move to their own files after this long...
pub const MIGRATE_AFTER: Duration = Duration::from_secs(30);
/// ...or at once when this many segments exist.
const MIGRATE_SEGMENTS: usize = 4;

/// One record as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Message { id: QueueId, image: &'a [u8] },
    Done { id: QueueId },
}

/// Appends a message record holding `image` to `out`.
pub fn encode_message(out: &mut Vec<u8>, id: QueueId, image: &[u8]) {
    encode(out, KIND_MESSAGE, id, image);
}

/// Appends a "done" record to `out`.
pub fn encode_done(out: &mut Vec<u8>, id: QueueId) {
    encode(out, KIND_DONE, id, &[]);
}

fn encode(out: &mut Vec<u8>, kind: u8, id: QueueId, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&id.0.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 4..start + 20]);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload length a record header announces, if the header is well formed.
fn payload_len(header: &[u8]) -> Option<usize> {
    if header.len() < HEADER_LEN || &header[..4] != MAGIC || header[5..8] != [0, 0, 0] {
        return None;
    }
    let len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    Some(len)
}

/// Parses the record at the start of `bytes`: the record and its total length, or None when
/// the bytes there are not a whole, intact record (end of the segment's valid part). Pure and
/// fuzzed (`fuzz/fuzz_targets/journal_record.rs`).
pub fn parse(bytes: &[u8]) -> Option<(Record<'_>, usize)> {
    let len = payload_len(bytes)?;
    let total = HEADER_LEN.checked_add(len)?;
    let payload = bytes.get(HEADER_LEN..total)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[4..20]);
    crc.update(payload);
    if crc.finalize().to_le_bytes() != bytes[20..24] {
        return None;
    }
    let id = QueueId(u64::from_le_bytes(bytes[8..16].try_into().ok()?));
    let record = match bytes[4] {
        KIND_MESSAGE => Record::Message { id, image: payload },
        KIND_DONE if payload.is_empty() => Record::Done { id },
        _ => return None,
    };
    Some((record, total))
}

/// Where a journaled message lies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub segment: u64,
    /// Offset of the record (its header) in the segment.
    pub offset: u64,
    /// Length of the whole record.
    pub len: u32,
    /// A durable copy exists as `queue/ID`; the journal copy only awaits its segment's end.
    pub migrated: bool,
    /// `queue/ID.st` may exist (to be removed with the message).
    pub state_log: bool,
}

pub(crate) struct Segment {
    pub file: Arc<File>,
    /// Messages of this segment still queued and not migrated.
    pub live: usize,
    pub size: u64,
    /// When the segment stopped taking new records (None: the one being written).
    pub sealed_at: Option<Instant>,
}

/// When segments turn over; constants in production, small in tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub segment_max: u64,
    pub migrate_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            segment_max: SEGMENT_MAX,
            migrate_after: MIGRATE_AFTER,
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub limits: Limits,
    pub messages: HashMap<QueueId, Placed>,
    pub segments: BTreeMap<u64, Segment>,
    /// The segment being written, if one is open.
    pub current: Option<u64>,
    pub next_segment: u64,
}

impl State {
    /// One message of `segment` no longer needs it (left the queue, or moved to a file).
    fn release(&mut self, segment: u64) {
        if let Some(s) = self.segments.get_mut(&segment) {
            s.live = s.live.saturating_sub(1);
        }
    }
}

/// The journal's shared state; the writer thread (commit.rs) appends, sessions and delivery
/// look messages up, removal updates the counts.
pub(crate) struct Journal {
    pub dir: PathBuf,
    dir_handle: File,
    state: Mutex<State>,
}

/// What recovery found in the journal.
pub(crate) struct Found {
    /// Queued messages: id, image (a spool file's bytes), where it lies.
    pub messages: Vec<(QueueId, Vec<u8>, Placed)>,
    /// Messages recorded as done: any file of theirs is stale.
    pub done: HashSet<QueueId>,
}

impl Journal {
    /// Opens `dir` (creating it) and reads every segment.
    pub fn open(dir: &Path) -> io::Result<(Journal, Found)> {
        fs::create_dir_all(dir)?;
        let dir_handle = File::open(dir)?;
        let mut state = State::default();
        let mut queued: BTreeMap<QueueId, (Vec<u8>, Placed)> = BTreeMap::new();
        let mut done = HashSet::new();
        for (sequence, path) in segment_files(dir)? {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let size = scan_segment(&file, &path, sequence, &mut queued, &mut done)?;
            state.segments.insert(
                sequence,
                Segment {
                    file: Arc::new(file),
                    live: 0,
                    size,
                    sealed_at: Some(Instant::now()),
                },
            );
            state.next_segment = sequence + 1;
        }
        let messages = queued
            .into_iter()
            .map(|(id, (image, placed))| (id, image, placed))
            .collect();
        let journal = Journal {
            dir: dir.to_path_buf(),
            dir_handle,
            state: Mutex::new(state),
        };
        Ok((journal, Found { messages, done }))
    }

    /// `journal/SSSSSSSSSSSSSSSS`, the name `segment_files` reads back.
    fn segment_path(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:016X}"))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a recovered message (after recovery decided which copy wins).
    pub fn adopt(&self, id: QueueId, placed: Placed) {
        let mut state = self.lock();
        if !placed.migrated {
            if let Some(segment) = state.segments.get_mut(&placed.segment) {
                segment.live += 1;
            }
        }
        state.messages.insert(id, placed);
    }

    /// The journal copy of `id` to read from, if the journal holds the message's only copy.
    pub fn locate(&self, id: QueueId) -> Option<(Arc<File>, Placed)> {
        let state = self.lock();
        let placed = *state.messages.get(&id)?;
        if placed.migrated {
            return None;
        }
        let file = state.segments.get(&placed.segment)?.file.clone();
        Some((file, placed))
    }

    /// Forgets `id`, returning where it was when the journal held it (a "done" record is
    /// then due).
    pub fn forget(&self, id: QueueId) -> Option<Placed> {
        let mut state = self.lock();
        let placed = state.messages.remove(&id)?;
        if !placed.migrated {
            state.release(placed.segment);
        }
        Some(placed)
    }

    /// Remembers that `id` has a state log file.
    pub fn note_state_log(&self, id: QueueId) {
        if let Some(placed) = self.lock().messages.get_mut(&id) {
            placed.state_log = true;
        }
    }

    /// Where the next batch goes: the open segment, or a new one (created and made durable
    /// in the directory first). Returns the segment's number, file and size.
    pub fn segment_for_batch(&self) -> io::Result<(u64, Arc<File>, u64)> {
        let mut state = self.lock();
        if let Some(current) = state.current {
            if let Some(segment) = state.segments.get(&current) {
                let dead = segment.live == 0 && segment.size >= SEGMENT_DEAD_ROTATE;
                if segment.size < state.limits.segment_max && !dead {
                    return Ok((current, segment.file.clone(), segment.size));
                }
            }
        }
        self.seal_current(&mut state);
        let sequence = state.next_segment;
        let path = self.segment_path(sequence);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.dir_handle.sync_all()?;
        let file = Arc::new(file);
        state.segments.insert(
            sequence,
            Segment {
                file: file.clone(),
                live: 0,
                size: 0,
                sealed_at: None,
            },
        );
        state.current = Some(sequence);
        state.next_segment = sequence + 1;
        Ok((sequence, file, 0))
    }

    fn seal_current(&self, state: &mut State) {
        if let Some(current) = state.current.take() {
            if let Some(segment) = state.segments.get_mut(&current) {
                segment.sealed_at = Some(Instant::now());
            }
        }
    }

    /// After a write or flush that failed and could not be cut off: no more records there.
    pub fn seal(&self) {
        let mut state = self.lock();
        self.seal_current(&mut state);
    }

    /// Records a batch that is now durable in `segment`: its messages and its new size.
    pub fn committed(&self, segment: u64, size: u64, placed: &[(QueueId, u64, u32)]) {
        let mut state = self.lock();
        if let Some(s) = state.segments.get_mut(&segment) {
            s.size = size;
            s.live += placed.len();
        }
        for &(id, offset, len) in placed {
            state.messages.insert(
                id,
                Placed {
                    segment,
                    offset,
                    len,
                    migrated: false,
                    state_log: false,
                },
            );
        }
    }

    /// Deletes sealed segments, oldest first, while nothing in them is queued.
    pub fn reclaim(&self) {
        let mut state = self.lock();
        loop {
            let Some((&oldest, segment)) = state.segments.iter().next() else {
                return;
            };
            if segment.live > 0 || segment.sealed_at.is_none() {
                return;
            }
            let path = self.segment_path(oldest);
            if let Err(e) = fs::remove_file(&path) {
                log::error!("journal: cannot delete {}: {e}", path.display());
                return;
            }
            state.segments.remove(&oldest);
            state.messages.retain(|_, p| p.segment != oldest);
        }
    }

    /// The oldest sealed segment whose queued messages should move to their own files now,
    /// and those messages.
    pub fn due_for_migration(&self) -> Option<(u64, Vec<QueueId>)> {
        let state = self.lock();
        let (&oldest, segment) = state.segments.iter().next()?;
        let sealed_at = segment.sealed_at?;
        if segment.live == 0 {
            return None;
        }
        if sealed_at.elapsed() < state.limits.migrate_after
            && state.segments.len() < MIGRATE_SEGMENTS
        {
            return None;
        }
        let survivors = state
            .messages
            .iter()
            .filter(|(_, p)| p.segment == oldest && !p.migrated)
            .map(|(id, _)| *id)
            .collect();
        Some((oldest, survivors))
    }

    /// Marks `id` as having its own durable file. False when it left the queue meanwhile.
    pub fn mark_migrated(&self, id: QueueId, segment: u64) -> bool {
        let mut state = self.lock();
        let Some(placed) = state.messages.get_mut(&id) else {
            return false;
        };
        if placed.segment != segment || placed.migrated {
            return true;
        }
        placed.migrated = true;
        state.release(segment);
        true
    }

    /// Number of segments and bytes on disk (status, tests).
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (
            state.segments.len(),
            state.segments.values().map(|s| s.size).sum(),
        )
    }
}

/// Reads one whole record of a placed message and returns its spool image.
pub(crate) fn read_image(file: &File, placed: &Placed) -> io::Result<Vec<u8>> {
    let mut record = vec![0u8; placed.len as usize];
    file.read_exact_at(&mut record, placed.offset)?;
    let intact =
        matches!(parse(&record), Some((Record::Message { .. }, used)) if used == record.len());
    if !intact {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "journal record does not check out",
        ));
    }
    record.drain(..HEADER_LEN);
    Ok(record)
}

fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != 16 {
            continue;
        }
        if let Ok(sequence) = u64::from_str_radix(name, 16) {
            found.push((sequence, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads a segment's records into `queued` / `done`; returns the length of its valid part.
fn scan_segment(
    file: &File,
    path: &Path,
    sequence: u64,
    queued: &mut BTreeMap<QueueId, (Vec<u8>, Placed)>,
    done: &mut HashSet<QueueId>,
) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut offset = 0u64;
    let mut record = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        if offset + HEADER_LEN as u64 > size || reader.read_exact(&mut header).is_err() {
            break;
        }
        let Some(len) = payload_len(&header) else {
            break;
        };
        if offset + (HEADER_LEN + len) as u64 > size {
            break;
        }
        record.clear();
        record.extend_from_slice(&header);
        record.resize(HEADER_LEN + len, 0);
        if reader.read_exact(&mut record[HEADER_LEN..]).is_err() {
            break;
        }
        match parse(&record) {
            Some((Record::Message { id, image }, total)) => {
                let placed = Placed {
                    segment: sequence,
                    offset,
                    len: total as u32,
                    migrated: false,
                    // Recovery cannot tell cheaply; removal then tries the unlink.
                    state_log: true,
                };
                queued.insert(id, (image.to_vec(), placed));
            }
            Some((Record::Done { id }, _)) => {
                queued.remove(&id);
                done.insert(id);
            }
            None => break,
        }
        offset += (HEADER_LEN + len) as u64;
    }
    if offset < size {
        log::warn!(
            "journal: {}: ignoring {} byte(s) after the last intact record (never acknowledged)",
            path.display(),
            size - offset
        );
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_damage_is_refused() {
        let mut bytes = Vec::new();
        encode_message(&mut bytes, QueueId(7), b"BWQ1 image");
        let first = bytes.len();
        encode_done(&mut bytes, QueueId(7));
        let (record, used) = parse(&bytes).expect("message");
        assert_eq!(
            record,
            Record::Message {
                id: QueueId(7),
                image: b"BWQ1 image"
            }
        );
        assert_eq!(used, first);
        let (record, used) = parse(&bytes[first..]).expect("done");
        assert_eq!(record, Record::Done { id: QueueId(7) });
        assert_eq!(first + used, bytes.len());
        for at in 0..first {
            let mut damaged = bytes[..first].to_vec();
            damaged[at] ^= 0x04;
            assert!(parse(&damaged).is_none(), "flip at {at} accepted");
            assert!(parse(&bytes[..at]).is_none(), "cut at {at} accepted");
        }
    }
}
