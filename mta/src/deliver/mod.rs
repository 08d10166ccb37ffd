//! Delivery: the sending half of the gateway.
//!
//! `engine` (the queue manager) owns the per-destination queues, retry timing, dead
//! destinations and connection limits; `connection` runs one outbound connection (connect
//! with failover, TLS by policy, jobs one after another on the same connection); `attempt`
//! speaks one mail transaction; `outcome` applies the per-recipient results (state log,
//! notices, removal of finished messages); `dsn` builds RFC 3464 notices; `encode` makes the
//! DATA stream safe; `client` is the SMTP client.
//!
//! # Guarantees
//! - A recipient is marked delivered only after the next hop's positive reply to the data,
//!   and a message leaves the spool only when no recipient is pending.
//! - Temporary failures never bounce before `max_queue_lifetime`; a destination that is down
//!   holds its mail without per-message retries (see `engine`).

mod attempt;
mod connection;
pub mod dsn;
mod encode;
mod engine;
mod maildir;
mod outcome;
mod secure;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use crate::smtp_client::{parse_reply_line, Client, ClientError, Response};
pub use engine::{backoff, DestinationStatus, Requeued, RetryScope};
use engine::{Engine, Event, Job, JobReport};

use crate::gateway::Gateway;
use crate::queue::QueueId;
use crate::route::Resolver;

/// The daemon's way to talk to the delivery engine; cheap to clone.
#[derive(Clone)]
pub struct DeliveryHandle {
    events: mpsc::UnboundedSender<Event>,
}

/// The receiving end, handed to [`start`].
pub struct DeliveryInbox(mpsc::UnboundedReceiver<Event>);

impl DeliveryHandle {
    pub fn channel() -> (DeliveryHandle, DeliveryInbox) {
        let (events, inbox) = mpsc::unbounded_channel();
        (DeliveryHandle { events }, DeliveryInbox(inbox))
    }

    /// A message was queued (or released): deliver it.
    pub fn submit(&self, id: QueueId) {
        let _ = self.events.send(Event::Submit(id));
    }

    /// Retry everything now, down destinations included.
    pub fn flush(&self) {
        let _ = self.events.send(Event::Flush);
    }

    /// Retry one message, or one destination's mail, now.
    pub fn retry_now(&self, scope: RetryScope) {
        let _ = self.events.send(Event::RetryNow(scope));
    }

    /// Routes each message again with the running configuration and tries it now
    /// (`bulwarkctl queue requeue`); what became of each.
    pub async fn requeue(&self, ids: Vec<QueueId>) -> Vec<(QueueId, Requeued)> {
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::Requeue(ids, reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    pub async fn destinations(&self) -> Vec<DestinationStatus> {
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::Destinations(reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Stops handing out work and waits until running connections finished their jobs.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.events.send(Event::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

/// Shared by the connection tasks.
pub(crate) struct Context {
    pub gateway: Arc<Gateway>,
    pub resolver: Arc<dyn Resolver>,
    events: mpsc::UnboundedSender<Event>,
    verifying_tls: Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>,
    unverified_tls: Arc<rustls::ClientConfig>,
}

impl Context {
    /// The next job for `destination`; with `idle`, waits up to that long for one to be
    /// queued (connection caching) instead of answering None at once.
    async fn next_job(&self, destination: &str, idle: Option<Duration>) -> Option<Job> {
        let (reply, mut answer) = oneshot::channel();
        let request = Event::NextJob {
            destination: destination.to_string(),
            wait: idle.is_some(),
            reply,
        };
        self.events.send(request).ok()?;
        let Some(idle) = idle else {
            return answer.await.ok().flatten();
        };
        match tokio::time::timeout(idle, &mut answer).await {
            Ok(job) => job.ok().flatten(),
            Err(_) => {
                // Closing first settles the race with a job sent just now: it is either
                // received here or given back to the engine by the failed send.
                answer.close();
                answer.try_recv().ok().flatten()
            }
        }
    }

    fn finished(&self, job: Job, report: JobReport) {
        let _ = self.events.send(Event::Finished { job, report });
    }

    fn connection_ended(&self, destination: String) {
        let _ = self.events.send(Event::ConnectionEnded { destination });
    }

    fn verifying_tls(
        &self,
        ca_file: Option<&PathBuf>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut cache = self.verifying_tls.lock().unwrap_or_else(|p| p.into_inner());
        let key = ca_file.cloned();
        if let Some(config) = cache.get(&key) {
            return Ok(config.clone());
        }
        let config = crate::smtp_client::verifying_tls(ca_file.map(|p| p.as_path()))?;
        cache.insert(key, config.clone());
        Ok(config)
    }
}

/// Starts the engine; every message already in the queue (not held) is submitted.
pub fn start(gateway: Arc<Gateway>, inbox: DeliveryInbox, resolver: Arc<dyn Resolver>) {
    let context = Arc::new(Context {
        events: gateway.delivery.events.clone(),
        gateway: gateway.clone(),
        resolver,
        verifying_tls: Mutex::new(HashMap::new()),
        unverified_tls: crate::smtp_client::unverified_tls(),
    });
    tokio::spawn(Engine::new(context, inbox.0).run());
    for entry in gateway.queue.list() {
        if let Ok(id) = entry.id.parse() {
            gateway.delivery.submit(id);
        }
    }
}
