//! Reading a VM's serial console log: its last lines, without the escape sequences GRUB and
//! systemd paint it with, for error messages.

use std::path::Path;

/// The last `n` lines of a text file, with terminal escape sequences and control characters
/// removed (GRUB and systemd paint the serial console).
pub(super) fn tail_lines(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::from("(none)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut data = Vec::new();
    let _ = file.read_to_end(&mut data);
    let text = strip_escapes(&String::from_utf8_lossy(&data));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::from("(none)");
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

pub(super) fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|data| data.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped_from_serial_text() {
        assert_eq!(
            strip_escapes("\x1b[0m\x1b[30m\x1b[47mBooting\x1b[K `Debian'\r\nok\x07"),
            "Booting `Debian'\nok"
        );
    }
}
