//! Template parsing: the DESIGN.md example and the shipped examples parse and validate clean,
//! TOML and JSON round-trip to the same model, and shape errors name the field and line.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use kiln_shared::apps::AppCatalog;
use kiln_shared::template::{Customizer, Distribute, OnError};
use kiln_shared::validate::validate;
use kiln_shared::Template;

/// The example of DESIGN.md's "Template format" (the TOML block under that heading), read from
/// the document itself so that the two cannot drift, with its `<hex>` placeholder filled in.
fn design_example() -> Template {
    let path = repo_dir().join("docs/DESIGN.md");
    let design = std::fs::read_to_string(&path).unwrap();
    let section = &design[design.find("## Template format").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let sha = "d55c1cde285a581fe2862356db807de952bca7eec937e27de5d06ea657ea1dfb";
    let text = block.replace("\"<hex>\"", &format!("{sha:?}"));
    Template::from_toml(&text).unwrap_or_else(|v| panic!("{}: {v}\n{text}", path.display()))
}

#[test]
fn design_example_parses_and_validates() {
    let t = design_example();
    assert_eq!(t.name, "web-base");
    assert_eq!(t.os, "debian-12");
    assert_eq!(t.applications, ["nginx"]);
    assert_eq!(t.min_disk_gb, 10);
    assert_eq!(t.effective_build_timeout_minutes(), 240);
    assert!(t
        .user_script
        .as_deref()
        .unwrap()
        .starts_with("#!/bin/bash -e\n"));
    assert_eq!(t.source.image, "debian-12");
    assert_eq!(t.source.version, "latest");
    assert_eq!((t.vm.cpus, t.vm.memory_mb, t.vm.os_disk_gb), (2, 2048, 0));
    assert_eq!(t.customize.len(), 2);
    assert!(matches!(
        &t.customize[0],
        Customizer::Shell { name, inline: Some(lines), script: None, sha256: None }
            if name == "tools" && lines == &["sudo apt-get install -y jq"]
    ));
    assert!(matches!(
        &t.customize[1],
        Customizer::File { destination, sha256: Some(_), .. } if destination == "/tmp/motd"
    ));
    assert!(!t.generalize.skip);
    assert_eq!(t.error_handling.on_customizer_error, OnError::Cleanup);
    assert!(t.validate.boot_test);
    assert_eq!(t.validate.in_vm[0].name(), "nginx-up");
    assert_eq!(t.distribute.len(), 3);
    assert!(matches!(
        &t.distribute[1],
        Distribute::Gallery { version, share_with, exclude_from_latest: false, .. }
            if version == "auto" && share_with == &["team-b"]
    ));
    assert!(matches!(
        &t.distribute[2],
        Distribute::Export { format, path, .. } if format == "vhd" && path == "/srv/images/web.vhd"
    ));
    assert_eq!(t.tags["owner"], "ops");

    assert_eq!(validate(&as_sent(t), &AppCatalog::builtin()), []);
}

#[test]
fn json_round_trip_keeps_the_model() {
    let t = design_example();
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["customize"][0]["type"], "shell");
    assert_eq!(Template::from_json_value(json).unwrap(), t);
}

#[test]
fn toml_round_trip_keeps_the_model() {
    for t in [design_example(), Template::default(), web_base()] {
        let text = t.to_toml();
        let back = Template::from_toml(&text)
            .unwrap_or_else(|v| panic!("to_toml output does not parse: {v}\n{text}"));
        assert_eq!(back, t, "{text}");
    }
}

#[test]
fn defaults_fill_what_a_template_leaves_out() {
    let t = Template::from_toml("name = \"x\"\n").unwrap();
    assert_eq!(t.source.version, "latest");
    assert_eq!((t.vm.cpus, t.vm.memory_mb), (2, 2048));
    assert_eq!(t.effective_build_timeout_minutes(), 240);
    let t = Template::from_toml(
        "[[distribute]]\ntype = \"gallery\"\nrun_output_name = \"p\"\ngallery = \"g\"\nimage = \"i\"\n",
    )
    .unwrap();
    assert!(matches!(&t.distribute[0], Distribute::Gallery { version, .. } if version == "auto"));
}

/// Each case: a template with one shape error, and what the violation's path and message must
/// contain.
#[test]
fn shape_errors_name_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        // A typo inside a step: the path and line of that field.
        (
            "[[customize]]\ntype = \"shell\"\nname = \"a\"\ninlin = [\"true\"]\n",
            "customize[0].inlin",
            &["inlin", "line 4"],
        ),
        (
            "[[customize]]\ntype = \"shell\"\ninline = []\n\n[[customize]]\ntype = \"file\"\nname = \"f\"\ndestination = 5\n",
            "customize[1].destination",
            &["expected a string", "line 8"],
        ),
        // A field of another kind of step: that element's header line.
        (
            "[[customize]]\ntype = \"shell\"\ninline = []\n\n[[customize]]\ntype = \"file\"\ntimeout = \"5m\"\n",
            "customize[1]",
            &["`timeout` is not a field of a file step", "line 5"],
        ),
        (
            "[validate]\nboot_test = true\n[[validate.in_vm]]\ntype = \"reboot\"\ninline = [\"x\"]\n",
            "validate.in_vm[0]",
            &["`inline` is not a field of a reboot step", "line 3"],
        ),
        (
            "[[distribute]]\ntype = \"image\"\nformat = \"raw\"\n",
            "distribute[0]",
            &["`format` is not a field of an image target", "line 1"],
        ),
        ("nmae = \"x\"\n", "", &["nmae"]),
        ("[vm]\ncpu = 2\n", "vm", &["cpu"]),
        ("[source]\nimg = \"debian-12\"\n", "source", &["img"]),
        (
            "[[distribute]]\ntype = \"export\"\nrun_output_name = \"a\"\nformt = \"raw\"\n",
            "distribute[0].formt",
            &["formt", "line 4"],
        ),
        (
            "[[customize]]\ntype = \"script\"\nname = \"a\"\n",
            "customize[0].type",
            &["script", "line 2"],
        ),
        (
            "[error_handling]\non_customizer_error = \"ignore\"\n",
            "error_handling.on_customizer_error",
            &["ignore"],
        ),
        // Type errors carry the line.
        (
            "name = \"x\"\n\n[vm]\ncpus = \"two\"\n",
            "vm.cpus",
            &["line 4"],
        ),
        ("min_disk_gb = -1\n", "min_disk_gb", &["line 1"]),
        ("applications = \"nginx\"\n", "applications", &["line 1"]),
        ("name = \"x\"\nname = \"y\"\n", "", &["invalid TOML"]),
    ];
    for (text, path, needles) in cases {
        let v = Template::from_toml(text).unwrap_err();
        assert!(
            v.path.starts_with(path),
            "{text:?}: path {:?} should start with {path:?} ({v})",
            v.path
        );
        for needle in *needles {
            assert!(
                v.message.contains(needle),
                "{text:?}: message should mention {needle:?}: {v}"
            );
        }
    }
}

#[test]
fn json_shape_errors_name_the_field() {
    let v = Template::from_json_value(serde_json::json!({"vm": {"cpus": "two"}})).unwrap_err();
    assert_eq!(v.path, "vm.cpus");
    let v = Template::from_json_value(serde_json::json!({"tags": {"a": 1}})).unwrap_err();
    assert!(v.path.starts_with("tags"), "{v}");
}

/// The template as the CLI sends it: a template file's relative local paths made absolute
/// against the file's directory (here a made-up one: validation does no I/O).
fn as_sent(mut t: Template) -> Template {
    let steps = t.customize.iter_mut().chain(t.validate.in_vm.iter_mut());
    for step in steps {
        let reference = match step {
            Customizer::File { source, .. } => source,
            Customizer::Shell {
                script: Some(script),
                ..
            } => script,
            _ => continue,
        };
        if !reference.contains("://") && !reference.starts_with('/') {
            *reference = format!("/srv/templates/{reference}");
        }
    }
    t
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples_dir() -> PathBuf {
    repo_dir().join("examples")
}

fn web_base() -> Template {
    let text = std::fs::read_to_string(examples_dir().join("web-base.toml")).unwrap();
    Template::from_toml(&text).unwrap_or_else(|v| panic!("examples/web-base.toml: {v}"))
}

#[test]
fn web_base_example_validates_clean() {
    let t = web_base();
    assert_eq!(validate(&as_sent(t.clone()), &AppCatalog::builtin()), []);
    assert_eq!(t.os, "debian-12");
    assert_eq!(t.applications, ["nginx"]);
    assert_eq!(t.build_timeout_minutes, 60);
}

/// The example's file step must carry the real hash of the file it uploads, or a build of it
/// fails at that step.
#[test]
fn web_base_example_hashes_match_its_files() {
    let t = web_base();
    let mut files = 0;
    for step in &t.customize {
        if let Customizer::File {
            source,
            sha256: Some(sha),
            ..
        } = step
        {
            let file = examples_dir().join(source);
            assert!(file.is_file(), "{} is missing", file.display());
            let out = std::process::Command::new("sha256sum")
                .arg(&file)
                .output()
                .unwrap();
            let printed = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                printed.split_whitespace().next(),
                Some(sha.as_str()),
                "sha256 of {source} in examples/web-base.toml"
            );
            files += 1;
        }
    }
    assert_eq!(files, 1);
}
