//! The Images view: the catalog as the project sees it (public, private, shared) and a details
//! pane for the selected image.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, HighlightSpacing, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::builds::size_text;
use super::{empty, Theme};
use crate::app::App;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let (list, pane) = super::list_and_details(area);
    let t = Theme::of(app);
    if app.images.is_empty() {
        let text = match (app.images_loaded, app.is_connected()) {
            (false, true) => "loading images…",
            (false, false) => "not connected to kilnd",
            (true, _) => "no images yet: `kiln image bootstrap debian-12` makes a base image",
        };
        return empty(f, app, area, text);
    }
    let rows = app.images.iter().map(|i| {
        Row::new(vec![
            i.name.clone(),
            i.os.clone(),
            i.visibility.as_str().to_string(),
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
    )
    .header(
        Row::new(vec![
            "NAME",
            "OS",
            "VISIBLE",
            "STATE",
            "SIZE",
            "CREATED (UTC)",
        ])
        .style(t.header()),
    )
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ")
    .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(app.image_sel));
    f.render_stateful_widget(table, list, &mut state);

    let (Some(pane), Some(i)) = (pane, app.images.get(app.image_sel)) else {
        return;
    };
    let from = match (&i.template, i.template_revision, i.build) {
        (Some(tpl), rev, build) => format!(
            "from {tpl}{}{}",
            rev.map(|r| format!(" rev {r}")).unwrap_or_default(),
            build.map(|b| format!(" build {b}")).unwrap_or_default()
        ),
        (None, _, _) => "bootstrapped or imported".to_string(),
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
    if !i.shared_with.is_empty() {
        lines.push(Line::from(format!(
            "shared with {}",
            i.shared_with.join(", ")
        )));
    }
    if let Some(m) = &i.message {
        lines.push(Line::styled(m.clone(), t.error()));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" details ")),
        pane,
    );
}
