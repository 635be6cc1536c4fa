//! Where images come from: `kiln image import FILE` (with the image's login user, given or read
//! by kilnd from the image) and `kiln image bootstrap OS` from a distribution's mirror, with
//! `--list` for what kilnd can bootstrap; `kiln image apps` for the applications each OS takes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_shared::methods::{self as m, Empty};
use kiln_shared::protocol::{ImageBootstrapParams, ImageImportParams};

use super::image::{human_size, with_progress};
use super::output::{self, Align, Column, Table};
use super::{call, check_name, CmdResult, Failure, Settings};

/// The file `kiln image import` brings in and what it is.
pub struct Imported<'a> {
    pub file: &'a Path,
    pub name: &'a str,
    pub os: &'a str,
    pub user: Option<String>,
}

/// The file as kilnd must see it: absolute, symlinks resolved (kilnd runs elsewhere).
fn absolute(file: &Path) -> Result<PathBuf, Failure> {
    std::fs::canonicalize(file)
        .map_err(|e| Failure::io(format!("cannot read {}: {e}", file.display())))
}

pub async fn import(
    settings: &Settings,
    what: Imported<'_>,
    public: bool,
    warm: bool,
) -> CmdResult {
    let Imported {
        file,
        name,
        os,
        user,
    } = what;
    check_name("--name", name)?;
    let path = absolute(file)?;
    if !path.is_file() {
        return Err(Failure::io(format!("{} is not a file", file.display())));
    }
    let Some(path) = path.to_str() else {
        return Err(Failure::usage(format!(
            "{} is not valid UTF-8: kilnd takes UTF-8 paths; rename the file",
            path.display()
        )));
    };
    let params = ImageImportParams {
        path: path.to_string(),
        name: name.to_string(),
        os: os.to_string(),
        user,
        public,
        warm: warm.then_some(true),
    };
    let (value, result, _) = with_progress::<m::ImageImport>(settings, &params).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        let i = &result.image;
        output::println(&format!(
            "imported {} as {} image {} ({}, {}, {} family, user {})",
            file.display(),
            i.visibility.as_str(),
            i.name,
            i.id,
            human_size(i.file_size),
            i.family,
            i.default_user
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bootstrap(settings: &Settings, os: &str, warm: bool) -> CmdResult {
    // Progress arrives as `image.progress` notifications when kilnd streams it, else with the
    // result.
    let show = !settings.json;
    if show {
        eprintln!("kiln: bootstrapping {os} on kilnd; this takes a few minutes");
    }
    let params = ImageBootstrapParams {
        os: os.to_string(),
        warm: (!warm).then_some(false),
    };
    let (value, result, streamed) = with_progress::<m::ImageBootstrap>(settings, &params).await?;
    if show && streamed == 0 {
        for line in &result.progress {
            eprintln!("{}", output::truncate(line, usize::MAX));
        }
    }
    if settings.json {
        output::print_json(&value);
    } else {
        let i = &result.image;
        output::println(&format!(
            "bootstrapped public image {} ({}, {}, min disk {} GB, user {})",
            i.name,
            i.id,
            human_size(i.file_size),
            i.min_disk_gb,
            i.default_user
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln image bootstrap --list`: one row per OS, with what the host lacks for it.
pub async fn list(settings: &Settings) -> CmdResult {
    let client = settings.connect().await?;
    let (value, list) = call::<m::ImageBootstrapList>(&client, &Empty {}).await?;
    if settings.json {
        output::print_json(&value);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec![
        Column::fixed("OS", Align::Left),
        Column::fixed("SUITE", Align::Left),
        Column::fixed("FAMILY", Align::Left),
        Column::fixed("USER", Align::Left),
        Column::flexible("HOST", 10),
    ]);
    for o in &list.oses {
        let host = match (o.as_root, o.missing_tools.is_empty()) {
            (true, true) => "ready".to_string(),
            (as_root, _) => {
                let mut lacks: Vec<String> = Vec::new();
                if !as_root {
                    lacks.push("kilnd is not root".into());
                }
                if !o.missing_tools.is_empty() {
                    lacks.push(format!("missing {}", o.missing_tools.join(", ")));
                }
                lacks.join("; ")
            }
        };
        table.push(vec![
            o.os.clone(),
            o.suite.clone(),
            o.family.clone(),
            o.default_user.clone(),
            host,
        ]);
    }
    output::print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// `kiln image apps [--os OS]`: kiln's application catalog (compiled in; no daemon needed).
pub fn apps(settings: &Settings, os: Option<&str>) -> CmdResult {
    let catalog = kiln_shared::apps::AppCatalog::builtin();
    let apps: Vec<&kiln_shared::apps::App> = match os {
        Some(os) => catalog.for_os(os).collect(),
        None => catalog.apps.iter().collect(),
    };
    if settings.json {
        output::print_json(&serde_json::json!({ "apps": apps }));
        return Ok(ExitCode::SUCCESS);
    }
    if apps.is_empty() {
        return Err(Failure::usage(format!(
            "no application supports --os {:?}; `kiln image apps` lists every OS they support",
            os.unwrap_or_default()
        )));
    }
    let mut table = Table::new(vec![
        Column::fixed("APP", Align::Left),
        Column::flexible("OS", 12),
        Column::flexible("DESCRIPTION", 12),
    ]);
    for a in apps {
        table.push(vec![a.name.clone(), a.os.join(", "), a.description.clone()]);
    }
    output::print_table(&table);
    Ok(ExitCode::SUCCESS)
}
