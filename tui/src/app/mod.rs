//! The dashboard's functional core: all its state (`App`) and `update`, which turns one `Action`
//! (a key, a tick, a reply from kilnd) into new state plus the `Effect`s the shell should perform.
//! Nothing here touches the terminal, the socket or the clock. Each view's state and handlers
//! live in its own module; this one routes actions to them.

pub mod attach;
pub mod builds;
pub mod calls;
mod events;
#[cfg(test)]
pub mod fixtures;
pub mod form;
pub mod galleries;
pub mod images;
pub mod import;
pub mod instances;
pub mod keymap;
pub mod listed;
pub mod log;
pub mod overlay;
pub mod picker;
pub mod prompt;
pub mod templates;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kiln_shared::apps::AppCatalog;
use kiln_shared::build::BuildListParams;
use kiln_shared::methods::{Empty, Name};
use kiln_shared::protocol::{ErrorKind, ImageListParams};
use kiln_shared::Violation;

use crate::ssh_key::KeyError;
use attach::Attach;
use builds::{Builds, Detail};
pub use calls::{Note, Reply, Request};
use form::{EditWhat, Form};
use images::Images;
use instances::{Instances, NewInstance};
use keymap::{Cmd, Key};
use log::LogView;
use overlay::Overlay;
use picker::Picker;
pub use prompt::{Deletable, Prompt};
use templates::Templates;

/// Rows the chrome takes around a view's body: the tab bar, the message line, the status bar.
pub const CHROME_ROWS: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Templates,
    Builds,
    Images,
    Instances,
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
    /// The answer to the `Effect::Call` with the same `tag`, of the same `Request` variant
    /// (boxed: a template's record is large, a log line small, and both queue as actions).
    Reply {
        tag: u64,
        reply: Box<Reply>,
    },
    /// A notification kilnd sent on the connection.
    Notification(Note),
    /// The person's editor, run for an `Effect::Edit`, returned with this text (or could not run).
    Edited {
        what: EditWhat,
        result: Result<String, String>,
    },
    /// The person's default public key, read for an `Effect::ReadPublicKey` (or why not).
    PublicKey {
        run: NewInstance,
        key: Result<String, KeyError>,
    },
    /// The file read for an `Effect::ReadFile` (or why not).
    FileRead {
        shown: String,
        text: Result<String, String>,
    },
    /// The program run for an `Effect::Attach` exited with this status (`None`: by a signal),
    /// or could not run.
    Attached {
        what: Attach,
        result: Result<Option<i32>, String>,
    },
}

/// What `update` asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a request to kilnd; answer with `Action::Reply` carrying the same tag.
    Call {
        tag: u64,
        request: Request,
    },
    /// Leave the terminal to `$VISUAL`/`$EDITOR` on `text` and answer with `Action::Edited`.
    Edit {
        what: EditWhat,
        text: String,
    },
    /// Read the person's default SSH public key (`crate::ssh_key`) for the instance `r` runs and
    /// answer with `Action::PublicKey`.
    ReadPublicKey(NewInstance),
    /// Read the file at `path` (at most `import::MAX_FILE` bytes; `shown` as typed) and answer
    /// with `Action::FileRead`.
    ReadFile {
        path: PathBuf,
        shown: String,
    },
    /// Suspend the dashboard, run `Attach` in its terminal, resume when it exits and answer with
    /// `Action::Attached`.
    Attach(Attach),
    Quit,
}

fn call(tag: u64, request: Request) -> Effect {
    Effect::Call { tag, request }
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
    /// The window over the view, while one is open.
    pub overlay: Option<Overlay>,
    pub prompt: Option<Prompt>,
    /// The last error or confirmation, shown in the message line until the next key.
    pub message: Option<String>,
    pub templates: Templates,
    pub builds: Builds,
    pub images: Images,
    pub instances: Instances,
    pub detail: Detail,
    pub log: Option<LogView>,
    /// The template editor, while open.
    pub form: Option<Form>,
    /// The Azure template `i` is importing.
    pub import: Option<import::Import>,
    /// The template `b` is about to build, and its source image once `template.get` told it.
    pub build_source: Option<BuildSource>,
    /// The application catalog the form offers and validates against (kiln's builtin one).
    pub catalog: AppCatalog,
    /// Where relative file paths in TOML from `$EDITOR` are taken from (the shell sets it).
    pub cwd: PathBuf,
    /// The `events.subscribe` subscription that keeps templates and builds current; while it
    /// is open the lists are not polled.
    pub events_sub: Option<u64>,
    next_tag: u64,
    /// Log notifications that arrived before the reply naming their subscription.
    early_notes: Vec<Note>,
}

/// The default base image for the build `b` started: the template's source, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSource {
    pub template: String,
    pub tag: u64,
    pub image: Option<String>,
}

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
            overlay: None,
            prompt: None,
            message: None,
            templates: Templates::default(),
            builds: Builds::default(),
            images: Images::default(),
            instances: Instances::default(),
            detail: Detail::default(),
            log: None,
            form: None,
            import: None,
            build_source: None,
            catalog: AppCatalog::builtin(),
            cwd: PathBuf::new(),
            events_sub: None,
            next_tag: 1,
            early_notes: Vec::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.connection, Connection::Connected { .. })
    }

    /// The base-image picker, while open (under the help too).
    pub fn picker(&self) -> Option<&Picker> {
        self.overlay.as_ref().and_then(Overlay::picker)
    }

    fn picker_mut(&mut self) -> Option<&mut Picker> {
        self.overlay.as_mut().and_then(Overlay::picker_mut)
    }

    /// The images the picker offers now.
    pub fn picker_choices(&self) -> Vec<picker::Choice<'_>> {
        match self.picker() {
            Some(p) => picker::choices(&self.images, &p.os),
            None => Vec::new(),
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
        if !self.is_connected() || !self.images.list.request(true) {
            return Vec::new();
        }
        let mut fx = vec![call(0, Request::ImageList(ImageListParams::default()))];
        fx.extend(images::list_beside(self));
        fx
    }

    fn refresh(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.is_connected() {
            return fx;
        }
        // With events flowing, the lists change only through them.
        let poll = self.events_sub.is_none();
        let templates = &mut self.templates.list;
        if templates.request(poll || !templates.loaded) {
            fx.push(call(0, Request::TemplateList(Empty {})));
        }
        let builds = &mut self.builds.list;
        if builds.request(poll || !builds.loaded) {
            fx.push(call(0, Request::BuildList(BuildListParams::default())));
        }
        let instances = &mut self.instances.list;
        if !self.instances.unsupported && instances.request(poll || !instances.loaded) {
            fx.push(call(0, Request::InstanceList(Empty {})));
        }
        // The catalog changes rarely: refreshed while on screen, and once after connecting.
        let images = &mut self.images.list;
        if images.request(self.view == View::Images || !images.loaded) {
            fx.push(call(0, Request::ImageList(ImageListParams::default())));
            fx.extend(images::list_beside(self));
        }
        fx
    }

    /// Forgets every list call in flight (the connection they went on is new or gone).
    fn forget_calls(&mut self) {
        self.templates.list.pending = false;
        self.builds.list.pending = false;
        self.images.list.pending = false;
        self.images.galleries.tag = 0;
        self.instances.list.pending = false;
        self.events_sub = None;
    }
}

/// Applies one action to the state and returns what the shell must do about it.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    let mut fx = apply(app, action);
    fx.extend(templates::fetch_details(app));
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
            app.forget_calls();
            // This kilnd may be another one than the last.
            app.instances.unsupported = false;
            let mut fx = vec![call(0, Request::EventsSubscribe(Empty {}))];
            fx.extend(app.refresh());
            if app.log.as_ref().is_some_and(|l| !l.ended) {
                fx.extend(log::follow(app));
            }
            fx
        }
        Action::Disconnected { error } => {
            app.connection = Connection::Disconnected { error };
            // Calls in flight died with the connection; so did the log subscription.
            app.forget_calls();
            if let Some(l) = app.log.as_mut() {
                l.sub = None;
                l.session = 0;
            }
            Vec::new()
        }
        Action::Reply { tag, reply } => on_reply(app, tag, *reply),
        Action::Notification(Note::Event(e)) => events::on_event(app, e),
        Action::Notification(Note::Progress(p)) => {
            if app.instances.capturing > 0 {
                app.message = Some(format!("capture: {}", p.line));
            }
            Vec::new()
        }
        Action::Notification(note) => {
            log::on_notification(app, note);
            Vec::new()
        }
        Action::Edited { what, result } => {
            form::on_edited(app, what, result);
            Vec::new()
        }
        Action::PublicKey { run, key } => instances::on_public_key(app, run, key),
        Action::FileRead { shown, text } => import::on_read(app, shown, text),
        Action::Attached { what, result } => {
            attach::on_attached(app, &what, result);
            Vec::new()
        }
    }
}

/// kilnd answered the call tagged `tag`: the call's owner (the form, the details pane, the build
/// `b` starts) takes it, else the method says what it changes.
fn on_reply(app: &mut App, tag: u64, reply: Reply) -> Vec<Effect> {
    if images::owns(app, tag) {
        return images::on_reply(app, tag, reply);
    }
    if import::owns(app, tag) {
        return import::on_reply(app, reply);
    }
    if form::owns(app, tag) {
        return form::on_reply(app, tag, reply);
    }
    if app.templates.details_own(tag) {
        app.templates.on_details_reply(reply);
        return Vec::new();
    }
    if app
        .build_source
        .as_ref()
        .is_some_and(|b| b.tag == tag && tag != 0)
    {
        picker::on_build_source(app, reply);
        return Vec::new();
    }
    let method = reply.method();
    match reply {
        Reply::TemplateList(r) => {
            app.templates.list.pending = false;
            if let Some(list) = ok_or_show(app, method, r) {
                app.templates.on_list(list);
            }
        }
        Reply::BuildList(r) => {
            app.builds.list.pending = false;
            if let Some(list) = ok_or_show(app, method, r) {
                app.builds.on_list(list.builds);
            }
        }
        Reply::ImageList(r) => {
            app.images.list.pending = false;
            if let Some(list) = ok_or_show(app, method, r) {
                app.images.on_list(list.images);
                let choices = app.picker_choices().len();
                if let Some(p) = app.picker_mut() {
                    p.sel = p.sel.min(choices.saturating_sub(1));
                }
            }
        }
        Reply::InstanceList(r) => {
            app.instances.list.pending = false;
            match r {
                Ok(list) => app.instances.on_list(list.instances),
                // An older kilnd, without instances: not asked again on this connection.
                Err(e) if e.kind == Some(ErrorKind::MethodNotFound) => {
                    app.instances.unsupported = true;
                }
                Err(e) => app.message = Some(format!("{}: {e}", method.as_str())),
            }
        }
        Reply::InstanceRun(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                instances::on_run(app, r.instance);
            }
        }
        Reply::InstanceStop(r) | Reply::InstanceStart(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                instances::on_power(app, r.instance);
            }
        }
        Reply::InstanceDelete(r) => {
            if ok_or_show(app, method, r).is_some() {
                app.instances.list.loaded = false;
                return deleted(app, method);
            }
        }
        Reply::ImageCreateFromInstance(r) => {
            app.instances.capturing = app.instances.capturing.saturating_sub(1);
            if let Some(r) = ok_or_show(app, method, r) {
                instances::on_captured(app, &r.image);
                return app.refresh();
            }
        }
        Reply::TemplateDelete(r) => {
            if ok_or_show(app, method, r).is_some() {
                return deleted(app, method);
            }
        }
        Reply::ImageShare(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                app.message = Some(format!(
                    "image {} offered; now shared with {} (pending until they accept)",
                    r.image.name,
                    crate::cli::image::members_text(&r.image.shared_with)
                ));
                app.images.list.loaded = false;
                return app.refresh();
            }
        }
        Reply::ImageAccept(r) | Reply::ImageReject(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                app.message = Some(format!(
                    "image {} of project {} {}",
                    r.image.name,
                    r.image.owner_project.as_deref().unwrap_or("-"),
                    if method == Name::ImageAccept {
                        "accepted: build from it or run it"
                    } else {
                        "rejected: hidden again"
                    }
                ));
                app.images.list.loaded = false;
                return app.refresh();
            }
        }
        Reply::ImageDelete(r) => {
            if ok_or_show(app, method, r).is_some() {
                app.images.list.loaded = false;
                return deleted(app, method);
            }
        }
        Reply::BuildStart(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                app.message = Some(format!(
                    "build {} of {} queued (image {})",
                    r.build.id, r.build.template, r.build.image_name
                ));
                // Jump to the new build's details (unless the person went on to the form).
                if app.form.is_none() {
                    app.detail = Detail {
                        build: Some(r.build.id),
                        scroll: 0,
                    };
                    app.view = View::Detail;
                }
                app.builds.on_started(r.build);
            }
        }
        Reply::BuildCancel(r) => {
            if let Some(r) = ok_or_show(app, method, r) {
                app.message = Some(format!(
                    "build {}: cancel requested ({})",
                    r.build.id,
                    r.build.state.as_str()
                ));
                app.builds.on_canceled(r.build);
            }
        }
        Reply::EventsSubscribe(Ok(r)) => {
            app.events_sub = Some(r.sub);
            // Listed again now that no change can slip between a list and the events.
            app.templates.list.loaded = false;
            app.builds.list.loaded = false;
            app.instances.list.loaded = false;
            return app.refresh();
        }
        // An older kilnd without events: the lists are polled instead.
        Reply::EventsSubscribe(Err(_)) => {}
        Reply::BuildLogs(Ok(r)) => return log::on_subscribed(app, tag, r),
        Reply::BuildLogs(Err(e)) => log::on_refused(app, tag, e),
        // Ok, or the stream had ended already: nothing to stop either way.
        Reply::BuildLogsUnsubscribe(_) => {}
        // Answers for a form, a details pane or a build prompt gone meanwhile: only a failure
        // is news.
        Reply::TemplateGet(r) => {
            ok_or_show(app, method, r);
        }
        Reply::TemplateRevisions(r) => {
            ok_or_show(app, method, r);
        }
        Reply::TemplateCreate(r) | Reply::TemplateUpdate(r) => {
            ok_or_show(app, method, r);
        }
        r @ (Reply::GalleryList(_)
        | Reply::GalleryShare(_)
        | Reply::GalleryAccept(_)
        | Reply::GalleryReject(_)) => return galleries::on_reply(app, r),
        // An import dropped meanwhile (esc): only a failure is news.
        Reply::TemplateImportAzure(r) => {
            ok_or_show(app, method, r);
        }
    }
    Vec::new()
}

/// A call's result, or `None` once its error is in the message line.
fn ok_or_show<T>(app: &mut App, method: Name, result: Result<T, CallError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            app.message = Some(format!("{}: {e}", method.as_str()));
            None
        }
    }
}

/// A template or an image is gone: said so, and the lists asked for again.
fn deleted(app: &mut App, method: Name) -> Vec<Effect> {
    app.message = Some(format!("{}: done", method.as_str()));
    app.refresh()
}

fn on_key(app: &mut App, key: Key) -> Vec<Effect> {
    if key == Key::Ctrl('c') {
        return vec![Effect::Quit];
    }
    app.message = None;
    if let Some(prompt) = app.prompt.take() {
        return prompt::on_key(app, prompt, key);
    }
    if let Some(o) = app.overlay.take() {
        return overlay::on_key(app, o, key);
    }
    if app.view == View::Form {
        return form::on_key(app, key);
    }
    let Some(cmd) = keymap::command_for(app.view, key) else {
        return Vec::new();
    };
    on_command(app, cmd)
}

/// A command in a view: the few every view shares, else the view's own handler.
fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    match cmd {
        Cmd::Quit => vec![Effect::Quit],
        Cmd::Help => {
            overlay::open_help(app);
            Vec::new()
        }
        Cmd::NextView | Cmd::PrevView => {
            let mut views = vec![View::Templates, View::Builds, View::Images, View::Instances];
            if app.detail.build.is_some() {
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
            Vec::new()
        }
        _ => match app.view {
            View::Templates => templates::on_command(app, cmd),
            View::Builds => builds::on_list_command(app, cmd),
            View::Images => images::on_command(app, cmd),
            View::Instances => instances::on_command(app, cmd),
            View::Detail => builds::on_detail_command(app, cmd),
            View::Log => log::on_command(app, cmd),
            // The form's own commands are handled by its key handler.
            View::Form => Vec::new(),
        },
    }
}

#[cfg(test)]
mod form_tests;
#[cfg(test)]
mod gallery_tests;
#[cfg(test)]
mod image_tests;
#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod instance_tests;
#[cfg(test)]
mod tests;
