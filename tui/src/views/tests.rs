//! View tests: TestBackend snapshots (insta) of each view at 80x24 and 120x40, and a sweep of
//! sizes from 1x1 that must draw without panicking.

use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use serde_json::json;

use crate::app::fixtures::{app, log_line};
use crate::app::keymap::Key;
use crate::app::{update, Action, App};

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
    update(
        &mut app,
        Action::Reply {
            method: "build.logs".into(),
            tag,
            result: Ok(json!({"sub": 1})),
        },
    );
    for seq in 0..n {
        let text = if seq % 7 == 3 {
            format!("Setting up package-{seq} ({seq}.0-1) ... with a line long enough to pass the right edge of an 80 column terminal")
        } else {
            format!("line {seq}")
        };
        let mut params = serde_json::to_value(log_line(seq, &text)).unwrap_or_default();
        params["sub"] = json!(1);
        if seq == 5 {
            params["stream"] = json!("stderr");
        }
        update(
            &mut app,
            Action::Notification {
                method: "build.log".into(),
                params,
            },
        );
    }
    app
}

#[test]
fn templates() {
    check("templates", &app());
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
    update(
        &mut a,
        Action::Disconnected {
            error: "cannot connect to kilnd at /run/kiln/kiln.sock".into(),
        },
    );
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
fn help() {
    let mut a = app();
    chars(&mut a, "?");
    check("help", &a);
}

#[test]
fn no_color_leaves_every_cell_in_the_terminal_colors() {
    let mut states = vec![app(), log_app(20)];
    let mut builds = app();
    keys(&mut builds, &[Key::Tab]);
    chars(&mut builds, "jx");
    states.push(builds);
    let mut disconnected = app();
    update(
        &mut disconnected,
        Action::Disconnected {
            error: "gone".into(),
        },
    );
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
    let mut states = vec![app(), log_app(200)];
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
    states.push(prompt);
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
    if let Some(b) = a.builds.iter_mut().find(|b| b.id == 3) {
        b.step = Some(usize::MAX);
        b.started_at = Some(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        b.message = "tab\there, bell\u{7}, escape \u{1b}[2J".into();
    }
    let mut params =
        serde_json::to_value(log_line(u64::MAX, "last \u{1b}[31mred")).unwrap_or_default();
    params["sub"] = json!(1);
    update(
        &mut a,
        Action::Notification {
            method: "build.log".into(),
            params,
        },
    );
    for view in [Key::Esc, Key::Esc] {
        render(&a, 80, 24);
        render(&a, 7, 3);
        keys(&mut a, &[view]);
    }
}
