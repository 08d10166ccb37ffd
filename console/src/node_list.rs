//! The console's node list, added to and removed from on the Nodes page: kept in
//! `[console] nodes_file` (TOML, `[[node]]`). Once that file exists it is the list; until then
//! `[[console.node]]` is, and the first change writes the file from it.
//!
//! Invariants: names are unique and made of letters, digits, `.`, `_`, `-`; an address is
//! `host:port`; the file is replaced atomically (temporary file, rename), so a crash leaves the
//! old list or the new one.

use std::path::{Path, PathBuf};

use bulwark::config::{ConsoleConfig, ConsoleNode};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NodeListError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("a node name is letters, digits, '.', '_' and '-' (got {0:?})")]
    BadName(String),
    #[error("a node address is host:port (got {0:?})")]
    BadAddress(String),
    #[error("there is already a node {0:?}")]
    Duplicate(String),
    #[error("there is no node {0:?}")]
    Unknown(String),
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    #[serde(default)]
    node: Vec<ConsoleNode>,
}

/// The list in force at start: the nodes file when it exists, else the configuration's.
pub fn load(config: &ConsoleConfig) -> Result<Vec<ConsoleNode>, NodeListError> {
    let path = config.nodes_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str::<File>(&text)
                .map(|f| f.node)
                .map_err(|e| NodeListError::Format {
                    path,
                    message: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(config.nodes.clone()),
        Err(source) => Err(NodeListError::Io { path, source }),
    }
}

pub fn save(path: &Path, nodes: &[ConsoleNode]) -> Result<(), NodeListError> {
    let io = |source| NodeListError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(&File {
        node: nodes.to_vec(),
    })
    .map_err(|e| NodeListError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut staged = path.as_os_str().to_owned();
    staged.push(".new");
    let staged = PathBuf::from(staged);
    let header = "# Written by bulwark-console (Nodes page); it replaces [[console.node]].\n";
    std::fs::write(&staged, format!("{header}{text}")).map_err(io)?;
    std::fs::rename(&staged, path).map_err(io)
}

/// Checks a node to be added against the list.
pub fn check_new(nodes: &[ConsoleNode], node: &ConsoleNode) -> Result<(), NodeListError> {
    let name_ok = !node.name.is_empty()
        && node.name.len() <= 64
        && node
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(NodeListError::BadName(node.name.clone()));
    }
    let address_ok = node
        .address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !address_ok || node.address.chars().any(char::is_whitespace) {
        return Err(NodeListError::BadAddress(node.address.clone()));
    }
    if nodes.iter().any(|n| n.name == node.name) {
        return Err(NodeListError::Duplicate(node.name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str) -> ConsoleNode {
        ConsoleNode {
            name: name.into(),
            address: address.into(),
            server_name: None,
        }
    }

    #[test]
    fn names_and_addresses_are_checked() {
        let list = vec![node("mx1", "192.0.2.1:9443")];
        assert!(check_new(&list, &node("mx2", "[2001:db8::1]:9443")).is_ok());
        assert!(matches!(
            check_new(&list, &node("mx1", "192.0.2.2:9443")),
            Err(NodeListError::Duplicate(_))
        ));
        assert!(matches!(
            check_new(&list, &node("mx 2", "192.0.2.2:9443")),
            Err(NodeListError::BadName(_))
        ));
        assert!(matches!(
            check_new(&list, &node("mx2", "192.0.2.2")),
            Err(NodeListError::BadAddress(_))
        ));
    }
}
