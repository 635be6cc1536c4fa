//! The template editor form: one line per field, what is wrong with a field right under it, the
//! applications as a multi-select whose unavailable choices are greyed with the reason on their
//! line. Scrolls so that the focused field (and its errors) is always on screen.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::{empty, fit, Theme};
use crate::app::form::{Field, Form};
use crate::app::App;
use kiln_shared::template::Template;

/// Columns of the label (focus marker included).
const LABEL: usize = 17;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let Some(form) = &app.form else {
        return;
    };
    if !form.loaded {
        return empty(f, app, area, &format!("{}: loading…", form.title()));
    }
    let t = Theme::of(app);
    let found = form.violations_by_field(&app.catalog, &app.images.list.items);
    let [head, body] =
        Layout::vertical([Constraint::Length(head_rows(form)), Constraint::Min(0)]).areas(area);
    draw_head(f, app, form, found.len(), head);

    let focused = form.focused(&app.catalog);
    let template = form.template();
    let width = usize::from(area.width);
    let mut lines: Vec<Line> = Vec::new();
    let mut focus_rows = (0, 0);
    let mut fields = vec![
        Field::Name,
        Field::Description,
        Field::Os,
        Field::Applications,
    ];
    fields.extend((0..app.catalog.apps.len()).map(Field::App));
    fields.extend([
        Field::MinDisk,
        Field::Timeout,
        Field::Source,
        Field::Script,
        Field::Toml,
    ]);
    for field in fields {
        let start = lines.len();
        let is_focused = field == focused;
        lines.push(field_line(app, form, &template, field, is_focused, &t));
        for (_, v) in found.iter().filter(|(at, _)| *at == field) {
            let text = if field == Field::Toml && !v.path.is_empty() {
                v.to_string()
            } else {
                v.message.clone()
            };
            for (i, part) in wrap(&text, width.saturating_sub(LABEL + 2))
                .into_iter()
                .enumerate()
            {
                let mark = if i == 0 { "✗ " } else { "  " };
                lines.push(Line::from(vec![
                    Span::raw(" ".repeat(LABEL)),
                    Span::styled(format!("{mark}{part}"), t.error()),
                ]));
            }
        }
        if is_focused {
            focus_rows = (start, lines.len());
        }
    }
    let height = usize::from(body.height);
    let (first, end) = focus_rows;
    let offset = end.saturating_sub(height).min(first);
    let scroll = u16::try_from(offset).unwrap_or(u16::MAX);
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), body);
}

fn head_rows(form: &Form) -> u16 {
    if form.conflict.is_some() {
        2
    } else {
        1
    }
}

fn draw_head(f: &mut Frame, app: &App, form: &Form, problems: usize, area: Rect) {
    let t = Theme::of(app);
    let state = if form.save_tag != 0 || form.check_tag != 0 {
        Span::raw("saving…")
    } else if problems == 0 {
        Span::styled("valid: ctrl-s saves", t.fg(ratatui::style::Color::Green))
    } else {
        Span::styled(
            format!(
                "{problems} problem{} to fix before it can be saved",
                if problems == 1 { "" } else { "s" }
            ),
            t.error(),
        )
    };
    let revision = match form.expected_revision {
        Some(r) => format!(" (from revision {r})"),
        None => String::new(),
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(format!(" {}{revision}", form.title()), t.header()),
        Span::raw(" · "),
        state,
    ])];
    if let Some(rev) = form.conflict {
        lines.push(Line::styled(
            format!(
                " CONFLICT: revision {rev} stored meanwhile; ctrl-s overwrites it, esc drops yours"
            ),
            t.error(),
        ));
    }
    f.render_widget(Paragraph::new(lines), area);
}

/// One field's line: the marker and label, then its value (and a hint when focused).
fn field_line<'a>(
    app: &App,
    form: &Form,
    template: &Template,
    field: Field,
    focused: bool,
    t: &Theme,
) -> Line<'a> {
    let marker = if focused { "▶ " } else { "  " };
    let label_style = if focused { t.selected() } else { Style::new() };
    let cursor = if focused { "▏" } else { "" };
    let hint = |s: &str| Span::styled(format!("  {s}"), t.dim());
    let label = |l: &str| {
        vec![
            Span::raw(marker),
            Span::styled(fit(l, LABEL - 3), label_style),
            Span::raw(" "),
        ]
    };
    let mut spans;
    match field {
        Field::Name | Field::Description => {
            let (l, text, empty_hint) = if field == Field::Name {
                ("Name", &form.name, "required")
            } else {
                ("Description", &form.description, "optional")
            };
            spans = label(l);
            spans.push(Span::raw(format!("{text}{cursor}")));
            if text.is_empty() {
                spans.push(Span::styled(format!("({empty_hint})"), t.dim()));
            }
        }
        Field::Os => {
            spans = label("OS");
            if focused {
                spans.push(Span::raw(format!("◀ {} ▶", template.os)));
                spans.push(hint("←/→ change; apps and images follow"));
            } else {
                spans.push(Span::raw(template.os.clone()));
            }
        }
        Field::Applications => {
            spans = label("Applications");
            let n = template.applications.len();
            spans.push(Span::raw(format!("{n} selected")));
            spans.push(hint("space toggles; [-] cannot be added (it says why)"));
        }
        Field::App(i) => {
            let Some(a) = app.catalog.apps.get(i) else {
                return Line::from("");
            };
            let choice = form.app_choice(&app.catalog, i);
            let mark = match (choice.selected, &choice.blocked) {
                (true, _) => "[x]",
                (false, Some(_)) => "[-]",
                (false, None) => "[ ]",
            };
            let row = format!("{mark} {}", a.name);
            spans = vec![
                Span::raw(marker),
                Span::raw("  "),
                Span::styled(
                    fit(&row, LABEL - 3),
                    if focused {
                        t.selected()
                    } else if choice.blocked.is_some() {
                        t.greyed()
                    } else {
                        Style::new()
                    },
                ),
                Span::raw(" "),
            ];
            match choice.blocked {
                Some(why) => spans.push(Span::styled(why, t.greyed())),
                None => spans.push(Span::raw(a.description.clone())),
            }
        }
        Field::MinDisk => {
            spans = label("Min disk");
            spans.push(Span::raw(format!("{}{cursor} GB", form.min_disk)));
            spans.push(hint("0 = the size of the source"));
        }
        Field::Timeout => {
            spans = label("Build timeout");
            spans.push(Span::raw(format!("{}{cursor} minutes", form.timeout)));
            spans.push(hint("0 = 240; else 6 to 960"));
        }
        Field::Source => {
            spans = label("Source image");
            if template.source.image.is_empty() {
                spans.push(Span::raw("none"));
            } else {
                spans.push(Span::raw(format!(
                    "{} ({})",
                    template.source.image, template.source.version
                )));
            }
            if focused {
                spans.push(hint(&format!("enter: pick a {} image", template.os)));
            }
        }
        Field::Script => {
            spans = label("User script");
            match &template.user_script {
                Some(s) => {
                    let first = s.lines().next().unwrap_or("");
                    let n = s.lines().count();
                    spans.push(Span::raw(format!(
                        "{first} ({n} line{})",
                        if n == 1 { "" } else { "s" }
                    )));
                }
                None => spans.push(Span::raw("none")),
            }
            if focused {
                spans.push(hint("enter: edit in $EDITOR"));
            }
        }
        Field::Toml => {
            spans = label("Everything");
            spans.push(Span::raw(toml_summary(template)));
            if focused {
                spans.push(hint("enter/ctrl-e: the whole template as TOML in $EDITOR"));
            }
        }
    }
    Line::from(spans)
}

/// What the fields the form does not show hold, in one line.
fn toml_summary(t: &Template) -> String {
    let steps = t.customize.len();
    let targets: Vec<&str> = t.distribute.iter().map(|d| d.run_output_name()).collect();
    format!(
        "{steps} customize step{} · distribute: {} · vm {} CPU {} MB",
        if steps == 1 { "" } else { "s" },
        if targets.is_empty() {
            "none".to_string()
        } else {
            targets.join(", ")
        },
        t.vm.cpus,
        t.vm.memory_mb
    )
}

/// `text` in lines of at most `width` columns, broken at spaces where it can be.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let sep = usize::from(!line.is_empty());
        if !line.is_empty() && line.width() + sep + word.width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.width() > width {
            let mut cut = 0;
            let mut used = 0;
            for (i, c) in line.char_indices() {
                let w = c.width().unwrap_or(0);
                if used + w > width {
                    break;
                }
                used += w;
                cut = i + c.len_utf8();
            }
            if cut == 0 {
                cut = line.chars().next().map_or(line.len(), char::len_utf8);
            }
            lines.push(line[..cut].to_string());
            line = line[cut..].to_string();
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}
