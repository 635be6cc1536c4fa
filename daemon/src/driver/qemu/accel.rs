//! Which accelerator QEMU runs under: KVM when it really works (an openable /dev/kvm can still
//! fail at boot), else TCG. Decided once per kilnd run, by trying, in one place: [`AccelProbe`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::path::Path;

use super::prepare::{create_overlay, io_err};
use super::qmp;
use super::serial::{file_contains, tail_lines};
use super::vm::{status_text, SSH_POLL};
use super::{Prepared, Vm};
use crate::driver::DriverError;
use crate::guest::os::GuestOs;
use crate::sync::lock;

/// How long a KVM boot may take to show the kernel banner before KVM counts as broken (under
/// working KVM it shows in 1-2 s; see docs/notes/bootstrap.md).
const KVM_PROBE: Duration = Duration::from_secs(10);

/// The accelerator a VM runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    pub(super) fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg"],
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which accelerator works, detected once by trying (an openable /dev/kvm can still fail at
/// boot) and shared by all builds of a daemon run.
#[derive(Debug, Default)]
pub struct AccelProbe {
    verdict: Mutex<Option<Accel>>,
    /// Held while the first boot tries KVM, so concurrent boots wait for its verdict.
    probing: tokio::sync::Mutex<()>,
}

impl AccelProbe {
    /// A probe that never tries: every boot uses `accel` (for a configured or forced choice).
    pub fn fixed(accel: Accel) -> AccelProbe {
        AccelProbe {
            verdict: Mutex::new(Some(accel)),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// The verdict so far; `None` until the first boot has tried.
    pub fn current(&self) -> Option<Accel> {
        *lock(&self.verdict)
    }

    pub(crate) fn set(&self, accel: Accel) {
        *lock(&self.verdict) = Some(accel);
    }
}

/// /dev/kvm exists and this process may open it read-write.
pub(crate) fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

impl AccelProbe {
    /// The verdict when it needs no boot: the one reached before, or TCG when /dev/kvm cannot be
    /// opened at all.
    pub fn known(&self) -> Option<Accel> {
        if let Some(accel) = self.current() {
            return Some(accel);
        }
        if !kvm_device_usable() {
            tracing::info!("accel: /dev/kvm is missing or not read-write for kilnd; using TCG");
            self.set(Accel::Tcg);
            return Some(Accel::Tcg);
        }
        None
    }

    /// The verdict, trying KVM on `prepared` when there is none yet (concurrent callers wait for
    /// the first one's). The VM that proved KVM works is handed back, running, to whoever tried.
    pub(super) async fn settle(&self, prepared: &Prepared) -> (Accel, Option<Vm>) {
        if let Some(accel) = self.known() {
            return (accel, None);
        }
        let _probing = self.probing.lock().await;
        if let Some(accel) = self.current() {
            return (accel, None);
        }
        match Vm::try_kvm(prepared).await {
            Some(vm) => {
                self.set(Accel::Kvm);
                (Accel::Kvm, Some(vm))
            }
            None => {
                self.set(Accel::Tcg);
                (Accel::Tcg, None)
            }
        }
    }
}

/// [`AccelProbe::settle`] for a caller that keeps no VM (a resume, an instance that runs
/// detached): boots `base` under KVM on a throwaway overlay in `work_dir/kvm-probe`, with `seed`
/// attached, until the verdict is in, then kills it.
pub(super) async fn settle_on(
    probe: &AccelProbe,
    base: &Path,
    seed: &Path,
    work_dir: &Path,
    os: &'static GuestOs,
    (cpus, memory_mb): (u32, u32),
) -> Result<Accel, DriverError> {
    if let Some(accel) = probe.known() {
        return Ok(accel);
    }
    let dir = work_dir.join("kvm-probe");
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let overlay = dir.join("probe.qcow2");
    create_overlay(base, &overlay, None).await?;
    let prepared = Prepared {
        overlay,
        seed: seed.to_owned(),
        client_key: dir.join("unused"),
        host_public_key: String::new(),
        serial_log: dir.join("serial.log"),
        qmp_socket: dir.join("qmp.sock"),
        // Nobody logs in: the probe only watches the serial console for the kernel.
        user: String::new(),
        os,
        cpus,
        memory_mb,
    };
    let (accel, vm) = probe.settle(&prepared).await;
    if let Some(mut vm) = vm {
        vm.kill().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(accel)
}

impl Vm {
    /// Boots under KVM and keeps the VM if the kernel banner shows within [`KVM_PROBE`]; `None`
    /// (after killing it) when KVM is unusable.
    async fn try_kvm(prepared: &Prepared) -> Option<Vm> {
        if !kvm_device_usable() {
            tracing::info!("accel: /dev/kvm is missing or not read-write for kilnd; using TCG");
            return None;
        }
        let started = Instant::now();
        let mut vm = match Vm::start(prepared, Accel::Kvm, false).await {
            Ok(vm) => vm,
            Err(e) => {
                tracing::warn!(error = %e, "accel: KVM boot failed to start; using TCG");
                return None;
            }
        };
        match vm.kvm_verdict().await {
            Ok(()) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "accel: KVM works (kernel banner on the serial console)"
                );
                Some(vm)
            }
            Err(why) => {
                vm.kill().await;
                tracing::warn!(
                    probe_ms = started.elapsed().as_millis() as u64,
                    "accel: KVM unusable, falling back to TCG: {why}"
                );
                None
            }
        }
    }

    /// KVM can initialise and still fail: QEMU aborts, the VM stops with internal-error, or the
    /// guest hangs before the kernel prints. Success is the kernel banner on the serial console.
    async fn kvm_verdict(&mut self) -> Result<(), String> {
        let deadline = self.started + KVM_PROBE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return Err(format!(
                    "qemu exited with {} after {:.2} s: {}",
                    status_text(status),
                    self.started.elapsed().as_secs_f64(),
                    tail_lines(&self.stderr_file, 5)
                ));
            }
            if file_contains(&self.prepared.serial_log, b"Linux version") {
                return Ok(());
            }
            let status = qmp::execute(&self.prepared.qmp_socket, "query-status")
                .await
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            if status == "internal-error" {
                return Err(format!(
                    "QMP status internal-error after {:.2} s: {}",
                    self.started.elapsed().as_secs_f64(),
                    tail_lines(&self.stderr_file, 5)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no kernel banner on the serial console within {} s (QMP status {status}); last serial lines: {}",
                    KVM_PROBE.as_secs(),
                    tail_lines(&self.prepared.serial_log, 3)
                ));
            }
            tokio::time::sleep(SSH_POLL).await;
        }
    }
}
