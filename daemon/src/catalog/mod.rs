//! The image catalog: which images exist, who sees and manages them (public, private, shared),
//! and the one way each is made, held, replaced and removed.
//!
//! An image's row is stored (state `creating`) before its file is written, as
//! `IMAGES/ID.*.partial`; the file becomes `IMAGES/ID.qcow2` by hash + fsync + rename + directory
//! fsync, and only then is the row marked `available`. Deleting marks the row `deleting`, removes
//! the file, then the row. A daemon that dies at any moment leaves rows that [`Catalog::open`]
//! repairs: `creating` ones become `failed` with their files removed, `deleting` ones finish.
//! Work that is dropped (a canceled build, shutdown) kills its programs and cleans up the same way.
//!
//! Here: the errors, the [`Catalog`] and reading it (list, get, a build's base). Who may do what
//! is `access.rs`, the name rules `names.rs`, leases `lease.rs`, creation, replacement, deletion
//! and recovery `lifecycle.rs`, shares of images and galleries and their answers `sharing.rs`, the producers (bootstrap, import, publish, export)
//! `produce/`, the stored record `record.rs`, atomic files `files.rs`.

mod access;
pub(crate) mod files;
mod galleries;
mod lease;
mod lifecycle;
mod names;
mod produce;
mod retention;
mod sharing;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_shared::protocol::{ErrorKind, GalleryRef, ImageInfo, RpcError, Visibility};
use tokio::sync::broadcast;

use crate::qemu_img::QemuImgError;
use crate::store::{Store, StoreError};
use crate::sync::{Holds, Slots};
use crate::tool::ToolError;

pub use crate::store::{ImageRecord, State};
pub use access::{is_admin, Requester};
pub use files::sha256_file;
pub use galleries::VersionTarget;
pub use lease::ImageLease;
pub use produce::bootstrap::bootstrap_list;
pub use produce::publish::PublishMeta;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("image {image:?} not found in project {project:?} (nor among public images or those shared with it); see `kiln image list`")]
    NotFound { project: String, image: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// kilnd's host cannot do this (not root, a program missing).
    #[error("{0}")]
    Unavailable(String),
    /// An external program failed.
    #[error("{0}")]
    Tool(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CatalogError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::NotFound { .. } => ErrorKind::NotFound,
            CatalogError::Forbidden(_) => ErrorKind::Forbidden,
            CatalogError::Conflict(_) => ErrorKind::Conflict,
            CatalogError::Invalid(_) => ErrorKind::InvalidParams,
            CatalogError::Unavailable(_) => ErrorKind::Unavailable,
            CatalogError::Tool(_) | CatalogError::Io { .. } | CatalogError::Store(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<CatalogError> for RpcError {
    fn from(e: CatalogError) -> RpcError {
        let kind = e.kind();
        if kind == ErrorKind::Internal {
            tracing::error!("catalog: {e}");
        }
        RpcError::new(kind, e.to_string())
    }
}

impl From<ToolError> for CatalogError {
    fn from(e: ToolError) -> CatalogError {
        match e {
            ToolError::Missing { .. } => CatalogError::Unavailable(e.to_string()),
            e => CatalogError::Tool(e.to_string()),
        }
    }
}

impl From<QemuImgError> for CatalogError {
    fn from(e: QemuImgError) -> CatalogError {
        match e {
            QemuImgError::Tool(e) => e.into(),
            e => CatalogError::Tool(e.to_string()),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Io { what, source }
}

/// The image catalog. Share it behind an `Arc`.
pub struct Catalog {
    store: Arc<Store>,
    dir: PathBuf,
    /// OSes being bootstrapped now.
    bootstrapping: Slots,
    /// Builds reading each image, by id.
    leases: Holds,
    /// Each image that has just become available (see [`Catalog::published`]).
    published: broadcast::Sender<Published>,
    /// Images deleted by force while leased: the last lease removes them.
    doomed: lease::Doomed,
}

/// An image that has just become available: a gallery version, or a bootstrapped or imported
/// image (superseding an older one of its name). What `[trigger]` templates wait for.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub name: String,
    /// The owning project; None for a public image.
    pub owner: Option<String>,
    pub gallery: Option<GalleryRef>,
}

/// Runs store and file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CatalogError::Tool(format!("catalog task failed: {e}")))?
}

impl Catalog {
    /// Opens the catalog over `store` with image files in `images_dir` (created 0700 when
    /// missing) and repairs what a previous daemon left unfinished (see [`Catalog::recover`]).
    pub fn open(store: Arc<Store>, images_dir: PathBuf) -> Result<Catalog, CatalogError> {
        if !images_dir.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&images_dir).map_err(io_err(format!(
                "create the images directory {}",
                images_dir.display()
            )))?;
            std::fs::set_permissions(&images_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("restrict {}", images_dir.display())))?;
        }
        let catalog = Catalog {
            store,
            dir: images_dir,
            bootstrapping: Slots::default(),
            leases: Holds::default(),
            published: broadcast::channel(256).0,
            doomed: lease::Doomed::default(),
        };
        catalog.recover()?;
        Ok(catalog)
    }

    /// Every image that becomes available from now on, as it does (lagging receivers lose the
    /// oldest).
    pub fn published(&self) -> broadcast::Receiver<Published> {
        self.published.subscribe()
    }

    /// Tells [`Catalog::published`] receivers that `record` is available.
    fn announce(&self, record: &ImageRecord) {
        let _ = self.published.send(Published {
            id: record.id.clone(),
            name: record.name.clone(),
            owner: record.owner.clone(),
            gallery: record.gallery.clone(),
        });
    }

    /// The directory holding the image files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn find(&self, project: &str, key: &str) -> Result<ImageRecord, CatalogError> {
        let (store, p, k) = (self.store.clone(), project.to_string(), key.to_string());
        blocking(move || Ok(store.find_image(&p, &k)?))
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                project: project.to_string(),
                image: key.to_string(),
            })
    }

    async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ImageRecord) -> Result<(), CatalogError> + Send + 'static,
    ) -> Result<ImageRecord, CatalogError> {
        let (store, id) = (self.store.clone(), id.to_string());
        blocking(move || {
            store
                .update_image(&id, change)?
                .ok_or_else(|| CatalogError::Conflict(format!("image {id} was deleted meanwhile")))
        })
        .await
    }

    /// The images `who` sees, by name and then newest first; optionally one visibility only.
    pub async fn list(
        &self,
        who: &Requester,
        visibility: Option<Visibility>,
    ) -> Result<Vec<ImageInfo>, CatalogError> {
        let (store, project) = (self.store.clone(), who.project.clone());
        let records = blocking(move || Ok(store.visible_images(&project)?)).await?;
        let mut out: Vec<ImageInfo> = records
            .iter()
            .filter_map(|r| r.info_for(&who.project))
            .filter(|i| visibility.is_none_or(|v| i.visibility == v))
            .collect();
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(b.created_at.cmp(&a.created_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// One image by id or name, as `who` sees it (see [`Store::find_image`] for how names
    /// resolve). Images `who` may not see are `NotFound`, exactly like missing ones.
    pub async fn get(&self, who: &Requester, key: &str) -> Result<ImageInfo, CatalogError> {
        let r = self.find(&who.project, key).await?;
        r.info_for(&who.project)
            .ok_or_else(|| CatalogError::NotFound {
                project: who.project.clone(),
                image: key.to_string(),
            })
    }

    fn image_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.qcow2"))
    }

    /// The available image `key` names for `project`, checked to be of `os`: what a build pins
    /// as its base when it is queued. `key` is an image's id or name, a gallery version
    /// `GALLERY/IMAGE:1.2.3`, or a gallery image `GALLERY/IMAGE` at `version` ("latest": the
    /// highest available version not excluded from latest, resolved now). (Blocking: it reads
    /// the store.)
    pub fn resolve_base(
        &self,
        project: &str,
        key: &str,
        version: &str,
        os: &str,
    ) -> Result<ImageRecord, CatalogError> {
        let found = match key.split_once('/') {
            Some((_, rest)) if !rest.contains(':') => {
                Some(self.resolve_version(project, key, version)?)
            }
            _ => self.store.find_image(project, key)?,
        };
        let r = found.ok_or_else(|| CatalogError::NotFound {
            project: project.to_string(),
            image: key.to_string(),
        })?;
        if r.state != State::Available {
            return Err(CatalogError::Conflict(format!(
                "base image {} ({}) is {}; only available images can be built from",
                r.name,
                r.id,
                r.state.as_str()
            )));
        }
        if r.os != os {
            return Err(CatalogError::Invalid(format!(
                "base image {} ({}) is {}, but the template is for {os}; pick a {os} image",
                r.name, r.id, r.os
            )));
        }
        Ok(r)
    }
}
