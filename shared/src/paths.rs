//! Where the socket lives: user mode, system mode and the `KILN_SOCKET` override (DESIGN.md,
//! "Files and sockets"). Shared so that the daemon and its clients agree without configuration.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Environment variable that overrides the socket path for clients.
pub const SOCKET_ENV: &str = "KILN_SOCKET";
/// Environment variable that picks the project for clients.
pub const PROJECT_ENV: &str = "KILN_PROJECT";

/// The effective uid of this process (read from `/proc/self`, so no libc call is needed).
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// True when running as root, which selects system mode.
pub fn system_mode() -> bool {
    current_uid() == 0
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The runtime directory holding the socket in user mode.
fn user_runtime_dir() -> PathBuf {
    env_path("XDG_RUNTIME_DIR")
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-{}", current_uid())))
}

/// The socket path clients and the daemon use unless told otherwise.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = env_path(SOCKET_ENV) {
        return p;
    }
    if system_mode() {
        PathBuf::from("/run/kiln/kiln.sock")
    } else {
        user_runtime_dir().join("kiln").join("kiln.sock")
    }
}

/// The daemon's data directory unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/var/lib/kiln");
    }
    env_path("XDG_DATA_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kiln")
}

/// The daemon's config file unless `--config` says otherwise.
pub fn default_config_path() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/etc/kiln/kilnd.toml");
    }
    env_path("XDG_CONFIG_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kiln")
        .join("kilnd.toml")
}

/// The project a client acts in: `KILN_PROJECT` or `default`.
pub fn default_project() -> String {
    std::env::var(PROJECT_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| crate::protocol::DEFAULT_PROJECT.to_string())
}
