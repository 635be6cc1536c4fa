//! The pipeline of one build: prepare, boot, connect, run the plan's customize steps, generalize,
//! shut down, run its validate steps, distribute, and always clean up. It runs the build's plan
//! as recorded, step by step, and never reads steps from the template. Cancellation and the
//! timeout drop the pipeline future; every resource it made is held in `Run`, so cleanup finds it
//! whatever the moment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_shared::build::{BuildState, LogStream, RunOutput, Step, StepState, SubState};
use kiln_shared::template::{Distribute, OnError};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::plan::{Action, PlannedStep};
use super::{lock, Queue};
use crate::catalog::ImageLease;
use crate::driver::warm::{WarmLease, WarmState};
use crate::driver::{self, Vm, VmSpec};
use crate::guest::{Guest, Stream};
use crate::logs::{BuildLog, Logs};
use crate::store::{BuildRecord, StartedBy};

/// Files a `file` customizer may upload.
const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// First boot, cloud-init included; TCG on a busy machine needs minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// The login user of Debian's cloud images.
const USER: &str = "debian";

/// A VM kept after a failed step so a person can look; ended by `build.cancel`.
pub struct KeptVm {
    vm: Vm,
    work_dir: PathBuf,
    id: u64,
}

impl KeptVm {
    pub async fn end(mut self, logs: &Logs) {
        self.vm.kill().await;
        let _ = std::fs::copy(self.work_dir.join("serial.log"), logs.serial_path(self.id));
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Why a pipeline stopped early.
enum Failure {
    /// A step or phase failed; the message names it.
    Failed {
        message: String,
        customizer: bool,
    },
    Canceled,
    TimedOut(u64),
}

fn failed(message: impl Into<String>) -> Failure {
    Failure::Failed {
        message: message.into(),
        customizer: false,
    }
}

struct Run {
    queue: Arc<Queue>,
    rec: BuildRecord,
    log: Arc<BuildLog>,
    token: CancellationToken,
    vm: Option<Vm>,
    guest: Option<Guest>,
    work_dir: PathBuf,
    base_lease: Option<ImageLease>,
    warm_lease: Option<WarmLease>,
    /// Public key lines kiln authorized in this guest: generalize removes each wherever it is.
    kiln_keys: Vec<String>,
}

/// Runs build `id` to a terminal state.
pub async fn run(queue: Arc<Queue>, id: u64, token: CancellationToken) {
    let rec = match queue.store.get_build(id) {
        Ok(Some(r)) if !r.build.state.is_terminal() => r,
        _ => return,
    };
    let log = queue.logs.open(id);
    let work_dir = queue.builds_dir.join(id.to_string());
    let mut run = Run {
        queue: queue.clone(),
        rec,
        log,
        token: token.clone(),
        vm: None,
        guest: None,
        work_dir,
        base_lease: None,
        warm_lease: None,
        kiln_keys: Vec::new(),
    };
    run.rec.build.state = BuildState::Running;
    run.rec.build.started_at = Some(Utc::now());
    let minutes = run.rec.template_body.effective_build_timeout_minutes() as u64;
    let limit = queue
        .limits
        .timeout_cap_secs
        .map_or(minutes * 60, |cap| cap.min(minutes * 60));
    run.log.kiln(&format!(
        "==> build {id}: template {} revision {}, image {:?}, base {}, timeout {}",
        run.rec.build.template,
        run.rec.build.revision,
        run.rec.build.image_name,
        run.rec.build.base_image,
        human_secs(limit)
    ));
    run.set_sub(SubState::Preparing);
    let outcome = {
        let pipeline = run.pipeline();
        tokio::select! {
            r = pipeline => r,
            _ = token.cancelled() => Err(Failure::Canceled),
            _ = tokio::time::sleep(Duration::from_secs(limit)) => Err(Failure::TimedOut(limit)),
        }
    };
    run.finish(outcome).await;
}

fn human_secs(s: u64) -> String {
    if s.is_multiple_of(60) {
        format!("{} minutes", s / 60)
    } else {
        format!("{s} seconds")
    }
}

impl Run {
    fn save(&self) {
        self.queue.save(&self.rec);
    }

    fn set_sub(&mut self, sub: SubState) {
        self.rec.build.sub_state = Some(sub);
        self.save();
        self.log.kiln(&format!(
            "==> {}",
            serde_json::to_value(sub)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ));
    }

    async fn pipeline(&mut self) -> Result<bool, Failure> {
        let template = self.rec.template_body.clone();
        let plan = self.rec.plan.clone();
        // prepare: the work directory is recorded before it exists, so a restart can remove it.
        self.rec.work_dir = Some(self.work_dir.clone());
        self.save();
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", self.work_dir.display())))?;
        // The base stays in the catalog (not deleted, not replaced) while the build reads it.
        let lease = self
            .queue
            .catalog
            .lease(&self.rec.build.project, &self.rec.build.base_image)
            .await
            .map_err(|e| failed(format!("base image {}: {e}", self.rec.build.base_image)))?;
        let spec = VmSpec {
            base_image: lease.path().to_owned(),
            work_dir: self.work_dir.clone(),
            disk_gb: u64::from(template.min_disk_gb.max(template.vm.os_disk_gb)),
            cpus: template.vm.cpus,
            memory_mb: template.vm.memory_mb,
            user: USER.into(),
        };
        self.base_lease = Some(lease);
        let guest = match self.warm_state(&spec).await {
            Some(warm) => match self.warm_boot(&spec, &warm).await {
                Ok(guest) => guest,
                Err(e) => {
                    self.log
                        .kiln(&format!("warm start failed ({e}); booting cold instead"));
                    if let Some(mut vm) = self.vm.take() {
                        vm.kill().await;
                    }
                    self.warm_lease = None;
                    let _ = std::fs::remove_dir_all(&self.work_dir);
                    std::fs::create_dir_all(&self.work_dir).map_err(|e| {
                        failed(format!("cannot create {}: {e}", self.work_dir.display()))
                    })?;
                    self.cold_boot(&spec).await?
                }
            },
            None => self.cold_boot(&spec).await?,
        };
        self.guest = Some(guest);

        self.set_sub(SubState::Customizing);
        self.run_steps(&plan, SubState::Customizing).await?;

        self.set_sub(SubState::Generalizing);
        self.generalize(&template).await?;
        self.guest = None;
        if let Some(vm) = self.vm.as_mut() {
            self.log.kiln("powering off (ACPI over QMP)");
            vm.powerdown(SHUTDOWN_TIMEOUT)
                .await
                .map_err(|e| failed(format!("shutdown: {e}")))?;
        }
        self.vm = None;
        self.rec.qemu_pid = None;
        self.save();

        if plan.iter().any(|s| s.sub_state() == SubState::Validating) {
            self.set_sub(SubState::Validating);
            self.validate(&plan).await?;
        }

        self.set_sub(SubState::Distributing);
        Ok(self.distribute(&template).await)
    }

    /// The base's saved VM, if there is one this build can resume from; says why not otherwise.
    async fn warm_state(&mut self, spec: &VmSpec) -> Option<WarmState> {
        if !self.queue.limits.warm_start {
            return None;
        }
        let base = &self.rec.build.base_image;
        let Some(warm) = self.queue.warm.find(base, &spec.base_image).await else {
            self.log.kiln(&format!(
                "warm start: {base} has no saved VM (`kiln image warm {base}` makes one); booting cold"
            ));
            return None;
        };
        let why = match warm.misfit(spec.cpus, spec.memory_mb) {
            Some(why) => Some(why),
            None => warm
                .accel(&self.queue.accel, &spec.base_image, &self.work_dir)
                .await
                .err(),
        };
        if let Some(why) = why {
            self.log
                .kiln(&format!("warm start: not possible ({why}); booting cold"));
            return None;
        }
        self.warm_lease = Some(self.queue.warm.lease(base));
        Some(warm)
    }

    /// Boots the VM from scratch and waits for SSH and cloud-init.
    async fn cold_boot(&mut self, spec: &VmSpec) -> Result<Guest, Failure> {
        let prepared = driver::prepare(spec)
            .await
            .map_err(|e| failed(format!("prepare: {e}")))?;
        self.authorized("build key", &prepared.client_key);
        self.pinned(&prepared.host_public_key);
        self.set_sub(SubState::Booting);
        let vm = Vm::boot(&prepared, &self.queue.accel)
            .await
            .map_err(|e| failed(format!("boot: {e}")))?;
        self.record_vm(&vm);
        let vm = self.vm.insert(vm);
        let guest = vm
            .wait_ready(BOOT_TIMEOUT)
            .await
            .map_err(|e| failed(format!("boot: {e}")))?;
        self.log
            .kiln("guest ready (ssh with the pinned host key, cloud-init finished)");
        Ok(guest)
    }

    /// Resumes the base's saved VM on a new overlay and hands it the build's keys.
    async fn warm_boot(
        &mut self,
        spec: &VmSpec,
        warm: &WarmState,
    ) -> Result<Guest, driver::DriverError> {
        let started = std::time::Instant::now();
        let prepared = driver::warm::prepare_from(spec, warm).await?;
        // The saved VM's key was authorized at its first boot (and copied to root by
        // cloud-init); the build's key replaces it for the default user only.
        self.authorized("saved VM's key", &warm.client_key());
        self.authorized("build key", &prepared.client_key);
        self.pinned(&prepared.host_public_key);
        self.set_sub(SubState::Booting);
        self.log.kiln(&format!(
            "warm start: resuming {} from the VM saved {} ({} vCPUs, {} MB, {})",
            self.rec.build.base_image,
            warm.meta.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            warm.meta.cpus,
            warm.meta.memory_mb,
            warm.meta.accel
        ));
        let accel = warm.meta.accel;
        let vm = Vm::resume(&prepared, &warm.memory(), accel, BOOT_TIMEOUT).await?;
        self.queue.accel.set(accel);
        self.record_vm(&vm);
        let vm = self.vm.insert(vm);
        let disk_bytes = (spec.disk_gb << 30).max(warm.meta.disk_bytes);
        let log = self.log.clone();
        let guest = driver::warm::adopt(vm, warm, disk_bytes, BOOT_TIMEOUT, &move |line| {
            log.kiln(&line)
        })
        .await?;
        self.log.kiln(&format!(
            "guest ready in {:.1} s (resumed; build keys installed, host key pinned, clock set)",
            started.elapsed().as_secs_f64()
        ));
        Ok(guest)
    }

    /// Remembers the public half of `private_key` as a key kiln authorized in the guest, and logs
    /// its fingerprint (so anyone can check an image for it).
    fn authorized(&mut self, what: &str, private_key: &std::path::Path) {
        let public = private_key.with_extension("pub");
        match std::fs::read_to_string(&public) {
            Ok(line) => {
                let line = line.trim().to_string();
                let fp = crate::guest::key_fingerprint(&line).unwrap_or_else(|| "?".into());
                self.log.kiln(&format!(
                    "{what} {fp} (removed from every authorized_keys at generalize)"
                ));
                self.kiln_keys.push(line);
            }
            Err(e) => self.log.kiln(&format!(
                "cannot read {} ({e}); generalize removes keys by kiln's comment only",
                public.display()
            )),
        }
    }

    /// Logs the fingerprint of the guest's pinned host key.
    fn pinned(&self, host_public_key: &str) {
        let fp = crate::guest::key_fingerprint(host_public_key).unwrap_or_else(|| "?".into());
        self.log
            .kiln(&format!("host key {fp} (pinned; removed at generalize)"));
    }

    fn record_vm(&mut self, vm: &Vm) {
        self.rec.qemu_pid = Some(vm.pid());
        self.rec.build.accel = Some(vm.accel().as_str().to_string());
        self.log.kiln(&format!(
            "qemu pid {} ({}), ssh on 127.0.0.1:{}",
            vm.pid(),
            vm.accel().as_str(),
            vm.ssh_port()
        ));
        self.save();
    }

    /// Runs the plan's validate steps: its boot test boots the finished disk in a fresh VM (an
    /// overlay on it, with a new seed: what a user's first boot does), then each `validate.in_vm`
    /// check runs there in order. The disk itself is not changed.
    async fn validate(&mut self, plan: &[PlannedStep]) -> Result<(), Failure> {
        let dir = self.validate_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("validate: cannot create {}: {e}", dir.display())))?;
        self.run_steps(plan, SubState::Validating).await?;
        self.guest = None;
        if let Some(mut vm) = self.vm.take() {
            vm.kill().await;
        }
        self.rec.qemu_pid = None;
        self.save();
        let _ = std::fs::remove_dir_all(&dir);
        self.log.kiln("validate: passed");
        Ok(())
    }

    fn validate_dir(&self) -> PathBuf {
        self.work_dir.join("validate")
    }

    /// Boots the finished disk in a fresh VM in the validate directory and connects to it.
    async fn boot_test(&mut self, step: &str, cpus: u32, memory_mb: u32) -> Result<i32, String> {
        let spec = VmSpec {
            base_image: self.work_dir.join("overlay.qcow2"),
            work_dir: self.validate_dir(),
            disk_gb: 0,
            cpus,
            memory_mb,
            user: USER.into(),
        };
        let prepared = driver::prepare(&spec)
            .await
            .map_err(|e| format!("prepare: {e}"))?;
        let vm = Vm::boot(&prepared, &self.queue.accel)
            .await
            .map_err(|e| format!("boot: {e}"))?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            &format!(
                "booting the finished image in a fresh VM (qemu pid {}, {}, ssh on 127.0.0.1:{})",
                vm.pid(),
                vm.accel(),
                vm.ssh_port()
            ),
        );
        self.rec.qemu_pid = Some(vm.pid());
        self.save();
        let vm = self.vm.insert(vm);
        let guest = vm
            .wait_ready(BOOT_TIMEOUT)
            .await
            .map_err(|e| format!("the finished image did not come up: {e}"))?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            "up: ssh login with a new key and host key, cloud-init finished",
        );
        self.guest = Some(guest);
        Ok(0)
    }

    /// Runs, in order, every step of `plan` that belongs to the phase `sub_state`.
    async fn run_steps(
        &mut self,
        plan: &[PlannedStep],
        sub_state: SubState,
    ) -> Result<(), Failure> {
        for (index, planned) in plan.iter().enumerate() {
            if planned.sub_state() == sub_state {
                self.step(index, planned).await?;
            }
        }
        Ok(())
    }

    /// Runs step `index` of the plan, `planned`, with its markers, timing and exit code recorded
    /// in the build's step of that index.
    async fn step(&mut self, index: usize, planned: &PlannedStep) -> Result<(), Failure> {
        let step = recorded_step(&mut self.rec.build.steps, index, planned).map_err(|e| {
            tracing::error!(build = self.rec.build.id, "{e}");
            failed(e)
        })?;
        let name = step.name.clone();
        let kind = step.kind;
        step.state = StepState::Running;
        step.started_at = Some(Utc::now());
        self.rec.build.step = Some(index);
        self.save();
        let total = self.rec.build.steps.len();
        self.log.write(
            LogStream::Kiln,
            Some(&name),
            &format!("==> step {}/{total}: {name} ({kind})", index + 1),
        );
        let started = std::time::Instant::now();
        let result = self.run_action(&name, &planned.action).await;
        let step = &mut self.rec.build.steps[index];
        step.finished_at = Some(Utc::now());
        let secs = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(0) => {
                step.state = StepState::Succeeded;
                step.exit_code = Some(0);
                self.log.write(
                    LogStream::Kiln,
                    Some(&name),
                    &format!("<== step {name} succeeded in {secs:.1} s"),
                );
                Ok(())
            }
            Ok(code) => {
                step.state = StepState::Failed;
                step.exit_code = Some(code);
                let message = format!("step {} {name:?} failed with exit code {code}", index + 1);
                self.log.write(
                    LogStream::Kiln,
                    Some(&name),
                    &format!("<== {message} after {secs:.1} s"),
                );
                Err(Failure::Failed {
                    message,
                    customizer: true,
                })
            }
            Err(e) => {
                step.state = StepState::Failed;
                let message = format!("step {} {name:?} failed: {e}", index + 1);
                self.log
                    .write(LogStream::Kiln, Some(&name), &format!("<== {message}"));
                Err(Failure::Failed {
                    message,
                    customizer: true,
                })
            }
        };
        self.save();
        outcome
    }

    fn guest(&self) -> Result<Guest, String> {
        self.guest
            .clone()
            .ok_or_else(|| "no connection to the guest".to_string())
    }

    /// Runs `command` in the guest, streaming its lines into the log under `step`.
    async fn exec(&self, step: &str, command: &str) -> Result<i32, String> {
        let guest = self.guest()?;
        let log = self.log.clone();
        let step_name = step.to_string();
        guest
            .exec(
                command,
                move |stream, line| {
                    let s = match stream {
                        Stream::Stdout => LogStream::Stdout,
                        Stream::Stderr => LogStream::Stderr,
                    };
                    log.write(s, Some(&step_name), line);
                },
                &self.token,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Uploads `script` and runs it; its shebang picks the interpreter.
    async fn run_script(&mut self, step: &str, script: Vec<u8>) -> Result<i32, String> {
        let remote = format!("/tmp/kiln-step-{}.sh", sanitize(step));
        self.guest()?
            .upload_bytes(script, &remote, 0o755)
            .await
            .map_err(|e| e.to_string())?;
        let code = self.exec(step, &remote).await?;
        let _ = self.exec(step, &format!("rm -f {remote}")).await;
        Ok(code)
    }

    /// Does what a step's `action` says.
    async fn run_action(&mut self, step: &str, action: &Action) -> Result<i32, String> {
        match action {
            Action::RunScript { script } => {
                self.run_script(step, script.clone().into_bytes()).await
            }
            Action::RunLocalScript { path, sha256 } => {
                let data =
                    read_local(path, self.rec.started_by.as_ref(), sha256.as_deref(), None).await?;
                self.run_script(step, data).await
            }
            Action::RunRemoteScript { url, sha256 } => {
                let remote = format!("/tmp/kiln-step-{}.sh", sanitize(step));
                let fetch = fetch_in_guest(url, &remote, sha256.as_deref(), None);
                self.exec(step, &format!("{fetch} && chmod 755 {remote} && {remote}"))
                    .await
            }
            Action::UploadFile {
                source,
                destination,
                sha256,
            } => {
                let data = read_local(
                    source,
                    self.rec.started_by.as_ref(),
                    sha256.as_deref(),
                    Some(MAX_FILE_BYTES),
                )
                .await?;
                let n = data.len();
                self.guest()?
                    .upload_bytes(data, destination, 0o644)
                    .await
                    .map_err(|e| e.to_string())?;
                self.log.write(
                    LogStream::Kiln,
                    Some(step),
                    &format!("uploaded {source} to {destination} ({n} bytes)"),
                );
                Ok(0)
            }
            Action::FetchFile {
                url,
                destination,
                sha256,
            } => {
                let fetch =
                    fetch_in_guest(url, destination, sha256.as_deref(), Some(MAX_FILE_BYTES));
                self.exec(step, &fetch).await
            }
            Action::Reboot { timeout_secs } => {
                self.reboot(step, Duration::from_secs(*timeout_secs)).await
            }
            Action::BootTest { cpus, memory_mb } => self.boot_test(step, *cpus, *memory_mb).await,
            Action::Fail { message } => Err(message.clone()),
        }
    }

    /// Reboots the guest and waits until it is back with a new boot id.
    async fn reboot(&mut self, step: &str, limit: Duration) -> Result<i32, String> {
        let guest = self.guest()?;
        let before = capture(&guest, BOOT_ID, &self.token).await?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            &format!(
                "rebooting (boot id {before}); waiting up to {}",
                human_secs(limit.as_secs())
            ),
        );
        // The connection drops while the command runs: that is the reboot, not a failure.
        let _ = guest
            .exec("sudo systemctl reboot", |_, _| {}, &self.token)
            .await;
        self.guest = None;
        drop(guest);
        let deadline = tokio::time::Instant::now() + limit;
        let vm = self.vm.as_mut().ok_or("the VM is gone")?;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the guest did not come back within {}",
                    human_secs(limit.as_secs())
                ));
            }
            let guest = match vm.wait_ready(left).await {
                Ok(g) => g,
                Err(e @ driver::DriverError::QemuExited { .. }) => {
                    return Err(format!("after reboot: {e}"))
                }
                // The old system accepted a login and then went down under us: try again.
                Err(e) => {
                    tracing::debug!("waiting for the rebooted guest: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let after = capture(&guest, BOOT_ID, &self.token).await?;
            if !after.is_empty() && after != before {
                self.log.write(
                    LogStream::Kiln,
                    Some(step),
                    &format!("back up (boot id {after})"),
                );
                self.guest = Some(guest);
                return Ok(0);
            }
            // Still the old system on its way down.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn generalize(&mut self, template: &kiln_shared::Template) -> Result<(), Failure> {
        let custom = "test -f /tmp/DeprovisioningScript.sh";
        let has_custom = self
            .exec("generalize", custom)
            .await
            .map_err(|e| failed(format!("generalize: {e}")))?
            == 0;
        if template.generalize.skip {
            self.log.kiln(
                "generalize: skipped by the template (build key and host keys are removed anyway)",
            );
        } else if has_custom {
            self.log
                .kiln("generalize: running /tmp/DeprovisioningScript.sh");
            let code = self
                .exec("generalize", "sudo bash /tmp/DeprovisioningScript.sh && sudo rm -f /tmp/DeprovisioningScript.sh")
                .await
                .map_err(|e| failed(format!("generalize: {e}")))?;
            if code != 0 {
                return Err(failed(format!(
                    "generalize: /tmp/DeprovisioningScript.sh failed with exit code {code}"
                )));
            }
        } else {
            let code = self
                .exec("generalize", DEPROVISION)
                .await
                .map_err(|e| failed(format!("generalize: {e}")))?;
            if code != 0 {
                return Err(failed(format!(
                    "generalize: deprovisioning failed with exit code {code}"
                )));
            }
        }
        // Whatever the template says, the build's keys never reach the image.
        let code = self
            .exec("generalize", &remove_kiln_keys(&self.kiln_keys))
            .await
            .map_err(|e| failed(format!("generalize: {e}")))?;
        if code != 0 {
            return Err(failed(format!(
                "generalize: removing the build keys failed with exit code {code}"
            )));
        }
        Ok(())
    }

    /// Publishes every target; true when all succeeded.
    async fn distribute(&mut self, template: &kiln_shared::Template) -> bool {
        let Some(overlay) = self.work_dir.join("overlay.qcow2").canonicalize().ok() else {
            self.log.kiln("distribute: the build disk is missing");
            return false;
        };
        let mut all_ok = true;
        for target in &template.distribute {
            let name = target.run_output_name().to_string();
            let result = match target {
                Distribute::Image { .. } => {
                    self.log.kiln(&format!(
                        "distribute {name}: image {:?} into the catalog (zstd qcow2)",
                        self.rec.build.image_name
                    ));
                    self.queue
                        .catalog
                        .publish_build(&overlay, &self.rec.build, template)
                        .await
                        .map(|img| RunOutput {
                            run_output_name: name.clone(),
                            kind: "image".into(),
                            artifact_id: img.id,
                            path: img.path,
                            size: img.file_size,
                            sha256: img.sha256,
                            error: None,
                        })
                        .map_err(|e| e.to_string())
                }
                Distribute::Export {
                    format,
                    path,
                    overwrite,
                    ..
                } => {
                    self.log
                        .kiln(&format!("distribute {name}: export {format} to {path}"));
                    self.queue
                        .catalog
                        .export(
                            &overlay,
                            format,
                            std::path::Path::new(path),
                            self.rec.started_by.as_ref(),
                            *overwrite,
                        )
                        .await
                        .map(|(p, size, sha256)| RunOutput {
                            run_output_name: name.clone(),
                            kind: "export".into(),
                            artifact_id: p.display().to_string(),
                            path: p.display().to_string(),
                            size,
                            sha256,
                            error: None,
                        })
                        .map_err(|e| e.to_string())
                }
                Distribute::Gallery { .. } => {
                    Err("gallery targets are not supported yet".to_string())
                }
            };
            let output = match result {
                Ok(o) => {
                    self.log.kiln(&format!(
                        "distribute {name}: {} ({} bytes, sha256 {})",
                        o.path, o.size, o.sha256
                    ));
                    o
                }
                Err(e) => {
                    all_ok = false;
                    self.log.kiln(&format!("distribute {name}: failed: {e}"));
                    RunOutput {
                        run_output_name: name.clone(),
                        kind: match target {
                            Distribute::Image { .. } => "image",
                            Distribute::Gallery { .. } => "gallery",
                            Distribute::Export { .. } => "export",
                        }
                        .into(),
                        artifact_id: String::new(),
                        path: String::new(),
                        size: 0,
                        sha256: String::new(),
                        error: Some(e),
                    }
                }
            };
            self.rec.build.run_outputs.push(output);
            self.save();
        }
        all_ok
    }

    /// Records the outcome, then cleans up: always, idempotently.
    async fn finish(mut self, outcome: Result<bool, Failure>) {
        let id = self.rec.build.id;
        let handling = &self.rec.template_body.error_handling;
        // A failed step keeps its VM when the template says so for that phase.
        let abort = if self.rec.build.sub_state == Some(SubState::Validating) {
            handling.on_validation_error == OnError::Abort
        } else {
            handling.on_customizer_error == OnError::Abort
        };
        let (state, message, keep) = match outcome {
            Ok(true) => (BuildState::Succeeded, "image built".to_string(), false),
            Ok(false) => {
                let any = self.rec.build.run_outputs.iter().any(|o| o.error.is_none());
                let state = if any {
                    BuildState::PartiallySucceeded
                } else {
                    BuildState::Failed
                };
                (
                    state,
                    "some distribute targets failed; see run_outputs".to_string(),
                    false,
                )
            }
            Err(Failure::Failed {
                message,
                customizer,
            }) => (
                BuildState::Failed,
                message,
                customizer && abort && self.vm.is_some(),
            ),
            Err(Failure::Canceled) => (BuildState::Canceled, "canceled".to_string(), false),
            Err(Failure::TimedOut(secs)) => (
                BuildState::TimedOut,
                format!(
                    "build exceeded its timeout of {} (build_timeout_minutes)",
                    human_secs(secs)
                ),
                false,
            ),
        };
        if matches!(state, BuildState::Canceled | BuildState::TimedOut) {
            self.rec.build.sub_state = Some(SubState::Canceling);
            self.save();
            self.log.kiln(&format!("==> canceling: {message}"));
        }
        for s in &mut self.rec.build.steps {
            if s.state == StepState::Running {
                s.state = StepState::Canceled;
                s.finished_at = Some(Utc::now());
            } else if s.state == StepState::Pending && state != BuildState::Succeeded {
                s.state = StepState::Skipped;
            }
        }
        self.guest = None;
        if keep {
            if let Some(vm) = self.vm.take() {
                let attach = vm.attach_command();
                self.log.kiln(&format!(
                    "{} = \"abort\": the VM is kept; attach with: {attach}",
                    if self.rec.build.sub_state == Some(SubState::Validating) {
                        "on_validation_error"
                    } else {
                        "on_customizer_error"
                    }
                ));
                self.log
                    .kiln(&format!("end it with: kiln build cancel {id}"));
                self.rec.build.attach_command = Some(attach);
                lock(&self.queue.state).kept.insert(
                    id,
                    KeptVm {
                        vm,
                        work_dir: self.work_dir.clone(),
                        id,
                    },
                );
            }
        } else {
            if let Some(mut vm) = self.vm.take() {
                vm.kill().await;
            }
            let _ = std::fs::copy(
                self.work_dir.join("serial.log"),
                self.queue.logs.serial_path(id),
            );
            if self.work_dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&self.work_dir) {
                    tracing::warn!(build = id, "cannot remove {}: {e}", self.work_dir.display());
                }
            }
            self.rec.work_dir = None;
            self.rec.qemu_pid = None;
        }
        self.rec.build.state = state;
        self.rec.build.sub_state = None;
        self.rec.build.finished_at = Some(Utc::now());
        self.rec.build.message = message.clone();
        self.log
            .kiln(&format!("==> build {id} {}: {message}", state.as_str()));
        self.save();
        self.queue.logs.close(id);
    }
}

/// The build's record of step `index`, which the plan says is `planned`. A plan and a record
/// that disagree are kiln's bug; the step fails rather than being skipped or run blind.
fn recorded_step<'a>(
    steps: &'a mut [Step],
    index: usize,
    planned: &PlannedStep,
) -> Result<&'a mut Step, String> {
    let count = steps.len();
    match steps.get_mut(index) {
        Some(step) if step.name == planned.name && step.kind == planned.kind => Ok(step),
        Some(step) => Err(format!(
            "internal error: step {} is {:?} ({}) in the plan but {:?} ({}) in the build record",
            index + 1,
            planned.name,
            planned.kind,
            step.name,
            step.kind
        )),
        None => Err(format!(
            "internal error: step {} {:?} of the plan is not among the build's {count} steps",
            index + 1,
            planned.name
        )),
    }
}

const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";

/// Runs `command` and returns its trimmed stdout.
async fn capture(
    guest: &Guest,
    command: &str,
    token: &CancellationToken,
) -> Result<String, String> {
    let out = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    guest
        .exec(
            command,
            move |stream, line| {
                if matches!(stream, Stream::Stdout) {
                    lock(&sink).push_str(line.trim());
                }
            },
            token,
        )
        .await
        .map_err(|e| e.to_string())?;
    let text = lock(&out).clone();
    Ok(text)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

use crate::guest::shell_quote;

/// A guest command that downloads `url` to `dest` and checks its hash and size.
fn fetch_in_guest(url: &str, dest: &str, sha256: Option<&str>, max: Option<u64>) -> String {
    let mut cmd = "curl -fsSL --proto =https".to_string();
    if let Some(max) = max {
        cmd.push_str(&format!(" --max-filesize {max}"));
    }
    cmd.push_str(&format!(" -o {} {}", shell_quote(dest), shell_quote(url)));
    if let Some(h) = sha256 {
        cmd.push_str(&format!(
            " && echo {}  {} | sha256sum -c -",
            h.to_ascii_lowercase(),
            shell_quote(dest)
        ));
    }
    cmd
}

/// Reads a local file a template names, checking its size and hash. For a build another user
/// started, the file is opened as that user (see [`crate::as_user::open_file`]); either way it
/// must be a regular file, judged on the file opened.
async fn read_local(
    path: &str,
    started_by: Option<&StartedBy>,
    sha256: Option<&str>,
    max: Option<u64>,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let too_big = |len: u64, max: u64| {
        format!("{path} is {len} bytes or more; the limit is {max} bytes (20 MB)")
    };
    let user = started_by.map(StartedBy::user).filter(|u| u.is_other());
    let file = crate::as_user::open_file(user, std::path::Path::new(path))
        .await
        .map_err(|e| match user {
            Some(_) => format!("{e} (who started the build), so kilnd will not read it for them"),
            None => e.to_string(),
        })?;
    let limit = max.map_or(u64::MAX, |m| m + 1);
    let data = tokio::task::spawn_blocking(move || {
        let mut data = Vec::new();
        file.take(limit).read_to_end(&mut data).map(|_| data)
    })
    .await
    .map_err(|e| format!("reading {path} failed: {e}"))?
    .map_err(|e| format!("cannot read {path}: {e}"))?;
    if let Some(max) = max.filter(|m| data.len() as u64 > *m) {
        return Err(too_big(data.len() as u64, max));
    }
    if let Some(want) = sha256 {
        let got = format!("{:x}", Sha256::digest(&data));
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "{path}: sha256 is {got}, the template expects {want}"
            ));
        }
    }
    Ok(data)
}

/// The default deprovisioning: what makes a VM an image others can boot as their own.
const DEPROVISION: &str = r#"set -e
sudo cloud-init clean --logs --seed
sudo rm -rf /var/lib/cloud/instances /var/lib/cloud/instance
sudo truncate -s 0 /etc/machine-id
sudo rm -f /var/lib/dbus/machine-id
sudo rm -f /root/.bash_history "$HOME/.bash_history"
sudo apt-get clean
sudo rm -f /tmp/kiln-step-*.sh
sudo fstrim -a >/dev/null 2>&1 || true
"#;

/// The guest command that removes every key in `keys` (public key lines) from every
/// authorized_keys file of the guest, and every SSH host key (`assets/remove-kiln-keys.sh`). The
/// session stays open: sshd has its keys loaded.
fn remove_kiln_keys(keys: &[String]) -> String {
    let blobs: Vec<String> = keys
        .iter()
        .filter_map(|k| k.split_whitespace().nth(1))
        .map(shell_quote)
        .collect();
    format!(
        "sudo bash -c {} remove-kiln-keys {}",
        shell_quote(REMOVE_KILN_KEYS),
        blobs.join(" ")
    )
}

const REMOVE_KILN_KEYS: &str = include_str!("../../assets/remove-kiln-keys.sh");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A plan step the build record does not have fails the build as kiln's bug: never skipped.
    #[test]
    fn a_step_the_record_lacks_is_an_internal_error() {
        let template = kiln_shared::Template::from_toml(
            "applications = [\"nginx\"]\nvalidate = {boot_test = true}",
        )
        .unwrap();
        let plan = super::super::plan::plan(&template, &kiln_shared::apps::AppCatalog::builtin());
        let mut steps: Vec<Step> = plan.iter().map(PlannedStep::pending).collect();
        for (i, p) in plan.iter().enumerate() {
            assert_eq!(recorded_step(&mut steps, i, p).unwrap().name, p.name);
        }
        let err = recorded_step(&mut steps, 2, &plan[1]).unwrap_err();
        assert_eq!(
            err,
            "internal error: step 3 \"boot-test\" of the plan is not among the build's 2 steps"
        );
        let err = recorded_step(&mut steps, 0, &plan[1]).unwrap_err();
        assert_eq!(
            err,
            "internal error: step 1 is \"boot-test\" (validate) in the plan but \"app-nginx\" \
             (application) in the build record"
        );
    }

    /// Every file under `root` (relative path, content), symlinks not followed.
    fn tree(root: &std::path::Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    dirs.push(e.path());
                } else if t.is_file() {
                    let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                    let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into();
                    out.push((rel, text));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn kiln_keys_are_removed_from_every_authorized_keys_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let (build, saved, legacy) = ("AAAAbuildKey1", "AAAAsavedVmKey2", "AAAAoldKiln3");
        let own = "ssh-ed25519 AAAAusersOwnKey alice@laptop";
        put(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n\
             alice:x:1001:1001::/home/alice:/bin/bash\nsvc:x:998:998::/srv/svc:/usr/sbin/nologin\n",
        );
        put(
            "etc/ssh/sshd_config",
            "Port 22\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/keys/%u\n",
        );
        // What cloud-init's disable_root writes for root, from the saved VM's first boot.
        put(
            "root/.ssh/authorized_keys",
            &format!("no-port-forwarding,command=\"echo 'Please login as the user \\\"debian\\\"'\" ssh-ed25519 {saved} kiln-build\n"),
        );
        put(
            "home/debian/.ssh/authorized_keys",
            &format!("ssh-ed25519 {build} kiln-build\n{own}\n"),
        );
        put(
            "etc/ssh/keys/alice",
            &format!("ssh-ed25519 {build} copied\n"),
        );
        put("home/alice/.ssh/authorized_keys", &format!("{own}\n"));
        put(
            "var/backups/authorized_keys.old",
            &format!("ssh-ed25519 {saved}\n"),
        );
        put(
            "srv/svc/.ssh/authorized_keys2",
            &format!("ssh-ed25519 {legacy} kiln-build\n"),
        );
        put(
            "var/lib/cloud/instances/i-1/user-data.txt",
            "ssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n",
        );
        put("var/lib/cloud/instances/i-1/boot-finished", "done\n");
        put("etc/ssh/ssh_host_ed25519_key", "private");
        put("etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAAhost");

        let keys = [
            format!("ssh-ed25519 {build} kiln-build"),
            format!("ssh-ed25519 {saved} kiln-build"),
        ];
        // The guest runs `sudo bash -c SCRIPT NAME BLOB...`; the same words here, without sudo.
        let cmd = remove_kiln_keys(&keys);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd.replacen("sudo ", "", 1))
            .env("KILN_ROOT", root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let files = tree(root);
        for (rel, text) in &files {
            for k in [
                build,
                saved,
                legacy,
                "kiln-build",
                "PRIVATE KEY",
                "AAAAhost",
            ] {
                assert!(!text.contains(k), "{k} left in {rel}: {text}\n{stdout}");
            }
        }
        let names: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        for gone in [
            "root/.ssh/authorized_keys",
            "etc/ssh/keys/alice",
            "var/backups/authorized_keys.old",
            "srv/svc/.ssh/authorized_keys2",
            "var/lib/cloud/instances/i-1/user-data.txt",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
        ] {
            assert!(!names.contains(&gone), "{gone} should be gone: {names:?}");
        }
        // Keys that are not kiln's stay, in files that keep their mode.
        let debian = root.join("home/debian/.ssh/authorized_keys");
        assert_eq!(
            std::fs::read_to_string(&debian).unwrap(),
            format!("{own}\n")
        );
        assert_eq!(
            std::fs::metadata(&debian).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let alice = std::fs::read_to_string(root.join("home/alice/.ssh/authorized_keys"));
        assert_eq!(alice.unwrap(), format!("{own}\n"));
        assert!(names.contains(&"var/lib/cloud/instances/i-1/boot-finished"));
    }

    #[tokio::test]
    async fn local_files_are_read_only_as_far_as_the_builds_starter_may() {
        // Files another user cannot read take root to make.
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let file = |name: &str, m| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            mode(&p, m);
            p.display().to_string()
        };
        let open = file("open.txt", 0o644);
        let secret = file("secret.txt", 0o600);
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let hidden = dir.path().join("private");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("f.txt"), "f").unwrap();
        mode(&hidden.join("f.txt"), 0o644);
        mode(&hidden, 0o700);

        let other = StartedBy {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        };
        assert_eq!(
            read_local(&open, Some(&other), None, None).await.unwrap(),
            b"open.txt"
        );
        for path in [
            secret.clone(),
            link.display().to_string(),
            hidden.join("f.txt").display().to_string(),
        ] {
            let err = read_local(&path, Some(&other), None, None)
                .await
                .unwrap_err();
            assert!(err.contains("uid 4242") && err.contains(&path), "{err}");
        }
        // kilnd's own builds (and old records without a starter) read what kilnd may.
        let root = StartedBy {
            uid: 0,
            gid: 0,
            gids: vec![0],
        };
        assert!(read_local(&secret, Some(&root), None, None).await.is_ok());
        assert!(read_local(&secret, None, None, None).await.is_ok());
        // The size limit holds as the user too.
        let big = file("big.txt", 0o644);
        let err = read_local(&big, Some(&other), None, Some(3))
            .await
            .unwrap_err();
        assert!(err.contains("the limit is 3 bytes"), "{err}");
    }

    /// A template's file sources are regular files, whoever started the build: never a device
    /// that reads forever or kilnd's own process state.
    #[tokio::test]
    async fn local_sources_are_regular_files() {
        let root = StartedBy {
            uid: 0,
            gid: 0,
            gids: vec![0],
        };
        let other = StartedBy {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        };
        let mut starters = vec![None, Some(&root)];
        if kiln_shared::paths::current_uid() == 0 {
            starters.push(Some(&other));
        }
        for by in starters {
            for (path, what) in [
                ("/dev/zero", "is not a regular file"),
                (
                    "/proc/self/environ",
                    "is a file of a kernel pseudo-filesystem",
                ),
                (
                    "/proc/self/cmdline",
                    "is a file of a kernel pseudo-filesystem",
                ),
            ] {
                let err = read_local(path, by, None, Some(MAX_FILE_BYTES))
                    .await
                    .unwrap_err();
                assert!(err.starts_with(&format!("{path} {what}")), "{err}");
            }
        }
    }
}
