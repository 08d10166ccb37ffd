//! Starting and running `bulwarkd`: choose the configuration, recover the spool, bind (while
//! privileged), then serve SMTP and the control socket until SIGTERM; SIGHUP reloads.
//!
//! Start order matters: the spool is recovered before any listener accepts, so a message
//! acknowledged before a crash is in the queue before the first new session begins; the
//! quarantine is opened (and its interrupted releases reconciled with the recovered queue)
//! before delivery starts. A quarantine that cannot be opened stops the start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin;
use crate::config::changes::{Applies, Change};
use crate::config::{self, Config, ConfigError};
use crate::deliver::{self, DeliveryHandle};
use crate::flow::Flow;

use crate::gateway::{BoundSocket, Gateway};
use crate::quarantine::Quarantine;
use crate::queue::{QueueIndex, Spool};
use crate::route::HickoryResolver;
use crate::service::{notify, privileges};
use crate::smtp::server;
use crate::tls_policy::{self, TransportSecurity};
use crate::track::{TrackError, Tracker};

/// How long sessions may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(30);
/// How long the last tracking events may take to reach the store at shutdown.
const TRACKING_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Spool(#[from] crate::queue::SpoolError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error(transparent)]
    Control(#[from] admin::server::ControlError),
    #[error(transparent)]
    ControlHttps(#[from] admin::https::ControlListenError),
    #[error(transparent)]
    Metrics(#[from] admin::metrics::MetricsBindError),
    #[error(transparent)]
    Runtime(#[from] crate::gateway::RuntimeError),
    #[error(transparent)]
    Resolver(crate::route::ResolverSetupError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("message tracking cannot start: {0}")]
    Tracking(#[from] TrackError),
    #[error("cannot open the quarantine: {0}")]
    Quarantine(#[from] crate::quarantine::QuarantineError),
    #[error("transport security: {0}")]
    TransportSecurity(#[from] crate::tls_policy::TlsPolicyError),
}

/// Where the configuration came from: reloads read the same place.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
}

impl ConfigSource {
    /// `--config PATH`, else the default path if it exists, else the built-in default.
    pub fn choose(explicit: Option<PathBuf>) -> ConfigSource {
        match explicit {
            Some(path) => ConfigSource::File(path),
            None if Path::new(config::DEFAULT_CONFIG_PATH).exists() => {
                ConfigSource::File(PathBuf::from(config::DEFAULT_CONFIG_PATH))
            }
            None => ConfigSource::BuiltIn,
        }
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => config::load_file(path),
            ConfigSource::BuiltIn => Ok(config::builtin_default()),
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(source: ConfigSource) -> Result<(), StartError> {
    // Taken over first: a SIGHUP or SIGTERM that arrives while the daemon is still starting
    // (sockets already bound, so a supervisor may think it up) must not kill it with the
    // default action; it waits and is acted on once the daemon is ready.
    let signals = Signals::take_over()?;
    let config = source.load()?;
    announce(&source, &config);
    let (spool, recovered) = Spool::open(&config.server.spool_dir, config.server.spool_sync)?;
    log::info!(
        "spool {}: recovered {} queued message(s)",
        config.server.spool_dir.display(),
        recovered.len()
    );
    if spool.recovery_problems() > 0 {
        log::error!(
            "spool: {} damaged state log(s) at recovery; their messages are held (see above)",
            spool.recovery_problems()
        );
    }
    let queue = QueueIndex::from_recovered(recovered);
    let quarantine = Arc::new(Quarantine::open(&config.quarantine)?);
    // Before delivery starts, so that a completed release's copy and the record agree.
    quarantine.reconcile(&queue).await?;
    let listeners = server::bind_all(&config.listeners).await?;
    let mut listening = Vec::new();
    for bound in &listeners {
        let address = bound
            .listener
            .local_addr()
            .map_or(bound.config.address, |a| a);
        log::info!("listening on {address} ({:?})", bound.config.role);
        listening.push(BoundSocket {
            address: address.to_string(),
            role: format!("{:?}", bound.config.role).to_lowercase(),
        });
    }
    let control = admin::server::bind(&config.server.control_socket)?;
    let control_https = match &config.control {
        Some(settings) => {
            let publishes = config.tls_policy.publish.is_some();
            Some(admin::https::bind(settings, publishes).await?)
        }
        None => None,
    };
    let metrics = match &config.metrics {
        Some(settings) => Some(admin::metrics::bind(settings.listen).await?),
        None => None,
    };
    let resolver = HickoryResolver::new(&config.dns).map_err(StartError::Resolver)?;
    // eBPF is loaded and attached while still privileged; the map file descriptors keep
    // working after the drop below.
    let flow = Flow::start(&config);
    // Opened while still privileged, like the spool: the store's files stay open after the
    // drop even where the service user cannot traverse to them again (e.g. a 0700 parent).
    let tracker = Arc::new(Tracker::open(&config.tracking)?);
    log::info!("tracking: events in {}", config.tracking.dir.display());
    let transport_security = Arc::new(TransportSecurity::new(&config)?);
    // Everything that needs root (ports below 1024, eBPF) is done: become the service user.
    if let Some(identity) = privileges::wanted(&config.server)? {
        privileges::hand_over_dir(&identity, &config.tracking.dir)?;
        privileges::hand_over_dir(&identity, &config.quarantine.dir)?;
        privileges::hand_over_dir(&identity, &config.tls_policy.state_dir)?;
        privileges::drop_to(
            &identity,
            &config.server.spool_dir,
            &config.server.control_socket,
        )?;
    }
    let (delivery, inbox) = DeliveryHandle::channel();
    let gateway = Arc::new(Gateway::new(
        config, spool, queue, delivery, flow, tracker, quarantine,
    )?);
    gateway.set_listening(listening);
    // Set before delivery starts, so no connection runs without its policy.
    let _ = gateway.transport_security.set(transport_security.clone());
    tls_policy::report::spawn(transport_security, gateway.clone());
    deliver::start(gateway.clone(), inbox, Arc::new(resolver));
    spawn_flow_housekeeping(gateway.clone());
    spawn_quarantine_purge(gateway.quarantine.clone());

    let reload_gateway = gateway.clone();
    let reload_source = source.clone();
    let reload: admin::server::ReloadFn =
        Arc::new(move || reload_now(&reload_gateway, &reload_source));
    let diff_gateway = gateway.clone();
    let diff_source = source.clone();
    let diff: admin::server::DiffFn = Arc::new(move || {
        let file = diff_source.load().map_err(|e| e.to_string())?;
        Ok(config::changes::diff(&diff_gateway.runtime().config, &file))
    });
    let executor = Arc::new(admin::server::Control {
        gateway: gateway.clone(),
        hooks: admin::server::ConfigHooks {
            reload: reload.clone(),
            diff,
        },
        config_file: match &source {
            ConfigSource::File(path) => Some(path.clone()),
            ConfigSource::BuiltIn => None,
        },
    });
    tokio::spawn(admin::server::serve(control, executor.clone()));
    if let Some((listener, acceptor)) = control_https {
        if let Ok(address) = listener.local_addr() {
            log::info!("control over HTTPS (mutual TLS) on {address}");
        }
        tokio::spawn(admin::https::serve(listener, acceptor, executor));
    }
    if let Some(listener) = metrics {
        if let Ok(address) = listener.local_addr() {
            log::info!("Prometheus metrics on http://{address}/metrics");
        }
        tokio::spawn(admin::metrics::serve(listener, gateway.clone()));
    }

    let (stop, stopped) = watch::channel(false);
    spawn_signal_handlers(signals, stop, reload);
    log::info!("bulwarkd ready");
    notify::ready(&gateway);
    notify::spawn_heartbeat(gateway.clone());
    server::serve(gateway.clone(), listeners, stopped, DRAIN).await;
    // In-flight deliveries finish (and are recorded) so a restart duplicates nothing.
    let _ = tokio::time::timeout(DRAIN, gateway.delivery.shutdown()).await;
    // The last deliveries' "done" records must reach the journal, or a clean restart would
    // deliver those messages again.
    if let Err(e) = gateway.spool.flush().await {
        log::error!("spool: final flush failed: {e}");
    }
    let tracker = gateway.tracker.clone();
    let _ = tokio::task::spawn_blocking(move || tracker.flush(TRACKING_FLUSH)).await;
    // TLS-RPT counts since the last periodic save, so a restart loses no session counted.
    if let Some(security) = gateway.transport_security.get() {
        if let Err(e) = security.counters.save() {
            log::warn!("tls-rpt: cannot save the counters at shutdown: {e}");
        }
    }
    log::info!("bulwarkd stopped");
    Ok(())
}

fn announce(source: &ConfigSource, config: &Config) {
    for route in &config.routes {
        if let Some(maildir) = &route.maildir {
            log::info!(
                "mail to {} is delivered into the Maildir {} (new mail in {})",
                route.domains.join(", "),
                maildir.display(),
                maildir.join("new").display()
            );
        }
    }
    match source {
        ConfigSource::File(path) => log::info!("configuration {}", path.display()),
        ConfigSource::BuiltIn => log::warn!(
            "no configuration file at {}: running on the built-in default \
             (SMTP on {}, accepting mail for {:?}, spool {}, control socket {})",
            config::DEFAULT_CONFIG_PATH,
            config
                .listeners
                .iter()
                .map(|l| l.address.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            config.relay.domains,
            config.server.spool_dir.display(),
            config.server.control_socket.display(),
        ),
    }
}

/// Reloads and reports per key what was applied and what waits for a restart.
fn reload_now(gateway: &Gateway, source: &ConfigSource) -> Result<Vec<Change>, String> {
    notify::reloading();
    let outcome = source
        .load()
        .map_err(|e| e.to_string())
        .and_then(|config| gateway.reload(config).map_err(|e| e.to_string()));
    match &outcome {
        Ok(changes) => {
            for change in changes {
                match change.applies {
                    Applies::OnReload => log::info!(
                        key = change.key.as_str();
                        "reload: {} applied ({} -> {})", change.key, change.running, change.file
                    ),
                    Applies::AtRestart => log::warn!(
                        key = change.key.as_str();
                        "reload: {} needs a restart; still running with {} (file: {})",
                        change.key, change.running, change.file
                    ),
                }
            }
            log::info!("configuration reloaded ({} key(s) changed)", changes.len());
        }
        Err(e) => log::error!("reload refused, the old configuration stays in force: {e}"),
    }
    notify::reloaded(&outcome.as_ref().map(|_| ()).map_err(Clone::clone));
    outcome
}

/// The signals the daemon acts on, taken from the default disposition.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn take_over() -> Result<Signals, StartError> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).map_err(StartError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(StartError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(StartError::Signals)?,
        })
    }
}

fn spawn_signal_handlers(
    signals: Signals,
    stop: watch::Sender<bool>,
    reload: admin::server::ReloadFn,
) {
    let Signals {
        mut hangup,
        mut terminate,
        mut interrupt,
    } = signals;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let reload = reload.clone();
            let _ = tokio::task::spawn_blocking(move || reload()).await;
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => log::info!("SIGTERM: draining sessions"),
            _ = interrupt.recv() => log::info!("SIGINT: draining sessions"),
        }
        notify::stopping();
        let _ = stop.send(true);
    });
}

/// `--check-config`: prints every problem; the process exit code.
pub fn check_config(source: &ConfigSource) -> i32 {
    match source.load() {
        Ok(_) => {
            match source {
                ConfigSource::File(path) => println!("{}: configuration is valid", path.display()),
                ConfigSource::BuiltIn => {
                    println!("no configuration file: the built-in default is valid")
                }
            }
            0
        }
        Err(ConfigError::Invalid { origin, problems }) => {
            for problem in problems {
                eprintln!("{origin}:{problem}");
            }
            1
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Removes expired kernel blocklist entries once a second (the kernel ignores them already;
/// this keeps `flow list` and the map small).
fn spawn_flow_housekeeping(gateway: Arc<Gateway>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            gateway.flow.purge_expired();
        }
    });
}

/// Deletes expired quarantine entries at start and then every `purge_interval`.
fn spawn_quarantine_purge(quarantine: Arc<Quarantine>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(quarantine.purge_interval());
        loop {
            tick.tick().await;
            if let Err(e) = quarantine.purge_expired(crate::queue::unix_now()).await {
                log::error!("quarantine: purge failed: {e}");
            }
        }
    });
}
