//! The catalog's producers, each of which writes an image or a file the way [`super::lifecycle::Creation`]
//! and [`super::files::Pinned`] make safe: bootstrap (a public base image from a distribution's
//! mirror), import (a caller's file), publish (a build's image) and export (a build's file).

pub(super) mod bootstrap;
mod cloud_user;
mod export;
mod import;
pub(super) mod publish;

use std::path::PathBuf;

use super::files;

/// Removes a file when dropped, however the work ends (a bootstrap's script, an import's private
/// copy of the caller's file).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = files::remove_file(&p);
        }
    }
}
