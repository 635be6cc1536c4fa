//! The one rule for every name kiln stores: templates, images, galleries and their images,
//! instances, projects. The daemon checks it on every method that stores or acts on a name, the
//! config loader on project names, and the CLI before it sends anything.
//!
//! A name is what a person reads back in `kiln ... list` and types on a command line, so two
//! names that differ must look different: no characters a terminal does not show (controls,
//! bidi overrides, zero-width characters, byte order marks, line separators), no space that is
//! not a plain space, no space at either end. A name is never a file name (files are named by
//! id), but `/`, `.` and `..` are refused anyway, and a leading `-` would read as an option.

use unicode_general_category::{get_general_category, GeneralCategory};

/// Longest name, in bytes of UTF-8 (255 ASCII characters, 85 Hangul syllables).
pub const MAX_NAME_BYTES: usize = 255;

/// The first rule a name breaks. Each message starts with the name as a quoted, escaped string
/// (`"web-base\u{200b}"`), so that an invisible character shows, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("\"\" is empty: a name has 1 to {MAX_NAME_BYTES} bytes")]
    Empty,
    #[error(
        "{shown} is {len} bytes of UTF-8; a name has at most {MAX_NAME_BYTES} \
         ({MAX_NAME_BYTES} ASCII characters, fewer in other scripts: 85 Hangul syllables)"
    )]
    TooLong { shown: String, len: usize },
    #[error(
        "{shown} contains U+{code:04X}, {what}, at byte {at}: a name may not hold characters a \
         listing does not show (controls, bidi overrides, zero-width characters, byte order \
         marks, line separators); remove it"
    )]
    Hidden {
        shown: String,
        code: u32,
        what: &'static str,
        at: usize,
    },
    #[error(
        "{shown} contains U+{code:04X} at byte {at}, a space that looks like a plain one but is \
         not: use a plain space (U+0020)"
    )]
    OddSpace { shown: String, code: u32, at: usize },
    #[error("{shown} contains '/': use another separator, such as '-'")]
    Slash { shown: String },
    #[error("{shown} is not a name ('.' and '..' mean directories): choose another")]
    Dots { shown: String },
    #[error(
        "{shown} starts with '-', which a command line reads as an option: start it otherwise"
    )]
    LeadingDash { shown: String },
    #[error("{shown} starts or ends with a space: remove it")]
    EdgeSpace { shown: String },
}

/// Checks `name` against the rule; the error is the first rule it breaks.
pub fn check(name: &str) -> Result<(), NameError> {
    let shown = || quoted(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            shown: shown(),
            len: name.len(),
        });
    }
    for (at, c) in name.char_indices() {
        if let Some(what) = hidden(c) {
            return Err(NameError::Hidden {
                shown: shown(),
                code: c.into(),
                what,
                at,
            });
        }
        if c != ' ' && get_general_category(c) == GeneralCategory::SpaceSeparator {
            return Err(NameError::OddSpace {
                shown: shown(),
                code: c.into(),
                at,
            });
        }
    }
    if name.contains('/') {
        return Err(NameError::Slash { shown: shown() });
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots { shown: shown() });
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingDash { shown: shown() });
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(NameError::EdgeSpace { shown: shown() });
    }
    Ok(())
}

/// What kind of character `c` is when a terminal would not show it (Unicode categories Cc, Cf,
/// Zl and Zp); `None` for every other character.
pub fn hidden(c: char) -> Option<&'static str> {
    match get_general_category(c) {
        GeneralCategory::Control => Some("a control character"),
        GeneralCategory::Format => Some("an invisible format character"),
        GeneralCategory::LineSeparator => Some("a line separator"),
        GeneralCategory::ParagraphSeparator => Some("a paragraph separator"),
        _ => None,
    }
}

/// `s` as a quoted string with invisible characters escaped (Rust's `{:?}`), cut to its first 40
/// characters so that a 10 kB value does not flood a message.
pub fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_hidden_character() {
        let e = check("web-base\u{200b}")
            .expect_err("zero width")
            .to_string();
        assert!(
            e.starts_with(r#""web-base\u{200b}" contains U+200B,"#),
            "{e}"
        );
        assert!(e.contains("at byte 8"), "{e}");
        let e = check("a\u{a0}b").expect_err("no-break space").to_string();
        assert!(e.contains("U+00A0"), "{e}");
        let e = check(&"x".repeat(300)).expect_err("too long").to_string();
        assert!(e.len() < 200 && e.contains("300 bytes"), "{e}");
    }
}

/// A gallery image version, `MAJOR.MINOR.PATCH`: digits only, no leading zeros (one spelling
/// per version), each part fitting in 32 bits. Ordered as numbers.
pub fn gallery_version(s: &str) -> Option<[u32; 3]> {
    let mut out = [0u32; 3];
    let mut parts = s.split('.');
    for slot in &mut out {
        let p = parts.next()?;
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `GALLERY/IMAGE` split in two, when `s` is one (a template source or `--base-image` naming a
/// gallery image; a version may follow as `:1.2.3`).
pub fn gallery_image(s: &str) -> Option<(&str, &str)> {
    let (gallery, image) = s.split_once('/')?;
    Some((gallery, image.split_once(':').map_or(image, |(i, _)| i)))
}

#[cfg(test)]
mod gallery_tests {
    use super::*;

    #[test]
    fn versions_have_one_spelling_and_order_as_numbers() {
        assert_eq!(gallery_version("1.2.3"), Some([1, 2, 3]));
        assert!(gallery_version("1.10.0") > gallery_version("1.9.9"));
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.-2.3",
            "a.b.c",
            "1.2.4294967296",
            "1..3",
        ] {
            assert_eq!(gallery_version(bad), None, "{bad}");
        }
        assert_eq!(gallery_image("web/app"), Some(("web", "app")));
        assert_eq!(gallery_image("web/app:1.0.0"), Some(("web", "app")));
        assert_eq!(gallery_image("debian-12"), None);
    }
}
