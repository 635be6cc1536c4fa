//! The plan of a build: every step it runs, in order, each with what to do, made once from the
//! template when the build is submitted. The build's `steps` come from it and the pipeline runs
//! exactly it; the step cache (a later issue) keys layers by it, hence `Serialize`.

use kiln_shared::apps::AppCatalog;
use kiln_shared::build::{Step, StepKind, StepState, SubState};
use kiln_shared::template::Customizer;
use kiln_shared::Template;
use serde::{Deserialize, Serialize};

/// One step of a build's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub name: String,
    pub kind: StepKind,
    pub action: Action,
}

/// What a step does, with everything the pipeline needs to do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Upload `script` (it starts with a shebang) and run it: an application's install script,
    /// a shell step's inline lines, the user script.
    RunScript { script: String },
    /// Read the local script `path` as whoever started the build, check it, upload and run it.
    RunLocalScript {
        path: String,
        sha256: Option<String>,
    },
    /// Download the https script `url` in the guest, check it and run it.
    RunRemoteScript { url: String, sha256: Option<String> },
    /// Read the local file `source` as whoever started the build, check it, upload it.
    UploadFile {
        source: String,
        destination: String,
        sha256: Option<String>,
    },
    /// Download the https file `url` to `destination` in the guest and check it.
    FetchFile {
        url: String,
        destination: String,
        sha256: Option<String>,
    },
    /// Reboot the guest and wait up to `timeout_secs` for it to come back.
    Reboot { timeout_secs: u64 },
    /// Boot the finished disk in a fresh VM of this size and wait until it is ready.
    BootTest { cpus: u32, memory_mb: u32 },
    /// What the template asks cannot be run (validation keeps it from being stored): the step
    /// fails with `message`.
    Fail { message: String },
}

impl PlannedStep {
    /// The phase of the build the step runs in: customizing or validating.
    pub fn sub_state(&self) -> SubState {
        match self.kind {
            StepKind::Validate => SubState::Validating,
            StepKind::Application
            | StepKind::Shell
            | StepKind::File
            | StepKind::Reboot
            | StepKind::UserScript => SubState::Customizing,
        }
    }

    /// The step as a new build shows it: pending.
    pub fn pending(&self) -> Step {
        Step {
            name: self.name.clone(),
            kind: self.kind,
            state: StepState::Pending,
            started_at: None,
            finished_at: None,
            exit_code: None,
        }
    }
}

/// The steps a build of `template` runs: its applications (from `apps`), its customizers, its
/// user script, then (with `validate.boot_test`) the boot test and each `validate.in_vm` check.
pub fn plan(template: &Template, apps: &AppCatalog) -> Vec<PlannedStep> {
    let step = |name: String, kind, action| PlannedStep { name, kind, action };
    let mut steps = Vec::new();
    for app in &template.applications {
        let action = match apps.get(app) {
            Some(a) => Action::RunScript {
                script: a.install.clone(),
            },
            None => Action::Fail {
                message: format!("application {app:?} is not in kiln's application catalog"),
            },
        };
        steps.push(step(format!("app-{app}"), StepKind::Application, action));
    }
    for c in &template.customize {
        steps.push(step(c.name().to_string(), c.kind(), customizer_action(c)));
    }
    if let Some(script) = &template.user_script {
        steps.push(step(
            "user_script".into(),
            StepKind::UserScript,
            Action::RunScript {
                script: script.clone(),
            },
        ));
    }
    if template.validate.boot_test {
        steps.push(step(
            "boot-test".into(),
            StepKind::Validate,
            Action::BootTest {
                cpus: template.vm.cpus,
                memory_mb: template.vm.memory_mb,
            },
        ));
        for c in &template.validate.in_vm {
            steps.push(step(
                format!("validate-{}", c.name()),
                StepKind::Validate,
                customizer_action(c),
            ));
        }
    }
    steps
}

fn customizer_action(c: &Customizer) -> Action {
    match c {
        Customizer::Shell {
            inline: Some(lines),
            ..
        } => Action::RunScript {
            script: format!("#!/bin/bash\nset -e\n{}\n", lines.join("\n")),
        },
        Customizer::Shell {
            script: Some(src),
            sha256,
            ..
        } if is_url(src) => Action::RunRemoteScript {
            url: src.clone(),
            sha256: sha256.clone(),
        },
        Customizer::Shell {
            script: Some(path),
            sha256,
            ..
        } => Action::RunLocalScript {
            path: path.clone(),
            sha256: sha256.clone(),
        },
        Customizer::Shell { .. } => Action::Fail {
            message: "shell step has neither inline nor script".into(),
        },
        Customizer::File {
            source,
            destination,
            sha256,
            ..
        } if is_url(source) => Action::FetchFile {
            url: source.clone(),
            destination: destination.clone(),
            sha256: sha256.clone(),
        },
        Customizer::File {
            source,
            destination,
            sha256,
            ..
        } => Action::UploadFile {
            source: source.clone(),
            destination: destination.clone(),
            sha256: sha256.clone(),
        },
        Customizer::Reboot { timeout, .. } => Action::Reboot {
            timeout_secs: timeout
                .as_deref()
                .and_then(kiln_shared::validate::parse_duration)
                .unwrap_or(kiln_shared::validate::DEFAULT_REBOOT_TIMEOUT)
                .as_secs(),
        },
    }
}

/// Whether a template's source names an https URL (fetched in the guest) or a local path.
fn is_url(s: &str) -> bool {
    s.to_ascii_lowercase().starts_with("https://")
}
