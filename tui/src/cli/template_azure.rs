//! `kiln template import --azure`, `export --azure`, `update` and `apply`: templates from Azure
//! Image Builder files and from scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use kiln_shared::apps::AppCatalog;
use kiln_shared::azure::{self, Warning};
use kiln_shared::methods as m;
use kiln_shared::protocol::{
    ErrorKind, TemplateImportAzureParams, TemplateParams, TemplateUpdateParams,
};
use kiln_shared::Template;
use serde_json::{json, Value};

use super::template::get;
use super::template_file::{
    about_file, missing_local_files, read_template, resolve_local_paths, to_wire, TemplateFile,
};
use super::{call, CmdResult, Failure, Settings};

/// How an Azure file is read: the options `import`, `update --azure` and `apply --azure` share.
#[derive(Debug, Args)]
pub struct AzureArgs {
    /// An ARM parameters file for a deployment ({"parameters": {"x": {"value": ...}}})
    #[arg(long, value_name = "FILE")]
    parameters: Option<PathBuf>,
    /// The base image to start from instead of the Azure source (its OS becomes the template's
    /// when it is an OS id such as debian-12)
    #[arg(long, value_name = "IMAGE")]
    base_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The Azure Image Builder template (bare resource or ARM deployment); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    azure: PathBuf,
    /// The template's name (else the resource's `name`)
    #[arg(long, value_name = "N")]
    name: Option<String>,
    #[command(flatten)]
    from: AzureArgs,
    /// Print the mapped template as TOML (with --json: the reply) and store nothing; needs no kilnd
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    name: String,
    /// The template file, TOML or JSON (an Azure file with --azure); `-` reads stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Refuse with `conflict` unless N is still the latest revision
    #[arg(long, value_name = "N")]
    expected_revision: Option<u64>,
    /// The file is an Azure Image Builder template
    #[arg(long)]
    azure: bool,
    #[command(flatten)]
    from: AzureArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The template file, TOML or JSON (an Azure file with --azure); `-` reads stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// The file is an Azure Image Builder template
    #[arg(long)]
    azure: bool,
    /// With --azure: the template's name (else the resource's `name`)
    #[arg(long, value_name = "N", requires = "azure")]
    name: Option<String>,
    #[command(flatten)]
    from: AzureArgs,
}

fn read_json(path: &Path, what: &str) -> Result<(TemplateFile, Value), Failure> {
    let file = TemplateFile::read(path)?;
    let value = serde_json::from_str(&file.text).map_err(|e| {
        Failure::new(
            "invalid_template",
            format!("{}: {what} is not JSON: {e}", file.display),
        )
    })?;
    Ok((file, value))
}

fn warn_all(warnings: &[Warning]) {
    for w in warnings {
        eprintln!("kiln: warning: {w}");
    }
}

/// Maps an Azure file here (for `update`/`apply --azure` and `import --dry-run`), local paths
/// relative to the file.
fn map_locally(
    path: &Path,
    from: &AzureArgs,
    name: Option<&str>,
) -> Result<(TemplateFile, azure::Imported), Failure> {
    let (file, value) = read_json(path, "the Azure template")?;
    let params = match &from.parameters {
        Some(p) => Some(read_json(p, "the parameters file")?.1),
        None => None,
    };
    let mut imported = azure::import(
        &value,
        params.as_ref(),
        name,
        from.base_image.as_deref(),
        &AppCatalog::builtin(),
    )
    .map_err(|v| Failure::invalid_template(&file.display, v))?;
    resolve_local_paths(&mut imported.template, &file.base_dir);
    Ok((file, imported))
}

pub async fn import(settings: &Settings, args: ImportArgs) -> CmdResult {
    if args.dry_run {
        let (_, imported) = map_locally(&args.azure, &args.from, args.name.as_deref())?;
        warn_all(&imported.warnings);
        if settings.json {
            super::output::print_json(
                &json!({"template": imported.template, "warnings": imported.warnings}),
            );
        } else {
            super::output::print(&imported.template.to_toml());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (file, value) = read_json(&args.azure, "the Azure template")?;
    let parameters = match &args.from.parameters {
        Some(p) => Some(read_json(p, "the parameters file")?.1),
        None => None,
    };
    let client = settings.connect().await?;
    let params = TemplateImportAzureParams {
        azure: value,
        parameters,
        name: args.name,
        base_image: args.from.base_image,
        dry_run: false,
    };
    let (value, reply) = call::<m::TemplateImportAzure>(&client, &params)
        .await
        .map_err(|f| about_file(f, &file.display))?;
    warn_all(&reply.warnings);
    if settings.json {
        super::output::print_json(&value);
    } else if let Some(stored) = reply.stored {
        super::output::println(&format!(
            "created {} revision {} ({} warnings)",
            stored.name,
            stored.revision,
            reply.warnings.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn export(settings: &Settings, name: &str, revision: Option<u64>) -> CmdResult {
    let client = settings.connect().await?;
    let (_, record) = get(&client, name, revision).await?;
    let (resource, warnings) = azure::export(&record.template);
    warn_all(&warnings);
    super::output::print_json(&resource);
    Ok(ExitCode::SUCCESS)
}

/// The template a file holds (mapped from Azure with `azure`), checked for missing local files.
fn file_template(
    path: &Path,
    is_azure: bool,
    from: &AzureArgs,
    name: Option<&str>,
) -> Result<(TemplateFile, Template), Failure> {
    let (file, template) = if is_azure {
        let (file, imported) = map_locally(path, from, name)?;
        warn_all(&imported.warnings);
        (file, imported.template)
    } else {
        read_template(path)?
    };
    let missing = missing_local_files(&template);
    if !missing.is_empty() {
        return Err(Failure::invalid_template(&file.display, missing));
    }
    Ok((file, template))
}

fn report(settings: &Settings, action: &str, name: &str, revision: u64) {
    if settings.json {
        super::output::print_json(&json!({"action": action, "name": name, "revision": revision}));
    } else {
        super::output::println(&format!("{action} {name} revision {revision}"));
    }
}

pub async fn update(settings: &Settings, args: UpdateArgs) -> CmdResult {
    let (file, template) = file_template(&args.file, args.azure, &args.from, Some(&args.name))?;
    let client = settings.connect().await?;
    let params = TemplateUpdateParams {
        name: args.name,
        template: to_wire(&template)?,
        expected_revision: args.expected_revision,
    };
    let (_, stored) = call::<m::TemplateUpdate>(&client, &params)
        .await
        .map_err(|f| about_file(f, &file.display))?;
    report(settings, "updated", &stored.name, stored.revision);
    Ok(ExitCode::SUCCESS)
}

pub async fn apply(settings: &Settings, args: ApplyArgs) -> CmdResult {
    let (file, template) = file_template(&args.file, args.azure, &args.from, args.name.as_deref())?;
    let client = settings.connect().await?;
    let current = match get(&client, &template.name, None).await {
        Ok((_, record)) => Some(record),
        Err(f) if f.kind == ErrorKind::NotFound.as_str() => None,
        Err(f) => return Err(f),
    };
    let wire = to_wire(&template)?;
    let (action, stored) = match current {
        Some(record) if record.template == template => {
            report(settings, "unchanged", &template.name, record.revision);
            return Ok(ExitCode::SUCCESS);
        }
        Some(record) => {
            let params = TemplateUpdateParams {
                name: template.name.clone(),
                template: wire,
                expected_revision: Some(record.revision),
            };
            ("updated", call::<m::TemplateUpdate>(&client, &params).await)
        }
        None => (
            "created",
            call::<m::TemplateCreate>(&client, &TemplateParams { template: wire }).await,
        ),
    };
    let (_, stored) = stored.map_err(|f| about_file(f, &file.display))?;
    report(settings, action, &stored.name, stored.revision);
    Ok(ExitCode::SUCCESS)
}
