//! The person's editor for `kiln template edit`: which command to run (`$VISUAL`, `$EDITOR`,
//! `vi`), running it on a file, and the `# ERROR:` block kiln puts at the top of the file when
//! what was saved cannot be stored.

use std::path::Path;
use std::process::Command;

use super::Failure;

const ERROR_PREFIX: &str = "# ERROR: ";
const ERROR_HINT: &str =
    "# ERROR: fix the template below and save to try again; empty the file to abort";

/// How many lines the error block takes for `errors` errors (each error is one line, then the
/// hint).
pub fn error_block_lines(errors: usize) -> usize {
    errors + 1
}

/// The editor command split into words: the first of `$VISUAL` and `$EDITOR` that is set and not
/// blank, else `vi`. Words are split as a POSIX shell would, so `EDITOR="code -w"` works.
pub fn editor_command(visual: Option<&str>, editor: Option<&str>) -> Result<Vec<String>, Failure> {
    let (var, value) = match (visual, editor) {
        (Some(v), _) if !v.trim().is_empty() => ("VISUAL", v),
        (_, Some(e)) if !e.trim().is_empty() => ("EDITOR", e),
        _ => return Ok(vec!["vi".to_string()]),
    };
    match shlex::split(value) {
        Some(words) if !words.is_empty() => Ok(words),
        _ => Err(Failure::usage(format!(
            "cannot split ${var} ({value:?}) into words: check its quotes"
        ))),
    }
}

/// The editor command from this process's environment.
pub fn editor_from_env() -> Result<Vec<String>, Failure> {
    let visual = std::env::var("VISUAL").ok();
    let editor = std::env::var("EDITOR").ok();
    editor_command(visual.as_deref(), editor.as_deref())
}

/// Runs the editor on `file` and waits for it; a failed editor stores nothing.
pub fn open(command: &[String], file: &Path) -> Result<(), Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::usage("the editor command is empty; set $VISUAL or $EDITOR"))?;
    let status = Command::new(program)
        .args(args)
        .arg(file)
        .status()
        .map_err(|e| {
            Failure::io(format!(
                "cannot run the editor `{program}`: {e}; set $VISUAL or $EDITOR to one that exists"
            ))
        })?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(Failure::io(format!(
            "the editor `{program}` {how}; nothing stored"
        )));
    }
    Ok(())
}

/// `body` with `errors` as `# ERROR:` lines on top, one line per error, then a hint line.
pub fn with_errors(body: &str, errors: &[String]) -> String {
    let mut out = String::new();
    for e in errors {
        let one_line: String = e
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        out.push_str(ERROR_PREFIX);
        out.push_str(&one_line);
        out.push('\n');
    }
    if !errors.is_empty() {
        out.push_str(ERROR_HINT);
        out.push('\n');
    }
    out.push_str(body);
    out
}

/// `text` without the error block kiln put on top of it last time.
pub fn strip_errors(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with(ERROR_PREFIX) || rest.starts_with(ERROR_HINT) {
        rest = match rest.find('\n') {
            Some(i) => &rest[i + 1..],
            None => "",
        };
    }
    rest
}

/// True when nothing but blank lines and comments is left: the person emptied the file to abort.
pub fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_editor(visual: Option<&str>, editor: Option<&str>, expected: &[&str]) {
        let words = editor_command(visual, editor).expect("splits");
        assert_eq!(words, expected, "VISUAL={visual:?} EDITOR={editor:?}");
    }

    #[test]
    fn editor_choice_and_splitting() {
        check_editor(None, None, &["vi"]);
        check_editor(Some(""), Some("  "), &["vi"]);
        check_editor(None, Some("nano"), &["nano"]);
        check_editor(Some("vim"), Some("nano"), &["vim"]);
        check_editor(Some(" "), Some("nano"), &["nano"]);
        check_editor(None, Some("code -w"), &["code", "-w"]);
        check_editor(
            None,
            Some(r#""/opt/My Editor/bin/ed" --wait '--title=a b'"#),
            &["/opt/My Editor/bin/ed", "--wait", "--title=a b"],
        );
        check_editor(None, Some(r"emacs\ client -t"), &["emacs client", "-t"]);
    }

    #[test]
    fn unbalanced_quotes_are_a_usage_error() {
        let f = editor_command(None, Some("code \"-w")).expect_err("unbalanced");
        assert_eq!(f.exit, 2);
        assert!(f.message.contains("$EDITOR"), "{}", f.message);
    }

    #[test]
    fn error_block_round_trip() {
        let body = "name = \"web\"\n# a comment of the person\nos = \"debian-12\"\n";
        let errors = vec!["os: unknown".to_string(), "multi\nline".to_string()];
        let text = with_errors(body, &errors);
        assert_eq!(
            text.lines().take(3).collect::<Vec<_>>(),
            vec!["# ERROR: os: unknown", "# ERROR: multi line", ERROR_HINT]
        );
        assert_eq!(
            text.lines().count(),
            body.lines().count() + error_block_lines(2)
        );
        assert_eq!(strip_errors(&text), body);
        // A second round replaces the block instead of stacking it.
        let again = with_errors(strip_errors(&text), &["name: taken".to_string()]);
        assert_eq!(strip_errors(&again), body);
        assert_eq!(again.matches("# ERROR:").count(), 2);
        assert_eq!(with_errors(body, &[]), body);
    }

    #[test]
    fn blank_means_abort() {
        assert!(is_blank(""));
        assert!(is_blank("\n  \n"));
        assert!(is_blank("# ERROR: x\n# only comments\n"));
        assert!(!is_blank("# header\nname = \"web\"\n"));
    }
}
