//! Sharing through the protocol (Glance's members), on the in-process kilnd with the fake
//! driver; two projects are `"project"` in params. An image shared is pending until accepted,
//! reject hides it again; deleting a shared or used image is refused naming who uses it, and
//! `force` deletes it while a build already running on it keeps its file; unshare stops new
//! builds only. Galleries: shared, accepted, every version (present and future) seen and
//! `GALLERY/IMAGE` resolved for the member; ambiguity refused; delete refused while shared.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kiln_tests::in_process::Daemon;
use kiln_tests::Conn;
use serde_json::{json, Value};

/// `params` with `"project": project` added.
fn as_(project: &str, mut params: Value) -> Value {
    params["project"] = json!(project);
    params
}

fn template(name: &str, source: &str, project: &str) -> Value {
    json!({"template": {
        "name": name,
        "os": "debian-12",
        "source": {"image": source},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{"type": "image", "run_output_name": "local"}],
    }, "project": project})
}

fn members(image: &Value) -> Value {
    image["shared_with"].clone()
}

/// Polls until `ok` holds for what `get` returns (10 s at most).
fn until(what: &str, mut get: impl FnMut() -> Value, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn names(c: &mut Conn, params: Value) -> Vec<String> {
    c.call("image.list", params)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_share_is_pending_until_accepted_and_delete_needs_force_while_shared_or_used() {
    let started = Instant::now();
    let d = Daemon::start("");
    let mut c = d.conn();
    // debian-12 is a private image of project default.
    c.call("template.create", template("app", "debian-12", "other"));
    let shared = c.call(
        "image.share",
        json!({"image": "debian-12", "projects": ["other", "third"]}),
    )["image"]
        .clone();
    assert_eq!(
        members(&shared),
        json!([
            {"project": "other", "status": "pending"},
            {"project": "third", "status": "pending"},
        ])
    );

    // Pending: invisible to other, except to the pending list.
    let (kind, _) = c.call_err("image.get", as_("other", json!({"image": "debian-12"})));
    assert_eq!(kind, "not_found");
    assert!(names(&mut c, as_("other", json!({"visibility": "shared"}))).is_empty());
    let pending = c.call("image.list", as_("other", json!({"pending": true})))["images"].clone();
    assert_eq!(pending[0]["name"], "debian-12", "{pending}");
    assert_eq!(pending[0]["share_status"], "pending");
    assert_eq!(
        pending[0]["shared_with"],
        json!([]),
        "members are the owner's"
    );
    let (kind, _) = c.call_err(
        "build.start",
        as_("other", json!({"template": "app", "image_name": "x"})),
    );
    assert_eq!(kind, "not_found");
    let (kind, _) = c.call_err("image.accept", as_("nobody", json!({"image": "debian-12"})));
    assert_eq!(kind, "not_found", "not offered to nobody");

    // Accepted: listed as shared, buildable; the owner sees the answer.
    let accepted =
        c.call("image.accept", as_("other", json!({"image": "debian-12"})))["image"].clone();
    assert_eq!(accepted["share_status"], "accepted", "{accepted}");
    assert_eq!(
        names(&mut c, as_("other", json!({"visibility": "shared"}))),
        ["debian-12"]
    );
    assert!(names(&mut c, as_("other", json!({"pending": true}))).is_empty());
    let seen = c.call("image.get", json!({"image": "debian-12"}))["image"].clone();
    assert_eq!(
        members(&seen),
        json!([
            {"project": "other", "status": "accepted"},
            {"project": "third", "status": "pending"},
        ])
    );

    // Rejected (after accepting): hidden again; accept brings it back.
    c.call("image.reject", as_("other", json!({"image": "debian-12"})));
    let (kind, _) = c.call_err("image.get", as_("other", json!({"image": "debian-12"})));
    assert_eq!(kind, "not_found");
    assert!(names(&mut c, as_("other", json!({"pending": true}))).is_empty());
    c.call("image.accept", as_("other", json!({"image": "debian-12"})));

    // A build in other held at boot: it leases debian-12.
    d.fake.hold("boot");
    let id = c.call(
        "build.start",
        as_("other", json!({"template": "app", "image_name": "app-1"})),
    )["build"]["id"]
        .as_u64()
        .unwrap();
    until(
        "booting",
        || c.call("build.get", json!({"id": id, "project": "other"}))["build"].clone(),
        |b| b["sub_state"] == "booting",
    );

    // Refused, naming the members and the build.
    let (kind, err) = c.call_err("image.delete", json!({"image": "debian-12"}));
    assert_eq!(kind, "conflict", "{err}");
    let message = err["message"].as_str().unwrap();
    for part in [
        "shared with projects other (accepted), third (pending)",
        &format!("build {id} (project other)"),
        "--force",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }

    // Unshared from other: no new builds there, the running one goes on.
    c.call(
        "image.unshare",
        json!({"image": "debian-12", "projects": ["other", "third"]}),
    );
    let (kind, _) = c.call_err(
        "build.start",
        as_("other", json!({"template": "app", "image_name": "app-2"})),
    );
    assert_eq!(kind, "not_found");
    let (kind, err) = c.call_err("image.delete", json!({"image": "debian-12"}));
    assert_eq!(kind, "conflict", "still used by the build: {err}");

    // Forced: gone for new work, but its file stays until the build ends.
    let path = seen["path"].as_str().unwrap().to_owned();
    c.call("image.delete", json!({"image": "debian-12", "force": true}));
    assert!(std::path::Path::new(&path).exists(), "the build reads it");
    d.fake.release("boot");
    let b = until(
        "finished",
        || c.call("build.get", json!({"id": id, "project": "other"}))["build"].clone(),
        |b| b["state"] != "queued" && b["state"] != "running",
    );
    assert_eq!(b["state"], "succeeded", "{b}");
    until(
        "removed",
        || json!(std::path::Path::new(&path).exists()),
        |e| e == &json!(false),
    );
    // The row goes right after the file.
    until(
        "row removed",
        || c.request("image.get", json!({"image": seen["id"]})),
        |r| r["error"]["data"]["kind"] == "not_found",
    );
    eprintln!("sharing test took {:?}", started.elapsed());
}

fn gallery_template(name: &str) -> Value {
    json!({"template": {
        "name": name,
        "os": "debian-12",
        "source": {"image": "debian-12"},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{
            "type": "gallery", "run_output_name": "nightly", "gallery": "web", "image": "nginx",
        }],
    }})
}

fn build(c: &mut Conn, params: Value) -> Value {
    let id = c.call("build.start", params.clone())["build"]["id"].clone();
    let mut wait = json!({"id": id});
    if let Some(p) = params.get("project") {
        wait["project"] = p.clone();
    }
    let b = c.call("build.wait", wait)["build"].clone();
    assert_eq!(b["state"], "succeeded", "{b}");
    b
}

#[test]
fn a_shared_gallery_shows_every_version_once_accepted() {
    let d = Daemon::start("");
    let mut c = d.conn();
    c.call("gallery.create", json!({"name": "web"}));
    c.call("template.create", gallery_template("nightly"));
    build(&mut c, json!({"template": "nightly", "image_name": "n1"}));
    let g = c.call(
        "gallery.share",
        json!({"name": "web", "projects": ["other"]}),
    )["gallery"]
        .clone();
    assert_eq!(
        g["members"],
        json!([{"project": "other", "status": "pending"}])
    );
    c.call("template.create", template("app", "web/nginx", "other"));

    // Pending: listed with its status, no versions; nothing resolves.
    let list = c.call("gallery.list", as_("other", json!({})))["galleries"].clone();
    assert_eq!(list[0]["project"], "default", "{list}");
    assert_eq!(list[0]["share_status"], "pending", "{list}");
    assert_eq!(list[0]["images"][0]["versions"], json!([]), "{list}");
    let (kind, _) = c.call_err(
        "image.get",
        as_("other", json!({"image": "web/nginx:1.0.0"})),
    );
    assert_eq!(kind, "not_found");
    let (kind, _) = c.call_err(
        "build.start",
        as_("other", json!({"template": "app", "image_name": "a0"})),
    );
    assert_eq!(kind, "not_found");
    let (kind, _) = c.call_err(
        "gallery.accept",
        as_("other", json!({"name": "web", "from": "nobody"})),
    );
    assert_eq!(kind, "not_found");

    // Accepted: the version there is shared, and so is the next one published.
    c.call(
        "gallery.accept",
        as_("other", json!({"name": "web", "from": "default"})),
    );
    let v = c.call(
        "image.get",
        as_("other", json!({"image": "web/nginx:1.0.0"})),
    )["image"]
        .clone();
    assert_eq!(v["visibility"], "shared", "{v}");
    build(&mut c, json!({"template": "nightly", "image_name": "n2"}));
    let b = build(
        &mut c,
        as_("other", json!({"template": "app", "image_name": "a1"})),
    );
    assert_eq!(
        b["base_image_name"], "web/nginx:1.0.1",
        "latest of the shared gallery"
    );
    let seen = c.call("gallery.get", as_("other", json!({"name": "web"})))["gallery"].clone();
    assert_eq!(seen["project"], "default", "{seen}");
    assert_eq!(seen["images"][0]["latest"], "1.0.1", "{seen}");
    assert!(
        seen.get("members").is_none(),
        "members are the owner's: {seen}"
    );
    let owner = c.call("gallery.get", json!({"name": "web"}))["gallery"].clone();
    assert_eq!(
        owner["members"],
        json!([{"project": "other", "status": "accepted"}])
    );

    // A second accepted gallery named web: ambiguous.
    c.call("gallery.create", as_("third", json!({"name": "web"})));
    c.call(
        "gallery.share",
        as_("third", json!({"name": "web", "projects": ["other"]})),
    );
    c.call(
        "gallery.accept",
        as_("other", json!({"name": "web", "from": "third"})),
    );
    let (kind, err) = c.call_err(
        "build.start",
        as_("other", json!({"template": "app", "image_name": "a2"})),
    );
    assert_eq!(kind, "conflict", "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("default, third"), "{message}");
    c.call(
        "gallery.reject",
        as_("other", json!({"name": "web", "from": "third"})),
    );

    // Delete: refused while shared, naming other; forced, gone.
    let (kind, err) = c.call_err("gallery.delete", json!({"name": "web", "recursive": true}));
    assert_eq!(kind, "conflict", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("other (accepted)"),
        "{err}"
    );

    // Rejected: the versions are hidden again.
    c.call(
        "gallery.reject",
        as_("other", json!({"name": "web", "from": "default"})),
    );
    let (kind, _) = c.call_err(
        "image.get",
        as_("other", json!({"image": "web/nginx:1.0.1"})),
    );
    assert_eq!(kind, "not_found");
    c.call(
        "gallery.accept",
        as_("other", json!({"name": "web", "from": "default"})),
    );
    c.call(
        "gallery.delete",
        json!({"name": "web", "recursive": true, "force": true}),
    );
    let (kind, _) = c.call_err(
        "image.get",
        as_("other", json!({"image": "web/nginx:1.0.1"})),
    );
    assert_eq!(kind, "not_found");
}
