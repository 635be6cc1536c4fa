//! Instance start benchmark: the time from `kiln instance run` to the first `kiln instance ssh
//! NAME -- true` that works, against a real kilnd and the bootstrapped base image
//! (`KILN_TEST_BASE_IMAGE`). Cold boots only: instances do not resume saved VMs yet (issue 10,
//! item 8), which this prints as such rather than a made-up figure.
//! Run: `cargo build --release --bins && KILN_TEST_BASE_IMAGE=... cargo bench -p kiln-tests --bench instances`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kiln_tests::Kilnd;

fn main() {
    let Some(base) = std::env::var_os("KILN_TEST_BASE_IMAGE") else {
        eprintln!("instances bench: set KILN_TEST_BASE_IMAGE to a bootstrapped debian-12 qcow2");
        return;
    };
    let k = Kilnd::start();
    k.import_base(std::path::Path::new(&base), false);
    let home = k.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let key = home.join("id");
    kiln_tests::ssh_keypair(&key);
    for (i, name) in ["cold-1", "cold-2"].iter().enumerate() {
        let t0 = Instant::now();
        let out = k.kiln(&[
            "instance",
            "run",
            "debian-12",
            "--name",
            name,
            "--ssh-key",
            key.with_extension("pub").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        println!(
            "instance run -> ssh true works, cold boot #{}: {:.1} s",
            i + 1,
            t0.elapsed().as_secs_f64()
        );
        let _ = k.kiln(&["instance", "delete", name, "--yes"]);
    }
    println!("instance run -> ssh true works, warm (resumed saved VM): not measured: instances boot cold (warm instance starts are not built yet)");
}
