//! One `qemu-system-x86_64` process: its command line, start (QMP up, SSH forward bound), saving
//! and loading its memory, ACPI powerdown over QMP, and kill. Readiness is in `ready`, the
//! accelerator choice in `accel`.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use super::serial::tail_lines;
use super::{qmp, Accel, AccelProbe, Prepared};
use crate::driver::DriverError;
use crate::guest::shell_quote;

/// How long QEMU may take to start serving QMP.
const QMP_STARTUP: Duration = Duration::from_secs(30);
pub(super) const SSH_POLL: Duration = Duration::from_millis(250);
/// Tries with a new port when another process took the one we picked.
const PORT_TRIES: u32 = 5;
pub(super) const SERIAL_TAIL_LINES: usize = 20;

/// A running `qemu-system-x86_64`. Dropping it kills the process.
pub struct Vm {
    pub(super) child: Child,
    pub(super) pid: u32,
    pub(super) port: u16,
    pub(super) accel: Accel,
    pub(super) prepared: Prepared,
    known_hosts: PathBuf,
    pub(super) stderr_file: PathBuf,
    pub(super) status: Option<ExitStatus>,
    pub(super) started: Instant,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("pid", &self.pid)
            .field("port", &self.port)
            .field("accel", &self.accel)
            .field("work_dir", &self.prepared.work_dir())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// QEMU's option parser splits on commas; a literal comma in a value is written twice.
fn qemu_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.to_string_lossy().replace(',', ",,"));
    s.push(suffix);
    s
}

pub(super) fn free_port() -> Result<u16, DriverError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(DriverError::NoPort)?;
    Ok(listener.local_addr().map_err(DriverError::NoPort)?.port())
}

pub(super) fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// What the first seconds of a KVM boot showed.
enum StartFailure {
    Exited(ExitStatus),
    Qmp(String),
}

impl Vm {
    /// Starts QEMU on `prepared`: KVM when the probe says it works (trying it on the first boot,
    /// per docs/notes/bootstrap.md), else TCG; an SSH forward on a free 127.0.0.1 port.
    pub async fn boot(prepared: &Prepared, probe: &AccelProbe) -> Result<Vm, DriverError> {
        match probe.settle(prepared).await {
            (_, Some(vm)) => Ok(vm),
            (accel, None) => Vm::start(prepared, accel, false).await,
        }
    }

    /// Starts QEMU waiting for an incoming migration (`-incoming defer`) with the same machine
    /// as the VM whose memory was saved to `state`, loads that memory (`migrate-incoming` from
    /// the file) and resumes the guest. The disk must be an overlay on the saved VM's disk.
    pub async fn resume(
        prepared: &Prepared,
        state: &Path,
        accel: Accel,
        timeout: Duration,
    ) -> Result<Vm, DriverError> {
        let mut vm = Vm::start(prepared, accel, true).await?;
        let uri = format!("file:{}", state.display());
        let loaded = async {
            vm.qmp("migrate-incoming", serde_json::json!({ "uri": uri }))
                .await?;
            vm.wait_migration("loading the saved memory", timeout)
                .await?;
            vm.qmp("cont", Value::Null).await
        }
        .await;
        match loaded {
            Ok(_) => {
                tracing::info!(
                    pid = vm.pid,
                    elapsed_ms = vm.started.elapsed().as_millis() as u64,
                    state = %state.display(),
                    "guest resumed from saved memory"
                );
                Ok(vm)
            }
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    /// Stops the guest, saves its memory to `state` (QMP `migrate` to a `file:` URI, which
    /// also flushes the disks) and ends qemu. The disk is left exactly as the memory expects it.
    pub async fn save(&mut self, state: &Path, timeout: Duration) -> Result<(), DriverError> {
        self.qmp("stop", Value::Null).await?;
        let uri = format!("file:{}", state.display());
        self.qmp("migrate", serde_json::json!({ "uri": uri }))
            .await?;
        self.wait_migration("saving the memory", timeout).await?;
        let _ = self.qmp("quit", Value::Null).await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) => self.status = Some(status),
            _ => self.kill().await,
        }
        Ok(())
    }

    /// Polls `query-migrate` until the migration completes; fails when it fails, qemu exits or
    /// `timeout` passes.
    async fn wait_migration(&mut self, doing: &str, timeout: Duration) -> Result<(), DriverError> {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.qmp("query-migrate", Value::Null).await?;
            match qmp::migration_done(&reply) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(why) => {
                    return Err(self.qmp_error(format!(
                        "{doing} failed: {why} (qemu stderr: {})",
                        tail_lines(&self.stderr_file, 5)
                    )))
                }
            }
            if Instant::now() >= deadline {
                return Err(self.qmp_error(format!(
                    "{doing} did not finish within {} s (status {})",
                    timeout.as_secs(),
                    reply["status"]
                )));
            }
            self.pause(Duration::from_millis(50), "while migrating")
                .await?;
        }
    }

    /// Runs one QMP command on this VM.
    pub(crate) async fn qmp(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> Result<Value, DriverError> {
        match qmp::execute_with(&self.prepared.qmp_socket, command, arguments).await {
            Ok(v) => Ok(v),
            Err(message) => {
                if let Ok(Some(status)) = self.child.try_wait() {
                    self.status = Some(status);
                    return Err(self.exited_error(status, "during a QMP command"));
                }
                Err(self.qmp_error(format!("{command}: {message}")))
            }
        }
    }

    fn qmp_error(&self, message: String) -> DriverError {
        DriverError::Qmp {
            socket: self.prepared.qmp_socket.clone(),
            message,
        }
    }

    /// Spawns QEMU and waits until it serves QMP; retries with a new port when the forward's
    /// port was taken between picking and binding it.
    pub(super) async fn start(
        prepared: &Prepared,
        accel: Accel,
        incoming: bool,
    ) -> Result<Vm, DriverError> {
        let work_dir = prepared.work_dir().to_owned();
        let known_hosts = work_dir.join("known_hosts");
        let stderr_file = work_dir.join("qemu.stderr");
        let mut tries = 0;
        loop {
            tries += 1;
            let port = free_port()?;
            let line = format!("[127.0.0.1]:{port} {}\n", prepared.host_public_key);
            std::fs::write(&known_hosts, line).map_err(|source| DriverError::Io {
                doing: "writing",
                path: known_hosts.clone(),
                source,
            })?;
            for stale in [&prepared.qmp_socket, &prepared.serial_log] {
                let _ = std::fs::remove_file(stale);
            }
            let stderr = std::fs::File::create(&stderr_file).map_err(|source| DriverError::Io {
                doing: "creating",
                path: stderr_file.clone(),
                source,
            })?;
            let args = command_line(prepared, accel, port, incoming);
            let child = Command::new("qemu-system-x86_64")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                // Its own process group: a Ctrl-C meant for kilnd must not kill the VM behind
                // the daemon's back; kilnd ends it (kill_on_drop, powerdown, kill).
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| DriverError::ToolMissing {
                    tool: "qemu-system-x86_64",
                    source,
                })?;
            let pid = child.id().unwrap_or(0);
            let mut vm = Vm {
                child,
                pid,
                port,
                accel,
                prepared: prepared.clone(),
                known_hosts: known_hosts.clone(),
                stderr_file: stderr_file.clone(),
                status: None,
                started: Instant::now(),
            };
            match vm.wait_qmp().await {
                Ok(()) => {
                    tracing::info!(
                        pid,
                        port,
                        accel = accel.as_str(),
                        work_dir = %work_dir.display(),
                        qemu_args = ?args,
                        "qemu started"
                    );
                    return Ok(vm);
                }
                Err(StartFailure::Exited(status)) => {
                    let stderr = tail_lines(&stderr_file, 10);
                    if stderr.contains("host forwarding") && tries < PORT_TRIES {
                        tracing::info!(port, "port taken before qemu bound it; trying another");
                        continue;
                    }
                    return Err(vm.exited_error(status, "while starting"));
                }
                Err(StartFailure::Qmp(message)) => {
                    vm.kill().await;
                    return Err(DriverError::Qmp {
                        socket: prepared.qmp_socket.clone(),
                        message: format!(
                            "qemu did not serve QMP within {} s: {message}",
                            QMP_STARTUP.as_secs()
                        ),
                    });
                }
            }
        }
    }

    async fn wait_qmp(&mut self) -> Result<(), StartFailure> {
        let deadline = tokio::time::Instant::now() + QMP_STARTUP;
        loop {
            let last = match qmp::execute(&self.prepared.qmp_socket, "query-status").await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            tokio::select! {
                status = self.child.wait() => {
                    let status = status.unwrap_or_else(|_| ExitStatus::from_raw(9));
                    self.status = Some(status);
                    return Err(StartFailure::Exited(status));
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartFailure::Qmp(last));
            }
        }
    }

    pub(super) fn exited_error(&self, status: ExitStatus, phase: &'static str) -> DriverError {
        DriverError::QemuExited {
            accel: self.accel,
            phase,
            status: status_text(status),
            stderr: tail_lines(&self.stderr_file, 10),
            serial: tail_lines(&self.prepared.serial_log, SERIAL_TAIL_LINES),
            work_dir: self.prepared.work_dir().to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn ssh_port(&self) -> u16 {
        self.port
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The known_hosts file pinning the guest's host key for this VM's port.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }
    /// Resolves when qemu has exited (at once if it already has), with its exit status. Meant
    /// for `select!` next to guest work, to notice a dead VM within a second.
    pub async fn exited(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                // Only possible when someone else reaped the process; it is gone either way.
                tracing::warn!(pid = self.pid, "waiting for qemu failed: {e}");
                ExitStatus::from_raw(9)
            }
        };
        self.status = Some(status);
        status
    }

    /// Presses the ACPI power button (QMP `system_powerdown`) and waits up to `timeout` for the
    /// guest to power off; then kills qemu. Returns after the process is reaped, with an error
    /// when it had to be killed or was already gone.
    pub async fn powerdown(&mut self, timeout: Duration) -> Result<(), DriverError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.status = Some(status);
        }
        if let Some(status) = self.status {
            return Err(self.exited_error(status, "before the powerdown"));
        }
        let started = Instant::now();
        if let Err(message) = qmp::execute(&self.prepared.qmp_socket, "system_powerdown").await {
            self.kill().await;
            return Err(DriverError::Qmp {
                socket: self.prepared.qmp_socket.clone(),
                message: format!("system_powerdown: {message} (qemu was killed)"),
            });
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                tracing::info!(
                    pid = self.pid,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    status = %status_text(status),
                    "guest powered off"
                );
                Ok(())
            }
            Ok(Err(e)) => {
                self.kill().await;
                Err(DriverError::Io {
                    doing: "waiting for qemu to exit after the powerdown of",
                    path: self.prepared.work_dir().to_owned(),
                    source: e,
                })
            }
            Err(_) => {
                self.kill().await;
                tracing::warn!(pid = self.pid, "guest ignored the powerdown; qemu killed");
                Err(DriverError::PowerdownTimeout {
                    secs: timeout.as_secs(),
                    serial: tail_lines(&self.prepared.serial_log, SERIAL_TAIL_LINES),
                    serial_file: self.prepared.serial_log.clone(),
                })
            }
        }
    }

    /// SIGKILL and reap; does nothing when qemu is already gone.
    pub async fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = self.child.start_kill();
        match self.child.wait().await {
            Ok(status) => {
                self.status = Some(status);
                tracing::info!(pid = self.pid, "qemu killed");
            }
            Err(e) => tracing::warn!(pid = self.pid, "reaping killed qemu failed: {e}"),
        }
    }

    /// A command line a person can paste to log in to the VM (e.g. when a failed build keeps
    /// it running).
    pub fn attach_command(&self) -> String {
        format!(
            "ssh -i {} -p {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes {}@127.0.0.1",
            shell_quote(&self.prepared.client_key.to_string_lossy()),
            self.port,
            shell_quote(&self.known_hosts.to_string_lossy()),
            shell_quote(&self.prepared.user),
        )
    }
}

/// The QEMU command line of a build VM. A VM resumed from saved memory (`incoming`) must get
/// the same machine and devices as the one that was saved, so both come from here.
pub(super) fn command_line(
    prepared: &Prepared,
    accel: Accel,
    port: u16,
    incoming: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = accel.args().iter().map(OsString::from).collect();
    let plain = [
        "-machine".to_owned(),
        "pc".to_owned(),
        "-smp".to_owned(),
        prepared.cpus.to_string(),
        "-m".to_owned(),
        prepared.memory_mb.to_string(),
        "-nodefaults".to_owned(),
        "-display".to_owned(),
        "none".to_owned(),
        "-no-user-config".to_owned(),
    ];
    args.extend(plain.into_iter().map(OsString::from));
    args.push("-serial".into());
    args.push(qemu_path("file:", &prepared.serial_log, ""));
    args.push("-qmp".into());
    args.push(qemu_path(
        "unix:",
        &prepared.qmp_socket,
        ",server=on,wait=off",
    ));
    args.push("-netdev".into());
    args.push(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22").into());
    args.push("-device".into());
    args.push("virtio-net-pci,netdev=n0".into());
    args.push("-drive".into());
    args.push(qemu_path(
        "file=",
        &prepared.overlay,
        ",if=virtio,format=qcow2,discard=unmap,id=disk0",
    ));
    args.push("-drive".into());
    args.push(qemu_path(
        "file=",
        &prepared.seed,
        ",if=virtio,format=raw,readonly=on",
    ));
    // A new generation id on every start: a guest resumed from saved memory reseeds its random
    // number generator instead of repeating the saved VM's stream.
    args.push("-device".into());
    args.push("vmgenid,guid=auto".into());
    if incoming {
        args.push("-incoming".into());
        args.push("defer".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_attach_commands() {
        assert_eq!(
            shell_quote("/var/lib/kiln/b-1/key"),
            "/var/lib/kiln/b-1/key"
        );
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn commas_in_paths_are_doubled_for_qemu() {
        assert_eq!(
            qemu_path("file=", Path::new("/a,b/o.qcow2"), ",if=virtio"),
            OsString::from("file=/a,,b/o.qcow2,if=virtio")
        );
    }
}
