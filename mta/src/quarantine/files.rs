//! The quarantine's files, the truth of the store: `messages/ID.eml` and `messages/ID.json`,
//! each written as tmp file, fsync, rename, directory fsync (see the module doc of
//! `quarantine` for the order and what recovery makes of a crash between the steps).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{QuarantineError, Record, WriteContent};
use crate::queue::QueueId;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> QuarantineError + '_ {
    move |source| QuarantineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone)]
pub struct Files {
    paths: Arc<Paths>,
}

struct Paths {
    tmp: PathBuf,
    messages: PathBuf,
}

impl Files {
    /// Creates the directories and empties `tmp/` (stores cut short, never acknowledged).
    pub fn open(dir: &Path) -> Result<Files, QuarantineError> {
        let paths = Paths {
            tmp: dir.join("tmp"),
            messages: dir.join("messages"),
        };
        for dir in [&paths.tmp, &paths.messages] {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        for entry in fs::read_dir(&paths.tmp).map_err(io_at(&paths.tmp))? {
            let entry = entry.map_err(io_at(&paths.tmp))?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(Files {
            paths: Arc::new(paths),
        })
    }

    fn message_path(&self, id: QueueId) -> PathBuf {
        self.paths.messages.join(format!("{id}.eml"))
    }

    fn record_path(&self, id: QueueId) -> PathBuf {
        self.paths.messages.join(format!("{id}.json"))
    }

    /// Every valid record; removes messages without a record (see the module doc).
    pub fn recover(&self) -> Result<Vec<Record>, QuarantineError> {
        let dir = &self.paths.messages;
        let mut records = Vec::new();
        let mut messages = HashSet::new();
        let mut ids = HashSet::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            let Ok(id) = stem.parse::<QueueId>() else {
                continue;
            };
            match ext {
                "eml" => messages.insert(id),
                "json" => ids.insert(id),
                _ => false,
            };
        }
        for id in &messages - &ids {
            log::warn!(queue_id:% = id; "quarantine: removing {id}.eml without a record (a store or delete cut short)");
            let _ = fs::remove_file(self.message_path(id));
        }
        for &id in &ids {
            if !messages.contains(&id) {
                log::error!(queue_id:% = id; "quarantine: record {id}.json has no message file; left out");
                continue;
            }
            match self.read_record(id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => log::error!(queue_id:% = id; "quarantine: {e}; left out"),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Writes the message and its record durably; returns the record with its size.
    pub fn store(
        &self,
        mut record: Record,
        write_content: WriteContent,
    ) -> Result<Record, QuarantineError> {
        let id = record
            .queue_id()
            .ok_or_else(|| QuarantineError::Task(format!("bad id {:?}", record.id)))?;
        let target = self.message_path(id);
        if self.record_path(id).exists() || target.exists() {
            return Err(QuarantineError::Exists(id));
        }
        let tmp = self.paths.tmp.join(format!("{id}.eml"));
        let written = write_message(&tmp, write_content);
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_at(&tmp)(e));
            }
        };
        fs::rename(&tmp, &target).map_err(io_at(&target))?;
        self.sync_messages_dir()?;
        record.size = size;
        if let Err(e) = self.write_record(&record) {
            let _ = fs::remove_file(&target);
            return Err(e);
        }
        Ok(record)
    }

    /// Rewrites a record durably (tmp, fsync, rename, directory fsync).
    pub fn write_record(&self, record: &Record) -> Result<(), QuarantineError> {
        let id = record
            .queue_id()
            .ok_or_else(|| QuarantineError::Task(format!("bad id {:?}", record.id)))?;
        let tmp = self.paths.tmp.join(format!("{id}.json"));
        let json = serde_json::to_vec_pretty(record).map_err(|e| QuarantineError::Corrupt {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        let written = write_synced(&tmp, &json);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_at(&tmp)(e));
        }
        let target = self.record_path(id);
        fs::rename(&tmp, &target).map_err(io_at(&target))?;
        self.sync_messages_dir()
    }

    /// The record of `id`; None when there is none.
    pub fn read_record(&self, id: QueueId) -> Result<Option<Record>, QuarantineError> {
        let path = self.record_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| QuarantineError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    pub fn read_message(&self, id: QueueId) -> Result<Vec<u8>, QuarantineError> {
        if !self.record_path(id).exists() {
            return Err(QuarantineError::NotFound(id));
        }
        let path = self.message_path(id);
        fs::read(&path).map_err(io_at(&path))
    }

    pub fn open_message(&self, id: QueueId) -> Result<File, QuarantineError> {
        let path = self.message_path(id);
        File::open(&path).map_err(io_at(&path))
    }

    /// Removes an entry: the record first (the commit point), then the message.
    pub fn remove(&self, id: QueueId) -> Result<(), QuarantineError> {
        let record = self.record_path(id);
        match fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QuarantineError::NotFound(id))
            }
            Err(e) => return Err(io_at(&record)(e)),
        }
        let message = self.message_path(id);
        match fs::remove_file(&message) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&message)(e)),
        }
        self.sync_messages_dir()
    }

    fn sync_messages_dir(&self) -> Result<(), QuarantineError> {
        let dir = &self.paths.messages;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))
    }
}

/// Creates `path`, lets the caller write the message into it, and fsyncs it; its size.
fn write_message(path: &Path, write_content: WriteContent) -> io::Result<u64> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    write_content(&mut file)?;
    file.flush()?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
