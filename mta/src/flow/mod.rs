//! Flow control: connection-rate limits and abuse blocks per source address.
//!
//! # Contract
//! - At start (still privileged) [`Flow::start`] attaches the XDP program to `[flow].interfaces`
//!   (crate `bulwark-ebpf`). Where that is impossible (no interfaces, not root, no CAP_BPF, old
//!   kernel) it says so once and the same policy — the same GCRA bucket per IPv4 /32 or IPv6
//!   /64, the same blocklist — is enforced at accept ([`Flow::admit`]), so the gateway is
//!   protected either way. In kernel mode `admit` still checks, at accept, the connections
//!   the kernel did not judge (an interface it is not attached to, headers it does not parse:
//!   see `unjudged`): the kernel's blocklist, then the userspace bucket. Connections it
//!   judged are not charged twice.
//! - SMTP-layer verdicts ([`Signal`]) are counted per address within `harvest_window`; at the
//!   configured threshold the address is blocked for `block_seconds`, in the kernel blocklist
//!   when attached (so the block outlives a restart: the maps are pinned), else in userspace.
//! - Exempt sources (`[flow].allow`, `relay.trusted_networks`, loopback) are never limited and
//!   never blocked automatically.
//! - A reload ([`Flow::reload`]) applies the new rate, burst, thresholds, block time and the
//!   exemptions (`allow` and `relay.trusted_networks`) at once, in the kernel maps too;
//!   `mode`, `interfaces` and `pin_dir` decide what is attached and need a restart (the
//!   reload report says so).

mod limiter;
mod unjudged;

use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use bulwark_ebpf::{KernelFlow, Settings};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, FlowConfig, FlowMode};
use crate::policy::HarvestTracker;
use limiter::Limiter;
pub use limiter::{source_network, Admission, BlockedSource, SourceCount};
use unjudged::Judged;

/// An SMTP-layer verdict about a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A 550 5.1.1 (directory harvest).
    UnknownRecipient,
    AuthFailure,
    /// Talked before the greeting.
    Pregreet,
    /// A session closed for too many errors.
    ProtocolErrors,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowControlError {
    #[error("{0:?} is not an address or network (ADDR or ADDR/LEN)")]
    BadTarget(String),
    #[error("kernel: {0}")]
    Kernel(#[from] bulwark_ebpf::FlowError),
}

/// Where the policy is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    Xdp,
    Userspace,
    Off,
}

/// Userspace counters, named as the kernel's.
#[derive(Default)]
struct UserCounters {
    seen: u64,
    passed_allow: u64,
    passed_rate: u64,
    dropped_block: u64,
    dropped_rate: u64,
    /// XDP mode: accepted connections whose SYN the kernel did not judge.
    unjudged: u64,
}

struct Thresholds {
    harvest: usize,
    auth: usize,
    pregreet: usize,
    errors: usize,
    block_for: Duration,
}

pub struct Flow {
    enforcement: Enforcement,
    kernel: Option<Mutex<KernelFlow>>,
    limiter: Mutex<Limiter>,
    judged: Mutex<Judged>,
    counters: Mutex<UserCounters>,
    /// Exempt sources (allow, trusted networks, loopback): replaced by a reload.
    exempt: RwLock<Vec<IpNet>>,
    thresholds: RwLock<Thresholds>,
    harvest: HarvestTracker,
    auth: HarvestTracker,
    pregreet: HarvestTracker,
    errors: HarvestTracker,
    fallback_reason: Option<String>,
}

impl Flow {
    /// Attaches in the kernel where configured and possible; else userspace limits.
    pub fn start(config: &Config) -> Self {
        let flow = &config.flow;
        let exempt = exemptions(config);
        let (enforcement, kernel, fallback_reason) = match flow.mode {
            FlowMode::Off => (Enforcement::Off, None, None),
            FlowMode::Userspace => (Enforcement::Userspace, None, None),
            FlowMode::Auto if flow.interfaces.is_empty() => (Enforcement::Userspace, None, None),
            FlowMode::Auto => match KernelFlow::attach(&settings(flow, &exempt)) {
                Ok(kernel) => {
                    for a in kernel.attachments() {
                        log::info!("flow: XDP attached to {} ({} mode)", a.interface, a.mode);
                    }
                    (Enforcement::Xdp, Some(Mutex::new(kernel)), None)
                }
                Err(e) => {
                    log::warn!(
                        "flow: eBPF unavailable ({e}): enforcing the same limits in userspace \
                         at accept"
                    );
                    (Enforcement::Userspace, None, Some(e.to_string()))
                }
            },
        };
        let window = flow.harvest_window;
        Self {
            enforcement,
            kernel,
            limiter: Mutex::new(Limiter::new(flow.syn_rate, flow.syn_burst)),
            judged: Mutex::new(Judged::new()),
            counters: Mutex::new(UserCounters::default()),
            exempt: RwLock::new(exempt),
            thresholds: RwLock::new(Thresholds::of(flow)),
            harvest: HarvestTracker::new(window),
            auth: HarvestTracker::new(window),
            pregreet: HarvestTracker::new(window),
            errors: HarvestTracker::new(window),
            fallback_reason,
        }
    }

    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Applies a reloaded configuration's limits and exemptions (see the module contract).
    /// The abuse counts are kept; the rate buckets too, so a reload opens no window.
    pub fn reload(&self, config: &Config) -> Result<(), FlowControlError> {
        let exempt = exemptions(config);
        if let Some(kernel) = &self.kernel {
            lock(kernel).reconfigure(&settings(&config.flow, &exempt))?;
        }
        lock(&self.limiter).set_rate(config.flow.syn_rate, config.flow.syn_burst);
        *write(&self.thresholds) = Thresholds::of(&config.flow);
        *write(&self.exempt) = exempt;
        Ok(())
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        read(&self.exempt).iter().any(|net| net.contains(&ip))
    }

    /// The accept-time decision: the whole policy in userspace mode; in XDP mode the same
    /// policy for a connection the kernel did not judge (see the module contract).
    pub fn admit(&self, ip: IpAddr) -> Admission {
        if self.enforcement == Enforcement::Off {
            return Admission::Pass;
        }
        let ip = canonical(ip);
        let mut counters = lock(&self.counters);
        counters.seen += 1;
        if self.is_exempt(ip) {
            counters.passed_allow += 1;
            return Admission::Pass;
        }
        let now = bulwark_ebpf::monotonic_ns();
        let verdict = match &self.kernel {
            None => lock(&self.limiter).admit(ip, now),
            Some(kernel) => {
                let kernel = lock(kernel);
                if lock(&self.judged).by_kernel(ip, kernel.passed_from(ip)) {
                    Admission::Pass
                } else {
                    counters.unjudged += 1;
                    if kernel.is_blocked(ip, now) {
                        Admission::Blocked
                    } else {
                        lock(&self.limiter).admit(ip, now)
                    }
                }
            }
        };
        match verdict {
            Admission::Pass => counters.passed_rate += 1,
            Admission::RateLimited => counters.dropped_rate += 1,
            Admission::Blocked => counters.dropped_block += 1,
        }
        verdict
    }

    /// Counts an SMTP-layer verdict; blocks the address when it reaches its threshold.
    pub fn signal(&self, ip: IpAddr, signal: Signal) {
        if self.enforcement == Enforcement::Off || self.is_exempt(ip) {
            return;
        }
        let t = read(&self.thresholds);
        let (tracker, threshold, what) = match signal {
            Signal::UnknownRecipient => (&self.harvest, t.harvest, "directory harvest"),
            Signal::AuthFailure => (&self.auth, t.auth, "AUTH failures"),
            Signal::Pregreet => (&self.pregreet, t.pregreet, "pre-greet talking"),
            Signal::ProtocolErrors => (&self.errors, t.errors, "protocol-error flood"),
        };
        if threshold == 0 {
            return;
        }
        let count = tracker.record(ip);
        if count == threshold {
            let network = source_host(canonical(ip));
            match self.block(network, Some(t.block_for)) {
                Ok(()) => log::warn!(
                    "flow: blocked {network} for {}s: {what} ({count} within the window)",
                    t.block_for.as_secs()
                ),
                Err(e) => log::error!("flow: cannot block {network}: {e}"),
            }
        }
    }

    /// Blocks `network` for `ttl` (None = until unblocked).
    pub fn block(&self, network: IpNet, ttl: Option<Duration>) -> Result<(), FlowControlError> {
        let expires = ttl.map_or(0, |ttl| {
            bulwark_ebpf::monotonic_ns().saturating_add(ttl.as_nanos() as u64)
        });
        let network = network.trunc();
        if let Some(kernel) = &self.kernel {
            lock(kernel).block(network.addr(), network.prefix_len(), expires)?;
        }
        lock(&self.limiter).block(network, expires);
        Ok(())
    }

    /// Removes a block; false when there was none.
    pub fn unblock(&self, network: IpNet) -> Result<bool, FlowControlError> {
        let network = network.trunc();
        let mut removed = lock(&self.limiter).unblock(&network);
        if let Some(kernel) = &self.kernel {
            removed |= lock(kernel).unblock(network.addr(), network.prefix_len())?;
        }
        Ok(removed)
    }

    /// Live blocks with seconds left; the kernel's list when attached.
    pub fn blocked(&self) -> Vec<BlockedSource> {
        let now = bulwark_ebpf::monotonic_ns();
        let Some(kernel) = &self.kernel else {
            return lock(&self.limiter).blocked(now);
        };
        lock(kernel)
            .blocked()
            .into_iter()
            .filter(|b| b.expires_ns == 0 || b.expires_ns > now)
            .map(|b| BlockedSource {
                network: IpNet::new(b.addr, b.prefix)
                    .map_or_else(|_| b.addr.to_string(), |n| n.to_string()),
                expires_in: (b.expires_ns != 0)
                    .then(|| (b.expires_ns - now).div_ceil(1_000_000_000)),
                hits: b.hits,
            })
            .collect()
    }

    /// Deletes expired kernel blocklist entries (the kernel ignores them anyway).
    pub fn purge_expired(&self) {
        if let Some(kernel) = &self.kernel {
            let purged = lock(kernel).purge_expired();
            if purged > 0 {
                log::info!("flow: {purged} expired block(s) removed");
            }
        }
    }

    /// Mode, attachments and counters, for `bulwarkctl flow status`.
    pub fn status(&self) -> Value {
        let counters = match &self.kernel {
            Some(kernel) => match lock(kernel).counters() {
                Ok(c) => json!({
                    "syn_seen": c.syn_seen, "passed_allow": c.passed_allow,
                    "passed_rate": c.passed_rate, "dropped_block": c.dropped_block,
                    "dropped_rate": c.dropped_rate,
                }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            None => {
                let c = lock(&self.counters);
                json!({
                    "syn_seen": c.seen, "passed_allow": c.passed_allow,
                    "passed_rate": c.passed_rate, "dropped_block": c.dropped_block,
                    "dropped_rate": c.dropped_rate,
                })
            }
        };
        let attached = self.kernel.as_ref().map_or_else(Vec::new, |k| {
            lock(k)
                .attachments()
                .iter()
                .map(|a| json!({ "interface": a.interface, "mode": a.mode }))
                .collect()
        });
        let at_accept = {
            let c = lock(&self.counters);
            json!({
                "seen": c.seen, "unjudged": c.unjudged, "passed_allow": c.passed_allow,
                "passed_rate": c.passed_rate, "dropped_block": c.dropped_block,
                "dropped_rate": c.dropped_rate,
            })
        };
        json!({
            "enforcement": self.enforcement,
            "attached": attached,
            "fallback_reason": self.fallback_reason,
            "counters": counters,
            "at_accept": at_accept,
            "blocked": self.blocked().len(),
        })
    }

    /// Busiest sources (by dropped, then passed), for `bulwarkctl flow top`.
    pub fn top(&self, limit: usize) -> Vec<SourceCount> {
        match &self.kernel {
            Some(kernel) => lock(kernel)
                .sources(limit)
                .into_iter()
                .map(|s| SourceCount {
                    source: IpNet::new(s.addr, s.prefix)
                        .map_or_else(|_| s.addr.to_string(), |n| n.to_string()),
                    passed: s.passed,
                    dropped: s.dropped,
                })
                .collect(),
            None => lock(&self.limiter).top(limit),
        }
    }
}

/// Parses `ADDR` or `ADDR/LEN` as given to `bulwarkctl flow block`.
pub fn parse_target(text: &str) -> Result<IpNet, FlowControlError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| FlowControlError::BadTarget(text.to_string()))
}

impl Thresholds {
    fn of(flow: &FlowConfig) -> Self {
        Thresholds {
            harvest: flow.harvest_unknown_recipients,
            auth: flow.auth_failures,
            pregreet: flow.pregreet_sessions,
            errors: flow.error_sessions,
            block_for: flow.block_seconds,
        }
    }
}

/// Sources never limited nor blocked: `[flow] allow`, `relay.trusted_networks`, loopback.
fn exemptions(config: &Config) -> Vec<IpNet> {
    let mut exempt = config.flow.allow.clone();
    exempt.extend(config.relay.trusted_networks.iter().copied());
    exempt.extend(
        ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok()),
    );
    exempt
}

fn settings(flow: &FlowConfig, exempt: &[IpNet]) -> Settings {
    Settings {
        interfaces: flow.interfaces.clone(),
        ports: flow.ports.clone(),
        rate: flow.syn_rate,
        burst: flow.syn_burst,
        allow: exempt.iter().map(|n| (n.addr(), n.prefix_len())).collect(),
        pin_dir: flow.pin_dir.clone(),
    }
}

/// An automatic block covers the single host (a v6 client may own its /64, but blocking the
/// whole /64 on one misbehaving address is left to the operator).
fn source_host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// `::ffff:a.b.c.d` (a v4 client on a dual-stack socket) is treated as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
