//! Instances on the wire: long-lived VMs a user runs from an image, logs in to, stops, and
//! captures as a new image (`instance.*`, `image.create_from_instance`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Its VM was started; SSH does not answer with the pinned host key yet.
    Starting,
    Running,
    /// Asked to power off; waiting for the guest.
    Stopping,
    Stopped,
    /// It could not start (the message says why).
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to log in: `ssh -p PORT USER@HOST`, checking that the server presents `host_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The instance's pinned host key, "ssh-ed25519 AAAA...".
    pub host_key: String,
}

/// One instance as `instance.get` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub project: String,
    /// The image's name when it was run, and its id (the overlay's backing file).
    pub image: String,
    pub image_id: String,
    pub os: String,
    pub state: InstanceState,
    pub cpus: u32,
    pub memory_mb: u32,
    pub disk_gb: u64,
    pub ssh: SshInfo,
    pub created_at: DateTime<Utc>,
    /// When its VM last started; `None` while stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The uid of who ran it.
    pub owner: u32,
    /// What happened last (why it failed, that a stop was forced, ...).
    #[serde(default)]
    pub message: String,
}

/// Params of `instance.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRunParams {
    pub image: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    /// The OpenSSH public key line the image's default user gets.
    pub ssh_public_key: String,
}

/// Params of `instance.get`, `instance.start` and `instance.delete`; `force` for `stop`,
/// `restart` and `delete` skips the ACPI powerdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceParams {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReply {
    pub instance: Instance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
}

/// Params of `instance.console`: the serial console from its first line, then, with `follow`,
/// what comes while it runs (`build.log` notifications and one `build.log.end`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceConsoleParams {
    pub name: String,
    #[serde(default)]
    pub follow: bool,
}

/// Params of `image.create_from_instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFromInstanceParams {
    pub instance: String,
    pub name: String,
    /// Deprovision (machine-id, cloud-init, logs) as a build does; kiln's keys and the host
    /// keys go either way.
    #[serde(default = "yes")]
    pub generalize: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}
