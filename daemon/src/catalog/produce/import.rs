//! Import: a caller's qcow2 or raw file, copied as the caller into a kilnd-private file that alone
//! is inspected and converted, becomes an image.

use std::path::Path;

use kiln_shared::protocol::ImageInfo;

use super::RemoveOnDrop;
use crate::catalog::names::{check_name, check_os, new_id, scope_text};
use crate::catalog::{blocking, files, io_err, Catalog, CatalogError, ImageRecord, Requester};
use crate::qemu_img;

use super::cloud_user;

/// A login name as useradd takes it: a lowercase letter or `_`, then lowercase letters, digits,
/// `_` or `-`, at most 32 bytes.
fn check_user(user: &str) -> Result<(), CatalogError> {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    if first_ok && rest_ok && user.len() <= 32 {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "--user {user:?} is not a login name: a lowercase letter or _, then lowercase \
             letters, digits, _ or -, at most 32 bytes (e.g. debian, ubuntu, cloud-user)"
        )))
    }
}

impl Catalog {
    /// Imports the qcow2 or raw file at `path` (absolute; readable by `who`) as image `name`:
    /// private to `who`'s project, or public (admins only). Refuses files with a backing file or
    /// an external data file, other formats, and a name already taken in the same scope.
    ///
    /// qemu-img never opens the caller's file: its bytes are copied (through the file opened as
    /// the caller, see [`crate::as_user::open_file`]) into a kilnd-private file, and only that
    /// copy is inspected and converted, with its format named and backing files disabled. What
    /// the caller does to their file meanwhile changes nothing but which of their bytes come in.
    pub async fn import(
        &self,
        who: &Requester,
        path: &str,
        name: &str,
        os: &str,
        login_user: Option<&str>,
        public: bool,
    ) -> Result<ImageInfo, CatalogError> {
        use crate::as_user::OpenError;
        if public {
            who.needs_admin(&format!("importing {name} as a public image"))?;
        }
        check_name(name)?;
        check_os(os)?;
        if let Some(user) = login_user {
            check_user(user)?;
        }
        let given = Path::new(path);
        if !given.is_absolute() {
            return Err(CatalogError::Invalid(format!(
                "{path}: give kilnd an absolute path (kiln image import resolves relative ones)"
            )));
        }
        let user = who.user();
        let source = crate::as_user::open_file(user.is_other().then_some(user), given)
            .await
            .map_err(|e| match e {
                OpenError::NotRegular { .. } | OpenError::NotDirectory { .. } => {
                    CatalogError::Invalid(e.to_string())
                }
                OpenError::Helper { .. } => CatalogError::Unavailable(e.to_string()),
                OpenError::CannotRead { .. } | OpenError::CannotWrite { .. } => {
                    CatalogError::Forbidden(format!(
                        "{e}; kilnd imports only files the caller can read"
                    ))
                }
            })?;

        let owner = (!public).then(|| who.project.clone());
        let id = new_id();
        let mut record = ImageRecord::new(&id, name, os, owner.as_deref(), self.image_path(&id));
        if let Some(user) = login_user {
            record.default_user = user.to_owned();
        }
        let check_record = record.clone();
        let creation = self
            .begin(record, move |existing, _| {
                match existing.iter().find(|e| {
                    e.is_live() && e.name == check_record.name && e.same_scope(&check_record)
                }) {
                    Some(e) => Err(CatalogError::Conflict(format!(
                        "an image named {} already exists {} (id {}, {}); delete it first \
                         (`kiln image delete {}`) or pick another name",
                        e.name,
                        scope_text(e.owner.as_deref()),
                        e.id,
                        e.state.as_str(),
                        e.id
                    ))),
                    None => Ok(()),
                }
            })
            .await?;

        // The private copy: ID.source.partial, swept like every partial file of the image.
        let copy = self.dir.join(format!("{id}.source{}", files::PARTIAL));
        let _copy = RemoveOnDrop(Some(copy.clone()));
        let (to, shown) = (copy.clone(), path.to_string());
        let header = blocking(move || {
            files::copy_private(&source, &to)
                .map_err(io_err(format!("copy {shown} into {}", to.display())))
        })
        .await?;
        let format = match qemu_img::sniff(&header) {
            qemu_img::Sniffed::Raw => "raw",
            qemu_img::Sniffed::Qcow2 {
                backing: false,
                data_file: false,
            } => "qcow2",
            qemu_img::Sniffed::Other(format) => {
                return Err(CatalogError::Invalid(format!(
                    "{path} is a {format} image; kiln imports qcow2 or raw. Convert it first: \
                     qemu-img convert -f {format} -O qcow2 {path} {name}.qcow2"
                )))
            }
            qemu_img::Sniffed::Qcow2 { backing, .. } => {
                let what = if backing {
                    "has a backing file"
                } else {
                    "keeps its data in an external data file"
                };
                return Err(CatalogError::Invalid(format!(
                    "{path} {what}: kiln imports only self-contained images; flatten it \
                     first: qemu-img convert -O qcow2 {path} {name}-flat.qcow2"
                )));
            }
        };
        let info = qemu_img::info(&copy, Some(format)).await.map_err(|e| {
            CatalogError::Invalid(format!("{path} is not a disk image qemu-img can read: {e}"))
        })?;
        if info.backing_file.is_some() || info.data_file.is_some() {
            return Err(CatalogError::Invalid(format!(
                "{path} refers to other files (a backing or external data file): kiln imports \
                 only self-contained images"
            )));
        }
        if login_user.is_none() {
            let found = self.read_default_user(&copy, format, path, &id).await?;
            let (store, row) = (self.store.clone(), id.clone());
            blocking(move || {
                store
                    .update_image(&row, |r| {
                        r.default_user = found;
                        Ok::<(), CatalogError>(())
                    })
                    .map(drop)
            })
            .await?;
        }
        let written = files::partial_of(&creation.record.path);
        qemu_img::convert_alone(&copy, format, qemu_img::Format::Qcow2Zstd, &written).await?;
        drop(_copy);
        let record = creation.finish(&written).await?;
        self.announce(&record);
        record
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }

    /// The default user named by the cloud-init config inside `copy` (kilnd's private copy of
    /// the caller's `shown` file, as `format`), or the refusal that asks for `--user`. A qcow2
    /// copy is first converted (standing alone, like the import itself) into a sparse raw file.
    async fn read_default_user(
        &self,
        copy: &Path,
        format: &str,
        shown: &str,
        id: &str,
    ) -> Result<String, CatalogError> {
        let started = std::time::Instant::now();
        let raw = self.dir.join(format!("{id}.raw{}", files::PARTIAL));
        let _raw = RemoveOnDrop(Some(raw.clone()));
        let read_from = if format == "raw" {
            copy.to_owned()
        } else {
            qemu_img::convert_alone(copy, format, qemu_img::Format::Raw, &raw).await?;
            raw.clone()
        };
        let found = blocking(move || Ok(cloud_user::read(&read_from))).await?;
        tracing::info!(
            "import: read the default user of {shown} in {:.2} s: {found:?}",
            started.elapsed().as_secs_f64()
        );
        found.map_err(|why| {
            CatalogError::Invalid(format!(
                "{shown}: kiln cannot tell the image's default user: {why}. Name it: \
                 `kiln image import {shown} --user NAME ...`"
            ))
        })
    }
}
