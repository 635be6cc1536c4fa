//! View tests: TestBackend snapshots (insta) of each view at 80x24 and 120x40, and a sweep of
//! sizes from 1x1 that must draw without panicking.

use chrono::{TimeZone, Utc};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

use crate::app::fixtures::{app, disconnect, log_line, record, refused, reply, stored_template};
use crate::app::form::Field;
use crate::app::keymap::Key;
use crate::app::{update, Action, App, Effect, Note, Reply};
use kiln_shared::build::{LogStream, SubReply};
use kiln_shared::methods::Name;
use kiln_shared::protocol::{ErrorKind, LogNote, RevisionInfo};
use kiln_shared::Violation;

fn render(app: &App, width: u16, height: u16) -> String {
    let mut app = app.clone();
    update(&mut app, Action::Resize { width, height });
    let Ok(mut term) = Terminal::new(TestBackend::new(width, height));
    if let Err(e) = term.draw(|f| super::draw(f, &app)) {
        panic!("draw failed: {e}");
    }
    term.backend().to_string()
}

/// Snapshots `app` at 80x24 and 120x40 under `name`.
fn check(name: &str, app: &App) {
    insta::assert_snapshot!(format!("{name}_80x24"), render(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_120x40"), render(app, 120, 40));
}

fn keys(app: &mut App, keys: &[Key]) {
    for k in keys {
        update(app, Action::Key(*k));
    }
}

fn chars(app: &mut App, s: &str) {
    for c in s.chars() {
        update(app, Action::Key(Key::Char(c)));
    }
}

/// The dashboard in the log of build 3 with `n` lines, some long, one on stderr.
fn log_app(n: u64) -> App {
    let mut app = app();
    keys(&mut app, &[Key::Tab]);
    chars(&mut app, "j");
    keys(&mut app, &[Key::Enter]);
    chars(&mut app, "l");
    let tag = app.log.as_ref().map(|l| l.session).unwrap_or_default();
    reply(&mut app, tag, Reply::BuildLogs(Ok(SubReply { sub: 1 })));
    for seq in 0..n {
        let text = if seq % 7 == 3 {
            format!("Setting up package-{seq} ({seq}.0-1) ... with a line long enough to pass the right edge of an 80 column terminal")
        } else {
            format!("line {seq}")
        };
        let mut line = log_line(seq, &text);
        if seq == 5 {
            line.stream = LogStream::Stderr;
        }
        update(
            &mut app,
            Action::Notification(Note::Log(LogNote { sub: 1, line })),
        );
    }
    app
}

/// The Templates view with the selected template's whole record and revisions loaded.
fn templates_app() -> App {
    let mut a = app();
    // The pane's whole template and revisions, as kilnd answers them for the selection.
    let revision = |revision, day| RevisionInfo {
        revision,
        created_at: Utc
            .with_ymd_and_hms(2026, 11, day, 8, 0, 0)
            .single()
            .unwrap_or_default(),
    };
    a.templates.details = Some(crate::app::templates::TemplateDetails {
        name: "web-base".into(),
        revision: 3,
        tag: 1,
        record: Some(record(&stored_template(), 3)),
        revisions: Some(vec![revision(1, 20), revision(2, 24), revision(3, 26)]),
    });
    a
}

#[test]
fn templates() {
    check("templates", &templates_app());
}

#[test]
fn template_details_window_scrolls_and_closes() {
    let mut a = templates_app();
    chars(&mut a, "d");
    assert_eq!(crate::app::fixtures::template_window(&a), Some(0));
    check("template_details_window", &a);
    update(
        &mut a,
        Action::Resize {
            width: 80,
            height: 24,
        },
    );
    chars(&mut a, "G");
    let bottom = crate::app::fixtures::template_window(&a).unwrap_or_default();
    assert!(bottom > 0, "the whole details do not fit 80x24");
    insta::assert_snapshot!("template_details_window_bottom_80x24", render(&a, 80, 24));
    chars(&mut a, "jjj");
    assert_eq!(
        crate::app::fixtures::template_window(&a),
        Some(bottom),
        "scrolling stops at the last line"
    );
    chars(&mut a, "k");
    assert_eq!(crate::app::fixtures::template_window(&a), Some(bottom - 1));
    chars(&mut a, "q");
    assert_eq!(
        crate::app::fixtures::template_window(&a),
        None,
        "q closes the window, it does not quit"
    );
    assert!(render(&a, 80, 24).contains("details · d opens them whole"));
}

#[test]
fn templates_filtered_with_the_prompt_open() {
    let mut a = app();
    chars(&mut a, "/deb");
    check("templates_filtered", &a);
}

#[test]
fn templates_before_the_first_reply_and_disconnected() {
    let mut a = App::new("web", crate::app::fixtures::at(10, 0, 0), true);
    check("templates_connecting", &a);
    disconnect(&mut a, "cannot connect to kilnd at /run/kiln/kiln.sock");
    check("templates_disconnected", &a);
}

#[test]
fn builds() {
    let mut a = app();
    keys(&mut a, &[Key::Tab]);
    check("builds", &a);
}

#[test]
fn builds_confirm_cancel() {
    let mut a = app();
    keys(&mut a, &[Key::Tab]);
    chars(&mut a, "jx");
    check("builds_confirm_cancel", &a);
}

#[test]
fn build_detail_running_and_failed_and_succeeded() {
    let mut a = app();
    keys(&mut a, &[Key::Tab]);
    chars(&mut a, "j");
    keys(&mut a, &[Key::Enter]);
    check("detail_running", &a);
    keys(&mut a, &[Key::Esc]);
    chars(&mut a, "j");
    keys(&mut a, &[Key::Enter]);
    check("detail_failed", &a);
    keys(&mut a, &[Key::Esc]);
    chars(&mut a, "j");
    keys(&mut a, &[Key::Enter]);
    check("detail_succeeded", &a);
}

#[test]
fn log_following_paused_wrapped_and_searched() {
    let mut a = log_app(60);
    check("log_following", &a);
    chars(&mut a, "kkkkk");
    check("log_paused", &a);
    chars(&mut a, "Gwt");
    check("log_wrapped_timestamps", &a);
    chars(&mut a, "/line 2");
    keys(&mut a, &[Key::Enter]);
    check("log_search", &a);
}

#[test]
fn images() {
    let mut a = app();
    keys(&mut a, &[Key::Tab, Key::Tab]);
    chars(&mut a, "j");
    check("images", &a);
}

#[test]
fn images_private_and_shared_tabs_and_details() {
    let mut a = app();
    keys(&mut a, &[Key::Tab, Key::Tab]);
    chars(&mut a, "2");
    check("images_private", &a);
    chars(&mut a, "3");
    check("images_shared", &a);
    keys(&mut a, &[Key::Enter]);
    check("images_shared_details", &a);
}

#[test]
fn galleries_tab_details_window_and_picker() {
    let mut a = app();
    crate::app::fixtures::with_galleries(&mut a);
    keys(&mut a, &[Key::Tab, Key::Tab]);
    chars(&mut a, "4");
    check("galleries", &a);
    keys(&mut a, &[Key::Enter]);
    check("galleries_window", &a);
    keys(&mut a, &[Key::Esc]);
    chars(&mut a, "jjj");
    check("galleries_offered", &a);
    keys(&mut a, &[Key::Esc, Key::Esc]);
    chars(&mut a, "bnightly");
    keys(&mut a, &[Key::Enter]);
    check("picker_with_galleries", &a);
}

#[test]
fn azure_import_prompt_and_window() {
    let mut a = app();
    chars(&mut a, "iazure.json");
    assert!(render(&a, 80, 24)
        .contains("import an Azure Image Builder template (JSON file): azure.json▏"));
    keys(&mut a, &[Key::Enter]);
    update(
        &mut a,
        Action::FileRead {
            shown: "azure.json".into(),
            text: Ok("{}".into()),
        },
    );
    let tag = a.import.as_ref().map_or(0, |i| i.tag);
    let result = kiln_shared::protocol::TemplateImportAzureResult {
        template: stored_template(),
        warnings: vec![kiln_shared::azure::Warning {
            path: "properties.vmProfile.vnetConfig".into(),
            message: "dropped: builds use kiln's own network".into(),
        }],
        stored: None,
    };
    reply(&mut a, tag, Reply::TemplateImportAzure(Ok(result)));
    check("azure_import_window", &a);
}

/// The dashboard on the Instances tab (box running, broken failed, web-test stopped).
fn instances_app() -> App {
    let mut a = app();
    keys(&mut a, &[Key::Tab, Key::Tab, Key::Tab]);
    a
}

#[test]
fn instances() {
    let mut a = instances_app();
    check("instances", &a);
    chars(&mut a, "j");
    check("instances_failed", &a);
}

#[test]
fn instance_prompts_in_the_message_line() {
    let mut a = instances_app();
    chars(&mut a, "s");
    check("instances_confirm_stop", &a);
    keys(&mut a, &[Key::Esc]);
    chars(&mut a, "cweb-v2");
    assert!(render(&a, 80, 24).contains("image name for a capture of instance box: web-v2▏"));
    keys(&mut a, &[Key::Esc]);
    chars(&mut a, "Dbo");
    assert!(render(&a, 80, 24).contains("delete instance box? type its name: bo▏"));
    let mut a = app();
    keys(&mut a, &[Key::Tab, Key::Tab]);
    chars(&mut a, "rbox");
    assert!(render(&a, 80, 24).contains("name for an instance of debian-12: box▏"));
}

#[test]
fn an_image_captured_from_an_instance_says_so() {
    let mut a = app();
    if let Some(i) = a.images.list.items.iter_mut().find(|i| i.name == "web1") {
        (i.template, i.build, i.template_revision) = (None, None, None);
        i.from_instance = Some("box".into());
        i.parent_image = Some("debian-12".into());
    }
    keys(&mut a, &[Key::Tab, Key::Tab]);
    chars(&mut a, "2");
    assert!(render(&a, 80, 24).contains("captured from instance box (of debian-12)"));
    keys(&mut a, &[Key::Enter]);
    assert!(render(&a, 120, 40).contains("from        captured from instance box (of debian-12)"));
}

#[test]
fn instances_loading_none_and_on_an_older_kilnd() {
    let mut a = instances_app();
    a.instances = Default::default();
    assert!(render(&a, 80, 24).contains("loading instances…"));
    a.instances.list.loaded = true;
    check("instances_none", &a);
    a.instances.unsupported = true;
    assert!(render(&a, 80, 24).contains("kilnd 0.1.0 has no instances: upgrade kilnd"));
    disconnect(&mut a, "gone");
    a.instances.list.loaded = false;
    assert!(render(&a, 80, 24).contains("not connected to kilnd"));
}

/// The tag of the one `method` call in `fx`.
fn tag_of(fx: &[Effect], method: Name) -> u64 {
    fx.iter()
        .find_map(|e| match e {
            Effect::Call { tag, request } if request.method() == method => Some(*tag),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {} call in {fx:?}", method.as_str()))
}

fn focus(a: &mut App, field: Field) {
    for _ in 0..40 {
        if a.form.as_ref().map(|f| f.focused(&a.catalog)) == Some(field) {
            return;
        }
        keys(a, &[Key::Tab]);
    }
    panic!("no field {field:?}");
}

/// A new template with nginx selected and a build timeout out of range, focus on the timeout.
fn new_form_app() -> App {
    let mut a = app();
    chars(&mut a, "nweb");
    focus(&mut a, Field::App(0));
    chars(&mut a, " ");
    focus(&mut a, Field::Timeout);
    keys(&mut a, &[Key::Backspace]);
    chars(&mut a, "3");
    a
}

/// Editing web-base after kilnd refused a save (a violation on a customize step) and after a
/// conflict with revision 4.
fn edit_form_app() -> App {
    let mut a = app();
    let tag = tag_of(
        &update(&mut a, Action::Key(Key::Char('e'))),
        Name::TemplateGet,
    );
    let r = record(&stored_template(), 3);
    reply(&mut a, tag, Reply::TemplateGet(Ok(r)));
    focus(&mut a, Field::Description);
    chars(&mut a, ", jq");
    let fx = update(&mut a, Action::Key(Key::Ctrl('s')));
    let invalid = refused(
        ErrorKind::InvalidTemplate,
        "template \"web-base\" is invalid: 1 problem",
        vec![Violation {
            path: "customize[0].inline".into(),
            message: "is empty: list at least one command, or use script instead".into(),
        }],
    );
    let tag = tag_of(&fx, Name::TemplateUpdate);
    reply(&mut a, tag, Reply::TemplateUpdate(Err(invalid)));
    let fx = update(&mut a, Action::Key(Key::Ctrl('s')));
    let conflict = refused(ErrorKind::Conflict, "stale", Vec::new());
    let tag = tag_of(&fx, Name::TemplateUpdate);
    let fx = reply(&mut a, tag, Reply::TemplateUpdate(Err(conflict)));
    let r = record(&stored_template(), 4);
    reply(
        &mut a,
        tag_of(&fx, Name::TemplateGet),
        Reply::TemplateGet(Ok(r)),
    );
    a
}

#[test]
fn form_new_with_an_error_beside_its_field() {
    check("form_new", &new_form_app());
}

#[test]
fn form_edit_with_kilnds_violation_and_a_conflict() {
    check("form_edit_conflict", &edit_form_app());
}

#[test]
fn form_asks_before_discarding() {
    let mut a = new_form_app();
    keys(&mut a, &[Key::Esc]);
    check("form_confirm_discard", &a);
}

#[test]
fn base_image_picker_for_a_build_and_for_the_source() {
    let mut a = app();
    chars(&mut a, "bweb-2");
    keys(&mut a, &[Key::Enter]);
    check("picker_build", &a);
    let mut a = new_form_app();
    focus(&mut a, Field::Source);
    keys(&mut a, &[Key::Enter]);
    check("picker_source", &a);
}

#[test]
fn help() {
    let mut a = app();
    chars(&mut a, "?");
    check("help", &a);
    // Scrolled to its end: the Images, Instances, Build detail and Log keys.
    chars(&mut a, &"j".repeat(80));
    check("help_end", &a);
}

#[test]
fn no_color_leaves_every_cell_in_the_terminal_colors() {
    let mut states = vec![
        app(),
        log_app(20),
        new_form_app(),
        edit_form_app(),
        instances_app(),
    ];
    let mut picker = app();
    chars(&mut picker, "bx");
    keys(&mut picker, &[Key::Enter]);
    states.push(picker);
    let mut details = app();
    keys(&mut details, &[Key::Tab, Key::Tab, Key::Enter]);
    states.push(details);
    let mut builds = app();
    keys(&mut builds, &[Key::Tab]);
    chars(&mut builds, "jx");
    states.push(builds);
    let mut disconnected = app();
    disconnect(&mut disconnected, "gone");
    states.push(disconnected);
    for mut a in states {
        a.color = false;
        let Ok(mut term) = Terminal::new(TestBackend::new(120, 40));
        if let Err(e) = term.draw(|f| super::draw(f, &a)) {
            panic!("draw failed: {e}");
        }
        for cell in term.backend().buffer().content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{cell:?}");
        }
    }
}

#[test]
fn no_color_draws_the_same_text() {
    let mut a = app();
    a.color = false;
    assert_eq!(render(&a, 80, 24), render(&app(), 80, 24));
}

#[test]
fn no_size_makes_any_view_panic() {
    let mut details = templates_app();
    chars(&mut details, "dG");
    let mut states = vec![app(), log_app(200), details];
    let mut a = app();
    keys(&mut a, &[Key::Tab]);
    states.push(a.clone());
    let mut images = a.clone();
    keys(&mut images, &[Key::Tab]);
    states.push(images);
    keys(&mut a, &[Key::Enter]);
    states.push(a.clone());
    chars(&mut a, "?");
    states.push(a);
    let mut wrapped = log_app(50);
    chars(&mut wrapped, "w");
    states.push(wrapped);
    let mut prompt = app();
    chars(&mut prompt, "bsome-image-name");
    states.push(prompt.clone());
    keys(&mut prompt, &[Key::Enter]);
    states.push(prompt);
    let mut form = new_form_app();
    states.push(form.clone());
    focus(&mut form, Field::Source);
    keys(&mut form, &[Key::Enter]);
    states.push(form);
    states.push(edit_form_app());
    let mut tabs = app();
    keys(&mut tabs, &[Key::Tab, Key::Tab]);
    chars(&mut tabs, "3");
    states.push(tabs.clone());
    keys(&mut tabs, &[Key::Enter]);
    states.push(tabs);
    let mut instances = instances_app();
    states.push(instances.clone());
    chars(&mut instances, "j");
    states.push(instances.clone());
    let mut capture = instances.clone();
    chars(&mut capture, "ca-long-image-name-for-a-capture");
    states.push(capture);
    instances.instances = Default::default();
    states.push(instances);
    for s in &states {
        for w in (1..=20).chain((24..=130).step_by(7)).chain([80, 120]) {
            for h in (1..=12).chain((14..=45).step_by(4)).chain([24, 40]) {
                render(s, w, h);
            }
        }
    }
}

#[test]
fn odd_values_from_the_daemon_draw_without_panicking() {
    let mut a = log_app(3);
    if let Some(b) = a.builds.list.items.iter_mut().find(|b| b.id == 3) {
        b.step = Some(usize::MAX);
        b.started_at = Some(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        b.message = "tab\there, bell\u{7}, escape \u{1b}[2J".into();
    }
    let line = log_line(u64::MAX, "last \u{1b}[31mred");
    update(
        &mut a,
        Action::Notification(Note::Log(LogNote { sub: 1, line })),
    );
    for view in [Key::Esc, Key::Esc] {
        render(&a, 80, 24);
        render(&a, 7, 3);
        keys(&mut a, &[view]);
    }
}

#[test]
#[ignore = "a measurement, not a check: cargo test --release -p kiln-tui render_cost -- --ignored --nocapture"]
fn render_cost_of_a_full_log_with_ten_thousand_builds() {
    let mut a = app();
    let b = a.builds.list.items[0].clone();
    for i in 0..10_000u64 {
        let mut x = b.clone();
        x.id = 100 + i;
        a.builds.list.items.push(x);
    }
    a.builds.recount();
    a.log = Some(crate::app::log::LogView::new(4, false, 0));
    a.view = crate::app::View::Log;
    if let Some(l) = a.log.as_mut() {
        for seq in 0..12_000 {
            l.push(crate::app::fixtures::log_line(
                seq,
                "chatty 1.0001 the quick brown fox jumps over the lazy dog",
            ));
        }
    }
    update(
        &mut a,
        Action::Resize {
            width: 120,
            height: 40,
        },
    );
    let Ok(mut term) = Terminal::new(TestBackend::new(120, 40));
    let mut times = Vec::new();
    for i in 0..2000u64 {
        if let Some(l) = a.log.as_mut() {
            l.push(crate::app::fixtures::log_line(12_000 + i, "more"));
        }
        let t = std::time::Instant::now();
        let _ = term.draw(|f| super::draw(f, &a));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "render+diff p50 {:?} p99 {:?} max {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
}
