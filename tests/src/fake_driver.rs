//! A scripted VM driver for the queue's state-machine tests. It boots nothing: a "VM" is a
//! `sleep` process (so a test can see whether the queue ends every one it started) and a small
//! real qcow2 disk (so distribute publishes a real image). It never stands for the claim that
//! builds work: that is the real-VM tests' job (builds.rs, vm.rs).
//!
//! Phases can be held: a machine that reaches a held phase waits there until it is released
//! (or its build is canceled or times out, which drops the wait). Scripts in the guest act on
//! their text: `exit N` ends with N, `hold` waits forever, anything else prints and exits 0.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_daemon::driver::{DriverError, KilnKey, Machine, Say, VmDriver, VmHandle, VmSpec};
use kiln_daemon::guest::{GuestError, OnLine, Shell, Stream};
use tokio_util::sync::CancellationToken;

/// The argument of every fake VM's `sleep`, to tell them from other processes.
const MARK: &str = "86399.5";

/// The fake driver; the test keeps an `Arc` of it to hold phases and read what happened.
#[derive(Default)]
pub struct FakeDriver {
    s: Arc<State>,
}

/// What the driver and its machines share.
#[derive(Default)]
struct State {
    held: Mutex<HashSet<&'static str>>,
    /// Every VM process ever started, by pid.
    started: Mutex<Vec<u32>>,
    /// VMs up (booted, not yet ended) right now, and the most there ever were at once.
    up: AtomicU64,
    most_up: AtomicU64,
    /// What happened, in order: "prepare builds/1", "boot 1234", "reap 1234", ...
    events: Mutex<Vec<String>>,
    /// Set before a simulated crash: machines dropped now leave their process running, as a
    /// SIGKILLed kilnd would.
    crashing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeDriver {
    pub fn new() -> Arc<FakeDriver> {
        Arc::new(FakeDriver::default())
    }

    /// Machines that reach `phase` wait there: "prepare", "boot", "ready", "generalize",
    /// "powerdown"; "distribute" makes the next disks unreadable until canceled.
    pub fn hold(&self, phase: &'static str) {
        lock(&self.s.held).insert(phase);
    }

    pub fn release(&self, phase: &'static str) {
        lock(&self.s.held).remove(phase);
    }

    pub fn crash(&self) {
        self.s.crashing.store(true, Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<String> {
        lock(&self.s.events).clone()
    }

    pub fn most_up(&self) -> u64 {
        self.s.most_up.load(Ordering::SeqCst)
    }

    /// The VM processes started so far that still run.
    pub fn alive(&self) -> Vec<u32> {
        lock(&self.s.started)
            .iter()
            .copied()
            .filter(|&pid| is_fake_vm(pid))
            .collect()
    }
}

impl State {
    fn note(&self, event: String) {
        lock(&self.events).push(event);
    }

    async fn pass(&self, phase: &str) {
        while lock(&self.held).contains(phase) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether `pid` is a fake VM's `sleep` that has not exited (zombies count as exited).
fn is_fake_vm(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|r| r.trim_start().starts_with('Z'));
    String::from_utf8_lossy(&cmdline).contains(MARK) && !zombie
}

fn qemu_img(args: &[&str]) -> Result<(), DriverError> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| DriverError::Other(format!("qemu-img: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DriverError::Other(format!(
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[async_trait::async_trait]
impl VmDriver for FakeDriver {
    async fn prepare(&self, spec: &VmSpec, say: Say) -> Result<Box<dyn Machine>, DriverError> {
        let s = &self.s;
        s.note(format!("prepare {}", spec.work_dir.display()));
        s.pass("prepare").await;
        let disk = spec.work_dir.join("disk.qcow2");
        let disk_str = disk.to_str().unwrap_or_default();
        if lock(&s.held).contains("distribute") {
            // A disk whose backing file is a FIFO nobody writes: whatever reads it waits.
            let fifo = spec.work_dir.join("backing.fifo");
            let ok = Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(DriverError::Other("mkfifo failed".into()));
            }
            let fifo = fifo.to_str().unwrap_or_default();
            qemu_img(&[
                "create", "-q", "-f", "qcow2", "-u", "-b", fifo, "-F", "raw", disk_str, "64M",
            ])?;
        } else {
            qemu_img(&["create", "-q", "-f", "qcow2", disk_str, "64M"])?;
        }
        say("fake machine prepared".into());
        Ok(Box::new(FakeMachine {
            driver: s.clone(),
            disk,
            console: spec.work_dir.join("console.log"),
            child: None,
            boots: Arc::new(AtomicU64::new(0)),
        }))
    }

    fn reap(&self, handle: &VmHandle, _work_dir: &Path) -> bool {
        let pid = handle.data["pid"].as_u64().unwrap_or(0) as u32;
        self.s.note(format!("reap {pid}"));
        if pid == 0 || !is_fake_vm(pid) {
            return false;
        }
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        true
    }
}

struct FakeMachine {
    driver: Arc<State>,
    disk: PathBuf,
    console: PathBuf,
    child: Option<Child>,
    boots: Arc<AtomicU64>,
}

impl FakeMachine {
    fn end(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.driver.up.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        if self.driver.crashing.load(Ordering::SeqCst) {
            // A SIGKILLed kilnd runs no destructors: its VMs go on running.
            if let Some(child) = self.child.take() {
                std::mem::forget(child);
            }
            return;
        }
        self.end();
    }
}

#[async_trait::async_trait]
impl Machine for FakeMachine {
    fn kiln_keys(&self) -> Vec<KilnKey> {
        vec![KilnKey {
            what: "build key",
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake kiln-build"
                .into(),
        }]
    }

    fn host_public_key(&self) -> String {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostHostHostHostHostHostHostHostHostHost".into()
    }

    async fn boot(&mut self) -> Result<(), DriverError> {
        let driver = &self.driver;
        driver.pass("boot").await;
        let child = Command::new("sleep")
            .arg(MARK)
            .spawn()
            .map_err(|e| DriverError::Other(format!("sleep: {e}")))?;
        let pid = child.id();
        lock(&driver.started).push(pid);
        driver.note(format!("boot {pid}"));
        let up = driver.up.fetch_add(1, Ordering::SeqCst) + 1;
        driver.most_up.fetch_max(up, Ordering::SeqCst);
        self.child = Some(child);
        self.boots.fetch_add(1, Ordering::SeqCst);
        let _ = std::fs::write(&self.console, "fake console: booted\n");
        Ok(())
    }

    async fn wait_ready(&mut self, _timeout: Duration) -> Result<Arc<dyn Shell>, DriverError> {
        self.driver.pass("ready").await;
        if self.child.is_none() {
            return Err(DriverError::Other("the fake VM is not running".into()));
        }
        Ok(Arc::new(FakeShell {
            driver: self.driver.clone(),
            files: Mutex::new(HashMap::new()),
            boots: self.boots.clone(),
        }))
    }

    fn how_ready(&self) -> &'static str {
        "fake"
    }

    async fn powerdown(&mut self, _timeout: Duration) -> Result<(), DriverError> {
        self.driver.pass("powerdown").await;
        self.end();
        Ok(())
    }

    async fn kill(&mut self) {
        self.end();
    }

    fn handle(&self) -> Option<VmHandle> {
        let pid = self.child.as_ref()?.id();
        Some(VmHandle {
            driver: "fake".into(),
            data: serde_json::json!({ "pid": pid }),
        })
    }

    fn describe(&self) -> String {
        format!("fake VM pid {}", self.child.as_ref().map_or(0, Child::id))
    }

    fn accel(&self) -> Option<&'static str> {
        Some("fake")
    }

    fn attach_command(&self) -> String {
        format!("fake-attach {}", self.disk.display())
    }

    fn disk(&self) -> &Path {
        &self.disk
    }

    fn serial_log(&self) -> &Path {
        &self.console
    }
}

/// The guest's shell: acts on each script's text.
struct FakeShell {
    driver: Arc<State>,
    files: Mutex<HashMap<String, String>>,
    boots: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Shell for FakeShell {
    async fn run(
        &self,
        command: &str,
        mut on_line: OnLine,
        cancel: &CancellationToken,
    ) -> Result<i32, GuestError> {
        let os = &kiln_daemon::guest::os::DEBIAN;
        let driver = &self.driver;
        if command == os.boot_id {
            on_line(
                Stream::Stdout,
                &format!("boot-{}", self.boots.load(Ordering::SeqCst)),
            );
            return Ok(0);
        }
        if command == os.reboot {
            self.boots.fetch_add(1, Ordering::SeqCst);
            return Err(GuestError::Closed { port: 0 });
        }
        if command == os.has_custom_deprovision {
            return Ok(1);
        }
        if command == os.deprovision {
            driver.pass("generalize").await;
        }
        let text = lock(&self.files)
            .get(command)
            .cloned()
            .unwrap_or_else(|| command.to_owned());
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        if lines.contains(&"hold") {
            cancel.cancelled().await;
            return Err(GuestError::Canceled);
        }
        if let Some(code) = lines
            .iter()
            .find_map(|l| l.strip_prefix("exit ")?.parse().ok())
        {
            on_line(Stream::Stderr, "fake: exiting with a failure");
            return Ok(code);
        }
        on_line(
            Stream::Stdout,
            &format!("fake ran: {}", text.lines().count()),
        );
        Ok(0)
    }

    async fn write_file(&self, data: Vec<u8>, remote: &str, _mode: i32) -> Result<(), GuestError> {
        lock(&self.files).insert(remote.to_owned(), String::from_utf8_lossy(&data).into());
        Ok(())
    }
}
