//! The rules of a template's own fields: its size as JSON, description, os, applications, disk,
//! timeout, user script, source, vm and tags (its steps and targets have their own modules).

use std::collections::HashMap;

use super::{
    check_name_at, excerpt, Report, MAX_APPLICATIONS, MAX_BUILD_TIMEOUT_MINUTES, MAX_CPUS,
    MAX_DESCRIPTION_BYTES, MAX_DISK_GB, MAX_MEMORY_MB, MAX_OS_BYTES, MAX_TAGS, MAX_TAG_KEY_BYTES,
    MAX_TAG_VALUE_BYTES, MAX_TEMPLATE_JSON_BYTES, MAX_VERSION_BYTES, MIN_BUILD_TIMEOUT_MINUTES,
    MIN_MEMORY_MB,
};
use crate::apps::AppCatalog;
use crate::template::{Template, DEFAULT_BUILD_TIMEOUT_MINUTES};

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

pub(super) fn check_size(template: &Template, r: &mut Report) {
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

pub(super) fn check_description(description: Option<&str>, r: &mut Report) {
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

/// Returns whether the os is well formed, so that application checks can rely on it.
pub(super) fn check_os(os: &str, r: &mut Report) -> bool {
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

pub(super) fn check_applications(
    template: &Template,
    os_ok: bool,
    apps: &AppCatalog,
    r: &mut Report,
) {
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

pub(super) fn check_min_disk(gb: u32, r: &mut Report) {
    if gb > MAX_DISK_GB {
        r.add(
            "min_disk_gb",
            format!("{gb} is too large: use 0 (the size of the source) up to {MAX_DISK_GB}"),
        );
    }
}

pub(super) fn check_build_timeout(minutes: u32, r: &mut Report) {
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

pub(super) fn check_shebang(script: &str, path: &str, r: &mut Report) {
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

pub(super) fn check_source(template: &Template, r: &mut Report) {
    let source = &template.source;
    if source.image.trim().is_empty() {
        r.add(
            "source.image",
            "required: a public image such as \"debian-12\", or a private or shared image name",
        );
    } else if let Some((gallery, image)) = source.image.split_once('/') {
        for (part, what) in [(gallery, "its gallery"), (image, "its gallery image")] {
            if let Err(e) = crate::names::check(part) {
                r.add("source.image", format!("{what}: {e}"));
            }
        }
        if source.version != "latest" && crate::names::gallery_version(&source.version).is_none() {
            r.add(
                "source.version",
                format!(
                    "{} is not a gallery version: use \"latest\" or MAJOR.MINOR.PATCH such as \"1.0.2\"",
                    excerpt(&source.version)
                ),
            );
        }
        return;
    } else {
        check_name_at(&source.image, "source.image", r);
        if source.version != "latest" && !source.version.is_empty() {
            r.add(
                "source.version",
                format!(
                    "{} pins a version, but {} is a plain image (one version); versions belong to \
                     gallery images: image = \"GALLERY/IMAGE\"",
                    excerpt(&source.version),
                    excerpt(&source.image)
                ),
            );
            return;
        }
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

pub(super) fn check_vm(template: &Template, r: &mut Report) {
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

pub(super) fn check_tags(template: &Template, r: &mut Report) {
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

/// `trigger.image_name`: required with `on_base_change`, and a valid image name once its
/// placeholders are replaced (checked with a long version, today's date and a large build id;
/// kilnd checks the real name again when it queues the build).
pub(super) fn check_trigger(template: &Template, r: &mut Report) {
    let trigger = &template.trigger;
    if trigger.image_name.is_empty() {
        if trigger.on_base_change {
            r.add(
                "trigger.image_name",
                "required when on_base_change is true: the name of each triggered build's \
                 image, e.g. \"web-{version}\" ({version}, {date} and {build} are replaced)",
            );
        }
        return;
    }
    match trigger.image_name_for("202612312359", "20261231", 4_294_967_295) {
        Err(e) => r.add(
            "trigger.image_name",
            format!("{} {e}", excerpt(&trigger.image_name)),
        ),
        Ok(name) => {
            if let Err(e) = crate::names::check(&name) {
                r.add(
                    "trigger.image_name",
                    format!(
                        "{} is not a valid image name once its placeholders are replaced \
                         (e.g. {}): {e}",
                        excerpt(&trigger.image_name),
                        excerpt(&name)
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
