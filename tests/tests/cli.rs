//! The real `kiln` binary against a real kilnd, with `--json` output parsed.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_tests::{json_out, stderr, stdout, Kilnd};
use serde_json::Value;

const WEB: &str = r#"
name = "web"
os = "debian-12"
description = "first"
applications = ["nginx"]
[source]
image = "debian-12"
[[customize]]
type = "shell"
name = "hello"
inline = ["echo hello"]
[[distribute]]
type = "image"
run_output_name = "local"
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// An `$EDITOR` that runs `script` with the file to edit as `$1`.
fn editor(dir: &Path, name: &str, script: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\nset -e\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn create_list_show_export_revisions_delete() {
    let k = Kilnd::start();
    let dir = k.dir.path();
    let file = write(dir, "web.toml", WEB);

    let out = k.kiln(&["template", "create", "-f", &file, "--json"]);
    assert_eq!(
        json_out(&out),
        serde_json::json!({"name": "web", "revision": 1})
    );
    let out = k.kiln(&["template", "create", "-f", &file]);
    assert_eq!(out.status.code(), Some(1), "duplicate name is an error");
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let list = json_out(&k.kiln(&["template", "list", "--json"]));
    assert_eq!(list["templates"][0]["name"], "web");
    let table = stdout(&k.kiln(&["template", "list"]));
    assert!(
        table.contains("web") && table.contains("debian-12"),
        "{table}"
    );
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");

    let shown = stdout(&k.kiln(&["template", "show", "web"]));
    assert!(
        shown.contains("revision 1") && shown.contains("name = \"web\""),
        "{shown}"
    );

    // export -> create under another name round-trips, in both formats.
    for format in ["toml", "json"] {
        let out = k.kiln(&["template", "export", "web", "--format", format]);
        assert!(out.status.success());
        let text = stdout(&out).replace("\"web\"", &format!("\"web-{format}\""));
        let f = write(dir, &format!("copy.{format}"), &text);
        let out = k.kiln(&["template", "create", "-f", &f]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let got = json_out(&k.kiln(&["template", "show", "web-json", "--json"]));
    assert_eq!(
        got["template"]["applications"],
        serde_json::json!(["nginx"])
    );

    // An edit through $EDITOR stores revision 2.
    let ed = editor(
        dir,
        "ed1",
        "sed -i 's/description = \"first\"/description = \"second\"/' \"$1\"",
    );
    let out = k
        .kiln_cmd(&["template", "edit", "web", "--json"])
        .env("EDITOR", &ed)
        .output()
        .unwrap();
    assert_eq!(
        json_out(&out),
        serde_json::json!({"name": "web", "revision": 2})
    );
    let revs = json_out(&k.kiln(&["template", "revisions", "web", "--json"]));
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2);
    let r1 = json_out(&k.kiln(&["template", "show", "web", "--revision", "1", "--json"]));
    assert_eq!(r1["template"]["description"], "first");

    // Delete refuses without --yes when nobody can answer, then works with it.
    let out = k.kiln(&["template", "delete", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"));
    let out = k.kiln(&["template", "delete", "web", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = k.kiln(&["template", "show", "web", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "not_found");
}

#[test]
fn edit_reopens_on_error_until_valid() {
    let k = Kilnd::start();
    let dir = k.dir.path();
    let file = write(dir, "web.toml", WEB);
    assert!(k
        .kiln(&["template", "create", "-f", &file])
        .status
        .success());
    // First save: cpus = 0 (invalid). Second save (the file now carries the errors as comments):
    // a valid value. A counter file tells the rounds apart.
    let count = dir.join("rounds");
    let ed = editor(
        dir,
        "ed2",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}\n\
             if [ \"$n\" -ge 3 ]; then : > \"$1\"; exit 0; fi\n\
             if [ \"$n\" = 0 ]; then sed -i 's/^cpus = 2/cpus = 0/' \"$1\"; \
             else grep -q '# ERROR' \"$1\"; sed -i 's/cpus = 0/cpus = 4/' \"$1\"; fi",
            c = count.display()
        ),
    );
    let out = k
        .kiln_cmd(&["template", "edit", "web"])
        .env("EDITOR", &ed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "2");
    assert!(
        stdout(&out).contains("updated web revision 2"),
        "{}",
        stdout(&out)
    );
    let got = json_out(&k.kiln(&["template", "show", "web", "--json"]));
    assert_eq!(got["template"]["vm"]["cpus"], 4);

    // Emptying the file aborts and stores nothing.
    let ed = editor(dir, "ed3", ": > \"$1\"");
    let out = k
        .kiln_cmd(&["template", "edit", "web"])
        .env("EDITOR", &ed)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("aborted"));
    assert_eq!(
        json_out(&k.kiln(&["template", "show", "web", "--json"]))["revision"],
        2
    );
}

#[test]
fn invalid_template_names_every_problem() {
    let k = Kilnd::start();
    let bad =
        WEB.replace("description", "build_timeout_minutes = 3\ndescription") + "[vm]\ncpus = 99\n";
    let file = write(k.dir.path(), "bad.toml", &bad);
    let out = k.kiln(&["template", "create", "-f", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("build_timeout_minutes") && err.contains("vm.cpus"),
        "{err}"
    );
    let out = k.kiln(&["template", "create", "-f", &file, "--json"]);
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_template");
    assert_eq!(err["error"]["violations"].as_array().unwrap().len(), 2);
    assert!(
        json_out(&k.kiln(&["template", "list", "--json"]))["templates"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn validate_needs_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", WEB);
    let bad = write(
        dir.path(),
        "bad.toml",
        &WEB.replace("nginx", "nginx\", \"apache2"),
    );
    let run = |args: &[&str]| {
        std::process::Command::new(kiln_tests::bin("kiln"))
            .args(args)
            .env("KILN_SOCKET", dir.path().join("nowhere.sock"))
            .output()
            .unwrap()
    };
    let out = run(&["template", "validate", "-f", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["template", "validate", "-f", &bad, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let msg = v["violations"][0]["message"].as_str().unwrap();
    assert!(msg.contains("nginx") && msg.contains("apache2"), "{msg}");
    // A command that needs the daemon says how to reach it.
    let out = run(&["template", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nowhere.sock"), "{}", stderr(&out));
}

#[test]
fn daemon_status_usage_errors_and_completions() {
    let k = Kilnd::start();
    let s = json_out(&k.kiln(&["daemon", "status", "--json"]));
    assert_eq!(s["protocol"], 1);
    assert_eq!(s["socket"], k.socket.display().to_string());
    let text = stdout(&k.kiln(&["daemon", "status"]));
    assert!(text.contains(&k.data_dir.display().to_string()), "{text}");
    assert_eq!(k.kiln(&["template", "frobnicate"]).status.code(), Some(2));
    assert_eq!(k.kiln(&["template", "show"]).status.code(), Some(2));
    let out = k.kiln(&["completions", "bash"]);
    assert!(
        out.status.success() && stdout(&out).contains("complete"),
        "{}",
        stderr(&out)
    );
}
