//! `bulwark-console`: the administration console, a separate binary so that its web stack
//! (axum, hyper, sessions, Argon2 verification at login rate) stays out of bulwarkd's build and
//! out of the MTA process's attack surface; it speaks to every node only through the nodes'
//! control protocol over HTTPS with mutual TLS (`bulwark::admin::remote`).
//!
//! It reads `[console]` from a bulwark configuration file (`--config`), serves HTTPS only, and
//! embeds every asset it serves (no CDN, works air-gapped).

mod alerts;
mod api;
mod api_ops;
mod app;
mod audit;
mod auth;
mod config_ops;
mod config_text;
mod digest;
mod federation;
mod node_list;
mod ops;
mod ops_api;
mod outbox;
mod pages;
mod pages_config;
mod pages_nodes;
mod quarantine_ops;
mod reports;
mod schedule;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bulwark::admin::https::{read_certificates, read_key};
use bulwark::config::{self, Config};
use clap::Parser;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(
    name = "bulwark-console",
    version,
    about = "Bulwark's administration console"
)]
struct Args {
    #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0} has no [console] section")]
    NoConsole(PathBuf),
    #[error("TLS: {0}")]
    Tls(#[from] bulwark::admin::https::PemError),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    State(#[from] app::StateError),
    #[error("listen {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, StartError> {
    let console = config
        .console
        .as_ref()
        .ok_or(StartError::NoConsole(PathBuf::new()))?;
    let (certificate, key) = match (&console.certificate, &console.private_key, &config.tls) {
        (Some(c), Some(k), _) => (c.clone(), k.clone()),
        (_, _, Some(tls)) => (tls.certificate.clone(), tls.private_key.clone()),
        _ => return Err(StartError::NoConsole(PathBuf::new())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(read_certificates(&certificate)?, read_key(&key)?)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

async fn run(args: Args) -> Result<(), StartError> {
    let config = config::load_file(&args.config)?;
    let acceptor = tls_acceptor(&config)?;
    let console = config
        .console
        .clone()
        .ok_or_else(|| StartError::NoConsole(args.config.clone()))?;
    let state = app::new_state(console.clone())?;
    app::spawn_sampler(state.clone());
    alerts::spawn(state.clone());
    schedule::spawn(state.clone());
    let router = app::router(state);
    let listener = TcpListener::bind(console.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: console.listen,
            source,
        })?;
    log::info!(
        "bulwark-console on https://{}",
        listener.local_addr().map_or(console.listen, |a| a)
    );
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service =
                TowerToHyperService::new(router.layer(axum::Extension(app::Peer(peer.ip()))));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service);
            let _ = connection.await;
        });
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bulwark-console: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark-console: {e}");
            ExitCode::FAILURE
        }
    }
}
