//! The window over the current view that takes the keyboard while it is open: the key help, the
//! base-image picker, an image's or a template's details. One at a time; only the help can open
//! over another window (the picker's `?`), and closing it shows the picker again.

use super::keymap::{self, Cmd, Key};
use super::picker::{self, Picker};
use super::{App, Effect};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// The key help, scrolled down this many lines, over the picker when opened from it.
    Help { scroll: usize, over: Option<Picker> },
    /// The base-image picker (over the form or the templates view).
    Picker(Picker),
    /// The selected image's details; any key closes it.
    ImageWindow,
    /// The selected template's details, scrolled down this many lines.
    TemplateWindow { scroll: usize },
    /// An Azure template's import: what was not carried over, the template (enter stores it).
    ImportWindow { scroll: usize },
}

impl Overlay {
    /// The picker, open or under the help.
    pub fn picker(&self) -> Option<&Picker> {
        match self {
            Overlay::Picker(p) | Overlay::Help { over: Some(p), .. } => Some(p),
            _ => None,
        }
    }

    pub fn picker_mut(&mut self) -> Option<&mut Picker> {
        match self {
            Overlay::Picker(p) | Overlay::Help { over: Some(p), .. } => Some(p),
            _ => None,
        }
    }
}

/// Opens the help over whatever is on screen (the picker stays under it).
pub(super) fn open_help(app: &mut App) {
    let over = match app.overlay.take() {
        Some(Overlay::Picker(p)) => Some(p),
        _ => None,
    };
    app.overlay = Some(Overlay::Help { scroll: 0, over });
}

/// A key while `overlay` (taken from `app`) is open.
pub(super) fn on_key(app: &mut App, overlay: Overlay, key: Key) -> Vec<Effect> {
    let global = keymap::scoped_command(keymap::Scope::Global, key);
    match overlay {
        Overlay::Help { scroll, over } => {
            app.overlay = match global {
                Some(Cmd::Down) => Some(Overlay::Help {
                    scroll: scroll.saturating_add(1),
                    over,
                }),
                Some(Cmd::Up) => Some(Overlay::Help {
                    scroll: scroll.saturating_sub(1),
                    over,
                }),
                _ => over.map(Overlay::Picker),
            };
            Vec::new()
        }
        Overlay::Picker(p) => {
            app.overlay = Some(Overlay::Picker(p));
            picker::on_key(app, key)
        }
        Overlay::ImageWindow => Vec::new(),
        Overlay::ImportWindow { scroll } => super::import::on_key(app, scroll, key),
        Overlay::TemplateWindow { scroll } => {
            let page = app.list_page();
            let max = crate::views::templates::window_max_scroll(app);
            app.overlay = match global {
                Some(Cmd::Down) => Some(scroll + 1),
                Some(Cmd::Up) => Some(scroll.saturating_sub(1)),
                Some(Cmd::PageDown) => Some(scroll + page),
                Some(Cmd::PageUp) => Some(scroll.saturating_sub(page)),
                Some(Cmd::Top) => Some(0),
                Some(Cmd::Bottom) => Some(max),
                _ => None,
            }
            .map(|s| Overlay::TemplateWindow { scroll: s.min(max) });
            Vec::new()
        }
    }
}
