//! What the person does to the open form: opening and closing it, keys on its fields, the base
//! image picker for its source, and the text `$EDITOR` gives back.

use super::save::save;
use super::{os_choices, EditWhat, Field, Form};
use crate::app::keymap::{self, Cmd, Key};
use crate::app::overlay::{self, Overlay};
use crate::app::picker::{self, PickFor, Picker};
use crate::app::{call, App, Effect, Request, View};
use crate::cli::{editor, template_file};

/// Opens the form for a new template.
pub(in crate::app) fn open_new(app: &mut App) -> Vec<Effect> {
    app.form = Some(Form::new_template(&app.catalog, &app.images.list.items));
    app.view = View::Form;
    app.fresh_images()
}

/// Opens the form on the stored template `name`, which it loads first.
pub(in crate::app) fn open_edit(app: &mut App, name: String) -> Vec<Effect> {
    let tag = app.tag();
    app.form = Some(Form::editing(&name, tag));
    app.view = View::Form;
    let mut fx = vec![call(tag, Request::template_get(&name))];
    fx.extend(app.fresh_images());
    fx
}

pub(super) fn close(app: &mut App) {
    app.form = None;
    app.view = View::Templates;
}

/// A key while the form is on screen.
pub(in crate::app) fn on_key(app: &mut App, key: Key) -> Vec<Effect> {
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
        overlay::open_help(app);
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
    let choices = os_choices(&app.catalog, &app.images.list.items, &form.draft.os);
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
    form.set_os(choices[next].clone(), &app.images.list.items);
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
            let sel = picker::choices(&app.images, &os)
                .iter()
                .position(|i| i.name == current)
                .unwrap_or(0);
            app.overlay = Some(Overlay::Picker(Picker {
                purpose: PickFor::Source,
                os,
                sel,
                touched: false,
            }));
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
pub(in crate::app) fn set_source(app: &mut App, image: String) {
    if let Some(form) = app.form.as_mut() {
        form.draft.source.image = image;
        // A picked image or `GALLERY/IMAGE` is taken as it is now: no older pin stays.
        form.draft.source.version = "latest".into();
        form.touch(Field::Source, &app.catalog);
    }
}

/// The person's editor returned (or failed to start).
pub(in crate::app) fn on_edited(app: &mut App, what: EditWhat, result: Result<String, String>) {
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
