//! The base-image picker window: the images of the template's OS that a build (or the form's
//! source image) can start from, drawn over the view that opened it.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::builds::size_text;
use super::{fit, popup, Theme};
use crate::app::picker::PickFor;
use crate::app::App;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let Some(p) = app.picker() else {
        return;
    };
    let t = Theme::of(app);
    let choices = app.picker_choices();
    let (title, about) = match &p.purpose {
        PickFor::Build {
            template,
            image_name,
        } => (
            format!(" base image for {template} "),
            format!("build {template} into image {image_name}, starting from:"),
        ),
        PickFor::Source => (
            " source image ".to_string(),
            "the template's default base image (a build may pick another):".to_string(),
        ),
    };
    let source = app.build_source.as_ref().and_then(|b| b.image.clone());
    let rows = choices.len().max(1) + 5;
    let Some(window) = popup(area, 72, rows) else {
        return;
    };
    let inner = usize::from(window.width.saturating_sub(2));
    let mut lines = vec![Line::from(fit(&about, inner))];
    lines.push(Line::styled(
        fit(
            &format!(
                "  {:<24} {:<8} {:>10}  CREATED (UTC)",
                "NAME", "VISIBLE", "SIZE"
            ),
            inner,
        ),
        t.header(),
    ));
    if choices.is_empty() {
        let text = if app.images.list.loaded {
            format!(
                "no available {} image: `kiln image bootstrap {}` makes one",
                p.os, p.os
            )
        } else {
            "loading images…".to_string()
        };
        lines.push(Line::styled(fit(&format!("  {text}"), inner), t.dim()));
    }
    // Keep the selection on screen in a short window.
    let room = usize::from(window.height.saturating_sub(5)).max(1);
    let first = p.sel.saturating_sub(room - 1);
    for (i, choice) in choices.iter().enumerate().skip(first).take(room) {
        let mark = if i == p.sel { "▶ " } else { "  " };
        let image = choice.image;
        let mut note = String::new();
        let when = match &image.gallery {
            // The version a build queued now would take.
            Some(g) if choice.latest => format!("latest = {:<7}", g.version),
            _ => image.created_at.format("%Y-%m-%d %H:%M").to_string(),
        };
        if source.as_deref() == Some(choice.name.as_str())
            && matches!(p.purpose, PickFor::Build { .. })
        {
            note.push_str("  (template's source)");
        }
        let visible = if choice.latest {
            "gallery"
        } else {
            image.visibility.as_str()
        };
        let text = format!(
            "{mark}{} {visible:<8} {:>10}  {when}{note}",
            fit(&choice.name, 24),
            size_text(image.file_size),
        );
        let style = if i == p.sel {
            t.selected()
        } else {
            ratatui::style::Style::new()
        };
        lines.push(Line::styled(fit(&text, inner), style));
    }
    lines.push(Line::styled(
        fit("enter use · esc cancel · j/k move", inner),
        t.dim(),
    ));
    f.render_widget(Clear, window);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!("{title}· {} ", p.os))),
        window,
    );
}
