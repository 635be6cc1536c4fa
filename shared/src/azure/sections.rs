//! The sections of an image template's properties mapped to kiln: the VM profile, the source,
//! customize and validation steps, error handling and distribute targets.

use serde_json::Value;

use super::default_vhd_path;
use super::import::{join, Mapper};
use super::tables::{platform_os, vm_size, WINDOWS_PUBLISHERS};
use crate::template::{Customizer, Distribute, OnError, Template};

impl Mapper {
    pub(super) fn vm_profile(&mut self, v: &Value, path: &str, t: &mut Template) {
        let Some(vm) = self.object(v, path) else {
            return;
        };
        self.drop_unknown(vm, path, &["vmSize", "osDiskSizeGB"]);
        if let Some(size) = self.string(vm, "vmSize", path) {
            match vm_size(&size) {
                Some((cpus, memory_mb)) => {
                    t.vm.cpus = cpus;
                    t.vm.memory_mb = memory_mb;
                }
                None => self.warn(
                    join(path, "vmSize"),
                    format!(
                        "{size} is not in kiln's table of Azure sizes: kept kiln's defaults ({} CPUs, {} MB); set vm.cpus and vm.memory_mb",
                        t.vm.cpus, t.vm.memory_mb
                    ),
                ),
            }
        }
        if let Some(gb) = self.number(vm, "osDiskSizeGB", path) {
            t.vm.os_disk_gb = gb;
        }
    }

    pub(super) fn source(
        &mut self,
        v: &Value,
        path: &str,
        os_tag: Option<String>,
        t: &mut Template,
    ) {
        let Some(s) = self.object(v, path) else {
            return;
        };
        let kind = self.string(s, "type", path).unwrap_or_default();
        let assumed_os = |m: &mut Mapper, t: &mut Template| {
            t.os = os_tag.clone().unwrap_or_else(|| {
                m.warn(
                    path,
                    "Azure does not say this image's OS: assumed debian-12; set `os` if it is another",
                );
                "debian-12".into()
            });
        };
        match kind.as_str() {
            "PlatformImage" => {
                self.drop_unknown(s, path, &["type", "publisher", "offer", "sku", "version", "planInfo"]);
                let publisher = self.string(s, "publisher", path).unwrap_or_default();
                let offer = self.string(s, "offer", path).unwrap_or_default();
                let sku = self.string(s, "sku", path).unwrap_or_default();
                if WINDOWS_PUBLISHERS.iter().any(|w| w.eq_ignore_ascii_case(&publisher))
                    || offer.to_ascii_lowercase().contains("windows")
                {
                    self.error(
                        path,
                        format!("{publisher}/{offer}/{sku} is a Windows image; kiln builds Linux images"),
                    );
                    return;
                }
                if s.contains_key("planInfo") {
                    self.warn(join(path, "planInfo"), "kiln has no marketplace plans; dropped");
                }
                match platform_os(&publisher, &offer, &sku) {
                    Some(os) => {
                        t.os = os.into();
                        t.source.image = os.into();
                    }
                    None => self.error(
                        path,
                        format!("{publisher}/{offer}/{sku} is not a marketplace image kiln knows: give --base-image IMAGE (a kiln image of the same OS)"),
                    ),
                }
                if let Some(version) = self.string(s, "version", path) {
                    if !version.eq_ignore_ascii_case("latest") {
                        self.warn(
                            join(path, "version"),
                            format!("marketplace version {version} has no kiln counterpart: kiln's latest {} is used", t.source.image),
                        );
                    }
                }
            }
            "ManagedImage" => {
                self.drop_unknown(s, path, &["type", "imageId"]);
                let id = self.string(s, "imageId", path).unwrap_or_default();
                match id.rsplit('/').next().filter(|n| !n.is_empty()) {
                    Some(n) => t.source.image = n.into(),
                    None => self.error(join(path, "imageId"), "required: the managed image's id"),
                }
                assumed_os(self, t);
            }
            "SharedImageVersion" => {
                self.drop_unknown(s, path, &["type", "imageVersionId"]);
                let id = self.string(s, "imageVersionId", path).unwrap_or_default();
                match gallery_parts(&id) {
                    Some((g, i, v)) => {
                        t.source.image = format!("{g}/{i}");
                        t.source.version = v.unwrap_or_else(|| "latest".into());
                    }
                    None => self.error(
                        join(path, "imageVersionId"),
                        format!("{id:?} is not a gallery image id (.../galleries/G/images/I/versions/V): write one, or give --base-image IMAGE"),
                    ),
                }
                assumed_os(self, t);
            }
            other => self.error(
                join(path, "type"),
                format!("{other:?} is not a source kiln knows: use PlatformImage, ManagedImage or SharedImageVersion"),
            ),
        }
    }

    /// Customizers (`customize: true`) or in-VM validations.
    pub(super) fn steps(&mut self, v: &Value, path: &str, customize: bool) -> Vec<Customizer> {
        let Some(list) = v.as_array() else {
            self.error(path, "must be an array");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, step) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Some(s) = self.object(step, &at) else {
                continue;
            };
            let kind = self.string(s, "type", &at).unwrap_or_default();
            let name = self
                .string(s, "name", &at)
                .unwrap_or_else(|| format!("{}-{i}", kind.to_ascii_lowercase()));
            match kind.as_str() {
                "Shell" => {
                    self.drop_unknown(
                        s,
                        &at,
                        &["type", "name", "inline", "scriptUri", "sha256Checksum"],
                    );
                    let inline = s.get("inline").map(|l| self.lines(l, &join(&at, "inline")));
                    let script = self.uri(s, "scriptUri", &at);
                    let sha256 = self
                        .string(s, "sha256Checksum", &at)
                        .filter(|h| !h.is_empty());
                    match inline.as_deref() {
                        Some([one]) if customize && script.is_none() && is_reboot(one) => {
                            out.push(Customizer::Reboot {
                                name,
                                timeout: None,
                            })
                        }
                        _ => out.push(Customizer::Shell {
                            name,
                            inline,
                            script,
                            sha256,
                        }),
                    }
                }
                "File" => {
                    self.drop_unknown(
                        s,
                        &at,
                        &["type", "name", "sourceUri", "destination", "sha256Checksum"],
                    );
                    out.push(Customizer::File {
                        name,
                        source: self.uri(s, "sourceUri", &at).unwrap_or_default(),
                        destination: self.string(s, "destination", &at).unwrap_or_default(),
                        sha256: self
                            .string(s, "sha256Checksum", &at)
                            .filter(|h| !h.is_empty()),
                    });
                }
                "PowerShell" | "WindowsRestart" | "WindowsUpdate" => self.error(
                    at,
                    format!("{kind} is Windows-only; kiln builds Linux images"),
                ),
                other => self.error(
                    join(&at, "type"),
                    format!(
                        "{other:?} is not a {} kiln knows: use Shell or File",
                        if customize {
                            "customizer"
                        } else {
                            "validation"
                        }
                    ),
                ),
            }
        }
        out
    }

    pub(super) fn lines(&mut self, v: &Value, path: &str) -> Vec<String> {
        let Some(v) = self.eval(v, path) else {
            return Vec::new();
        };
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, l)| match l {
                    Value::String(s) => Some(s),
                    other => {
                        self.error(
                            format!("{path}[{i}]"),
                            format!("must be a string, not {other}"),
                        );
                        None
                    }
                })
                .collect(),
            Value::String(s) => vec![s],
            other => {
                self.error(path, format!("must be an array of commands, not {other}"));
                Vec::new()
            }
        }
    }

    pub(super) fn validation(&mut self, v: &Value, path: &str, t: &mut Template) {
        let Some(o) = self.object(v, path) else {
            return;
        };
        self.drop_unknown(
            o,
            path,
            &[
                "inVMValidations",
                "continueDistributeOnFailure",
                "sourceValidationOnly",
            ],
        );
        if let Some(list) = o.get("inVMValidations") {
            t.validate.in_vm = self.steps(list, &join(path, "inVMValidations"), false);
            t.validate.boot_test = true;
        }
        if self.bool(o, "continueDistributeOnFailure", path) == Some(true) {
            self.warn(
                join(path, "continueDistributeOnFailure"),
                "kiln never distributes an image that failed validation; dropped",
            );
        }
        if self.bool(o, "sourceValidationOnly", path) == Some(true) {
            self.warn(
                join(path, "sourceValidationOnly"),
                "kiln validates the finished image, not the source; dropped",
            );
        }
    }

    pub(super) fn error_handling(&mut self, v: &Value, path: &str, t: &mut Template) {
        let Some(o) = self.object(v, path) else {
            return;
        };
        self.drop_unknown(o, path, &["onCustomizerError", "onValidationError"]);
        for (key, slot) in [
            (
                "onCustomizerError",
                &mut t.error_handling.on_customizer_error,
            ),
            (
                "onValidationError",
                &mut t.error_handling.on_validation_error,
            ),
        ] {
            match self
                .string(o, key, path)
                .map(|s| s.to_ascii_lowercase())
                .as_deref()
            {
                None => {}
                Some("cleanup") => *slot = OnError::Cleanup,
                Some("abort") => *slot = OnError::Abort,
                Some(other) => {
                    self.error(join(path, key), format!("{other:?}: use cleanup or abort"))
                }
            }
        }
    }

    pub(super) fn distribute(&mut self, v: &Value, path: &str, t: &mut Template) {
        let Some(list) = v.as_array() else {
            self.error(path, "must be an array of targets");
            return;
        };
        for (i, target) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Some(d) = self.object(target, &at) else {
                continue;
            };
            let kind = self.string(d, "type", &at).unwrap_or_default();
            let run_output_name = self.string(d, "runOutputName", &at).unwrap_or_default();
            for (k, v) in self.tags(d, "artifactTags", &at) {
                if t.tags.get(&k).is_some_and(|old| *old != v) {
                    self.warn(
                        join(&at, "artifactTags"),
                        format!("tag {k:?} differs from the template's; the template's is kept"),
                    );
                } else {
                    t.tags.insert(k, v);
                }
            }
            if d.contains_key("artifactTags") {
                self.warn(
                    join(&at, "artifactTags"),
                    "kiln tags every output alike: merged into the template's tags",
                );
            }
            match kind.as_str() {
                "ManagedImage" => {
                    self.drop_unknown(d, &at, &["type", "runOutputName", "artifactTags"]);
                    t.distribute.push(Distribute::Image { run_output_name });
                }
                "SharedImage" => {
                    self.drop_unknown(d, &at, &["type", "runOutputName", "artifactTags", "galleryImageId", "excludeFromLatest", "versioning"]);
                    let Some(id) = self.string(d, "galleryImageId", &at) else {
                        if !d.contains_key("galleryImageId") {
                            self.error(join(&at, "galleryImageId"), "required: the gallery image's id");
                        }
                        continue;
                    };
                    let Some((gallery, image, version)) = gallery_parts(&id) else {
                        self.error(join(&at, "galleryImageId"), format!("{id:?} is not a gallery image id (.../galleries/G/images/I)"));
                        continue;
                    };
                    let mut exclude = self.bool(d, "excludeFromLatest", &at).unwrap_or(false);
                    if let Some(regions) = d.get("targetRegions").and_then(Value::as_array) {
                        exclude |= regions.iter().any(|r| r.get("excludeFromLatest") == Some(&Value::Bool(true)));
                    }
                    if let Some(scheme) = d.get("versioning").and_then(|v| v.get("scheme")).and_then(Value::as_str) {
                        if !scheme.eq_ignore_ascii_case("Latest") {
                            self.warn(join(&at, "versioning"), format!("scheme {scheme} has no kiln counterpart: kiln's auto (next patch of the latest) is used"));
                        }
                    }
                    t.distribute.push(Distribute::Gallery {
                        run_output_name,
                        gallery,
                        image,
                        version: version.unwrap_or_else(|| "auto".into()),
                        exclude_from_latest: exclude,
                        share_with: Vec::new(),
                    });
                }
                "VHD" => {
                    self.drop_unknown(d, &at, &["type", "runOutputName", "artifactTags"]);
                    let path = default_vhd_path(&run_output_name);
                    self.warn(&at, format!("the VHD is written to {path}; change distribute.path to put it elsewhere"));
                    t.distribute.push(Distribute::Export {
                        path,
                        run_output_name,
                        format: "vhd".into(),
                        overwrite: false,
                    });
                }
                other => self.error(join(&at, "type"), format!("{other:?} is not a target kiln knows: use ManagedImage, SharedImage or VHD")),
            }
        }
    }
}

/// Gallery, image and version (if any) of `.../galleries/G/images/I[/versions/V]`.
fn gallery_parts(id: &str) -> Option<(String, String, Option<String>)> {
    let parts: Vec<&str> = id.split('/').collect();
    let at = |key: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
    };
    Some((at("galleries")?, at("images")?, at("versions")))
}

/// Whether a shell command only restarts the VM.
fn is_reboot(command: &str) -> bool {
    let c = command.trim();
    let c = c.strip_prefix("sudo ").unwrap_or(c).trim();
    let words: Vec<&str> = c.split_whitespace().collect();
    matches!(
        words.as_slice(),
        ["reboot" | "/sbin/reboot" | "/usr/sbin/reboot"]
            | ["reboot", "now"]
            | ["systemctl", "reboot"]
            | ["init", "6"]
            | ["shutdown" | "/sbin/shutdown", "-r", "now" | "+0" | "0"]
            | ["shutdown" | "/sbin/shutdown", "-r"]
    )
}
