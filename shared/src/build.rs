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

/// One step of the customize phase: an application install, a customizer or the user script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// `application`, `shell`, `file`, `reboot`, `user_script`.
    pub kind: String,
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
    /// 1-based position in the queue while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// The ssh command to reach a VM kept after a failure (`on_customizer_error = "abort"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_command: Option<String>,
    /// The accelerator the build VM ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStartParams {
    pub template: String,
    pub image_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    #[serde(default)]
    pub no_cache: bool,
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
