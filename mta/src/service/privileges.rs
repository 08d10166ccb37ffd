//! Dropping root after the privileged start.
//!
//! Contract: when the daemon runs as root and `[server] user` is set, `drop_to` is called after
//! the listeners and control socket are bound (and eBPF is loaded), hands the spool and the
//! control socket to that user, then switches groups (`initgroups`, `setgid`) and finally the
//! user (`setuid`). Afterwards the process cannot become root again: that is verified, not
//! assumed. Under systemd (`User=bulwark`) the daemon never starts as root and nothing happens.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{self, Gid, Group, Uid, User};

use crate::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("server.user {0:?}: no such user")]
    NoSuchUser(String),
    #[error("server.group {0:?}: no such group")]
    NoSuchGroup(String),
    #[error("looking up {0:?}: {1}")]
    Lookup(String, nix::Error),
    #[error("handing {path} to the service user: {source}")]
    Chown { path: PathBuf, source: nix::Error },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Switch {
        step: &'static str,
        source: nix::Error,
    },
    #[error("still able to regain root after dropping privileges")]
    NotDropped,
}

/// Who the daemon becomes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// The identity to drop to: `None` when not root or no user is configured.
pub fn wanted(server: &ServerConfig) -> Result<Option<Identity>, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let Some(name) = &server.user else {
        log::warn!("running as root: set server.user to drop privileges after binding");
        return Ok(None);
    };
    let user = User::from_name(name)
        .map_err(|e| PrivilegeError::Lookup(name.clone(), e))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.clone()))?;
    let gid = match &server.group {
        Some(group) => {
            Group::from_name(group)
                .map_err(|e| PrivilegeError::Lookup(group.clone(), e))?
                .ok_or_else(|| PrivilegeError::NoSuchGroup(group.clone()))?
                .gid
        }
        None => user.gid,
    };
    Ok(Some(Identity {
        name: user.name,
        uid: user.uid,
        gid,
    }))
}

/// Creates `dir` if needed and hands it (recursively) to `who`: a state directory the daemon
/// writes after the drop (the tracking store).
pub fn hand_over_dir(who: &Identity, dir: &Path) -> Result<(), PrivilegeError> {
    std::fs::create_dir_all(dir).map_err(|source| PrivilegeError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    chown_tree(dir, who)
}

/// Hands `spool_dir` (recursively) and `control_socket` to `who`, then becomes `who`.
pub fn drop_to(
    who: &Identity,
    spool_dir: &Path,
    control_socket: &Path,
) -> Result<(), PrivilegeError> {
    // The spool may have been created (or last used) by root; the daemon must keep writing it.
    chown_tree(spool_dir, who)?;
    chown(control_socket, who)?;
    let name = CString::new(who.name.as_str())
        .map_err(|_| PrivilegeError::NoSuchUser(who.name.clone()))?;
    // Order matters: groups while still root, the user last.
    unistd::initgroups(&name, who.gid).map_err(|source| PrivilegeError::Switch {
        step: "initgroups",
        source,
    })?;
    unistd::setgid(who.gid).map_err(|source| PrivilegeError::Switch {
        step: "setgid",
        source,
    })?;
    unistd::setuid(who.uid).map_err(|source| PrivilegeError::Switch {
        step: "setuid",
        source,
    })?;
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::NotDropped);
    }
    log::info!(
        "dropped privileges to {} (uid {}, gid {})",
        who.name,
        who.uid,
        who.gid
    );
    Ok(())
}

fn chown(path: &Path, who: &Identity) -> Result<(), PrivilegeError> {
    unistd::chown(path, Some(who.uid), Some(who.gid)).map_err(|source| PrivilegeError::Chown {
        path: path.to_path_buf(),
        source,
    })
}

/// Directories and files only; symlinks are not followed (lchown semantics are not needed:
/// the spool holds none, and following one could hand a foreign file to the service user).
fn chown_tree(root: &Path, who: &Identity) -> Result<(), PrivilegeError> {
    chown(root, who)?;
    let walk = |source| PrivilegeError::Walk {
        path: root.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(root).map_err(walk)? {
        let entry = entry.map_err(walk)?;
        let kind = entry.file_type().map_err(walk)?;
        if kind.is_dir() {
            chown_tree(&entry.path(), who)?;
        } else if kind.is_file() {
            chown(&entry.path(), who)?;
        }
    }
    Ok(())
}
