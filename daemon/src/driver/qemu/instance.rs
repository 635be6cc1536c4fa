//! Instances on QEMU: a qemu that outlives kilnd. It is started with `-daemonize` (its own
//! session, reparented away from kilnd) and without kilnd's leftovers mark, so neither a kilnd
//! restart nor its cleanup of a dead kilnd's children ends it. kilnd knows it by pid and start
//! time (`VmHandle`), powers it down over its QMP socket and reads its serial console file.
//!
//! Files in the instance's directory: `overlay.qcow2` (its disk, on the image; or, when its
//! first start resumed the image's saved VM, on `saved-disk.qcow2`, a hard link to that saved
//! VM's frozen disk), `seed.iso` (the user's key, the pinned host key, the hostname),
//! `host_key.pub`, `serial.log`, `qmp.sock`, `qemu.pid`, `qemu.stderr`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::prepare::{create_overlay, io_err, keygen, overlay_size, public_key, resolved_work_dir};
use super::serial::tail_lines;
use super::vm::{command_line, free_port};
use super::warm::WarmStates;
use super::{accel, qmp, resume, seed, Accel, AccelProbe, Prepared, Process, DRIVER};
use crate::driver::{DriverError, InstanceSpec, InstanceStarted, VmHandle};

const PIDFILE: &str = "qemu.pid";

/// The disk an instance writes (what a capture reads once it is stopped).
pub fn disk(work_dir: &Path) -> PathBuf {
    work_dir.join("overlay.qcow2")
}

/// Starts the instance's VM. Its first start makes its disk, host key and seed, and resumes the
/// image's saved VM when there is one that fits (`resume`), else boots cold; later starts boot
/// its own disk cold.
pub async fn start(
    spec: &InstanceSpec,
    probe: &AccelProbe,
    warm: &WarmStates,
) -> Result<InstanceStarted, DriverError> {
    let vm = &spec.vm;
    let work = resolved_work_dir(vm)?;
    let overlay = disk(&work);
    let seed_file = work.join("seed.iso");
    // Written last on the first start: without it the first start is done again from scratch.
    let host_pub = work.join("host_key.pub");
    let mut how = String::new();
    let first = !(overlay.exists() && seed_file.exists() && host_pub.exists());
    if first {
        for stale in [
            &overlay,
            &seed_file,
            &host_pub,
            &work.join(resume::SAVED_DISK),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        let identity = new_identity(&work, spec).await?;
        match resume::start(spec, &work, &identity, probe, warm).await {
            Ok(resumed) => {
                write_host_pub(&host_pub, &identity.host_public_key)?;
                return Ok(InstanceStarted {
                    handle: handle(resumed.pid),
                    port: resumed.port,
                    host_public_key: identity.host_public_key,
                    accel: resumed.accel.as_str(),
                    how: resumed.how,
                });
            }
            Err(why) => {
                tracing::info!(work = %work.display(), "instance boots cold: {why}");
                how = format!("booted cold: {why}");
                resume::clean(&work);
            }
        }
        let size = overlay_size(&vm.base_image, vm.disk_gb).await?;
        let partial = work.join("overlay.qcow2.partial");
        create_overlay(&vm.base_image, &partial, Some(size)).await?;
        std::fs::rename(&partial, &overlay).map_err(io_err("renaming", &partial))?;
        write_host_pub(&host_pub, &identity.host_public_key)?;
    }
    let host_public_key = public_key(
        &std::fs::read_to_string(&host_pub).map_err(io_err("reading the key", &host_pub))?,
    );
    let prepared = prepared(&work, vm, overlay, host_public_key.clone());
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
    let pid = spawn(&prepared, accel, port, false).await?;
    if how.is_empty() {
        how = format!("booted under {accel}");
    }
    Ok(InstanceStarted {
        handle: handle(pid),
        port,
        host_public_key,
        accel: accel.as_str(),
        how,
    })
}

/// The instance's own host key and seed (the person's key, the host key, its hostname). The
/// host private key is kept in memory only (the seed carries it), for a resume to install.
pub(super) struct Identity {
    pub host_private_key: String,
    pub host_public_key: String,
}

async fn new_identity(work: &Path, spec: &InstanceSpec) -> Result<Identity, DriverError> {
    let host_key = work.join("host_key");
    let _ = std::fs::remove_file(&host_key);
    let _ = std::fs::remove_file(host_key.with_extension("pub"));
    keygen(&host_key).await?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(io_err("reading the key", p));
    let host_private_key = read(&host_key)?;
    let host_public_key = public_key(&read(&host_key.with_extension("pub"))?);
    for f in [host_key.clone(), host_key.with_extension("pub")] {
        std::fs::remove_file(&f).map_err(io_err("removing", &f))?;
    }
    seed::write(
        work,
        &seed::Seed {
            instance_id: seed::instance_id(),
            hostname: spec.hostname.clone(),
            user: spec.vm.user.clone(),
            client_public_key: spec.login_key.trim().to_owned(),
            host_private_key: host_private_key.clone(),
            host_public_key: host_public_key.clone(),
        },
    )
    .await?;
    Ok(Identity {
        host_private_key,
        host_public_key,
    })
}

fn write_host_pub(path: &Path, key: &str) -> Result<(), DriverError> {
    std::fs::write(path, format!("{key}\n")).map_err(io_err("writing", path))
}

/// The files of the instance's machine in `work`, on `overlay`.
pub(super) fn prepared(
    work: &Path,
    vm: &crate::driver::VmSpec,
    overlay: PathBuf,
    host_public_key: String,
) -> Prepared {
    Prepared {
        overlay,
        seed: work.join("seed.iso"),
        client_key: work.join("no-client-key"),
        host_public_key,
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
        user: vm.user.clone(),
        os: vm.os,
        cpus: vm.cpus,
        memory_mb: vm.memory_mb,
    }
}

/// Starts qemu on `prepared`, detached (`-daemonize`: it returns once qemu serves QMP) and not
/// marked as kilnd's child; returns its pid.
pub(super) async fn spawn(
    prepared: &Prepared,
    accel: Accel,
    port: u16,
    incoming: bool,
) -> Result<u32, DriverError> {
    let work = prepared.work_dir();
    let pidfile = work.join(PIDFILE);
    let stderr_file = work.join("qemu.stderr");
    for stale in [&pidfile, &prepared.qmp_socket] {
        let _ = std::fs::remove_file(stale);
    }
    let stderr = std::fs::File::create(&stderr_file).map_err(io_err("creating", &stderr_file))?;
    let mut args = command_line(prepared, accel, port, incoming);
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
    tracing::info!(pid, port, accel = accel.as_str(), work = %work.display(), incoming, "instance qemu started");
    Ok(pid)
}

pub(super) fn handle(pid: u32) -> VmHandle {
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
