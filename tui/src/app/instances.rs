//! The Instances view's state: the project's instances (listed once, then kept current by
//! `instance` events, or polled without them), and what its keys and kilnd's answers to the
//! instance calls do to it.

use kiln_shared::protocol::Instance;

use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::{App, Effect, View};

#[derive(Debug, Clone, Default)]
pub struct Instances {
    /// In name order, as kilnd lists them.
    pub list: Listed<Instance>,
    /// This kilnd has no `instance.*` methods (an older one): the view says so, and
    /// `instance.list` is not asked again on this connection.
    pub unsupported: bool,
}

impl Instances {
    pub fn selected(&self) -> Option<&Instance> {
        self.list.items.get(self.list.sel)
    }

    pub fn get(&self, name: &str) -> Option<&Instance> {
        self.list.items.iter().find(|i| i.name == name)
    }

    /// Selects instance `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect(&mut self, keep: Option<String>) {
        let found = keep.and_then(|n| self.list.items.iter().position(|i| i.name == n));
        let len = self.list.items.len();
        self.list.reselect(found, len);
    }

    /// An `instance.list` reply.
    pub(super) fn on_list(&mut self, instances: Vec<Instance>) {
        let keep = self.selected().map(|i| i.name.clone());
        self.list.items = instances;
        self.list.loaded = true;
        self.reselect(keep);
    }

    /// An event, or a call's answer: instance `name` is now `instance` (`None`: deleted).
    pub(super) fn on_change(&mut self, name: &str, instance: Option<Instance>) {
        let keep = self.selected().map(|i| i.name.clone());
        let items = &mut self.list.items;
        let at = items.iter().position(|i| i.name == name);
        match (at, instance) {
            (Some(at), Some(i)) => items[at] = i,
            (None, Some(i)) => {
                let at = items.partition_point(|x| x.name < i.name);
                items.insert(at, i);
            }
            (Some(at), None) => {
                items.remove(at);
            }
            (None, None) => {}
        }
        self.reselect(keep);
    }
}

/// A command in the Instances view.
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        let len = app.instances.list.items.len();
        app.instances.list.move_sel(delta, len);
        return Vec::new();
    }
    if cmd == Cmd::Back {
        app.view = View::Templates;
    }
    Vec::new()
}
