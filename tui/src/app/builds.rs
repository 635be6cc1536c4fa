//! The Builds view's and the build detail view's state: the project's builds (newest first),
//! the template they are narrowed to, the counts the status bar shows, the build the detail view
//! shows, and what their keys and kilnd's replies do to them.

use std::collections::HashMap;

use kiln_shared::build::{Build, BuildState};

use super::keymap::Cmd;
use super::listed::{moved, movement, Listed};
use super::{App, Effect, Prompt, View};

#[derive(Debug, Clone, Default)]
pub struct Builds {
    pub list: Listed<Build>,
    /// The view shows only this template's builds.
    pub template: Option<String>,
    /// Queued and running builds in `list`, counted when the list changes: the status bar
    /// shows them in every frame, and counting 10,000 builds a frame was most of its cost.
    counts: (usize, usize),
    /// Each template's newest build state, kept with `counts` for the Templates view.
    last_states: HashMap<String, BuildState>,
}

/// The build detail view: the build it shows, and how far it is scrolled down.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    pub build: Option<u64>,
    pub scroll: usize,
}

impl Builds {
    /// The builds the Builds view lists: newest first, of one template when one is chosen.
    pub fn visible(&self) -> Vec<&Build> {
        self.list
            .items
            .iter()
            .filter(|b| self.template.as_ref().is_none_or(|t| &b.template == t))
            .collect()
    }

    pub fn selected(&self) -> Option<&Build> {
        self.visible().get(self.list.sel).copied()
    }

    pub fn get(&self, id: u64) -> Option<&Build> {
        self.list.items.iter().find(|b| b.id == id)
    }

    /// Builds waiting in the queue, as the status bar shows them.
    pub fn queued(&self) -> usize {
        self.counts.0
    }

    pub fn running(&self) -> usize {
        self.counts.1
    }

    /// The state of `template`'s newest build, if it has any.
    pub fn last_state(&self, template: &str) -> Option<BuildState> {
        self.last_states.get(template).copied()
    }

    /// Counts queued and running builds and finds each template's newest build again; every
    /// change to the list ends with it.
    pub fn recount(&mut self) {
        let items = &self.list.items;
        let count = |s| items.iter().filter(|b| b.state == s).count();
        self.counts = (count(BuildState::Queued), count(BuildState::Running));
        self.last_states.clear();
        // Newest first: the first build of a template is its last.
        for b in items {
            if !self.last_states.contains_key(&b.template) {
                self.last_states.insert(b.template.clone(), b.state);
            }
        }
    }

    /// Selects build `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect(&mut self, keep: Option<u64>) {
        let visible = self.visible();
        let found = keep.and_then(|id| visible.iter().position(|b| b.id == id));
        let len = visible.len();
        self.list.reselect(found, len);
    }

    /// A `build.list` reply.
    pub(super) fn on_list(&mut self, builds: Vec<Build>) {
        let keep = self.selected().map(|b| b.id);
        self.list.items = builds;
        self.list.items.sort_by_key(|b| std::cmp::Reverse(b.id));
        self.recount();
        self.list.loaded = true;
        self.reselect(keep);
    }

    /// An event: `build` changed (or is new).
    pub(super) fn on_event(&mut self, build: Build) {
        let keep = self.selected().map(|b| b.id);
        let items = &mut self.list.items;
        // Newest first: a new build goes on top, a known one is replaced where it is.
        match items.iter().position(|b| b.id == build.id) {
            Some(i) => items[i] = build,
            None => {
                let i = items.partition_point(|b| b.id > build.id);
                items.insert(i, build);
            }
        }
        self.recount();
        self.reselect(keep);
    }

    /// `build.start` answered with the new build.
    pub(super) fn on_started(&mut self, build: Build) {
        self.list.items.retain(|b| b.id != build.id);
        self.list.items.insert(0, build);
        self.list.items.sort_by_key(|b| std::cmp::Reverse(b.id));
        self.recount();
    }

    /// `build.cancel` answered with the build as it is now.
    pub(super) fn on_canceled(&mut self, build: Build) {
        if let Some(b) = self.list.items.iter_mut().find(|b| b.id == build.id) {
            *b = build;
        }
        self.recount();
    }
}

/// A command in the Builds view.
pub(super) fn on_list_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        let len = app.builds.visible().len();
        app.builds.list.move_sel(delta, len);
        return Vec::new();
    }
    match cmd {
        Cmd::Back => {
            if app.builds.template.take().is_none() {
                app.view = View::Templates;
            }
            app.builds.list.sel = 0;
        }
        Cmd::Open => {
            if let Some(id) = app.builds.selected().map(|b| b.id) {
                if app.detail.build != Some(id) {
                    app.detail.scroll = 0;
                }
                app.detail.build = Some(id);
                app.view = View::Detail;
            }
        }
        Cmd::Cancel => {
            if let Some(id) = app.builds.selected().map(|b| b.id) {
                confirm_cancel(app, id);
            }
        }
        Cmd::Attach => {
            if let Some(id) = app.builds.selected().map(|b| b.id) {
                return super::attach::build(app, id);
            }
        }
        Cmd::Logs => {
            if let Some(id) = app.builds.selected().map(|b| b.id) {
                if app.detail.build != Some(id) {
                    app.detail.build = Some(id);
                    app.detail.scroll = 0;
                }
                return super::log::open(app, id);
            }
        }
        _ => {}
    }
    Vec::new()
}

/// A command in the build detail view.
pub(super) fn on_detail_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        // Room for the header, every step and three lines per run output.
        let len = app
            .detail
            .build
            .and_then(|id| app.builds.get(id))
            .map_or(0, |b| 8 + b.steps.len() + 3 * b.run_outputs.len());
        app.detail.scroll = moved(app.detail.scroll, delta, len);
        return Vec::new();
    }
    match cmd {
        Cmd::Back => app.view = View::Builds,
        Cmd::Cancel => {
            if let Some(id) = app.detail.build {
                confirm_cancel(app, id);
            }
        }
        Cmd::Attach => {
            if let Some(id) = app.detail.build {
                return super::attach::build(app, id);
            }
        }
        Cmd::Logs => {
            if let Some(id) = app.detail.build {
                return super::log::open(app, id);
            }
        }
        _ => {}
    }
    Vec::new()
}

/// `x` on build `id`: asks first, unless the build has ended already.
pub(super) fn confirm_cancel(app: &mut App, id: u64) {
    match app.builds.get(id).map(|b| b.state) {
        Some(s) if s.is_terminal() => {
            app.message = Some(format!("build {id} already ended ({})", s.as_str()))
        }
        _ => app.prompt = Some(Prompt::ConfirmCancel { id }),
    }
}
