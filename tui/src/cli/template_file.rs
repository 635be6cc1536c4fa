//! Template files on the client's side: reading one (or stdin), telling TOML from JSON, parsing
//! it into the model, and turning its local file references into absolute paths.
//!
//! Local references (a `file` step's `source`, a `shell` step's `script`, in `customize` and in
//! `validate.in_vm`) are relative to the directory of the template file, or to the current
//! directory for stdin and `template edit`. kilnd does not know the client's working directory,
//! so the client sends them as absolute, normalized paths (kilnd refuses any other); URLs
//! (`https://...`) are sent as written.

use std::path::{Component, Path, PathBuf};

use kiln_shared::apps::AppCatalog;
use kiln_shared::template::Customizer;
use kiln_shared::{Template, Violation};

use super::Failure;

/// A template file as read from disk or stdin.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// How the file is named in messages: the path as given, or `<stdin>`.
    pub display: String,
    pub text: String,
    /// The directory relative references are resolved against (absolute).
    pub base_dir: PathBuf,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl TemplateFile {
    /// Reads `path`; `-` is stdin.
    pub fn read(path: &Path) -> Result<TemplateFile, Failure> {
        let cwd = std::env::current_dir()
            .map_err(|e| Failure::io(format!("cannot read the current directory: {e}")))?;
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Failure::io(format!("cannot read the template from stdin: {e}")))?;
            return Ok(TemplateFile::from_text("<stdin>", text, None, cwd));
        }
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::io(format!("cannot read {display}: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let base_dir = normalize(&cwd.join(dir));
        Ok(TemplateFile::from_text(
            &display,
            text,
            Some(path),
            base_dir,
        ))
    }

    /// A file's text with its format detected from the name (`.json`) or the content (`{`).
    pub fn from_text(
        display: &str,
        text: String,
        path: Option<&Path>,
        base_dir: PathBuf,
    ) -> TemplateFile {
        let json_name = path
            .and_then(|p| p.extension())
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let format = if json_name || text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        };
        TemplateFile {
            display: display.to_string(),
            text,
            base_dir,
            format,
        }
    }

    /// The template with its local references made absolute, or the shape error.
    pub fn parse(&self) -> Result<Template, Violation> {
        let mut template = parse_text(&self.text, self.format)?;
        resolve_local_paths(&mut template, &self.base_dir);
        Ok(template)
    }
}

/// Parses TOML or JSON text into the model; shape errors carry their field path.
pub fn parse_text(text: &str, format: Format) -> Result<Template, Violation> {
    match format {
        Format::Toml => Template::from_toml(text).map_err(|v| with_syntax_line(v, text)),
        Format::Json => {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Violation {
                path: String::new(),
                message: format!("invalid JSON: {e}"),
            })?;
            Template::from_json_value(value)
        }
    }
}

/// Adds the line number to a TOML syntax error that lacks one (`Template::from_toml` gives it
/// for shape errors only).
fn with_syntax_line(mut v: Violation, text: &str) -> Violation {
    if !v.path.is_empty() || v.message.contains("(line ") {
        return v;
    }
    if let Err(e) = text.parse::<toml::Table>() {
        if let Some(span) = e.span() {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            v.message = format!("{} (line {line})", v.message);
        }
    }
    v
}

/// True when `reference` names something kilnd fetches itself (`https://...`, or any other
/// `scheme://`, which validation then judges) rather than a file on this machine.
pub fn is_url(reference: &str) -> bool {
    match reference.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// `reference` as an absolute, normalized path when it is a relative local path; otherwise
/// unchanged (an absolute path is the template's to get right, and validation says when not).
/// A file that exists is named by its real path, symlinks and `..` resolved as the kernel
/// resolves them; one that does not is normalized by its text, and reported missing by
/// [`missing_local_files`].
pub fn resolve_reference(reference: &str, base_dir: &Path) -> String {
    if reference.is_empty() || is_url(reference) || Path::new(reference).is_absolute() {
        return reference.to_string();
    }
    let joined = base_dir.join(reference);
    std::fs::canonicalize(&joined)
        .unwrap_or_else(|_| normalize_text(&joined))
        .to_string_lossy()
        .into_owned()
}

/// Drops `.` components and resolves `..` by the text alone (right unless a symlink is crossed,
/// which only matters for a path that exists, and those are canonicalized instead).
fn normalize_text(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Drops `.` components. `..` stays: resolving it lexically would be wrong when the template's
/// directory is reached through a symlink, and the kernel resolves it right when the file is opened.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The local file references of a template with their field paths.
fn local_references(template: &mut Template) -> Vec<(String, &mut String)> {
    let mut refs = Vec::new();
    let steps = template
        .customize
        .iter_mut()
        .enumerate()
        .map(|(i, s)| (format!("customize[{i}]"), s))
        .chain(
            template
                .validate
                .in_vm
                .iter_mut()
                .enumerate()
                .map(|(i, s)| (format!("validate.in_vm[{i}]"), s)),
        );
    for (path, step) in steps {
        match step {
            Customizer::Shell {
                script: Some(script),
                ..
            } => refs.push((format!("{path}.script"), script)),
            Customizer::File { source, .. } => refs.push((format!("{path}.source"), source)),
            _ => {}
        }
    }
    refs
}

/// Makes every relative local reference in `template` absolute against `base_dir`.
pub fn resolve_local_paths(template: &mut Template, base_dir: &Path) {
    for (_, reference) in local_references(template) {
        *reference = resolve_reference(reference, base_dir);
    }
}

/// Local references that name no readable file on this machine (call after resolving).
pub fn missing_local_files(template: &Template) -> Vec<Violation> {
    let mut copy = template.clone();
    local_references(&mut copy)
        .into_iter()
        .filter(|(_, r)| !r.is_empty() && !is_url(r))
        .filter_map(|(path, r)| {
            let problem = match std::fs::metadata(r.as_str()) {
                Ok(m) if m.is_file() => return None,
                Ok(_) => "is not a regular file".to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
                Err(e) => format!("cannot be read: {e}"),
            };
            Some(Violation {
                path,
                message: format!("local file {r} {problem}"),
            })
        })
        .collect()
}

/// Every problem kiln can find without the daemon: the rules of the template format (against the
/// builtin application catalog) and local files that do not exist.
pub fn local_violations(template: &Template) -> Vec<Violation> {
    let mut violations = kiln_shared::validate::validate(template, &AppCatalog::builtin());
    violations.extend(missing_local_files(template));
    violations
}

/// Reads and parses a template file, shape errors reported against the file.
pub fn read_template(path: &Path) -> Result<(TemplateFile, Template), Failure> {
    let file = TemplateFile::read(path)?;
    let template = file
        .parse()
        .map_err(|v| Failure::invalid_template(&file.display, vec![v]))?;
    Ok((file, template))
}

/// The template as the wire's JSON.
pub fn to_wire(template: &Template) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(template)
        .map_err(|e| Failure::new("internal", format!("cannot encode the template: {e}")))
}

/// Attaches the file to a daemon's verdict on it, so violations read `FILE: path: message`.
pub fn about_file(failure: Failure, file: &str) -> Failure {
    if failure.kind == kiln_shared::protocol::ErrorKind::InvalidTemplate.as_str() {
        failure.in_file(file)
    } else {
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_resolution() {
        let base = Path::new("/home/ops/templates");
        let check = |reference: &str, expected: &str| {
            assert_eq!(resolve_reference(reference, base), expected, "{reference}");
        };
        check("files/motd", "/home/ops/templates/files/motd");
        check("./setup.sh", "/home/ops/templates/setup.sh");
        check("../shared/setup.sh", "/home/ops/shared/setup.sh");
        check("a/./b/../../c", "/home/ops/templates/c");
        check("/etc/motd", "/etc/motd");
        check(
            "https://example.org/setup.sh",
            "https://example.org/setup.sh",
        );
        check("http://example.org/setup.sh", "http://example.org/setup.sh");
        check("", "");
        check(
            "weird name:with colon",
            "/home/ops/templates/weird name:with colon",
        );
    }

    #[test]
    fn url_detection() {
        assert!(is_url("https://example.org/x"));
        assert!(is_url("s3+https://bucket/x"));
        assert!(!is_url("files/x"));
        assert!(!is_url("://x"));
        assert!(!is_url("dir with space://x"));
    }

    const TEMPLATE: &str = r#"
name = "web"
os = "debian-12"

[[customize]]
type = "shell"
name = "tools"
script = "scripts/tools.sh"

[[customize]]
type = "shell"
name = "inline"
inline = ["true"]

[[customize]]
type = "file"
name = "motd"
source = "files/motd"
destination = "/tmp/motd"

[[customize]]
type = "file"
name = "remote"
source = "https://example.org/motd"
destination = "/tmp/motd2"

[validate]
[[validate.in_vm]]
type = "shell"
name = "check"
script = "../checks/check.sh"
"#;

    #[test]
    fn parse_resolves_every_local_reference() {
        let file = TemplateFile::from_text(
            "web.toml",
            TEMPLATE.to_string(),
            Some(Path::new("web.toml")),
            PathBuf::from("/srv/t"),
        );
        assert_eq!(file.format, Format::Toml);
        let t = file.parse().expect("parses");
        let json = serde_json::to_value(&t).expect("serializes");
        assert_eq!(json["customize"][0]["script"], "/srv/t/scripts/tools.sh");
        assert_eq!(json["customize"][1]["inline"][0], "true");
        assert_eq!(json["customize"][2]["source"], "/srv/t/files/motd");
        assert_eq!(json["customize"][3]["source"], "https://example.org/motd");
        assert_eq!(
            json["validate"]["in_vm"][0]["script"],
            "/srv/checks/check.sh"
        );
    }

    #[test]
    fn existing_files_are_named_by_their_real_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().canonicalize().expect("canonical tempdir");
        std::fs::create_dir_all(real.join("shared")).expect("mkdir");
        std::fs::create_dir_all(real.join("t")).expect("mkdir");
        std::fs::write(real.join("shared/setup.sh"), "#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink(real.join("shared"), real.join("t/link")).expect("symlink");
        let base = real.join("t");
        let resolved = resolve_reference("link/setup.sh", &base);
        assert_eq!(resolved, real.join("shared/setup.sh").to_string_lossy());
        let resolved = resolve_reference("../shared/./setup.sh", &base);
        assert_eq!(resolved, real.join("shared/setup.sh").to_string_lossy());
        assert_eq!(kiln_shared::validate::check_file_path(&resolved), Ok(()));
    }

    #[test]
    fn missing_files_are_violations() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("files")).expect("mkdir");
        std::fs::write(dir.path().join("files/motd"), "hi").expect("write");
        let file = TemplateFile::from_text(
            "web.toml",
            TEMPLATE.to_string(),
            None,
            dir.path().to_path_buf(),
        );
        let t = file.parse().expect("parses");
        let paths: Vec<String> = missing_local_files(&t)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(
            paths,
            vec!["customize[0].script", "validate.in_vm[0].script"]
        );
    }

    #[test]
    fn format_detection() {
        let detect = |name: Option<&str>, text: &str| {
            TemplateFile::from_text("x", text.to_string(), name.map(Path::new), PathBuf::new())
                .format
        };
        assert_eq!(detect(Some("t.json"), "name = 1"), Format::Json);
        assert_eq!(detect(Some("t.JSON"), ""), Format::Json);
        assert_eq!(
            detect(Some("t.toml"), "  \n{\"name\": \"x\"}"),
            Format::Json
        );
        assert_eq!(detect(None, "{}"), Format::Json);
        assert_eq!(detect(None, "name = \"x\""), Format::Toml);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let v = parse_text("name = \"x\"\nvm = { cpus = \"two\" }\n", Format::Toml)
            .expect_err("cpus is a number");
        assert!(v.path.contains("cpus"), "{v:?}");
        let v = parse_text("name = \"x\"\nnot toml\n", Format::Toml).expect_err("syntax");
        assert!(v.message.ends_with("(line 2)"), "{v:?}");
        let v = parse_text("{\"name\": 1}", Format::Json).expect_err("name is a string");
        assert_eq!(v.path, "name");
        let v = parse_text("{\"name\": ", Format::Json).expect_err("truncated");
        assert!(v.message.starts_with("invalid JSON"), "{v:?}");
    }
}
