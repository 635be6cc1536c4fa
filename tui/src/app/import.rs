//! `i` in the Templates view: import an Azure Image Builder template. The path is asked in the
//! message line, the shell reads the file (as the person), kilnd maps it without storing
//! (`template.import_azure` with `dry_run`), a window shows what it could not carry over and the
//! template it made, and `enter` there stores it (`esc` drops it).

use kiln_shared::azure::Warning as AzureWarning;
use kiln_shared::protocol::{TemplateImportAzureParams, TemplateImportAzureResult};
use serde_json::Value;

use super::keymap::{self, Cmd, Key};
use super::overlay::Overlay;
use super::{call, ok_or_show, App, Effect, Prompt, Reply, Request};

/// The largest Azure template file the dashboard reads.
pub const MAX_FILE: u64 = 4 * 1024 * 1024;

/// An import under way: the file read, kilnd's mapping of it once it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The file as the person typed it (for messages).
    pub path: String,
    pub azure: Value,
    /// The `template.import_azure` call in flight (0: none).
    pub tag: u64,
    /// kilnd's dry run: what could not be carried over, and the template as TOML.
    pub warnings: Vec<AzureWarning>,
    pub toml: Option<String>,
    /// The name the template will be stored under.
    pub name: String,
}

/// `i`: asks for the file.
pub(super) fn ask(app: &mut App) {
    app.prompt = Some(Prompt::ImportPath {
        input: String::new(),
    });
}

/// The path typed (`enter`): the shell reads it, relative to the dashboard's directory.
pub(super) fn read(app: &mut App, input: &str) -> Vec<Effect> {
    let typed = input.trim();
    if typed.is_empty() {
        app.message = Some("nothing imported: no file named".into());
        return Vec::new();
    }
    let path = app.cwd.join(typed);
    vec![Effect::ReadFile {
        path,
        shown: typed.to_owned(),
    }]
}

/// The file read for `read` (or why not): parsed as JSON and sent to kilnd for a dry run.
pub(super) fn on_read(app: &mut App, shown: String, text: Result<String, String>) -> Vec<Effect> {
    let azure = match text
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("not JSON: {e}")))
    {
        Ok(v) => v,
        Err(e) => {
            app.message = Some(format!("{shown}: {e}"));
            return Vec::new();
        }
    };
    let tag = app.tag();
    app.import = Some(Import {
        path: shown.clone(),
        azure: azure.clone(),
        tag,
        warnings: Vec::new(),
        toml: None,
        name: String::new(),
    });
    app.message = Some(format!("mapping {shown}..."));
    vec![call(tag, Request::TemplateImportAzure(params(azure, true)))]
}

fn params(azure: Value, dry_run: bool) -> TemplateImportAzureParams {
    TemplateImportAzureParams {
        azure,
        parameters: None,
        name: None,
        base_image: None,
        dry_run,
    }
}

/// Whether the reply tagged `tag` is the import's.
pub(super) fn owns(app: &App, tag: u64) -> bool {
    tag != 0 && app.import.as_ref().is_some_and(|i| i.tag == tag)
}

/// kilnd's answer: the dry run opens the window; the store closes it and shows the template.
pub(super) fn on_reply(app: &mut App, reply: Reply) -> Vec<Effect> {
    let Reply::TemplateImportAzure(r) = reply else {
        return Vec::new();
    };
    let method = kiln_shared::methods::Name::TemplateImportAzure;
    let Some(import) = app.import.as_mut() else {
        return Vec::new();
    };
    import.tag = 0;
    let stored = import.toml.is_some();
    let shown = import.path.clone();
    let Some(result) = ok_or_show(app, method, r) else {
        if !stored {
            app.import = None;
        }
        return Vec::new();
    };
    if stored {
        return on_stored(app, result);
    }
    let toml = match toml::to_string(&result.template) {
        Ok(t) => t,
        Err(e) => {
            app.import = None;
            app.message = Some(format!("{shown}: the template does not print as TOML: {e}"));
            return Vec::new();
        }
    };
    if let Some(import) = app.import.as_mut() {
        import.name = result.template.name.clone();
        import.warnings = result.warnings;
        import.toml = Some(toml);
    }
    app.message = None;
    app.overlay = Some(Overlay::ImportWindow { scroll: 0 });
    Vec::new()
}

fn on_stored(app: &mut App, result: TemplateImportAzureResult) -> Vec<Effect> {
    app.import = None;
    app.overlay = None;
    let Some(stored) = result.stored else {
        app.message = Some("kilnd mapped the template but did not store it".into());
        return Vec::new();
    };
    app.message = Some(format!(
        "imported {} revision {} ({} warning{})",
        stored.name,
        stored.revision,
        result.warnings.len(),
        if result.warnings.len() == 1 { "" } else { "s" }
    ));
    app.templates.focus = Some(stored.name);
    app.templates.list.loaded = false;
    app.refresh()
}

/// A key in the import window: scroll, `enter` stores, `esc` (or `q`) drops the import.
pub(super) fn on_key(app: &mut App, scroll: usize, key: Key) -> Vec<Effect> {
    let cmd = keymap::scoped_command(keymap::Scope::Global, key);
    let page = app.list_page();
    let to = match cmd {
        Some(Cmd::Down) => scroll + 1,
        Some(Cmd::Up) => scroll.saturating_sub(1),
        Some(Cmd::PageDown) => scroll + page,
        Some(Cmd::PageUp) => scroll.saturating_sub(page),
        Some(Cmd::Top) => 0,
        _ if key == Key::Enter => return save(app),
        _ if matches!(key, Key::Esc | Key::Char('q')) => {
            if let Some(i) = app.import.take() {
                app.message = Some(format!("{} not imported", i.path));
            }
            return Vec::new();
        }
        _ => scroll,
    };
    let max = app
        .import
        .as_ref()
        .map_or(0, |i| window_lines(i).len().saturating_sub(page));
    app.overlay = Some(Overlay::ImportWindow {
        scroll: to.min(max),
    });
    Vec::new()
}

/// `enter` in the window: the same file again, stored this time.
fn save(app: &mut App) -> Vec<Effect> {
    let tag = app.tag();
    let Some(import) = app.import.as_mut() else {
        return Vec::new();
    };
    import.tag = tag;
    let azure = import.azure.clone();
    app.overlay = Some(Overlay::ImportWindow { scroll: 0 });
    app.message = Some(format!("storing template {}...", import.name));
    vec![call(
        tag,
        Request::TemplateImportAzure(params(azure, false)),
    )]
}

/// What the window shows: the warnings (each with its field path), then the template's TOML.
pub fn window_lines(i: &Import) -> Vec<String> {
    let mut out = Vec::new();
    if i.warnings.is_empty() {
        out.push("everything in the file was carried over".to_string());
    } else {
        out.push(format!(
            "{} thing{} not carried over:",
            i.warnings.len(),
            if i.warnings.len() == 1 { "" } else { "s" }
        ));
        out.extend(
            i.warnings
                .iter()
                .map(|w| format!("  {}: {}", w.path, w.message)),
        );
    }
    out.push(String::new());
    out.extend(i.toml.iter().flat_map(|t| t.lines().map(str::to_owned)));
    out
}
