//! Instances on QEMU: a qemu that outlives kilnd. It is started with `-daemonize` (its own
//! session, reparented away from kilnd) and without kilnd's leftovers mark, so neither a kilnd
//! restart nor its cleanup of a dead kilnd's children ends it. kilnd knows it by pid and start
//! time (`VmHandle`), powers it down over its QMP socket and reads its serial console file.
//!
//! Files in the instance's directory: `overlay.qcow2` (its disk, on the image), `seed.iso` (the
//! user's key, the pinned host key, the hostname), `host_key.pub`, `serial.log`, `qmp.sock`,
//! `qemu.pid`, `qemu.stderr`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::prepare::{create_overlay, io_err, keygen, overlay_size, public_key, resolved_work_dir};
use super::serial::tail_lines;
use super::vm::{command_line, free_port};
use super::{accel, qmp, seed, AccelProbe, Prepared, Process, DRIVER};
use crate::driver::{DriverError, InstanceSpec, InstanceStarted, VmHandle};

const PIDFILE: &str = "qemu.pid";

/// The disk an instance writes (what a capture reads once it is stopped).
pub fn disk(work_dir: &Path) -> PathBuf {
    work_dir.join("overlay.qcow2")
}

/// Starts the instance's VM, making its disk, keys and seed on its first start.
pub async fn start(
    spec: &InstanceSpec,
    probe: &AccelProbe,
) -> Result<InstanceStarted, DriverError> {
    let vm = &spec.vm;
    let work = resolved_work_dir(vm)?;
    let overlay = disk(&work);
    let seed_file = work.join("seed.iso");
    let host_pub = work.join("host_key.pub");
    if !overlay.exists() || !seed_file.exists() || !host_pub.exists() {
        let size = overlay_size(&vm.base_image, vm.disk_gb).await?;
        let partial = work.join("overlay.qcow2.partial");
        create_overlay(&vm.base_image, &partial, Some(size)).await?;
        let host_key = work.join("host_key");
        let _ = std::fs::remove_file(&host_key);
        let _ = std::fs::remove_file(&host_pub);
        keygen(&host_key).await?;
        let read = |p: &Path| std::fs::read_to_string(p).map_err(io_err("reading the key", p));
        let host_private = read(&host_key)?;
        let host_public_key = public_key(&read(&host_pub)?);
        seed::write(
            &work,
            &seed::Seed {
                instance_id: seed::instance_id(),
                hostname: spec.hostname.clone(),
                client_public_key: spec.login_key.trim().to_owned(),
                host_private_key: host_private,
                host_public_key,
            },
        )
        .await?;
        // The seed carries the host key now; no second copy stays on disk.
        std::fs::remove_file(&host_key).map_err(io_err("removing", &host_key))?;
        std::fs::rename(&partial, &overlay).map_err(io_err("renaming", &partial))?;
    }
    let host_public_key = public_key(
        &std::fs::read_to_string(&host_pub).map_err(io_err("reading the key", &host_pub))?,
    );
    let prepared = Prepared {
        overlay,
        seed: seed_file.clone(),
        client_key: work.join("no-client-key"),
        host_public_key: host_public_key.clone(),
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
        user: vm.user.clone(),
        os: vm.os,
        cpus: vm.cpus,
        memory_mb: vm.memory_mb,
    };
    let accel = accel::settle_on(
        probe,
        &vm.base_image,
        &seed_file,
        &work,
        vm.os,
        (vm.cpus, vm.memory_mb),
    )
    .await?;
    let port = match spec.port {
        Some(p) if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
        _ => free_port()?,
    };
    let pidfile = work.join(PIDFILE);
    let stderr_file = work.join("qemu.stderr");
    for stale in [&pidfile, &prepared.qmp_socket] {
        let _ = std::fs::remove_file(stale);
    }
    let stderr = std::fs::File::create(&stderr_file).map_err(io_err("creating", &stderr_file))?;
    let mut args = command_line(&prepared, accel, port, false);
    args.push("-daemonize".into());
    args.push("-pidfile".into());
    args.push(pidfile.clone().into_os_string());
    let status = tokio::process::Command::new("qemu-system-x86_64")
        .args(&args)
        // Not kilnd's child for long, and not marked as one: it must outlive kilnd.
        .env_remove(crate::leftovers::MARK)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .await
        .map_err(|source| DriverError::ToolMissing {
            tool: "qemu-system-x86_64",
            source,
        })?;
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let Some(pid) = pid.filter(|_| status.success()) else {
        return Err(DriverError::Other(format!(
            "qemu-system-x86_64 ({accel}) did not start the instance ({status}); its stderr: {}",
            tail_lines(&stderr_file, 10)
        )));
    };
    tracing::info!(pid, port, accel = accel.as_str(), work = %work.display(), "instance qemu started");
    Ok(InstanceStarted {
        handle: handle(pid),
        port,
        host_public_key,
        accel: accel.as_str(),
    })
}

fn handle(pid: u32) -> VmHandle {
    let process = Process {
        pid,
        start_ticks: crate::leftovers::start_ticks(pid),
    };
    VmHandle {
        driver: DRIVER.into(),
        data: serde_json::to_value(process).unwrap_or_default(),
    }
}

fn process(handle: &VmHandle) -> Option<Process> {
    if handle.driver != DRIVER {
        return None;
    }
    serde_json::from_value(handle.data.clone()).ok()
}

/// Whether the instance's qemu (that pid, started then, on this directory) still runs.
pub fn running(handle: &VmHandle, work_dir: &Path) -> bool {
    let Some(p) = process(handle) else {
        return false;
    };
    crate::leftovers::alive(p.pid)
        && (p.start_ticks.is_none() || crate::leftovers::start_ticks(p.pid) == p.start_ticks)
        && std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
            let dir = work_dir.as_os_str().as_encoded_bytes();
            c.windows(dir.len()).any(|w| w == dir)
        })
}

/// The instance's qemu started from its pidfile: for one whose handle was never recorded (a
/// kilnd that died right after starting it).
pub fn from_pidfile(work_dir: &Path) -> Option<VmHandle> {
    let pid = std::fs::read_to_string(work_dir.join(PIDFILE)).ok()?;
    let h = handle(pid.trim().parse().ok()?);
    running(&h, work_dir).then_some(h)
}

/// Presses the ACPI power button and waits up to `timeout` for qemu to exit; kills it after
/// that. Returns whether it had to be killed.
pub async fn stop(handle: &VmHandle, work_dir: &Path, timeout: Duration) -> bool {
    if !running(handle, work_dir) {
        return false;
    }
    let qmp_socket = work_dir.join("qmp.sock");
    if let Err(e) = qmp::execute(&qmp_socket, "system_powerdown").await {
        tracing::warn!("instance {}: system_powerdown: {e}", work_dir.display());
    } else {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !running(handle, work_dir) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    kill(handle, work_dir);
    true
}

/// SIGKILL, and waits (up to 5 s) until it is gone.
pub fn kill(handle: &VmHandle, work_dir: &Path) {
    if let Some(p) = process(handle) {
        if running(handle, work_dir) {
            super::kill_stale(p.pid, p.start_ticks, work_dir);
        }
    }
}
