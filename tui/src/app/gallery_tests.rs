//! `update` tests of galleries in the dashboard: the Images view's Galleries tab (`4`), its
//! share, accept and reject, and `GALLERY/IMAGE` by its latest version in the base picker.

use super::fixtures::{self, app, key, press, reply, with_galleries};
use super::images::Tab;
use super::keymap::Key;
use super::*;
use kiln_shared::protocol::{GalleryAnswerParams, GalleryList, GalleryShareParams};

/// The Images view on the Galleries tab of `with_galleries`.
fn galleries_tab() -> App {
    let mut a = app();
    with_galleries(&mut a);
    key(&mut a, Key::Tab);
    key(&mut a, Key::Tab);
    press(&mut a, "4");
    assert_eq!(a.images.tab, Tab::Galleries);
    a
}

fn row_names(a: &App) -> Vec<String> {
    a.images.galleries.rows().iter().map(|r| r.name()).collect()
}

#[test]
fn the_galleries_tab_lists_each_definition_and_keeps_the_selection_on_a_new_list() {
    let mut a = galleries_tab();
    assert_eq!(
        row_names(&a),
        ["prod/web", "prod/db", "staging/", "base/deb"]
    );
    let row = a.images.galleries.selected().expect("a row");
    assert_eq!(row.owner(), "own");
    press(&mut a, "jjj");
    let row = a.images.galleries.selected().expect("a row");
    assert_eq!(row.owner(), "ops (pending)");
    // kilnd lists again with one gallery fewer: the same row stays selected.
    let mut galleries = a.images.galleries.items.clone();
    galleries.remove(1);
    let tag = a.images.galleries.tag;
    let fx = fixtures::tick(&mut a, fixtures::at(10, 2, 5));
    let tag = if tag == 0 {
        match fx.iter().find_map(|e| match e {
            Effect::Call {
                tag,
                request: Request::GalleryList(_),
            } => Some(*tag),
            _ => None,
        }) {
            Some(t) => t,
            None => panic!("the tab asks for the galleries while shown: {fx:?}"),
        }
    } else {
        tag
    };
    reply(
        &mut a,
        tag,
        Reply::GalleryList(Ok(GalleryList { galleries })),
    );
    assert_eq!(row_names(&a), ["prod/web", "prod/db", "base/deb"]);
    assert_eq!(
        a.images.galleries.selected().map(|r| r.name()).as_deref(),
        Some("base/deb")
    );
    // Tabs cycle through it.
    press(&mut a, "]");
    assert_eq!(a.images.tab, Tab::Public);
    press(&mut a, "[");
    assert_eq!(a.images.tab, Tab::Galleries);
    key(&mut a, Key::Enter);
    assert_eq!(a.overlay, Some(overlay::Overlay::ImageWindow));
}

#[test]
fn s_shares_an_own_gallery_and_a_or_x_answer_an_offered_one() {
    let mut a = galleries_tab();
    press(&mut a, "steam-b ops");
    let fx = key(&mut a, Key::Enter);
    let [Effect::Call { tag, request }] = fx.as_slice() else {
        panic!("one call: {fx:?}");
    };
    let expected = Request::GalleryShare(GalleryShareParams {
        name: "prod".into(),
        projects: vec!["team-b".into(), "ops".into()],
    });
    assert_eq!(request, &expected);
    assert_ne!(*tag, 0, "answered through the tab");
    assert_eq!(
        a.message.as_deref(),
        Some("sharing gallery prod with team-b, ops...")
    );
    // Own galleries are not accepted; offered ones are not shared.
    assert!(press(&mut a, "a").is_empty());
    assert!(a
        .message
        .as_deref()
        .is_some_and(|m| m.contains("this project's own")));
    press(&mut a, "jjj");
    assert!(press(&mut a, "s").is_empty());
    assert!(a
        .message
        .as_deref()
        .is_some_and(|m| m.contains("belongs to project ops")));
    let answer = |accept: bool| {
        let p = GalleryAnswerParams {
            name: "base".into(),
            from: "ops".into(),
        };
        if accept {
            Request::GalleryAccept(p)
        } else {
            Request::GalleryReject(p)
        }
    };
    for (k, accept) in [("a", true), ("x", false)] {
        let fx = press(&mut a, k);
        assert!(
            matches!(fx.as_slice(), [Effect::Call { request, .. }] if *request == answer(accept)),
            "{k}: {fx:?}"
        );
    }
    assert_eq!(
        a.message.as_deref(),
        Some("rejecting gallery base of project ops...")
    );
}

#[test]
fn the_picker_offers_a_definition_by_its_latest_and_a_build_from_it_names_it() {
    let mut a = app();
    with_galleries(&mut a);
    press(&mut a, "bnightly");
    key(&mut a, Key::Enter);
    let names: Vec<String> = a.picker_choices().into_iter().map(|c| c.name).collect();
    // Public first, then definitions by their latest, then own and shared images.
    assert_eq!(
        names,
        [
            "debian-12",
            "prod/web",
            "prod/web:1.0.0",
            "prod/web:1.0.1",
            "prod/web:1.0.2",
            "web1",
            "team-b-base"
        ]
    );
    let choice = a.picker_choices()[1].clone();
    assert!(choice.latest);
    assert_eq!(
        choice.image.id, "img-web-1.0.2",
        "latest skips the excluded 1.0.1"
    );
    press(&mut a, "j");
    let fx = key(&mut a, Key::Enter);
    let started = fx.iter().find_map(|e| match e {
        Effect::Call {
            request: Request::BuildStart(p),
            ..
        } => Some(p.base_image.clone()),
        _ => None,
    });
    assert_eq!(started, Some(Some("prod/web".to_string())));
}
