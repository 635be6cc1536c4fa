//! The Builds view (list of builds, live through polling) and the build detail (steps with
//! durations and exit codes, run outputs, the attach command).

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{draw_list_table, duration_text, elapsed, empty, fit, state_text, step_text, Theme};
use crate::app::App;
use kiln_shared::build::{Build, StepState};

pub fn draw_list(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let visible = app.builds.visible();
    if visible.is_empty() {
        let text = match (
            &app.builds.template,
            app.builds.list.loaded,
            app.is_connected(),
        ) {
            (_, false, true) => "loading builds…".to_string(),
            (_, false, false) => "not connected to kilnd".to_string(),
            (Some(tpl), true, _) => {
                format!("no builds of {tpl} yet: press esc, then b on the template to start one")
            }
            (None, true, _) => "no builds yet: press b on a template to start one".to_string(),
        };
        return empty(f, app, area, &text);
    }
    let rows = visible.iter().map(|b| {
        Row::new(vec![
            Cell::from(b.id.to_string()),
            Cell::from(b.template.clone()),
            Cell::from(b.image_name.clone()),
            Cell::from(state_text(b)).style(t.state(b.state)),
            Cell::from(step_text(b)),
            Cell::from(elapsed(app, b)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(22),
            Constraint::Length(5),
            Constraint::Length(7),
        ],
    );
    let header = ["ID", "TEMPLATE", "IMAGE", "STATE", "STEP", "ELAPSED"];
    draw_list_table(f, app, area, table, &header, app.builds.list.sel);
}

fn step_duration(app: &App, s: &kiln_shared::build::Step) -> String {
    match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => duration_text((b - a).num_seconds()),
        (Some(a), None) if s.state == StepState::Running => {
            duration_text((app.now - a).num_seconds())
        }
        _ => "-".into(),
    }
}

fn step_state(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Canceled => "canceled",
    }
}

pub(super) fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= 1024 * MIB {
        format!("{:.1} GiB", bytes as f64 / (1024 * MIB) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

pub fn draw_detail(f: &mut Frame, app: &App, area: Rect) {
    let Some(id) = app.detail.build else {
        return empty(f, app, area, "no build chosen");
    };
    let Some(b) = app.builds.get(id) else {
        return empty(
            f,
            app,
            area,
            &format!("build {id} is not in the list (yet)"),
        );
    };
    let lines = detail_lines(app, b);
    let max = lines.len().saturating_sub(usize::from(area.height));
    let scroll = u16::try_from(app.detail.scroll.min(max)).unwrap_or(0);
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), area);
}

fn detail_lines<'a>(app: &App, b: &'a Build) -> Vec<Line<'a>> {
    let t = Theme::of(app);
    let time = |d: Option<chrono::DateTime<chrono::Utc>>| {
        d.map(|d| d.format("%H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("Build {} ", b.id), t.header()),
            Span::raw(format!(
                "{} rev {} → image {} (base {})",
                b.template,
                b.revision,
                b.image_name,
                b.base_image_name.as_deref().unwrap_or(&b.base_image)
            )),
        ]),
        Line::from(vec![
            Span::raw("state "),
            Span::styled(state_text(b), t.state(b.state)),
            Span::raw(format!(
                " · step {} · elapsed {}{}",
                step_text(b),
                elapsed(app, b),
                b.accel
                    .as_ref()
                    .map(|a| format!(" · accel {a}"))
                    .unwrap_or_default()
            )),
        ]),
        Line::from(format!(
            "created {} · started {} · finished {} (UTC)",
            time(Some(b.created_at)),
            time(b.started_at),
            time(b.finished_at)
        )),
    ];
    if !b.message.is_empty() {
        lines.push(Line::styled(b.message.clone(), t.error()));
    }
    if let Some(a) = &b.attach_command {
        lines.push(Line::from(format!(
            "the VM is kept; a attaches, or run: {a}"
        )));
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        format!(
            " {} {} {} {} {}",
            fit("STEP", 23),
            fit("KIND", 12),
            fit("STATE", 10),
            fit("TIME", 7),
            "EXIT"
        ),
        t.header(),
    ));
    if b.steps.is_empty() {
        lines.push(Line::from("(no steps)"));
    }
    for (i, s) in b.steps.iter().enumerate() {
        let style = match s.state {
            StepState::Failed => t.error(),
            StepState::Running => t.fg(ratatui::style::Color::Cyan),
            _ => Style::new(),
        };
        let marker = if b.step == Some(i) { "▶" } else { " " };
        lines.push(Line::styled(
            format!(
                "{marker}{} {} {} {} {}",
                fit(&s.name, 23),
                fit(s.kind.as_str(), 12),
                fit(step_state(s.state), 10),
                fit(&step_duration(app, s), 7),
                s.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            style,
        ));
    }
    if !b.run_outputs.is_empty() {
        lines.push(Line::default());
        lines.push(Line::styled("run outputs", t.header()));
        for o in &b.run_outputs {
            let sha: String = o.sha256.chars().take(12).collect();
            lines.push(Line::from(format!(
                "{} {} {} {} sha256 {sha}…",
                fit(&o.run_output_name, 12),
                fit(&o.kind, 7),
                fit(&o.artifact_id, 14),
                size_text(o.size),
            )));
            lines.push(Line::from(format!("  {}", o.path)));
            if let Some(e) = &o.error {
                lines.push(Line::styled(format!("  error: {e}"), t.error()));
            }
        }
    }
    lines
}
