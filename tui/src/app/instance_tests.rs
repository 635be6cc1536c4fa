//! `update` tests of the Instances view: its list and events, its keys and kilnd's answers.

use super::attach::Attach;
use super::fixtures::{app, connect, instance, key, press, reply, tick};
use super::instances::{NewInstance, Power};
use super::keymap::Key;
use super::*;
use kiln_shared::build::SubReply;
use kiln_shared::protocol::{Event, EventKind};
use kiln_shared::protocol::{
    ImageFromInstanceParams, ImageProgress, ImageResult, Instance, InstanceList, InstanceParams,
    InstanceReply, InstanceRunParams, InstanceState,
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
        ErrorKind::MethodNotFound,
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

/// The one call among `fx`.
fn the_call(fx: &[Effect]) -> Request {
    match fx {
        [Effect::Call { tag: 0, request }] => request.clone(),
        _ => panic!("expected one call, got {fx:?}"),
    }
}

fn named(name: &str, force: bool) -> InstanceParams {
    InstanceParams {
        name: name.into(),
        force,
    }
}

#[test]
fn r_asks_the_name_then_the_shell_reads_the_key_and_kilnd_runs_it() {
    let mut app = app();
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    assert_eq!(app.view, View::Images);
    press(&mut app, "r");
    assert!(matches!(
        &app.prompt,
        Some(Prompt::InstanceName { image, .. }) if image == "img-debian-12"
    ));
    assert!(key(&mut app, Key::Enter).is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("no instance started: it needs a name")
    );
    press(&mut app, "ra/b");
    assert!(key(&mut app, Key::Enter).is_empty());
    assert!(
        app.message.as_deref().is_some_and(|m| m.contains("'/'")),
        "{:?}",
        app.message
    );
    press(&mut app, "rbox3x");
    key(&mut app, Key::Backspace);
    let run = NewInstance {
        image: "img-debian-12".into(),
        image_name: "debian-12".into(),
        name: "box3".into(),
    };
    assert_eq!(
        key(&mut app, Key::Enter),
        [Effect::ReadPublicKey(run.clone())]
    );

    // No key: said how to make one, nothing sent.
    let missing = KeyError::Missing {
        tried: [
            "/home/me/.ssh/id_ed25519.pub".into(),
            "/home/me/.ssh/id_rsa.pub".into(),
        ],
    };
    let fx = update(
        &mut app,
        Action::PublicKey {
            run: run.clone(),
            key: Err(missing),
        },
    );
    assert!(fx.is_empty());
    assert!(
        app.message.as_deref().is_some_and(|m| m
            .starts_with("instance box3 not started: no ~/.ssh/id_ed25519.pub")
            && m.contains("ssh-keygen -t ed25519")),
        "{:?}",
        app.message
    );

    // A key: instance.run with it; the answer shows the new instance.
    let key_line = "ssh-ed25519 AAAAC3Nza me@host".to_string();
    let fx = update(
        &mut app,
        Action::PublicKey {
            run,
            key: Ok(key_line.clone()),
        },
    );
    let expected = InstanceRunParams {
        image: "img-debian-12".into(),
        name: "box3".into(),
        cpus: None,
        memory_mb: None,
        disk_gb: None,
        ssh_public_key: key_line,
    };
    assert_eq!(the_call(&fx), Request::InstanceRun(expected));
    let started = instance("box3", InstanceState::Starting);
    reply(
        &mut app,
        0,
        Reply::InstanceRun(Ok(InstanceReply { instance: started })),
    );
    assert_eq!(app.view, View::Instances);
    assert_eq!(selected(&app), Some("box3"));
    assert_eq!(
        app.message.as_deref(),
        Some("instance box3 of debian-12 is starting; ssh port 40123")
    );
    // A refusal is shown as kilnd said it.
    let limit = fixtures::refused(
        ErrorKind::Conflict,
        "project default has 4 instances",
        vec![],
    );
    reply(&mut app, 0, Reply::InstanceRun(Err(limit)));
    assert_eq!(
        app.message.as_deref(),
        Some("instance.run: project default has 4 instances")
    );
}

#[test]
fn esc_runs_nothing() {
    let mut app = app();
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    press(&mut app, "rbox");
    assert!(key(&mut app, Key::Esc).is_empty());
    assert_eq!(app.prompt, None);
}

#[test]
fn s_and_capital_s_ask_first_and_only_where_they_mean_something() {
    let mut app = on_instances();
    assert!(press(&mut app, "S").is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("instance box is running: nothing to start")
    );
    assert!(press(&mut app, "s").is_empty());
    assert_eq!(
        app.prompt,
        Some(Prompt::ConfirmPower {
            name: "box".into(),
            power: Power::Stop
        })
    );
    assert!(key(&mut app, Key::Enter).is_empty(), "enter means no");
    assert_eq!(app.message.as_deref(), Some("instance box not stopped"));
    press(&mut app, "s");
    let fx = press(&mut app, "y");
    assert_eq!(the_call(&fx), Request::InstanceStop(named("box", false)));
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("stopping instance box")));
    let stopped = instance("box", InstanceState::Stopped);
    reply(
        &mut app,
        0,
        Reply::InstanceStop(Ok(InstanceReply { instance: stopped })),
    );
    assert_eq!(
        app.message.as_deref(),
        Some("instance box is stopped (powered off)")
    );
    assert_eq!(
        app.instances.get("box").map(|i| i.state),
        Some(InstanceState::Stopped)
    );

    press(&mut app, "s");
    assert_eq!(
        app.message.as_deref(),
        Some("instance box is stopped: nothing to stop")
    );
    press(&mut app, "S");
    let fx = press(&mut app, "Y");
    assert_eq!(the_call(&fx), Request::InstanceStart(named("box", false)));
    let gone = fixtures::refused(
        ErrorKind::Conflict,
        "the image of instance box is gone",
        vec![],
    );
    reply(&mut app, 0, Reply::InstanceStart(Err(gone)));
    assert_eq!(
        app.message.as_deref(),
        Some("instance.start: the image of instance box is gone")
    );
    // A failed one starts again too.
    press(&mut app, "jS");
    assert!(matches!(
        &app.prompt,
        Some(Prompt::ConfirmPower { name, power: Power::Start }) if name == "broken"
    ));
}

#[test]
fn c_asks_the_image_name_and_shows_progress_and_kilnd_s_refusal() {
    let mut app = on_instances();
    press(&mut app, "c");
    assert!(matches!(&app.prompt, Some(Prompt::CaptureName { instance, .. }) if instance == "box"));
    assert!(key(&mut app, Key::Enter).is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("no image captured: it needs a name")
    );
    press(&mut app, "cweb");
    let fx = key(&mut app, Key::Enter);
    let params = ImageFromInstanceParams {
        instance: "box".into(),
        name: "web".into(),
        generalize: true,
        description: None,
    };
    assert_eq!(the_call(&fx), Request::ImageCreateFromInstance(params));
    assert_eq!(app.instances.capturing, 1);
    let progress = |app: &mut App, line: &str| {
        let p = ImageProgress { line: line.into() };
        update(app, Action::Notification(Note::Progress(p)))
    };
    progress(&mut app, "==> generalizing (machine-id, cloud-init, logs)");
    assert_eq!(
        app.message.as_deref(),
        Some("capture: ==> generalizing (machine-id, cloud-init, logs)")
    );
    // The running instance: kilnd's refusal, as it said it.
    let running = fixtures::refused(
        ErrorKind::Conflict,
        "instance box is running: stop it first (kiln instance stop box)",
        vec![],
    );
    reply(&mut app, 0, Reply::ImageCreateFromInstance(Err(running)));
    assert_eq!(
        app.message.as_deref(),
        Some("image.create_from_instance: instance box is running: stop it first (kiln instance stop box)")
    );
    assert_eq!(app.instances.capturing, 0);
    app.message = None;
    progress(&mut app, "someone else's line");
    assert_eq!(app.message, None, "no capture in flight");

    // Published: said so, and the images listed again.
    press(&mut app, "cweb");
    key(&mut app, Key::Enter);
    let mut image = fixtures::image("web", Some(1));
    image.from_instance = Some("box".into());
    let fx = reply(
        &mut app,
        0,
        Reply::ImageCreateFromInstance(Ok(ImageResult { image })),
    );
    assert_eq!(
        app.message.as_deref(),
        Some("created image web (img-web) from instance box")
    );
    assert!(methods(&fx).contains(&Name::ImageList), "{fx:?}");
}

#[test]
fn capital_d_deletes_an_instance_only_once_its_name_is_typed() {
    let mut app = on_instances();
    press(&mut app, "Dbo");
    assert!(key(&mut app, Key::Enter).is_empty());
    assert_eq!(app.message.as_deref(), Some("instance box not deleted"));
    let mut fx = press(&mut app, "Dbox");
    fx.extend(key(&mut app, Key::Enter));
    assert_eq!(the_call(&fx), Request::InstanceDelete(named("box", true)));
    let fx = reply(&mut app, 0, Reply::InstanceDelete(Ok(Empty {})));
    assert_eq!(app.message.as_deref(), Some("instance.delete: done"));
    assert!(methods(&fx).contains(&Name::InstanceList), "{fx:?}");
}

#[test]
fn instance_keys_do_nothing_without_an_instance() {
    let mut app = on_instances();
    app.instances = Default::default();
    for k in ["s", "S", "c", "D"] {
        assert!(press(&mut app, k).is_empty());
        assert_eq!(app.prompt, None, "{k}");
    }
}

#[test]
fn a_attaches_to_a_running_instance_and_says_how_it_ended() {
    let mut app = on_instances();
    let box_ = Attach::Instance { name: "box".into() };
    assert_eq!(press(&mut app, "a"), [Effect::Attach(box_.clone())]);
    let back = |app: &mut App, result| {
        let what = box_.clone();
        update(app, Action::Attached { what, result })
    };
    back(&mut app, Ok(Some(0)));
    assert_eq!(app.message.as_deref(), Some("back from instance box"));
    back(&mut app, Ok(Some(255)));
    assert_eq!(
        app.message.as_deref(),
        Some("back from instance box: `kiln instance ssh box` exited with status 255")
    );
    back(&mut app, Err("cannot find the kiln program: gone".into()));
    assert_eq!(
        app.message.as_deref(),
        Some("cannot attach to instance box: cannot find the kiln program: gone")
    );
    // Not running: said what to do instead.
    assert!(press(&mut app, "ja").is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("instance broken is failed: S starts it")
    );
    let starting = instance("box", InstanceState::Starting);
    app.instances.on_change("box", Some(starting));
    press(&mut app, "k");
    assert!(press(&mut app, "a").is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("instance box is starting: a attaches once sshd answers")
    );
}
