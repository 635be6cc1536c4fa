//! The plan of a build, one case per line: a template (TOML) and the steps a build of it runs,
//! each as `NAME KIND: ACTION` (see `show`). Applications come from the small catalog `apps()`.

#![allow(clippy::unwrap_used)]

use kiln_daemon::queue::plan::{plan, Action, PlannedStep};
use kiln_shared::apps::{App, AppCatalog};
use kiln_shared::build::{StepState, SubState};
use kiln_shared::Template;

/// Apps `a` and `b` for debian-12, whose install scripts say `install NAME`.
fn apps() -> AppCatalog {
    let app = |name: &str| App {
        name: name.into(),
        description: name.to_uppercase(),
        os: vec!["debian-12".into()],
        install: format!("#!/bin/sh\ninstall {name}\n"),
        conflicts: Vec::new(),
    };
    AppCatalog {
        apps: vec![app("a"), app("b")],
    }
}

fn planned(template: &str) -> Vec<PlannedStep> {
    let template = Template::from_toml(template).unwrap();
    plan(&template, &apps())
}

/// One line per step: its name, kind and what it does.
fn show(step: &PlannedStep) -> String {
    let sha = |h: &Option<String>| {
        h.as_ref()
            .map(|h| format!(" sha256 {h}"))
            .unwrap_or_default()
    };
    let action = match &step.action {
        Action::RunScript { script } => format!("run {script:?}"),
        Action::RunLocalScript { path, sha256 } => format!("run local {path}{}", sha(sha256)),
        Action::RunRemoteScript { url, sha256 } => format!("run remote {url}{}", sha(sha256)),
        Action::UploadFile {
            source,
            destination,
            sha256,
        } => format!("upload {source} to {destination}{}", sha(sha256)),
        Action::FetchFile {
            url,
            destination,
            sha256,
        } => format!("fetch {url} to {destination}{}", sha(sha256)),
        Action::Reboot { timeout_secs } => format!("reboot, wait {timeout_secs}s"),
        Action::BootTest { cpus, memory_mb } => format!("boot test, {cpus} vCPUs, {memory_mb} MB"),
        Action::Fail { message } => format!("fail: {message}"),
    };
    format!("{} {}: {action}", step.name, step.kind)
}

fn check(template: &str, want: &[&str]) {
    let got: Vec<String> = planned(template).iter().map(show).collect();
    assert_eq!(got, want, "plan of:\n{template}");
}

#[test]
fn nothing_to_do() {
    check("", &[]);
}

#[test]
fn applications_run_their_install_scripts() {
    check(
        r#"applications = ["b", "a"]"#,
        &[
            r##"app-b application: run "#!/bin/sh\ninstall b\n""##,
            r##"app-a application: run "#!/bin/sh\ninstall a\n""##,
        ],
    );
    check(
        r#"applications = ["gone"]"#,
        &[r#"app-gone application: fail: application "gone" is not in kiln's application catalog"#],
    );
}

#[test]
fn shell_steps() {
    check(
        r#"customize = [{type = "shell", name = "s", inline = ["echo a", "echo b"]}]"#,
        &[r##"s shell: run "#!/bin/bash\nset -e\necho a\necho b\n""##],
    );
    check(
        r#"customize = [{type = "shell", name = "s", inline = ["echo a"], script = "x.sh"}]"#,
        &[r##"s shell: run "#!/bin/bash\nset -e\necho a\n""##],
    );
    check(
        r#"customize = [{type = "shell", name = "s", script = "/srv/x.sh", sha256 = "ab"}]"#,
        &["s shell: run local /srv/x.sh sha256 ab"],
    );
    check(
        r#"customize = [{type = "shell", name = "s", script = "https://h.example/x.sh"}]"#,
        &["s shell: run remote https://h.example/x.sh"],
    );
    check(
        r#"customize = [{type = "shell", name = "s", script = "HTTPS://h.example/x.sh"}]"#,
        &["s shell: run remote HTTPS://h.example/x.sh"],
    );
    check(
        r#"customize = [{type = "shell", name = "s"}]"#,
        &["s shell: fail: shell step has neither inline nor script"],
    );
}

#[test]
fn file_steps() {
    check(
        r#"customize = [{type = "file", name = "f", source = "/srv/motd", destination = "/tmp/m"}]"#,
        &["f file: upload /srv/motd to /tmp/m"],
    );
    check(
        r#"customize = [{type = "file", name = "f", source = "https://h.example/m", destination = "/tmp/m", sha256 = "cd"}]"#,
        &["f file: fetch https://h.example/m to /tmp/m sha256 cd"],
    );
}

#[test]
fn reboot_steps_wait_their_timeout_or_five_minutes() {
    check(
        r#"customize = [{type = "reboot", name = "r"}]"#,
        &["r reboot: reboot, wait 300s"],
    );
    check(
        r#"customize = [{type = "reboot", name = "r", timeout = "90s"}]"#,
        &["r reboot: reboot, wait 90s"],
    );
    check(
        r#"customize = [{type = "reboot", name = "r", timeout = "1h2m"}]"#,
        &["r reboot: reboot, wait 3720s"],
    );
    check(
        r#"customize = [{type = "reboot", name = "r", timeout = "soon"}]"#,
        &["r reboot: reboot, wait 300s"],
    );
}

#[test]
fn user_script() {
    check(
        r##"user_script = "#!/bin/sh\nhi\n""##,
        &[r##"user_script user_script: run "#!/bin/sh\nhi\n""##],
    );
}

#[test]
fn validation_runs_only_with_a_boot_test() {
    check(
        r#"validate = {in_vm = [{type = "shell", name = "c", inline = ["true"]}]}"#,
        &[],
    );
    check(
        "validate = {boot_test = true}",
        &["boot-test validate: boot test, 2 vCPUs, 2048 MB"],
    );
    check(
        "vm = {cpus = 4, memory_mb = 1024}\nvalidate = {boot_test = true, in_vm = [{type = \"shell\", name = \"c\", script = \"/srv/c.sh\"}]}",
        &[
            "boot-test validate: boot test, 4 vCPUs, 1024 MB",
            "validate-c validate: run local /srv/c.sh",
        ],
    );
}

/// Every kind of step, in the order a build runs them.
const EVERYTHING: &str = r##"
applications = ["a"]
user_script = "#!/bin/sh\nhi\n"
customize = [
    {type = "shell", name = "s", inline = ["echo a"]},
    {type = "reboot", name = "r"},
    {type = "file", name = "f", source = "/srv/motd", destination = "/tmp/m"},
]
validate = {boot_test = true, in_vm = [{type = "reboot", name = "again", timeout = "2m"}]}
"##;

#[test]
fn applications_then_customizers_then_user_script_then_validation() {
    check(
        EVERYTHING,
        &[
            r##"app-a application: run "#!/bin/sh\ninstall a\n""##,
            r##"s shell: run "#!/bin/bash\nset -e\necho a\n""##,
            "r reboot: reboot, wait 300s",
            "f file: upload /srv/motd to /tmp/m",
            r##"user_script user_script: run "#!/bin/sh\nhi\n""##,
            "boot-test validate: boot test, 2 vCPUs, 2048 MB",
            "validate-again validate: reboot, wait 120s",
        ],
    );
}

/// The pipeline runs the customizing steps, then the validating ones: never interleaved.
#[test]
fn customizing_steps_come_before_validating_ones() {
    let phases: Vec<SubState> = planned(EVERYTHING)
        .iter()
        .map(PlannedStep::sub_state)
        .collect();
    let first_validating = phases
        .iter()
        .position(|p| *p == SubState::Validating)
        .unwrap();
    assert!(phases[..first_validating]
        .iter()
        .all(|p| *p == SubState::Customizing));
    assert!(phases[first_validating..]
        .iter()
        .all(|p| *p == SubState::Validating));
}

/// A build's steps are the plan's, pending; the plan survives the store (JSON) unchanged.
#[test]
fn steps_come_from_the_plan_and_the_plan_is_stored_as_is() {
    let plan = planned(EVERYTHING);
    for step in &plan {
        let pending = step.pending();
        assert_eq!((&pending.name, pending.kind), (&step.name, step.kind));
        assert_eq!(pending.state, StepState::Pending);
    }
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        serde_json::from_value::<Vec<PlannedStep>>(json).unwrap(),
        plan
    );
}
