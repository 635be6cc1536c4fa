//! `update` tests of sharing in the Images view: pending shares on the shared tab, `s` share
//! (the projects asked in the message line), `a` accept and `x` reject.

use super::fixtures::{self, app, key, press, reply};
use super::keymap::Key;
use super::*;
use kiln_shared::protocol::{ImageList, ImageParams, ImageShareParams, ShareStatus, Visibility};

/// The Images view with the shared tab shown and one pending share listed (as the
/// `image.list {pending}` call answers).
fn shared_tab_with_a_pending_share() -> App {
    let mut app = app();
    key(&mut app, Key::Tab);
    key(&mut app, Key::Tab);
    assert_eq!(app.view, View::Images);
    let tag = app.images.pending_tag;
    assert_ne!(tag, 0, "the pending shares are asked for with the catalog");
    let mut offered = fixtures::image("ops-base", Some(9));
    offered.visibility = Visibility::Shared;
    offered.owner_project = Some("ops".into());
    offered.shared_with = Vec::new();
    offered.share_status = Some(ShareStatus::Pending);
    let images = vec![offered];
    reply(&mut app, tag, Reply::ImageList(Ok(ImageList { images })));
    press(&mut app, "3");
    app
}

#[test]
fn pending_shares_are_listed_on_the_shared_tab_and_answered_with_a_and_x() {
    let mut app = shared_tab_with_a_pending_share();
    let names: Vec<&str> = app
        .images
        .visible()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["team-b-base", "ops-base"]);
    press(&mut app, "j");
    let answer = |image: &str, accept: bool| {
        let params = ImageParams {
            image: image.into(),
        };
        vec![Effect::Call {
            tag: 0,
            request: if accept {
                Request::ImageAccept(params)
            } else {
                Request::ImageReject(params)
            },
        }]
    };
    assert_eq!(press(&mut app, "a"), answer("img-ops-base", true));
    assert_eq!(app.message.as_deref(), Some("accepting image ops-base..."));
    assert_eq!(press(&mut app, "x"), answer("img-ops-base", false));
    // Not for images of this project.
    press(&mut app, "2");
    assert!(press(&mut app, "a").is_empty());
    assert!(
        app.message
            .as_deref()
            .unwrap_or_default()
            .contains("is private"),
        "{:?}",
        app.message
    );
}

#[test]
fn s_shares_a_private_image_with_the_projects_typed() {
    let mut app = shared_tab_with_a_pending_share();
    // A shared or public image cannot be shared on.
    assert!(press(&mut app, "s").is_empty());
    assert!(app.prompt.is_none());
    assert!(app
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("only this project's private images"));
    press(&mut app, "2s");
    assert!(
        matches!(&app.prompt, Some(Prompt::ShareWith { image_name, .. }) if image_name == "web1")
    );
    press(&mut app, "team-c, ops");
    assert_eq!(
        key(&mut app, Key::Enter),
        [Effect::Call {
            tag: 0,
            request: Request::ImageShare(ImageShareParams {
                image: "img-web1".into(),
                projects: vec!["team-c".into(), "ops".into()],
            }),
        }]
    );
    // Esc, or nothing typed, shares nothing.
    press(&mut app, "s");
    assert!(key(&mut app, Key::Esc).is_empty());
    assert_eq!(app.message.as_deref(), Some("image web1 not shared"));
    press(&mut app, "s");
    assert!(key(&mut app, Key::Enter).is_empty());
}
