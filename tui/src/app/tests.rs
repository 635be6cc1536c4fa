//! `update` tests: feed actions to an `App`, check the state and the effects. No terminal.

use super::fixtures::{app, connect, disconnect, key, log_line, press, reply, tick};
use super::keymap::Key;
use super::*;
use kiln_shared::build::{Build, BuildIdParams, BuildList, BuildLogsParams, BuildState, SubReply};
use kiln_shared::protocol::{Event, EventKind};
use kiln_shared::protocol::{
    InstanceList, LogNote, NameParams, RevisionInfo, RevisionList, TemplateList,
};

/// The methods `fx` calls, in order.
fn methods(fx: &[Effect]) -> Vec<Name> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call { request, .. } => Some(request.method()),
            _ => None,
        })
        .collect()
}

/// The `build.logs` call `fx` starts with: its tag and params.
fn logs_call(fx: &[Effect]) -> (u64, BuildLogsParams) {
    match fx.first() {
        Some(Effect::Call {
            tag,
            request: Request::BuildLogs(p),
        }) => (*tag, p.clone()),
        _ => panic!("expected a build.logs call, got {fx:?}"),
    }
}

/// Opens the log of the selected build (in the Builds view); returns the `build.logs` call's tag.
fn press_l(app: &mut App) -> u64 {
    logs_call(&press(app, "l")).0
}

/// kilnd's answer to the `build.logs` call tagged `tag`: subscription `sub`.
fn logs_reply(app: &mut App, tag: u64, sub: u64) -> Vec<Effect> {
    reply(app, tag, Reply::BuildLogs(Ok(SubReply { sub })))
}

/// Opens the log of the selected build and answers `build.logs` with subscription 9.
fn open_log(app: &mut App) {
    let fx = key(app, Key::Tab);
    assert!(fx.is_empty());
    let tag = press_l(app);
    logs_reply(app, tag, 9);
}

/// kilnd answers the `template.list`, `build.list` and `instance.list` calls with the lists
/// `app` holds.
fn relist(app: &mut App) {
    let templates = app.templates.list.items.clone();
    reply(app, 0, Reply::TemplateList(Ok(TemplateList { templates })));
    let builds = app.builds.list.items.clone();
    reply(app, 0, Reply::BuildList(Ok(BuildList { builds })));
    let instances = app.instances.list.items.clone();
    reply(app, 0, Reply::InstanceList(Ok(InstanceList { instances })));
}

/// The text of the lines the log view holds.
fn shown_lines(app: &App) -> Vec<String> {
    app.log
        .iter()
        .flat_map(|l| l.lines.iter().map(|x| x.line.clone()))
        .collect()
}

/// Line `seq` of log stream `sub`, saying `text`.
fn note(app: &mut App, sub: u64, seq: u64, text: &str) {
    let line = log_line(seq, text);
    update(app, Action::Notification(Note::Log(LogNote { sub, line })));
}

#[test]
fn connecting_asks_for_every_list_and_polling_never_piles_up() {
    let mut app = App::new("default", fixtures::at(10, 0, 0), true);
    let fx = tick(&mut app, fixtures::at(10, 0, 1));
    assert!(fx.is_empty(), "no calls while not connected");
    let fx = connect(&mut app);
    assert_eq!(
        methods(&fx),
        [
            Name::EventsSubscribe,
            Name::TemplateList,
            Name::BuildList,
            Name::InstanceList,
            Name::ImageList,
            Name::ImageList,
            Name::GalleryList
        ]
    );
    assert_ne!(
        app.images.pending_tag, 0,
        "the second lists the pending shares"
    );
    let fx = tick(&mut app, fixtures::at(10, 0, 2));
    assert!(fx.is_empty(), "lists still in flight");
    // (No events subscription answered: an older kilnd, so the lists are polled.)
    let none = BuildList { builds: Vec::new() };
    reply(&mut app, 0, Reply::BuildList(Ok(none)));
    let fx = tick(&mut app, fixtures::at(10, 0, 3));
    assert_eq!(methods(&fx), [Name::BuildList]);
}

#[test]
fn tab_cycles_through_the_views_that_exist() {
    let mut app = app();
    let mut seen = Vec::new();
    for _ in 0..5 {
        key(&mut app, Key::Tab);
        seen.push(app.view);
    }
    assert_eq!(
        seen,
        [
            View::Builds,
            View::Images,
            View::Instances,
            View::Templates,
            View::Builds
        ]
    );
    key(&mut app, Key::Enter);
    key(&mut app, Key::BackTab);
    assert_eq!(
        app.view,
        View::Instances,
        "the detail joins the cycle once opened"
    );
}

#[test]
fn images_are_polled_only_while_on_screen() {
    let mut app = app();
    let fx = tick(&mut app, fixtures::at(10, 2, 1));
    assert_eq!(
        methods(&fx),
        [Name::TemplateList, Name::BuildList, Name::InstanceList]
    );
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    relist(&mut app);
    let fx = tick(&mut app, fixtures::at(10, 2, 2));
    assert_eq!(
        methods(&fx),
        [
            Name::TemplateList,
            Name::BuildList,
            Name::InstanceList,
            Name::ImageList,
            Name::ImageList
        ]
    );
}

#[test]
fn a_disconnect_is_shown_and_a_reconnect_refreshes() {
    let mut app = app();
    disconnect(&mut app, "kilnd closed the connection");
    assert!(!app.is_connected());
    assert!(tick(&mut app, fixtures::at(10, 3, 0)).is_empty());
    let fx = connect(&mut app);
    assert_eq!(
        methods(&fx),
        [
            Name::EventsSubscribe,
            Name::TemplateList,
            Name::BuildList,
            Name::InstanceList
        ]
    );
}

#[test]
fn moving_stays_inside_the_list() {
    let mut app = app();
    press(&mut app, "kkk");
    assert_eq!(app.templates.list.sel, 0);
    press(&mut app, "jjjjj");
    assert_eq!(app.templates.list.sel, 2);
    press(&mut app, "g");
    assert_eq!(app.templates.list.sel, 0);
    press(&mut app, "G");
    assert_eq!(
        app.templates.selected().map(|t| t.name.as_str()),
        Some("java-app")
    );
}

#[test]
fn the_filter_narrows_templates_as_it_is_typed_and_esc_clears_it() {
    let mut app = app();
    press(&mut app, "/redis");
    assert_eq!(app.prompt, Some(Prompt::Filter));
    let names: Vec<_> = app
        .templates
        .visible()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["db"]);
    key(&mut app, Key::Enter);
    assert_eq!(app.prompt, None);
    assert_eq!(app.templates.visible().len(), 1);
    key(&mut app, Key::Esc);
    assert_eq!(app.templates.visible().len(), 3);
}

#[test]
fn a_selection_survives_a_refresh_that_reorders_the_list() {
    let mut app = app();
    press(&mut app, "j");
    assert_eq!(
        app.templates.selected().map(|t| t.name.as_str()),
        Some("db")
    );
    let templates = vec![
        fixtures::template("db", "debian-12", &[], 1),
        fixtures::template("aaa", "debian-12", &[], 1),
    ];
    reply(
        &mut app,
        0,
        Reply::TemplateList(Ok(TemplateList { templates })),
    );
    assert_eq!(
        app.templates.selected().map(|t| t.name.as_str()),
        Some("db")
    );
}

#[test]
fn enter_on_a_template_shows_its_builds_and_esc_goes_back() {
    let mut app = app();
    key(&mut app, Key::Enter);
    assert_eq!(app.view, View::Builds);
    let ids: Vec<_> = app.builds.visible().iter().map(|b| b.id).collect();
    assert_eq!(ids, [3, 1], "newest first, web-base only");
    key(&mut app, Key::Esc);
    assert_eq!(app.builds.visible().len(), 4);
    key(&mut app, Key::Esc);
    assert_eq!(app.view, View::Templates);
}

#[test]
fn a_build_asks_for_an_image_name_first() {
    let mut app = app();
    press(&mut app, "b");
    key(&mut app, Key::Enter);
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("needs a name")));
    assert!(app.picker().is_none());
    press(&mut app, "bweb1");
    key(&mut app, Key::Enter);
    assert!(app.picker().is_some(), "then the base image");
}

#[test]
fn cancel_asks_first_and_only_y_confirms() {
    let mut app = app();
    key(&mut app, Key::Tab);
    assert_eq!(app.builds.selected().map(|b| b.id), Some(4));
    assert!(press(&mut app, "x").is_empty());
    assert_eq!(app.prompt, Some(Prompt::ConfirmCancel { id: 4 }));
    assert!(key(&mut app, Key::Enter).is_empty(), "enter means no");
    assert_eq!(app.prompt, None);
    press(&mut app, "x");
    assert!(press(&mut app, "n").is_empty());
    press(&mut app, "x");
    let fx = press(&mut app, "y");
    assert_eq!(
        fx,
        [Effect::Call {
            tag: 0,
            request: Request::BuildCancel(BuildIdParams { id: 4 })
        }]
    );
}

#[test]
fn an_ended_build_is_not_offered_for_cancel() {
    let mut app = app();
    key(&mut app, Key::Tab);
    press(&mut app, "G");
    assert_eq!(app.builds.selected().map(|b| b.id), Some(1));
    press(&mut app, "x");
    assert_eq!(app.prompt, None);
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("already ended")));
}

#[test]
fn enter_opens_the_detail_and_l_the_log() {
    let mut app = app();
    key(&mut app, Key::Tab);
    press(&mut app, "j");
    key(&mut app, Key::Enter);
    assert_eq!((app.view, app.detail.build), (View::Detail, Some(3)));
    let fx = press(&mut app, "l");
    assert_eq!(methods(&fx), [Name::BuildLogs]);
    assert_eq!(app.view, View::Log);
    key(&mut app, Key::Esc);
    assert_eq!(app.view, View::Detail);
}

#[test]
fn the_log_follows_pauses_on_scroll_up_and_resumes_with_g() {
    let mut app = app();
    update(
        &mut app,
        Action::Resize {
            width: 80,
            height: 24,
        },
    );
    open_log(&mut app);
    for seq in 0..100 {
        note(&mut app, 9, seq, &format!("line {seq}"));
    }
    note(&mut app, 8, 100, "another subscription");
    let log = app.log.as_ref().map(|l| (l.lines.len(), l.follow));
    assert_eq!(log, Some((100, true)));
    press(&mut app, "k");
    assert!(app.log.as_ref().is_some_and(|l| !l.follow));
    note(&mut app, 9, 100, "more");
    let page = app.log_page();
    assert_eq!(
        app.log.as_ref().map(|l| l.shown_top(page)),
        Some(100 - page - 1)
    );
    press(&mut app, "G");
    assert!(app.log.as_ref().is_some_and(|l| l.follow));
}

#[test]
fn log_lines_that_beat_the_subscription_reply_are_kept() {
    let mut app = app();
    key(&mut app, Key::Tab);
    let tag = press_l(&mut app);
    note(&mut app, 9, 0, "early");
    note(&mut app, 5, 0, "someone else's");
    logs_reply(&mut app, tag, 9);
    assert_eq!(shown_lines(&app), ["early"]);
}

#[test]
fn a_late_reply_for_a_replaced_stream_keeps_the_early_lines_of_the_new_one() {
    let mut app = app();
    key(&mut app, Key::Tab);
    let old = press_l(&mut app);
    // The serial console before the build log's stream was even named.
    let (new, _) = logs_call(&press(&mut app, "s"));
    note(&mut app, 7, 0, "serial early");
    let fx = logs_reply(&mut app, old, 5);
    assert_eq!(methods(&fx), [Name::BuildLogsUnsubscribe]);
    logs_reply(&mut app, new, 7);
    assert_eq!(shown_lines(&app), ["serial early"]);
}

#[test]
fn a_reconnect_resumes_the_log_after_the_last_line_seen() {
    let mut app = app();
    open_log(&mut app);
    note(&mut app, 9, 0, "a");
    note(&mut app, 9, 1, "b");
    disconnect(&mut app, "gone");
    let fx = connect(&mut app);
    let logs: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Call {
                request: Request::BuildLogs(p),
                ..
            } => Some((p.id, p.follow, p.serial, p.from_line)),
            _ => None,
        })
        .collect();
    assert_eq!(logs, [(4, true, false, Some(2))]);
}

#[test]
fn log_toggles_and_search() {
    let mut app = app();
    open_log(&mut app);
    for (seq, text) in ["boot", "Error: one", "ok", "error: two", "done"]
        .iter()
        .enumerate()
    {
        note(&mut app, 9, seq as u64, text);
    }
    press(&mut app, "wt");
    assert!(app.log.as_ref().is_some_and(|l| l.wrap && l.timestamps));
    press(&mut app, "/error");
    key(&mut app, Key::Enter);
    assert_eq!(app.log.as_ref().and_then(|l| l.found), Some(3));
    press(&mut app, "N");
    assert_eq!(app.log.as_ref().and_then(|l| l.found), Some(1));
    press(&mut app, "N");
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("no more")));
    press(&mut app, "n");
    assert_eq!(app.log.as_ref().and_then(|l| l.found), Some(3));
}

#[test]
fn s_switches_to_the_serial_console_with_a_fresh_buffer() {
    let mut app = app();
    open_log(&mut app);
    note(&mut app, 9, 0, "a");
    let fx = press(&mut app, "s");
    let Some(Effect::Call {
        request: Request::BuildLogs(p),
        ..
    }) = fx.last()
    else {
        panic!("expected a build.logs call last, got {fx:?}");
    };
    assert_eq!((p.serial, p.from_line), (true, Some(0)));
    assert!(app
        .log
        .as_ref()
        .is_some_and(|l| l.serial && l.lines.is_empty()));
}

#[test]
fn help_opens_scrolls_and_closes_and_q_then_quits() {
    let mut app = app();
    press(&mut app, "?");
    assert_eq!(fixtures::help_scroll(&app), Some(0));
    press(&mut app, "jj");
    assert_eq!(fixtures::help_scroll(&app), Some(2));
    assert!(press(&mut app, "q").is_empty(), "q closes the help first");
    assert_eq!(fixtures::help_scroll(&app), None);
    assert_eq!(press(&mut app, "q"), [Effect::Quit]);
}

#[test]
fn ctrl_c_quits_even_inside_a_prompt() {
    let mut app = app();
    press(&mut app, "b");
    assert_eq!(key(&mut app, Key::Ctrl('c')), [Effect::Quit]);
}

#[test]
fn errors_from_kilnd_land_in_the_message_line() {
    let mut app = app();
    let refused = CallError::from("not_found: no build 12");
    reply(&mut app, 0, Reply::BuildCancel(Err(refused)));
    assert_eq!(
        app.message.as_deref(),
        Some("build.cancel: not_found: no build 12")
    );
}

#[test]
fn delete_needs_the_name_typed_exactly() {
    let mut app = app();
    press(&mut app, "jD");
    assert!(matches!(app.prompt, Some(Prompt::ConfirmDelete { .. })));
    press(&mut app, "d");
    assert!(key(&mut app, Key::Enter).is_empty());
    assert_eq!(app.message.as_deref(), Some("template db not deleted"));
    press(&mut app, "Ddx");
    key(&mut app, Key::Backspace);
    press(&mut app, "b");
    assert_eq!(
        key(&mut app, Key::Enter),
        [Effect::Call {
            tag: 0,
            request: Request::TemplateDelete(NameParams { name: "db".into() }),
        }]
    );
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    let mut fx = press(&mut app, "Ddebian-12");
    fx.extend(key(&mut app, Key::Enter));
    assert_eq!(methods(&fx), [Name::ImageDelete]);
}

/// The `build.logs.unsubscribe` calls among `fx`, by subscription.
fn unsubscribed(fx: &[Effect]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call {
                request: Request::BuildLogsUnsubscribe(s),
                ..
            } => Some(s.sub),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replaced_log_stream_is_unsubscribed() {
    let mut app = app();
    open_log(&mut app);
    // Switching to the serial console replaces subscription 9.
    let fx = press(&mut app, "s");
    assert_eq!(unsubscribed(&fx), [9]);
    assert_eq!(methods(&fx), [Name::BuildLogsUnsubscribe, Name::BuildLogs]);
    // A reply for a stream nobody shows any more is unsubscribed at once.
    let stale = logs_reply(&mut app, 1_000_000, 12);
    assert_eq!(unsubscribed(&stale), [12]);
    // An unsubscribe that finds the stream ended already is no news.
    app.message = None;
    let ended = CallError::from("no open log stream 9");
    reply(&mut app, 0, Reply::BuildLogsUnsubscribe(Err(ended)));
    assert_eq!(app.message, None);
}

/// Answers the `events.subscribe` call with subscription 3; returns the effects.
fn subscribed(app: &mut App) -> Vec<Effect> {
    reply(app, 0, Reply::EventsSubscribe(Ok(SubReply { sub: 3 })))
}

/// An event of subscription `sub`.
fn event(app: &mut App, sub: u64, kind: EventKind) -> Vec<Effect> {
    update(app, Action::Notification(Note::Event(Event { sub, kind })))
}

fn build_changed(build: &Build) -> EventKind {
    EventKind::Build {
        build: Box::new(build.clone()),
    }
}

#[test]
fn events_keep_the_lists_current_without_polling() {
    let mut app = app();
    // Subscribed: listed once more, then ticks poll nothing.
    let fx = subscribed(&mut app);
    assert_eq!(
        methods(&fx),
        [Name::TemplateList, Name::BuildList, Name::InstanceList]
    );
    relist(&mut app);
    let fx = tick(&mut app, fixtures::at(10, 0, 5));
    assert!(methods(&fx).is_empty(), "{fx:?}");

    // A new build goes on top; the selected build stays selected.
    key(&mut app, Key::Tab);
    press(&mut app, "j");
    let selected = app.builds.selected().map(|b| b.id);
    let mut build = app.builds.list.items[0].clone();
    build.id = 99;
    build.state = BuildState::Queued;
    event(&mut app, 3, build_changed(&build));
    assert_eq!(app.builds.list.items[0].id, 99);
    assert_eq!(app.builds.selected().map(|b| b.id), selected);
    // A change replaces the build in place.
    build.state = BuildState::Running;
    event(&mut app, 3, build_changed(&build));
    assert_eq!(
        app.builds.list.items.iter().filter(|b| b.id == 99).count(),
        1
    );
    assert_eq!(app.builds.list.items[0].state, BuildState::Running);
    // Another subscription's event is ignored.
    build.state = BuildState::Failed;
    event(&mut app, 4, build_changed(&build));
    assert_eq!(app.builds.list.items[0].state, BuildState::Running);

    // Templates: a deleted one leaves the list, a new one joins it in name order.
    let gone = app.templates.list.items[0].name.clone();
    let deleted = EventKind::Template {
        name: gone.clone(),
        template: None,
    };
    event(&mut app, 3, deleted);
    assert!(app.templates.list.items.iter().all(|t| t.name != gone));
    let mut t = app.templates.list.items[0].clone();
    t.name = "aaa-new".into();
    let created = EventKind::Template {
        name: t.name.clone(),
        template: Some(t),
    };
    event(&mut app, 3, created);
    assert_eq!(app.templates.list.items[0].name, "aaa-new");

    // Lost events: everything is listed again.
    let fx = event(&mut app, 3, EventKind::Resync);
    assert_eq!(
        methods(&fx),
        [Name::TemplateList, Name::BuildList, Name::InstanceList]
    );
}

#[test]
fn the_selected_template_s_details_are_fetched_once_per_revision() {
    let mut app = app();
    let fx = press(&mut app, "j");
    assert_eq!(methods(&fx), [Name::TemplateGet, Name::TemplateRevisions]);
    let Some(Effect::Call { tag, .. }) = fx.first().cloned() else {
        panic!("no call");
    };
    let name = app.templates.selected().map(|t| t.name.clone());
    let t = fixtures::stored_template();
    reply(
        &mut app,
        tag,
        Reply::TemplateGet(Ok(fixtures::record(&t, 1))),
    );
    let revisions = vec![RevisionInfo {
        revision: 1,
        created_at: fixtures::at(8, 0, 0),
    }];
    reply(
        &mut app,
        tag,
        Reply::TemplateRevisions(Ok(RevisionList { revisions })),
    );
    let d = app.templates.details.as_ref().expect("details");
    assert_eq!(Some(d.name.clone()), name);
    assert!(d.record.is_some() && d.revisions.as_ref().is_some_and(|r| r.len() == 1));
    // Nothing more while the same revision stays selected.
    let fx = tick(&mut app, fixtures::at(10, 0, 9));
    assert!(!methods(&fx).contains(&Name::TemplateGet), "{fx:?}");
}

#[test]
fn a_attaches_to_the_vm_a_failed_build_kept() {
    let mut app = app();
    key(&mut app, Key::Tab);
    press(&mut app, "jj");
    assert_eq!(app.builds.selected().map(|b| b.id), Some(2));
    assert!(press(&mut app, "a").is_empty());
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("build 2 has no VM to attach to")));
    let command = "ssh -i /var/lib/kiln/builds/2/key -p 40111 debian@127.0.0.1".to_string();
    if let Some(b) = app.builds.list.items.iter_mut().find(|b| b.id == 2) {
        b.attach_command = Some(command.clone());
    }
    let kept = Effect::Attach(attach::Attach::Build { id: 2, command });
    assert_eq!(press(&mut app, "a"), std::slice::from_ref(&kept));
    // The same from the build's details.
    key(&mut app, Key::Enter);
    assert_eq!(app.view, View::Detail);
    assert_eq!(press(&mut app, "a"), [kept]);
}
