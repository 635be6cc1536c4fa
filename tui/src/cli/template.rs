//! `kiln template ...`: create, list, show, export, revisions, delete, validate, edit and trigger
//! image templates.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kiln_shared::client::Client;
use kiln_shared::methods::{self as m, Empty};
use kiln_shared::protocol::{
    ErrorKind, NameParams, RevisionList, TemplateGetParams, TemplateParams, TemplateRecord,
    TemplateRef, TemplateSummary, TemplateUpdateParams,
};
use kiln_shared::{Template, Violation};
use serde_json::{json, Value};

use super::editor;
use super::output::{self, local_time, local_time_long, Align, Column, Table};
use super::template_azure;
pub(super) use super::template_file::to_wire;
use super::template_file::{self, about_file, read_template, Format, TemplateFile};
use super::template_trigger;
use super::{call, plural, CmdResult, Failure, Settings};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Store a new template from a TOML or JSON file (`-` reads stdin)
    ///
    /// The file is JSON when its name ends in .json or its text starts with `{`, else TOML.
    /// Local files it names (a file step's `source`, a shell step's `script`) are relative to the
    /// template file's directory (the current directory for stdin) and are sent to kilnd as
    /// absolute paths; https URLs are sent as written.
    Create {
        /// The template file, TOML or JSON; `-` reads stdin
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// List the project's templates
    #[command(visible_alias = "ls")]
    List,
    /// Print a template as TOML, with its revision and update time as a comment
    Show {
        name: String,
        /// An older revision instead of the latest
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
    /// Store a new template mapped from an Azure Image Builder template (see README)
    Import(template_azure::ImportArgs),
    /// Store a file as a new revision of template NAME
    Update(template_azure::UpdateArgs),
    /// Create or update the template named inside the file; nothing new when nothing changed
    Apply(template_azure::ApplyArgs),
    /// Print only the template, as TOML or JSON that `kiln template create -f` takes back
    Export {
        name: String,
        /// As an Azure Image Builder resource (JSON) instead; what Azure cannot hold is named on stderr
        #[arg(long, conflicts_with = "format")]
        azure: bool,
        /// Output format [default: toml; json with --json]
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// An older revision instead of the latest
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
    /// List a template's revisions
    Revisions { name: String },
    /// Delete a template and all its revisions
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal)
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Check a template file without storing it (works without kilnd; exit 1 when invalid)
    Validate {
        /// The template file, TOML or JSON; `-` reads stdin
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Edit a template in $VISUAL or $EDITOR and store the result as a new revision
    ///
    /// Relative local file references in the edited text are taken relative to the current
    /// directory. When what you saved cannot be stored, the editor opens again with the errors on
    /// top; empty the file to abort.
    Edit { name: String },
    /// Turn a template's trigger on or off (stored as a new revision)
    ///
    /// With the trigger on, kilnd queues one build of the template's latest revision whenever
    /// its source gets a new version: a gallery version `latest` now means, or a new image of
    /// the source's name. The build's image is named by the trigger's image_name, where
    /// {version}, {date} (UTC, YYYYMMDD) and {build} are replaced.
    Trigger(template_trigger::TriggerArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Toml,
    Json,
}

pub async fn run(settings: &Settings, command: TemplateCommand) -> CmdResult {
    match command {
        TemplateCommand::Create { file } => create(settings, &file).await,
        TemplateCommand::List => list(settings).await,
        TemplateCommand::Show { name, revision } => show(settings, &name, revision).await,
        TemplateCommand::Import(args) => template_azure::import(settings, args).await,
        TemplateCommand::Update(args) => template_azure::update(settings, args).await,
        TemplateCommand::Apply(args) => template_azure::apply(settings, args).await,
        TemplateCommand::Export {
            name,
            azure: true,
            revision,
            ..
        } => template_azure::export(settings, &name, revision).await,
        TemplateCommand::Export {
            name,
            format,
            revision,
            ..
        } => export(settings, &name, format, revision).await,
        TemplateCommand::Revisions { name } => revisions(settings, &name).await,
        TemplateCommand::Delete { name, yes } => delete(settings, &name, yes).await,
        TemplateCommand::Validate { file } => validate(settings, &file),
        TemplateCommand::Edit { name } => edit(settings, &name).await,
        TemplateCommand::Trigger(args) => template_trigger::run(settings, args).await,
    }
}

async fn create(settings: &Settings, path: &Path) -> CmdResult {
    let (file, template) = read_template(path)?;
    // kilnd reads local files itself; one that is not there is reported before anything is sent.
    let missing = template_file::missing_local_files(&template);
    if !missing.is_empty() {
        return Err(Failure::invalid_template(&file.display, missing));
    }
    let client = settings.connect().await?;
    let params = TemplateParams {
        template: to_wire(&template)?,
    };
    let (value, created) = call::<m::TemplateCreate>(&client, &params)
        .await
        .map_err(|f| about_file(f, &file.display))?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!(
            "created {} revision {}",
            created.name, created.revision
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s
    }
}

/// The `template list` table (fitted to the terminal, 80 columns when piped).
pub fn template_table(templates: &[TemplateSummary]) -> Table {
    let mut table = Table::new(vec![
        Column::flexible("NAME", 12),
        Column::flexible("OS", 9),
        Column::fixed("REVISION", Align::Right),
        Column::flexible("APPLICATIONS", 12),
        Column::fixed("UPDATED", Align::Left),
    ]);
    for t in templates {
        table.push(vec![
            t.name.clone(),
            or_dash(t.os.clone()),
            t.revision.to_string(),
            or_dash(t.applications.join(", ")),
            local_time(&t.updated_at),
        ]);
    }
    table
}

async fn list(settings: &Settings) -> CmdResult {
    let client = settings.connect().await?;
    let (value, list) = call::<m::TemplateList>(&client, &Empty {}).await?;
    if settings.json {
        output::print_json(&value);
    } else if list.templates.is_empty() {
        eprintln!(
            "no templates in project {}; create one with `kiln template create -f FILE`",
            settings.project
        );
    } else {
        output::print_table(&template_table(&list.templates));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn get(
    client: &Client,
    name: &str,
    revision: Option<u64>,
) -> Result<(Value, TemplateRecord), Failure> {
    let params = TemplateGetParams {
        name: name.to_string(),
        revision,
    };
    call::<m::TemplateGet>(client, &params).await
}

async fn show(settings: &Settings, name: &str, revision: Option<u64>) -> CmdResult {
    let client = settings.connect().await?;
    let (value, record) = get(&client, name, revision).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::print(&format!(
            "# revision {}, updated {}\n{}{}",
            record.revision,
            local_time_long(&record.updated_at),
            template_trigger::comment(&record.template),
            record.template.to_toml()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(
    settings: &Settings,
    name: &str,
    format: Option<ExportFormat>,
    revision: Option<u64>,
) -> CmdResult {
    let format = match (format, settings.json) {
        (Some(ExportFormat::Toml), true) => {
            return Err(Failure::usage(
                "--format toml and --json contradict each other; pass one",
            ))
        }
        (_, true) => ExportFormat::Json,
        (f, false) => f.unwrap_or(ExportFormat::Toml),
    };
    let client = settings.connect().await?;
    let (_, record) = get(&client, name, revision).await?;
    match format {
        ExportFormat::Toml => output::print(&record.template.to_toml()),
        ExportFormat::Json => output::print_json(&record.template),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `template revisions` table.
pub fn revision_table(list: &RevisionList) -> Table {
    let mut table = Table::new(vec![
        Column::fixed("REVISION", Align::Right),
        Column::fixed("CREATED", Align::Left),
    ]);
    for r in &list.revisions {
        table.push(vec![r.revision.to_string(), local_time_long(&r.created_at)]);
    }
    table
}

async fn revisions(settings: &Settings, name: &str) -> CmdResult {
    let client = settings.connect().await?;
    let (value, list) = call::<m::TemplateRevisions>(&client, &name_params(name)).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::print_table(&revision_table(&list));
    }
    Ok(ExitCode::SUCCESS)
}

/// The confirmation question of `template delete`.
pub fn delete_question(name: &str, revisions: usize) -> String {
    format!(
        "Delete template {name} and its {revisions} {}? [y/N] ",
        plural(revisions, "revision", "revisions")
    )
}

/// Whether an answer to a `[y/N]` question is yes.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn delete(settings: &Settings, name: &str, yes: bool) -> CmdResult {
    if !yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "not deleting template {name}: stdin is not a terminal to confirm on; pass --yes"
        )));
    }
    let client = settings.connect().await?;
    if !yes {
        let (_, list) = call::<m::TemplateRevisions>(&client, &name_params(name)).await?;
        if !output::confirm(&delete_question(name, list.revisions.len()))? {
            return Err(Failure::new(
                "declined",
                format!("template {name} not deleted"),
            ));
        }
    }
    let (value, _) = call::<m::TemplateDelete>(&client, &name_params(name)).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!("deleted template {name}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything wrong with a template file that kiln can tell without kilnd.
fn file_violations(file: &TemplateFile) -> Vec<Violation> {
    match file.parse() {
        Err(shape) => vec![shape],
        Ok(template) => template_file::local_violations(&template),
    }
}

/// What `template validate` prints: `FILE: valid`, or one `FILE: path: message` per violation.
pub fn validation_report(file: &str, violations: &[Violation]) -> String {
    if violations.is_empty() {
        return format!("{file}: valid\n");
    }
    violations
        .iter()
        .map(|v| output::violation_line(Some(file), v) + "\n")
        .collect()
}

fn validate(settings: &Settings, path: &Path) -> CmdResult {
    let file = TemplateFile::read(path)?;
    let violations = file_violations(&file);
    if settings.json {
        output::print_json(&json!({
            "valid": violations.is_empty(),
            "violations": violations,
        }));
    } else {
        output::print(&validation_report(&file.display, &violations));
    }
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

/// A file name prefix for the temp file that is safe whatever the template is called.
fn temp_prefix(name: &str) -> String {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    format!("kiln-{safe}-")
}

/// How one round in the editor ended.
enum Round {
    Aborted,
    Unchanged,
    Stored(Value, TemplateRef),
    /// Errors to show on top of the file before the next round.
    Retry(Vec<String>),
}

async fn edit(settings: &Settings, name: &str) -> CmdResult {
    let editor_cmd = editor::editor_from_env()?;
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::io(format!("cannot read the current directory: {e}")))?;
    let first = settings.connect().await?;
    let (_, record) = get(&first, name, None).await?;
    let mut client = Some(first);
    let mut original = record.template.clone();
    template_file::resolve_local_paths(&mut original, &cwd);

    let temp = tempfile::Builder::new()
        .prefix(&temp_prefix(name))
        .suffix(".toml")
        .tempfile()
        .map_err(|e| Failure::io(format!("cannot create a temporary file: {e}")))?;
    let header = format!(
        "# kiln template edit {name} (revision {}). Save and quit to store a new revision;\n\
         # empty the file to abort. Relative file paths are relative to {}.\n",
        record.revision,
        cwd.display()
    );
    write_file(temp.path(), &(header + &record.template.to_toml()))?;

    let mut expected = record.revision;
    loop {
        editor::open(&editor_cmd, temp.path())?;
        let text = std::fs::read_to_string(temp.path())
            .map_err(|e| Failure::io(format!("cannot read back {}: {e}", temp.path().display())))?;
        let body = editor::strip_errors(&text).to_string();
        let round = edit_round(
            settings,
            &mut client,
            name,
            &body,
            &original,
            &cwd,
            &mut expected,
        )
        .await;
        match round {
            Round::Aborted => {
                say(settings, "edit aborted, nothing stored");
                if settings.json {
                    output::print_json(&TemplateRef {
                        name: name.to_string(),
                        revision: record.revision,
                    });
                }
                return Ok(ExitCode::SUCCESS);
            }
            Round::Unchanged => {
                say(settings, "no changes");
                if settings.json {
                    output::print_json(&TemplateRef {
                        name: name.to_string(),
                        revision: record.revision,
                    });
                }
                return Ok(ExitCode::SUCCESS);
            }
            Round::Stored(value, stored) => {
                if settings.json {
                    output::print_json(&value);
                } else {
                    output::println(&format!(
                        "updated {} revision {}",
                        stored.name, stored.revision
                    ));
                }
                return Ok(ExitCode::SUCCESS);
            }
            Round::Retry(errors) => {
                write_file(temp.path(), &editor::with_errors(&body, &errors))?;
            }
        }
    }
}

/// A status message for people: stdout normally, stderr when stdout carries JSON.
pub(super) fn say(settings: &Settings, message: &str) {
    if settings.json {
        eprintln!("{message}");
    } else {
        output::println(message);
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .map_err(|e| Failure::io(format!("cannot write {}: {e}", path.display())))
}

/// Judges what the person saved and, when it is a valid change, stores it.
async fn edit_round(
    settings: &Settings,
    client: &mut Option<Client>,
    name: &str,
    body: &str,
    original: &Template,
    cwd: &Path,
    expected: &mut u64,
) -> Round {
    if editor::is_blank(body) {
        return Round::Aborted;
    }
    // A parse error is the only error, so the block above the body will be one error line and
    // the hint: parse with that many lines in front for line numbers that match what is shown.
    let offset = "\n".repeat(editor::error_block_lines(1));
    let mut template = match template_file::parse_text(&(offset + body), Format::Toml) {
        Ok(t) => t,
        Err(shape) => return Round::Retry(vec![shape.to_string()]),
    };
    template_file::resolve_local_paths(&mut template, cwd);
    if &template == original {
        return Round::Unchanged;
    }
    let violations = template_file::local_violations(&template);
    if !violations.is_empty() {
        return Round::Retry(violations.iter().map(Violation::to_string).collect());
    }
    let wire = match to_wire(&template) {
        Ok(w) => w,
        Err(f) => return Round::Retry(vec![f.message]),
    };
    // Reconnect when the connection was lost during an earlier round.
    if client.is_none() {
        match settings.connect().await {
            Ok(c) => *client = Some(c),
            Err(f) => return Round::Retry(vec![f.message]),
        }
    }
    let Some(c) = client.as_ref() else {
        return Round::Retry(vec!["not connected to kilnd".to_string()]);
    };
    let params = TemplateUpdateParams {
        name: name.to_string(),
        template: wire,
        expected_revision: Some(*expected),
    };
    match call::<m::TemplateUpdate>(c, &params).await {
        Ok((value, stored)) => Round::Stored(value, stored),
        Err(f) if f.kind == ErrorKind::Conflict.as_str() => {
            // Someone stored a revision while the editor was open: say so, and let a second save
            // overwrite it knowingly.
            let get = TemplateGetParams {
                name: name.to_string(),
                revision: None,
            };
            let current = call::<m::TemplateGet>(c, &get)
                .await
                .map(|(_, r)| r.revision);
            match current {
                Ok(rev) if rev != *expected => {
                    *expected = rev;
                    Round::Retry(vec![format!(
                        "template {name} was changed to revision {rev} while you edited; \
                         save again to store your version over it, or empty the file to abort"
                    )])
                }
                _ => Round::Retry(failure_lines(&f)),
            }
        }
        Err(f) => {
            if f.kind == ErrorKind::Unavailable.as_str() {
                *client = None;
            }
            Round::Retry(failure_lines(&f))
        }
    }
}

/// A daemon's refusal as lines for the error block: its violations, or its message.
fn failure_lines(f: &Failure) -> Vec<String> {
    if f.violations.is_empty() {
        vec![f.message.clone()]
    } else {
        f.violations.iter().map(Violation::to_string).collect()
    }
}

fn name_params(name: &str) -> NameParams {
    NameParams {
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::protocol::RevisionInfo;

    fn summary(name: &str, apps: &[&str]) -> TemplateSummary {
        TemplateSummary {
            name: name.to_string(),
            os: "debian-12".to_string(),
            revision: 7,
            description: None,
            applications: apps.iter().map(|a| a.to_string()).collect(),
            updated_at: "2024-05-01T12:00:00Z".parse().expect("a time"),
        }
    }

    #[test]
    fn template_list_fits_80_columns() {
        let long = "n".repeat(255);
        let hangul = "웹".repeat(85);
        let many: Vec<String> = (0..40).map(|i| format!("app{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let rows = vec![
            summary(&long, &many),
            summary(&hangul, &["nginx"]),
            summary("web", &[]),
        ];
        let out = template_table(&rows).render(80, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("NAME "));
        for line in &lines {
            assert!(unicode_width::UnicodeWidthStr::width(*line) <= 80, "{line}");
        }
        assert!(lines[1].contains('…'));
        assert!(lines[3].starts_with("web "));
        // An empty application list shows as a dash, not as a hole in the row.
        assert!(lines[3].contains(" - "), "{}", lines[3]);
    }

    #[test]
    fn revision_table_lists_every_revision() {
        let list = RevisionList {
            revisions: (1..=3)
                .map(|r| RevisionInfo {
                    revision: r,
                    created_at: "2024-05-01T12:00:00Z".parse().expect("a time"),
                })
                .collect(),
        };
        let out = revision_table(&list).render(80, false);
        assert_eq!(out.lines().count(), 4);
        assert!(out.starts_with("REVISION  CREATED\n       1  "), "{out}");
    }

    #[test]
    fn delete_confirmation() {
        assert_eq!(
            delete_question("web", 3),
            "Delete template web and its 3 revisions? [y/N] "
        );
        assert_eq!(
            delete_question("web", 1),
            "Delete template web and its 1 revision? [y/N] "
        );
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "ja"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn validation_report_lines() {
        assert_eq!(validation_report("web.toml", &[]), "web.toml: valid\n");
        let violations = vec![
            Violation {
                path: "os".into(),
                message: "unknown OS \"plan9\"".into(),
            },
            Violation {
                path: String::new(),
                message: "invalid TOML: expected `=` (line 2)".into(),
            },
        ];
        assert_eq!(
            validation_report("web.toml", &violations),
            "web.toml: os: unknown OS \"plan9\"\n\
             web.toml: invalid TOML: expected `=` (line 2)\n"
        );
    }

    #[test]
    fn temp_prefix_is_safe() {
        assert_eq!(temp_prefix("web-base"), "kiln-web-base-");
        assert_eq!(temp_prefix("웹 서버 v1.2"), "kiln-v1.2-");
        assert_eq!(temp_prefix(&"x".repeat(255)).len(), 5 + 40 + 1);
    }

    #[test]
    fn edit_parse_errors_point_at_the_shown_line() {
        // The person saved a broken line 3 of the body; after kiln puts the error block (one
        // error and the hint) on top, that line is line 5 of the file.
        let body = "name = \"web\"\nos = \"debian-12\"\nthis is not toml\n";
        let offset = "\n".repeat(editor::error_block_lines(1));
        let err = template_file::parse_text(&(offset + body), Format::Toml).expect_err("broken");
        let shown = editor::with_errors(body, &[err.to_string()]);
        assert!(err.message.contains("line 5"), "{err:?}");
        assert_eq!(shown.lines().nth(4), Some("this is not toml"));
    }

    #[test]
    fn toml_round_trip_is_unchanged() {
        let text = r#"
name = "web"
os = "debian-12"
applications = ["nginx"]
[[customize]]
type = "file"
name = "motd"
source = "/etc/motd"
destination = "/tmp/motd"
[[distribute]]
type = "image"
run_output_name = "local"
"#;
        let t = Template::from_toml(text).expect("parses");
        let again = Template::from_toml(&t.to_toml()).expect("re-parses");
        assert_eq!(t, again);
    }
}
