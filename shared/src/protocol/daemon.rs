//! Results of `project.list` and `daemon.status`: the projects and kilnd as a caller sees them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the caller may act in this project.
    pub member: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectList {
    pub projects: Vec<ProjectInfo>,
}

/// Result of `daemon.status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub socket: String,
    pub data_dir: String,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// Builds waiting in the queue.
    pub queue: u64,
    /// Builds running now.
    pub running: u64,
    pub max_concurrent_builds: u32,
    /// The accelerator builds use: `kvm`, `tcg`, or `unknown` until the first boot tried.
    pub accel: String,
    pub templates: u64,
    /// The caller as the daemon sees it from the socket's peer credentials.
    pub caller: Caller,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub project: String,
}
