//! The Images view's state: the image catalog as this project sees it (public, private,
//! shared), the tab shown, and what its keys do.

use kiln_shared::protocol::{ImageInfo, Visibility};

use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::overlay::Overlay;
use super::{App, Deletable, Effect, Prompt, View};

#[derive(Debug, Clone)]
pub struct Images {
    /// Every image this project sees; `list.sel` indexes `visible()`.
    pub list: Listed<ImageInfo>,
    /// The tab: the view lists the images of this visibility.
    pub tab: Visibility,
}

impl Default for Images {
    fn default() -> Images {
        Images {
            list: Listed::default(),
            tab: Visibility::Public,
        }
    }
}

impl Images {
    /// The images of the view's tab.
    pub fn visible(&self) -> Vec<&ImageInfo> {
        self.of(self.tab).collect()
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
