//! The pipeline of one build: prepare, boot, connect, run the plan's customize steps, generalize,
//! shut down, run its validate steps, distribute, and always clean up. It runs the build's plan
//! as recorded, step by step, and never reads steps from the template; it reaches the VM only
//! through the [`VmDriver`](crate::driver::VmDriver) seam and types into the guest only what the
//! OS family's table ([`crate::guest::os`]) says. Cancellation and the timeout drop the pipeline
//! future; every resource it made is held in `Run`, so cleanup finds it whatever the moment.

mod distribute;
mod local;
mod steps;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_shared::build::{BuildState, StepState, SubState};
use kiln_shared::template::OnError;
use tokio_util::sync::CancellationToken;

use super::Queue;
use crate::catalog::ImageLease;
use crate::driver::{DriverError, Machine, Say, VmSpec};
use crate::guest::os::GuestOs;
use crate::guest::Shell;
use crate::logs::{BuildLog, Logs};
use crate::store::BuildRecord;

/// First boot, cloud-init included; TCG on a busy machine needs minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// How a pipeline left its build: ended (terminal, nothing left running), or failed with its VM
/// kept for a person to look at (`on_*_error = "abort"`), until `build.cancel`.
pub enum Outcome {
    Ended,
    Kept(KeptVm),
}

/// A VM kept after a failed step; ended by `build.cancel` or kilnd's shutdown.
pub struct KeptVm {
    machine: Box<dyn Machine>,
    work_dir: PathBuf,
    id: u64,
}

impl KeptVm {
    /// Ends the VM, keeps its serial console with the build's logs, removes its files.
    pub async fn end(mut self, logs: &Logs) {
        self.machine.kill().await;
        let _ = std::fs::copy(self.machine.serial_log(), logs.serial_path(self.id));
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
    os: &'static GuestOs,
    /// The base image's default user: who the build and its boot tests log in as.
    user: String,
    machine: Option<Box<dyn Machine>>,
    shell: Option<Arc<dyn Shell>>,
    /// The build VM's disk, once it is powered off: what validate boots and distribute publishes.
    disk: Option<PathBuf>,
    work_dir: PathBuf,
    base_lease: Option<ImageLease>,
    /// Public key lines kiln authorized in this guest: generalize removes each wherever it is.
    kiln_keys: Vec<String>,
}

/// Runs build `id` to a terminal state.
pub async fn run(queue: Arc<Queue>, id: u64, token: CancellationToken) -> Outcome {
    let rec = match queue.store.get_build(id) {
        Ok(Some(r)) if !r.build.state.is_terminal() => r,
        _ => return Outcome::Ended,
    };
    let log = queue.logs.open(id);
    let work_dir = queue.builds_dir.join(id.to_string());
    let os = crate::guest::os::of(&rec.template_body.os);
    let mut run = Run {
        queue: queue.clone(),
        rec,
        log,
        token: token.clone(),
        os: os.clone().unwrap_or(&crate::guest::os::DEBIAN),
        user: String::new(),
        machine: None,
        shell: None,
        disk: None,
        work_dir,
        base_lease: None,
        kiln_keys: Vec::new(),
    };
    run.rec.build.state = BuildState::Running;
    run.rec.build.started_at = Some(Utc::now());
    let minutes = run.rec.template_body.effective_build_timeout_minutes() as u64;
    let limit = queue
        .limits
        .timeout_cap_secs
        .map_or(minutes * 60, |cap| cap.min(minutes * 60));
    if let Some(by) = &run.rec.build.triggered_by {
        run.log.kiln(&format!(
            "==> triggered: {} has a new version, {} (image {}); this build is on it",
            by.image, by.version, by.image_id
        ));
    }
    run.log.kiln(&format!(
        "==> build {id}: template {} revision {}, image {:?}, base {}, timeout {}",
        run.rec.build.template,
        run.rec.build.revision,
        run.rec.build.image_name,
        run.rec.build.base_image,
        human_secs(limit)
    ));
    run.set_sub(SubState::Preparing);
    let outcome = match os {
        Err(e) => Err(failed(e)),
        Ok(_) => {
            let pipeline = run.pipeline();
            // Cancel and timeout first: a step that fails *because* it was canceled (its command
            // killed) must not make the build `failed`.
            tokio::select! {
                biased;
                _ = token.cancelled() => Err(Failure::Canceled),
                _ = tokio::time::sleep(Duration::from_secs(limit)) => Err(Failure::TimedOut(limit)),
                // The cancel may land while the pipeline is being polled, and a step then fail
                // of it before the branch above is looked at again.
                r = pipeline => match r {
                    Err(Failure::Failed { .. }) if token.is_cancelled() => Err(Failure::Canceled),
                    r => r,
                },
            }
        }
    };
    run.finish(outcome).await
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

    /// The base image's family and user, which the images this build publishes inherit.
    fn login(&self) -> crate::store::Login {
        crate::store::Login {
            family: self.os.id.to_string(),
            default_user: self.user.clone(),
        }
    }

    /// Where the driver's lines go: the build log.
    fn say(&self) -> Say {
        let log = self.log.clone();
        Arc::new(move |line: String| log.kiln(&line))
    }

    fn create_work_dir(&self) -> Result<(), Failure> {
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", self.work_dir.display())))
    }

    async fn pipeline(&mut self) -> Result<bool, Failure> {
        let template = self.rec.template_body.clone();
        let plan = self.rec.plan.clone();
        // prepare: the work directory is recorded before it exists, so a restart can remove it.
        self.rec.work_dir = Some(self.work_dir.clone());
        self.save();
        self.create_work_dir()?;
        // The base stays in the catalog (not deleted, not replaced) while the build reads it.
        let lease = self
            .queue
            .catalog
            .lease(&self.rec.build.project, &self.rec.build.base_image)
            .await
            .map_err(|e| failed(format!("base image {}: {e}", self.rec.build.base_image)))?;
        // The base image says which guest commands and which user: a build inherits both.
        self.os = crate::guest::os::of_family(&lease.record().family)
            .map_err(|e| failed(format!("base image {}: {e}", self.rec.build.base_image)))?;
        self.user = lease.record().default_user.clone();
        self.log.kiln(&format!(
            "base image {}: OS {}, family {}, logging in as {}",
            self.rec.build.base_image,
            lease.record().os,
            self.os.id,
            self.user
        ));
        let spec = VmSpec {
            base_image: lease.path().to_owned(),
            work_dir: self.work_dir.clone(),
            disk_gb: u64::from(template.min_disk_gb.max(template.vm.os_disk_gb)),
            cpus: template.vm.cpus,
            memory_mb: template.vm.memory_mb,
            user: self.user.clone(),
            os: self.os,
        };
        self.base_lease = Some(lease);
        let shell = match self.warm_machine(&spec).await {
            Some(machine) => match self.start(machine).await {
                Ok(shell) => shell,
                Err(e) => {
                    self.log
                        .kiln(&format!("warm start failed ({e}); booting cold instead"));
                    if let Some(mut machine) = self.machine.take() {
                        machine.kill().await;
                    }
                    let _ = std::fs::remove_dir_all(&self.work_dir);
                    self.create_work_dir()?;
                    self.cold_boot(&spec).await?
                }
            },
            None => self.cold_boot(&spec).await?,
        };
        self.shell = Some(shell);

        self.set_sub(SubState::Customizing);
        self.run_steps(&plan, SubState::Customizing).await?;

        self.set_sub(SubState::Generalizing);
        self.generalize(&template).await?;
        self.shell = None;
        if let Some(machine) = self.machine.as_mut() {
            self.log.kiln("powering off (ACPI)");
            machine
                .powerdown(SHUTDOWN_TIMEOUT)
                .await
                .map_err(|e| failed(format!("shutdown: {e}")))?;
            self.disk = Some(machine.disk().to_owned());
        }
        self.machine = None;
        self.rec.vm = None;
        self.save();

        if plan.iter().any(|s| s.sub_state() == SubState::Validating) {
            self.set_sub(SubState::Validating);
            self.validate(&plan).await?;
        }

        self.set_sub(SubState::Distributing);
        Ok(self.distribute(&template).await)
    }

    /// A machine resuming the base's saved VM, when warm starts are on and the driver can;
    /// says why not otherwise.
    async fn warm_machine(&mut self, spec: &VmSpec) -> Option<Box<dyn Machine>> {
        if !self.queue.limits.warm_start {
            return None;
        }
        let base = self.rec.build.base_image.clone();
        match self
            .queue
            .driver
            .prepare_warm(spec, &base, self.say())
            .await
        {
            Ok(machine) => Some(machine),
            Err(why) => {
                self.log.kiln(&format!("warm start: {why}; booting cold"));
                None
            }
        }
    }

    /// Boots a fresh machine from the base and waits for it.
    async fn cold_boot(&mut self, spec: &VmSpec) -> Result<Arc<dyn Shell>, Failure> {
        let machine = self
            .queue
            .driver
            .prepare(spec, self.say())
            .await
            .map_err(|e| failed(format!("prepare: {e}")))?;
        self.start(machine)
            .await
            .map_err(|e| failed(format!("boot: {e}")))
    }

    /// Boots `machine` as the build's VM and waits until its guest is ready.
    async fn start(&mut self, machine: Box<dyn Machine>) -> Result<Arc<dyn Shell>, DriverError> {
        for key in machine.kiln_keys() {
            let fp = crate::guest::key_fingerprint(&key.public).unwrap_or_else(|| "?".into());
            self.log.kiln(&format!(
                "{} {fp} (removed from every authorized_keys at generalize)",
                key.what
            ));
            self.kiln_keys.push(key.public);
        }
        let host = machine.host_public_key();
        let fp = crate::guest::key_fingerprint(&host).unwrap_or_else(|| "?".into());
        self.log
            .kiln(&format!("host key {fp} (pinned; removed at generalize)"));
        self.rec.console = Some(machine.serial_log().to_owned());
        self.machine = Some(machine);
        self.set_sub(SubState::Booting);
        let started = Instant::now();
        self.machine_mut()?.boot().await?;
        self.record_vm();
        let machine = self.machine_mut()?;
        let shell = machine.wait_ready(BOOT_TIMEOUT).await?;
        let how = machine.how_ready();
        self.log.kiln(&format!(
            "guest ready in {:.1} s ({how})",
            started.elapsed().as_secs_f64()
        ));
        Ok(shell)
    }

    fn machine_mut(&mut self) -> Result<&mut Box<dyn Machine>, DriverError> {
        self.machine
            .as_mut()
            .ok_or_else(|| DriverError::Other("the VM is gone".into()))
    }

    /// Records the machine's handle (so a restarted kilnd can end it) and logs what runs.
    fn record_vm(&mut self) {
        let Some(machine) = self.machine.as_ref() else {
            return;
        };
        self.rec.vm = machine.handle();
        self.rec.build.accel = machine.accel().map(String::from);
        self.log.kiln(&machine.describe());
        self.save();
    }

    async fn generalize(&mut self, template: &kiln_shared::Template) -> Result<(), Failure> {
        let os = self.os;
        let in_guest = |e: String| failed(format!("generalize: {e}"));
        let has_custom = self
            .exec("generalize", os.has_custom_deprovision)
            .await
            .map_err(in_guest)?
            == 0;
        if template.generalize.skip {
            self.log.kiln(
                "generalize: skipped by the template (build key and host keys are removed anyway)",
            );
        } else if has_custom {
            self.log
                .kiln("generalize: running /tmp/DeprovisioningScript.sh");
            let code = self
                .exec("generalize", os.custom_deprovision)
                .await
                .map_err(in_guest)?;
            if code != 0 {
                return Err(failed(format!(
                    "generalize: /tmp/DeprovisioningScript.sh failed with exit code {code}"
                )));
            }
        } else {
            let code = self
                .exec("generalize", os.deprovision)
                .await
                .map_err(in_guest)?;
            if code != 0 {
                return Err(failed(format!(
                    "generalize: deprovisioning failed with exit code {code}"
                )));
            }
        }
        // Whatever the template says, the build's keys never reach the image.
        let code = self
            .exec("generalize", &(os.remove_kiln_keys)(&self.kiln_keys))
            .await
            .map_err(in_guest)?;
        if code != 0 {
            return Err(failed(format!(
                "generalize: removing the build keys failed with exit code {code}"
            )));
        }
        Ok(())
    }

    /// Records the outcome, then cleans up: always, idempotently.
    async fn finish(mut self, outcome: Result<bool, Failure>) -> Outcome {
        let id = self.rec.build.id;
        let handling = &self.rec.template_body.error_handling;
        // A failed step keeps its VM when the template says so for that phase.
        let validating = self.rec.build.sub_state == Some(SubState::Validating);
        let abort = if validating {
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
                customizer && abort && self.machine.is_some(),
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
        self.shell = None;
        let mut kept = None;
        match self.machine.take() {
            Some(machine) if keep => {
                let attach = machine.attach_command();
                self.log.kiln(&format!(
                    "{} = \"abort\": the VM is kept; attach with: {attach}",
                    if validating {
                        "on_validation_error"
                    } else {
                        "on_customizer_error"
                    }
                ));
                self.log
                    .kiln(&format!("end it with: kiln build cancel {id}"));
                self.rec.build.attach_command = Some(attach);
                kept = Some(KeptVm {
                    machine,
                    work_dir: self.work_dir.clone(),
                    id,
                });
            }
            machine => {
                if let Some(mut machine) = machine {
                    machine.kill().await;
                }
                if let Some(console) = self.rec.console.take() {
                    let _ = std::fs::copy(console, self.queue.logs.serial_path(id));
                }
                if self.work_dir.exists() {
                    if let Err(e) = std::fs::remove_dir_all(&self.work_dir) {
                        tracing::warn!(
                            build = id,
                            "cannot remove {}: {e}",
                            self.work_dir.display()
                        );
                    }
                }
                self.rec.work_dir = None;
                self.rec.vm = None;
            }
        }
        self.rec.build.state = state;
        self.rec.build.sub_state = None;
        self.rec.build.finished_at = Some(Utc::now());
        self.rec.build.message = message.clone();
        self.log
            .kiln(&format!("==> build {id} {}: {message}", state.as_str()));
        self.save();
        self.queue.logs.close(id);
        match kept {
            Some(kept) => Outcome::Kept(kept),
            None => Outcome::Ended,
        }
    }
}
