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

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::AppCatalog;
use crate::names;
use crate::template::{Customizer, Distribute, Template, DEFAULT_BUILD_TIMEOUT_MINUTES};

pub use crate::names::MAX_NAME_BYTES;

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
/// Shortest build timeout a template may ask for; 0 means [`DEFAULT_BUILD_TIMEOUT_MINUTES`].
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

/// Why a path a template or a request names cannot be used as given. Paths must be absolute and
/// normalized: kilnd does not know the client's working directory, and a `..` or a symlinked
/// directory would make the path mean something else than what was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is empty: write the absolute path of a file")]
    Empty,
    #[error("{shown} is {len} bytes; a path has at most {MAX_PATH_BYTES}")]
    TooLong { shown: String, len: usize },
    #[error(
        "{shown} contains U+{code:04X}, a control character (such as NUL or a newline):          remove it"
    )]
    Control { shown: String, code: u32 },
    #[error(
        "{shown} is relative, and kilnd cannot know what it is relative to: write the absolute \
         path (the kiln CLI resolves paths in a template file against the file's directory)"
    )]
    Relative { shown: String },
    #[error("{shown} has a {component:?} component: write the path without '.', '..' or '//'")]
    NotNormal {
        shown: String,
        component: &'static str,
    },
    #[error("{shown} ends with '/', so it names a directory: name the file")]
    Directory { shown: String },
}

/// Checks the path of a file a template or request names: absolute, normalized (no `.` or `..`
/// component, no `//`), without control characters, not ending in `/`, at most
/// [`MAX_PATH_BYTES`]. Whether it exists and is a regular file is for whoever opens it.
pub fn check_file_path(path: &str) -> Result<(), PathError> {
    let shown = || names::quoted(path);
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            shown: shown(),
            len: path.len(),
        });
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(PathError::Control {
            shown: shown(),
            code: c.into(),
        });
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Relative { shown: shown() });
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(PathError::Directory { shown: shown() });
    }
    for component in rest.split('/') {
        let bad = match component {
            "" => "//",
            "." => ".",
            ".." => "..",
            _ => continue,
        };
        return Err(PathError::NotNormal {
            shown: shown(),
            component: bad,
        });
    }
    Ok(())
}

/// Whether `s` is an OS id as the catalog uses them: lowercase distribution and version joined by
/// dashes, e.g. `debian-12`, `ubuntu-24.04`. It starts with a letter, uses only `a-z`, `0-9`, `.`
/// and `-`, and has at least two non-empty dash-separated parts.
pub fn is_os_id(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.contains('-')
        && s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        })
}

/// Parses a reboot timeout. Accepted: a whole number of seconds (`300`), or one or more
/// `<number><unit>` groups with units `h`, `m` and `s` in that order, each at most once (`90s`,
/// `5m`, `1h`, `1h30m`). No spaces, signs or fractions. Returns `None` for anything else or on
/// overflow. `0s` parses to zero; [`validate`] rejects a zero timeout, and one above
/// [`MAX_REBOOT_TIMEOUT`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    let mut total: u64 = 0;
    let mut previous_unit = u64::MAX;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits) {
            Some(b'h') => 3600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => return None,
        };
        if unit >= previous_unit {
            return None;
        }
        previous_unit = unit;
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    Some(Duration::from_secs(total))
}

/// Step names and run output names: `[A-Za-z0-9._-]{1,64}`.
fn is_step_name(s: &str) -> bool {
    (1..=MAX_STEP_NAME_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A gallery image version: `MAJOR.MINOR.PATCH`, digits only, no leading zeros (so that each
/// version has one spelling), each part fitting in 32 bits.
fn is_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u32>().is_ok()
        })
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

fn check_size(template: &Template, r: &mut Report) {
    /// Counts bytes instead of keeping them.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // The model holds strings, numbers, lists and maps with string keys: serializing it cannot
    // fail, and if it ever did, the other bounds still hold.
    if serde_json::to_writer(&mut count, template).is_ok() && count.0 > MAX_TEMPLATE_JSON_BYTES {
        r.add(
            "",
            format!(
                "the template is {} bytes as JSON; at most {MAX_TEMPLATE_JSON_BYTES} (1 MiB) are \
                 allowed: move long scripts into files (a shell step's script)",
                count.0
            ),
        );
    }
}

fn check_description(description: Option<&str>, r: &mut Report) {
    let Some(d) = description else { return };
    if d.len() > MAX_DESCRIPTION_BYTES {
        r.add(
            "description",
            format!(
                "is {} bytes; at most {MAX_DESCRIPTION_BYTES} are allowed",
                d.len()
            ),
        );
    }
    if let Some(c) = d
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        r.add(
            "description",
            format!(
                "contains U+{:04X}, a control character: only newlines and tabs are allowed",
                u32::from(c)
            ),
        );
    }
}

/// A script's or inline command's text: bounded, and without NUL (which no shell passes on).
fn check_script_text(text: &str, path: &str, r: &mut Report) {
    if text.len() > MAX_SCRIPT_BYTES {
        r.add(
            path,
            format!(
                "is {} bytes; at most {MAX_SCRIPT_BYTES} (256 KiB) are allowed: put a longer \
                 script in a file and run it with a shell step's script",
                text.len()
            ),
        );
    }
    if let Some(at) = text.find('\0') {
        r.add(
            path,
            format!("contains a NUL byte (at byte {at}), which a shell cannot run: remove it"),
        );
    }
}

/// Returns whether the os is well formed, so that application checks can rely on it.
fn check_os(os: &str, r: &mut Report) -> bool {
    if os.is_empty() {
        r.add(
            "os",
            "required: the OS as distribution-version, e.g. \"debian-12\" or \"ubuntu-24.04\"",
        );
        return false;
    }
    if os.len() > MAX_OS_BYTES {
        r.add(
            "os",
            format!(
                "{} is {} bytes; an OS id has at most {MAX_OS_BYTES}",
                excerpt(os),
                os.len()
            ),
        );
        return false;
    }
    if !is_os_id(os) {
        r.add(
            "os",
            format!(
                "{} is not an OS id: write distribution-version in lowercase letters, digits, \
                 dots and dashes, e.g. \"debian-12\" or \"ubuntu-24.04\"",
                excerpt(os)
            ),
        );
        return false;
    }
    true
}

fn check_applications(template: &Template, os_ok: bool, apps: &AppCatalog, r: &mut Report) {
    if !r.bounded(
        &template.applications,
        MAX_APPLICATIONS,
        "applications",
        "applications",
    ) {
        return;
    }
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    let mut selected = Vec::new();
    for (i, name) in template.applications.iter().enumerate() {
        let path = format!("applications[{i}]");
        if let Some(j) = first_at.get(name.as_str()) {
            r.add(
                path,
                format!("{name:?} is already selected at applications[{j}]; list it once"),
            );
            continue;
        }
        first_at.insert(name, i);
        let Some(app) = apps.get(name) else {
            let known: Vec<&str> = apps.names().collect();
            r.add(
                path,
                format!(
                    "{} is not in the application catalog; known applications: {}",
                    excerpt(name),
                    known.join(", ")
                ),
            );
            continue;
        };
        if os_ok && !app.supports(&template.os) {
            r.add(
                path,
                format!(
                    "{name} cannot be installed on os {:?}; it supports {}",
                    template.os,
                    app.os.join(", ")
                ),
            );
        }
        selected.push((i, name.as_str()));
    }
    for (k, &(i, a)) in selected.iter().enumerate() {
        for &(j, b) in &selected[k + 1..] {
            if apps.conflicts_between(a, b) {
                r.add(
                    "applications",
                    format!(
                        "{a} (applications[{i}]) and {b} (applications[{j}]) conflict and \
                         cannot be installed together; select only one of them"
                    ),
                );
            }
        }
    }
}

fn check_min_disk(gb: u32, r: &mut Report) {
    if gb > MAX_DISK_GB {
        r.add(
            "min_disk_gb",
            format!("{gb} is too large: use 0 (the size of the source) up to {MAX_DISK_GB}"),
        );
    }
}

fn check_build_timeout(minutes: u32, r: &mut Report) {
    if minutes != 0 && !(MIN_BUILD_TIMEOUT_MINUTES..=MAX_BUILD_TIMEOUT_MINUTES).contains(&minutes) {
        r.add(
            "build_timeout_minutes",
            format!(
                "{minutes} is out of range: use {MIN_BUILD_TIMEOUT_MINUTES} to \
                 {MAX_BUILD_TIMEOUT_MINUTES} minutes, or 0 for the default of \
                 {DEFAULT_BUILD_TIMEOUT_MINUTES}"
            ),
        );
    }
}

fn check_shebang(script: &str, path: &str, r: &mut Report) {
    let first = script.lines().next().unwrap_or("");
    if !first.starts_with("#!") {
        r.add(
            path,
            format!(
                "the first line must be a shebang such as \"#!/bin/bash\", not {}",
                excerpt(first)
            ),
        );
    }
}

fn check_source(template: &Template, r: &mut Report) {
    let source = &template.source;
    if source.image.trim().is_empty() {
        r.add(
            "source.image",
            "required: a public image such as \"debian-12\", or a private or shared image name",
        );
    } else {
        check_name_at(&source.image, "source.image", r);
    }
    if source.version.len() > MAX_VERSION_BYTES {
        r.add(
            "source.version",
            format!(
                "{} is {} bytes; a version has at most {MAX_VERSION_BYTES}",
                excerpt(&source.version),
                source.version.len()
            ),
        );
    } else if source.version.is_empty() {
        r.add(
            "source.version",
            "required: \"latest\" or a version of the source image",
        );
    } else if source.version.contains(char::is_whitespace) {
        r.add(
            "source.version",
            format!(
                "{} contains whitespace: use \"latest\" or a version without spaces",
                excerpt(&source.version)
            ),
        );
    }
}

fn check_vm(template: &Template, r: &mut Report) {
    let vm = &template.vm;
    if !(1..=MAX_CPUS).contains(&vm.cpus) {
        r.add(
            "vm.cpus",
            format!("{} is out of range: use 1 to {MAX_CPUS}", vm.cpus),
        );
    }
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&vm.memory_mb) {
        r.add(
            "vm.memory_mb",
            format!(
                "{} is out of range: use {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB",
                vm.memory_mb
            ),
        );
    }
    // 0 keeps the size of the source. A positive size must also be at least the source's, which
    // only the build knows once it has resolved the image: it is checked there.
    if vm.os_disk_gb > MAX_DISK_GB {
        r.add(
            "vm.os_disk_gb",
            format!(
                "{} is too large: use 0 (the size of the source) or up to {MAX_DISK_GB}",
                vm.os_disk_gb
            ),
        );
    }
}

/// Customize steps and in-VM checks share their rules; `list` is the path of the list.
fn check_steps(steps: &[Customizer], list: &str, r: &mut Report) {
    if !r.bounded(steps, MAX_STEPS, list, "steps") {
        return;
    }
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let name = step.name();
        if name.is_empty() {
            r.add(
                format!("{at}.name"),
                format!(
                    "required: name each step with 1 to {MAX_STEP_NAME_LEN} of A-Z a-z 0-9 . _ -, \
                     unique within {list}"
                ),
            );
        } else if !is_step_name(name) {
            r.add(
                format!("{at}.name"),
                format!(
                    "{} is not a valid step name: use 1 to {MAX_STEP_NAME_LEN} of A-Z a-z 0-9 . _ -",
                    excerpt(name)
                ),
            );
        } else if let Some(j) = first_at.get(name) {
            r.add(
                format!("{at}.name"),
                format!("{name:?} is already the name of {list}[{j}]; names must be unique within {list}"),
            );
        } else {
            first_at.insert(name, i);
        }
        match step {
            Customizer::Shell {
                inline,
                script,
                sha256,
                ..
            } => {
                match (inline, script) {
                    (None, None) => r.add(
                        at.clone(),
                        "a shell step needs one of inline (a list of commands) or script (an \
                         https:// URL or a local path)",
                    ),
                    (Some(_), Some(_)) => r.add(
                        at.clone(),
                        "a shell step takes exactly one of inline or script; it has both, \
                         remove one",
                    ),
                    _ => {}
                }
                if let Some(inline) = inline {
                    let path = format!("{at}.inline");
                    if inline.is_empty() {
                        r.add(
                            path,
                            "is empty: list at least one command, or use script instead",
                        );
                    } else if r.bounded(inline, MAX_INLINE_COMMANDS, &path, "commands") {
                        for (k, command) in inline.iter().enumerate() {
                            check_script_text(command, &format!("{path}[{k}]"), r);
                        }
                    }
                }
                if let Some(script) = script {
                    check_location(script, &format!("{at}.script"), r);
                }
                if let Some(sha) = sha256 {
                    if script.is_none() {
                        r.add(
                            format!("{at}.sha256"),
                            "only applies to script, which this step does not have; remove it",
                        );
                    } else {
                        check_sha256(sha, &format!("{at}.sha256"), r);
                    }
                }
            }
            Customizer::File {
                source,
                destination,
                sha256,
                ..
            } => {
                check_location(source, &format!("{at}.source"), r);
                check_destination(destination, &format!("{at}.destination"), r);
                if let Some(sha) = sha256 {
                    check_sha256(sha, &format!("{at}.sha256"), r);
                }
            }
            Customizer::Reboot { timeout, .. } => {
                if let Some(timeout) = timeout {
                    check_reboot_timeout(timeout, &format!("{at}.timeout"), r);
                }
            }
        }
    }
}

/// A script or file source: an https URL, or the absolute path of a local file (the CLI makes a
/// template file's relative paths absolute before it sends the template).
fn check_location(location: &str, path: &str, r: &mut Report) {
    if location.is_empty() {
        r.add(
            path,
            "required: an https:// URL or a local path (relative to the template file)",
        );
        return;
    }
    if location.len() > MAX_PATH_BYTES {
        r.add(
            path,
            format!(
                "{} is {} bytes; a URL or path has at most {MAX_PATH_BYTES}",
                excerpt(location),
                location.len()
            ),
        );
        return;
    }
    let Some((scheme, rest)) = location.split_once("://") else {
        if let Err(e) = check_file_path(location) {
            r.add(path, e.to_string());
        }
        return;
    };
    if scheme.eq_ignore_ascii_case("https") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() {
            r.add(
                path,
                format!("{} has no host: write https://HOST/PATH", excerpt(location)),
            );
        } else if location.contains(|c: char| c.is_whitespace() || c.is_control()) {
            r.add(
                path,
                format!(
                    "{} contains whitespace or a control character: percent-encode it (%20)",
                    excerpt(location)
                ),
            );
        }
    } else if scheme.eq_ignore_ascii_case("http") {
        r.add(
            path,
            "plain http:// is not allowed: use an https:// URL or a local path",
        );
    } else {
        r.add(
            path,
            format!(
                "{scheme}:// URLs are not supported: use an https:// URL or a local path \
                 (relative to the template file)"
            ),
        );
    }
}

fn check_sha256(sha: &str, path: &str, r: &mut Report) {
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        r.add(
            path,
            format!(
                "{} is not a SHA-256: write exactly 64 hex digits, as printed by `sha256sum FILE`",
                excerpt(sha)
            ),
        );
    }
}

/// File uploads go to /tmp only: Linux build VMs let the default user write there, and a shell
/// step moves the file on with sudo.
fn check_destination(destination: &str, path: &str, r: &mut Report) {
    const HINT: &str =
        "upload to a path under /tmp/, e.g. /tmp/motd, and move it with a shell step";
    if destination.is_empty() {
        r.add(path, format!("required: {HINT}"));
        return;
    }
    if let Err(e) = check_file_path(destination) {
        r.add(path, format!("{e}; {HINT}"));
        return;
    }
    if !destination.starts_with("/tmp/") {
        r.add(
            path,
            format!("{} is not under /tmp/: {HINT}", excerpt(destination)),
        );
    }
}

fn check_reboot_timeout(timeout: &str, path: &str, r: &mut Report) {
    match parse_duration(timeout) {
        None => r.add(
            path,
            format!(
                "{} is not a duration: write a number with a unit, e.g. \"90s\", \"5m\", \"1h\" \
                 or \"1h30m\" (a plain number means seconds)",
                excerpt(timeout)
            ),
        ),
        Some(d) if d.is_zero() => r.add(
            path,
            "must be longer than 0; leave it out for the default of 5m",
        ),
        Some(d) if d > MAX_REBOOT_TIMEOUT => {
            r.add(path, format!("{timeout:?} is too long: use at most 1h"))
        }
        Some(_) => {}
    }
}

fn check_distribute(targets: &[Distribute], r: &mut Report) {
    if !r.bounded(targets, MAX_TARGETS, "distribute", "targets") {
        return;
    }
    if targets.is_empty() {
        r.add(
            "distribute",
            "at least one target is required, e.g. [[distribute]] type = \"image\" \
             run_output_name = \"local\" to keep the image in kiln",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut export_paths: HashMap<&str, usize> = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let at = format!("distribute[{i}]");
        let name = target.run_output_name();
        if name.is_empty() {
            r.add(
                format!("{at}.run_output_name"),
                format!(
                    "required: 1 to {MAX_STEP_NAME_LEN} of A-Z a-z 0-9 . _ -, unique among the \
                     targets"
                ),
            );
        } else if !is_step_name(name) {
            r.add(
                format!("{at}.run_output_name"),
                format!(
                    "{} is not a valid run output name: use 1 to {MAX_STEP_NAME_LEN} of A-Z a-z \
                     0-9 . _ -",
                    excerpt(name)
                ),
            );
        } else if let Some(j) = names.get(name) {
            r.add(
                format!("{at}.run_output_name"),
                format!(
                    "{name:?} is already used by distribute[{j}]; run output names must be unique"
                ),
            );
        } else {
            names.insert(name, i);
        }
        match target {
            Distribute::Image { .. } => {}
            Distribute::Gallery {
                gallery,
                image,
                version,
                share_with,
                ..
            } => {
                if gallery.is_empty() {
                    r.add(
                        format!("{at}.gallery"),
                        "required: the name of the gallery to publish to",
                    );
                } else {
                    check_name_at(gallery, &format!("{at}.gallery"), r);
                }
                if image.is_empty() {
                    r.add(
                        format!("{at}.image"),
                        "required: the image definition in the gallery",
                    );
                } else {
                    check_name_at(image, &format!("{at}.image"), r);
                }
                if version != "auto" && !is_semver(version) {
                    r.add(
                        format!("{at}.version"),
                        format!(
                            "{} is not a version: use \"auto\" (next patch of the latest) or \
                             MAJOR.MINOR.PATCH in digits, e.g. \"1.2.3\" (no leading 'v' or zeros)",
                            excerpt(version)
                        ),
                    );
                }
                let list = format!("{at}.share_with");
                if r.bounded(share_with, MAX_SHARE_WITH, &list, "projects") {
                    for (k, who) in share_with.iter().enumerate() {
                        if who.trim().is_empty() {
                            r.add(
                                format!("{list}[{k}]"),
                                "is empty: name a project or team, or remove the entry",
                            );
                        } else {
                            check_name_at(who, &format!("{list}[{k}]"), r);
                        }
                    }
                }
            }
            Distribute::Export { format, path, .. } => {
                if !EXPORT_FORMATS.contains(&format.as_str()) {
                    r.add(
                        format!("{at}.format"),
                        format!(
                            "{} is not an export format: use one of {}",
                            if format.is_empty() {
                                "an empty string".to_string()
                            } else {
                                excerpt(format)
                            },
                            EXPORT_FORMATS.join(", ")
                        ),
                    );
                }
                if path.is_empty() {
                    r.add(
                        format!("{at}.path"),
                        "required: the absolute path of the file to write, e.g. \
                         /srv/images/web.qcow2",
                    );
                } else if let Err(e) = check_file_path(path) {
                    r.add(format!("{at}.path"), e.to_string());
                } else if let Some(j) = export_paths.get(path.as_str()) {
                    r.add(
                        format!("{at}.path"),
                        format!("distribute[{j}] already exports to {path:?}; use another path"),
                    );
                } else {
                    export_paths.insert(path, i);
                }
            }
        }
    }
}

fn check_tags(template: &Template, r: &mut Report) {
    if template.tags.len() > MAX_TAGS {
        r.add(
            "tags",
            format!(
                "has {} tags; at most {MAX_TAGS} are allowed (the tags were not checked)",
                template.tags.len()
            ),
        );
        return;
    }
    for (key, value) in &template.tags {
        if key.chars().any(char::is_control) {
            r.add(
                "tags",
                format!(
                    "tag key {} contains a control character: remove it",
                    excerpt(key)
                ),
            );
        } else if value.chars().any(char::is_control) {
            r.add(
                format!("tags.{key}"),
                "value contains a control character: remove it",
            );
        }
        if key.is_empty() {
            r.add("tags", "a tag has an empty key; give every tag a name");
        } else if key.len() > MAX_TAG_KEY_BYTES {
            r.add(
                "tags",
                format!(
                    "tag key {} is {} bytes; keys may be at most {MAX_TAG_KEY_BYTES} bytes",
                    excerpt(key),
                    key.len()
                ),
            );
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            r.add(
                format!("tags.{key}"),
                format!(
                    "value is {} bytes; tag values may be at most {MAX_TAG_VALUE_BYTES} bytes",
                    value.len()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s| Some(Duration::from_secs(s));
        for (text, expected) in [
            ("300", secs(300)),
            ("90s", secs(90)),
            ("5m", secs(300)),
            ("1h", secs(3600)),
            ("1h30m", secs(5400)),
            ("1h0m5s", secs(3605)),
            ("0s", secs(0)),
            ("", None),
            ("m", None),
            ("5", secs(5)),
            ("5 m", None),
            ("5min", None),
            ("-5m", None),
            ("1.5h", None),
            ("30m1h", None),
            ("1m1m", None),
            ("5M", None),
            ("99999999999999999999", None),
            ("9999999999999999999h", None),
        ] {
            assert_eq!(parse_duration(text), expected, "{text:?}");
        }
    }

    #[test]
    fn os_ids() {
        for ok in [
            "debian-12",
            "ubuntu-24.04",
            "rhel-9.4",
            "windows-server-2022",
        ] {
            assert!(is_os_id(ok), "{ok}");
        }
        for bad in [
            "",
            "debian",
            "Debian-12",
            "debian-",
            "-12",
            "debian--12",
            "12-debian",
            "debian 12",
        ] {
            assert!(!is_os_id(bad), "{bad}");
        }
    }

    #[test]
    fn semvers() {
        for ok in ["0.0.0", "1.2.3", "10.20.30"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "v1.2.3",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1..3",
            "1.2.x",
            "1.2.99999999999",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
