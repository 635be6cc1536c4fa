//! `kiln build ...`: start builds, watch them, read their logs, wait for them and cancel them.

use std::process::ExitCode;

use clap::Subcommand;
use kiln_shared::build::{
    Build, BuildIdParams, BuildListParams, BuildLogsParams, BuildStartParams, BuildState, LogLine,
    LogStream,
};
use kiln_shared::client::Client;
use kiln_shared::methods::{self as m, Notice};
use kiln_shared::protocol::{LogEnd, LogNote};
use serde_json::Value;

use super::output::{self, Align, Column, Table};
use super::{call, CmdResult, Failure, Settings};

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Queue a build of TEMPLATE's latest revision, producing image IMAGE_NAME
    Start {
        template: String,
        /// Name of the image the build publishes (1 to 255 bytes, no '/' or invisible characters)
        #[arg(long, short = 'n')]
        image_name: String,
        /// Base image to boot (default: the template's source.image); must match the template's OS
        #[arg(long)]
        base_image: Option<String>,
        /// Follow the build's log until it ends; exit 0 only if it succeeded
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List builds, newest last
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        template: Option<String>,
        /// queued, running, succeeded, partially_succeeded, failed, canceled, timed_out, interrupted
        #[arg(long)]
        state: Option<String>,
    },
    /// Steps with durations and exit codes, run outputs, and the attach command of a kept VM
    Show { id: u64 },
    /// Print a build's log; -f follows it live until the build ends
    Logs {
        id: u64,
        #[arg(long, short = 'f')]
        follow: bool,
        /// The VM's serial console instead of the build log
        #[arg(long)]
        serial: bool,
        /// Start at this line (0-based)
        #[arg(long)]
        from_line: Option<u64>,
        /// Prefix each line with its time
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// Wait until a build ends; exit 0 only if it succeeded
    Wait { id: u64 },
    /// Cancel a build in any state; its VM and files are removed
    Cancel { id: u64 },
}

pub async fn run(settings: &Settings, command: BuildCommand) -> CmdResult {
    match command {
        BuildCommand::Start {
            template,
            image_name,
            base_image,
            follow,
        } => {
            super::check_name("--image-name", &image_name)?;
            let (client, notes) = connect(settings).await?;
            let params = BuildStartParams {
                template,
                image_name,
                base_image,
            };
            let (value, reply) = call::<m::BuildStart>(&client, &params).await?;
            let b = reply.build;
            if follow {
                if !settings.json {
                    output::println(&format!(
                        "build {} queued (position {})",
                        b.id,
                        b.queue_position.unwrap_or(0)
                    ));
                }
                let opts = LogOptions {
                    follow: true,
                    serial: false,
                    from_line: None,
                    timestamps: false,
                };
                print_log(settings, &client, notes, b.id, &opts).await?;
                let (value, reply) =
                    call::<m::BuildGet>(&client, &BuildIdParams { id: b.id }).await?;
                return finished(settings, &value, &reply.build);
            }
            if settings.json {
                output::print_json(&value);
            } else {
                output::println(&format!(
                    "build {} queued{} — follow it with: kiln build logs -f {}",
                    b.id,
                    b.queue_position
                        .map(|p| format!(" (position {p})"))
                        .unwrap_or_default(),
                    b.id
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        BuildCommand::List { template, state } => {
            if let Some(s) = &state {
                if BuildState::parse(s).is_none() {
                    return Err(Failure::usage(format!("unknown state {s:?}")));
                }
            }
            let client = settings.connect().await?;
            let params = BuildListParams {
                template,
                state: state.as_deref().and_then(BuildState::parse),
            };
            let (value, list) = call::<m::BuildList>(&client, &params).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print_table(&list_table(&list.builds));
            }
            Ok(ExitCode::SUCCESS)
        }
        BuildCommand::Show { id } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::BuildGet>(&client, &BuildIdParams { id }).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print(&show_text(&reply.build));
            }
            Ok(ExitCode::SUCCESS)
        }
        BuildCommand::Logs {
            id,
            follow,
            serial,
            from_line,
            timestamps,
        } => {
            let (client, notes) = connect(settings).await?;
            let opts = LogOptions {
                follow,
                serial,
                from_line,
                timestamps,
            };
            print_log(settings, &client, notes, id, &opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        BuildCommand::Wait { id } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::BuildWait>(&client, &BuildIdParams { id }).await?;
            finished(settings, &value, &reply.build)
        }
        BuildCommand::Cancel { id } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::BuildCancel>(&client, &BuildIdParams { id }).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::println(&format!(
                    "build {id} {}: {}",
                    reply.build.state.as_str(),
                    reply.build.message
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn connect(
    settings: &Settings,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<kiln_shared::protocol::Notification>,
    ),
    Failure,
> {
    Ok(Client::connect(&settings.socket, Some(settings.project.clone())).await?)
}

/// Prints a build's state and returns 0 only when it succeeded.
fn finished(settings: &Settings, value: &Value, b: &Build) -> CmdResult {
    if settings.json {
        output::print_json(value);
    } else {
        output::println(&format!(
            "build {} {}: {}",
            b.id,
            b.state.as_str(),
            b.message
        ));
        if let Some(a) = &b.attach_command {
            output::println(&format!("the VM is kept; attach with: {a}"));
        }
    }
    Ok(if b.state == BuildState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct LogOptions {
    follow: bool,
    serial: bool,
    from_line: Option<u64>,
    timestamps: bool,
}

/// Prints a build's log (with `follow`, until the build ends) to stdout; `--json` prints each
/// `build.log` notification's params as one JSON line.
async fn print_log(
    settings: &Settings,
    client: &Client,
    mut notes: tokio::sync::mpsc::UnboundedReceiver<kiln_shared::protocol::Notification>,
    id: u64,
    o: &LogOptions,
) -> Result<(), Failure> {
    let params = BuildLogsParams {
        id,
        follow: o.follow,
        from_line: o.from_line,
        serial: o.serial,
    };
    let (_, reply) = call::<m::BuildLogs>(client, &params).await?;
    print_notes(settings, &mut notes, reply.sub, o.timestamps).await
}

/// Prints the `build.log` lines of subscription `sub` until its `build.log.end`.
pub async fn print_notes(
    settings: &Settings,
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<kiln_shared::protocol::Notification>,
    sub: u64,
    timestamps: bool,
) -> Result<(), Failure> {
    while let Some(n) = notes.recv().await {
        if n.params.get("sub").and_then(Value::as_u64) != Some(sub) {
            continue;
        }
        if n.method == LogEnd::NAME {
            return Ok(());
        }
        if n.method != LogNote::NAME {
            continue;
        }
        if settings.json {
            output::println(&n.params.to_string());
        } else if let Ok(line) = serde_json::from_value::<LogLine>(n.params) {
            output::println(&log_text(&line, timestamps));
        }
    }
    Err(Failure::new(
        "unavailable",
        "kilnd closed the connection before the log ended",
    ))
}

/// One log line for people: `[step] line`, stderr marked, optional timestamp.
pub fn log_text(l: &LogLine, timestamps: bool) -> String {
    let mut s = String::new();
    if timestamps {
        s.push_str(
            &l.ts
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S%.3f ")
                .to_string(),
        );
    }
    match (l.stream, &l.step) {
        (LogStream::Serial, _) | (LogStream::Kiln, None) => {}
        (_, Some(step)) => s.push_str(&format!("[{step}] ")),
        (_, None) => {}
    }
    if l.stream == LogStream::Stderr {
        s.push_str("! ");
    }
    s.push_str(&l.line);
    s
}

fn elapsed(b: &Build) -> String {
    let Some(start) = b.started_at else {
        return "-".into();
    };
    let end = b.finished_at.unwrap_or_else(chrono::Utc::now);
    super::daemon::duration_text((end - start).num_seconds().max(0) as u64)
}

fn state_text(b: &Build) -> String {
    match (b.state, b.sub_state) {
        (BuildState::Queued, _) => format!("queued #{}", b.queue_position.unwrap_or(0)),
        (BuildState::Running, Some(sub)) => {
            format!(
                "running/{}",
                serde_json::to_value(sub)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        }
        (s, _) => s.as_str().to_string(),
    }
}

fn step_text(b: &Build) -> String {
    match b.step {
        Some(i) if !b.steps.is_empty() => format!("{}/{}", i + 1, b.steps.len()),
        _ => format!("-/{}", b.steps.len()),
    }
}

pub fn list_table(builds: &[Build]) -> Table {
    let mut table = Table::new(vec![
        Column::fixed("ID", Align::Right),
        Column::flexible("TEMPLATE", 8),
        Column::flexible("IMAGE", 8),
        Column::fixed("STATE", Align::Left),
        Column::fixed("STEP", Align::Right),
        Column::fixed("ELAPSED", Align::Right),
        Column::fixed("BY", Align::Left),
    ]);
    for b in builds {
        table.push(vec![
            b.id.to_string(),
            b.template.clone(),
            b.image_name.clone(),
            state_text(b),
            step_text(b),
            elapsed(b),
            // Who queued it: a person, or the template's [trigger].
            if b.triggered_by.is_some() {
                "trigger".into()
            } else {
                "-".into()
            },
        ]);
    }
    table
}

pub fn show_text(b: &Build) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<10} {v}\n"));
    row("build", b.id.to_string());
    row(
        "template",
        format!("{} revision {}", b.template, b.revision),
    );
    row("image", b.image_name.clone());
    row(
        "base",
        match &b.base_image_name {
            Some(name) => format!("{name} ({})", b.base_image),
            None => b.base_image.clone(),
        },
    );
    if let Some(t) = &b.triggered_by {
        row(
            "trigger",
            format!(
                "queued by the template's trigger: {} has a new version, {} ({})",
                t.image, t.version, t.image_id
            ),
        );
    }
    row("state", state_text(b));
    if !b.message.is_empty() {
        row("message", b.message.clone());
    }
    row(
        "created",
        b.created_at
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
    );
    row("elapsed", elapsed(b));
    if let Some(a) = &b.accel {
        row("accel", a.clone());
    }
    if let Some(a) = &b.attach_command {
        row("attach", a.clone());
    }
    s.push_str("\nSTEPS\n");
    for (i, st) in b.steps.iter().enumerate() {
        let dur = match (st.started_at, st.finished_at) {
            (Some(a), Some(z)) => format!("{:.1}s", (z - a).num_milliseconds() as f64 / 1000.0),
            (Some(_), None) => "running".into(),
            _ => "-".into(),
        };
        let exit = st
            .exit_code
            .map(|c| format!("exit {c}"))
            .unwrap_or_default();
        let state = serde_json::to_value(st.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        s.push_str(&format!(
            "{:>3}. {:<24} {:<12} {:<10} {:>8} {}\n",
            i + 1,
            output::truncate(&st.name, 24),
            st.kind,
            state,
            dur,
            exit
        ));
    }
    if !b.run_outputs.is_empty() {
        s.push_str("\nRUN OUTPUTS\n");
        for o in &b.run_outputs {
            match &o.error {
                Some(e) => s.push_str(&format!(
                    "  {} ({}): failed: {e}\n",
                    o.run_output_name, o.kind
                )),
                None => s.push_str(&format!(
                    "  {} ({}): {}\n    {} bytes, sha256 {}\n",
                    o.run_output_name, o.kind, o.path, o.size, o.sha256
                )),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::app::fixtures;
    use kiln_shared::build::TriggeredBy;

    #[test]
    fn triggered_builds_say_so_in_list_and_show() {
        let by_hand = fixtures::build(1, "web", BuildState::Succeeded);
        let mut triggered = fixtures::build(2, "web", BuildState::Queued);
        triggered.triggered_by = Some(TriggeredBy {
            image: "base/debian".into(),
            version: "1.0.3".into(),
            image_id: "img-0123".into(),
        });
        let table = list_table(&[by_hand.clone(), triggered.clone()]).render(80, false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].trim_end().ends_with("BY"), "{table}");
        assert!(lines[1].trim_end().ends_with('-'), "{table}");
        assert!(lines[2].trim_end().ends_with("trigger"), "{table}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{table}");
        let shown = show_text(&triggered);
        assert!(
            shown.contains(
                "trigger    queued by the template's trigger: base/debian has a new version, \
                 1.0.3 (img-0123)"
            ),
            "{shown}"
        );
        assert!(!show_text(&by_hand).contains("trigger"));
    }
}
