//! The image catalog end to end: `kiln image ...` and raw `image.*` calls against a real kilnd,
//! with real qcow2 files made by qemu-img, and recovery after a restart.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_daemon::catalog::{sha256_file, ImageRecord, State};
use kiln_daemon::store::Store;
use kiln_tests::{json_err, json_out, stderr, Kilnd};
use serde_json::{json, Value};

/// Runs `qemu-img ARGS` and insists it worked.
fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is installed");
    assert!(out.status.success(), "qemu-img {args:?}: {}", stderr(&out));
}

/// A fresh 64 MiB qcow2 (or raw) image at `dir/name`.
fn disk(dir: &Path, name: &str, format: &str) -> String {
    let p = dir.join(name).display().to_string();
    qemu_img(&["create", "-q", "-f", format, &p, "64M"]);
    p
}

/// The image files in the catalog directory, sorted.
fn catalog_files(k: &Kilnd) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(k.data_dir.join("images"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Checks one `kiln image import` refusal: exit 1, kind `invalid_params`, a message naming the
/// file and what is wrong with it, and nothing left in the catalog.
fn check_refused(k: &Kilnd, file: &str, what: &str) {
    let out = k.kiln(&[
        "image",
        "import",
        file,
        "--name",
        "x",
        "--os",
        "debian-12",
        "--user",
        "debian",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err: Value = serde_json::from_str(&stderr(&out)).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_params", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains(file) && msg.contains(what), "{msg}");
    assert!(catalog_files(k).is_empty(), "{:?}", catalog_files(k));
}

#[test]
fn import_list_show_delete() {
    let k = Kilnd::start();
    let dir = k.dir.path();
    let qcow2 = disk(dir, "base.qcow2", "qcow2");
    let raw = disk(dir, "mine.img", "raw");

    let public = json_out(&k.kiln(&[
        "image",
        "import",
        &qcow2,
        "--name",
        "base",
        "--os",
        "debian-12",
        "--user",
        "debian",
        "--public",
        "--json",
    ]))["image"]
        .clone();
    assert_eq!(public["visibility"], "public");
    assert_eq!(public["owner_project"], Value::Null);
    assert_eq!(public["state"], "available");
    assert_eq!(public["format"], "qcow2");
    assert_eq!(public["virtual_size"], 64 << 20);
    assert_eq!(public["min_disk_gb"], 1);
    let path = PathBuf::from(public["path"].as_str().unwrap());
    let (size, sha) = sha256_file(&path).unwrap();
    assert_eq!(public["file_size"], size);
    assert_eq!(public["sha256"], sha);

    // A relative path is resolved by kiln, in its own working directory.
    let out = k
        .kiln_cmd(&[
            "image",
            "import",
            "mine.img",
            "--name",
            "mine",
            "--os",
            "debian-12",
            "--user",
            "debian",
            "--json",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let private = json_out(&out)["image"].clone();
    assert_eq!(private["visibility"], "private");
    assert_eq!(private["owner_project"], "default");
    assert!(Path::new(&raw).exists(), "the source file is left alone");

    let out = k.kiln(&[
        "image",
        "import",
        &raw,
        "--name",
        "mine",
        "--os",
        "debian-12",
        "--user",
        "debian",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let list = json_out(&k.kiln(&["image", "list", "--json"]));
    let names: Vec<&str> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["base", "mine"]);
    let list = json_out(&k.kiln(&["image", "list", "--visibility", "public", "--json"]));
    assert_eq!(list["images"].as_array().unwrap().len(), 1);
    let table = String::from_utf8_lossy(&k.kiln(&["image", "list"]).stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("VISIBILITY"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("base ") && lines[1].contains("public"),
        "{table}"
    );
    assert!(lines.iter().all(|l| l.len() <= 80), "{table}");

    let shown = json_out(&k.kiln(&["image", "show", "base", "--json"]));
    assert_eq!(shown["image"], public);
    let text = String::from_utf8_lossy(&k.kiln(&["image", "show", "mine"]).stdout).into_owned();
    assert!(text.contains("visibility:   private"), "{text}");

    let out = k.kiln(&["image", "delete", "mine"]);
    assert_eq!(out.status.code(), Some(2), "no --yes and no terminal");
    let private_path = private["path"].as_str().unwrap().to_string();
    assert_eq!(
        json_out(&k.kiln(&["image", "delete", "mine", "--yes", "--json"])),
        json!({})
    );
    assert!(!Path::new(&private_path).exists());
    let out = k.kiln(&["image", "show", "mine", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));

    json_out(&k.kiln(&[
        "image",
        "delete",
        public["id"].as_str().unwrap(),
        "--yes",
        "--json",
    ]));
    assert!(catalog_files(&k).is_empty(), "{:?}", catalog_files(&k));
}

#[test]
fn refuses_backing_and_data_files() {
    let k = Kilnd::start();
    let dir = k.dir.path();
    let base = disk(dir, "base.qcow2", "qcow2");
    let overlay = dir.join("overlay.qcow2").display().to_string();
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &base, &overlay,
    ]);
    check_refused(&k, &overlay, "backing file");

    let external = dir.join("external.qcow2").display().to_string();
    let data = dir.join("external.data").display().to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={data}"),
        &external,
        "64M",
    ]);
    check_refused(&k, &external, "external data file");

    let vdi = disk(dir, "disk.vdi", "vdi");
    check_refused(&k, &vdi, "kiln imports qcow2 or raw");

    let out = k.kiln(&[
        "image",
        "import",
        "/no/such.qcow2",
        "--name",
        "x",
        "--os",
        "debian-12",
        "--user",
        "debian",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such.qcow2"), "{}", stderr(&out));
    let list = json_out(&k.kiln(&["image", "list", "--json"]));
    assert_eq!(list["images"], json!([]));
}

#[test]
fn projects_see_public_own_and_shared_images() {
    let k = Kilnd::start();
    let file = disk(k.dir.path(), "a.qcow2", "qcow2");
    let mut c = k.connect();
    let import = |c: &mut kiln_tests::Conn, name: &str, project: &str, public: bool| {
        c.call(
            "image.import",
            json!({"path": file, "name": name, "os": "debian-12", "user": "debian", "public": public, "project": project}),
        )["image"]
            .clone()
    };
    let secret = import(&mut c, "secret", "a", false);
    let id = secret["id"].as_str().unwrap().to_string();
    import(&mut c, "base", "a", true);

    let names = |c: &mut kiln_tests::Conn, project: &str| -> Vec<(String, String)> {
        c.call("image.list", json!({"project": project}))["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["visibility"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        names(&mut c, "a"),
        vec![pair("base", "public"), pair("secret", "private")]
    );
    assert_eq!(names(&mut c, "b"), vec![pair("base", "public")]);

    // Another project's private image does not exist for b, by name or by id.
    for key in ["secret", id.as_str()] {
        for (method, extra) in [
            ("image.get", json!({})),
            ("image.delete", json!({})),
            ("image.share", json!({"projects": ["b"]})),
        ] {
            let mut params = json!({"image": key, "project": "b"});
            params
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (kind, err) = c.call_err(method, params);
            assert_eq!(kind, "not_found", "{method} {key}: {err}");
        }
    }

    let shared = c.call(
        "image.share",
        json!({"image": "secret", "projects": ["b", "c"], "project": "a"}),
    );
    assert_eq!(
        shared["image"]["shared_with"],
        json!([{"project": "b", "status": "pending"}, {"project": "c", "status": "pending"}])
    );
    // Pending until b accepts (here through the CLI).
    assert_eq!(names(&mut c, "b"), vec![pair("base", "public")]);
    let out = k.kiln(&["image", "list", "--pending", "--project", "b", "--json"]);
    assert_eq!(json_out(&out)["images"][0]["share_status"], "pending");
    let out = k.kiln(&["image", "accept", "secret", "--project", "b", "--json"]);
    assert_eq!(json_out(&out)["image"]["share_status"], "accepted");
    assert_eq!(
        names(&mut c, "b"),
        vec![pair("base", "public"), pair("secret", "shared")]
    );
    let seen = c.call("image.get", json!({"image": id, "project": "b"}))["image"].clone();
    assert_eq!(seen["visibility"], "shared");
    assert_eq!(seen["owner_project"], "a");
    assert_eq!(
        seen["shared_with"],
        json!([]),
        "only the owner sees the share list"
    );
    let (kind, _) = c.call_err("image.delete", json!({"image": "secret", "project": "b"}));
    assert_eq!(kind, "forbidden");
    let (kind, _) = c.call_err(
        "image.unshare",
        json!({"image": "secret", "projects": ["b"], "project": "b"}),
    );
    assert_eq!(kind, "forbidden");
    let (kind, _) = c.call_err(
        "image.share",
        json!({"image": "base", "projects": ["b"], "project": "a"}),
    );
    assert_eq!(kind, "invalid_params", "public images need no sharing");

    // The CLI shows the same through --project.
    let out = k.kiln(&[
        "image",
        "list",
        "--project",
        "b",
        "--visibility",
        "shared",
        "--json",
    ]);
    assert_eq!(json_out(&out)["images"][0]["name"], "secret");
    let out = k.kiln(&[
        "image",
        "unshare",
        "secret",
        "b",
        "--project",
        "a",
        "--json",
    ]);
    assert_eq!(
        json_out(&out)["image"]["shared_with"],
        json!([{"project": "c", "status": "pending"}])
    );
    assert_eq!(names(&mut c, "b"), vec![pair("base", "public")]);

    // Still offered to c: the delete is refused, naming it, unless --force.
    let delete = [
        "image",
        "delete",
        "secret",
        "--yes",
        "--project",
        "a",
        "--json",
    ];
    let err = json_err(&k.kiln(&delete));
    assert_eq!(err["error"]["kind"], "conflict", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("shared with project c (pending)"),
        "{message}"
    );
    json_out(&k.kiln(&[&delete[..], &["--force"]].concat()));
    let (kind, _) = c.call_err("image.get", json!({"image": id, "project": "a"}));
    assert_eq!(kind, "not_found");

    let (kind, _) = c.call_err("image.get", json!({"project": "a"}));
    assert_eq!(kind, "invalid_params");
}

#[test]
fn restart_repairs_unfinished_images() {
    let mut k = Kilnd::start();
    let file = disk(k.dir.path(), "a.qcow2", "qcow2");
    let kept = k.connect().call(
        "image.import",
        json!({"path": file, "name": "kept", "os": "debian-12", "user": "debian"}),
    )["image"]
        .clone();
    assert!(k.terminate());

    // What a daemon killed mid-publish and mid-delete leaves behind.
    let images = k.data_dir.join("images");
    {
        let store = Store::open(&k.data_dir.join("kiln.redb")).unwrap();
        let creating = ImageRecord::new(
            "img-creating",
            "half",
            "debian-12",
            Some("default"),
            images.join("img-creating.qcow2"),
        );
        std::fs::write(images.join("img-creating.qcow2.partial"), b"half written").unwrap();
        store.put_image(&creating).unwrap();
        let mut deleting = ImageRecord::new(
            "img-deleting",
            "going",
            "debian-12",
            Some("default"),
            images.join("img-deleting.qcow2"),
        );
        deleting.state = State::Deleting;
        std::fs::write(&deleting.path, b"old").unwrap();
        store.put_image(&deleting).unwrap();
    }
    std::fs::create_dir_all(images.join("kiln-bootstrap.Ab12Cd/snap")).unwrap();
    std::fs::write(images.join(".bootstrap-img-x.sh"), b"#!/bin/sh\n").unwrap();

    k.spawn();
    let list = k.connect().call("image.list", json!({}))["images"].clone();
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("half", "failed"), ("kept", "available")]);
    let half = &list[0];
    assert!(
        half["message"].as_str().unwrap().contains("kilnd stopped"),
        "{half}"
    );
    let kept_file = format!("{}.qcow2", kept["id"].as_str().unwrap());
    assert_eq!(catalog_files(&k), vec![kept_file], "leftovers were removed");

    // A failed image can be deleted like any other.
    k.connect().call("image.delete", json!({"image": "half"}));
}

/// Processes of this data dir: what a dead kilnd would have left.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat.rsplit(')').next()?.trim_start().starts_with('Z');
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (!zombie && text.contains(&needle) && !text.contains("kilnd")).then_some(text)
        })
        .collect()
}

#[test]
fn kill_9_mid_import_leaves_no_process_behind() {
    let mut k = Kilnd::start();
    let file = disk(k.dir.path(), "a.qcow2", "qcow2");
    // A qemu-img whose convert hangs (in a child of its own, as a tool's helpers would) until
    // killed: kilnd dies while it runs.
    let started = k.dir.path().join("convert-started");
    k.restart_with_stand_in(
        "qemu-img",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = convert ]; then touch {}; sleep 600; fi\nexec /usr/bin/qemu-img \"$@\"\n",
            started.display()
        ),
    );
    let mut import = k
        .kiln_cmd(&[
            "image",
            "import",
            &file,
            "--name",
            "a",
            "--os",
            "debian-12",
            "--user",
            "debian",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "convert never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    k.kill9();
    let _ = import.wait();
    let images = k.data_dir.join("images");
    assert!(
        !processes_mentioning(&images).is_empty(),
        "the stand-in qemu-img outlived kilnd"
    );

    k.path_first = None;
    k.spawn();
    assert_eq!(processes_mentioning(&images), Vec::<String>::new());
    assert!(
        k.log_text()
            .contains("killed a process a previous kilnd left running"),
        "{}",
        k.log_text()
    );
    let list = k.connect().call("image.list", json!({}))["images"].clone();
    assert_eq!(list[0]["state"], "failed", "{list}");
    assert_eq!(catalog_files(&k), Vec::<String>::new());
}

#[test]
fn bootstrap_refuses_unknown_os() {
    let k = Kilnd::start();
    let out = k.kiln(&["image", "bootstrap", "plan9-4", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_str(&stderr(&out)).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_params");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("debian-12"),
        "{err}"
    );
}

/// Builds a real Debian 12 image from the mirror: minutes, root and network. Run with
/// `KILN_TEST_BOOTSTRAP=1 cargo test -p kiln-tests --test images bootstrap_debian -- --nocapture`.
#[test]
fn bootstrap_debian_12() {
    if std::env::var_os("KILN_TEST_BOOTSTRAP").is_none_or(|v| v != "1") {
        eprintln!(
            "skipped: set KILN_TEST_BOOTSTRAP=1 to bootstrap debian-12 (minutes, root, network)"
        );
        return;
    }
    let k = Kilnd::start();
    let out = k.kiln(&["image", "bootstrap", "debian-12", "--no-warm", "--json"]);
    let result = json_out(&out);
    let image = &result["image"];
    assert_eq!(image["name"], "debian-12");
    assert_eq!(image["visibility"], "public");
    assert_eq!(image["state"], "available");
    assert_eq!(image["virtual_size"], 3u64 << 30);
    let progress = result["progress"].to_string();
    assert!(progress.contains("==> mmdebstrap"), "{progress}");
    let path = PathBuf::from(image["path"].as_str().unwrap());
    assert_eq!(
        sha256_file(&path).unwrap().1,
        image["sha256"].as_str().unwrap()
    );
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&path)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd");
    assert_eq!(catalog_files(&k).len(), 1, "{:?}", catalog_files(&k));
}

/// The uid the tests below act as: no account is needed, kilnd goes by the socket's peer.
const OTHER_UID: u32 = 4242;

/// Lets `OTHER_UID` reach `k`'s socket (a root kilnd on a test socket acts like a system one
/// towards another user: their files are opened as them).
fn open_to_others(k: &Kilnd) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(k.dir.path(), 0o755).unwrap();
    mode(k.socket.parent().unwrap(), 0o755).unwrap();
    mode(&k.socket, 0o666).unwrap();
}

/// `kiln ARGS --json` run as `OTHER_UID`: the error's kind and message, or the result.
fn kiln_as_other(k: &Kilnd, args: &[&str]) -> Result<Value, (String, String)> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={OTHER_UID}"))
        .arg(format!("--regid={OTHER_UID}"))
        .args(["--clear-groups", "--"])
        .arg(kiln_tests::bin("kiln"))
        .args(args)
        .arg("--json")
        .env("KILN_SOCKET", &k.socket)
        .env("NO_COLOR", "1")
        .env_remove("KILN_PROJECT")
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(serde_json::from_slice(&out.stdout).unwrap());
    }
    let err: Value = serde_json::from_str(&stderr(&out))
        .unwrap_or_else(|_| panic!("kiln failed without JSON: {}", stderr(&out)));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Err((text(&err["error"]["kind"]), text(&err["error"]["message"])))
}

/// A directory of `OTHER_UID`'s under `k`'s temp dir, and a root-only secret file beside it.
fn other_users_files(k: &Kilnd) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let theirs = k.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let hidden = k.dir.path().join("root-only");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = hidden.join("secret");
    std::fs::write(&secret, "TOPSECRET root's bytes").unwrap();
    (theirs, secret)
}

/// The attack of issue 8: the caller's clean qcow2 is overwritten in place (same inode) with
/// one whose backing file is root's secret, right after kilnd's `qemu-img info` returns. The
/// import must still never read the secret: kilnd copies the caller's bytes first and inspects
/// and converts only its private copy.
#[test]
fn import_of_a_file_swapped_after_inspection_never_reads_a_backing_file() {
    if kiln_shared::paths::current_uid() != 0 {
        eprintln!("skipped: acting as another user takes root");
        return;
    }
    let mut k = Kilnd::start();
    let (theirs, secret) = other_users_files(&k);
    let clean = disk(&theirs, "clean.qcow2", "qcow2");
    let evil = theirs.join("evil.qcow2").display().to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        secret.to_str().unwrap(),
        &evil,
        "1M",
    ]);
    for f in [&clean, &evil] {
        std::os::unix::fs::chown(f, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    // The swap, done by a qemu-img stand-in after each `info`, in place: `cat >` keeps the inode.
    k.restart_with_stand_in(
        "qemu-img",
        &format!(
            "#!/bin/sh\n/usr/bin/qemu-img \"$@\"; rc=$?\n[ \"$1\" = info ] && cat {evil} > {clean}\nexit $rc\n"
        ),
    );
    open_to_others(&k);

    let image = kiln_as_other(
        &k,
        &[
            "image",
            "import",
            &clean,
            "--name",
            "swapped",
            "--os",
            "debian-12",
            "--user",
            "debian",
        ],
    )
    .unwrap();
    let swapped = std::fs::read(&clean).unwrap();
    assert_eq!(swapped, std::fs::read(&evil).unwrap(), "the swap happened");
    let out = k.dir.path().join("out.raw").display().to_string();
    let path = image["image"]["path"].as_str().unwrap();
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", path, &out]);
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !bytes.starts_with(b"TOPSECRET"),
        "the import read root's secret"
    );
    assert!(bytes.iter().all(|b| *b == 0), "the clean disk's bytes");
    // And the evil file itself is refused outright.
    let (kind, msg) = kiln_as_other(
        &k,
        &[
            "image",
            "import",
            &evil,
            "--name",
            "evil",
            "--os",
            "debian-12",
            "--user",
            "debian",
        ],
    )
    .unwrap_err();
    assert_eq!(kind, "invalid_params", "{msg}");
    assert!(msg.contains("has a backing file"), "{msg}");
}

/// One raw `image.import` request sent as `OTHER_UID` (socat, so no client resolves the path
/// first): the error's kind and message, or `Ok` with the result.
fn import_as_other(k: &Kilnd, path: &str, name: &str) -> Result<Value, (String, String)> {
    use std::io::Write;
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": "image.import",
        "params": {"path": path, "name": name, "os": "debian-12", "user": "debian"}});
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={OTHER_UID}"))
        .arg(format!("--regid={OTHER_UID}"))
        .args(["--clear-groups", "--", "socat", "-t", "30", "-"])
        .arg(format!("UNIX-CONNECT:{}", k.socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat is installed");
    // socat ends once kilnd has answered and the write side is closed (-t: after 30 s at most).
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let reply = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["id"] == json!(1))
        .unwrap_or_else(|| panic!("no reply: {}", String::from_utf8_lossy(&out.stdout)));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match reply.get("error") {
        Some(e) => Err((text(&e["data"]["kind"]), text(&e["message"]))),
        None => Ok(reply["result"].clone()),
    }
}

/// Defect 3 of issue 8: whatever is (or is not) behind a directory the caller cannot search,
/// kilnd's answer is the same, and a symlink there is followed only as far as the caller may.
#[test]
fn import_says_the_same_for_everything_the_caller_cannot_read() {
    if kiln_shared::paths::current_uid() != 0 {
        eprintln!("skipped: acting as another user takes root");
        return;
    }
    let k = Kilnd::start();
    open_to_others(&k);
    let (theirs, secret) = other_users_files(&k);
    let readable = disk(&theirs, "readable.qcow2", "qcow2");
    let hidden = secret.parent().unwrap();
    std::os::unix::fs::symlink(&readable, hidden.join("link.qcow2")).unwrap();
    for path in [
        hidden.join("nonexistent"),
        secret.clone(),
        hidden.to_path_buf(),
        hidden.join("link.qcow2"),
    ] {
        let path = path.display().to_string();
        let (kind, msg) = import_as_other(&k, &path, "x").unwrap_err();
        assert_eq!(kind, "forbidden", "{msg}");
        assert_eq!(
            msg,
            format!(
                "cannot read {path} as uid {OTHER_UID}: Permission denied; kilnd imports only \
                 files the caller can read"
            )
        );
    }
    assert!(import_as_other(&k, &readable, "mine").is_ok());
    assert_eq!(catalog_files(&k).len(), 1, "{:?}", catalog_files(&k));
}
