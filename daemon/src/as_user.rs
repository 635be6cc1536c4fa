//! Touching files as the user who asked, not as kilnd: in system mode kilnd runs as root, and a
//! file a user names must be one that user could open. `setpriv` (util-linux) takes on the user's
//! uid, gid and groups before the file is opened, so the kernel decides (ACLs and every directory
//! on the way included) and no path swapped after some check of kilnd's can fool it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// A user's credentials.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub uid: u32,
    /// Primary group: files kilnd makes for the user get it.
    pub gid: u32,
    pub gids: &'a [u32],
}

impl User<'_> {
    /// Whether kilnd must act as this user rather than as itself: not for root or kilnd's own
    /// user (user mode), whose permissions kilnd has anyway.
    pub fn is_other(&self) -> bool {
        self.uid != 0 && self.uid != kiln_shared::paths::current_uid()
    }
}

/// `setpriv` with the user's uid, gid and groups, ready for `--` and a command.
pub fn command(user: User) -> Command {
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

/// Reads at most `limit` bytes of `file` as `user`; the error is the reader's own words.
pub async fn read(user: User<'_>, file: &str, limit: u64) -> Result<Vec<u8>, String> {
    let out = command(user)
        .args(["--", "head", "-c"])
        .arg(limit.to_string())
        .args(["--", file])
        .output()
        .await
        .map_err(|e| format!("cannot run setpriv (util-linux): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(out.stdout)
}

/// A file opened by the user and held open by a helper process: [`HeldOpen::path`] reaches that
/// very open file (through /proc), whatever its name points at by then, for as long as this
/// lives.
pub struct HeldOpen {
    path: PathBuf,
    _helper: Child,
}

impl HeldOpen {
    /// Opens `file` for reading as `user`; the error says why they may not (the shell's words).
    pub async fn open(user: User<'_>, file: &Path) -> Result<HeldOpen, String> {
        let mut helper = command(user)
            .args([
                "--",
                "sh",
                "-c",
                "exec 3<\"$1\" && echo opened && exec sleep 86400",
                "sh",
            ])
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run setpriv (util-linux): {e}"))?;
        let mut first = String::new();
        if let Some(out) = helper.stdout.take() {
            let mut out = BufReader::new(out);
            let read = out.read_line(&mut first);
            let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        }
        if first.trim() == "opened" {
            let pid = helper.id().unwrap_or(0);
            return Ok(HeldOpen {
                path: PathBuf::from(format!("/proc/{pid}/fd/3")),
                _helper: helper,
            });
        }
        let mut why = String::new();
        if let Some(mut err) = helper.stderr.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), err.read_to_string(&mut why)).await;
        }
        let _ = helper.kill().await;
        Err(why.trim().to_string())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn files_open_only_as_far_as_the_user_may() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(dir.path(), 0o755).unwrap();
        let user = User {
            uid: 4242,
            gid: 4242,
            gids: &[4242],
        };
        let open = dir.path().join("open");
        std::fs::write(&open, "data").unwrap();
        mode(&open, 0o644).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        mode(&secret, 0o600).unwrap();

        let held = HeldOpen::open(user, &open).await.unwrap();
        // The name may go elsewhere now: the held file is still the one the user opened.
        std::fs::rename(&open, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, &open).unwrap();
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), "data");
        drop(held);

        let err = HeldOpen::open(user, &secret).await.err().unwrap();
        assert!(err.contains("Permission denied"), "{err}");
        let err = HeldOpen::open(user, &open).await.err().unwrap();
        assert!(
            err.contains("Permission denied"),
            "through the symlink too: {err}"
        );
    }
}
