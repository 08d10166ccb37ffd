//! The running daemon's shared state: the spool and queue, the quarantine, the reloadable
//! runtime (config, filter chain, TLS, users) and the counters the control socket reports.
//!
//! # Reload contract
//! `reload` builds a complete new [`Runtime`] from the new config and swaps it in only if
//! every part loaded; otherwise the old one keeps running and the error is returned. Sessions
//! keep the runtime they started with, so a reload never disturbs a session in progress.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use crate::bounded::BoundedMap;
use crate::config::changes::{self, Change};
use crate::config::Config;
use crate::deliver::DeliveryHandle;
use crate::filters::antivirus::{self, Antivirus, AntivirusError};
use crate::filters::ratelimit::LedgerSlot;
use crate::flow::source_network;
use crate::flow::Flow;
use crate::pipeline::stages::{self, StagesError};
use crate::pipeline::Pipeline;
use crate::policy::{CalloutCache, Chain, HarvestTracker, RecipientsError};
use crate::quarantine::Quarantine;
use crate::queue::{Draft, Envelope, QueueEntry, QueueId, QueueIndex, Spool, SpoolError};
use crate::smtp::auth::{Users, UsersError};
use crate::smtp::tls::{load_server_config, TlsError};
use crate::track::Tracker;
use crate::track::{self, Event, EventKind};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Recipients(#[from] RecipientsError),
    #[error(transparent)]
    Pipeline(#[from] StagesError),
    #[error("antivirus: {0}")]
    Antivirus(#[from] AntivirusError),
    #[error("flow control: {0}")]
    Flow(#[from] crate::flow::FlowControlError),
    #[error(transparent)]
    Dkim(#[from] crate::filters::dkim::DkimError),
}

/// Everything a reload replaces.
pub struct Runtime {
    pub config: Arc<Config>,
    pub chain: Chain,
    /// The content filters at end of data.
    pub pipeline: Pipeline,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub users: Option<Arc<Users>>,
    /// `[antivirus]`, with its clamd monitor and update poller running while it lives.
    pub antivirus: Option<Arc<Antivirus>>,
    /// DKIM keys for outbound mail.
    pub sealer: Arc<crate::filters::dkim::Sealer>,
}

#[derive(Default, Serialize)]
pub struct Counters {
    pub sessions_total: AtomicU64,
    pub sessions_active: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub messages_accepted: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub recipients_rejected: AtomicU64,
    pub bytes_accepted: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a client that waited politely for the greeting is spared the greet delay.
const GREET_PASS_TTL: Duration = Duration::from_secs(24 * 3600);
const GREET_PASS_MAX: usize = 100_000;

pub struct Gateway {
    runtime: RwLock<Arc<Runtime>>,
    pub spool: Spool,
    pub queue: QueueIndex,
    pub harvest: Arc<HarvestTracker>,
    pub callouts: Arc<CalloutCache>,
    pub counters: Counters,
    pub clients: ClientLimiter,
    greet_passed: Mutex<BoundedMap<IpAddr, Instant>>,
    pub started: Instant,
    pub delivery: DeliveryHandle,
    /// Connection-rate limits and abuse blocks (kernel or userspace).
    pub flow: Flow,
    /// Outbound rate-limit counters, kept across reloads.
    ledgers: Arc<LedgerSlot>,
    /// Message tracking: every message's events (`bulwarkctl track`).
    pub tracker: Arc<Tracker>,
    /// Messages the pipeline stopped (`[quarantine]`), opened at start.
    pub quarantine: Arc<Quarantine>,
    listening: OnceLock<Vec<BoundSocket>>,
    /// DANE / MTA-STS / TLS-RPT, set once at start (before delivery starts).
    pub transport_security: OnceLock<Arc<crate::tls_policy::TransportSecurity>>,
}

/// A socket the daemon listens on, as bound (not as the file says).
#[derive(Debug, Clone, Serialize)]
pub struct BoundSocket {
    pub address: String,
    pub role: String,
}

impl Gateway {
    pub fn new(
        config: Config,
        spool: Spool,
        queue: QueueIndex,
        delivery: DeliveryHandle,
        flow: Flow,
        tracker: Arc<Tracker>,
        quarantine: Arc<Quarantine>,
    ) -> Result<Self, RuntimeError> {
        let harvest = Arc::new(HarvestTracker::new(Duration::from_secs(60)));
        let callouts = Arc::new(CalloutCache::default());
        let ledgers = Arc::new(LedgerSlot::default());
        let runtime = build_runtime(config, harvest.clone(), callouts.clone(), &ledgers)?;
        Ok(Self {
            runtime: RwLock::new(Arc::new(runtime)),
            spool,
            queue,
            harvest,
            callouts,
            counters: Counters::default(),
            clients: ClientLimiter::default(),
            greet_passed: Mutex::new(BoundedMap::new(GREET_PASS_MAX)),
            started: Instant::now(),
            delivery,
            flow,
            ledgers,
            tracker,
            quarantine,
            listening: OnceLock::new(),
            transport_security: OnceLock::new(),
        })
    }

    /// The outbound limits' ledger, when `[outbound_limit]` is (or was) configured.
    pub fn outbound_ledger(&self) -> Option<Arc<crate::filters::ratelimit::Ledger>> {
        self.ledgers.current()
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a runtime built from `config`, or keeps the old one and says why not.
    /// Returns every changed key; those a reload cannot apply keep their running values
    /// (see `config::changes`), so the running configuration stays the truth.
    pub fn reload(&self, mut config: Config) -> Result<Vec<Change>, RuntimeError> {
        let running = self.runtime().config.clone();
        let changes = changes::diff(&running, &config);
        changes::keep_restart_only(&running, &mut config);
        let runtime = build_runtime(
            config,
            self.harvest.clone(),
            self.callouts.clone(),
            &self.ledgers,
        )?;
        self.flow.reload(&runtime.config)?;
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
        Ok(changes)
    }

    /// Records the sockets actually bound at start (ports resolved), for `status`.
    pub fn set_listening(&self, sockets: Vec<BoundSocket>) {
        let _ = self.listening.set(sockets);
    }

    pub fn listening(&self) -> &[BoundSocket] {
        self.listening.get().map_or(&[], Vec::as_slice)
    }

    /// Commits `draft` with `envelope` and hands it to delivery: after `Ok` the message is
    /// durable, in the queue index and scheduled. Its tracking events (by `origin`) are
    /// recorded before the submit, so they precede every delivery event.
    pub async fn enqueue(
        &self,
        draft: Draft,
        envelope: Envelope,
        origin: Origin<'_>,
    ) -> Result<QueueId, SpoolError> {
        let size = draft.content_len();
        let id = self.spool.commit(draft, &envelope).await?;
        origin.record(&self.tracker, id, &envelope, size);
        self.queue.insert(id, QueueEntry::new(id, envelope, size));
        self.delivery.submit(id);
        Ok(id)
    }

    /// Queues a message this gateway wrote (a delivery status notice) from the null sender;
    /// its timeline starts with a `generated` event naming the message `about`.
    pub async fn queue_notice(
        &self,
        to: &str,
        hostname: &str,
        message: &[u8],
        about: QueueId,
        reason: &str,
    ) -> Result<QueueId, SpoolError> {
        let mut draft = self.spool.begin();
        draft.write(message).await?;
        let envelope = notice_envelope(to, hostname, message);
        self.enqueue(draft, envelope, Origin::Generated { about, reason })
            .await
    }

    /// Queues a report this gateway wrote about no message in particular (TLS-RPT), from
    /// the null sender.
    pub async fn queue_report(
        &self,
        to: &str,
        hostname: &str,
        message: &[u8],
    ) -> Result<QueueId, SpoolError> {
        let mut draft = self.spool.begin();
        draft.write(message).await?;
        let envelope = notice_envelope(to, hostname, message);
        self.enqueue(draft, envelope, Origin::Report).await
    }

    pub fn greet_passed_recently(&self, ip: IpAddr) -> bool {
        let passed = self.greet_passed.lock().unwrap_or_else(|p| p.into_inner());
        passed
            .get(&ip)
            .is_some_and(|at| at.elapsed() < GREET_PASS_TTL)
    }

    pub fn remember_greet_pass(&self, ip: IpAddr) {
        let mut passed = self.greet_passed.lock().unwrap_or_else(|p| p.into_inner());
        passed.insert(ip, Instant::now());
    }
}

fn build_runtime(
    config: Config,
    harvest: Arc<HarvestTracker>,
    callouts: Arc<CalloutCache>,
    ledgers: &LedgerSlot,
) -> Result<Runtime, RuntimeError> {
    let tls = config.tls.as_ref().map(load_server_config).transpose()?;
    let users = config
        .auth
        .as_ref()
        .map(|auth| Users::load(&auth.users_file).map(Arc::new))
        .transpose()?;
    let chain = Chain::from_config(&config, harvest, callouts)?;
    let antivirus = config.antivirus.as_ref().map(start_antivirus).transpose()?;
    let pipeline = stages::from_config(&config, antivirus.clone(), ledgers)?;
    let sealer = Arc::new(crate::filters::dkim::Sealer::load(&config.dkim)?);
    Ok(Runtime {
        sealer,
        config: Arc::new(config),
        chain,
        pipeline,
        tls,
        users,
        antivirus,
    })
}

/// Builds the scanner and starts its background tasks (they end when it is dropped).
fn start_antivirus(
    config: &crate::config::AntivirusConfig,
) -> Result<Arc<Antivirus>, AntivirusError> {
    let av = Arc::new(Antivirus::from_config(config)?);
    if tokio::runtime::Handle::try_current().is_ok() {
        antivirus::spawn_monitor(Arc::downgrade(&av));
        antivirus::update::spawn_poller(Arc::downgrade(&av));
    }
    Ok(av)
}

/// The envelope of a message this gateway wrote: null sender, one recipient.
fn notice_envelope(to: &str, hostname: &str, message: &[u8]) -> Envelope {
    Envelope::written_here("", &[to.to_string()], hostname, None, message)
}

/// Where a queued message came from, which decides the first events of its timeline.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A client's message with no filter in the way: `received`, then `queued`.
    Client,
    /// A client's message after the pipeline (which recorded `received` and the verdicts).
    Filtered,
    /// Part of the recipients of message `from`.
    Split { from: QueueId },
    /// A copy of message `from` (a `copy` rule).
    Copy { from: QueueId, by: &'a str },
    /// A message this gateway wrote about message `about` (a notice).
    Generated { about: QueueId, reason: &'a str },
    /// Let out of the quarantine or otherwise put back by an operator (already tracked).
    Requeued,
    /// A report this gateway wrote about no one message (TLS-RPT): only `queued`.
    Report,
}

impl Origin<'_> {
    fn record(self, tracker: &Tracker, id: QueueId, envelope: &Envelope, size: u64) {
        let mid = envelope.message_id.as_deref();
        let recipients = || envelope.recipients.iter().map(|r| r.address.as_str());
        let first = match self {
            Origin::Client => return track::received_and_queued(tracker, id, envelope, size),
            Origin::Filtered | Origin::Requeued | Origin::Report => None,
            Origin::Split { from } => Some(EventKind::Split {
                from,
                recipients: recipients().map(str::to_string).collect(),
            }),
            Origin::Copy { from, by } => Some(EventKind::Copied {
                from,
                reason: Some(by.to_string()),
            }),
            Origin::Generated { about, reason } => Some(EventKind::Generated {
                from: about,
                reason: reason.to_string(),
            }),
        };
        if let Some(kind) = first {
            tracker.record(Event::new(id, mid, kind).with_envelope(&envelope.sender, recipients()));
        }
        let queued = EventKind::Queued {
            recipients: envelope.recipients.len(),
        };
        tracker.record(Event::new(id, mid, queued));
    }
}

/// Concurrent sessions per client, across all listeners. A client is an IPv4 address or
/// an IPv6 /64 (one host usually owns a whole /64, so counting per IPv6 address would let
/// it open 2^64 times the limit), the same key flow control uses.
#[derive(Default)]
pub struct ClientLimiter {
    active: Arc<Mutex<HashMap<IpNet, usize>>>,
}

/// Releases the client's slot when the session ends, however it ends.
pub struct ClientSlot {
    active: Arc<Mutex<HashMap<IpNet, usize>>>,
    source: IpNet,
}

impl ClientLimiter {
    pub fn try_acquire(&self, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let source = source_network(ip);
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let count = active.entry(source).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            active: self.active.clone(),
            source,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = active.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                active.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let limiter = ClientLimiter::default();
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let first = limiter
            .try_acquire(ip("2001:db8:1:2::10"), 2)
            .expect("first");
        let _second = limiter
            .try_acquire(ip("2001:db8:1:2:ffff::1"), 2)
            .expect("second");
        assert!(
            limiter.try_acquire(ip("2001:db8:1:2::99"), 2).is_none(),
            "a third address in the same /64 got a slot"
        );
        assert!(limiter.try_acquire(ip("2001:db8:1:3::10"), 2).is_some());
        assert!(limiter.try_acquire(ip("192.0.2.1"), 2).is_some());
        assert!(limiter.try_acquire(ip("192.0.2.2"), 2).is_some());
        drop(first);
        assert!(limiter.try_acquire(ip("2001:db8:1:2::99"), 2).is_some());
    }
}
