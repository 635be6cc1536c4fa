//! kilnd: parses flags, builds the config and runs the daemon until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// The kiln daemon: template store, build queue, VM drivers and image catalog.
#[derive(Parser, Debug)]
#[command(name = "kilnd", version)]
struct Args {
    /// Socket path (default: $XDG_RUNTIME_DIR/kiln/kiln.sock, or /run/kiln/kiln.sock as root).
    #[arg(long, env = "KILN_SOCKET")]
    socket: Option<PathBuf>,
    /// Data directory (default: $XDG_DATA_HOME/kiln, or /var/lib/kiln as root).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file (default: $XDG_CONFIG_HOME/kiln/kilnd.toml, or /etc/kiln/kilnd.toml as root).
    #[arg(long)]
    config: Option<PathBuf>,
    /// System mode on the paths given: the socket 0660 with group `kiln` (socket_group) in a
    /// root-owned 0750 directory, as for /run/kiln/kiln.sock (default as root without --socket).
    /// Needs root; for a second system daemon or a test.
    #[arg(long)]
    system: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if args.system && !kiln_shared::paths::system_mode() {
        eprintln!(
            "kilnd: error: --system needs root (kilnd runs as root in system mode, to act as \
             its callers); run it as root or drop --system"
        );
        return ExitCode::FAILURE;
    }
    let config = match kiln_daemon::Config::resolve(args.socket, args.data_dir, args.config) {
        Ok(c) => kiln_daemon::Config {
            system_mode: c.system_mode || args.system,
            ..c
        },
        Err(e) => {
            eprintln!("kilnd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the runtime's threads exist: every child kilnd starts inherits the mark.
    kiln_daemon::leftovers::mark_this_process(&config.data_dir);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kilnd: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("kilnd: error: cannot install signal handlers: {e}");
                return Err(());
            }
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        kiln_daemon::run(config, shutdown)
            .await
            .map_err(|e| eprintln!("kilnd: error: {e}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}
