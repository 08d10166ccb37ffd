//! `bulwarkd`: the Bulwark mail gateway daemon (runs in the foreground; logs to journald under
//! systemd, else to stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark::daemon::{self, ConfigSource};
use bulwark::service::journal::{self, LogTarget};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bulwarkd",
    version,
    about = "Bulwark secure mail gateway daemon"
)]
struct Args {
    /// Configuration file (default: /etc/bulwark/bulwark.toml, else a built-in default that
    /// works unprivileged on 127.0.0.1:2525).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem with line:column, and exit.
    #[arg(long)]
    check_config: bool,
    /// Where to log: journal, stderr, or auto (journald when stderr is connected to it, as
    /// under systemd).
    #[arg(long, value_name = "TARGET", default_value = "auto")]
    log: LogTarget,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let source = ConfigSource::choose(args.config);
    if args.check_config {
        return ExitCode::from(daemon::check_config(&source) as u8);
    }
    if let Err(e) = journal::init(args.log) {
        eprintln!("bulwarkd: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bulwarkd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(daemon::run(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("bulwarkd: {e}");
            ExitCode::FAILURE
        }
    };
    // Events still queued for the log writer (the last ones say why the daemon stopped).
    log::logger().flush();
    code
}
