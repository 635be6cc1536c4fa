//! Azure Image Builder import and export: one line per corpus case (tests/azure/CASE.json and the
//! expected TOML plus warnings, or the errors, in CASE.expected), and the round trip.
//! `KILN_UPDATE_EXPECTED=1` rewrites the expected files (review the diff).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_shared::apps::AppCatalog;
use kiln_shared::azure::{export, import};
use kiln_shared::template::{
    Customizer, Distribute, ErrorHandling, OnError, Source, ValidateSpec, Vm,
};
use kiln_shared::Template;
use serde_json::Value;

fn corpus(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/azure")
        .join(file)
}

fn read_json(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(corpus(file)).unwrap()).unwrap()
}

/// Imports `case`.json (with `parameters` file, `--name`, `--base-image`) and compares the TOML
/// and warnings, or the errors, with `expected`.expected.
fn check(
    expected: &str,
    case: &str,
    parameters: Option<&str>,
    name: Option<&str>,
    base_image: Option<&str>,
) {
    let azure = read_json(&format!("{case}.json"));
    let params = parameters.map(read_json);
    let got = match import(
        &azure,
        params.as_ref(),
        name,
        base_image,
        &AppCatalog::builtin(),
    ) {
        Ok(imported) => {
            let mut out = imported.template.to_toml();
            out.push_str("\n# warnings\n");
            for w in &imported.warnings {
                out.push_str(&format!("# {w}\n"));
            }
            out
        }
        Err(errors) => errors.iter().map(|e| format!("error: {e}\n")).collect(),
    };
    let expected_path = corpus(&format!("{expected}.expected"));
    if std::env::var_os("KILN_UPDATE_EXPECTED").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(got, expected, "case {case}");
}

#[test]
fn linux_managed_image_with_shell_and_file() {
    check("managed-shell-file", "managed-shell-file", None, None, None);
}

#[test]
fn managed_image_onto_debian_12() {
    // What the real build test imports: the same template, its source mapped to kiln's debian-12.
    check(
        "managed-debian-12",
        "managed-shell-file",
        None,
        Some("hello-debian"),
        Some("debian-12"),
    );
}

#[test]
fn gallery_target_with_auto_version() {
    check("gallery-auto", "gallery-auto", None, None, None);
}

#[test]
fn shared_image_version_source() {
    check("sig-source", "sig-source", None, None, None);
}

#[test]
fn vhd_target() {
    check("vhd", "vhd", None, Some("hello-vhd"), None);
}

#[test]
fn arm_deployment_with_defaults_needs_the_parameter() {
    check("arm-deployment", "arm-deployment", None, None, None);
}

#[test]
fn arm_deployment_with_parameters_file() {
    check(
        "arm-deployment-parameters",
        "arm-deployment",
        Some("arm-deployment.parameters.json"),
        None,
        None,
    );
}

#[test]
fn windows_is_refused_by_index() {
    check("windows", "windows", None, None, None);
}

#[test]
fn unknown_expression_is_an_error_at_its_path() {
    check("unknown-expression", "unknown-expression", None, None, None);
}

/// Every field that has an Azure form comes back as it was.
#[test]
fn round_trip() {
    let shell = |name: &str, lines: &[&str]| Customizer::Shell {
        name: name.into(),
        inline: Some(lines.iter().map(|l| l.to_string()).collect()),
        script: None,
        sha256: None,
    };
    let mut templates = vec![Template {
        name: "web".into(),
        os: "debian-12".into(),
        build_timeout_minutes: 90,
        user_script: Some("#!/bin/bash -e\necho hi\n".into()),
        source: Source {
            image: "debian-12".into(),
            version: "latest".into(),
        },
        vm: Vm {
            cpus: 4,
            memory_mb: 16384,
            os_disk_gb: 30,
        },
        customize: vec![
            shell("tools", &["sudo apt-get install -y jq", "jq --version"]),
            Customizer::Shell {
                name: "remote".into(),
                inline: None,
                script: Some("https://example.org/setup.sh".into()),
                sha256: Some("ab".repeat(32)),
            },
            Customizer::File {
                name: "motd".into(),
                source: "https://example.org/motd".into(),
                destination: "/tmp/motd".into(),
                sha256: Some("cd".repeat(32)),
            },
            Customizer::Reboot {
                name: "restart".into(),
                timeout: None,
            },
        ],
        error_handling: ErrorHandling {
            on_customizer_error: OnError::Abort,
            on_validation_error: OnError::Abort,
        },
        validate: ValidateSpec {
            boot_test: true,
            in_vm: vec![shell("jq-there", &["command -v jq"])],
        },
        distribute: vec![
            Distribute::Image {
                run_output_name: "local".into(),
            },
            Distribute::Gallery {
                run_output_name: "prod".into(),
                gallery: "prod".into(),
                image: "web".into(),
                version: "auto".into(),
                exclude_from_latest: true,
                share_with: vec![],
            },
            Distribute::Gallery {
                run_output_name: "pinned".into(),
                gallery: "prod".into(),
                image: "web".into(),
                version: "1.2.3".into(),
                exclude_from_latest: false,
                share_with: vec![],
            },
            Distribute::Export {
                run_output_name: "disk".into(),
                format: "vhd".into(),
                path: kiln_shared::azure::default_vhd_path("disk"),
                overwrite: false,
            },
        ],
        tags: BTreeMap::from([("owner".into(), "ops".into())]),
        ..Template::default()
    }];
    let mut gallery_source = templates[0].clone();
    gallery_source.source = Source {
        image: "base/debian".into(),
        version: "1.0.3".into(),
    };
    templates.push(gallery_source);
    let mut managed_source = templates[0].clone();
    managed_source.os = "ubuntu-22.04".into();
    managed_source.source = Source {
        image: "my-golden".into(),
        version: "latest".into(),
    };
    managed_source.user_script = None;
    templates.push(managed_source);
    let mut ubuntu = templates[0].clone();
    ubuntu.os = "ubuntu-22.04".into();
    ubuntu.source.image = "ubuntu-22.04".into();
    templates.push(ubuntu);
    for t in templates {
        let (azure, _warnings) = export(&t);
        assert_eq!(azure["apiVersion"], "2024-02-01");
        let back = import(&azure, None, None, None, &AppCatalog::builtin())
            .unwrap_or_else(|e| panic!("{e:?}\n{azure:#}"))
            .template;
        assert_eq!(back, t, "{azure:#}");
    }
}

/// What export cannot carry is named, not lost silently.
#[test]
fn export_names_what_azure_cannot_hold() {
    let mut t = Template::from_toml(
        "name = \"w\"\nos = \"debian-12\"\napplications = [\"nginx\"]\n[source]\nimage = \"debian-12\"\n\
         [[distribute]]\ntype = \"export\"\nrun_output_name = \"q\"\nformat = \"qcow2\"\npath = \"/srv/w.qcow2\"\n",
    )
    .unwrap();
    t.vm.cpus = 3;
    let (_, warnings) = export(&t);
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        ["vm", "distribute[0]", "applications"],
        "{warnings:?}"
    );
}
