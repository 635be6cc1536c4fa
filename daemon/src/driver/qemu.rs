//! The QEMU process of one build: command line, KVM-then-TCG detection, readiness (SSH with the
//! pinned host key, then cloud-init), ACPI powerdown over QMP, kill, and stale-process cleanup.

use crate::guest::shell_quote;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{qmp, DriverError, Prepared};
use crate::guest::{Guest, GuestError};
use crate::sync::lock;

/// How long a KVM boot may take to show the kernel banner before KVM counts as broken (under
/// working KVM it shows in 1-2 s; see docs/notes/bootstrap.md).
const KVM_PROBE: Duration = Duration::from_secs(10);
/// How long QEMU may take to start serving QMP.
const QMP_STARTUP: Duration = Duration::from_secs(30);
const SSH_POLL: Duration = Duration::from_millis(250);
/// Tries with a new port when another process took the one we picked.
const PORT_TRIES: u32 = 5;
const SERIAL_TAIL_LINES: usize = 20;

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

    fn args(self) -> &'static [&'static str] {
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

/// A running `qemu-system-x86_64`. Dropping it kills the process.
pub struct Vm {
    child: Child,
    pid: u32,
    port: u16,
    accel: Accel,
    prepared: Prepared,
    known_hosts: PathBuf,
    stderr_file: PathBuf,
    status: Option<ExitStatus>,
    started: Instant,
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

fn free_port() -> Result<u16, DriverError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(DriverError::NoPort)?;
    Ok(listener.local_addr().map_err(DriverError::NoPort)?.port())
}

fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// The last `n` lines of a text file, with terminal escape sequences and control characters
/// removed (GRUB and systemd paint the serial console).
pub(crate) fn tail_lines(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::from("(none)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut data = Vec::new();
    let _ = file.read_to_end(&mut data);
    let text = strip_escapes(&String::from_utf8_lossy(&data));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::from("(none)");
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|data| data.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
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
        let accel = match probe.current() {
            Some(accel) => accel,
            None => {
                let _probing = probe.probing.lock().await;
                match probe.current() {
                    Some(accel) => accel,
                    None => {
                        if let Some(vm) = Vm::try_kvm(prepared).await {
                            probe.set(Accel::Kvm);
                            return Ok(vm);
                        }
                        probe.set(Accel::Tcg);
                        Accel::Tcg
                    }
                }
            }
        };
        Vm::start(prepared, accel, false).await
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
            match reply["status"].as_str().unwrap_or("none") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(self.qmp_error(format!(
                        "{doing} failed: {} (qemu stderr: {})",
                        reply["error-desc"].as_str().unwrap_or("no reason given"),
                        tail_lines(&self.stderr_file, 5)
                    )))
                }
                _ => {}
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

    /// Settles the probe's verdict without keeping a VM: boots `prepared` (a throwaway overlay)
    /// under KVM until the kernel banner shows, then kills it. For a build that resumes saved
    /// memory and must know the accelerator before it starts.
    pub(crate) async fn settle_accel(prepared: &Prepared, probe: &AccelProbe) -> Accel {
        if let Some(accel) = probe.current() {
            return accel;
        }
        let _probing = probe.probing.lock().await;
        if let Some(accel) = probe.current() {
            return accel;
        }
        let accel = match Vm::try_kvm(prepared).await {
            Some(mut vm) => {
                vm.kill().await;
                Accel::Kvm
            }
            None => Accel::Tcg,
        };
        probe.set(accel);
        accel
    }

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

    /// Spawns QEMU and waits until it serves QMP; retries with a new port when the forward's
    /// port was taken between picking and binding it.
    async fn start(prepared: &Prepared, accel: Accel, incoming: bool) -> Result<Vm, DriverError> {
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

    fn exited_error(&self, status: ExitStatus, phase: &'static str) -> DriverError {
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
    async fn pause(&mut self, pause: Duration, phase: &'static str) -> Result<(), DriverError> {
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
            "cloud-init status --wait --long",
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
fn command_line(prepared: &Prepared, accel: Accel, port: u16, incoming: bool) -> Vec<OsString> {
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

/// Kills a qemu left behind by a dead daemon: only if `pid` is a `qemu-system-*` process whose
/// command line mentions `work_dir`, so a reused pid is never hit. Returns whether it killed,
/// after the process is gone (waits up to 5 s for its new parent to reap it).
pub fn kill_stale(pid: u32, work_dir: &Path) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_qemu = args
        .first()
        .and_then(|a| Path::new(OsStr::from_bytes(a)).file_name())
        .is_some_and(|n| n.as_bytes().starts_with(b"qemu-system"));
    let mut dirs = vec![work_dir.to_owned()];
    if let Ok(canonical) = std::fs::canonicalize(work_dir) {
        dirs.push(canonical);
    }
    let needles: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| {
            let mut n = d.as_os_str().as_bytes().to_vec();
            n.push(b'/');
            n
        })
        .collect();
    let mentions = args.iter().any(|a| {
        needles
            .iter()
            .any(|n| a.windows(n.len()).any(|w| w == n.as_slice()))
    });
    if !is_qemu || !mentions {
        return false;
    }
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::kill_process(target, rustix::process::Signal::KILL).is_err() {
        return false;
    }
    tracing::info!(pid, work_dir = %work_dir.display(), "killed a stale qemu");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && crate::leftovers::alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped_from_serial_text() {
        assert_eq!(
            strip_escapes("\x1b[0m\x1b[30m\x1b[47mBooting\x1b[K `Debian'\r\nok\x07"),
            "Booting `Debian'\nok"
        );
    }

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

    #[test]
    fn kill_stale_ignores_processes_that_are_not_our_qemu() {
        assert!(!kill_stale(std::process::id(), Path::new("/")));
        assert!(!kill_stale(1, Path::new("/nonexistent-kiln-dir")));
        assert!(!kill_stale(0, Path::new("/")));
    }
}
