//! Creating the listening socket: a file path (never the abstract namespace) in a private
//! directory, a stale socket probed before it is replaced, and the right modes for user and
//! system mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket directory {path} has mode {mode:04o} and owner uid {owner}; kiln needs a directory that only you can enter (run `chmod 700 {path}`, or pick another --socket)")]
    InsecureDir {
        path: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error("another kilnd is already listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it or pick another --socket")]
    NotSocket(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the listener at `path`. In user mode the parent directory is created 0700 and must not
/// be reachable by others; in system mode it is 0750 and the socket 0660 with group `group_id`.
pub async fn bind(
    path: &Path,
    system_mode: bool,
    group_id: Option<u32>,
) -> Result<Listener, SocketError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_dir(dir, system_mode, group_id)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotSocket(path.into()));
            }
            if probe(path).await {
                return Err(SocketError::InUse(path.into()));
            }
            tracing::info!(socket = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(|source| SocketError::Listen {
                path: path.into(),
                source,
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Listen {
                path: path.into(),
                source,
            })
        }
    }
    let listen_err = |source| SocketError::Listen {
        path: path.into(),
        source,
    };
    let name = path.to_fs_name::<GenericFilePath>().map_err(listen_err)?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .map_err(listen_err)?;
    let mode = if system_mode { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(listen_err)?;
    if let (true, Some(gid)) = (system_mode, group_id) {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(listen_err)?;
    }
    Ok(listener)
}

fn prepare_dir(dir: &Path, system_mode: bool, group_id: Option<u32>) -> Result<(), SocketError> {
    let dir_err = |source| SocketError::Dir {
        path: dir.into(),
        source,
    };
    let wanted = if system_mode { 0o750 } else { 0o700 };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted)).map_err(dir_err)?;
        if let (true, Some(gid)) = (system_mode, group_id) {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(dir_err)?;
        }
    }
    let meta = std::fs::metadata(dir).map_err(dir_err)?;
    let mode = meta.mode() & 0o7777;
    let me = kiln_shared::paths::current_uid();
    // Others must never reach the socket: no bits for "other", and in user mode none for the group.
    let forbidden = if system_mode { 0o007 } else { 0o077 };
    if meta.uid() != me || mode & forbidden != 0 {
        return Err(SocketError::InsecureDir {
            path: dir.into(),
            mode,
            owner: meta.uid(),
        });
    }
    Ok(())
}

/// True when a daemon answers on `path`.
async fn probe(path: &Path) -> bool {
    let Ok(name) = path.to_fs_name::<GenericFilePath>() else {
        return false;
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), Stream::connect(name)).await,
        Ok(Ok(_))
    )
}
