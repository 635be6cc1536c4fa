//! kiln template to Azure: a bare `Microsoft.VirtualMachineImages/imageTemplates` resource that
//! [`super::import`] maps back to the same template, with warnings for what Azure cannot hold.

use serde_json::{json, Map, Value};

use super::import::{OS_TAG, USER_SCRIPT_STEP};
use super::tables::{platform_image, size_for};
use super::{default_vhd_path, Warning};
use crate::template::{Customizer, Distribute, OnError, Template, Vm};

/// The Azure API version export writes.
pub const API_VERSION: &str = "2024-02-01";

/// Placeholders for the Azure ids kiln cannot know.
const SUB: &str =
    "/subscriptions/<subscriptionID>/resourceGroups/<resourceGroup>/providers/Microsoft.Compute";

/// The template as a bare Azure resource, and what did not fit.
pub fn export(t: &Template) -> (Value, Vec<Warning>) {
    let mut warnings = Vec::new();
    let mut warn = |path: &str, message: String| {
        warnings.push(Warning {
            path: path.into(),
            message,
        })
    };
    let mut tags: Map<String, Value> = t
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut props = Map::new();
    if t.build_timeout_minutes != 0 {
        props.insert(
            "buildTimeoutInMinutes".into(),
            json!(t.build_timeout_minutes),
        );
    }
    let mut vm = Map::new();
    if t.vm.cpus != Vm::default().cpus || t.vm.memory_mb != Vm::default().memory_mb {
        match size_for(t.vm.cpus, t.vm.memory_mb) {
            Some(size) => {
                vm.insert("vmSize".into(), json!(size));
            }
            None => warn(
                "vm",
                format!(
                    "no Azure size in kiln's table has {} CPUs and {} MB: vmSize not exported",
                    t.vm.cpus, t.vm.memory_mb
                ),
            ),
        }
    }
    if t.vm.os_disk_gb != 0 {
        vm.insert("osDiskSizeGB".into(), json!(t.vm.os_disk_gb));
    }
    if !vm.is_empty() {
        props.insert("vmProfile".into(), Value::Object(vm));
    }
    let platform = (t.source.image == t.os)
        .then(|| platform_image(&t.os))
        .flatten();
    let source = match platform {
        Some((publisher, offer, sku)) => json!({"type": "PlatformImage", "publisher": publisher,
            "offer": offer, "sku": sku, "version": "latest"}),
        None => {
            tags.insert(OS_TAG.into(), json!(t.os));
            match t.source.image.split_once('/') {
                Some((g, i)) => json!({"type": "SharedImageVersion", "imageVersionId":
                    format!("{SUB}/galleries/{g}/images/{i}/versions/{}", t.source.version)}),
                None => json!({"type": "ManagedImage",
                    "imageId": format!("{SUB}/images/{}", t.source.image)}),
            }
        }
    };
    props.insert("source".into(), source);
    let mut customize: Vec<Value> = t.customize.iter().map(step).collect();
    for (i, c) in t.customize.iter().enumerate() {
        if let Customizer::Reboot {
            timeout: Some(_), ..
        } = c
        {
            warn(
                &format!("customize[{i}].timeout"),
                "a Linux restart in Azure is a Shell `sudo reboot`, with no timeout: not exported"
                    .into(),
            );
        }
    }
    if let Some(script) = &t.user_script {
        customize.push(json!({"type": "Shell", "name": USER_SCRIPT_STEP, "inline": [script]}));
        warn(
            "user_script",
            format!("exported as the last Shell customizer {USER_SCRIPT_STEP:?} (Azure runs it as root)"),
        );
    }
    if !customize.is_empty() {
        props.insert("customize".into(), Value::Array(customize));
    }
    if !t.validate.in_vm.is_empty() {
        props.insert(
            "validate".into(),
            json!({"inVMValidations": t.validate.in_vm.iter().map(step).collect::<Vec<_>>()}),
        );
    } else if t.validate.boot_test {
        warn(
            "validate.boot_test",
            "a boot test with no checks has no Azure form: not exported".into(),
        );
    }
    let on = |e: OnError| match e {
        OnError::Cleanup => "cleanup",
        OnError::Abort => "abort",
    };
    props.insert(
        "errorHandling".into(),
        json!({"onCustomizerError": on(t.error_handling.on_customizer_error),
            "onValidationError": on(t.error_handling.on_validation_error)}),
    );
    let mut distribute = Vec::new();
    for (i, d) in t.distribute.iter().enumerate() {
        let at = format!("distribute[{i}]");
        match d {
            Distribute::Image { run_output_name } => {
                distribute.push(json!({"type": "ManagedImage",
                "runOutputName": run_output_name,
                "imageId": format!("{SUB}/images/{run_output_name}"), "location": "<region>"}))
            }
            Distribute::Gallery {
                run_output_name,
                gallery,
                image,
                version,
                exclude_from_latest,
                share_with,
            } => {
                let mut id = format!("{SUB}/galleries/{gallery}/images/{image}");
                if version != "auto" {
                    id.push_str(&format!("/versions/{version}"));
                }
                distribute.push(
                    json!({"type": "SharedImage", "runOutputName": run_output_name,
                    "galleryImageId": id, "excludeFromLatest": exclude_from_latest}),
                );
                if !share_with.is_empty() {
                    warn(
                        &format!("{at}.share_with"),
                        "Azure shares galleries through RBAC: not exported".into(),
                    );
                }
            }
            Distribute::Export {
                run_output_name,
                format,
                path,
                ..
            } if format == "vhd" => {
                distribute.push(json!({"type": "VHD", "runOutputName": run_output_name}));
                if *path != default_vhd_path(run_output_name) {
                    warn(
                        &format!("{at}.path"),
                        format!("an Azure VHD goes to a storage account: {path} not exported"),
                    );
                }
            }
            Distribute::Export { format, .. } => warn(
                &at,
                format!("Azure exports VHD only: this {format} export is not exported"),
            ),
        }
    }
    props.insert("distribute".into(), Value::Array(distribute));
    for (field, set) in [
        ("description", t.description.is_some()),
        ("applications", !t.applications.is_empty()),
        ("min_disk_gb", t.min_disk_gb != 0),
        ("generalize.skip", t.generalize.skip),
        ("trigger", !t.trigger.is_unset()),
        (
            "source.version",
            platform.is_some() && t.source.version != "latest",
        ),
    ] {
        if set {
            warn(field, "has no Azure form: not exported".into());
        }
    }
    let mut resource = json!({
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": API_VERSION,
        "name": t.name,
        "location": "<region>",
        "properties": props,
    });
    if !tags.is_empty() {
        resource["tags"] = Value::Object(tags);
    }
    (resource, warnings)
}

fn step(c: &Customizer) -> Value {
    match c {
        Customizer::Shell {
            name,
            inline,
            script,
            sha256,
        } => {
            let mut v = json!({"type": "Shell", "name": name});
            if let Some(lines) = inline {
                v["inline"] = json!(lines);
            }
            if let Some(s) = script {
                v["scriptUri"] = json!(s);
            }
            if let Some(h) = sha256 {
                v["sha256Checksum"] = json!(h);
            }
            v
        }
        Customizer::File {
            name,
            source,
            destination,
            sha256,
        } => {
            let mut v = json!({"type": "File", "name": name, "sourceUri": source, "destination": destination});
            if let Some(h) = sha256 {
                v["sha256Checksum"] = json!(h);
            }
            v
        }
        Customizer::Reboot { name, .. } => {
            json!({"type": "Shell", "name": name, "inline": ["sudo reboot"]})
        }
    }
}
