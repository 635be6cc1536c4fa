//! Drawing the dashboard: a pure function of `&App` into a ratatui `Frame`. The chrome (tab bar,
//! message line, status bar, help overlay) lives here; each view's body has its own module.

mod builds;
mod form;
mod galleries;
mod images;
mod import;
mod instances;
mod log;
mod picker;
pub(crate) mod templates;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, HighlightSpacing, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::overlay::Overlay;
use crate::app::{keymap, App, Connection, Prompt, View};
use kiln_shared::build::{Build, BuildState};
use kiln_shared::protocol::InstanceState;

/// Draws the whole dashboard. Never panics, whatever the frame's size.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let [tabs, body, message, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(f, app, tabs);
    match app.view {
        View::Templates => templates::draw(f, app, body),
        View::Builds => builds::draw_list(f, app, body),
        View::Images => images::draw(f, app, body),
        View::Instances => instances::draw(f, app, body),
        View::Detail => builds::draw_detail(f, app, body),
        View::Log => log::draw(f, app, body),
        View::Form => form::draw(f, app, body),
    }
    draw_message(f, app, message);
    draw_status(f, app, status);
    match &app.overlay {
        None => {}
        Some(Overlay::ImageWindow) => images::draw_details_window(f, app, area),
        Some(Overlay::ImportWindow { scroll }) => import::draw_window(f, app, *scroll, area),
        Some(Overlay::TemplateWindow { scroll }) => {
            templates::draw_details_window(f, app, *scroll, area)
        }
        Some(Overlay::Picker(_)) => picker::draw(f, app, area),
        Some(Overlay::Help { scroll, over }) => {
            if over.is_some() {
                picker::draw(f, app, area);
            }
            draw_help(f, *scroll, area);
        }
    }
}

/// Styles, with colors only when NO_COLOR is unset.
struct Theme {
    color: bool,
}

impl Theme {
    fn of(app: &App) -> Theme {
        Theme { color: app.color }
    }
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn header(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }
    /// A choice that cannot be taken: grey, or faint under NO_COLOR (its text also says why).
    fn greyed(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    fn state(&self, s: BuildState) -> Style {
        match s {
            BuildState::Succeeded => self.fg(Color::Green),
            BuildState::PartiallySucceeded | BuildState::Canceled => self.fg(Color::Yellow),
            BuildState::Failed | BuildState::TimedOut | BuildState::Interrupted => {
                self.fg(Color::Red)
            }
            BuildState::Running => self.fg(Color::Cyan),
            BuildState::Queued => Style::new(),
        }
    }
    fn instance_state(&self, s: InstanceState) -> Style {
        match s {
            InstanceState::Running => self.fg(Color::Green),
            InstanceState::Starting | InstanceState::Stopping => self.fg(Color::Cyan),
            InstanceState::Failed => self.fg(Color::Red),
            InstanceState::Stopped => Style::new(),
        }
    }
}

fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let mut spans = vec![Span::styled(" kiln ", t.header())];
    let mut tab = |label: String, view: View| {
        let style = if app.view == view {
            t.selected()
        } else {
            Style::new()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {label} "), style));
    };
    tab("Templates".into(), View::Templates);
    match &app.builds.template {
        Some(name) => tab(format!("Builds of {name}"), View::Builds),
        None => tab("Builds".into(), View::Builds),
    }
    tab("Images".into(), View::Images);
    tab("Instances".into(), View::Instances);
    if let Some(id) = app.detail.build {
        tab(format!("Build {id}"), View::Detail);
    }
    if let Some(l) = &app.log {
        let what = if l.serial { "Serial" } else { "Log" };
        tab(format!("{what} {}", l.build), View::Log);
    }
    if let Some(form) = &app.form {
        tab(form.title(), View::Form);
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_message(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let line = match &app.prompt {
        Some(Prompt::Filter) => Line::from(format!("filter: {}▏", app.templates.filter)),
        Some(Prompt::Search { input }) => Line::from(format!("search: {input}▏")),
        Some(Prompt::ImageName { template, input }) => {
            Line::from(format!("image name for a build of {template}: {input}▏"))
        }
        Some(Prompt::ConfirmDelete { what, name, input }) => Line::styled(
            format!("delete {} {name}? type its name: {input}▏", what.noun()),
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Some(Prompt::ConfirmCancel { id }) => Line::styled(
            format!("cancel build {id}? y/N"),
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Some(Prompt::InstanceName {
            image_name, input, ..
        }) => Line::from(format!("name for an instance of {image_name}: {input}▏")),
        Some(Prompt::ShareWith {
            image_name,
            input,
            gallery,
            ..
        }) => Line::from(format!(
            "share {}{image_name} with projects (space-separated): {input}▏",
            if *gallery { "gallery " } else { "" }
        )),
        Some(Prompt::ImportPath { input }) => Line::from(format!(
            "import an Azure Image Builder template (JSON file): {input}▏"
        )),
        Some(Prompt::CaptureName { instance, input }) => Line::from(format!(
            "image name for a capture of instance {instance}: {input}▏"
        )),
        Some(Prompt::ConfirmPower { name, power }) => Line::styled(
            format!("{} instance {name}? y/N", power.verb()),
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        None if app.form.as_ref().is_some_and(|f| f.confirm_discard) => Line::styled(
            "discard your changes? y/N",
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        None => match &app.message {
            Some(m) => Line::from(m.as_str()),
            None => Line::styled(hint(app), t.dim()),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The message line when there is nothing to say: the current view's keys, from the key map.
fn hint(app: &App) -> String {
    let scope = if app.picker().is_some() {
        keymap::Scope::Picker
    } else {
        keymap::Scope::In(app.view)
    };
    let mut parts: Vec<String> = keymap::BINDINGS
        .iter()
        .filter(|b| b.scope == scope && !b.short.is_empty())
        .map(|b| format!("{} {}", keymap::key_label(b.keys[0]), b.short))
        .collect();
    if !app.templates.filter.is_empty() && app.view == View::Templates {
        parts.insert(0, format!("filter /{}", app.templates.filter));
    }
    parts.push("? help".into());
    parts.join(" · ")
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let bar = t.selected();
    let (conn, detail) = match &app.connection {
        Connection::Connecting => (Span::styled(" connecting… ", bar), String::new()),
        Connection::Connected { version } => (
            Span::styled(" connected ", bar),
            format!("│ kilnd {version} "),
        ),
        Connection::Disconnected { error } => (
            Span::styled(" disconnected, retrying ", bar.patch(t.error())),
            format!("│ {error} "),
        ),
    };
    let rest = format!(
        "│ project {} │ queue {} │ running {} {detail}",
        app.project,
        app.builds.queued(),
        app.builds.running()
    );
    let line = Line::from(vec![conn, Span::styled(rest, bar)]).style(bar);
    f.render_widget(Paragraph::new(line).style(bar), area);
}

/// A centered window of at most `width` columns and `rows` rows (border included) inside
/// `area`, leaving a margin; `None` when there is no room for one.
pub(crate) fn popup(area: Rect, width: u16, rows: usize) -> Option<Rect> {
    let width = (area.width.saturating_sub(4)).min(width);
    let height = u16::try_from(rows)
        .unwrap_or(u16::MAX)
        .min(area.height.saturating_sub(2));
    if width < 3 || height < 3 {
        return None;
    }
    Some(Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    })
}

fn draw_help(f: &mut Frame, scroll: usize, area: Rect) {
    let lines = keymap::help_lines();
    let Some(popup) = popup(area, 76, lines.len() + 2) else {
        return;
    };
    let height = popup.height;
    let max_scroll = lines.len().saturating_sub(usize::from(height - 2));
    let scroll = u16::try_from(scroll.min(max_scroll)).unwrap_or(0);
    let text: Vec<Line> = lines.into_iter().map(Line::from).collect();
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(text)
            .scroll((scroll, 0))
            .block(Block::bordered().title(" keys · j/k scroll · any other key closes ")),
        popup,
    );
}

/// `s` cut or padded to exactly `width` display columns (an ellipsis marks a cut).
fn fit(s: &str, width: usize) -> String {
    if s.width() <= width {
        return format!("{s}{}", " ".repeat(width - s.width()));
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
        used += 1;
    }
    out.push_str(&" ".repeat(width.saturating_sub(used)));
    out
}

/// `1h02m`, `3m05s`, `42s`.
fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn elapsed(app: &App, b: &Build) -> String {
    match b.started_at {
        Some(start) => duration_text((b.finished_at.unwrap_or(app.now) - start).num_seconds()),
        None => "-".into(),
    }
}

fn state_text(b: &Build) -> String {
    match (b.state, b.sub_state) {
        (BuildState::Queued, Some(_)) | (BuildState::Queued, None) => match b.queue_position {
            Some(p) => format!("queued #{p}"),
            None => "queued".into(),
        },
        (BuildState::Running, Some(sub)) => format!(
            "running/{}",
            serde_json::to_value(sub)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ),
        (s, _) => s.as_str().into(),
    }
}

/// `k/n` for the step a build is on (or failed at).
fn step_text(b: &Build) -> String {
    match (b.step, b.steps.len()) {
        (_, 0) => "-".into(),
        (Some(k), n) => format!("{}/{n}", k.saturating_add(1)),
        (None, n) if b.state == BuildState::Succeeded => format!("{n}/{n}"),
        (None, n) => format!("-/{n}"),
    }
}

/// A placeholder in the middle of an empty body.
fn empty(f: &mut Frame, app: &App, area: Rect, text: &str) {
    let t = Theme::of(app);
    f.render_widget(
        Paragraph::new(Line::styled(format!(" {text}"), t.dim())),
        area,
    );
}

/// A list view's `table` under a header row of `header`, row `sel` selected behind the `▶`
/// marker (kept in its column when nothing is selected, so rows never shift).
fn draw_list_table(
    f: &mut Frame,
    app: &App,
    area: Rect,
    table: Table,
    header: &[&str],
    sel: usize,
) {
    let t = Theme::of(app);
    let table = table
        .header(Row::new(header.to_vec()).style(t.header()))
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(sel));
    f.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests;

/// Splits a list view's area: details at the side from 100 columns, below from 15 rows, else none.
pub fn list_and_details(area: Rect) -> (Rect, Option<Rect>) {
    if area.width >= 100 {
        let [l, p] = Layout::horizontal([Constraint::Min(50), Constraint::Length(44)]).areas(area);
        (l, Some(p))
    } else if area.height >= 15 {
        let [l, p] = Layout::vertical([Constraint::Min(4), Constraint::Length(8)]).areas(area);
        (l, Some(p))
    } else {
        (area, None)
    }
}
