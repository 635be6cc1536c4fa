//! The QEMU driver: a build VM is a `qemu-system-x86_64` process on a qcow2 overlay of the base
//! image, reached over SSH forwarded to 127.0.0.1 with a pinned host key, configured by a
//! NoCloud seed, powered down over QMP. It alone can resume a saved VM (`warm`).
//!
//! Files of one machine, all in its work directory: `overlay.qcow2` (the disk), `seed.iso`,
//! `client_key{,.pub}`, `known_hosts`, `serial.log`, `qmp.sock`, `qemu.stderr`.

mod accel;
mod instance;
mod prepare;
mod qmp;
mod ready;
mod resume;
pub mod seed;
mod serial;
mod stale;
mod vm;
pub mod warm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use accel::{Accel, AccelProbe};
pub use prepare::{prepare, Prepared};
pub use stale::kill_stale;
pub use vm::Vm;

use super::{
    DriverError, InstanceSpec, InstanceStarted, KilnKey, Machine, Say, VmDriver, VmHandle, VmSpec,
};
use crate::guest::Shell;
use warm::{WarmLease, WarmState, WarmStates};

/// Loading a saved VM's memory under TCG on a busy machine.
const RESUME_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const DRIVER: &str = "qemu";

/// Makes QEMU machines; holds the accelerator verdict and the saved VMs it resumes from.
pub struct QemuDriver {
    accel: Arc<AccelProbe>,
    warm: Arc<WarmStates>,
}

impl QemuDriver {
    pub fn new(accel: Arc<AccelProbe>, warm: Arc<WarmStates>) -> QemuDriver {
        QemuDriver { accel, warm }
    }

    fn machine(&self, prepared: Prepared, keys: Vec<KilnKey>, say: Say) -> QemuMachine {
        QemuMachine {
            prepared,
            keys,
            probe: self.accel.clone(),
            vm: None,
            resume: None,
            how: "not ready yet",
            say,
        }
    }
}

/// The handle of a qemu process: its pid and when it started.
#[derive(serde::Serialize, serde::Deserialize)]
struct Process {
    pid: u32,
    #[serde(default)]
    start_ticks: Option<u64>,
}

/// The handle of a qemu process recorded, before handles existed, as a bare pid.
pub fn legacy_handle(pid: u32) -> VmHandle {
    VmHandle {
        driver: DRIVER.into(),
        data: serde_json::json!({ "pid": pid }),
    }
}

#[async_trait::async_trait]
impl VmDriver for QemuDriver {
    async fn prepare(&self, spec: &VmSpec, say: Say) -> Result<Box<dyn Machine>, DriverError> {
        let prepared = prepare(spec).await?;
        let keys = vec![build_key(&prepared)?];
        Ok(Box::new(self.machine(prepared, keys, say)))
    }

    async fn prepare_warm(
        &self,
        spec: &VmSpec,
        base_id: &str,
        say: Say,
    ) -> Result<Box<dyn Machine>, String> {
        let Some(state) = self.warm.find(base_id, &spec.base_image).await else {
            return Err(format!(
                "{base_id} has no saved VM (`kiln image warm {base_id}` makes one)"
            ));
        };
        if let Some(why) = state.misfit(spec.cpus, spec.memory_mb) {
            return Err(format!("not possible ({why})"));
        }
        if state.meta.user != spec.user {
            return Err(format!(
                "not possible (the saved VM's user is {}, the base image's {})",
                state.meta.user, spec.user
            ));
        }
        let accel = state
            .accel(&self.accel, &spec.base_image, &spec.work_dir, spec.os)
            .await
            .map_err(|why| format!("not possible ({why})"))?;
        let lease = self.warm.lease(base_id);
        let prepared = warm::prepare_from(spec, &state)
            .await
            .map_err(|e| format!("preparing the resume failed ({e})"))?;
        // The saved VM's key was authorized at its first boot (and copied to root by
        // cloud-init); the build's key replaces it for the default user only.
        let mut keys = Vec::new();
        match read_public("saved VM's key", &state.client_key()) {
            Ok(key) => keys.push(key),
            Err(e) => tracing::warn!("{e}; generalize removes it by kiln's comment only"),
        }
        keys.push(build_key(&prepared).map_err(|e| e.to_string())?);
        let disk_bytes = (spec.disk_gb << 30).max(state.meta.disk_bytes);
        let mut machine = self.machine(prepared, keys, say);
        machine.resume = Some(Resume {
            state,
            accel,
            disk_bytes,
            _lease: lease,
        });
        Ok(Box::new(machine))
    }

    async fn start_instance(&self, spec: &InstanceSpec) -> Result<InstanceStarted, DriverError> {
        instance::start(spec, &self.accel, &self.warm).await
    }

    fn instance_running(&self, handle: &VmHandle, work_dir: &Path) -> bool {
        instance::running(handle, work_dir)
    }

    fn instance_unrecorded(&self, work_dir: &Path) -> Option<VmHandle> {
        instance::from_pidfile(work_dir)
    }

    async fn stop_instance(&self, handle: &VmHandle, work_dir: &Path, timeout: Duration) -> bool {
        instance::stop(handle, work_dir, timeout).await
    }

    fn instance_disk(&self, work_dir: &Path) -> PathBuf {
        instance::disk(work_dir)
    }

    fn instance_console(&self, work_dir: &Path) -> PathBuf {
        work_dir.join("serial.log")
    }

    fn reap(&self, handle: &VmHandle, work_dir: &Path) -> bool {
        if handle.driver != DRIVER {
            return false;
        }
        match serde_json::from_value::<Process>(handle.data.clone()) {
            Ok(p) => kill_stale(p.pid, p.start_ticks, work_dir),
            Err(e) => {
                tracing::warn!("unreadable qemu handle {}: {e}", handle.data);
                false
            }
        }
    }
}

/// A saved VM this machine resumes instead of booting; held (so it is not replaced or removed)
/// while the machine lives.
struct Resume {
    state: WarmState,
    accel: Accel,
    disk_bytes: u64,
    _lease: WarmLease,
}

/// One QEMU machine; its qemu runs from `boot` until powerdown, kill or drop.
struct QemuMachine {
    prepared: Prepared,
    keys: Vec<KilnKey>,
    probe: Arc<AccelProbe>,
    vm: Option<Vm>,
    /// Until the first `wait_ready` of a resumed machine, which rotates the saved VM's keys.
    resume: Option<Resume>,
    how: &'static str,
    say: Say,
}

fn read_public(what: &'static str, private_key: &Path) -> Result<KilnKey, DriverError> {
    let public = private_key.with_extension("pub");
    let line = std::fs::read_to_string(&public).map_err(|source| DriverError::Io {
        doing: "reading the key",
        path: public,
        source,
    })?;
    Ok(KilnKey {
        what,
        public: line.trim().to_owned(),
    })
}

fn build_key(prepared: &Prepared) -> Result<KilnKey, DriverError> {
    read_public("build key", &prepared.client_key)
}

impl QemuMachine {
    fn vm(&mut self) -> Result<&mut Vm, DriverError> {
        self.vm
            .as_mut()
            .ok_or_else(|| DriverError::Other("the VM has not been booted".into()))
    }
}

#[async_trait::async_trait]
impl Machine for QemuMachine {
    fn kiln_keys(&self) -> Vec<KilnKey> {
        self.keys.clone()
    }

    fn host_public_key(&self) -> String {
        self.prepared.host_public_key.clone()
    }

    async fn boot(&mut self) -> Result<(), DriverError> {
        let vm = match &self.resume {
            None => Vm::boot(&self.prepared, &self.probe).await?,
            Some(resume) => {
                let meta = &resume.state.meta;
                (self.say)(format!(
                    "warm start: resuming {} from the VM saved {} ({} vCPUs, {} MB, {})",
                    meta.image_id,
                    meta.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    meta.cpus,
                    meta.memory_mb,
                    meta.accel
                ));
                let memory = resume.state.memory();
                let vm = Vm::resume(&self.prepared, &memory, resume.accel, RESUME_TIMEOUT).await?;
                self.probe.set(resume.accel);
                vm
            }
        };
        self.vm = Some(vm);
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<Arc<dyn Shell>, DriverError> {
        let resume = self.resume.take();
        let say = self.say.clone();
        let vm = self.vm()?;
        let guest = match resume {
            None => {
                let guest = vm.wait_ready(timeout).await?;
                self.how = "ssh with the pinned host key, cloud-init finished";
                guest
            }
            Some(resume) => {
                let started = Instant::now();
                let guest =
                    warm::adopt(vm, &resume.state, resume.disk_bytes, timeout, &*say).await?;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "resumed guest adopted"
                );
                self.how = "resumed; build keys installed, host key pinned, clock set";
                guest
            }
        };
        Ok(Arc::new(guest))
    }

    fn how_ready(&self) -> &'static str {
        self.how
    }

    async fn powerdown(&mut self, timeout: Duration) -> Result<(), DriverError> {
        match self.vm.as_mut() {
            Some(vm) => vm.powerdown(timeout).await,
            None => Ok(()),
        }
    }

    async fn kill(&mut self) {
        if let Some(vm) = self.vm.as_mut() {
            vm.kill().await;
        }
    }

    fn handle(&self) -> Option<VmHandle> {
        let pid = self.vm.as_ref()?.pid();
        let process = Process {
            pid,
            start_ticks: crate::leftovers::start_ticks(pid),
        };
        Some(VmHandle {
            driver: DRIVER.into(),
            data: serde_json::to_value(process).ok()?,
        })
    }

    fn describe(&self) -> String {
        match &self.vm {
            Some(vm) => format!(
                "qemu pid {} ({}), ssh on 127.0.0.1:{}",
                vm.pid(),
                vm.accel(),
                vm.ssh_port()
            ),
            None => "qemu (not started)".into(),
        }
    }

    fn accel(&self) -> Option<&'static str> {
        self.vm.as_ref().map(|vm| vm.accel().as_str())
    }

    fn attach_command(&self) -> String {
        self.vm.as_ref().map(Vm::attach_command).unwrap_or_default()
    }

    fn disk(&self) -> &Path {
        &self.prepared.overlay
    }

    fn serial_log(&self) -> &Path {
        &self.prepared.serial_log
    }
}
