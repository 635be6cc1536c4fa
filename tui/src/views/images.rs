//! The Images view: the catalog as the project sees it, in three tabs (public, private,
//! shared) and the galleries' tab, a details pane for the selected image and a window with all
//! its details.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::builds::size_text;
use super::{draw_list_table, empty, popup, Theme};
use crate::app::images::Tab;
use crate::app::App;
use kiln_shared::protocol::ImageInfo;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let [tabs, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    draw_tabs(f, app, tabs);
    if app.images.tab == Tab::Galleries {
        return super::galleries::draw(f, app, area);
    }
    let (list, pane) = super::list_and_details(area);
    let t = Theme::of(app);
    let visible = app.images.visible();
    if visible.is_empty() {
        let text = match (app.images.list.loaded, app.is_connected(), app.images.tab) {
            (false, true, _) => "loading images…".to_string(),
            (false, false, _) => "not connected to kilnd".to_string(),
            (true, _, Tab::Public | Tab::Galleries) => {
                "no public images yet: `kiln image bootstrap debian-12` makes a base image"
                    .to_string()
            }
            (true, _, Tab::Private) => {
                "no private images yet: build one from a template (b on the Templates tab)"
                    .to_string()
            }
            (true, _, Tab::Shared) => format!(
                "no image is shared with project {}; another project shares one with `kiln image \
                 share IMAGE {}`",
                app.project, app.project
            ),
        };
        return empty(f, app, area, &text);
    }
    let rows = visible.iter().map(|i| {
        Row::new(vec![
            i.name.clone(),
            i.os.clone(),
            crate::cli::image::visibility_text(i).to_string(),
            i.state.as_str().to_string(),
            size_text(i.file_size),
            i.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(13),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(16),
        ],
    );
    let header = ["NAME", "OS", "VISIBLE", "STATE", "SIZE", "CREATED (UTC)"];
    draw_list_table(f, app, list, table, &header, app.images.list.sel);

    let (Some(pane), Some(i)) = (pane, app.images.selected()) else {
        return;
    };
    let from = match (&i.template, i.template_revision, i.build) {
        (Some(tpl), rev, build) => format!(
            "from {tpl}{}{}",
            rev.map(|r| format!(" rev {r}")).unwrap_or_default(),
            build.map(|b| format!(" build {b}")).unwrap_or_default()
        ),
        (None, _, _) => captured(i).unwrap_or_else(|| "bootstrapped or imported".into()),
    };
    let sha: String = i.sha256.chars().take(16).collect();
    let mut lines = vec![
        Line::styled(format!("{} ({})", i.name, i.id), t.header()),
        Line::from(from),
        Line::from(format!(
            "{} · virtual {} · min disk {} GB",
            i.format,
            size_text(i.virtual_size),
            i.min_disk_gb
        )),
        Line::from(format!("sha256 {sha}…")),
        Line::from(i.path.clone()),
    ];
    if let Some(text) = sharing_text(i) {
        lines.push(Line::from(text));
    }
    if let Some(m) = &i.message {
        lines.push(Line::styled(m.clone(), t.error()));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" details ")),
        pane,
    );
}

/// `Public (2)  Private (1)  Shared (0)  Galleries (1)`, the current tab reversed, and the keys
/// that switch.
fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let mut spans = Vec::new();
    for tab in Tab::ALL {
        let (label, count) = match tab {
            Tab::Galleries => (tab.label(), app.images.galleries.rows().len()),
            _ => (tab.label(), app.images.of_tab(tab).len()),
        };
        let style = if app.images.tab == tab {
            t.selected()
        } else {
            Style::new()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {label} ({count}) "), style));
    }
    spans.push(Span::styled("  [ ] 1-4 switch", t.dim()));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Every field of the selected image, in a window (enter opens it, any key closes it).
pub fn draw_details_window(f: &mut Frame, app: &App, area: Rect) {
    if app.images.tab == Tab::Galleries {
        return super::galleries::draw_window(f, app, area);
    }
    let Some(i) = app.images.selected() else {
        return;
    };
    let lines = detail_lines(i);
    let Some(window) = popup(area, 90, lines.len() + 2) else {
        return;
    };
    f.render_widget(Clear, window);
    f.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
            .block(Block::bordered().title(format!(" image {} · any key closes ", i.name))),
        window,
    );
}

/// `shared with db (accepted), ops (pending)` for the owner; `shared by web (pending)` for a
/// project it was shared with.
fn sharing_text(i: &ImageInfo) -> Option<String> {
    if let Some(status) = i.share_status {
        let owner = i.owner_project.as_deref().unwrap_or("-");
        return Some(format!("shared by {owner} ({})", status.as_str()));
    }
    (!i.shared_with.is_empty()).then(|| {
        format!(
            "shared with {}",
            crate::cli::image::members_text(&i.shared_with)
        )
    })
}

/// `captured from instance box (of debian-12)`, for an image made of an instance.
fn captured(i: &ImageInfo) -> Option<String> {
    let instance = i.from_instance.as_ref()?;
    Some(match &i.parent_image {
        Some(parent) => format!("captured from instance {instance} (of {parent})"),
        None => format!("captured from instance {instance}"),
    })
}

fn detail_lines(i: &ImageInfo) -> Vec<String> {
    let or_dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let mut lines = vec![
        format!("id          {}", i.id),
        format!("name        {}", i.name),
        format!("os          {}", i.os),
        format!(
            "visibility  {} (owner {})",
            i.visibility.as_str(),
            or_dash(i.owner_project.clone())
        ),
        format!("state       {}", i.state.as_str()),
        format!(
            "from        {}",
            match &i.template {
                Some(t) => format!(
                    "template {t} revision {} build {}",
                    or_dash(i.template_revision.map(|r| r.to_string())),
                    or_dash(i.build.map(|b| b.to_string()))
                ),
                None => captured(i).unwrap_or_else(|| "bootstrapped or imported".into()),
            }
        ),
        format!(
            "format      {} · file {} · virtual {}",
            i.format,
            size_text(i.file_size),
            size_text(i.virtual_size)
        ),
        format!("min disk    {} GB", i.min_disk_gb),
        format!(
            "created     {}",
            i.created_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        format!("path        {}", i.path),
        format!("sha256      {}", i.sha256),
        sharing_text(i).unwrap_or_else(|| "shared with nobody".into()),
    ];
    if let Some(m) = &i.message {
        lines.push(format!("message     {m}"));
    }
    lines
}
