//! `kiln gallery ...`: a project's galleries, their image definitions (`GALLERY/IMAGE`) and
//! versions (`GALLERY/IMAGE:1.2.3`, published by builds with a `gallery` target).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;
use kiln_shared::client::Client;
use kiln_shared::methods as m;
use kiln_shared::protocol::{
    Gallery, GalleryAnswerParams, GalleryCreateParams, GalleryDeleteParams,
    GalleryImageCreateParams, GalleryImageUpdateParams, GalleryParams, GalleryPruneParams,
    GalleryShareParams, Retention,
};

use super::output::{self, local_time, Align, Column, Table};
use super::{call, check_name, CmdResult, Failure, Settings};

#[derive(Debug, Subcommand)]
pub enum GalleryCommand {
    /// Create a gallery in the project
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the project's galleries, then those other projects shared with it (with its answer)
    #[command(visible_alias = "ls")]
    List,
    /// Show a gallery: its image definitions and every version (highest first)
    Show { name: String },
    /// Delete a gallery (one holding versions only with --recursive, which deletes them)
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        #[arg(long)]
        recursive: bool,
        /// Do not ask for confirmation (needed with --recursive when stdin is not a terminal)
        #[arg(short = 'y', long)]
        yes: bool,
        /// Delete even if it or its versions are shared or builds use them (running builds
        /// keep reading their base until they end; instances still refuse it)
        #[arg(long)]
        force: bool,
    },
    /// Offer every version of a gallery (present and future) to other projects: pending there
    /// until each runs `kiln gallery accept GALLERY --from YOUR_PROJECT`
    Share {
        name: String,
        #[arg(required = true, value_name = "PROJECT")]
        projects: Vec<String>,
    },
    /// Stop sharing a gallery with projects (whatever they answered)
    Unshare {
        name: String,
        #[arg(required = true, value_name = "PROJECT")]
        projects: Vec<String>,
    },
    /// Accept a gallery another project shared with this one: its versions become visible
    /// here as shared, and `[source] image = "GALLERY/IMAGE"` resolves in it when this project
    /// has no gallery of that name
    Accept {
        name: String,
        /// The project that owns it
        #[arg(long, value_name = "PROJECT")]
        from: String,
    },
    /// Reject a gallery shared with this project: its versions are hidden again
    Reject {
        name: String,
        /// The project that owns it
        #[arg(long, value_name = "PROJECT")]
        from: String,
    },
    /// Image definitions: `GALLERY/IMAGE`, of one OS
    #[command(subcommand)]
    Image(GalleryImageCommand),
    /// Apply retention: deprecate versions past it, delete those an earlier prune deprecated
    Prune {
        name: String,
        /// Only say what it would do
        #[arg(long)]
        dry_run: bool,
    },
}

/// A definition's retention on the command line.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Keep the N highest versions (older ones are deprecated, then deleted)
    #[arg(long, value_name = "N")]
    keep_latest: Option<u32>,
    /// Keep versions at most D days old (the highest one always stays)
    #[arg(long, value_name = "D")]
    max_age_days: Option<u32>,
}

impl RetentionArgs {
    fn retention(&self) -> Retention {
        Retention {
            keep_latest: self.keep_latest,
            max_age_days: self.max_age_days,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum GalleryImageCommand {
    /// Define GALLERY/IMAGE for images of OS (a build targeting it defines it too)
    Create {
        /// GALLERY/IMAGE
        image: String,
        #[arg(long)]
        os: String,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Set a definition's retention (what is not given is no limit)
    Update {
        /// GALLERY/IMAGE
        image: String,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// List a gallery's image definitions with their latest version
    #[command(visible_alias = "ls")]
    List { gallery: String },
}

pub async fn run(settings: &Settings, command: GalleryCommand) -> CmdResult {
    let client = settings.connect().await?;
    match command {
        GalleryCommand::Create { name, description } => {
            check_name("the gallery name", &name)?;
            let params = GalleryCreateParams { name, description };
            let (value, reply) = call::<m::GalleryCreate>(&client, &params).await?;
            print_or(settings, &value, || {
                format!("created gallery {}", reply.gallery.name)
            });
        }
        GalleryCommand::List => {
            let (value, list) = call::<m::GalleryList>(&client, &m::Empty {}).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print_table(&table(&list.galleries));
            }
        }
        GalleryCommand::Show { name } => {
            let (value, reply) = call::<m::GalleryGet>(&client, &GalleryParams { name }).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print(&details(&reply.gallery));
            }
        }
        GalleryCommand::Delete {
            name,
            recursive,
            yes,
            force,
        } => {
            if recursive && !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::usage(format!(
                        "not deleting gallery {name} with its versions: stdin is not a terminal \
                         to confirm on; pass --yes"
                    )));
                }
                let question = format!("Delete gallery {name} and every version in it? [y/N] ");
                if !output::confirm(&question)? {
                    return Err(Failure::new(
                        "declined",
                        format!("gallery {name} not deleted"),
                    ));
                }
            }
            let params = GalleryDeleteParams {
                name: name.clone(),
                recursive,
                force,
            };
            let (value, _) = call::<m::GalleryDelete>(&client, &params).await?;
            print_or(settings, &value, || format!("deleted gallery {name}"));
        }
        GalleryCommand::Share { name, projects } => {
            share(settings, &client, &name, &projects, true).await?
        }
        GalleryCommand::Unshare { name, projects } => {
            share(settings, &client, &name, &projects, false).await?
        }
        GalleryCommand::Accept { name, from } => {
            answer(settings, &client, &name, &from, true).await?
        }
        GalleryCommand::Reject { name, from } => {
            answer(settings, &client, &name, &from, false).await?
        }
        GalleryCommand::Image(GalleryImageCommand::Create {
            image,
            os,
            retention,
        }) => {
            let params = GalleryImageCreateParams {
                image: image.clone(),
                os,
                retention: retention.retention(),
            };
            let (value, _) = call::<m::GalleryImageCreate>(&client, &params).await?;
            print_or(settings, &value, || {
                format!("created gallery image {image}")
            });
        }
        GalleryCommand::Image(GalleryImageCommand::Update { image, retention }) => {
            let params = GalleryImageUpdateParams {
                image: image.clone(),
                retention: retention.retention(),
            };
            let (value, _) = call::<m::GalleryImageUpdate>(&client, &params).await?;
            print_or(settings, &value, || {
                format!(
                    "gallery image {image}: {}",
                    retention_text(&params.retention)
                )
            });
        }
        GalleryCommand::Prune { name, dry_run } => {
            let params = GalleryPruneParams { name, dry_run };
            let (value, reply) = call::<m::GalleryPrune>(&client, &params).await?;
            if settings.json {
                output::print_json(&value);
            } else if reply.actions.is_empty() {
                output::println("nothing to prune");
            } else {
                for a in &reply.actions {
                    let verb = match (dry_run, a.action.as_str()) {
                        (_, "keep") => "keeps",
                        (true, "deprecate") => "would deprecate",
                        (true, _) => "would delete",
                        (false, "deprecate") => "deprecated",
                        (false, _) => "deleted",
                    };
                    output::println(&format!("{verb} {} ({})", a.version, a.reason));
                }
            }
        }
        GalleryCommand::Image(GalleryImageCommand::List { gallery }) => {
            let params = GalleryParams { name: gallery };
            let (value, reply) = call::<m::GalleryImageList>(&client, &params).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                let mut t = Table::new(vec![
                    Column::flexible("IMAGE", 8),
                    Column::fixed("OS", Align::Left),
                    Column::fixed("VERSIONS", Align::Right),
                    Column::fixed("LATEST", Align::Left),
                    Column::flexible("RETENTION", 8),
                ]);
                for i in &reply.images {
                    t.push(vec![
                        i.name.clone(),
                        i.os.clone(),
                        i.versions.len().to_string(),
                        i.latest.clone().unwrap_or_else(|| "-".into()),
                        retention_text(&i.retention),
                    ]);
                }
                output::print_table(&t);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn retention_text(r: &Retention) -> String {
    match (r.keep_latest, r.max_age_days) {
        (None, None) => "keep all".into(),
        (Some(n), None) => format!("keep the latest {n}"),
        (None, Some(d)) => format!("keep {d} days"),
        (Some(n), Some(d)) => format!("keep the latest {n}, at most {d} days old"),
    }
}

/// `gallery share` (`add`) / `gallery unshare`.
async fn share(
    settings: &Settings,
    client: &Client,
    name: &str,
    projects: &[String],
    add: bool,
) -> Result<(), Failure> {
    for p in projects {
        check_name("PROJECT", p)?;
    }
    let params = GalleryShareParams {
        name: name.to_owned(),
        projects: projects.to_vec(),
    };
    let (value, reply) = if add {
        call::<m::GalleryShare>(client, &params).await?
    } else {
        call::<m::GalleryUnshare>(client, &params).await?
    };
    print_or(settings, &value, || {
        let members = super::image::members_text(&reply.gallery.members);
        format!(
            "{} gallery {name} {} {}; now shared with {}",
            if add { "shared" } else { "unshared" },
            if add { "with" } else { "from" },
            projects.join(", "),
            if members.is_empty() {
                "no project".into()
            } else {
                members
            }
        )
    });
    Ok(())
}

/// `gallery accept` / `gallery reject`, in the project it was shared with.
async fn answer(
    settings: &Settings,
    client: &Client,
    name: &str,
    from: &str,
    accept: bool,
) -> Result<(), Failure> {
    check_name("PROJECT", from)?;
    let params = GalleryAnswerParams {
        name: name.to_owned(),
        from: from.to_owned(),
    };
    let (value, _) = if accept {
        call::<m::GalleryAccept>(client, &params).await?
    } else {
        call::<m::GalleryReject>(client, &params).await?
    };
    print_or(settings, &value, || {
        if accept {
            format!(
                "accepted gallery {name} of project {from}; its versions are shared with project {}",
                settings.project
            )
        } else {
            format!(
                "rejected gallery {name} of project {from}; hidden from project {}",
                settings.project
            )
        }
    });
    Ok(())
}

fn print_or(settings: &Settings, value: &serde_json::Value, line: impl FnOnce() -> String) {
    if settings.json {
        output::print_json(value);
    } else {
        output::println(&line());
    }
}

fn table(galleries: &[Gallery]) -> Table {
    let mut t = Table::new(vec![
        Column::flexible("NAME", 8),
        Column::fixed("IMAGES", Align::Right),
        Column::fixed("VERSIONS", Align::Right),
        Column::fixed("CREATED", Align::Left),
        Column::flexible("SHARING", 8),
        Column::flexible("DESCRIPTION", 8),
    ]);
    for g in galleries {
        t.push(vec![
            g.name.clone(),
            g.images.len().to_string(),
            g.images
                .iter()
                .map(|i| i.versions.len())
                .sum::<usize>()
                .to_string(),
            local_time(&g.created_at),
            sharing(g),
            g.description.clone(),
        ]);
    }
    t
}

/// Who a gallery is shared with (its owner's view), or who shared it and the answer (a
/// member's); `-` for neither.
fn sharing(g: &Gallery) -> String {
    match g.share_status {
        Some(s) => format!("from {} ({})", g.project, s.as_str()),
        None if g.members.is_empty() => "-".into(),
        None => format!("with {}", super::image::members_text(&g.members)),
    }
}

/// A gallery in full: each definition, then its versions.
pub fn details(g: &Gallery) -> String {
    let mut out = format!("gallery {} (project {})", g.name, g.project);
    if !g.description.is_empty() {
        out.push_str(&format!(": {}", g.description));
    }
    out.push('\n');
    if g.share_status.is_some() || !g.members.is_empty() {
        out.push_str(&format!("shared: {}\n", sharing(g)));
    }
    if g.images.is_empty() {
        out.push_str("no image definitions yet: `kiln gallery image create GALLERY/IMAGE --os OS`, or a build with a gallery target\n");
    }
    for i in &g.images {
        out.push_str(&format!(
            "\n{}/{} ({}), latest: {}, {}\n",
            g.name,
            i.name,
            i.os,
            i.latest.as_deref().unwrap_or("none"),
            retention_text(&i.retention)
        ));
        if i.versions.is_empty() {
            out.push_str("  no versions yet\n");
        }
        for v in &i.versions {
            out.push_str(&format!(
                "  {:<10} {:<10} {}  {}{}{}{}\n",
                v.version,
                v.state.as_str(),
                local_time(&v.created_at),
                v.image_id,
                v.build.map_or(String::new(), |b| format!("  build {b}")),
                if v.exclude_from_latest {
                    "  excluded from latest"
                } else {
                    ""
                },
                if v.deprecated_at.is_some() {
                    "  deprecated"
                } else {
                    ""
                }
            ));
        }
    }
    out
}
