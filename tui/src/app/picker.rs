//! The base-image picker: a window over the view that opened it, listing the images a template
//! can start from (available, and of the template's OS), and the gallery definitions by the
//! version their `latest` is now, for a build or for a template's source.

use kiln_shared::build::BuildStartParams;
use kiln_shared::protocol::{ImageInfo, ImageState, Visibility};

use super::images::Images;

use super::keymap::{self, Cmd, Key};
use super::listed::{moved, movement};
use super::overlay::{self, Overlay};
use super::{call, form, App, Effect, Reply, Request};

/// What the chosen image is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickFor {
    /// Start a build of `template` producing `image_name`.
    Build {
        template: String,
        image_name: String,
    },
    /// The source image of the template in the editor form.
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    pub purpose: PickFor,
    /// Only images of this OS are offered.
    pub os: String,
    /// Index into `compatible(images, os)`.
    pub sel: usize,
    /// The person moved the selection: a default that arrives late does not move it again.
    pub touched: bool,
}

/// The images a template for `os` can start from: available ones of that OS, public first,
/// then the project's own, then shared ones, each by name.
pub fn compatible<'a>(images: &'a [ImageInfo], os: &str) -> Vec<&'a ImageInfo> {
    let rank = |v: Visibility| match v {
        Visibility::Public => 0,
        Visibility::Private => 1,
        Visibility::Shared => 2,
    };
    let mut out: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| i.os == os && i.state == ImageState::Available)
        .collect();
    out.sort_by(|a, b| {
        (rank(a.visibility), &a.name, &a.id).cmp(&(rank(b.visibility), &b.name, &b.id))
    });
    out
}

/// One row of the picker.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice<'a> {
    /// What the source (or the build's base image) becomes: the image's name, or
    /// `GALLERY/IMAGE` for a definition, resolved to its `latest` when a build is queued.
    pub name: String,
    /// The image, or for a definition the version `latest` is now.
    pub image: &'a ImageInfo,
    /// A gallery definition by its latest version (`image` is that version).
    pub latest: bool,
}

/// The picker's rows for `os`: public images, then each gallery definition of that OS by its
/// `latest` (own galleries and accepted ones), then the project's own images and shared ones.
pub fn choices<'a>(images: &'a Images, os: &str) -> Vec<Choice<'a>> {
    let plain = compatible(&images.list.items, os);
    let public = plain
        .iter()
        .take_while(|i| i.visibility == Visibility::Public)
        .count();
    let mut latest: Vec<Choice> = images
        .galleries
        .usable()
        .flat_map(|g| g.images.iter().map(move |d| (g, d)))
        .filter(|(_, d)| d.os == os)
        .filter_map(|(g, d)| {
            let version = d.latest.as_deref()?;
            let id = &d.versions.iter().find(|v| v.version == version)?.image_id;
            let image = *plain.iter().find(|i| &i.id == id)?;
            Some(Choice {
                name: format!("{}/{}", g.name, d.name),
                image,
                latest: true,
            })
        })
        .collect();
    latest.sort_by(|a, b| a.name.cmp(&b.name));
    latest.dedup_by(|a, b| a.name == b.name);
    let of = |i: &'a ImageInfo| Choice {
        name: i.name.clone(),
        image: i,
        latest: false,
    };
    let mut out: Vec<Choice> = plain[..public].iter().copied().map(of).collect();
    out.extend(latest);
    out.extend(plain[public..].iter().copied().map(of));
    out
}

/// `template.get` told the source image of the template `b` builds: the picker's default.
pub(super) fn on_build_source(app: &mut App, reply: Reply) {
    let Reply::TemplateGet(Ok(record)) = reply else {
        return;
    };
    let source = record.template.source.image;
    if let Some(b) = app.build_source.as_mut() {
        b.image = Some(source.clone());
    }
    let at = app.picker_choices().iter().position(|i| i.name == source);
    if let (Some(p), Some(at)) = (app.picker_mut(), at) {
        if matches!(p.purpose, PickFor::Build { .. }) && !p.touched {
            p.sel = at;
        }
    }
}

/// A key while the picker is open (and on top).
pub(super) fn on_key(app: &mut App, key: Key) -> Vec<Effect> {
    let Some(cmd) = keymap::picker_command(key) else {
        return Vec::new();
    };
    let len = app.picker_choices().len();
    let Some(delta) = movement(cmd, app.list_page()) else {
        match cmd {
            Cmd::Help => overlay::open_help(app),
            Cmd::Back => {
                if let Some(Overlay::Picker(Picker {
                    purpose: PickFor::Build { template, .. },
                    ..
                })) = app.overlay.take()
                {
                    app.message = Some(format!("no build of {template} started"));
                }
            }
            Cmd::Open => return choose_image(app),
            _ => {}
        }
        return Vec::new();
    };
    if let Some(p) = app.picker_mut() {
        p.sel = moved(p.sel, delta, len);
        p.touched = true;
    }
    Vec::new()
}

/// `enter` in the picker: the selected image becomes the source, or the build starts from it.
fn choose_image(app: &mut App) -> Vec<Effect> {
    let Some(p) = app.picker().cloned() else {
        return Vec::new();
    };
    let Some(image) = app.picker_choices().get(p.sel).map(|i| i.name.clone()) else {
        app.message = Some(if app.images.list.loaded {
            format!(
                "no available {} image: make one with `kiln image bootstrap {}` or import one",
                p.os, p.os
            )
        } else {
            "the image list has not arrived yet".to_string()
        });
        return Vec::new();
    };
    app.overlay = None;
    match p.purpose {
        PickFor::Source => {
            form::set_source(app, image);
            Vec::new()
        }
        PickFor::Build {
            template,
            image_name,
        } => {
            app.build_source = None;
            app.message = Some(format!("starting a build of {template} from {image}..."));
            let params = BuildStartParams {
                template,
                image_name,
                base_image: Some(image),
            };
            vec![call(0, Request::BuildStart(params))]
        }
    }
}
