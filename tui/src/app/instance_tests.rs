//! `update` tests of the Instances view: its list and events, its keys and kilnd's answers.

use super::fixtures::{app, connect, instance, key, press, reply, tick};
use super::keymap::Key;
use super::*;
use kiln_shared::build::SubReply;
use kiln_shared::protocol::{Instance, InstanceList, InstanceState};

/// The methods `fx` calls, in order.
fn methods(fx: &[Effect]) -> Vec<Name> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call { request, .. } => Some(request.method()),
            _ => None,
        })
        .collect()
}

/// The dashboard on the Instances tab (box, broken, web-test; box selected).
fn on_instances() -> App {
    let mut app = app();
    for _ in 0..3 {
        key(&mut app, Key::Tab);
    }
    assert_eq!(app.view, View::Instances);
    app
}

/// The names of the listed instances, in order.
fn names(app: &App) -> Vec<&str> {
    app.instances
        .list
        .items
        .iter()
        .map(|i| i.name.as_str())
        .collect()
}

fn selected(app: &App) -> Option<&str> {
    app.instances.selected().map(|i| i.name.as_str())
}

/// An `instance` event of subscription 3: `name` is now `instance`.
fn changed(app: &mut App, name: &str, instance: Option<Instance>) -> Vec<Effect> {
    let kind = EventKind::Instance {
        name: name.into(),
        instance: instance.map(Box::new),
    };
    update(
        app,
        Action::Notification(Note::Event(Event { sub: 3, kind })),
    )
}

#[test]
fn instance_events_keep_the_list_current_and_the_selection_where_it_was() {
    let mut app = on_instances();
    reply(&mut app, 0, Reply::EventsSubscribe(Ok(SubReply { sub: 3 })));
    let instances = app.instances.list.items.clone();
    reply(
        &mut app,
        0,
        Reply::InstanceList(Ok(InstanceList { instances })),
    );
    press(&mut app, "j");
    assert_eq!(selected(&app), Some("broken"));
    let fx = tick(&mut app, fixtures::at(10, 2, 5));
    assert!(methods(&fx).is_empty(), "events flow: nothing polled");

    changed(
        &mut app,
        "alpha",
        Some(instance("alpha", InstanceState::Starting)),
    );
    assert_eq!(names(&app), ["alpha", "box", "broken", "web-test"]);
    assert_eq!(
        selected(&app),
        Some("broken"),
        "the same instance stays selected"
    );
    changed(
        &mut app,
        "alpha",
        Some(instance("alpha", InstanceState::Running)),
    );
    assert_eq!(app.instances.list.items.len(), 4, "replaced in place");
    assert_eq!(app.instances.list.items[0].state, InstanceState::Running);
    changed(&mut app, "broken", None);
    assert_eq!(names(&app), ["alpha", "box", "web-test"]);
    assert_eq!(
        selected(&app),
        Some("web-test"),
        "the row below, once deleted"
    );

    // Another subscription's event changes nothing; lost events list everything again.
    let kind = EventKind::Instance {
        name: "box".into(),
        instance: None,
    };
    update(
        &mut app,
        Action::Notification(Note::Event(Event { sub: 4, kind })),
    );
    assert_eq!(names(&app), ["alpha", "box", "web-test"]);
    let fx = update(
        &mut app,
        Action::Notification(Note::Event(Event {
            sub: 3,
            kind: EventKind::Resync,
        })),
    );
    assert!(methods(&fx).contains(&Name::InstanceList), "{fx:?}");
}

#[test]
fn without_events_the_instances_are_polled_like_the_other_lists() {
    let mut app = app();
    let fx = tick(&mut app, fixtures::at(10, 2, 1));
    assert!(methods(&fx).contains(&Name::InstanceList), "{fx:?}");
    let fx = tick(&mut app, fixtures::at(10, 2, 2));
    assert!(!methods(&fx).contains(&Name::InstanceList), "one in flight");
}

#[test]
fn an_older_kilnd_without_instances_is_not_asked_again_and_says_so() {
    let mut app = app();
    tick(&mut app, fixtures::at(10, 2, 1));
    let missing = fixtures::refused(
        kiln_shared::protocol::ErrorKind::MethodNotFound,
        "unknown method instance.list",
        Vec::new(),
    );
    reply(&mut app, 0, Reply::InstanceList(Err(missing)));
    assert!(app.instances.unsupported);
    assert_eq!(app.message, None, "no error every second");
    let fx = tick(&mut app, fixtures::at(10, 2, 2));
    assert!(!methods(&fx).contains(&Name::InstanceList), "{fx:?}");
    // A new connection may be to a newer kilnd.
    let fx = connect(&mut app);
    assert!(!app.instances.unsupported);
    assert!(methods(&fx).contains(&Name::InstanceList), "{fx:?}");
    // Any other refusal is news.
    reply(
        &mut app,
        0,
        Reply::InstanceList(Err(CallError::from("internal: the store is gone"))),
    );
    assert_eq!(
        app.message.as_deref(),
        Some("instance.list: internal: the store is gone")
    );
}

#[test]
fn moving_in_the_instances_and_esc_back_to_templates() {
    let mut app = on_instances();
    press(&mut app, "G");
    assert_eq!(selected(&app), Some("web-test"));
    press(&mut app, "jk");
    assert_eq!(selected(&app), Some("broken"));
    key(&mut app, Key::Esc);
    assert_eq!(app.view, View::Templates);
}
