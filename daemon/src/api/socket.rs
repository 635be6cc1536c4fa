//! Creating the listening socket: a file path (never the abstract namespace) in a private
//! directory, a stale socket probed before it is replaced, and the right modes for user and
//! system mode.

use std::os::unix::fs::PermissionsExt;
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
    #[error("kilnd will not listen on {socket}: {source}")]
    Untrusted {
        socket: PathBuf,
        source: kiln_shared::paths::SocketPathError,
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
    prepare_dir(path, dir, system_mode, group_id)?;
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

/// Makes the socket's directory when it is missing (0700, or 0750 with group `group_id` in
/// system mode; in user mode the /tmp fallback `/tmp/kiln-UID` too, 0700) and then insists
/// that only kilnd's user and root control the whole path (see
/// [`kiln_shared::paths::check_socket_path`]). A directory kilnd did not make is never
/// repaired, only refused with what to do: someone else may hold it.
fn prepare_dir(
    socket: &Path,
    dir: &Path,
    system_mode: bool,
    group_id: Option<u32>,
) -> Result<(), SocketError> {
    use kiln_shared::paths::{check_socket_path, fallback_runtime_dir, SocketDir};
    use std::os::unix::fs::DirBuilderExt;
    let dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SocketError::Dir { path, source }
    };
    let fallback = fallback_runtime_dir();
    if !system_mode && dir.starts_with(&fallback) && !fallback.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&fallback)
            .map_err(dir_err(&fallback))?;
    }
    let wanted = if system_mode { 0o750 } else { 0o700 };
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(wanted)
            .create(dir)
            .map_err(dir_err(dir))?;
        // Made here, so set exactly as it should be (the umask may have taken bits away).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted))
            .map_err(dir_err(dir))?;
        if let (true, Some(gid)) = (system_mode, group_id) {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(dir_err(dir))?;
        }
    }
    let rule = if system_mode {
        SocketDir::Group
    } else {
        SocketDir::Private
    };
    check_socket_path(socket, rule).map_err(|source| SocketError::Untrusted {
        socket: socket.into(),
        source,
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mkdir(p: &Path, mode: u32) {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `bind` of `dir/kiln.sock`: Ok, or the error's message.
    async fn check_bind(dir: &Path, system_mode: bool) -> Result<(), String> {
        bind(&dir.join("kiln.sock"), system_mode, None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Issue 8, defect 4: a socket directory its group (or anyone but its owner) may write is
    /// refused, as is one owned by another user, who is named; one kilnd makes is made right.
    #[tokio::test]
    async fn socket_directories_others_control_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        mkdir(&base.join("group"), 0o770);
        let err = check_bind(&base.join("group"), true).await.unwrap_err();
        assert!(
            err.contains("mode 0770") && err.contains("may write in it"),
            "{err}"
        );
        mkdir(&base.join("wide/run"), 0o750);
        mkdir(&base.join("wide"), 0o777);
        let err = check_bind(&base.join("wide/run"), false).await.unwrap_err();
        assert!(err.contains("wide has mode 0777"), "{err}");

        let made = base.join("made/run");
        let _listener = bind(&made.join("kiln.sock"), true, None).await.unwrap();
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        let sock = std::fs::metadata(made.join("kiln.sock")).unwrap();
        assert_eq!(sock.mode() & 0o777, 0o660);

        if kiln_shared::paths::current_uid() == 0 {
            mkdir(&base.join("theirs"), 0o700);
            std::os::unix::fs::chown(base.join("theirs"), Some(4242), None).unwrap();
            let err = check_bind(&base.join("theirs"), true).await.unwrap_err();
            assert!(err.contains("owned by uid 4242"), "{err}");
            assert!(!err.contains("chmod"), "{err}");
        }
    }
}
