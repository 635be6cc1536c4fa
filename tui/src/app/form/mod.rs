//! The template editor: one template being created or edited, the text typed into its fields,
//! which field has the focus, what is wrong with it (checked against kiln's validator as it is
//! typed, plus what kilnd said on the last save), and where saving stands.
//!
//! The form covers the fields a person sets most (name, description, OS, applications, minimum
//! disk, build timeout, source image, user script); every other field of the template (customize
//! steps, distribute targets, vm, ...) rides along untouched in `draft`, and the whole template
//! can be edited as TOML in `$EDITOR`.

mod keys;
mod save;

use std::path::Path;

use kiln_shared::apps::AppCatalog;
use kiln_shared::protocol::ImageInfo;
use kiln_shared::template::{Distribute, Template};
use kiln_shared::validate::{self, Violation};

use super::picker;
use crate::cli::editor;

pub(super) use keys::{on_edited, on_key, open_edit, open_new, set_source};
pub(super) use save::{on_reply, owns};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormMode {
    New,
    /// Editing the stored template `name`: saving stores a new revision of it.
    Edit {
        name: String,
    },
}

/// One line of the form that can take the focus (and, for `Applications` and `Other`, a place
/// to show violations of fields the form has no line of its own for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Description,
    Os,
    /// The heading above the applications; violations about the list as a whole go there.
    Applications,
    /// The catalog's application number `n`.
    App(usize),
    MinDisk,
    Timeout,
    Source,
    Script,
    /// The whole template as TOML: where the fields the form does not show are edited.
    Toml,
}

/// What the shell's `$EDITOR` round is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditWhat {
    UserScript,
    Template,
}

/// An application's line in the multi-select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppChoice {
    pub selected: bool,
    /// Why it cannot be selected now (it conflicts with a selected one, or does not support the
    /// OS); `None` when it can.
    pub blocked: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Form {
    pub mode: FormMode,
    /// Tags of the calls this form waits for (0: none): loading the template, saving it, and
    /// asking for the current revision after a conflict.
    pub load_tag: u64,
    pub save_tag: u64,
    pub check_tag: u64,
    /// The message of the conflict being checked.
    pub conflict_message: String,
    /// False until `template.get` answered (editing only).
    pub loaded: bool,
    /// The template as loaded (or as a new form starts): what "changed" is measured against.
    pub original: Template,
    /// The template being edited, fields the form does not show included.
    pub draft: Template,
    pub name: String,
    pub description: String,
    pub min_disk: String,
    pub timeout: String,
    /// Index into `fields()`.
    pub focus: usize,
    /// Sent with `template.update` so that a revision stored meanwhile is never overwritten
    /// silently.
    pub expected_revision: Option<u64>,
    /// The revision someone else stored while this form was open (a save then overwrites it
    /// knowingly).
    pub conflict: Option<u64>,
    /// Violations kilnd reported on the last save, by field path.
    pub daemon_violations: Vec<Violation>,
    /// `esc` with changes asked "discard?".
    pub confirm_discard: bool,
    /// TOML that did not parse, with the error, to reopen in the editor.
    pub toml_retry: Option<(String, String)>,
}

impl Form {
    fn with(mode: FormMode, template: Template, loaded: bool) -> Form {
        let mut form = Form {
            mode,
            load_tag: 0,
            save_tag: 0,
            check_tag: 0,
            conflict_message: String::new(),
            loaded,
            original: template.clone(),
            draft: Template::default(),
            name: String::new(),
            description: String::new(),
            min_disk: String::new(),
            timeout: String::new(),
            focus: 0,
            expected_revision: None,
            conflict: None,
            daemon_violations: Vec::new(),
            confirm_discard: false,
            toml_retry: None,
        };
        form.set_template(template);
        form
    }

    /// A new template: the first OS kiln knows an image for (Debian 12 if it can), its first
    /// compatible base image, and the one distribute target every template needs.
    pub fn new_template(catalog: &AppCatalog, images: &[ImageInfo]) -> Form {
        let choices = os_choices(catalog, images, "");
        let os = if choices.iter().any(|o| o == "debian-12") {
            "debian-12".to_string()
        } else {
            choices.first().cloned().unwrap_or_default()
        };
        let mut t = Template {
            os: os.clone(),
            distribute: vec![Distribute::Image {
                run_output_name: "local".into(),
            }],
            ..Template::default()
        };
        if let Some(image) = picker::compatible(images, &os).first() {
            t.source.image = image.name.clone();
        }
        Form::with(FormMode::New, t, true)
    }

    /// An edit of `name`, waiting for `template.get` (tagged `tag`).
    pub fn editing(name: &str, tag: u64) -> Form {
        let mut form = Form::with(
            FormMode::Edit { name: name.into() },
            Template::default(),
            false,
        );
        form.load_tag = tag;
        form
    }

    /// Takes `template` into the form: the draft and the text of every field.
    pub fn set_template(&mut self, template: Template) {
        self.name = template.name.clone();
        self.description = template.description.clone().unwrap_or_default();
        self.min_disk = template.min_disk_gb.to_string();
        self.timeout = template.build_timeout_minutes.to_string();
        self.draft = template;
    }

    /// The lines that take the focus, in order.
    pub fn fields(catalog: &AppCatalog) -> Vec<Field> {
        let mut f = vec![Field::Name, Field::Description, Field::Os];
        f.extend((0..catalog.apps.len()).map(Field::App));
        f.extend([
            Field::MinDisk,
            Field::Timeout,
            Field::Source,
            Field::Script,
            Field::Toml,
        ]);
        f
    }

    pub fn focused(&self, catalog: &AppCatalog) -> Field {
        Form::fields(catalog)
            .get(self.focus)
            .copied()
            .unwrap_or(Field::Name)
    }

    /// The name the template is stored under (editing) or will be (new).
    pub fn title(&self) -> String {
        match &self.mode {
            FormMode::New => "New template".into(),
            FormMode::Edit { name } => format!("Edit {name}"),
        }
    }

    /// The template as the form holds it now: the draft with the typed fields applied (a number
    /// that does not parse leaves the draft's value; `input_problems` reports it).
    pub fn template(&self) -> Template {
        let mut t = self.draft.clone();
        t.name = self.name.clone();
        t.description = Some(self.description.clone()).filter(|d| !d.is_empty());
        if let Ok(n) = parse_number(&self.min_disk) {
            t.min_disk_gb = n;
        }
        if let Ok(n) = parse_number(&self.timeout) {
            t.build_timeout_minutes = n;
        }
        t
    }

    /// Typed numbers that are not numbers.
    fn input_problems(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if let Err(e) = parse_number(&self.min_disk) {
            v.push(violation(
                "min_disk_gb",
                format!("{e}: a whole number of GB, 0 for the size of the source"),
            ));
        }
        if let Err(e) = parse_number(&self.timeout) {
            v.push(violation(
                "build_timeout_minutes",
                format!("{e}: whole minutes, 6 to 960, or 0 for the default of 240"),
            ));
        }
        v
    }

    /// Everything wrong with the template as it stands, as kiln can tell without kilnd: typed
    /// numbers, the template format's rules, and a source image of another OS.
    pub fn problems(&self, catalog: &AppCatalog, images: &[ImageInfo]) -> Vec<Violation> {
        let t = self.template();
        let mut v = self.input_problems();
        v.extend(validate::validate(&t, catalog));
        let named: Vec<&ImageInfo> = images
            .iter()
            .filter(|i| !t.source.image.is_empty() && i.name == t.source.image)
            .collect();
        if !t.os.is_empty() && !named.is_empty() && named.iter().all(|i| i.os != t.os) {
            v.push(violation(
                "source.image",
                format!(
                    "{} is a {} image; the template is for {}: pick a {} image (enter)",
                    t.source.image, named[0].os, t.os, t.os
                ),
            ));
        }
        if let Some((_, error)) = &self.toml_retry {
            v.push(violation(
                "",
                format!("the TOML you saved did not parse ({error}); ctrl-e reopens it"),
            ));
        }
        v
    }

    /// The problems and kilnd's last verdict, each once, with the line each belongs to.
    pub fn violations_by_field(
        &self,
        catalog: &AppCatalog,
        images: &[ImageInfo],
    ) -> Vec<(Field, Violation)> {
        let t = self.template();
        let mut all = self.problems(catalog, images);
        for d in &self.daemon_violations {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        all.into_iter()
            .map(|v| (field_of(&v.path, &t, catalog), v))
            .collect()
    }

    /// Whether the form holds anything that closing it would lose.
    pub fn is_dirty(&self) -> bool {
        self.template() != self.original || !self.input_problems().is_empty()
    }

    /// The line of application `i` of the catalog.
    pub fn app_choice(&self, catalog: &AppCatalog, i: usize) -> AppChoice {
        let Some(app) = catalog.apps.get(i) else {
            return AppChoice {
                selected: false,
                blocked: Some("not in the catalog".into()),
            };
        };
        let selected = self.draft.applications.contains(&app.name);
        let os = &self.draft.os;
        let conflict = self
            .draft
            .applications
            .iter()
            .find(|other| catalog.conflicts_between(&app.name, other));
        let blocked = if selected {
            None
        } else if let Some(other) = conflict {
            Some(format!("conflicts with {other}"))
        } else if !os.is_empty() && !app.supports(os) {
            Some(format!("not for {os}; supports {}", app.os.join(", ")))
        } else {
            None
        };
        AppChoice { selected, blocked }
    }

    /// Forgets kilnd's verdict on `field`: the person changed it.
    fn touch(&mut self, field: Field, catalog: &AppCatalog) {
        let t = self.template();
        self.daemon_violations
            .retain(|v| field_of(&v.path, &t, catalog) != field);
    }

    /// The text `field` takes, if it is a text field.
    fn input(&mut self, field: Field) -> Option<&mut String> {
        match field {
            Field::Name => Some(&mut self.name),
            Field::Description => Some(&mut self.description),
            Field::MinDisk => Some(&mut self.min_disk),
            Field::Timeout => Some(&mut self.timeout),
            _ => None,
        }
    }

    /// Switches the OS; a source image of another OS gives way to the first compatible one.
    fn set_os(&mut self, os: String, images: &[ImageInfo]) {
        let stale = images
            .iter()
            .filter(|i| i.name == self.draft.source.image)
            .any(|i| i.os != os);
        if stale || self.draft.source.image.is_empty() {
            if let Some(image) = picker::compatible(images, &os).first() {
                self.draft.source.image = image.name.clone();
            } else if stale {
                self.draft.source.image.clear();
            }
        }
        self.draft.os = os;
    }

    /// What `$EDITOR` opens for the whole template: a header, then the TOML (or, after a parse
    /// error, what the person wrote with the error on top).
    fn toml_text(&self, cwd: &Path) -> String {
        if let Some((body, error)) = &self.toml_retry {
            return editor::with_errors(body, std::slice::from_ref(error));
        }
        // Two lines, like the error block, so that parse errors name the lines shown next time.
        let header = format!(
            "# kiln dashboard: {}. Save and quit to take this into the form, then ctrl-s stores it;\n\
             # empty the file to leave the form as it was. Relative paths are relative to {}.\n",
            self.title(),
            cwd.display()
        );
        header + &self.template().to_toml()
    }

    fn owns(&self, tag: u64) -> bool {
        tag != 0 && (tag == self.load_tag || tag == self.save_tag || tag == self.check_tag)
    }
}

fn violation(path: &str, message: String) -> Violation {
    Violation {
        path: path.into(),
        message,
    }
}

/// A typed number; empty is 0.
fn parse_number(s: &str) -> Result<u32, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| {
        format!(
            "{:?} is not a number",
            s.chars().take(20).collect::<String>()
        )
    })
}

/// The form line a violation's field path belongs to; fields the form does not show go to the
/// TOML line.
pub fn field_of(path: &str, template: &Template, catalog: &AppCatalog) -> Field {
    let head = path.split(['.', '[']).next().unwrap_or("");
    match head {
        "name" => Field::Name,
        "description" => Field::Description,
        "os" => Field::Os,
        "min_disk_gb" => Field::MinDisk,
        "build_timeout_minutes" => Field::Timeout,
        "source" => Field::Source,
        "user_script" => Field::Script,
        "applications" => {
            let index = path
                .strip_prefix("applications[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<usize>().ok());
            index
                .and_then(|k| template.applications.get(k))
                .and_then(|name| catalog.apps.iter().position(|a| &a.name == name))
                .map_or(Field::Applications, Field::App)
        }
        _ => Field::Toml,
    }
}

/// The OSes the form offers: those of the catalog's applications and of the images, and the
/// template's own, sorted.
pub fn os_choices(catalog: &AppCatalog, images: &[ImageInfo], current: &str) -> Vec<String> {
    let mut all: Vec<String> = catalog
        .apps
        .iter()
        .flat_map(|a| a.os.iter().cloned())
        .chain(images.iter().map(|i| i.os.clone()))
        .chain(Some(current.to_string()).filter(|c| !c.is_empty()))
        .collect();
    all.sort();
    all.dedup();
    all
}
