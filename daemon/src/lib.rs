//! kiln-daemon: kilnd's library. `run(config, shutdown)` is the whole server: tests hand it a temp
//! socket and a shutdown future; `main` only parses flags.

pub mod access;
pub mod api;
pub mod as_user;
pub mod catalog;
pub mod config;
pub mod driver;
pub mod guest;
pub mod instances;
pub mod leftovers;
pub mod logs;
pub mod qemu_img;
pub mod queue;
pub mod store;
pub mod sync;
pub mod tool;
pub mod triggers;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("data directory {path} is not usable: {source} (kilnd needs to write there; fix its permissions or pass another --data-dir)")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("system mode needs the group {0:?} to own the socket; create it with `groupadd --system {0}` or set socket_group in kilnd.toml")]
    NoSocketGroup(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Catalog(catalog::CatalogError),
    #[error(transparent)]
    Socket(#[from] api::SocketError),
}

/// Makes sure the data directory exists and that kilnd can really write into it.
fn prepare_data_dir(dir: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::DataDir {
        path: dir.into(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    let probe = dir.join(format!(".kilnd-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// File descriptors kept back from connections: the store, logs, the runtime, and per build
/// its VM's pipes, QMP and SSH sockets, files it reads and writes.
fn fds_kept_back(max_concurrent_builds: u32) -> u64 {
    128 + 32 * u64::from(max_concurrent_builds)
}

/// Raises the soft limit on open files to the hard one; returns the limit now in force.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let was = limit.current;
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-files limit from {was:?} to the hard limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// `max_connections` for everyone, so that it plus the privileged reserve plus the fds kept back
/// fits in `fd_limit` (at least one connection, however low the limit).
pub fn connection_limit(configured: usize, fd_limit: u64, max_concurrent_builds: u32) -> usize {
    let room = fd_limit.saturating_sub(fds_kept_back(max_concurrent_builds));
    let room = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .saturating_sub(api::PRIVILEGED_RESERVE);
    configured.min(room).max(1)
}

/// Failing accepts (out of fds, most often) wait a little longer each time instead of spinning,
/// and are logged on the 1st, 2nd, 4th, 8th... failure in a row, not once each.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    fn failed(&mut self, e: &std::io::Error) -> std::time::Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures.is_power_of_two() {
            tracing::warn!(
                failures = self.failures,
                "accept failed: {e} (backing off; new clients wait meanwhile)"
            );
        }
        Self::FIRST
            .saturating_mul(2u32.saturating_pow(self.failures.min(16) - 1))
            .min(Self::MAX)
    }

    fn succeeded(&mut self) {
        if self.failures > 1 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        self.failures = 0;
    }
}

/// Runs kilnd until `shutdown` resolves: opens the store, binds the socket, serves connections.
/// Builds run on QEMU.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with(config, None, shutdown).await
}

/// [`run`], with builds on `driver` instead of QEMU when one is given (the queue's tests bring a
/// scripted driver; it never stands for a real build).
pub async fn run_with(
    config: Config,
    driver: Option<Arc<dyn driver::VmDriver>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let fd_limit = raise_fd_limit();
    let max_connections = connection_limit(
        config.max_connections(),
        fd_limit,
        config.max_concurrent_builds(),
    );
    if max_connections < config.max_connections() {
        tracing::warn!(
            fd_limit,
            "max_connections lowered from {} to {max_connections}: the open-files limit leaves \
             no room for more (raise it with LimitNOFILE= or ulimit -n)",
            config.max_connections()
        );
    }
    prepare_data_dir(&config.data_dir)?;
    let store = Arc::new(store::Store::open(&config.data_dir.join("kiln.redb"))?);
    // This kilnd alone holds the data dir now: whatever a dead one left running goes before
    // anything cleans up the files those processes might still write.
    let killed = leftovers::kill(&config.data_dir);
    if !killed.is_empty() {
        tracing::warn!(
            count = killed.len(),
            "killed processes a previous kilnd left running"
        );
    }
    let group = if config.system_mode {
        let name = config
            .file
            .socket_group
            .clone()
            .unwrap_or_else(|| "kiln".into());
        Some(
            access::IdTable::groups()
                .named(&name)
                .ok_or(DaemonError::NoSocketGroup(name))?,
        )
    } else {
        None
    };
    let data_err = |source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    let logs = Arc::new(logs::Logs::new(config.data_dir.join("logs")).map_err(data_err)?);
    let catalog = Arc::new(
        catalog::Catalog::open(store.clone(), config.data_dir.join("images"))
            .map_err(DaemonError::Catalog)?,
    );
    let warm = Arc::new(
        driver::qemu::warm::WarmStates::open(config.data_dir.join("warm")).map_err(data_err)?,
    );
    let accel = Arc::new(driver::AccelProbe::default());
    let driver = driver.unwrap_or_else(|| {
        Arc::new(driver::QemuDriver::new(accel.clone(), warm.clone())) as Arc<dyn driver::VmDriver>
    });
    // Saved VMs of images deleted while kilnd was down (or mid-delete) go too.
    let live = store
        .list_images()?
        .into_iter()
        .filter(|r| r.state == catalog::State::Available)
        .map(|r| r.id)
        .collect();
    warm.sweep(&live);
    let instances = instances::Instances::new(
        store.clone(),
        catalog.clone(),
        driver.clone(),
        config.data_dir.join("instances"),
        config.file.max_instances.unwrap_or(4) as usize,
    )
    .map_err(data_err)?;
    let queue = queue::Queue::new(
        store.clone(),
        logs.clone(),
        catalog.clone(),
        driver,
        config.data_dir.join("builds"),
        queue::Limits {
            max_concurrent: config.max_concurrent_builds() as usize,
            timeout_cap_secs: config.file.build_timeout_cap_seconds,
            warm_start: config.file.warm_start.unwrap_or(true),
        },
    );
    queue.recover()?;
    // Instances outlive kilnd: the running ones are re-adopted, the dead ones stopped.
    if let Err(e) = instances.recover() {
        tracing::error!("recovering instances: {e}");
    }
    // Bound only now: a client that connects finds every build in a terminal state and no
    // half-made file left from a daemon that died (the store's lock keeps a second kilnd out
    // of this data dir before it touches anything).
    let listener = api::bind(&config.socket, config.system_mode, group).await?;
    tracing::info!(
        socket = %config.socket.display(),
        data_dir = %config.data_dir.display(),
        max_connections,
        fd_limit,
        "kilnd {} listening",
        env!("CARGO_PKG_VERSION")
    );
    let socket_path = config.socket.clone();
    queue.spawn_scheduler();
    triggers::spawn(store.clone(), catalog.clone(), queue.clone());
    let daemon = Arc::new(api::Daemon {
        access: access::Access::new(&config.file),
        config,
        catalog,
        queue: queue.clone(),
        instances,
        logs,
        warm,
        accel,
        store,
        apps: kiln_shared::apps::AppCatalog::builtin(),
        started_at: chrono::Utc::now(),
        template_changes: tokio::sync::broadcast::channel(1024).0,
        connections: Arc::new(api::Connections::new(max_connections)),
    });

    tokio::pin!(shutdown);
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.accept() => match conn {
                Ok(stream) => {
                    backoff.succeeded();
                    tokio::spawn(api::serve_connection(daemon.clone(), stream));
                }
                Err(e) => {
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }
    tracing::info!("shutting down");
    drop(listener);
    queue.shutdown().await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
