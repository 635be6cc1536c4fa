//! The Templates view's state: the project's templates, the filter, the selected template's
//! details (fetched when it is selected), and what its keys and kilnd's replies do to them.

use kiln_shared::protocol::{RevisionInfo, TemplateList, TemplateRecord, TemplateSummary};

use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::overlay::Overlay;
use super::{call, form, App, BuildSource, Deletable, Effect, Prompt, Reply, Request, View};

#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub list: Listed<TemplateSummary>,
    /// Typed after `/`: only templates whose name, OS or an application contains it are shown.
    pub filter: String,
    /// The whole selected template and its revisions, for the details pane.
    pub details: Option<TemplateDetails>,
    /// Select this template once a list holding it arrives (the one just saved).
    pub focus: Option<String>,
}

/// What the details pane shows of the selected template beyond its summary: every field (the
/// stored template at the summary's revision) and its revisions, fetched when it is selected.
#[derive(Debug, Clone)]
pub struct TemplateDetails {
    pub name: String,
    pub revision: u64,
    /// Tags the `template.get` and `template.revisions` calls.
    pub tag: u64,
    pub record: Option<TemplateRecord>,
    pub revisions: Option<Vec<RevisionInfo>>,
}

impl Templates {
    /// The templates the filter lets through, in the daemon's order.
    pub fn visible(&self) -> Vec<&TemplateSummary> {
        let f = self.filter.to_lowercase();
        self.list
            .items
            .iter()
            .filter(|t| {
                f.is_empty()
                    || t.name.to_lowercase().contains(&f)
                    || t.os.to_lowercase().contains(&f)
                    || t.applications.iter().any(|a| a.to_lowercase().contains(&f))
            })
            .collect()
    }

    pub fn selected(&self) -> Option<&TemplateSummary> {
        self.visible().get(self.list.sel).copied()
    }

    /// Template `name`, filtered out or not.
    pub fn get(&self, name: &str) -> Option<&TemplateSummary> {
        self.list.items.iter().find(|t| t.name == name)
    }

    /// Selects template `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect(&mut self, keep: Option<String>) {
        let visible = self.visible();
        let found = keep.and_then(|n| visible.iter().position(|t| t.name == n));
        let len = visible.len();
        self.list.reselect(found, len);
    }

    /// A `template.list` reply.
    pub(super) fn on_list(&mut self, list: TemplateList) {
        let mut keep = self.selected().map(|t| t.name.clone());
        if let Some(name) = self.focus.take() {
            if list.templates.iter().any(|t| t.name == name) {
                self.filter.clear();
                keep = Some(name);
            } else {
                self.focus = Some(name);
            }
        }
        self.list.items = list.templates;
        self.list.loaded = true;
        self.reselect(keep);
    }

    /// An event: template `name` is now `template` (`None`: deleted).
    pub(super) fn on_event(&mut self, name: String, template: Option<TemplateSummary>) {
        let keep = self.selected().map(|t| t.name.clone());
        let items = &mut self.list.items;
        let at = items.iter().position(|t| t.name == name);
        match (at, template) {
            (Some(i), Some(t)) => items[i] = t,
            (None, Some(t)) => {
                let i = items.partition_point(|x| x.name < t.name);
                items.insert(i, t);
            }
            (Some(i), None) => {
                items.remove(i);
            }
            (None, None) => {}
        }
        self.reselect(keep);
    }

    /// Whether the reply tagged `tag` is one of the details' calls.
    pub(super) fn details_own(&self, tag: u64) -> bool {
        self.details
            .as_ref()
            .is_some_and(|d| d.tag == tag && tag != 0)
    }

    /// A reply to the details' calls.
    pub(super) fn on_details_reply(&mut self, reply: Reply) {
        let Some(d) = self.details.as_mut() else {
            return;
        };
        // A failure (the template was deleted meanwhile) leaves the pane on the summary.
        match reply {
            Reply::TemplateGet(Ok(record)) => d.record = Some(record),
            Reply::TemplateRevisions(Ok(list)) => d.revisions = Some(list.revisions),
            _ => {}
        }
    }
}

/// Asks for the selected template's whole body and revisions when the Templates view shows a
/// template whose details are not loaded (or are of an older revision).
pub(super) fn fetch_details(app: &mut App) -> Vec<Effect> {
    if !app.is_connected() || app.view != View::Templates || app.form.is_some() {
        return Vec::new();
    }
    let Some(t) = app.templates.selected() else {
        return Vec::new();
    };
    let (name, revision) = (t.name.clone(), t.revision);
    if app
        .templates
        .details
        .as_ref()
        .is_some_and(|d| d.name == name && d.revision == revision)
    {
        return Vec::new();
    }
    let tag = app.tag();
    app.templates.details = Some(TemplateDetails {
        name: name.clone(),
        revision,
        tag,
        record: None,
        revisions: None,
    });
    vec![
        call(tag, Request::template_get(&name)),
        call(tag, Request::template_revisions(&name)),
    ]
}

/// A command in the Templates view.
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        let len = app.templates.visible().len();
        app.templates.list.move_sel(delta, len);
        return Vec::new();
    }
    match cmd {
        Cmd::Back => app.templates.filter.clear(),
        Cmd::Open => {
            if let Some(t) = app.templates.selected() {
                app.builds.template = Some(t.name.clone());
                app.builds.list.sel = 0;
                app.view = View::Builds;
            }
        }
        Cmd::Describe if app.templates.selected().is_some() => {
            app.overlay = Some(Overlay::TemplateWindow { scroll: 0 });
        }
        Cmd::Find => app.prompt = Some(Prompt::Filter),
        Cmd::Delete => {
            if let Some(name) = app.templates.selected().map(|t| t.name.clone()) {
                app.prompt = Some(Prompt::ConfirmDelete {
                    what: Deletable::Template,
                    name,
                    input: String::new(),
                });
            }
        }
        Cmd::StartBuild => {
            if let Some(name) = app.templates.selected().map(|t| t.name.clone()) {
                app.prompt = Some(Prompt::ImageName {
                    template: name.clone(),
                    input: String::new(),
                });
                // The template's source image is the picker's default; ask for it now so that it
                // is known by the time the image name is typed.
                let tag = app.tag();
                app.build_source = Some(BuildSource {
                    template: name.clone(),
                    tag,
                    image: None,
                });
                return vec![call(tag, Request::template_get(&name))];
            }
        }
        Cmd::NewTemplate => return form::open_new(app),
        Cmd::ImportAzure => super::import::ask(app),
        Cmd::EditTemplate => {
            if let Some(name) = app.templates.selected().map(|t| t.name.clone()) {
                return form::open_edit(app, name);
            }
        }
        _ => {}
    }
    Vec::new()
}
