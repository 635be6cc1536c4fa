//! The dashboard's key map: one table of bindings, read both to dispatch keys and to write the
//! help overlay, so the help can never disagree with what the keys do.

use super::View;

/// A key press as the dashboard understands it (the shell translates terminal events into these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
}

/// What a bound key asks for; `update` gives each its meaning in the current view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Quit,
    Help,
    NextView,
    PrevView,
    Back,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Find,
    FindNext,
    FindPrev,
    StartBuild,
    Delete,
    Cancel,
    Logs,
    Wrap,
    Timestamps,
    Serial,
}

/// One line of the key map: the keys, where they apply (`None`: everywhere), what they do.
pub struct Binding {
    pub scope: Option<View>,
    pub keys: &'static [Key],
    pub cmd: Cmd,
    /// One word for the hint line.
    pub short: &'static str,
    pub help: &'static str,
}

const fn bind(
    scope: Option<View>,
    keys: &'static [Key],
    cmd: Cmd,
    short: &'static str,
    help: &'static str,
) -> Binding {
    Binding {
        scope,
        keys,
        cmd,
        short,
        help,
    }
}

use Key::*;
const T: Option<View> = Some(View::Templates);
const B: Option<View> = Some(View::Builds);
const D: Option<View> = Some(View::Detail);
const I: Option<View> = Some(View::Images);
const L: Option<View> = Some(View::Log);

/// Every binding. View bindings come first: they win over global ones for the same key.
#[rustfmt::skip]
pub const BINDINGS: &[Binding] = &[
    bind(T, &[Char('/')], Cmd::Find, "filter", "filter templates (name, OS, application)"),
    bind(T, &[Enter], Cmd::Open, "builds", "show the template's builds"),
    bind(T, &[Char('b')], Cmd::StartBuild, "build", "start a build (asks for the image name)"),
    bind(T, &[Char('D')], Cmd::Delete, "delete", "delete the template (type its name to confirm)"),
    bind(B, &[Enter], Cmd::Open, "open", "open the build's details"),
    bind(B, &[Char('l')], Cmd::Logs, "log", "follow the build's log"),
    bind(B, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(D, &[Char('l'), Enter], Cmd::Logs, "log", "follow the build's log"),
    bind(D, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(I, &[Char('D')], Cmd::Delete, "delete", "delete the image (type its name to confirm)"),
    bind(L, &[Char('G'), End], Cmd::Bottom, "follow", "go to the end and follow again"),
    bind(L, &[Char('w')], Cmd::Wrap, "wrap", "wrap long lines on/off"),
    bind(L, &[Char('t')], Cmd::Timestamps, "time", "timestamps (UTC) on/off"),
    bind(L, &[Char('/')], Cmd::Find, "search", "search the log"),
    bind(L, &[Char('n')], Cmd::FindNext, "next", "next match"),
    bind(L, &[Char('N')], Cmd::FindPrev, "prev", "previous match"),
    bind(L, &[Char('s')], Cmd::Serial, "serial", "build log / VM serial console"),
    bind(L, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(None, &[Char('j'), Down], Cmd::Down, "", "down (in a log: scroll; follow resumes at the end)"),
    bind(None, &[Char('k'), Up], Cmd::Up, "", "up (in a log: scroll, which pauses following)"),
    bind(None, &[PageDown], Cmd::PageDown, "", "page down"),
    bind(None, &[PageUp], Cmd::PageUp, "", "page up"),
    bind(None, &[Char('g'), Home], Cmd::Top, "", "first line"),
    bind(None, &[Char('G'), End], Cmd::Bottom, "", "last line"),
    bind(None, &[Tab], Cmd::NextView, "", "next view"),
    bind(None, &[BackTab], Cmd::PrevView, "", "previous view"),
    bind(None, &[Esc], Cmd::Back, "", "back / clear the filter"),
    bind(None, &[Char('?')], Cmd::Help, "", "this help"),
    bind(None, &[Char('q'), Ctrl('c')], Cmd::Quit, "", "quit (ctrl-c quits from anywhere)"),
];

/// The command `key` means in `view`, if any.
pub fn command_for(view: View, key: Key) -> Option<Cmd> {
    let scoped = BINDINGS
        .iter()
        .find(|b| b.scope == Some(view) && b.keys.contains(&key));
    scoped
        .or_else(|| {
            BINDINGS
                .iter()
                .find(|b| b.scope.is_none() && b.keys.contains(&key))
        })
        .map(|b| b.cmd)
}

/// How a key is written in the help.
pub fn key_label(key: Key) -> String {
    match key {
        Char(' ') => "space".into(),
        Char(c) => c.to_string(),
        Ctrl(c) => format!("ctrl-{c}"),
        Enter => "enter".into(),
        Esc => "esc".into(),
        Tab => "tab".into(),
        BackTab => "shift-tab".into(),
        Backspace => "backspace".into(),
        Up => "↑".into(),
        Down => "↓".into(),
        PageUp => "pgup".into(),
        PageDown => "pgdn".into(),
        Home => "home".into(),
        End => "end".into(),
    }
}

/// The help overlay's lines, generated from `BINDINGS`: a heading per scope, then `keys  help`.
pub fn help_lines() -> Vec<String> {
    let scopes = [
        (None, "Everywhere"),
        (T, "Templates"),
        (B, "Builds"),
        (I, "Images"),
        (D, "Build detail"),
        (L, "Log"),
    ];
    let mut lines = Vec::new();
    for (scope, title) in scopes {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(title.to_string());
        for b in BINDINGS.iter().filter(|b| b.scope == scope) {
            let keys: Vec<String> = b.keys.iter().map(|k| key_label(*k)).collect();
            lines.push(format!("  {:<12} {}", keys.join(" "), b.help));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_bindings_win_over_global_ones() {
        assert_eq!(command_for(View::Templates, Char('/')), Some(Cmd::Find));
        assert_eq!(command_for(View::Log, Char('/')), Some(Cmd::Find));
        assert_eq!(command_for(View::Detail, Enter), Some(Cmd::Logs));
        assert_eq!(command_for(View::Builds, Enter), Some(Cmd::Open));
        assert_eq!(command_for(View::Builds, Char('j')), Some(Cmd::Down));
        assert_eq!(command_for(View::Templates, Char('x')), None);
    }

    #[test]
    fn help_names_every_binding() {
        let help = help_lines().join("\n");
        for b in BINDINGS {
            assert!(help.contains(b.help), "help lacks {:?}", b.help);
        }
        assert!(help.contains("ctrl-c"));
    }

    #[test]
    fn no_key_is_bound_twice_in_one_scope() {
        for (i, a) in BINDINGS.iter().enumerate() {
            for b in &BINDINGS[i + 1..] {
                if a.scope == b.scope {
                    for k in a.keys {
                        assert!(!b.keys.contains(k), "{k:?} bound twice in {:?}", a.scope);
                    }
                }
            }
        }
    }
}
