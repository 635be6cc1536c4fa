//! The template editor: one template being created or edited, the text typed into its fields,
//! which field has the focus, what is wrong with it (checked against kiln's validator as it is
//! typed, plus what kilnd said on the last save), and where saving stands.
//!
//! The form covers the fields a person sets most (name, description, OS, applications, minimum
//! disk, build timeout, source image, user script); every other field of the template (customize
//! steps, distribute targets, vm, ...) rides along untouched in `draft`, and the whole template
//! can be edited as TOML in `$EDITOR`.

use std::path::Path;

use kiln_shared::apps::AppCatalog;
use kiln_shared::methods as m;
use kiln_shared::protocol::{
    ErrorKind, ImageInfo, TemplateParams, TemplateRecord, TemplateRef, TemplateUpdateParams,
};
use kiln_shared::template::{Distribute, Template};
use kiln_shared::validate::{self, Violation};
use serde_json::Value;

use super::keymap::{self, Cmd, Key};
use super::picker::{self, PickFor, Picker};
use super::{call, template_get, App, CallError, Effect, View};
use crate::cli::{editor, template_file};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormMode {
    New,
    /// Editing the stored template `name`: saving stores a new revision of it.
    Edit {
        name: String,
    },
}

/// One line of the form that can take the focus (and, for `Applications` and `Other`, a place
/// to show violations of fields the form has no line of its own for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Description,
    Os,
    /// The heading above the applications; violations about the list as a whole go there.
    Applications,
    /// The catalog's application number `n`.
    App(usize),
    MinDisk,
    Timeout,
    Source,
    Script,
    /// The whole template as TOML: where the fields the form does not show are edited.
    Toml,
}

/// What the shell's `$EDITOR` round is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditWhat {
    UserScript,
    Template,
}

/// An application's line in the multi-select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppChoice {
    pub selected: bool,
    /// Why it cannot be selected now (it conflicts with a selected one, or does not support the
    /// OS); `None` when it can.
    pub blocked: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Form {
    pub mode: FormMode,
    /// Tags of the calls this form waits for (0: none): loading the template, saving it, and
    /// asking for the current revision after a conflict.
    pub load_tag: u64,
    pub save_tag: u64,
    pub check_tag: u64,
    /// The message of the conflict being checked.
    pub conflict_message: String,
    /// False until `template.get` answered (editing only).
    pub loaded: bool,
    /// The template as loaded (or as a new form starts): what "changed" is measured against.
    pub original: Template,
    /// The template being edited, fields the form does not show included.
    pub draft: Template,
    pub name: String,
    pub description: String,
    pub min_disk: String,
    pub timeout: String,
    /// Index into `fields()`.
    pub focus: usize,
    /// Sent with `template.update` so that a revision stored meanwhile is never overwritten
    /// silently.
    pub expected_revision: Option<u64>,
    /// The revision someone else stored while this form was open (a save then overwrites it
    /// knowingly).
    pub conflict: Option<u64>,
    /// Violations kilnd reported on the last save, by field path.
    pub daemon_violations: Vec<Violation>,
    /// `esc` with changes asked "discard?".
    pub confirm_discard: bool,
    /// TOML that did not parse, with the error, to reopen in the editor.
    pub toml_retry: Option<(String, String)>,
}

impl Form {
    fn with(mode: FormMode, template: Template, loaded: bool) -> Form {
        let mut form = Form {
            mode,
            load_tag: 0,
            save_tag: 0,
            check_tag: 0,
            conflict_message: String::new(),
            loaded,
            original: template.clone(),
            draft: Template::default(),
            name: String::new(),
            description: String::new(),
            min_disk: String::new(),
            timeout: String::new(),
            focus: 0,
            expected_revision: None,
            conflict: None,
            daemon_violations: Vec::new(),
            confirm_discard: false,
            toml_retry: None,
        };
        form.set_template(template);
        form
    }

    /// A new template: the first OS kiln knows an image for (Debian 12 if it can), its first
    /// compatible base image, and the one distribute target every template needs.
    pub fn new_template(catalog: &AppCatalog, images: &[ImageInfo]) -> Form {
        let choices = os_choices(catalog, images, "");
        let os = if choices.iter().any(|o| o == "debian-12") {
            "debian-12".to_string()
        } else {
            choices.first().cloned().unwrap_or_default()
        };
        let mut t = Template {
            os: os.clone(),
            distribute: vec![Distribute::Image {
                run_output_name: "local".into(),
            }],
            ..Template::default()
        };
        if let Some(image) = picker::compatible(images, &os).first() {
            t.source.image = image.name.clone();
        }
        Form::with(FormMode::New, t, true)
    }

    /// An edit of `name`, waiting for `template.get` (tagged `tag`).
    pub fn editing(name: &str, tag: u64) -> Form {
        let mut form = Form::with(
            FormMode::Edit { name: name.into() },
            Template::default(),
            false,
        );
        form.load_tag = tag;
        form
    }

    /// Takes `template` into the form: the draft and the text of every field.
    pub fn set_template(&mut self, template: Template) {
        self.name = template.name.clone();
        self.description = template.description.clone().unwrap_or_default();
        self.min_disk = template.min_disk_gb.to_string();
        self.timeout = template.build_timeout_minutes.to_string();
        self.draft = template;
    }

    /// The lines that take the focus, in order.
    pub fn fields(catalog: &AppCatalog) -> Vec<Field> {
        let mut f = vec![Field::Name, Field::Description, Field::Os];
        f.extend((0..catalog.apps.len()).map(Field::App));
        f.extend([
            Field::MinDisk,
            Field::Timeout,
            Field::Source,
            Field::Script,
            Field::Toml,
        ]);
        f
    }

    pub fn focused(&self, catalog: &AppCatalog) -> Field {
        Form::fields(catalog)
            .get(self.focus)
            .copied()
            .unwrap_or(Field::Name)
    }

    /// The name the template is stored under (editing) or will be (new).
    pub fn title(&self) -> String {
        match &self.mode {
            FormMode::New => "New template".into(),
            FormMode::Edit { name } => format!("Edit {name}"),
        }
    }

    /// The template as the form holds it now: the draft with the typed fields applied (a number
    /// that does not parse leaves the draft's value; `input_problems` reports it).
    pub fn template(&self) -> Template {
        let mut t = self.draft.clone();
        t.name = self.name.clone();
        t.description = Some(self.description.clone()).filter(|d| !d.is_empty());
        if let Ok(n) = parse_number(&self.min_disk) {
            t.min_disk_gb = n;
        }
        if let Ok(n) = parse_number(&self.timeout) {
            t.build_timeout_minutes = n;
        }
        t
    }

    /// Typed numbers that are not numbers.
    fn input_problems(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if let Err(e) = parse_number(&self.min_disk) {
            v.push(violation(
                "min_disk_gb",
                format!("{e}: a whole number of GB, 0 for the size of the source"),
            ));
        }
        if let Err(e) = parse_number(&self.timeout) {
            v.push(violation(
                "build_timeout_minutes",
                format!("{e}: whole minutes, 6 to 960, or 0 for the default of 240"),
            ));
        }
        v
    }

    /// Everything wrong with the template as it stands, as kiln can tell without kilnd: typed
    /// numbers, the template format's rules, and a source image of another OS.
    pub fn problems(&self, catalog: &AppCatalog, images: &[ImageInfo]) -> Vec<Violation> {
        let t = self.template();
        let mut v = self.input_problems();
        v.extend(validate::validate(&t, catalog));
        let named: Vec<&ImageInfo> = images
            .iter()
            .filter(|i| !t.source.image.is_empty() && i.name == t.source.image)
            .collect();
        if !t.os.is_empty() && !named.is_empty() && named.iter().all(|i| i.os != t.os) {
            v.push(violation(
                "source.image",
                format!(
                    "{} is a {} image; the template is for {}: pick a {} image (enter)",
                    t.source.image, named[0].os, t.os, t.os
                ),
            ));
        }
        if let Some((_, error)) = &self.toml_retry {
            v.push(violation(
                "",
                format!("the TOML you saved did not parse ({error}); ctrl-e reopens it"),
            ));
        }
        v
    }

    /// The problems and kilnd's last verdict, each once, with the line each belongs to.
    pub fn violations_by_field(
        &self,
        catalog: &AppCatalog,
        images: &[ImageInfo],
    ) -> Vec<(Field, Violation)> {
        let t = self.template();
        let mut all = self.problems(catalog, images);
        for d in &self.daemon_violations {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        all.into_iter()
            .map(|v| (field_of(&v.path, &t, catalog), v))
            .collect()
    }

    /// Whether the form holds anything that closing it would lose.
    pub fn is_dirty(&self) -> bool {
        self.template() != self.original || !self.input_problems().is_empty()
    }

    /// The line of application `i` of the catalog.
    pub fn app_choice(&self, catalog: &AppCatalog, i: usize) -> AppChoice {
        let Some(app) = catalog.apps.get(i) else {
            return AppChoice {
                selected: false,
                blocked: Some("not in the catalog".into()),
            };
        };
        let selected = self.draft.applications.contains(&app.name);
        let os = &self.draft.os;
        let conflict = self
            .draft
            .applications
            .iter()
            .find(|other| catalog.conflicts_between(&app.name, other));
        let blocked = if selected {
            None
        } else if let Some(other) = conflict {
            Some(format!("conflicts with {other}"))
        } else if !os.is_empty() && !app.supports(os) {
            Some(format!("not for {os}; supports {}", app.os.join(", ")))
        } else {
            None
        };
        AppChoice { selected, blocked }
    }

    /// Forgets kilnd's verdict on `field`: the person changed it.
    fn touch(&mut self, field: Field, catalog: &AppCatalog) {
        let t = self.template();
        self.daemon_violations
            .retain(|v| field_of(&v.path, &t, catalog) != field);
    }

    /// The text `field` takes, if it is a text field.
    fn input(&mut self, field: Field) -> Option<&mut String> {
        match field {
            Field::Name => Some(&mut self.name),
            Field::Description => Some(&mut self.description),
            Field::MinDisk => Some(&mut self.min_disk),
            Field::Timeout => Some(&mut self.timeout),
            _ => None,
        }
    }

    /// Switches the OS; a source image of another OS gives way to the first compatible one.
    fn set_os(&mut self, os: String, images: &[ImageInfo]) {
        let stale = images
            .iter()
            .filter(|i| i.name == self.draft.source.image)
            .any(|i| i.os != os);
        if stale || self.draft.source.image.is_empty() {
            if let Some(image) = picker::compatible(images, &os).first() {
                self.draft.source.image = image.name.clone();
            } else if stale {
                self.draft.source.image.clear();
            }
        }
        self.draft.os = os;
    }

    /// What `$EDITOR` opens for the whole template: a header, then the TOML (or, after a parse
    /// error, what the person wrote with the error on top).
    fn toml_text(&self, cwd: &Path) -> String {
        if let Some((body, error)) = &self.toml_retry {
            return editor::with_errors(body, std::slice::from_ref(error));
        }
        // Two lines, like the error block, so that parse errors name the lines shown next time.
        let header = format!(
            "# kiln dashboard: {}. Save and quit to take this into the form, then ctrl-s stores it;\n\
             # empty the file to leave the form as it was. Relative paths are relative to {}.\n",
            self.title(),
            cwd.display()
        );
        header + &self.template().to_toml()
    }

    fn owns(&self, tag: u64) -> bool {
        tag != 0 && (tag == self.load_tag || tag == self.save_tag || tag == self.check_tag)
    }
}

fn violation(path: &str, message: String) -> Violation {
    Violation {
        path: path.into(),
        message,
    }
}

/// A typed number; empty is 0.
fn parse_number(s: &str) -> Result<u32, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| {
        format!(
            "{:?} is not a number",
            s.chars().take(20).collect::<String>()
        )
    })
}

/// The form line a violation's field path belongs to; fields the form does not show go to the
/// TOML line.
pub fn field_of(path: &str, template: &Template, catalog: &AppCatalog) -> Field {
    let head = path.split(['.', '[']).next().unwrap_or("");
    match head {
        "name" => Field::Name,
        "description" => Field::Description,
        "os" => Field::Os,
        "min_disk_gb" => Field::MinDisk,
        "build_timeout_minutes" => Field::Timeout,
        "source" => Field::Source,
        "user_script" => Field::Script,
        "applications" => {
            let index = path
                .strip_prefix("applications[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<usize>().ok());
            index
                .and_then(|k| template.applications.get(k))
                .and_then(|name| catalog.apps.iter().position(|a| &a.name == name))
                .map_or(Field::Applications, Field::App)
        }
        _ => Field::Toml,
    }
}

/// The OSes the form offers: those of the catalog's applications and of the images, and the
/// template's own, sorted.
pub fn os_choices(catalog: &AppCatalog, images: &[ImageInfo], current: &str) -> Vec<String> {
    let mut all: Vec<String> = catalog
        .apps
        .iter()
        .flat_map(|a| a.os.iter().cloned())
        .chain(images.iter().map(|i| i.os.clone()))
        .chain(Some(current.to_string()).filter(|c| !c.is_empty()))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Opens the form for a new template.
pub(super) fn open_new(app: &mut App) -> Vec<Effect> {
    app.form = Some(Form::new_template(&app.catalog, &app.images));
    app.view = View::Form;
    app.fresh_images()
}

/// Opens the form on the stored template `name`, which it loads first.
pub(super) fn open_edit(app: &mut App, name: String) -> Vec<Effect> {
    let tag = app.tag();
    app.form = Some(Form::editing(&name, tag));
    app.view = View::Form;
    let mut fx = vec![template_get(tag, &name)];
    fx.extend(app.fresh_images());
    fx
}

fn close(app: &mut App) {
    app.form = None;
    app.view = View::Templates;
}

/// A key while the form is on screen.
pub(super) fn on_key(app: &mut App, key: Key) -> Vec<Effect> {
    let catalog = app.catalog.clone();
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    if form.confirm_discard {
        form.confirm_discard = false;
        if key == Key::Char('y') || key == Key::Char('Y') {
            let title = form.title();
            close(app);
            app.message = Some(format!("{title}: changes discarded"));
        } else {
            app.message = Some("still editing: ctrl-s saves, esc then y discards".into());
        }
        return Vec::new();
    }
    if !form.loaded {
        if key == Key::Esc {
            close(app);
        }
        return Vec::new();
    }
    let field = form.focused(&catalog);
    if let Some(input) = form.input(field) {
        let typed = match key {
            Key::Char(c) => {
                input.push(c);
                true
            }
            Key::Backspace => {
                input.pop();
                true
            }
            _ => false,
        };
        if typed {
            form.touch(field, &catalog);
            return Vec::new();
        }
    }
    if key == Key::Char('?') {
        app.help = true;
        return Vec::new();
    }
    let Some(cmd) = keymap::command_for(View::Form, key) else {
        return Vec::new();
    };
    let count = Form::fields(&catalog).len();
    match cmd {
        Cmd::NextField => form.focus = (form.focus + 1) % count,
        Cmd::PrevField => form.focus = (form.focus + count - 1) % count,
        Cmd::PrevChoice | Cmd::NextChoice if field == Field::Os => {
            step_os(app, cmd == Cmd::NextChoice);
        }
        Cmd::Activate => return activate(app, field),
        Cmd::EditToml => {
            return vec![Effect::Edit {
                what: EditWhat::Template,
                text: form.toml_text(&app.cwd),
            }]
        }
        Cmd::Save => return save(app),
        Cmd::Back => {
            if form.is_dirty() {
                form.confirm_discard = true;
            } else {
                close(app);
            }
        }
        _ => {}
    }
    Vec::new()
}

fn step_os(app: &mut App, forward: bool) {
    let Some(form) = app.form.as_mut() else {
        return;
    };
    let choices = os_choices(&app.catalog, &app.images, &form.draft.os);
    if choices.is_empty() {
        return;
    }
    let at = choices.iter().position(|o| *o == form.draft.os);
    let n = choices.len();
    let next = match (at, forward) {
        (Some(i), true) => (i + 1) % n,
        (Some(i), false) => (i + n - 1) % n,
        (None, _) => 0,
    };
    form.set_os(choices[next].clone(), &app.images);
    form.touch(Field::Os, &app.catalog);
}

/// `enter` or space on a line: next field, next OS, toggle, picker or editor.
fn activate(app: &mut App, field: Field) -> Vec<Effect> {
    let count = Form::fields(&app.catalog).len();
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    match field {
        Field::Os => step_os(app, true),
        Field::App(i) => {
            let Some(name) = app.catalog.apps.get(i).map(|a| a.name.clone()) else {
                return Vec::new();
            };
            let choice = form.app_choice(&app.catalog, i);
            if choice.selected {
                form.draft.applications.retain(|a| *a != name);
            } else if let Some(why) = choice.blocked {
                app.message = Some(format!("{name} cannot be selected: {why}"));
                return Vec::new();
            } else {
                form.draft.applications.push(name);
            }
            form.touch(field, &app.catalog);
            form.touch(Field::Applications, &app.catalog);
        }
        Field::Source => {
            let os = form.draft.os.clone();
            let current = form.draft.source.image.clone();
            let sel = picker::compatible(&app.images, &os)
                .iter()
                .position(|i| i.name == current)
                .unwrap_or(0);
            app.picker = Some(Picker {
                purpose: PickFor::Source,
                os,
                sel,
                touched: false,
            });
            return app.fresh_images();
        }
        Field::Script => {
            let text = form
                .draft
                .user_script
                .clone()
                .unwrap_or_else(|| "#!/bin/bash -e\n".into());
            return vec![Effect::Edit {
                what: EditWhat::UserScript,
                text,
            }];
        }
        Field::Toml => {
            return vec![Effect::Edit {
                what: EditWhat::Template,
                text: form.toml_text(&app.cwd),
            }]
        }
        Field::Name
        | Field::Description
        | Field::MinDisk
        | Field::Timeout
        | Field::Applications => {
            form.focus = (form.focus + 1) % count;
        }
    }
    Vec::new()
}

/// The picker chose `image` as the template's source.
pub(super) fn set_source(app: &mut App, image: String) {
    if let Some(form) = app.form.as_mut() {
        form.draft.source.image = image;
        form.touch(Field::Source, &app.catalog);
    }
}

/// `ctrl-s`: stores the template when it is valid, else says why not; nothing invalid is sent.
fn save(app: &mut App) -> Vec<Effect> {
    let connected = app.is_connected();
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    if form.save_tag != 0 || form.check_tag != 0 {
        app.message = Some("still saving…".into());
        return Vec::new();
    }
    let problems = form.problems(&app.catalog, &app.images);
    if !problems.is_empty() {
        let n = problems.len();
        app.message = Some(format!(
            "not saved: {n} problem{} to fix, shown beside {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "its field" } else { "their fields" }
        ));
        return Vec::new();
    }
    let template = form.template();
    if form.mode != FormMode::New && template == form.original && form.conflict.is_none() {
        app.message = Some("no changes to save".into());
        return Vec::new();
    }
    if !connected {
        app.message = Some("not connected to kilnd: nothing saved; the form stays open".into());
        return Vec::new();
    }
    let wire = match serde_json::to_value(&template) {
        Ok(v) => v,
        Err(e) => {
            app.message = Some(format!("cannot encode the template: {e}"));
            return Vec::new();
        }
    };
    let (mode, expected_revision) = (form.mode.clone(), form.expected_revision);
    let tag = app.tag();
    let save = match mode {
        FormMode::New => call::<m::TemplateCreate>(tag, TemplateParams { template: wire }),
        FormMode::Edit { name } => {
            let params = TemplateUpdateParams {
                name,
                template: wire,
                expected_revision,
            };
            call::<m::TemplateUpdate>(tag, params)
        }
    };
    if let Some(form) = app.form.as_mut() {
        form.save_tag = tag;
    }
    app.message = Some(format!("saving {}…", template.name));
    vec![save]
}

/// Whether the reply tagged `tag` is one the form waits for.
pub(super) fn owns(app: &App, tag: u64) -> bool {
    app.form.as_ref().is_some_and(|f| f.owns(tag))
}

/// A reply to one of the form's calls.
pub(super) fn on_reply(
    app: &mut App,
    method: &str,
    tag: u64,
    result: Result<Value, CallError>,
) -> Vec<Effect> {
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    let bad = |e: serde_json::Error| format!("{method}: unexpected reply from kilnd: {e}");
    if tag == form.load_tag {
        form.load_tag = 0;
        let record = result
            .map_err(|e| e.message)
            .and_then(|v| serde_json::from_value::<TemplateRecord>(v).map_err(bad));
        match record {
            Ok(r) => {
                form.original = r.template.clone();
                form.set_template(r.template);
                form.expected_revision = Some(r.revision);
                form.loaded = true;
            }
            Err(e) => {
                let title = form.title();
                close(app);
                app.message = Some(format!("{title}: cannot load it: {e}"));
            }
        }
        return Vec::new();
    }
    if tag == form.check_tag {
        form.check_tag = 0;
        let expected = form.expected_revision;
        let current = result
            .ok()
            .and_then(|v| serde_json::from_value::<TemplateRecord>(v).ok())
            .map(|r| r.revision);
        match current {
            Some(rev) if Some(rev) != expected => {
                form.conflict = Some(rev);
                form.expected_revision = Some(rev);
                app.message = Some(format!("not saved: revision {rev} was stored meanwhile"));
            }
            _ => {
                let message = std::mem::take(&mut form.conflict_message);
                form.daemon_violations = vec![violation("name", message.clone())];
                app.message = Some(format!("not saved: {message}"));
            }
        }
        return Vec::new();
    }
    form.save_tag = 0;
    match result {
        Ok(v) => match serde_json::from_value::<TemplateRef>(v) {
            Ok(r) => {
                let verb = if form.mode == FormMode::New {
                    "created"
                } else {
                    "updated"
                };
                close(app);
                app.message = Some(format!("{verb} {} revision {}", r.name, r.revision));
                app.template_focus = Some(r.name);
                app.templates_pending = false;
                return app.refresh();
            }
            Err(e) => app.message = Some(bad(e)),
        },
        Err(e) if e.kind == Some(ErrorKind::InvalidTemplate) => {
            form.daemon_violations = if e.violations.is_empty() {
                vec![violation("", e.message.clone())]
            } else {
                e.violations
            };
            app.message = Some(format!("kilnd refused it: {}", e.message));
        }
        Err(e) if e.kind == Some(ErrorKind::Conflict) => match &form.mode {
            FormMode::Edit { name } => {
                // A revision stored meanwhile, or a new name that is taken: the current revision
                // tells which.
                let name = name.clone();
                form.conflict_message = e.message;
                let tag = app.tag();
                if let Some(form) = app.form.as_mut() {
                    form.check_tag = tag;
                }
                return vec![template_get(tag, &name)];
            }
            FormMode::New => {
                form.daemon_violations = vec![violation("name", e.message.clone())];
                app.message = Some(format!("not saved: {}", e.message));
            }
        },
        Err(e) => app.message = Some(format!("not saved: {method}: {}", e.message)),
    }
    Vec::new()
}

/// The person's editor returned (or failed to start).
pub(super) fn on_edited(app: &mut App, what: EditWhat, result: Result<String, String>) {
    let Some(form) = app.form.as_mut() else {
        return;
    };
    let text = match result {
        Ok(t) => t,
        Err(e) => {
            app.message = Some(format!("editor: {e}"));
            return;
        }
    };
    match what {
        EditWhat::UserScript => {
            let lines = text.lines().count();
            form.draft.user_script = Some(text).filter(|t| !t.trim().is_empty());
            form.touch(Field::Script, &app.catalog);
            app.message = Some(match lines {
                0 => "user script removed".to_string(),
                n => format!("user script: {n} line{}", if n == 1 { "" } else { "s" }),
            });
        }
        EditWhat::Template => {
            let body = editor::strip_errors(&text).to_string();
            if editor::is_blank(&body) {
                form.toml_retry = None;
                app.message = Some("the TOML was emptied: the form is as it was".into());
                return;
            }
            let offset = "\n".repeat(editor::error_block_lines(1));
            match template_file::parse_text(&(offset + &body), template_file::Format::Toml) {
                Ok(mut t) => {
                    template_file::resolve_local_paths(&mut t, &app.cwd);
                    form.set_template(t);
                    form.toml_retry = None;
                    form.daemon_violations.clear();
                    app.message = Some("the form now holds the TOML you saved".into());
                }
                Err(v) => {
                    let error = v.to_string();
                    app.message = Some(format!("the TOML did not parse, nothing taken: {error}"));
                    form.toml_retry = Some((body, error));
                }
            }
        }
    }
}
