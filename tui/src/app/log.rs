//! The log viewer's state: a bounded buffer of one build's log (or serial console), where the
//! view is scrolled to, whether it follows new lines, and the search; its `build.logs` stream
//! and what its keys do.

use std::collections::VecDeque;

use kiln_shared::build::{BuildLogsParams, LogLine, SubReply};
use kiln_shared::methods::Name;

use super::keymap::Cmd;
use super::listed::movement;
use super::{builds, call, App, CallError, Effect, Note, Prompt, Request, View};

/// Lines kept in memory; older ones are dropped (and counted) as new ones arrive.
pub const LOG_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LogView {
    pub build: u64,
    /// The VM's serial console instead of the build log.
    pub serial: bool,
    /// Tags the `build.logs` call this view waits for; replies to older calls are ignored.
    pub session: u64,
    /// The daemon's subscription id, once `build.logs` answered.
    pub sub: Option<u64>,
    pub lines: VecDeque<LogLine>,
    /// Lines dropped from the front to stay within `LOG_CAPACITY`.
    pub dropped: u64,
    /// Sequence number of the next line expected (where to resume after a reconnect).
    pub next_seq: u64,
    /// Whether the view sticks to the end; scrolling up pauses it, `G`/End resumes it.
    pub follow: bool,
    /// Index in `lines` of the top line shown while paused.
    pub top: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub search: Option<String>,
    /// The line the last search landed on.
    pub found: Option<usize>,
    /// The daemon said the log is complete (`build.log.end`).
    pub ended: bool,
}

impl LogView {
    pub fn new(build: u64, serial: bool, session: u64) -> LogView {
        LogView {
            build,
            serial,
            session,
            sub: None,
            lines: VecDeque::new(),
            dropped: 0,
            next_seq: 0,
            follow: true,
            top: 0,
            wrap: false,
            timestamps: false,
            search: None,
            found: None,
            ended: false,
        }
    }

    /// Appends a line, dropping the oldest beyond `LOG_CAPACITY`; a paused view stays on the same
    /// text. Lines already seen (after a reconnect) are skipped.
    pub fn push(&mut self, line: LogLine) {
        if line.seq < self.next_seq {
            return;
        }
        self.next_seq = line.seq.saturating_add(1);
        if self.lines.len() >= LOG_CAPACITY {
            self.lines.pop_front();
            self.dropped += 1;
            self.top = self.top.saturating_sub(1);
            self.found = self.found.and_then(|f| f.checked_sub(1));
        }
        self.lines.push_back(line);
    }

    /// The top line index when the last `page` lines are shown.
    pub fn max_top(&self, page: usize) -> usize {
        self.lines.len().saturating_sub(page)
    }

    /// The top line index the view shows now.
    pub fn shown_top(&self, page: usize) -> usize {
        if self.follow {
            self.max_top(page)
        } else {
            self.top.min(self.max_top(page))
        }
    }

    /// Scrolls by `delta` lines (negative: up). Up pauses following; reaching the end resumes it.
    pub fn scroll(&mut self, delta: isize, page: usize) {
        let from = self.shown_top(page);
        let to = if delta < 0 {
            from.saturating_sub(delta.unsigned_abs())
        } else {
            from.saturating_add(delta.unsigned_abs())
        };
        if to >= self.max_top(page) {
            self.follow = true;
        } else {
            self.follow = false;
            self.top = to;
        }
    }

    pub fn go_top(&mut self) {
        self.follow = false;
        self.top = 0;
    }

    pub fn go_end(&mut self) {
        self.follow = true;
    }

    /// Moves to the next (or previous) line matching the search, case-insensitively, starting
    /// after (before) `from`. Returns whether one was found.
    pub fn find(&mut self, forward: bool, from: usize) -> bool {
        let Some(needle) = self.search.as_ref().map(|s| s.to_lowercase()) else {
            return false;
        };
        if needle.is_empty() {
            return false;
        }
        let hit = |i: &usize| self.lines[*i].line.to_lowercase().contains(&needle);
        let found = if forward {
            (from.saturating_add(1)..self.lines.len()).find(hit)
        } else {
            (0..from.min(self.lines.len())).rev().find(hit)
        };
        if let Some(i) = found {
            self.found = Some(i);
            self.follow = false;
            self.top = i;
        }
        found.is_some()
    }
}

/// Notifications kept while a `build.logs` reply (which names the subscription) is on its way.
const EARLY_NOTES_MAX: usize = LOG_CAPACITY;

/// Opens (or reopens, after a reconnect or a switch to the serial console) the log of the
/// build, following it from the next line not yet seen.
pub(super) fn follow(app: &mut App) -> Vec<Effect> {
    let session = app.tag();
    let connected = app.is_connected();
    app.early_notes.clear();
    let Some(log) = app.log.as_mut() else {
        return Vec::new();
    };
    // The stream being replaced ends on kilnd's side too.
    let mut fx: Vec<Effect> = log.sub.take().map(unsubscribe).into_iter().collect();
    // Session 0 means no `build.logs` call is on its way.
    log.session = if connected { session } else { 0 };
    if !connected {
        return fx;
    }
    let params = BuildLogsParams {
        id: log.build,
        follow: true,
        from_line: Some(log.next_seq),
        serial: log.serial,
    };
    fx.push(call(session, Request::BuildLogs(params)));
    fx
}

/// Shows the log of `build`, opening it unless it is the one open.
pub(super) fn open(app: &mut App, build: u64) -> Vec<Effect> {
    if app.log.as_ref().is_none_or(|l| l.build != build) {
        let old = app.log.take().and_then(|l| l.sub);
        app.log = Some(LogView::new(build, false, 0));
        app.view = View::Log;
        let mut fx: Vec<Effect> = old.map(unsubscribe).into_iter().collect();
        fx.extend(follow(app));
        return fx;
    }
    app.view = View::Log;
    Vec::new()
}

/// Ends log stream `sub` on kilnd's side (`build.logs.unsubscribe`).
pub(super) fn unsubscribe(sub: u64) -> Effect {
    call(0, Request::BuildLogsUnsubscribe(SubReply { sub }))
}

/// `build.logs` answered call `tag` with the subscription.
pub(super) fn on_subscribed(app: &mut App, tag: u64, r: SubReply) -> Vec<Effect> {
    let Some(log) = app.log.as_mut().filter(|l| l.session == tag) else {
        // A stream nobody shows any more (another build's, or replaced); the lines kept so far
        // may be the shown stream's, whose reply is still on its way.
        return vec![unsubscribe(r.sub)];
    };
    log.sub = Some(r.sub);
    let early = std::mem::take(&mut app.early_notes);
    for note in early {
        on_notification(app, note);
    }
    Vec::new()
}

/// `build.logs` refused call `tag`: said in the message line if the view still waits for it.
pub(super) fn on_refused(app: &mut App, tag: u64, e: CallError) {
    match app.log.as_mut() {
        Some(l) if l.session == tag => l.session = 0,
        _ => return,
    }
    app.message = Some(format!("{}: {e}", Name::BuildLogs.as_str()));
}

/// A `build.log` or `build.log.end` notification.
pub(super) fn on_notification(app: &mut App, note: Note) {
    let sub = match &note {
        Note::Log(n) => n.sub,
        Note::LogEnd(e) => e.sub,
        Note::Event(_) | Note::Progress(_) => return,
    };
    let Some(log) = app.log.as_mut() else {
        return;
    };
    match log.sub {
        // The reply naming our subscription may still be on its way: keep the line for it.
        None if log.session != 0 => {
            if app.early_notes.len() < EARLY_NOTES_MAX {
                app.early_notes.push(note);
            }
            return;
        }
        Some(s) if sub == s => {}
        _ => return,
    }
    match note {
        Note::Log(n) => log.push(n.line),
        Note::LogEnd(_) => log.ended = true,
        Note::Event(_) | Note::Progress(_) => {}
    }
}

/// `enter` on the search prompt: look for `input`.
pub(super) fn search(app: &mut App, input: String) {
    let page = app.log_page();
    if let Some(log) = app.log.as_mut() {
        log.search = Some(input.clone()).filter(|s| !s.is_empty());
        // Following: look back from the end; paused: look on from the top line.
        let found = if log.follow {
            log.find(false, log.lines.len())
        } else {
            let from = log.shown_top(page);
            log.find(true, from) || log.find(false, from.saturating_add(1))
        };
        if !found && !input.is_empty() {
            app.message = Some(format!("no line matches {input:?}"));
        }
    }
}

/// A command in the log view.
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    let page = app.log_page();
    if let Some(delta) = movement(cmd, app.list_page()) {
        if let Some(log) = app.log.as_mut() {
            match cmd {
                Cmd::Top => log.go_top(),
                Cmd::Bottom => log.go_end(),
                Cmd::PageUp | Cmd::PageDown => log.scroll(delta.signum() * page as isize, page),
                _ => log.scroll(delta, page),
            }
        }
        return Vec::new();
    }
    match cmd {
        Cmd::Back => {
            app.view = if app.detail.build.is_some() {
                View::Detail
            } else {
                View::Builds
            }
        }
        Cmd::Find => {
            let input = app
                .log
                .as_ref()
                .and_then(|l| l.search.clone())
                .unwrap_or_default();
            app.prompt = Some(Prompt::Search { input });
        }
        Cmd::FindNext | Cmd::FindPrev => {
            if let Some(log) = app.log.as_mut() {
                let from = log.found.unwrap_or_else(|| log.shown_top(page));
                if log.search.is_none() {
                    app.message = Some("no search yet: press / to search".into());
                } else if !log.find(cmd == Cmd::FindNext, from) {
                    app.message = Some("no more matches".into());
                }
            }
        }
        Cmd::Cancel => {
            if let Some(id) = app.log.as_ref().map(|l| l.build) {
                builds::confirm_cancel(app, id);
            }
        }
        Cmd::Wrap => {
            if let Some(l) = app.log.as_mut() {
                l.wrap = !l.wrap;
            }
        }
        Cmd::Timestamps => {
            if let Some(l) = app.log.as_mut() {
                l.timestamps = !l.timestamps;
            }
        }
        Cmd::Serial => {
            if let Some(l) = app.log.as_ref() {
                let (build, serial) = (l.build, !l.serial);
                let mut fresh = LogView::new(build, serial, 0);
                fresh.wrap = l.wrap;
                fresh.timestamps = l.timestamps;
                // The other stream's subscription moves over, so `follow` ends it.
                fresh.sub = l.sub;
                app.log = Some(fresh);
                return follow(app);
            }
        }
        _ => {}
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> LogLine {
        LogLine {
            seq,
            ts: chrono::DateTime::UNIX_EPOCH,
            stream: kiln_shared::build::LogStream::Stdout,
            step: None,
            line: format!("line {seq}"),
        }
    }

    #[test]
    fn the_buffer_is_bounded_and_a_paused_view_keeps_its_text() {
        let mut v = LogView::new(1, false, 1);
        for s in 0..LOG_CAPACITY as u64 {
            v.push(line(s));
        }
        v.scroll(-5, 10);
        assert!(!v.follow);
        let shown = v.lines[v.shown_top(10)].line.clone();
        for s in LOG_CAPACITY as u64..LOG_CAPACITY as u64 + 3 {
            v.push(line(s));
        }
        assert_eq!(v.lines.len(), LOG_CAPACITY);
        assert_eq!(v.dropped, 3);
        assert_eq!(v.lines[v.shown_top(10)].line, shown);
    }

    #[test]
    fn lines_seen_before_a_reconnect_are_not_repeated() {
        let mut v = LogView::new(1, false, 1);
        v.push(line(0));
        v.push(line(1));
        v.push(line(1));
        v.push(line(0));
        assert_eq!(v.lines.len(), 2);
        assert_eq!(v.next_seq, 2);
    }

    #[test]
    fn scrolling_down_to_the_end_follows_again() {
        let mut v = LogView::new(1, false, 1);
        for s in 0..30 {
            v.push(line(s));
        }
        v.scroll(-1, 10);
        assert!(!v.follow);
        assert_eq!(v.shown_top(10), 19);
        v.scroll(1, 10);
        assert!(v.follow);
    }

    #[test]
    fn search_moves_both_ways() {
        let mut v = LogView::new(1, false, 1);
        for s in 0..30 {
            v.push(line(s));
        }
        v.search = Some("LINE 2".into());
        assert!(v.find(false, 30));
        assert_eq!(v.found, Some(29));
        assert!(v.find(false, 29));
        assert_eq!(v.found, Some(28));
        assert!(v.find(true, 2));
        assert_eq!(v.found, Some(20));
        v.search = Some("absent".into());
        assert!(!v.find(true, 0));
        assert_eq!(v.found, Some(20));
    }
}
