//! More than one OS, and images whose default user is not `debian`, end to end with real VMs:
//! Debian 13 bootstrapped by kilnd and built on; a Debian 12 image whose cloud-init config names
//! the user `cloud`, imported without `--user`, whose build runs as `cloud`; and the import that
//! cannot tell the user and is refused.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::base_image::{base_image, base_image_13};
use kiln_tests::{json_out, stderr, Kilnd};
use serde_json::{json, Value};

/// Runs `program ARGS` and insists it worked.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
}

/// A template on `os` from `image` whose user script and one step print the login user.
fn whoami_template(name: &str, os: &str, image: &str) -> Value {
    json!({
        "name": name,
        "os": os,
        "description": "who runs the build",
        "source": {"image": image},
        "customize": [{"type": "shell", "name": "whoami", "inline": ["echo \"kiln-step-user=$(whoami)\""]}],
        "user_script": "#!/bin/bash -e\necho \"kiln-script-user=$(id -un)\"\n",
        "distribute": [{"type": "image", "run_output_name": "local"}],
    })
}

/// Builds `template` into `image` and returns the build log, after checking it succeeded and that
/// the step and the user script ran as `user`.
fn build_as(k: &Kilnd, template: Value, image: &str, user: &str) -> Vec<String> {
    let mut c = k.connect();
    let name = template["name"].as_str().unwrap().to_string();
    c.create_template(template);
    let id = c.start_build(&name, image);
    c.set_timeout(Duration::from_secs(3600));
    let b = c.call("build.wait", json!({"id": id}))["build"].clone();
    let log = c.log_lines(id);
    assert_eq!(b["state"], "succeeded", "{b}\n{}", log.join("\n"));
    for who in ["step", "script"] {
        let line = format!("kiln-{who}-user={user}");
        assert!(
            log.iter().any(|l| l.ends_with(&line)),
            "no {line:?} in the log:\n{}",
            log.join("\n")
        );
    }
    let built = json_out(&k.kiln(&["image", "show", image, "--json"]))["image"].clone();
    assert_eq!(built["default_user"], user, "{built}");
    assert_eq!(built["family"], "debian", "{built}");
    log
}

#[test]
fn debian_13_is_bootstrapped_and_built_on() {
    let Some(cached) = base_image_13() else {
        return;
    };
    let k = Kilnd::start();
    let list = json_out(&k.kiln(&["image", "bootstrap", "--list", "--json"]));
    let oses: Vec<&str> = list["oses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["os"].as_str().unwrap())
        .collect();
    assert_eq!(oses, ["debian-12", "debian-13"], "{list}");
    let apps = String::from_utf8_lossy(&k.kiln(&["image", "apps", "--os", "debian-13"]).stdout)
        .into_owned();
    assert!(apps.contains("nginx") && !apps.contains("mysql"), "{apps}");

    // kilnd bootstraps for real when it runs as root (CI does); elsewhere the cached image
    // scripts/test.sh bootstrapped stands in.
    let started = Instant::now();
    let image = if kiln_shared::paths::current_uid() == 0 {
        let out = k.kiln(&["image", "bootstrap", "debian-13", "--no-warm", "--json"]);
        let image = json_out(&out)["image"].clone();
        eprintln!(
            "bootstrap debian-13: {:.0} s",
            started.elapsed().as_secs_f64()
        );
        image
    } else {
        let path = cached.to_str().unwrap();
        let out = k.kiln(&[
            "image",
            "import",
            path,
            "--name",
            "debian-13",
            "--os",
            "debian-13",
            "--public",
            "--json",
        ]);
        json_out(&out)["image"].clone()
    };
    assert_eq!(
        (&image["os"], &image["family"], &image["default_user"]),
        (&json!("debian-13"), &json!("debian"), &json!("debian")),
        "{image}"
    );
    let started = Instant::now();
    let log = build_as(
        &k,
        whoami_template("on-13", "debian-13", "debian-13"),
        "on-13",
        "debian",
    );
    eprintln!(
        "build on debian-13: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        log.iter()
            .any(|l| l.contains("OS debian-13, family debian, logging in as debian")),
        "{}",
        log.join("\n")
    );
}

/// The Debian 12 base with `/etc/cloud/cloud.cfg.d/99_cloud_user.cfg` naming the default user
/// `cloud`, written offline into the root filesystem (partition 1, at 1 MiB) with debugfs, as
/// a qcow2 at `dir/cloud.qcow2`.
fn cloud_user_image(base: &Path, dir: &Path) -> String {
    let raw = dir.join("cloud.raw");
    let cfg = dir.join("99_cloud_user.cfg");
    let out = dir.join("cloud.qcow2");
    std::fs::write(&cfg, "system_info:\n  default_user:\n    name: cloud\n").unwrap();
    let (raw_s, out_s) = (raw.to_str().unwrap(), out.to_str().unwrap());
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            base.to_str().unwrap(),
            raw_s,
        ],
    );
    let write = format!(
        "write {} /etc/cloud/cloud.cfg.d/99_cloud_user.cfg",
        cfg.display()
    );
    run(
        "debugfs",
        &["-w", "-R", &write, &format!("{raw_s}?offset=1048576")],
    );
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", raw_s, out_s],
    );
    std::fs::remove_file(&raw).unwrap();
    out_s.to_string()
}

#[test]
fn an_image_whose_user_is_cloud_builds_as_cloud() {
    let Some(base) = base_image() else {
        return;
    };
    let k = Kilnd::start();
    let file = cloud_user_image(&base, k.dir.path());
    let started = Instant::now();
    let image = json_out(&k.kiln(&[
        "image",
        "import",
        &file,
        "--name",
        "cloud-12",
        "--os",
        "debian-12",
        "--json",
    ]))["image"]
        .clone();
    eprintln!(
        "import reading the user: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(image["default_user"], "cloud", "{image}");
    let started = Instant::now();
    build_as(
        &k,
        whoami_template("as-cloud", "debian-12", "cloud-12"),
        "as-cloud",
        "cloud",
    );
    eprintln!("build as cloud: {:.0} s", started.elapsed().as_secs_f64());
}

#[test]
fn an_image_without_a_readable_user_needs_user() {
    let k = Kilnd::start();
    let empty = k.dir.path().join("blank.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            empty.to_str().unwrap(),
            "64M",
        ],
    );
    let path = empty.to_str().unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "image",
            "import",
            path,
            "--name",
            "blank",
            "--os",
            "ubuntu-24.04",
            "--json",
        ];
        args.extend_from_slice(extra);
        k.kiln(&args)
    };
    let out = import(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err: Value = serde_json::from_str(&stderr(&out)).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_params", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(path) && msg.contains("cloud-init") && msg.contains("--user NAME"),
        "{msg}"
    );
    let out = import(&["--user", "Bad User"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a login name"),
        "{}",
        stderr(&out)
    );
    let image = json_out(&import(&["--user", "ubuntu"]))["image"].clone();
    assert_eq!(
        (&image["default_user"], &image["family"]),
        (&json!("ubuntu"), &json!("debian")),
        "{image}"
    );
}
