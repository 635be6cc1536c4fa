//! Azure VM Image Builder templates in and out: [`import`] maps a
//! `Microsoft.VirtualMachineImages/imageTemplates` resource (bare, or inside an ARM deployment)
//! to a kiln [`Template`], listing as warnings everything it could not carry over; [`export`]
//! writes a template back as a bare resource. Pure functions: the CLI's `--dry-run` and kilnd's
//! `template.import_azure` share them.

mod export;
mod expr;
mod import;
mod sections;
pub mod tables;

pub use export::{export, API_VERSION};
pub use import::{import, USER_SCRIPT_STEP};

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// Something of the Azure template that kiln dropped or changed, and where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A template mapped from Azure, with what did not map.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub template: Template,
    pub warnings: Vec<Warning>,
}

/// Where `kiln` writes a VHD target's file when the Azure template does not say (it cannot: an
/// Azure VHD goes to a storage account): `/var/lib/kiln/exports/RUN_OUTPUT_NAME.vhd`.
pub fn default_vhd_path(run_output_name: &str) -> String {
    format!("/var/lib/kiln/exports/{run_output_name}.vhd")
}
