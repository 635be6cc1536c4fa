//! `kiln image ...`: list, show, delete, share and unshare catalog images, accept or reject
//! images shared with the project; import image files; bootstrap public base images.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kiln_shared::client::Client;
use kiln_shared::methods::{self as m, Method};
use kiln_shared::protocol::{
    ImageDeleteParams, ImageInfo, ImageListParams, ImageParams, ImageProgress, ImageShareParams,
    ImageWarmParams, ShareMember, ShareStatus, Visibility,
};
use serde_json::Value;

pub use super::image_details::image_details;
use super::image_sources::{self, Imported};
use super::output::{self, local_time, Align, Column, Table};
use super::{call, check_name, CmdResult, Failure, Settings};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images the project sees: public ones, its own and those shared with it
    #[command(visible_alias = "ls")]
    List {
        /// Only images of this visibility
        #[arg(long, value_enum, conflicts_with = "pending")]
        visibility: Option<VisibilityArg>,
        /// Only images other projects shared with this one that wait for `kiln image accept`
        /// (they are hidden everywhere else until accepted)
        #[arg(long)]
        pending: bool,
    },
    /// Show one image (by id or name) in full
    Show { image: String },
    /// Delete an image (its file and its catalog entry)
    #[command(visible_alias = "rm")]
    Delete {
        image: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal)
        #[arg(short = 'y', long)]
        yes: bool,
        /// Delete even if it is shared or builds use it (running builds keep reading it until
        /// they end; instances still refuse it)
        #[arg(long)]
        force: bool,
    },
    /// Offer one of your project's images to other projects: pending there until each runs
    /// `kiln image accept`, then they see and build from it
    Share {
        image: String,
        #[arg(required = true, value_name = "PROJECT")]
        projects: Vec<String>,
    },
    /// Stop sharing an image with projects (whatever they answered)
    Unshare {
        image: String,
        #[arg(required = true, value_name = "PROJECT")]
        projects: Vec<String>,
    },
    /// Accept an image another project shared with this one: it is then listed as shared and
    /// can be built from and run (find pending ones with `kiln image list --pending`)
    Accept {
        /// The image's id or name
        image: String,
    },
    /// Reject an image shared with this project: hidden again (also after accepting it)
    Reject {
        /// The image's id or name
        image: String,
    },
    /// Import a qcow2 or raw file as an image (copied into the catalog as zstd qcow2)
    ///
    /// kilnd reads the file itself, so it must be on kilnd's host and readable by you. Images
    /// with a backing file or an external data file are refused: flatten them first with
    /// `qemu-img convert -O qcow2 FILE flat.qcow2`.
    Import {
        /// The image file (qcow2 or raw)
        file: PathBuf,
        /// The image's name
        #[arg(long)]
        name: String,
        /// Its OS as distribution-version, e.g. debian-12
        #[arg(long)]
        os: String,
        /// The user kiln logs in as (default: the one its cloud-init config names)
        #[arg(long)]
        user: Option<String>,
        /// Make it a public image every project sees (needs kilnd's admin group)
        #[arg(long)]
        public: bool,
        /// Then boot it once and save the ready VM, so builds from it start in seconds (it must
        /// boot with cloud-init NoCloud)
        #[arg(long)]
        warm: bool,
    },
    /// Build a public base image from the distribution's mirror (takes minutes)
    ///
    /// Needs kilnd running as root with mmdebstrap installed, and kilnd's admin group.
    /// Replaces an older image of the same name once the new one is available.
    Bootstrap {
        /// The OS to bootstrap: debian-12 or debian-13
        #[arg(required_unless_present = "list")]
        os: Option<String>,
        /// List the OSes kilnd can bootstrap, and whether its host has their tools
        #[arg(long, conflicts_with_all = ["os", "no_warm"])]
        list: bool,
        /// Don't save a booted VM of it for fast builds (default: kilnd.toml's warm_start)
        #[arg(long)]
        no_warm: bool,
    },
    /// List the applications a template may select, and the OSes each supports
    Apps {
        /// Only the applications this OS supports, e.g. debian-13
        #[arg(long)]
        os: Option<String>,
    },
    /// Make an image of a stopped instance (generalized like a build's, unless told not to)
    Create {
        /// The stopped instance
        #[arg(long, value_name = "INSTANCE")]
        from_instance: String,
        /// The new image's name
        #[arg(long)]
        name: String,
        /// Keep machine-id, cloud-init state and your login key (kiln's keys and the host
        /// keys are removed anyway)
        #[arg(long)]
        no_generalize: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Boot an image once and save the ready VM, so builds from it start in seconds
    ///
    /// Builds whose template asks for the default vCPUs and memory then resume this VM
    /// instead of booting. bootstrap and import do this already unless told not to; run it
    /// again after a failure, or to refresh the saved VM.
    Warm {
        /// The image (name or id)
        image: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VisibilityArg {
    Public,
    Private,
    Shared,
}

impl VisibilityArg {
    fn wire(self) -> Visibility {
        match self {
            VisibilityArg::Public => Visibility::Public,
            VisibilityArg::Private => Visibility::Private,
            VisibilityArg::Shared => Visibility::Shared,
        }
    }
}

pub async fn run(settings: &Settings, command: ImageCommand) -> CmdResult {
    match command {
        ImageCommand::List {
            visibility,
            pending,
        } => list(settings, visibility, pending).await,
        ImageCommand::Show { image } => show(settings, &image).await,
        ImageCommand::Delete { image, yes, force } => delete(settings, &image, yes, force).await,
        ImageCommand::Accept { image } => answer(settings, &image, ShareStatus::Accepted).await,
        ImageCommand::Reject { image } => answer(settings, &image, ShareStatus::Rejected).await,
        ImageCommand::Share { image, projects } => share(settings, &image, &projects, true).await,
        ImageCommand::Unshare { image, projects } => {
            share(settings, &image, &projects, false).await
        }
        ImageCommand::Import {
            file,
            name,
            os,
            user,
            public,
            warm,
        } => {
            let file = Imported {
                file: &file,
                name: &name,
                os: &os,
                user,
            };
            image_sources::import(settings, file, public, warm).await
        }
        ImageCommand::Apps { os } => image_sources::apps(settings, os.as_deref()),
        ImageCommand::Bootstrap { list: true, .. } => image_sources::list(settings).await,
        ImageCommand::Bootstrap { os, no_warm, .. } => {
            image_sources::bootstrap(settings, os.as_deref().unwrap_or_default(), !no_warm).await
        }
        ImageCommand::Warm { image } => warm(settings, &image).await,
        ImageCommand::Create {
            from_instance,
            name,
            no_generalize,
            description,
        } => {
            super::instance::create_image(
                settings,
                &from_instance,
                &name,
                !no_generalize,
                description,
            )
            .await
        }
    }
}

/// A size the way `ls -h` shows it: `512B`, `1.5K`, `177M`, `3.0G`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// The `image list` table (fitted to the terminal, 80 columns when piped).
pub fn image_table(images: &[ImageInfo]) -> Table {
    let mut table = Table::new(vec![
        Column::flexible("NAME", 12),
        Column::fixed("VISIBILITY", Align::Left),
        Column::flexible("OS", 9),
        Column::fixed("SIZE", Align::Right),
        Column::fixed("STATE", Align::Left),
        Column::fixed("CREATED", Align::Left),
    ]);
    for i in images {
        table.push(vec![
            i.name.clone(),
            visibility_text(i).to_string(),
            i.os.clone(),
            if i.file_size == 0 {
                "-".to_string()
            } else {
                human_size(i.file_size)
            },
            i.state.as_str().to_string(),
            local_time(&i.created_at),
        ]);
    }
    table
}

/// The visibility column: `pending` for a share not accepted yet, else the visibility.
pub fn visibility_text(i: &ImageInfo) -> &'static str {
    match i.share_status {
        Some(ShareStatus::Pending) => "pending",
        _ => i.visibility.as_str(),
    }
}

/// A share list as the owner reads it: `db (accepted), ops (pending)`; empty when none.
pub fn members_text(members: &[ShareMember]) -> String {
    members
        .iter()
        .map(|m| format!("{} ({})", m.project, m.status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list(settings: &Settings, visibility: Option<VisibilityArg>, pending: bool) -> CmdResult {
    let client = settings.connect().await?;
    let params = ImageListParams {
        visibility: visibility.map(VisibilityArg::wire),
        pending,
    };
    let (value, list) = call::<m::ImageList>(&client, &params).await?;
    if settings.json {
        output::print_json(&value);
    } else if list.images.is_empty() && pending {
        eprintln!(
            "no images shared with project {} wait for an answer",
            settings.project
        );
    } else if list.images.is_empty() {
        eprintln!(
            "no images visible to project {}; bootstrap one with `kiln image bootstrap debian-12` \
             or import one with `kiln image import FILE --name NAME --os OS`",
            settings.project
        );
    } else {
        output::print_table(&image_table(&list.images));
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(client: &Client, image: &str) -> Result<(Value, ImageInfo), Failure> {
    let params = ImageParams {
        image: image.to_string(),
    };
    let (value, result) = call::<m::ImageGet>(client, &params).await?;
    Ok((value, result.image))
}

async fn show(settings: &Settings, image: &str) -> CmdResult {
    let client = settings.connect().await?;
    let (value, info) = get(&client, image).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::print(&image_details(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// The confirmation question of `image delete`.
pub fn delete_question(i: &ImageInfo) -> String {
    format!(
        "Delete {} image {} ({}, {})? [y/N] ",
        i.visibility.as_str(),
        i.name,
        i.id,
        human_size(i.file_size)
    )
}

async fn delete(settings: &Settings, image: &str, yes: bool, force: bool) -> CmdResult {
    if !yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "not deleting image {image}: stdin is not a terminal to confirm on; pass --yes"
        )));
    }
    let client = settings.connect().await?;
    // Resolve the name once, so the image asked about is the one deleted.
    let (_, info) = get(&client, image).await?;
    if !yes && !output::confirm(&delete_question(&info))? {
        return Err(Failure::new(
            "declined",
            format!("image {image} not deleted"),
        ));
    }
    let (value, _) = call::<m::ImageDelete>(
        &client,
        &ImageDeleteParams {
            image: info.id.clone(),
            force,
        },
    )
    .await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!("deleted image {} ({})", info.name, info.id));
    }
    Ok(ExitCode::SUCCESS)
}

async fn share(settings: &Settings, image: &str, projects: &[String], add: bool) -> CmdResult {
    for p in projects {
        check_name("PROJECT", p)?;
    }
    let client = settings.connect().await?;
    let params = ImageShareParams {
        image: image.to_string(),
        projects: projects.to_vec(),
    };
    let (value, result) = if add {
        call::<m::ImageShare>(&client, &params).await?
    } else {
        call::<m::ImageUnshare>(&client, &params).await?
    };
    if settings.json {
        output::print_json(&value);
    } else {
        let i = &result.image;
        let now = if i.shared_with.is_empty() {
            "no project".to_string()
        } else {
            members_text(&i.shared_with)
        };
        output::println(&format!(
            "{} {} {} {}; now shared with {now}",
            if add { "shared" } else { "unshared" },
            i.name,
            if add { "with" } else { "from" },
            projects.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `image accept` / `image reject`.
async fn answer(settings: &Settings, image: &str, status: ShareStatus) -> CmdResult {
    let client = settings.connect().await?;
    let params = ImageParams {
        image: image.to_string(),
    };
    let (value, result) = if status == ShareStatus::Accepted {
        call::<m::ImageAccept>(&client, &params).await?
    } else {
        call::<m::ImageReject>(&client, &params).await?
    };
    if settings.json {
        output::print_json(&value);
    } else {
        let i = &result.image;
        let owner = i.owner_project.as_deref().unwrap_or("-");
        output::println(&if status == ShareStatus::Accepted {
            format!(
                "accepted image {} ({}) of project {owner}; project {} sees it as shared",
                i.name, i.id, settings.project
            )
        } else {
            format!(
                "rejected image {} ({}) of project {owner}; hidden from project {}",
                i.name, i.id, settings.project
            )
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls `method`, printing its `image.progress` notifications to stderr as they arrive (not
/// with --json, so that stderr holds nothing but a JSON error when there is one). Returns the
/// result and how many progress lines were shown.
pub(super) async fn with_progress<M: Method>(
    settings: &Settings,
    params: &M::Params,
) -> Result<(Value, M::Result, usize), Failure> {
    let (client, mut notes) = Client::connect(&settings.socket, Some(settings.project.clone()))
        .await
        .map_err(Failure::from)?;
    let show = !settings.json;
    let mut streamed = 0usize;
    let call = call::<M>(&client, params);
    tokio::pin!(call);
    let mut shown = |note: kiln_shared::protocol::Notification| {
        if let Some(p) = note.decode::<ImageProgress>() {
            if show {
                eprintln!("{}", output::truncate(&p.line, usize::MAX));
            }
            streamed += 1;
        }
    };
    let (value, result) = loop {
        tokio::select! {
            done = &mut call => break done?,
            Some(note) = notes.recv() => shown(note),
        }
    };
    // kilnd sends every progress line before the result; some may still be queued here.
    while let Ok(note) = notes.try_recv() {
        shown(note);
    }
    Ok((value, result, streamed))
}

async fn warm(settings: &Settings, image: &str) -> CmdResult {
    if !settings.json {
        eprintln!("kiln: booting {image} once to save a ready VM; under TCG this takes minutes");
    }
    let (value, result, _) = with_progress::<m::ImageWarm>(
        settings,
        &ImageWarmParams {
            image: image.to_string(),
        },
    )
    .await?;
    if settings.json {
        output::print_json(&value);
    } else {
        let i = &result.image;
        match &i.warm {
            Some(w) => output::println(&format!(
                "warmed {} ({}): builds with {} vCPUs and {} MB resume it ({})",
                i.name, i.id, w.cpus, w.memory_mb, w.accel
            )),
            None => output::println(&format!("warmed {} ({})", i.name, i.id)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::protocol::ImageState;

    fn info(name: &str, visibility: Visibility, size: u64) -> ImageInfo {
        ImageInfo {
            id: "img-0123456789abcdef".into(),
            name: name.into(),
            os: "debian-12".into(),
            family: "debian".into(),
            default_user: "debian".into(),
            visibility,
            owner_project: None,
            template: Some("web".into()),
            template_revision: Some(3),
            build: Some(12),
            path: "/var/lib/kiln/images/img-0123456789abcdef.qcow2".into(),
            format: "qcow2".into(),
            virtual_size: 3 << 30,
            file_size: size,
            sha256: "ab".repeat(32),
            min_disk_gb: 3,
            created_at: "2024-05-01T12:00:00Z".parse().expect("a time"),
            state: ImageState::Available,
            shared_with: vec![],
            share_status: None,
            message: None,
            from_instance: None,
            parent_image: None,
            description: None,
            warm: None,
            gallery: None,
            parent_sha256: None,
            trigger: None,
            lineage: Vec::new(),
        }
    }

    #[test]
    fn sizes_read_like_ls() {
        for (bytes, shown) in [
            (0, "0B"),
            (512, "512B"),
            (1536, "1.5K"),
            (177 * 1024 * 1024, "177M"),
            (3 << 30, "3.0G"),
            (1023 * 1024 + 1000, "1.0M"),
        ] {
            assert_eq!(human_size(bytes), shown, "{bytes}");
        }
    }

    #[test]
    fn image_list_fits_80_columns() {
        let long = "n".repeat(255);
        let hangul = "웹".repeat(85);
        let rows = vec![
            info(&long, Visibility::Public, 185_000_000),
            info(&hangul, Visibility::Shared, 0),
            info("web", Visibility::Private, 1536),
        ];
        let out = image_table(&rows).render(80, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("NAME ") && lines[0].contains("VISIBILITY"),
            "{}",
            lines[0]
        );
        for line in &lines {
            assert!(unicode_width::UnicodeWidthStr::width(*line) <= 80, "{line}");
        }
        assert!(
            lines[1].contains('…') && lines[1].contains("176M"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("shared") && lines[2].contains(" - "),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("web ") && lines[3].contains("available"));
    }

    #[test]
    fn details_and_question() {
        let text = image_details(&info("web", Visibility::Private, 1536));
        assert!(text.contains("\nname:         web\n"), "{text}");
        assert!(
            text.contains("built from:   web revision 3, build 12\n"),
            "{text}"
        );
        assert!(text.contains("shared with:  -\n"), "{text}");
        assert!(!text.contains("message:"));
        assert_eq!(
            delete_question(&info("web", Visibility::Public, 1536)),
            "Delete public image web (img-0123456789abcdef, 1.5K)? [y/N] "
        );
    }
}
