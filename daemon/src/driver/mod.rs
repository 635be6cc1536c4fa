//! The seam between a build and the machine it runs in. A [`VmDriver`] makes a [`Machine`] for a
//! [`VmSpec`] (files only, nothing running); the pipeline boots it, waits until it is ready (which
//! hands out a [`Shell`] in the guest), and powers it down or kills it. Everything a machine
//! makes lives in the spec's work directory, so cleanup is removing that directory once the
//! machine is gone; a machine's [`VmHandle`] is recorded so a restarted kilnd can end what a
//! dead one left running ([`VmDriver::reap`]).
//!
//! [`qemu`] is the driver kilnd runs. Warm start (resuming a saved VM) is its capability alone,
//! behind [`VmDriver::prepare_warm`]. The queue's tests bring a scripted driver of their own.

pub mod qemu;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::guest::os::GuestOs;
use crate::guest::{GuestError, Shell};

pub use qemu::{Accel, AccelProbe, QemuDriver};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{tool} is not installed or not on PATH ({source}); run scripts/install-deps")]
    ToolMissing {
        tool: &'static str,
        source: io::Error,
    },
    #[error("{tool} failed ({status}) while {doing}: {stderr}")]
    Tool {
        tool: &'static str,
        doing: String,
        status: String,
        stderr: String,
    },
    #[error("base image {path}: {reason}")]
    BaseImage { path: PathBuf, reason: String },
    #[error("work directory {path}: {reason}")]
    WorkDir { path: PathBuf, reason: String },
    #[error("{doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no free TCP port on 127.0.0.1 for the SSH forward: {0}")]
    NoPort(io::Error),
    #[error("qemu-system-x86_64 ({accel}) exited {phase} with {status}; its stderr ({work_dir}/qemu.stderr): {stderr}\nlast serial console lines ({work_dir}/serial.log):\n{serial}")]
    QemuExited {
        accel: Accel,
        phase: &'static str,
        status: String,
        stderr: String,
        serial: String,
        work_dir: PathBuf,
    },
    #[error("QMP on {socket}: {message}")]
    Qmp { socket: PathBuf, message: String },
    #[error("the VM was not ready within {secs} s ({phase}; last SSH error: {last_error})\nlast serial console lines ({serial_file}):\n{serial}")]
    ReadyTimeout {
        phase: &'static str,
        secs: u64,
        last_error: String,
        serial: String,
        serial_file: PathBuf,
    },
    #[error("cloud-init finished with errors in the guest (`cloud-init status --wait --long` exit {code}); see /var/log/cloud-init.log in the guest or the serial log:\n{output}")]
    CloudInit { code: i32, output: String },
    #[error("the guest did not power off within {secs} s of the ACPI power button; qemu was killed, so the disk may not be clean\nlast serial console lines ({serial_file}):\n{serial}")]
    PowerdownTimeout {
        secs: u64,
        serial: String,
        serial_file: PathBuf,
    },
    #[error("{0}")]
    Busy(String),
    /// Another driver's failure, said in its own words.
    #[error("{0}")]
    Other(String),
    #[error("resuming the saved VM: {0}")]
    Resume(String),
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// What to boot and how big; the build pipeline fills it from the template and the request.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// qcow2 base image; never modified, only used as the backing file of an overlay.
    pub base_image: PathBuf,
    /// The build's own directory, existing and empty: everything the driver makes goes here.
    pub work_dir: PathBuf,
    /// Virtual size of the overlay in GiB; 0 = same as the base. Never smaller than the base.
    pub disk_gb: u64,
    pub cpus: u32,
    pub memory_mb: u32,
    /// The image's default cloud-init user, who gets the build key ("debian").
    pub user: String,
    /// The guest's OS family: the commands the driver types into it.
    pub os: &'static GuestOs,
}

/// What identifies a machine's process across a kilnd restart: stored in the build record, read
/// back only by the driver named in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmHandle {
    pub driver: String,
    pub data: serde_json::Value,
}

/// Where a driver says what it is doing, for the build log.
pub type Say = Arc<dyn Fn(String) + Send + Sync>;

/// A public key kiln authorized in a guest; generalize removes each wherever it ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilnKey {
    /// For the log: "build key", "saved VM's key".
    pub what: &'static str,
    /// "ssh-ed25519 AAAA... comment".
    pub public: String,
}

/// What an instance runs: its machine (base = the image, work dir = the instance's own), the
/// person's public key for the default user, its hostname, and the SSH port it had before.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub vm: VmSpec,
    /// The image's id (a saved VM of it lets the first start resume) and name (for messages).
    pub image_id: String,
    pub image: String,
    pub login_key: String,
    pub hostname: String,
    pub port: Option<u16>,
}

/// An instance's VM, started.
#[derive(Debug, Clone)]
pub struct InstanceStarted {
    pub handle: VmHandle,
    /// SSH, forwarded on 127.0.0.1.
    pub port: u16,
    pub host_public_key: String,
    pub accel: &'static str,
    /// For the instance's message: how it started ("resumed the saved VM ...", "booted cold:
    /// WHY").
    pub how: String,
}

/// Makes machines: build VMs (owned by kilnd, gone with it) and instances (which outlive it and
/// are known by their handle alone).
#[async_trait::async_trait]
pub trait VmDriver: Send + Sync {
    /// What a cold boot of `spec` needs, made in its work directory; nothing runs yet.
    async fn prepare(&self, spec: &VmSpec, say: Say) -> Result<Box<dyn Machine>, DriverError>;

    /// Like [`prepare`](Self::prepare), for a machine that resumes base image `base_id` from a
    /// VM saved earlier; `Err` says why it cannot (no saved VM, another shape, no such
    /// capability), and the build boots cold.
    async fn prepare_warm(
        &self,
        spec: &VmSpec,
        base_id: &str,
        say: Say,
    ) -> Result<Box<dyn Machine>, String> {
        let _ = (spec, base_id, say);
        Err("this VM driver cannot resume saved VMs".into())
    }

    /// Ends the machine a dead kilnd left running, known by its handle and work directory;
    /// true when there was one to end. Never touches a process that is not that machine.
    fn reap(&self, handle: &VmHandle, work_dir: &Path) -> bool;

    /// Starts an instance's VM (making its disk and seed in `spec.vm.work_dir` the first time,
    /// resuming a saved VM of the image then when the driver can); it runs on when kilnd stops.
    async fn start_instance(&self, spec: &InstanceSpec) -> Result<InstanceStarted, DriverError> {
        let _ = spec;
        Err(DriverError::Other(
            "this VM driver cannot run instances".into(),
        ))
    }

    /// Whether the instance VM of `handle` still runs (after a kilnd restart too).
    fn instance_running(&self, handle: &VmHandle, work_dir: &Path) -> bool {
        let _ = (handle, work_dir);
        false
    }

    /// The handle of an instance VM running in `work_dir` that no record names.
    fn instance_unrecorded(&self, work_dir: &Path) -> Option<VmHandle> {
        let _ = work_dir;
        None
    }

    /// Powers the instance off (ACPI), killing it after `timeout`; true when it was killed.
    async fn stop_instance(&self, handle: &VmHandle, work_dir: &Path, timeout: Duration) -> bool {
        let _ = timeout;
        self.reap(handle, work_dir)
    }

    /// The disk an instance in `work_dir` writes, and its serial console.
    fn instance_disk(&self, work_dir: &Path) -> PathBuf {
        work_dir.join("disk")
    }
    fn instance_console(&self, work_dir: &Path) -> PathBuf {
        work_dir.join("serial.log")
    }
}

/// One VM, from prepared to gone. Dropping it ends the VM.
#[async_trait::async_trait]
pub trait Machine: Send + Sync {
    /// Every key kiln authorized in the guest.
    fn kiln_keys(&self) -> Vec<KilnKey>;
    /// The guest's pinned host key, "ssh-ed25519 AAAA...".
    fn host_public_key(&self) -> String;
    async fn boot(&mut self) -> Result<(), DriverError>;
    /// Waits until the guest is ready, within `timeout`; also after the guest rebooted.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<Arc<dyn Shell>, DriverError>;
    /// How the last `wait_ready` got there, for the log ("ssh with the pinned host key, ...").
    fn how_ready(&self) -> &'static str;
    /// Asks the guest to power off and waits up to `timeout`; kills it after that (an error).
    async fn powerdown(&mut self, timeout: Duration) -> Result<(), DriverError>;
    /// Ends the VM at once; nothing when it is gone already.
    async fn kill(&mut self);
    /// The running process, for the store; `None` before boot.
    fn handle(&self) -> Option<VmHandle>;
    /// One line for the build log: "qemu pid 123 (tcg), ssh on 127.0.0.1:40000".
    fn describe(&self) -> String;
    /// The accelerator it runs under ("kvm", "tcg"), once booted.
    fn accel(&self) -> Option<&'static str>;
    /// A command a person can paste to log in to the guest.
    fn attach_command(&self) -> String;
    /// The disk the guest writes; the finished image once powered off.
    fn disk(&self) -> &Path;
    /// The guest's serial console, as a file that grows while it runs.
    fn serial_log(&self) -> &Path;
}

impl DriverError {
    /// The VM itself is gone (its process exited): waiting longer cannot help.
    pub fn vm_gone(&self) -> bool {
        matches!(self, DriverError::QemuExited { .. })
    }
}
