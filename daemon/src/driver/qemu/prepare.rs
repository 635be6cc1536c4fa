//! The files a QEMU VM boots from, made before anything runs: an overlay on the base image, the
//! build's client key and the guest's host key, and the NoCloud seed that hands them over.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::seed;
use crate::driver::{DriverError, VmSpec};
use crate::guest::os::GuestOs;
use crate::qemu_img::{self, QemuImgError};
use crate::tool::ToolError;

/// Longest path a Unix socket address can hold (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Everything created before boot; all paths inside the work directory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub overlay: PathBuf,
    pub seed: PathBuf,
    /// The build's SSH client private key (its `.pub` sits beside it).
    pub client_key: PathBuf,
    /// The guest's pinned host key, "ssh-ed25519 AAAA...".
    pub host_public_key: String,
    pub serial_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub user: String,
    pub os: &'static GuestOs,
    pub cpus: u32,
    pub memory_mb: u32,
}

impl Prepared {
    /// The work directory every other path lives in.
    pub fn work_dir(&self) -> &Path {
        self.overlay.parent().unwrap_or(Path::new("/"))
    }
}

/// Runs an external tool to completion (through [`crate::tool`], so dropping the work kills
/// its process group); a failure names the tool, what it was doing and its stderr.
pub(crate) async fn run_tool(
    tool: &'static str,
    args: &[&OsStr],
    doing: impl FnOnce() -> String,
) -> Result<Vec<u8>, DriverError> {
    crate::tool::output(tool, args)
        .await
        .map_err(|e| tool_error(tool, e, doing))
}

pub(super) fn tool_error(
    tool: &'static str,
    e: ToolError,
    doing: impl FnOnce() -> String,
) -> DriverError {
    match e {
        ToolError::Missing { source, .. }
        | ToolError::Start { source, .. }
        | ToolError::Wait { source, .. } => DriverError::ToolMissing { tool, source },
        ToolError::Failed { status, output, .. } => DriverError::Tool {
            tool,
            doing: doing(),
            status: status.to_string(),
            stderr: output,
        },
    }
}

pub(super) fn io_err(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DriverError {
    let path = path.to_owned();
    move |source| DriverError::Io {
        doing,
        path,
        source,
    }
}

/// Creates the overlay, the client and host keys and the NoCloud seed in `spec.work_dir`.
/// Nothing runs afterwards; the host private key ends up only inside the seed ISO.
pub async fn prepare(spec: &VmSpec) -> Result<Prepared, DriverError> {
    let started = Instant::now();
    let work_dir = resolved_work_dir(spec)?;
    if !work_dir.is_dir() {
        return Err(DriverError::WorkDir {
            path: work_dir,
            reason: "not a directory".into(),
        });
    }
    let qmp_socket = work_dir.join("qmp.sock");
    if qmp_socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(DriverError::WorkDir {
            path: work_dir,
            reason: format!(
                "too long for the QMP socket inside it (a Unix socket path holds at most {MAX_SOCKET_PATH} bytes); use a shorter data directory"
            ),
        });
    }
    let base = std::fs::canonicalize(&spec.base_image).map_err(|e| DriverError::BaseImage {
        path: spec.base_image.clone(),
        reason: e.to_string(),
    })?;

    let overlay = work_dir.join("overlay.qcow2");
    let size = overlay_size(&base, spec.disk_gb).await?;
    create_overlay(&base, &overlay, Some(size)).await?;

    let client_key = work_dir.join("client_key");
    let host_key = work_dir.join("host_key");
    tokio::try_join!(keygen(&client_key), keygen(&host_key))?;
    let read = |path: PathBuf| async move {
        tokio::fs::read_to_string(&path)
            .await
            .map_err(io_err("reading the key", &path))
    };
    let client_public = read(client_key.with_extension("pub")).await?;
    let host_private = read(host_key.clone()).await?;
    let host_public_line = read(host_key.with_extension("pub")).await?;
    let host_public_key = public_key(&host_public_line);

    let seed = seed::write(
        &work_dir,
        &seed::Seed {
            instance_id: seed::instance_id(),
            hostname: "kiln-build".into(),
            user: spec.user.clone(),
            client_public_key: client_public.trim().to_owned(),
            host_private_key: host_private,
            host_public_key: host_public_key.clone(),
        },
    )
    .await?;
    // The seed carries the host key now; no second copy stays on disk.
    tokio::fs::remove_file(&host_key)
        .await
        .map_err(io_err("removing the host private key", &host_key))?;

    tracing::info!(
        work_dir = %work_dir.display(),
        base = %base.display(),
        size_bytes = size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "prepared overlay, keys and cloud-init seed"
    );
    Ok(Prepared {
        overlay,
        seed,
        client_key,
        host_public_key,
        serial_log: work_dir.join("serial.log"),
        qmp_socket,
        user: spec.user.clone(),
        os: spec.os,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
    })
}

/// `spec.work_dir` with symlinks resolved (it must exist).
pub(super) fn resolved_work_dir(spec: &VmSpec) -> Result<PathBuf, DriverError> {
    std::fs::canonicalize(&spec.work_dir).map_err(|e| DriverError::WorkDir {
        path: spec.work_dir.clone(),
        reason: e.to_string(),
    })
}

/// Creates `overlay`, a qcow2 whose backing file is the qcow2 `backing`, of `size` bytes (the
/// backing's size when `None`). Nothing is copied: the overlay holds only what is written to it.
pub(super) async fn create_overlay(
    backing: &Path,
    overlay: &Path,
    size: Option<u64>,
) -> Result<(), DriverError> {
    qemu_img::create_overlay(backing, overlay, size)
        .await
        .map_err(|e| {
            tool_error("qemu-img", e, || {
                format!("creating the overlay {}", overlay.display())
            })
        })
}

/// "ssh-ed25519 AAAA..." from an OpenSSH public key line (its comment dropped).
pub(super) fn public_key(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The overlay's virtual size in bytes: the request, but never less than the base.
pub(super) async fn overlay_size(base: &Path, disk_gb: u64) -> Result<u64, DriverError> {
    let bad = |reason: String| DriverError::BaseImage {
        path: base.to_owned(),
        reason,
    };
    let info = qemu_img::info_shared(base).await.map_err(|e| match e {
        QemuImgError::Tool(e) => tool_error("qemu-img", e, || {
            format!("reading the base image {}", base.display())
        }),
        QemuImgError::Info { reason, .. } => {
            bad(format!("unreadable `qemu-img info` output: {reason}"))
        }
        e => bad(e.to_string()),
    })?;
    if info.format != "qcow2" {
        return Err(bad(format!(
            "is {}, not qcow2; convert it with `qemu-img convert -O qcow2`",
            info.format
        )));
    }
    let base_size = info.virtual_size;
    let requested = disk_gb.saturating_mul(1 << 30);
    if disk_gb > 0 && requested < base_size {
        tracing::warn!(
            requested_gb = disk_gb,
            base_bytes = base_size,
            "requested disk is smaller than the base image; using the base image's size (disks only grow)"
        );
    }
    Ok(requested.max(base_size))
}

pub(super) async fn keygen(path: &Path) -> Result<(), DriverError> {
    run_tool(
        "ssh-keygen",
        &[
            "-t".as_ref(),
            "ed25519".as_ref(),
            "-N".as_ref(),
            "".as_ref(),
            "-q".as_ref(),
            "-C".as_ref(),
            "kiln-build".as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
        ],
        || format!("generating the key {}", path.display()),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn qemu_img(args: &[&str], path: &Path) {
        let ok = std::process::Command::new("qemu-img")
            .args(args)
            .arg(path)
            .arg("64M")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "qemu-img {args:?}");
    }

    /// The overlay is the size asked for but never smaller than its base, read from `qemu-img
    /// info` by the catalog's parser; a base that is not qcow2 is refused by name.
    #[tokio::test]
    async fn overlays_never_shrink_their_base() {
        if std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2"], &base);
        assert_eq!(overlay_size(&base, 0).await.unwrap(), 64 << 20);
        assert_eq!(overlay_size(&base, 2).await.unwrap(), 2 << 30);

        let overlay = dir.path().join("overlay.qcow2");
        create_overlay(&base, &overlay, None).await.unwrap();
        assert_eq!(overlay_size(&overlay, 0).await.unwrap(), 64 << 20);

        let raw = dir.path().join("base.raw");
        qemu_img(&["create", "-q", "-f", "raw"], &raw);
        let err = overlay_size(&raw, 0).await.unwrap_err().to_string();
        assert!(err.contains("is raw, not qcow2"), "{err}");

        let err = overlay_size(&dir.path().join("none.qcow2"), 0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DriverError::Tool { tool: "qemu-img", ref doing, .. } if doing.contains("reading the base image")),
            "{err}"
        );
    }
}
