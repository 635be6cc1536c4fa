//! Storing the form with kilnd: `ctrl-s` (nothing invalid is sent) and the replies to the
//! form's calls, conflicts and kilnd's violations included.

use kiln_shared::methods::Name;
use kiln_shared::protocol::{
    ErrorKind, TemplateParams, TemplateRecord, TemplateRef, TemplateUpdateParams,
};

use super::keys::close;
use super::{violation, FormMode};
use crate::app::{call, App, CallError, Effect, Reply, Request};

/// `ctrl-s`: stores the template when it is valid, else says why not; nothing invalid is sent.
pub(super) fn save(app: &mut App) -> Vec<Effect> {
    let connected = app.is_connected();
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    if form.save_tag != 0 || form.check_tag != 0 {
        app.message = Some("still saving…".into());
        return Vec::new();
    }
    let problems = form.problems(&app.catalog, &app.images.list.items);
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
    let request = match &form.mode {
        FormMode::New => Request::TemplateCreate(TemplateParams { template: wire }),
        FormMode::Edit { name } => Request::TemplateUpdate(TemplateUpdateParams {
            name: name.clone(),
            template: wire,
            expected_revision: form.expected_revision,
        }),
    };
    let tag = app.tag();
    if let Some(form) = app.form.as_mut() {
        form.save_tag = tag;
    }
    app.message = Some(format!("saving {}…", template.name));
    vec![call(tag, request)]
}

/// Whether the reply tagged `tag` is one the form waits for.
pub(in crate::app) fn owns(app: &App, tag: u64) -> bool {
    app.form.as_ref().is_some_and(|f| f.owns(tag))
}

/// A reply to one of the form's calls (`tag` is one the form waits for).
pub(in crate::app) fn on_reply(app: &mut App, tag: u64, reply: Reply) -> Vec<Effect> {
    let Some(form) = app.form.as_ref() else {
        return Vec::new();
    };
    let method = reply.method();
    match reply {
        Reply::TemplateGet(r) if tag == form.load_tag => loaded(app, r),
        Reply::TemplateGet(r) if tag == form.check_tag => checked(app, r),
        Reply::TemplateCreate(r) | Reply::TemplateUpdate(r) if tag == form.save_tag => {
            return saved(app, method, r);
        }
        // The form sends nothing else under its tags.
        _ => {}
    }
    Vec::new()
}

/// `template.get` answered with the template the form edits.
fn loaded(app: &mut App, record: Result<TemplateRecord, CallError>) {
    let Some(form) = app.form.as_mut() else {
        return;
    };
    form.load_tag = 0;
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
}

/// `template.get` answered after a save's conflict: a newer revision, or else the name taken.
fn checked(app: &mut App, record: Result<TemplateRecord, CallError>) {
    let Some(form) = app.form.as_mut() else {
        return;
    };
    form.check_tag = 0;
    let expected = form.expected_revision;
    match record.ok().map(|r| r.revision) {
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
}

/// `template.create` or `template.update` answered the save.
fn saved(app: &mut App, method: Name, result: Result<TemplateRef, CallError>) -> Vec<Effect> {
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    form.save_tag = 0;
    match result {
        Ok(r) => {
            let verb = if form.mode == FormMode::New {
                "created"
            } else {
                "updated"
            };
            close(app);
            app.message = Some(format!("{verb} {} revision {}", r.name, r.revision));
            app.templates.focus = Some(r.name);
            app.templates.list.pending = false;
            return app.refresh();
        }
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
                return vec![call(tag, Request::template_get(&name))];
            }
            FormMode::New => {
                form.daemon_violations = vec![violation("name", e.message.clone())];
                app.message = Some(format!("not saved: {}", e.message));
            }
        },
        Err(e) => {
            app.message = Some(format!("not saved: {}: {}", method.as_str(), e.message));
        }
    }
    Vec::new()
}
