//! The Templates view: the filtered list and a details pane for the selected template.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, HighlightSpacing, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{empty, state_text, Theme};
use crate::app::App;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    if app.visible_templates().is_empty() {
        return draw_list(f, app, area);
    }
    let (list, pane) = super::list_and_details(area);
    draw_list(f, app, list);
    if let Some(pane) = pane {
        draw_pane(f, app, pane);
    }
}

fn draw_list(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let visible = app.visible_templates();
    if visible.is_empty() {
        let text = if !app.templates_loaded {
            if app.is_connected() {
                "loading templates…".to_string()
            } else {
                "not connected to kilnd".to_string()
            }
        } else if app.templates.is_empty() {
            "no templates yet: store one with `kiln template create -f FILE`".to_string()
        } else {
            format!("no template matches /{} (esc clears)", app.template_filter)
        };
        return empty(f, app, area, &text);
    }
    let rows = visible.iter().map(|tpl| {
        Row::new(vec![
            tpl.name.clone(),
            tpl.os.clone(),
            tpl.revision.to_string(),
            tpl.applications.join(", "),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Length(13),
            Constraint::Length(4),
            Constraint::Fill(2),
        ],
    )
    .header(Row::new(vec!["NAME", "OS", "REV", "APPLICATIONS"]).style(t.header()))
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ")
    .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(app.template_sel));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_pane(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let block = Block::bordered().title(" details ");
    let Some(tpl) = app.selected_template() else {
        return;
    };
    let builds: Vec<_> = app
        .builds
        .iter()
        .filter(|b| b.template == tpl.name)
        .collect();
    let last = builds
        .first()
        .map(|b| format!("#{} {}", b.id, state_text(b)))
        .unwrap_or_else(|| "none".into());
    let apps = if tpl.applications.is_empty() {
        "none".to_string()
    } else {
        tpl.applications.join(", ")
    };
    let lines = vec![
        Line::styled(tpl.name.clone(), t.header()),
        Line::from(tpl.description.clone().unwrap_or_default()),
        Line::from(format!("OS {} · revision {}", tpl.os, tpl.revision)),
        Line::from(format!("applications: {apps}")),
        Line::from(format!(
            "updated {}",
            tpl.updated_at.format("%Y-%m-%d %H:%M UTC")
        )),
        Line::from(format!("builds: {} · last: {last}", builds.len())),
    ];
    f.render_widget(Paragraph::new(lines).block(block), area);
}
