//! The image template model: one serde model, TOML for people and JSON on the wire.
//!
//! Parsing only checks shapes (types, known fields); every rule about values lives in
//! [`crate::validate`], so that all violations can be reported at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

impl Template {
    /// The build timeout in minutes with 0 resolved to the default.
    pub fn effective_build_timeout_minutes(&self) -> u32 {
        match self.build_timeout_minutes {
            0 => DEFAULT_BUILD_TIMEOUT_MINUTES,
            m => m,
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
            Violation {
                path: if path == "." { String::new() } else { path },
                message: with_line(inner.message(), line_of(inner.span())),
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

/// One customize step, run in order inside the build VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Customizer {
    Shell {
        #[serde(default)]
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inline: Option<Vec<String>>,
        /// A local path (relative to the template file) or an https URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    File {
        #[serde(default)]
        name: String,
        #[serde(default)]
        source: String,
        #[serde(default)]
        destination: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    Reboot {
        #[serde(default)]
        name: String,
        /// How long to wait for the VM to come back, e.g. `5m` or `90s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
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

    pub fn kind(&self) -> &'static str {
        match self {
            Customizer::Shell { .. } => "shell",
            Customizer::File { .. } => "file",
            Customizer::Reboot { .. } => "reboot",
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

/// Where a finished image goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribute {
    /// A private image in the project's catalog.
    Image {
        #[serde(default)]
        run_output_name: String,
    },
    Gallery {
        #[serde(default)]
        run_output_name: String,
        #[serde(default)]
        gallery: String,
        #[serde(default)]
        image: String,
        #[serde(default = "auto")]
        version: String,
        #[serde(default)]
        exclude_from_latest: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        share_with: Vec<String>,
    },
    /// A file in one of the export formats.
    Export {
        #[serde(default)]
        run_output_name: String,
        #[serde(default)]
        format: String,
        #[serde(default)]
        path: String,
    },
}

fn auto() -> String {
    "auto".into()
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
