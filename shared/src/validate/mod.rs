//! Template validation: every rule of DESIGN.md's template format, all violations at once, each
//! with its field path.
//!
//! Paths name fields the way a person finds them in the TOML: `name`, `vm.cpus`,
//! `customize[2].destination`, `validate.in_vm[0].name`, `applications[1]`, `tags.owner`.
//! Checks that need the outside world (does the source image exist, is it at least as large as
//! `vm.os_disk_gb`, does a local file exist, is the name unique in the project) happen when the
//! template is stored or built, not here: this module does no I/O.
//!
//! Every string and list has a bound, so that a template costs kilnd a known amount to check,
//! store and run, and a report of its violations stays short.

mod distribute;
mod fields;
mod paths;
mod steps;

pub use crate::names::MAX_NAME_BYTES;
pub use fields::is_os_id;
pub use paths::{check_file_path, PathError};
pub use steps::parse_duration;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::AppCatalog;
use crate::names;
use crate::template::Template;
use distribute::check_distribute;
use fields::{
    check_applications, check_build_timeout, check_description, check_min_disk, check_os,
    check_shebang, check_size, check_source, check_tags, check_trigger, check_vm,
};
use steps::{check_script_text, check_steps};

/// One broken rule: where (`customize[2].destination`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Largest template, as JSON (the wire form).
pub const MAX_TEMPLATE_JSON_BYTES: usize = 1 << 20;
/// Largest `user_script`, and largest inline command.
pub const MAX_SCRIPT_BYTES: usize = 256 << 10;
/// Most steps in `customize`, and most checks in `validate.in_vm`.
pub const MAX_STEPS: usize = 256;
/// Most commands in one shell step's `inline`.
pub const MAX_INLINE_COMMANDS: usize = 1000;
/// Most tags (Azure's limit).
pub const MAX_TAGS: usize = 50;
/// Most applications (the catalog has far fewer; each may be listed once).
pub const MAX_APPLICATIONS: usize = 64;
/// Most distribute targets.
pub const MAX_TARGETS: usize = 32;
/// Most projects one gallery target shares with.
pub const MAX_SHARE_WITH: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Longest os id and source version.
pub const MAX_OS_BYTES: usize = 64;
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest path or URL (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most violations one report lists; one more says how many were left out.
pub const MAX_VIOLATIONS: usize = 200;
/// Shortest build timeout a template may ask for; 0 means
/// [`DEFAULT_BUILD_TIMEOUT_MINUTES`](crate::template::DEFAULT_BUILD_TIMEOUT_MINUTES).
pub const MIN_BUILD_TIMEOUT_MINUTES: u32 = 6;
pub const MAX_BUILD_TIMEOUT_MINUTES: u32 = 960;
/// Upper bound for `min_disk_gb` and `vm.os_disk_gb` (64 TiB).
pub const MAX_DISK_GB: u32 = 65536;
pub const MAX_CPUS: u32 = 64;
pub const MIN_MEMORY_MB: u32 = 256;
pub const MAX_MEMORY_MB: u32 = 262144;
/// Longest customize step or run output name.
pub const MAX_STEP_NAME_LEN: usize = 64;
pub const EXPORT_FORMATS: [&str; 4] = ["qcow2", "raw", "vhd", "vmdk"];
/// Longest tag key and value (Azure's limits).
pub const MAX_TAG_KEY_BYTES: usize = 512;
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// How long a reboot step waits for the VM when it gives no `timeout`.
pub const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Longest reboot `timeout`: a VM that needs more than an hour to come back is broken, and a
/// larger value is more likely a unit typo (`300m` for `300s`).
pub const MAX_REBOOT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Checks every rule that does not need the store or the build host; uniqueness of the name
/// within a project is the store's to check. Returns every violation, in template order; empty
/// means valid.
pub fn validate(template: &Template, apps: &AppCatalog) -> Vec<Violation> {
    let mut r = Report::default();
    check_size(template, &mut r);
    check_name_at(&template.name, "name", &mut r);
    check_description(template.description.as_deref(), &mut r);
    let os_ok = check_os(&template.os, &mut r);
    check_applications(template, os_ok, apps, &mut r);
    check_min_disk(template.min_disk_gb, &mut r);
    check_build_timeout(template.build_timeout_minutes, &mut r);
    if let Some(script) = &template.user_script {
        check_script_text(script, "user_script", &mut r);
        check_shebang(script, "user_script", &mut r);
    }
    check_source(template, &mut r);
    check_vm(template, &mut r);
    check_steps(&template.customize, "customize", &mut r);
    check_steps(&template.validate.in_vm, "validate.in_vm", &mut r);
    check_distribute(&template.distribute, &mut r);
    check_tags(template, &mut r);
    check_trigger(template, &mut r);
    r.finish()
}

#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
    left_out: usize,
}

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.violations.len() == MAX_VIOLATIONS {
            self.left_out += 1;
            return;
        }
        self.violations.push(Violation {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish(mut self) -> Vec<Violation> {
        if self.left_out > 0 {
            self.violations.push(Violation {
                path: String::new(),
                message: format!(
                    "{} more violations are not listed; fix these and validate again",
                    self.left_out
                ),
            });
        }
        self.violations
    }

    /// Adds a violation when `list` has more than `max` entries; true when it is within bounds,
    /// so that the entries are worth checking one by one.
    fn bounded<T>(&mut self, list: &[T], max: usize, path: &str, what: &str) -> bool {
        if list.len() <= max {
            return true;
        }
        self.add(
            path,
            format!(
                "has {} {what}; at most {max} are allowed (the entries were not checked)",
                list.len()
            ),
        );
        false
    }
}

/// Shortens user text quoted in a message so that a 10 kB value does not flood the report.
fn excerpt(s: &str) -> String {
    names::quoted(s)
}

/// A name kiln stores or looks up (the template's, a gallery's, a project's): the one rule of
/// [`names`].
fn check_name_at(name: &str, path: &str, r: &mut Report) {
    if let Err(e) = names::check(name) {
        r.add(path, e.to_string());
    }
}
