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
    Left,
    Right,
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
    NewTemplate,
    ImportAzure,
    EditTemplate,
    PrevTab,
    NextTab,
    ShowPublic,
    ShowPrivate,
    ShowShared,
    ShowGalleries,
    Save,
    NextField,
    PrevField,
    Activate,
    PrevChoice,
    NextChoice,
    EditToml,
    Describe,
    RunInstance,
    Stop,
    Start,
    Capture,
    Attach,
    Share,
    Accept,
    Reject,
}

/// Where a binding applies: everywhere, in one view, or in the base-image picker (a window over
/// the view that opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    In(View),
    Picker,
}

/// One line of the key map: the keys, where they apply, what they do.
pub struct Binding {
    pub scope: Scope,
    pub keys: &'static [Key],
    pub cmd: Cmd,
    /// One word for the hint line.
    pub short: &'static str,
    pub help: &'static str,
}

const fn bind(
    scope: Scope,
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
const T: Scope = Scope::In(View::Templates);
const B: Scope = Scope::In(View::Builds);
const D: Scope = Scope::In(View::Detail);
const I: Scope = Scope::In(View::Images);
const N: Scope = Scope::In(View::Instances);
const L: Scope = Scope::In(View::Log);
const F: Scope = Scope::In(View::Form);
const P: Scope = Scope::Picker;
const ALL: Scope = Scope::Global;

/// Every binding (a binding without a short word is left out of the hint line: the Images tab
/// bar names its tab keys itself). View bindings come first: they win over global ones for the same key. The
/// template editor takes the keyboard whole (its text fields take every character), so only its
/// own bindings apply there.
#[rustfmt::skip]
pub const BINDINGS: &[Binding] = &[
    bind(T, &[Char('n')], Cmd::NewTemplate, "new", "new template (opens the editor form)"),
    bind(T, &[Char('i')], Cmd::ImportAzure, "", "import an Azure Image Builder template (asks its file)"),
    bind(T, &[Char('e')], Cmd::EditTemplate, "edit", "edit the template (a new revision when saved)"),
    bind(T, &[Char('/')], Cmd::Find, "filter", "filter templates (name, OS, application)"),
    bind(T, &[Enter], Cmd::Open, "builds", "show the template's builds"),
    bind(T, &[Char('d')], Cmd::Describe, "info", "all details: every field, revision, build and image (j/k scroll)"),
    bind(T, &[Char('b')], Cmd::StartBuild, "build", "start a build (asks the image name, then the base image)"),
    bind(T, &[Char('D')], Cmd::Delete, "delete", "delete the template (type its name to confirm)"),
    bind(B, &[Enter], Cmd::Open, "open", "open the build's details"),
    bind(B, &[Char('l')], Cmd::Logs, "log", "follow the build's log"),
    bind(B, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(B, &[Char('a')], Cmd::Attach, "attach", "log in to the VM a failed build kept (its attach command)"),
    bind(D, &[Char('l'), Enter], Cmd::Logs, "log", "follow the build's log"),
    bind(D, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(D, &[Char('a')], Cmd::Attach, "attach", "log in to the VM a failed build kept (its attach command)"),
    bind(I, &[Char('['), Left], Cmd::PrevTab, "", "previous tab: public, private, shared, galleries"),
    bind(I, &[Char(']'), Right], Cmd::NextTab, "", "next tab: public, private, shared, galleries"),
    bind(I, &[Char('1')], Cmd::ShowPublic, "", "public images (base images every project sees)"),
    bind(I, &[Char('2')], Cmd::ShowPrivate, "", "private images (built by this project)"),
    bind(I, &[Char('3')], Cmd::ShowShared, "", "images other projects shared with this one, pending too"),
    bind(I, &[Char('4')], Cmd::ShowGalleries, "", "galleries: definitions and versions (s/a/x share them)"),
    bind(I, &[Enter], Cmd::Open, "", "all details of the image (any key closes)"),
    bind(I, &[Char('r')], Cmd::RunInstance, "run", "run the image as an instance (asks its name)"),
    bind(I, &[Char('s')], Cmd::Share, "share", "share the private image with projects (they accept it)"),
    bind(I, &[Char('a')], Cmd::Accept, "accept", "accept a shared image: build from it and run it here"),
    bind(I, &[Char('x')], Cmd::Reject, "reject", "reject a shared image (also after accepting): hide it"),
    bind(I, &[Char('D')], Cmd::Delete, "delete", "delete the image (type its name to confirm)"),
    bind(N, &[Char('s')], Cmd::Stop, "stop", "stop the instance: ACPI power off (asks first)"),
    bind(N, &[Char('S')], Cmd::Start, "start", "start the stopped instance again (asks first)"),
    bind(N, &[Char('c')], Cmd::Capture, "capture", "make an image of the stopped instance (asks its name)"),
    bind(N, &[Char('a')], Cmd::Attach, "attach", "log in here (kiln instance ssh); back when it exits"),
    bind(N, &[Char('D')], Cmd::Delete, "delete", "delete the instance and its disk (type its name)"),
    bind(L, &[Char('G'), End], Cmd::Bottom, "follow", "go to the end and follow again"),
    bind(L, &[Char('w')], Cmd::Wrap, "wrap", "wrap long lines on/off"),
    bind(L, &[Char('t')], Cmd::Timestamps, "time", "timestamps (UTC) on/off"),
    bind(L, &[Char('/')], Cmd::Find, "search", "search the log"),
    bind(L, &[Char('n')], Cmd::FindNext, "next", "next match"),
    bind(L, &[Char('N')], Cmd::FindPrev, "prev", "previous match"),
    bind(L, &[Char('s')], Cmd::Serial, "serial", "build log / VM serial console"),
    bind(L, &[Char('x')], Cmd::Cancel, "cancel", "cancel the build (asks first)"),
    bind(F, &[Ctrl('s')], Cmd::Save, "save", "save (refused while a field is invalid)"),
    bind(F, &[Tab, Down], Cmd::NextField, "next", "next field"),
    bind(F, &[BackTab, Up], Cmd::PrevField, "", "previous field"),
    bind(F, &[Enter, Char(' ')], Cmd::Activate, "toggle/open", "toggle an app, pick the image, open the script"),
    bind(F, &[Left], Cmd::PrevChoice, "", "previous OS (on the OS field)"),
    bind(F, &[Right], Cmd::NextChoice, "", "next OS (on the OS field)"),
    bind(F, &[Ctrl('e')], Cmd::EditToml, "TOML", "edit the whole template as TOML in $EDITOR"),
    bind(F, &[Esc], Cmd::Back, "close", "close (asks before discarding changes)"),
    bind(P, &[Enter], Cmd::Open, "use", "use the selected base image"),
    bind(P, &[Esc], Cmd::Back, "cancel", "close without choosing"),
    bind(ALL, &[Char('j'), Down], Cmd::Down, "", "down (in a log: scroll; follow resumes at the end)"),
    bind(ALL, &[Char('k'), Up], Cmd::Up, "", "up (in a log: scroll, which pauses following)"),
    bind(ALL, &[PageDown], Cmd::PageDown, "", "page down"),
    bind(ALL, &[PageUp], Cmd::PageUp, "", "page up"),
    bind(ALL, &[Char('g'), Home], Cmd::Top, "", "first line"),
    bind(ALL, &[Char('G'), End], Cmd::Bottom, "", "last line"),
    bind(ALL, &[Tab], Cmd::NextView, "", "next view"),
    bind(ALL, &[BackTab], Cmd::PrevView, "", "previous view"),
    bind(ALL, &[Esc], Cmd::Back, "", "back / clear the filter"),
    bind(ALL, &[Char('?')], Cmd::Help, "", "this help"),
    bind(ALL, &[Char('q'), Ctrl('c')], Cmd::Quit, "", "quit (ctrl-c quits from anywhere)"),
];

/// The command `key` means in `scope`'s own bindings only.
pub fn scoped_command(scope: Scope, key: Key) -> Option<Cmd> {
    BINDINGS
        .iter()
        .find(|b| b.scope == scope && b.keys.contains(&key))
        .map(|b| b.cmd)
}

/// The command `key` means in `view`, if any: the view's binding, else the global one. The
/// template editor has only its own bindings.
pub fn command_for(view: View, key: Key) -> Option<Cmd> {
    let scoped = scoped_command(Scope::In(view), key);
    if view == View::Form {
        return scoped;
    }
    scoped.or_else(|| scoped_command(Scope::Global, key))
}

/// The command `key` means in the base-image picker: its own, else the global movement keys.
pub fn picker_command(key: Key) -> Option<Cmd> {
    scoped_command(Scope::Picker, key).or_else(|| scoped_command(Scope::Global, key))
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
        Left => "←".into(),
        Right => "→".into(),
        PageUp => "pgup".into(),
        PageDown => "pgdn".into(),
        Home => "home".into(),
        End => "end".into(),
    }
}

/// The help overlay's lines, generated from `BINDINGS`: a heading per scope, then `keys  help`.
pub fn help_lines() -> Vec<String> {
    let scopes = [
        (ALL, "Everywhere"),
        (T, "Templates"),
        (F, "Template editor (text fields take every other key)"),
        (P, "Base image picker (j/k or arrows move)"),
        (B, "Builds"),
        (I, "Images"),
        (N, "Instances"),
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
        assert_eq!(command_for(View::Form, Char('q')), None, "q types a q");
        assert_eq!(command_for(View::Form, Ctrl('s')), Some(Cmd::Save));
        assert_eq!(picker_command(Char('j')), Some(Cmd::Down));
        assert_eq!(picker_command(Enter), Some(Cmd::Open));
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
    fn the_instances_heading_lists_its_keys() {
        let help = help_lines();
        let at = help.iter().position(|l| l == "Instances");
        let keys: Vec<&str> = at
            .map(|at| &help[at + 1..])
            .unwrap_or_default()
            .iter()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(keys, ["s", "S", "c", "a", "D"]);
        assert!(help
            .iter()
            .any(|l| l.contains("run the image as an instance")));
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
