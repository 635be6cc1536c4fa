//! The image catalog: public/private/shared images, bootstrap, import, atomic publish.
//!
//! An image's row is stored (state `creating`) before its file is written, as
//! `IMAGES/ID.*.partial`; the file becomes `IMAGES/ID.qcow2` by hash + fsync + rename + directory
//! fsync, and only then is the row marked `available`. Deleting marks the row `deleting`, removes
//! the file, then the row. A daemon that dies at any moment leaves rows that [`Catalog::open`]
//! repairs: `creating` ones become `failed` with their files removed, `deleting` ones finish.
//! Work that is dropped (a canceled build, shutdown) kills its programs and cleans up the same way.

mod bootstrap;
pub(crate) mod files;
mod record;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_shared::protocol::{ErrorKind, ImageInfo, RpcError, Visibility};
use kiln_shared::validate::is_os_id;
use sha2::{Digest, Sha256};

use crate::access::Peer;
use crate::qemu_img::{self, QemuImgError};
use crate::store::{Store, StoreError};
use crate::sync::lock;
use crate::tool::{self, ToolError};

pub use files::sha256_file;
pub use record::{ImageRecord, State};

const GIB: u64 = 1 << 30;

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

/// Who asks the catalog for something: the project they act in, whether they may manage public
/// images, and their credentials (for files they ask kilnd to read).
#[derive(Debug, Clone)]
pub struct Requester {
    pub project: String,
    pub admin: bool,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
    /// The configured admin group, for messages.
    pub admin_group: Option<String>,
}

impl Requester {
    pub fn new(peer: &Peer, project: &str, admin_group: Option<&str>) -> Requester {
        Requester {
            project: project.to_string(),
            admin: is_admin(peer, admin_group),
            uid: peer.uid,
            gid: peer.gid,
            gids: peer.gids.clone(),
            admin_group: admin_group.map(str::to_string),
        }
    }

    pub fn user(&self) -> crate::as_user::User<'_> {
        crate::as_user::User {
            uid: self.uid,
            gid: self.gid,
            gids: &self.gids,
        }
    }

    fn needs_admin(&self, what: &str) -> Result<(), CatalogError> {
        if self.admin {
            return Ok(());
        }
        let how = match &self.admin_group {
            Some(g) => format!("membership in the admin group {g:?}"),
            None => "an admin group (set admin_group in kilnd.toml and join it)".to_string(),
        };
        Err(CatalogError::Forbidden(format!(
            "{what} manages public images, which needs root, kilnd's own user or {how}; uid {} \
             has none of these",
            self.uid
        )))
    }
}

/// Whether `peer` may manage public images: root, the daemon's own user, or a member of
/// `admin_group` (a group name or number).
pub fn is_admin(peer: &Peer, admin_group: Option<&str>) -> bool {
    peer.uid == 0
        || peer.uid == kiln_shared::paths::current_uid()
        || admin_group
            .and_then(|g| crate::access::IdTable::groups().id_of(g))
            .is_some_and(|gid| peer.gids.contains(&gid))
}

/// What the build pipeline knows about an image it publishes (a `distribute` target of type
/// `image`): a private image of `project`.
#[derive(Debug, Clone)]
pub struct PublishMeta {
    pub name: String,
    pub os: String,
    pub project: String,
    pub template: Option<String>,
    pub template_revision: Option<u64>,
    pub build: Option<u64>,
    /// Raised to the image's virtual size (rounded up to whole GiB) when smaller.
    pub min_disk_gb: u64,
    pub share_with: Vec<String>,
}

type Leases = Arc<Mutex<HashMap<String, usize>>>;

/// An available image held for a build that reads it (as its base): while any lease on it
/// lives, the image is not deleted, and a newer image of the same name does not remove it.
#[derive(Debug)]
pub struct ImageLease {
    record: ImageRecord,
    leases: Leases,
}

impl ImageLease {
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }

    /// The qcow2 file to read (e.g. as the backing file of an overlay).
    pub fn path(&self) -> &Path {
        &self.record.path
    }
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let mut leases = lock(&self.leases);
        if let Some(n) = leases.get_mut(&self.record.id) {
            *n -= 1;
            if *n == 0 {
                leases.remove(&self.record.id);
            }
        }
    }
}

/// The image catalog. Share it behind an `Arc`.
pub struct Catalog {
    store: Arc<Store>,
    dir: PathBuf,
    /// OSes being bootstrapped now.
    bootstrapping: Mutex<HashSet<String>>,
    leases: Leases,
}

/// Runs store and file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CatalogError::Tool(format!("catalog task failed: {e}")))?
}

/// A new image id: `img-` and 16 hex digits.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    format!("img-{}", &files::hex(&h.finalize())[..16])
}

/// An image's name: kiln-shared's one rule for names.
fn check_name(name: &str) -> Result<(), CatalogError> {
    kiln_shared::names::check(name).map_err(|e| CatalogError::Invalid(format!("name {e}")))
}

fn check_os(os: &str) -> Result<(), CatalogError> {
    if is_os_id(os) {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "{os:?} is not an OS id: write distribution-version in lowercase letters, digits, \
             dots and dashes, e.g. \"debian-12\" or \"ubuntu-24.04\""
        )))
    }
}

fn check_project_name(p: &str) -> Result<(), CatalogError> {
    kiln_shared::names::check(p).map_err(|e| CatalogError::Invalid(format!("project {e}")))
}

/// Whole GiB needed to hold `bytes`.
fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

fn scope_text(owner: Option<&str>) -> String {
    match owner {
        Some(p) => format!("in project {p:?}"),
        None => "among the public images".to_string(),
    }
}

/// A `creating` row and its files. Dropped before [`Creation::finish`] succeeded (an error, a
/// canceled build, shutdown), it removes the files and the row.
struct Creation<'a> {
    catalog: &'a Catalog,
    record: ImageRecord,
    done: bool,
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let r = &self.record;
        tracing::info!(image = %r.id, name = %r.name, "image not created; removing its files");
        if let Err(e) = files::remove_image_files(&self.catalog.dir, &r.id, &r.path) {
            tracing::warn!(image = %r.id, "cannot remove files of an unfinished image: {e}");
        }
        if let Err(e) = self.catalog.store.delete_image(&r.id) {
            tracing::warn!(image = %r.id, "cannot remove the row of an unfinished image: {e}");
        }
    }
}

impl Creation<'_> {
    /// Seals `written` as the image's file and marks the image available.
    async fn finish(mut self, written: &Path) -> Result<ImageRecord, CatalogError> {
        let (src, dest) = (written.to_path_buf(), self.record.path.clone());
        let (file_size, sha256) = blocking(move || {
            files::seal(&src, &dest).map_err(io_err(format!("write image {}", dest.display())))
        })
        .await?;
        let info = qemu_img::info(&self.record.path, Some("qcow2")).await?;
        if info.backing_file.is_some() || info.data_file.is_some() {
            return Err(CatalogError::Tool(format!(
                "{} came out with a backing or data file; refusing to publish it",
                self.record.path.display()
            )));
        }
        let store = self.catalog.store.clone();
        let id = self.record.id.clone();
        let record = blocking(move || {
            store
                .update_image(&id, |r| {
                    if r.state != State::Creating {
                        return Err(CatalogError::Conflict(format!(
                            "image {id} became {} while it was being created",
                            r.state.as_str()
                        )));
                    }
                    r.state = State::Available;
                    r.file_size = file_size;
                    r.sha256 = sha256;
                    r.virtual_size = info.virtual_size;
                    r.min_disk_gb = r.min_disk_gb.max(gib_ceil(info.virtual_size));
                    Ok(())
                })?
                .ok_or_else(|| CatalogError::Conflict(format!("image {id} vanished")))
        })
        .await?;
        self.done = true;
        tracing::info!(image = %record.id, name = %record.name, size = record.file_size, "image available");
        Ok(record)
    }
}

/// Removes a file when dropped unless disarmed (an export that did not finish).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = files::remove_file(&p);
        }
    }
}

/// Releases an OS's bootstrap slot when dropped.
struct Bootstrapping<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Bootstrapping<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
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
            bootstrapping: Mutex::default(),
            leases: Leases::default(),
        };
        catalog.recover()?;
        Ok(catalog)
    }

    /// The directory holding the image files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Repairs what a daemon that died left behind; call only while no catalog work runs.
    /// Images still `creating` lose their files and become `failed`; images being deleted are
    /// deleted; an available image whose file is gone becomes `failed`; leftover temporary
    /// files and bootstrap work directories are removed. Never leaves a half-written image
    /// listed as available.
    pub fn recover(&self) -> Result<(), CatalogError> {
        for r in self.store.list_images()? {
            match r.state {
                State::Creating => {
                    files::remove_image_files(&self.dir, &r.id, &r.path)
                        .map_err(io_err(format!("remove the unfinished image {}", r.id)))?;
                    self.store.update_image(&r.id, |r| {
                        r.state = State::Failed;
                        r.message = Some(
                            "kilnd stopped while this image was being created; its partial \
                             file was removed. Delete it and create it again"
                                .into(),
                        );
                        Ok::<_, StoreError>(())
                    })?;
                    tracing::warn!(image = %r.id, name = %r.name, "unfinished image marked failed");
                }
                State::Deleting => {
                    files::remove_image_files(&self.dir, &r.id, &r.path)
                        .map_err(io_err(format!("remove the image {} being deleted", r.id)))?;
                    self.store.delete_image(&r.id)?;
                    tracing::info!(image = %r.id, name = %r.name, "finished deleting image");
                }
                State::Available if !r.path.is_file() => {
                    self.store.update_image(&r.id, |r| {
                        r.state = State::Failed;
                        r.message = Some(format!(
                            "the image file {} is missing; delete the image and create it again",
                            r.path.display()
                        ));
                        Ok::<_, StoreError>(())
                    })?;
                    tracing::warn!(image = %r.id, path = %r.path.display(), "image file missing; marked failed");
                }
                State::Available | State::Failed => {}
            }
        }
        for p in files::sweep(&self.dir) {
            tracing::info!("removed leftover {}", p.display());
        }
        Ok(())
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

    /// Holds the available image `key` names for `project` (a build's base image) until the
    /// lease is dropped.
    pub async fn lease(&self, project: &str, key: &str) -> Result<ImageLease, CatalogError> {
        let found = self.find(project, key).await?;
        *lock(&self.leases).entry(found.id.clone()).or_default() += 1;
        let mut lease = ImageLease {
            record: found.clone(),
            leases: self.leases.clone(),
        };
        // Re-read after taking the lease: a delete that began meanwhile either sees the lease
        // or has already left a state this check refuses.
        let (store, id) = (self.store.clone(), found.id.clone());
        let now = blocking(move || Ok(store.get_image(&id)?)).await?;
        match now {
            Some(r) if r.state == State::Available => {
                lease.record = r;
                Ok(lease)
            }
            Some(r) => Err(CatalogError::Conflict(format!(
                "image {} ({}) is {}; only available images can be built from",
                r.name,
                r.id,
                r.state.as_str()
            ))),
            None => Err(CatalogError::NotFound {
                project: project.to_string(),
                image: key.to_string(),
            }),
        }
    }

    fn leased(&self, id: &str) -> usize {
        lock(&self.leases).get(id).copied().unwrap_or(0)
    }

    /// Holds image `key` for saving a booted VM of it (warm start): like deleting, its owner
    /// project may do this to a private image, an admin to a public one.
    pub async fn lease_to_manage(
        &self,
        who: &Requester,
        key: &str,
    ) -> Result<ImageLease, CatalogError> {
        let lease = self.lease(&who.project, key).await?;
        let r = lease.record();
        match r.visibility_for(&who.project) {
            Some(Visibility::Public) => who.needs_admin(&format!("warming image {}", r.name))?,
            Some(Visibility::Shared) => {
                return Err(CatalogError::Forbidden(format!(
                    "image {} belongs to project {:?}; only that project can warm it",
                    r.name,
                    r.owner.as_deref().unwrap_or_default()
                )))
            }
            _ => {}
        }
        Ok(lease)
    }

    /// Deletes an image: its owner project may delete a private image, an admin a public one.
    pub async fn delete(&self, who: &Requester, key: &str) -> Result<(), CatalogError> {
        let r = self.find(&who.project, key).await?;
        match r.visibility_for(&who.project) {
            Some(Visibility::Public) => who.needs_admin(&format!("deleting image {}", r.name))?,
            Some(Visibility::Shared) => {
                return Err(CatalogError::Forbidden(format!(
                    "image {} belongs to project {:?}, which shared it with {:?}; only {:?} can \
                     delete it",
                    r.name,
                    r.owner.as_deref().unwrap_or_default(),
                    who.project,
                    r.owner.as_deref().unwrap_or_default()
                )))
            }
            _ => {}
        }
        self.remove(&r).await
    }

    /// `deleting` → file removed → row removed. Refuses images being created or in use.
    async fn remove(&self, r: &ImageRecord) -> Result<(), CatalogError> {
        let name = r.name.clone();
        let marked = self
            .update(&r.id, move |r| match r.state {
                State::Available | State::Failed => {
                    r.state = State::Deleting;
                    Ok(())
                }
                State::Creating => Err(CatalogError::Conflict(format!(
                    "image {name} is still being created; wait until it is available or failed"
                ))),
                State::Deleting => Err(CatalogError::Conflict(format!(
                    "image {name} is being deleted already"
                ))),
            })
            .await;
        let deleting = marked?;
        let users = self.leased(&r.id);
        if users > 0 {
            // Back to the state it had: the image stays as it was.
            let state = r.state;
            self.update(&r.id, move |x| {
                x.state = state;
                Ok(())
            })
            .await?;
            return Err(CatalogError::Conflict(format!(
                "image {} is in use by {users} build{}; delete it once they have finished",
                r.name,
                if users == 1 { "" } else { "s" }
            )));
        }
        let (store, dir) = (self.store.clone(), self.dir.clone());
        blocking(move || {
            files::remove_image_files(&dir, &deleting.id, &deleting.path)
                .map_err(io_err(format!("remove {}", deleting.path.display())))?;
            store.delete_image(&deleting.id)?;
            Ok(())
        })
        .await?;
        tracing::info!(image = %r.id, name = %r.name, "image deleted");
        Ok(())
    }

    /// Lets `projects` see a private image of `who`'s project (as `shared`).
    pub async fn share(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
    ) -> Result<ImageInfo, CatalogError> {
        self.change_shares(who, key, projects, true).await
    }

    /// Stops `projects` from seeing a private image of `who`'s project.
    pub async fn unshare(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
    ) -> Result<ImageInfo, CatalogError> {
        self.change_shares(who, key, projects, false).await
    }

    async fn change_shares(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
        add: bool,
    ) -> Result<ImageInfo, CatalogError> {
        let verb = if add { "share" } else { "unshare" };
        if projects.is_empty() {
            return Err(CatalogError::Invalid(format!(
                "name at least one project to {verb} the image with"
            )));
        }
        for p in projects {
            check_project_name(p)?;
        }
        let r = self.find(&who.project, key).await?;
        match r.visibility_for(&who.project) {
            Some(Visibility::Public) => {
                return Err(CatalogError::Invalid(format!(
                    "image {} is public: every project sees it already",
                    r.name
                )))
            }
            Some(Visibility::Shared) => {
                return Err(CatalogError::Forbidden(format!(
                    "image {} belongs to project {:?}; only that project can {verb} it",
                    r.name,
                    r.owner.as_deref().unwrap_or_default()
                )))
            }
            _ => {}
        }
        if add && projects.iter().any(|p| p == &who.project) {
            return Err(CatalogError::Invalid(format!(
                "image {} belongs to project {:?} already",
                r.name, who.project
            )));
        }
        let projects = projects.to_vec();
        let updated = self
            .update(&r.id, move |r| {
                if add {
                    r.shared_with.extend(projects);
                } else {
                    r.shared_with.retain(|p| !projects.contains(p));
                }
                r.shared_with.sort();
                r.shared_with.dedup();
                Ok(())
            })
            .await?;
        tracing::info!(image = %updated.id, shared_with = ?updated.shared_with, "image {verb}d");
        updated
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image changed owner meanwhile".into()))
    }

    /// Stores the row of a new image (state `creating`) after `check` accepted the rows there.
    async fn begin(
        &self,
        record: ImageRecord,
        check: impl FnOnce(&[ImageRecord]) -> Result<(), CatalogError> + Send + 'static,
    ) -> Result<Creation<'_>, CatalogError> {
        let store = self.store.clone();
        let row = record.clone();
        blocking(move || store.insert_image_checked(&row, check)).await?;
        tracing::info!(image = %record.id, name = %record.name, "creating image");
        Ok(Creation {
            catalog: self,
            record,
            done: false,
        })
    }

    fn image_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.qcow2"))
    }

    /// Once `new` is available, removes the older available images of its name in its scope
    /// (their shares carry over to `new`). Ones in use by builds stay until deleted by hand.
    async fn supersede(&self, new: ImageRecord) -> ImageRecord {
        let store = self.store.clone();
        let Ok(all) = blocking(move || Ok(store.list_images()?)).await else {
            return new;
        };
        let older: Vec<ImageRecord> = all
            .into_iter()
            .filter(|o| {
                o.id != new.id
                    && o.name == new.name
                    && o.same_scope(&new)
                    && o.state == State::Available
                    && o.created_at <= new.created_at
            })
            .collect();
        let inherited: Vec<String> = older.iter().flat_map(|o| o.shared_with.clone()).collect();
        let mut new = new;
        if !inherited.is_empty() && new.owner.is_some() {
            let merged = self
                .update(&new.id, move |r| {
                    r.shared_with.extend(inherited);
                    r.shared_with.sort();
                    r.shared_with.dedup();
                    Ok(())
                })
                .await;
            match merged {
                Ok(r) => new = r,
                Err(e) => tracing::warn!(image = %new.id, "cannot carry shares over: {e}"),
            }
        }
        for o in older {
            match self.remove(&o).await {
                Ok(()) => {
                    tracing::info!(old = %o.id, new = %new.id, name = %o.name, "replaced older image")
                }
                Err(e) => {
                    tracing::warn!(old = %o.id, new = %new.id, "kept older image of the same name: {e}")
                }
            }
        }
        new
    }

    /// Builds the public base image `os` (e.g. `debian-12`) from the distribution's mirror and
    /// publishes it under the name `os`, replacing an older one only once the new one is
    /// available. Each `==> ` line of the script goes to `progress`. Takes minutes; needs an
    /// admin, and kilnd running as root with mmdebstrap installed.
    pub async fn bootstrap(
        &self,
        who: &Requester,
        os: &str,
        progress: impl Fn(String) + Send + Sync,
    ) -> Result<ImageInfo, CatalogError> {
        who.needs_admin(&format!("bootstrapping {os}"))?;
        let recipe = bootstrap::recipe(os).ok_or_else(|| {
            CatalogError::Invalid(format!(
                "kiln cannot bootstrap {os:?}; it can bootstrap: {}. For another OS, import an \
                 image with `kiln image import FILE --name NAME --os OS --public`",
                bootstrap::supported()
            ))
        })?;
        let uid = kiln_shared::paths::current_uid();
        if uid != 0 {
            return Err(CatalogError::Unavailable(format!(
                "bootstrapping {os} needs kilnd to run as root (mmdebstrap builds the root tree \
                 and mounts it), but this kilnd runs as uid {uid}; use a kilnd started as root, \
                 or build the image elsewhere and `kiln image import` it"
            )));
        }
        let missing = recipe.missing_tools();
        if !missing.is_empty() {
            let tools: Vec<String> = missing
                .iter()
                .map(|(t, p)| format!("{t} (package {p})"))
                .collect();
            let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
            packages.dedup();
            return Err(CatalogError::Unavailable(format!(
                "bootstrapping {os} needs programs kilnd's host lacks: {}; install them with \
                 `apt-get install {}`",
                tools.join(", "),
                packages.join(" ")
            )));
        }
        if !lock(&self.bootstrapping).insert(os.to_string()) {
            return Err(CatalogError::Conflict(format!(
                "{os} is being bootstrapped already; wait for that to finish"
            )));
        }
        let _slot = Bootstrapping(&self.bootstrapping, os.to_string());

        let id = new_id();
        let record = ImageRecord::new(&id, os, os, None, self.image_path(&id));
        let creation = self.begin(record, |_| Ok(())).await?;
        let script = self.dir.join(format!("{}{id}.sh", files::SCRIPT_PREFIX));
        let written = self.dir.join(format!("{id}.bootstrap{}", files::PARTIAL));
        let script_text = recipe.script;
        let path = script.clone();
        blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, script_text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(io_err(format!("write {}", path.display())))
        })
        .await?;
        let _script = RemoveOnDrop(Some(script.clone()));
        progress(format!("==> bootstrapping {os} as public image {id}"));
        let search_path = bootstrap::search_path();
        let envs = [
            (
                "PATH",
                search_path
                    .to_str()
                    .unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin"),
            ),
            ("KILN_COMPRESS", "zstd"),
        ];
        let args = [
            script.as_os_str(),
            recipe.suite.as_ref(),
            written.as_os_str(),
            self.dir.as_os_str(),
        ];
        tool::stream("bash", &args, &envs, |line| {
            if line.starts_with("==> ") {
                progress(line.to_string());
            }
        })
        .await
        .map_err(|e| match CatalogError::from(e) {
            CatalogError::Tool(msg) => {
                CatalogError::Tool(format!("bootstrapping {os} failed: {msg}"))
            }
            e => e,
        })?;
        let record = creation.finish(&written).await?;
        progress(format!(
            "==> published {os} ({} bytes, sha256 {})",
            record.file_size, record.sha256
        ));
        let record = self.supersede(record).await;
        record
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }

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
        public: bool,
    ) -> Result<ImageInfo, CatalogError> {
        use crate::as_user::OpenError;
        if public {
            who.needs_admin(&format!("importing {name} as a public image"))?;
        }
        check_name(name)?;
        check_os(os)?;
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
        let record = ImageRecord::new(&id, name, os, owner.as_deref(), self.image_path(&id));
        let check_record = record.clone();
        let creation = self
            .begin(record, move |existing| {
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
        let written = files::partial_of(&creation.record.path);
        qemu_img::convert_alone(&copy, format, qemu_img::Format::Qcow2Zstd, &written).await?;
        drop(_copy);
        let record = creation.finish(&written).await?;
        record
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }

    /// The distribute step for `image` targets: converts the build's qcow2 `source` (an overlay
    /// is read through its backing chain) into a zstd-compressed, self-contained qcow2 in the
    /// catalog as a private image of `meta.project`. The row is stored (`creating`) first; the
    /// file is hashed, fsynced and renamed into place before the row becomes `available`. An
    /// older available image of the same name in the project is then replaced (its shares
    /// carry over). Dropping the future kills qemu-img and removes the row and files.
    pub async fn publish(
        &self,
        source: &Path,
        meta: PublishMeta,
    ) -> Result<ImageInfo, CatalogError> {
        check_name(&meta.name)?;
        check_os(&meta.os)?;
        check_project_name(&meta.project)?;
        let id = new_id();
        let mut record = ImageRecord::new(
            &id,
            &meta.name,
            &meta.os,
            Some(&meta.project),
            self.image_path(&id),
        );
        record.template = meta.template;
        record.template_revision = meta.template_revision;
        record.build = meta.build;
        record.min_disk_gb = meta.min_disk_gb;
        record.shared_with = meta.share_with;
        record.shared_with.retain(|p| p != &meta.project);
        record.shared_with.sort();
        record.shared_with.dedup();
        let creation = self.begin(record, |_| Ok(())).await?;
        let written = files::partial_of(&creation.record.path);
        qemu_img::convert(source, "qcow2", qemu_img::Format::Qcow2Zstd, &written).await?;
        let record = creation.finish(&written).await?;
        let record = self.supersede(record).await;
        record
            .info_for(&meta.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }

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
        owner: Option<&crate::store::StartedBy>,
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
        let user = owner
            .map(crate::store::StartedBy::user)
            .filter(|u| u.is_other());
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

    /// `publish` for a build of `template`: a private image of the build's project named as the
    /// build asked, recording template, revision and build id.
    pub async fn publish_build(
        &self,
        source: &Path,
        build: &kiln_shared::build::Build,
        template: &kiln_shared::Template,
    ) -> Result<ImageInfo, CatalogError> {
        let meta = PublishMeta {
            name: build.image_name.clone(),
            os: template.os.clone(),
            project: build.project.clone(),
            template: Some(build.template.clone()),
            template_revision: Some(build.revision),
            build: Some(build.id),
            min_disk_gb: u64::from(template.min_disk_gb),
            share_with: Vec::new(),
        };
        self.publish(source, meta).await
    }

    /// The id of the available image `key` names for `project`, checked to be of `os`: what a
    /// build pins as its base when it is queued. (Blocking: it reads the store.)
    pub fn resolve_base(&self, project: &str, key: &str, os: &str) -> Result<String, CatalogError> {
        let r = self
            .store
            .find_image(project, key)?
            .ok_or_else(|| CatalogError::NotFound {
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
        Ok(r.id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a.starts_with("img-") && a.len() == 20, "{a}");
    }

    #[test]
    fn admins() {
        let peer = |uid, gids: Vec<u32>| Peer {
            uid,
            gid: uid,
            gids,
            pid: None,
        };
        let me = kiln_shared::paths::current_uid();
        assert!(is_admin(&peer(0, vec![0]), None));
        assert!(is_admin(&peer(me, vec![]), None));
        let stranger = if me == 4242 { 4243 } else { 4242 };
        assert!(!is_admin(&peer(stranger, vec![4242]), None));
        assert!(!is_admin(&peer(stranger, vec![4242]), Some("777")));
        assert!(is_admin(&peer(stranger, vec![4242, 777]), Some("777")));
        assert!(!is_admin(
            &peer(stranger, vec![777]),
            Some("kiln-no-such-group")
        ));
    }

    #[test]
    fn names_and_sizes() {
        assert!(check_name("web-base").is_ok());
        assert!(check_name("웹").is_ok());
        for bad in [
            "",
            "a/b",
            "a\nb",
            " a",
            "..",
            "-x",
            "a\u{200b}",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_os("debian-12").is_ok());
        assert!(check_os("Debian 12").is_err());
        assert_eq!(gib_ceil(0), 0);
        assert_eq!(gib_ceil(1), 1);
        assert_eq!(gib_ceil(3 * GIB), 3);
        assert_eq!(gib_ceil(3 * GIB + 1), 4);
    }

    /// A catalog with its data directory at `DIR/data`; the rest of DIR is "elsewhere".
    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let store = Arc::new(Store::open(&data.join("kiln.redb")).unwrap());
        let catalog = Catalog::open(store, data.join("images")).unwrap();
        (dir, catalog)
    }

    fn qemu_img_available() -> bool {
        std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[tokio::test]
    async fn another_users_import_reads_only_what_they_may() {
        if !qemu_img_available() || kiln_shared::paths::current_uid() != 0 {
            eprintln!("skipped: needs qemu-img and root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let (dir, catalog) = catalog();
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        for p in [dir.path(), files.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let disk = |name: &str, mode| {
            let p = files.join(name);
            let ok = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&p)
                .arg("64M")
                .status()
                .unwrap()
                .success();
            assert!(ok);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let who = Requester {
            project: "p".into(),
            admin: false,
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
            admin_group: None,
        };
        let theirs = disk("readable.qcow2", 0o644);
        let image = catalog
            .import(&who, &theirs, "readable", "debian-12", false)
            .await
            .unwrap();
        assert_eq!(image.virtual_size, 64 << 20);

        // What uid 4242 may not read all answers alike, whatever is there: a secret file, a
        // missing one, the hidden directory, a symlink in it to a file they could read.
        let hidden = dir.path().join("hidden");
        std::fs::create_dir(&hidden).unwrap();
        std::os::unix::fs::symlink(&theirs, hidden.join("link")).unwrap();
        std::fs::copy(&theirs, hidden.join("secret.qcow2")).unwrap();
        std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
        let secret = disk("secret.qcow2", 0o600);
        for path in [
            secret,
            hidden.join("nonexistent").display().to_string(),
            hidden.join("secret.qcow2").display().to_string(),
            hidden.display().to_string(),
            hidden.join("link").display().to_string(),
        ] {
            let err = catalog
                .import(&who, &path, "secret", "debian-12", false)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
            assert_eq!(
                err.to_string(),
                format!(
                    "cannot read {path} as uid 4242: Permission denied; kilnd imports only \
                     files the caller can read"
                )
            );
        }

        // A backing file in the caller's own bytes is refused before qemu-img opens anything,
        // and so is a device or a /proc file.
        let root_only = dir.path().join("root-only");
        std::fs::write(&root_only, "TOPSECRET").unwrap();
        let evil = files.join("evil.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
            .arg(&root_only)
            .arg(&evil)
            .arg("1M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o644)).unwrap();
        let evil = evil.display().to_string();
        let err = catalog
            .import(&who, &evil, "evil", "debian-12", false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
        assert!(err.to_string().contains("has a backing file"), "{err}");
        for special in ["/dev/zero", "/proc/self/environ"] {
            let err = catalog
                .import(&who, special, "special", "debian-12", false)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
            assert!(err.to_string().contains("name a regular file"), "{err}");
        }
        let left: Vec<_> = std::fs::read_dir(catalog.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(files::PARTIAL))
            .collect();
        assert!(left.is_empty(), "no private copy is left: {left:?}");
    }

    /// The private copy keeps the caller's holes and bytes exactly.
    #[test]
    fn private_copies_are_sparse_and_exact() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sparse.raw");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(256 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (256 << 20) - 4).unwrap();
        drop(f);
        let copy = dir.path().join("copy");
        let header = files::copy_private(&std::fs::File::open(&src).unwrap(), &copy).unwrap();
        assert_eq!(&header[..4], b"head");
        assert_eq!(sha256_file(&src).unwrap(), sha256_file(&copy).unwrap());
        let meta = std::fs::metadata(&copy).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
        assert!(files::copy_private(&std::fs::File::open(&src).unwrap(), &copy).is_err());
    }

    #[tokio::test]
    async fn publish_and_export_are_atomic_and_hashed() {
        if !qemu_img_available() {
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let (dir, catalog) = catalog();
        let src = dir.path().join("disk.qcow2");
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&src)
            .arg("64M")
            .output()
            .unwrap();
        assert!(out.status.success());
        let meta = PublishMeta {
            name: "web".into(),
            os: "debian-12".into(),
            project: "p".into(),
            template: Some("web".into()),
            template_revision: Some(3),
            build: Some(7),
            min_disk_gb: 0,
            share_with: vec!["q".into(), "p".into()],
        };
        let first = catalog.publish(&src, meta.clone()).await.unwrap();
        assert_eq!(first.state, kiln_shared::protocol::ImageState::Available);
        assert_eq!(first.virtual_size, 64 << 20);
        assert_eq!(first.min_disk_gb, 1);
        assert_eq!(first.shared_with, vec!["q".to_string()]);
        let (size, sha) = sha256_file(Path::new(&first.path)).unwrap();
        assert_eq!((size, sha), (first.file_size, first.sha256.clone()));

        // A second publish of the same name replaces the first, keeping its shares.
        let second = catalog
            .publish(
                &src,
                PublishMeta {
                    share_with: vec![],
                    ..meta
                },
            )
            .await
            .unwrap();
        assert_eq!(second.shared_with, vec!["q".to_string()]);
        assert!(!Path::new(&first.path).exists());
        let who = Requester {
            project: "p".into(),
            admin: false,
            uid: 4242,
            gid: 4242,
            gids: vec![],
            admin_group: None,
        };
        let list = catalog.list(&who, None).await.unwrap();
        assert_eq!(
            list.iter().map(|i| &i.id).collect::<Vec<_>>(),
            vec![&second.id]
        );

        // A leased image is not deleted.
        let lease = catalog.lease("q", "web").await.unwrap();
        let err = catalog.delete(&who, "web").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        drop(lease);
        catalog.delete(&who, &second.id).await.unwrap();
        assert!(!Path::new(&second.path).exists());

        let dest = dir.path().join("out.vhd");
        let (path, size, sha) = catalog
            .export(&src, "vhd", &dest, None, false)
            .await
            .unwrap();
        assert_eq!(path, dest);
        assert_eq!(sha256_file(&dest).unwrap(), (size, sha));
        assert!(!files::partial_of(&dest).exists());
        let err = catalog
            .export(&src, "vdi", &dest, None, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParams);

        // Where an export may not go, whoever asks: over a file without `overwrite`, onto a
        // directory, into kilnd's data directory (its store included, by any path).
        let export = |to: PathBuf, overwrite| {
            let src = src.clone();
            let catalog = &catalog;
            async move { catalog.export(&src, "raw", &to, None, overwrite).await }
        };
        let err = export(dest.clone(), false).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("set `overwrite = true`"), "{err}");
        assert_eq!(sha256_file(&dest).unwrap().0, size, "left alone");
        export(dest.clone(), true).await.unwrap();
        assert_eq!(
            sha256_file(&dest).unwrap().0,
            64 << 20,
            "replaced by the raw export"
        );
        let err = export(dir.path().join("data"), true).await.unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("via")).unwrap();
        for inside in [
            dir.path().join("data/kiln.redb"),
            dir.path().join("via/kiln.redb"),
            catalog.dir().join("x.raw"),
        ] {
            let err = export(inside.clone(), true).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
            assert!(
                err.to_string().contains("inside kilnd's data directory"),
                "{err}"
            );
        }

        // For a build another user started, kilnd writes only where they may write, and the
        // file is theirs. (Making files of another user takes root.)
        if kiln_shared::paths::current_uid() == 0 {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let other = crate::store::StartedBy {
                uid: 4242,
                gid: 4343,
                gids: vec![4343],
            };
            let mode =
                |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
            mode(dir.path(), 0o755).unwrap();
            let closed = dir.path().join("closed");
            std::fs::create_dir(&closed).unwrap();
            mode(&closed, 0o755).unwrap();
            let err = catalog
                .export(&src, "raw", &closed.join("x.raw"), Some(&other), false)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
            assert!(err.to_string().contains("as uid 4242"), "{err}");
            assert!(!closed.join("x.raw").exists());
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4343)).unwrap();
            let (path, _, _) = catalog
                .export(&src, "raw", &theirs.join("x.raw"), Some(&other), false)
                .await
                .unwrap();
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
            // A writable directory reached through one they cannot search is not theirs to use.
            let hidden = dir.path().join("hidden");
            std::fs::create_dir_all(hidden.join("open")).unwrap();
            mode(&hidden.join("open"), 0o777).unwrap();
            mode(&hidden, 0o700).unwrap();
            std::os::unix::fs::symlink(hidden.join("open"), theirs.join("door")).unwrap();
            let err = catalog
                .export(&src, "raw", &theirs.join("door/x.raw"), Some(&other), false)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
            assert!(!hidden.join("open/x.raw").exists());
        }
        let leftovers: Vec<_> = std::fs::read_dir(catalog.dir()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
