//! Export: a build's disk converted to a file at a path the build names, written only where the
//! build's user may write, never inside kilnd's data directory, never over a file unless asked.

use std::path::{Path, PathBuf};

use crate::catalog::{blocking, files, io_err, Catalog, CatalogError};
use crate::qemu_img;

impl Catalog {
    /// The distribute step for `export` targets: converts the build's qcow2 `source` to
    /// `format` (`qcow2` | `raw` | `vhd` | `vmdk`) at the absolute path `dest`, written as
    /// `DEST.partial`, hashed, fsynced, renamed to `dest` and its directory fsynced. A `vhd` is
    /// a fixed-size VHD (what Azure takes); a `qcow2` export is uncompressed.
    ///
    /// For a build another user started, `dest`'s directory is opened as that user (they must
    /// be able to write it) and the file is theirs. Never onto a directory, never inside kilnd's
    /// data directory, and never over an existing file unless `overwrite`, checked again by the
    /// final rename itself.
    pub async fn export(
        &self,
        source: &Path,
        format: &str,
        dest: &Path,
        owner: Option<&crate::as_user::User>,
        overwrite: bool,
    ) -> Result<(PathBuf, u64, String), CatalogError> {
        use crate::as_user::OpenError;
        use files::PinError;
        let fmt = qemu_img::Format::for_export(format).ok_or_else(|| {
            CatalogError::Invalid(format!(
                "cannot export to format {format:?}: use qcow2, raw, vhd or vmdk"
            ))
        })?;
        let shown = dest.display();
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(CatalogError::Invalid(format!(
                "export path {shown} must be an absolute path naming a file"
            )));
        };
        if !dest.is_absolute() {
            return Err(CatalogError::Invalid(format!(
                "export path {shown} must be absolute"
            )));
        }
        let user = owner.filter(|u| u.is_other());
        let dir = crate::as_user::open_dir_to_write(user, parent)
            .await
            .map_err(|e| match e {
                OpenError::Helper { .. } => CatalogError::Unavailable(e.to_string()),
                OpenError::NotDirectory { .. } | OpenError::NotRegular { .. } => {
                    CatalogError::Invalid(format!("cannot export to {shown}: {e}"))
                }
                OpenError::CannotRead { .. } | OpenError::CannotWrite { .. } => {
                    CatalogError::Forbidden(format!(
                        "cannot export to {shown}: {e}, so kilnd will not write there for them"
                    ))
                }
            })?;
        // A few system calls on handles already open: no need for the blocking pool.
        let data_dir = self.data_dir();
        let pinned = if files::is_inside(&dir, data_dir) {
            Err(PinError::InDataDir(
                shown.to_string(),
                data_dir.display().to_string(),
            ))
        } else {
            files::Pinned::create(dir, parent, name, user, overwrite)
        }
        .map_err(|e| match e {
            PinError::Exists(_) => CatalogError::Conflict(e.to_string()),
            PinError::Io { .. } => CatalogError::Tool(format!("cannot export: {e}")),
            e => CatalogError::Invalid(format!("cannot export: {e}")),
        })?;
        qemu_img::convert(source, "qcow2", fmt, &pinned.write_path()).await?;
        let target = dest.to_path_buf();
        let (size, sha256) = blocking(move || {
            pinned.seal().map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CatalogError::Conflict(format!(
                        "{} appeared while the export was written; kilnd left it alone. Set \
                         `overwrite = true` in the export target to replace it",
                        target.display()
                    ))
                } else {
                    io_err(format!("write {}", target.display()))(e)
                }
            })
        })
        .await?;
        tracing::info!(path = %dest.display(), size, format, "exported image");
        Ok((dest.to_path_buf(), size, sha256))
    }

    /// kilnd's data directory: the one holding the images directory (and the store).
    fn data_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }
}
