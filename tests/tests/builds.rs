//! Real builds: real QEMU guests booted from a bootstrapped Debian 12 base image, real SSH, real
//! images. Needs `KILN_TEST_BASE_IMAGE` (scripts/test.sh prepares it); skipped without it, and a
//! failure under `CI=true`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_tests::{Conn, Kilnd};
use serde_json::{json, Value};

/// A daemon with the base image imported as public `debian-12`, without a saved VM: builds
/// boot it cold (the warm start has its own test).
fn daemon_with_base(config: Option<&str>) -> Option<Kilnd> {
    let base = kiln_tests::base_image::base_image()?;
    let k = Kilnd::start_with_config(config);
    k.import_base(&base, false);
    Some(k)
}

fn wait(c: &mut Conn, id: u64) -> Value {
    c.set_timeout(Duration::from_secs(3600));
    c.call("build.wait", json!({"id": id}))["build"].clone()
}

/// Waits until the build reaches `sub_state` (or a step of `step_name` is running).
fn wait_for(c: &mut Conn, id: u64, pred: impl Fn(&Value) -> bool, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let b = c.call("build.get", json!({"id": id}))["build"].clone();
        if pred(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "build never reached the expected point: {b}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// No qemu runs with a path under `dir`, and no build work directory remains.
fn assert_nothing_left(k: &Kilnd, id: u64) {
    let needle = k.data_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !(cmdline.contains("qemu-system") && cmdline.contains(&needle)),
            "qemu left running: {cmdline}"
        );
    }
    let work = k.data_dir.join("builds").join(id.to_string());
    assert!(!work.exists(), "work dir left behind: {}", work.display());
}

fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTPS server on 127.0.0.1 with a certificate for 10.0.2.2 (the host as QEMU's user
/// network shows it to guests), signed by a throwaway CA: for https script and file sources.
struct Https {
    child: std::process::Child,
    port: u16,
    /// The CA certificate (PEM) a guest must trust.
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Https {
    fn start(files: &[(&str, &[u8])]) -> Https {
        let dir = tempfile::tempdir().unwrap();
        let d = |f: &str| dir.path().join(f).display().to_string();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        for (name, data) in files {
            std::fs::write(www.join(name), data).unwrap();
        }
        sh(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kiln test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
        ]);
        sh(&[
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=10.0.2.2",
            "-keyout",
            &d("srv.key"),
            "-out",
            &d("srv.csr"),
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:10.0.2.2\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        sh(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            &d("srv.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &d("ext.cnf"),
            "-out",
            &d("srv.pem"),
        ]);
        let script = format!(
            "import http.server, ssl, functools\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain({cert:?}, {key:?})\n\
             handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={www:?})\n\
             srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n\
             srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
             print(srv.server_address[1], flush=True)\n\
             srv.serve_forever()\n",
            cert = d("srv.pem"),
            key = d("srv.key"),
            www = www.display().to_string(),
        );
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().expect("the https server's port");
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        Https {
            child,
            port,
            ca_pem,
            _dir: dir,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("https://10.0.2.2:{}/{name}", self.port)
    }

    /// A shell step that makes the guest trust this server's CA.
    fn trust_step(&self) -> Value {
        json!({"type": "shell", "name": "trust-test-ca", "inline": [
            format!("printf '%s' '{}' | sudo tee /usr/local/share/ca-certificates/kiln-test.crt >/dev/null", self.ca_pem),
            "sudo update-ca-certificates"
        ]})
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fingerprints of the keys a build's log says kiln put into its guest (`build key`, `saved VM's
/// key`, `host key` lines).
fn logged_kiln_keys(log: &[String]) -> Vec<String> {
    let fp =
        regex::Regex::new(r"^(?:build key|saved VM's key|host key) (SHA256:[A-Za-z0-9+/]{43}) ")
            .unwrap();
    log.iter()
        .filter_map(|l| fp.captures(l).map(|c| c[1].to_string()))
        .collect()
}

/// Proves over the whole root file system of `image`, by fingerprint, that no key in `kiln_keys`
/// is written anywhere (any authorized_keys, root's included), that no key carries kiln's
/// `kiln-build` comment, and that no SSH host key or private key is left.
fn assert_no_kiln_keys(image: &str, work: &Path, kiln_keys: &[String]) {
    let fs = kiln_tests::image_scan::Unpacked::new(Path::new(image), work);
    let keys = fs.public_keys();
    for k in &keys {
        assert!(
            !kiln_keys.contains(&k.fingerprint),
            "a key kiln installed ({}) is in {} of the image: {}",
            k.fingerprint,
            k.file,
            k.line
        );
        assert!(
            !k.line.trim_end().ends_with("kiln-build"),
            "a kiln key is in {}: {}",
            k.file,
            k.line
        );
    }
    let host_keys: Vec<String> = fs
        .files()
        .iter()
        .map(|f| fs.inside(f))
        .filter(|f| f.starts_with("/etc/ssh/ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "host keys left: {host_keys:?}");
    assert_eq!(fs.private_keys(), Vec::<String>::new(), "private keys left");
    let _ = std::fs::remove_dir_all(work);
}

const MOTD: &str = "built by kiln\n";

#[test]
fn full_build_then_boot_the_output_image() {
    let Some(k) = daemon_with_base(None) else {
        return;
    };
    let mut c = k.connect();
    let dir = k.dir.path();
    std::fs::write(dir.join("motd"), MOTD).unwrap();
    let sha = sh(&["sha256sum", dir.join("motd").to_str().unwrap()]);
    let sha = sha.split_whitespace().next().unwrap().to_string();
    let exports = dir.join("exports");
    std::fs::create_dir(&exports).unwrap();
    let export = |f: &str| json!({"type": "export", "run_output_name": format!("x-{f}"), "format": f, "path": exports.join(format!("out.{f}")).display().to_string()});
    // https sources, fetched by the guest and checked against their sha256.
    let https_script: &[u8] =
        b"#!/bin/bash\nset -e\necho https-script-ran | sudo tee /etc/kiln-https-script\n";
    let https_blob: &[u8] = b"a file fetched over https\n";
    let https = Https::start(&[("setup.sh", https_script), ("blob.txt", https_blob)]);
    c.create_template(
        json!({
            "name": "full",
            "os": "debian-12",
            "applications": ["nginx"],
            "build_timeout_minutes": 60,
            "source": {"image": "debian-12"},
            "vm": {"cpus": 2, "memory_mb": 1024},
            "customize": [
                {"type": "shell", "name": "marker", "inline": ["echo shell-step-ran | sudo tee /etc/kiln-marker"]},
                https.trust_step(),
                {"type": "shell", "name": "https-script", "script": https.url("setup.sh"), "sha256": sha256_hex(https_script)},
                {"type": "file", "name": "https-file", "source": https.url("blob.txt"), "destination": "/tmp/blob.txt", "sha256": sha256_hex(https_blob)},
                {"type": "shell", "name": "keep-blob", "inline": ["sudo cp /tmp/blob.txt /etc/kiln-blob"]},
                {"type": "file", "name": "motd", "source": dir.join("motd").display().to_string(), "destination": "/tmp/motd", "sha256": sha},
                {"type": "shell", "name": "install-motd", "inline": ["sudo cp /tmp/motd /etc/motd"]},
                {"type": "reboot", "name": "reboot", "timeout": "10m"},
                {"type": "shell", "name": "after-reboot", "inline": ["systemctl is-active nginx", "cat /etc/machine-id", "sudo ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"]}
            ],
            "user_script": "#!/bin/bash -e\necho user-script-ran | sudo tee /etc/kiln-user-script\n",
            "distribute": [{"type": "image", "run_output_name": "local"}, export("qcow2"), export("raw"), export("vhd"), export("vmdk")]
        }),
    );
    let id = c.start_build("full", "full-image");
    let b = wait(&mut c, id);
    let log = c.log_lines(id);
    assert_eq!(b["state"], "succeeded", "{b}\n{}", log.join("\n"));
    for step in b["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "succeeded", "{step}");
        assert_eq!(step["exit_code"], 0);
    }
    assert!(log.iter().any(|l| l.contains("shell-step-ran")));
    assert!(log.iter().any(|l| l.contains("user-script-ran")));
    assert_nothing_left(&k, id);

    // Export formats: each file is what was asked for.
    for (f, want) in [
        ("qcow2", "qcow2"),
        ("raw", "raw"),
        ("vhd", "vpc"),
        ("vmdk", "vmdk"),
    ] {
        let file = exports.join(format!("out.{f}"));
        let file = file.to_str().unwrap();
        // A fixed VHD (what Azure takes) has only a footer, so qemu's format probe calls it raw:
        // open it as vpc, which checks the footer, and check the footer's cookie too.
        let info: Value = if f == "vhd" {
            let bytes = std::fs::read(file).unwrap();
            assert_eq!(
                &bytes[bytes.len() - 512..bytes.len() - 504],
                b"conectix",
                "VHD footer"
            );
            serde_json::from_str(&sh(&[
                "qemu-img",
                "info",
                "-f",
                "vpc",
                "--output=json",
                file,
            ]))
            .unwrap()
        } else {
            serde_json::from_str(&sh(&["qemu-img", "info", "--output=json", file])).unwrap()
        };
        assert_eq!(info["format"], want, "{f}");
        let out = b["run_outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["run_output_name"] == format!("x-{f}"))
            .unwrap()
            .clone();
        assert_eq!(
            out["size"].as_u64().unwrap(),
            std::fs::metadata(exports.join(format!("out.{f}")))
                .unwrap()
                .len()
        );
        assert_eq!(out["sha256"].as_str().unwrap().len(), 64);
    }

    // The build's machine-id and host key fingerprint, printed by the after-reboot step.
    let build_machine_id = log
        .iter()
        .find(|l| l.len() == 32 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("machine-id in the log")
        .clone();
    let build_host_fp = log
        .iter()
        .find(|l| l.contains("SHA256:"))
        .expect("host key fingerprint in the log")
        .clone();

    // Boot the published image in a fresh VM and check every change, and that the build's
    // identity is gone.
    let image = b["run_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["run_output_name"] == "local")
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let info: Value =
        serde_json::from_str(&sh(&["qemu-img", "info", "--output=json", &image])).unwrap();
    assert!(
        info.get("backing-filename").is_none(),
        "published image must stand alone: {info}"
    );
    // No key kiln installed is anywhere in the image (cloud-init copied the build's key to
    // root's authorized_keys at the build's first boot).
    let kiln_keys = logged_kiln_keys(&log);
    assert_eq!(kiln_keys.len(), 2, "build key and host key in the log");
    assert!(
        log.iter()
            .any(|l| l == "removed kiln's key from /root/.ssh/authorized_keys"),
        "cloud-init put the build key in root's authorized_keys; generalize must say it removed it"
    );
    assert_no_kiln_keys(&image, &dir.join("scan"), &kiln_keys);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use kiln_daemon::driver::qemu::{prepare, AccelProbe, Vm};
        use kiln_daemon::driver::VmSpec;
        let work = dir.join("verify");
        std::fs::create_dir(&work).unwrap();
        let spec = VmSpec {
            base_image: image.clone().into(),
            work_dir: work.clone(),
            disk_gb: 0,
            cpus: 2,
            memory_mb: 1024,
            user: "debian".into(),
            os: &kiln_daemon::guest::os::DEBIAN,
        };
        let prepared = prepare(&spec).await.unwrap();
        let accel = AccelProbe::default();
        let mut vm = Vm::boot(&prepared, &accel).await.unwrap();
        let guest = vm.wait_ready(Duration::from_secs(1200)).await.unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let run = |cmd: &'static str| {
            let guest = guest.clone();
            let token = token.clone();
            async move {
                let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
                let sink = out.clone();
                let code = guest
                    .exec(
                        cmd,
                        move |_, l| sink.lock().unwrap().push(l.to_string()),
                        &token,
                    )
                    .await
                    .unwrap();
                let lines = out.lock().unwrap().clone();
                (code, lines.join("\n"))
            }
        };
        assert_eq!(run("cat /etc/motd").await.1.trim(), MOTD.trim());
        assert_eq!(run("cat /etc/kiln-marker").await.1.trim(), "shell-step-ran");
        assert_eq!(
            run("cat /etc/kiln-https-script").await.1.trim(),
            "https-script-ran"
        );
        assert_eq!(
            run("cat /etc/kiln-blob").await.1.trim(),
            "a file fetched over https"
        );
        assert_eq!(
            run("cat /etc/kiln-user-script").await.1.trim(),
            "user-script-ran"
        );
        assert_eq!(run("systemctl is-active nginx").await.1.trim(), "active");
        let machine_id = run("cat /etc/machine-id").await.1;
        assert_ne!(
            machine_id.trim(),
            build_machine_id,
            "machine-id must be regenerated"
        );
        let fp = run("sudo ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
            .await
            .1;
        assert!(
            !build_host_fp.contains(fp.split_whitespace().nth(1).unwrap()),
            "host key must not be the build's"
        );
        // Only this boot's key is authorized: the build's key is gone.
        let keys = run("cat ~/.ssh/authorized_keys").await.1;
        assert_eq!(
            keys.lines().filter(|l| l.starts_with("ssh-")).count(),
            1,
            "{keys}"
        );
        assert_eq!(
            run("ls /tmp/kiln-step-* 2>/dev/null | wc -l")
                .await
                .1
                .trim(),
            "0"
        );
        vm.powerdown(Duration::from_secs(120)).await.unwrap();
    });
}

/// Runs `command` in a kept VM with the ssh command `kiln build show` printed.
fn over_attach(attach: &str, command: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("timeout 120 {attach} {command} </dev/null"))
        .output()
        .unwrap()
}

#[test]
fn failing_step_fails_the_build_keeps_the_vm_on_abort_and_cancel_ends_it() {
    let Some(k) = daemon_with_base(None) else {
        return;
    };
    let mut c = k.connect();
    c.create_template(json!({
        "name": "broken", "os": "debian-12", "source": {"image": "debian-12"},
        "vm": {"cpus": 2, "memory_mb": 1024},
        "customize": [
            {"type": "shell", "name": "ok", "inline": ["echo fine"]},
            {"type": "shell", "name": "bad", "inline": ["echo about-to-fail", "exit 7"]},
            {"type": "shell", "name": "never", "inline": ["echo never"]}
        ],
        "error_handling": {"on_customizer_error": "abort"},
        "distribute": [{"type": "image", "run_output_name": "local"}]
    }));
    let id = c.start_build("broken", "broken-image");
    let b = wait(&mut c, id);
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("exit code 7"),
        "{b}"
    );
    let steps = b["steps"].as_array().unwrap();
    assert_eq!(
        (
            steps[0]["state"].clone(),
            steps[1]["state"].clone(),
            steps[2]["state"].clone()
        ),
        (json!("succeeded"), json!("failed"), json!("skipped"))
    );
    assert_eq!(steps[1]["exit_code"], 7);
    let log = c.log_lines(id);
    assert!(log.iter().any(|l| l == "about-to-fail"), "{log:?}");
    assert!(log.iter().any(|l| l.contains("exit code 7")), "{log:?}");
    assert!(!log.iter().any(|l| l == "never"));

    // on_customizer_error = "abort": the VM is kept and the printed command attaches to it.
    let attach = b["attach_command"]
        .as_str()
        .expect("attach command")
        .to_string();
    let shown =
        String::from_utf8_lossy(&k.kiln(&["build", "show", &id.to_string()]).stdout).into_owned();
    assert!(shown.contains(&attach), "{shown}");
    let out = over_attach(&attach, "cat /etc/hostname");
    assert!(
        out.status.success(),
        "attach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    cancel_kept(&k, &mut c, id, "broken-image");
}

/// Cancel ends build `id`'s kept VM: nothing is left and no image `image` was published.
fn cancel_kept(k: &Kilnd, c: &mut Conn, id: u64, image: &str) {
    let b = c.call("build.cancel", json!({"id": id}))["build"].clone();
    assert!(b.get("attach_command").is_none(), "{b}");
    assert_nothing_left(k, id);
    let images = c.call("image.list", json!({}))["images"].clone();
    assert!(
        !images
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == image),
        "{images}"
    );
}

#[test]
fn cancel_queued_and_customizing_timeout_and_kill_9() {
    let Some(mut k) = daemon_with_base(Some("max_concurrent_builds = 1\n")) else {
        return;
    };
    let mut c = k.connect();
    c.create_template(
        json!({
            "name": "slow", "os": "debian-12", "source": {"image": "debian-12"},
            "vm": {"cpus": 2, "memory_mb": 1024},
            "customize": [{"type": "shell", "name": "sleep", "inline": ["echo sleeping", "sleep 3600"]}],
            "distribute": [{"type": "image", "run_output_name": "local"}]
        }),
    );
    let first = c.start_build("slow", "a");
    let queued = c.start_build("slow", "b");
    let q = c.call("build.get", json!({"id": queued}))["build"].clone();
    assert_eq!(
        (q["state"].clone(), q["queue_position"].clone()),
        (json!("queued"), json!(1))
    );
    let q = c.call("build.cancel", json!({"id": queued}))["build"].clone();
    assert_eq!(q["state"], "canceled");

    // Cancel while customizing: the step is running `sleep 3600`.
    wait_for(
        &mut c,
        first,
        |b| b["sub_state"] == "customizing" && b["steps"][0]["state"] == "running",
        Duration::from_secs(1200),
    );
    let b = c.call("build.cancel", json!({"id": first}))["build"].clone();
    assert_eq!(b["state"], "canceled", "{b}");
    assert_nothing_left(&k, first);

    // kill -9 of kilnd while a build boots: the restarted daemon marks it interrupted and
    // removes its qemu and overlay.
    let third = c.start_build("slow", "c");
    wait_for(
        &mut c,
        third,
        |b| b["sub_state"] == "booting",
        Duration::from_secs(300),
    );
    std::thread::sleep(Duration::from_secs(3));
    drop(c);
    k.kill9();
    k.spawn();
    let mut c = k.connect();
    let b = c.call("build.get", json!({"id": third}))["build"].clone();
    assert_eq!(b["state"], "interrupted", "{b}");
    assert_nothing_left(&k, third);
    let images = c.call("image.list", json!({}))["images"].clone();
    assert!(
        !images.as_array().unwrap().iter().any(|i| i["name"] == "c"),
        "{images}"
    );
}

#[test]
fn timeout_ends_the_build() {
    // The template asks for 6 minutes (the smallest allowed); the daemon caps it at 20 s here.
    let Some(k) = daemon_with_base(Some("build_timeout_cap_seconds = 20\n")) else {
        return;
    };
    let mut c = k.connect();
    c.create_template(
        json!({
            "name": "forever", "os": "debian-12", "source": {"image": "debian-12"}, "build_timeout_minutes": 6,
            "vm": {"cpus": 1, "memory_mb": 512},
            "customize": [{"type": "shell", "name": "sleep", "inline": ["sleep 3600"]}],
            "distribute": [{"type": "image", "run_output_name": "local"}]
        }),
    );
    let id = c.start_build("forever", "never");
    let b = wait(&mut c, id);
    assert_eq!(b["state"], "timed_out", "{b}");
    assert!(b["message"].as_str().unwrap().contains("20 seconds"), "{b}");
    assert_nothing_left(&k, id);
}

/// A qemu process whose command line mentions `needle`, if any.
fn qemu_mentioning(needle: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("qemu-system") && cmdline.contains(needle)).then_some(cmdline)
        })
}

fn first_key_blob(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn warm_start_resumes_a_saved_vm_with_fresh_keys_clock_and_disk() {
    let Some(mut k) = daemon_with_base(None) else {
        return;
    };
    let mut c = k.connect();
    let image = c.call("image.get", json!({"image": "debian-12"}))["image"].clone();
    let id = image["id"].as_str().unwrap().to_string();
    assert!(image.get("warm").is_none(), "{image}");
    let warm_dir = k.data_dir.join("warm");

    // kill -9 of kilnd while it warms: the restarted daemon kills that qemu and removes the
    // half-made state.
    let mut warming = k.kiln_cmd(&["image", "warm", "debian-12"]).spawn().unwrap();
    let partial = warm_dir.join(format!("{id}.partial"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !partial.join("qemu.pid").exists() {
        assert!(Instant::now() < deadline, "warming never started a VM");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
    k.kill9();
    let _ = warming.wait();
    k.spawn();
    assert!(!partial.exists(), "half-made warm state left behind");
    assert_eq!(qemu_mentioning(&partial.display().to_string()), None);

    // Warm it for real.
    let out = k.kiln(&["image", "warm", "debian-12"]);
    assert!(
        out.status.success(),
        "image warm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("==> warm start: saved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = k.connect();
    let image = c.call("image.get", json!({"image": "debian-12"}))["image"].clone();
    assert_eq!(image["warm"]["cpus"], 2, "{image}");
    assert_eq!(image["warm"]["memory_mb"], 2048, "{image}");
    let saved = warm_dir.join(&id);
    let saved_client = first_key_blob(&saved.join("client_key.pub"));
    let saved_host = first_key_blob(&saved.join("host_key.pub"));
    let base_gib = image["virtual_size"].as_u64().unwrap() >> 30;

    // A build asking for a bigger disk than the base: resumed, keys rotated, clock set, the
    // root file system grown. Each check is a step that fails the build when it does not hold.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let min_disk = base_gib + 2;
    let exports = k.dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    for f in ["kept.qcow2", "replaced.qcow2"] {
        std::fs::write(exports.join(f), "a file that was here first\n").unwrap();
    }
    let exported = |f: &str| exports.join(f).display().to_string();
    let store_before = std::fs::metadata(k.data_dir.join("kiln.redb"))
        .unwrap()
        .len();
    c.call("gallery.create", json!({"name": "web"}));
    c.create_template(
        json!({
            "name": "warm", "os": "debian-12", "source": {"image": "debian-12"},
            "min_disk_gb": min_disk,
            "vm": {"cpus": 2, "memory_mb": 2048},
            "customize": [
                {"type": "shell", "name": "keys", "inline": [
                    format!("! grep -q {saved_client} ~/.ssh/authorized_keys"),
                    "test $(grep -c . ~/.ssh/authorized_keys) = 1",
                    format!("! sudo grep -q {saved_host} /etc/ssh/ssh_host_ed25519_key.pub"),
                ]},
                {"type": "shell", "name": "clock", "inline": [
                    format!("d=$(( $(date +%s) - {now} )); echo \"clock off by $d s\"; [ $d -ge -5 ] && [ $d -lt 900 ]"),
                ]},
                {"type": "shell", "name": "disk", "inline": [
                    "df -B1G --output=size / | tail -n1",
                    format!("test $(df -B1M --output=size / | tail -n1) -gt {}", (min_disk - 1) * 1024),
                ]},
                {"type": "shell", "name": "marker", "inline": ["echo warm | sudo tee /etc/kiln-warm"]}
            ],
            // The finished image booted in a fresh VM: the marker is there, the disk kept its
            // size, and the build's key is not authorized.
            "validate": {"boot_test": true, "in_vm": [
                {"type": "shell", "name": "marker-kept", "inline": ["grep -qx warm /etc/kiln-warm"]},
                {"type": "shell", "name": "disk-kept", "inline": [
                    format!("test $(df -B1M --output=size / | tail -n1) -gt {}", (min_disk - 1) * 1024)
                ]}
            ]},
            // Export rules, end to end: an existing file is replaced only when the target says
            // `overwrite = true`; kilnd's data directory is never a destination.
            "distribute": [
                {"type": "image", "run_output_name": "local"},
                {"type": "gallery", "run_output_name": "versioned", "gallery": "web", "image": "warm", "version": "auto"},
                {"type": "export", "run_output_name": "kept", "format": "qcow2", "path": exported("kept.qcow2")},
                {"type": "export", "run_output_name": "replaced", "format": "qcow2", "path": exported("replaced.qcow2"), "overwrite": true},
                {"type": "export", "run_output_name": "store", "format": "raw", "path": k.data_dir.join("kiln.redb").display().to_string(), "overwrite": true}
            ]
        }),
    );
    let build = c.start_build("warm", "warm-out");

    // A follower that unsubscribes gets a last `build.log.end` and nothing after it.
    let mut s = k.connect();
    s.set_timeout(Duration::from_secs(300));
    let sub = s.call("build.logs", json!({"id": build, "follow": true}))["sub"].clone();
    loop {
        let n = s.read();
        if n["method"] == "build.log" && n["params"]["sub"] == sub {
            break;
        }
    }
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "build.logs.unsubscribe", "params": {"sub": sub}});
    s.send_raw(format!("{request}\n").as_bytes());
    let (mut replied, mut ended) = (false, false);
    while !(replied && ended) {
        let m = s.read();
        if m["id"] == 1 {
            assert_eq!(m["result"], json!({}), "{m}");
            replied = true;
        } else if m["method"] == "build.log.end" && m["params"]["sub"] == sub {
            assert_eq!(m["params"]["unsubscribed"], true, "{m}");
            ended = true;
        } else if m["method"] == "build.log" && m["params"]["sub"] == sub {
            assert!(!ended, "a line after build.log.end: {m}");
        }
    }
    let (kind, _) = s.call_err("build.logs.unsubscribe", json!({"sub": sub}));
    assert_eq!(kind, "not_found");
    drop(s);

    let b = wait(&mut c, build);
    let lines = c.log_lines(build);
    // Two targets are refused, so the build partially succeeded; the others are there.
    assert_eq!(
        b["state"],
        "partially_succeeded",
        "{b}\n{}",
        lines.join("\n")
    );
    let output = |name: &str| {
        b["run_outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["run_output_name"] == name)
            .unwrap_or_else(|| panic!("{name} in {b}"))
            .clone()
    };
    let kept = output("kept");
    assert!(
        kept["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exists"),
        "{kept}"
    );
    assert_eq!(
        std::fs::read_to_string(exports.join("kept.qcow2")).unwrap(),
        "a file that was here first\n"
    );
    assert_eq!(output("replaced")["error"], Value::Null, "{b}");
    let replaced = sh(&[
        "qemu-img",
        "info",
        "--output=json",
        &exported("replaced.qcow2"),
    ]);
    assert!(replaced.contains("\"format\": \"qcow2\""), "{replaced}");
    let store = output("store");
    assert!(
        store["error"]
            .as_str()
            .unwrap_or_default()
            .contains("inside kilnd's data directory"),
        "{store}"
    );
    assert!(
        std::fs::metadata(k.data_dir.join("kiln.redb"))
            .unwrap()
            .len()
            >= store_before
    );
    assert_eq!(output("local")["error"], Value::Null, "{b}");
    let log = lines.join("\n");
    assert!(log.contains("warm start: resuming"), "{log}");
    assert!(log.contains("validate: passed"), "{log}");
    let kinds: Vec<(String, String)> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for name in ["boot-test", "validate-marker-kept", "validate-disk-kept"] {
        assert!(
            kinds.contains(&(name.to_string(), "succeeded".to_string())),
            "{name} in {kinds:?}"
        );
    }
    assert!(log.contains("disk grown from"), "{log}");
    assert!(log.contains("clock off by"), "{log}");
    assert!(
        !log.contains("guest ready (ssh with the pinned host key, cloud-init finished)"),
        "a warm build boots no VM cold: {log}"
    );
    assert_nothing_left(&k, build);
    let out = c.call("image.get", json!({"image": "warm-out"}))["image"].clone();
    assert_eq!(
        out["virtual_size"].as_u64().unwrap() >> 30,
        min_disk,
        "{out}"
    );
    // The output's chain is flattened: it stands without the saved VM or the base.
    let info = sh(&[
        "qemu-img",
        "info",
        "--output=json",
        out["path"].as_str().unwrap(),
    ]);
    assert!(!info.contains("backing-filename"), "{info}");
    // Neither the saved VM's key (authorized at its first boot, copied to root by cloud-init)
    // nor the build's is anywhere in the output image.
    let mut kiln_keys = logged_kiln_keys(&lines);
    assert_eq!(
        kiln_keys.len(),
        3,
        "saved VM's key, build key, host key: {kiln_keys:?}"
    );
    for f in ["client_key.pub", "host_key.pub"] {
        let line = std::fs::read_to_string(saved.join(f)).unwrap();
        kiln_keys.push(kiln_tests::image_scan::line_fingerprint(&line).unwrap());
    }
    assert_no_kiln_keys(
        out["path"].as_str().unwrap(),
        &k.dir.path().join("scan"),
        &kiln_keys,
    );
    // The gallery target published version 1.0.0 of the same disk: as clean, and on its base.
    let versioned = output("versioned");
    assert_eq!(versioned["error"], Value::Null, "{versioned}");
    let v = c.call("image.get", json!({"image": "web/warm:1.0.0"}))["image"].clone();
    assert_eq!(v["id"], versioned["artifact_id"], "{v}");
    assert_eq!(v["gallery"]["version"], "1.0.0", "{v}");
    assert_eq!(v["lineage"][0]["name"], "debian-12", "{v}");
    assert_no_kiln_keys(
        v["path"].as_str().unwrap(),
        &k.dir.path().join("scan-version"),
        &kiln_keys,
    );

    // An https file whose sha256 does not match fails its step (and the build), naming it.
    let https = Https::start(&[("blob.txt", b"the real content\n")]);
    c.create_template(
        json!({
            "name": "bad-sha", "os": "debian-12", "source": {"image": "debian-12"},
            "customize": [
                https.trust_step(),
                {"type": "file", "name": "tampered", "source": https.url("blob.txt"), "destination": "/tmp/blob.txt", "sha256": "0".repeat(64)}
            ],
            "distribute": [{"type": "image", "run_output_name": "local"}]
        }),
    );
    let bad = c.start_build("bad-sha", "never");
    let b = wait(&mut c, bad);
    let log = c.log_lines(bad).join("\n");
    assert_eq!(b["state"], "failed", "{b}\n{log}");
    assert_eq!(b["steps"][1]["state"], "failed", "{b}");
    assert!(
        log.contains("FAILED"),
        "sha256sum's verdict in the log: {log}"
    );
    assert_nothing_left(&k, bad);

    // on_validation_error = "abort": a failing check keeps the booted output VM to look into;
    // the image is not published; cancel ends the VM.
    c.create_template(json!({
        "name": "bad-check", "os": "debian-12", "source": {"image": "debian-12"},
        "customize": [
            {"type": "shell", "name": "mark", "inline": ["echo checked | sudo tee /etc/kiln-check"]}
        ],
        "validate": {"boot_test": true, "in_vm": [
            {"type": "shell", "name": "must-fail", "inline": ["grep -q never /etc/kiln-check"]}
        ]},
        "error_handling": {"on_validation_error": "abort"},
        "distribute": [{"type": "image", "run_output_name": "local"}]
    }));
    let checked = c.start_build("bad-check", "checked");
    let b = wait(&mut c, checked);
    let log = c.log_lines(checked).join("\n");
    assert_eq!(b["state"], "failed", "{b}\n{log}");
    let failed: Vec<&str> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "failed")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["validate-must-fail"], "{b}");
    assert!(log.contains("on_validation_error = \"abort\""), "{log}");
    let attach = b["attach_command"]
        .as_str()
        .expect("attach command")
        .to_string();
    let out = over_attach(&attach, "cat /etc/kiln-check");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "checked",
        "attach to the kept validation VM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cancel_kept(&k, &mut c, checked, "checked");

    // Deleting the base removes its saved VM.
    let deleted = k.kiln(&["image", "delete", "debian-12", "--yes"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(
        !saved.exists(),
        "warm state left after the image was deleted"
    );
}
