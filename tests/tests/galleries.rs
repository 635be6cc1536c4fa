//! Galleries through the protocol, on the in-process kilnd with the fake driver (whose builds
//! publish real qcow2 files): definitions, `auto` versions over three builds, an explicit
//! version taken twice, `exclude_from_latest`, and sources that resolve `latest` when a build is
//! queued. The fake proves nothing about building images: builds.rs publishes a version from a
//! real VM.
#![allow(clippy::unwrap_used)]

use kiln_tests::in_process::Daemon;
use kiln_tests::Conn;
use serde_json::{json, Value};

fn gallery_template(name: &str, version: &str, exclude: bool) -> Value {
    json!({
        "name": name,
        "os": "debian-12",
        "source": {"image": "debian-12"},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{
            "type": "gallery", "run_output_name": "nightly", "gallery": "web",
            "image": "nginx", "version": version, "exclude_from_latest": exclude,
        }],
    })
}

fn build(c: &mut Conn, template: &str, image: &str) -> Value {
    let id = c.start_build(template, image);
    c.call("build.wait", json!({ "id": id }))["build"].clone()
}

fn versions(c: &mut Conn) -> Vec<(String, bool)> {
    let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    g["images"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["exclude_from_latest"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn versions_count_up_explicit_ones_are_new_and_latest_is_resolved_at_queue_time() {
    let d = Daemon::start("");
    let mut c = d.conn();

    // A gallery target needs its gallery.
    c.create_template(gallery_template("nightly", "auto", false));
    let b = build(&mut c, "nightly", "n0");
    assert_eq!(b["state"], "failed", "{b}");
    let err = b["run_outputs"][0]["error"].as_str().unwrap();
    assert!(err.contains("kiln gallery create web"), "{err}");

    c.call(
        "gallery.create",
        json!({"name": "web", "description": "web servers"}),
    );
    let (kind, _) = c.call_err("gallery.create", json!({"name": "web"}));
    assert_eq!(kind, "conflict");
    let (kind, _) = c.call_err("gallery.create", json!({"name": "a/b"}));
    assert_eq!(kind, "invalid_params");

    // Three builds: 1.0.0, 1.0.1, 1.0.2; the definition is made by the first, for debian-12.
    let mut ids = Vec::new();
    for i in 1..=3 {
        let b = build(&mut c, "nightly", &format!("n{i}"));
        assert_eq!(b["state"], "succeeded", "{b}");
        let out = &b["run_outputs"][0];
        assert_eq!(out["kind"], "gallery", "{out}");
        ids.push(out["artifact_id"].as_str().unwrap().to_owned());
    }
    let got: Vec<String> = versions(&mut c).into_iter().map(|(v, _)| v).collect();
    assert_eq!(got, ["1.0.2", "1.0.1", "1.0.0"]);
    let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    assert_eq!(g["images"][0]["os"], "debian-12");
    assert_eq!(g["images"][0]["latest"], "1.0.2");
    let image = c.call("image.get", json!({"image": "web/nginx:1.0.1"}))["image"].clone();
    assert_eq!(image["id"], ids[1].as_str(), "{image}");
    assert_eq!(image["gallery"]["version"], "1.0.1");
    assert_eq!(image["template"], "nightly");
    let base = c.call("image.get", json!({"image": "debian-12"}))["image"]["id"].clone();
    assert_eq!(
        image["parent_image"], base,
        "lineage: the base it was built on"
    );

    // An explicit version is published once.
    c.create_template(gallery_template("pinned", "2.0.0", false));
    assert_eq!(build(&mut c, "pinned", "p1")["state"], "succeeded");
    let b = build(&mut c, "pinned", "p2");
    assert_eq!(b["state"], "failed", "{b}");
    let err = b["run_outputs"][0]["error"].as_str().unwrap();
    assert!(err.contains("web/nginx:2.0.0 exists already"), "{err}");

    // Excluded from latest: 2.0.1 exists, latest stays 2.0.0.
    c.create_template(gallery_template("canary", "auto", true));
    assert_eq!(build(&mut c, "canary", "c1")["state"], "succeeded");
    assert_eq!(versions(&mut c)[0], ("2.0.1".to_owned(), true));
    let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    assert_eq!(g["images"][0]["latest"], "2.0.0");

    // A template built on web/nginx latest: queued now, it takes 2.0.0; after 2.0.2 is
    // published, the next build takes that, and the first keeps its own.
    c.create_template(json!({
        "name": "app",
        "os": "debian-12",
        "source": {"image": "web/nginx", "version": "latest"},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{"type": "image", "run_output_name": "local"}],
    }));
    let first = build(&mut c, "app", "app-1");
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["base_image_name"], "web/nginx:2.0.0", "{first}");
    assert_eq!(build(&mut c, "nightly", "n4")["state"], "succeeded");
    assert_eq!(versions(&mut c)[0].0, "2.0.2");
    let second = build(&mut c, "app", "app-2");
    assert_eq!(second["base_image_name"], "web/nginx:2.0.2", "{second}");
    let first_again = c.call("build.get", json!({"id": first["id"]}))["build"].clone();
    assert_eq!(first_again["base_image_name"], "web/nginx:2.0.0");

    // Lineage: app-1 was built on web/nginx:2.0.0, which was built on debian-12 (imported as
    // the project's own image here).
    let app = c.call("image.get", json!({"image": "app-1"}))["image"].clone();
    let chain: Vec<(String, String)> = app["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["visibility"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [
            ("web/nginx:2.0.0".to_owned(), "private".to_owned()),
            ("debian-12".to_owned(), "private".to_owned())
        ],
        "{app}"
    );
    assert_eq!(app["lineage"][0]["template"], "pinned");
    let parent = c.call("image.get", json!({"image": "web/nginx:2.0.0"}))["image"].clone();
    assert_eq!(app["parent_sha256"], parent["sha256"], "{app}");
    assert_eq!(app["lineage"][0]["sha256"], parent["sha256"]);

    // A pinned source version, and --base-image with and without one.
    let mut pinned = c.call("template.get", json!({"name": "app"}))["template"].clone();
    pinned["source"]["version"] = json!("1.0.1");
    c.call(
        "template.update",
        json!({"name": "app", "template": pinned}),
    );
    assert_eq!(
        build(&mut c, "app", "app-3")["base_image_name"],
        "web/nginx:1.0.1"
    );
    let id = c.call(
        "build.start",
        json!({"template": "app", "image_name": "app-4", "base_image": "web/nginx"}),
    )["build"]["id"]
        .as_u64()
        .unwrap();
    let b = c.call("build.wait", json!({ "id": id }))["build"].clone();
    assert_eq!(b["base_image_name"], "web/nginx:2.0.2", "{b}");
    let (kind, err) = c.call_err(
        "build.start",
        json!({"template": "app", "image_name": "x", "base_image": "web/nginx:9.9.9"}),
    );
    assert_eq!(kind, "not_found", "{err}");

    // Another project sees none of it.
    let (kind, _) = c.call_err("gallery.get", json!({"name": "web", "project": "other"}));
    assert_eq!(kind, "not_found");

    // Delete: refused while it holds versions, then with every version.
    let (kind, err) = c.call_err("gallery.delete", json!({"name": "web"}));
    assert_eq!(kind, "conflict", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("--recursive"),
        "{err}"
    );
    c.call("gallery.delete", json!({"name": "web", "recursive": true}));
    let (kind, _) = c.call_err("image.get", json!({"image": "web/nginx:1.0.0"}));
    assert_eq!(kind, "not_found");
    assert_eq!(
        c.call("gallery.list", json!({}))["galleries"],
        json!([]),
        "gallery gone"
    );
}

#[test]
fn definitions_and_sources_are_checked() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.call("gallery.create", json!({"name": "web"}));
    c.call(
        "gallery.image.create",
        json!({"image": "web/db", "os": "debian-13"}),
    );
    let (kind, _) = c.call_err(
        "gallery.image.create",
        json!({"image": "web/db", "os": "debian-13"}),
    );
    assert_eq!(kind, "conflict");
    let (kind, _) = c.call_err(
        "gallery.image.create",
        json!({"image": "nogallery/db", "os": "debian-12"}),
    );
    assert_eq!(kind, "not_found");
    let (kind, _) = c.call_err(
        "gallery.image.create",
        json!({"image": "web", "os": "debian-12"}),
    );
    assert_eq!(kind, "invalid_params");
    // A debian-12 build cannot publish into a debian-13 definition.
    let mut t = gallery_template("wrong-os", "auto", false);
    t["distribute"][0]["image"] = json!("db");
    c.create_template(t);
    let b = build(&mut c, "wrong-os", "w1");
    let err = b["run_outputs"][0]["error"].as_str().unwrap();
    assert!(err.contains("web/db holds debian-13 images"), "{err}");
    let list = c.call("gallery.image.list", json!({"name": "web"}))["images"].clone();
    assert_eq!(list[0]["name"], "db");
    assert_eq!(list[0]["versions"], json!([]));
    // A plain image has no versions; a gallery source needs a version number or latest.
    let r = c.call(
        "template.validate",
        json!({"template": {
            "name": "t", "os": "debian-12",
            "source": {"image": "debian-12", "version": "1.0.0"},
            "distribute": [{"type": "image", "run_output_name": "local"}],
        }}),
    );
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(r["violations"][0]["path"], "source.version", "{r}");
    let r = c.call(
        "template.validate",
        json!({"template": {
            "name": "t", "os": "debian-12",
            "source": {"image": "web/db", "version": "newest"},
            "distribute": [{"type": "image", "run_output_name": "local"}],
        }}),
    );
    assert_eq!(r["violations"][0]["path"], "source.version", "{r}");
    // No version to build on yet.
    c.create_template(json!({
        "name": "on-db", "os": "debian-13",
        "source": {"image": "web/db"},
        "distribute": [{"type": "image", "run_output_name": "local"}],
    }));
    let (kind, err) = c.call_err(
        "build.start",
        json!({"template": "on-db", "image_name": "x"}),
    );
    assert_eq!(kind, "not_found", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no available version"),
        "{err}"
    );
}

#[test]
fn retention_deprecates_then_deletes_keeps_the_newest_and_spares_what_is_in_use() {
    let d = Daemon::start("max_concurrent_builds = 2");
    let mut c = d.conn();
    c.call("gallery.create", json!({"name": "web"}));
    c.call(
        "gallery.image.create",
        json!({"image": "web/nginx", "os": "debian-12", "retention": {"keep_latest": 2}}),
    );
    c.create_template(gallery_template("nightly", "auto", false));
    for i in 0..3 {
        assert_eq!(
            build(&mut c, "nightly", &format!("n{i}"))["state"],
            "succeeded"
        );
    }
    // The third publish applied the retention: 1.0.0 is deprecated, no longer latest-able,
    // still there for pinned builds.
    let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    let v = &g["images"][0]["versions"];
    assert_eq!(v.as_array().unwrap().len(), 3, "{g}");
    assert!(v[2]["deprecated_at"].is_string(), "1.0.0 deprecated: {g}");
    assert!(v[1]["deprecated_at"].is_null(), "{g}");

    // A build pinned to the deprecated 1.0.0 holds it while it runs (its step, "hold", waits
    // in the fake VM until the build is canceled).
    c.create_template(json!({
        "name": "old", "os": "debian-12",
        "source": {"image": "web/nginx", "version": "1.0.0"},
        "customize": [{"type": "shell", "name": "wait", "inline": ["hold"]}],
        "distribute": [{"type": "image", "run_output_name": "local"}],
    }));
    let held = c.start_build("old", "old-1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.call("build.get", json!({"id": held}))["build"]["sub_state"] != "customizing" {
        assert!(
            std::time::Instant::now() < deadline,
            "the pinned build never booted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A dry run says what a prune would do and does nothing.
    let dry = c.call("gallery.prune", json!({"name": "web", "dry_run": true}));
    let actions: Vec<(String, String)> = dry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["version"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("web/nginx:1.0.0".to_owned(), "keep".to_owned())],
        "in use by the pinned build: {dry}"
    );
    assert!(
        dry["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("1 build"),
        "{dry}"
    );

    // The fourth publish deprecates 1.0.1; 1.0.0 stays while the build holds it.
    assert_eq!(build(&mut c, "nightly", "n3")["state"], "succeeded");
    let names = |c: &mut Conn| -> Vec<String> {
        let g = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
        g["images"][0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "{}{}",
                    v["version"].as_str().unwrap(),
                    if v["deprecated_at"].is_string() {
                        " deprecated"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    };
    assert_eq!(
        names(&mut c),
        ["1.0.3", "1.0.2", "1.0.1 deprecated", "1.0.0 deprecated"]
    );
    let b = c.call("build.get", json!({"id": held}))["build"].clone();
    assert_eq!(b["base_image_name"], "web/nginx:1.0.0", "{b}");
    c.call("build.cancel", json!({"id": held}));

    // Now a prune deletes both deprecated versions; the two newest stay.
    let done = c.call("gallery.prune", json!({"name": "web"}));
    assert_eq!(done["actions"].as_array().unwrap().len(), 2, "{done}");
    assert_eq!(names(&mut c), ["1.0.3", "1.0.2"]);
    let (kind, _) = c.call_err("image.get", json!({"image": "web/nginx:1.0.0"}));
    assert_eq!(kind, "not_found");

    // Retention is checked and can be changed.
    let (kind, _) = c.call_err(
        "gallery.image.update",
        json!({"image": "web/nginx", "retention": {"keep_latest": 0}}),
    );
    assert_eq!(kind, "invalid_params");
    let g = c.call(
        "gallery.image.update",
        json!({"image": "web/nginx", "retention": {"max_age_days": 30}}),
    )["gallery"]
        .clone();
    assert_eq!(g["images"][0]["retention"], json!({"max_age_days": 30}));
    let done = c.call("gallery.prune", json!({"name": "web"}));
    assert_eq!(done["actions"], json!([]), "nothing is 30 days old");
}
