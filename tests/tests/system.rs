//! System mode as sysadmins run it: a root kilnd (`--system`, private socket and data dir) that
//! real users reach through the group `kiln`, driven with `runuser -u USER -- kiln ...`:
//! who may connect, project isolation, sharing, imports read as the caller. Then the Debian
//! package: built with `cargo deb`, its unit checked by `systemd-analyze verify`, and (CI, or
//! `KILN_TEST_DPKG=1`) installed with `dpkg -i`, the same checks run against /usr/bin/kilnd and
//! /usr/bin/kiln, and purged. Needs root (skipped otherwise, failing under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_tests::*;
use serde_json::Value;

const ALICE: &str = "kilntest-alice";
const BOB: &str = "kilntest-bob";
/// Not in group `kiln`.
const EVE: &str = "kilntest-eve";

/// Alice acts in `a`, Bob in `b`; both may use `default`.
const CONFIG: &str = r#"
[[project]]
name = "a"
users = ["kilntest-alice"]

[[project]]
name = "b"
users = ["kilntest-bob"]
"#;

/// The package test installs and purges system-wide (its postinst makes the group `kiln`): it
/// runs alone, the other tests of this file share.
static SYSTEM: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A system kilnd and the three users a test drives it as.
struct World {
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    k: SystemKilnd,
    alice: TestUser,
    bob: TestUser,
    eve: TestUser,
}

/// The users (made when missing) and a system kilnd on `bins`; `None` when not root.
fn world(test: &str, bins: Binaries) -> Option<World> {
    world_in(test, bins, true)
}

/// [`world`], holding [`SYSTEM`] shared when `share` (the package test holds it already).
fn world_in(test: &str, bins: Binaries, share: bool) -> Option<World> {
    if !root_or_skip(test) {
        return None;
    }
    let shared = share.then(|| SYSTEM.read().unwrap_or_else(|e| e.into_inner()));
    let alice = ensure_user(ALICE, &["kiln"]);
    let bob = ensure_user(BOB, &["kiln"]);
    let eve = ensure_user(EVE, &[]);
    // Access reads the user database when kilnd starts: the users exist first.
    let k = SystemKilnd::start(bins, CONFIG);
    Some(World {
        _shared: shared,
        k,
        alice,
        bob,
        eve,
    })
}

impl World {
    /// `kiln --json --project PROJECT ARGS` as `user`, which must succeed; its JSON.
    fn ok(&self, user: &TestUser, project: &str, args: &[&str]) -> Value {
        json_out(&self.kiln(user, project, args))
    }

    /// Same, but it must fail with error kind `kind`; the error's message.
    fn fails(&self, user: &TestUser, project: &str, args: &[&str], kind: &str) -> String {
        let out = self.kiln(user, project, args);
        let err = json_err(&out);
        assert_eq!(
            err["error"]["kind"], kind,
            "{} in {project}: kiln {args:?}: {err}",
            user.name
        );
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn kiln(&self, user: &TestUser, project: &str, args: &[&str]) -> Output {
        let mut all = vec!["--json", "--project", project];
        all.extend(args);
        self.k.kiln_as(&user.name, &all)
    }

    /// Stores a valid template `name` in `project`, as `user` (from a file in their home).
    fn template(&self, user: &TestUser, project: &str, name: &str) {
        let dir = user.scratch(0o700);
        let file = dir.path.join("t.json");
        std::fs::write(&file, template(name).to_string()).unwrap();
        std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid)).unwrap();
        self.ok(
            user,
            project,
            &["template", "create", "-f", file.to_str().unwrap()],
        );
    }

    /// Imports `file` as the private image `name` of `project`, as `user`; its info.
    fn import(&self, user: &TestUser, project: &str, file: &Path, name: &str) -> Value {
        self.ok(user, project, &import_args(file, name))["image"].clone()
    }

    /// The names of the images `user` sees in `project`.
    fn image_names(&self, user: &TestUser, project: &str) -> Vec<String> {
        names(&self.ok(user, project, &["image", "list"])["images"])
    }

    /// `user`'s `image.import` (raw protocol lines: kilnd's own answer) of each of `files` is
    /// refused with one answer for every file the caller cannot read, whatever is there
    /// (missing, a directory, another user's, root's, a symlink the caller may not follow): the
    /// same kind and the same "cannot read PATH as uid N", so nothing tells what exists.
    fn imports_refused(&self, user: &TestUser, project: &str, files: &[&str]) {
        let want = format!("cannot read PATH as uid {}", user.uid);
        let answers: Vec<(Value, String)> = files
            .iter()
            .map(|file| {
                let params = serde_json::json!({"path": file, "name": "nope", "os": "debian-12", "user": "debian"});
                let reply = self
                    .k
                    .request_as(&user.name, project, "image.import", params);
                let err = &reply["error"];
                let msg = err["message"].as_str().unwrap_or_default();
                (err["data"]["kind"].clone(), msg.replace(file, "PATH"))
            })
            .collect();
        let table: String = files
            .iter()
            .zip(&answers)
            .map(|(f, (kind, msg))| format!("\n  {f}: {kind} {msg:?}"))
            .collect();
        assert!(
            answers
                .iter()
                .all(|a| a.1.contains(&want) && *a == answers[0]),
            "every answer should be the same and say {want:?}:{table}"
        );
    }
}

fn import_args<'a>(file: &'a Path, name: &'a str) -> Vec<&'a str> {
    let file = file.to_str().unwrap();
    vec![
        "image",
        "import",
        file,
        "--name",
        name,
        "--os",
        "debian-12",
        "--user",
        "debian",
    ]
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------- the checks, one per area

/// The socket is 0660 root:kiln in a root:kiln 0750 directory: members of `kiln` connect,
/// others cannot even reach it.
fn check_socket(w: &World) {
    let kiln_gid = group_id("kiln").unwrap();
    let dir = std::fs::metadata(w.k.socket.parent().unwrap()).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.mode() & 0o7777),
        (0, kiln_gid, 0o750)
    );
    let data = std::fs::metadata(&w.k.data_dir).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o777), (0, 0o700));
    let sock = std::fs::symlink_metadata(&w.k.socket).unwrap();
    assert_eq!((sock.gid(), sock.mode() & 0o777), (kiln_gid, 0o660));
    w.ok(&w.alice, "default", &["daemon", "status"]);
    w.ok(&w.bob, "default", &["daemon", "status"]);
    let out = w.k.kiln_as(&w.eve.name, &["template", "list"]);
    assert!(!out.status.success(), "{EVE} is not in group kiln");
    let err = stderr(&out);
    assert!(err.contains(w.k.socket.to_str().unwrap()), "{err}");
}

/// Bob cannot see, read, change or delete what project `a` owns, nor act in `a` at all.
fn check_isolation(w: &World) {
    let (alice, bob) = (&w.alice, &w.bob);
    w.template(alice, "a", "web-a");
    let home = alice.scratch(0o700);
    let file = home.path.join("a.qcow2");
    alice.qcow2(&file, 0o600);
    let image = w.import(alice, "a", &file, "img-a");
    let id = image["id"].as_str().unwrap();

    // Project a is not Bob's.
    for args in [
        &["template", "list"][..],
        &["template", "show", "web-a"],
        &["template", "delete", "web-a", "--yes"],
        &["image", "list"],
        &["image", "show", "img-a"],
        &["image", "delete", "img-a", "--yes"],
        &["build", "start", "web-a", "--image-name", "x"],
        &["build", "list"],
    ] {
        let msg = w.fails(bob, "a", args, "forbidden");
        assert!(msg.contains("not a member of project"), "{args:?}: {msg}");
    }
    // In his own project (and in default) alice's things do not exist: by name or by id.
    for project in ["b", "default"] {
        let templates = w.ok(bob, project, &["template", "list"]);
        assert!(names(&templates["templates"]).is_empty(), "{templates}");
        assert!(!w.image_names(bob, project).contains(&"img-a".into()));
        for args in [
            &["template", "show", "web-a"][..],
            &["template", "delete", "web-a", "--yes"],
            &["build", "start", "web-a", "--image-name", "x"],
            &["image", "show", "img-a"],
            &["image", "show", id],
            &["image", "delete", "img-a", "--yes"],
            &["image", "delete", id, "--yes"],
            &["image", "share", id, "b"],
        ] {
            w.fails(bob, project, args, "not_found");
        }
    }
    // Nothing of alice's changed.
    w.ok(alice, "a", &["template", "show", "web-a"]);
    assert_eq!(w.image_names(alice, "a"), vec!["img-a".to_string()]);
    // What Bob learns of the others: only projects he may act in, and no member lists (DESIGN,
    // "What a caller sees of others").
    let projects = w.ok(bob, "b", &["project", "list"]);
    assert_eq!(names(&projects["projects"]), ["b", "default"], "{projects}");
    assert!(!projects.to_string().contains(ALICE), "{projects}");
    let status = w.ok(bob, "b", &["daemon", "status"]);
    assert_eq!(
        status["templates"], 0,
        "alice's template counted for bob: {status}"
    );
    check_instance_isolation(w, &home);
}

/// Alice runs an instance (of an empty disk: its VM runs, nothing answers SSH, which is all
/// this needs); Bob can neither see, ssh into, stop, capture nor delete it, from her project
/// or his own.
fn check_instance_isolation(w: &World, home: &kiln_tests::Scratch) {
    let (alice, bob) = (&w.alice, &w.bob);
    let key = home.path.join("id");
    ssh_keypair(&key);
    let public = key.with_extension("pub");
    std::os::unix::fs::chown(&public, Some(alice.uid), Some(alice.gid)).unwrap();
    let run = w.ok(
        alice,
        "a",
        &[
            "instance",
            "run",
            "img-a",
            "--name",
            "box-a",
            "--ssh-key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(run["instance"]["owner"], alice.uid, "{run}");
    let box_args: [&[&str]; 7] = [
        &["instance", "show", "box-a"],
        &["instance", "stop", "box-a"],
        &["instance", "start", "box-a"],
        &["instance", "delete", "box-a", "--yes"],
        &["instance", "ssh", "box-a", "--", "true"],
        &["instance", "console", "box-a"],
        &[
            "image",
            "create",
            "--from-instance",
            "box-a",
            "--name",
            "stolen",
        ],
    ];
    for args in box_args {
        let msg = w.fails(bob, "a", args, "forbidden");
        assert!(msg.contains("not a member of project"), "{args:?}: {msg}");
    }
    w.fails(bob, "a", &["instance", "list"], "forbidden");
    for project in ["b", "default"] {
        let list = w.ok(bob, project, &["instance", "list"]);
        assert_eq!(list["instances"], serde_json::json!([]), "{list}");
        for args in box_args {
            w.fails(bob, project, args, "not_found");
        }
    }
    // Still Alice's, untouched; then gone with every file.
    let shown = w.ok(alice, "a", &["instance", "show", "box-a"]);
    assert_ne!(shown["instance"]["state"], "stopped", "{shown}");
    w.ok(alice, "a", &["instance", "delete", "box-a", "--yes"]);
}

/// Alice shares an image with `b`: pending there (Bob does not see it, except in `image list
/// --pending`) until Bob accepts it; then he sees it as shared (and may not delete or re-share
/// it); his reject hides it again; Alice's delete is refused while it is shared; unsharing
/// hides it.
fn check_sharing(w: &World) {
    let (alice, bob) = (&w.alice, &w.bob);
    let home = alice.scratch(0o700);
    let file = home.path.join("s.qcow2");
    alice.qcow2(&file, 0o600);
    w.import(alice, "a", &file, "img-shared");
    assert!(!w.image_names(bob, "b").contains(&"img-shared".into()));

    let shared = w.ok(alice, "a", &["image", "share", "img-shared", "b"]);
    assert_eq!(
        shared["image"]["shared_with"],
        serde_json::json!([{"project": "b", "status": "pending"}])
    );
    // Pending: invisible to Bob but for the pending list; Alice cannot answer for b.
    w.fails(bob, "b", &["image", "show", "img-shared"], "not_found");
    assert!(!w.image_names(bob, "b").contains(&"img-shared".into()));
    let pending = w.ok(bob, "b", &["image", "list", "--pending"]);
    assert_eq!(pending["images"][0]["name"], "img-shared", "{pending}");
    assert_eq!(pending["images"][0]["share_status"], "pending", "{pending}");
    w.fails(alice, "a", &["image", "accept", "img-shared"], "not_found");
    let accepted = w.ok(bob, "b", &["image", "accept", "img-shared"]);
    assert_eq!(accepted["image"]["share_status"], "accepted", "{accepted}");
    let owner = w.ok(alice, "a", &["image", "show", "img-shared"]);
    assert_eq!(
        owner["image"]["shared_with"],
        serde_json::json!([{"project": "b", "status": "accepted"}])
    );
    let seen = w.ok(bob, "b", &["image", "show", "img-shared"]);
    assert_eq!(seen["image"]["visibility"], "shared", "{seen}");
    assert!(w.image_names(bob, "b").contains(&"img-shared".into()));
    w.fails(
        bob,
        "b",
        &["image", "delete", "img-shared", "--yes"],
        "forbidden",
    );
    w.fails(
        bob,
        "b",
        &["image", "unshare", "img-shared", "b"],
        "forbidden",
    );
    // Shared with b, not with everyone.
    assert!(!w.image_names(bob, "default").contains(&"img-shared".into()));
    let msg = w.fails(
        alice,
        "a",
        &["image", "delete", "img-shared", "--yes"],
        "conflict",
    );
    assert!(msg.contains("shared with project b (accepted)"), "{msg}");

    // Rejected: hidden again; accepted again for the unshare below.
    w.ok(bob, "b", &["image", "reject", "img-shared"]);
    assert!(!w.image_names(bob, "b").contains(&"img-shared".into()));
    w.fails(bob, "b", &["image", "show", "img-shared"], "not_found");
    w.ok(bob, "b", &["image", "accept", "img-shared"]);

    w.ok(alice, "a", &["image", "unshare", "img-shared", "b"]);
    assert!(!w.image_names(bob, "b").contains(&"img-shared".into()));
    w.fails(bob, "b", &["image", "show", "img-shared"], "not_found");
}

/// Imports read the caller's file as the caller: Alice's own 0600 file imports; Bob gets the
/// one "cannot read PATH as uid N" for anything he may not read, whether it exists or not; a
/// file Bob may read imports into his project.
fn check_imports(w: &World) {
    let (alice, bob) = (&w.alice, &w.bob);
    let home = alice.scratch(0o700);
    let private = home.path.join("private.qcow2");
    alice.qcow2(&private, 0o600);
    let image = w.import(alice, "a", &private, "img-own");
    assert_eq!(
        (
            &image["visibility"],
            &image["owner_project"],
            &image["virtual_size"]
        ),
        (&"private".into(), &"a".into(), &(16u64 << 20).into()),
        "{image}"
    );
    // The copy is kilnd's: no user reads it behind the catalog's back.
    let copy = image["path"].as_str().unwrap();
    assert!(Path::new(copy).starts_with(&w.k.data_dir), "{copy}");
    for user in [alice, bob] {
        let read = user.command("head", &["-c1", copy]).output().unwrap();
        assert!(!read.status.success(), "{} read {copy}", user.name);
    }

    // The CLI (it resolves the path as Bob first) refuses too.
    let out = w.kiln(bob, "b", &import_args(&private, "nope"));
    assert!(!out.status.success(), "bob imported alice's 0600 file");

    // A file Bob may read (Alice's, 0644, in a directory everyone may enter).
    let open = w.k.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&open, Some(alice.uid), Some(alice.gid)).unwrap();
    let readable = open.join("readable.qcow2");
    alice.qcow2(&readable, 0o644);

    // kilnd itself, as Bob: another user's 0600 file in a 0700 home, a missing file there,
    // that directory, root's secret, a missing file under /root, Bob's own symlink to Alice's
    // file, and a symlink in a 0700 directory of root's to the file Bob may read.
    let roots = tempfile::tempdir_in("/root").unwrap();
    let secret = roots.path().join("secret");
    std::fs::write(&secret, b"root only").unwrap();
    let roots_link = roots.path().join("link.qcow2");
    std::os::unix::fs::symlink(&readable, &roots_link).unwrap();
    let bobs = bob.scratch(0o700);
    let bobs_link = bobs.path.join("link.qcow2");
    std::os::unix::fs::symlink(&private, &bobs_link).unwrap();
    std::os::unix::fs::lchown(&bobs_link, Some(bob.uid), Some(bob.gid)).unwrap();
    w.imports_refused(
        bob,
        "b",
        &[
            private.to_str().unwrap(),
            home.path.join("missing.qcow2").to_str().unwrap(),
            home.path.to_str().unwrap(),
            secret.to_str().unwrap(),
            "/root/kiln-test-does-not-exist",
            bobs_link.to_str().unwrap(),
            roots_link.to_str().unwrap(),
        ],
    );
    assert!(!w.image_names(bob, "b").contains(&"nope".into()));

    // The file Bob may read imports, into his project.
    let image = w.import(bob, "b", &readable, "img-bob");
    assert_eq!(image["owner_project"], "b", "{image}");
    assert!(w.image_names(bob, "b").contains(&"img-bob".into()));
    assert!(!w.image_names(alice, "a").contains(&"img-bob".into()));
}

// ------------------------------------------------------------------------------- the tests

#[test]
fn only_members_of_kiln_reach_the_system_socket() {
    if let Some(w) = world(
        "only_members_of_kiln_reach_the_system_socket",
        Binaries::workspace(),
    ) {
        check_socket(&w);
    }
}

#[test]
fn projects_are_isolated_between_users() {
    if let Some(w) = world("projects_are_isolated_between_users", Binaries::workspace()) {
        check_isolation(&w);
    }
}

#[test]
fn a_shared_image_is_pending_until_accepted_and_seen_until_unshared() {
    if let Some(w) = world(
        "a_shared_image_is_pending_until_accepted_and_seen_until_unshared",
        Binaries::workspace(),
    ) {
        check_sharing(&w);
    }
}

#[test]
fn imports_read_files_as_the_caller() {
    if let Some(w) = world("imports_read_files_as_the_caller", Binaries::workspace()) {
        check_imports(&w);
    }
}

#[test]
fn kilnd_system_flag_needs_root() {
    if !root_or_skip("kilnd_system_flag_needs_root") {
        return;
    }
    let _shared = SYSTEM.read().unwrap_or_else(|e| e.into_inner());
    let eve = ensure_user(EVE, &[]);
    let out = eve
        .command(bin("kilnd").to_str().unwrap(), &["--system"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--system needs root"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------- the Debian package

/// The workspace root (where `cargo deb` runs).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Whether this run may install the package system-wide: CI machines, or when asked.
fn may_install() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("KILN_TEST_DPKG").as_deref() == Ok("1")
}

/// `cargo deb` of the binaries the tests use (target/debug, already built): the .deb's path.
fn build_deb(out_dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cargo-deb is missing: scripts/install-deps.sh installs it"
        );
        eprintln!("skipping the package test: cargo-deb is missing (cargo install cargo-deb)");
        return None;
    }
    let out = Command::new(&cargo)
        .current_dir(workspace())
        .args(["deb", "-p", "kiln-daemon", "--no-build", "--profile", "dev"])
        .args(["--fast", "-q", "-o"])
        .arg(out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo deb: {}", stderr(&out));
    let deb = PathBuf::from(stdout(&out).trim().lines().last().unwrap_or_default());
    assert!(
        deb.is_file(),
        "cargo deb printed no package: {}",
        stdout(&out)
    );
    Some(deb)
}

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `systemd-analyze verify` of kilnd.service inside `root` (the unpacked package over a copy of
/// this host's units, so its ExecStart and the targets it names resolve); warnings fail too.
fn verify_unit(root: Option<&Path>) {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if let Some(root) = root {
        cmd.arg(format!("--root={}", root.display()));
    }
    let out = cmd
        .arg("kilnd.service")
        .output()
        .expect("systemd-analyze (package systemd)");
    assert!(
        out.status.success() && stderr(&out).trim().is_empty(),
        "systemd-analyze verify kilnd.service: {}",
        stderr(&out)
    );
}

/// Whether every member of `group` is one of these tests' users.
fn only_test_members(group: &str) -> bool {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = stdout(&out);
    let members = line.trim().rsplit(':').next().unwrap_or_default();
    members
        .split(',')
        .filter(|m| !m.is_empty())
        .all(|m| [ALICE, BOB, EVE].contains(&m))
}

/// Removes the package (purge) when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "kiln"]).output();
    }
}

/// cargo-deb installs units under /usr/lib (the same directory as /lib on merged-/usr Debian).
const UNIT: &str = "/usr/lib/systemd/system/kilnd.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/kilnd.service";

#[test]
fn the_debian_package_installs_a_working_system_service() {
    if !root_or_skip("the_debian_package_installs_a_working_system_service") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(deb) = build_deb(tmp.path()) else {
        return;
    };
    let deb = deb.to_str().unwrap();

    // What it holds.
    let files = dpkg_deb(&["-c", deb]);
    for f in [
        "./usr/bin/kilnd",
        "./usr/bin/kiln",
        "./usr/lib/systemd/system/kilnd.service",
        "./etc/kiln/kilnd.toml",
    ] {
        assert!(files.contains(f), "{f} missing from the package:\n{files}");
    }
    let depends = dpkg_deb(&["-f", deb, "Depends"]);
    for d in [
        "qemu-system-x86",
        "qemu-utils",
        "util-linux",
        "openssh-client",
        "genisoimage",
        "mmdebstrap",
        "adduser",
    ] {
        assert!(depends.contains(d), "Depends lacks {d}: {depends}");
    }
    let root = tmp.path().join("root");
    dpkg_deb(&["-x", deb, root.to_str().unwrap()]);
    let control = tmp.path().join("control");
    dpkg_deb(&["-e", deb, control.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/kiln/kilnd.toml");
    let example = std::fs::read_to_string(root.join("etc/kiln/kilnd.toml")).unwrap();
    kiln_daemon::config::FileConfig::parse(&example).expect("the example kilnd.toml parses");

    // The unit, against this host's systemd units.
    let units = root.join("usr/lib/systemd");
    let copied = Command::new("cp")
        .args(["-a", "--no-clobber", "/usr/lib/systemd/system/."])
        .arg(units.join("system"))
        .status()
        .unwrap();
    assert!(copied.success());
    verify_unit(Some(&root));

    if !may_install() {
        eprintln!(
            "not installing the package (dpkg -i changes /usr/bin): CI=true or KILN_TEST_DPKG=1 \
             does"
        );
        return;
    }
    let installed_before = Command::new("dpkg")
        .args(["-s", "kiln"])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        installed_before || !Path::new("/var/lib/kiln").exists(),
        "/var/lib/kiln exists without the kiln package: the purge at the end would remove it"
    );
    let _alone = SYSTEM.write().unwrap_or_else(|e| e.into_inner());
    // The postinst must make the group: one only these tests use goes first (the users get it
    // back from `world`); a group with other members is left alone, and said so.
    if group_id("kiln").is_some() {
        if only_test_members("kiln") {
            admin("groupdel", &["kiln"]);
        } else {
            eprintln!("group kiln has other members: the postinst's addgroup is not exercised");
        }
    }
    let out = Command::new("dpkg").args(["-i", deb]).output().unwrap();
    let _purge = Installed;
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // postinst: the group, the unit enabled (without systemd running), the config.
    assert!(group_id("kiln").is_some(), "postinst made no group kiln");
    let target = std::fs::read_link(WANTS).unwrap_or_else(|e| panic!("{WANTS}: {e}"));
    assert!(
        target.ends_with("systemd/system/kilnd.service"),
        "{target:?}"
    );
    assert!(Path::new(UNIT).is_file());
    assert!(Path::new("/etc/kiln/kilnd.toml").is_file());
    verify_unit(None);

    // The installed binaries do what the workspace's do.
    let installed = Binaries {
        kilnd: "/usr/bin/kilnd".into(),
        kiln: "/usr/bin/kiln".into(),
    };
    let w = world_in("the installed package", installed, false).unwrap();
    check_socket(&w);
    check_isolation(&w);
    check_sharing(&w);
    check_imports(&w);
    drop(w);

    // remove keeps data and config; purge removes them and the unit's symlink.
    std::fs::create_dir_all("/var/lib/kiln").unwrap();
    std::fs::write("/var/lib/kiln/kept", b"").unwrap();
    let out = Command::new("dpkg").args(["-r", "kiln"]).output().unwrap();
    assert!(out.status.success(), "dpkg -r: {}", stderr(&out));
    assert!(!Path::new("/usr/bin/kilnd").exists());
    assert!(Path::new("/var/lib/kiln/kept").exists());
    assert!(Path::new("/etc/kiln/kilnd.toml").exists());
    let out = Command::new("dpkg")
        .args(["--purge", "kiln"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg --purge: {}", stderr(&out));
    assert!(!Path::new("/var/lib/kiln").exists());
    assert!(!Path::new("/etc/kiln/kilnd.toml").exists());
    assert!(std::fs::symlink_metadata(WANTS).is_err(), "{WANTS} left");
}
