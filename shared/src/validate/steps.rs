//! The rules of steps (`customize` and `validate.in_vm` share them): names, scripts, sources,
//! destinations, hashes and reboot timeouts.

use std::collections::HashMap;
use std::time::Duration;

use super::{
    check_file_path, excerpt, Report, MAX_INLINE_COMMANDS, MAX_PATH_BYTES, MAX_REBOOT_TIMEOUT,
    MAX_SCRIPT_BYTES, MAX_STEPS, MAX_STEP_NAME_LEN,
};
use crate::template::Customizer;

/// Parses a reboot timeout. Accepted: a whole number of seconds (`300`), or one or more
/// `<number><unit>` groups with units `h`, `m` and `s` in that order, each at most once (`90s`,
/// `5m`, `1h`, `1h30m`). No spaces, signs or fractions. Returns `None` for anything else or on
/// overflow. `0s` parses to zero; [`validate`](super::validate) rejects a zero timeout, and one above
/// [`MAX_REBOOT_TIMEOUT`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    let mut total: u64 = 0;
    let mut previous_unit = u64::MAX;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits) {
            Some(b'h') => 3600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => return None,
        };
        if unit >= previous_unit {
            return None;
        }
        previous_unit = unit;
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    Some(Duration::from_secs(total))
}

/// Step names and run output names: `[A-Za-z0-9._-]{1,64}`.
pub(super) fn is_step_name(s: &str) -> bool {
    (1..=MAX_STEP_NAME_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A script's or inline command's text: bounded, and without NUL (which no shell passes on).
pub(super) fn check_script_text(text: &str, path: &str, r: &mut Report) {
    if text.len() > MAX_SCRIPT_BYTES {
        r.add(
            path,
            format!(
                "is {} bytes; at most {MAX_SCRIPT_BYTES} (256 KiB) are allowed: put a longer \
                 script in a file and run it with a shell step's script",
                text.len()
            ),
        );
    }
    if let Some(at) = text.find('\0') {
        r.add(
            path,
            format!("contains a NUL byte (at byte {at}), which a shell cannot run: remove it"),
        );
    }
}

pub(super) fn check_steps(steps: &[Customizer], list: &str, r: &mut Report) {
    if !r.bounded(steps, MAX_STEPS, list, "steps") {
        return;
    }
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let name = step.name();
        if name.is_empty() {
            r.add(
                format!("{at}.name"),
                format!(
                    "required: name each step with 1 to {MAX_STEP_NAME_LEN} of A-Z a-z 0-9 . _ -, \
                     unique within {list}"
                ),
            );
        } else if !is_step_name(name) {
            r.add(
                format!("{at}.name"),
                format!(
                    "{} is not a valid step name: use 1 to {MAX_STEP_NAME_LEN} of A-Z a-z 0-9 . _ -",
                    excerpt(name)
                ),
            );
        } else if let Some(j) = first_at.get(name) {
            r.add(
                format!("{at}.name"),
                format!("{name:?} is already the name of {list}[{j}]; names must be unique within {list}"),
            );
        } else {
            first_at.insert(name, i);
        }
        match step {
            Customizer::Shell {
                inline,
                script,
                sha256,
                ..
            } => {
                match (inline, script) {
                    (None, None) => r.add(
                        at.clone(),
                        "a shell step needs one of inline (a list of commands) or script (an \
                         https:// URL or a local path)",
                    ),
                    (Some(_), Some(_)) => r.add(
                        at.clone(),
                        "a shell step takes exactly one of inline or script; it has both, \
                         remove one",
                    ),
                    _ => {}
                }
                if let Some(inline) = inline {
                    let path = format!("{at}.inline");
                    if inline.is_empty() {
                        r.add(
                            path,
                            "is empty: list at least one command, or use script instead",
                        );
                    } else if r.bounded(inline, MAX_INLINE_COMMANDS, &path, "commands") {
                        for (k, command) in inline.iter().enumerate() {
                            check_script_text(command, &format!("{path}[{k}]"), r);
                        }
                    }
                }
                if let Some(script) = script {
                    check_location(script, &format!("{at}.script"), r);
                }
                if let Some(sha) = sha256 {
                    if script.is_none() {
                        r.add(
                            format!("{at}.sha256"),
                            "only applies to script, which this step does not have; remove it",
                        );
                    } else {
                        check_sha256(sha, &format!("{at}.sha256"), r);
                    }
                }
            }
            Customizer::File {
                source,
                destination,
                sha256,
                ..
            } => {
                check_location(source, &format!("{at}.source"), r);
                check_destination(destination, &format!("{at}.destination"), r);
                if let Some(sha) = sha256 {
                    check_sha256(sha, &format!("{at}.sha256"), r);
                }
            }
            Customizer::Reboot { timeout, .. } => {
                if let Some(timeout) = timeout {
                    check_reboot_timeout(timeout, &format!("{at}.timeout"), r);
                }
            }
        }
    }
}

/// A script or file source: an https URL, or the absolute path of a local file (the CLI makes a
/// template file's relative paths absolute before it sends the template).
fn check_location(location: &str, path: &str, r: &mut Report) {
    if location.is_empty() {
        r.add(
            path,
            "required: an https:// URL or a local path (relative to the template file)",
        );
        return;
    }
    if location.len() > MAX_PATH_BYTES {
        r.add(
            path,
            format!(
                "{} is {} bytes; a URL or path has at most {MAX_PATH_BYTES}",
                excerpt(location),
                location.len()
            ),
        );
        return;
    }
    let Some((scheme, rest)) = location.split_once("://") else {
        if let Err(e) = check_file_path(location) {
            r.add(path, e.to_string());
        }
        return;
    };
    if scheme.eq_ignore_ascii_case("https") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() {
            r.add(
                path,
                format!("{} has no host: write https://HOST/PATH", excerpt(location)),
            );
        } else if location.contains(|c: char| c.is_whitespace() || c.is_control()) {
            r.add(
                path,
                format!(
                    "{} contains whitespace or a control character: percent-encode it (%20)",
                    excerpt(location)
                ),
            );
        }
    } else if scheme.eq_ignore_ascii_case("http") {
        r.add(
            path,
            "plain http:// is not allowed: use an https:// URL or a local path",
        );
    } else {
        r.add(
            path,
            format!(
                "{scheme}:// URLs are not supported: use an https:// URL or a local path \
                 (relative to the template file)"
            ),
        );
    }
}

fn check_sha256(sha: &str, path: &str, r: &mut Report) {
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        r.add(
            path,
            format!(
                "{} is not a SHA-256: write exactly 64 hex digits, as printed by `sha256sum FILE`",
                excerpt(sha)
            ),
        );
    }
}

/// File uploads go to /tmp only: Linux build VMs let the default user write there, and a shell
/// step moves the file on with sudo.
fn check_destination(destination: &str, path: &str, r: &mut Report) {
    const HINT: &str =
        "upload to a path under /tmp/, e.g. /tmp/motd, and move it with a shell step";
    if destination.is_empty() {
        r.add(path, format!("required: {HINT}"));
        return;
    }
    if let Err(e) = check_file_path(destination) {
        r.add(path, format!("{e}; {HINT}"));
        return;
    }
    if !destination.starts_with("/tmp/") {
        r.add(
            path,
            format!("{} is not under /tmp/: {HINT}", excerpt(destination)),
        );
    }
}

fn check_reboot_timeout(timeout: &str, path: &str, r: &mut Report) {
    match parse_duration(timeout) {
        None => r.add(
            path,
            format!(
                "{} is not a duration: write a number with a unit, e.g. \"90s\", \"5m\", \"1h\" \
                 or \"1h30m\" (a plain number means seconds)",
                excerpt(timeout)
            ),
        ),
        Some(d) if d.is_zero() => r.add(
            path,
            "must be longer than 0; leave it out for the default of 5m",
        ),
        Some(d) if d > MAX_REBOOT_TIMEOUT => {
            r.add(path, format!("{timeout:?} is too long: use at most 1h"))
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s| Some(Duration::from_secs(s));
        for (text, expected) in [
            ("300", secs(300)),
            ("90s", secs(90)),
            ("5m", secs(300)),
            ("1h", secs(3600)),
            ("1h30m", secs(5400)),
            ("1h0m5s", secs(3605)),
            ("0s", secs(0)),
            ("", None),
            ("m", None),
            ("5", secs(5)),
            ("5 m", None),
            ("5min", None),
            ("-5m", None),
            ("1.5h", None),
            ("30m1h", None),
            ("1m1m", None),
            ("5M", None),
            ("99999999999999999999", None),
            ("9999999999999999999h", None),
        ] {
            assert_eq!(parse_duration(text), expected, "{text:?}");
        }
    }
}
