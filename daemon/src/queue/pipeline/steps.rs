//! Running the plan's steps: each step's markers, timing and exit code in the build record, and
//! what each `Action` does in the guest (scripts, files, downloads, reboots, the boot test).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_shared::build::{LogStream, Step, StepState, SubState};

use super::local::{read_local, MAX_FILE_BYTES};
use super::{failed, human_secs, Failure, Run, BOOT_TIMEOUT};
use crate::driver::VmSpec;
use crate::guest::{Shell, Stream};
use crate::queue::plan::{Action, PlannedStep};
use crate::sync::lock;

impl Run {
    /// Runs, in order, every step of `plan` that belongs to the phase `sub_state`.
    pub(super) async fn run_steps(
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

    fn shell(&self) -> Result<Arc<dyn Shell>, String> {
        self.shell
            .clone()
            .ok_or_else(|| "no connection to the guest".to_string())
    }

    /// Runs `command` in the guest, streaming its lines into the log under `step`.
    pub(super) async fn exec(&self, step: &str, command: &str) -> Result<i32, String> {
        let shell = self.shell()?;
        let log = self.log.clone();
        let step_name = step.to_string();
        shell
            .run(
                command,
                Box::new(move |stream, line| {
                    let s = match stream {
                        Stream::Stdout => LogStream::Stdout,
                        Stream::Stderr => LogStream::Stderr,
                    };
                    log.write(s, Some(&step_name), line);
                }),
                &self.token,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Uploads `script` and runs it; its shebang picks the interpreter.
    async fn run_script(&mut self, step: &str, script: Vec<u8>) -> Result<i32, String> {
        let remote = (self.os.step_script)(&sanitize(step));
        self.shell()?
            .write_file(script, &remote, 0o755)
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
                let remote = (self.os.step_script)(&sanitize(step));
                let fetch = (self.os.fetch)(url, &remote, sha256.as_deref(), None);
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
                self.shell()?
                    .write_file(data, destination, 0o644)
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
                    (self.os.fetch)(url, destination, sha256.as_deref(), Some(MAX_FILE_BYTES));
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
        let shell = self.shell()?;
        let boot_id = self.os.boot_id;
        let before = capture(&*shell, boot_id, &self.token).await?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            &format!(
                "rebooting (boot id {before}); waiting up to {}",
                human_secs(limit.as_secs())
            ),
        );
        // The connection drops while the command runs: that is the reboot, not a failure.
        let _ = shell
            .run(self.os.reboot, Box::new(|_, _| {}), &self.token)
            .await;
        self.shell = None;
        drop(shell);
        let deadline = tokio::time::Instant::now() + limit;
        let machine = self.machine.as_mut().ok_or("the VM is gone")?;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the guest did not come back within {}",
                    human_secs(limit.as_secs())
                ));
            }
            let shell = match machine.wait_ready(left).await {
                Ok(s) => s,
                Err(e) if e.vm_gone() => return Err(format!("after reboot: {e}")),
                // The old system accepted a login and then went down under us: try again.
                Err(e) => {
                    tracing::debug!("waiting for the rebooted guest: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let after = capture(&*shell, boot_id, &self.token).await?;
            if !after.is_empty() && after != before {
                self.log.write(
                    LogStream::Kiln,
                    Some(step),
                    &format!("back up (boot id {after})"),
                );
                self.shell = Some(shell);
                return Ok(0);
            }
            // Still the old system on its way down.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs the plan's validate steps: its boot test boots the finished disk in a fresh VM (an
    /// overlay on it, with a new seed: what a user's first boot does), then each `validate.in_vm`
    /// check runs there in order. The disk itself is not changed.
    pub(super) async fn validate(&mut self, plan: &[PlannedStep]) -> Result<(), Failure> {
        let dir = self.validate_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("validate: cannot create {}: {e}", dir.display())))?;
        self.run_steps(plan, SubState::Validating).await?;
        self.shell = None;
        if let Some(mut machine) = self.machine.take() {
            machine.kill().await;
        }
        self.rec.vm = None;
        self.save();
        let _ = std::fs::remove_dir_all(&dir);
        self.log.kiln("validate: passed");
        Ok(())
    }

    fn validate_dir(&self) -> std::path::PathBuf {
        self.work_dir.join("validate")
    }

    /// Boots the finished disk in a fresh machine in the validate directory and connects to it.
    async fn boot_test(&mut self, step: &str, cpus: u32, memory_mb: u32) -> Result<i32, String> {
        let disk = self.disk.clone().ok_or("the build disk is missing")?;
        let spec = VmSpec {
            base_image: disk,
            work_dir: self.validate_dir(),
            disk_gb: 0,
            cpus,
            memory_mb,
            user: self.user.clone(),
            os: self.os,
        };
        let machine = self
            .queue
            .driver
            .prepare(&spec, self.say())
            .await
            .map_err(|e| format!("prepare: {e}"))?;
        let machine = self.machine.insert(machine);
        machine.boot().await.map_err(|e| format!("boot: {e}"))?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            &format!(
                "booting the finished image in a fresh VM ({})",
                machine.describe()
            ),
        );
        self.rec.vm = machine.handle();
        self.save();
        let machine = self.machine.as_mut().ok_or("the VM is gone")?;
        let shell = machine
            .wait_ready(BOOT_TIMEOUT)
            .await
            .map_err(|e| format!("the finished image did not come up: {e}"))?;
        self.log.write(
            LogStream::Kiln,
            Some(step),
            "up: ssh login with a new key and host key, cloud-init finished",
        );
        self.shell = Some(shell);
        Ok(0)
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

/// Runs `command` and returns its trimmed stdout.
async fn capture(
    shell: &dyn Shell,
    command: &str,
    token: &tokio_util::sync::CancellationToken,
) -> Result<String, String> {
    let out = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    shell
        .run(
            command,
            Box::new(move |stream, line| {
                if matches!(stream, Stream::Stdout) {
                    lock(&sink).push_str(line.trim());
                }
            }),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A plan step the build record does not have fails the build as kiln's bug: never skipped.
    #[test]
    fn a_step_the_record_lacks_is_an_internal_error() {
        let template = kiln_shared::Template::from_toml(
            "applications = [\"nginx\"]\nvalidate = {boot_test = true}",
        )
        .unwrap();
        let plan = crate::queue::plan::plan(&template, &kiln_shared::apps::AppCatalog::builtin());
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
}
