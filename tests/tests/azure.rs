//! `kiln template import --azure`, `export --azure`, `update` and `apply` with the real `kiln`
//! binary against a real kilnd (the fake-free daemon; nothing is built here).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kiln_tests::{json_out, stderr, stdout, Kilnd};
use serde_json::{json, Value};

fn corpus(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/tests/azure")
        .join(file)
        .display()
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const WEB: &str = r#"
name = "web"
os = "debian-12"
[source]
image = "debian-12"
[[customize]]
type = "file"
name = "motd"
source = "files/motd"
destination = "/tmp/motd"
[[distribute]]
type = "image"
run_output_name = "local"
"#;

#[test]
fn import_dry_run_needs_no_daemon_and_warns_on_stderr() {
    let k = Kilnd::start();
    let mut cmd = k.kiln_cmd(&[
        "template",
        "import",
        "--azure",
        &corpus("managed-shell-file.json"),
        "--dry-run",
    ]);
    cmd.env("KILN_SOCKET", k.dir.path().join("nobody-here.sock"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = std::fs::read_to_string(corpus("managed-shell-file.expected")).unwrap();
    assert!(expected.starts_with(&stdout(&out)), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("warning: location:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn import_stores_and_export_maps_back() {
    let k = Kilnd::start();
    let out = k.kiln(&[
        "template",
        "import",
        "--azure",
        &corpus("arm-deployment.json"),
        "--parameters",
        &corpus("arm-deployment.parameters.json"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reply = json_out(&out);
    assert_eq!(reply["stored"], json!({"name": "web", "revision": 1}));
    assert_eq!(
        reply["template"]["customize"][0]["inline"][0],
        "sudo apt-get install -y nginx jq"
    );
    assert!(!reply["warnings"].as_array().unwrap().is_empty());

    // The same name again: template.create's error.
    let out = k.kiln(&[
        "template",
        "import",
        "--azure",
        &corpus("arm-deployment.json"),
        "--parameters",
        &corpus("arm-deployment.parameters.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    // Refused: every Windows path at once, nothing stored.
    let out = k.kiln(&["template", "import", "--azure", &corpus("windows.json")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for path in [
        "properties.source",
        "properties.customize[0]",
        "properties.customize[1]",
        "properties.customize[3]",
    ] {
        assert!(err.contains(&format!("{path}: ")), "{path} in {err}");
    }

    // Export, then import the export under another name: the same template.
    let out = k.kiln(&["template", "export", "web", "--azure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resource: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(resource["apiVersion"], "2024-02-01");
    let file = write(k.dir.path(), "web-azure.json", &stdout(&out));
    let out = k.kiln(&[
        "template",
        "import",
        "--azure",
        &file,
        "--name",
        "web-again",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = json_out(&k.kiln(&["template", "show", "web", "--json"]));
    let mut b = json_out(&k.kiln(&["template", "show", "web-again", "--json"]));
    b["template"]["name"] = json!("web");
    assert_eq!(a["template"], b["template"]);
}

#[test]
fn update_and_apply() {
    let k = Kilnd::start();
    let dir = k.dir.path();
    std::fs::create_dir(dir.join("files")).unwrap();
    write(dir, "files/motd", "hello\n");
    let file = write(dir, "web.toml", WEB);

    // apply creates, then changes nothing while nothing changed.
    let out = k.kiln(&["template", "apply", "-f", &file, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_out(&out),
        json!({"action": "created", "name": "web", "revision": 1})
    );
    let out = k.kiln(&["template", "apply", "-f", &file, "--json"]);
    assert_eq!(
        json_out(&out),
        json!({"action": "unchanged", "name": "web", "revision": 1})
    );
    let revisions = json_out(&k.kiln(&["template", "revisions", "web", "--json"]));
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 1);

    // A change: a new revision; the file step's source stays the absolute path of files/motd.
    write(dir, "web.toml", &WEB.replace("/tmp/motd", "/tmp/motd2"));
    let out = k.kiln(&["template", "apply", "-f", &file, "--json"]);
    assert_eq!(
        json_out(&out),
        json!({"action": "updated", "name": "web", "revision": 2})
    );
    let shown = json_out(&k.kiln(&["template", "show", "web", "--json"]));
    let source = shown["template"]["customize"][0]["source"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        source.starts_with('/') && source.ends_with("files/motd"),
        "{source}"
    );

    // update with the latest revision: fine; with a stale one: conflict.
    let out = k.kiln(&[
        "template",
        "update",
        "web",
        "-f",
        &file,
        "--expected-revision",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_out(&out),
        json!({"action": "updated", "name": "web", "revision": 3})
    );
    let out = k.kiln(&[
        "template",
        "update",
        "web",
        "-f",
        &file,
        "--expected-revision",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["error"]["kind"], "conflict", "{err}");
    let revisions = json_out(&k.kiln(&["template", "revisions", "web", "--json"]));
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 3);

    // The Azure form: apply --azure maps first, and is idempotent too.
    let azure = corpus("gallery-auto.json");
    let out = k.kiln(&["template", "apply", "--azure", "-f", &azure, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_out(&out),
        json!({"action": "created", "name": "web-sig", "revision": 1})
    );
    let out = k.kiln(&["template", "apply", "--azure", "-f", &azure, "--json"]);
    assert_eq!(
        json_out(&out),
        json!({"action": "unchanged", "name": "web-sig", "revision": 1})
    );
    let out = k.kiln(&[
        "template",
        "apply",
        "--azure",
        "--name",
        "hello-vhd",
        "-f",
        &corpus("vhd.json"),
        "--json",
    ]);
    assert_eq!(
        json_out(&out),
        json!({"action": "created", "name": "hello-vhd", "revision": 1})
    );
    let out = k.kiln(&[
        "template",
        "update",
        "web-sig",
        "--azure",
        "-f",
        &corpus("vhd.json"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_out(&out)["revision"], 2);
}

/// The real thing, once: the corpus's Linux managed-image template (its remote script and file
/// swapped for local ones: CI has no internet), imported onto kiln's debian-12 over the wire,
/// built in a real VM with its Shell, File, reboot and in-VM validation steps, and boot-tested.
#[test]
fn imported_managed_image_template_builds_and_boots() {
    use sha2::Digest;
    let Some(base) = kiln_tests::base_image::base_image() else {
        return;
    };
    let started = std::time::Instant::now();
    let k = Kilnd::start();
    k.import_base(&base, false);
    let dir = k.dir.path();
    let script = "#!/bin/bash\nset -e\necho from-azure | sudo tee /etc/azure-script\n";
    let script_path = write(dir, "customizeScript.sh", script);
    let sha = format!("{:x}", sha2::Sha256::digest(script.as_bytes()));
    let page = write(dir, "index.html", "<h1>hello</h1>\n");
    let mut azure: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus("managed-shell-file.json")).unwrap())
            .unwrap();
    let steps = &mut azure["properties"]["customize"];
    steps[0]["scriptUri"] = json!(script_path);
    steps[1]["scriptUri"] = json!(script_path);
    steps[1]["sha256Checksum"] = json!(sha);
    steps[2]["sourceUri"] = json!(page);
    azure["properties"]["validate"]["inVMValidations"][0]["inline"] = json!([
        "test -f /buildArtifacts/index.html",
        "grep -q from-azure /etc/azure-script"
    ]);

    let mut c = k.connect();
    let reply = c.call(
        "template.import_azure",
        json!({"azure": azure, "name": "hello-debian", "base_image": "debian-12", "dry_run": false}),
    );
    assert_eq!(
        reply["stored"],
        json!({"name": "hello-debian", "revision": 1}),
        "{reply}"
    );
    assert_eq!(reply["template"]["validate"]["boot_test"], true);
    let id = c.start_build("hello-debian", "hello");
    c.set_timeout(std::time::Duration::from_secs(3600));
    let b = c.call("build.wait", json!({"id": id}))["build"].clone();
    let log = c.log_lines(id).join("\n");
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    let kinds: Vec<&str> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(kinds.iter().any(|n| n.contains("restart")), "{kinds:?}");
    assert!(
        kinds.iter().any(|n| n.contains("artifacts-there")),
        "{kinds:?}"
    );
    eprintln!(
        "imported Azure template built and boot-tested in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// The method as the dashboard calls it: a dry run stores nothing and has no `stored`; a refusal
/// is `invalid_template` with every path.
#[test]
fn import_azure_method_dry_run_and_refusal() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let azure: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus("vhd.json")).unwrap()).unwrap();
    let reply = c.call(
        "template.import_azure",
        json!({"azure": azure, "name": "v", "dry_run": true}),
    );
    assert_eq!(reply["template"]["name"], "v");
    assert!(reply.get("stored").is_none(), "{reply}");
    assert!(reply["warnings"][0]["path"].is_string(), "{reply}");
    let list = c.call("template.list", json!({}));
    assert_eq!(list["templates"], json!([]));

    let windows: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus("windows.json")).unwrap()).unwrap();
    let (kind, err) = c.call_err(
        "template.import_azure",
        json!({"azure": windows, "dry_run": true}),
    );
    assert_eq!(kind, "invalid_template");
    let paths: Vec<&str> = err["data"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "properties.source",
            "properties.customize[0]",
            "properties.customize[1]",
            "properties.customize[3]"
        ]
    );
}
