//! `a`: logging in to a VM from the dashboard. What it attaches to (a running instance, through
//! `kiln instance ssh`, or the VM a failed build kept, through its `attach_command`), when it
//! may, and what the message line says once the person is back. The shell runs the program in
//! the dashboard's terminal (`Effect::Attach`).

use kiln_shared::protocol::InstanceState;

use super::{App, Effect};

/// What the shell hands the terminal to, until it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// `kiln instance ssh NAME`, as this dashboard's socket and project.
    Instance { name: String },
    /// Build `id`'s kept VM: its `attach_command`, run by `sh -c`.
    Build { id: u64, command: String },
}

impl Attach {
    /// The command line, as the message line shows it.
    pub fn command_line(&self) -> String {
        match self {
            Attach::Instance { name } => format!("kiln instance ssh {name}"),
            Attach::Build { command, .. } => command.clone(),
        }
    }

    fn target(&self) -> String {
        match self {
            Attach::Instance { name } => format!("instance {name}"),
            Attach::Build { id, .. } => format!("build {id}'s VM"),
        }
    }
}

/// `a` on instance `name`: a login once it is running.
pub(super) fn instance(app: &mut App, name: &str) -> Vec<Effect> {
    let Some(i) = app.instances.get(name) else {
        return Vec::new();
    };
    let why = match i.state {
        InstanceState::Running => {
            return vec![Effect::Attach(Attach::Instance { name: name.into() })]
        }
        InstanceState::Starting => "a attaches once sshd answers",
        InstanceState::Stopping => "wait for it to stop, then S starts it",
        InstanceState::Stopped | InstanceState::Failed => "S starts it",
    };
    app.message = Some(format!("instance {name} is {}: {why}", i.state));
    Vec::new()
}

/// `a` on build `id`: its kept VM, if it has one.
pub(super) fn build(app: &mut App, id: u64) -> Vec<Effect> {
    match app.builds.get(id).and_then(|b| b.attach_command.clone()) {
        Some(command) if !command.is_empty() => vec![Effect::Attach(Attach::Build { id, command })],
        _ => {
            app.message = Some(format!(
                "build {id} has no VM to attach to: only a build that failed with \
                 on_customizer_error = \"abort\" keeps its VM"
            ));
            Vec::new()
        }
    }
}

/// The person is back from `what`: its exit status (`None`: killed by a signal), or why it did
/// not run.
pub(super) fn on_attached(app: &mut App, what: &Attach, result: Result<Option<i32>, String>) {
    app.message = Some(match result {
        Ok(Some(0)) => format!("back from {}", what.target()),
        Ok(Some(code)) => format!(
            "back from {}: `{}` exited with status {code}",
            what.target(),
            what.command_line()
        ),
        Ok(None) => format!(
            "back from {}: `{}` was killed by a signal",
            what.target(),
            what.command_line()
        ),
        Err(e) => format!("cannot attach to {}: {e}", what.target()),
    });
}
