//! Socket trust end to end (issue 8, defects 4 and 5): the real `kilnd` and `kiln` refuse a
//! socket whose directory someone else controls, the /tmp fallback of user mode included.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{bin, stderr};

/// The user whose /tmp fallback is at stake, and the one who plants a directory first. Numbers
/// no other test uses: `/tmp/kiln-4271` is a global name.
const USER: u32 = 4271;
const INTRUDER: u32 = 4272;

/// `program ARGS` as `USER`, with a clean environment: no `XDG_RUNTIME_DIR`, so the socket is
/// `/tmp/kiln-4271/kiln/kiln.sock`.
fn as_user(program: &Path, args: &[&str], home: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .args(["--clear-groups", "--"])
        .arg(program)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

fn mkdir(p: &Path, mode: u32, owner: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::os::unix::fs::chown(p, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Removes the fallback directory when dropped, whatever the test did.
struct Fallback(PathBuf);

impl Drop for Fallback {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kiln_list(home: &Path) -> Output {
    as_user(&bin("kiln"), &["template", "list"], home)
        .output()
        .unwrap()
}

#[test]
fn the_tmp_fallback_must_be_the_users_own_and_private() {
    if kiln_shared::paths::current_uid() != 0 {
        eprintln!("skipped: acting as other users takes root");
        return;
    }
    let fallback = Fallback(PathBuf::from(format!("/tmp/kiln-{USER}")));
    let _ = std::fs::remove_dir_all(&fallback.0);
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = home.path().join("home");
    mkdir(&home, 0o700, USER);

    // Another user got there first, open to all: neither kilnd nor kiln uses it.
    mkdir(&fallback.0, 0o777, INTRUDER);
    let out = as_user(&bin("kilnd"), &[], &home).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("/tmp/kiln-{USER} is owned by uid {INTRUDER}")),
        "{err}"
    );
    // Their socket in place of kilnd's: kiln refuses before it connects.
    mkdir(&fallback.0.join("kiln"), 0o777, INTRUDER);
    let planted = fallback.0.join("kiln/kiln.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&planted).unwrap();
    let out = kiln_list(&home);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("will not connect") && err.contains(&format!("owned by uid {INTRUDER}")),
        "{err}"
    );
    drop(_listener);

    // The user's own but open to others: refused, saying how to fix it.
    std::fs::remove_dir_all(&fallback.0).unwrap();
    mkdir(&fallback.0, 0o755, USER);
    let out = as_user(&bin("kilnd"), &[], &home).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 700"), "{}", stderr(&out));

    // Absent: kilnd makes it 0700, and kiln talks to it.
    std::fs::remove_dir_all(&fallback.0).unwrap();
    let mut kilnd = as_user(&bin("kilnd"), &[], &home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = fallback.0.join("kiln/kiln.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "kilnd did not listen on {socket:?}"
        );
        if let Some(status) = kilnd.try_wait().unwrap() {
            panic!("kilnd exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(&fallback.0).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (USER, 0o700));
    let out = kiln_list(&home);
    assert!(out.status.success(), "{}", stderr(&out));
    kilnd.kill().unwrap();
    kilnd.wait().unwrap();
}

/// `kiln` checks any socket it is pointed at: a directory someone else may write is refused.
#[test]
fn kiln_refuses_a_socket_others_could_have_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open.join("kiln.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = Command::new(bin("kiln"))
        .args(["template", "list"])
        .env("KILN_SOCKET", &socket)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("will not connect") && err.contains("mode 0777"),
        "{err}"
    );
}
