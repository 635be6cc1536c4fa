//! The log viewer: one header line (what, following or paused, toggles) and the visible slice of
//! the bounded buffer, wrapped or cut at the edge.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::{empty, Theme};
use crate::app::App;
use kiln_shared::build::{LogLine, LogStream};

/// One line as shown: optional UTC time, `[step]`, `!` for stderr, the text.
pub fn line_text(l: &LogLine, timestamps: bool) -> String {
    let mut s = String::new();
    if timestamps {
        s.push_str(&l.ts.format("%H:%M:%S%.3f ").to_string());
    }
    if let (LogStream::Stdout | LogStream::Stderr, Some(step)) = (l.stream, &l.step) {
        s.push_str(&format!("[{step}] "));
    }
    if l.stream == LogStream::Stderr {
        s.push_str("! ");
    }
    // Control characters from a guest would move the cursor; show them as replacement glyphs.
    s.extend(l.line.chars().map(|c| if c.is_control() { '�' } else { c }));
    s
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let Some(log) = &app.log else {
        return empty(f, app, area, "no log open: press l on a build");
    };
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let what = if log.serial { "serial console" } else { "log" };
    let mode = if log.ended {
        "complete"
    } else if log.follow {
        "following"
    } else {
        "paused (G follows)"
    };
    let dropped = if log.dropped > 0 {
        format!(" ({} older dropped)", log.dropped)
    } else {
        String::new()
    };
    let search = log
        .search
        .as_ref()
        .map(|s| format!(" · /{s}"))
        .unwrap_or_default();
    let onoff = |b: bool| if b { "on" } else { "off" };
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "build {} {what} · {mode} · {} lines{dropped} · wrap {} · time {}{search}",
                log.build,
                log.lines.len(),
                onoff(log.wrap),
                onoff(log.timestamps),
            ),
            t.header(),
        )),
        head,
    );
    if body.height == 0 || body.width == 0 {
        return;
    }
    if log.lines.is_empty() {
        let text = if log.ended {
            "the log is empty"
        } else if log.sub.is_none() && !app.is_connected() {
            "not connected to kilnd"
        } else {
            "waiting for lines…"
        };
        return empty(f, app, body, text);
    }
    let page = usize::from(body.height);
    let width = usize::from(body.width);
    let mut start = log.shown_top(page);
    if log.wrap && log.follow {
        // Walk back from the end until the wrapped lines fill the page.
        let mut rows = 0;
        start = log.lines.len();
        while start > 0 {
            let w = line_text(&log.lines[start - 1], log.timestamps).width();
            let need = w.div_ceil(width).max(1);
            if rows + need > page {
                break;
            }
            rows += need;
            start -= 1;
        }
        start = start.min(log.lines.len().saturating_sub(1));
    }
    let lines: Vec<Line> = log
        .lines
        .iter()
        .enumerate()
        .skip(start)
        .take(page)
        .map(|(i, l)| {
            let text = line_text(l, log.timestamps);
            if log.found == Some(i) {
                Line::styled(text, t.selected())
            } else if l.stream == LogStream::Stderr {
                Line::styled(text, t.fg(ratatui::style::Color::Yellow))
            } else if l.stream == LogStream::Kiln {
                Line::styled(text, t.header())
            } else {
                Line::from(text)
            }
        })
        .collect();
    let mut p = Paragraph::new(lines);
    if log.wrap {
        p = p.wrap(Wrap { trim: false });
    }
    f.render_widget(p, body);
}
