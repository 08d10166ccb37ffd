//! Local delivery into a Maildir (a route with `maildir = "DIR"`; the built-in default uses
//! one for `localhost`, so a newcomer's first message arrives somewhere they can open).
//!
//! # Contract
//! - Each recipient gets its own file, written to `DIR/tmp`, synced, then renamed into
//!   `DIR/new` and the directory synced (the Maildir protocol): a reader never sees a partial
//!   message, and a file in `new/` survives a crash. Only then is the recipient delivered.
//! - The file starts with `Delivered-To: <recipient>` and uses LF line ends, as mail readers
//!   expect of Maildir files.
//! - An I/O error defers the recipient (retried like any temporary failure).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes files written in the same second by this process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes one recipient's copy; the path of the file in `new/`.
pub fn deliver(dir: &Path, recipient: &str, content: &[u8], hostname: &str) -> io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let name = format!(
        "{}.{}_{}.{}",
        crate::queue::unix_now(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed),
        hostname.replace(['/', ':'], "_")
    );
    let (tmp, new) = (dir.join("tmp").join(&name), dir.join("new").join(&name));
    let mut file = File::create(&tmp)?;
    let mut text = format!("Delivered-To: <{recipient}>\n").into_bytes();
    text.extend(lf_lines(content));
    file.write_all(&text)?;
    file.sync_all()?;
    fs::rename(&tmp, &new)?;
    File::open(dir.join("new"))?.sync_all()?;
    Ok(new)
}

/// CRLF line ends become LF (the spool holds CRLF-only content).
fn lf_lines(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut bytes = content.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\r' && bytes.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_file_is_in_new_with_lf_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("Maildir");
        let path = deliver(
            &maildir,
            "u@localhost",
            b"Subject: hi\r\n\r\nbody\r\n",
            "mx",
        )
        .expect("delivered");
        assert_eq!(path.parent(), Some(maildir.join("new").as_path()));
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "Delivered-To: <u@localhost>\nSubject: hi\n\nbody\n");
        assert!(fs::read_dir(maildir.join("tmp"))
            .expect("tmp")
            .next()
            .is_none());
    }
}
