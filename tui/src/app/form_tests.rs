//! `update` tests of the template editor, the base-image picker and the Images tabs.

use kiln_shared::build::{BuildReply, BuildStartParams};
use kiln_shared::protocol::{ErrorKind, ImageDeleteParams, TemplateList, TemplateRef};
use kiln_shared::Violation;

use super::fixtures::{app, key, press, record, refused, reply, stored_template};
use super::form::{EditWhat, Field, Form};
use super::keymap::Key;
use super::*;
use kiln_shared::build::BuildState;

/// The single call of `method` among `fx`: its tag and request.
fn the_call(fx: &[Effect], method: Name) -> (u64, Request) {
    let calls: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Call { tag, request } if request.method() == method => {
                Some((*tag, request.clone()))
            }
            _ => None,
        })
        .collect();
    match calls.as_slice() {
        [one] => one.clone(),
        _ => panic!("expected one {} call in {fx:?}", method.as_str()),
    }
}

/// The single `template.create` among `fx`: its tag and the template as it goes on the wire.
fn created(fx: &[Effect]) -> (u64, serde_json::Value) {
    match the_call(fx, Name::TemplateCreate) {
        (tag, Request::TemplateCreate(p)) => (tag, p.template),
        (_, other) => panic!("not a create: {other:?}"),
    }
}

/// The `template.update` params among `fx`.
fn update_params(fx: &[Effect]) -> kiln_shared::protocol::TemplateUpdateParams {
    match the_call(fx, Name::TemplateUpdate) {
        (_, Request::TemplateUpdate(p)) => p,
        (_, other) => panic!("not an update: {other:?}"),
    }
}

fn form(app: &App) -> &Form {
    match &app.form {
        Some(f) => f,
        None => panic!("the form is not open"),
    }
}

/// Moves the focus to `field` with tab.
fn focus(app: &mut App, field: Field) {
    for _ in 0..40 {
        if form(app).focused(&app.catalog) == field {
            return;
        }
        key(app, Key::Tab);
    }
    panic!("no field {field:?}");
}

fn app_index(app: &App, name: &str) -> usize {
    app.catalog
        .apps
        .iter()
        .position(|a| a.name == name)
        .unwrap_or_else(|| panic!("no app {name}"))
}

fn problems(app: &App) -> Vec<(Field, String)> {
    form(app)
        .violations_by_field(&app.catalog, &app.images.list.items)
        .into_iter()
        .map(|(f, v)| (f, v.to_string()))
        .collect()
}

/// A new form with `name` typed into it.
fn new_form(name: &str) -> App {
    let mut a = app();
    press(&mut a, "n");
    press(&mut a, name);
    a
}

/// The form editing `stored_template()` at revision 3, loaded.
fn edit_form() -> App {
    let mut a = app();
    let fx = press(&mut a, "e");
    let (tag, request) = the_call(&fx, Name::TemplateGet);
    assert_eq!(request, Request::template_get("web-base"));
    assert!(!form(&a).loaded);
    let r = record(&stored_template(), 3);
    reply(&mut a, tag, Reply::TemplateGet(Ok(r)));
    assert!(form(&a).loaded);
    a
}

/// Adds `!` to the description of the form and presses ctrl-s.
fn edit_and_save(a: &mut App) -> Vec<Effect> {
    focus(a, Field::Description);
    press(a, "!");
    key(a, Key::Ctrl('s'))
}

#[test]
fn a_new_form_starts_valid_but_for_the_name_and_checks_as_it_is_typed() {
    let mut a = app();
    press(&mut a, "n");
    assert_eq!(a.view, View::Form);
    let t = form(&a).template();
    assert_eq!(
        (t.os.as_str(), t.source.image.as_str()),
        ("debian-12", "debian-12")
    );
    assert_eq!(t.distribute.len(), 1, "every template needs a target");
    let p = problems(&a);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, Field::Name);
    press(&mut a, "web q?");
    assert_eq!(form(&a).name, "web q?", "text fields take every character");
    key(&mut a, Key::Backspace);
    key(&mut a, Key::Backspace);
    key(&mut a, Key::Backspace);
    assert!(problems(&a).is_empty(), "{:?}", problems(&a));
    focus(&mut a, Field::Timeout);
    key(&mut a, Key::Backspace);
    press(&mut a, "3");
    let p = problems(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, Field::Timeout);
    assert!(p[0].1.contains("out of range"), "{p:?}");
    key(&mut a, Key::Backspace);
    press(&mut a, "x");
    assert!(
        problems(&a)[0].1.contains("not a number"),
        "{:?}",
        problems(&a)
    );
}

#[test]
fn applications_that_conflict_or_miss_the_os_are_greyed_with_the_reason() {
    let mut a = new_form("web");
    let nginx = app_index(&a, "nginx");
    let apache = app_index(&a, "apache2");
    let mysql = app_index(&a, "mysql");
    focus(&mut a, Field::App(nginx));
    press(&mut a, " ");
    assert_eq!(form(&a).draft.applications, ["nginx"]);
    let choice = form(&a).app_choice(&a.catalog, apache);
    assert_eq!(choice.blocked.as_deref(), Some("conflicts with nginx"));
    let choice = form(&a).app_choice(&a.catalog, mysql);
    assert_eq!(
        choice.blocked.as_deref(),
        Some("not for debian-12; supports ubuntu-22.04, ubuntu-24.04")
    );
    // A greyed choice cannot be toggled on, and the message says why.
    focus(&mut a, Field::App(apache));
    key(&mut a, Key::Enter);
    assert_eq!(form(&a).draft.applications, ["nginx"]);
    assert_eq!(
        a.message.as_deref(),
        Some("apache2 cannot be selected: conflicts with nginx")
    );
    // Unselecting frees it.
    focus(&mut a, Field::App(nginx));
    press(&mut a, " ");
    assert_eq!(form(&a).app_choice(&a.catalog, apache).blocked, None);
}

#[test]
fn changing_the_os_follows_with_the_source_image_and_flags_apps_it_lacks() {
    let mut a = new_form("web");
    let mariadb = app_index(&a, "mariadb");
    focus(&mut a, Field::App(mariadb));
    press(&mut a, " ");
    focus(&mut a, Field::Os);
    for _ in 0..10 {
        if form(&a).draft.os == "ubuntu-24.04" {
            break;
        }
        key(&mut a, Key::Right);
    }
    assert_eq!(form(&a).draft.os, "ubuntu-24.04");
    assert_eq!(form(&a).draft.source.image, "ubuntu-24.04");
    let mysql = app_index(&a, "mysql");
    assert_eq!(
        form(&a).app_choice(&a.catalog, mysql).blocked.as_deref(),
        Some("conflicts with mariadb")
    );
    key(&mut a, Key::Left);
    assert_eq!(form(&a).draft.os, "ubuntu-22.04");
    assert_eq!(form(&a).draft.source.image, "", "no ubuntu-22.04 image");
    assert!(problems(&a).iter().any(|(f, _)| *f == Field::Source));
}

#[test]
fn nothing_invalid_is_saved() {
    let mut a = app();
    press(&mut a, "n");
    let fx = key(&mut a, Key::Ctrl('s'));
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(
        a.message.as_deref(),
        Some("not saved: 1 problem to fix, shown beside its field")
    );
    let mut a = edit_form();
    focus(&mut a, Field::MinDisk);
    press(&mut a, "0000000000");
    assert!(key(&mut a, Key::Ctrl('s')).is_empty());
    assert!(a.form.is_some());
}

#[test]
fn esc_asks_before_discarding_changes() {
    let mut a = app();
    press(&mut a, "n");
    key(&mut a, Key::Esc);
    assert_eq!(
        (a.view, a.form.is_none()),
        (View::Templates, true),
        "nothing to lose"
    );
    let mut a = new_form("w");
    key(&mut a, Key::Esc);
    assert!(form(&a).confirm_discard);
    press(&mut a, "n");
    assert!(!form(&a).confirm_discard, "no keeps the form");
    key(&mut a, Key::Esc);
    key(&mut a, Key::Enter);
    assert!(a.form.is_some(), "enter is no too");
    key(&mut a, Key::Esc);
    press(&mut a, "y");
    assert_eq!((a.view, a.form.is_none()), (View::Templates, true));
}

#[test]
fn saving_a_new_template_creates_it_and_selects_it() {
    let mut a = new_form("web");
    let fx = key(&mut a, Key::Ctrl('s'));
    let (tag, template) = created(&fx);
    assert_eq!(template["name"], "web");
    assert_eq!(template["source"]["image"], "debian-12");
    assert!(key(&mut a, Key::Ctrl('s')).is_empty(), "one save at a time");
    let r = TemplateRef {
        name: "web".into(),
        revision: 1,
    };
    let fx = reply(&mut a, tag, Reply::TemplateCreate(Ok(r)));
    assert_eq!(a.message.as_deref(), Some("created web revision 1"));
    assert_eq!((a.view, a.form.is_none()), (View::Templates, true));
    let (_, _) = the_call(&fx, Name::TemplateList);
    let mut templates = vec![fixtures::template("web", "debian-12", &[], 1)];
    templates.extend(a.templates.list.items.clone());
    reply(
        &mut a,
        0,
        Reply::TemplateList(Ok(TemplateList { templates })),
    );
    assert_eq!(a.templates.selected().map(|t| t.name.as_str()), Some("web"));
}

#[test]
fn an_edit_sends_the_expected_revision_and_keeps_what_the_form_does_not_show() {
    let mut a = edit_form();
    assert_eq!(form(&a).name, "web-base");
    assert_eq!(form(&a).min_disk, "10");
    assert!(!form(&a).is_dirty());
    assert!(
        key(&mut a, Key::Ctrl('s')).is_empty(),
        "no changes, nothing sent"
    );
    let params = update_params(&edit_and_save(&mut a));
    assert_eq!(params.name, "web-base");
    assert_eq!(params.expected_revision, Some(3));
    let mut expected = stored_template();
    expected.description = Some("nginx on Debian 12!".into());
    let sent = kiln_shared::Template::from_json_value(params.template);
    assert_eq!(sent, Ok(expected), "steps, vm, targets and tags untouched");
}

#[test]
fn a_revision_stored_meanwhile_is_shown_and_only_a_second_save_overwrites_it() {
    let mut a = edit_form();
    let (tag, _) = the_call(&edit_and_save(&mut a), Name::TemplateUpdate);
    let conflict = refused(
        ErrorKind::Conflict,
        "template web-base is at revision 4, not 3",
        Vec::new(),
    );
    let fx = reply(&mut a, tag, Reply::TemplateUpdate(Err(conflict)));
    let (check, request) = the_call(&fx, Name::TemplateGet);
    assert_eq!(request, Request::template_get("web-base"));
    let r = record(&stored_template(), 4);
    reply(&mut a, check, Reply::TemplateGet(Ok(r)));
    assert_eq!(form(&a).conflict, Some(4));
    assert!(
        a.message
            .as_deref()
            .is_some_and(|m| m.contains("revision 4")),
        "{:?}",
        a.message
    );
    assert_eq!(
        form(&a).description,
        "nginx on Debian 12!",
        "the edit is kept"
    );
    let params = update_params(&key(&mut a, Key::Ctrl('s')));
    assert_eq!(params.expected_revision, Some(4));
}

#[test]
fn a_taken_name_is_shown_beside_the_name() {
    let mut a = new_form("db");
    let (tag, _) = the_call(&key(&mut a, Key::Ctrl('s')), Name::TemplateCreate);
    let taken = refused(
        ErrorKind::Conflict,
        "template db already exists in project default",
        Vec::new(),
    );
    reply(&mut a, tag, Reply::TemplateCreate(Err(taken)));
    assert_eq!(
        problems(&a),
        [(
            Field::Name,
            "name: template db already exists in project default".to_string()
        )]
    );
    press(&mut a, "2");
    assert!(problems(&a).is_empty(), "typing forgets kilnd's verdict");
}

#[test]
fn kilnd_violations_are_shown_beside_their_fields() {
    let mut a = edit_form();
    let (tag, _) = the_call(&edit_and_save(&mut a), Name::TemplateUpdate);
    let invalid = refused(
        ErrorKind::InvalidTemplate,
        "template \"web-base\" is invalid: 2 problems",
        vec![
            Violation {
                path: "source.image".into(),
                message: "no image named web1 in project default".into(),
            },
            Violation {
                path: "customize[0].script".into(),
                message: "local file /x does not exist".into(),
            },
        ],
    );
    reply(&mut a, tag, Reply::TemplateUpdate(Err(invalid)));
    let fields: Vec<Field> = problems(&a).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, [Field::Source, Field::Toml]);
    // Picking another source forgets kilnd's word on the source only.
    focus(&mut a, Field::Source);
    key(&mut a, Key::Enter);
    assert!(a.picker().is_some());
    press(&mut a, "k");
    key(&mut a, Key::Enter);
    assert_eq!(form(&a).draft.source.image, "debian-12");
    let fields: Vec<Field> = problems(&a).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, [Field::Toml]);
}

#[test]
fn the_source_picker_offers_only_images_of_the_templates_os() {
    let mut a = edit_form();
    focus(&mut a, Field::Source);
    key(&mut a, Key::Enter);
    let names: Vec<String> = a.picker_choices().into_iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        ["debian-12", "web1", "team-b-base"],
        "public, own, shared"
    );
    assert_eq!(a.picker().map(|p| p.sel), Some(1), "the current source");
    key(&mut a, Key::Esc);
    assert!(a.picker().is_none());
    assert_eq!(form(&a).draft.source.image, "web1", "esc changes nothing");
}

#[test]
fn the_help_opens_over_the_picker_and_closing_it_shows_the_picker_again() {
    let mut a = edit_form();
    focus(&mut a, Field::Source);
    key(&mut a, Key::Enter);
    press(&mut a, "?j");
    assert_eq!(fixtures::help_scroll(&a), Some(1), "j scrolls the help");
    assert_eq!(
        a.picker().map(|p| p.sel),
        Some(1),
        "not the picker under it"
    );
    press(&mut a, "x");
    assert_eq!(fixtures::help_scroll(&a), None);
    assert_eq!(a.picker().map(|p| p.sel), Some(1), "the picker is back");
    key(&mut a, Key::Esc);
    assert_eq!(a.overlay, None);
}

#[test]
fn b_asks_the_image_name_then_a_compatible_base_image_and_jumps_to_the_build() {
    let mut a = app();
    press(&mut a, "jj");
    let fx = press(&mut a, "b");
    let (tag, request) = the_call(&fx, Name::TemplateGet);
    assert_eq!(request, Request::template_get("java-app"));
    let mut java = stored_template();
    java.name = "java-app".into();
    java.os = "ubuntu-24.04".into();
    java.source.image = "ubuntu-24.04".into();
    reply(&mut a, tag, Reply::TemplateGet(Ok(record(&java, 7))));
    press(&mut a, "j1");
    key(&mut a, Key::Enter);
    let names: Vec<String> = a.picker_choices().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["ubuntu-24.04"], "only images of the template's OS");
    let fx = key(&mut a, Key::Enter);
    let start = BuildStartParams {
        template: "java-app".into(),
        image_name: "j1".into(),
        base_image: Some("ubuntu-24.04".into()),
    };
    assert_eq!(
        the_call(&fx, Name::BuildStart),
        (0, Request::BuildStart(start))
    );
    let build = fixtures::build(9, "java-app", BuildState::Queued);
    reply(&mut a, 0, Reply::BuildStart(Ok(BuildReply { build })));
    assert_eq!((a.view, a.detail.build), (View::Detail, Some(9)));
}

#[test]
fn the_build_picker_defaults_to_the_templates_source_even_when_it_arrives_late() {
    let mut a = app();
    let (tag, _) = the_call(&press(&mut a, "b"), Name::TemplateGet);
    press(&mut a, "w2");
    key(&mut a, Key::Enter);
    assert_eq!(a.picker().map(|p| p.sel), Some(0));
    let r = record(&stored_template(), 3);
    reply(&mut a, tag, Reply::TemplateGet(Ok(r)));
    let chosen = a.picker_choices()[a.picker().map_or(0, |p| p.sel)]
        .name
        .clone();
    assert_eq!(chosen, "web1");
    press(&mut a, "k");
    let fx = key(&mut a, Key::Enter);
    let (_, request) = the_call(&fx, Name::BuildStart);
    let Request::BuildStart(start) = request else {
        panic!("not a build.start: {request:?}");
    };
    assert_eq!(start.base_image.as_deref(), Some("debian-12"));
    // Esc in the picker starts nothing.
    press(&mut a, "bw3");
    key(&mut a, Key::Enter);
    assert!(key(&mut a, Key::Esc).is_empty());
    assert!(a.picker().is_none());
}

#[test]
fn the_editor_takes_the_user_script_and_the_whole_toml() {
    let mut a = new_form("web");
    focus(&mut a, Field::Script);
    let fx = key(&mut a, Key::Enter);
    assert_eq!(
        fx,
        [Effect::Edit {
            what: EditWhat::UserScript,
            text: "#!/bin/bash -e\n".into()
        }]
    );
    update(
        &mut a,
        Action::Edited {
            what: EditWhat::UserScript,
            result: Ok("#!/bin/sh\necho hi\n".into()),
        },
    );
    assert_eq!(
        form(&a).draft.user_script.as_deref(),
        Some("#!/bin/sh\necho hi\n")
    );

    let fx = key(&mut a, Key::Ctrl('e'));
    let [Effect::Edit { what, text }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert_eq!(*what, EditWhat::Template);
    assert!(text.contains("name = \"web\""), "{text}");
    // A TOML that does not parse changes nothing, blocks saving and comes back with the error.
    let broken = format!("{text}\nthis is not toml\n");
    update(
        &mut a,
        Action::Edited {
            what: EditWhat::Template,
            result: Ok(broken),
        },
    );
    assert!(key(&mut a, Key::Ctrl('s')).is_empty());
    assert!(problems(&a).iter().any(|(f, _)| *f == Field::Toml));
    let fx = key(&mut a, Key::Ctrl('e'));
    let [Effect::Edit { text, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert!(text.starts_with("# ERROR: "), "{text}");
    let fixed = format!(
        "{}\n[[customize]]\ntype = \"reboot\"\nname = \"again\"\n",
        text.replace("this is not toml", "")
    );
    update(
        &mut a,
        Action::Edited {
            what: EditWhat::Template,
            result: Ok(fixed),
        },
    );
    assert_eq!(form(&a).draft.customize.len(), 1);
    assert_eq!(form(&a).name, "web");
    assert!(problems(&a).is_empty(), "{:?}", problems(&a));
    let (_, template) = created(&key(&mut a, Key::Ctrl('s')));
    assert_eq!(template["customize"][0]["name"], "again");
}

#[test]
fn images_have_public_private_and_shared_tabs() {
    let mut a = app();
    key(&mut a, Key::Tab);
    key(&mut a, Key::Tab);
    assert_eq!(a.view, View::Images);
    let names =
        |a: &App| -> Vec<String> { a.images.visible().iter().map(|i| i.name.clone()).collect() };
    assert_eq!(names(&a), ["debian-12", "ubuntu-24.04"]);
    press(&mut a, "j]");
    assert_eq!((a.images.tab, a.images.list.sel), (images::Tab::Private, 0));
    assert_eq!(names(&a), ["web1"]);
    press(&mut a, "3");
    assert_eq!(names(&a), ["team-b-base"]);
    key(&mut a, Key::Right);
    assert_eq!(a.images.tab, images::Tab::Galleries);
    key(&mut a, Key::Right);
    assert_eq!(a.images.tab, images::Tab::Public);
    press(&mut a, "[");
    assert_eq!(a.images.tab, images::Tab::Galleries);
    press(&mut a, "2");
    assert_eq!(a.images.tab, images::Tab::Private);
    key(&mut a, Key::Enter);
    assert_eq!(a.overlay, Some(overlay::Overlay::ImageWindow));
    press(&mut a, "D");
    assert_eq!(a.overlay, None, "any key closes the details");
    assert_eq!(a.prompt, None, "and does nothing else");
    let mut fx = press(&mut a, "Dweb1");
    fx.extend(key(&mut a, Key::Enter));
    let delete = Request::ImageDelete(ImageDeleteParams {
        image: "web1".into(),
        force: false,
    });
    assert_eq!(the_call(&fx, Name::ImageDelete), (0, delete));
}
