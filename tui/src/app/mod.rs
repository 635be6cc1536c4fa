//! The dashboard's functional core: all its state (`App`) and `update`, which turns one `Action`
//! (a key, a tick, a reply from kilnd) into new state plus the `Effect`s the shell should perform.
//! Nothing here touches the terminal, the socket or the clock.

#[cfg(test)]
pub mod fixtures;
pub mod form;
pub mod keymap;
pub mod log;
pub mod picker;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kiln_shared::apps::AppCatalog;
use kiln_shared::build::{
    Build, BuildIdParams, BuildList, BuildListParams, BuildLogsParams, BuildReply,
    BuildStartParams, BuildState, LogLine, SubReply,
};
use kiln_shared::methods::{self as m, Empty, Method};
use kiln_shared::protocol::{
    ErrorKind, Event, EventKind, ImageInfo, ImageList, ImageListParams, ImageParams, NameParams,
    RevisionInfo, RevisionList, TemplateGetParams, TemplateList, TemplateRecord, TemplateSummary,
    Visibility,
};
use kiln_shared::Violation;
use serde_json::Value;

use form::{EditWhat, Form};
use keymap::{Cmd, Key};
use log::LogView;
use picker::{PickFor, Picker};

/// Rows the chrome takes around a view's body: the tab bar, the message line, the status bar.
pub const CHROME_ROWS: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Templates,
    Builds,
    Images,
    Detail,
    Log,
    /// The template editor form (new or edit); it takes the keyboard until saved or closed.
    Form,
}

/// The connection to kilnd as the shell last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected { version: String },
    Disconnected { error: String },
}

/// A question in the message line that takes the keyboard until answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Typing the templates filter (applied as it is typed).
    Filter,
    /// Typing a log search.
    Search { input: String },
    /// The image name for a new build of `template`.
    ImageName { template: String, input: String },
    /// Cancel build `id`? Only `y` says yes.
    ConfirmCancel { id: u64 },
    /// Delete a template or an image: only typing its name exactly says yes.
    ConfirmDelete {
        what: Deletable,
        name: String,
        input: String,
    },
}

/// What `D` deletes, per view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletable {
    Template,
    Image,
}

impl Deletable {
    pub fn noun(self) -> &'static str {
        match self {
            Deletable::Template => "template",
            Deletable::Image => "image",
        }
    }
}

/// A call kilnd (or the way to it) refused: the error kind when kilnd gave one, its message,
/// and for an invalid template every violation with its field path.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub kind: Option<ErrorKind>,
    pub message: String,
    pub violations: Vec<Violation>,
}

impl From<&str> for CallError {
    fn from(message: &str) -> CallError {
        CallError {
            kind: None,
            message: message.into(),
            violations: Vec::new(),
        }
    }
}

impl From<String> for CallError {
    fn from(message: String) -> CallError {
        CallError::from(message.as_str())
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything that can happen to the dashboard.
#[derive(Debug, Clone)]
pub enum Action {
    Key(Key),
    /// The terminal's size, in columns and rows.
    Resize {
        width: u16,
        height: u16,
    },
    /// About once a second: the time to show, and a nudge to refresh the lists.
    Tick {
        now: DateTime<Utc>,
    },
    Connected {
        version: String,
    },
    Disconnected {
        error: String,
    },
    /// The answer to an `Effect::Call` with the same `method` and `tag`.
    Reply {
        method: String,
        tag: u64,
        result: Result<Value, CallError>,
    },
    /// A notification kilnd sent on the connection (`build.log`, `build.log.end`, ...).
    Notification {
        method: String,
        params: Value,
    },
    /// The person's editor, run for an `Effect::Edit`, returned with this text (or could not run).
    Edited {
        what: EditWhat,
        result: Result<String, String>,
    },
}

/// What `update` asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a request to kilnd; answer with `Action::Reply` carrying the same method and tag.
    Call {
        method: String,
        tag: u64,
        params: Value,
    },
    /// Leave the terminal to `$VISUAL`/`$EDITOR` on `text` and answer with `Action::Edited`.
    Edit {
        what: EditWhat,
        text: String,
    },
    Quit,
}

/// A call of method `M`, its params typed by the method table.
fn call<M: Method>(tag: u64, params: M::Params) -> Effect {
    Effect::Call {
        method: M::NAME.into(),
        tag,
        params: serde_json::to_value(params).unwrap_or_default(),
    }
}

fn named(name: &str) -> NameParams {
    NameParams {
        name: name.to_string(),
    }
}

fn template_get(tag: u64, name: &str) -> Effect {
    let params = TemplateGetParams {
        name: name.to_string(),
        revision: None,
    };
    call::<m::TemplateGet>(tag, params)
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    pub project: String,
    pub connection: Connection,
    pub now: DateTime<Utc>,
    pub width: u16,
    pub height: u16,
    /// False under NO_COLOR: views then use only bold, reverse and underline.
    pub color: bool,
    pub view: View,
    pub help: bool,
    pub help_scroll: usize,
    pub prompt: Option<Prompt>,
    /// The last error or confirmation, shown in the message line until the next key.
    pub message: Option<String>,
    pub templates: Vec<TemplateSummary>,
    pub template_filter: String,
    pub template_sel: usize,
    pub builds: Vec<Build>,
    /// Queued and running builds in `builds`, counted when the list changes: the status bar
    /// shows them in every frame, and counting 10,000 builds a frame was most of its cost.
    counts: (usize, usize),
    /// Each template's newest build state, kept with `counts` for the Templates view.
    last_states: HashMap<String, BuildState>,
    /// Builds view shows only this template's builds.
    pub builds_template: Option<String>,
    pub build_sel: usize,
    /// The image catalog as this project sees it (public, private, shared).
    pub images: Vec<ImageInfo>,
    /// The Images view's tab: it lists the images of this visibility.
    pub image_tab: Visibility,
    /// Index into `visible_images()`.
    pub image_sel: usize,
    /// The selected image's details window is open.
    pub image_details: bool,
    /// The selected template's details window is open, scrolled down this many lines.
    pub template_window: Option<usize>,
    pub images_pending: bool,
    pub images_loaded: bool,
    /// The build the detail view shows, and how far it is scrolled down.
    pub detail: Option<u64>,
    pub detail_scroll: usize,
    pub log: Option<LogView>,
    /// The template editor, while open.
    pub form: Option<Form>,
    /// The base-image picker, while open (over the form or the templates view).
    pub picker: Option<Picker>,
    /// The template `b` is about to build, and its source image once `template.get` told it.
    pub build_source: Option<BuildSource>,
    /// The whole selected template and its revisions, for the Templates view's details pane.
    pub template_details: Option<TemplateDetails>,
    /// Select this template once a list holding it arrives (the one just saved).
    pub template_focus: Option<String>,
    /// The application catalog the form offers and validates against (kiln's builtin one).
    pub catalog: AppCatalog,
    /// Where relative file paths in TOML from `$EDITOR` are taken from (the shell sets it).
    pub cwd: PathBuf,
    /// Whether a list call is in flight (so polling never piles requests up).
    pub templates_pending: bool,
    pub builds_pending: bool,
    /// Whether each list has been received at least once since connecting.
    pub templates_loaded: bool,
    pub builds_loaded: bool,
    /// The `events.subscribe` subscription that keeps templates and builds current; while it
    /// is open the lists are not polled.
    pub events_sub: Option<u64>,
    next_tag: u64,
    /// Log notifications that arrived before the reply naming their subscription.
    early_notes: Vec<(String, Value)>,
}

/// The default base image for the build `b` started: the template's source, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSource {
    pub template: String,
    pub tag: u64,
    pub image: Option<String>,
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

/// Notifications kept while a `build.logs` reply (which names the subscription) is on its way.
const EARLY_NOTES_MAX: usize = log::LOG_CAPACITY;

impl App {
    pub fn new(project: &str, now: DateTime<Utc>, color: bool) -> App {
        App {
            project: project.into(),
            connection: Connection::Connecting,
            now,
            width: 80,
            height: 24,
            color,
            view: View::Templates,
            help: false,
            help_scroll: 0,
            prompt: None,
            message: None,
            templates: Vec::new(),
            template_filter: String::new(),
            template_sel: 0,
            builds: Vec::new(),
            counts: (0, 0),
            last_states: HashMap::new(),
            builds_template: None,
            build_sel: 0,
            images: Vec::new(),
            image_tab: Visibility::Public,
            image_sel: 0,
            image_details: false,
            template_window: None,
            images_pending: false,
            images_loaded: false,
            detail: None,
            detail_scroll: 0,
            log: None,
            form: None,
            picker: None,
            build_source: None,
            template_details: None,
            template_focus: None,
            catalog: AppCatalog::builtin(),
            cwd: PathBuf::new(),
            templates_pending: false,
            builds_pending: false,
            templates_loaded: false,
            builds_loaded: false,
            events_sub: None,
            next_tag: 1,
            early_notes: Vec::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.connection, Connection::Connected { .. })
    }

    /// The templates the filter lets through, in the daemon's order.
    pub fn visible_templates(&self) -> Vec<&TemplateSummary> {
        let f = self.template_filter.to_lowercase();
        self.templates
            .iter()
            .filter(|t| {
                f.is_empty()
                    || t.name.to_lowercase().contains(&f)
                    || t.os.to_lowercase().contains(&f)
                    || t.applications.iter().any(|a| a.to_lowercase().contains(&f))
            })
            .collect()
    }

    pub fn selected_template(&self) -> Option<&TemplateSummary> {
        self.visible_templates().get(self.template_sel).copied()
    }

    /// The builds the Builds view lists: newest first, of one template when one is chosen.
    pub fn visible_builds(&self) -> Vec<&Build> {
        self.builds
            .iter()
            .filter(|b| {
                self.builds_template
                    .as_ref()
                    .is_none_or(|t| &b.template == t)
            })
            .collect()
    }

    /// The images of the Images view's tab.
    pub fn visible_images(&self) -> Vec<&ImageInfo> {
        self.images
            .iter()
            .filter(|i| i.visibility == self.image_tab)
            .collect()
    }

    pub fn selected_image(&self) -> Option<&ImageInfo> {
        self.visible_images().get(self.image_sel).copied()
    }

    /// The images the picker offers now.
    pub fn picker_choices(&self) -> Vec<&ImageInfo> {
        match &self.picker {
            Some(p) => picker::compatible(&self.images, &p.os),
            None => Vec::new(),
        }
    }

    pub fn selected_build(&self) -> Option<&Build> {
        self.visible_builds().get(self.build_sel).copied()
    }

    pub fn build(&self, id: u64) -> Option<&Build> {
        self.builds.iter().find(|b| b.id == id)
    }

    /// Builds waiting in the queue, as the status bar shows them.
    pub fn queued(&self) -> usize {
        self.counts.0
    }

    pub fn running(&self) -> usize {
        self.counts.1
    }

    /// The state of `template`'s newest build, if it has any.
    pub fn last_build_state(&self, template: &str) -> Option<BuildState> {
        self.last_states.get(template).copied()
    }

    /// Counts queued and running builds and finds each template's newest build again; every
    /// change to `builds` ends with it.
    pub fn recount(&mut self) {
        let count = |s| self.builds.iter().filter(|b| b.state == s).count();
        self.counts = (count(BuildState::Queued), count(BuildState::Running));
        self.last_states.clear();
        // Newest first: the first build of a template is its last.
        for b in &self.builds {
            if !self.last_states.contains_key(&b.template) {
                self.last_states.insert(b.template.clone(), b.state);
            }
        }
    }

    /// Rows of log text on screen (the body less the log's own header line).
    pub fn log_page(&self) -> usize {
        usize::from(self.height.saturating_sub(CHROME_ROWS + 1)).max(1)
    }

    /// Rows of a list on screen (the body less its header row).
    fn list_page(&self) -> usize {
        usize::from(self.height.saturating_sub(CHROME_ROWS + 1)).max(1)
    }

    fn tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Asks for the catalog again (a picker or the form is about to offer images from it).
    fn fresh_images(&mut self) -> Vec<Effect> {
        if self.images_pending || !self.is_connected() {
            return Vec::new();
        }
        self.images_pending = true;
        vec![call::<m::ImageList>(0, ImageListParams::default())]
    }

    fn refresh(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.is_connected() {
            return fx;
        }
        // With events flowing, the lists change only through them.
        let poll = self.events_sub.is_none();
        if !self.templates_pending && (poll || !self.templates_loaded) {
            self.templates_pending = true;
            fx.push(call::<m::TemplateList>(0, Empty {}));
        }
        if !self.builds_pending && (poll || !self.builds_loaded) {
            self.builds_pending = true;
            fx.push(call::<m::BuildList>(0, BuildListParams::default()));
        }
        // The catalog changes rarely: refreshed while on screen, and once after connecting.
        if !self.images_pending && (self.view == View::Images || !self.images_loaded) {
            self.images_pending = true;
            fx.push(call::<m::ImageList>(0, ImageListParams::default()));
        }
        fx
    }

    /// Asks for the selected template's whole body and revisions when the Templates view shows
    /// a template whose details are not loaded (or are of an older revision).
    fn fetch_template_details(&mut self) -> Vec<Effect> {
        if !self.is_connected() || self.view != View::Templates || self.form.is_some() {
            return Vec::new();
        }
        let Some(t) = self.selected_template() else {
            return Vec::new();
        };
        let (name, revision) = (t.name.clone(), t.revision);
        if self
            .template_details
            .as_ref()
            .is_some_and(|d| d.name == name && d.revision == revision)
        {
            return Vec::new();
        }
        let tag = self.tag();
        self.template_details = Some(TemplateDetails {
            name: name.clone(),
            revision,
            tag,
            record: None,
            revisions: None,
        });
        vec![
            template_get(tag, &name),
            call::<m::TemplateRevisions>(tag, named(&name)),
        ]
    }

    /// Selects build `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect_build(&mut self, keep: Option<u64>) {
        let visible = self.visible_builds();
        self.build_sel = keep
            .and_then(|id| visible.iter().position(|b| b.id == id))
            .unwrap_or(self.build_sel)
            .min(visible.len().saturating_sub(1));
    }

    /// Selects template `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect_template(&mut self, keep: Option<String>) {
        let visible = self.visible_templates();
        self.template_sel = keep
            .and_then(|n| visible.iter().position(|t| t.name == n))
            .unwrap_or(self.template_sel)
            .min(visible.len().saturating_sub(1));
    }

    /// Opens (or reopens, after a reconnect or a switch to the serial console) the log of
    /// `build`, following it from the next line not yet seen.
    fn follow_log(&mut self) -> Vec<Effect> {
        let session = self.tag();
        let connected = self.is_connected();
        self.early_notes.clear();
        let Some(log) = self.log.as_mut() else {
            return Vec::new();
        };
        // The stream being replaced ends on kilnd's side too.
        let mut fx: Vec<Effect> = log.sub.take().map(unsubscribe).into_iter().collect();
        // Session 0 means no `build.logs` call is on its way.
        log.session = if connected { session } else { 0 };
        if !connected {
            return fx;
        }
        let params = BuildLogsParams {
            id: log.build,
            follow: true,
            from_line: Some(log.next_seq),
            serial: log.serial,
        };
        fx.push(call::<m::BuildLogs>(session, params));
        fx
    }

    fn open_log(&mut self, build: u64) -> Vec<Effect> {
        if self.log.as_ref().is_none_or(|l| l.build != build) {
            let old = self.log.take().and_then(|l| l.sub);
            self.log = Some(LogView::new(build, false, 0));
            self.view = View::Log;
            let mut fx: Vec<Effect> = old.map(unsubscribe).into_iter().collect();
            fx.extend(self.follow_log());
            return fx;
        }
        self.view = View::Log;
        Vec::new()
    }
}

/// An `event` from the events subscription: one build or template changed (or the events were
/// lost and everything is listed again).
fn on_event(app: &mut App, params: Value) -> Vec<Effect> {
    let Ok(e) = serde_json::from_value::<Event>(params) else {
        return Vec::new();
    };
    if app.events_sub != Some(e.sub) {
        return Vec::new();
    }
    match e.kind {
        EventKind::Build { build } => {
            let build = *build;
            let keep = app.selected_build().map(|b| b.id);
            // Newest first: a new build goes on top, a known one is replaced where it is.
            match app.builds.iter().position(|b| b.id == build.id) {
                Some(i) => app.builds[i] = build,
                None => {
                    let i = app.builds.partition_point(|b| b.id > build.id);
                    app.builds.insert(i, build);
                }
            }
            app.recount();
            app.reselect_build(keep);
        }
        EventKind::Template { name, template } => {
            let keep = app.selected_template().map(|t| t.name.clone());
            let at = app.templates.iter().position(|t| t.name == name);
            match (at, template) {
                (Some(i), Some(t)) => app.templates[i] = t,
                (None, Some(t)) => {
                    let i = app.templates.partition_point(|x| x.name < t.name);
                    app.templates.insert(i, t);
                }
                (Some(i), None) => {
                    app.templates.remove(i);
                }
                (None, None) => {}
            }
            app.reselect_template(keep);
        }
        EventKind::Resync => {
            app.templates_loaded = false;
            app.builds_loaded = false;
            return app.refresh();
        }
    }
    Vec::new()
}

/// Ends log stream `sub` on kilnd's side (`build.logs.unsubscribe`).
fn unsubscribe(sub: u64) -> Effect {
    call::<m::BuildLogsUnsubscribe>(0, SubReply { sub })
}

/// Applies one action to the state and returns what the shell must do about it.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    let mut fx = apply(app, action);
    fx.extend(app.fetch_template_details());
    fx
}

fn apply(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Key(key) => on_key(app, key),
        Action::Resize { width, height } => {
            app.width = width;
            app.height = height;
            Vec::new()
        }
        Action::Tick { now } => {
            app.now = now;
            app.refresh()
        }
        Action::Connected { version } => {
            app.connection = Connection::Connected { version };
            app.templates_pending = false;
            app.builds_pending = false;
            app.images_pending = false;
            app.events_sub = None;
            let mut fx = vec![call::<m::EventsSubscribe>(0, Empty {})];
            fx.extend(app.refresh());
            if app.log.as_ref().is_some_and(|l| !l.ended) {
                fx.extend(app.follow_log());
            }
            fx
        }
        Action::Disconnected { error } => {
            app.connection = Connection::Disconnected { error };
            // Calls in flight died with the connection; so did the log subscription.
            app.templates_pending = false;
            app.builds_pending = false;
            app.images_pending = false;
            app.events_sub = None;
            if let Some(l) = app.log.as_mut() {
                l.sub = None;
                l.session = 0;
            }
            Vec::new()
        }
        Action::Reply {
            method,
            tag,
            result,
        } => on_reply(app, &method, tag, result),
        Action::Notification { method, params } if method == "event" => on_event(app, params),
        Action::Notification { method, params } => {
            on_notification(app, &method, params);
            Vec::new()
        }
        Action::Edited { what, result } => {
            form::on_edited(app, what, result);
            Vec::new()
        }
    }
}

fn on_reply(
    app: &mut App,
    method: &str,
    tag: u64,
    result: Result<Value, CallError>,
) -> Vec<Effect> {
    if form::owns(app, tag) {
        return form::on_reply(app, method, tag, result);
    }
    if let Some(d) = app
        .template_details
        .as_mut()
        .filter(|d| d.tag == tag && tag != 0)
    {
        // A failure (the template was deleted meanwhile) leaves the pane on the summary.
        if let Ok(value) = result {
            match method {
                "template.get" => d.record = serde_json::from_value(value).ok(),
                "template.revisions" => {
                    d.revisions = serde_json::from_value::<RevisionList>(value)
                        .ok()
                        .map(|r| r.revisions);
                }
                _ => {}
            }
        }
        return Vec::new();
    }
    if app
        .build_source
        .as_ref()
        .is_some_and(|b| b.tag == tag && tag != 0)
    {
        on_build_source(app, result);
        return Vec::new();
    }
    match method {
        "template.list" => app.templates_pending = false,
        "build.list" => app.builds_pending = false,
        "image.list" => app.images_pending = false,
        _ => {}
    }
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            if method == "build.logs.unsubscribe" {
                // The stream had ended already: nothing to stop.
                return Vec::new();
            }
            if method == "events.subscribe" {
                // An older kilnd without events: the lists are polled instead.
                return Vec::new();
            }
            if method == "build.logs" {
                match app.log.as_mut() {
                    Some(l) if l.session == tag => l.session = 0,
                    _ => return Vec::new(),
                }
            }
            app.message = Some(format!("{method}: {e}"));
            return Vec::new();
        }
    };
    let bad = |e: serde_json::Error| format!("{method}: unexpected reply from kilnd: {e}");
    match method {
        "template.list" => match serde_json::from_value::<TemplateList>(value) {
            Ok(list) => {
                let mut keep = app.selected_template().map(|t| t.name.clone());
                if let Some(name) = app.template_focus.take() {
                    if list.templates.iter().any(|t| t.name == name) {
                        app.template_filter.clear();
                        keep = Some(name);
                    } else {
                        app.template_focus = Some(name);
                    }
                }
                app.templates = list.templates;
                app.templates_loaded = true;
                app.reselect_template(keep);
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "build.list" => match serde_json::from_value::<BuildList>(value) {
            Ok(list) => {
                let keep = app.selected_build().map(|b| b.id);
                app.builds = list.builds;
                app.builds.sort_by_key(|b| std::cmp::Reverse(b.id));
                app.recount();
                app.builds_loaded = true;
                app.reselect_build(keep);
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "image.list" => match serde_json::from_value::<ImageList>(value) {
            Ok(list) => {
                let keep = app.selected_image().map(|i| i.id.clone());
                app.images = list.images;
                app.images_loaded = true;
                let visible = app.visible_images();
                app.image_sel = keep
                    .and_then(|id| visible.iter().position(|i| i.id == id))
                    .unwrap_or(app.image_sel)
                    .min(visible.len().saturating_sub(1));
                let choices = app.picker_choices().len();
                if let Some(p) = app.picker.as_mut() {
                    p.sel = p.sel.min(choices.saturating_sub(1));
                }
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "template.delete" | "image.delete" => {
            app.message = Some(format!("{method}: done"));
            if method == "image.delete" {
                app.images_loaded = false;
            }
            return app.refresh();
        }
        "build.start" => match serde_json::from_value::<BuildReply>(value) {
            Ok(r) => {
                app.message = Some(format!(
                    "build {} of {} queued (image {})",
                    r.build.id, r.build.template, r.build.image_name
                ));
                // Jump to the new build's details (unless the person went on to the form).
                if app.form.is_none() {
                    app.detail = Some(r.build.id);
                    app.detail_scroll = 0;
                    app.view = View::Detail;
                }
                app.builds.retain(|b| b.id != r.build.id);
                app.builds.insert(0, r.build);
                app.builds.sort_by_key(|b| std::cmp::Reverse(b.id));
                app.recount();
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "build.cancel" => match serde_json::from_value::<BuildReply>(value) {
            Ok(r) => {
                app.message = Some(format!(
                    "build {}: cancel requested ({})",
                    r.build.id,
                    r.build.state.as_str()
                ));
                if let Some(b) = app.builds.iter_mut().find(|b| b.id == r.build.id) {
                    *b = r.build;
                }
                app.recount();
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "events.subscribe" => match serde_json::from_value::<SubReply>(value) {
            Ok(r) => {
                app.events_sub = Some(r.sub);
                // Listed again now that no change can slip between a list and the events.
                app.templates_loaded = false;
                app.builds_loaded = false;
                return app.refresh();
            }
            Err(e) => app.message = Some(bad(e)),
        },
        "build.logs" => match serde_json::from_value::<SubReply>(value) {
            Ok(r) => {
                let early = std::mem::take(&mut app.early_notes);
                let Some(log) = app.log.as_mut().filter(|l| l.session == tag) else {
                    // A stream nobody shows any more (another build's, or replaced).
                    return vec![unsubscribe(r.sub)];
                };
                log.sub = Some(r.sub);
                for (method, params) in early {
                    on_notification(app, &method, params);
                }
            }
            Err(e) => app.message = Some(bad(e)),
        },
        _ => {}
    }
    Vec::new()
}

/// `template.get` told the source image of the template `b` builds: the picker's default.
fn on_build_source(app: &mut App, result: Result<Value, CallError>) {
    let Some(source) = result
        .ok()
        .and_then(|v| serde_json::from_value::<TemplateRecord>(v).ok())
        .map(|r| r.template.source.image)
    else {
        return;
    };
    if let Some(b) = app.build_source.as_mut() {
        b.image = Some(source.clone());
    }
    let at = app.picker_choices().iter().position(|i| i.name == source);
    if let (Some(p), Some(at)) = (app.picker.as_mut(), at) {
        if matches!(p.purpose, PickFor::Build { .. }) && !p.touched {
            p.sel = at;
        }
    }
}

fn on_notification(app: &mut App, method: &str, params: Value) {
    if method != "build.log" && method != "build.log.end" {
        return;
    }
    let Some(log) = app.log.as_mut() else {
        return;
    };
    let sub = params.get("sub").and_then(Value::as_u64);
    match log.sub {
        // The reply naming our subscription may still be on its way: keep the line for it.
        None if log.session != 0 => {
            if app.early_notes.len() < EARLY_NOTES_MAX {
                app.early_notes.push((method.to_string(), params));
            }
            return;
        }
        Some(s) if sub == Some(s) => {}
        _ => return,
    }
    if method == "build.log.end" {
        log.ended = true;
        return;
    }
    if let Ok(line) = serde_json::from_value::<LogLine>(params) {
        log.push(line);
    }
}

fn on_key(app: &mut App, key: Key) -> Vec<Effect> {
    if key == Key::Ctrl('c') {
        return vec![Effect::Quit];
    }
    app.message = None;
    if let Some(prompt) = app.prompt.take() {
        return on_prompt_key(app, prompt, key);
    }
    if app.help {
        match keymap::scoped_command(keymap::Scope::Global, key) {
            Some(Cmd::Down) => app.help_scroll = app.help_scroll.saturating_add(1),
            Some(Cmd::Up) => app.help_scroll = app.help_scroll.saturating_sub(1),
            _ => {
                app.help = false;
                app.help_scroll = 0;
            }
        }
        return Vec::new();
    }
    if app.picker.is_some() {
        return on_picker_key(app, key);
    }
    if app.image_details {
        app.image_details = false;
        return Vec::new();
    }
    if let Some(scroll) = app.template_window {
        let page = app.list_page();
        let max = crate::views::templates::window_max_scroll(app);
        app.template_window = match keymap::scoped_command(keymap::Scope::Global, key) {
            Some(Cmd::Down) => Some(scroll + 1),
            Some(Cmd::Up) => Some(scroll.saturating_sub(1)),
            Some(Cmd::PageDown) => Some(scroll + page),
            Some(Cmd::PageUp) => Some(scroll.saturating_sub(page)),
            Some(Cmd::Top) => Some(0),
            Some(Cmd::Bottom) => Some(max),
            _ => None,
        }
        .map(|s| s.min(max));
        return Vec::new();
    }
    if app.view == View::Form {
        return form::on_key(app, key);
    }
    let Some(cmd) = keymap::command_for(app.view, key) else {
        return Vec::new();
    };
    on_command(app, cmd)
}

fn on_picker_key(app: &mut App, key: Key) -> Vec<Effect> {
    let Some(cmd) = keymap::picker_command(key) else {
        return Vec::new();
    };
    let len = app.picker_choices().len();
    let page = app.list_page() as isize;
    let delta = match cmd {
        Cmd::Up => -1,
        Cmd::Down => 1,
        Cmd::PageUp => -page,
        Cmd::PageDown => page,
        Cmd::Top => isize::MIN / 2,
        Cmd::Bottom => isize::MAX / 2,
        Cmd::Help => {
            app.help = true;
            return Vec::new();
        }
        Cmd::Back => {
            if let Some(PickFor::Build { template, .. }) = app.picker.take().map(|p| p.purpose) {
                app.message = Some(format!("no build of {template} started"));
            }
            return Vec::new();
        }
        Cmd::Open => return choose_image(app),
        _ => return Vec::new(),
    };
    if let Some(p) = app.picker.as_mut() {
        p.sel = moved(p.sel, delta, len);
        p.touched = true;
    }
    Vec::new()
}

/// `enter` in the picker: the selected image becomes the source, or the build starts from it.
fn choose_image(app: &mut App) -> Vec<Effect> {
    let Some(p) = app.picker.clone() else {
        return Vec::new();
    };
    let Some(image) = app.picker_choices().get(p.sel).map(|i| i.name.clone()) else {
        app.message = Some(if app.images_loaded {
            format!(
                "no available {} image: make one with `kiln image bootstrap {}` or import one",
                p.os, p.os
            )
        } else {
            "the image list has not arrived yet".to_string()
        });
        return Vec::new();
    };
    app.picker = None;
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
                no_cache: false,
            };
            vec![call::<m::BuildStart>(0, params)]
        }
    }
}

fn on_prompt_key(app: &mut App, prompt: Prompt, key: Key) -> Vec<Effect> {
    match prompt {
        Prompt::ConfirmCancel { id } => {
            if key == Key::Char('y') || key == Key::Char('Y') {
                app.message = Some(format!("canceling build {id}..."));
                return vec![call::<m::BuildCancel>(0, BuildIdParams { id })];
            }
            app.message = Some(format!("build {id} not canceled"));
            Vec::new()
        }
        Prompt::ConfirmDelete {
            what,
            name,
            mut input,
        } => match key {
            Key::Enter if input == name => {
                app.message = Some(format!("deleting {} {name}...", what.noun()));
                vec![match what {
                    Deletable::Template => call::<m::TemplateDelete>(0, named(&name)),
                    Deletable::Image => call::<m::ImageDelete>(0, ImageParams { image: name }),
                }]
            }
            Key::Enter | Key::Esc => {
                app.message = Some(format!("{} {name} not deleted", what.noun()));
                Vec::new()
            }
            Key::Backspace | Key::Char(_) => {
                match key {
                    Key::Char(c) => input.push(c),
                    _ => {
                        input.pop();
                    }
                }
                app.prompt = Some(Prompt::ConfirmDelete { what, name, input });
                Vec::new()
            }
            _ => {
                app.prompt = Some(Prompt::ConfirmDelete { what, name, input });
                Vec::new()
            }
        },
        Prompt::Filter => {
            match key {
                Key::Enter => {}
                Key::Esc => app.template_filter.clear(),
                Key::Backspace => {
                    app.template_filter.pop();
                    app.prompt = Some(Prompt::Filter);
                }
                Key::Char(c) => {
                    app.template_filter.push(c);
                    app.prompt = Some(Prompt::Filter);
                }
                _ => app.prompt = Some(Prompt::Filter),
            }
            app.template_sel = 0;
            Vec::new()
        }
        Prompt::Search { mut input } => {
            match key {
                Key::Enter => {
                    let page = app.log_page();
                    if let Some(log) = app.log.as_mut() {
                        log.search = Some(input.clone()).filter(|s| !s.is_empty());
                        // Following: look back from the end; paused: look on from the top line.
                        let found = if log.follow {
                            log.find(false, log.lines.len())
                        } else {
                            let from = log.shown_top(page);
                            log.find(true, from) || log.find(false, from.saturating_add(1))
                        };
                        if !found && !input.is_empty() {
                            app.message = Some(format!("no line matches {input:?}"));
                        }
                    }
                }
                Key::Esc => {}
                Key::Backspace => {
                    input.pop();
                    app.prompt = Some(Prompt::Search { input });
                }
                Key::Char(c) => {
                    input.push(c);
                    app.prompt = Some(Prompt::Search { input });
                }
                _ => app.prompt = Some(Prompt::Search { input }),
            }
            Vec::new()
        }
        Prompt::ImageName {
            template,
            mut input,
        } => match key {
            Key::Enter if input.trim().is_empty() => {
                app.message = Some("no build started: the image needs a name".into());
                Vec::new()
            }
            Key::Enter => {
                // Then the base image: one of the template's OS, the template's source first.
                let os = app
                    .templates
                    .iter()
                    .find(|t| t.name == template)
                    .map(|t| t.os.clone())
                    .unwrap_or_default();
                let source = app
                    .build_source
                    .as_ref()
                    .filter(|b| b.template == template)
                    .and_then(|b| b.image.clone());
                let sel = picker::compatible(&app.images, &os)
                    .iter()
                    .position(|i| Some(&i.name) == source.as_ref())
                    .unwrap_or(0);
                app.picker = Some(Picker {
                    purpose: PickFor::Build {
                        template,
                        image_name: input.trim().to_string(),
                    },
                    os,
                    sel,
                    touched: false,
                });
                app.fresh_images()
            }
            Key::Esc => {
                app.build_source = None;
                Vec::new()
            }
            Key::Backspace => {
                input.pop();
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
            Key::Char(c) => {
                input.push(c);
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
            _ => {
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
        },
    }
}

/// Moves a selection `delta` rows within `len` rows.
fn moved(sel: usize, delta: isize, len: usize) -> usize {
    let to = if delta < 0 {
        sel.saturating_sub(delta.unsigned_abs())
    } else {
        sel.saturating_add(delta.unsigned_abs())
    };
    to.min(len.saturating_sub(1))
}

fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    let page = app.list_page() as isize;
    let delta = match cmd {
        Cmd::Up => Some(-1),
        Cmd::Down => Some(1),
        Cmd::PageUp => Some(-page),
        Cmd::PageDown => Some(page),
        Cmd::Top => Some(isize::MIN / 2),
        Cmd::Bottom => Some(isize::MAX / 2),
        _ => None,
    };
    if let Some(delta) = delta {
        match app.view {
            View::Templates => {
                let len = app.visible_templates().len();
                app.template_sel = moved(app.template_sel, delta, len);
            }
            View::Builds => {
                let len = app.visible_builds().len();
                app.build_sel = moved(app.build_sel, delta, len);
            }
            View::Images => {
                app.image_sel = moved(app.image_sel, delta, app.visible_images().len());
            }
            View::Form => {}
            View::Detail => {
                // Room for the header, every step and three lines per run output.
                let len = app
                    .detail
                    .and_then(|id| app.build(id))
                    .map_or(0, |b| 8 + b.steps.len() + 3 * b.run_outputs.len());
                app.detail_scroll = moved(app.detail_scroll, delta, len);
            }
            View::Log => {
                let page = app.log_page();
                if let Some(log) = app.log.as_mut() {
                    match cmd {
                        Cmd::Top => log.go_top(),
                        Cmd::Bottom => log.go_end(),
                        Cmd::PageUp | Cmd::PageDown => {
                            log.scroll(delta.signum() * page as isize, page)
                        }
                        _ => log.scroll(delta, page),
                    }
                }
            }
        }
        return Vec::new();
    }
    match cmd {
        Cmd::Quit => return vec![Effect::Quit],
        Cmd::Help => app.help = true,
        Cmd::NextView | Cmd::PrevView => {
            let mut views = vec![View::Templates, View::Builds, View::Images];
            if app.detail.is_some() {
                views.push(View::Detail);
            }
            if app.log.is_some() {
                views.push(View::Log);
            }
            let i = views.iter().position(|v| *v == app.view).unwrap_or(0);
            let n = views.len();
            app.view = views[if cmd == Cmd::NextView {
                (i + 1) % n
            } else {
                (i + n - 1) % n
            }];
        }
        Cmd::Back => match app.view {
            View::Templates => app.template_filter.clear(),
            View::Builds => {
                if app.builds_template.take().is_none() {
                    app.view = View::Templates;
                }
                app.build_sel = 0;
            }
            View::Images => app.view = View::Templates,
            View::Detail => app.view = View::Builds,
            View::Form => {}
            View::Log => {
                app.view = if app.detail.is_some() {
                    View::Detail
                } else {
                    View::Builds
                }
            }
        },
        Cmd::Open => match app.view {
            View::Templates => {
                if let Some(t) = app.selected_template() {
                    app.builds_template = Some(t.name.clone());
                    app.build_sel = 0;
                    app.view = View::Builds;
                }
            }
            View::Builds => {
                if let Some(id) = app.selected_build().map(|b| b.id) {
                    if app.detail != Some(id) {
                        app.detail_scroll = 0;
                    }
                    app.detail = Some(id);
                    app.view = View::Detail;
                }
            }
            View::Images => app.image_details = app.selected_image().is_some(),
            View::Detail | View::Log | View::Form => {}
        },
        Cmd::Describe => {
            if app.selected_template().is_some() {
                app.template_window = Some(0);
            }
        }
        Cmd::Find => match app.view {
            View::Templates => app.prompt = Some(Prompt::Filter),
            View::Log => {
                let input = app
                    .log
                    .as_ref()
                    .and_then(|l| l.search.clone())
                    .unwrap_or_default();
                app.prompt = Some(Prompt::Search { input });
            }
            _ => {}
        },
        Cmd::FindNext | Cmd::FindPrev => {
            let page = app.log_page();
            if let Some(log) = app.log.as_mut() {
                let from = log.found.unwrap_or_else(|| log.shown_top(page));
                if log.search.is_none() {
                    app.message = Some("no search yet: press / to search".into());
                } else if !log.find(cmd == Cmd::FindNext, from) {
                    app.message = Some("no more matches".into());
                }
            }
        }
        Cmd::Delete => {
            let target = match app.view {
                View::Templates => app
                    .selected_template()
                    .map(|t| (Deletable::Template, t.name.clone())),
                View::Images => app
                    .selected_image()
                    .map(|i| (Deletable::Image, i.name.clone())),
                _ => None,
            };
            if let Some((what, name)) = target {
                app.prompt = Some(Prompt::ConfirmDelete {
                    what,
                    name,
                    input: String::new(),
                });
            }
        }
        Cmd::StartBuild => {
            if let Some(name) = app.selected_template().map(|t| t.name.clone()) {
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
                return vec![template_get(tag, &name)];
            }
        }
        Cmd::NewTemplate => return form::open_new(app),
        Cmd::EditTemplate => {
            if let Some(name) = app.selected_template().map(|t| t.name.clone()) {
                return form::open_edit(app, name);
            }
        }
        Cmd::PrevTab | Cmd::NextTab | Cmd::ShowPublic | Cmd::ShowPrivate | Cmd::ShowShared => {
            let tabs = [Visibility::Public, Visibility::Private, Visibility::Shared];
            let at = tabs.iter().position(|v| *v == app.image_tab).unwrap_or(0);
            app.image_tab = match cmd {
                Cmd::PrevTab => tabs[(at + 2) % 3],
                Cmd::NextTab => tabs[(at + 1) % 3],
                Cmd::ShowPrivate => Visibility::Private,
                Cmd::ShowShared => Visibility::Shared,
                _ => Visibility::Public,
            };
            app.image_sel = 0;
        }
        Cmd::Cancel => {
            let id = match app.view {
                View::Builds => app.selected_build().map(|b| b.id),
                View::Detail => app.detail,
                View::Log => app.log.as_ref().map(|l| l.build),
                View::Templates | View::Images | View::Form => None,
            };
            if let Some(id) = id {
                match app.build(id).map(|b| b.state) {
                    Some(s) if s.is_terminal() => {
                        app.message = Some(format!("build {id} already ended ({})", s.as_str()))
                    }
                    _ => app.prompt = Some(Prompt::ConfirmCancel { id }),
                }
            }
        }
        Cmd::Logs => {
            let id = match app.view {
                View::Builds => app.selected_build().map(|b| b.id),
                View::Detail => app.detail,
                _ => None,
            };
            if let Some(id) = id {
                if app.view == View::Builds && app.detail != Some(id) {
                    app.detail = Some(id);
                    app.detail_scroll = 0;
                }
                return app.open_log(id);
            }
        }
        Cmd::Wrap => {
            if let Some(l) = app.log.as_mut() {
                l.wrap = !l.wrap;
            }
        }
        Cmd::Timestamps => {
            if let Some(l) = app.log.as_mut() {
                l.timestamps = !l.timestamps;
            }
        }
        Cmd::Serial => {
            if let Some(l) = app.log.as_ref() {
                let (build, serial) = (l.build, !l.serial);
                let mut fresh = LogView::new(build, serial, 0);
                fresh.wrap = l.wrap;
                fresh.timestamps = l.timestamps;
                // The other stream's subscription moves over, so follow_log ends it.
                fresh.sub = l.sub;
                app.log = Some(fresh);
                return app.follow_log();
            }
        }
        Cmd::Up | Cmd::Down | Cmd::PageUp | Cmd::PageDown | Cmd::Top | Cmd::Bottom => {}
        // The form's and the picker's own commands are handled by their key handlers.
        Cmd::Save
        | Cmd::NextField
        | Cmd::PrevField
        | Cmd::Activate
        | Cmd::PrevChoice
        | Cmd::NextChoice
        | Cmd::EditToml => {}
    }
    Vec::new()
}

#[cfg(test)]
mod form_tests;
#[cfg(test)]
mod tests;
