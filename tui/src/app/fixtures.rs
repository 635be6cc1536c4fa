//! Test data for the dashboard: templates, builds and a connected `App` holding them, at a fixed
//! time so that elapsed times in snapshots never change.

use chrono::{DateTime, TimeZone, Utc};
use kiln_shared::build::BuildList;
use kiln_shared::build::{
    Build, BuildState, LogLine, LogStream, RunOutput, Step, StepKind, StepState, SubState,
};
use kiln_shared::protocol::{
    ErrorKind, ImageInfo, ImageList, ImageState, Instance, InstanceList, InstanceState,
    ShareMember, ShareStatus, SshInfo, TemplateList, TemplateRecord, TemplateSummary, Visibility,
};
use kiln_shared::Violation;

use super::keymap::Key;
use super::overlay::Overlay;
use super::{update, Action, App, CallError, Effect, Reply};

pub fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, s)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

pub fn template(name: &str, os: &str, apps: &[&str], revision: u64) -> TemplateSummary {
    TemplateSummary {
        name: name.into(),
        os: os.into(),
        revision,
        description: Some(format!("{name} on {os}")),
        applications: apps.iter().map(|a| a.to_string()).collect(),
        updated_at: at(9, 0, 0),
    }
}

fn step(
    name: &str,
    kind: StepKind,
    state: StepState,
    secs: Option<(u32, u32)>,
    exit: Option<i32>,
) -> Step {
    Step {
        name: name.into(),
        kind,
        state,
        started_at: secs.map(|(a, _)| at(10, 0, a)),
        finished_at: secs.filter(|(_, b)| *b > 0).map(|(_, b)| at(10, 0, b)),
        exit_code: exit,
    }
}

pub fn build(id: u64, template: &str, state: BuildState) -> Build {
    let running = state == BuildState::Running;
    let done = state.is_terminal();
    Build {
        id,
        project: "default".into(),
        template: template.into(),
        revision: 2,
        image_name: format!("{template}-{id}"),
        base_image: "debian-12".into(),
        base_image_name: None,
        triggered_by: None,
        state,
        sub_state: running.then_some(SubState::Customizing),
        step: (running || state == BuildState::Failed).then_some(1),
        steps: vec![
            step(
                "nginx",
                StepKind::Application,
                StepState::Succeeded,
                Some((5, 40)),
                Some(0),
            ),
            match state {
                BuildState::Failed => step(
                    "tools",
                    StepKind::Shell,
                    StepState::Failed,
                    Some((40, 52)),
                    Some(100),
                ),
                BuildState::Running => step(
                    "tools",
                    StepKind::Shell,
                    StepState::Running,
                    Some((40, 0)),
                    None,
                ),
                BuildState::Queued => {
                    step("tools", StepKind::Shell, StepState::Pending, None, None)
                }
                _ => step(
                    "tools",
                    StepKind::Shell,
                    StepState::Succeeded,
                    Some((40, 52)),
                    Some(0),
                ),
            },
            step(
                "motd",
                StepKind::File,
                if done && state != BuildState::Failed {
                    StepState::Succeeded
                } else {
                    StepState::Pending
                },
                None,
                None,
            ),
        ],
        created_at: at(10, 0, 0),
        started_at: (state != BuildState::Queued).then(|| at(10, 0, 1)),
        finished_at: done.then(|| at(10, 1, 30)),
        message: if state == BuildState::Failed {
            "step tools failed: exit code 100".into()
        } else {
            String::new()
        },
        run_outputs: if state == BuildState::Succeeded {
            vec![RunOutput {
                run_output_name: "local".into(),
                kind: "image".into(),
                artifact_id: "img-7".into(),
                path: "/var/lib/kiln/images/img-7.qcow2".into(),
                size: 512 * 1024 * 1024,
                sha256: "ab".repeat(32),
                error: None,
            }]
        } else {
            Vec::new()
        },
        queue_position: (state == BuildState::Queued).then_some(1),
        attach_command: None,
        accel: running.then(|| "tcg".into()),
    }
}

pub fn log_line(seq: u64, text: &str) -> LogLine {
    LogLine {
        seq,
        ts: at(10, 0, (seq % 60) as u32),
        stream: LogStream::Stdout,
        step: Some("tools".into()),
        line: text.into(),
    }
}

/// Instance `name` of debian-12 in `state` (up since 09:58:30 unless stopped or failed).
pub fn instance(name: &str, state: InstanceState) -> Instance {
    let up = matches!(
        state,
        InstanceState::Starting | InstanceState::Running | InstanceState::Stopping
    );
    Instance {
        name: name.into(),
        project: "default".into(),
        image: "debian-12".into(),
        image_id: "img-debian-12".into(),
        os: "debian-12".into(),
        state,
        cpus: 2,
        memory_mb: 2048,
        disk_gb: 10,
        ssh: SshInfo {
            host: "127.0.0.1".into(),
            port: if up { 40123 } else { 0 },
            user: "debian".into(),
            host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln".into(),
        },
        created_at: at(9, 58, 0),
        started_at: up.then(|| at(9, 58, 30)),
        owner: 1000,
        message: match state {
            InstanceState::Failed => "its VM exited while starting; see `kiln instance console`",
            InstanceState::Stopped => "powered off",
            _ => "started under kvm",
        }
        .into(),
    }
}

/// A connected dashboard at 10:02:00 holding three templates, four builds and three instances.
pub fn app() -> App {
    let mut app = App::new("default", at(10, 2, 0), true);
    connect(&mut app);
    let templates = vec![
        template("web-base", "debian-12", &["nginx"], 3),
        template("db", "debian-12", &["mariadb", "redis"], 1),
        template("java-app", "ubuntu-24.04", &["openjdk"], 7),
    ];
    reply(
        &mut app,
        0,
        Reply::TemplateList(Ok(TemplateList { templates })),
    );
    let builds = vec![
        build(1, "web-base", BuildState::Succeeded),
        build(2, "db", BuildState::Failed),
        build(3, "web-base", BuildState::Running),
        build(4, "java-app", BuildState::Queued),
    ];
    let mut ubuntu = image("ubuntu-24.04", None);
    ubuntu.os = "ubuntu-24.04".into();
    let mut shared = image("team-b-base", Some(40));
    shared.visibility = Visibility::Shared;
    shared.owner_project = Some("team-b".into());
    shared.shared_with = Vec::new();
    shared.share_status = Some(ShareStatus::Accepted);
    let images = vec![
        image("debian-12", None),
        image("web1", Some(1)),
        ubuntu,
        shared,
    ];
    reply(&mut app, 0, Reply::ImageList(Ok(ImageList { images })));
    reply(&mut app, 0, Reply::BuildList(Ok(BuildList { builds })));
    let instances = vec![
        instance("box", InstanceState::Running),
        instance("broken", InstanceState::Failed),
        instance("web-test", InstanceState::Stopped),
    ];
    let list = InstanceList { instances };
    reply(&mut app, 0, Reply::InstanceList(Ok(list)));
    app
}

/// A stored template with fields the form does not show (steps, vm, tags, two targets).
pub fn stored_template() -> kiln_shared::Template {
    let text = r#"
name = "web-base"
description = "nginx on Debian 12"
os = "debian-12"
applications = ["nginx"]
min_disk_gb = 10
build_timeout_minutes = 60

[source]
image = "web1"

[vm]
cpus = 4
memory_mb = 4096

[[customize]]
type = "shell"
name = "tools"
inline = ["sudo apt-get install -y jq"]

[[distribute]]
type = "image"
run_output_name = "local"

[[distribute]]
type = "export"
run_output_name = "vhd"
format = "vhd"
path = "/srv/images/web.vhd"

[tags]
owner = "ops"
"#;
    match kiln_shared::Template::from_toml(text) {
        Ok(t) => t,
        Err(v) => panic!("fixture template: {v}"),
    }
}

/// `template.get`'s result for `template` at `revision`.
pub fn record(template: &kiln_shared::Template, revision: u64) -> TemplateRecord {
    TemplateRecord {
        template: template.clone(),
        revision,
        created_at: at(8, 0, 0),
        updated_at: at(9, 0, 0),
    }
}

pub fn image(name: &str, build: Option<u64>) -> ImageInfo {
    ImageInfo {
        id: format!("img-{name}"),
        name: name.into(),
        os: "debian-12".into(),
        family: "debian".into(),
        default_user: "debian".into(),
        visibility: if build.is_some() {
            Visibility::Private
        } else {
            Visibility::Public
        },
        owner_project: build.map(|_| "default".into()),
        template: build.map(|_| "web-base".into()),
        template_revision: build.map(|_| 2),
        build,
        path: format!("/var/lib/kiln/images/img-{name}.qcow2"),
        format: "qcow2".into(),
        virtual_size: 4 * 1024 * 1024 * 1024,
        file_size: 700 * 1024 * 1024,
        sha256: "cd".repeat(32),
        min_disk_gb: 10,
        created_at: at(9, 30, 0),
        state: ImageState::Available,
        shared_with: if build.is_some() {
            vec![ShareMember {
                project: "team-b".into(),
                status: ShareStatus::Accepted,
            }]
        } else {
            Vec::new()
        },
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

/// Presses each key of `keys` (one char each), returning every effect.
pub fn press(app: &mut App, keys: &str) -> Vec<Effect> {
    keys.chars()
        .flat_map(|c| update(app, Action::Key(Key::Char(c))))
        .collect()
}

/// The shell connected to kilnd 0.1.0.
pub fn connect(app: &mut App) -> Vec<Effect> {
    update(
        app,
        Action::Connected {
            version: "0.1.0".into(),
        },
    )
}

/// The connection to kilnd dropped, with `error`.
pub fn disconnect(app: &mut App, error: &str) -> Vec<Effect> {
    update(
        app,
        Action::Disconnected {
            error: error.into(),
        },
    )
}

/// The second's tick, at `now`.
pub fn tick(app: &mut App, now: DateTime<Utc>) -> Vec<Effect> {
    update(app, Action::Tick { now })
}

pub fn key(app: &mut App, k: Key) -> Vec<Effect> {
    update(app, Action::Key(k))
}

/// kilnd's refusal of a call: an error of `kind` saying `message`, with `violations`.
pub fn refused(kind: ErrorKind, message: &str, violations: Vec<Violation>) -> CallError {
    CallError {
        kind: Some(kind),
        message: message.into(),
        violations,
    }
}

/// kilnd's answer to the call tagged `tag`.
pub fn reply(app: &mut App, tag: u64, reply: Reply) -> Vec<Effect> {
    update(
        app,
        Action::Reply {
            tag,
            reply: Box::new(reply),
        },
    )
}

/// How far the help is scrolled, while it is open.
pub fn help_scroll(app: &App) -> Option<usize> {
    match app.overlay {
        Some(Overlay::Help { scroll, .. }) => Some(scroll),
        _ => None,
    }
}

/// How far the template details window is scrolled, while it is open.
pub fn template_window(app: &App) -> Option<usize> {
    match app.overlay {
        Some(Overlay::TemplateWindow { scroll }) => Some(scroll),
        _ => None,
    }
}

/// Adds galleries to `app`, as `gallery.list` and `image.list` answer: this project's `prod`
/// with the definition `web` (debian-12: 1.0.2 latest, 1.0.1 excluded from latest, 1.0.0
/// deprecated) and the empty definition `db`, an empty gallery `staging`, and project ops'
/// gallery `base` offered to this one (pending).
pub fn with_galleries(app: &mut App) {
    use kiln_shared::protocol::{
        Gallery, GalleryImage, GalleryList, GalleryRef, GalleryVersion, Retention,
    };
    let version = |v: &str, build: u64| {
        let mut i = image(&format!("prod/web:{v}"), Some(build));
        i.id = format!("img-web-{v}");
        i.shared_with = Vec::new();
        i.gallery = Some(GalleryRef {
            gallery: "prod".into(),
            image: "web".into(),
            version: v.into(),
            exclude_from_latest: v == "1.0.1",
            deprecated_at: (v == "1.0.0").then(|| at(9, 0, 0)),
        });
        i
    };
    let versions = [
        version("1.0.2", 12),
        version("1.0.1", 11),
        version("1.0.0", 10),
    ];
    let gallery_version = |i: &ImageInfo| {
        let g = i.gallery.clone().expect("a version");
        GalleryVersion {
            version: g.version,
            image_id: i.id.clone(),
            state: ImageState::Available,
            exclude_from_latest: g.exclude_from_latest,
            deprecated_at: g.deprecated_at,
            created_at: i.created_at,
            build: i.build,
            file_size: i.file_size,
            sha256: i.sha256.clone(),
        }
    };
    let definition =
        |name: &str, versions: Vec<GalleryVersion>, latest: Option<&str>| GalleryImage {
            name: name.into(),
            os: "debian-12".into(),
            created_at: at(8, 0, 0),
            retention: Retention {
                keep_latest: Some(3),
                max_age_days: None,
            },
            versions,
            latest: latest.map(str::to_owned),
        };
    let gallery = |name: &str, project: &str, images: Vec<GalleryImage>| Gallery {
        name: name.into(),
        project: project.into(),
        description: String::new(),
        created_at: at(8, 0, 0),
        images,
        members: Vec::new(),
        share_status: None,
    };
    let mut offered = gallery("base", "ops", vec![definition("deb", Vec::new(), None)]);
    offered.share_status = Some(ShareStatus::Pending);
    let galleries = vec![
        gallery(
            "prod",
            "default",
            vec![
                definition(
                    "web",
                    versions.iter().map(gallery_version).collect(),
                    Some("1.0.2"),
                ),
                definition("db", Vec::new(), None),
            ],
        ),
        gallery("staging", "default", Vec::new()),
        offered,
    ];
    let mut images = app.images.list.items.clone();
    images.extend(versions);
    reply(app, 0, Reply::ImageList(Ok(ImageList { images })));
    reply(app, 0, Reply::GalleryList(Ok(GalleryList { galleries })));
}
