//! The Images view's state: the image catalog as this project sees it (public, private,
//! shared, and the shares waiting for its answer), the tab shown, and what its keys do.

use kiln_shared::protocol::{
    ImageInfo, ImageListParams, ImageParams, ImageShareParams, Visibility,
};

use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::overlay::Overlay;
use super::{call, App, Deletable, Effect, Prompt, Request, View};

#[derive(Debug, Clone)]
pub struct Images {
    /// Every image this project sees; `list.sel` indexes `visible()`.
    pub list: Listed<ImageInfo>,
    /// The tab: the view lists the images of this visibility.
    pub tab: Visibility,
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
            tab: Visibility::Public,
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
    /// pending shares.
    pub fn of_tab(&self, tab: Visibility) -> Vec<&ImageInfo> {
        let mut out: Vec<&ImageInfo> = self.of(tab).collect();
        if tab == Visibility::Shared {
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
        let len = app.images.visible().len();
        app.images.list.move_sel(delta, len);
        return Vec::new();
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
        Cmd::PrevTab | Cmd::NextTab | Cmd::ShowPublic | Cmd::ShowPrivate | Cmd::ShowShared => {
            let tabs = [Visibility::Public, Visibility::Private, Visibility::Shared];
            let at = tabs.iter().position(|v| *v == app.images.tab).unwrap_or(0);
            app.images.tab = match cmd {
                Cmd::PrevTab => tabs[(at + 2) % 3],
                Cmd::NextTab => tabs[(at + 1) % 3],
                Cmd::ShowPrivate => Visibility::Private,
                Cmd::ShowShared => Visibility::Shared,
                _ => Visibility::Public,
            };
            app.images.list.sel = 0;
        }
        _ => {}
    }
    Vec::new()
}

/// The `image.share` call for the projects typed in `input` (space- or comma-separated).
pub(super) fn share(app: &mut App, image: String, image_name: String, input: &str) -> Vec<Effect> {
    let projects: Vec<String> = input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if projects.is_empty() {
        app.message = Some(format!("image {image_name} not shared: no project named"));
        return Vec::new();
    }
    app.message = Some(format!(
        "sharing {image_name} with {}...",
        projects.join(", ")
    ));
    vec![call(
        0,
        Request::ImageShare(ImageShareParams { image, projects }),
    )]
}

/// The `image.list {pending}` call that goes with each `image.list`, under its own tag.
pub(super) fn list_pending(app: &mut App) -> Effect {
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
