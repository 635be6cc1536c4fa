//! Where the socket lives: user mode, system mode and the `KILN_SOCKET` override (DESIGN.md,
//! "Files and sockets"). Shared so that the daemon and its clients agree without configuration.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket path for clients.
pub const SOCKET_ENV: &str = "KILN_SOCKET";
/// Environment variable that picks the project for clients.
pub const PROJECT_ENV: &str = "KILN_PROJECT";

/// The effective uid of this process (read from `/proc/self`, so no libc call is needed).
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// True when running as root, which selects system mode.
pub fn system_mode() -> bool {
    current_uid() == 0
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The runtime directory holding the socket in user mode.
fn user_runtime_dir() -> PathBuf {
    env_path("XDG_RUNTIME_DIR").unwrap_or_else(fallback_runtime_dir)
}

/// Where user mode keeps its socket when `XDG_RUNTIME_DIR` is unset: `/tmp/kiln-UID`, which
/// must be the user's own and 0700 (see [`check_socket_path`]), as tmux and ssh-agent do.
pub fn fallback_runtime_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/kiln-{}", current_uid()))
}

/// Why a socket's path cannot be trusted: someone but its owner and root could put another
/// socket in its place.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("{path} is owned by uid {owner}, not by uid {me} or root, so that user could put their own socket in place of kilnd's; remove it (as root or uid {owner}) and let kilnd create it, or use a socket in a directory of your own (--socket / KILN_SOCKET)")]
    Foreign { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} has mode {mode:04o}: users other than its owner may write in it, so they could replace kilnd's socket; run `chmod go-w {path}`, or remove it and let kilnd create it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("socket directory {path} has mode {mode:04o}; kiln needs {wanted} (run `chmod {chmod} {path}`, or pick another --socket)")]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        wanted: &'static str,
        chmod: &'static str,
    },
    #[error("{path} is not a directory; remove it or pick another --socket")]
    NotDirectory { path: PathBuf },
    #[error("cannot check {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How private the directory holding a socket must be, beyond being written by its owner only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDir {
    /// User mode: only the owner may enter (0700).
    Private,
    /// System mode: the owner and its group may enter (0750), others not.
    Group,
    /// What a client asks of a daemon's directory: only that no one but its owner may write.
    Unwritable,
}

impl SocketDir {
    fn forbidden(self) -> (u32, &'static str, &'static str) {
        match self {
            SocketDir::Private => (0o077, "a directory only you can enter (0700)", "700"),
            SocketDir::Group => (
                0o027,
                "a directory only root and its group can enter (0750)",
                "750",
            ),
            SocketDir::Unwritable => (0o022, "a directory only its owner can write", "go-w"),
        }
    }
}

/// Checks that only this process's user and root control `socket`'s path: every directory
/// above it (symlinks resolved and not) is owned by one of them and writable by no one else,
/// except a sticky one like /tmp (there only an entry's owner may rename it). The socket's own
/// directory must besides be as private as `dir` says, and in user mode so must the /tmp
/// fallback (`/tmp/kiln-UID`, 0700). Daemon and client check the same, the client before it
/// connects.
pub fn check_socket_path(socket: &Path, dir: SocketDir) -> Result<(), SocketPathError> {
    let me = current_uid();
    let fallback = (me != 0).then(fallback_runtime_dir);
    check_socket_path_of(socket, dir, me, fallback.as_deref())
}

/// [`check_socket_path`] for user `me`, whose /tmp fallback (if any) is `fallback`.
fn check_socket_path_of(
    socket: &Path,
    dir: SocketDir,
    me: u32,
    fallback: Option<&Path>,
) -> Result<(), SocketPathError> {
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SocketPathError::Io { path, source }
    };
    let meta = std::fs::metadata(parent).map_err(io(parent))?;
    if !meta.is_dir() {
        return Err(SocketPathError::NotDirectory {
            path: parent.into(),
        });
    }
    let real = std::fs::canonicalize(parent).map_err(io(parent))?;
    for chain in [parent, real.as_path()] {
        for d in chain.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            let meta = std::fs::symlink_metadata(d).map_err(io(d))?;
            if meta.uid() != me && meta.uid() != 0 {
                return Err(SocketPathError::Foreign {
                    path: d.into(),
                    owner: meta.uid(),
                    me,
                });
            }
            let mode = meta.mode() & 0o7777;
            let sticky = mode & 0o1000 != 0;
            if meta.is_dir() && mode & 0o022 != 0 && !(sticky && d != parent) {
                return Err(SocketPathError::Writable {
                    path: d.into(),
                    mode,
                });
            }
        }
    }
    let mut private = vec![(real.clone(), dir)];
    if let Some(fallback) = fallback.filter(|f| real.starts_with(f)) {
        private.push((fallback.to_path_buf(), SocketDir::Private));
    }
    for (d, rule) in private {
        let meta = std::fs::metadata(&d).map_err(io(&d))?;
        let (forbidden, wanted, chmod) = rule.forbidden();
        let mode = meta.mode() & 0o7777;
        let owner_ok = meta.uid() == me || (rule == SocketDir::Unwritable && meta.uid() == 0);
        if mode & forbidden != 0 || !owner_ok {
            if !owner_ok {
                return Err(SocketPathError::Foreign {
                    path: d,
                    owner: meta.uid(),
                    me,
                });
            }
            return Err(SocketPathError::NotPrivate {
                path: d,
                mode,
                wanted,
                chmod,
            });
        }
    }
    Ok(())
}

/// The socket path clients and the daemon use unless told otherwise.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = env_path(SOCKET_ENV) {
        return p;
    }
    if system_mode() {
        PathBuf::from(SYSTEM_SOCKET)
    } else {
        user_runtime_dir().join("kiln").join("kiln.sock")
    }
}

/// The system kilnd's socket.
pub const SYSTEM_SOCKET: &str = "/run/kiln/kiln.sock";

/// Where `kiln` connects unless `--socket` says otherwise: `KILN_SOCKET`; for root the system
/// socket; for anyone else their own kilnd's socket when it exists, else the system kilnd's when
/// that exists (a member of `kiln` needs no setting), else their own (so the error says to start
/// kilnd).
pub fn client_socket_path() -> PathBuf {
    let own = default_socket_path();
    if env_path(SOCKET_ENV).is_some() || system_mode() || own.exists() {
        return own;
    }
    let system = PathBuf::from(SYSTEM_SOCKET);
    if system.exists() {
        system
    } else {
        own
    }
}

/// The daemon's data directory unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/var/lib/kiln");
    }
    env_path("XDG_DATA_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kiln")
}

/// The daemon's config file unless `--config` says otherwise.
pub fn default_config_path() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/etc/kiln/kilnd.toml");
    }
    env_path("XDG_CONFIG_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kiln")
        .join("kilnd.toml")
}

/// The project a client acts in: `KILN_PROJECT` or `default`.
pub fn default_project() -> String {
    std::env::var(PROJECT_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| crate::protocol::DEFAULT_PROJECT.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Makes `dir` with `mode` and owner `uid` (another owner only as root).
    fn mkdir(dir: &Path, mode: u32, uid: Option<u32>) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        if uid.is_some() {
            std::os::unix::fs::chown(dir, uid, None).unwrap();
        }
    }

    /// `check_socket_path` of `dir/kiln.sock`: Ok, or the error's message.
    fn check(dir: &Path, rule: SocketDir) -> Result<(), String> {
        check_socket_path(&dir.join("kiln.sock"), rule).map_err(|e| e.to_string())
    }

    /// A fresh directory under /tmp, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p =
                std::env::temp_dir().join(format!("kiln-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The /tmp fallback of user mode: the user's own and 0700, else refused, whoever made it.
    #[test]
    fn the_tmp_fallback_is_the_users_own_and_private() {
        if current_uid() != 0 {
            return; // Directories of another uid take root to make.
        }
        let tmp = Scratch::new("fallback");
        let user = 4271;
        let fallback = tmp.0.join(format!("kiln-{user}"));
        let socket = fallback.join("kiln").join("kiln.sock");
        let check = |socket: &Path| {
            check_socket_path_of(socket, SocketDir::Private, user, Some(&fallback))
                .map_err(|e| e.to_string())
        };
        std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
        // Another user made it first, open to all: the victim's kiln must not use it.
        mkdir(&fallback.join("kiln"), 0o700, Some(user));
        mkdir(&fallback, 0o777, Some(4272));
        let err = check(&socket).unwrap_err();
        assert!(err.contains("owned by uid 4272"), "{err}");
        // Theirs, but open to others.
        std::os::unix::fs::chown(&fallback, Some(user), None).unwrap();
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check(&socket).unwrap_err();
        assert!(
            err.contains("mode 0755") && err.contains("chmod 700"),
            "{err}"
        );
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check(&socket), Ok(()));
    }

    #[test]
    fn socket_paths_only_their_owner_and_root_control() {
        let tmp = Scratch::new("paths");
        let base = tmp.0.as_path();
        mkdir(base, 0o755, None);
        mkdir(&base.join("private"), 0o700, None);
        assert_eq!(check(&base.join("private"), SocketDir::Private), Ok(()));
        mkdir(&base.join("open"), 0o755, None);
        let err = check(&base.join("open"), SocketDir::Private).unwrap_err();
        assert!(
            err.contains("mode 0755") && err.contains("chmod 700"),
            "{err}"
        );
        assert!(
            check(&base.join("open"), SocketDir::Group).is_err(),
            "others may enter"
        );
        mkdir(&base.join("system"), 0o750, None);
        assert_eq!(check(&base.join("system"), SocketDir::Group), Ok(()));
        // Group-writable: a member could rename the socket aside and bind their own.
        mkdir(&base.join("group"), 0o770, None);
        let err = check(&base.join("group"), SocketDir::Group).unwrap_err();
        assert!(
            err.contains("mode 0770") && err.contains("may write in it"),
            "{err}"
        );
        // So can anyone who may write a directory above it.
        mkdir(&base.join("wide/inner"), 0o700, None);
        mkdir(&base.join("wide"), 0o777, None);
        let err = check(&base.join("wide/inner"), SocketDir::Private).unwrap_err();
        assert!(err.contains("wide has mode 0777"), "{err}");
        // A sticky directory above (like /tmp) is fine: no one else can rename our entries.
        mkdir(&base.join("sticky/inner"), 0o700, None);
        mkdir(&base.join("sticky"), 0o1777, None);
        assert_eq!(
            check(&base.join("sticky/inner"), SocketDir::Private),
            Ok(())
        );
        // A symlink is judged by where it leads too.
        std::os::unix::fs::symlink(base.join("wide/inner"), base.join("link")).unwrap();
        assert!(check(&base.join("link"), SocketDir::Private).is_err());

        if current_uid() == 0 {
            mkdir(&base.join("theirs"), 0o700, Some(4242));
            let err = check(&base.join("theirs"), SocketDir::Group).unwrap_err();
            assert!(err.contains("owned by uid 4242"), "{err}");
            assert!(!err.contains("chmod"), "{err}");
            mkdir(&base.join("theirs-above/mine"), 0o700, None);
            std::os::unix::fs::chown(base.join("theirs-above"), Some(4242), None).unwrap();
            let err = check(&base.join("theirs-above/mine"), SocketDir::Private).unwrap_err();
            assert!(err.contains("theirs-above is owned by uid 4242"), "{err}");
        }
    }
}
