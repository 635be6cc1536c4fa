//! Instances with real VMs: run the bootstrapped base (resuming its saved VM, then checked to be
//! nobody's twin; another shape boots cold and says why), log in with `kiln instance ssh` (the
//! host key pinned), change it, survive a kilnd kill -9, stop it, capture it as an image, build
//! from that image and boot the result, start it again cold on its own disk; refusals (capture
//! while running, deleting an image in use, another project); a VM that died while kilnd was
//! down is listed `stopped`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_tests::{json_out, qemus_in, stderr, Conn, KillVms, Kilnd};
use serde_json::{json, Value};

fn instance(c: &mut Conn, name: &str) -> Value {
    c.call("instance.get", json!({ "name": name }))["instance"].clone()
}

fn ssh(k: &Kilnd, home: &Path, key: &Path, name: &str, cmd: &str) -> std::process::Output {
    k.instance_ssh(home, key, name, cmd)
}

#[test]
fn run_ssh_survive_stop_capture_build_from_it() {
    let Some(base) = kiln_tests::base_image::base_image() else {
        return;
    };
    let mut k = Kilnd::start();
    let _vms = KillVms(k.data_dir.clone());
    // With a saved VM: the first start of an instance resumes it.
    k.import_base(&base, true);
    let home = k.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let key = home.join("id");
    kiln_tests::ssh_keypair(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let blob = public.split_whitespace().nth(1).unwrap().to_owned();

    let out = k.kiln(&[
        "--json",
        "instance",
        "run",
        "debian-12",
        "--name",
        "box",
        "--ssh-key",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    let started = json_out(&out);
    assert_eq!(started["instance"]["state"], "starting", "{started}");
    let mut c = k.connect();
    let t0 = Instant::now();
    let i = c.until_instance("box", "running", Duration::from_secs(1200));
    eprintln!(
        "instance running after {:.1} s (resumed, TCG): {}",
        t0.elapsed().as_secs_f64(),
        i["message"]
    );
    assert!(
        i["message"]
            .as_str()
            .unwrap()
            .starts_with("resumed the saved VM of debian-12"),
        "{i}"
    );
    assert_eq!(i["ssh"]["user"], "debian");
    assert_eq!(i["ssh"]["host"], "127.0.0.1");
    check_own_identity(&k, &home, &key, "box", &public);

    // A second resumed instance is not the first one's twin; another shape boots cold and
    // says why.
    let run = |name: &str, extra: &[&str]| {
        let pubkey = key.with_extension("pub");
        let mut args = vec![
            "--json",
            "instance",
            "run",
            "debian-12",
            "--name",
            name,
            "--ssh-key",
            pubkey.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        json_out(&k.kiln(&args))["instance"].clone()
    };
    run("twin", &[]);
    let twin = c.until_instance("twin", "running", Duration::from_secs(1200));
    assert_ne!(twin["ssh"]["host_key"], i["ssh"]["host_key"]);
    check_own_identity(&k, &home, &key, "twin", &public);
    let ids: Vec<String> = ["box", "twin"]
        .iter()
        .map(|n| {
            let out = ssh(&k, &home, &key, n, "cat /etc/machine-id");
            assert!(out.status.success(), "{}", stderr(&out));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert_eq!(ids[0].len(), 32, "{ids:?}");
    assert_ne!(ids[0], ids[1], "two resumed instances share a machine-id");
    let out = k.kiln(&["instance", "delete", "twin", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = run("other-shape", &["--memory-mb", "1024"]);
    let why = other["message"].as_str().unwrap();
    assert!(
        why.starts_with("booted cold: the saved VM does not fit") && why.contains("1024 MB"),
        "{other}"
    );
    let out = k.kiln(&["instance", "delete", "other-shape", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A resumed VM's console starts after its boot: what the guest writes to it shows.
    let out = ssh(
        &k,
        &home,
        &key,
        "box",
        "echo kiln-console-check | sudo tee /dev/ttyS0",
    );
    assert!(out.status.success(), "ssh: {}", stderr(&out));
    let out = k.kiln(&["instance", "console", "box"]);
    assert!(out.status.success(), "console: {}", stderr(&out));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("kiln-console-check"),
        "console:\n{console}"
    );

    let out = ssh(&k, &home, &key, "box", "sudo touch /etc/marker && hostname");
    assert!(out.status.success(), "ssh: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "box");

    // Refusals while it runs: no capture, no deleting its image, nothing for another project.
    let (kind, err) = c.call_err(
        "image.create_from_instance",
        json!({"instance": "box", "name": "too-early"}),
    );
    assert_eq!(kind, "conflict");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("kiln instance stop box"),
        "{err}"
    );
    let (kind, err) = c.call_err("image.delete", json!({"image": "debian-12"}));
    assert_eq!(kind, "conflict");
    assert!(
        err["message"].as_str().unwrap().contains("instance box"),
        "{err}"
    );
    for method in ["instance.get", "instance.stop", "instance.delete"] {
        let (kind, _) = c.call_err(method, json!({"name": "box", "project": "other"}));
        assert_eq!(kind, "not_found", "{method} from another project");
    }
    let (kind, _) = c.call_err(
        "image.create_from_instance",
        json!({"instance": "box", "name": "theirs", "project": "other"}),
    );
    assert_eq!(kind, "not_found");
    let out = k.kiln(&["--project", "other", "instance", "list"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("box"));

    // kill -9 of kilnd: the instance runs on and is re-adopted.
    let vms = qemus_in(&k.data_dir);
    assert_eq!(vms.len(), 1, "{vms:?}");
    drop(c);
    k.kill9();
    k.spawn();
    assert_eq!(
        qemus_in(&k.data_dir),
        vms,
        "the instance's qemu must survive kilnd"
    );
    let mut c = k.connect();
    assert_eq!(instance(&mut c, "box")["state"], "running");
    let out = ssh(&k, &home, &key, "box", "test -f /etc/marker");
    assert!(out.status.success(), "ssh after restart: {}", stderr(&out));

    // Stop (ACPI), then capture.
    let out = k.kiln(&["--json", "instance", "stop", "box"]);
    let stopped = json_out(&out);
    assert_eq!(stopped["instance"]["state"], "stopped");
    assert_eq!(stopped["instance"]["message"], "powered off");
    assert!(qemus_in(&k.data_dir).is_empty());
    let out = k.kiln(&[
        "--json",
        "image",
        "create",
        "--from-instance",
        "box",
        "--name",
        "captured",
    ]);
    let image = json_out(&out)["image"].clone();
    assert_eq!(image["from_instance"], "box", "{image}");
    assert_eq!(image["state"], "available");
    assert_eq!(
        instance(&mut c, "box")["state"],
        "stopped",
        "capture leaves it as it was"
    );

    // A build from the captured image: its first step sees the marker and no key of the
    // instance's user; the finished image boots in a fresh VM with the same checks.
    let check = format!("test -f /etc/marker && ! sudo grep -rqs {blob} /home /root /etc/ssh");
    c.create_template(json!({
        "name": "from-box",
        "os": "debian-12",
        "source": {"image": "captured"},
        "customize": [{"type": "shell", "name": "marker", "inline": [check.clone()]}],
        "validate": {"boot_test": true, "in_vm": [{"type": "shell", "name": "again", "inline": [check]}]},
        "distribute": [{"type": "image", "run_output_name": "local"}],
    }));
    let id = c.start_build("from-box", "from-box-1");
    c.set_timeout(Duration::from_secs(3600));
    let b = c.call("build.wait", json!({ "id": id }))["build"].clone();
    assert_eq!(
        b["state"],
        "succeeded",
        "{b}\n{}",
        c.log_lines(id).join("\n")
    );

    // Started again, then its qemu dies while kilnd is down: listed stopped after the restart.
    // Its own disk boots cold with its own seed: the same host key, name and key.
    let out = k.kiln(&["instance", "start", "box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.until_instance("box", "running", Duration::from_secs(1200));
    check_own_identity(&k, &home, &key, "box", &public);
    let out = ssh(&k, &home, &key, "box", "test -f /etc/marker");
    assert!(
        out.status.success(),
        "marker after a cold boot: {}",
        stderr(&out)
    );
    let out = k.kiln(&["instance", "console", "box"]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("Linux version"), "console:\n{console}");
    drop(c);
    k.kill9();
    for pid in qemus_in(&k.data_dir) {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    k.spawn();
    let mut c = k.connect();
    let i = instance(&mut c, "box");
    assert_eq!(i["state"], "stopped", "{i}");

    // Delete: every file goes, and its image may be deleted then.
    let out = k.kiln(&["instance", "delete", "box", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!k.data_dir.join("instances").join("default.box").exists());
    let (kind, _) = c.call_err("instance.get", json!({"name": "box"}));
    assert_eq!(kind, "not_found");
    c.call("image.delete", json!({"image": "captured"}));
}

/// What an instance resumed from a saved VM must be: its own hostname, only its pinned host key
/// (no other type), the person's key as the default user's only key, nothing of the saved VM's
/// key or seed (root's authorized_keys, cloud-init's cache), and the clock of now.
fn check_own_identity(k: &Kilnd, home: &Path, key: &Path, name: &str, public: &str) {
    let warm = k.data_dir.join("warm");
    // The saved VM's client key and host key (the host private key is only in its seed).
    let saved = std::fs::read_dir(&warm)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let client = std::fs::read_to_string(saved.join("client_key.pub")).unwrap();
    let meta: Value =
        serde_json::from_slice(&std::fs::read(saved.join("meta.json")).unwrap()).unwrap();
    let blob = |line: &str| line.split_whitespace().nth(1).unwrap().to_owned();
    let cmd = format!(
        "hostname; echo ---; cat ~/.ssh/authorized_keys; echo ---; \
         sudo cat /etc/ssh/ssh_host_*.pub; echo ---; \
         sudo grep -rlaF -e {} -e {} /var/lib/cloud /root/.ssh /etc/ssh || true; \
         echo ---; date +%s",
        blob(&client),
        blob(meta["host_public_key"].as_str().unwrap()),
    );
    let out = ssh(k, home, key, name, &cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parts: Vec<&str> = text.split("---\n").map(str::trim).collect();
    assert_eq!(parts[0], name, "{text}");
    assert_eq!(parts[1], public.trim(), "{text}");
    let i = json_out(&k.kiln(&["--json", "instance", "show", name]))["instance"].clone();
    let pinned = i["ssh"]["host_key"].as_str().unwrap();
    let host_keys: Vec<&str> = parts[2].lines().collect();
    assert_eq!(host_keys.len(), 1, "{text}");
    assert!(host_keys[0].starts_with(pinned), "{text}");
    assert_eq!(parts[3], "", "the saved VM's key or seed is left: {text}");
    let guest_now: i64 = parts[4].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - now).abs() < 120,
        "guest clock {guest_now}, host {now}"
    );
}

/// Without a key kiln says where it looked.
#[test]
fn run_without_a_key_names_the_files_it_tried() {
    let k = Kilnd::start();
    let home = k.dir.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = k
        .kiln_cmd(&["instance", "run", "debian-12", "--name", "x"])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("id_ed25519.pub") && err.contains("--ssh-key"),
        "{err}"
    );
}
