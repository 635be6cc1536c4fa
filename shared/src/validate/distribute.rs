//! The rules of `distribute` targets: run output names, galleries and versions, export formats
//! and paths.

use std::collections::HashMap;

use super::steps::is_step_name;
use super::{
    check_file_path, check_name_at, excerpt, Report, EXPORT_FORMATS, MAX_SHARE_WITH,
    MAX_STEP_NAME_LEN, MAX_TARGETS,
};
use crate::template::Distribute;

fn is_semver(s: &str) -> bool {
    crate::names::gallery_version(s).is_some()
}

pub(super) fn check_distribute(targets: &[Distribute], r: &mut Report) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
