//! The image template model: one serde model, TOML for people and JSON on the wire.
//!
//! Parsing only checks shapes (types, known fields); every rule about values lives in
//! [`crate::validate`], so that all violations can be reported at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::build::StepKind;
use crate::validate::Violation;

/// Build timeout used when a template says 0.
pub const DEFAULT_BUILD_TIMEOUT_MINUTES: u32 = 240;

/// An image template as stored and sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<String>,
    #[serde(default)]
    pub min_disk_gb: u32,
    #[serde(default)]
    pub build_timeout_minutes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_script: Option<String>,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub vm: Vm,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customize: Vec<Customizer>,
    #[serde(default)]
    pub generalize: Generalize,
    #[serde(default)]
    pub error_handling: ErrorHandling,
    #[serde(default)]
    pub validate: ValidateSpec,
    #[serde(default)]
    pub distribute: Vec<Distribute>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Trigger::is_unset")]
    pub trigger: Trigger,
}

impl Template {
    /// The build timeout in minutes with 0 resolved to the default.
    pub fn effective_build_timeout_minutes(&self) -> u32 {
        match self.build_timeout_minutes {
            0 => DEFAULT_BUILD_TIMEOUT_MINUTES,
            m => m,
        }
    }

    /// What the template's `[trigger]` does, in a few words (for `kiln template show` and the
    /// dashboard); None when it has none.
    pub fn trigger_summary(&self) -> Option<String> {
        let trigger = &self.trigger;
        if trigger.on_base_change {
            let pinned = self.source.image.contains('/') && self.source.version != "latest";
            Some(if pinned {
                format!(
                    "on, but never fires: the source is pinned to {}:{}",
                    self.source.image, self.source.version
                )
            } else {
                format!(
                    "a new version of {} builds {}",
                    self.source.image, trigger.image_name
                )
            })
        } else if trigger.is_unset() {
            None
        } else {
            Some(format!(
                "off (image name {}; kiln template trigger {} --on)",
                trigger.image_name, self.name
            ))
        }
    }

    /// Parses a template from TOML; a shape error names the field path and the line.
    pub fn from_toml(text: &str) -> Result<Template, Violation> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let with_line = |message: &str, line: Option<usize>| match line {
            Some(l) => format!("{message} (line {l})"),
            None => message.to_string(),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| Violation {
            path: String::new(),
            message: with_line(&format!("invalid TOML: {}", e.message()), line_of(e.span())),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // toml places an error about a whole `[[customize]]` element at the array's
            // first header; that element's own header is the line to name.
            let line = element_line(text, &path).or_else(|| line_of(inner.span()));
            Violation {
                path: if path == "." { String::new() } else { path },
                message: with_line(inner.message(), line),
            }
        })
    }

    /// Parses a template from JSON (the wire form); a shape error names the field path.
    pub fn from_json_value(value: serde_json::Value) -> Result<Template, Violation> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Violation {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Renders the template as TOML for people.
    pub fn to_toml(&self) -> String {
        // The model only holds strings, integers, bools, arrays and tables: serialization
        // cannot fail, but fall back to JSON rather than panic if that ever changes.
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# could not render as TOML: {e}\n"))
    }
}

/// The default base image of a template; a build may pick another compatible one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub image: String,
    #[serde(default = "latest")]
    pub version: String,
}

fn latest() -> String {
    "latest".into()
}

impl Default for Source {
    fn default() -> Self {
        Source {
            image: String::new(),
            version: latest(),
        }
    }
}

/// Builds kilnd queues by itself: with `on_base_change`, one build of the template's latest
/// revision whenever its source gets a new version (a gallery version `latest` now resolves to,
/// or a new image of the source's name), named by `image_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default)]
    pub on_base_change: bool,
    /// The triggered build's image name; `{version}`, `{date}` and `{build}` are replaced (see
    /// [`Trigger::image_name_for`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_name: String,
}

/// The placeholders of `trigger.image_name`.
pub const TRIGGER_PLACEHOLDERS: [&str; 3] = ["version", "date", "build"];

impl Trigger {
    pub fn is_unset(&self) -> bool {
        *self == Trigger::default()
    }

    /// `image_name` with `{version}` (the new base version: a gallery version such as `1.0.3`,
    /// or a plain image's creation time as YYYYMMDDHHMM, UTC), `{date}` (today, UTC, YYYYMMDD)
    /// and `{build}` (the triggered build's id) replaced. `Err` says what is wrong with the
    /// pattern: an unknown placeholder or a brace without its partner.
    pub fn image_name_for(&self, version: &str, date: &str, build: u64) -> Result<String, String> {
        let mut out = String::with_capacity(self.image_name.len() + 16);
        let mut rest = self.image_name.as_str();
        while let Some(at) = rest.find(['{', '}']) {
            out.push_str(&rest[..at]);
            if rest[at..].starts_with('}') {
                return Err(format!(
                    "has a '}}' at byte {} with no '{{' before it; placeholders are {}",
                    self.image_name.len() - rest.len() + at,
                    placeholder_list()
                ));
            }
            let Some(end) = rest[at..].find('}') else {
                return Err(format!(
                    "has a '{{' at byte {} that is never closed; placeholders are {}",
                    self.image_name.len() - rest.len() + at,
                    placeholder_list()
                ));
            };
            match &rest[at + 1..at + end] {
                "version" => out.push_str(version),
                "date" => out.push_str(date),
                "build" => out.push_str(&build.to_string()),
                other => {
                    return Err(format!(
                        "has the placeholder {}, which kiln does not know; use {}",
                        crate::names::quoted(&format!("{{{other}}}")),
                        placeholder_list()
                    ))
                }
            }
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn placeholder_list() -> String {
    TRIGGER_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
}

/// Resources of the build VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default)]
    pub os_disk_gb: u32,
}

fn default_cpus() -> u32 {
    2
}
fn default_memory_mb() -> u32 {
    2048
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            cpus: default_cpus(),
            memory_mb: default_memory_mb(),
            os_disk_gb: 0,
        }
    }
}

/// The line of the `[[KEY]]` header of element `path` = `KEY[N]` of an array of tables.
fn element_line(text: &str, path: &str) -> Option<usize> {
    let (key, index) = path.strip_suffix(']')?.split_once('[')?;
    let index: usize = index.parse().ok()?;
    let header = format!("[[{key}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.split('#').next().unwrap_or_default();
            l.chars().filter(|c| !c.is_whitespace()).collect::<String>() == header
        })
        .nth(index)
        .map(|(n, _)| n + 1)
}

/// One customize step, run in order inside the build VM.
///
/// Read through [`StepFields`], a plain struct, rather than as a serde-tagged enum: a tagged enum
/// buffers its table, and an error inside it would lose the field's path and line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "StepFields")]
pub enum Customizer {
    Shell {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        inline: Option<Vec<String>>,
        /// A local path (relative to the template file) or an https URL.
        #[serde(skip_serializing_if = "Option::is_none")]
        script: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    File {
        name: String,
        source: String,
        destination: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    Reboot {
        name: String,
        /// How long to wait for the VM to come back, e.g. `5m` or `90s`.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
}

impl Customizer {
    pub fn name(&self) -> &str {
        match self {
            Customizer::Shell { name, .. }
            | Customizer::File { name, .. }
            | Customizer::Reboot { name, .. } => name,
        }
    }

    /// What kind of step this is, whose name is also its `type`: `shell`, `file` or `reboot`.
    /// (A build runs the checks of `validate.in_vm` as [`StepKind::Validate`] steps.)
    pub fn kind(&self) -> StepKind {
        match self {
            Customizer::Shell { .. } => StepKind::Shell,
            Customizer::File { .. } => StepKind::File,
            Customizer::Reboot { .. } => StepKind::Reboot,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Generalize {
    #[serde(default)]
    pub skip: bool,
}

/// What to do with the build VM when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// End the VM and remove every resource.
    #[default]
    Cleanup,
    /// Keep the VM running so a person can attach and look.
    Abort,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ErrorHandling {
    #[serde(default)]
    pub on_customizer_error: OnError,
    #[serde(default)]
    pub on_validation_error: OnError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    #[serde(default)]
    pub boot_test: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_vm: Vec<Customizer>,
}

/// Where a finished image goes. Read through [`TargetFields`], as [`Customizer`] is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "TargetFields")]
pub enum Distribute {
    /// A private image in the project's catalog.
    Image { run_output_name: String },
    Gallery {
        run_output_name: String,
        gallery: String,
        image: String,
        version: String,
        exclude_from_latest: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        share_with: Vec<String>,
    },
    /// A file in one of the export formats.
    Export {
        run_output_name: String,
        format: String,
        path: String,
        /// Replace a file already at `path` (without it, an existing file fails the export).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overwrite: bool,
    },
}

fn auto() -> String {
    "auto".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepType {
    Shell,
    File,
    Reboot,
}

/// Every field any customize step has; `type` says which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFields {
    #[serde(rename = "type")]
    kind: StepType,
    #[serde(default)]
    name: String,
    inline: Option<Vec<String>>,
    script: Option<String>,
    sha256: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    timeout: Option<String>,
}

/// `Err` naming the first of `fields` that is set, as not one of a `kind` step's or target's.
fn none_set(kind: &str, what: &str, fields: &[(&str, bool)]) -> Result<(), String> {
    match fields.iter().find(|(_, set)| *set) {
        Some((field, _)) => {
            let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            Err(format!("`{field}` is not a field of {a} {kind} {what}"))
        }
        None => Ok(()),
    }
}

impl TryFrom<StepFields> for Customizer {
    type Error = String;

    fn try_from(f: StepFields) -> Result<Customizer, String> {
        // The step, unless one of `others` (fields of other kinds of step) is set.
        let step = |parsed: Customizer, others: &[(&str, bool)]| {
            none_set(parsed.kind().as_str(), "step", others).map(|()| parsed)
        };
        match f.kind {
            StepType::Shell => step(
                Customizer::Shell {
                    name: f.name,
                    inline: f.inline,
                    script: f.script,
                    sha256: f.sha256,
                },
                &[
                    ("source", f.source.is_some()),
                    ("destination", f.destination.is_some()),
                    ("timeout", f.timeout.is_some()),
                ],
            ),
            StepType::File => step(
                Customizer::File {
                    name: f.name,
                    source: f.source.unwrap_or_default(),
                    destination: f.destination.unwrap_or_default(),
                    sha256: f.sha256,
                },
                &[
                    ("inline", f.inline.is_some()),
                    ("script", f.script.is_some()),
                    ("timeout", f.timeout.is_some()),
                ],
            ),
            StepType::Reboot => step(
                Customizer::Reboot {
                    name: f.name,
                    timeout: f.timeout,
                },
                &[
                    ("inline", f.inline.is_some()),
                    ("script", f.script.is_some()),
                    ("sha256", f.sha256.is_some()),
                    ("source", f.source.is_some()),
                    ("destination", f.destination.is_some()),
                ],
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetType {
    Image,
    Gallery,
    Export,
}

/// Every field any distribute target has; `type` says which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    #[serde(rename = "type")]
    kind: TargetType,
    #[serde(default)]
    run_output_name: String,
    gallery: Option<String>,
    image: Option<String>,
    version: Option<String>,
    exclude_from_latest: Option<bool>,
    share_with: Option<Vec<String>>,
    format: Option<String>,
    path: Option<String>,
    overwrite: Option<bool>,
}

impl TryFrom<TargetFields> for Distribute {
    type Error = String;

    fn try_from(f: TargetFields) -> Result<Distribute, String> {
        let target = |kind, fields: &[(&str, bool)]| none_set(kind, "target", fields);
        let gallery_fields = [
            ("gallery", f.gallery.is_some()),
            ("image", f.image.is_some()),
            ("version", f.version.is_some()),
            ("exclude_from_latest", f.exclude_from_latest.is_some()),
            ("share_with", f.share_with.is_some()),
        ];
        let export_fields = [
            ("format", f.format.is_some()),
            ("path", f.path.is_some()),
            ("overwrite", f.overwrite.is_some()),
        ];
        Ok(match f.kind {
            TargetType::Image => {
                target("image", &gallery_fields)?;
                target("image", &export_fields)?;
                Distribute::Image {
                    run_output_name: f.run_output_name,
                }
            }
            TargetType::Gallery => {
                target("gallery", &export_fields)?;
                Distribute::Gallery {
                    run_output_name: f.run_output_name,
                    gallery: f.gallery.unwrap_or_default(),
                    image: f.image.unwrap_or_default(),
                    version: f.version.unwrap_or_else(auto),
                    exclude_from_latest: f.exclude_from_latest.unwrap_or_default(),
                    share_with: f.share_with.unwrap_or_default(),
                }
            }
            TargetType::Export => {
                target("export", &gallery_fields)?;
                Distribute::Export {
                    run_output_name: f.run_output_name,
                    format: f.format.unwrap_or_default(),
                    path: f.path.unwrap_or_default(),
                    overwrite: f.overwrite.unwrap_or_default(),
                }
            }
        })
    }
}

impl Distribute {
    pub fn run_output_name(&self) -> &str {
        match self {
            Distribute::Image { run_output_name }
            | Distribute::Gallery {
                run_output_name, ..
            }
            | Distribute::Export {
                run_output_name, ..
            } => run_output_name,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = r#"
name = "web"
os = "debian-12"
source = { image = "debian-12" }
"#;

    /// The `overwrite` of the first distribute target parsed from `target` (a TOML table body),
    /// or the parse error's message; the JSON wire form must agree.
    fn overwrite_of(target: &str) -> Result<bool, String> {
        let toml = format!("{BASE}\n[[distribute]]\n{target}\n");
        let t = Template::from_toml(&toml).map_err(|v| v.message)?;
        let json = serde_json::to_value(&t).unwrap();
        let back = Template::from_json_value(json).map_err(|v| v.message)?;
        assert_eq!(back, t, "JSON round trip");
        match &t.distribute[0] {
            Distribute::Export { overwrite, .. } => Ok(*overwrite),
            other => Err(format!("not an export: {other:?}")),
        }
    }

    /// A step's `type` is its kind's name ([`StepKind::as_str`], the one table of those names),
    /// read and written.
    #[test]
    fn step_types_are_their_kinds_names() {
        let name = || "s".to_string();
        for step in [
            Customizer::Shell {
                name: name(),
                inline: Some(vec!["true".into()]),
                script: None,
                sha256: None,
            },
            Customizer::File {
                name: name(),
                source: "/srv/f".into(),
                destination: "/tmp/f".into(),
                sha256: None,
            },
            Customizer::Reboot {
                name: name(),
                timeout: None,
            },
        ] {
            let json = serde_json::to_value(&step).unwrap();
            assert_eq!(json["type"], step.kind().as_str(), "{json}");
            assert_eq!(serde_json::from_value::<Customizer>(json).unwrap(), step);
        }
    }

    #[test]
    fn exports_overwrite_only_when_told() {
        let export = r#"type = "export"
run_output_name = "f"
format = "raw"
path = "/srv/web.raw""#;
        assert_eq!(overwrite_of(export), Ok(false));
        assert_eq!(
            overwrite_of(&format!("{export}\noverwrite = true")),
            Ok(true)
        );
        assert_eq!(
            overwrite_of(&format!("{export}\noverwrite = false")),
            Ok(false)
        );
        let err = overwrite_of("type = \"image\"\nrun_output_name = \"i\"\noverwrite = true");
        assert!(err
            .unwrap_err()
            .contains("`overwrite` is not a field of an image target"),);
        let err = overwrite_of(&format!("{export}\noverwrite = \"yes\"")).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let json = serde_json::json!({"type": "export", "run_output_name": "f",
            "format": "raw", "path": "/x", "overwrite": true});
        let target: Distribute = serde_json::from_value(json).unwrap();
        assert!(matches!(
            target,
            Distribute::Export {
                overwrite: true,
                ..
            }
        ));
    }
}
