//! Warm start: a base image booted once until it is SSH-ready, then frozen (its disk as a qcow2
//! overlay on the base, its memory saved by QMP `migrate` to a file). A build then starts qemu
//! with `-incoming defer` on a new overlay over that frozen disk, loads the memory and goes on
//! from a guest that is already up, in seconds instead of a cold boot's minute or more under TCG.
//!
//! Layout, one directory per base image id, made as `ID.partial` and renamed when complete:
//!
//! ```text
//! WARM/ID/disk.qcow2     frozen disk (backing: the base image's file); never written again
//! WARM/ID/memory.state   the guest's memory and device state
//! WARM/ID/seed.iso       the cloud-init seed the saved VM booted with (attached again, unread)
//! WARM/ID/client_key     key that logs in to the saved guest (its .pub beside it)
//! WARM/ID/meta.json      what the state fits: base file, vCPUs, memory, accel, qemu version
//! ```
//!
//! A resumed build logs in with the saved VM's keys, then rotates them: the build's own client
//! key and host key replace them, the clock is set, the disk grown if the build asked for more,
//! and it reconnects with the build's keys pinned. The saved VM's keys never leave kilnd's data
//! directory and are removed from the guest before the build's first step.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::prepare::{
    create_overlay, io_err, keygen, overlay_size, prepare, public_key, resolved_work_dir, run_tool,
};
use super::{Accel, AccelProbe, Prepared, Vm};
use crate::driver::{DriverError, VmSpec};
use crate::guest::os::{GuestOs, UPLOADED_HOST_KEY};
use crate::guest::Guest;

/// A cold boot under TCG with cloud-init takes minutes on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const PARTIAL: &str = ".partial";

/// What a saved VM fits; a build whose machine differs boots cold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmMeta {
    pub image_id: String,
    /// The base image's file, its size and mtime when the state was made.
    pub base: PathBuf,
    pub base_size: u64,
    pub base_mtime: i64,
    pub cpus: u32,
    pub memory_mb: u32,
    pub accel: Accel,
    /// First line of `qemu-system-x86_64 --version`: saved memory loads only into the same QEMU.
    pub qemu_version: String,
    pub host_public_key: String,
    pub user: String,
    /// Virtual size of the frozen disk, bytes.
    pub disk_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// Cold boot to ready, and saving the memory, when the state was made.
    pub boot_ms: u64,
    pub save_ms: u64,
    pub state_bytes: u64,
}

/// A complete saved VM on disk.
#[derive(Debug, Clone)]
pub struct WarmState {
    pub dir: PathBuf,
    pub meta: WarmMeta,
}

impl WarmState {
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn memory(&self) -> PathBuf {
        self.dir.join("memory.state")
    }
    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// Why a build with `cpus`/`memory_mb` cannot resume from this state, if it cannot.
    pub fn misfit(&self, cpus: u32, memory_mb: u32) -> Option<String> {
        if (cpus, memory_mb) != (self.meta.cpus, self.meta.memory_mb) {
            return Some(format!(
                "{cpus} vCPUs and {memory_mb} MB asked for, the saved VM has {} and {}",
                self.meta.cpus, self.meta.memory_mb
            ));
        }
        None
    }

    /// The accelerator to resume under, or why not: saved memory loads only under the
    /// accelerator it was saved with. The first build of a kilnd run that cannot tell yet
    /// (/dev/kvm opens, nothing booted) settles it by booting the base under KVM for a few
    /// seconds on a throwaway overlay in `work_dir`.
    pub async fn accel(
        &self,
        probe: &AccelProbe,
        base: &Path,
        work_dir: &Path,
        os: &'static GuestOs,
    ) -> Result<Accel, String> {
        let saved = self.meta.accel;
        let current = match probe.known() {
            Some(a) => a,
            None => {
                let shape = (self.meta.cpus, self.meta.memory_mb);
                super::accel::settle_on(probe, base, &self.seed(), work_dir, os, shape)
                    .await
                    .map_err(|e| format!("trying KVM failed: {e}"))?
            }
        };
        if current == saved {
            Ok(current)
        } else {
            Err(format!(
                "the saved VM ran under {saved}, builds here run under {current}"
            ))
        }
    }
}

/// Settings a warm state is made with: the template defaults, which most builds use.
#[derive(Debug, Clone, Copy)]
pub struct WarmShape {
    pub cpus: u32,
    pub memory_mb: u32,
}

impl Default for WarmShape {
    fn default() -> WarmShape {
        let vm = kiln_shared::template::Vm::default();
        WarmShape {
            cpus: vm.cpus,
            memory_mb: vm.memory_mb,
        }
    }
}

/// The saved VMs of kilnd's base images.
pub struct WarmStates {
    dir: PathBuf,
    making: crate::sync::Slots,
    in_use: crate::sync::Holds,
    qemu_version: tokio::sync::OnceCell<String>,
}

/// Keeps a warm state from being removed while a build's overlay sits on it.
pub type WarmLease = crate::sync::Hold;

fn mtime(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

impl WarmStates {
    /// Opens (creating, 0700) the directory and removes what a dead daemon left half-made,
    /// killing its qemu first.
    pub fn open(dir: PathBuf) -> std::io::Result<WarmStates> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(PARTIAL) {
                if let Some(pid) = std::fs::read_to_string(path.join("qemu.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    super::kill_stale(pid, None, &path);
                }
                tracing::info!(dir = %path.display(), "removing a half-made warm state");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(WarmStates {
            dir,
            making: crate::sync::Slots::default(),
            in_use: crate::sync::Holds::default(),
            qemu_version: tokio::sync::OnceCell::new(),
        })
    }

    async fn qemu_version(&self) -> Result<String, DriverError> {
        self.qemu_version
            .get_or_try_init(|| async {
                let out = run_tool("qemu-system-x86_64", &["--version".as_ref()], || {
                    "asking its version".into()
                })
                .await?;
                Ok(String::from_utf8_lossy(&out)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned())
            })
            .await
            .cloned()
    }

    /// The warm state of image `id` whose file is `base`, if one is complete and still fits
    /// that file and this QEMU; a stale one is removed (when no build uses it).
    pub async fn find(&self, id: &str, base: &Path) -> Option<WarmState> {
        self.lookup(id, base, true).await
    }

    /// What `find` would answer, without removing a stale state: for listing images.
    pub async fn peek(&self, id: &str, base: &Path) -> Option<WarmState> {
        self.lookup(id, base, false).await
    }

    async fn lookup(&self, id: &str, base: &Path, remove_stale: bool) -> Option<WarmState> {
        let dir = self.dir.join(id);
        let meta: WarmMeta = std::fs::read(dir.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        let file = std::fs::metadata(base).ok()?;
        let qemu = self.qemu_version().await.ok()?;
        let stale = if meta.base != base || meta.base_size != file.len() {
            Some("the base image's file changed".to_owned())
        } else if meta.base_mtime != mtime(&file) {
            Some("the base image's file was modified".to_owned())
        } else if meta.qemu_version != qemu {
            Some(format!("QEMU changed ({} -> {qemu})", meta.qemu_version))
        } else {
            None
        };
        if let Some(why) = stale {
            if remove_stale {
                tracing::info!(image = id, "warm state is stale ({why}); removing it");
                let _ = self.remove(id);
            }
            return None;
        }
        Some(WarmState { dir, meta })
    }

    /// Marks `id`'s state as in use until the lease is dropped.
    pub fn lease(&self, id: &str) -> WarmLease {
        self.in_use.hold(id)
    }

    /// Removes image `id`'s warm state; refused (Ok(false)) while a build uses it.
    pub fn remove(&self, id: &str) -> std::io::Result<bool> {
        if self.in_use.count(id) > 0 {
            return Ok(false);
        }
        match std::fs::remove_dir_all(self.dir.join(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Removes the warm states of images not in `keep` (deleted meanwhile).
    pub fn sweep(&self, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(PARTIAL) && !keep.contains(&name) {
                tracing::info!(image = %name, "removing the warm state of a deleted image");
                let _ = self.remove(&name);
            }
        }
    }

    /// Boots image `id` (file `base`) once, waits until it is ready, saves it and publishes the
    /// state, replacing an older one. Each step is handed to `progress`.
    pub async fn make(
        &self,
        id: &str,
        base: &Path,
        machine: WarmShape,
        (os, user): (&'static GuestOs, &str),
        probe: &AccelProbe,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<WarmState, DriverError> {
        let Some(_making) = self.making.take(id) else {
            return Err(DriverError::Busy(format!(
                "image {id} is being warmed already; wait for that to finish"
            )));
        };
        let qemu_version = self.qemu_version().await?;
        let partial = self.dir.join(format!("{id}{PARTIAL}"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial).map_err(io_err("creating", &partial))?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("restricting", &partial))?;
        let cleanup = RemoveDir(Some(partial.clone()));
        let file = std::fs::metadata(base).map_err(io_err("reading", base))?;

        let spec = VmSpec {
            base_image: base.to_owned(),
            work_dir: partial.clone(),
            disk_gb: 0,
            cpus: machine.cpus,
            memory_mb: machine.memory_mb,
            user: user.to_owned(),
            os,
        };
        let prepared = prepare(&spec).await?;
        progress(format!(
            "==> warm start: booting {id} once ({} vCPUs, {} MB) until it is ready",
            machine.cpus, machine.memory_mb
        ));
        let started = Instant::now();
        let mut vm = Vm::boot(&prepared, probe).await?;
        let pid_file = partial.join("qemu.pid");
        std::fs::write(&pid_file, vm.pid().to_string()).map_err(io_err("writing", &pid_file))?;
        let guest = vm.wait_ready(READY_TIMEOUT).await?;
        // Flush the guest's page cache to the disk the state will sit on, and log out: no SSH
        // session is part of the saved state.
        let _ = guest
            .exec("sync", |_, _| {}, &CancellationToken::new())
            .await;
        drop(guest);
        let boot_ms = started.elapsed().as_millis() as u64;
        progress(format!(
            "==> warm start: ready after {:.1} s under {}; saving its memory",
            boot_ms as f64 / 1000.0,
            vm.accel()
        ));
        let state = partial.join("memory.state");
        let saving = Instant::now();
        vm.save(&state, MIGRATION_TIMEOUT).await?;
        let save_ms = saving.elapsed().as_millis() as u64;
        let state_bytes = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
        // The frozen disk has the base's size (prepared with disk_gb 0).
        let disk_bytes = overlay_size(base, 0).await?;

        // The saved VM's files under the names builds look for.
        let rename = |from: &Path, to: &str| {
            let dest = partial.join(to);
            std::fs::rename(from, &dest).map_err(io_err("renaming", from))
        };
        rename(&prepared.overlay, "disk.qcow2")?;
        rename(&prepared.seed, "seed.iso")?;
        let _ = std::fs::remove_file(&pid_file);
        for leftover in ["known_hosts", "qemu.stderr", "qmp.sock"] {
            let _ = std::fs::remove_file(partial.join(leftover));
        }
        let meta = WarmMeta {
            image_id: id.to_owned(),
            base: base.to_owned(),
            base_size: file.len(),
            base_mtime: mtime(&file),
            cpus: machine.cpus,
            memory_mb: machine.memory_mb,
            accel: vm.accel(),
            qemu_version,
            host_public_key: prepared.host_public_key.clone(),
            user: prepared.user.clone(),
            disk_bytes,
            created_at: Utc::now(),
            boot_ms,
            save_ms,
            state_bytes,
        };
        let meta_path = partial.join("meta.json");
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        std::fs::write(&meta_path, json).map_err(io_err("writing", &meta_path))?;
        for f in ["disk.qcow2", "memory.state", "seed.iso", "meta.json"] {
            let path = partial.join(f);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("syncing", &path))?;
        }
        let dest = self.dir.join(id);
        if dest.exists() && !self.remove(id).map_err(io_err("removing", &dest))? {
            return Err(DriverError::Busy(format!(
                "a build is using the current warm state of image {id}; try again when it ends"
            )));
        }
        std::fs::rename(&partial, &dest).map_err(io_err("renaming", &partial))?;
        std::mem::forget(cleanup);
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        progress(format!(
            "==> warm start: saved {id} in {:.1} s ({} MB of memory state)",
            save_ms as f64 / 1000.0,
            state_bytes / 1_000_000
        ));
        Ok(WarmState { dir: dest, meta })
    }
}

struct RemoveDir(Option<PathBuf>);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            // A VM still running there was killed when its `Vm` dropped (kill_on_drop).
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Like [`prepare`], for a build resuming from `warm`: an overlay on the frozen disk (its size:
/// the build grows it after the resume), the build's own client and host keys, and the saved
/// VM's seed (attached because the saved machine had it; cloud-init does not read it again).
/// The host private key stays in the work directory only until [`adopt`] has installed it.
pub async fn prepare_from(spec: &VmSpec, warm: &WarmState) -> Result<Prepared, DriverError> {
    let work_dir = resolved_work_dir(spec)?;
    let overlay = work_dir.join("overlay.qcow2");
    create_overlay(&warm.disk(), &overlay, Some(warm.meta.disk_bytes)).await?;
    let client_key = work_dir.join("client_key");
    let host_key = work_dir.join("host_key");
    tokio::try_join!(keygen(&client_key), keygen(&host_key))?;
    let host_public_line = tokio::fs::read_to_string(host_key.with_extension("pub"))
        .await
        .map_err(io_err("reading the key", &host_key))?;
    Ok(Prepared {
        overlay,
        seed: warm.seed(),
        client_key,
        host_public_key: public_key(&host_public_line),
        serial_log: work_dir.join("serial.log"),
        qmp_socket: work_dir.join("qmp.sock"),
        user: warm.meta.user.clone(),
        os: spec.os,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
    })
}

/// After [`Vm::resume`]: logs in with the saved VM's keys, sets the guest's clock, grows the
/// disk to `disk_bytes` when asked for more, installs the build's client and host keys in place
/// of the saved ones, and returns a session made with the build's keys (host key pinned).
pub async fn adopt(
    vm: &mut Vm,
    warm: &WarmState,
    disk_bytes: u64,
    timeout: Duration,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<Guest, DriverError> {
    let guest = vm
        .connect_with(&warm.client_key(), &warm.meta.host_public_key, timeout)
        .await?;
    let work_dir = vm.prepared().work_dir().to_owned();
    let host_key = work_dir.join("host_key");
    let host_private = std::fs::read(&host_key).map_err(io_err("reading", &host_key))?;
    let client_public = std::fs::read_to_string(work_dir.join("client_key.pub"))
        .map_err(io_err("reading", &work_dir.join("client_key.pub")))?;
    guest
        .upload_bytes(host_private, UPLOADED_HOST_KEY, 0o600)
        .await?;
    std::fs::remove_file(&host_key).map_err(io_err("removing", &host_key))?;
    let _ = std::fs::remove_file(host_key.with_extension("pub"));

    let grow = if disk_bytes > warm.meta.disk_bytes {
        vm.qmp(
            "block_resize",
            serde_json::json!({ "device": "disk0", "size": disk_bytes }),
        )
        .await?;
        log(format!(
            "disk grown from {} to {} GiB",
            warm.meta.disk_bytes >> 30,
            disk_bytes >> 30
        ));
        Some(disk_bytes)
    } else {
        None
    };
    let prepared = vm.prepared();
    let script = prepared
        .os
        .reseeded(&(prepared.os.rotate_keys)(
            Utc::now().timestamp(),
            &prepared.host_public_key,
            &client_public,
            grow,
        ))
        .map_err(DriverError::Resume)?;
    let (code, output) = guest.exec_collect(&script).await?;
    if code != 0 {
        return Err(DriverError::Resume(format!(
            "rotating keys in the resumed guest failed with exit code {code}: {output}"
        )));
    }
    drop(guest);
    let key = vm.prepared().client_key.clone();
    let pinned = vm.prepared().host_public_key.clone();
    let guest = vm.connect_with(&key, &pinned, timeout).await?;
    Ok(guest)
}
