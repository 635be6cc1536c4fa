//! The Images view's Galleries tab: the project's galleries and those other projects offered it,
//! as `gallery.list` returns them, one row per image definition (`GALLERY/IMAGE`, its versions in
//! the details), and what its keys do: share a gallery, accept or reject one offered.

use kiln_shared::methods::{Empty, Name};
use kiln_shared::protocol::{
    ErrorKind, Gallery, GalleryAnswerParams, GalleryImage, GalleryShareParams, ShareStatus,
};

use super::keymap::Cmd;
use super::overlay::Overlay;
use super::{call, ok_or_show, App, Effect, Prompt, Reply, Request};

#[derive(Debug, Clone, Default)]
pub struct Galleries {
    pub items: Vec<Gallery>,
    /// Index into `rows()`.
    pub sel: usize,
    /// The tag of the `gallery.list` call in flight (0: none).
    pub tag: u64,
    /// The tag of the last share, accept or reject sent from the tab (0: none).
    pub answer_tag: u64,
    pub loaded: bool,
    /// kilnd has no `gallery.list` (an older one): not asked again on this connection.
    pub unsupported: bool,
}

/// One row of the tab: a definition, or a gallery that has none yet.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub gallery: &'a Gallery,
    pub image: Option<&'a GalleryImage>,
}

impl Row<'_> {
    /// `GALLERY/IMAGE`, or `GALLERY/` for a gallery without definitions.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.gallery.name,
            self.image.map_or("", |i| i.name.as_str())
        )
    }

    /// Who owns it, as the tab says it: `own`, or `OWNER (status)` for one offered.
    pub fn owner(&self) -> String {
        match self.gallery.share_status {
            Some(s) => format!("{} ({})", self.gallery.project, s.as_str()),
            None => "own".to_string(),
        }
    }
}

impl Galleries {
    /// The tab's rows: each gallery's definitions in order, a gallery without any as one row.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let mut out = Vec::new();
        for g in &self.items {
            if g.images.is_empty() {
                out.push(Row {
                    gallery: g,
                    image: None,
                });
            }
            out.extend(g.images.iter().map(|i| Row {
                gallery: g,
                image: Some(i),
            }));
        }
        out
    }

    pub fn selected(&self) -> Option<Row<'_>> {
        self.rows().get(self.sel).copied()
    }

    /// Galleries a build of this project can take `GALLERY/IMAGE` from: its own, and those it
    /// accepted.
    pub fn usable(&self) -> impl Iterator<Item = &Gallery> {
        self.items
            .iter()
            .filter(|g| matches!(g.share_status, None | Some(ShareStatus::Accepted)))
    }

    /// A `gallery.list` reply: the row selected before stays selected where it still is.
    fn on_list(&mut self, galleries: Vec<Gallery>) {
        let key = |r: Row| (r.gallery.project.clone(), r.name());
        let keep = self.selected().map(key);
        self.items = galleries;
        self.loaded = true;
        let rows = self.rows();
        let found = keep.and_then(|k| rows.iter().position(|r| key(*r) == k));
        self.sel = found.unwrap_or(self.sel).min(rows.len().saturating_sub(1));
    }
}

/// The `gallery.list` call that goes with each `image.list`, under its own tag (none while one
/// is in flight, or when kilnd has no galleries).
pub(super) fn list(app: &mut App) -> Option<Effect> {
    if app.images.galleries.unsupported || app.images.galleries.tag != 0 {
        return None;
    }
    let tag = app.tag();
    app.images.galleries.tag = tag;
    Some(call(tag, Request::GalleryList(Empty {})))
}

/// Whether the reply tagged `tag` answers a call of this tab.
pub(super) fn owns(app: &App, tag: u64) -> bool {
    let g = &app.images.galleries;
    tag != 0 && (tag == g.tag || tag == g.answer_tag)
}

/// The answer to a call of this tab.
pub(super) fn on_reply(app: &mut App, reply: Reply) -> Vec<Effect> {
    let method = reply.method();
    match reply {
        Reply::GalleryList(r) => {
            app.images.galleries.tag = 0;
            match r {
                Ok(list) => app.images.galleries.on_list(list.galleries),
                Err(e) if e.kind == Some(ErrorKind::MethodNotFound) => {
                    app.images.galleries.unsupported = true;
                }
                Err(e) => app.message = Some(format!("{}: {e}", method.as_str())),
            }
            Vec::new()
        }
        Reply::GalleryShare(r) | Reply::GalleryAccept(r) | Reply::GalleryReject(r) => {
            app.images.galleries.answer_tag = 0;
            let Some(r) = ok_or_show(app, method, r) else {
                return Vec::new();
            };
            let g = &r.gallery;
            app.message = Some(match method {
                Name::GalleryShare => format!(
                    "gallery {} offered; now shared with {} (pending until they accept)",
                    g.name,
                    crate::cli::image::members_text(&g.members)
                ),
                Name::GalleryAccept => format!(
                    "gallery {} of project {} accepted: its versions are usable here",
                    g.name, g.project
                ),
                _ => format!(
                    "gallery {} of project {} rejected: hidden again",
                    g.name, g.project
                ),
            });
            // Accepting or rejecting changes which versions the project sees.
            app.images.list.loaded = false;
            app.refresh()
        }
        _ => Vec::new(),
    }
}

/// A command on the Galleries tab (movement and tab switches are the view's).
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    let Some(row) = app.images.galleries.selected() else {
        return Vec::new();
    };
    let (name, owner, status) = (
        row.gallery.name.clone(),
        row.gallery.project.clone(),
        row.gallery.share_status,
    );
    match cmd {
        Cmd::Open => app.overlay = Some(Overlay::ImageWindow),
        Cmd::Share if status.is_none() => {
            app.prompt = Some(Prompt::ShareWith {
                image: name.clone(),
                image_name: name,
                input: String::new(),
                gallery: true,
            });
        }
        Cmd::Share => {
            app.message = Some(format!(
                "gallery {name} belongs to project {owner}: only this project's galleries can be \
                 shared"
            ))
        }
        Cmd::Accept | Cmd::Reject if status.is_some() => {
            let params = GalleryAnswerParams {
                name: name.clone(),
                from: owner.clone(),
            };
            let (verb, request) = if cmd == Cmd::Accept {
                ("accepting", Request::GalleryAccept(params))
            } else {
                ("rejecting", Request::GalleryReject(params))
            };
            app.message = Some(format!("{verb} gallery {name} of project {owner}..."));
            return vec![tagged(app, request)];
        }
        Cmd::Accept | Cmd::Reject => {
            app.message = Some(format!(
                "gallery {name} is this project's own: only galleries other projects offered \
                 are accepted or rejected"
            ))
        }
        Cmd::Delete => {
            app.message = Some(format!(
                "galleries are deleted from the CLI: `kiln gallery delete {name}` \
                 (--recursive with its versions); a version from the Private tab"
            ))
        }
        Cmd::RunInstance => {
            app.message = Some(
                "run a version from the Private (or Shared) tab: versions are images named \
                 GALLERY/IMAGE:X.Y.Z"
                    .to_string(),
            )
        }
        _ => {}
    }
    Vec::new()
}

/// A share, accept or reject of a gallery, under the tab's answer tag.
pub(super) fn tagged(app: &mut App, request: Request) -> Effect {
    let tag = app.tag();
    app.images.galleries.answer_tag = tag;
    call(tag, request)
}

/// The `gallery.share` of `gallery` with `projects` (asked by the share prompt).
pub(super) fn share(app: &mut App, gallery: String, projects: Vec<String>) -> Effect {
    tagged(
        app,
        Request::GalleryShare(GalleryShareParams {
            name: gallery,
            projects,
        }),
    )
}
