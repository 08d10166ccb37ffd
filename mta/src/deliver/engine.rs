//! The queue manager: one task that owns every destination's queue, schedules retries and
//! decides how many connections each destination gets.
//!
//! # Scheduling rules
//! - A message is split into one job per destination (its pending recipients for it).
//! - A destination gets up to `limit` connections; `limit` starts small and grows by one per
//!   successful job up to the route's `max_connections` (slow start).
//! - A job deferred by its recipients' 4xx or a connection failure waits in the retry heap
//!   (`retry_initial` doubling to `retry_max`) and then rejoins its destination's queue.
//! - After `dead_destination_failures` consecutive destination-level failures the destination
//!   is down: its queued jobs wait, nothing connects, and when the down interval ends exactly
//!   one connection probes it. A successful probe brings it back with `limit` = 1 (the ramp),
//!   so a groupware server that just restarted is not hit by the whole backlog at once.
//! - `flush` moves every waiting job back to its queue and ends every down interval.
//! - A connection with nothing to send may wait (`connection_idle_time`) for the next job
//!   of its destination instead of closing; new jobs go to waiting connections before new
//!   ones are opened, and a waiting connection is closed when another destination needs its
//!   slot under the global limit.
//! - A message has at most one set of jobs in flight (`outstanding`), so a release or flush
//!   never duplicates deliveries.
//! - A job is bound to the destination it was routed to; `requeue` (the operator's, after a
//!   route change) withdraws a message's waiting jobs and routes it again. A job already on a
//!   connection finishes first, and its deferred recipients are routed again, not retried.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::connection;
use super::Context;
use crate::queue::{QueueId, QueueState};
use crate::route::{Destination, Router};

/// The slow-start concurrency of a destination that has not failed.
const INITIAL_LIMIT: usize = 5;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: QueueId,
    pub destination: String,
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
    pub attempts: u32,
}

/// What a connection task reports for one job.
#[derive(Debug)]
pub struct JobReport {
    /// Recipients to try again later (already logged and recorded).
    pub deferred: Vec<usize>,
    pub retry_at: Instant,
    pub error: Option<String>,
    /// The destination itself failed (no next hop reachable), not just some recipients.
    pub destination_failed: bool,
    /// The destination was not contacted (the message was held or deleted before the job
    /// ran, or the job was parked): its state must not change.
    pub skipped: bool,
}

impl JobReport {
    /// Nothing done and nothing left to retry: the message was held or deleted.
    pub fn skipped() -> Self {
        JobReport {
            deferred: Vec::new(),
            retry_at: Instant::now(),
            error: None,
            destination_failed: false,
            skipped: true,
        }
    }
}

/// What `retry_now` moves ahead of its retry time.
#[derive(Debug, Clone)]
pub enum RetryScope {
    /// One message (`bulwarkctl queue deliver ID`).
    Message(QueueId),
    /// Every job of one destination, as `queue destinations` names it, its down interval
    /// ended (`bulwarkctl queue flush --destination D`).
    Destination(String),
}

/// What `requeue` did with one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Requeued {
    /// Its pending recipients were routed again, to these destinations.
    Routed { destinations: Vec<String> },
    /// A job of it is being delivered now; the rest is routed again when that ends.
    AfterAttempt,
    /// Held: nothing is delivered until it is released (which routes it afresh).
    Held,
    /// No recipient is pending any more.
    NothingPending,
}

pub enum Event {
    Submit(QueueId),
    Requeue(Vec<QueueId>, oneshot::Sender<Vec<(QueueId, Requeued)>>),
    Flush,
    RetryNow(RetryScope),
    Destinations(oneshot::Sender<Vec<DestinationStatus>>),
    NextJob {
        destination: String,
        /// Park the request until a job comes (the connection times out on its own).
        wait: bool,
        reply: oneshot::Sender<Option<Job>>,
    },
    Finished {
        job: Job,
        report: JobReport,
    },
    ConnectionEnded {
        destination: String,
    },
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    pub destination: String,
    pub state: &'static str,
    pub queued: usize,
    pub active_connections: usize,
    pub connection_limit: usize,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub down_for_seconds: Option<u64>,
}

struct DestinationState {
    destination: Destination,
    ready: VecDeque<Job>,
    /// Connections (counted in `active`) waiting for their next job.
    idle: VecDeque<oneshot::Sender<Option<Job>>>,
    active: usize,
    limit: usize,
    failures: u32,
    down_until: Option<Instant>,
    down_rounds: u32,
    last_error: Option<String>,
}

impl DestinationState {
    fn new(destination: Destination) -> Self {
        let limit = INITIAL_LIMIT.min(destination.max_connections);
        Self {
            destination,
            ready: VecDeque::new(),
            idle: VecDeque::new(),
            active: 0,
            limit,
            failures: 0,
            down_until: None,
            down_rounds: 0,
            last_error: None,
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| until > now)
    }
}

pub struct Engine {
    context: Arc<Context>,
    events: mpsc::UnboundedReceiver<Event>,
    destinations: HashMap<String, DestinationState>,
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    waiting: HashMap<u64, Job>,
    sequence: u64,
    outstanding: HashMap<QueueId, usize>,
    connections: usize,
    stopping: Option<oneshot::Sender<()>>,
    /// Messages the operator requeued while a job of theirs was on a connection.
    requeue_after: HashSet<QueueId>,
    router: Option<(usize, Router)>,
    /// When mail parked at down destinations is next checked for expiry and delay notices.
    next_housekeeping: Instant,
}

impl Engine {
    pub fn new(context: Arc<Context>, events: mpsc::UnboundedReceiver<Event>) -> Self {
        Self {
            context,
            events,
            destinations: HashMap::new(),
            retries: BinaryHeap::new(),
            waiting: HashMap::new(),
            sequence: 0,
            outstanding: HashMap::new(),
            connections: 0,
            stopping: None,
            requeue_after: HashSet::new(),
            router: None,
            next_housekeeping: Instant::now(),
        }
    }

    pub async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            let event = tokio::select! {
                event = self.events.recv() => event,
                _ = sleep_until(wake) => {
                    self.wake_due();
                    continue;
                }
            };
            let Some(event) = event else { return };
            self.handle(event);
            if self.stopping.is_some() && self.connections == 0 {
                if let Some(done) = self.stopping.take() {
                    let _ = done.send(());
                }
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(id) => {
                self.submit(id);
            }
            Event::Requeue(ids, reply) => {
                let outcomes = ids.into_iter().map(|id| (id, self.requeue_message(id)));
                let _ = reply.send(outcomes.collect());
            }
            Event::Flush => self.flush(),
            Event::RetryNow(scope) => self.retry_now(scope),
            Event::Destinations(reply) => {
                let _ = reply.send(self.status());
            }
            Event::NextJob {
                destination,
                wait,
                reply,
            } => match self.next_job(&destination) {
                None if wait && self.stopping.is_none() => {
                    if let Some(state) = self.destinations.get_mut(&destination) {
                        state.idle.push_back(reply);
                    }
                }
                job => {
                    let _ = reply.send(job);
                }
            },
            Event::Finished { job, report } => self.finished(job, report),
            Event::ConnectionEnded { destination } => {
                self.connections = self.connections.saturating_sub(1);
                if let Some(state) = self.destinations.get_mut(&destination) {
                    state.active = state.active.saturating_sub(1);
                }
                self.pump(&destination);
            }
            Event::Shutdown(done) => {
                self.stopping = Some(done);
                for state in self.destinations.values_mut() {
                    for waiter in state.idle.drain(..) {
                        let _ = waiter.send(None);
                    }
                }
            }
        }
    }

    fn router(&mut self) -> &Router {
        let runtime = self.context.gateway.runtime();
        let generation = Arc::as_ptr(&runtime.config) as usize;
        if self.router.as_ref().map(|(g, _)| *g) != Some(generation) {
            self.router = Some((generation, Router::new(&runtime.config)));
        }
        &self.router.as_ref().expect("set above").1
    }

    /// Routes `id`'s pending recipients and queues a job per destination; the destinations
    /// (none when it is held, gone, done, or already has jobs).
    fn submit(&mut self, id: QueueId) -> Vec<String> {
        if self.outstanding.contains_key(&id) {
            return Vec::new();
        }
        // (recipient index, domain) of the pending recipients; None when held or gone.
        let pending = self.context.gateway.queue.inspect(id, |entry| {
            (entry.state != QueueState::Hold).then(|| {
                let pending: Vec<(usize, String)> = entry
                    .envelope
                    .recipients
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.outcome == Default::default())
                    .map(|(index, r)| {
                        let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
                        (index, domain.to_ascii_lowercase())
                    })
                    .collect();
                (pending, entry.attempts)
            })
        });
        let Some(Some((pending, attempts))) = pending else {
            return Vec::new();
        };
        let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
        let router = self.router();
        for (index, domain) in pending {
            let destination = router.destination(&domain);
            match groups
                .iter_mut()
                .find(|(d, _)| d.name() == destination.name())
            {
                Some((_, indices)) => indices.push(index),
                None => groups.push((destination, vec![index])),
            }
        }
        if groups.is_empty() {
            // Every recipient is done (a crash came between the last outcome and removal).
            tokio::spawn(connection::remove_finished(self.context.clone(), id));
            return Vec::new();
        }
        self.outstanding.insert(id, groups.len());
        let mut names = Vec::with_capacity(groups.len());
        for (destination, recipients) in groups {
            let name = destination.name();
            let state = self
                .destinations
                .entry(name.clone())
                .or_insert_with(|| DestinationState::new(destination.clone()));
            // A reload may have changed the route's settings.
            state.destination = destination;
            state.ready.push_back(Job {
                id,
                destination: name.clone(),
                recipients,
                attempts,
            });
            if let (Some(until), true) = (state.down_until, state.is_down(Instant::now())) {
                self.context.gateway.queue.schedule(id, unix_at(until));
            }
            self.pump(&name);
            names.push(name);
        }
        names
    }

    /// The operator's requeue of one message (see the module's scheduling rules).
    fn requeue_message(&mut self, id: QueueId) -> Requeued {
        let withdrawn = self.withdraw(id);
        let on_connections = match self.outstanding.get_mut(&id) {
            Some(count) => {
                *count = count.saturating_sub(withdrawn);
                *count
            }
            None => 0,
        };
        let outcome = if on_connections > 0 {
            self.requeue_after.insert(id);
            Requeued::AfterAttempt
        } else {
            self.outstanding.remove(&id);
            let destinations = self.submit(id);
            let held = self
                .context
                .gateway
                .queue
                .inspect(id, |entry| entry.state == QueueState::Hold);
            match (destinations.is_empty(), held) {
                (false, _) => Requeued::Routed { destinations },
                (true, Some(true)) => Requeued::Held,
                (true, _) => Requeued::NothingPending,
            }
        };
        log::info!(queue_id:% = id, outcome:? = outcome;
            "requeue: {id} routed again by the operator: {outcome:?}");
        outcome
    }

    /// Takes every job of `id` that is not on a connection out of the queues; how many.
    fn withdraw(&mut self, id: QueueId) -> usize {
        let before = self.waiting.len();
        // Their entries in the retry heap find nothing waiting any more and are skipped.
        self.waiting.retain(|_, job| job.id != id);
        let mut withdrawn = before - self.waiting.len();
        for state in self.destinations.values_mut() {
            let before = state.ready.len();
            state.ready.retain(|job| job.id != id);
            withdrawn += before - state.ready.len();
        }
        withdrawn
    }

    /// Starts connections for `name` while it has work and room.
    fn pump(&mut self, name: &str) {
        if self.stopping.is_some() {
            return;
        }
        let max_total = self
            .context
            .gateway
            .runtime()
            .config
            .delivery
            .max_connections;
        let now = Instant::now();
        let Some(state) = self.destinations.get_mut(name) else {
            return;
        };
        if state.is_down(now) {
            return;
        }
        hand_to_idle(state);
        // Down interval over: one probe connection at a time until it succeeds.
        let limit = if state.down_until.is_some() {
            1
        } else {
            state.limit
        };
        let wanted = limit.min(state.active + state.ready.len());
        if state.active < wanted && self.connections >= max_total {
            self.close_one_idle(name);
        }
        let Some(state) = self.destinations.get_mut(name) else {
            return;
        };
        while state.active < wanted && self.connections < max_total {
            state.active += 1;
            self.connections += 1;
            let context = self.context.clone();
            let destination = state.destination.clone();
            let name = name.to_string();
            tokio::spawn(connection::run(context, name, destination));
        }
    }

    /// Frees a global connection slot for `needy` by ending another destination's waiting
    /// connection (its ConnectionEnded arrives later and pumps again).
    fn close_one_idle(&mut self, needy: &str) {
        for (name, state) in self.destinations.iter_mut() {
            if name == needy {
                continue;
            }
            while let Some(waiter) = state.idle.pop_front() {
                if waiter.send(None).is_ok() {
                    return;
                }
            }
        }
    }

    fn next_job(&mut self, name: &str) -> Option<Job> {
        if self.stopping.is_some() {
            return None;
        }
        let now = Instant::now();
        let state = self.destinations.get_mut(name)?;
        if state.is_down(now) {
            return None;
        }
        state.ready.pop_front()
    }

    fn finished(&mut self, mut job: Job, report: JobReport) {
        let name = job.destination.clone();
        if let Some(state) = self.destinations.get_mut(&name) {
            if report.destination_failed {
                self.context.note_failure(state, report.error.clone());
                self.context.show_parked(state);
            } else if !report.skipped {
                state.failures = 0;
                state.down_until = None;
                state.down_rounds = 0;
                state.limit = (state.limit + 1).min(state.destination.max_connections);
            }
        }
        if self.requeue_after.contains(&job.id) {
            // Requeued while on this connection: what it deferred is routed again, not
            // retried at this destination.
            self.release(job.id);
            if !self.outstanding.contains_key(&job.id) {
                self.requeue_after.remove(&job.id);
                self.submit(job.id);
            }
        } else if report.deferred.is_empty() {
            self.release(job.id);
        } else {
            job.recipients = report.deferred;
            job.attempts += 1;
            self.sequence += 1;
            self.retries.push(Reverse((report.retry_at, self.sequence)));
            self.waiting.insert(self.sequence, job);
        }
        self.pump(&name);
    }

    fn release(&mut self, id: QueueId) {
        if let Some(count) = self.outstanding.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(&id);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let retry = self.retries.peek().map(|Reverse((at, _))| *at);
        let probe = self
            .destinations
            .values()
            .filter(|s| !s.ready.is_empty())
            .filter_map(|s| s.down_until)
            .min();
        let parked = (!self.waiting.is_empty()
            || self
                .destinations
                .values()
                .any(|s| s.down_until.is_some() && !s.ready.is_empty()))
        .then_some(self.next_housekeeping);
        [retry, probe, parked].into_iter().flatten().min()
    }

    /// Mail waiting at a down destination (or for a distant retry) gets no attempt soon, so
    /// its queue lifetime and delay notice are checked here: due jobs go to a task that
    /// bounces or warns without connecting.
    fn housekeeping(&mut self, now: Instant) {
        let delivery = self.context.gateway.runtime().config.delivery.clone();
        let mut shortest = delivery.retry_initial.min(delivery.max_queue_lifetime);
        if !delivery.delay_warning.is_zero() {
            shortest = shortest.min(delivery.delay_warning);
        }
        self.next_housekeeping =
            now + (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let unix_now = crate::queue::unix_now();
        let queue = &self.context.gateway.queue;
        let due = |job: &Job| {
            queue.get(job.id).is_some_and(|entry| {
                let age = Duration::from_secs(unix_now.saturating_sub(entry.arrival));
                age >= delivery.max_queue_lifetime
                    || (!delivery.delay_warning.is_zero()
                        && age >= delivery.delay_warning
                        && !entry.warned)
            })
        };
        let mut handed = Vec::new();
        for state in self.destinations.values_mut().filter(|s| s.is_down(now)) {
            let reason = state
                .last_error
                .clone()
                .unwrap_or_else(|| "destination is down".into());
            let (go, keep): (VecDeque<Job>, VecDeque<Job>) =
                state.ready.drain(..).partition(|job| due(job));
            state.ready = keep;
            handed.extend(go.into_iter().map(|job| (job, reason.clone())));
        }
        let waiting_due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, job)| due(job))
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in waiting_due {
            if let Some(job) = self.waiting.remove(&sequence) {
                let reason = self
                    .destinations
                    .get(&job.destination)
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "delivery deferred".into());
                handed.push((job, reason));
            }
        }
        for (job, reason) in handed {
            tokio::spawn(connection::parked(self.context.clone(), job, reason));
        }
    }

    fn wake_due(&mut self) {
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.housekeeping(now);
        }
        let mut touched = Vec::new();
        while let Some(Reverse((at, sequence))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            if let Some(job) = self.waiting.remove(&sequence) {
                touched.push(job.destination.clone());
                self.requeue(job);
            }
        }
        touched.extend(
            self.destinations
                .iter()
                .filter(|(_, s)| s.down_until.is_some_and(|u| u <= now) && !s.ready.is_empty())
                .map(|(name, _)| name.clone()),
        );
        for name in touched {
            self.pump(&name);
        }
    }

    fn requeue(&mut self, job: Job) {
        match self.destinations.get_mut(&job.destination) {
            Some(state) => state.ready.push_back(job),
            None => self.release(job.id),
        }
    }

    fn flush(&mut self) {
        let waiting: Vec<Job> = self.waiting.drain().map(|(_, job)| job).collect();
        self.retries.clear();
        for job in waiting {
            self.requeue(job);
        }
        for state in self.destinations.values_mut() {
            if state.down_until.is_some() {
                state.down_until = Some(Instant::now());
            }
        }
        let names: Vec<String> = self.destinations.keys().cloned().collect();
        for name in names {
            self.pump(&name);
        }
        // Messages that are queued but have no jobs (released, recovered) get them now.
        for entry in self.context.gateway.queue.list() {
            if let Ok(id) = entry.id.parse() {
                self.submit(id);
            }
        }
    }

    /// Like `flush`, for one message or one destination only.
    fn retry_now(&mut self, scope: RetryScope) {
        let chosen = |job: &Job| match &scope {
            RetryScope::Message(id) => job.id == *id,
            RetryScope::Destination(name) => job.destination == *name,
        };
        let due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, job)| chosen(job))
            .map(|(sequence, _)| *sequence)
            .collect();
        let mut touched = Vec::new();
        for sequence in due {
            // Its entry in the retry heap finds nothing waiting any more and is skipped.
            if let Some(job) = self.waiting.remove(&sequence) {
                touched.push(job.destination.clone());
                self.requeue(job);
            }
        }
        match &scope {
            RetryScope::Destination(name) => {
                if let Some(state) = self.destinations.get_mut(name) {
                    if state.down_until.is_some() {
                        state.down_until = Some(Instant::now());
                    }
                }
                touched.push(name.clone());
            }
            RetryScope::Message(id) => {
                self.submit(*id);
            }
        }
        for name in touched {
            self.pump(&name);
        }
    }

    fn status(&self) -> Vec<DestinationStatus> {
        let now = Instant::now();
        let mut waiting_per: HashMap<&str, usize> = HashMap::new();
        for job in self.waiting.values() {
            *waiting_per.entry(job.destination.as_str()).or_default() += 1;
        }
        let mut list: Vec<DestinationStatus> = self
            .destinations
            .iter()
            .map(|(name, s)| DestinationStatus {
                destination: name.clone(),
                state: if s.down_until.is_some() { "down" } else { "up" },
                queued: s.ready.len() + waiting_per.get(name.as_str()).copied().unwrap_or(0),
                active_connections: s.active,
                connection_limit: s.limit,
                consecutive_failures: s.failures,
                last_error: s.last_error.clone(),
                down_for_seconds: s
                    .down_until
                    .map(|until| until.saturating_duration_since(now).as_secs()),
            })
            .collect();
        list.sort_by(|a, b| a.destination.cmp(&b.destination));
        list
    }
}

impl Context {
    fn note_failure(&self, state: &mut DestinationState, error: Option<String>) {
        let delivery = &self.gateway.runtime().config.delivery;
        state.failures += 1;
        state.last_error = error;
        let dead = state.failures >= delivery.dead_destination_failures.max(1);
        if dead || state.down_until.is_some() {
            let wait = backoff(
                delivery.retry_initial,
                delivery.retry_max,
                state.down_rounds,
            );
            state.down_rounds += 1;
            state.down_until = Some(Instant::now() + wait);
            state.limit = 1;
            log::warn!(
                "destination {} is down after {} failures; next probe in {}s",
                state.destination.name(),
                state.failures,
                wait.as_secs()
            );
        } else {
            state.limit = (state.limit / 2).max(1);
        }
    }
}

impl Context {
    /// Jobs waiting at a down destination get no attempt (and so no next_at record) until
    /// the probe: the index shows the probe time, so no queued message ever reads as having
    /// nothing scheduled.
    fn show_parked(&self, state: &DestinationState) {
        let Some(until) = state.down_until else {
            return;
        };
        let next_at = unix_at(until);
        for job in &state.ready {
            self.gateway.queue.schedule(job.id, next_at);
        }
    }
}

/// The Unix time (seconds) of a monotonic instant, for what the operator reads.
fn unix_at(at: Instant) -> u64 {
    crate::queue::unix_now() + at.saturating_duration_since(Instant::now()).as_secs()
}

/// `initial * 2^rounds`, capped at `max`.
pub fn backoff(initial: Duration, max: Duration, rounds: u32) -> Duration {
    let factor = 1u32.checked_shl(rounds.min(30)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// Gives ready jobs to connections waiting for one. A waiter that already timed out gives
/// its job back (the send fails) and the job stays first in line.
fn hand_to_idle(state: &mut DestinationState) {
    while let Some(job) = state.ready.pop_front() {
        let Some(waiter) = state.idle.pop_front() else {
            state.ready.push_front(job);
            return;
        };
        if let Err(Some(job)) = waiter.send(Some(job)) {
            state.ready.push_front(job);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let five = Duration::from_secs(300);
        let cap = Duration::from_secs(4000);
        assert_eq!(backoff(five, cap, 0), five);
        assert_eq!(backoff(five, cap, 1), Duration::from_secs(600));
        assert_eq!(backoff(five, cap, 3), Duration::from_secs(2400));
        assert_eq!(backoff(five, cap, 4), cap);
        assert_eq!(backoff(five, cap, 100), cap);
    }
}
