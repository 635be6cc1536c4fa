//! Opening files as the user who asked, not as kilnd: in system mode kilnd runs as root, and a
//! file a user names must be one that user could open. A `setpriv` (util-linux) helper takes on
//! the user's uid, gid and groups and opens the whole path, so the kernel decides (ACLs, every
//! directory and symlink on the way); kilnd then takes over the very file the helper opened and
//! checks what it is on that handle. No name is looked at as root, so no path swapped after some
//! check of kilnd's can fool it, and nothing kilnd answers tells the user more than their own
//! `cat` would.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// A user's credentials: kiln's one type for them (a connection's peer, who started a build,
/// who asks the catalog for a file). Stored with a build, as `{uid, gid, gids}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    /// Primary group: files kilnd makes for the user get it.
    pub gid: u32,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
}

impl User {
    /// Whether kilnd must act as this user rather than as itself: not for root or kilnd's own
    /// user (user mode), whose permissions kilnd has anyway.
    pub fn is_other(&self) -> bool {
        self.uid != 0 && self.uid != kiln_shared::paths::current_uid()
    }
}

/// `setpriv` with the user's uid, gid and groups, ready for `--` and a command.
fn command(user: &User) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid));
    if user.gids.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let groups: Vec<String> = user.gids.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", groups.join(",")));
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Why kilnd will not use a file or directory a caller named.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Every case the caller may not see (missing, no permission, a directory on the way they
    /// cannot search): one message, the reason being what their own `cat` would say.
    #[error("cannot read {path} as uid {uid}: {why}")]
    CannotRead { path: String, uid: u32, why: String },
    #[error("cannot write into {path} as uid {uid}: {why}")]
    CannotWrite { path: String, uid: u32, why: String },
    #[error("{path} is {what}; name a regular file")]
    NotRegular { path: String, what: &'static str },
    #[error("{path} is not a directory; name a file in an existing directory")]
    NotDirectory { path: String },
    #[error("cannot open {path} as uid {uid}: cannot run setpriv (util-linux): {why}")]
    Helper { path: String, uid: u32, why: String },
}

/// What the helper shell does before it holds the opened file as fd 3: a name the user could
/// read but sees as something other than a regular file is not opened at all (a FIFO would
/// hang, a device might act); one they may not read fails to open like any other, with the same
/// words. The file actually opened is checked again by kilnd (see [`check_regular`]).
const OPEN_FILE: &str = r#"if [ -e "$1" ] && ! [ -f "$1" ] && [ -r "$1" ]; then echo special; exit 0; fi
exec 3<"$1"
echo opened
exec sleep 86400"#;

/// The same for a directory the user must be able to write into (search and write), checked by
/// the kernel on the very directory held (through /proc/self/fd/3: ACLs included).
const OPEN_DIR: &str = r#"exec 3<"$1"
if ! [ -d /proc/self/fd/3 ]; then echo special; exit 0; fi
if ! [ -w /proc/self/fd/3 ] || ! [ -x /proc/self/fd/3 ]; then echo readonly; exit 0; fi
echo opened
exec sleep 86400"#;

/// Opens the regular file `path` for reading as `user` (the whole path resolved with their
/// rights, symlinks included), or as kilnd itself when `user` is `None`. The file returned is
/// kilnd's own handle on the very file opened, checked (fstat, fstatfs) to be a regular file on
/// a real filesystem: no device, FIFO, or /proc or /sys file, whatever the name points at by
/// the time it is read.
pub async fn open_file(user: Option<&User>, path: &Path) -> Result<File, OpenError> {
    let shown = path.display().to_string();
    let file = match user {
        Some(user) => held(user, path, OPEN_FILE).await?,
        None => {
            let cannot = |e: std::io::Error| OpenError::CannotRead {
                path: shown.clone(),
                uid: kiln_shared::paths::current_uid(),
                why: errno_text(&e),
            };
            if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
                return Err(OpenError::NotRegular {
                    path: shown,
                    what: "not a regular file",
                });
            }
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc_flags::NONBLOCK_NOCTTY)
                .open(path)
                .map_err(cannot)?
        }
    };
    check_regular(&file, &shown)?;
    Ok(file)
}

/// Opens the directory `dir` as `user` for kilnd to create a file in on their behalf: only if
/// they may search and write it (the kernel's answer on the directory held, not a name), the
/// whole path resolved as them. As kilnd itself when `user` is `None`.
pub async fn open_dir_to_write(user: Option<&User>, dir: &Path) -> Result<File, OpenError> {
    let shown = dir.display().to_string();
    let file = match user {
        Some(user) => held(user, dir, OPEN_DIR).await?,
        None => File::open(dir).map_err(|e| OpenError::CannotWrite {
            path: shown.clone(),
            uid: kiln_shared::paths::current_uid(),
            why: errno_text(&e),
        })?,
    };
    let meta = file.metadata().map_err(|e| OpenError::CannotWrite {
        path: shown.clone(),
        uid: user.map_or(kiln_shared::paths::current_uid(), |u| u.uid),
        why: errno_text(&e),
    })?;
    if !meta.is_dir() {
        return Err(OpenError::NotDirectory { path: shown });
    }
    Ok(file)
}

mod libc_flags {
    /// `O_NONBLOCK | O_NOCTTY`: opening never waits (a FIFO) nor takes a terminal.
    pub const NONBLOCK_NOCTTY: i32 = 0o4000 | 0o400;
}

/// Pseudo-filesystems whose "regular files" are not data a user owns (kernel and process
/// state): `statfs` magic numbers from linux/magic.h.
const PSEUDO_FILESYSTEMS: &[(u64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x1cd1, "devpts"),
];

/// Refuses anything but a regular file on a real filesystem, judged on the open file itself.
fn check_regular(file: &File, shown: &str) -> Result<(), OpenError> {
    let not = |what| OpenError::NotRegular {
        path: shown.to_string(),
        what,
    };
    let meta = file.metadata().map_err(|_| not("not a regular file"))?;
    let t = meta.file_type();
    if !t.is_file() {
        use std::os::unix::fs::FileTypeExt;
        return Err(not(if t.is_dir() {
            "a directory"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }));
    }
    let fs = rustix::fs::fstatfs(file).map_err(|_| not("not a regular file"))?;
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    let magic = (fs.f_type as u64) & 0xffff_ffff;
    if PSEUDO_FILESYSTEMS.iter().any(|(m, _)| *m == magic) {
        return Err(not(
            "a file of a kernel pseudo-filesystem (/proc, /sys, ...)",
        ));
    }
    Ok(())
}

/// An io error in the words `cat` would use ("Permission denied"), without Rust's "(os error N)".
fn errno_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Runs `script` as `user` with `path` as `$1`; once it says `opened`, kilnd opens the file the
/// helper holds as fd 3 (through /proc: the very file it opened, whatever its name points at by
/// then) and lets the helper go. The helper is kilnd's unreaped child until then, so its pid
/// cannot be taken over by another process meanwhile.
async fn held(user: &User, path: &Path, script: &str) -> Result<File, OpenError> {
    let shown = path.display().to_string();
    let mut cmd = command(user);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    if let Some(dir) = std::env::var_os("KILND_DATA_DIR") {
        cmd.env("KILND_DATA_DIR", dir);
    }
    let mut helper = cmd
        .args(["--", "sh", "-c", script, "sh"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| OpenError::Helper {
            path: shown.clone(),
            uid: user.uid,
            why: e.to_string(),
        })?;
    let mut first = String::new();
    let mut timed_out = false;
    if let Some(out) = helper.stdout.take() {
        let mut out = BufReader::new(out);
        let read = out.read_line(&mut first);
        timed_out = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .is_err();
    }
    let dir_wanted = script == OPEN_DIR;
    let result = match first.trim() {
        "opened" => {
            let pid = helper.id().unwrap_or(0);
            let mut options = std::fs::OpenOptions::new();
            options.read(true).custom_flags(libc_flags::NONBLOCK_NOCTTY);
            options
                .open(format!("/proc/{pid}/fd/3"))
                .map_err(|e| OpenError::Helper {
                    path: shown.clone(),
                    uid: user.uid,
                    why: format!("cannot take over the file it opened: {e}"),
                })
        }
        "special" if dir_wanted => Err(OpenError::NotDirectory { path: shown }),
        "special" => Err(OpenError::NotRegular {
            path: shown,
            what: "not a regular file",
        }),
        "readonly" => Err(OpenError::CannotWrite {
            path: shown,
            uid: user.uid,
            why: "Permission denied".into(),
        }),
        _ => {
            let mut why = String::new();
            if let Some(mut err) = helper.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), err.read_to_string(&mut why))
                    .await;
            }
            // The shell says "sh: 1: cannot open PATH: REASON"; the reason is the user's own.
            let why = if timed_out {
                "it did not open within 10 s".to_string()
            } else {
                why.trim()
                    .rsplit(": ")
                    .next()
                    .filter(|w| !w.is_empty())
                    .unwrap_or("it could not be opened")
                    .to_string()
            };
            if dir_wanted {
                Err(OpenError::CannotWrite {
                    path: shown,
                    uid: user.uid,
                    why,
                })
            } else {
                Err(OpenError::CannotRead {
                    path: shown,
                    uid: user.uid,
                    why,
                })
            }
        }
    };
    let _ = helper.kill().await;
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn other() -> User {
        User {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        }
    }

    fn mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// Opens `path` as `user` and returns its content, or the error's message.
    async fn read_as(user: Option<&User>, path: &Path) -> Result<String, String> {
        let mut file = open_file(user, path).await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        Ok(text)
    }

    /// Checks that `user` may not open `path`, with exactly `message`.
    async fn check_refused(user: Option<&User>, path: &Path, message: &str) {
        assert_eq!(
            read_as(user, path).await,
            Err(message.to_string()),
            "{path:?}"
        );
    }

    #[tokio::test]
    async fn files_open_only_as_far_as_the_user_may() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let open = dir.path().join("open");
        std::fs::write(&open, "data").unwrap();
        mode(&open, 0o644);
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        mode(&secret, 0o600);

        let mut held = open_file(Some(&other()), &open).await.unwrap();
        // The name may go elsewhere now: the file is still the one the user opened.
        std::fs::rename(&open, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, &open).unwrap();
        let mut text = String::new();
        held.read_to_string(&mut text).unwrap();
        assert_eq!(text, "data");

        let denied =
            |p: &Path| format!("cannot read {} as uid 4242: Permission denied", p.display());
        check_refused(Some(&other()), &secret, &denied(&secret)).await;
        check_refused(Some(&other()), &open, &denied(&open)).await;
        assert_eq!(
            read_as(None, &open).await.unwrap(),
            "s",
            "kilnd itself follows it"
        );
    }

    /// Nothing the user cannot see is told apart: a missing file, a secret one, the hidden
    /// directory itself, and a symlink in it to a file they could read all say the same.
    #[tokio::test]
    async fn what_the_user_cannot_see_all_reads_alike() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let readable = dir.path().join("readable");
        std::fs::write(&readable, "r").unwrap();
        mode(&readable, 0o644);
        let hidden = dir.path().join("hidden");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&readable, hidden.join("link")).unwrap();
        mode(&hidden, 0o700);
        for p in [
            hidden.join("nonexistent"),
            hidden.join("secret"),
            hidden.clone(),
            hidden.join("link"),
        ] {
            let msg = format!("cannot read {} as uid 4242: Permission denied", p.display());
            check_refused(Some(&other()), &p, &msg).await;
        }
        // What they can see may be told as it is.
        let missing = dir.path().join("missing");
        let msg = format!(
            "cannot read {} as uid 4242: No such file",
            missing.display()
        );
        check_refused(Some(&other()), &missing, &msg).await;
    }

    /// Sources are regular files on real filesystems, for users and kilnd alike.
    #[tokio::test]
    async fn only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        mode(&fifo, 0o666);
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        mode(&sub, 0o755);
        let not = |p: &str, what: &str| format!("{p} is {what}; name a regular file");
        let other = other();
        let mut users = vec![None];
        if kiln_shared::paths::current_uid() == 0 {
            users.push(Some(&other));
        }
        for user in users {
            let special = |p: &Path| not(&p.display().to_string(), "not a regular file");
            for p in [Path::new("/dev/zero"), &fifo, &sub] {
                check_refused(user, p, &special(p)).await;
            }
            let environ = Path::new("/proc/self/environ");
            let pseudo = "a file of a kernel pseudo-filesystem (/proc, /sys, ...)";
            check_refused(user, environ, &not("/proc/self/environ", pseudo)).await;
        }
        // The check is on the file opened, not the name: a directory or device held open.
        let file = File::open(&sub).unwrap();
        assert!(matches!(
            check_regular(&file, "x"),
            Err(OpenError::NotRegular {
                what: "a directory",
                ..
            })
        ));
        let file = File::open("/dev/zero").unwrap();
        assert!(matches!(
            check_regular(&file, "x"),
            Err(OpenError::NotRegular {
                what: "a character device",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn directories_open_to_write_only_where_the_user_may() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
        let roots = dir.path().join("roots");
        std::fs::create_dir(&roots).unwrap();
        mode(&roots, 0o755);
        let hidden = dir.path().join("hidden");
        std::fs::create_dir(&hidden).unwrap();
        let open_inside = hidden.join("open");
        std::fs::create_dir(&open_inside).unwrap();
        mode(&open_inside, 0o777);
        mode(&hidden, 0o700);
        // A symlink the user may follow to a writable directory they could not reach.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open_inside, &link).unwrap();

        assert!(open_dir_to_write(Some(&other()), &theirs).await.is_ok());
        assert!(open_dir_to_write(None, &roots).await.is_ok());
        for (p, why) in [
            (&roots, "Permission denied"),
            (&link, "Permission denied"),
            (&open_inside, "Permission denied"),
        ] {
            let err = open_dir_to_write(Some(&other()), p).await.unwrap_err();
            let want = format!("cannot write into {} as uid 4242: {why}", p.display());
            assert_eq!(err.to_string(), want);
        }
        let file = theirs.join("f");
        std::fs::write(&file, "").unwrap();
        let err = open_dir_to_write(Some(&other()), &file).await.unwrap_err();
        assert!(matches!(err, OpenError::NotDirectory { .. }), "{err}");
    }
}
