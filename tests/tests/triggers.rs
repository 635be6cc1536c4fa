//! Triggers through the protocol, on the in-process kilnd with the fake driver (whose builds
//! publish real qcow2 files): a new gallery version queues exactly one build of each template
//! whose latest revision asks (none for one that does not, one pinned, an excluded version, or
//! after a restart), on that version and with its image name substituted; a re-imported public
//! image of a source's name triggers too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kiln_tests::in_process::Daemon;
use kiln_tests::Conn;
use serde_json::{json, Value};

/// A template on `source` (at `version`) making a private image; `trigger` is its `[trigger]`.
fn on(name: &str, source: &str, version: &str, trigger: Value) -> Value {
    json!({
        "name": name,
        "os": "debian-12",
        "source": {"image": source, "version": version},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{"type": "image", "run_output_name": "local"}],
        "trigger": trigger,
    })
}

fn publisher(name: &str, exclude: bool) -> Value {
    json!({
        "name": name,
        "os": "debian-12",
        "source": {"image": "debian-12"},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{
            "type": "gallery", "run_output_name": "v", "gallery": "web", "image": "nginx",
            "exclude_from_latest": exclude,
        }],
    })
}

/// Builds `template` to its end; the gallery version or image it made (its first run output).
fn build(c: &mut Conn, template: &str, image: &str) -> Value {
    let id = c.start_build(template, image);
    let b = c.call("build.wait", json!({ "id": id }))["build"].clone();
    assert_eq!(b["state"], "succeeded", "{b}");
    b
}

/// The triggered builds, oldest first, once `want` of them exist and nothing more came for a
/// moment (so that one too many shows).
fn triggered(c: &mut Conn, want: usize) -> Vec<Value> {
    let list = |c: &mut Conn| -> Vec<Value> {
        let mut b: Vec<Value> = c.call("build.list", json!({}))["builds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b.get("triggered_by").is_some())
            .cloned()
            .collect();
        b.sort_by_key(|b| b["id"].as_u64());
        b
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while list(c).len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = list(c);
    assert_eq!(got.len(), want, "triggered builds: {got:#?}");
    // Each runs to its end (they publish plain images, which trigger nothing here).
    got.iter()
        .map(|b| c.call("build.wait", json!({"id": b["id"]}))["build"].clone())
        .collect()
}

#[test]
fn a_new_gallery_version_queues_one_build_of_each_template_that_asked() {
    let d = Daemon::start("");
    let dir = d.dir.clone();
    let mut c = d.conn();
    c.call("gallery.create", json!({"name": "web"}));
    c.create_template(publisher("nightly", false));
    c.create_template(publisher("canary", true));
    build(&mut c, "nightly", "n1"); // web/nginx:1.0.0

    let trigger = |pattern: &str| json!({"on_base_change": true, "image_name": pattern});
    c.create_template(on("a", "web/nginx", "latest", trigger("a-{version}")));
    // Two revisions asking: still one build, of the latest revision.
    let mut a2 = on("a", "web/nginx", "latest", trigger("a-{version}"));
    a2["description"] = json!("second revision");
    c.call("template.update", json!({"name": "a", "template": a2}));
    c.create_template(on(
        "b",
        "web/nginx",
        "latest",
        trigger("b-{version}-{date}-{build}"),
    ));
    // Asked in its first revision, not in its latest.
    c.create_template(on("off", "web/nginx", "latest", trigger("off-{version}")));
    let off = on(
        "off",
        "web/nginx",
        "latest",
        json!({"on_base_change": false, "image_name": "off-{version}"}),
    );
    c.call("template.update", json!({"name": "off", "template": off}));
    c.create_template(on("plain", "web/nginx", "latest", json!({})));
    c.create_template(on("pinned", "web/nginx", "1.0.0", trigger("p-{version}")));
    // Saving templates triggered nothing.
    triggered(&mut c, 0);

    let nightly = build(&mut c, "nightly", "n2");
    let new_id = nightly["run_outputs"][0]["artifact_id"].clone();
    let got = triggered(&mut c, 2);
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(a["template"], "a", "{a}");
    assert_eq!(a["revision"], 2, "the latest revision: {a}");
    assert_eq!(a["image_name"], "a-1.0.1", "{a}");
    assert_eq!(b["template"], "b", "{b}");
    assert_eq!(
        b["image_name"],
        format!("b-1.0.1-{today}-{}", b["id"]),
        "{b}"
    );
    for t in &got {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["base_image"], new_id, "built on the new version: {t}");
        assert_eq!(t["base_image_name"], "web/nginx:1.0.1", "{t}");
        assert_eq!(
            t["triggered_by"],
            json!({"image": "web/nginx", "version": "1.0.1", "image_id": new_id}),
            "{t}"
        );
        let got = c.call("build.get", json!({"id": t["id"]}))["build"].clone();
        assert_eq!(got["triggered_by"], t["triggered_by"]);
        let log = c.log_lines(t["id"].as_u64().unwrap());
        assert!(
            log[0].contains("triggered")
                && log[0].contains("web/nginx")
                && log[0].contains("1.0.1"),
            "the first log line names the new version: {log:#?}"
        );
    }
    let image = c.call("image.get", json!({"image": "a-1.0.1"}))["image"].clone();
    assert_eq!(image["parent_image"], new_id, "{image}");
    // Lineage: the image records the trigger that made it.
    assert_eq!(image["trigger"]["version"], "1.0.1", "{image}");
    assert_eq!(image["lineage"][0]["name"], "web/nginx:1.0.1", "{image}");

    // A version excluded from latest is not what latest means: nothing.
    build(&mut c, "canary", "c1"); // web/nginx:1.0.2, excluded
    triggered(&mut c, 2);

    // Turning a's trigger off: the next version builds b only.
    let mut a3 = a2.clone();
    a3["trigger"]["on_base_change"] = json!(false);
    c.call("template.update", json!({"name": "a", "template": a3}));
    build(&mut c, "nightly", "n3"); // web/nginx:1.0.3
    let got = triggered(&mut c, 3);
    assert_eq!(got[2]["template"], "b");
    assert_eq!(got[2]["triggered_by"]["version"], "1.0.3");

    // A restart replays nothing.
    drop(c);
    drop(d);
    let d = Daemon::start_in(dir, "");
    let mut c = d.conn();
    triggered(&mut c, 3);
}

#[test]
fn a_reimported_public_image_of_the_sources_name_triggers() {
    let d = Daemon::start("");
    let mut c = d.conn();
    let file = d.dir.path().join("os.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&file)
        .arg("64M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let import = |c: &mut Conn, name: &str, public: bool| -> Value {
        c.call(
            "image.import",
            json!({"path": file, "name": name, "os": "debian-12", "user": "debian", "public": public}),
        )["image"]
            .clone()
    };
    let old = import(&mut c, "base-os", true);
    c.create_template(on(
        "app",
        "base-os",
        "latest",
        json!({"on_base_change": true, "image_name": "app-{version}"}),
    ));
    // Another name triggers nothing.
    import(&mut c, "other-os", true);
    triggered(&mut c, 0);

    c.call("image.delete", json!({"image": old["id"]}));
    let new = import(&mut c, "base-os", true);
    let got = triggered(&mut c, 1);
    let t = &got[0];
    assert_eq!(t["base_image"], new["id"], "{t}");
    assert_eq!(t["triggered_by"]["image"], "base-os", "{t}");
    assert_eq!(t["triggered_by"]["image_id"], new["id"], "{t}");
    // A plain image's version is its creation time, UTC, as YYYYMMDDHHMM.
    let version = t["triggered_by"]["version"].as_str().unwrap().to_owned();
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(new["created_at"].clone()).unwrap();
    assert_eq!(version, created.format("%Y%m%d%H%M").to_string(), "{t}");
    assert_eq!(t["image_name"], format!("app-{version}"), "{t}");
}

#[test]
fn a_trigger_needs_an_image_name_that_makes_a_name() {
    let d = Daemon::start("");
    let mut c = d.conn();
    for (trigger, needle) in [
        (json!({"on_base_change": true}), "required"),
        (
            json!({"on_base_change": true, "image_name": "web/{version}"}),
            "'/'",
        ),
        (json!({"image_name": "web-{tag}"}), "{tag}"),
    ] {
        let t = on("t", "debian-12", "latest", trigger);
        let (kind, err) = c.call_err("template.create", json!({ "template": t }));
        assert_eq!(kind, "invalid_template", "{err}");
        let v = &err["data"]["violations"][0];
        assert_eq!(v["path"], "trigger.image_name", "{err}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{err}");
    }
    let (kind, err) = c.call_err(
        "template.create",
        json!({"template": on("t", "debian-12", "latest", json!({"on_base_chnage": true}))}),
    );
    assert_eq!(
        kind, "invalid_template",
        "unknown trigger fields are refused: {err}"
    );
}

/// The real `kiln` binary against the in-process kilnd.
fn kiln(d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(kiln_tests::bin("kiln"))
        .args(args)
        .env("KILN_SOCKET", &d.socket)
        .env("NO_COLOR", "1")
        .env_remove("KILN_PROJECT")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn kiln_template_trigger_switches_it_in_one_command() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.create_template(on("web", "debian-12", "latest", json!({})));
    let out = kiln(&d, &["template", "trigger", "web", "--on"]);
    assert_eq!(out.status.code(), Some(1));
    let err = kiln_tests::stderr(&out);
    assert!(err.contains("trigger.image_name"), "{err}");
    let out = kiln(&d, &["template", "trigger", "web", "--on", "--off"]);
    assert_eq!(out.status.code(), Some(2), "one switch at a time");

    let on_out = kiln(
        &d,
        &[
            "template",
            "trigger",
            "web",
            "--on",
            "--image-name",
            "web-{version}",
        ],
    );
    assert!(on_out.status.success(), "{}", kiln_tests::stderr(&on_out));
    let show = kiln_tests::stdout(&kiln(&d, &["template", "show", "web"]));
    assert!(
        show.contains("# trigger: a new version of debian-12 builds web-{version}"),
        "{show}"
    );
    assert!(show.contains("[trigger]\non_base_change = true"), "{show}");

    let off = kiln_tests::json_out(&kiln(
        &d,
        &["template", "trigger", "web", "--off", "--json"],
    ));
    assert_eq!(off["revision"], 3, "{off}");
    let t = c.call("template.get", json!({"name": "web"}))["template"].clone();
    assert_eq!(
        t["trigger"],
        json!({"on_base_change": false, "image_name": "web-{version}"}),
        "the pattern is kept"
    );
    let again = kiln_tests::stdout(&kiln(&d, &["template", "trigger", "web", "--off"]));
    assert!(again.contains("nothing stored"), "{again}");
}

#[test]
fn a_template_publishing_into_its_own_source_is_triggered_once_not_in_a_loop() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.call("gallery.create", json!({"name": "web"}));
    c.create_template(publisher("nightly", false));
    build(&mut c, "nightly", "n1"); // web/nginx:1.0.0
    let mut own = publisher("own", false);
    own["source"] = json!({"image": "web/nginx", "version": "latest"});
    own["trigger"] = json!({"on_base_change": true, "image_name": "own-{version}"});
    c.create_template(own);
    build(&mut c, "nightly", "n2"); // 1.0.1: own builds 1.0.2 on it, which triggers nothing
    let got = triggered(&mut c, 1);
    assert_eq!(got[0]["triggered_by"]["version"], "1.0.1", "{got:#?}");
    // That build has ended and published 1.0.2; still nothing more.
    triggered(&mut c, 1);
    let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    assert_eq!(g["images"][0]["latest"], "1.0.2", "{g}");
}
