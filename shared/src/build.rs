//! Wire types of builds: the build as clients see it, its steps, run outputs and log lines.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a build is in its life. Every state but `queued` and `running` is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    Queued,
    Running,
    Succeeded,
    PartiallySucceeded,
    Failed,
    Canceled,
    TimedOut,
    /// The daemon died while the build ran.
    Interrupted,
}

impl BuildState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, BuildState::Queued | BuildState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::PartiallySucceeded => "partially_succeeded",
            BuildState::Failed => "failed",
            BuildState::Canceled => "canceled",
            BuildState::TimedOut => "timed_out",
            BuildState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<BuildState> {
        serde_json::from_value(serde_json::Value::from(s)).ok()
    }
}

/// What a running build is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubState {
    Preparing,
    Booting,
    Customizing,
    Generalizing,
    Validating,
    Distributing,
    Canceling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Canceled,
}

/// What a step of a build is; on the wire as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// An application's install script from the catalog.
    Application,
    /// A `shell` customizer.
    Shell,
    /// A `file` customizer.
    File,
    /// A `reboot` customizer.
    Reboot,
    /// The template's `user_script`.
    UserScript,
    /// The boot test of the finished disk and each `validate.in_vm` check.
    Validate,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Application => "application",
            StepKind::Shell => "shell",
            StepKind::File => "file",
            StepKind::Reboot => "reboot",
            StepKind::UserScript => "user_script",
            StepKind::Validate => "validate",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One step of a build: an application install, a customizer, the user script or a validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One artifact a distribute target produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    pub run_output_name: String,
    /// `image` or `export`.
    pub kind: String,
    /// Image id for catalog images, the file path for exports.
    pub artifact_id: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A build as `build.get`, `build.list` and friends return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub id: u64,
    pub project: String,
    pub template: String,
    pub revision: u64,
    pub image_name: String,
    pub base_image: String,
    /// The base image's name when the build was queued; for a gallery source, the version
    /// `latest` (or the pinned version) resolved to: `GALLERY/IMAGE:1.0.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_name: Option<String>,
    pub state: BuildState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_state: Option<SubState>,
    /// Index into `steps` of the step running now (or the one that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub steps: Vec<Step>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub run_outputs: Vec<RunOutput>,
    /// 1-based position in the queue while queued: derived from the queue whenever a build is
    /// read, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// The ssh command to reach a VM kept after a failure (`on_customizer_error = "abort"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_command: Option<String>,
    /// The accelerator the build VM ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// Set when kilnd queued this build itself, for a template's `[trigger]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,
}

/// What queued a triggered build: a new version of the template's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggeredBy {
    /// The source as the template names it: `GALLERY/IMAGE` or an image name.
    pub image: String,
    /// The new version: a gallery version (`1.0.3`), or for a plain image its creation time,
    /// UTC, as YYYYMMDDHHMM.
    pub version: String,
    /// The new image's id (the build's base).
    pub image_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStartParams {
    pub template: String,
    pub image_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildIdParams {
    pub id: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BuildState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReply {
    pub build: Build,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildList {
    pub builds: Vec<Build>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildLogsParams {
    pub id: u64,
    #[serde(default)]
    pub follow: bool,
    /// First line to send (0-based sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_line: Option<u64>,
    /// The VM's serial console instead of the build log.
    #[serde(default)]
    pub serial: bool,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// kiln's own step markers and messages.
    Kiln,
    Stdout,
    Stderr,
    Serial,
}

/// One line of a build log, as stored and as sent in `build.log` notifications (plus `sub`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub stream: LogStream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub line: String,
}

/// Result of `build.logs`; also the params of `build.logs.unsubscribe`, which ends that stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubReply {
    pub sub: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The strings clients have seen in `steps[].kind` since before it was an enum.
    #[test]
    fn step_kinds_keep_their_wire_strings() {
        for (kind, wire) in [
            (StepKind::Application, "application"),
            (StepKind::Shell, "shell"),
            (StepKind::File, "file"),
            (StepKind::Reboot, "reboot"),
            (StepKind::UserScript, "user_script"),
            (StepKind::Validate, "validate"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), wire);
            assert_eq!(kind.as_str(), wire);
            assert_eq!(format!("{kind:<12}|"), format!("{wire:<12}|"));
            let parsed: StepKind = serde_json::from_value(wire.into()).unwrap();
            assert_eq!(parsed, kind);
        }
    }

    /// `no_cache` meant nothing and is gone; a client that still sends it is not refused.
    #[test]
    fn build_start_ignores_no_cache() {
        let params: BuildStartParams = serde_json::from_value(serde_json::json!(
            {"template": "web", "image_name": "web-1", "no_cache": true}
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(params).unwrap(),
            serde_json::json!({"template": "web", "image_name": "web-1"})
        );
    }
}
