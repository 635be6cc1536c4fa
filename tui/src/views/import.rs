//! The Azure import window: what kilnd could not carry over from the file (each with its field
//! path), then the template it made, as TOML; `enter` stores it, `esc` drops it.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::{popup, Theme};
use crate::app::import::window_lines;
use crate::app::App;

pub fn draw_window(f: &mut Frame, app: &App, scroll: usize, area: Rect) {
    let Some(import) = app.import.as_ref() else {
        return;
    };
    let t = Theme::of(app);
    let warnings = import.warnings.len();
    let lines: Vec<Line> = window_lines(import)
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if i > 0 && i <= warnings {
                Line::styled(l, t.error())
            } else {
                Line::from(l)
            }
        })
        .collect();
    let Some(window) = popup(area, 100, lines.len() + 2) else {
        return;
    };
    let title = if import.tag != 0 {
        format!(" import {} as {} · storing… ", import.path, import.name)
    } else {
        format!(
            " import {} as {} · enter store · esc drop · j/k scroll ",
            import.path, import.name
        )
    };
    f.render_widget(Clear, window);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((u16::try_from(scroll).unwrap_or(0), 0))
            .block(Block::bordered().title(title)),
        window,
    );
}
