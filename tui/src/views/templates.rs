//! The Templates view: the filtered list and a details pane for the selected template.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;

use kiln_shared::build::Build;
use kiln_shared::protocol::{ImageInfo, TemplateSummary};
use kiln_shared::template::{Customizer, Distribute, OnError, Template};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::{draw_list_table, empty, popup, state_text, Theme};
use crate::app::App;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    if app.templates.visible().is_empty() {
        return draw_list(f, app, area);
    }
    let (list, pane) = super::list_and_details(area);
    draw_list(f, app, list);
    if let Some(pane) = pane {
        draw_pane(f, app, pane);
    }
}

fn draw_list(f: &mut Frame, app: &App, area: Rect) {
    let visible = app.templates.visible();
    if visible.is_empty() {
        let text = if !app.templates.list.loaded {
            if app.is_connected() {
                "loading templates…".to_string()
            } else {
                "not connected to kilnd".to_string()
            }
        } else if app.templates.list.items.is_empty() {
            "no templates yet: store one with `kiln template create -f FILE`".to_string()
        } else {
            format!("no template matches /{} (esc clears)", app.templates.filter)
        };
        return empty(f, app, area, &text);
    }
    let rows = visible.iter().map(|tpl| {
        Row::new(vec![
            tpl.name.clone(),
            tpl.os.clone(),
            tpl.revision.to_string(),
            tpl.applications.join(", "),
            app.builds
                .last_state(&tpl.name)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Length(13),
            Constraint::Length(4),
            Constraint::Fill(2),
            Constraint::Length(11),
        ],
    );
    let header = ["NAME", "OS", "REV", "APPLICATIONS", "LAST BUILD"];
    draw_list_table(f, app, area, table, &header, app.templates.list.sel);
}

fn draw_pane(f: &mut Frame, app: &App, area: Rect) {
    let Some(tpl) = app.templates.selected() else {
        return;
    };
    f.render_widget(
        Paragraph::new(details_lines(app, tpl, false))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" details · d opens them whole ")),
        area,
    );
}

/// `d`: the selected template's details over the whole screen, every revision, build and image
/// a line each, scrolled with the movement keys.
pub fn draw_details_window(f: &mut Frame, app: &App, scroll: usize, area: Rect) {
    let Some(tpl) = app.templates.selected() else {
        return;
    };
    let lines = details_lines(app, tpl, true);
    let Some(window) = popup(area, 100, lines.len() + 2) else {
        return;
    };
    let scroll = u16::try_from(scroll.min(max_scroll(lines.len(), window))).unwrap_or(0);
    f.render_widget(Clear, window);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(Block::bordered().title(format!(
                " template {} · j/k scroll · other keys close ",
                tpl.name
            ))),
        window,
    );
}

/// How far the details window scrolls at most (the last line at its bottom), for a screen of
/// the app's size.
pub fn window_max_scroll(app: &App) -> usize {
    let Some(tpl) = app.templates.selected() else {
        return 0;
    };
    let lines = details_lines(app, tpl, true).len();
    let screen = Rect::new(0, 0, app.width, app.height);
    popup(screen, 100, lines + 2).map_or(0, |w| max_scroll(lines, w))
}

fn max_scroll(lines: usize, window: Rect) -> usize {
    lines.saturating_sub(usize::from(window.height.saturating_sub(2)))
}

/// What the details pane (`whole` false: the newest few revisions and builds) and the details
/// window (`whole`: all of them, a line each) show of `tpl`.
fn details_lines<'a>(app: &'a App, tpl: &'a TemplateSummary, whole: bool) -> Vec<Line<'a>> {
    let t = Theme::of(app);
    let builds: Vec<&Build> = app
        .builds
        .list
        .items
        .iter()
        .filter(|b| b.template == tpl.name)
        .collect();
    let apps = if tpl.applications.is_empty() {
        "none".to_string()
    } else {
        tpl.applications.join(", ")
    };
    let mut lines = vec![
        Line::styled(tpl.name.clone(), t.header()),
        Line::from(tpl.description.clone().unwrap_or_default()),
        Line::from(format!("OS {} · revision {}", tpl.os, tpl.revision)),
        Line::from(format!("applications: {apps}")),
    ];
    let details = app
        .templates
        .details
        .as_ref()
        .filter(|d| d.name == tpl.name);
    match details.and_then(|d| d.record.as_ref()) {
        Some(r) => lines.extend(body_lines(&r.template).into_iter().map(Line::from)),
        None => lines.push(Line::styled("loading the template…", t.dim())),
    }
    if let Some(revs) = details.and_then(|d| d.revisions.as_ref()) {
        if whole {
            lines.push(Line::from(format!("revisions: {}", revs.len())));
            lines.extend(revs.iter().rev().map(|r| {
                Line::from(format!(
                    "  {} · {}",
                    r.revision,
                    r.created_at.format("%Y-%m-%d %H:%M UTC")
                ))
            }));
        } else {
            let shown: Vec<String> = revs
                .iter()
                .rev()
                .take(5)
                .map(|r| format!("{} ({})", r.revision, r.created_at.format("%m-%d %H:%M")))
                .collect();
            let more = if revs.len() > 5 { ", …" } else { "" };
            lines.push(Line::from(format!("revisions: {}{more}", shown.join(", "))));
        }
    }
    lines.push(Line::from(format!(
        "updated {}",
        tpl.updated_at.format("%Y-%m-%d %H:%M UTC")
    )));
    if whole {
        lines.push(Line::from(format!("builds: {}", builds.len())));
        lines.extend(builds.iter().map(|b| {
            Line::from(format!(
                "  #{} {} · {} · rev {} · {}",
                b.id,
                state_text(b),
                b.image_name,
                b.revision,
                b.created_at.format("%Y-%m-%d %H:%M UTC")
            ))
        }));
    } else {
        let recent: Vec<String> = builds
            .iter()
            .take(3)
            .map(|b| format!("#{} {}", b.id, state_text(b)))
            .collect();
        lines.push(Line::from(format!(
            "builds: {}{}{}",
            builds.len(),
            if recent.is_empty() { "" } else { " · " },
            recent.join(", ")
        )));
    }
    let images: Vec<&ImageInfo> = app
        .images
        .list
        .items
        .iter()
        .filter(|i| i.template.as_deref() == Some(tpl.name.as_str()))
        .collect();
    if whole {
        lines.push(Line::from(format!("images: {}", images.len())));
        lines.extend(images.iter().map(|i| {
            Line::from(format!(
                "  {} · {} · {}",
                i.name,
                i.visibility.as_str(),
                i.state.as_str()
            ))
        }));
    } else {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        lines.push(Line::from(format!(
            "images: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    lines
}

/// Every field of a stored template beyond the summary's, a line each.
fn body_lines(t: &Template) -> Vec<String> {
    let mut out = vec![format!("source: {} ({})", t.source.image, t.source.version)];
    if let Some(trigger) = t.trigger_summary() {
        out.push(format!("trigger: {trigger}"));
    }
    out.extend([
        format!(
            "vm: {} vCPUs · {} MB · os disk {} GB · min disk {} GB",
            t.vm.cpus, t.vm.memory_mb, t.vm.os_disk_gb, t.min_disk_gb
        ),
        format!("timeout: {} min", t.effective_build_timeout_minutes()),
    ]);
    if t.customize.is_empty() {
        out.push("customize: none".into());
    } else {
        out.push("customize:".into());
        for (i, c) in t.customize.iter().enumerate() {
            let what = match c {
                Customizer::Shell {
                    inline: Some(lines),
                    ..
                } => format!("{} inline line(s)", lines.len()),
                Customizer::Shell {
                    script: Some(s), ..
                } => s.clone(),
                Customizer::Shell { .. } => String::new(),
                Customizer::File {
                    source,
                    destination,
                    ..
                } => format!("{source} → {destination}"),
                Customizer::Reboot { timeout, .. } => timeout
                    .clone()
                    .map(|t| format!("wait {t}"))
                    .unwrap_or_default(),
            };
            out.push(format!("  {}. {} {} {what}", i + 1, c.kind(), c.name()));
        }
    }
    out.push(match &t.user_script {
        Some(s) => format!("user script: {} line(s)", s.lines().count()),
        None => "user script: none".into(),
    });
    if t.generalize.skip {
        out.push("generalize: skipped".into());
    }
    if t.validate.boot_test {
        out.push(format!(
            "validate: boot test, {} check(s)",
            t.validate.in_vm.len()
        ));
    }
    let targets: Vec<String> = t
        .distribute
        .iter()
        .map(|d| match d {
            Distribute::Image { run_output_name } => format!("image {run_output_name}"),
            Distribute::Gallery {
                run_output_name,
                gallery,
                ..
            } => format!("gallery {gallery} ({run_output_name})"),
            Distribute::Export { format, path, .. } => format!("{format} → {path}"),
        })
        .collect();
    out.push(format!("distribute: {}", targets.join("; ")));
    let on = |e: OnError| match e {
        OnError::Cleanup => "cleanup",
        OnError::Abort => "abort",
    };
    out.push(format!(
        "on errors: customize {}, validate {}",
        on(t.error_handling.on_customizer_error),
        on(t.error_handling.on_validation_error)
    ));
    if !t.tags.is_empty() {
        let tags: Vec<String> = t.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("tags: {}", tags.join(", ")));
    }
    out
}
