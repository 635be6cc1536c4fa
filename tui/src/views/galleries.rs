//! The Images view's Galleries tab: one row per image definition (`GALLERY/IMAGE`), a details
//! pane with its versions (latest, excluded, deprecated marked) and a window with the whole
//! gallery.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::builds::size_text;
use super::{draw_list_table, empty, popup, Theme};
use crate::app::galleries::Row as GalleryRow;
use crate::app::App;
use crate::cli::gallery::retention_text;
use kiln_shared::protocol::{Gallery, GalleryImage};

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let g = &app.images.galleries;
    let rows = g.rows();
    if rows.is_empty() {
        let text = match (g.loaded, g.unsupported, app.is_connected()) {
            (_, true, _) => "this kilnd has no galleries (it is older than the dashboard)",
            (false, _, true) => "loading galleries…",
            (false, _, false) => "not connected to kilnd",
            (true, _, _) => {
                "no galleries yet: `kiln gallery create NAME`, then a template's gallery target \
                 publishes versions"
            }
        };
        return empty(f, app, area, text);
    }
    let (list, pane) = super::list_and_details(area);
    let table = Table::new(
        rows.iter().map(|r| {
            Row::new(vec![
                r.name(),
                r.image.map_or("-".into(), |i| i.os.clone()),
                r.image.map_or(0, |i| i.versions.len()).to_string(),
                r.image
                    .and_then(|i| i.latest.clone())
                    .unwrap_or_else(|| "-".into()),
                r.owner(),
            ])
        }),
        [
            Constraint::Fill(1),
            Constraint::Length(13),
            Constraint::Length(4),
            Constraint::Length(10),
            Constraint::Length(18),
        ],
    );
    let header = ["NAME", "OS", "VERS", "LATEST", "OWNER"];
    draw_list_table(f, app, list, table, &header, g.sel);
    if let (Some(pane), Some(row)) = (pane, g.selected()) {
        let t = Theme::of(app);
        let mut lines = vec![Line::styled(
            format!("{} · {}", row.name(), row.owner()),
            t.header(),
        )];
        lines.extend(pane_lines(row).into_iter().map(Line::from));
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" versions ")),
            pane,
        );
    }
}

/// The details pane of a row: the definition's OS, latest and retention, then its versions.
pub fn pane_lines(row: GalleryRow) -> Vec<String> {
    let Some(d) = row.image else {
        return vec![
            "no image definitions yet:".into(),
            format!(
                "`kiln gallery image create {}/IMAGE --os OS`",
                row.gallery.name
            ),
            "or a build with a gallery target".into(),
        ];
    };
    let mut out = vec![format!(
        "{} · latest {} · {}",
        d.os,
        d.latest.as_deref().unwrap_or("none"),
        retention_text(&d.retention)
    )];
    if d.versions.is_empty() && row.gallery.share_status.is_some() && !row.gallery.images.is_empty()
    {
        out.push("versions are listed once accepted (a)".into());
    }
    out.extend(d.versions.iter().map(|v| {
        format!(
            "{:<9} {} {}{}",
            v.version,
            v.created_at.format("%m-%d %H:%M"),
            v.state.as_str(),
            marks(d, &v.version)
        )
    }));
    out
}

/// ` latest`, ` excluded`, ` deprecated`, as they apply to version `version` of `d`.
fn marks(d: &GalleryImage, version: &str) -> String {
    let Some(v) = d.versions.iter().find(|v| v.version == version) else {
        return String::new();
    };
    let mut out = String::new();
    if d.latest.as_deref() == Some(version) {
        out.push_str(" ★latest");
    }
    if v.exclude_from_latest {
        out.push_str(" excluded");
    }
    if v.deprecated_at.is_some() {
        out.push_str(" deprecated");
    }
    out
}

/// The selected row's gallery in full, in a window (enter opens it, any key closes it).
pub fn draw_window(f: &mut Frame, app: &App, area: Rect) {
    let Some(row) = app.images.galleries.selected() else {
        return;
    };
    let lines = window_lines(row.gallery);
    let Some(window) = popup(area, 90, lines.len() + 2) else {
        return;
    };
    f.render_widget(Clear, window);
    f.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).block(
            Block::bordered().title(format!(" gallery {} · any key closes ", row.gallery.name)),
        ),
        window,
    );
}

/// Every definition of `g` and every version, with its image id, build and size.
pub fn window_lines(g: &Gallery) -> Vec<String> {
    let mut out = vec![format!(
        "project {} · created {}",
        g.project,
        g.created_at.format("%Y-%m-%d %H:%M UTC")
    )];
    if !g.description.is_empty() {
        out.push(g.description.clone());
    }
    if let Some(s) = g.share_status {
        out.push(format!("offered to this project: {}", s.as_str()));
    } else if !g.members.is_empty() {
        out.push(format!(
            "shared with {}",
            crate::cli::image::members_text(&g.members)
        ));
    }
    for d in &g.images {
        out.push(String::new());
        out.push(format!(
            "{}/{} ({}) · latest {} · {}",
            g.name,
            d.name,
            d.os,
            d.latest.as_deref().unwrap_or("none"),
            retention_text(&d.retention)
        ));
        for v in &d.versions {
            out.push(format!(
                "  {:<9} {:<10} {} {:>9}{}  {}{}",
                v.version,
                v.state.as_str(),
                v.created_at.format("%Y-%m-%d %H:%M"),
                size_text(v.file_size),
                marks(d, &v.version),
                v.image_id,
                v.build.map_or(String::new(), |b| format!(" build {b}")),
            ));
        }
    }
    out
}
