//! An instance's first start from its image's saved VM (`warm`): seconds instead of a cold
//! boot. The instance's disk is an overlay on a hard link to the saved VM's frozen disk (so the
//! saved VM can be replaced or removed while the instance lives), its own seed (padded to the
//! saved seed's size: the resumed guest knows that device's size) takes the saved seed's place,
//! and qemu starts detached with `-incoming defer`, loads the saved memory and goes on.
//!
//! kilnd then logs in with the saved VM's key and gives the guest an identity of its own
//! ([`GuestOs::take_identity`](crate::guest::os::GuestOs)): the instance's host key alone, a
//! new machine-id, its hostname, the person's key as the default user's only key, the clock,
//! and nothing left of the saved VM's keys or its seed. Its later boots are cold boots of its
//! own disk with its own seed.
//!
//! Any reason not to (no saved VM, another shape or accelerator, a failure on the way) is
//! returned as text; the caller boots cold and says why.

use std::path::Path;

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::instance::{self, Identity};
use super::prepare::create_overlay;
use super::serial::tail_lines;
use super::vm::{free_port, SSH_POLL};
use super::warm::{WarmState, WarmStates};
use super::{qmp, Accel, AccelProbe};
use crate::driver::InstanceSpec;
use crate::guest::os::{self, UPLOADED_HOST_KEY};
use crate::guest::{Guest, GuestError};

/// The instance's link to the saved VM's disk, its overlay's backing file.
pub(super) const SAVED_DISK: &str = "saved-disk.qcow2";
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A resumed instance VM, adopted.
pub(super) struct Resumed {
    pub pid: u32,
    pub port: u16,
    pub accel: Accel,
    /// For the instance's message: "resumed the saved VM of debian-12 in 5.1 s (tcg)".
    pub how: String,
}

/// Resumes `spec`'s image's saved VM as the instance in `work` (whose seed is written), or
/// says why not; on `Err` nothing of it runs (the caller removes its files with [`clean`]).
pub(super) async fn start(
    spec: &InstanceSpec,
    work: &Path,
    identity: &Identity,
    probe: &AccelProbe,
    warm: &WarmStates,
) -> Result<Resumed, String> {
    let vm = &spec.vm;
    let Some(state) = warm.find(&spec.image_id, &vm.base_image).await else {
        return Err(format!(
            "image {} has no saved VM (`kiln image warm {}` makes one)",
            spec.image, spec.image
        ));
    };
    if let Some(why) = state.misfit(vm.cpus, vm.memory_mb) {
        return Err(format!("the saved VM does not fit ({why})"));
    }
    if state.meta.user != vm.user {
        return Err(format!(
            "the saved VM's user is {}, the instance's {}",
            state.meta.user, vm.user
        ));
    }
    let accel = state
        .accel(probe, &vm.base_image, work, vm.os)
        .await
        .map_err(|why| format!("the saved VM does not fit ({why})"))?;
    let _lease = warm.lease(&spec.image_id);
    let started = Instant::now();

    let link = work.join(SAVED_DISK);
    std::fs::hard_link(state.disk(), &link).map_err(|e| {
        format!(
            "cannot link the saved VM's disk {} into {}: {e}",
            state.disk().display(),
            work.display()
        )
    })?;
    let overlay = instance::disk(work);
    create_overlay(&link, &overlay, Some(state.meta.disk_bytes))
        .await
        .map_err(|e| e.to_string())?;
    pad_seed(&work.join("seed.iso"), &state.seed())?;
    let prepared = instance::prepared(work, vm, overlay, identity.host_public_key.clone());
    let port = free_port().map_err(|e| e.to_string())?;
    let pid = instance::spawn(&prepared, accel, port, true)
        .await
        .map_err(|e| e.to_string())?;
    let handle = instance::handle(pid);
    match adopt(spec, &state, identity, &prepared.qmp_socket, pid, port).await {
        Ok(()) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                pid,
                port,
                elapsed_ms = (secs * 1000.0) as u64,
                "instance resumed from the saved VM"
            );
            Ok(Resumed {
                pid,
                port,
                accel,
                how: format!(
                    "resumed the saved VM of {} in {secs:.1} s ({accel}); new host key, machine-id, hostname and your key",
                    spec.image
                ),
            })
        }
        Err(why) => {
            instance::kill(&handle, work);
            Err(format!(
                "resuming the saved VM failed ({why}; qemu stderr: {})",
                tail_lines(&work.join("qemu.stderr"), 5)
            ))
        }
    }
}

/// Removes what a failed resume made in `work`, so a cold boot starts clean.
pub(super) fn clean(work: &Path) {
    for f in [instance::disk(work), work.join(SAVED_DISK)] {
        let _ = std::fs::remove_file(f);
    }
}

/// The resumed guest sees the saved seed's device size; the instance's seed (an ISO, which
/// trailing zeros do not change) is made exactly that long.
fn pad_seed(seed: &Path, saved: &Path) -> Result<(), String> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let (have, want) = (size(seed)?, size(saved)?);
    if have > want {
        return Err(format!(
            "the instance's seed ({have} bytes) is larger than the saved VM's ({want} bytes)"
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(seed)
        .and_then(|f| f.set_len(want))
        .map_err(|e| format!("padding {}: {e}", seed.display()))
}

/// Loads the saved memory, lets the guest run, logs in with the saved VM's key and gives the
/// guest the instance's identity.
async fn adopt(
    spec: &InstanceSpec,
    state: &WarmState,
    identity: &Identity,
    socket: &Path,
    pid: u32,
    port: u16,
) -> Result<(), String> {
    let uri = format!("file:{}", state.memory().display());
    qmp::execute_with(socket, "migrate-incoming", json!({ "uri": uri })).await?;
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let reply = qmp::execute(socket, "query-migrate").await?;
        if qmp::migration_done(&reply).map_err(|why| format!("loading the memory: {why}"))? {
            break;
        }
        if !crate::leftovers::alive(pid) {
            return Err("qemu exited while loading the saved memory".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "loading the saved memory took over {} s",
                MIGRATION_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    qmp::execute(socket, "cont").await?;

    let guest = login(port, state, pid).await?;
    guest
        .upload_bytes(
            identity.host_private_key.clone().into_bytes(),
            UPLOADED_HOST_KEY,
            0o600,
        )
        .await
        .map_err(|e| e.to_string())?;
    let disk_bytes = spec.vm.disk_gb << 30;
    let grow_to = (disk_bytes > state.meta.disk_bytes).then_some(disk_bytes);
    if let Some(size) = grow_to {
        qmp::execute_with(
            socket,
            "block_resize",
            json!({ "device": "disk0", "size": size }),
        )
        .await?;
    }
    let saved_public = std::fs::read_to_string(state.client_key().with_extension("pub"))
        .map_err(|e| format!("reading the saved VM's public key: {e}"))?;
    let identity = os::Identity {
        now: Utc::now().timestamp(),
        hostname: spec.hostname.clone(),
        host_public: identity.host_public_key.clone(),
        user_public: spec.login_key.clone(),
        saved_public,
        grow_to,
        machine_id: os::host_random_hex(16)?,
    };
    let script = spec
        .vm
        .os
        .reseeded(&(spec.vm.os.take_identity)(&identity))?;
    let (code, output) = guest
        .exec_collect(&script)
        .await
        .map_err(|e| e.to_string())?;
    if code != 0 {
        return Err(format!(
            "giving the guest its identity failed with exit code {code}: {output}"
        ));
    }
    Ok(())
}

/// Logs in to the resumed guest with the saved VM's key, its host key pinned.
async fn login(port: u16, state: &WarmState, pid: u32) -> Result<Guest, String> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    loop {
        let attempt = Guest::connect(
            port,
            &state.meta.user,
            &state.client_key(),
            &state.meta.host_public_key,
        )
        .await;
        let last = match attempt {
            Ok(guest) => return Ok(guest),
            Err(e @ (GuestError::HostKeyMismatch { .. } | GuestError::BadPinnedKey { .. })) => {
                return Err(e.to_string())
            }
            Err(e) => e.to_string(),
        };
        if !crate::leftovers::alive(pid) {
            return Err(format!(
                "qemu exited before SSH answered (last SSH error: {last})"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no SSH login to the resumed guest within {} s (last error: {last})",
                LOGIN_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(SSH_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_seed_is_padded_to_the_saved_size_and_a_larger_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, saved) = (dir.path().join("seed.iso"), dir.path().join("saved.iso"));
        std::fs::write(&seed, b"iso").unwrap();
        std::fs::write(&saved, vec![0u8; 4096]).unwrap();
        pad_seed(&seed, &saved).unwrap();
        let bytes = std::fs::read(&seed).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(&bytes[..3], b"iso");
        std::fs::write(&saved, b"ab").unwrap();
        let err = pad_seed(&seed, &saved).unwrap_err();
        assert!(err.contains("larger than the saved VM's"), "{err}");
    }
}
