//! Listeners: bind every configured address (before privileges are dropped), accept, enforce
//! per-listener and per-client session limits (421 4.7.0), and run one task per session.
//!
//! Shutdown: `serve` returns when `shutdown` fires; it stops accepting at once and gives
//! running sessions `drain` time to finish before returning, so nothing already accepted is
//! lost (acknowledged messages are on disk before their 250 in any case).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::session::Session;
use super::stream::{SmtpStream, Transport};
use crate::config::{ListenerConfig, ListenerRole};
use crate::flow::Admission;
use crate::gateway::{Counters, Gateway};

pub struct BoundListener {
    pub listener: TcpListener,
    pub config: ListenerConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Binds all listeners; done once at start, while still privileged.
pub async fn bind_all(listeners: &[ListenerConfig]) -> Result<Vec<BoundListener>, BindError> {
    let mut bound = Vec::new();
    for config in listeners {
        let socket = bind_one(config.address).map_err(|source| BindError {
            address: config.address,
            source,
        })?;
        bound.push(BoundListener {
            listener: socket,
            config: config.clone(),
        });
    }
    Ok(bound)
}

fn bind_one(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Accepts on every listener until `shutdown` becomes true, then waits up to `drain` for the
/// running sessions to finish.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Vec<BoundListener>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut acceptors = JoinSet::new();
    for bound in listeners {
        acceptors.spawn(accept_loop(gateway.clone(), bound, shutdown.clone()));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    while acceptors.join_next().await.is_some() {}
    let step = Duration::from_millis(50);
    let rounds = drain.as_millis() / step.as_millis();
    for _ in 0..rounds {
        if gateway.counters.sessions_active.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(step).await;
    }
}

async fn accept_loop(
    gateway: Arc<Gateway>,
    bound: BoundListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(bound.config.max_sessions));
    let local = bound.listener.local_addr().unwrap_or(bound.config.address);
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((tcp, client)) => {
                let role = bound.config.role;
                tokio::spawn(start_session(
                    gateway.clone(),
                    tcp,
                    client,
                    local,
                    role,
                    slots.clone(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn start_session(
    gateway: Arc<Gateway>,
    mut tcp: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    role: ListenerRole,
    slots: Arc<Semaphore>,
) {
    let _ = tcp.set_nodelay(true);
    let hostname = gateway.runtime().config.server.hostname.clone();
    // Flow control: all of it in userspace mode; with XDP what the kernel did not judge.
    let why = match gateway.flow.admit(client.ip()) {
        Admission::Pass => None,
        Admission::RateLimited => Some("Connection rate limit exceeded, try again later"),
        Admission::Blocked => Some("Your address is temporarily blocked"),
    };
    if let Some(why) = why {
        log::info!("flow: refused {client}: {why}");
        refuse(&gateway, &mut tcp, &hostname, why).await;
        return;
    }
    let Ok(_listener_slot) = slots.try_acquire_owned() else {
        refuse(
            &gateway,
            &mut tcp,
            &hostname,
            "Too many sessions, try again later",
        )
        .await;
        return;
    };
    let per_client = gateway.runtime().config.limits.max_sessions_per_client;
    let Some(_client_slot) = gateway.clients.try_acquire(client.ip(), per_client) else {
        refuse(
            &gateway,
            &mut tcp,
            &hostname,
            "Too many connections from your address",
        )
        .await;
        return;
    };
    let counters = &gateway.counters;
    Counters::bump(&counters.sessions_total);
    Counters::bump(&counters.sessions_active);
    log::debug!("connect from {client} on {local}");
    let session = Session::new(
        gateway.clone(),
        SmtpStream::new(Transport::Plain(tcp)),
        client,
        local,
        role,
    );
    session.run().await;
    gateway
        .counters
        .sessions_active
        .fetch_sub(1, Ordering::Relaxed);
}

async fn refuse(gateway: &Gateway, tcp: &mut TcpStream, hostname: &str, why: &str) {
    Counters::bump(&gateway.counters.sessions_refused);
    let line = format!("421 4.7.0 {hostname} {why}\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(line.as_bytes())).await;
    let _ = tcp.shutdown().await;
}
