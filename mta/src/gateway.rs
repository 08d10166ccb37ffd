//! The running daemon's shared state: the spool and queue, the reloadable runtime (config,
//! filter chain, TLS, users) and the counters the control socket reports.
//!
//! # Reload contract
//! `reload` builds a complete new [`Runtime`] from the new config and swaps it in only if
//! every part loaded; otherwise the old one keeps running and the error is returned. Sessions
//! keep the runtime they started with, so a reload never disturbs a session in progress.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::deliver::DeliveryHandle;
use crate::filters::ratelimit::LedgerSlot;
use crate::flow::Flow;
use crate::pipeline::stages::{self, StagesError};
use crate::pipeline::Pipeline;
use crate::policy::{CalloutCache, Chain, HarvestTracker, RecipientsError};
use crate::queue::{
    unix_now, Draft, Envelope, QueueEntry, QueueId, QueueIndex, Recipient, RecipientOutcome, Spool,
    SpoolError,
};
use crate::smtp::auth::{Users, UsersError};
use crate::smtp::tls::{load_server_config, TlsError};

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
    greet_passed: Mutex<HashMap<IpAddr, Instant>>,
    pub started: Instant,
    pub delivery: DeliveryHandle,
    /// Connection-rate limits and abuse blocks (kernel or userspace).
    pub flow: Flow,
    /// Outbound rate-limit counters, kept across reloads.
    ledgers: Arc<LedgerSlot>,
}

impl Gateway {
    pub fn new(
        config: Config,
        spool: Spool,
        queue: QueueIndex,
        delivery: DeliveryHandle,
        flow: Flow,
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
            greet_passed: Mutex::new(HashMap::new()),
            started: Instant::now(),
            delivery,
            flow,
            ledgers,
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a runtime built from `config`, or keeps the old one and says why not.
    pub fn reload(&self, config: Config) -> Result<(), RuntimeError> {
        let runtime = build_runtime(
            config,
            self.harvest.clone(),
            self.callouts.clone(),
            &self.ledgers,
        )?;
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
        Ok(())
    }

    /// Commits `draft` with `envelope` and hands it to delivery: after `Ok` the message is
    /// durable, in the queue index and scheduled.
    pub async fn enqueue(&self, draft: Draft, envelope: Envelope) -> Result<QueueId, SpoolError> {
        let size = draft.content_len();
        let id = self.spool.commit(draft, &envelope).await?;
        self.queue.insert(id, QueueEntry::new(id, envelope, size));
        self.delivery.submit(id);
        Ok(id)
    }

    /// Queues a message this gateway wrote (a delivery status notice) from the null sender.
    pub async fn queue_notice(
        &self,
        to: &str,
        hostname: &str,
        message: &[u8],
    ) -> Result<QueueId, SpoolError> {
        let mut draft = self.spool.begin();
        draft.write(message).await?;
        let parsed = mail_parser::MessageParser::default().parse_headers(message);
        let envelope = Envelope {
            sender: String::new(),
            recipients: vec![Recipient {
                address: to.to_string(),
                notify: None,
                orcpt: None,
                outcome: RecipientOutcome::Pending,
            }],
            received_at: unix_now(),
            client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: hostname.to_string(),
            auth_user: None,
            tls: None,
            body: Default::default(),
            smtputf8: false,
            eight_bit: !message.is_ascii(),
            dsn_ret: None,
            dsn_envid: None,
            message_id: parsed
                .as_ref()
                .and_then(|m| m.message_id())
                .map(str::to_string),
            subject: parsed
                .as_ref()
                .and_then(|m| m.subject())
                .map(str::to_string),
        };
        self.enqueue(draft, envelope).await
    }

    pub fn greet_passed_recently(&self, ip: IpAddr) -> bool {
        let passed = self.greet_passed.lock().unwrap_or_else(|p| p.into_inner());
        passed
            .get(&ip)
            .is_some_and(|at| at.elapsed() < GREET_PASS_TTL)
    }

    pub fn remember_greet_pass(&self, ip: IpAddr) {
        let mut passed = self.greet_passed.lock().unwrap_or_else(|p| p.into_inner());
        if passed.len() >= GREET_PASS_MAX {
            passed.retain(|_, at| at.elapsed() < GREET_PASS_TTL);
            if passed.len() >= GREET_PASS_MAX {
                passed.clear();
            }
        }
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
    let pipeline = stages::from_config(&config, ledgers)?;
    let sealer = Arc::new(crate::filters::dkim::Sealer::load(&config.dkim)?);
    Ok(Runtime {
        sealer,
        config: Arc::new(config),
        chain,
        pipeline,
        tls,
        users,
    })
}

/// Concurrent sessions per client address, across all listeners.
#[derive(Default)]
pub struct ClientLimiter {
    active: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Releases the client's slot when the session ends, however it ends.
pub struct ClientSlot {
    active: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientLimiter {
    pub fn try_acquire(&self, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let count = active.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            active: self.active.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = active.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                active.remove(&self.ip);
            }
        }
    }
}
