//! The Images view's state: the image catalog as this project sees it (public, private,
//! shared, and the shares waiting for its answer), its galleries, the tab shown, and what its
//! keys do.

use kiln_shared::protocol::{
    ImageInfo, ImageListParams, ImageParams, ImageShareParams, Visibility,
};

use super::galleries::{self, Galleries};
use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::overlay::Overlay;
use super::{call, App, Deletable, Effect, Prompt, Reply, Request, View};
use kiln_shared::methods::Name;

/// The Images view's tabs: the images of one visibility each, then the galleries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Public,
    Private,
    Shared,
    Galleries,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Public, Tab::Private, Tab::Shared, Tab::Galleries];

    /// The visibility of the images the tab lists (`None`: the galleries tab).
    pub fn visibility(self) -> Option<Visibility> {
        match self {
            Tab::Public => Some(Visibility::Public),
            Tab::Private => Some(Visibility::Private),
            Tab::Shared => Some(Visibility::Shared),
            Tab::Galleries => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Public => "Public",
            Tab::Private => "Private",
            Tab::Shared => "Shared",
            Tab::Galleries => "Galleries",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Images {
    /// Every image this project sees; `list.sel` indexes `visible()`.
    pub list: Listed<ImageInfo>,
    /// The tab shown.
    pub tab: Tab,
    /// The galleries, for their tab and the base picker.
    pub galleries: Galleries,
    /// Images other projects shared with this one that wait for its answer (listed on the
    /// shared tab, marked pending), from `image.list {pending}`.
    pub pending: Vec<ImageInfo>,
    /// The tag of the `image.list {pending}` call in flight (0: none).
    pub pending_tag: u64,
}

impl Default for Images {
    fn default() -> Images {
        Images {
            list: Listed::default(),
            tab: Tab::Public,
            galleries: Galleries::default(),
            pending: Vec::new(),
            pending_tag: 0,
        }
    }
}

impl Images {
    /// The images of the view's tab.
    pub fn visible(&self) -> Vec<&ImageInfo> {
        self.of_tab(self.tab)
    }

    /// The images a tab lists: those of its visibility, and on the shared tab then the
    /// pending shares (none on the galleries tab).
    pub fn of_tab(&self, tab: Tab) -> Vec<&ImageInfo> {
        let Some(visibility) = tab.visibility() else {
            return Vec::new();
        };
        let mut out: Vec<&ImageInfo> = self.of(visibility).collect();
        if tab == Tab::Shared {
            out.extend(self.pending.iter());
        }
        out
    }

    /// The images of one visibility (one tab), in the daemon's order.
    pub fn of(&self, visibility: Visibility) -> impl Iterator<Item = &ImageInfo> {
        self.list
            .items
            .iter()
            .filter(move |i| i.visibility == visibility)
    }

    pub fn selected(&self) -> Option<&ImageInfo> {
        self.visible().get(self.list.sel).copied()
    }

    /// How many rows the tab shown has.
    fn rows(&self) -> usize {
        match self.tab {
            Tab::Galleries => self.galleries.rows().len(),
            tab => self.of_tab(tab).len(),
        }
    }

    /// An `image.list` reply.
    pub(super) fn on_list(&mut self, images: Vec<ImageInfo>) {
        let keep = self.selected().map(|i| i.id.clone());
        self.list.items = images;
        self.list.loaded = true;
        let visible = self.visible();
        let found = keep.and_then(|id| visible.iter().position(|i| i.id == id));
        let len = visible.len();
        self.list.reselect(found, len);
    }
}

/// A command in the Images view.
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        let len = app.images.rows();
        match app.images.tab {
            Tab::Galleries => {
                let g = &mut app.images.galleries;
                g.sel = super::listed::moved(g.sel, delta, len);
            }
            _ => app.images.list.move_sel(delta, len),
        }
        return Vec::new();
    }
    let switch = matches!(
        cmd,
        Cmd::PrevTab
            | Cmd::NextTab
            | Cmd::ShowPublic
            | Cmd::ShowPrivate
            | Cmd::ShowShared
            | Cmd::ShowGalleries
    );
    if app.images.tab == Tab::Galleries && !switch && cmd != Cmd::Back {
        return galleries::on_command(app, cmd);
    }
    match cmd {
        Cmd::Back => app.view = View::Templates,
        Cmd::Open if app.images.selected().is_some() => app.overlay = Some(Overlay::ImageWindow),
        Cmd::RunInstance => {
            if let Some(image) = app.images.selected().cloned() {
                super::instances::ask_run(app, &image);
            }
        }
        Cmd::Share => match app.images.selected().cloned() {
            Some(i) if i.visibility == Visibility::Private => {
                app.prompt = Some(Prompt::ShareWith {
                    image: i.id,
                    image_name: i.name,
                    input: String::new(),
                    gallery: false,
                });
            }
            Some(i) => {
                app.message = Some(format!(
                    "image {} is {}: only this project's private images can be shared",
                    i.name,
                    i.visibility.as_str()
                ))
            }
            None => {}
        },
        Cmd::Accept | Cmd::Reject => match app.images.selected().cloned() {
            Some(i) if i.visibility == Visibility::Shared => {
                let params = ImageParams { image: i.id };
                let (verb, request) = if cmd == Cmd::Accept {
                    ("accepting", Request::ImageAccept(params))
                } else {
                    ("rejecting", Request::ImageReject(params))
                };
                app.message = Some(format!("{verb} image {}...", i.name));
                return vec![call(0, request)];
            }
            Some(i) => {
                app.message = Some(format!(
                    "image {} is {}: only images other projects shared with this one are \
                     accepted or rejected (3: the shared tab)",
                    i.name,
                    i.visibility.as_str()
                ))
            }
            None => {}
        },
        Cmd::Delete => {
            if let Some(name) = app.images.selected().map(|i| i.name.clone()) {
                app.prompt = Some(Prompt::ConfirmDelete {
                    what: Deletable::Image,
                    name,
                    input: String::new(),
                });
            }
        }
        _ if switch => {
            let n = Tab::ALL.len();
            let at = Tab::ALL
                .iter()
                .position(|t| *t == app.images.tab)
                .unwrap_or(0);
            app.images.tab = match cmd {
                Cmd::PrevTab => Tab::ALL[(at + n - 1) % n],
                Cmd::NextTab => Tab::ALL[(at + 1) % n],
                Cmd::ShowPrivate => Tab::Private,
                Cmd::ShowShared => Tab::Shared,
                Cmd::ShowGalleries => Tab::Galleries,
                _ => Tab::Public,
            };
            app.images.list.sel = 0;
        }
        _ => {}
    }
    Vec::new()
}

/// The `image.share` (or, for a gallery, `gallery.share`) call for the projects typed in
/// `input` (space- or comma-separated).
pub(super) fn share(
    app: &mut App,
    image: String,
    image_name: String,
    input: &str,
    gallery: bool,
) -> Vec<Effect> {
    let what = if gallery { "gallery" } else { "image" };
    let projects: Vec<String> = input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if projects.is_empty() {
        app.message = Some(format!("{what} {image_name} not shared: no project named"));
        return Vec::new();
    }
    app.message = Some(format!(
        "sharing {what} {image_name} with {}...",
        projects.join(", ")
    ));
    if gallery {
        return vec![galleries::share(app, image, projects)];
    }
    vec![call(
        0,
        Request::ImageShare(ImageShareParams { image, projects }),
    )]
}

/// The calls that go with each `image.list`: the pending shares and the galleries.
pub(super) fn list_beside(app: &mut App) -> Vec<Effect> {
    let mut fx = vec![list_pending(app)];
    fx.extend(galleries::list(app));
    fx
}

/// Whether the reply tagged `tag` answers a call the Images view made under its own tag.
pub(super) fn owns(app: &App, tag: u64) -> bool {
    (tag != 0 && tag == app.images.pending_tag) || galleries::owns(app, tag)
}

/// The answer to a call the Images view tagged.
pub(super) fn on_reply(app: &mut App, tag: u64, reply: Reply) -> Vec<Effect> {
    if tag != app.images.pending_tag {
        return galleries::on_reply(app, reply);
    }
    if let Reply::ImageList(r) = reply {
        if let Some(list) = super::ok_or_show(app, Name::ImageList, r) {
            on_pending(app, list.images);
        }
    }
    Vec::new()
}

/// The `image.list {pending}` call that goes with each `image.list`, under its own tag.
fn list_pending(app: &mut App) -> Effect {
    let tag = app.tag();
    app.images.pending_tag = tag;
    call(
        tag,
        Request::ImageList(ImageListParams {
            pending: true,
            ..ImageListParams::default()
        }),
    )
}

/// The answer to the `image.list {pending}` call (an older kilnd without it lists everything
/// instead: only pending shares are kept).
pub(super) fn on_pending(app: &mut App, images: Vec<ImageInfo>) {
    app.images.pending_tag = 0;
    app.images.pending = images
        .into_iter()
        .filter(|i| i.share_status == Some(kiln_shared::protocol::ShareStatus::Pending))
        .collect();
    let len = app.images.visible().len();
    app.images.list.reselect(None, len);
}
