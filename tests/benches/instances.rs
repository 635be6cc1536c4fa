//! Instance start benchmark: the time from `kiln instance run` to the first `kiln instance ssh
//! NAME -- true` that works, against a real kilnd and the bootstrapped base image
//! (`KILN_TEST_BASE_IMAGE`), side by side in one run: an instance that resumes the image's saved
//! VM (warm) and one that boots cold (another memory size, so the saved VM does not fit).
//! Run: `cargo build --release --bins && KILN_TEST_BASE_IMAGE=... cargo bench -p kiln-tests --bench instances`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_tests::Kilnd;

fn main() {
    let Some(base) = std::env::var_os("KILN_TEST_BASE_IMAGE") else {
        eprintln!("instances bench: set KILN_TEST_BASE_IMAGE to a bootstrapped debian-12 qcow2");
        return;
    };
    let k = Kilnd::start();
    let t0 = Instant::now();
    k.import_base(Path::new(&base), true);
    println!(
        "kiln image import --warm (once per image): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let home = k.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let key = home.join("id");
    kiln_tests::ssh_keypair(&key);
    let runs: [(&str, &[&str]); 4] = [
        ("warm-1", &[]),
        ("cold-1", &["--memory-mb", "2047"]),
        ("warm-2", &[]),
        ("cold-2", &["--memory-mb", "2047"]),
    ];
    for (name, extra) in runs {
        let pubkey = key.with_extension("pub");
        let mut args = vec![
            "instance",
            "run",
            "debian-12",
            "--name",
            name,
            "--ssh-key",
            pubkey.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let t0 = Instant::now();
        let out = k.kiln(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let returned = t0.elapsed().as_secs_f64();
        loop {
            let ok = k
                .kiln_cmd(&[
                    "instance",
                    "ssh",
                    name,
                    "-i",
                    key.to_str().unwrap(),
                    "--",
                    "true",
                ])
                .env("HOME", &home)
                .output()
                .unwrap()
                .status
                .success();
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(1800),
                "{name} never answered"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let show = k.kiln(&["--json", "instance", "show", name]);
        let how: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        println!(
            "instance run -> ssh true works, {name}: {:.1} s (run returned after {returned:.1} s; {})",
            t0.elapsed().as_secs_f64(),
            how["instance"]["message"].as_str().unwrap_or_default()
        );
        let _ = k.kiln(&["instance", "delete", name, "--yes"]);
    }
}
