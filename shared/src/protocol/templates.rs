//! Params and results of the `template.*` methods.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::Template;
use crate::validate::Violation;

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

/// Params of `template.import_azure`: an Azure Image Builder template (bare resource or ARM
/// deployment) and what `kiln template import --azure` takes besides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateImportAzureParams {
    pub azure: Value,
    /// An ARM parameters file (`{"parameters": {"x": {"value": ...}}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// Map and validate only; store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of `template.import_azure`: the mapped template, what did not map, and (unless a dry
/// run) the stored template's name and revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateImportAzureResult {
    pub template: Template,
    pub warnings: Vec<crate::azure::Warning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<TemplateRef>,
}
