//! The rule for the path of a file a template or a request names: absolute and normalized.

use super::MAX_PATH_BYTES;
use crate::names;

/// Why a path a template or a request names cannot be used as given. Paths must be absolute and
/// normalized: kilnd does not know the client's working directory, and a `..` or a symlinked
/// directory would make the path mean something else than what was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is empty: write the absolute path of a file")]
    Empty,
    #[error("{shown} is {len} bytes; a path has at most {MAX_PATH_BYTES}")]
    TooLong { shown: String, len: usize },
    #[error(
        "{shown} contains U+{code:04X}, a control character (such as NUL or a newline):          remove it"
    )]
    Control { shown: String, code: u32 },
    #[error(
        "{shown} is relative, and kilnd cannot know what it is relative to: write the absolute \
         path (the kiln CLI resolves paths in a template file against the file's directory)"
    )]
    Relative { shown: String },
    #[error("{shown} has a {component:?} component: write the path without '.', '..' or '//'")]
    NotNormal {
        shown: String,
        component: &'static str,
    },
    #[error("{shown} ends with '/', so it names a directory: name the file")]
    Directory { shown: String },
}

/// Checks the path of a file a template or request names: absolute, normalized (no `.` or `..`
/// component, no `//`), without control characters, not ending in `/`, at most
/// [`MAX_PATH_BYTES`]. Whether it exists and is a regular file is for whoever opens it.
pub fn check_file_path(path: &str) -> Result<(), PathError> {
    let shown = || names::quoted(path);
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            shown: shown(),
            len: path.len(),
        });
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(PathError::Control {
            shown: shown(),
            code: c.into(),
        });
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Relative { shown: shown() });
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(PathError::Directory { shown: shown() });
    }
    for component in rest.split('/') {
        let bad = match component {
            "" => "//",
            "." => ".",
            ".." => "..",
            _ => continue,
        };
        return Err(PathError::NotNormal {
            shown: shown(),
            component: bad,
        });
    }
    Ok(())
}
