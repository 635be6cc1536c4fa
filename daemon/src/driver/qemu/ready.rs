//! When a booted VM is ready: an SSH login with the pinned host key works and cloud-init has
//! finished. Every wait gives up at once when qemu exits.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::serial::tail_lines;
use super::vm::{SERIAL_TAIL_LINES, SSH_POLL};
use super::Vm;
use crate::driver::DriverError;
use crate::guest::{Guest, GuestError};
use crate::sync::lock;

impl Vm {
    /// Polls SSH every 250 ms until a login with the pinned host key works, then waits for
    /// `cloud-init status --wait` (0 ready; 2 ready with a warning; anything else fails with its
    /// output). Fails at once when qemu exits or the host key does not match; gives up after
    /// `timeout` (counted from this call). A connection lost during the cloud-init wait (a guest
    /// still on its way down after a reboot) goes back to polling. Also usable after a reboot.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Guest, DriverError> {
        let called = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = String::from("none yet");
        loop {
            let guest = self.login(deadline, timeout, &mut last_error).await?;
            let cloud_init_started = Instant::now();
            match self.cloud_init(&guest, deadline, timeout).await? {
                Ok((status, output)) => {
                    match status {
                        0 => {}
                        2 => tracing::warn!(
                            "cloud-init finished with recoverable errors (degraded); going on:\n{output}"
                        ),
                        code => return Err(DriverError::CloudInit { code, output }),
                    }
                    tracing::info!(
                        cloud_init_ms = cloud_init_started.elapsed().as_millis() as u64,
                        waited_ms = called.elapsed().as_millis() as u64,
                        since_boot_ms = self.started.elapsed().as_millis() as u64,
                        accel = self.accel.as_str(),
                        "guest ready (cloud-init done)"
                    );
                    return Ok(guest);
                }
                Err(lost) => {
                    tracing::info!(
                        "SSH connection lost while waiting for cloud-init ({lost}); polling again"
                    );
                    last_error = lost.to_string();
                    self.pause(SSH_POLL, "while waiting for SSH").await?;
                }
            }
        }
    }

    /// Sleeps, unless qemu exits first.
    pub(super) async fn pause(
        &mut self,
        pause: Duration,
        phase: &'static str,
    ) -> Result<(), DriverError> {
        tokio::select! {
            status = self.child.wait() => {
                let status = status.unwrap_or_else(|_| ExitStatus::from_raw(9));
                self.status = Some(status);
                Err(self.exited_error(status, phase))
            }
            _ = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Tries an SSH login every [`SSH_POLL`] until one works.
    async fn login(
        &mut self,
        deadline: tokio::time::Instant,
        timeout: Duration,
        last_error: &mut String,
    ) -> Result<Guest, DriverError> {
        let key = self.prepared.client_key.clone();
        let pinned = self.prepared.host_public_key.clone();
        self.login_with(&key, &pinned, deadline, timeout, last_error)
            .await
    }

    /// Polls SSH every 250 ms until a login with `key` to a guest presenting `pinned` works
    /// (no cloud-init wait: for a guest that was ready when its memory was saved).
    pub async fn connect_with(
        &mut self,
        key: &Path,
        pinned: &str,
        timeout: Duration,
    ) -> Result<Guest, DriverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = String::from("none yet");
        self.login_with(key, pinned, deadline, timeout, &mut last_error)
            .await
    }

    async fn login_with(
        &mut self,
        key: &Path,
        pinned: &str,
        deadline: tokio::time::Instant,
        timeout: Duration,
        last_error: &mut String,
    ) -> Result<Guest, DriverError> {
        let port = self.port;
        let user = self.prepared.user.clone();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = Guest::connect(port, &user, key, pinned);
            tokio::select! {
                status = self.child.wait() => {
                    let status = status.unwrap_or_else(|_| ExitStatus::from_raw(9));
                    self.status = Some(status);
                    return Err(self.exited_error(status, "while waiting for SSH"));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.timeout_error("waiting for an SSH login", timeout, last_error.clone()));
                }
                result = attempt => match result {
                    Ok(guest) => {
                        tracing::info!(
                            attempts,
                            since_boot_ms = self.started.elapsed().as_millis() as u64,
                            "ssh login with the pinned host key works"
                        );
                        return Ok(guest);
                    }
                    Err(e @ GuestError::HostKeyMismatch { .. }) => return Err(e.into()),
                    Err(e @ GuestError::BadPinnedKey { .. }) => return Err(e.into()),
                    Err(e) => *last_error = e.to_string(),
                },
            }
            self.pause(SSH_POLL, "while waiting for SSH").await?;
        }
    }

    /// Runs `cloud-init status --wait --long`: `Ok(Ok((exit code, output)))` when it ran,
    /// `Ok(Err(e))` when the connection was lost meanwhile.
    async fn cloud_init(
        &mut self,
        guest: &Guest,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Result<(i32, String), GuestError>, DriverError> {
        let output = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = output.clone();
        let cancel = CancellationToken::new();
        let exec = guest.exec(
            self.prepared.os.cloud_init_wait,
            move |_, line| {
                // `--wait` prints a dot every few seconds while it waits.
                let line = line.trim_start_matches('.');
                if !line.is_empty() {
                    lock(&sink).push(line.to_owned());
                }
            },
            &cancel,
        );
        let status = tokio::select! {
            status = self.child.wait() => {
                let status = status.unwrap_or_else(|_| ExitStatus::from_raw(9));
                self.status = Some(status);
                return Err(self.exited_error(status, "while waiting for cloud-init"));
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(self.timeout_error(
                    "waiting for cloud-init",
                    timeout,
                    "none: SSH login worked, cloud-init is still running".into(),
                ));
            }
            result = exec => match result {
                Ok(status) => status,
                Err(lost) => return Ok(Err(lost)),
            },
        };
        let output = lock(&output).join("\n");
        Ok(Ok((status, output)))
    }

    fn timeout_error(
        &self,
        phase: &'static str,
        timeout: Duration,
        last_error: String,
    ) -> DriverError {
        DriverError::ReadyTimeout {
            phase,
            secs: timeout.as_secs(),
            last_error,
            serial: tail_lines(&self.prepared.serial_log, SERIAL_TAIL_LINES),
            serial_file: self.prepared.serial_log.clone(),
        }
    }
}
