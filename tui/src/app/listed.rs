//! A list the dashboard shows: its items as kilnd last listed them, the selected row, and where
//! the `*.list` call that fills it stands. Every list view holds one.

use super::keymap::Cmd;

#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// Index into the rows the view shows (the items its filter lets through).
    pub sel: usize,
    /// A list call is in flight (so polling never piles requests up).
    pub pending: bool,
    /// The list has been received at least once since connecting.
    pub loaded: bool,
}

impl<T> Default for Listed<T> {
    fn default() -> Listed<T> {
        Listed {
            items: Vec::new(),
            sel: 0,
            pending: false,
            loaded: false,
        }
    }
}

impl<T> Listed<T> {
    /// Whether to send the list call now: none is in flight and `wanted`. Marks it in flight.
    pub fn request(&mut self, wanted: bool) -> bool {
        if self.pending || !wanted {
            return false;
        }
        self.pending = true;
        true
    }

    /// Moves the selection `delta` rows within `len` shown rows.
    pub fn move_sel(&mut self, delta: isize, len: usize) {
        self.sel = moved(self.sel, delta, len);
    }

    /// Selects row `found` after the list changed (the row selected before, found again), or
    /// keeps the row number, within `len` shown rows.
    pub fn reselect(&mut self, found: Option<usize>, len: usize) {
        self.sel = found.unwrap_or(self.sel).min(len.saturating_sub(1));
    }
}

/// Moves a selection `delta` rows within `len` rows.
pub fn moved(sel: usize, delta: isize, len: usize) -> usize {
    let to = if delta < 0 {
        sel.saturating_sub(delta.unsigned_abs())
    } else {
        sel.saturating_add(delta.unsigned_abs())
    };
    to.min(len.saturating_sub(1))
}

/// How many rows a movement command moves, `page` rows being one page; `None` for the rest.
pub fn movement(cmd: Cmd, page: usize) -> Option<isize> {
    let page = page as isize;
    match cmd {
        Cmd::Up => Some(-1),
        Cmd::Down => Some(1),
        Cmd::PageUp => Some(-page),
        Cmd::PageDown => Some(page),
        Cmd::Top => Some(isize::MIN / 2),
        Cmd::Bottom => Some(isize::MAX / 2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moving from `sel` by `delta` within `len` rows lands on `to`.
    fn check(sel: usize, delta: isize, len: usize, to: usize) {
        assert_eq!(moved(sel, delta, len), to, "{sel} by {delta} in {len}");
    }

    #[test]
    fn a_selection_stays_within_its_rows() {
        check(0, -1, 5, 0);
        check(0, 1, 5, 1);
        check(3, 10, 5, 4);
        check(3, isize::MIN / 2, 5, 0);
        check(0, isize::MAX / 2, 5, 4);
        check(2, 1, 0, 0);
    }

    #[test]
    fn a_changed_list_keeps_the_selected_row_or_its_number_within_bounds() {
        let mut l = Listed::<u8> {
            sel: 3,
            ..Listed::default()
        };
        l.reselect(Some(1), 5);
        assert_eq!(l.sel, 1, "found again");
        l.sel = 3;
        l.reselect(None, 5);
        assert_eq!(l.sel, 3, "gone: the same row");
        l.reselect(None, 2);
        assert_eq!(l.sel, 1, "the list got shorter");
    }

    #[test]
    fn a_list_call_is_sent_once_until_answered() {
        let mut l = Listed::<u8>::default();
        assert!(!l.request(false));
        assert!(l.request(true));
        assert!(!l.request(true), "still in flight");
        l.pending = false;
        assert!(l.request(true));
    }
}
