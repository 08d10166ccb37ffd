//! Bulwark's kernel flow control: loads the XDP program (`src/bpf/flow.bpf.c`, compiled by
//! clang-19 in `build.rs`), attaches it to interfaces, and reads and writes its maps.
//!
//! # Contract
//! - [`KernelFlow::attach`] needs CAP_BPF + CAP_NET_ADMIN (or root) once; every later call only
//!   uses the map file descriptors it holds, so it keeps working after privileges are dropped.
//! - Maps and links are pinned under the pin directory: when the process exits, the program
//!   stays attached and the blocklist and per-source state survive. A new `attach` reuses the
//!   pinned maps (same state) and replaces the pinned links (new program). [`detach`] removes
//!   every pin, which detaches the program once no process holds it any more.
//! - Times are CLOCK_MONOTONIC nanoseconds ([`monotonic_ns`]), the clock `bpf_ktime_get_ns`
//!   reads: an expiry written here means the same instant in the kernel.
//!
//! This crate has no unsafe code: map keys and values are plain arrays, which aya already
//! knows how to copy.

mod maps;

pub use maps::{BlockEntry, Counters, SourceStat};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o"));
const PROGRAM: &str = "bulwark_flow";

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("pinning the link on {interface}: {source}")]
    Pin {
        interface: String,
        source: aya::pin::PinError,
    },
    #[error("link on {interface}: {source}")]
    Link {
        interface: String,
        source: aya::programs::links::LinkError,
    },
    #[error("{0} is not a valid prefix length for that address")]
    Prefix(u8),
}

/// What to enforce and where.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interfaces: Vec<String>,
    pub ports: Vec<u16>,
    /// New connections per second per source (IPv4 /32, IPv6 /64); 0 = no rate limit.
    pub rate: u32,
    pub burst: u32,
    /// Sources passed without any limit.
    pub allow: Vec<(IpAddr, u8)>,
    pub pin_dir: PathBuf,
}

/// One interface the program is attached to, and how.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub interface: String,
    /// "driver" (native XDP) or "generic" (SKB mode, where the driver lacks XDP).
    pub mode: &'static str,
}

/// The loaded program and its maps; dropping it leaves the pinned program attached.
pub struct KernelFlow {
    maps: maps::FlowMaps,
    attachments: Vec<Attachment>,
    _links: Vec<PinnedLink>,
    _ebpf: Ebpf,
}

impl KernelFlow {
    /// Loads (reusing pinned maps), configures and attaches to every interface.
    pub fn attach(settings: &Settings) -> Result<Self, FlowError> {
        ensure_bpffs(&settings.pin_dir)?;
        std::fs::create_dir_all(&settings.pin_dir).map_err(|source| FlowError::PinDir {
            path: settings.pin_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&settings.pin_dir)
            .load(OBJECT)?;
        let mut maps = maps::FlowMaps::take(&mut ebpf)?;
        maps.configure(settings)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(FlowError::MissingMap(PROGRAM))?
            .try_into()?;
        program.load()?;
        let mut links = Vec::new();
        let mut attachments = Vec::new();
        for interface in &settings.interfaces {
            let pin = link_pin(&settings.pin_dir, interface);
            release_old_link(&pin, interface)?;
            let (id, mode) = match program.attach(interface, XdpMode::Driver) {
                Ok(id) => (id, "driver"),
                Err(_) => (program.attach(interface, XdpMode::Skb)?, "generic"),
            };
            let link = FdLink::try_from(program.take_link(id)?).map_err(|e| FlowError::Link {
                interface: interface.clone(),
                source: e,
            })?;
            let pinned = link.pin(&pin).map_err(|source| FlowError::Pin {
                interface: interface.clone(),
                source,
            })?;
            links.push(pinned);
            attachments.push(Attachment {
                interface: interface.clone(),
                mode,
            });
        }
        Ok(Self {
            maps,
            attachments,
            _links: links,
            _ebpf: ebpf,
        })
    }

    /// Rewrites ports, rate and allowlist in the pinned maps (a reload); what is attached
    /// where stays as it is.
    pub fn reconfigure(&mut self, settings: &Settings) -> Result<(), FlowError> {
        self.maps.configure(settings)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Blocks `addr/prefix` until `expires_ns` (CLOCK_MONOTONIC; 0 = until unblocked).
    pub fn block(&mut self, addr: IpAddr, prefix: u8, expires_ns: u64) -> Result<(), FlowError> {
        self.maps.block(addr, prefix, expires_ns)
    }

    /// Removes exactly `addr/prefix`; false when it was not blocked.
    pub fn unblock(&mut self, addr: IpAddr, prefix: u8) -> Result<bool, FlowError> {
        self.maps.unblock(addr, prefix)
    }

    /// Every blocklist entry, expired ones included (see [`KernelFlow::purge_expired`]).
    pub fn blocked(&self) -> Vec<BlockEntry> {
        self.maps.blocked()
    }

    /// Deletes entries whose expiry has passed; returns how many.
    pub fn purge_expired(&mut self) -> usize {
        let now = monotonic_ns();
        let expired: Vec<BlockEntry> = self
            .blocked()
            .into_iter()
            .filter(|b| b.expires_ns != 0 && b.expires_ns <= now)
            .collect();
        expired
            .iter()
            .filter(|b| self.maps.unblock(b.addr, b.prefix).unwrap_or(false))
            .count()
    }

    /// Whether a live blocklist entry covers `addr` (for a connection the program did not see).
    pub fn is_blocked(&self, addr: IpAddr, now_ns: u64) -> bool {
        self.maps.blocks(addr, now_ns)
    }

    /// SYNs the program has passed from `addr`'s source (IPv4 /32, IPv6 /64) since it was last
    /// seen fresh; 0 when the program has no entry for it.
    pub fn passed_from(&self, addr: IpAddr) -> u64 {
        self.maps.passed_from(addr)
    }

    pub fn counters(&self) -> Result<Counters, FlowError> {
        self.maps.counters()
    }

    /// Sources seen recently, by SYNs dropped then passed, at most `limit`.
    pub fn sources(&self, limit: usize) -> Vec<SourceStat> {
        self.maps.sources(limit)
    }
}

/// Pins only survive on a bpf file system. systemd mounts one at /sys/fs/bpf at boot; started
/// elsewhere (a container, a minimal init), mount it ourselves rather than fail to pin.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), FlowError> {
    use nix::mount::{mount, MsFlags};
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(());
    }
    let is_bpffs = statfs(root).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
    if is_bpffs {
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("bpf"), root, Some("bpf"), flags, Some("mode=0700")).map_err(|e| {
        FlowError::PinDir {
            path: root.to_path_buf(),
            source: std::io::Error::from(e),
        }
    })?;
    log::info!("mounted the bpf file system at {}", root.display());
    Ok(())
}

fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link_{interface}"))
}

/// A link pinned by an earlier run is unpinned and dropped so the new program can attach.
/// The maps are shared by name, so blocks and buckets carry over.
fn release_old_link(pin: &Path, interface: &str) -> Result<(), FlowError> {
    if !pin.exists() {
        return Ok(());
    }
    let old = PinnedLink::from_pin(pin).map_err(|source| FlowError::Link {
        interface: interface.to_string(),
        source,
    })?;
    let fd = old.unpin().map_err(|source| FlowError::PinDir {
        path: pin.to_path_buf(),
        source,
    })?;
    drop(fd);
    Ok(())
}

/// Removes every pin under `pin_dir` (links and maps) and the directory: the uninstall path.
/// Returns the names removed. The program detaches once no running daemon holds it.
pub fn detach(pin_dir: &Path) -> Result<Vec<String>, FlowError> {
    let error = |source| FlowError::PinDir {
        path: pin_dir.to_path_buf(),
        source,
    };
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(error(e)),
    };
    for entry in entries {
        let entry = entry.map_err(error)?;
        std::fs::remove_file(entry.path()).map_err(error)?;
        removed.push(entry.file_name().to_string_lossy().into_owned());
    }
    std::fs::remove_dir(pin_dir).map_err(error)?;
    removed.sort();
    Ok(removed)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
