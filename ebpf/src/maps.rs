//! Typed views of the XDP program's maps. Layouts mirror `src/bpf/flow.bpf.c` (change both
//! together); keys and values are arrays of integers, addresses in network byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::Ebpf;

use crate::{FlowError, Settings};

/// `struct block_entry { expires_ns, hits }`.
type BlockValue = [u64; 2];
/// `struct source_entry { tat, passed, dropped, last_seen_ns }`.
type SourceValue = [u64; 4];

/// Counter slots, in the order of `enum counter` in the C program.
const SEEN: u32 = 0;
const PASS_ALLOW: u32 = 1;
const PASS_RATE: u32 = 2;
const DROP_BLOCK: u32 = 3;
const DROP_RATE: u32 = 4;

/// Global counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub syn_seen: u64,
    pub passed_allow: u64,
    pub passed_rate: u64,
    pub dropped_block: u64,
    pub dropped_rate: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub addr: IpAddr,
    pub prefix: u8,
    /// CLOCK_MONOTONIC ns; 0 = until unblocked.
    pub expires_ns: u64,
    /// SYNs this entry dropped.
    pub hits: u64,
}

impl BlockEntry {
    /// An entry of bw_block4 / bw_block6 as the kernel program keeps it.
    fn from_map(addr: IpAddr, prefix_len: u32, value: BlockValue) -> Self {
        BlockEntry {
            addr,
            prefix: prefix_len as u8,
            expires_ns: value[0],
            hits: value[1],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStat {
    /// The source: an IPv4 address, or an IPv6 /64 (shown as its network address).
    pub addr: IpAddr,
    pub prefix: u8,
    pub passed: u64,
    pub dropped: u64,
    pub last_seen_ns: u64,
}

pub(crate) struct FlowMaps {
    allow4: LpmTrie<MapData, [u8; 4], u8>,
    allow6: LpmTrie<MapData, [u8; 16], u8>,
    block4: LpmTrie<MapData, [u8; 4], BlockValue>,
    block6: LpmTrie<MapData, [u8; 16], BlockValue>,
    sources: HashMap<MapData, [u8; 16], SourceValue>,
    ports: HashMap<MapData, u16, u8>,
    config: Array<MapData, [u64; 2]>,
    counters: PerCpuArray<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, FlowError> {
    ebpf.take_map(name).ok_or(FlowError::MissingMap(name))
}

macro_rules! typed {
    ($ebpf:expr, $name:literal) => {
        take($ebpf, $name)?
            .try_into()
            .map_err(|source| FlowError::Map {
                name: $name,
                source,
            })?
    };
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> FlowError {
    move |source| FlowError::Map { name, source }
}

impl FlowMaps {
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self, FlowError> {
        Ok(Self {
            allow4: typed!(ebpf, "bw_allow4"),
            allow6: typed!(ebpf, "bw_allow6"),
            block4: typed!(ebpf, "bw_block4"),
            block6: typed!(ebpf, "bw_block6"),
            sources: typed!(ebpf, "bw_sources"),
            ports: typed!(ebpf, "bw_ports"),
            config: typed!(ebpf, "bw_config"),
            counters: typed!(ebpf, "bw_counters"),
        })
    }

    /// Writes ports, rate and allowlist; entries left from an earlier run are replaced.
    pub(crate) fn configure(&mut self, settings: &Settings) -> Result<(), FlowError> {
        let old_ports: Vec<u16> = self.ports.keys().filter_map(Result::ok).collect();
        for port in old_ports {
            let _ = self.ports.remove(&port);
        }
        for port in &settings.ports {
            self.ports
                .insert(port, 1, 0)
                .map_err(map_error("bw_ports"))?;
        }
        let (interval_ns, burst_ns) = if settings.rate == 0 {
            (0, 0)
        } else {
            let interval = 1_000_000_000 / u64::from(settings.rate);
            (interval, interval * u64::from(settings.burst.max(1)))
        };
        self.config
            .set(0, [interval_ns, burst_ns], 0)
            .map_err(map_error("bw_config"))?;
        let old4: Vec<Key<[u8; 4]>> = self.allow4.keys().filter_map(Result::ok).collect();
        for key in old4 {
            let _ = self.allow4.remove(&key);
        }
        let old6: Vec<Key<[u8; 16]>> = self.allow6.keys().filter_map(Result::ok).collect();
        for key in old6 {
            let _ = self.allow6.remove(&key);
        }
        for (addr, prefix) in &settings.allow {
            match addr {
                IpAddr::V4(a) => self
                    .allow4
                    .insert(&Key::new(u32::from(*prefix), a.octets()), 1, 0)
                    .map_err(map_error("bw_allow4"))?,
                IpAddr::V6(a) => self
                    .allow6
                    .insert(&Key::new(u32::from(*prefix), a.octets()), 1, 0)
                    .map_err(map_error("bw_allow6"))?,
            }
        }
        Ok(())
    }

    pub(crate) fn block(
        &mut self,
        addr: IpAddr,
        prefix: u8,
        expires_ns: u64,
    ) -> Result<(), FlowError> {
        let value: BlockValue = [expires_ns, 0];
        match addr {
            IpAddr::V4(a) if prefix <= 32 => self
                .block4
                .insert(&Key::new(u32::from(prefix), a.octets()), value, 0)
                .map_err(map_error("bw_block4")),
            IpAddr::V6(a) if prefix <= 128 => self
                .block6
                .insert(&Key::new(u32::from(prefix), a.octets()), value, 0)
                .map_err(map_error("bw_block6")),
            _ => Err(FlowError::Prefix(prefix)),
        }
    }

    pub(crate) fn unblock(&mut self, addr: IpAddr, prefix: u8) -> Result<bool, FlowError> {
        let removed = match addr {
            IpAddr::V4(a) => self.block4.remove(&Key::new(u32::from(prefix), a.octets())),
            IpAddr::V6(a) => self.block6.remove(&Key::new(u32::from(prefix), a.octets())),
        };
        match removed {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(FlowError::Map {
                name: "bw_block",
                source: e,
            }),
        }
    }

    pub(crate) fn blocked(&self) -> Vec<BlockEntry> {
        let v4 =
            self.block4.iter().filter_map(Result::ok).map(|(k, v)| {
                BlockEntry::from_map(Ipv4Addr::from(k.data()).into(), k.prefix_len(), v)
            });
        let v6 =
            self.block6.iter().filter_map(Result::ok).map(|(k, v)| {
                BlockEntry::from_map(Ipv6Addr::from(k.data()).into(), k.prefix_len(), v)
            });
        v4.chain(v6).collect()
    }

    pub(crate) fn counters(&self) -> Result<Counters, FlowError> {
        let sum = |index: u32| -> Result<u64, FlowError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(map_error("bw_counters"))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            syn_seen: sum(SEEN)?,
            passed_allow: sum(PASS_ALLOW)?,
            passed_rate: sum(PASS_RATE)?,
            dropped_block: sum(DROP_BLOCK)?,
            dropped_rate: sum(DROP_RATE)?,
        })
    }

    /// Whether a live blocklist entry covers `addr` (the trie's longest-prefix match).
    pub(crate) fn blocks(&self, addr: IpAddr, now_ns: u64) -> bool {
        let entry = match addr {
            IpAddr::V4(a) => self.block4.get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => self.block6.get(&Key::new(128, a.octets()), 0),
        };
        entry.is_ok_and(|[expires_ns, _]| expires_ns == 0 || expires_ns > now_ns)
    }

    /// SYNs the program passed from `addr`'s source (its /32 or /64); 0 when it has none.
    pub(crate) fn passed_from(&self, addr: IpAddr) -> u64 {
        let mut key = [0u8; 16];
        match addr {
            IpAddr::V4(a) => {
                key[10] = 0xff;
                key[11] = 0xff;
                key[12..].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => key[..8].copy_from_slice(&a.octets()[..8]),
        }
        self.sources.get(&key, 0).map_or(0, |value| value[1])
    }

    pub(crate) fn sources(&self, limit: usize) -> Vec<SourceStat> {
        let mut all: Vec<SourceStat> = self
            .sources
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| source_stat(key, value))
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse((s.dropped, s.passed)));
        all.truncate(limit);
        all
    }
}

fn source_stat(key: [u8; 16], value: SourceValue) -> SourceStat {
    let v6 = Ipv6Addr::from(key);
    let (addr, prefix) = match v6.to_ipv4_mapped() {
        Some(v4) => (IpAddr::V4(v4), 32),
        None => (IpAddr::V6(v6), 64),
    };
    SourceStat {
        addr,
        prefix,
        passed: value[1],
        dropped: value[2],
        last_seen_ns: value[3],
    }
}
