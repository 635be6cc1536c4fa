//! The dashboard in a real terminal: `kiln` run bare in a tmux pane at 80x24 against a real
//! kilnd, driven with send-keys and read with capture-pane, with the daemon's state checked
//! through the protocol. The base image is an empty qcow2, so the build boots nothing and stays
//! in `booting` until the dashboard cancels it.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::{template, Kilnd};
use serde_json::json;

struct Pane {
    session: String,
}

impl Pane {
    fn start(k: &Kilnd) -> Option<Pane> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("tmux is not installed: skipping the dashboard test");
            return None;
        }
        let session = format!("kiln-test-{}", std::process::id());
        let cmd = format!(
            "KILN_SOCKET={} NO_COLOR=1 {}",
            k.socket.display(),
            kiln_tests::bin("kiln").display()
        );
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "80",
                "-y",
                "24",
                &cmd,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Some(Pane { session })
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let ok = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, key])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`.
    fn expect(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

#[test]
fn build_from_the_dashboard_follow_its_log_and_cancel_it() {
    let k = Kilnd::start();
    let empty = k.dir.path().join("empty.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&empty)
        .arg("1G")
        .status()
        .unwrap()
        .success());
    let out = k.kiln(&[
        "image",
        "import",
        empty.to_str().unwrap(),
        "--name",
        "debian-12",
        "--os",
        "debian-12",
        "--public",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = k.connect();
    c.call("template.create", json!({"template": template("web")}));

    let Some(pane) = Pane::start(&k) else { return };
    let s = pane.expect("connected");
    assert!(s.contains("web") && s.contains("debian-12"), "{s}");
    assert!(s.lines().count() <= 24);

    // `b` asks for the image name and starts the build.
    pane.keys(&["b"]);
    pane.expect("image name");
    pane.keys(&["img1", "Enter"]);
    pane.expect("build 1");
    let b = c.call("build.get", json!({"id": 1}))["build"].clone();
    assert_eq!(
        (b["template"].clone(), b["image_name"].clone()),
        (json!("web"), json!("img1"))
    );

    // The builds tab shows it live; its log follows.
    pane.keys(&["Tab"]);
    pane.expect("booting");
    pane.keys(&["l"]);
    pane.expect("==> booting");
    pane.keys(&["Escape"]);

    // `x` asks (default no); `y` cancels.
    pane.keys(&["Tab", "Tab", "Tab"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pane.screen().contains("ELAPSED") && Instant::now() < deadline {
        pane.keys(&["Tab"]);
    }
    pane.keys(&["x"]);
    pane.expect("y/N");
    pane.keys(&["y"]);
    pane.expect("canceled");
    let b = c.call("build.get", json!({"id": 1}))["build"].clone();
    assert_eq!(b["state"], "canceled", "{b}");

    pane.keys(&["q"]);
}
