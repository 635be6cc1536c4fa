//! The wire protocol: JSON-RPC 2.0 envelopes, error kinds and the params/results of each method.
//!
//! These types are the IPC boundary: the daemon's internal types never go on the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::template::Template;
use crate::validate::Violation;

/// Protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// A line longer than this is answered with `too_large` and the connection is closed.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Project used when a request names none.
pub const DEFAULT_PROJECT: &str = "default";

/// A request id exactly as the client wrote it: a string, a number or null (JSON-RPC 2.0's
/// three id types), sent back byte for byte, so `123456789012345678901234567890` stays itself.
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    /// The id of a reply to a line whose id could not be read.
    pub fn null() -> Id {
        Id::from_text("null")
    }

    pub fn number(n: u64) -> Id {
        Id::from_text(&n.to_string())
    }

    /// `raw` as an id; `None` unless it is a string, a number or null.
    pub fn from_raw(raw: &RawValue) -> Option<Id> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9' | b'n') => Some(Id(raw.to_owned())),
            _ => None,
        }
    }

    fn from_text(text: &str) -> Id {
        // Only called with valid JSON; the default is `null`.
        Id(RawValue::from_string(text.to_string()).unwrap_or_default())
    }

    /// The id as written on the wire.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.0.get().parse().ok()
    }

    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Through a `Value`, so it works inside untagged enums (the client's [`ServerMessage`]); a number
/// beyond f64 loses digits here. The daemon reads ids exactly with [`Incoming::parse`].
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null | Value::String(_) | Value::Number(_) => Ok(Id::from_text(&v.to_string())),
            _ => Err(serde::de::Error::custom(
                "an id is a string, a number or null",
            )),
        }
    }
}

/// A present `"id": null` is `Some(null)`, not a missing id.
fn present_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    Id::deserialize(d).map(Some)
}

/// A request (with `id`) or a notification (without) sent to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    #[serde(
        default,
        deserialize_with = "present_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    pub fn new(id: u64, method: &str, params: Value) -> Request {
        Request {
            jsonrpc: "2.0".into(),
            id: Some(Id::number(id)),
            method: method.into(),
            params,
        }
    }
}

/// One line as the daemon reads it (JSON-RPC 2.0, section 6 for batches).
#[derive(Debug)]
pub enum Incoming {
    One(Call),
    /// A non-empty JSON array: answered with an array of the replies its requests get (none
    /// at all when every member is a notification).
    Batch(Vec<Call>),
    /// Nothing to run: the line is not JSON, or an empty batch.
    Reply(Response),
}

/// One member of a line: a request to run, or the error reply an invalid one gets.
#[derive(Debug)]
pub enum Call {
    Request(Request),
    Invalid(Response),
}

/// The members of a request object, read without deciding anything yet.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present_raw")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
}

fn present_raw<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Incoming {
    /// Decodes one line; ids are kept exactly as written.
    pub fn parse(line: &[u8]) -> Incoming {
        let parse_error = |e: &dyn std::fmt::Display| {
            Incoming::Reply(Response::err(
                Id::null(),
                RpcError::new(ErrorKind::ParseError, format!("not valid JSON: {e}")),
            ))
        };
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => return parse_error(&e),
        };
        if text.trim_start().starts_with('[') {
            match serde_json::from_str::<Vec<&RawValue>>(text) {
                Err(e) => parse_error(&e),
                Ok(members) if members.is_empty() => Incoming::Reply(Response::err(
                    Id::null(),
                    RpcError::new(
                        ErrorKind::InvalidRequest,
                        "an empty batch: send at least one request in the array",
                    ),
                )),
                Ok(members) => Incoming::Batch(members.into_iter().map(Call::from_raw).collect()),
            }
        } else {
            match serde_json::from_str::<&RawValue>(text) {
                Err(e) => parse_error(&e),
                Ok(raw) => Incoming::One(Call::from_raw(raw)),
            }
        }
    }
}

impl Call {
    fn from_raw(raw: &RawValue) -> Call {
        let invalid = |id: Option<Id>, message: String| {
            Call::Invalid(Response::err(
                id.unwrap_or_else(Id::null),
                RpcError::new(ErrorKind::InvalidRequest, message),
            ))
        };
        let env: Envelope<'_> = match serde_json::from_str(raw.get()) {
            Ok(e) => e,
            Err(e) => return invalid(None, format!("not a JSON-RPC 2.0 request object: {e}")),
        };
        let id = match env.id.map(Id::from_raw) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => {
                return invalid(None, "id must be a string, a number or null".to_string())
            }
        };
        if env.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
            return invalid(id, "jsonrpc must be \"2.0\"".to_string());
        }
        let method = match env.method {
            Some(Value::String(m)) => m,
            _ => return invalid(id, "method must be a string".to_string()),
        };
        Call::Request(Request {
            jsonrpc: "2.0".into(),
            id,
            method,
            params: env.params.unwrap_or(Value::Null),
        })
    }
}

/// A reply to one request: exactly one of `result` and `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: Id, result: Value) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: Id, error: RpcError) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A message from the daemon that answers no request (`hello`, `build.log`, events).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub jsonrpc: String,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

impl Notification {
    pub fn new(method: &str, params: Value) -> Notification {
        Notification {
            jsonrpc: "2.0".into(),
            method: method.into(),
            params,
        }
    }

    /// The notification that carries `params`, named by the method table.
    pub fn of<N: crate::methods::Notice>(params: &N) -> Notification {
        Notification::new(N::NAME, serde_json::to_value(params).unwrap_or_default())
    }

    /// The params of this notification as `N`; `None` when it is another one (or malformed).
    pub fn decode<N: crate::methods::Notice>(&self) -> Option<N> {
        if self.method != N::NAME {
            return None;
        }
        serde_json::from_value(self.params.clone()).ok()
    }
}

/// Any line the daemon sends: a response has an `id`, a notification a `method`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    Response(Response),
    Notification(Notification),
}

/// The stable, snake_case error kinds in `error.data.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InvalidTemplate,
    NotFound,
    Conflict,
    Forbidden,
    TooLarge,
    Unavailable,
    /// Over a limit of connections, requests in flight, subscriptions or buffered input.
    Busy,
    Internal,
}

impl ErrorKind {
    /// The JSON-RPC `code` that goes with each kind.
    pub fn code(self) -> i64 {
        match self {
            ErrorKind::ParseError => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::InvalidTemplate => -32001,
            ErrorKind::NotFound => -32002,
            ErrorKind::Conflict => -32003,
            ErrorKind::Forbidden => -32004,
            ErrorKind::TooLarge => -32005,
            ErrorKind::Unavailable => -32006,
            ErrorKind::Busy => -32007,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ParseError => "parse_error",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::InvalidTemplate => "invalid_template",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy => "busy",
            ErrorKind::Internal => "internal",
        }
    }
}

/// `error.data`: the kind and, for validation failures, every violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// A JSON-RPC error object; also the error type of daemon request handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: ErrorData,
}

impl RpcError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RpcError {
        RpcError {
            code: kind.code(),
            message: message.into(),
            data: ErrorData {
                kind,
                violations: Vec::new(),
            },
        }
    }

    pub fn invalid_template(message: impl Into<String>, violations: Vec<Violation>) -> RpcError {
        let mut e = RpcError::new(ErrorKind::InvalidTemplate, message);
        e.data.violations = violations;
        e
    }

    pub fn kind(&self) -> ErrorKind {
        self.data.kind
    }
}

/// Params of `hello`, the daemon's first line on every connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    pub version: String,
    pub protocol: u32,
}

// ---- template.* ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateParams {
    pub template: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameParams {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateGetParams {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateUpdateParams {
    pub name: String,
    pub template: Value,
    /// When set, the update is refused with `conflict` unless this is still the latest revision
    /// (so an edit never silently overwrites one stored meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

/// Result of `template.create` and `template.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub revision: u64,
}

/// Result of `template.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub template: Template,
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One row of `template.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub name: String,
    pub os: String,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub applications: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateList {
    pub templates: Vec<TemplateSummary>,
}

/// Result of `template.validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationResult {
    pub valid: bool,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionInfo {
    pub revision: u64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionList {
    pub revisions: Vec<RevisionInfo>,
}

// ---- project.list / daemon.status ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the caller may act in this project.
    pub member: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectList {
    pub projects: Vec<ProjectInfo>,
}

/// Result of `daemon.status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub socket: String,
    pub data_dir: String,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// Builds waiting in the queue.
    pub queue: u64,
    /// Builds running now.
    pub running: u64,
    pub max_concurrent_builds: u32,
    /// The accelerator builds use: `kvm`, `tcg`, or `unknown` until the first boot tried.
    pub accel: String,
    pub templates: u64,
    /// The caller as the daemon sees it from the socket's peer credentials.
    pub caller: Caller,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub project: String,
}

// ---- image.* ----

/// How an image relates to the project that asks about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// A base image every project sees (bootstrapped or imported by an admin).
    Public,
    /// Owned by the asking project.
    Private,
    /// Owned by another project that shared it with the asking one.
    Shared,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Shared => "shared",
        }
    }
}

/// Where an image is in its life. Only `available` images can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    Creating,
    Available,
    Deleting,
    Failed,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Creating => "creating",
            ImageState::Available => "available",
            ImageState::Deleting => "deleting",
            ImageState::Failed => "failed",
        }
    }
}

/// One image of the catalog as a project sees it (`image.get`, `image.list`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub os: String,
    pub visibility: Visibility,
    /// `None` for public images.
    pub owner_project: Option<String>,
    /// The template (and revision, build) the image was built from; `None` when bootstrapped or
    /// imported.
    pub template: Option<String>,
    pub template_revision: Option<u64>,
    pub build: Option<u64>,
    /// The image file on the daemon's host.
    pub path: String,
    /// Always `qcow2` for catalog images.
    pub format: String,
    /// Size of the disk the image describes, in bytes.
    pub virtual_size: u64,
    /// Size of the image file, in bytes.
    pub file_size: u64,
    /// Hex SHA-256 of the image file; empty until the image is available.
    pub sha256: String,
    pub min_disk_gb: u64,
    pub created_at: DateTime<Utc>,
    pub state: ImageState,
    /// Projects the owner shared the image with (shown to the owner only).
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// Why the image is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The saved, booted VM builds from this image resume from (warm start), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmInfo>,
}

/// A base image's saved VM: builds with the same vCPUs and memory start from it in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmInfo {
    pub created_at: DateTime<Utc>,
    /// `kvm` or `tcg`: the accelerator it was saved under (and can only be resumed under).
    pub accel: String,
    pub cpus: u32,
    pub memory_mb: u32,
    /// The cold boot it was made from, and saving its memory.
    pub boot_seconds: f64,
    pub save_seconds: f64,
    /// Size of the saved memory file.
    pub state_bytes: u64,
}

/// Params of `image.warm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageWarmParams {
    /// Id or name.
    pub image: String,
}

/// Params of `image.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
}

/// Result of `image.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageInfo>,
}

/// Params of `image.get` and `image.delete`: an image id or name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageParams {
    pub image: String,
}

/// Params of `image.share` and `image.unshare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageShareParams {
    pub image: String,
    pub projects: Vec<String>,
}

/// Params of `image.bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageBootstrapParams {
    /// An OS kiln can bootstrap, such as `debian-12`.
    pub os: String,
    /// Save a booted VM of it afterwards (warm start); default: kilnd.toml's `warm_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// Params of `image.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageImportParams {
    /// Absolute path of a qcow2 or raw file on the daemon's host.
    pub path: String,
    pub name: String,
    pub os: String,
    /// Import as a public image (needs the admin group) instead of a private one.
    #[serde(default)]
    pub public: bool,
    /// Save a booted VM of it afterwards (warm start); off by default, since an imported image
    /// may not boot here the way kiln expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// Result of `image.get`, `image.share`, `image.unshare` and `image.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageResult {
    pub image: ImageInfo,
}

/// Result of `image.bootstrap` and `image.warm`: the image and the progress lines printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageBootstrapResult {
    pub image: ImageInfo,
    #[serde(default)]
    pub progress: Vec<String>,
}

/// Params of the `image.progress` notification sent while an image is being made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageProgress {
    pub line: String,
}

/// Params of a `build.log` notification: one line of the stream `sub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogNote {
    pub sub: u64,
    #[serde(flatten)]
    pub line: crate::build::LogLine,
}

/// Params of `build.log.end`, the last notification of a `build.logs` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEnd {
    pub sub: u64,
    /// The build's state when the stream ended (`null` if the build is gone).
    pub state: Option<crate::build::BuildState>,
    /// The sequence number of the next line: how many lines the build log had sent so far.
    pub lines: u64,
    /// Whether `build.logs.unsubscribe` ended it (rather than the build ending).
    pub unsubscribed: bool,
}

/// Params of an `event` notification, sent to an `events.subscribe` subscription whenever
/// something of its project changes: `kind` says what, and the changed thing rides along.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub sub: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] is about, tagged by `kind` on the wire, with what goes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The build as `build.get` returns it now.
    Build { build: Box<crate::build::Build> },
    /// The template's name, and its summary as `template.list` has it (`None` once deleted).
    Template {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateSummary>,
    },
    /// Events were lost (the subscriber fell behind): list everything again.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(call: &Call) -> String {
        match call {
            Call::Request(r) => {
                let id = r.id.as_ref().map_or("-", Id::as_json);
                format!("{} {id}", r.method)
            }
            Call::Invalid(r) => format!("invalid {}", r.id.as_json()),
        }
    }

    /// `line` decodes to `expected`: `METHOD ID` (`-` for a notification), `invalid ID`, a
    /// batch as `[a, b]`, or `reply KIND` for a line answered without running anything.
    fn check(line: &str, expected: &str) {
        let got = match Incoming::parse(line.as_bytes()) {
            Incoming::One(c) => describe(&c),
            Incoming::Batch(cs) => {
                let d: Vec<String> = cs.iter().map(describe).collect();
                format!("[{}]", d.join(", "))
            }
            Incoming::Reply(r) => format!("reply {}", r.error.map_or("?", |e| e.kind().as_str())),
        };
        assert_eq!(got, expected, "for {line}");
    }

    #[test]
    fn decodes_lines() {
        check(r#"{"jsonrpc":"2.0","id":7,"method":"a"}"#, "a 7");
        check(r#"{"jsonrpc":"2.0","id":null,"method":"a"}"#, "a null");
        check(r#"{"jsonrpc":"2.0","method":"a"}"#, "a -");
        check(
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"a"}"#,
            "a 123456789012345678901234567890",
        );
        check(
            r#"{"jsonrpc":"2.0","id":"x\u0041","method":"a"}"#,
            r#"a "x\u0041""#,
        );
        check(r#"{"jsonrpc":"2.0","id":-1.5e3,"method":"a"}"#, "a -1.5e3");
        check(r#"{"jsonrpc":"2.0","id":[1],"method":"a"}"#, "invalid null");
        check(
            r#"{"jsonrpc":"2.0","id":true,"method":"a"}"#,
            "invalid null",
        );
        check(r#"{"jsonrpc":"2.0","id":{},"method":"a"}"#, "invalid null");
        check(r#"{"jsonrpc":"1.0","id":5,"method":"a"}"#, "invalid 5");
        check(r#"{"jsonrpc":"2.0","id":5,"method":5}"#, "invalid 5");
        check(r#"{"jsonrpc":"2.0","id":5}"#, "invalid 5");
        check("3", "invalid null");
        check(
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 2, {"jsonrpc":"2.0","method":"b"}]"#,
            "[a 1, invalid null, b -]",
        );
        check("  [ ]", "reply invalid_request");
        check("[1,", "reply parse_error");
        check("{", "reply parse_error");
        check("\u{0}", "reply parse_error");
    }

    /// A notification's params on the wire, as kilnd writes them (through a `Value`).
    fn wire<N: crate::methods::Notice>(params: &N) -> String {
        serde_json::to_string(&Notification::of(params)).unwrap_or_default()
    }

    #[test]
    fn log_notifications_keep_their_json() {
        let line: crate::build::LogLine = serde_json::from_str(
            r#"{"seq":4,"ts":"2026-12-01T10:00:00Z","stream":"stdout","step":"motd","line":"hi"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let note = LogNote { sub: 7, line };
        let text = wire(&note);
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","method":"build.log","params":{"line":"hi","seq":4,"step":"motd","stream":"stdout","sub":7,"ts":"2026-12-01T10:00:00Z"}}"#
        );
        let back: Notification = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.decode::<LogNote>(), Some(note));
        assert_eq!(back.decode::<LogEnd>(), None);
        let end = |state, unsubscribed| LogEnd {
            sub: 7,
            state,
            lines: 5,
            unsubscribed,
        };
        assert_eq!(
            wire(&end(Some(crate::build::BuildState::TimedOut), false)),
            r#"{"jsonrpc":"2.0","method":"build.log.end","params":{"lines":5,"state":"timed_out","sub":7,"unsubscribed":false}}"#
        );
        assert_eq!(
            wire(&end(None, true)),
            r#"{"jsonrpc":"2.0","method":"build.log.end","params":{"lines":5,"state":null,"sub":7,"unsubscribed":true}}"#
        );
        assert_eq!(
            wire(&ImageProgress {
                line: "==> x".into()
            }),
            r#"{"jsonrpc":"2.0","method":"image.progress","params":{"line":"==> x"}}"#
        );
    }

    #[test]
    fn events_keep_their_json() {
        let check = |kind: EventKind, json: &str| {
            let event = Event { sub: 3, kind };
            let text = wire(&event);
            assert_eq!(
                text,
                format!(r#"{{"jsonrpc":"2.0","method":"event","params":{json}}}"#)
            );
            let back: Notification = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.decode::<Event>(), Some(event));
        };
        check(EventKind::Resync, r#"{"kind":"resync","sub":3}"#);
        check(
            EventKind::Template {
                name: "web".into(),
                template: None,
            },
            r#"{"kind":"template","name":"web","sub":3}"#,
        );
        let summary: TemplateSummary = serde_json::from_str(
            r#"{"name":"web","os":"debian-12","revision":2,"updated_at":"2026-12-01T10:00:00Z"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        check(
            EventKind::Template {
                name: "web".into(),
                template: Some(summary),
            },
            r#"{"kind":"template","name":"web","sub":3,"template":{"applications":[],"name":"web","os":"debian-12","revision":2,"updated_at":"2026-12-01T10:00:00Z"}}"#,
        );
        let build: crate::build::Build = serde_json::from_str(
            r#"{"id":9,"project":"default","template":"web","revision":2,"image_name":"w1",
                "base_image":"debian-12","state":"queued","steps":[],
                "created_at":"2026-12-01T10:00:00Z","queue_position":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        check(
            EventKind::Build {
                build: Box::new(build),
            },
            r#"{"build":{"base_image":"debian-12","created_at":"2026-12-01T10:00:00Z","id":9,"image_name":"w1","message":"","project":"default","queue_position":1,"revision":2,"run_outputs":[],"state":"queued","steps":[],"template":"web"},"kind":"build","sub":3}"#,
        );
    }

    #[test]
    fn ids_serialize_as_written() {
        let raw: Box<RawValue> =
            RawValue::from_string("123456789012345678901234567890".into()).unwrap_or_default();
        let id = Id::from_raw(&raw).unwrap_or_else(Id::null);
        let line = serde_json::to_string(&Response::ok(id, Value::Null)).unwrap_or_default();
        assert!(
            line.contains(r#""id":123456789012345678901234567890"#),
            "{line}"
        );
        // The client reads its own (u64) ids back through untagged ServerMessage.
        let back: ServerMessage = serde_json::from_str(r#"{"jsonrpc":"2.0","id":42,"result":{}}"#)
            .unwrap_or_else(|e| {
                panic!("{e}");
            });
        assert!(matches!(back, ServerMessage::Response(r) if r.id.as_u64() == Some(42)));
    }
}
