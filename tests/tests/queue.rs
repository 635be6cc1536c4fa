//! The build queue's state machine, driven in seconds: `kiln_daemon::run_with` in-process on a
//! temp socket, with the scripted driver of `kiln_tests::fake_driver` in place of QEMU. Every
//! state and sub-state, cancel in each, timeouts, queue positions, `max_concurrent_builds`, kept
//! VMs and recovery after a crash. The fake proves nothing about building images: builds.rs
//! does, with real VMs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_tests::in_process::Daemon;
use kiln_tests::Conn;
use serde_json::{json, Value};

/// A template named `name` from debian-12 with these customize steps and extra top-level fields.
fn template(name: &str, customize: Value, extra: Value) -> Value {
    let mut t = json!({
        "name": name,
        "os": "debian-12",
        "source": {"image": "debian-12"},
        "customize": customize,
        "distribute": [{"type": "image", "run_output_name": "local"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

fn shell(name: &str, line: &str) -> Value {
    json!({"type": "shell", "name": name, "inline": [line]})
}

fn get(c: &mut Conn, id: u64) -> Value {
    c.call("build.get", json!({ "id": id }))["build"].clone()
}

/// Polls build `id` until `ok` holds (10 s at most); returns the build.
fn until(c: &mut Conn, id: u64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = get(c, id);
        if ok(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "build {id} never got {what}: {b}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn until_sub(c: &mut Conn, id: u64, sub: &str) -> Value {
    until(c, id, sub, |b| b["sub_state"] == sub)
}

fn until_terminal(c: &mut Conn, id: u64) -> Value {
    until(c, id, "a terminal state", |b| {
        !matches!(b["state"].as_str(), Some("queued" | "running"))
    })
}

/// Waits until `n` fake VMs run.
fn vms_up(d: &Daemon, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.fake.alive().len() < n {
        assert!(Instant::now() < deadline, "{n} fake VMs never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Nothing of build `id` is left: no VM process, no work directory.
fn nothing_left(d: &Daemon, id: u64) {
    assert_eq!(d.fake.alive(), Vec::<u32>::new(), "fake VMs still running");
    let work = d.data_dir.join("builds").join(id.to_string());
    assert!(!work.exists(), "{} is left", work.display());
}

fn in_order(lines: &[String], wanted: &[&str]) {
    let mut at = 0;
    for w in wanted {
        match lines[at..].iter().position(|l| l.contains(w)) {
            Some(p) => at += p + 1,
            None => panic!(
                "{w:?} missing (in this order) from the log:\n{}",
                lines.join("\n")
            ),
        }
    }
}

#[test]
fn a_build_goes_through_every_sub_state_and_publishes_its_image() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.create_template(template(
        "full",
        json!([
            shell("hello", "echo hello"),
            {"type": "reboot", "name": "restart", "timeout": "30s"},
            shell("after", "echo again"),
        ]),
        json!({"validate": {"boot_test": true, "in_vm": [shell("check", "true")]}}),
    ));
    let id = c.start_build("full", "full-1");
    let b = until_terminal(&mut c, id);
    assert_eq!(b["state"], "succeeded", "{b}");
    assert!(b["sub_state"].is_null());
    let steps: Vec<(&str, &str)> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("hello", "succeeded"),
            ("restart", "succeeded"),
            ("after", "succeeded"),
            ("boot-test", "succeeded"),
            ("validate-check", "succeeded"),
        ]
    );
    let out = &b["run_outputs"][0];
    assert_eq!(out["kind"], "image");
    assert_eq!(out["sha256"].as_str().unwrap().len(), 64, "{out}");
    assert!(Path::new(out["path"].as_str().unwrap()).is_file());
    let lines = c.log_lines(id);
    in_order(
        &lines,
        &[
            "==> preparing",
            "build key",
            "host key",
            "==> booting",
            "guest ready",
            "==> customizing",
            "step 1/5: hello",
            "rebooting (boot id boot-1)",
            "back up (boot id boot-2)",
            "==> generalizing",
            "powering off",
            "==> validating",
            "booting the finished image in a fresh VM",
            "validate: passed",
            "==> distributing",
            "succeeded: image built",
        ],
    );
    // The build VM and the boot test's VM, each booted once and ended.
    assert_eq!(
        d.fake
            .events()
            .iter()
            .filter(|e| e.starts_with("boot "))
            .count(),
        2
    );
    nothing_left(&d, id);
}

/// Each sub-state a build can be canceled in, with the phase the fake holds to keep it there.
#[test]
fn cancel_in_every_sub_state_ends_the_vm_and_removes_the_work() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.create_template(template(
        "plain",
        json!([shell("hello", "echo hello")]),
        json!({"validate": {"boot_test": true}}),
    ));
    c.create_template(template("spin", json!([shell("wait", "hold")]), json!({})));
    c.create_template(template(
        "spin-validate",
        json!([]),
        json!({"validate": {"boot_test": true, "in_vm": [shell("wait", "hold")]}}),
    ));
    let cases: [(&str, Option<&'static str>, &str); 6] = [
        ("plain", Some("prepare"), "preparing"),
        ("plain", Some("boot"), "booting"),
        ("spin", None, "customizing"),
        ("plain", Some("generalize"), "generalizing"),
        ("spin-validate", None, "validating"),
        ("plain", Some("distribute"), "distributing"),
    ];
    for (i, (t, hold, sub)) in cases.into_iter().enumerate() {
        if let Some(phase) = hold {
            d.fake.hold(phase);
        }
        let id = c.start_build(t, &format!("canceled-{i}"));
        until_sub(&mut c, id, sub);
        let b = c.call("build.cancel", json!({ "id": id }))["build"].clone();
        assert_eq!(b["state"], "canceled", "canceled while {sub}: {b}");
        assert!(b["sub_state"].is_null(), "{b}");
        let lines = c.log_lines(id);
        in_order(&lines, &[&format!("==> {sub}"), "==> canceling: canceled"]);
        nothing_left(&d, id);
        if let Some(phase) = hold {
            d.fake.release(phase);
        }
    }
    // Nothing half-published: only the base is in the catalog.
    let images = c.call("image.list", json!({}))["images"].clone();
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debian-12"], "{images}");
    // A queued build is canceled without running.
    d.fake.hold("boot");
    let running = c.start_build("plain", "first");
    let queued = c.start_build("plain", "second");
    let mut c2 = d.conn();
    until_sub(&mut c2, running, "booting");
    // max_concurrent_builds defaults to half the cores: with two, the second may run too.
    if get(&mut c, queued)["state"] == "queued" {
        let b = c.call("build.cancel", json!({ "id": queued }))["build"].clone();
        assert_eq!(b["state"], "canceled");
        assert_eq!(b["message"], "canceled while queued");
    }
    d.fake.release("boot");
    assert_eq!(until_terminal(&mut c, running)["state"], "succeeded");
}

#[test]
fn timeouts_end_a_build_wherever_it_is() {
    let d = Daemon::start("build_timeout_cap_seconds = 1");
    let mut c = d.conn();
    c.create_template(template("spin", json!([shell("wait", "hold")]), json!({})));
    let id = c.start_build("spin", "late");
    let b = until_terminal(&mut c, id);
    assert_eq!(b["state"], "timed_out", "{b}");
    assert_eq!(
        b["message"],
        "build exceeded its timeout of 1 seconds (build_timeout_minutes)"
    );
    assert_eq!(b["steps"][0]["state"], "canceled");
    nothing_left(&d, id);
    // Held before the VM even boots, it times out the same way.
    d.fake.hold("prepare");
    let id = c.start_build("spin", "later");
    assert_eq!(until_terminal(&mut c, id)["state"], "timed_out");
    nothing_left(&d, id);
}

#[test]
fn the_queue_keeps_order_positions_and_the_concurrency_limit() {
    let d = Daemon::start("max_concurrent_builds = 1");
    let mut c = d.conn();
    c.create_template(template(
        "plain",
        json!([shell("hello", "echo hello")]),
        json!({}),
    ));
    d.fake.hold("boot");
    let ids: Vec<u64> = (0..4)
        .map(|i| c.start_build("plain", &format!("q{i}")))
        .collect();
    until_sub(&mut c, ids[0], "booting");
    let positions = |c: &mut Conn| -> Vec<Value> {
        ids.iter()
            .map(|&id| get(c, id)["queue_position"].clone())
            .collect()
    };
    assert_eq!(
        positions(&mut c),
        [json!(null), json!(1), json!(2), json!(3)]
    );
    let status = c.call("daemon.status", json!({}));
    assert_eq!(
        (status["running"].clone(), status["queue"].clone()),
        (json!(1), json!(3))
    );
    c.call("build.cancel", json!({ "id": ids[2] }));
    assert_eq!(
        positions(&mut c),
        [json!(null), json!(1), json!(null), json!(2)]
    );
    d.fake.release("boot");
    let order: Vec<String> = ids
        .iter()
        .map(|&id| {
            until_terminal(&mut c, id)["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order, ["succeeded", "succeeded", "canceled", "succeeded"]);
    // One at a time, in the order they came.
    assert_eq!(d.fake.most_up(), 1);
    let started = |c: &mut Conn, id: u64| get(c, id)["started_at"].as_str().unwrap().to_owned();
    let (a, b, last) = (
        started(&mut c, ids[0]),
        started(&mut c, ids[1]),
        started(&mut c, ids[3]),
    );
    assert!(a <= b && b <= last, "{a} {b} {last}");
}

#[test]
fn two_builds_run_at_once_when_the_limit_says_two() {
    let d = Daemon::start("max_concurrent_builds = 2");
    let mut c = d.conn();
    c.create_template(template(
        "plain",
        json!([shell("hello", "echo hello")]),
        json!({}),
    ));
    d.fake.hold("ready");
    let ids: Vec<u64> = (0..3)
        .map(|i| c.start_build("plain", &format!("p{i}")))
        .collect();
    until_sub(&mut c, ids[0], "booting");
    until_sub(&mut c, ids[1], "booting");
    vms_up(&d, 2);
    assert_eq!(get(&mut c, ids[2])["queue_position"], 1);
    d.fake.release("ready");
    for id in ids {
        assert_eq!(until_terminal(&mut c, id)["state"], "succeeded");
    }
    assert_eq!(d.fake.most_up(), 2);
}

#[test]
fn a_failed_step_ends_or_keeps_its_vm_as_the_template_says() {
    let d = Daemon::start("");
    let mut c = d.conn();
    let steps = json!([shell("bad", "exit 3"), shell("never", "echo no")]);
    c.create_template(template("cleanup", steps.clone(), json!({})));
    c.create_template(template(
        "keep",
        steps,
        json!({"error_handling": {"on_customizer_error": "abort"}}),
    ));
    let id = c.start_build("cleanup", "c");
    let b = until_terminal(&mut c, id);
    assert_eq!(b["state"], "failed");
    assert_eq!(b["message"], "step 1 \"bad\" failed with exit code 3");
    assert_eq!(b["steps"][0]["exit_code"], 3);
    assert_eq!(b["steps"][1]["state"], "skipped");
    assert!(b["attach_command"].is_null());
    nothing_left(&d, id);

    let id = c.start_build("keep", "k");
    let b = until_terminal(&mut c, id);
    assert_eq!(b["state"], "failed");
    assert!(
        b["attach_command"]
            .as_str()
            .unwrap()
            .starts_with("fake-attach "),
        "{b}"
    );
    assert_eq!(d.fake.alive().len(), 1, "the kept VM runs");
    let b = c.call("build.cancel", json!({ "id": id }))["build"].clone();
    assert_eq!(b["state"], "failed");
    assert!(b["attach_command"].is_null(), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .ends_with("(kept VM ended by cancel)"),
        "{b}"
    );
    nothing_left(&d, id);
}

#[test]
fn a_target_that_fails_makes_a_partial_success() {
    let d = Daemon::start("");
    let mut c = d.conn();
    let mut t = template("two", json!([]), json!({}));
    t["distribute"] = json!([
        {"type": "image", "run_output_name": "local"},
        {"type": "export", "run_output_name": "file", "format": "qcow2",
         "path": "/proc/kiln-no-such-dir/out.qcow2"},
    ]);
    c.create_template(t);
    let id = c.start_build("two", "partial");
    let b = until_terminal(&mut c, id);
    assert_eq!(b["state"], "partially_succeeded", "{b}");
    assert!(b["run_outputs"][0]["error"].is_null());
    assert!(b["run_outputs"][1]["error"].is_string(), "{b}");
    nothing_left(&d, id);
}

#[test]
fn after_a_crash_every_build_ends_interrupted_and_no_vm_is_left() {
    let d = Daemon::start("max_concurrent_builds = 1");
    let mut c = d.conn();
    c.create_template(template(
        "plain",
        json!([shell("hello", "echo hello")]),
        json!({}),
    ));
    d.fake.hold("ready");
    let running = c.start_build("plain", "r");
    let queued = c.start_build("plain", "q");
    until_sub(&mut c, running, "booting");
    vms_up(&d, 1);
    let vms = d.fake.alive();
    assert_eq!(vms.len(), 1);
    drop(c);
    let dir = d.crash();
    assert_eq!(
        vms.iter()
            .filter(|&&pid| Path::new(&format!("/proc/{pid}")).exists())
            .count(),
        1,
        "the crashed kilnd's VM should still run"
    );
    let work = dir
        .path()
        .join("data")
        .join("builds")
        .join(running.to_string());
    assert!(work.exists());

    let d = Daemon::start_in(dir, "max_concurrent_builds = 1");
    let mut c = d.conn();
    let b = get(&mut c, running);
    assert_eq!(b["state"], "interrupted", "{b}");
    assert_eq!(
        b["message"],
        "kilnd stopped while this build was running; its VM and files were removed"
    );
    assert_eq!(b["steps"][0]["state"], "canceled");
    let q = get(&mut c, queued);
    assert_eq!(q["state"], "interrupted", "{q}");
    assert_eq!(d.fake.events(), [format!("reap {}", vms[0])]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while kiln_tests_alive(vms[0]) {
        assert!(
            Instant::now() < deadline,
            "the old VM {} still runs",
            vms[0]
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!work.exists(), "{} is left", work.display());
    // The restarted queue runs new builds.
    let id = c.start_build("plain", "after");
    assert_eq!(until_terminal(&mut c, id)["state"], "succeeded");
}

/// Whether `pid` runs (not a zombie).
fn kiln_tests_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
