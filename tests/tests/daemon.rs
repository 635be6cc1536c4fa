//! kilnd as a process: restart after kill -9, stale sockets, one daemon per data dir, clean
//! shutdown, refusal of unusable data dirs and newer schemas, a warning for a config key that
//! does nothing.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use kiln_tests::{template, Kilnd};

/// A temp dir for tests that start no daemon of their own.
struct Dir {
    dir: tempfile::TempDir,
}
use serde_json::json;

#[test]
fn everything_survives_kill_9() {
    let mut k = Kilnd::start();
    let mut c = k.connect();
    for i in 0..25 {
        c.call(
            "template.create",
            json!({"template": template(&format!("t{i}"))}),
        );
    }
    let mut t = template("t0");
    t["description"] = json!("edited");
    c.call("template.update", json!({"name": "t0", "template": t}));
    drop(c);
    k.kill9();
    // The killed daemon left its socket file behind: the new one probes it and replaces it.
    assert!(k.socket.exists());
    k.spawn();
    let mut c = k.connect();
    assert_eq!(
        c.call("template.list", json!({}))["templates"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    let got = c.call("template.get", json!({"name": "t0"}));
    assert_eq!(
        (
            got["revision"].clone(),
            got["template"]["description"].clone()
        ),
        (json!(2), json!("edited"))
    );
    assert_eq!(
        c.call("template.revisions", json!({"name": "t0"}))["revisions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(k.log_text().contains("replacing stale socket"));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut k = Kilnd::start();
    assert!(
        k.terminate(),
        "kilnd should exit 0 on SIGTERM: {}",
        k.log_text()
    );
    assert!(!k.socket.exists(), "socket removed on shutdown");
}

/// A kilnd.toml written for the step cache (`cache_max_gb`, which nothing reads yet) still starts
/// kilnd, which says the key has no effect.
#[test]
fn cache_max_gb_starts_kilnd_with_a_warning() {
    let k = Kilnd::start_with_config(Some("cache_max_gb = 50\n"));
    k.connect().call("daemon.status", json!({}));
    let log = k.log_text();
    assert!(
        log.contains("cache_max_gb has no effect: kiln has no step cache yet"),
        "{log}"
    );
}

/// Runs another kilnd on `socket` and `data` to completion: (exited 0, its stderr).
fn second_daemon(socket: &std::path::Path, data: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(kiln_tests::bin("kilnd"))
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_daemon_per_data_dir_and_per_socket() {
    let k = Kilnd::start();
    let other_sock = k.dir.path().join("other").join("k.sock");
    let (ok, err) = second_daemon(&other_sock, &k.data_dir);
    assert!(!ok);
    assert!(err.contains("already using the data directory"), "{err}");

    let other_data = k.dir.path().join("data2");
    let (ok, err) = second_daemon(&k.socket, &other_data);
    assert!(!ok);
    assert!(err.contains("already listening"), "{err}");
    // The first daemon is untouched.
    assert_eq!(
        k.connect().call("template.list", json!({})),
        json!({"templates": []})
    );
}

#[test]
fn unusable_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let k = Dir { dir };
    let (ok, err) = second_daemon(&k.dir.path().join("s/k.sock"), &file.join("data"));
    assert!(!ok);
    assert!(
        err.contains("data directory") && err.contains("plain-file"),
        "{err}"
    );

    if kiln_shared::paths::current_uid() != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = k.dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        let (ok, err) = second_daemon(&k.dir.path().join("s2/k.sock"), &ro);
        assert!(!ok);
        assert!(err.contains("not usable"), "{err}");
    }
}

#[test]
fn insecure_socket_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = Dir { dir };
    let (ok, err) = second_daemon(&open.join("k.sock"), &k.dir.path().join("d"));
    assert!(!ok);
    assert!(err.contains("chmod 700"), "{err}");
}

#[test]
fn newer_schema_is_refused_without_damage() {
    let mut k = Kilnd::start();
    k.connect()
        .call("template.create", json!({"template": template("keep")}));
    k.terminate();
    let db = k.data_dir.join("kiln.redb");
    kiln_daemon::store::Store::open(&db)
        .unwrap()
        .set_schema_version(99)
        .unwrap();
    let (ok, err) = second_daemon(&k.socket, &k.data_dir);
    assert!(!ok);
    assert!(
        err.contains("newer kilnd") && err.contains("schema 99"),
        "{err}"
    );
    // Put the version back: the template is still there.
    kiln_daemon::store::Store::open_unchecked_for_tests(&db)
        .unwrap()
        .set_schema_version(1)
        .unwrap();
    k.spawn();
    assert_eq!(
        k.connect().call("template.get", json!({"name": "keep"}))["revision"],
        1
    );
}
